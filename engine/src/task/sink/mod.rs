//! The sink runtime: one life of a sink task.
//!
//! Each task owns a consumer in the group `connect-<connector>` (Kafka Connect's naming),
//! so `tasks.max` tasks, on one worker or several, share the topics' partitions through
//! Kafka's own group protocol. librdkafka's consumer blocks, so it lives on a dedicated
//! thread (the *poller*) that is the only code touching it: it polls, hands batches and
//! rebalance events to the task's async loop over one ordered channel, and runs commits
//! between polls.
//!
//! Guarantees, and how they are kept:
//! - Per-partition order: one consumer, one channel, batches in poll order.
//! - Backpressure without leaving the group: when the channel is full, the poller pauses
//!   its partitions and keeps polling (librdkafka leaves the group when polling stops for
//!   `max.poll.interval.ms`); it resumes them once the batch is handed over.
//! - No record processed twice by the runtime across a rebalance: the rebalance callback
//!   waits until the async loop has flushed (`pre_commit`) and closed the revoked
//!   partitions, commits what is durable, and only then gives the partitions up. Every
//!   batch carries the assignment generation it was polled in; a batch polled before a
//!   rebalance is dropped, not delivered (it was not committed, so its records come back).
//! - Offsets committed only for what the sink reported durable: whatever `pre_commit`
//!   returns, per partition, and only forward.
//! - Sinks that keep offsets in their own store return them from `open`; the partitions
//!   are assigned at those offsets.
//! - Kafka -> Kafka ([`Output::Kafka`]): output records and consumer offsets commit in one
//!   transaction (`send_offsets_to_transaction`), so read_committed readers of the output
//!   see each input record exactly once, whenever the worker is killed.

mod commits;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_proto::ErrorKind;
use sluice_proto::{Header, Props, SinkRecord, SinkTask, TimestampType, TopicPartition};
use tokio::sync::{mpsc, watch};

use crate::convert::Converter;
use crate::kafka::client_config;
use crate::kafka::producer::{OutRecord, ProducerError, TaskProducer};
use crate::kafka::router::{PartitionRouter, Route, Unrouted};
use crate::task::actor::Labels;
use crate::task::errors::ErrorPolicy;
use crate::task::health::TaskHealth;
use crate::transforms::{Envelope, TransformChain};

/// Builds a fresh connector sink task for each (re)start.
pub type SinkTaskFactory = Arc<dyn Fn() -> Box<dyn SinkTask> + Send + Sync>;

/// What the topics a sink task reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// `topics`.
    Topics(Vec<String>),
    /// `topics.regex` (a Java-style regex matched against whole topic names).
    Regex(String),
}

/// Where a sink task's records go.
#[derive(Clone)]
pub enum Output {
    /// A connector's [`SinkTask`]: offsets are committed to the group once it says the
    /// records are durable.
    Task(SinkTaskFactory),
    /// Back into Kafka, through the router, in transactions that also commit the consumer
    /// offsets.
    Kafka {
        /// `topic.rename.format`: `${topic}` stands for the input topic.
        rename: String,
        /// Keep each record's input partition (the output topic is created with the input's
        /// partition count when missing).
        preserve_partitions: bool,
        /// `<group.id>-<connector>-<task>`.
        transactional_id: String,
        /// The worker's router.
        router: Addr<PartitionRouter>,
        /// How often the open transaction commits.
        commit_interval: Duration,
    },
}

/// Everything a sink task needs; shared by its restarts.
pub struct SinkTaskSpec {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task: u32,
    /// The task's config, from the connector's `task_configs`.
    pub config: Props,
    /// Where records go.
    pub output: Output,
    /// What to read.
    pub subscription: Subscription,
    /// Consumer settings (worker `consumer.*` plus connector `consumer.override.*`).
    pub consumer_props: BTreeMap<String, String>,
    /// Producer settings, for the dead-letter queue and the Kafka output.
    pub producer_props: BTreeMap<String, String>,
    /// Key converter.
    pub key_converter: Arc<dyn Converter>,
    /// Value converter.
    pub value_converter: Arc<dyn Converter>,
    /// The connector's single message transforms, applied after conversion.
    pub transforms: Arc<TransformChain>,
    /// What to do with bad records and retriable failures.
    pub errors: ErrorPolicy,
    /// How often offsets are committed (`offset.flush.interval.ms`).
    pub commit_interval: Duration,
    /// Bound for every Kafka call.
    pub kafka_timeout: Duration,
    /// The most records one batch holds (`consumer.max.poll.records`).
    pub max_batch: usize,
}

impl std::fmt::Debug for SinkTaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTaskSpec")
            .field("connector", &self.connector)
            .field("task", &self.task)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

/// The consumer group of a sink connector, as Kafka Connect names it.
pub fn group_id(connector: &str) -> String {
    format!("connect-{connector}")
}

