//! The datagen source: each task numbers its records from where its last committed record
//! left off, spaces them in time (a fixed rate, or Confluent's random gaps below
//! `max.interval`), and builds each one from its task, sequence number and time, padded
//! with a payload to `datagen.record.bytes`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_proto::data::logical;
use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, ExactlyOnceSupport, Props, Schema, SchemaType,
    SourceConnector, SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
    Value,
};
use tokio::time::Instant;

use crate::config::{self, DatagenConfig, Pace};

/// Partition key holding the task's number (`{"task": 0}`); also a value field.
pub const TASK: &str = "task";
/// Offset key holding the sequence number of the task's last record (`{"seq": 41}`); also a
/// value field.
pub const SEQ: &str = "seq";
/// Value field: when the record was generated, milliseconds since the epoch.
pub const TS: &str = "ts";
/// Value field: the padding.
pub const PAYLOAD: &str = "payload";
/// The value schema's name.
pub const VALUE_SCHEMA: &str = "io.sluice.connect.datagen.Value";

/// The longest a poll waits for records to fall due before it returns what it has.
const POLL_WINDOW: Duration = Duration::from_millis(100);
/// What a poll of a task that has generated all its iterations waits before returning nothing.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How far behind its schedule a task may fall (a slow commit, a paused worker) and still
/// catch up; beyond that the schedule goes on from now, so a stall is not followed by a burst.
const MAX_LAG: Duration = Duration::from_secs(1);
/// The most value bytes one poll returns, whatever `batch.size` says.
const POLL_BYTES: usize = 8 << 20;
/// The JSON of a value with an empty payload, less its three numbers:
/// `{"task":,"seq":,"ts":,"payload":""}`.
const JSON_OVERHEAD: usize = 35;
/// Payload characters: printable, and never escaped in JSON.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Separates the random streams drawn from one task key.
const PAYLOAD_STREAM: u64 = 0x7061_796c_6f61_6400;
const GAP_STREAM: u64 = 0x6761_7073_0000_0000;

/// The connector: `tasks.max` tasks, each with a sequence of its own.
#[derive(Debug, Default)]
pub struct DatagenSource;

impl Connector for DatagenSource {
    fn config_def(&self) -> ConfigDef {
        config::source_def()
    }

    fn task_configs(&self, config: &Props, max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        DatagenConfig::parse(config).map_err(|e| ConnectorError::config(e.to_string()))?;
        // Tasks are told apart by their number (their source partition), so one config serves all.
        let tasks = usize::try_from(max_tasks.max(1))
            .map_err(|_| ConnectorError::config(format!("tasks.max: {max_tasks} is too many")))?;
        Ok(vec![config.clone(); tasks])
    }
}

impl SourceConnector for DatagenSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(DatagenSourceTask::default())
    }

    fn exactly_once_support(&self, _config: &Props) -> ExactlyOnceSupport {
        // A task resumes right after its last committed sequence number.
        ExactlyOnceSupport::Supported
    }
}

/// Generates one task's records.
#[derive(Debug, Default)]
pub struct DatagenSourceTask {
    state: Option<Generator>,
}

#[derive(Debug)]
struct Generator {
    connector: String,
    task: u32,
    /// The task number as the value's INT32 field.
    task_field: i32,
    topic: String,
    /// The next record's sequence number.
    next_seq: u64,
    /// One past the last sequence number to generate, when `iterations` limits it.
    end: Option<u64>,
    /// The most records per poll: `batch.size`, within [`POLL_BYTES`].
    per_poll: usize,
    record_bytes: usize,
    schedule: Schedule,
    /// Seeds this task's payloads (from `random.seed`, or the clock, and the task number).
    key: u64,
    partition: SourcePartition,
    key_schema: Arc<Schema>,
    value_schema: Arc<Schema>,
    records: metrics::Counter,
    lag: metrics::Gauge,
    done_logged: bool,
}

/// The schema of the values: Kafka Connect's struct of `task`, `seq`, `ts`, `payload`.
pub fn value_schema() -> Schema {
    Schema::structure()
        .named(VALUE_SCHEMA)
        .field(TASK, Schema::of(SchemaType::Int32))
        .field(SEQ, Schema::of(SchemaType::Int64))
        .field(
            TS,
            Schema {
                version: Some(1),
                ..Schema::of(SchemaType::Int64).named(logical::TIMESTAMP)
            },
        )
        .field(PAYLOAD, Schema::of(SchemaType::String))
}

