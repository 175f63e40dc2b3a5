//! A source task's open transaction, kept in memory until it commits, and its recovery.
//!
//! A failed transaction call used to end the task's life: the supervisor restarted it,
//! and a push source (plain TCP syslog) lost what it had received, its clients were reset,
//! and every failure counted towards FAILED. Now the transaction's records are kept (up to
//! [`RETAIN_LIMIT`] bytes) with where each came from, and a failure is recovered in place,
//! according to its class:
//! - retriable (a commit that timed out while the broker stalled): the call is made again;
//! - abortable (a record the broker refused, a send that gave up): abort, then send the
//!   records again; records the broker refused are found one by one (each suspect is sent
//!   alone, in a produce request of its own) and go to the dead-letter queue, or fail the
//!   task naming their source partition and offset when `errors.tolerance=none`;
//! - fatal (the producer is unusable, or a transaction ran past `transaction.timeout.ms`
//!   and the coordinator bumped the epoch): a new producer (`init_transactions`), then the
//!   records again;
//! - fenced (another instance with this `transactional.id` took over): the task stops.
//!
//! Offsets ride in the same transaction as before, so whatever path commits, records and
//! offsets commit together, once. While recovering, the task does not poll: a push source
//! applies back-pressure to its clients instead of dropping their data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::{SourceOffset, SourcePartition, SourceRecord};

use crate::kafka::commit::Transaction;
use crate::kafka::producer::{ErrorClass, OutRecord, ProducerError, TaskProducer};
use crate::task::actor::Labels;
use crate::task::source::{Ctx, SourceTaskSpec, TaskError};

/// The most bytes of records an open transaction keeps for a resend; past it, a failure
/// ends the task's life as before (it resumes from the committed offsets).
pub(crate) const RETAIN_LIMIT: usize = 64 * 1024 * 1024;

/// How long a transaction is recovered in place before the task gives up (and the
/// supervisor restarts it).
pub(crate) const RECOVERY_BUDGET: Duration = Duration::from_secs(300);

/// A source record's source partition and offset, as JSON (for dead-letter headers and
/// error messages; made only when a record is refused, never on the hot path).
pub(crate) fn coordinates(r: &SourceRecord) -> (String, String) {
    (json(r.source_partition.as_map()), json(&r.source_offset.0))
}