/// Why a sink task stopped working.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The connector's own code failed.
    #[error("connector task failed: {0}")]
    Connector(#[from] sluice_proto::ConnectorError),
    /// The consumer could not be created or subscribed, or failed fatally.
    #[error("consumer: {0}")]
    Consumer(String),
    /// A record could not be converted or transformed; names its coordinates.
    #[error("{stage} failed for the record at {topic}[{partition}]@{offset}: {message}")]
    Record {
        /// Kafka Connect's stage name.
        stage: &'static str,
        /// Input topic.
        topic: String,
        /// Input partition.
        partition: i32,
        /// Input offset.
        offset: i64,
        /// What failed.
        message: String,
    },
    /// The producer (dead-letter queue or Kafka output) failed.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The router refused the batch.
    #[error(transparent)]
    Route(#[from] crate::kafka::router::RouteError),
    /// The output topic could not be created.
    #[error(transparent)]
    Topic(#[from] crate::storage::offsets::OffsetStoreError),
    /// The router is gone (worker shutting down).
    #[error("partition router unavailable: {0}")]
    Mailbox(#[from] MailboxError),
}

/// A consumed record, owned, as the poller hands it over.
#[derive(Debug, Clone)]
pub struct Raw {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    timestamp_type: TimestampType,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    fn tp(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> Raw {
    let (timestamp, timestamp_type) = match m.timestamp() {
        rdkafka::Timestamp::CreateTime(t) => (Some(t), TimestampType::CreateTime),
        rdkafka::Timestamp::LogAppendTime(t) => (Some(t), TimestampType::LogAppendTime),
        rdkafka::Timestamp::NotAvailable => (None, TimestampType::NoTimestamp),
    };
    Raw {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        timestamp,
        timestamp_type,
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

use crate::task::sink::commits::{CommitBook, Confirmations, Offsets};

/// What the poller tells the task's loop, in order.
enum Event {
    /// Records polled while `generation` was the assignment.
    Batch { generation: u64, records: Vec<Raw> },
    /// Partitions assigned; the reply gives offsets to start at (the sink's own store).
    Assigned {
        generation: u64,
        partitions: Vec<TopicPartition>,
        reply: std_mpsc::SyncSender<Offsets>,
    },
    /// The group metadata after an assignment (for `send_offsets_to_transaction`).
    Group(rdkafka::consumer::ConsumerGroupMetadata),
    /// Partitions about to be revoked; the reply gives the offsets to commit first.
    Revoked {
        generation: u64,
        partitions: Vec<TopicPartition>,
        reply: std_mpsc::SyncSender<Offsets>,
    },
    /// The consumer failed in a way polling cannot recover from.
    Fatal(String),
}

/// What the task's loop asks of the poller.
enum Command {
    /// Commit these offsets (next to read) to the group, if the assignment is still the
    /// one of this generation.
    Commit(u64, Offsets),
    /// Close the consumer and end the thread.
    Stop,
}

fn tpl(offsets: &Offsets) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in offsets {
        // Adding a partition to a fresh list cannot fail for a valid offset.
        let _ = list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    list
}

/// The offsets a list holds (entries without an offset left out).
fn offsets_of(list: &TopicPartitionList) -> Offsets {
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((
                TopicPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                },
                o,
            )),
            _ => None,
        })
        .collect()
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_owned(),
            partition: e.partition(),
        })
        .collect()
}

/// The consumer's context: serves rebalances by asking the task's loop, on the poller
/// thread, inside `poll`.
struct SinkContext {
    connector: String,
    task: u32,
    events: mpsc::Sender<Event>,
    generation: AtomicU64,
    /// Where successful offset commits are reported to the task's loop.
    confirmations: Confirmations,
    /// When each commit still awaiting its outcome was issued, oldest first.
    commits_issued: std::sync::Mutex<std::collections::VecDeque<Instant>>,
    /// How long a rebalance waits for the task's loop to flush.
    flush_timeout: Duration,
}

impl ClientContext for SinkContext {
    /// librdkafka's statistics (every `statistics.interval.ms`, on the poller thread):
    /// the lag of each partition this consumer fetches.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let task = self.task.to_string();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's unassigned-partition bucket; a negative lag is unknown.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("sluice_sink_consumer_lag_records", "connector" => self.connector.clone(), "task" => task.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

impl SinkContext {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("connector", self.connector.clone()),
            ("task", self.task.to_string()),
        ]
    }

    /// Sends an event and waits for the loop's answer; an empty answer if the loop is
    /// gone or too slow (then nothing extra is committed: at worst records are read again).
    fn ask(&self, make: impl FnOnce(std_mpsc::SyncSender<Offsets>) -> Event) -> Offsets {
        let (tx, rx) = std_mpsc::sync_channel(1);
        if self.events.blocking_send(make(tx)).is_err() {
            return Offsets::new();
        }
        rx.recv_timeout(self.flush_timeout).unwrap_or_else(|_| {
            tracing::warn!(connector = %self.connector, task = self.task, timeout_ms = self.flush_timeout.as_millis() as u64, "sink task did not flush in time during a rebalance; its uncommitted records will be read again");
            Offsets::new()
        })
    }
}

impl ConsumerContext for SinkContext {
    /// Every commit's outcome (sync and async alike), served inside `poll`.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, list: &TopicPartitionList) {
        let labels = self.labels();
        let started = self
            .commits_issued
            .lock()
            .ok()
            .and_then(|mut issued| issued.pop_front());
        match result {
            Ok(()) => {
                let offsets = offsets_of(list);
                self.confirmations.confirm(&offsets);
                metrics::counter!("sluice_sink_offset_commit_success_total", &labels).increment(1);
                if let Some(started) = started {
                    metrics::histogram!("sluice_sink_offset_commit_seconds", &labels)
                        .record(started.elapsed().as_secs_f64());
                }
                tracing::debug!(connector = %self.connector, task = self.task, partitions = offsets.len(), "offsets committed");
            }
            Err(e) => {
                // Not confirmed: the next periodic commit asks for the same or later
                // offsets; until then a restart re-reads (at-least-once), never skips.
                metrics::counter!("sluice_sink_offset_commit_failure_total", &labels).increment(1);
                tracing::warn!(connector = %self.connector, task = self.task, error = %e, "offset commit failed; asked for again at the next commit");
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let partitions = partitions_of(list);
        metrics::counter!("sluice_sink_rebalances_total", &self.labels()).increment(1);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                let starts = self.ask(|reply| Event::Assigned {
                    generation,
                    partitions: partitions.clone(),
                    reply,
                });
                let mut assign = TopicPartitionList::new();
                for tp in &partitions {
                    // Offset::Invalid: from the group's committed offset.
                    let at = starts
                        .get(tp)
                        .map_or(Offset::Invalid, |o| Offset::Offset(*o));
                    let _ = assign.add_partition_offset(&tp.topic, tp.partition, at);
                }
                if let Err(e) = consumer.assign(&assign) {
                    tracing::error!(connector = %self.connector, task = self.task, error = %e, "assigning partitions failed");
                }
                crate::telemetry::live().assigned(
                    &self.connector,
                    self.task,
                    partitions
                        .iter()
                        .map(|tp| (tp.topic.as_str(), tp.partition)),
                );
                if let Some(group) = consumer.group_metadata() {
                    let _ = self.events.blocking_send(Event::Group(group));
                }
                tracing::info!(connector = %self.connector, task = self.task, partitions = partitions.len(), generation, "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                let durable = self.ask(|reply| Event::Revoked {
                    generation,
                    partitions: partitions.clone(),
                    reply,
                });
                if !durable.is_empty() {
                    commit_offsets(consumer, &durable, CommitMode::Sync);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(connector = %self.connector, task = self.task, error = %e, "unassigning partitions failed");
                }
                crate::telemetry::live().revoked(
                    &self.connector,
                    self.task,
                    Some(
                        partitions
                            .iter()
                            .map(|tp| (tp.topic.as_str(), tp.partition))
                            .collect(),
                    ),
                );
                tracing::info!(connector = %self.connector, task = self.task, partitions = partitions.len(), generation, "partitions revoked");
            }
            other => {
                tracing::error!(connector = %self.connector, task = self.task, error = ?other, "rebalance error; giving up the assignment");
                self.generation.fetch_add(1, Ordering::SeqCst);
                let _ = consumer.unassign();
                crate::telemetry::live().revoked(&self.connector, self.task, None);
            }
        }
    }
}