/// How many payload characters make a value of `task`, `seq` and `ts` exactly
/// `record_bytes` long as compact JSON (0 when it is longer without any).
fn payload_len(record_bytes: usize, task: u32, seq: u64, ts: u64) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let overhead = JSON_OVERHEAD + digits(u64::from(task)) + digits(seq) + digits(ts);
    record_bytes.saturating_sub(overhead)
}

/// SplitMix64's finaliser: a good 64-bit mix, so nearby inputs give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` random printable characters, a function of the task `key` and `seq` alone, so a
/// record generated again (after a restart) carries the same payload when seeded.
fn payload(key: u64, seq: u64, len: usize) -> String {
    let mut state = mix(key ^ PAYLOAD_STREAM ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = String::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut bits = mix(state);
        // Ten characters of six bits each per draw.
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[(bits & 63) as usize]));
            bits >>= 6;
        }
    }
    out
}

/// When each record of a task falls due. A gap is a function of its record's sequence
/// number, so a poll can look ahead without drawing anything, and waiting changes nothing.
#[derive(Debug)]
struct Schedule {
    pace: Pace,
    key: u64,
    /// When the next record falls due.
    next_due: Instant,
}

impl Schedule {
    fn new(pace: Pace, key: u64, start: Instant) -> Self {
        Schedule {
            pace,
            key,
            next_due: start,
        }
    }

    /// The time between record `seq - 1` and record `seq`.
    fn gap(&self, seq: u64) -> Duration {
        match self.pace {
            Pace::Unpaced => Duration::ZERO,
            Pace::Every(period) => period,
            Pace::Below(max) => {
                let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
                // Below max, as Confluent's `max.interval * Math.random()`.
                Duration::from_millis(mix(self.key ^ GAP_STREAM ^ seq) % max_ms)
            }
        }
    }

    /// When a poll wanting up to `want` records, the next being `seq`, should take them: once
    /// the `want`-th falls due, or the last one due within [`POLL_WINDOW`], or at the end of
    /// the window if none is.
    fn wake(&self, seq: u64, want: usize, now: Instant) -> Instant {
        if self.pace == Pace::Unpaced {
            return now;
        }
        let horizon = now + POLL_WINDOW;
        if self.next_due > horizon {
            return horizon;
        }
        let mut due = self.next_due;
        for k in 1..want as u64 {
            let next = due + self.gap(seq.wrapping_add(k));
            if next > horizon {
                break;
            }
            due = next;
        }
        due.max(now)
    }

    /// Takes the records due at `now`, at most `want`, the first being `seq`: how many.
    fn take(&mut self, seq: u64, want: usize, now: Instant) -> usize {
        if self.pace == Pace::Unpaced {
            self.next_due = now;
            return want;
        }
        if let Some(floor) = now.checked_sub(MAX_LAG) {
            self.next_due = self.next_due.max(floor);
        }
        let mut taken = 0;
        while taken < want && self.next_due <= now {
            taken += 1;
            self.next_due += self.gap(seq.wrapping_add(taken as u64));
        }
        taken
    }

