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
use sluice_engine::config::worker::{Mode, WorkerConfig};
use sluice_engine::herder::worker::Worker;
use sluice_engine::kafka::router::PartitionRouter;
use sluice_engine::registry::{Kind, Plugin};
use sluice_engine::storage::offsets::{ensure_compacted_topic, OffsetStore};
use sluice_engine::task::supervisor::{TargetState, TaskState, TaskStatus};
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

/// A connector of one task, made by `task`, whose `task_configs` takes `plan_delay`.
struct OneTask {
    task: fn() -> Box<dyn SourceTask>,
    plan_delay: Duration,
}

impl Connector for OneTask {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new()
    }

    fn task_configs(&self, config: &Props, _max: u32) -> Result<Vec<Props>, ConnectorError> {
        std::thread::sleep(self.plan_delay);
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for OneTask {
    fn task(&self) -> Box<dyn SourceTask> {
        (self.task)()
    }
}

/// A poll that finds nothing.
fn idle_poll<'a>() -> BoxFuture<'a, Result<Vec<SourceRecord>, ConnectorError>> {
    Box::pin(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Vec::new())
    })
}

/// When each slow task's `stop` began and ended.
static STOPS: std::sync::Mutex<Vec<(Instant, Instant)>> = std::sync::Mutex::new(Vec::new());

struct SlowStopTask;

impl SourceTask for SlowStopTask {
    fn start<'a>(
        &'a mut self,
        _config: &'a Props,
        _context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        idle_poll()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let began = Instant::now();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if let Ok(mut stops) = STOPS.lock() {
                stops.push((began, Instant::now()));
            }
        })
    }
}

fn slow_stop() -> Box<dyn SourceConnector> {
    Box::new(OneTask {
        task: || Box::new(SlowStopTask),
        plan_delay: Duration::ZERO,
    })
}

/// Shutdown stops connectors concurrently: every slow `stop` begins before any ends, so
/// shutting down takes one grace period, not one per connector.
#[actix::test]
async fn stop_all_stops_connectors_concurrently() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let plugin = Plugin {
        class: "test.SlowStop",
        aliases: &[],
        kind: Kind::Source(slow_stop),
    };
    for i in 0..4 {
        let name = format!("slow{i}");
        worker.create_connector_with(
            plugin,
            &props(&[("name", &name), ("connector.class", "test.SlowStop")]),
            TargetState::Started,
        )?;
        wait_for(&worker, &name, TaskState::Running, Duration::from_secs(30)).await?;
    }
    worker.stop_all(Duration::from_secs(30)).await;
    let stops = STOPS.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(stops.len(), 4, "{stops:?}");
    let last_begin = stops.iter().map(|s| s.0).max();
    let first_end = stops.iter().map(|s| s.1).min();
    assert!(
        last_begin < first_end,
        "one connector's stop waited for another's: {stops:?}"
    );
    Ok(())
}

/// Polls nothing, stops at once.
struct IdleTask;

impl SourceTask for IdleTask {
    fn start<'a>(
        &'a mut self,
        _config: &'a Props,
        _context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        idle_poll()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn slow_plan() -> Box<dyn SourceConnector> {
    Box::new(OneTask {
        task: || Box::new(IdleTask),
        // A connector asking its outside system how to split the work, synchronously.
        plan_delay: Duration::from_millis(1500),
    })
}

/// A connector's slow `task_configs` does not hold the thread that asked for the connector
/// (the REST worker's): other work on that thread keeps running meanwhile.
#[actix::test]
async fn a_slow_task_configs_does_not_block_the_calling_thread() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let plugin = Plugin {
        class: "test.SlowPlan",
        aliases: &[],
        kind: Kind::Source(slow_plan),
    };
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = Arc::clone(&ticks);
    // On this (single-threaded) runtime, like the REST handlers.
    let ticker = actix::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = ticks.load(Ordering::SeqCst);
    worker
        .create_connector_stored_with(
            plugin,
            &props(&[("name", "slowplan"), ("connector.class", "test.SlowPlan")]),
            TargetState::Started,
        )
        .await?;
    let during = ticks.load(Ordering::SeqCst) - before;
    ticker.abort();
    assert!(
        during >= 10,
        "the thread was held while task_configs ran: {during} ticks of 20 ms in 1.5 s"
    );
    worker.stop_all(Duration::from_secs(10)).await;
    Ok(())
}

/// Held by the one life of the exclusive task that runs (as a listening port is).
static HELD: AtomicBool = AtomicBool::new(false);

struct ExclusiveTask;

impl SourceTask for ExclusiveTask {
    fn start<'a>(
        &'a mut self,
        _config: &'a Props,
        _context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async {
            if HELD.swap(true, Ordering::SeqCst) {
                return Err(ConnectorError::external(
                    "resource busy: another life of this task holds it",
                ));
            }
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        idle_poll()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            // Releasing takes a while (closing connections, a last commit).
            tokio::time::sleep(Duration::from_millis(1000)).await;
            HELD.store(false, Ordering::SeqCst);
        })
    }
}

fn exclusive() -> Box<dyn SourceConnector> {
    Box::new(OneTask {
        task: || Box::new(ExclusiveTask),
        plan_delay: Duration::ZERO,
    })
}

/// A manual restart waits for the running life to end before the next starts: the next
/// life finds the resource free, and the restart is not a failure.
#[actix::test]
async fn a_manual_restart_waits_for_the_running_life_to_end() -> Result<()> {
    let stack = stack()?;
    let worker = worker(stack).await?;
    let plugin = Plugin {
        class: "test.Exclusive",
        aliases: &[],
        kind: Kind::Source(exclusive),
    };
    worker.create_connector_with(
        plugin,
        &props(&[("name", "exclusive"), ("connector.class", "test.Exclusive")]),
        TargetState::Started,
    )?;
    wait_for(
        &worker,
        "exclusive",
        TaskState::Running,
        Duration::from_secs(30),
    )
    .await?;
    // Let the first life get through its start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..2 {
        worker.restart_task("exclusive", 0).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let status = worker.task_statuses("exclusive").await?.remove(0);
        assert_eq!(status.state, TaskState::Running, "{status:?}");
        assert!(status.trace.is_none(), "{status:?}");
        assert_eq!(
            status.attempts, 0,
            "the restart counted as a failure: {status:?}"
        );
    }
    worker.stop_all(Duration::from_secs(10)).await;
    Ok(())
}
