//! The worker's state topics against foreign and hostile content: a record in the shared
//! offsets topic that is not Kafka Connect's format must not stop any source task from
//! starting, and no connector record may be written into a state topic (a `RegexRouter`
//! could route there).

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{assert_exactly_once_in_order, Numbers, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_testkit::{free_port, stack, unique_name, Isolation};

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_key_in_the_offsets_topic_is_skipped() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "badkey", 50, 10).await?;
    let offsets = unique_name("badkey-offsets");
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "w.properties",
        port,
        &unique_name("badkey"),
        &offsets,
        "",
    )?;
    let log = numbers.dir.0.join("w.log");

    // First life: the connector reads 50 lines and commits its offsets.
    let mut w = WorkerProcess::standalone(&worker, &[&numbers.connector], port, log.clone())?;
    w.wait_ready(Duration::from_secs(60))?;
    assert_eq!(
        numbers
            .wait_for_all(stack, 50, Duration::from_secs(60))
            .len(),
        50
    );
    w.terminate(Duration::from_secs(30))?;

    // Someone else's records land in the shared offsets topic: not JSON, a JSON key of
    // another shape, and a null key.
    let producer = stack.producer()?;
    for (partition, key) in [
        (0, &b"\xff\xfenot json"[..]),
        (1, b"{\"a\":1}"),
        (2, b"[\"x\"]"),
    ] {
        producer
            .send(
                BaseRecord::to(&offsets)
                    .partition(partition)
                    .key(key)
                    .payload(&b"{}"[..]),
            )
            .map_err(|(e, _)| e)?;
    }
    producer
        .send(
            BaseRecord::<(), [u8]>::to(&offsets)
                .partition(0)
                .payload(&b"{}"[..]),
        )
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(10))?;

    // Second life: more lines; the task starts, resumes from its offset, and reads them.
    let more: String = (51..=80).map(|i| format!("{i}\n")).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&numbers.input)
        .and_then(|mut f| std::io::Write::write_all(&mut f, more.as_bytes()))?;
    let mut w = WorkerProcess::standalone(&worker, &[&numbers.connector], port, log)?;
    w.wait_ready(Duration::from_secs(60))?;
    let lines = numbers.wait_for_all(stack, 80, Duration::from_secs(60));
    let (_, status) = w.get_json("/connectors/numbers/status")?;
    let text = w.log_text();
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    assert_exactly_once_in_order(&lines, 80);
    assert!(
        text.contains("undecodable") && text.contains(&offsets),
        "a WARN names the skipped record's topic: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_routed_to_a_state_topic_are_refused() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "route-state", 5, 10).await?;
    let offsets = unique_name("route-state-offsets");
    let body = std::fs::read_to_string(&numbers.connector)?.replace(
        "value.converter=org.apache.kafka.connect.storage.StringConverter\n",
        "",
    );
    let connector = numbers.dir.write(
        "routed.properties",
        &format!(
            // Keyed (the state topics are compacted, so the broker takes keyed records
            // only), then routed to the offsets topic.
            "{body}transforms=h,k,r\n\
             transforms.h.type=org.apache.kafka.connect.transforms.HoistField$Value\ntransforms.h.field=line\n\
             transforms.k.type=org.apache.kafka.connect.transforms.ValueToKey\ntransforms.k.fields=line\n\
             transforms.r.type=org.apache.kafka.connect.transforms.RegexRouter\n\
             transforms.r.regex=.*\ntransforms.r.replacement={offsets}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\nkey.converter.schemas.enable=false\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=false\n"
        ),
    )?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "w.properties",
        port,
        &unique_name("route-state"),
        &offsets,
        "task.restart.max.attempts=0",
    )?;
    let mut w =
        WorkerProcess::standalone(&worker, &[&connector], port, numbers.dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        status = w.get_json("/connectors/numbers/status")?.1;
        if status["tasks"][0]["state"] == "FAILED" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(status["tasks"][0]["state"], "FAILED", "{status}");
    let trace = status["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(
        trace.contains(&offsets) && trace.contains("offset.storage.topic"),
        "{trace}"
    );
    // Nothing but offset records in the offsets topic.
    let written = stack.read_topic(
        &offsets,
        Isolation::ReadUncommitted,
        Duration::from_secs(10),
    )?;
    assert!(
        written.iter().all(|r| r
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with(b"[\"numbers\""))),
        "{written:?}"
    );
    Ok(())
}

/// Task starts share the worker's one tailing offsets reader: the topic is read once,
/// however many tasks start (each start used to rescan it whole).
#[tokio::test(flavor = "multi_thread")]
async fn task_starts_share_one_offsets_reader() -> Result<()> {
    let stack = stack()?;
    let offsets = unique_name("shared-offsets");
    // 2,000 offsets of other connectors already in the topic.
    sluice_engine::storage::offsets::ensure_compacted_topic(
        &[(
            "bootstrap.servers".to_owned(),
            stack.kafka_bootstrap.clone(),
        )]
        .into_iter()
        .collect(),
        &offsets,
        3,
        1,
    )
    .await?;
    let producer = stack.producer()?;
    const OTHERS: usize = 2000;
    for i in 0..OTHERS {
        let key = format!("[\"other-{i}\",{{\"filename\":\"/x\"}}]");
        producer
            .send(
                BaseRecord::to(&offsets)
                    .partition((i % 3) as i32)
                    .key(key.as_bytes())
                    .payload(&b"{\"position\":1}"[..]),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;

    let numbers = Numbers::new(stack, "shared-offsets", 10, 10).await?;
    let mut connectors = Vec::new();
    let body = std::fs::read_to_string(&numbers.connector)?;
    for i in 0..4 {
        let topic = stack.create_topic("shared-offsets-out", 1).await?;
        let text = body
            .replace("name=numbers", &format!("name=numbers{i}"))
            .replace(&numbers.topic, &topic);
        connectors.push((
            numbers.dir.write(&format!("c{i}.properties"), &text)?,
            topic,
        ));
    }
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "w.properties",
        port,
        &unique_name("shared"),
        &offsets,
        "",
    )?;
    let files: Vec<&std::path::Path> = connectors.iter().map(|(p, _)| p.as_path()).collect();
    let mut w = WorkerProcess::standalone(&worker, &files, port, numbers.dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    for (_, topic) in &connectors {
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::committed_lines(stack, topic)?.len() < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(common::committed_lines(stack, topic)?.len(), 10, "{topic}");
    }
    // Restart a task by hand: its new life reads the offsets again, from the same reader.
    let (status, body) = w.request("POST", "/connectors/numbers0/tasks/0/restart", None)?;
    assert_eq!(status, 204, "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let metrics = sluice_testkit::http_get(port, "/metrics")?.1;
    w.terminate(Duration::from_secs(30))?;
    let read: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sluice_offset_reader_records_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0);
    // Each record once, plus the few offsets the four connectors wrote themselves.
    assert!(
        read >= OTHERS as f64 && read < (OTHERS + 100) as f64,
        "offsets records read: {read} (5 task starts over {OTHERS} records)"
    );
    Ok(())
}