    /// How long the next record has been due.
    fn lag(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.next_due)
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Generator {
    /// How many records the next poll may return: 0 once `iterations` are all generated.
    fn want(&self) -> usize {
        match self.end {
            Some(end) => {
                let left = end.saturating_sub(self.next_seq);
                usize::try_from(left).map_or(self.per_poll, |left| left.min(self.per_poll))
            }
            None => self.per_poll,
        }
    }

    /// The records due at `now` (at most `want`); advances the sequence. Nothing here waits,
    /// so a poll dropped while it waited has changed nothing.
    fn generate(&mut self, want: usize, now: Instant) -> Vec<SourceRecord> {
        let count = self.schedule.take(self.next_seq, want, now);
        let ts = wall_clock_ms();
        let records: Vec<SourceRecord> = (0..count as u64)
            .map(|i| self.record(self.next_seq + i, ts))
            .collect();
        self.next_seq += count as u64;
        self.records.increment(count as u64);
        if self.schedule.pace != Pace::Unpaced {
            self.lag.set(self.schedule.lag(now).as_secs_f64());
        }
        records
    }

    fn record(&self, seq: u64, ts: i64) -> SourceRecord {
        let len = payload_len(
            self.record_bytes,
            self.task,
            seq,
            u64::try_from(ts).unwrap_or(0),
        );
        let value = Value::Struct(vec![
            (TASK.to_owned(), Value::Int32(self.task_field)),
            (
                SEQ.to_owned(),
                Value::Int64(i64::try_from(seq).unwrap_or(i64::MAX)),
            ),
            (TS.to_owned(), Value::Int64(ts)),
            (
                PAYLOAD.to_owned(),
                Value::String(payload(self.key, seq, len)),
            ),
        ]);
        let mut record = SourceRecord::new(
            self.partition.clone(),
            SourceOffset::single(SEQ, seq),
            self.topic.clone(),
            value,
        );
        record.key_schema = Some(Arc::clone(&self.key_schema));
        record.key = Value::String(format!("{}-{seq}", self.task));
        record.value_schema = Some(Arc::clone(&self.value_schema));
        record.timestamp = Some(ts);
        record
    }
}

/// The task's key: from `random.seed` when set (so runs repeat), else from the clock.
fn task_key(seed: Option<i64>, task: u32) -> u64 {
    let seed = match seed {
        Some(seed) => u64::from_ne_bytes(seed.to_ne_bytes()),
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            // The low 64 bits vary the most; truncation is the point.
            #[allow(clippy::cast_possible_truncation)]
            let nanos = nanos as u64;
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    mix(seed ^ mix(u64::from(task).wrapping_add(1)))
}

impl SourceTask for DatagenSourceTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let config =
                DatagenConfig::parse(config).map_err(|e| ConnectorError::config(e.to_string()))?;
            let task = context.task;
            let task_field = i32::try_from(task).map_err(|_| {
                ConnectorError::internal(format!("task number {task} does not fit an INT32"))
            })?;
            let partition = SourcePartition::single(TASK, task);
            let next_seq = match context.offset(&partition) {
                None => 0,
                Some(offset) => offset
                    .get(SEQ)
                    .and_then(serde_json::Value::as_u64)
                    .filter(|seq| i64::try_from(*seq).is_ok_and(|s| s < i64::MAX))
                    .map(|seq| seq + 1)
                    .ok_or_else(|| {
                        ConnectorError::data(format!(
                            "committed offset of datagen task {task} has no \"{SEQ}\" between 0 and 2^63-2: {:?}",
                            offset.0
                        ))
                    })?,
            };
            let key = task_key(config.random_seed, task);
            let per_poll = config
                .batch_size
                .min((POLL_BYTES / config.record_bytes.max(1)).max(1));
            let labels = [
                ("connector", context.connector.clone()),
                ("task", task.to_string()),
            ];
            tracing::info!(
                connector = %context.connector,
                task,
                topic = %config.topic,
                next_seq,
                iterations = ?config.iterations,
                pace = ?config.pace,
                "datagen source resuming"
            );
            self.state = Some(Generator {
                connector: context.connector.clone(),
                task,
                task_field,
                topic: config.topic,
                next_seq,
                end: config.iterations,
                per_poll,
                record_bytes: config.record_bytes,
                schedule: Schedule::new(config.pace, key, Instant::now()),
                key,
                partition,
                key_schema: Arc::new(Schema::of(SchemaType::String)),
                value_schema: Arc::new(value_schema()),
                records: metrics::counter!("sluice_datagen_records_total", &labels),
                lag: metrics::gauge!("sluice_datagen_schedule_lag_seconds", &labels),
                done_logged: false,
            });
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            let Some(generator) = self.state.as_mut() else {
                return Err(ConnectorError::internal(
                    "datagen source polled before start",
                ));
            };
            let want = generator.want();
            if want == 0 {
                if !generator.done_logged {
                    generator.done_logged = true;
                    if generator.schedule.pace != Pace::Unpaced {
                        generator.lag.set(0.0);
                    }
                    tracing::info!(
                        connector = %generator.connector,
                        task = generator.task,
                        records = generator.next_seq,
                        "datagen task has generated all its iterations; idle"
                    );
                }
                tokio::time::sleep(IDLE_WAIT).await;
                return Ok(Vec::new());
            }
            let wake = generator
                .schedule
                .wake(generator.next_seq, want, Instant::now());
            tokio::time::sleep_until(wake).await;
            Ok(generator.generate(want, Instant::now()))
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        self.state = None;
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        BATCH_SIZE, ITERATIONS, MAX_INTERVAL, RANDOM_SEED, RECORDS_PER_SECOND, RECORD_BYTES, TOPIC,
    };
    use sluice_proto::ErrorKind;

