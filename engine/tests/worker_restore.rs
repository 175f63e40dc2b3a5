//! The REST-managed worker keeps connectors in `config.storage.topic`: a connector created,
//! paused, resumed or deleted over REST is found in that state after the worker is killed
//! (SIGKILL) and started again, and its records stay exactly-once across the restarts.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{
    assert_exactly_once_in_order, committed_lines, worker_properties, TempDir, WorkerProcess,
};
use serde_json::json;
use sluice_testkit::{free_port, stack, unique_name, Isolation};

const LINES: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn connectors_survive_a_killed_worker_in_their_target_state() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("restore", 1).await?;
    let dir = TempDir::new("restore")?;
    let body: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    let input = dir.write("input.txt", &body)?;
    let port = free_port()?;
    let configs = unique_name("restore-configs");
    let status_topic = unique_name("restore-status");
    let extra = format!(
        "config.storage.topic={configs}\nconfig.storage.replication.factor=1\n\
         status.storage.topic={status_topic}\nstatus.storage.replication.factor=1\n\
         status.storage.partitions=2\n"
    );
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("restore"),
            &unique_name("restore-offsets"),
            &extra,
        ),
    )?;
    let log = dir.0.join("worker.log");

    let mut w = WorkerProcess::distributed(&worker, port, log.clone())?;
    w.wait_ready(Duration::from_secs(60))?;
    let create = json!({"name": "numbers", "config": {
        "connector.class": "FileStreamSource", "file": input.display().to_string(), "topic": topic,
        "batch.size": "100", "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    let (status, body) = w.request("POST", "/connectors", Some(&create))?;
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = w.request("PUT", "/connectors/numbers/pause", None)?;
    assert_eq!(status, 202);
    std::thread::sleep(Duration::from_millis(500));
    w.kill()?;

    // Back after SIGKILL: the connector is there, still PAUSED.
    let mut w = WorkerProcess::distributed(&worker, port, log.clone())?;
    w.wait_ready(Duration::from_secs(60))?;
    let (_, names) = w.get_json("/connectors")?;
    assert_eq!(names, json!(["numbers"]));
    let (_, status) = w.get_json("/connectors/numbers/status")?;
    assert_eq!(status["connector"]["state"], "PAUSED", "{status}");
    let paused_at = committed_lines(stack, &topic)?.len();
    assert!(
        paused_at < LINES,
        "the input was done before the pause; nothing was exercised"
    );

    let (status, _) = w.request("PUT", "/connectors/numbers/resume", None)?;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = committed_lines(stack, &topic)?;
    while lines.len() < LINES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        lines = committed_lines(stack, &topic)?;
    }
    assert_exactly_once_in_order(&lines, LINES);

    // The config topic holds Kafka Connect's record shapes.
    let records = stack.read_topic(&configs, Isolation::ReadCommitted, Duration::from_secs(30))?;
    let keys: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert!(keys.iter().any(|k| k == "connector-numbers"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "task-numbers-0"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "commit-numbers"), "{keys:?}");
    assert!(keys.iter().any(|k| k == "target-state-numbers"), "{keys:?}");
    let connector = records
        .iter()
        .find(|r| r.key.as_deref() == Some(b"connector-numbers".as_slice()))
        .and_then(|r| r.value.as_deref())
        .map(serde_json::from_slice::<serde_json::Value>)
        .transpose()?;
    assert_eq!(
        connector.as_ref().map(|c| &c["properties"]["topic"]),
        Some(&json!(topic))
    );

    // The status topic holds Kafka Connect's status records.
    let statuses = stack.read_topic(
        &status_topic,
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    )?;
    let task_states: Vec<String> = statuses
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"status-task-numbers-0".as_slice()))
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
        .map(|v| {
            assert_eq!(v["worker_id"], json!(format!("127.0.0.1:{port}")), "{v}");
            v["state"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(
        task_states.iter().any(|s| s == "RUNNING"),
        "{task_states:?}"
    );
    assert!(task_states.iter().any(|s| s == "PAUSED"), "{task_states:?}");
    assert!(
        statuses
            .iter()
            .any(|r| r.key.as_deref() == Some(b"status-connector-numbers".as_slice())),
        "no connector status record"
    );

    // Deleted stays deleted.
    let (status, _) = w.request("DELETE", "/connectors/numbers", None)?;
    assert_eq!(status, 204);
    w.kill()?;
    let mut w = WorkerProcess::distributed(&worker, port, log)?;
    w.wait_ready(Duration::from_secs(60))?;
    let (_, names) = w.get_json("/connectors")?;
    assert_eq!(names, json!([]));
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}
