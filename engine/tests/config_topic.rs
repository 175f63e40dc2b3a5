//! A REST-managed worker (a cluster of one) follows its config topic while it runs: a
//! connector config, a target state or a tombstone written to the topic by someone else
//! (here a plain Kafka producer writing Kafka Connect's record shapes, as another worker or
//! a tool would) reaches the running worker without a restart. Its own REST changes, which
//! come back through the topic too, are applied once.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{worker_properties, TempDir, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::{json, Value};
use sluice_testkit::{free_port, stack, unique_name, Stack};

/// Writes one record of Kafka Connect's config-topic shape and waits for it.
fn write(stack: &Stack, topic: &str, key: &str, value: Option<&Value>) -> Result<()> {
    let producer = stack.producer()?;
    let body = value.map(ToString::to_string);
    let mut record = BaseRecord::<str, str>::to(topic).key(key).partition(0);
    if let Some(body) = &body {
        record = record.payload(body.as_str());
    }
    producer.send(record).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Polls `path` until `check` holds on its JSON (or 30 s pass).
fn wait_for(w: &WorkerProcess, path: &str, check: impl Fn(u16, &Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = w.get_json(path)?;
        if check(status, &body) {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!(
                "{path} never matched; last answer {status}: {body}\nlog:\n{}",
                w.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_written_by_others_reach_the_running_worker() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("config-topic")?;
    let input = dir.write("input.txt", "a\nb\n")?;
    let out = stack.create_topic("config-topic-out", 1).await?;
    let port = free_port()?;
    let configs = unique_name("config-topic-configs");
    let extra = format!(
        "config.storage.topic={configs}\nconfig.storage.replication.factor=1\n\
         status.storage.topic={}\nstatus.storage.replication.factor=1\n",
        unique_name("config-topic-status")
    );
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("config-topic"),
            &unique_name("config-topic-offsets"),
            &extra,
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, port, dir.0.join("worker.log"))?;
    w.wait_ready(Duration::from_secs(60))?;

    // A connector created over REST comes back through the topic: applied once, not
    // restarted by its own echo.
    let create = json!({"name": "mine", "config": {
        "connector.class": "FileStreamSource", "file": input.display().to_string(),
        "topic": out, "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    let (status, body) = w.request("POST", "/connectors", Some(&create))?;
    assert_eq!(status, 201, "{body}");

    // Another writer creates a connector, paused.
    let config = json!({"properties": {
        "name": "theirs", "connector.class": "FileStreamSource",
        "file": input.display().to_string(), "topic": out,
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    write(stack, &configs, "connector-theirs", Some(&config))?;
    write(
        stack,
        &configs,
        "target-state-theirs",
        Some(&json!({"state": "PAUSED", "state.v2": "PAUSED"})),
    )?;
    wait_for(&w, "/connectors/theirs/status", |s, b| {
        s == 200 && b["connector"]["state"] == "PAUSED"
    })?;

    // Then changes its config: the running connector takes it.
    let mut changed = config;
    changed["properties"]["batch.size"] = json!("7");
    write(stack, &configs, "connector-theirs", Some(&changed))?;
    wait_for(&w, "/connectors/theirs/config", |s, b| {
        s == 200 && b["batch.size"] == "7"
    })?;

    // Resumes it, then deletes it with a tombstone.
    write(
        stack,
        &configs,
        "target-state-theirs",
        Some(&json!({"state": "STARTED", "state.v2": "STARTED"})),
    )?;
    wait_for(&w, "/connectors/theirs/status", |s, b| {
        s == 200 && b["connector"]["state"] == "RUNNING"
    })?;
    write(stack, &configs, "connector-theirs", None)?;
    wait_for(&w, "/connectors", |_, b| *b == json!(["mine"]))?;

    // A config that does not validate is listed (Kafka Connect lists every connector its
    // config topic holds) but runs nowhere; the worker says why and goes on.
    let bad = json!({"properties": {"name": "bad", "connector.class": "com.example.Nope"}});
    write(stack, &configs, "connector-bad", Some(&bad))?;
    wait_for(&w, "/connectors", |_, b| *b == json!(["bad", "mine"]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.log_text().contains("com.example.Nope") {
        assert!(
            Instant::now() < deadline,
            "the refusal of bad was not logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(&w, "/connectors/mine/status", |s, b| {
        s == 200 && b["connector"]["state"] == "RUNNING"
    })?;

    // In a cluster every change, the worker's own included, comes through the topic;
    // its own connector started once, not again on its echo.
    let log = w.log_text();
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connector changed in the config topic"))
        .collect();
    assert_eq!(
        log.matches("task started connector=mine ").count(),
        1,
        "mine was restarted by its own change: {changes:?}"
    );
    for action in ["created", "updated", "target", "deleted"] {
        assert!(
            changes
                .iter()
                .any(|l| l.contains("theirs") && l.contains(action)),
            "no {action} change logged: {changes:?}"
        );
    }
    assert!(
        log.contains("com.example.Nope"),
        "the bad config was not named"
    );
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}
