//! The traits a connector implements, modelled on Kafka Connect's `Connector`,
//! `SourceTask` and `SinkTask`. A connector splits its job into task configs; the engine
//! runs each task in its own supervised actor and owns everything Kafka-side (producing,
//! consuming, offsets, transactions), so connector code only talks to its outside system.
//!
//! Task methods return boxed futures so tasks can be `Box<dyn SourceTask>` in the engine's
//! registry without a macro crate.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::config::ConfigDef;
use crate::error::ConnectorError;
use crate::offsets::{SourceOffset, SourcePartition};
use crate::record::{SinkRecord, SourceRecord, TopicPartition};

/// A boxed, sendable future, the return type of task methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connector's or task's string properties, as given by the user.
pub type Props = BTreeMap<String, String>;

/// What the engine tells a source task when it starts.
#[derive(Debug, Clone, Default)]
pub struct SourceTaskContext {
    /// The connector's name.
    pub connector: String,
    /// The task's number.
    pub task: u32,
    /// The committed offset of every source partition this connector has written, read
    /// from the offsets topic (read_committed) before the task starts.
    pub committed: BTreeMap<SourcePartition, SourceOffset>,
}

impl SourceTaskContext {
    /// Where to resume `partition`, if anything was committed for it.
    pub fn offset(&self, partition: &SourcePartition) -> Option<&SourceOffset> {
        self.committed.get(partition)
    }
}

/// Whether a source connector can take part in exactly-once delivery (KIP-618).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExactlyOnceSupport {
    /// Its offsets identify records precisely, so a resumed task re-reads nothing.
    Supported,
    /// It cannot resume precisely (e.g. an unacknowledged push protocol).
    Unsupported,
}

/// The connector side, common to sources and sinks: validates config and plans tasks.
pub trait Connector: Send {
    /// The keys this connector accepts, for validation and the REST validate endpoint.
    fn config_def(&self) -> ConfigDef;

    /// The connector's version, shown by `GET /connector-plugins`.
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Plans up to `max_tasks` task configs from the connector's validated config.
    fn task_configs(&self, config: &Props, max_tasks: u32) -> Result<Vec<Props>, ConnectorError>;

    /// Checks against the outside system that a config whose keys are each valid can work
    /// (the server reachable, the rights and settings it needs), as Kafka Connect's
    /// `Connector.validate` does: each problem as (the key at fault, what is wrong). Called
    /// by `PUT /connector-plugins/{plugin}/config/validate` once every key passed its own
    /// checks; a task's start makes the same checks and fails naming the key.
    fn validate_live<'a>(&'a self, _config: &'a Props) -> BoxFuture<'a, Vec<(String, String)>> {
        Box::pin(async { Vec::new() })
    }
}

/// A source connector: builds the tasks that read an outside system.
pub trait SourceConnector: Connector {
    /// A new, unstarted task.
    fn task(&self) -> Box<dyn SourceTask>;

    /// Whether this connector supports exactly-once delivery with the given config.
    fn exactly_once_support(&self, _config: &Props) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Unsupported
    }

    /// Hands `signal` to the connector's tasks through a channel of the connector's own
    /// that outlives a restart and reaches a task wherever it runs (the PostgreSQL source:
    /// a row of its signal table), so any worker can take the REST request; returns once
    /// the signal is durable. A signal the connector cannot act on is a config error
    /// naming the fault; connectors without signals refuse every one.
    fn signal<'a>(
        &'a self,
        _config: &'a Props,
        signal: &'a Signal,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            Err(ConnectorError::config(format!(
                "type {:?}: this connector takes no signals",
                signal.kind
            )))
        })
    }
}

/// A signal for a source connector's tasks (`POST /connectors/{name}/signals`), as
/// Debezium's: an id, a type (`execute-snapshot`, ...) and JSON data, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub id: String,
    pub kind: String,
    pub data: String,
}

/// A sink connector: builds the tasks that write an outside system.
pub trait SinkConnector: Connector {
    /// A new, unstarted task.
    fn task(&self) -> Box<dyn SinkTask>;
}

/// Reads an outside system. The engine calls `start` once, then `poll` in a loop, and
/// `commit` after the records' offsets are durable in Kafka.
pub trait SourceTask: Send {
    /// Opens connections; resumes from `context.committed`.
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;

