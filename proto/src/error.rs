//! The one error type connectors return. It carries a domain (whose fault) and a retry
//! hint, so the engine can choose between retrying with backoff, sending a record to the
//! dead-letter queue, and failing the task, without parsing messages.

use std::error::Error as StdError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong; retrying will not help.
    Config,
    /// One record is bad (cannot be parsed, converted or written); the rest may be fine.
    Data,
    /// The outside system failed or is unreachable.
    External,
    /// A bug or broken invariant in Sluice or the connector.
    Internal,
}

/// An error from a connector or task.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    /// Whose fault.
    pub kind: ErrorKind,
    /// Whether the same call may succeed if retried after a backoff.
    pub retriable: bool,
    /// What went wrong, naming the field, record or endpoint at fault.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ConnectorError {
    fn new(kind: ErrorKind, retriable: bool, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            retriable,
            message: message.into(),
            source: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, false, message)
    }

    /// A bad record.
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, false, message)
    }

    /// An outside system failed in a way worth retrying (timeouts, unavailability).
    pub fn retriable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::External, true, message)
    }

    /// An outside system failed for good (authentication, missing resource).
    pub fn external(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::External, false, message)
    }

    /// A broken invariant.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, false, message)
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retry_hints() {
        let e = ConnectorError::retriable("bulk request to http://127.0.0.1:9200 timed out")
            .with_source(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(e.kind, ErrorKind::External);
        assert!(e.retriable);
        assert!(e.source().is_some());
        assert!(!ConnectorError::data("x").retriable);
        assert_eq!(
            ConnectorError::config("topics: required").to_string(),
            "topics: required"
        );
    }
}