/// A JSON object as compact text (serialised in place, not cloned into a `Value`).
fn json(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

/// Records of the open transaction as they were sent: the batch itself, shared with the
/// producer's send (kept without a copy), and where each record came from.
#[derive(Debug)]
struct Chunk {
    /// The tag (send index) of its first record.
    first: usize,
    records: Arc<[OutRecord]>,
    /// For each record, where it came from (none for a dead letter).
    origins: Vec<Option<Coordinates>>,
    /// The distinct source partitions of the batch (most batches have one).
    partitions: Vec<SourcePartition>,
}

/// Where a kept record came from, compactly: the source records themselves (their
/// map-backed partitions and offsets, some 1.5 KB each) held through an interval
/// transaction took ~50 MiB at 230k records/s.
#[derive(Debug)]
struct Coordinates {
    /// Index into the chunk's partitions.
    partition: u32,
    /// The source offset, as JSON.
    offset: Box<str>,
}

/// A record of the open transaction, kept for a resend.
#[derive(Debug, Clone)]
struct Retained<'a> {
    record: &'a OutRecord,
    /// Source partition (JSON) and offset (JSON).
    origin: Option<(String, &'a str)>,
}

/// One open transaction's bookkeeping.
#[derive(Default)]
pub(crate) struct Pending {
    /// The transaction's bookkeeping (records of the connector in it, dead letters
    /// excluded).
    pub(crate) txn: Transaction,
    /// Dead letters in it.
    pub(crate) dead: u64,
    /// The source offsets it commits.
    pub(crate) offsets: BTreeMap<SourcePartition, SourceOffset>,
    /// Its records in send order; a record's tag is its index in this order.
    retained: Vec<Chunk>,
    retained_count: usize,
    retained_bytes: usize,
    /// Too much to keep: a failure cannot be recovered in place.
    overflow: bool,
}

impl Pending {
    /// Keeps `records` for a resend, with where each came from (an index into `sources`),
    /// and returns their send tags.
    pub(crate) fn retain(
        &mut self,
        records: &Arc<[OutRecord]>,
        origins: Vec<Option<u32>>,
        sources: &[SourceRecord],
    ) -> Vec<usize> {
        let first = self.retained_count;
        self.retained_count += records.len();
        let tags: Vec<usize> = (first..self.retained_count).collect();
        if self.overflow {
            return tags;
        }
        let bytes: usize = records.iter().map(OutRecord::size).sum();
        if self.retained_bytes + bytes > RETAIN_LIMIT {
            self.overflow = true;
            self.retained = Vec::new();
            self.retained_bytes = 0;
            return tags;
        }
        self.retained_bytes += bytes;
        let mut partitions: Vec<SourcePartition> = Vec::new();
        let mut index: BTreeMap<&SourcePartition, u32> = BTreeMap::new();
        let origins = origins
            .into_iter()
            .map(|o| {
                let source = sources.get(o? as usize)?;
                let partition = match index.get(&source.source_partition) {
                    Some(at) => *at,
                    None => {
                        let at = u32::try_from(partitions.len()).ok()?;
                        partitions.push(source.source_partition.clone());
                        index.insert(&source.source_partition, at);
                        at
                    }
                };
                Some(Coordinates {
                    partition,
                    offset: json(&source.source_offset.0).into_boxed_str(),
                })
            })
            .collect();
        self.retained.push(Chunk {
            first,
            records: Arc::clone(records),
            origins,
            partitions,
        });
        tags
    }

    /// How many records the open transaction sent.
    fn len(&self) -> usize {
        if self.overflow {
            0
        } else {
            self.retained_count
        }
    }

    /// The record sent with tag `i`.
    fn get(&self, i: usize) -> Option<Retained<'_>> {
        let after = self.retained.partition_point(|c| c.first <= i);
        let chunk = self.retained.get(after.checked_sub(1)?)?;
        let at = i - chunk.first;
        let origin = chunk
            .origins
            .get(at)
            .and_then(Option::as_ref)
            .and_then(|c| {
                let partition = chunk.partitions.get(c.partition as usize)?;
                let json = serde_json::Value::Object(partition.as_map().clone()).to_string();
                Some((json, &*c.offset))
            });
        Some(Retained {
            record: chunk.records.get(at)?,
            origin,
        })
    }

    /// Every kept record with its tag, in send order.
    fn iter(&self) -> impl Iterator<Item = (usize, &OutRecord)> {
        self.retained
            .iter()
            .flat_map(|c| (c.first..).zip(c.records.iter()))
    }
}

/// Why a resend round did not commit.
enum RoundFailed {
    /// The commit call failed: every record, dead letter and offset of the round is in
    /// the transaction.
    Commit(ProducerError),
    /// A call before the commit failed: the transaction holds part of the round.
    Interrupted(ProducerError),
    /// A record was refused in this round (found out, or a new suspect): abort, go again.
    Refused,
    /// A refused record and `errors.tolerance=none`.
    Task(TaskError),
}

/// What the error calls for, with the one diagnosis librdkafka cannot make: a fencing or
/// epoch error after the transaction ran past `transaction.timeout.ms` is the coordinator
/// aborting it (the producer is recreated), not another instance taking over.
fn diagnose(error: &ProducerError, pending: &Pending, producer: &TaskProducer) -> ErrorClass {
    let class = error.class();
    let timed_out = pending
        .txn
        .started()
        .is_some_and(|s| s.elapsed() >= producer.transaction_timeout());
    if error.is_epoch_error() || (class == ErrorClass::Fenced && timed_out) {
        return ErrorClass::Fatal;
    }
    class
}

/// What to do first about a failure of class `class`. Retrying a commit is only right
/// when the failed call was the commit itself (`at_commit`): after a call that failed
/// earlier (a flush that timed out in a resend round, an abort), the transaction holds part
/// of what must commit together, and committing it would lose the rest (the suspects, the
/// dead letters, the offsets). It is aborted instead and the round sent again.
fn remedy(class: ErrorClass, at_commit: bool) -> ErrorClass {
    match class {
        ErrorClass::Retriable if !at_commit => ErrorClass::Abortable,
        other => other,
    }
}

/// How many times in a row an abort may time out before the producer is recreated. A
/// timed-out abort may be called again (librdkafka resumes it), but after a stall in which
/// messages timed out, librdkafka's abort can keep timing out with the broker back (seen in
/// the broker-stall drill: ten 30 s aborts in a row, then the recovery budget ran out). A new
/// producer's `init_transactions` fences the stuck one, and the coordinator aborts its
/// transaction, which is what the abort was for.
const ABORT_TIMEOUTS_BEFORE_NEW_PRODUCER: u32 = 2;

