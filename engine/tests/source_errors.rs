//! Bad records on the source path, against the real broker. With `errors.tolerance=all`
//! they land in the dead-letter queue (Kafka Connect has none for sources) with headers
//! saying which stage failed, why, and where the record came from, and the offsets move
//! on; with `none` the task fails with the record's coordinates in its trace.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Numbers, WorkerProcess};
use serde_json::json;
use sluice_testkit::{free_port, stack, unique_name, Isolation};

fn header<'a>(r: &'a sluice_testkit::Consumed, key: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn tolerated_bad_records_go_to_the_dead_letter_queue_and_intolerable_ones_fail_the_task(
) -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "dlq-in", 5, 100).await?;
    let dlq = unique_name("dlq");
    // The byte-array converter refuses string values: every record fails VALUE_CONVERTER.
    let base = std::fs::read_to_string(&numbers.connector)?.replace(
        "org.apache.kafka.connect.storage.StringConverter",
        "org.apache.kafka.connect.converters.ByteArrayConverter",
    );
    let tolerant = numbers.dir.write(
        "tolerant.properties",
        &format!(
            "{}errors.tolerance=all\nerrors.log.enable=true\nerrors.deadletterqueue.topic.name={dlq}\n\
             errors.deadletterqueue.topic.replication.factor=1\n",
            base.replace("name=numbers", "name=tolerant")
        ),
    )?;
    let strict = numbers.dir.write(
        "strict.properties",
        &base.replace("name=numbers", "name=strict"),
    )?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "w.properties",
        port,
        &unique_name("dlq"),
        &unique_name("dlq-offsets"),
        "task.restart.max.attempts=2",
    )?;
    let mut w = WorkerProcess::standalone(
        &worker,
        &[&tolerant, &strict],
        port,
        numbers.dir.0.join("w.log"),
    )?;
    w.wait_ready(Duration::from_secs(60))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut dead, mut strict_status) = (Vec::new(), json!(null));
    while Instant::now() < deadline {
        dead = stack
            .read_topic(&dlq, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        strict_status = w.get_json("/connectors/strict/status")?.1;
        if dead.len() >= 5 && strict_status["tasks"][0]["state"] == "FAILED" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, offsets) = w.get_json("/connectors/tolerant/offsets")?;
    w.terminate(Duration::from_secs(30))?;

    // Tolerant: all five in the DLQ, in order, with their story; the offsets moved on.
    assert_eq!(dead.len(), 5, "dead-letter records: {dead:?}");
    for (i, r) in dead.iter().enumerate() {
        assert_eq!(
            r.value.as_deref(),
            Some(format!("\"{}\"", i + 1).as_bytes())
        );
        assert_eq!(header(r, "__connect.errors.stage"), "VALUE_CONVERTER");
        assert_eq!(header(r, "__connect.errors.connector.name"), "tolerant");
        assert_eq!(header(r, "__connect.errors.topic"), numbers.topic);
        assert!(
            header(r, "__connect.errors.exception.message").contains("expects bytes, got a string")
        );
        assert_eq!(
            header(r, "__connect.errors.source.partition"),
            json!({"filename": numbers.input.display().to_string()}).to_string()
        );
        assert_eq!(
            header(r, "__connect.errors.source.offset"),
            json!({"position": 2 * (i + 1)}).to_string()
        );
    }
    assert_eq!(
        offsets["offsets"][0]["offset"],
        json!({"position": 10}),
        "{offsets}"
    );
    assert!(stack
        .read_topic(
            &numbers.topic,
            Isolation::ReadCommitted,
            Duration::from_secs(10)
        )?
        .is_empty());

    // Strict: FAILED, with the first bad record's coordinates in the trace.
    assert_eq!(
        strict_status["tasks"][0]["state"], "FAILED",
        "{strict_status}"
    );
    let trace = strict_status["tasks"][0]["trace"]
        .as_str()
        .unwrap_or_default();
    assert!(
        trace.contains("converting the value of the record"),
        "{trace}"
    );
    assert!(trace.contains(r#"{"position":2}"#), "{trace}");
    Ok(())
}
