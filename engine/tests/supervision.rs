//! Supervision, in-process against the real broker: a task that panics and one that
//! returns errors are restarted with backoff, then FAILED with their trace; a restart by
//! hand revives them; a task that blocks its thread forever stalls nobody else; another
//! connector keeps flowing all along.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor as _;
use anyhow::{bail, Result};
use common::{committed_lines, TempDir};
use sluice_engine::offset_store::{ensure_compacted_topic, OffsetStore};
use sluice_engine::registry::{Kind, Plugin};
use sluice_engine::router::PartitionRouter;
use sluice_engine::supervisor::{TargetState, TaskState, TaskStatus};
use sluice_engine::worker::Worker;
use sluice_engine::worker_config::{Mode, WorkerConfig};
use sluice_proto::{
    BoxFuture, ConfigDef, ConfigKey, ConfigType, Connector, ConnectorError, Props, SourceConnector,
    SourceRecord, SourceTask, SourceTaskContext,
};
use sluice_testkit::{stack, unique_name, Stack};

/// Once set, faulty tasks behave (the "fix" an operator deploys before restarting).
static HEALED: AtomicBool = AtomicBool::new(false);

struct Faulty;

impl Connector for Faulty {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new().define(ConfigKey::new("mode", ConfigType::String))
    }

    fn task_configs(&self, config: &Props, _max: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for Faulty {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(FaultyTask(String::new()))
    }
}

struct FaultyTask(String);

impl SourceTask for FaultyTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        _context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        self.0 = config.get("mode").cloned().unwrap_or_default();
        Box::pin(async { Ok(()) })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            if HEALED.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(Vec::new());
            }
            match self.0.as_str() {
                "panic" => panic!("injected panic in poll"),
                // Blocks its thread for good, as a connector stuck in a blocking call would.
                "hang" => {
                    std::thread::sleep(Duration::from_secs(3600));
                    Ok(Vec::new())
                }
                _ => Err(ConnectorError::external(
                    "injected failure: upstream unreachable",
                )),
            }
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn faulty() -> Box<dyn SourceConnector> {
    Box::new(Faulty)
}

const FAULTY: Plugin = Plugin {
    class: "test.Faulty",
    aliases: &[],
    kind: Kind::Source(faulty),
};

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn worker(stack: &Stack) -> Result<Worker> {
    let offsets_topic = unique_name("supervision-offsets");
    let config = WorkerConfig::parse(
        &props(&[
            ("bootstrap.servers", &stack.kafka_bootstrap),
            ("group.id", &unique_name("supervision")),
            ("offset.storage.topic", &offsets_topic),
            ("exactly.once.source.support", "enabled"),
            ("task.restart.max.attempts", "3"),
            ("task.restart.backoff.initial.ms", "50"),
            ("task.restart.backoff.max.ms", "200"),
            ("producer.broker.address.family", "v4"),
            ("consumer.broker.address.family", "v4"),
            ("admin.broker.address.family", "v4"),
        ]),
        Mode::Standalone,
    )?;
    let config = Arc::new(config);
    ensure_compacted_topic(&config.kafka_client_props("admin."), &offsets_topic, 1, 1).await?;
    let offsets = OffsetStore::new(offsets_topic, 1, config.kafka_client_props("consumer."));
    let router = PartitionRouter::new(config.kafka_client_props("producer.")).start();
    Ok(Worker::new(config, router, offsets))
}

async fn wait_for(
    worker: &Worker,
    name: &str,
    want: TaskState,
    timeout: Duration,
) -> Result<TaskStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = worker.task_statuses(name).await?.remove(0);
        if status.state == want {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: still {:?} after {timeout:?}, not {want:?} ({status:?})",
                status.state
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix::test]
async fn failing_tasks_restart_with_backoff_then_fail_and_others_keep_flowing() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;

    let dir = TempDir::new("supervision")?;
    let lines = 3000;
    let body: String = (1..=lines).map(|i| format!("{i}\n")).collect();
    let input = dir.write("input.txt", &body)?;
    let topic = stack.create_topic("flowing", 1).await?;
    worker.create_connector(
        &props(&[
            ("name", "flowing"),
            ("connector.class", "FileStreamSource"),
            ("file", &input.display().to_string()),
            ("topic", &topic),
            ("batch.size", "100"),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
        ]),
        TargetState::Started,
    )?;
    worker.create_connector_with(
        FAULTY,
        &props(&[
            ("name", "panicky"),
            ("connector.class", "test.Faulty"),
            ("mode", "panic"),
        ]),
        TargetState::Started,
    )?;
    worker.create_connector_with(
        FAULTY,
        &props(&[
            ("name", "erroring"),
            ("connector.class", "test.Faulty"),
            ("mode", "error"),
        ]),
        TargetState::Started,
    )?;

    worker.create_connector_with(
        FAULTY,
        &props(&[
            ("name", "hung"),
            ("connector.class", "test.Faulty"),
            ("mode", "hang"),
        ]),
        TargetState::Started,
    )?;

    let panicky = wait_for(
        &worker,
        "panicky",
        TaskState::Failed,
        Duration::from_secs(60),
    )
    .await?;
    let trace = panicky.trace.unwrap_or_default();
    assert!(
        trace.contains("task panicked: injected panic in poll"),
        "{trace}"
    );
    // The limit is 3 restarts: 4 failures in all.
    assert_eq!(panicky.attempts, 4);
    let erroring = wait_for(
        &worker,
        "erroring",
        TaskState::Failed,
        Duration::from_secs(60),
    )
    .await?;
    let trace = erroring.trace.unwrap_or_default();
    assert!(
        trace.contains("injected failure: upstream unreachable"),
        "{trace}"
    );
    assert_eq!(erroring.attempts, 4);

    // A connector blocking its thread does not block its supervisor or anyone else.
    let asked = Instant::now();
    let hung = worker.task_statuses("hung").await?;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "status of a hung connector took {:?}",
        asked.elapsed()
    );
    assert_eq!(hung[0].state, TaskState::Running);

    // The healthy connector was not disturbed.
    wait_for(
        &worker,
        "flowing",
        TaskState::Running,
        Duration::from_secs(5),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = committed_lines(stack, &topic)?;
    while seen.len() < lines && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = committed_lines(stack, &topic)?;
    }
    common::assert_exactly_once_in_order(&seen, lines);

    // A restart by hand, after the fix, revives them.
    HEALED.store(true, Ordering::SeqCst);
    worker.restart_task("panicky", 0).await?;
    worker.restart_task("erroring", 0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["panicky", "erroring"] {
        let status = worker.task_statuses(name).await?.remove(0);
        assert_eq!(status.state, TaskState::Running, "{name}: {status:?}");
        assert!(status.trace.is_none());
        assert_eq!(status.attempts, 0);
    }
    assert!(
        worker.restart_task("panicky", 7).await.is_err(),
        "no task 7"
    );
    // The hung task cannot stop; stop_all gives up on it after its timeout.
    worker.stop_all(Duration::from_secs(3)).await;
    Ok(())
}