    /// The next batch; an empty batch means "nothing right now". Must return within a
    /// bounded time so the engine can commit and stop.
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>>;

    /// Everything returned by `poll` so far is committed in Kafka (acknowledge upstream).
    fn commit(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether `commit` lets the upstream forget data that a restart from the committed
    /// offsets would need (a replication slot's confirmed position). Then the offsets are
    /// made durable before `commit` in at-least-once mode too, at the cost of a flush;
    /// otherwise (a network source acknowledging its sender, say) durable records suffice.
    fn commit_needs_durable_offsets(&self) -> bool {
        false
    }

    /// Releases resources; called once, also after errors.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// Writes an outside system, following Kafka Connect's `SinkTask` lifecycle.
pub trait SinkTask: Send {
    /// Opens connections.
    fn start<'a>(&'a mut self, config: &'a Props) -> BoxFuture<'a, Result<(), ConnectorError>>;

    /// Partitions were assigned to this task. A sink that keeps offsets in its own store
    /// returns where to resume each of them; `None` means "from the consumer group".
    fn open<'a>(
        &'a mut self,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        Box::pin(async { Ok(BTreeMap::new()) })
    }

    /// Writes (or buffers) a batch, in per-partition offset order. A [`ErrorKind::Data`]
    /// error means nothing of the batch was written: the runtime may then put the records
    /// one by one to find the bad ones (for the dead-letter queue). A retriable error means
    /// the whole batch is put again after a backoff.
    ///
    /// [`ErrorKind::Data`]: crate::error::ErrorKind::Data
    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Makes everything up to `offsets` durable and returns the offsets (next to read)
    /// that are now safe to commit, per partition.
    fn pre_commit<'a>(
        &'a mut self,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>>;

    /// Partitions were revoked: drop their buffered state.
    fn close<'a>(
        &'a mut self,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    /// Releases resources; called once.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Value;

    /// Counts up from its committed offset: the smallest source that resumes correctly.
    struct Counter {
        next: i64,
        end: i64,
    }

    fn partition() -> SourcePartition {
        SourcePartition::single("counter", "c")
    }

    impl SourceTask for Counter {
        fn start<'a>(
            &'a mut self,
            _config: &'a Props,
            context: SourceTaskContext,
        ) -> BoxFuture<'a, Result<(), ConnectorError>> {
            Box::pin(async move {
                if let Some(offset) = context.offset(&partition()) {
                    self.next = offset
                        .get("next")
                        .and_then(serde_json::Value::as_i64)
                        .ok_or_else(|| ConnectorError::data("offset field next: not an integer"))?;
                }
                Ok(())
            })
        }

        fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
            Box::pin(async move {
                let mut out = Vec::new();
                while self.next < self.end && out.len() < 2 {
                    self.next += 1;
                    out.push(SourceRecord::new(
                        partition(),
                        SourceOffset::single("next", self.next),
                        "numbers",
                        Value::Int64(self.next),
                    ));
                }
                Ok(out)
            })
        }

        fn stop(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // The futures here never wait on anything, so one poll with a no-op waker finishes them.
        let mut f = Box::pin(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("test future was not ready"),
        }
    }

    #[test]
    fn a_task_resumes_from_its_committed_offset() {
        let mut task: Box<dyn SourceTask> = Box::new(Counter { next: 0, end: 5 });
        let mut context = SourceTaskContext {
            connector: "counter".into(),
            task: 0,
            committed: BTreeMap::new(),
        };
        context
            .committed
            .insert(partition(), SourceOffset::single("next", 3));
        block_on(task.start(&Props::new(), context)).unwrap();
        let batch = block_on(task.poll()).unwrap();
        let values: Vec<&Value> = batch.iter().map(|r| &r.value).collect();
        assert_eq!(values, [&Value::Int64(4), &Value::Int64(5)]);
        assert!(block_on(task.poll()).unwrap().is_empty());
        block_on(task.stop());
    }

    #[test]
    fn a_corrupt_committed_offset_is_a_data_error() {
        let mut task = Counter { next: 0, end: 5 };
        let mut context = SourceTaskContext::default();
        context
            .committed
            .insert(partition(), SourceOffset::single("next", "three"));
        let e = block_on(task.start(&Props::new(), context)).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Data);
        assert!(e.message.contains("next"));
    }
}
