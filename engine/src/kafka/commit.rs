//! Records and their offsets in one Kafka transaction, written once for every task that
//! writes to Kafka (the counterpart of Kafka Connect's `TransactionBoundaryManager`): an
//! exactly-once source, whose offsets are records of the offsets topic, and the replicator,
//! whose consumer offsets go in with `send_offsets_to_transaction`. [`Transaction`] is the
//! open transaction's bookkeeping: begun on the first batch, due at its [`Boundary`],
//! counted and timed when it commits, aborted (and counted) when a task's life ends with it
//! open. Without transactions (at-least-once) the same bookkeeping marks the batch of
//! records whose offsets are written after the records are durable.

use std::time::{Duration, Instant};

use super::producer::{ProducerError, TaskProducer};
use crate::task::actor::Labels;

/// When a transaction commits (KIP-618's `transaction.boundary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// After every non-empty poll (`transaction.boundary=poll`).
    Poll,
    /// After this much time (`transaction.boundary=interval`; the replicator's commit
    /// interval).
    Interval(Duration),
}

/// Whose transactions: their metrics are named after the kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// An exactly-once source (`sluice_source_transaction*`).
    Source,
    /// The replicator (`sluice_sink_transaction*`).
    Sink,
}

/// The open transaction of a task's producer.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    open: bool,
    started: Option<Instant>,
    records: u64,
}

impl Transaction {
    /// Opens a transaction unless one is open.
    pub(crate) async fn begin(&mut self, producer: &TaskProducer) -> Result<(), ProducerError> {
        if !self.open {
            producer.begin().await?;
            self.open = true;
            self.started = Some(Instant::now());
        }
        Ok(())
    }

    /// Counts `records` more in it.
    pub(crate) fn add(&mut self, records: u64) {
        self.records += records;
    }

    /// Whether one is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// When it was opened.
    pub(crate) fn started(&self) -> Option<Instant> {
        self.started
    }

    /// The records in it.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Whether it should commit now.
    pub(crate) fn due(&self, boundary: Boundary) -> bool {
        self.open
            && match boundary {
                Boundary::Poll => true,
                Boundary::Interval(every) => self.started.is_some_and(|s| s.elapsed() >= every),
            }
    }

    /// Records a commit that took from `since` until now, and starts afresh. Returns how
    /// many records it held and how long it had been open.
    pub(crate) fn committed(
        &mut self,
        side: Side,
        labels: &Labels,
        since: Instant,
    ) -> (u64, Duration) {
        let seconds = since.elapsed().as_secs_f64();
        match side {
            Side::Source => {
                metrics::histogram!("sluice_source_transaction_commit_seconds", &labels.pairs())
                    .record(seconds);
                metrics::counter!(
                    "sluice_source_transactions_committed_total",
                    &labels.pairs()
                )
                .increment(1);
                metrics::histogram!("sluice_source_transaction_size_records", &labels.pairs())
                    .record(self.records as f64);
                metrics::counter!("sluice_source_records_written_total", &labels.pairs())
                    .increment(self.records);
            }
            Side::Sink => {
                metrics::histogram!("sluice_sink_transaction_commit_seconds", &labels.pairs())
                    .record(seconds);
                metrics::counter!("sluice_sink_transactions_committed_total", &labels.pairs())
                    .increment(1);
            }
        }
        let open_for = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        let records = std::mem::take(self).records;
        (records, open_for)
    }

    /// Aborts it, if one is open on a transactional producer, when the task's life ends
    /// without committing: read_committed readers see the partitions released sooner, and
    /// the records come back from the committed offsets on restart. A failed abort (e.g.
    /// fenced) is only logged: the producer is dropped anyway.
    pub(crate) async fn abort(&mut self, producer: &TaskProducer, side: Side, labels: &Labels) {
        if !producer.is_transactional() {
            return;
        }
        match side {
            Side::Source => {
                metrics::counter!("sluice_source_transactions_aborted_total", &labels.pairs())
                    .increment(1);
            }
            Side::Sink => {
                metrics::counter!("sluice_sink_transactions_aborted_total", &labels.pairs())
                    .increment(1);
            }
        }
        if let Err(e) = producer.abort().await {
            tracing::debug!(connector = %labels.connector, task = %labels.task, error = %e, "abort at the end of a task's life failed");
        }
        *self = Transaction::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_the_boundary_and_only_when_open() {
        let mut t = Transaction::default();
        assert!(!t.due(Boundary::Poll));
        t.open = true;
        t.started = Some(Instant::now());
        assert!(t.due(Boundary::Poll));
        assert!(!t.due(Boundary::Interval(Duration::from_secs(3600))));
        assert!(t.due(Boundary::Interval(Duration::ZERO)));
    }

    #[test]
    fn a_commit_starts_afresh() {
        let labels = Labels {
            connector: "c".into(),
            task: "0".into(),
        };
        let mut t = Transaction {
            open: true,
            started: Some(Instant::now()),
            records: 0,
        };
        t.add(5);
        t.add(2);
        let (records, _) = t.committed(Side::Source, &labels, Instant::now());
        assert_eq!(records, 7);
        assert!(!t.is_open());
        assert_eq!((t.records(), t.started()), (0, None));
    }
}
