//! The source task actor and its poll loop.
//!
//! The actor is what the supervisor starts, stops and restarts. It runs the connector's
//! task in a spawned tokio task on its own arbiter, so a panic inside connector code
//! surfaces as a `JoinError` the actor reports (actix itself would just lose the actor),
//! and a connector that blocks its thread stalls only its own arbiter.
//!
//! The loop follows KIP-618: (1) create the producer and `init_transactions`, fencing any
//! zombie of this task; (2) read the committed offsets with read_committed; (3) poll,
//! convert, route, send; (4) at each transaction boundary write the offsets of the batch
//! into the same transaction and commit. A failed transaction is recovered in place
//! (`source_txn`); what cannot be recovered ends the loop, and the supervisor restarts the
//! task, which resumes from the last committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sluice_proto::{
    Props, SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
};
use tokio::sync::watch;

use crate::convert::Converter;
use crate::kafka::producer::{ClaimGuard, ProducerError, TaskProducer};
use crate::kafka::router::{PartitionRouter, Route, Unrouted};
use crate::storage::offsets::OffsetStore;
use crate::task::actor::Labels;
use crate::task::errors::ErrorPolicy;
use crate::task::health::TaskHealth;
use crate::task::source_txn::Pending;
use crate::transforms::{Envelope, TransformChain};

pub use crate::kafka::commit::Boundary;

/// Builds a fresh connector task for each (re)start.
pub type TaskFactory = Arc<dyn Fn() -> Box<dyn SourceTask> + Send + Sync>;

/// Everything a source task needs; shared by its restarts.
pub struct SourceTaskSpec {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task: u32,
    /// The task's config, from the connector's `task_configs`.
    pub config: Props,
    /// New connector task instances.
    pub factory: TaskFactory,
    /// Key converter.
    pub key_converter: Arc<dyn Converter>,
    /// Value converter.
    pub value_converter: Arc<dyn Converter>,
    /// Producer settings (worker `producer.*` plus connector `producer.override.*`).
    pub producer_props: BTreeMap<String, String>,
    /// `Some` for exactly-once: `<group.id>-<connector>-<task>`.
    pub transactional_id: Option<String>,
    /// Transaction boundary.
    pub boundary: Boundary,
    /// Where offsets live.
    pub offsets: OffsetStore,
    /// The worker's router.
    pub router: Addr<PartitionRouter>,
    /// Bound for every Kafka call.
    pub kafka_timeout: Duration,
    /// Asked before the task takes its transactional id (see [`ClaimGuard`]).
    pub claim: ClaimGuard,
    /// Topics the connector's records went to, shared by its tasks (KIP-558).
    pub topics: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// The connector's single message transforms, applied before conversion.
    pub transforms: Arc<TransformChain>,
    /// What to do with bad records and retriable failures.
    pub errors: ErrorPolicy,
    /// The worker's state topics, by the worker key naming each: no record may go there.
    pub state_topics: Arc<BTreeMap<String, &'static str>>,
}

impl std::fmt::Debug for SourceTaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTaskSpec")
            .field("connector", &self.connector)
            .field("task", &self.task)
            .field("transactional_id", &self.transactional_id)
            .field("boundary", &self.boundary)
            .finish_non_exhaustive()
    }
}

