//! A member of a Kafka group with Sluice's own protocol type, on the group coordinator
//! every Kafka broker runs: how the workers of a Sluice cluster find each other, elect a
//! leader and receive their share of the work, with no consensus scheme of Sluice's own.
//!
//! librdkafka can only join groups of protocol type `consumer` with its built-in assignors,
//! so this crate speaks the classic group protocol itself (FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, on `kafka-protocol`'s codecs), as Kafka Connect's
//! `WorkerCoordinator` does over the Java client's `AbstractCoordinator`. The member runs on
//! a thread of its own, so its heartbeats never wait behind busy tasks; it tells its owner
//! what happens through [`Event`]s and takes [`Member::ack`], [`Member::rejoin`] and
//! [`Member::leave`].
//! What the membership metadata and assignments mean is the owner's business: the member
//! carries them as bytes, and [`assign`] holds the balanced, sticky assignment algorithm.

pub mod assign;
mod conn;
mod member;
pub mod secure;

pub use member::{Acker, Assignment, Event, JoinedMember, Member, MemberConfig, Standing};
pub use secure::Security;

/// What went wrong talking to the group coordinator.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("connection to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {addr}: {detail}")]
    Tls { addr: String, detail: String },
    #[error("SASL authentication: {0}")]
    Sasl(String),
    #[error("timed out: {what}")]
    Timeout { what: String },
    #[error("malformed message (api {api}): {detail}")]
    Codec { api: i16, detail: String },
    #[error("broker at {addr} does not support api {api} at a version this client speaks")]
    Unsupported { api: i16, addr: String },
    #[error("{api}: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        api: &'static str,
        error: kafka_protocol::ResponseError,
        message: Option<String>,
    },
    #[error("no bootstrap server answered: {0}")]
    NoBroker(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl GroupError {
    pub(crate) fn broker(api: &'static str, code: i16, message: Option<String>) -> Self {
        GroupError::Broker {
            api,
            error: kafka_protocol::ResponseError::try_from_code(code)
                .unwrap_or(kafka_protocol::ResponseError::Unknown(code)),
            message,
        }
    }
}
