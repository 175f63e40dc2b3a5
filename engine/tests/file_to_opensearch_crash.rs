//! The whole path under SIGKILL with a replayable input: a file source (exactly-once into
//! Kafka) and the Elasticsearch sink run in one worker while lines keep being appended to the
//! file; the worker is killed at random moments and restarted. Afterwards OpenSearch holds
//! every line exactly once, each under the `_id` of the one Kafka record that carries it:
//! no document twice, none missing, none stale.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{opensearch_all, opensearch_count, worker_properties, Rng, TempDir, WorkerProcess};
use serde_json::json;
use sluice_testkit::{free_port, stack, unique_name, Isolation};

const LINES: u64 = 30_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_leaves_every_line_indexed_once() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("file-es-crash", 1).await?;
    let index = topic.to_lowercase();
    let dir = TempDir::new("file-es-crash")?;
    let input = dir.write("input.jsonl", "")?;
    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("file-es"),
            &unique_name("file-es-offsets"),
            "",
        ),
    )?;
    let source = dir.write(
        "source.properties",
        &format!(
            "name=lines\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\nbatch.size=200\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            input.display()
        ),
    )?;
    let sink = dir.write(
        "sink.json",
        &json!({"name": "es", "config": {
            "connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
            "topics": topic, "key.ignore": "true", "connection.url": stack.opensearch_url,
            "batch.size": "500",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})
        .to_string(),
    )?;

    // The input grows over ~45 s, so the kills below land while lines are still arriving.
    let appender = {
        let input = input.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().append(true).open(input)?;
            for chunk in (1..=LINES).collect::<Vec<_>>().chunks(100) {
                let text: String = chunk
                    .iter()
                    .map(|n| format!("{{\"n\":{n},\"text\":\"line {n}\"}}\n"))
                    .collect();
                file.write_all(text.as_bytes())?;
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(())
        })
    };

    let log = |name: &str| dir.0.join(name);
    let mut rng = Rng::from_env_or_clock();
    let mut indexed_at_kill = Vec::new();
    for round in 0..4 {
        let mut w = WorkerProcess::standalone(
            &worker,
            &[&source, &sink],
            port,
            log(&format!("run-{round}.log")),
        )?;
        w.wait_ready(Duration::from_secs(60))?;
        // Kill while the sink is writing: after its restarted task has indexed something new
        // (it first waits out the killed member's consumer-group session).
        let before = indexed_at_kill.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(40);
        while opensearch_count(stack, &index).await <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::thread::sleep(rng.millis(100, 1500));
        w.kill()?;
        let n = opensearch_count(stack, &index).await;
        eprintln!("round {round}: killed with {n} documents indexed");
        indexed_at_kill.push(n);
    }
    let appended = appender
        .join()
        .map_err(|_| anyhow::anyhow!("appender panicked"))?;
    appended?;
    assert!(
        indexed_at_kill.iter().filter(|n| **n < LINES).count() >= 3,
        "kills did not land mid-stream: {indexed_at_kill:?}"
    );

    let mut w = WorkerProcess::standalone(&worker, &[&source, &sink], port, log("final.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while opensearch_count(stack, &index).await < LINES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A moment more: a duplicate would show as a count past LINES.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let docs = opensearch_all(stack, &index, "n").await?;
    let (_, status) = w.get_json("/connectors/es/status")?;
    w.terminate(Duration::from_secs(30))?;

    // Kafka holds each line once (exactly-once source); map each line to its record's id.
    let records = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(60))?;
    let mut id_of: BTreeMap<u64, String> = BTreeMap::new();
    for r in &records {
        let value: serde_json::Value =
            serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        let n = value["n"].as_u64().unwrap_or_default();
        let previous = id_of.insert(n, format!("{topic}+{}+{}", r.partition, r.offset));
        assert!(previous.is_none(), "line {n} is in Kafka twice");
    }
    assert_eq!(id_of.len() as u64, LINES, "lines in Kafka");

    let numbers: Vec<u64> = docs
        .iter()
        .map(|(_, d)| d["n"].as_u64().unwrap_or(0))
        .collect();
    let expected: Vec<u64> = (1..=LINES).collect();
    if numbers != expected {
        let missing = expected.iter().filter(|n| !numbers.contains(n)).count();
        panic!(
            "{} documents for {LINES} lines ({missing} missing); sink {status}; log:\n{}",
            numbers.len(),
            w.log_text()
        );
    }
    for (id, doc) in &docs {
        let n = doc["n"].as_u64().unwrap_or_default();
        assert_eq!(Some(id), id_of.get(&n), "document {doc} under the wrong id");
    }
    Ok(())
}