/// Why a task stopped working.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The connector's own code failed.
    #[error("connector task failed: {0}")]
    Connector(#[from] sluice_proto::ConnectorError),
    /// A record could not be converted; names its source coordinates.
    #[error("converting the {part} of the record from source partition {partition} at offset {offset}: {source}")]
    Convert {
        /// `key` or `value`.
        part: &'static str,
        /// Source partition, as JSON.
        partition: String,
        /// Source offset, as JSON.
        offset: String,
        /// The converter's error.
        #[source]
        source: Box<crate::convert::ConvertError>,
    },
    /// Kafka (producer or transaction) failed.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The offsets could not be read.
    #[error(transparent)]
    Offsets(#[from] crate::storage::offsets::OffsetStoreError),
    /// The router refused the batch.
    #[error(transparent)]
    Route(#[from] crate::kafka::router::RouteError),
    /// A transform failed on a record; names its source coordinates.
    #[error(
        "transforming the record from source partition {partition} at offset {offset}: {source}"
    )]
    Transform {
        /// Source partition, as JSON.
        partition: String,
        /// Source offset, as JSON.
        offset: String,
        /// The transform's error.
        #[source]
        source: crate::transforms::TransformError,
    },
    /// The router is gone (worker shutting down).
    #[error("partition router unavailable: {0}")]
    Mailbox(#[from] MailboxError),
    /// The broker (or the client) refused a record and `errors.tolerance=none`.
    #[error("connector {connector}: the record from source partition {partition} at offset {offset} for topic {topic} was refused: {reason}")]
    Refused {
        /// Connector name.
        connector: String,
        /// The record's topic.
        topic: String,
        /// Source partition, as JSON.
        partition: String,
        /// Source offset, as JSON.
        offset: String,
        /// Why.
        reason: String,
    },
    /// A record (after its transforms) is addressed to one of the worker's state topics.
    #[error("the record from source partition {partition} at offset {offset} is addressed to topic {topic}, the worker's {key}; connectors may not write there")]
    StateTopic {
        /// The topic.
        topic: String,
        /// The worker key naming it (`offset.storage.topic`, ...).
        key: &'static str,
        /// Source partition, as JSON.
        partition: String,
        /// Source offset, as JSON.
        offset: String,
    },
}

impl TaskError {
    /// Whether no restart can help: a wrong config, or, for a worker alone, another
    /// instance with this transactional id took over (restarting would fence it back; two
    /// workers sharing one id is a misconfiguration). In a cluster the group's assignment
    /// says who owns the task, and every life asks `claim` before it takes the id: a task
    /// fenced while this worker still owns it (a stalled worker resumed and finished an
    /// `init_transactions` sent before it stalled) takes its id back, and one fenced by
    /// its new owner is refused and stopped by the rebalance.
    pub fn is_permanent(&self, claim: &ClaimGuard) -> bool {
        match self {
            TaskError::Connector(c) => c.kind == sluice_proto::ErrorKind::Config,
            TaskError::Producer(p) => p.is_fenced() && !claim.arbitrates(),
            _ => false,
        }
    }

    /// The Kafka Connect stage name of a record-level failure; `None` for failures that
    /// are not about one record.
    fn record_stage(&self) -> Option<&'static str> {
        match self {
            TaskError::Transform { .. } => Some("TRANSFORMATION"),
            TaskError::Convert { part: "key", .. } => Some("KEY_CONVERTER"),
            TaskError::Convert { .. } => Some("VALUE_CONVERTER"),
            TaskError::StateTopic { .. } => Some("KAFKA_PRODUCE"),
            _ => None,
        }
    }
}

/// A tolerated bad record: counted, logged if asked, and sent to the dead-letter queue (if
/// one is set) inside the batch's transaction, rendered as schemaless JSON with headers
/// saying what failed and where the record came from.
fn tolerate(
    spec: &SourceTaskSpec,
    r: &SourceRecord,
    error: &TaskError,
    stage: &str,
    labels: &Labels,
) -> Option<Unrouted> {
    use crate::task::dead_letter::{self, Failure, Origin};
    dead_letter::tolerated(&spec.errors, labels, stage, error, r);
    let topic = spec.errors.dlq_topic.as_deref()?;
    let json = crate::convert::JsonConverter::new(crate::convert::Part::Value, false);
    let render = |v: &sluice_proto::Value| {
        json.to_kafka(topic, None, v)
            .unwrap_or_else(|_| Some(format!("{v:?}").into_bytes()))
    };
    let (partition, offset) = crate::task::source_txn::coordinates(r);
    let kind = match error {
        TaskError::Transform { .. } => "TransformError",
        TaskError::StateTopic { .. } => "InvalidTopicError",
        _ => "ConvertError",
    };
    let failing = match error {
        TaskError::Transform {
            source: crate::transforms::TransformError::Record { transform, .. },
            ..
        } => transform.clone(),
        TaskError::Convert { source, .. } => source.converter.to_owned(),
        _ => String::new(),
    };
    let failure = Failure {
        stage,
        kind,
        failing: Some(failing),
        message: error.to_string(),
    };
    let origin = Origin::Source {
        topic: &r.topic,
        partition: Some(&partition),
        offset: Some(&offset),
    };
    let body = (render(&r.key), render(&r.value), r.timestamp);
    let letter = dead_letter::build(&spec.errors, labels, failure, origin, body, Vec::new())?;
    Some(Unrouted {
        topic: letter.topic,
        partition: None,
        key: letter.key,
        value: letter.value,
        timestamp: letter.timestamp,
        headers: letter.headers,
    })
}