/// What to do after an abort failed with an error of class `class`, the `timeouts`-th
/// timed-out abort in a row: call it again (retriable, the abort is resumed) or recreate
/// the producer (fatal).
fn after_failed_abort(class: ErrorClass, timeouts: u32) -> ErrorClass {
    if class == ErrorClass::Retriable && timeouts < ABORT_TIMEOUTS_BEFORE_NEW_PRODUCER {
        ErrorClass::Retriable
    } else {
        ErrorClass::Fatal
    }
}

fn backoff(attempt: u32) -> Duration {
    let factor = 2_u32.saturating_pow(attempt.saturating_sub(1).min(6));
    Duration::from_millis(100)
        .saturating_mul(factor)
        .min(Duration::from_secs(5))
}

/// Commits the open transaction (its records are in it; `offsets` are added), recovering
/// in place from whatever fails (see the module documentation).
pub(crate) async fn commit(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    ctx: &Ctx<'_>,
) -> Result<(), TaskError> {
    let labels = ctx.labels;
    let refused = producer.take_refused();
    let first = if refused.is_empty() {
        let offsets = offset_records(spec, pending);
        let attempt = async {
            producer
                .send(offsets)
                .await
                .map_err(RoundFailed::Interrupted)?;
            producer.commit().await.map_err(RoundFailed::Commit)
        };
        match attempt.await {
            Ok(()) => {
                // A refusal reported while committing means the commit cannot have
                // succeeded with that record; one the client refused at once never
                // entered the transaction and is still to be handled.
                let late = producer.take_refused();
                if late.is_empty() {
                    return Ok(());
                }
                tracing::warn!(connector = %spec.connector, task = spec.task, refused = late.len(), "records refused by the client after the commit; they go to the dead-letter queue in the next transaction");
                return dead_letters_alone(spec, producer, pending, labels, late).await;
            }
            Err(e) => Some(e),
        }
    } else {
        None
    };
    recover_from(spec, producer, pending, ctx, first, refused).await
}

/// Recovers the open transaction after a send into it failed with `first`: see the
/// module documentation.
pub(crate) async fn recover(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    ctx: &Ctx<'_>,
    first: ProducerError,
) -> Result<(), TaskError> {
    let first = Some(RoundFailed::Interrupted(first));
    recover_from(spec, producer, pending, ctx, first, Vec::new()).await
}

/// Recovers the open transaction after `first` failed (or, with `None`, after records
/// were refused).
async fn recover_from(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    ctx: &Ctx<'_>,
    first: Option<RoundFailed>,
    refused: Vec<(usize, String)>,
) -> Result<(), TaskError> {
    let result = recover_in_place(spec, producer, pending, ctx, first, refused).await;
    // Whatever the outcome, the task is no longer retrying this transaction.
    ctx.health.recovered();
    result
}

