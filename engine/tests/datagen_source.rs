//! The datagen source through `sluice standalone`, exactly-once on, against the stack's
//! broker: two tasks generate `RECORDS` records each into a three-partition topic; the
//! worker is killed (SIGKILL) and later stopped (SIGTERM) mid-stream and started again; the
//! topic, read with read_committed, holds seq 0..RECORDS-1 of each task exactly once (in
//! order within each Kafka partition), every value `RECORD_BYTES` long as schemaless JSON.
//! A task that has generated its iterations stays RUNNING and writes nothing more. The
//! connector is created under Confluent's class name; Confluent's Avro keys are refused by
//! name.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{worker_properties, TempDir, WorkerProcess};
use serde_json::{json, Value};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

const TASKS: u64 = 2;
const RECORDS: u64 = 20_000;
const RECORD_BYTES: usize = 200;

/// One committed record: (Kafka partition, task, seq).
type Seen = (i32, u64, u64);

/// Every committed record of `topic`, checked one by one: the value is schemaless JSON of
/// exactly `RECORD_BYTES` bytes with `task`, `seq`, `ts` and `payload`, the key is
/// `"<task>-<seq>"`.
fn committed(stack: &Stack, topic: &str) -> Result<Vec<Seen>> {
    let records = stack.read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(60))?;
    records
        .iter()
        .map(|r| -> Result<Seen> {
            let bytes = r.value.as_deref().context("a record without a value")?;
            ensure!(
                bytes.len() == RECORD_BYTES,
                "value of {} bytes at {}[{}]@{}: {}",
                bytes.len(),
                topic,
                r.partition,
                r.offset,
                String::from_utf8_lossy(bytes)
            );
            let value: Value = serde_json::from_slice(bytes)?;
            let (Some(task), Some(seq)) = (value["task"].as_u64(), value["seq"].as_u64()) else {
                bail!("no task or seq in {value}");
            };
            ensure!(value["ts"].as_i64().is_some_and(|ts| ts > 0), "ts: {value}");
            ensure!(value["payload"].is_string(), "payload: {value}");
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            ensure!(key == format!("{task}-{seq}"), "key {key:?} of {value}");
            Ok((r.partition, task, seq))
        })
        .collect()
}

/// Each task's records are 0..n (n per task, or exactly `expected` when given), each once,
/// and in order within every partition; returns n per task.
fn assert_exactly_once(seen: &[Seen], expected: Option<u64>) -> BTreeMap<u64, u64> {
    let mut per_task: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut last_in_partition: BTreeMap<(i32, u64), u64> = BTreeMap::new();
    for (partition, task, seq) in seen {
        if let Some(previous) = last_in_partition.insert((*partition, *task), *seq) {
            assert!(
                previous < *seq,
                "partition {partition}: task {task}'s seq {seq} after {previous}"
            );
        }
        per_task.entry(*task).or_default().push(*seq);
    }
    let mut counts = BTreeMap::new();
    for (task, mut seqs) in per_task {
        assert!(task < TASKS, "a record of task {task}");
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        if let Some((i, seq)) = seqs.iter().enumerate().find(|(i, s)| **s != *i as u64) {
            panic!("task {task}: a gap or a duplicate at {i} (seq {seq}); {n} records");
        }
        if let Some(expected) = expected {
            assert_eq!(n, expected, "task {task}");
        }
        counts.insert(task, n);
    }
    counts
}

