//! The sink runtime against the real broker: the file sink (`FileStreamSink`'s config)
//! consuming in the group `connect-<name>`; partitions handed over between two workers by
//! clean rebalances with no record skipped or written twice; group offsets committed only
//! for what the sink made durable; bad records to the dead-letter queue with their origin,
//! or failing the task with it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use common::{state_topics, worker_properties, TempDir, WorkerProcess};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

const PARTITIONS: i32 = 3;

/// Produces `count` records per partition, values `"<partition>:<seq>"` with `seq` from `from`.
fn produce(stack: &Stack, topic: &str, from: usize, count: usize) -> Result<()> {
    produce_to(stack, topic, PARTITIONS, from, count)
}

fn produce_to(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    from: usize,
    count: usize,
) -> Result<()> {
    let producer = stack.producer()?;
    for seq in from..from + count {
        for p in 0..partitions {
            let value = format!("{p}:{seq}");
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(p)
                .payload(value.as_bytes());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing test records")?;
    Ok(())
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Per partition, the sequence numbers in the order a file holds them.
fn by_partition(lines: &[String]) -> Result<BTreeMap<i32, Vec<usize>>> {
    let mut out: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for line in lines {
        let Some((p, seq)) = line.split_once(':') else {
            bail!("unexpected line {line:?}");
        };
        out.entry(p.parse()?).or_default().push(seq.parse()?);
    }
    Ok(out)
}

fn sink_config(
    dir: &TempDir,
    file: &str,
    name: &str,
    topic: &str,
    extra: &str,
) -> Result<std::path::PathBuf> {
    let out = dir.0.join(file);
    dir.write(
        &format!("{file}.properties"),
        &format!(
            "name={name}\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n{extra}",
            out.display()
        ),
    )
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done()
}

/// The group's committed offsets for `topic`, per partition.
fn committed(stack: &Stack, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let consumer: rdkafka::consumer::BaseConsumer = stack
        .kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok(offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_move_between_workers_without_loss_or_duplicates() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("sink-lines", PARTITIONS).await?;
    let dir = TempDir::new("sink-rebalance")?;
    let name = unique_name("lines");
    let (port_a, port_b) = (free_port()?, free_port()?);
    let worker = |port: u16, file: &str| {
        dir.write(
            file,
            &worker_properties(
                stack,
                port,
                &unique_name("sink"),
                &unique_name("sink-offsets"),
                "offset.flush.interval.ms=300\n",
            ),
        )
    };
    let (worker_a, worker_b) = (
        worker(port_a, "a.properties")?,
        worker(port_b, "b.properties")?,
    );
    let (sink_a, sink_b) = (
        sink_config(&dir, "a.txt", &name, &topic, "")?,
        sink_config(&dir, "b.txt", &name, &topic, "")?,
    );
    let (out_a, out_b) = (dir.0.join("a.txt"), dir.0.join("b.txt"));

    produce(stack, &topic, 0, 1000)?;
    let mut a = WorkerProcess::standalone(&worker_a, &[&sink_a], port_a, dir.0.join("a.log"))?;
    a.wait_ready(Duration::from_secs(60))?;
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out_a).len() >= 3000),
        "worker A wrote {} of 3000 lines; log:\n{}",
        lines(&out_a).len(),
        a.log_text()
    );

    // B joins the group: the partitions are split between A and B while records flow.
    let mut b = WorkerProcess::standalone(&worker_b, &[&sink_b], port_b, dir.0.join("b.log"))?;
    b.wait_ready(Duration::from_secs(60))?;
    for round in 1..=4 {
        produce(stack, &topic, round * 1000, 1000)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        wait_until(Duration::from_secs(60), || !lines(&out_b).is_empty()),
        "worker B never got a partition; log:\n{}",
        b.log_text()
    );
    // A leaves cleanly: it commits and hands everything to B.
    a.terminate(Duration::from_secs(60))?;
    produce(stack, &topic, 5000, 1000)?;
    let total = 6000 * PARTITIONS as usize;
    assert!(
        wait_until(Duration::from_secs(90), || lines(&out_a).len()
            + lines(&out_b).len()
            >= total),
        "{} + {} of {total} lines; B's log:\n{}",
        lines(&out_a).len(),
        lines(&out_b).len(),
        b.log_text()
    );
    // Give a duplicate (if any) time to show up, and the last commit time to land.
    std::thread::sleep(Duration::from_secs(2));
    let group = format!("connect-{name}");
    let end = committed(stack, &group, &topic)?;
    b.terminate(Duration::from_secs(60))?;

    let (la, lb) = (lines(&out_a), lines(&out_b));
    assert!(!la.is_empty() && !lb.is_empty());
    let mut all: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for file in [&la, &lb] {
        for (p, seqs) in by_partition(file)? {
            // Within one worker's file, each partition's records are in offset order.
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "partition {p} out of order in one file"
            );
            all.entry(p).or_default().extend(seqs);
        }
    }
    for p in 0..PARTITIONS {
        let mut seqs = all.remove(&p).unwrap_or_default();
        seqs.sort_unstable();
        let expected: Vec<usize> = (0..6000).collect();
        assert!(
            seqs == expected,
            "partition {p}: {} records, first difference at {:?}",
            seqs.len(),
            seqs.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    // The group's committed offsets are the end: everything written was committed.
    // (A committed offset only counts a record the sink synced to disk.)
    let expected: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 6000)).collect();
    assert_eq!(end, expected, "committed offsets of {group}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_go_to_the_dead_letter_queue_with_their_origin_or_fail_the_task() -> Result<()>
{
    let stack = stack()?;
    let topic = stack.create_topic("sink-json", 1).await?;
    let dlq = unique_name("sink-dlq");
    let dir = TempDir::new("sink-dlq")?;
    let producer = stack.producer()?;
    // Good records are objects with a `msg` field; the rest fail a stage each.
    let values: [&[u8]; 6] = [
        br#"{"msg":"one"}"#,
        b"{not json", // VALUE_CONVERTER
        br#"{"msg":"three"}"#,
        br#""no fields here""#, // TRANSFORMATION: ExtractField needs a map
        b"\x01",                // VALUE_CONVERTER
        br#"{"msg":{"four":4}}"#,
    ];
    for value in values {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&topic)
                    .partition(0)
                    .payload(value),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let json = "value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=false\n\
                transforms=pick\ntransforms.pick.type=org.apache.kafka.connect.transforms.ExtractField$Value\n\
                transforms.pick.field=msg\n";
    let tolerant = dir.write(
        "tolerant.properties",
        &format!(
            "name=tolerant\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n{json}\
             errors.tolerance=all\nerrors.deadletterqueue.topic.name={dlq}\n\
             errors.deadletterqueue.topic.replication.factor=1\n",
            dir.0.join("tolerant.txt").display()
        ),
    )?;
    let strict = dir.write(
        "strict.properties",
        &format!(
            "name=strict\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n{json}",
            dir.0.join("strict.txt").display()
        ),
    )?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("sink-dlq"),
            &unique_name("sink-dlq-offsets"),
            "offset.flush.interval.ms=300\ntask.restart.max.attempts=1\n",
        ),
    )?;
    let mut w =
        WorkerProcess::standalone(&worker, &[&tolerant, &strict], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;

    let mut dead = Vec::new();
    let mut strict_status = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(60), || {
        dead = stack
            .read_topic(&dlq, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        strict_status = w
            .get_json("/connectors/strict/status")
            .map(|(_, s)| s)
            .unwrap_or_default();
        dead.len() >= 3
            && lines(&dir.0.join("tolerant.txt")).len() >= 3
            && strict_status["tasks"][0]["state"] == "FAILED"
    });
    let group_end = committed(stack, "connect-tolerant", &topic)?;
    let strict_end = committed(stack, "connect-strict", &topic)?;
    w.terminate(Duration::from_secs(30))?;
    assert!(
        done,
        "dlq {dead:?}, strict {strict_status}; log:\n{}",
        w.log_text()
    );

    // The good records were written; the bad ones kept their original bytes and say where
    // they came from and why they failed.
    assert_eq!(
        lines(&dir.0.join("tolerant.txt")),
        ["one", "three", "{four=4}"].map(String::from)
    );
    let header = |r: &sluice_testkit::Consumed, key: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(dead.len(), 3, "{dead:?}");
    let expected: [(&[u8], &str, &str); 3] = [
        (b"{not json", "1", "VALUE_CONVERTER"),
        (br#""no fields here""#, "3", "TRANSFORMATION"),
        (b"\x01", "4", "VALUE_CONVERTER"),
    ];
    for (r, (value, offset, stage)) in dead.iter().zip(expected) {
        assert_eq!(r.value.as_deref(), Some(value));
        assert_eq!(header(r, "__connect.errors.topic"), topic);
        assert_eq!(header(r, "__connect.errors.partition"), "0");
        assert_eq!(header(r, "__connect.errors.offset"), offset);
        assert_eq!(header(r, "__connect.errors.stage"), stage);
        assert_eq!(header(r, "__connect.errors.connector.name"), "tolerant");
        assert_eq!(header(r, "__connect.errors.task.id"), "0");
        assert!(!header(r, "__connect.errors.exception.message").is_empty());
    }
    // Offsets moved past the bad records (they are in the DLQ, not lost).
    assert_eq!(group_end.get(&0), Some(&6));

    // Strict: the task failed, naming the record. As in Kafka Connect, a batch is converted
    // whole before `put`, so nothing of the failing batch was written or committed.
    let trace = strict_status["tasks"][0]["trace"]
        .as_str()
        .unwrap_or_default();
    assert!(trace.contains(&format!("{topic}[0]@1")), "{trace}");
    assert!(trace.contains("VALUE_CONVERTER"), "{trace}");
    assert!(lines(&dir.0.join("strict.txt")).is_empty());
    assert_eq!(strict_end.get(&0), None, "strict committed {strict_end:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_configs_are_checked_before_anything_starts() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("sink-config")?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("sink-config"),
            &unique_name("sink-config-offsets"),
            &state_topics("sink-config"),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let cases = [
        (
            serde_json::json!({"connector.class": "FileStreamSink", "file": "/tmp/x"}),
            "topics",
        ),
        (
            serde_json::json!({"connector.class": "FileStreamSink", "file": "/tmp/x", "topics": "a", "topics.regex": "a.*"}),
            "mutually exclusive",
        ),
        (
            serde_json::json!({"connector.class": "FileStreamSink", "file": "/tmp/x", "topics.regex": "(unclosed"}),
            "topics.regex",
        ),
        (
            serde_json::json!({"connector.class": "FileStreamSink", "file": "/tmp/x", "topics": "a,dead",
                "errors.deadletterqueue.topic.name": "dead"}),
            "dead-letter queue",
        ),
    ];
    for (config, expected) in cases {
        let body = serde_json::json!({"name": "bad", "config": config});
        let (status, text) = w.request("POST", "/connectors", Some(&body))?;
        assert_eq!(status, 400, "{config}: {text}");
        assert!(text.contains(expected), "{config}: {text}");
    }
    let (_, names) = w.get_json("/connectors")?;
    assert_eq!(names, serde_json::json!([]));
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_sinks_group_offsets_can_be_read_altered_and_reset_over_rest() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("sink-offsets", PARTITIONS).await?;
    produce(stack, &topic, 0, 10)?;
    let dir = TempDir::new("sink-offsets")?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("sink-offsets"),
            &unique_name("sink-offsets-offsets"),
            &format!(
                "offset.flush.interval.ms=200\n{}",
                state_topics("sink-offsets")
            ),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let out = dir.0.join("out.txt");
    let create = serde_json::json!({"name": "offs", "config": {
        "connector.class": "FileStreamSink", "file": out.display().to_string(), "topics": topic,
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    let (status, body) = w.request("POST", "/connectors", Some(&create))?;
    assert_eq!(status, 201, "{body}");
    // A distributed worker answers 201 once the config is written; it knows the connector
    // once it has read it back (a GET may come first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let (code, info) = w.get_json("/connectors/offs")?;
        if code == 200 || Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(info["type"], "sink", "{info}");

    let ours = |v: &serde_json::Value| -> BTreeMap<i64, i64> {
        v["offsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["partition"]["kafka_topic"] == serde_json::json!(topic))
            .filter_map(|o| {
                Some((
                    o["partition"]["kafka_partition"].as_i64()?,
                    o["offset"]["kafka_offset"].as_i64()?,
                ))
            })
            .collect()
    };
    let all_at =
        |n: i64| -> BTreeMap<i64, i64> { (0..i64::from(PARTITIONS)).map(|p| (p, n)).collect() };
    let mut offsets = serde_json::Value::Null;
    let caught_up = wait_until(Duration::from_secs(60), || {
        offsets = w
            .get_json("/connectors/offs/offsets")
            .map(|(_, v)| v)
            .unwrap_or_default();
        ours(&offsets) == all_at(10)
    });
    assert!(caught_up, "offsets {offsets}; log:\n{}", w.log_text());

    // Altering needs the connector STOPPED.
    let patch = serde_json::json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": 1}, "offset": {"kafka_offset": 4}}]});
    let (status, _) = w.request("PATCH", "/connectors/offs/offsets", Some(&patch))?;
    assert_eq!(status, 400);
    let (status, _) = w.request("PUT", "/connectors/offs/stop", None)?;
    assert_eq!(status, 202);
    // The group must be empty before its offsets can be set: wait for the task to leave.
    let mut altered = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(30), || {
            altered = w
                .request("PATCH", "/connectors/offs/offsets", Some(&patch))
                .unwrap_or_default();
            altered.0 == 200
        }),
        "{altered:?}"
    );
    let (_, v) = w.get_json("/connectors/offs/offsets")?;
    let mut expected = all_at(10);
    expected.insert(1, 4);
    assert_eq!(ours(&v), expected);
    // A bad body changes nothing and names the field.
    let bad = serde_json::json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": -1}, "offset": {"kafka_offset": 0}}]});
    let (status, text) = w.request("PATCH", "/connectors/offs/offsets", Some(&bad))?;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("kafka_partition"), "{text}");
    assert_eq!(ours(&w.get_json("/connectors/offs/offsets")?.1), expected);

    // Resumed, the sink re-reads partition 1 from offset 4: six lines again.
    let (status, _) = w.request("PUT", "/connectors/offs/resume", None)?;
    assert_eq!(status, 202);
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out).len() >= 36),
        "{} lines; log:\n{}",
        lines(&out).len(),
        w.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lines(&out).len(), 36);

    // Reset: the group is gone, no offsets remain.
    let (status, _) = w.request("PUT", "/connectors/offs/stop", None)?;
    assert_eq!(status, 202);
    let mut reset = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(30), || {
            reset = w
                .request("DELETE", "/connectors/offs/offsets", None)
                .unwrap_or_default();
            reset.0 == 200
        }),
        "{reset:?}"
    );
    assert_eq!(
        ours(&w.get_json("/connectors/offs/offsets")?.1),
        BTreeMap::new()
    );
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_sink_itself_refuses_goes_to_the_dead_letter_queue() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("sink-put", 1).await?;
    let dlq = unique_name("sink-put-dlq");
    let producer = stack.producer()?;
    let values: [&[u8]; 4] = [b"ok1", b"\xff\xfe not UTF-8", b"ok3", b"ok4"];
    for value in values {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&topic)
                    .partition(0)
                    .payload(value),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let dir = TempDir::new("sink-put")?;
    let out = dir.0.join("out.txt");
    // Bytes pass the converter; the file sink refuses a value that is not UTF-8.
    let connector = dir.write(
        "putfail.properties",
        &format!(
            "name=putfail\nconnector.class=FileStreamSink\nfile={}\ntopics={topic}\n\
             value.converter=org.apache.kafka.connect.converters.ByteArrayConverter\n\
             errors.tolerance=all\nerrors.deadletterqueue.topic.name={dlq}\n\
             errors.deadletterqueue.topic.replication.factor=1\n",
            out.display()
        ),
    )?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("sink-put"),
            &unique_name("sink-put-offsets"),
            "offset.flush.interval.ms=300\n",
        ),
    )?;
    let mut w = WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let mut dead = Vec::new();
    let done = wait_until(Duration::from_secs(60), || {
        dead = stack
            .read_topic(&dlq, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        !dead.is_empty() && lines(&out).len() >= 3
    });
    w.terminate(Duration::from_secs(30))?;
    assert!(done, "dlq {dead:?}; log:\n{}", w.log_text());
    // The batch was refused whole, then put record by record: the good ones once each.
    assert_eq!(lines(&out), ["ok1", "ok3", "ok4"]);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(values[1]));
    let header = |key: &str| {
        dead[0]
            .headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("__connect.errors.stage"), "TASK_PUT");
    assert_eq!(header("__connect.errors.offset"), "1");
    assert!(
        header("__connect.errors.exception.message").contains("not UTF-8"),
        "{}",
        header("__connect.errors.exception.message")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_added_and_removed_while_records_flow_write_each_record_once_in_order() -> Result<()>
{
    const SIX: i32 = 6;
    let stack = stack()?;
    let topic = stack.create_topic("sink-tasks", SIX).await?;
    let dir = TempDir::new("sink-tasks")?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("sink-tasks"),
            &unique_name("sink-tasks-offsets"),
            &format!(
                "offset.flush.interval.ms=500\n{}",
                state_topics("sink-tasks")
            ),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let out = dir.0.join("out.txt");
    let config = |tasks: u32| {
        serde_json::json!({"connector.class": "FileStreamSink", "file": out.display().to_string(),
            "topics": topic, "tasks.max": tasks.to_string(),
            "value.converter": "org.apache.kafka.connect.storage.StringConverter"})
    };
    let (status, body) = w.request("PUT", "/connectors/spread/config", Some(&config(2)))?;
    assert_eq!(status, 201, "{body}");

    let mut next = 0;
    let mut feed = |rounds: usize| -> Result<()> {
        for _ in 0..rounds {
            produce_to(stack, &topic, SIX, next, 200)?;
            next += 200;
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    };
    feed(8)?;
    let (status, body) = w.request("PUT", "/connectors/spread/config", Some(&config(3)))?;
    assert_eq!(status, 200, "{body}");
    feed(8)?;
    let (_, s) = w.get_json("/connectors/spread/status")?;
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(3), "{s}");
    let (status, body) = w.request("PUT", "/connectors/spread/config", Some(&config(2)))?;
    assert_eq!(status, 200, "{body}");
    feed(8)?;
    let total = next * SIX as usize;
    let done = wait_until(Duration::from_secs(90), || lines(&out).len() >= total);
    std::thread::sleep(Duration::from_secs(1));
    w.terminate(Duration::from_secs(30))?;
    assert!(
        done,
        "{} of {total} lines; log:\n{}",
        lines(&out).len(),
        w.log_text()
    );

    let all = lines(&out);
    assert_eq!(all.len(), total, "duplicates written");
    for (p, seqs) in by_partition(&all)? {
        let expected: Vec<usize> = (0..next).collect();
        assert!(
            seqs == expected,
            "partition {p}: {} records, first difference at {:?}",
            seqs.len(),
            seqs.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_regex_subscribes_to_every_matching_topic() -> Result<()> {
    let stack = stack()?;
    let prefix = unique_name("rx");
    let first = stack.create_topic(&format!("{prefix}-a"), 1).await?;
    let second = stack.create_topic(&format!("{prefix}-b"), 1).await?;
    let other = stack.create_topic("rx-other", 1).await?;
    for topic in [&first, &second, &other] {
        produce_to(stack, topic, 1, 0, 5)?;
    }
    let dir = TempDir::new("sink-regex")?;
    let out = dir.0.join("out.txt");
    let connector = dir.write(
        "regex.properties",
        &format!(
            "name=rx\nconnector.class=FileStreamSink\nfile={}\ntopics.regex={}.*\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            out.display(),
            regex_escape(&prefix)
        ),
    )?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("rx"),
            &unique_name("rx-offsets"),
            "",
        ),
    )?;
    let mut w = WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let done = wait_until(Duration::from_secs(60), || lines(&out).len() >= 10);
    std::thread::sleep(Duration::from_secs(1));
    w.terminate(Duration::from_secs(30))?;
    assert!(done, "{:?}; log:\n{}", lines(&out), w.log_text());
    // Ten records from the two matching topics, none from the other one.
    assert_eq!(lines(&out).len(), 10);
    Ok(())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