/// Asks the group to commit `offsets`: synchronously during a revoke (the partitions must
/// not go before), asynchronously between polls (polling must not wait on the
/// coordinator). The outcome of either arrives in [`SinkContext::commit_callback`], which
/// counts it and confirms it to the task's loop; a commit that fails is asked for again.
fn commit_offsets(consumer: &BaseConsumer<SinkContext>, offsets: &Offsets, mode: CommitMode) {
    let ctx = consumer.context();
    if let Ok(mut issued) = ctx.commits_issued.lock() {
        issued.push_back(Instant::now());
    }
    if let Err(e) = consumer.commit(&tpl(offsets), mode) {
        // Refused before it was sent (e.g. no coordinator): no callback follows.
        if let Ok(mut issued) = ctx.commits_issued.lock() {
            issued.pop_back();
        }
        metrics::counter!("sluice_sink_offset_commit_failure_total", &ctx.labels()).increment(1);
        tracing::warn!(connector = %ctx.connector, task = ctx.task, error = %e, "offset commit failed; asked for again at the next commit");
    }
}

/// What the poller reads records from: the task's consumer (a fake in unit tests).
trait RecordSource {
    /// The next record, waiting up to `timeout`; serves rebalances on the way.
    fn next(&self, timeout: Duration) -> Option<Result<Raw, KafkaError>>;
    /// The assignment generation, moved on by every rebalance.
    fn generation(&self) -> u64;
}

impl RecordSource for BaseConsumer<SinkContext> {
    fn next(&self, timeout: Duration) -> Option<Result<Raw, KafkaError>> {
        self.poll(timeout).map(|r| r.map(|m| owned(&m)))
    }

    fn generation(&self) -> u64 {
        self.context().generation.load(Ordering::SeqCst)
    }
}

/// Reads up to `max_batch` records (waiting `wait` for the first) and says which
/// assignment generation they belong to. `Err` carries a fatal consumer error.
fn gather(
    source: &impl RecordSource,
    wait: Duration,
    max_batch: usize,
    connector: &str,
    task: u32,
) -> Result<(u64, Vec<Raw>), String> {
    let mut polled = Vec::new();
    // The generation is taken before each poll and compared after it: a poll that serves
    // a rebalance returns at once, and what this loop gathered before it was fetched under
    // the old assignment. The revoke committed only what the task had consumed, so those
    // records are read again from the committed offsets: drop them here (as Kafka Connect
    // clears its batch on revoke), or they would be delivered twice, or merged with
    // records of the new assignment into a batch dropped whole as foreign.
    let mut generation = source.generation();
    let mut next = source.next(wait);
    while let Some(result) = next {
        let now = source.generation();
        if now != generation {
            if !polled.is_empty() {
                metrics::counter!("sluice_sink_records_dropped_stale_total", "connector" => connector.to_owned(), "task" => task.to_string())
                    .increment(polled.len() as u64);
                tracing::debug!(connector = %connector, task, records = polled.len(), "records polled before a rebalance dropped; they are read again");
            }
            polled.clear();
            generation = now;
        }
        match result {
            Ok(m) => polled.push(m),
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(e) => {
                let fatal = matches!(&e, KafkaError::MessageConsumptionFatal(_));
                metrics::counter!("sluice_sink_consumer_errors_total", "connector" => connector.to_owned(), "task" => task.to_string()).increment(1);
                tracing::warn!(connector = %connector, task, error = %e, fatal, "consumer error");
                if fatal {
                    return Err(e.to_string());
                }
                break;
            }
        }
        if polled.len() >= max_batch {
            break;
        }
        next = source.next(Duration::ZERO);
    }
    Ok((generation, polled))
}

/// How long a full task may keep the poller waiting before its partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The poller thread's loop.
fn poll_thread(
    consumer: BaseConsumer<SinkContext>,
    commands: std_mpsc::Receiver<Command>,
    max_batch: usize,
) {
    let ctx = consumer.context();
    let events = ctx.events.clone();
    let (connector, task) = (ctx.connector.clone(), ctx.task);
    let mut held: Option<(u64, Vec<Raw>)> = None;
    let mut paused_in: Option<u64> = None;
    // Waits for room in the channel with a timeout, on this thread.
    let waiter = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = events.blocking_send(Event::Fatal(format!("poll thread runtime: {e}")));
            return;
        }
    };
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Commit(asked_in, mut offsets)) => {
                    // A commit asked for before a rebalance must not land after it: on a
                    // partition that moved it could rewind the new owner's offsets, and
                    // the revoke already committed everything durable.
                    if asked_in != ctx.generation.load(Ordering::SeqCst) {
                        continue;
                    }
                    let owned: Vec<TopicPartition> = consumer
                        .assignment()
                        .map(|a| partitions_of(&a))
                        .unwrap_or_default();
                    offsets.retain(|tp, _| owned.contains(tp));
                    if !offsets.is_empty() {
                        commit_offsets(&consumer, &offsets, CommitMode::Async);
                    }
                }
                Ok(Command::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    // Dropping the consumer closes it: the revoke callback finds the loop
                    // gone and commits nothing more (the loop committed before stopping).
                    drop(events);
                    drop(consumer);
                    return;
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        let generation = ctx.generation.load(Ordering::SeqCst);
        if let Some((g, records)) = held.take() {
            // Wait for room a while before pausing: librdkafka drops what it prefetched
            // for a paused partition and fetches it again on resume.
            let patience = if paused_in.is_some() {
                Duration::from_millis(50)
            } else {
                PAUSE_AFTER
            };
            // The timer must be made inside the runtime, hence the async block.
            match waiter.block_on(async { tokio::time::timeout(patience, events.reserve()).await })
            {
                Ok(Ok(permit)) => {
                    permit.send(Event::Batch {
                        generation: g,
                        records,
                    });
                    if paused_in == Some(generation) {
                        if let Ok(assigned) = consumer.assignment() {
                            let _ = consumer.resume(&assigned);
                        }
                    }
                    paused_in = None;
                }
                Ok(Err(_)) => return, // the loop is gone
                Err(_) => {
                    held = Some((g, records));
                    if paused_in != Some(generation) {
                        // Pause, but keep polling: that serves rebalances and keeps the
                        // member in the group.
                        if let Ok(assigned) = consumer.assignment() {
                            let _ = consumer.pause(&assigned);
                        }
                        paused_in = Some(generation);
                        metrics::counter!("sluice_sink_backpressure_pauses_total", "connector" => connector.clone(), "task" => task.to_string()).increment(1);
                        tracing::debug!(connector = %connector, task, "sink task busy; partitions paused");
                    }
                }
            }
        }
        let wait = if held.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        let (generation, polled) = match gather(&consumer, wait, max_batch, &connector, task) {
            Ok(gathered) => gathered,
            Err(fatal) => {
                let _ = events.blocking_send(Event::Fatal(fatal));
                return;
            }
        };
        if polled.is_empty() {
            continue;
        }
        held = match held.take() {
            // Fetched before the pause took effect: same stream, keep the order.
            Some((g, mut records)) if g == generation => {
                records.extend(polled);
                Some((g, records))
            }
            _ => Some((generation, polled)),
        };
    }
}