    fn props(pairs: &[(&str, &str)]) -> Props {
        let mut props = Props::from([(TOPIC.to_owned(), "gen".to_owned())]);
        props.extend(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        props
    }

    fn context(task: u32, committed: &[(u32, u64)]) -> SourceTaskContext {
        SourceTaskContext {
            connector: "dg".to_owned(),
            task,
            committed: committed
                .iter()
                .map(|(t, seq)| {
                    (
                        SourcePartition::single(TASK, *t),
                        SourceOffset::single(SEQ, *seq),
                    )
                })
                .collect(),
        }
    }

    async fn started(pairs: &[(&str, &str)], context: SourceTaskContext) -> DatagenSourceTask {
        let mut task = DatagenSourceTask::default();
        task.start(&props(pairs), context).await.unwrap();
        task
    }

    fn seqs(records: &[SourceRecord]) -> Vec<u64> {
        records
            .iter()
            .map(|r| match r.value.get(SEQ) {
                Some(Value::Int64(s)) => u64::try_from(*s).unwrap(),
                other => panic!("no seq: {other:?}"),
            })
            .collect()
    }

    /// The value as the JsonConverter writes it with `schemas.enable=false`.
    fn json(value: &Value) -> String {
        let Value::Struct(fields) = value else {
            panic!("not a struct: {value:?}");
        };
        let mut map = serde_json::Map::new();
        for (name, v) in fields {
            let v = match v {
                Value::Int32(n) => serde_json::json!(n),
                Value::Int64(n) => serde_json::json!(n),
                Value::String(s) => serde_json::json!(s),
                other => panic!("unexpected field {other:?}"),
            };
            map.insert(name.clone(), v);
        }
        serde_json::Value::Object(map).to_string()
    }

    #[test]
    fn the_connector_plans_tasks_max_tasks_and_refuses_bad_configs() {
        let config = props(&[]);
        assert_eq!(DatagenSource.task_configs(&config, 3).unwrap().len(), 3);
        assert_eq!(
            DatagenSource.exactly_once_support(&config),
            ExactlyOnceSupport::Supported
        );
        let e = DatagenSource
            .task_configs(&props(&[("quickstart", "users")]), 1)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message
                .contains("quickstart: not supported yet: Avro schemas"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn records_count_from_zero_per_task_with_partition_offset_key_and_schema() {
        let mut task = started(
            &[(RECORDS_PER_SECOND, "0"), (BATCH_SIZE, "3")],
            context(2, &[]),
        )
        .await;
        let first = task.poll().await.unwrap();
        assert_eq!(seqs(&first), [0, 1, 2]);
        assert_eq!(seqs(&task.poll().await.unwrap()), [3, 4, 5]);
        let r = &first[1];
        assert_eq!(r.topic, "gen");
        assert_eq!(r.source_partition, SourcePartition::single(TASK, 2));
        assert_eq!(r.source_offset, SourceOffset::single(SEQ, 1));
        assert_eq!(r.key, Value::String("2-1".to_owned()));
        assert_eq!(r.value.get(TASK), Some(&Value::Int32(2)));
        let Some(Value::Int64(ts)) = r.value.get(TS) else {
            panic!("no ts: {:?}", r.value);
        };
        assert_eq!(r.timestamp, Some(*ts));
        assert!(*ts > 1_600_000_000_000, "{ts}");
        r.value
            .validate(r.value_schema.as_deref().unwrap())
            .unwrap();
        r.key.validate(r.key_schema.as_deref().unwrap()).unwrap();
        task.stop().await;
        assert!(task.poll().await.is_err());
    }

    #[tokio::test]
    async fn a_task_resumes_after_its_own_last_committed_seq() {
        // Task 1's offset is 41; task 0's (7) is not its business.
        let mut task = started(
            &[(RECORDS_PER_SECOND, "0"), (BATCH_SIZE, "2")],
            context(1, &[(0, 7), (1, 41)]),
        )
        .await;
        assert_eq!(seqs(&task.poll().await.unwrap()), [42, 43]);
        let mut fresh = started(&[(RECORDS_PER_SECOND, "0")], context(3, &[(1, 41)])).await;
        assert_eq!(seqs(&fresh.poll().await.unwrap())[0], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn iterations_count_across_restarts_and_a_finished_task_idles() {
        let config = [(RECORDS_PER_SECOND, "0"), (ITERATIONS, "5")];
        let mut task = started(&config, context(0, &[(0, 2)])).await;
        assert_eq!(seqs(&task.poll().await.unwrap()), [3, 4]);
        let before = Instant::now();
        assert!(task.poll().await.unwrap().is_empty());
        assert!(task.poll().await.unwrap().is_empty());
        // Each empty poll waited (paused time moves only when every task sleeps).
        assert!(before.elapsed() >= IDLE_WAIT * 2, "{:?}", before.elapsed());

        // All five were committed before this life: nothing more.
        let mut done = started(&config, context(0, &[(0, 4)])).await;
        assert!(done.poll().await.unwrap().is_empty());
        // Not limited: on it goes.
        let mut unlimited = started(&[(RECORDS_PER_SECOND, "0")], context(0, &[(0, 4)])).await;
        assert_eq!(seqs(&unlimited.poll().await.unwrap())[0], 5);
    }

    #[tokio::test]
    async fn a_corrupt_committed_offset_is_a_data_error_naming_seq() {
        for bad in [serde_json::json!("three"), serde_json::json!(-1)] {
            let mut context = context(0, &[]);
            context.committed.insert(
                SourcePartition::single(TASK, 0),
                SourceOffset::single(SEQ, bad),
            );
            let e = DatagenSourceTask::default()
                .start(&props(&[]), context)
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Data);
            assert!(e.message.contains("\"seq\""), "{e}");
        }
        let e = DatagenSourceTask::default()
            .start(&Props::new(), SourceTaskContext::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("kafka.topic"), "{e}");
    }

    #[test]
    fn values_are_padded_to_the_record_size_as_schemaless_json() {
        for bytes in [60, 100, 1000, 4096] {
            for (task, seq, ts) in [
                (0, 0, 1_700_000_000_000_u64),
                (7, 123_456, 1_700_000_000_000),
                (12, u64::MAX / 4, 99),
            ] {
                let len = payload_len(bytes, task, seq, ts);
                let value = Value::Struct(vec![
                    (TASK.to_owned(), Value::Int32(i32::try_from(task).unwrap())),
                    (SEQ.to_owned(), Value::Int64(i64::try_from(seq).unwrap())),
                    (TS.to_owned(), Value::Int64(i64::try_from(ts).unwrap())),
                    (PAYLOAD.to_owned(), Value::String(payload(9, seq, len))),
                ]);
                assert_eq!(json(&value).len(), bytes, "{bytes} {task} {seq} {ts}");
            }
        }
        // Smaller than the fields themselves: no payload, nothing cut.
        assert_eq!(payload_len(10, 0, 0, 1_700_000_000_000), 0);
        assert_eq!(payload_len(0, 0, 0, 0), 0);
    }

    #[tokio::test]
    async fn generated_records_have_the_configured_size_and_seeded_payloads() {
        let config = [
            (RECORDS_PER_SECOND, "0"),
            (RECORD_BYTES, "1024"),
            (RANDOM_SEED, "42"),
        ];
        let records = started(&config, context(0, &[]))
            .await
            .poll()
            .await
            .unwrap();
        assert_eq!(records.len(), 2000);
        for r in &records {
            assert_eq!(json(&r.value).len(), 1024);
        }
        let payload_of = |r: &SourceRecord| r.value.get(PAYLOAD).cloned();
        // Generated again after a restart: the same payload. Another task: another one.
        let again = started(&config, context(0, &[(0, 4)]))
            .await
            .poll()
            .await
            .unwrap();
        assert_eq!(payload_of(&again[0]), payload_of(&records[5]));
        let other = started(&config, context(1, &[(1, 4)]))
            .await
            .poll()
            .await
            .unwrap();
        assert_ne!(payload_of(&other[0]), payload_of(&records[5]));
        assert_ne!(payload_of(&records[0]), payload_of(&records[1]));

        // Big records: a poll stays within POLL_BYTES.
        let big = started(
            &[(RECORDS_PER_SECOND, "0"), (RECORD_BYTES, "1048576")],
            context(0, &[]),
        )
        .await
        .poll()
        .await
        .unwrap();
        assert_eq!(big.len(), POLL_BYTES / 1_048_576);
    }

    #[test]
    fn a_fixed_rate_schedule_catches_up_a_little_and_no_more() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(Pace::Every(ms(10)), 1, start);
        // The first record is due at once; a poll of 100 waits for the 11 due within 100 ms.
        assert_eq!(s.wake(0, 100, start), start + ms(100));
        assert_eq!(s.wake(0, 3, start), start + ms(20));
        assert_eq!(s.take(0, 100, start + ms(100)), 11);
        assert_eq!(s.lag(start + ms(100)), Duration::ZERO);
        assert_eq!(s.take(11, 100, start + ms(105)), 0);
        // Nothing due within the window: wait the whole window.
        let mut slow = Schedule::new(Pace::Every(Duration::from_secs(1)), 1, start);
        assert_eq!(slow.take(0, 5, start), 1);
        assert_eq!(slow.wake(1, 5, start), start + POLL_WINDOW);
        // Behind by less than MAX_LAG: caught up in full, a batch at a time.
        assert_eq!(s.take(11, 20, start + ms(600)), 20);
        assert_eq!(s.lag(start + ms(600)), ms(290));
        assert_eq!(s.take(31, 1000, start + ms(600)), 30);
        // Ten seconds behind: one second of records, then the schedule goes on from there.
        let late = start + Duration::from_secs(11);
        assert_eq!(s.lag(late), ms(10_390));
        assert_eq!(s.take(61, 100_000, late), 101);
        assert_eq!(s.lag(late), Duration::ZERO);
        assert_eq!(s.take(162, 100_000, late + MAX_LAG), 100);
    }

    #[test]
    fn max_interval_gaps_are_below_it_average_half_and_repeat_per_seed() {
        let start = Instant::now();
        let below = Duration::from_millis(500);
        let s = Schedule::new(Pace::Below(below), task_key(Some(7), 0), start);
        let gaps: Vec<Duration> = (0..2000).map(|seq| s.gap(seq)).collect();
        assert!(gaps.iter().all(|g| *g < below));
        let mean = gaps.iter().sum::<Duration>() / 2000;
        assert!(
            (Duration::from_millis(230)..Duration::from_millis(270)).contains(&mean),
            "{mean:?}"
        );
        let again = Schedule::new(Pace::Below(below), task_key(Some(7), 0), start);
        assert_eq!(again.gap(1234), s.gap(1234));
        let other = Schedule::new(Pace::Below(below), task_key(Some(7), 1), start);
        assert!((0..100).any(|seq| other.gap(seq) != s.gap(seq)));
        // Looking ahead agrees with taking.
        let mut taken = Schedule::new(Pace::Below(below), task_key(Some(7), 0), start);
        let wake = taken.wake(0, 50, start);
        let n = taken.take(0, 50, wake);
        assert!(n >= 1);
        assert!(taken.next_due > start + POLL_WINDOW || n == 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_holds_over_time_in_polls_of_the_window() {
        let mut task = started(&[(RECORDS_PER_SECOND, "1000")], context(0, &[])).await;
        let start = Instant::now();
        let mut all = Vec::new();
        let mut polls = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let batch = task.poll().await.unwrap();
            assert!(batch.len() <= 101, "{}", batch.len());
            all.extend(seqs(&batch));
            polls += 1;
        }
        // 1000 per second for two seconds, give or take the first and last record.
        assert!((1999..=2002).contains(&all.len()), "{}", all.len());
        assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
        assert!((19..=22).contains(&polls), "{polls} polls");
    }

    #[tokio::test(start_paused = true)]
    async fn max_interval_paces_like_confluents_and_a_dropped_poll_loses_nothing() {
        let mut task = started(
            &[(MAX_INTERVAL, "1000"), (RANDOM_SEED, "3")],
            context(0, &[]),
        )
        .await;
        let start = Instant::now();
        let mut all = Vec::new();
        while start.elapsed() < Duration::from_secs(100) {
            all.extend(seqs(&task.poll().await.unwrap()));
        }
        // On average a gap of 500 ms: about 200 records in 100 s.
        assert!((150..=250).contains(&all.len()), "{}", all.len());

        // A poll dropped while it waits (the worker stopping) takes nothing.
        let next = all.len() as u64;
        let mut slow = started(
            &[(RECORDS_PER_SECOND, "0.01")],
            context(0, &[(0, next - 1)]),
        )
        .await;
        assert_eq!(seqs(&slow.poll().await.unwrap()), [next]);
        let dropped = tokio::time::timeout(Duration::from_millis(10), slow.poll()).await;
        assert!(dropped.is_err());
        let mut polled = Vec::new();
        while polled.is_empty() {
            polled = slow.poll().await.unwrap();
        }
        assert_eq!(seqs(&polled), [next + 1]);
    }
}
