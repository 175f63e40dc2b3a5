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
mod group;
mod life;
mod poller;

pub use group::{alter_group_offsets, delete_group, group_offsets, GroupError};
pub use poller::Raw;

use commits::{CommitBook, Confirmations, Offsets};
use life::{stage_error, Life, Writer};
use poller::{offsets_of, poll_thread, tpl, Command, Event, SinkContext};

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
use crate::kafka::producer::{ClaimGuard, OutRecord, ProducerError, TaskProducer};
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
    /// Asked before the task takes its transactional id (see [`ClaimGuard`]).
    pub claim: ClaimGuard,
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
            .to_kafka(&topic, e.key_schema.as_ref(), &e.key)
            .map_err(|err| stage_error("KEY_CONVERTER", &raw, err.to_string()))?;
        let value = self
            .value_converter
            .to_kafka(&topic, e.value_schema.as_ref(), &e.value)
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
            spec.claim
                .check(&spec.connector, spec.task, transactional_id)
                .await?;
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
                txn: crate::kafka::commit::Transaction::default(),
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
        writer,
        assigned,
        labels,
        ..
    } = life;
    match writer {
        Writer::Task(mut task) => {
            let assigned: Vec<TopicPartition> = assigned.into_iter().collect();
            if !assigned.is_empty() {
                let _ = task.close(&assigned).await;
            }
            task.stop().await;
        }
        Writer::Kafka {
            producer, mut txn, ..
        } => {
            if txn.is_open() {
                // Not committed: the records come back with the offsets on restart.
                txn.abort(&producer, crate::kafka::commit::Side::Sink, &labels)
                    .await;
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