/// The running writer of a task life.
enum Writer {
    Task(Box<dyn SinkTask>),
    Kafka {
        producer: TaskProducer,
        group: Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>,
        open: bool,
        opened_at: Option<Instant>,
        records: u64,
    },
}

/// One task life's state in the async loop.
struct Life<'a> {
    spec: &'a SinkTaskSpec,
    labels: Labels,
    /// Where retries of a failed put are reported while they last.
    health: TaskHealth,
    writer: Writer,
    commands: std_mpsc::Sender<Command>,
    generation: u64,
    assigned: BTreeSet<TopicPartition>,
    /// Next offset per partition, of everything delivered (written, filtered or sent to
    /// the dead-letter queue).
    consumed: Offsets,
    /// What was committed, per partition.
    commits: CommitBook,
    dlq: Option<TaskProducer>,
}

/// A converted batch: the records to write, with their input, and the dead letters.
type Prepared = (Vec<(Raw, Envelope)>, Vec<OutRecord>);

fn stage_error(stage: &'static str, r: &Raw, message: String) -> SinkError {
    SinkError::Record {
        stage,
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        message,
    }
}

/// A tolerated bad record: counted, logged if asked, and its original bytes go to the
/// dead-letter queue (if set) with Kafka Connect's error context headers.
fn tolerate(
    spec: &SinkTaskSpec,
    labels: &Labels,
    r: &Raw,
    stage: &str,
    error: &dyn std::fmt::Display,
) -> Option<OutRecord> {
    crate::task::errors::count_tolerated(labels, stage);
    if spec.errors.log {
        if spec.errors.log_messages {
            tracing::warn!(connector = %spec.connector, task = spec.task, stage, error = %error, record = ?r, "bad record tolerated");
        } else {
            tracing::warn!(connector = %spec.connector, task = spec.task, stage, error = %error, "bad record tolerated");
        }
    }
    let topic = spec.errors.dlq_topic.clone()?;
    use crate::task::errors::headers as h;
    let text = |k: &str, v: String| (k.to_owned(), Some(v.into_bytes()));
    let mut headers = r.headers.clone();
    let class = if stage == "TASK_PUT" {
        "ConnectorError"
    } else {
        "SinkRecordError"
    };
    headers.extend([
        text(h::TOPIC, r.topic.clone()),
        text(h::PARTITION, r.partition.to_string()),
        text(h::OFFSET, r.offset.to_string()),
        text(h::CONNECTOR, spec.connector.clone()),
        text(h::TASK, spec.task.to_string()),
        text(h::STAGE, stage.to_owned()),
        text(h::EXCEPTION_CLASS, class.to_owned()),
        text(h::EXCEPTION_MESSAGE, error.to_string()),
    ]);
    metrics::counter!("sluice_dlq_records_total", &labels.pairs()).increment(1);
    Some(OutRecord {
        topic,
        partition: 0,
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp: r.timestamp,
        headers,
    })
}

