//! A sink that keeps its offsets in its own store (as the Elasticsearch and PostgreSQL sinks
//! will) returns them from `open`, and the runtime starts each partition there, whatever the
//! consumer group has committed: in-process against the real broker.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{in_process_worker, props};
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_engine::registry::{Kind, Plugin};
use sluice_engine::task::supervisor::TargetState;
use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, Props, SinkConnector, SinkRecord, SinkTask,
    TopicPartition,
};
use sluice_testkit::stack;

/// What the sink received: (partition, offset).
static SEEN: Mutex<Vec<(i32, i64)>> = Mutex::new(Vec::new());

/// Where the sink's "own store" says each partition resumes.
fn stored(partition: i32) -> Option<i64> {
    match partition {
        0 => Some(150),
        1 => Some(0),
        _ => None, // no entry: the group's offset (none yet: earliest)
    }
}

struct Owned;

impl Connector for Owned {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new()
    }

    fn task_configs(&self, config: &Props, _max: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok(vec![config.clone()])
    }
}

impl SinkConnector for Owned {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(OwnedTask)
    }
}

struct OwnedTask;

impl SinkTask for OwnedTask {
    fn start<'a>(&'a mut self, _config: &'a Props) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    fn open<'a>(
        &'a mut self,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        Box::pin(async move {
            Ok(partitions
                .iter()
                .filter_map(|tp| Some((tp.clone(), stored(tp.partition)?)))
                .collect())
        })
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            if let Ok(mut seen) = SEEN.lock() {
                seen.extend(records.iter().map(|r| (r.partition, r.offset)));
            }
            Ok(())
        })
    }

    fn pre_commit<'a>(
        &'a mut self,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        Box::pin(async move { Ok(offsets.clone()) })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn owned() -> Box<dyn SinkConnector> {
    Box::new(Owned)
}

const OWNED: Plugin = Plugin {
    class: "test.Owned",
    aliases: &[],
    kind: Kind::Sink(owned),
};

#[actix::test]
async fn partitions_start_where_the_sinks_own_store_says() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("owned-offsets", 3).await?;
    let producer = stack.producer()?;
    for p in 0..3 {
        for i in 0..200 {
            let value = i.to_string();
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(&topic)
                        .partition(p)
                        .payload(value.as_bytes()),
                )
                .map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;

    let worker = in_process_worker(stack, "owned", &[]).await?;
    worker.create_connector_with(
        OWNED,
        &props(&[
            ("name", "owned"),
            ("connector.class", "test.Owned"),
            ("topics", &topic),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
        ]),
        TargetState::Started,
    )?;
    // 50 from partition 0 (150..200), 200 from partition 1, 200 from partition 2.
    let deadline = Instant::now() + Duration::from_secs(60);
    while SEEN.lock().map_or(0, |s| s.len()) < 450 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop_all(Duration::from_secs(30)).await;

    let seen = SEEN.lock().map(|s| s.clone()).unwrap_or_default();
    for p in 0..3 {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        let from = stored(p).unwrap_or(0);
        let expected: Vec<i64> = (from..200).collect();
        assert_eq!(offsets, expected, "partition {p}");
    }
    Ok(())
}