/// Polls, retrying retriable failures with backoff within `errors.retry.timeout`
/// (meanwhile the task's status says it is retrying).
async fn poll_with_retry(
    spec: &SourceTaskSpec,
    task: &mut dyn SourceTask,
    ctx: &Ctx<'_>,
) -> Result<Vec<SourceRecord>, TaskError> {
    let labels = ctx.labels;
    let mut first_failure: Option<Instant> = None;
    let mut attempt = 0;
    loop {
        match task.poll().await {
            Ok(records) => {
                ctx.health.recovered();
                return Ok(records);
            }
            Err(e)
                if e.retriable
                    && spec
                        .errors
                        .may_retry(first_failure.get_or_insert_with(Instant::now).elapsed()) =>
            {
                attempt += 1;
                let wait = spec.errors.retry_delay(attempt);
                metrics::counter!("sluice_task_retries_total", &labels.pairs()).increment(1);
                tracing::warn!(connector = %spec.connector, task = spec.task, attempt, backoff_ms = wait.as_millis() as u64, error = %e, "retriable poll failure; retrying");
                ctx.health.retrying(&e, attempt, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Notes the batch's last offset of each source partition (copied once per partition and
/// batch: most batches come from one partition).
fn note_offsets(offsets: &mut BTreeMap<SourcePartition, SourceOffset>, records: &[SourceRecord]) {
    let mut seen: BTreeSet<&SourcePartition> = BTreeSet::new();
    for r in records.iter().rev() {
        if seen.insert(&r.source_partition) {
            offsets.insert(r.source_partition.clone(), r.source_offset.clone());
        }
    }
}

/// Transforms then converts one record; `None` when a transform dropped it.
fn convert(spec: &SourceTaskSpec, r: &SourceRecord) -> Result<Option<Unrouted>, TaskError> {
    if spec.transforms.is_empty() {
        // No transform: converted from the record as it is (no copy of its values).
        return to_bytes(
            spec,
            r,
            Parts {
                topic: &r.topic,
                partition: r.partition,
                key_schema: r.key_schema.as_ref(),
                key: &r.key,
                value_schema: r.value_schema.as_ref(),
                value: &r.value,
                timestamp: r.timestamp,
                headers: &r.headers,
            },
        )
        .map(Some);
    }
    let envelope = Envelope {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: None,
        key_schema: r.key_schema.clone(),
        key: r.key.clone(),
        value_schema: r.value_schema.clone(),
        value: r.value.clone(),
        timestamp: r.timestamp,
        headers: r.headers.clone(),
    };
    let envelope = match spec.transforms.apply(envelope) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(None),
        Err(source) => {
            let (partition, offset) = crate::task::source_txn::coordinates(r);
            return Err(TaskError::Transform {
                partition,
                offset,
                source,
            });
        }
    };
    to_bytes(
        spec,
        r,
        Parts {
            topic: &envelope.topic,
            partition: envelope.partition,
            key_schema: envelope.key_schema.as_ref(),
            key: &envelope.key,
            value_schema: envelope.value_schema.as_ref(),
            value: &envelope.value,
            timestamp: envelope.timestamp,
            headers: &envelope.headers,
        },
    )
    .map(Some)
}

/// A record's parts, after its transforms.
struct Parts<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key_schema: Option<&'a Arc<sluice_proto::Schema>>,
    key: &'a sluice_proto::Value,
    value_schema: Option<&'a Arc<sluice_proto::Schema>>,
    value: &'a sluice_proto::Value,
    timestamp: Option<i64>,
    headers: &'a [sluice_proto::Header],
}

/// Converts `parts` of `r` (a state topic refused, a converter's failure named by the
/// record's source position).
fn to_bytes(
    spec: &SourceTaskSpec,
    r: &SourceRecord,
    parts: Parts<'_>,
) -> Result<Unrouted, TaskError> {
    if let Some(key) = spec.state_topics.get(parts.topic) {
        metrics::counter!("sluice_records_refused_state_topic_total", "connector" => spec.connector.clone(), "task" => spec.task.to_string())
            .increment(1);
        let (partition, offset) = crate::task::source_txn::coordinates(r);
        return Err(TaskError::StateTopic {
            topic: parts.topic.to_owned(),
            key,
            partition,
            offset,
        });
    }
    let fail = |part, source| {
        let (partition, offset) = crate::task::source_txn::coordinates(r);
        TaskError::Convert {
            part,
            partition,
            offset,
            source: Box::new(source),
        }
    };
    let key = spec
        .key_converter
        .to_kafka(parts.topic, parts.key_schema, parts.key)
        .map_err(|e| fail("key", e))?;
    let value = spec
        .value_converter
        .to_kafka(parts.topic, parts.value_schema, parts.value)
        .map_err(|e| fail("value", e))?;
    Ok(Unrouted {
        topic: parts.topic.to_owned(),
        partition: parts.partition,
        key,
        value,
        timestamp: parts.timestamp,
        headers: parts
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
    })
}

fn note_topics(spec: &SourceTaskSpec, records: &[Unrouted]) {
    let Ok(mut topics) = spec.topics.lock() else {
        return;
    };
    for r in records {
        if !topics.contains(&r.topic) {
            topics.insert(r.topic.clone());
        }
    }
}

/// Commits the open transaction with its offsets (recovering in place from failures:
/// see `source_txn`), then lets the connector know.
async fn commit(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    task: &mut dyn SourceTask,
    pending: &mut Pending,
    ctx: &Ctx<'_>,
) -> Result<(), TaskError> {
    let labels = ctx.labels;
    if !pending.txn.is_open() {
        return Ok(());
    }
    let started = Instant::now();
    if producer.is_transactional() {
        // Offsets ride in the same transaction: both commit, or neither.
        crate::task::source_txn::commit(spec, producer, pending, ctx).await?;
    } else {
        // At-least-once: records must be durable before their offsets are written. The
        // offsets need no flush of their own: the next batch's flush (or the one when the
        // task stops) carries them, and a crash before it only means reading again;
        // unless the task's commit lets the upstream forget what a restart would read.
        producer.commit().await?;
        let offset_records: Vec<_> = pending
            .offsets
            .iter()
            .map(|(p, o)| spec.offsets.record(&spec.connector, p, Some(o)))
            .collect();
        producer.send(offset_records).await?;
        if task.commit_needs_durable_offsets() {
            producer.commit().await?;
        }
    }
    commit_done(spec, task, pending, labels, started).await
}

/// What the loop's helpers share: metric labels and the life's health reporter.
pub(crate) struct Ctx<'a> {
    /// The task's metric labels.
    pub(crate) labels: &'a Labels,
    /// Tells the supervisor the task is retrying, or has recovered.
    pub(crate) health: &'a TaskHealth,
}

/// After a commit: metrics, a fresh transaction, and the connector's `commit` hook (RELP
/// acknowledgements go out only now).
async fn commit_done(
    spec: &SourceTaskSpec,
    task: &mut dyn SourceTask,
    pending: &mut Pending,
    labels: &Labels,
    started: Instant,
) -> Result<(), TaskError> {
    let partitions = pending.offsets.len();
    let (records, _) = pending
        .txn
        .committed(crate::kafka::commit::Side::Source, labels, started);
    tracing::debug!(
        connector = %spec.connector,
        task = spec.task,
        records,
        partitions,
        commit_ms = started.elapsed().as_millis() as u64,
        "transaction committed"
    );
    *pending = Pending::default();
    task.commit().await?;
    Ok(())
}

async fn poll_loop(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    task: &mut dyn SourceTask,
    stop: &mut watch::Receiver<bool>,
    ctx: &Ctx<'_>,
    pending: &mut Pending,
) -> Result<(), TaskError> {
    let labels = ctx.labels;
    loop {
        if *stop.borrow() {
            break;
        }
        let poll_started = Instant::now();
        let records = tokio::select! {
            polled = poll_with_retry(spec, task, ctx) => polled?,
            // Dropping an in-flight poll is safe: nothing it read was committed, and the
            // next start resumes from the committed offsets.
            _ = stop.changed() => break,
        };
        metrics::histogram!("sluice_source_poll_batch_seconds", &labels.pairs())
            .record(poll_started.elapsed().as_secs_f64());
        if !records.is_empty() {
            metrics::counter!("sluice_source_records_polled_total", &labels.pairs())
                .increment(records.len() as u64);
            let mut batch = Vec::with_capacity(records.len());
            // Where each record of the batch came from, for a refusal by the broker.
            let mut origins = Vec::with_capacity(records.len());
            for (index, r) in records.iter().enumerate() {
                if r.is_offset_only() {
                    // Nothing to write: its offset commits below with the others.
                    metrics::counter!("sluice_source_offset_only_total", &labels.pairs())
                        .increment(1);
                    continue;
                }
                let converted = match convert(spec, r) {
                    Err(e) if spec.errors.tolerate_all => match e.record_stage() {
                        Some(stage) => {
                            if let Some(letter) = tolerate(spec, r, &e, stage, labels) {
                                pending.dead += 1;
                                batch.push(letter);
                                origins.push(None);
                            }
                            continue;
                        }
                        None => return Err(e),
                    },
                    other => other?,
                };
                match converted {
                    Some(unrouted) => {
                        batch.push(unrouted);
                        origins.push(u32::try_from(index).ok());
                    }
                    // Dropped by a transform: its offset still commits below, so it is not read again.
                    None => {
                        metrics::counter!("sluice_source_records_filtered_total", &labels.pairs())
                            .increment(1);
                    }
                }
            }
            note_topics(spec, &batch);
            // Bounded mailbox: waits when the router is busy (back-pressure).
            let routed: Arc<[_]> = Arc::from(spec.router.send(Route(batch)).await??);
            pending.txn.begin(producer).await?;
            pending.txn.add(records.len() as u64);
            note_offsets(&mut pending.offsets, &records);
            // Only a transaction can be sent again: at-least-once keeps nothing.
            let tags = if producer.is_transactional() {
                pending.retain(&routed, origins, &records)
            } else {
                vec![crate::kafka::producer::UNTAGGED; routed.len()]
            };
            if let Err(e) = producer.send_tagged(routed, tags).await {
                if !producer.is_transactional() {
                    return Err(e.into());
                }
                // The transaction (this batch included) is sent again, then committed.
                let started = Instant::now();
                crate::task::source_txn::recover(spec, producer, pending, ctx, e).await?;
                commit_done(spec, task, pending, labels, started).await?;
                continue;
            }
            metrics::gauge!("sluice_source_records_active", &labels.pairs())
                .set(pending.txn.records() as f64);
        }
        if pending.txn.due(spec.boundary) {
            commit(spec, producer, task, pending, ctx).await?;
            metrics::gauge!("sluice_source_records_active", &labels.pairs()).set(0.0);
        }
    }
    // Stopping: what was sent is committed with its offsets, so nothing is read twice.
    commit(spec, producer, task, pending, ctx).await?;
    if !producer.is_transactional() {
        // The last offsets written at-least-once are still queued.
        producer.commit().await?;
    }
    Ok(())
}

/// Runs one life of a task: producer, offsets, start, loop, stop.
pub async fn run_source_task(
    spec: Arc<SourceTaskSpec>,
    mut stop: watch::Receiver<bool>,
    health: TaskHealth,
) -> Result<(), TaskError> {
    let labels = Labels {
        connector: spec.connector.clone(),
        task: spec.task.to_string(),
    };
    if let Some(id) = &spec.transactional_id {
        spec.claim.check(&spec.connector, spec.task, id).await?;
    }
    let mut producer = TaskProducer::create(
        spec.producer_props.clone(),
        spec.transactional_id.clone(),
        spec.kafka_timeout,
    )
    .await?;
    if let Some(dlq) = &spec.errors.dlq_topic {
        crate::storage::offsets::ensure_topic(
            &spec.producer_props,
            dlq,
            1,
            spec.errors.dlq_replication,
            false,
        )
        .await?;
    }
    // After init_transactions: a zombie's open transaction is aborted, so read_committed
    // sees exactly what was committed.
    let committed = spec
        .offsets
        .read(&spec.connector, spec.kafka_timeout)
        .await?;
    tracing::info!(
        connector = %spec.connector,
        task = spec.task,
        exactly_once = producer.is_transactional(),
        source_partitions = committed.len(),
        "source task starting from committed offsets"
    );
    let mut task = (spec.factory)();
    let context = SourceTaskContext {
        connector: spec.connector.clone(),
        task: spec.task,
        committed,
    };
    let started = task.start(&spec.config, context).await;
    labels.count_startup(started.is_ok());
    let mut pending = Pending::default();
    let result = match started {
        Ok(()) => {
            poll_loop(
                &spec,
                &mut producer,
                task.as_mut(),
                &mut stop,
                &Ctx {
                    labels: &labels,
                    health: &health,
                },
                &mut pending,
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    task.stop().await;
    if let Err(e) = &result {
        if pending.dead > 0 {
            // They were in the transaction that did not commit.
            metrics::counter!("sluice_dlq_produce_failures_total", &labels.pairs())
                .increment(pending.dead);
        }
        pending
            .txn
            .abort(&producer, crate::kafka::commit::Side::Source, &labels)
            .await;
        if matches!(e, TaskError::Producer(p) if p.is_fenced()) {
            metrics::counter!("sluice_source_task_fenced_total", &labels.pairs()).increment(1);
            if spec.claim.arbitrates() {
                tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "source task fenced: another instance took its transactional.id; it restarts and takes the id back only if this worker still owns the task");
            } else {
                tracing::error!(connector = %spec.connector, task = spec.task, error = %e, "source task fenced: another instance with the same transactional.id took over; this task stops (FAILED) rather than fence it back");
            }
        } else {
            tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "source task failed");
        }
    }
    result
}