impl Life<'_> {
    /// Converts and transforms one record; `None` when a transform dropped it.
    fn envelope(&self, r: &Raw) -> Result<Option<Envelope>, SinkError> {
        let spec = self.spec;
        let (key_schema, key) = spec
            .key_converter
            .to_connect(&r.topic, r.key.as_deref())
            .map_err(|e| stage_error("KEY_CONVERTER", r, e.to_string()))?;
        let (value_schema, value) = spec
            .value_converter
            .to_connect(&r.topic, r.value.as_deref())
            .map_err(|e| stage_error("VALUE_CONVERTER", r, e.to_string()))?;
        let envelope = Envelope {
            topic: r.topic.clone(),
            partition: Some(r.partition),
            offset: Some(r.offset),
            key_schema,
            key,
            value_schema,
            value,
            timestamp: r.timestamp,
            headers: r
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        if spec.transforms.is_empty() {
            return Ok(Some(envelope));
        }
        spec.transforms
            .apply(envelope)
            .map_err(|e| stage_error("TRANSFORMATION", r, e.to_string()))
    }

    /// Converts a batch; bad records are tolerated or fail the task.
    fn prepare(&self, records: &[Raw]) -> Result<Prepared, SinkError> {
        let mut good = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for r in records {
            match self.envelope(r) {
                Ok(Some(e)) => good.push((r.clone(), e)),
                Ok(None) => {
                    metrics::counter!("sluice_sink_records_filtered_total", &self.labels.pairs())
                        .increment(1);
                }
                Err(e @ SinkError::Record { stage, .. }) if self.spec.errors.tolerate_all => {
                    dead.extend(tolerate(self.spec, &self.labels, r, stage, &e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, dead))
    }

    async fn deliver(&mut self, records: Vec<Raw>) -> Result<(), SinkError> {
        let read = records.len() as u64;
        metrics::counter!("sluice_sink_records_read_total", &self.labels.pairs()).increment(read);
        let (good, dead) = self.prepare(&records)?;
        let sent = good.len() as u64;
        let started = Instant::now();
        match &mut self.writer {
            Writer::Task(task) => {
                let (raws, batch): (Vec<Raw>, Vec<SinkRecord>) = good
                    .into_iter()
                    .map(|(raw, e)| {
                        let record = SinkRecord {
                            topic: e.topic,
                            partition: e.partition.unwrap_or(raw.partition),
                            offset: raw.offset,
                            key_schema: e.key_schema,
                            key: e.key,
                            value_schema: e.value_schema,
                            value: e.value,
                            timestamp: e.timestamp,
                            timestamp_type: raw.timestamp_type,
                            headers: e.headers,
                        };
                        (raw, record)
                    })
                    .unzip();
                let mut dead = dead;
                match put_with_retry(
                    self.spec,
                    task.as_mut(),
                    batch.clone(),
                    &self.labels,
                    &self.health,
                )
                .await
                {
                    Ok(()) => {}
                    // Nothing of the batch was written (the put contract): find the bad
                    // records by putting them one at a time.
                    Err(SinkError::Connector(e))
                        if e.kind == ErrorKind::Data && self.spec.errors.tolerate_all =>
                    {
                        tracing::warn!(connector = %self.spec.connector, task = self.spec.task, records = batch.len(), error = %e, "put refused a record; isolating the bad ones");
                        for (raw, record) in raws.iter().zip(batch) {
                            match put_with_retry(
                                self.spec,
                                task.as_mut(),
                                vec![record],
                                &self.labels,
                                &self.health,
                            )
                            .await
                            {
                                Ok(()) => {}
                                Err(SinkError::Connector(e)) if e.kind == ErrorKind::Data => {
                                    dead.extend(tolerate(
                                        self.spec,
                                        &self.labels,
                                        raw,
                                        "TASK_PUT",
                                        &e,
                                    ));
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
                if !dead.is_empty() {
                    if let Some(dlq) = &self.dlq {
                        // Durable before the bad records' offsets can be committed.
                        let letters = dead.len() as u64;
                        let written = async {
                            dlq.send(dead).await?;
                            dlq.commit().await
                        }
                        .await;
                        if written.is_err() {
                            metrics::counter!(
                                "sluice_dlq_produce_failures_total",
                                &self.labels.pairs()
                            )
                            .increment(letters);
                        }
                        written?;
                    }
                }
            }
            Writer::Kafka {
                producer,
                open,
                opened_at,
                records: in_txn,
                ..
            } => {
                let Output::Kafka {
                    rename,
                    preserve_partitions,
                    router,
                    ..
                } = &self.spec.output
                else {
                    return Ok(());
                };
                let mut out = Vec::with_capacity(good.len());
                for (raw, e) in good {
                    out.push(self.spec.to_kafka(raw, e, rename, *preserve_partitions)?);
                }
                let routed = router.send(Route(out)).await??;
                if !*open {
                    producer.begin().await?;
                    *open = true;
                    *opened_at = Some(Instant::now());
                }
                producer.send(routed).await?;
                if !dead.is_empty() {
                    // Same transaction: the dead letters are exactly-once too.
                    producer.send(dead).await?;
                }
                *in_txn += read;
            }
        }
        for r in &records {
            self.consumed.insert(r.tp(), r.offset + 1);
        }
        metrics::histogram!("sluice_sink_put_batch_seconds", &self.labels.pairs())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("sluice_sink_records_sent_total", &self.labels.pairs()).increment(sent);
        Ok(())
    }

    /// Commits what is durable: asks the sink (`pre_commit`) and has the poller commit
    /// the answer; for the Kafka output, commits the open transaction with the offsets.
    /// Returns the offsets to commit through the group (empty for the Kafka output).
    /// All partitions are flushed together: a transaction's offsets must cover every record
    /// in it, and the eager protocol revokes everything at once anyway.
    ///
    /// `all` (a revoke or a stop) returns every durable offset, not only those not asked
    /// for yet: a commit asked for earlier may still be queued, and the poller drops it
    /// once the assignment changes.
    async fn flush(&mut self, all: bool) -> Result<Offsets, SinkError> {
        let pending = self.commits.pending(&self.consumed);
        match &mut self.writer {
            Writer::Task(task) => {
                let consumed = self.consumed.clone();
                let durable = task.pre_commit(&consumed).await?;
                Ok(self
                    .commits
                    .request(durable, &self.assigned, &consumed, all))
            }
            Writer::Kafka {
                producer,
                group,
                open,
                opened_at,
                records,
            } => {
                if !*open {
                    return Ok(Offsets::new());
                }
                let Some(group) = group.as_ref() else {
                    return Err(SinkError::Consumer(
                        "no consumer group metadata to commit offsets with".into(),
                    ));
                };
                let started = Instant::now();
                producer
                    .send_offsets(pending.clone(), Arc::clone(group))
                    .await?;
                producer.commit().await?;
                *open = false;
                metrics::histogram!(
                    "sluice_sink_transaction_commit_seconds",
                    &self.labels.pairs()
                )
                .record(started.elapsed().as_secs_f64());
                metrics::counter!(
                    "sluice_sink_transactions_committed_total",
                    &self.labels.pairs()
                )
                .increment(1);
                tracing::debug!(connector = %self.spec.connector, task = self.spec.task, records = *records, open_ms = opened_at.map_or(0, |t| t.elapsed().as_millis() as u64), "transaction committed with consumer offsets");
                *records = 0;
                *opened_at = None;
                self.commits.confirm(&pending);
                Ok(Offsets::new())
            }
        }
    }

    /// Periodic commit: flush, then hand the offsets to the poller.
    async fn commit(&mut self, all: bool) -> Result<(), SinkError> {
        let offsets = self.flush(all).await?;
        if !offsets.is_empty() {
            let _ = self
                .commands
                .send(Command::Commit(self.generation, offsets));
        }
        Ok(())
    }

    async fn handle(&mut self, event: Event) -> Result<(), SinkError> {
        match event {
            Event::Batch {
                generation,
                records,
            } => {
                let stale = generation != self.generation;
                let foreign = records.iter().any(|r| !self.assigned.contains(&r.tp()));
                if stale || foreign {
                    // Polled under an earlier assignment: not committed, so it is read
                    // again by whoever owns the partition now.
                    metrics::counter!(
                        "sluice_sink_records_dropped_stale_total",
                        &self.labels.pairs()
                    )
                    .increment(records.len() as u64);
                    return Ok(());
                }
                self.deliver(records).await
            }
            Event::Assigned {
                generation,
                partitions,
                reply,
            } => {
                self.generation = generation;
                let starts = match &mut self.writer {
                    Writer::Task(task) => task.open(&partitions).await?,
                    Writer::Kafka { .. } => {
                        Self::ensure_outputs(self.spec, &partitions).await?;
                        Offsets::new()
                    }
                };
                self.assigned.extend(partitions.iter().cloned());
                metrics::gauge!("sluice_sink_partition_count", &self.labels.pairs())
                    .set(self.assigned.len() as f64);
                let _ = reply.send(starts);
                Ok(())
            }
            Event::Group(group) => {
                if let Writer::Kafka { group: g, .. } = &mut self.writer {
                    *g = Some(Arc::new(group));
                }
                Ok(())
            }
            Event::Revoked {
                generation,
                partitions,
                reply,
            } => {
                self.generation = generation;
                let durable = self.flush(true).await;
                if let Writer::Task(task) = &mut self.writer {
                    task.close(&partitions).await?;
                }
                for tp in &partitions {
                    self.assigned.remove(tp);
                    self.consumed.remove(tp);
                    self.commits.forget(tp);
                }
                metrics::gauge!("sluice_sink_partition_count", &self.labels.pairs())
                    .set(self.assigned.len() as f64);
                let _ = reply.send(durable.as_ref().cloned().unwrap_or_default());
                durable.map(|_| ())
            }
            Event::Fatal(message) => Err(SinkError::Consumer(message)),
        }
    }

    /// Creates missing output topics with their input's partition count, so partitions can
    /// be preserved.
    async fn ensure_outputs(
        spec: &SinkTaskSpec,
        partitions: &[TopicPartition],
    ) -> Result<(), SinkError> {
        let Output::Kafka { rename, .. } = &spec.output else {
            return Ok(());
        };
        let topics: BTreeSet<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        for topic in topics {
            let count = crate::storage::offsets::partition_count(
                &spec.consumer_props,
                topic,
                spec.kafka_timeout,
            )
            .await?;
            let target = rename.replace("${topic}", topic);
            crate::storage::offsets::ensure_topic(&spec.producer_props, &target, count, -1, false)
                .await?;
        }
        Ok(())
    }
}

impl SinkTaskSpec {
    /// A record for the Kafka output: the input bytes as they were unless transforms ran
    /// (then the transformed record converted back).
    fn to_kafka(
        &self,
        raw: Raw,
        e: Envelope,
        rename: &str,
        preserve: bool,
    ) -> Result<Unrouted, SinkError> {
        let topic = rename.replace("${topic}", &e.topic);
        let partition = preserve.then_some(raw.partition);
        if self.transforms.is_empty() {
            return Ok(Unrouted {
                topic,
                partition,
                key: raw.key,
                value: raw.value,
                timestamp: raw.timestamp,
                headers: raw.headers,
            });
        }
        let key = self
            .key_converter
            .to_kafka(&topic, e.key_schema.as_deref(), &e.key)
            .map_err(|err| stage_error("KEY_CONVERTER", &raw, err.to_string()))?;
        let value = self
            .value_converter
            .to_kafka(&topic, e.value_schema.as_deref(), &e.value)
            .map_err(|err| stage_error("VALUE_CONVERTER", &raw, err.to_string()))?;
        Ok(Unrouted {
            topic,
            partition,
            key,
            value,
            timestamp: e.timestamp,
            headers: e.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        })
    }
}

/// Puts a batch; retriable failures are retried with backoff, while the poller keeps the
/// member in the group and pauses the partitions: within `errors.retry.timeout` when it is
/// set, else for as long as they last (Kafka Connect's `RetriableException` semantics).
/// Meanwhile `health` says the task is retrying; the first put that succeeds clears it.
async fn put_with_retry(
    spec: &SinkTaskSpec,
    task: &mut dyn SinkTask,
    batch: Vec<SinkRecord>,
    labels: &Labels,
    health: &TaskHealth,
) -> Result<(), SinkError> {
    let mut attempt = 0;
    let mut first_failure: Option<Instant> = None;
    let bounded = spec.errors.retry_timeout != Some(Duration::ZERO);
    loop {
        match task.put(batch.clone()).await {
            Ok(()) => {
                health.recovered();
                return Ok(());
            }
            Err(e)
                if e.retriable
                    && (!bounded
                        || spec.errors.may_retry(
                            first_failure.get_or_insert_with(Instant::now).elapsed(),
                        )) =>
            {
                attempt += 1;
                let wait = spec.errors.retry_delay(attempt);
                metrics::counter!("sluice_task_retries_total", &labels.pairs()).increment(1);
                tracing::warn!(connector = %spec.connector, task = spec.task, attempt, backoff_ms = wait.as_millis() as u64, error = %e, "retriable put failure; retrying the batch");
                health.retrying(&e, attempt, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn consumer_config(spec: &SinkTaskSpec) -> BTreeMap<String, String> {
    let mut props = spec.consumer_props.clone();
    props.insert("group.id".into(), group_id(&spec.connector));
    // Offsets are committed by the runtime, only for what the sink made durable.
    props.insert("enable.auto.commit".into(), "false".into());
    props.insert("enable.auto.offset.store".into(), "false".into());
    props
        .entry("auto.offset.reset".into())
        .or_insert_with(|| "earliest".into());
    props
        .entry("client.id".into())
        .or_insert_with(|| format!("connector-consumer-{}-{}", spec.connector, spec.task));
    // A killed worker's members hold their partitions until their session expires; the
    // consumer default (45 s) would stall a restarted task that long. Kafka Connect's own
    // worker group uses 10 s.
    props
        .entry("session.timeout.ms".into())
        .or_insert_with(|| "10000".into());
    // librdkafka prefetches up to 64 MiB per consumer by default; a sink task needs far
    // less to keep busy, and memory should stay small and bounded.
    props
        .entry("queued.max.messages.kbytes".into())
        .or_insert_with(|| "16384".into());
    // When that prefetch queue is full librdkafka postpones the next fetch by this much
    // (default 1 s), which starves a fast sink; 20 ms keeps it fed.
    props
        .entry("fetch.queue.backoff.ms".into())
        .or_insert_with(|| "20".into());
    // Consumer lag comes from librdkafka's statistics.
    props
        .entry("statistics.interval.ms".into())
        .or_insert_with(|| "5000".into());
    // The rebalance callback hands over whole assignments (eager protocol).
    let strategy = props
        .entry("partition.assignment.strategy".into())
        .or_insert_with(|| "range,roundrobin".into());
    if strategy.contains("cooperative") {
        tracing::warn!(connector = %spec.connector, task = spec.task, strategy = %strategy, "cooperative assignment is not supported by the sink runtime yet; using range,roundrobin");
        *strategy = "range,roundrobin".into();
    }
    props
}

/// Runs one life of a sink task: consumer, writer, loop, final commit, stop.
pub async fn run_sink_task(
    spec: Arc<SinkTaskSpec>,
    mut stop: watch::Receiver<bool>,
    health: TaskHealth,
) -> Result<(), SinkError> {
    let labels = Labels {
        connector: spec.connector.clone(),
        task: spec.task.to_string(),
    };
    let writer = match &spec.output {
        Output::Task(factory) => {
            let mut task = factory();
            let started = task.start(&spec.config).await;
            labels.count_startup(started.is_ok());
            started?;
            Writer::Task(task)
        }
        Output::Kafka {
            transactional_id, ..
        } => {
            // init_transactions fences any earlier life of this task.
            let producer = TaskProducer::create(
                spec.producer_props.clone(),
                Some(transactional_id.clone()),
                spec.kafka_timeout,
            )
            .await;
            labels.count_startup(producer.is_ok());
            Writer::Kafka {
                producer: producer?,
                group: None,
                open: false,
                opened_at: None,
                records: 0,
            }
        }
    };
    let dlq = match (&spec.errors.dlq_topic, &spec.output) {
        (Some(topic), Output::Task(_)) => {
            crate::storage::offsets::ensure_topic(
                &spec.producer_props,
                topic,
                1,
                spec.errors.dlq_replication,
                false,
            )
            .await?;
            Some(TaskProducer::create(spec.producer_props.clone(), None, spec.kafka_timeout).await?)
        }
        (Some(topic), Output::Kafka { .. }) => {
            crate::storage::offsets::ensure_topic(
                &spec.producer_props,
                topic,
                1,
                spec.errors.dlq_replication,
                false,
            )
            .await?;
            None
        }
        _ => None,
    };

    let (events_tx, mut events) = mpsc::channel(4);
    let confirmations = Confirmations::default();
    let (commands, commands_rx) = std_mpsc::channel();
    let context = SinkContext {
        connector: spec.connector.clone(),
        task: spec.task,
        events: events_tx,
        generation: AtomicU64::new(0),
        confirmations: confirmations.clone(),
        commits_issued: std::sync::Mutex::new(std::collections::VecDeque::new()),
        flush_timeout: spec.kafka_timeout * 2,
    };
    let props = consumer_config(&spec);
    let consumer: BaseConsumer<SinkContext> = client_config(&props)
        .create_with_context(context)
        .map_err(|e| SinkError::Consumer(sluice_proto::config::redact(&e.to_string(), &props)))?;
    match &spec.subscription {
        Subscription::Topics(topics) => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)
        }
        // librdkafka treats a subscription starting with ^ as a regex.
        Subscription::Regex(regex) => consumer.subscribe(&[&format!(
            "^{}$",
            regex.trim_start_matches('^').trim_end_matches('$')
        )]),
    }
    .map_err(|e| SinkError::Consumer(format!("subscribing: {e}")))?;
    let max_batch = spec.max_batch.max(1);
    let poller = std::thread::Builder::new()
        .name(format!("sink-{}-{}", spec.connector, spec.task))
        .spawn(move || poll_thread(consumer, commands_rx, max_batch))
        .map_err(|e| SinkError::Consumer(format!("starting the poll thread: {e}")))?;
    tracing::info!(connector = %spec.connector, task = spec.task, group = %group_id(&spec.connector), subscription = ?spec.subscription, "sink task started");

    let commit_every = match &spec.output {
        Output::Task(_) => spec.commit_interval,
        Output::Kafka {
            commit_interval, ..
        } => *commit_interval,
    };
    let mut life = Life {
        spec: &spec,
        labels,
        health,
        writer,
        commands,
        generation: 0,
        assigned: BTreeSet::new(),
        consumed: Offsets::new(),
        commits: CommitBook::new(confirmations),
        dlq,
    };
    let mut ticker = tokio::time::interval(commit_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = async {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                event = events.recv() => match event {
                    Some(event) => life.handle(event).await?,
                    None => return Err(SinkError::Consumer("the poll thread ended".into())),
                },
                _ = ticker.tick() => life.commit(false).await?,
            }
        }
        // Stopping: commit what is durable, so a restart neither re-reads nor skips.
        life.commit(true).await
    }
    .await;
    let _ = life.commands.send(Command::Stop);
    // The poller's final revoke must not wait on a loop that no longer listens.
    drop(events);
    // Bounded: a poller stuck in librdkafka (a broker gone mid-revoke) must not hold the
    // task's exit, and with it the supervisor's restart.
    if let Err(e) = crate::kafka::blocking(spec.kafka_timeout, move || poller.join()).await {
        tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "the poll thread did not end; left behind");
    }
    let Life {
        writer, assigned, ..
    } = life;
    match writer {
        Writer::Task(mut task) => {
            let assigned: Vec<TopicPartition> = assigned.into_iter().collect();
            if !assigned.is_empty() {
                let _ = task.close(&assigned).await;
            }
            task.stop().await;
        }
        Writer::Kafka { producer, open, .. } => {
            if open {
                // Not committed: the records come back with the offsets on restart.
                let _ = producer.abort().await;
                metrics::counter!("sluice_sink_transactions_aborted_total", "connector" => spec.connector.clone(), "task" => spec.task.to_string()).increment(1);
            }
        }
    }
    metrics::gauge!("sluice_sink_partition_count", "connector" => spec.connector.clone(), "task" => spec.task.to_string()).set(0.0);
    crate::telemetry::live().revoked(&spec.connector, spec.task, None);
    match &result {
        Ok(()) => {
            tracing::info!(connector = %spec.connector, task = spec.task, "sink task stopped");
        }
        Err(e) => {
            tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "sink task failed");
        }
    }
    result
}

/// A sink connector's consumer group could not be read or changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("consumer group {group}: {message}")]
pub struct GroupError {
    /// The group.
    pub group: String,
    /// What failed.
    pub message: String,
}

fn group_consumer(
    props: &BTreeMap<String, String>,
    group: &str,
) -> Result<BaseConsumer, GroupError> {
    let mut props = props.clone();
    props.insert("group.id".into(), group.to_owned());
    props.insert("enable.auto.commit".into(), "false".into());
    client_config(&props).create().map_err(|e| GroupError {
        group: group.to_owned(),
        message: sluice_proto::config::redact(&e.to_string(), &props),
    })
}

/// The committed offsets (next to read) of a sink connector's group, for every partition of
/// the topics its subscription names now.
pub async fn group_offsets(
    props: &BTreeMap<String, String>,
    group: &str,
    subscription: &Subscription,
    timeout: Duration,
) -> Result<Offsets, GroupError> {
    let consumer = group_consumer(props, group)?;
    let subscription = subscription.clone();
    let group_name = group.to_owned();
    let fail = move |message: String| GroupError {
        group: group_name.clone(),
        message,
    };
    crate::kafka::blocking(timeout, move || {
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(|e| fail(format!("fetching metadata: {e}")))?;
        let regex = match &subscription {
            Subscription::Regex(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| fail(format!("topics.regex: {e}")))?,
            ),
            Subscription::Topics(_) => None,
        };
        let mut list = TopicPartitionList::new();
        for topic in metadata.topics() {
            let wanted = match (&subscription, &regex) {
                (Subscription::Topics(ts), _) => ts.iter().any(|t| t == topic.name()),
                (_, Some(r)) => r.is_match(topic.name()),
                _ => false,
            };
            if wanted {
                for p in topic.partitions() {
                    list.add_partition(topic.name(), p.id());
                }
            }
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .map_err(|e| fail(format!("reading committed offsets: {e}")))?;
        Ok(offsets_of(&committed))
    })
    .await
    .map_err(|e| GroupError {
        group: group.to_owned(),
        message: format!("reader thread: {e}"),
    })?
}

/// Commits `offsets` for a group with no active member (a STOPPED sink connector),
/// waiting at most `timeout`.
pub async fn alter_group_offsets(
    props: &BTreeMap<String, String>,
    group: &str,
    offsets: Offsets,
    timeout: Duration,
) -> Result<(), GroupError> {
    let consumer = group_consumer(props, group)?;
    let name = group.to_owned();
    crate::kafka::blocking(timeout, move || {
        consumer
            .commit(&tpl(&offsets), CommitMode::Sync)
            .map_err(|e| GroupError {
                group: name,
                message: format!("committing offsets: {e}"),
            })
    })
    .await
    .map_err(|e| GroupError {
        group: group.to_owned(),
        message: format!("commit thread: {e}"),
    })?
}

/// Deletes a group (and with it every committed offset): the sink starts over from
/// `auto.offset.reset`.
pub async fn delete_group(
    props: &BTreeMap<String, String>,
    group: &str,
    timeout: Duration,
) -> Result<(), GroupError> {
    let fail = |message: String| GroupError {
        group: group.to_owned(),
        message,
    };
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(props)
            .create()
            .map_err(|e| fail(sluice_proto::config::redact(&e.to_string(), props)))?;
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(timeout));
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        admin.delete_groups(&[group], &options),
    )
    .await
    .map_err(|_| fail("DeleteGroups timed out".into()))?
    .map_err(|e| fail(format!("DeleteGroups: {e}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, code)) => return Err(fail(format!("DeleteGroups: {code}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    /// Plays back a script: each step is a poll's answer, optionally after a rebalance
    /// served inside that poll (which moves the generation on, as the consumer's
    /// callback does).
    struct Script {
        steps: RefCell<VecDeque<(bool, Option<i64>)>>,
        generation: Cell<u64>,
    }

    impl Script {
        fn new(steps: &[(bool, Option<i64>)]) -> Self {
            Script {
                steps: RefCell::new(steps.iter().copied().collect()),
                generation: Cell::new(1),
            }
        }
    }

    fn raw(offset: i64) -> Raw {
        Raw {
            topic: "in".into(),
            partition: 0,
            offset,
            key: None,
            value: Some(offset.to_string().into_bytes()),
            timestamp: None,
            timestamp_type: TimestampType::NoTimestamp,
            headers: Vec::new(),
        }
    }

    impl RecordSource for Script {
        fn next(&self, _timeout: Duration) -> Option<Result<Raw, KafkaError>> {
            let (rebalance, offset) = self.steps.borrow_mut().pop_front()?;
            if rebalance {
                // Revoke and assign: two generations on.
                self.generation.set(self.generation.get() + 2);
            }
            offset.map(|o| Ok(raw(o)))
        }

        fn generation(&self) -> u64 {
            self.generation.get()
        }
    }

    fn offsets(records: &[Raw]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_fetched_before_a_rebalance_are_not_tagged_with_the_new_generation() {
        // Three records under generation 1, then a poll that serves a rebalance and
        // returns the first record of the new assignment (read again from the committed
        // offset 10).
        let script = Script::new(&[
            (false, Some(10)),
            (false, Some(11)),
            (false, Some(12)),
            (true, Some(10)),
            (false, Some(11)),
        ]);
        let (generation, records) = gather(&script, Duration::ZERO, 100, "c", 0).unwrap();
        assert_eq!(generation, 3);
        // Only what was read under generation 3: 10..12 of generation 1 were not
        // delivered, so nothing committed them; delivering them as generation 3 would
        // hand 10 and 11 to the task twice.
        assert_eq!(offsets(&records), [10, 11]);
    }

    #[test]
    fn a_rebalance_in_the_first_poll_tags_what_follows_it() {
        let script = Script::new(&[(true, Some(5)), (false, Some(6))]);
        let (generation, records) = gather(&script, Duration::ZERO, 100, "c", 0).unwrap();
        assert_eq!((generation, offsets(&records)), (3, vec![5, 6]));
        let script = Script::new(&[(false, Some(1)), (false, Some(2))]);
        let (generation, records) = gather(&script, Duration::ZERO, 100, "c", 0).unwrap();
        assert_eq!((generation, offsets(&records)), (1, vec![1, 2]));
    }
}