/// Waits until the topic holds at least `at_least` committed records; returns them.
fn wait_for(stack: &Stack, topic: &str, at_least: usize, timeout: Duration) -> Result<Vec<Seen>> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = committed(stack, topic)?;
        if seen.len() >= at_least {
            return Ok(seen);
        }
        ensure!(
            Instant::now() < deadline,
            "{} committed records after {timeout:?}, {at_least} expected",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn datagen_records_arrive_exactly_once_across_a_kill_and_a_restart() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("datagen", 3).await?;
    let dir = TempDir::new("datagen")?;
    let port = free_port()?;
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("datagen"),
            &unique_name("datagen-offsets"),
            "",
        ),
    )?;
    // Confluent's class name; 2000 records/s per task, so each task takes 10 s in all and
    // the kills land mid-stream.
    let connector = dir.write(
        "datagen.json",
        &json!({"name": "dg", "config": {
            "connector.class": "io.confluent.kafka.connect.datagen.DatagenConnector",
            "kafka.topic": topic,
            "tasks.max": TASKS.to_string(),
            "iterations": RECORDS.to_string(),
            "datagen.records.per.second": "2000",
            "datagen.record.bytes": RECORD_BYTES.to_string(),
            "batch.size": "500",
            "random.seed": "7",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})
        .to_string(),
    )?;
    let total = usize::try_from(TASKS * RECORDS)?;

    // 1. SIGKILL mid-stream: what was committed is a gap-free, duplicate-free prefix per task.
    let mut w = WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("w1.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    wait_for(stack, &topic, 2000, Duration::from_secs(60))?;
    w.kill()?;
    let seen = committed(stack, &topic)?;
    ensure!(seen.len() < total, "the kill came after the end");
    let after_kill = assert_exactly_once(&seen, None);
    eprintln!("killed with {after_kill:?} committed per task");

    // 2. Restarted, it resumes after the last committed seq; SIGTERM mid-stream.
    let mut w = WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("w2.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    wait_for(stack, &topic, seen.len() + 4000, Duration::from_secs(60))?;
    let status = w.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        w.log_text()
    );
    let seen = committed(stack, &topic)?;
    ensure!(seen.len() < total, "the stop came after the end");
    let after_stop = assert_exactly_once(&seen, None);
    for (task, n) in &after_stop {
        ensure!(
            *n > after_kill.get(task).copied().unwrap_or(0),
            "task {task} did not go on after the restart: {after_kill:?} then {after_stop:?}"
        );
    }

    // 3. Restarted again: on to the end, then idle.
    let mut w = WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("w3.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    wait_for(stack, &topic, total, Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_secs(3));
    let seen = committed(stack, &topic)?;
    assert_exactly_once(&seen, Some(RECORDS));
    assert_eq!(
        seen.len(),
        total,
        "records after the iterations were all generated"
    );

    let (_, status) = w.get_json("/connectors/dg/status")?;
    let states: Vec<&str> = status["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(states, ["RUNNING"; TASKS as usize], "{status}");
    let (_, offsets) = w.get_json("/connectors/dg/offsets")?;
    let mut last: Vec<(u64, u64)> = offsets["offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o["partition"]["task"].as_u64()?,
                o["offset"]["seq"].as_u64()?,
            ))
        })
        .collect();
    last.sort_unstable();
    assert_eq!(last, [(0, RECORDS - 1), (1, RECORDS - 1)], "{offsets}");

    // Sluice's canonical name is listed; Confluent's Avro keys are refused, by name.
    let (_, plugins) = w.get_json("/connector-plugins")?;
    assert!(
        plugins
            .to_string()
            .contains("io.sluice.connect.datagen.DatagenSourceConnector"),
        "{plugins}"
    );
    let (code, body) = w.request(
        "PUT",
        "/connector-plugins/DatagenConnector/config/validate",
        Some(
            &json!({"connector.class": "io.confluent.kafka.connect.datagen.DatagenConnector",
                     "name": "x", "kafka.topic": "t", "quickstart": "users"}),
        ),
    )?;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["error_count"], 1, "{body}");
    let quickstart = body["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["value"]["name"] == "quickstart")
        .context("no quickstart in the validation")?;
    assert!(
        quickstart["value"]["errors"]
            .to_string()
            .contains("not supported yet: Avro schemas come with the schema registry work"),
        "{quickstart}"
    );
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}
