//! A source task's producer: transactional for exactly-once (one per task,
//! `transactional.id = <group.id>-<connector>-<task>`), or plain idempotent for
//! at-least-once. librdkafka's calls block, so each runs on tokio's blocking pool under an
//! outer timeout; the calling actor thread never blocks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

use crate::kafka::client_config;

/// A record ready for Kafka: bytes, and the partition the router chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OutRecord {
    /// Approximate size on the wire, for metrics and batching.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

/// What a producer error calls for (the task's recovery acts on it; see
/// `source_task::recover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The call may simply be made again (a commit that timed out while the broker
    /// stalled).
    Retriable,
    /// The transaction is poisoned (e.g. a record the broker refused): abort it and send
    /// its records again.
    Abortable,
    /// Another producer with this `transactional.id` took over: this one must stop.
    Fenced,
    /// The producer is unusable (or in an unknown state): make a new one, then send the
    /// open transaction's records again.
    Fatal,
}

impl ErrorClass {
    /// The label value in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Abortable => "abortable",
            ErrorClass::Fenced => "fenced",
            ErrorClass::Fatal => "fatal",
        }
    }
}

/// Broker (or client) verdicts about one record rather than the connection or the
/// transaction: the record goes to the dead-letter queue, the others are sent again.
pub fn is_record_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
    )
}

/// A producer call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// librdkafka reported an error.
    #[error("{call} failed: {source}")]
    Kafka {
        /// Which call.
        call: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The call did not return in time (librdkafka can overrun its own timeout).
    #[error("{call} did not finish within {timeout:?}")]
    Timeout {
        /// Which call.
        call: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// librdkafka refused the client config (message redacted of secrets).
    #[error("creating the producer failed: {0}")]
    Config(String),
    /// Records were not delivered (at-least-once mode; transactions report this on commit).
    #[error("{count} record(s) were not delivered; last error: {last}")]
    Delivery {
        /// How many failed since the last check.
        count: u64,
        /// The last failure.
        last: String,
    },
    /// The blocking thread died.
    #[error("{call}: blocking task failed: {message}")]
    Join {
        /// Which call.
        call: &'static str,
        /// Why.
        message: String,
    },
    /// This worker may not take the transactional id now (see [`ClaimGuard`]).
    #[error("not taking transactional id {id}: {reason}")]
    NotOwner {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Whether this worker may take a task's transactional id now (`init_transactions`, which
/// fences whoever holds it). In a cluster, only while its group membership is current and
/// the task is in its assignment: a worker that was cut off (stalled past its session,
/// then resumed) must not fence the task's new owner by taking the id back before it has
/// heard that it lost the task, as Kafka Connect checks a task's ownership before its
/// producer starts. A single worker always may.
#[derive(Clone, Default)]
pub struct ClaimGuard(Option<Arc<ClaimCheck>>);

/// Asked with the connector and task about to take their id.
type ClaimCheck =
    dyn Fn(&str, u32) -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync;

impl std::fmt::Debug for ClaimGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClaimGuard(cluster)"
        } else {
            "ClaimGuard(none)"
        })
    }
}

impl ClaimGuard {
    /// A guard asking `may(connector, task)` before each claim.
    pub fn new(
        may: impl Fn(&str, u32) -> futures_util::future::BoxFuture<'static, Result<(), String>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        ClaimGuard(Some(Arc::new(may)))
    }

    /// Whether something (a cluster's membership) decides who may take an id; without
    /// it, any life may.
    pub fn arbitrates(&self) -> bool {
        self.0.is_some()
    }

    /// Whether task `task` of `connector` may take its transactional id `id` now.
    pub async fn check(&self, connector: &str, task: u32, id: &str) -> Result<(), ProducerError> {
        match &self.0 {
            None => Ok(()),
            Some(may) => may(connector, task).await.map_err(|reason| {
                metrics::counter!("sluice_task_claims_refused_total").increment(1);
                ProducerError::NotOwner {
                    id: id.to_owned(),
                    reason,
                }
            }),
        }
    }
}

impl ProducerError {
    /// What the error calls for. librdkafka says whether a transactional error is
    /// retriable, needs an abort, or is fatal; a fencing is its own class. An outer
    /// timeout leaves the producer in an unknown state: fatal.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProducerError::Kafka {
                source: KafkaError::Transaction(e),
                ..
            } => {
                if self.is_fenced() {
                    ErrorClass::Fenced
                } else if e.is_retriable() {
                    ErrorClass::Retriable
                } else if e.txn_requires_abort() && !e.is_fatal() {
                    ErrorClass::Abortable
                } else {
                    ErrorClass::Fatal
                }
            }
            // The flush before a commit timed out: the records are still in flight.
            ProducerError::Kafka {
                source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                ..
            } => ErrorClass::Retriable,
            // A send that gave up waiting for queue room, or a record refused: the
            // transaction may hold part of a batch; start it again.
            ProducerError::Kafka {
                source: KafkaError::MessageProduction(_),
                ..
            }
            | ProducerError::Delivery { .. } => ErrorClass::Abortable,
            // Someone else may hold the id now: stop, as when fenced.
            ProducerError::NotOwner { .. } => ErrorClass::Fenced,
            _ => ErrorClass::Fatal,
        }
    }

    /// Whether another producer with our transactional id took over. A bumped epoch
    /// (`InvalidProducerEpoch`) is not counted: it usually means the transaction ran
    /// past `transaction.timeout.ms` and the coordinator aborted it.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            ProducerError::Kafka { source: KafkaError::Transaction(e), .. }
                if matches!(e.code(), RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        )
    }

    /// Whether the error is the broker's epoch check (a transaction that timed out, or a
    /// fencing seen from the other side).
    pub fn is_epoch_error(&self) -> bool {
        matches!(
            self,
            ProducerError::Kafka { source: KafkaError::Transaction(e), .. }
                if e.code() == RDKafkaErrorCode::InvalidProducerEpoch
        )
    }
}

