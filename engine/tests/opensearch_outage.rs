//! An OpenSearch outage seen from the status API, with the sink's default retry settings:
//! while OpenSearch is down the task stays RUNNING and says that it is retrying (a trace
//! and `sluice_task_retrying` = 1); once OpenSearch is back and a put succeeded, the note
//! and the gauge clear, and every record is in the index exactly once. Restarting
//! OpenSearch disturbs other tests, so this binary holds this one test; run it alone.
//!
//! The time from OpenSearch answering again to the first document written after it is
//! printed, not asserted (the machine is noisy); the bound it depends on, the backoff cap,
//! is asserted by unit tests of the schedules.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{opensearch_all, opensearch_count, worker_properties, TempDir, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::json;
use sluice_testkit::{free_port, http_get, stack, stack_script, unique_name, Stack};

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
        let value = json!({"n": i}).to_string();
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes());
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Whether OpenSearch answers its cluster health.
async fn opensearch_answers(stack: &Stack) -> bool {
    let Ok(client) = stack.opensearch() else {
        return false;
    };
    client
        .cluster()
        .health(elasticsearch::cluster::ClusterHealthParts::None)
        .send()
        .await
        .is_ok_and(|r| r.status_code().is_success())
}

/// The value of `sluice_task_retrying` for the connector's task 0, if exported.
fn retrying_gauge(port: u16, connector: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics").ok()?;
    text.lines()
        .filter(|l| l.starts_with("sluice_task_retrying{"))
        .filter(|l| l.contains(&format!("connector=\"{connector}\"")) && l.contains("task=\"0\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retrying_task_says_so_until_opensearch_is_back() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("es-outage", 2).await?;
    let index = topic.to_lowercase();
    let name = unique_name("es-outage");
    let dir = TempDir::new("es-outage")?;
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
    // Default retry settings: max.retries, retry.backoff.ms and errors.retry.* unset.
    let sink = dir.write(
        "es.json",
        &json!({"name": name, "config": {
            "connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
            "topics": topic, "key.ignore": "true", "connection.url": stack.opensearch_url,
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})
        .to_string(),
    )?;
    produce(stack, &topic, 0, 500)?;
    let mut w = WorkerProcess::standalone(&worker, &[&sink], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let status_path = format!("/connectors/{name}/status");
    let deadline = Instant::now() + Duration::from_secs(60);
    while opensearch_count(stack, &index).await < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        opensearch_count(stack, &index).await,
        500,
        "log:\n{}",
        w.log_text()
    );
    let (_, healthy) = w.get_json(&status_path)?;
    assert_eq!(healthy["tasks"][0]["state"], "RUNNING", "{healthy}");
    assert!(healthy["tasks"][0].get("trace").is_none(), "{healthy}");

    // OpenSearch goes away for long enough that an uncapped backoff would grow past 30 s.
    let down_at = Instant::now();
    stack_cmd(&["down", "opensearch"])?;
    produce(stack, &topic, 500, 1000)?;
    let mut retrying_status = None;
    let mut gauge_while_down = None;
    let mut back_at = None;
    while down_at.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Another test of the stack may start it again meanwhile; the measurement then
        // starts there.
        if opensearch_answers(stack).await {
            eprintln!("OpenSearch was started again by someone else");
            back_at = Some(Instant::now());
            break;
        }
        let (_, status) = w.get_json(&status_path)?;
        let task = &status["tasks"][0];
        if task["state"] == "RUNNING"
            && task["trace"]
                .as_str()
                .is_some_and(|t| t.starts_with("retrying: "))
        {
            gauge_while_down = gauge_while_down.or(retrying_gauge(port, &name));
            retrying_status.get_or_insert(status);
        }
    }
    stack_cmd(&["up", "opensearch"])?;
    let back_at = back_at.unwrap_or_else(Instant::now);
    let deadline = back_at + Duration::from_secs(120);
    let mut first_write = None;
    while Instant::now() < deadline {
        let count = opensearch_count(stack, &index).await;
        if count > 500 && first_write.is_none() {
            first_write = Some(back_at.elapsed());
        }
        if count >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "OpenSearch down for {:?} (until it answered again); first document written {:?} after it was back",
        back_at.duration_since(down_at),
        first_write
    );
    // The note clears once a put succeeded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = w.get_json(&status_path)?.1;
    while recovered["tasks"][0].get("trace").is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        recovered = w.get_json(&status_path)?.1;
    }
    let gauge_after = retrying_gauge(port, &name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let docs = opensearch_all(stack, &index, "n").await?;
    w.terminate(Duration::from_secs(30))?;
    let log = w.log_text();
    for line in log
        .lines()
        .filter(|l| l.contains("retriable put failure") || l.contains("recovered"))
    {
        eprintln!("{line}");
    }

    let Some(retrying_status) = retrying_status else {
        panic!(
            "while OpenSearch was down the status never said the task was retrying; log:\n{log}"
        );
    };
    eprintln!("status while down: {retrying_status}");
    assert_eq!(
        gauge_while_down,
        Some(1.0),
        "sluice_task_retrying while down"
    );
    assert_eq!(recovered["tasks"][0]["state"], "RUNNING", "{recovered}");
    assert!(
        recovered["tasks"][0].get("trace").is_none(),
        "the retrying note stayed after recovery: {recovered}"
    );
    assert_eq!(
        gauge_after,
        Some(0.0),
        "sluice_task_retrying after recovery"
    );
    // Every record once: ids are topic+partition+offset, so replays added nothing.
    let ns: Vec<u64> = docs.iter().filter_map(|(_, d)| d["n"].as_u64()).collect();
    assert_eq!(ns, (0..1000).collect::<Vec<u64>>(), "log:\n{log}");
    assert!(
        log.contains(&name) && log.contains("task=0"),
        "log lines name connector and task"
    );
    Ok(())
}
