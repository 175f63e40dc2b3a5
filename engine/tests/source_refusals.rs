//! Records the broker (or the client) refuses, on the exactly-once source path: one
//! future-dated record (past the topic's `message.timestamp.after.max.ms`) and one larger
//! than `message.max.bytes`, among good ones. They must not take the batch or the task
//! down: with `errors.tolerance=all` they go to the dead-letter queue and the others are
//! committed once, without a restart; with `none` the task fails naming the record.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use sluice_engine::herder::worker::Worker;
use sluice_engine::registry::{Kind, Plugin};
use sluice_engine::task::supervisor::{TargetState, TaskState, TaskStatus};
use sluice_proto::{
    BoxFuture, ConfigDef, ConfigKey, ConfigType, Connector, ConnectorError, Props, SourceConnector,
    SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext, Value,
};
use sluice_testkit::{stack, unique_name, Isolation};

const RECORDS: i64 = 6;

struct Poison;

impl Connector for Poison {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new().define(ConfigKey::new("topic", ConfigType::String))
    }

    fn task_configs(&self, config: &Props, _max: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for Poison {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(PoisonTask::default())
    }
}

/// Emits records 1..=6 once (resuming after its committed offset): 3 is dated two hours
/// ahead, 5 holds 1.5 MB.
#[derive(Default)]
struct PoisonTask {
    topic: String,
    next: i64,
}

fn partition() -> SourcePartition {
    SourcePartition::single("source", "poison")
}

impl SourceTask for PoisonTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        self.topic = config.get("topic").cloned().unwrap_or_default();
        self.next = context
            .offset(&partition())
            .and_then(|o| o.0.get("i").and_then(serde_json::Value::as_i64))
            .map_or(1, |i| i + 1);
        Box::pin(async { Ok(()) })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            if self.next > RECORDS {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(Vec::new());
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let mut batch = Vec::new();
            while self.next <= RECORDS {
                let i = self.next;
                let value = if i == 5 {
                    "x".repeat(1_500_000)
                } else {
                    i.to_string()
                };
                let mut r = SourceRecord::new(
                    partition(),
                    SourceOffset::single("i", i),
                    self.topic.clone(),
                    Value::String(value),
                );
                r.timestamp = Some(if i == 3 { now + 2 * 3_600_000 } else { now });
                batch.push(r);
                self.next += 1;
            }
            Ok(batch)
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn poison() -> Box<dyn SourceConnector> {
    Box::new(Poison)
}

const POISON: Plugin = Plugin {
    class: "test.Poison",
    aliases: &[],
    kind: Kind::Source(poison),
};

async fn wait_for(
    worker: &Worker,
    name: &str,
    done: impl Fn(&TaskStatus) -> bool,
) -> Result<TaskStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = worker.task_statuses(name).await?.remove(0);
        if done(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("{name}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix::test]
async fn refused_records_go_to_the_dead_letter_queue_and_the_rest_commits_once() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let stack = stack()?;
    let worker = common::in_process_worker(
        stack,
        "refusals",
        &[
            ("exactly.once.source.support", "enabled"),
            ("task.restart.max.attempts", "0"),
        ],
    )
    .await?;
    let topic = stack.create_topic("refusals", 1).await?;
    let dlq = unique_name("refusals-dlq");
    worker.create_connector_with(
        POISON,
        &common::props(&[
            ("name", "tolerant"),
            ("connector.class", "test.Poison"),
            ("topic", &topic),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", &dlq),
            ("errors.deadletterqueue.topic.replication.factor", "1"),
        ]),
        TargetState::Started,
    )?;
    let strict_topic = stack.create_topic("refusals-strict", 1).await?;
    worker.create_connector_with(
        POISON,
        &common::props(&[
            ("name", "strict"),
            ("connector.class", "test.Poison"),
            ("topic", &strict_topic),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
        ]),
        TargetState::Started,
    )?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && common::committed_lines(stack, &topic)?.len() < 4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A moment more: nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = common::committed_lines(stack, &topic)?;
    assert_eq!(lines, ["1", "2", "4", "6"], "the good records, once each");
    let dead = stack.read_topic(&dlq, Isolation::ReadCommitted, Duration::from_secs(10))?;
    let header = |r: &sluice_testkit::Consumed, key: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(dead.len(), 2, "{dead:?}");
    let offsets: Vec<String> = dead
        .iter()
        .map(|r| header(r, "__connect.errors.source.offset"))
        .collect();
    assert_eq!(offsets, [r#"{"i":3}"#, r#"{"i":5}"#]);
    for r in &dead {
        assert_eq!(header(r, "__connect.errors.stage"), "KAFKA_PRODUCE");
        assert!(!header(r, "__connect.errors.exception.message").is_empty());
    }
    let tolerant = worker.task_statuses("tolerant").await?.remove(0);
    assert_eq!(tolerant.state, TaskState::Running, "{tolerant:?}");
    assert_eq!(tolerant.attempts, 0, "the task restarted: {tolerant:?}");

    let strict = wait_for(&worker, "strict", |s| s.state == TaskState::Failed).await?;
    let trace = strict.trace.unwrap_or_default();
    assert!(
        trace.contains(r#"{"i":3}"#) && trace.contains("refused"),
        "the failure names the record: {trace}"
    );
    assert!(
        common::committed_lines(stack, &strict_topic)?.is_empty(),
        "nothing of the refused transaction is committed"
    );
    worker.stop_all(Duration::from_secs(10)).await;
    Ok(())
}
