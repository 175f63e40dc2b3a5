//! What a running task life tells its supervisor between its start and its exit: that it
//! is retrying a failure in place (a sink whose target is down, a source whose origin is)
//! and that it has recovered. Kafka Connect shows such a task as RUNNING with nothing to
//! see; Sluice keeps the state RUNNING (the task is working, not failed) and adds a note
//! for the status API's `trace`, plus the `sluice_task_retrying` gauge.
//!
//! The life writes, the supervisor reads when asked for the status: one watch channel per
//! life, so nothing is sent while nobody looks, and a late write from an ended life lands
//! in a channel nobody reads any more.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A failure being retried in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrying {
    /// The failure, as the connector reported it.
    pub error: String,
    /// Retries so far (1-based).
    pub attempt: u32,
    /// The wait before the next one.
    pub next_in: Duration,
    /// When the first of these retries began.
    pub since: Instant,
}

impl Retrying {
    /// The note the status API shows as the trace of a RUNNING task.
    pub fn note(&self) -> String {
        format!(
            "retrying: {} (attempt {}, next in {} ms)",
            self.error,
            self.attempt,
            self.next_in.as_millis()
        )
    }
}

/// The writing end, owned by one task life.
#[derive(Debug)]
pub struct TaskHealth {
    tx: watch::Sender<Option<Retrying>>,
    connector: String,
    task: u32,
}

/// The reading end, kept by the supervisor for the life it started last.
#[derive(Debug, Clone)]
pub struct HealthWatch(watch::Receiver<Option<Retrying>>);

impl HealthWatch {
    /// The retrying note, while the life is retrying.
    pub fn note(&self) -> Option<String> {
        self.0.borrow().as_ref().map(Retrying::note)
    }
}

impl TaskHealth {
    /// A reporter for a new life of `connector`'s task `task`, and the supervisor's end.
    pub fn new(connector: &str, task: u32) -> (Self, HealthWatch) {
        let (tx, rx) = watch::channel(None);
        let health = TaskHealth {
            tx,
            connector: connector.to_owned(),
            task,
        };
        // A new life is not retrying; the series exists from its start.
        health.gauge(false);
        (health, HealthWatch(rx))
    }

    fn gauge(&self, retrying: bool) {
        metrics::gauge!("sluice_task_retrying", "connector" => self.connector.clone(), "task" => self.task.to_string())
            .set(if retrying { 1.0 } else { 0.0 });
    }

    /// Retry number `attempt` of `error` follows after `next_in`.
    pub fn retrying(&self, error: &dyn std::fmt::Display, attempt: u32, next_in: Duration) {
        let started = self.tx.borrow().is_none();
        self.tx.send_modify(|state| {
            let since = state.as_ref().map_or_else(Instant::now, |r| r.since);
            *state = Some(Retrying {
                error: error.to_string(),
                attempt,
                next_in,
                since,
            });
        });
        if started {
            self.gauge(true);
        }
    }

    /// The retried call succeeded; a no-op when nothing was being retried.
    pub fn recovered(&self) {
        // Called after every successful put: a read lock, not a write, on the usual path.
        if !self.is_retrying() {
            return;
        }
        let Some(was) = self.tx.send_replace(None) else {
            return;
        };
        self.gauge(false);
        tracing::info!(connector = %self.connector, task = self.task, retries = was.attempt, retrying_ms = was.since.elapsed().as_millis() as u64, "recovered: the retried call succeeded");
    }

    /// Whether a failure is being retried now.
    pub fn is_retrying(&self) -> bool {
        self.tx.borrow().is_some()
    }
}

impl Drop for TaskHealth {
    /// A life that ends while retrying is no longer retrying. (Should a next life already
    /// be retrying, its next attempt sets the gauge again.)
    fn drop(&mut self) {
        if self.is_retrying() {
            self.gauge(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_is_there_while_retrying_and_gone_after_recovery() {
        let (health, watch) = TaskHealth::new("c", 0);
        assert_eq!(watch.note(), None);
        health.retrying(
            &"bulk request: connection refused",
            1,
            Duration::from_millis(300),
        );
        health.retrying(
            &"bulk request: connection refused",
            2,
            Duration::from_millis(600),
        );
        assert_eq!(
            watch.note().as_deref(),
            Some("retrying: bulk request: connection refused (attempt 2, next in 600 ms)")
        );
        health.recovered();
        assert_eq!(watch.note(), None);
        health.recovered();
        assert!(!health.is_retrying());
    }

    #[test]
    fn an_ended_life_leaves_no_note_for_the_next() {
        let (old, _old_watch) = TaskHealth::new("c", 0);
        let (_new, new_watch) = TaskHealth::new("c", 0);
        old.retrying(&"down", 1, Duration::from_secs(1));
        drop(old);
        assert_eq!(new_watch.note(), None);
    }
}
