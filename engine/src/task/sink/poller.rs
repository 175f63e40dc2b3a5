//! The poller: the one thread that touches a sink task's consumer. It polls, serves
//! rebalances (inside `poll`, by asking the task's loop), pauses partitions under
//! back-pressure, and runs commits between polls.

use super::*;

/// A consumed record, owned, as the poller hands it over.
#[derive(Debug, Clone)]
pub struct Raw {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) timestamp: Option<i64>,
    pub(super) timestamp_type: TimestampType,
    pub(super) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    pub(super) fn tp(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

pub(super) fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> Raw {
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

/// What the poller tells the task's loop, in order.
pub(super) enum Event {
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
pub(super) enum Command {
    /// Commit these offsets (next to read) to the group, if the assignment is still the
    /// one of this generation.
    Commit(u64, Offsets),
    /// Close the consumer and end the thread.
    Stop,
}

pub(super) fn tpl(offsets: &Offsets) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in offsets {
        // Adding a partition to a fresh list cannot fail for a valid offset.
        let _ = list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    list
}

/// The offsets a list holds (entries without an offset left out).
pub(super) fn offsets_of(list: &TopicPartitionList) -> Offsets {
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

pub(super) fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
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
pub(super) struct SinkContext {
    pub(super) connector: String,
    pub(super) task: u32,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) generation: AtomicU64,
    /// Where successful offset commits are reported to the task's loop.
    pub(super) confirmations: Confirmations,
    /// When each commit still awaiting its outcome was issued, oldest first.
    pub(super) commits_issued: std::sync::Mutex<std::collections::VecDeque<Instant>>,
    /// How long a rebalance waits for the task's loop to flush.
    pub(super) flush_timeout: Duration,
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
    pub(super) fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("connector", self.connector.clone()),
            ("task", self.task.to_string()),
        ]
    }

    /// Sends an event and waits for the loop's answer; an empty answer if the loop is
    /// gone or too slow (then nothing extra is committed: at worst records are read again).
    pub(super) fn ask(&self, make: impl FnOnce(std_mpsc::SyncSender<Offsets>) -> Event) -> Offsets {
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
pub(super) fn commit_offsets(
    consumer: &BaseConsumer<SinkContext>,
    offsets: &Offsets,
    mode: CommitMode,
) {
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
pub(super) fn poll_thread(
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