async fn recover_in_place(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    ctx: &Ctx<'_>,
    first: Option<RoundFailed>,
    refused: Vec<(usize, String)>,
) -> Result<(), TaskError> {
    let labels = ctx.labels;
    // The failed call, and whether it was the commit (see `remedy`).
    let (first, mut at_commit) = match first {
        Some(RoundFailed::Commit(e)) => (Some(e), true),
        Some(RoundFailed::Interrupted(e)) => (Some(e), false),
        Some(RoundFailed::Refused) | None => (None, false),
        Some(RoundFailed::Task(e)) => return Err(e),
    };
    if !producer.is_transactional() || pending.overflow {
        return Err(match first {
            Some(e) => e.into(),
            None => refusal_error(spec, pending, &refused),
        });
    }
    let deadline = Instant::now() + RECOVERY_BUDGET;
    let mut suspects: BTreeMap<usize, String> = refused.into_iter().collect();
    let mut guilty: BTreeMap<usize, String> = BTreeMap::new();
    let mut error = first;
    let mut attempt = 0_u32;
    let mut abort_timeouts = 0_u32;
    loop {
        attempt += 1;
        let class = error.as_ref().map_or(ErrorClass::Abortable, |e| {
            remedy(diagnose(e, pending, producer), at_commit)
        });
        metrics::counter!("sluice_source_transaction_recoveries_total", "connector" => labels.connector.clone(), "task" => labels.task.clone(), "class" => class.name())
            .increment(1);
        let reason = error
            .as_ref()
            .map_or_else(|| "records refused".to_owned(), ToString::to_string);
        if class == ErrorClass::Fenced {
            tracing::error!(connector = %spec.connector, task = spec.task, error = %reason, "fenced: another instance with this transactional.id took over; this task stops");
            return Err(error.map_or_else(
                || TaskError::Connector(sluice_proto::ConnectorError::internal("fenced")),
                TaskError::from,
            ));
        }
        if Instant::now() > deadline {
            tracing::error!(connector = %spec.connector, task = spec.task, error = %reason, budget_s = RECOVERY_BUDGET.as_secs(), "transaction not recovered in time; the task restarts from its committed offsets");
            return Err(error.map_or_else(|| refusal_error(spec, pending, &[]), TaskError::from));
        }
        tracing::warn!(connector = %spec.connector, task = spec.task, class = class.name(), attempt, records = pending.len(), error = %reason, "transaction failed; recovering in place");
        ctx.health.retrying(
            &format_args!("transaction ({}): {reason}", class.name()),
            attempt,
            backoff(attempt),
        );
        if attempt > 1 {
            tokio::time::sleep(backoff(attempt - 1)).await;
        }
        // First a clean state: the same call again, an abort, or a new producer.
        match class {
            ErrorClass::Retriable => match producer.commit().await {
                Ok(()) => {
                    tracing::info!(connector = %spec.connector, task = spec.task, attempt, "transaction committed on retry");
                    return Ok(());
                }
                Err(e) => {
                    error = Some(e);
                    continue;
                }
            },
            ErrorClass::Abortable => {
                if let Err(e) = producer.abort().await {
                    at_commit = false;
                    if e.class() == ErrorClass::Retriable {
                        abort_timeouts += 1;
                    }
                    // `remedy` makes a retriable error outside a commit an abort, so a
                    // timed-out abort is called again, a bounded number of times.
                    error = Some(match after_failed_abort(e.class(), abort_timeouts) {
                        ErrorClass::Retriable => {
                            tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, abort_timeouts, "abort timed out; it is called again");
                            e
                        }
                        _ => {
                            abort_timeouts = 0;
                            tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "abort failed; the producer is recreated (its successor's init_transactions aborts the transaction)");
                            ProducerError::Config(format!("abort failed, producer unusable: {e}"))
                        }
                    });
                    continue;
                }
                abort_timeouts = 0;
            }
            ErrorClass::Fatal => {
                // Taking the id again fences its holder: only while this worker still
                // owns the task (a worker cut off from its cluster may not).
                if let Some(id) = &spec.transactional_id {
                    if let Err(e) = spec.claim.check(&spec.connector, spec.task, id).await {
                        tracing::warn!(connector = %spec.connector, task = spec.task, error = %e, "the producer is not recreated: this worker may no longer own the task; the task stops");
                        return Err(e.into());
                    }
                }
                match TaskProducer::create(
                    spec.producer_props.clone(),
                    spec.transactional_id.clone(),
                    spec.kafka_timeout,
                )
                .await
                {
                    Ok(fresh) => *producer = fresh,
                    Err(e) => {
                        // Whatever went wrong, the next step is another new producer.
                        error = Some(ProducerError::Config(format!("no new producer: {e}")));
                        at_commit = false;
                        continue;
                    }
                }
            }
            ErrorClass::Fenced => {}
        }
        suspects.extend(producer.take_refused());
        match resend(spec, producer, pending, labels, &mut suspects, &mut guilty).await {
            Ok(()) => {
                tracing::info!(connector = %spec.connector, task = spec.task, attempt, refused = guilty.len(), "transaction recovered and committed");
                return Ok(());
            }
            Err(RoundFailed::Commit(e)) => (error, at_commit) = (Some(e), true),
            Err(RoundFailed::Interrupted(e)) => (error, at_commit) = (Some(e), false),
            Err(RoundFailed::Refused) => (error, at_commit) = (None, false),
            Err(RoundFailed::Task(e)) => return Err(e),
        }
    }
}

