//! The Elasticsearch sink across an OpenSearch restart, and replays: OpenSearch is stopped
//! while records keep arriving and started again; afterwards every record is in the index
//! exactly once (ids `topic+partition+offset`), because offsets commit only after a bulk
//! succeeded and a replayed document lands on its own id. A document the server rejects
//! (a mapping conflict) goes to the dead-letter queue, not silently away.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{opensearch_count, worker_properties, TempDir, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::json;
use sluice_testkit::{free_port, stack, stack_script, unique_name, Isolation, Stack};

fn stack_cmd(args: &[&str]) -> Result<()> {
    let out = Command::new("bash")
        .arg(stack_script())
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "stack {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn produce(stack: &Stack, topic: &str, from: usize, to: usize) -> Result<()> {
    let producer = stack.producer()?;
    for i in from..to {
        let value = json!({"n": i, "text": format!("record {i}")}).to_string();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes());
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_is_indexed_once_across_an_opensearch_restart() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("es-restart", 2).await?;
    let index = topic.to_lowercase();
    let dlq = unique_name("es-dlq");
    let dir = TempDir::new("es-restart")?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("es"),
            &unique_name("es-offsets"),
            "offset.flush.interval.ms=300\n",
        ),
    )?;
    let sink = dir.write(
        "es.json",
        &json!({"name": "es", "config": {
            "connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
            "topics": topic, "key.ignore": "true", "connection.url": stack.opensearch_url,
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false",
            "max.retries": "3", "retry.backoff.ms": "200",
            "errors.tolerance": "all", "errors.deadletterqueue.topic.name": dlq,
            "errors.deadletterqueue.topic.replication.factor": "1"}})
        .to_string(),
    )?;
    produce(stack, &topic, 0, 1000)?;
    let mut w = WorkerProcess::standalone(&worker, &[&sink], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while opensearch_count(stack, &index).await < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        opensearch_count(stack, &index).await,
        1000,
        "log:\n{}",
        w.log_text()
    );

    // OpenSearch goes away while records keep coming.
    stack_cmd(&["down", "opensearch"])?;
    produce(stack, &topic, 1000, 2000)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack_cmd(&["up", "opensearch"])?;
    produce(stack, &topic, 2000, 2500)?;
    // A document the index cannot take: `n` is a number in the mapping.
    let producer = stack.producer()?;
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(&topic)
                .partition(0)
                .payload(br#"{"n":"not a number"}"#.as_slice()),
        )
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;

    let deadline = Instant::now() + Duration::from_secs(120);
    while opensearch_count(stack, &index).await < 2500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead.is_empty() && Instant::now() < deadline {
        dead = stack
            .read_topic(&dlq, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = opensearch_count(stack, &index).await;
    let (_, status) = w.get_json("/connectors/es/status")?;
    w.terminate(Duration::from_secs(30))?;
    // Exactly the 2500 good records: ids are deterministic, so replays added nothing.
    assert_eq!(total, 2500, "status {status}; log:\n{}", w.log_text());
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].value.as_deref(),
        Some(br#"{"n":"not a number"}"#.as_slice())
    );
    let stage = dead[0]
        .headers
        .iter()
        .find(|(k, _)| k == "__connect.errors.stage")
        .and_then(|(_, v)| v.clone())
        .unwrap_or_default();
    assert_eq!(stage, b"TASK_PUT");
    Ok(())
}
