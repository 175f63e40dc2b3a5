//! Backpressure on the sink path, in-process against the real broker: a sink whose `put`
//! takes longer than the consumer's `max.poll.interval.ms` does not drop out of the group.
//! The poll thread pauses the partitions and keeps polling, so there is no rebalance
//! (`open` is called once), and every record arrives once, in order.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{in_process_worker, props};
use rdkafka::producer::{BaseRecord, Producer as _};
use sluice_engine::registry::{Kind, Plugin};
use sluice_engine::task::supervisor::TargetState;
use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, Props, SinkConnector, SinkRecord, SinkTask,
    TopicPartition, Value,
};
use sluice_testkit::stack;

static OPENED: AtomicUsize = AtomicUsize::new(0);
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Slow;

impl Connector for Slow {
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new()
    }

    fn task_configs(&self, config: &Props, _max: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok(vec![config.clone()])
    }
}

impl SinkConnector for Slow {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(SlowTask { puts: 0 })
    }
}

/// The third `put` takes 9 s, past the consumer's 7 s `max.poll.interval.ms`.
struct SlowTask {
    puts: usize,
}

impl SinkTask for SlowTask {
    fn start<'a>(&'a mut self, _config: &'a Props) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }

    fn open<'a>(
        &'a mut self,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        OPENED.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(BTreeMap::new()) })
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            self.puts += 1;
            if self.puts == 3 {
                tokio::time::sleep(Duration::from_secs(9)).await;
            }
            if let Ok(mut seen) = SEEN.lock() {
                seen.extend(records.into_iter().map(|r| match r.value {
                    Value::String(s) => s,
                    other => format!("{other:?}"),
                }));
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

fn slow() -> Box<dyn SinkConnector> {
    Box::new(Slow)
}

const SLOW: Plugin = Plugin {
    class: "test.Slow",
    aliases: &[],
    kind: Kind::Sink(slow),
};

#[actix::test]
async fn a_sink_slower_than_max_poll_interval_stays_in_its_group() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("slow-sink", 1).await?;
    let producer = stack.producer()?;
    for i in 0..2000 {
        let value = i.to_string();
        producer
            .send(BaseRecord::<[u8], [u8]>::to(&topic).payload(value.as_bytes()))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let worker = in_process_worker(stack, "slow", &[("offset.flush.interval.ms", "500")]).await?;
    worker.create_connector_with(
        SLOW,
        &props(&[
            ("name", "slow"),
            ("connector.class", "test.Slow"),
            ("topics", &topic),
            (
                "value.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
            // Small batches fill the task's queue; a short poll interval makes the 9 s put
            // fatal for a consumer that stops polling.
            ("consumer.override.max.poll.records", "50"),
            ("consumer.override.session.timeout.ms", "6000"),
            ("consumer.override.max.poll.interval.ms", "7000"),
        ]),
        TargetState::Started,
    )?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while SEEN.lock().map_or(0, |s| s.len()) < 2000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Time for a late rebalance (and its re-delivery) to show, if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.stop_all(Duration::from_secs(30)).await;

    let seen = SEEN.lock().map(|s| s.clone()).unwrap_or_default();
    let expected: Vec<String> = (0..2000).map(|i: i32| i.to_string()).collect();
    assert_eq!(seen.len(), 2000, "records delivered (duplicates or losses)");
    assert!(seen == expected, "records out of order");
    assert_eq!(
        OPENED.load(Ordering::SeqCst),
        1,
        "partitions were assigned more than once: the member left its group"
    );
    Ok(())
}