/// One round: the records not suspected, then each suspect alone (so a refusal names
/// it), then the refused ones' dead letters, the offsets, and the commit.
async fn resend(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    labels: &Labels,
    suspects: &mut BTreeMap<usize, String>,
    guilty: &mut BTreeMap<usize, String>,
) -> Result<(), RoundFailed> {
    let p = RoundFailed::Interrupted;
    producer.begin().await.map_err(p)?;
    let skip: BTreeSet<usize> = suspects.keys().chain(guilty.keys()).copied().collect();
    let (records, tags): (Vec<OutRecord>, Vec<usize>) = pending
        .iter()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(i, r)| (r.clone(), i))
        .unzip();
    producer
        .send_tagged(Arc::from(records), tags)
        .await
        .map_err(p)?;
    producer.drain().await.map_err(p)?;
    let refused = producer.take_refused();
    if !refused.is_empty() {
        suspects.extend(refused);
        return Err(RoundFailed::Refused);
    }
    let testing: Vec<usize> = suspects.keys().copied().collect();
    for i in testing {
        let Some(r) = pending.get(i) else {
            suspects.remove(&i);
            continue;
        };
        producer
            .send_tagged(Arc::from(vec![r.record.clone()]), vec![i])
            .await
            .map_err(p)?;
        producer.drain().await.map_err(p)?;
        let refused = producer.take_refused();
        if let Some((_, reason)) = refused.iter().find(|(t, _)| *t == i) {
            metrics::counter!("sluice_source_records_refused_total", &labels.pairs()).increment(1);
            tracing::warn!(connector = %spec.connector, task = spec.task, topic = %r.record.topic, partition = r.record.partition, reason = %reason, "the broker refused a record");
            guilty.insert(i, reason.clone());
            suspects.remove(&i);
            suspects.extend(refused.into_iter().filter(|(t, _)| *t != i));
            return Err(RoundFailed::Refused);
        }
        if !refused.is_empty() {
            suspects.extend(refused);
            return Err(RoundFailed::Refused);
        }
        suspects.remove(&i);
    }
    if !guilty.is_empty() {
        if !spec.errors.tolerate_all {
            let refused: Vec<(usize, String)> =
                guilty.iter().map(|(i, r)| (*i, r.clone())).collect();
            return Err(RoundFailed::Task(refusal_error(spec, pending, &refused)));
        }
        let letters: Vec<OutRecord> = guilty
            .iter()
            .filter_map(|(i, reason)| {
                let r = pending.get(*i)?;
                crate::task::errors::count_tolerated(labels, "KAFKA_PRODUCE");
                dead_letter(spec, labels, r.record, r.origin, reason)
            })
            .collect();
        pending.dead += letters.len() as u64;
        producer.send(letters).await.map_err(p)?;
    }
    producer
        .send(offset_records(spec, pending))
        .await
        .map_err(p)?;
    producer.commit().await.map_err(RoundFailed::Commit)
}

/// Records the client refused at once never entered the committed transaction: their
/// dead letters (or the task's failure) follow in a transaction of their own.
async fn dead_letters_alone(
    spec: &SourceTaskSpec,
    producer: &mut TaskProducer,
    pending: &mut Pending,
    labels: &Labels,
    refused: Vec<(usize, String)>,
) -> Result<(), TaskError> {
    if !spec.errors.tolerate_all {
        return Err(refusal_error(spec, pending, &refused));
    }
    let letters: Vec<OutRecord> = refused
        .iter()
        .filter_map(|(i, reason)| {
            metrics::counter!("sluice_source_records_refused_total", &labels.pairs()).increment(1);
            crate::task::errors::count_tolerated(labels, "KAFKA_PRODUCE");
            let r = pending.get(*i)?;
            dead_letter(spec, labels, r.record, r.origin, reason)
        })
        .collect();
    if letters.is_empty() {
        return Ok(());
    }
    pending.dead += letters.len() as u64;
    producer.begin().await?;
    producer.send(letters).await?;
    producer.commit().await?;
    Ok(())
}

/// The task's failure for refused records, naming the first one's coordinates.
fn refusal_error(
    spec: &SourceTaskSpec,
    pending: &Pending,
    refused: &[(usize, String)],
) -> TaskError {
    let first = refused.first();
    let retained = first.and_then(|(i, _)| pending.get(*i));
    let (partition, offset) = retained
        .as_ref()
        .and_then(|r| r.origin.clone())
        .map_or_else(
            || ("?".to_owned(), "?".to_owned()),
            |(p, o)| (p, o.to_owned()),
        );
    TaskError::Refused {
        topic: retained.map_or_else(String::new, |r| r.record.topic.clone()),
        partition,
        offset,
        reason: first.map_or_else(
            || format!("{} record(s) refused", refused.len()),
            |(_, r)| r.clone(),
        ),
        connector: spec.connector.clone(),
    }
}