/// Counts failed deliveries, which at-least-once mode must see before writing offsets,
/// and keeps the records a broker refused (by their send tag), so a transaction can be
/// sent again without them.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    last: Mutex<Option<String>>,
    refused: Mutex<Vec<(usize, String)>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last.lock() {
                *last = Some(e.to_string());
            }
            if e.rdkafka_error_code().is_some_and(is_record_refusal) && tag != UNTAGGED {
                if let Ok(mut refused) = self.refused.lock() {
                    refused.push((tag, e.to_string()));
                }
            }
        }
    }
}

/// The tag of records whose refusal nobody tracks.
pub const UNTAGGED: usize = usize::MAX;

impl DeliveryTracker {
    fn note_refused(&self, tag: usize, reason: String) {
        if tag == UNTAGGED {
            return;
        }
        if let Ok(mut refused) = self.refused.lock() {
            refused.push((tag, reason));
        }
    }

    fn take_refused(&self) -> Vec<(usize, String)> {
        self.refused
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    fn take_failures(&self) -> Option<(u64, String)> {
        let count = self.failed.swap(0, Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let last = self
            .last
            .lock()
            .ok()
            .and_then(|mut l| l.take())
            .unwrap_or_default();
        Some((count, last))
    }
}

type Inner = ThreadedProducer<DeliveryTracker>;

/// Runs a producer call through [`crate::kafka::blocking`], naming it in the error.
async fn blocking<T: Send + 'static>(
    call: &'static str,
    timeout: Duration,
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, ProducerError> {
    match crate::kafka::blocking(timeout, f).await {
        Ok(result) => result.map_err(|source| ProducerError::Kafka { call, source }),
        Err(crate::kafka::Blocked::TimedOut(_)) => Err(ProducerError::Timeout { call, timeout }),
        Err(crate::kafka::Blocked::Failed(message)) => Err(ProducerError::Join { call, message }),
    }
}

/// Waits until every sent record is acknowledged (the producer's thread serves the delivery
/// reports). rdkafka's own `flush` (also called by `commit_transaction`) waits in 100 ms
/// slices, which capped a task at ten transactions a second; once nothing is in flight it
/// returns at once.
fn drain(p: &Inner, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    while p.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

/// A task's producer.
#[derive(Clone)]
pub struct TaskProducer {
    inner: Arc<Inner>,
    transactional: bool,
    timeout: Duration,
    transaction_timeout: Duration,
}

impl std::fmt::Debug for TaskProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskProducer")
            .field("transactional", &self.transactional)
            .finish_non_exhaustive()
    }
}

impl TaskProducer {
    /// Creates the producer; with a `transactional_id`, also runs `init_transactions`,
    /// which fences any older producer with the same id and aborts its open transaction.
    pub async fn create(
        mut props: BTreeMap<String, String>,
        transactional_id: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProducerError> {
        props.insert("enable.idempotence".into(), "true".into());
        // Bounded like Kafka Connect's buffer.memory (32 MiB): when the broker is slow or
        // down, `send` waits instead of the queue growing to librdkafka's 1 GiB default.
        props
            .entry("queue.buffering.max.kbytes".into())
            .or_insert_with(|| "32768".into());
        if let Some(id) = &transactional_id {
            props.insert("transactional.id".into(), id.clone());
            props
                .entry("transaction.timeout.ms".into())
                .or_insert_with(|| "60000".into());
        }
        let transactional = transactional_id.is_some();
        let inner: Arc<Inner> = Arc::new(
            client_config(&props)
                .create_with_context(DeliveryTracker::default())
                .map_err(|e| {
                    ProducerError::Config(sluice_proto::config::redact(&e.to_string(), &props))
                })?,
        );
        if transactional {
            let p = Arc::clone(&inner);
            blocking("init_transactions", timeout, move || {
                p.init_transactions(timeout)
            })
            .await?;
        }
        let transaction_timeout = Duration::from_millis(
            props
                .get("transaction.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60_000),
        );
        Ok(TaskProducer {
            inner,
            transactional,
            timeout,
            transaction_timeout,
        })
    }

    /// Whether records and offsets commit atomically.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Opens a transaction (no-op without transactions).
    pub async fn begin(&self) -> Result<(), ProducerError> {
        if !self.transactional {
            return Ok(());
        }
        let p = Arc::clone(&self.inner);
        blocking("begin_transaction", self.timeout, move || {
            p.begin_transaction()
        })
        .await
    }

    /// Enqueues records; waits (off-thread) while librdkafka's queue is full, which is the
    /// back-pressure a slow broker puts on the source.
    pub async fn send(&self, records: Vec<OutRecord>) -> Result<(), ProducerError> {
        let tags = vec![UNTAGGED; records.len()];
        self.send_tagged(Arc::from(records), tags).await
    }

    /// Like [`TaskProducer::send`], each record with a tag: a record the client or the
    /// broker refuses (too large, a timestamp out of the topic's window, ...) is reported
    /// by [`TaskProducer::take_refused`] under its tag. A record the client refuses at
    /// once is not sent, and the send goes on.
    /// The records are shared, not copied: an exactly-once source keeps the same batch for
    /// a resend.
    pub async fn send_tagged(
        &self,
        records: Arc<[OutRecord]>,
        tags: Vec<usize>,
    ) -> Result<(), ProducerError> {
        let p = Arc::clone(&self.inner);
        let timeout = self.timeout;
        blocking("send", timeout, move || {
            let deadline = Instant::now() + timeout;
            for (r, tag) in records.iter().zip(tags) {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (key, value) in &r.headers {
                    headers = headers.insert(Header {
                        key,
                        value: value.as_deref(),
                    });
                }
                let mut record: BaseRecord<'_, [u8], [u8], usize> =
                    BaseRecord::with_opaque_to(&r.topic, tag)
                        .partition(r.partition)
                        .headers(headers);
                if let Some(k) = &r.key {
                    record = record.key(k.as_slice());
                }
                if let Some(v) = &r.value {
                    record = record.payload(v.as_slice());
                }
                if let Some(ts) = r.timestamp {
                    record = record.timestamp(ts);
                }
                loop {
                    match p.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            if Instant::now() > deadline {
                                return Err(KafkaError::MessageProduction(
                                    RDKafkaErrorCode::QueueFull,
                                ));
                            }
                            record = back;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err((KafkaError::MessageProduction(code), _))
                            if is_record_refusal(code) && tag != UNTAGGED =>
                        {
                            p.context().note_refused(tag, code.to_string());
                            break;
                        }
                        Err((e, _)) => return Err(e),
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// The records refused since the last call, by tag, with the reason.
    pub fn take_refused(&self) -> Vec<(usize, String)> {
        self.inner.context().take_refused()
    }

    /// Waits until every record sent so far is acknowledged (or failed).
    pub async fn drain(&self) -> Result<(), ProducerError> {
        let p = Arc::clone(&self.inner);
        let timeout = self.timeout;
        blocking("flush", timeout, move || drain(&p, timeout)).await
    }

    /// `transaction.timeout.ms`: a transaction open longer is aborted by the coordinator.
    pub fn transaction_timeout(&self) -> Duration {
        self.transaction_timeout
    }

    /// Commits the open transaction (flushing first); without transactions, flushes.
    pub async fn commit(&self) -> Result<(), ProducerError> {
        let p = Arc::clone(&self.inner);
        let timeout = self.timeout;
        if self.transactional {
            blocking("commit_transaction", timeout, move || {
                drain(&p, timeout)?;
                p.commit_transaction(timeout)
            })
            .await
        } else {
            blocking("flush", timeout, move || drain(&p, timeout)).await?;
            match self.inner.context().take_failures() {
                None => Ok(()),
                Some((count, last)) => Err(ProducerError::Delivery { count, last }),
            }
        }
    }

    /// Adds consumer offsets (next to read, per partition) to the open transaction, so they
    /// commit with the records (Kafka -> Kafka exactly-once).
    pub async fn send_offsets(
        &self,
        offsets: BTreeMap<sluice_proto::TopicPartition, i64>,
        group: Arc<rdkafka::consumer::ConsumerGroupMetadata>,
    ) -> Result<(), ProducerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let p = Arc::clone(&self.inner);
        let timeout = self.timeout;
        // The outer bound in `blocking` matters here: librdkafka may ignore this call's own
        // timeout while the group coordinator is unreachable.
        blocking("send_offsets_to_transaction", timeout, move || {
            let mut list = rdkafka::TopicPartitionList::new();
            for (tp, offset) in &offsets {
                list.add_partition_offset(
                    &tp.topic,
                    tp.partition,
                    rdkafka::Offset::Offset(*offset),
                )?;
            }
            p.send_offsets_to_transaction(&list, &group, timeout)
        })
        .await
    }

    /// Aborts the open transaction (no-op without transactions).
    pub async fn abort(&self) -> Result<(), ProducerError> {
        if !self.transactional {
            return Ok(());
        }
        let p = Arc::clone(&self.inner);
        let timeout = self.timeout;
        blocking("abort_transaction", timeout, move || {
            p.abort_transaction(timeout)
        })
        .await
    }
}