/// The offset records of the transaction.
fn offset_records(spec: &SourceTaskSpec, pending: &Pending) -> Vec<OutRecord> {
    pending
        .offsets
        .iter()
        .map(|(p, o)| spec.offsets.record(&spec.connector, p, Some(o)))
        .collect()
}

/// A refused record's dead letter: its bytes (the value dropped when its size was the
/// reason, or the letter would be refused too; no timestamp, which may have been the
/// reason), with Kafka Connect's error headers.
fn dead_letter(
    spec: &SourceTaskSpec,
    labels: &Labels,
    record: &OutRecord,
    origin: Option<(String, &str)>,
    reason: &str,
) -> Option<OutRecord> {
    use crate::task::dead_letter::{self, Failure, Origin as From};
    let coordinates = origin;
    // A record refused for its size would be refused again in the dead-letter queue:
    // its key and value are left out, and the message says so.
    let too_large = record.size() > 512 * 1024;
    let failure = Failure {
        stage: "KAFKA_PRODUCE",
        kind: "RecordRefused",
        failing: None,
        message: if too_large {
            format!("{reason} (value of {} bytes dropped)", record.size())
        } else {
            reason.to_owned()
        },
    };
    let from = From::Source {
        topic: &record.topic,
        partition: coordinates.as_ref().map(|(p, _)| p.as_str()),
        offset: coordinates.as_ref().map(|(_, o)| *o),
    };
    let body = if too_large {
        (None, None, None)
    } else {
        (record.key.clone(), record.value.clone(), None)
    };
    dead_letter::build(&spec.errors, labels, failure, from, body, Vec::new())
        .map(dead_letter::DeadLetter::into_record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> OutRecord {
        OutRecord {
            topic: "t".into(),
            partition: 0,
            key: None,
            value: Some(vec![b'x'; bytes]),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn tags_follow_send_order_and_overflow_stops_keeping() {
        let mut pending = Pending::default();
        let batch = |records: Vec<OutRecord>| -> Arc<[OutRecord]> { Arc::from(records) };
        assert_eq!(
            pending.retain(&batch(vec![record(1), record(1)]), vec![], &[]),
            [0, 1]
        );
        assert_eq!(pending.retain(&batch(vec![record(2)]), vec![], &[]), [2]);
        assert_eq!(pending.len(), 3);
        assert_eq!(
            pending.get(2).map(|r| r.record.size()),
            Some(record(2).size())
        );
        assert_eq!(
            pending.get(1).map(|r| r.record.size()),
            Some(record(1).size())
        );
        assert!(pending.get(3).is_none());
        let tags: Vec<usize> = pending.iter().map(|(i, _)| i).collect();
        assert_eq!(tags, [0, 1, 2]);
        pending.retain(&batch(vec![record(RETAIN_LIMIT)]), vec![], &[]);
        assert!(pending.overflow);
        assert_eq!(pending.len(), 0);
        assert!(pending.retained.is_empty());
    }

    #[test]
    fn only_a_failed_commit_is_retried_as_a_commit() {
        // A flush that timed out inside a resend round left part of the round in the
        // transaction: committing it would drop the suspects, dead letters and offsets.
        assert_eq!(remedy(ErrorClass::Retriable, false), ErrorClass::Abortable);
        assert_eq!(remedy(ErrorClass::Retriable, true), ErrorClass::Retriable);
        for class in [ErrorClass::Abortable, ErrorClass::Fatal, ErrorClass::Fenced] {
            assert_eq!(remedy(class, false), class);
            assert_eq!(remedy(class, true), class);
        }
    }

    #[test]
    fn an_abort_that_keeps_timing_out_gets_a_new_producer() {
        assert_eq!(
            after_failed_abort(ErrorClass::Retriable, 1),
            ErrorClass::Retriable
        );
        assert_eq!(
            after_failed_abort(ErrorClass::Retriable, ABORT_TIMEOUTS_BEFORE_NEW_PRODUCER),
            ErrorClass::Fatal
        );
        for class in [ErrorClass::Abortable, ErrorClass::Fatal, ErrorClass::Fenced] {
            assert_eq!(after_failed_abort(class, 0), ErrorClass::Fatal);
        }
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        let waits: Vec<u64> = (1..=9).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
