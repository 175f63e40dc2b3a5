//! Every worker's statuses, as the status topic holds them: a worker of a cluster answers
//! `GET /connectors/{c}/status` for tasks running anywhere, with the worker each runs on,
//! and `GET /connectors/{c}/topics` for topics used anywhere, as Kafka Connect's
//! `KafkaStatusBackingStore` does. A thread follows the topic (all
//! partitions, from the beginning) and keeps the latest record per key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::kafka::client_config;

/// One status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: String,
    pub trace: Option<String>,
    pub worker_id: String,
    pub generation: u64,
}

/// What the status topic says, as far as it has been read.
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    connectors: Arc<Mutex<BTreeMap<String, Status>>>,
    tasks: Arc<Mutex<BTreeMap<(String, u32), Status>>>,
    /// KIP-558's active topics: record key -> (connector, topic). Keyed by the record key,
    /// so a tombstone (a reset) finds what it erases.
    topics: Arc<Mutex<BTreeMap<String, (String, String)>>>,
    /// How many topic records of each connector were erased (resets, deletes): a worker
    /// that sees the count grow forgets what it had recorded.
    erased: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// A topic record's value: `{"topic": {"name", "connector", "task", "discoverTimestamp"}}`.
fn parse_topic(value: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let t = v.get("topic")?;
    Some((
        t.get("connector")?.as_str()?.to_owned(),
        t.get("name")?.as_str()?.to_owned(),
    ))
}

/// Parses a record; `None` for a tombstone or a value that is not a status.
fn parse(value: Option<&[u8]>) -> Option<Status> {
    let v: Value = serde_json::from_slice(value?).ok()?;
    Some(Status {
        state: v.get("state")?.as_str()?.to_owned(),
        trace: v.get("trace").and_then(Value::as_str).map(str::to_owned),
        worker_id: v
            .get("worker_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        generation: v.get("generation").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Stores `status` under `key`: the latest record wins, as in Kafka Connect's reader. A
/// late record of a worker that lost the work is kept out by the writer's check instead
/// (see [`crate::storage::status::WriteGuard`]): generations are not compared here,
/// since they start again at 1 when the broker forgets an idle group, and the old life's
/// records would then outrank the new one's for good. A tombstone removes the key.
fn keep<K: Ord>(map: &mut BTreeMap<K, Status>, key: K, status: Option<Status>) {
    match status {
        Some(s) => {
            map.insert(key, s);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// `status-task-<connector>-<n>`: the task number is after the last dash (connector names
/// may hold dashes).
fn task_key(rest: &str) -> Option<(String, u32)> {
    let (name, task) = rest.rsplit_once('-')?;
    Some((name.to_owned(), task.parse().ok()?))
}

impl StatusView {
    /// Applies one record of the topic.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        let status = parse(value);
        if let Some(name) = key.strip_prefix("status-connector-") {
            if let Ok(mut map) = self.connectors.lock() {
                keep(&mut map, name.to_owned(), status);
            }
        } else if let Some((name, task)) = key.strip_prefix("status-task-").and_then(task_key) {
            if let Ok(mut map) = self.tasks.lock() {
                keep(&mut map, (name, task), status);
            }
        } else if key.starts_with("status-topic-") {
            if let Ok(mut map) = self.topics.lock() {
                match value {
                    Some(v) => {
                        if let Some(found) = parse_topic(v) {
                            map.insert(key.into_owned(), found);
                        }
                    }
                    None => {
                        let connector = map
                            .remove(key.as_ref())
                            .map(|(c, _)| c)
                            .or_else(|| key.rsplit_once(":connector-").map(|(_, c)| c.to_owned()));
                        if let (Some(c), Ok(mut erased)) = (connector, self.erased.lock()) {
                            *erased.entry(c).or_default() += 1;
                        }
                    }
                }
            }
        }
    }

    /// How many of `connector`'s topic records were erased so far.
    pub fn topics_erased(&self, connector: &str) -> u64 {
        self.erased
            .lock()
            .map_or(0, |e| e.get(connector).copied().unwrap_or(0))
    }

    /// The topics connector `connector` has used since its last reset (KIP-558), as
    /// recorded by the workers its tasks ran on.
    pub fn topics(&self, connector: &str) -> std::collections::BTreeSet<String> {
        self.topics.lock().map_or_else(
            |_| std::collections::BTreeSet::new(),
            |map| {
                map.values()
                    .filter(|(c, _)| c == connector)
                    .map(|(_, t)| t.clone())
                    .collect()
            },
        )
    }

    /// A task's latest status.
    pub fn task(&self, connector: &str, task: u32) -> Option<Status> {
        self.tasks
            .lock()
            .ok()?
            .get(&(connector.to_owned(), task))
            .cloned()
    }

    /// The latest status under a record key (`status-connector-<c>`, `status-task-<c>-<n>`).
    pub fn by_key(&self, key: &str) -> Option<Status> {
        if let Some(name) = key.strip_prefix("status-connector-") {
            self.connector(name)
        } else {
            let (name, task) = key.strip_prefix("status-task-").and_then(task_key)?;
            self.task(&name, task)
        }
    }

    /// A connector's latest status.
    pub fn connector(&self, connector: &str) -> Option<Status> {
        self.connectors.lock().ok()?.get(connector).cloned()
    }

    /// Follows `topic` on a thread of its own for as long as the process runs.
    pub fn follow(
        topic: &str,
        consumer_props: &BTreeMap<String, String>,
    ) -> Result<StatusView, String> {
        let mut props = consumer_props.clone();
        props.insert("group.id".into(), "sluice-status-follower".into());
        props.insert("enable.auto.commit".into(), "false".into());
        let consumer: BaseConsumer = client_config(&props).create().map_err(|e| {
            format!(
                "status topic reader: {}",
                sluice_proto::config::redact(&e.to_string(), &props)
            )
        })?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| format!("status topic {topic}: {e}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or_default();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).map_err(|e| e.to_string())?;
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&assignment).map_err(|e| e.to_string())?;
        let view = StatusView::default();
        let mine = view.clone();
        let topic = topic.to_owned();
        std::thread::Builder::new()
            .name("sluice-status-follower".into())
            .spawn(move || loop {
                match consumer.poll(Duration::from_millis(500)) {
                    None => {}
                    Some(Ok(m)) => {
                        if let Some(key) = m.key() {
                            mine.apply(key, m.payload());
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %topic, error = %e, "reading the status topic failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map_err(|e| format!("status topic reader thread: {e}"))?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_by_key_and_tombstones_remove_them() {
        let view = StatusView::default();
        let v = br#"{"state":"RUNNING","trace":null,"worker_id":"h:1","generation":3}"#;
        view.apply(b"status-task-my-conn-12", Some(v));
        view.apply(b"status-connector-my-conn", Some(v));
        let t = view.task("my-conn", 12);
        assert_eq!(t.as_ref().map(|s| s.worker_id.as_str()), Some("h:1"));
        assert_eq!(t.map(|s| s.generation), Some(3));
        assert!(view.connector("my-conn").is_some());
        view.apply(b"status-task-my-conn-12", None);
        assert_eq!(view.task("my-conn", 12), None);
        // The latest record wins, whatever its generation: a group the broker forgot
        // starts again at generation 1, below its old life's records.
        view.apply(
            b"status-task-c-0",
            Some(br#"{"state":"UNASSIGNED","worker_id":"old","generation":8}"#),
        );
        view.apply(
            b"status-task-c-0",
            Some(br#"{"state":"RUNNING","worker_id":"new","generation":1}"#),
        );
        assert_eq!(
            view.by_key("status-task-c-0")
                .map(|s| (s.state, s.worker_id)),
            Some(("RUNNING".to_owned(), "new".to_owned()))
        );
        view.apply(
            b"status-connector-a-b",
            Some(br#"{"state":"PAUSED","worker_id":"w","generation":2}"#),
        );
        assert_eq!(
            view.by_key("status-connector-a-b").map(|s| s.state),
            Some("PAUSED".to_owned())
        );
        // Active topics, by connector, until a tombstone erases one.
        let topic = |name: &str, connector: &str| {
            format!(
                r#"{{"topic":{{"name":"{name}","connector":"{connector}","task":0,"discoverTimestamp":1}}}}"#
            )
        };
        view.apply(
            b"status-topic-a:connector-my-conn",
            Some(topic("a", "my-conn").as_bytes()),
        );
        view.apply(
            b"status-topic-b-c:connector-my-conn",
            Some(topic("b-c", "my-conn").as_bytes()),
        );
        view.apply(
            b"status-topic-a:connector-other",
            Some(topic("a", "other").as_bytes()),
        );
        assert_eq!(
            view.topics("my-conn").into_iter().collect::<Vec<_>>(),
            ["a", "b-c"]
        );
        assert_eq!(view.topics_erased("my-conn"), 0);
        view.apply(b"status-topic-a:connector-my-conn", None);
        assert_eq!(
            view.topics("my-conn").into_iter().collect::<Vec<_>>(),
            ["b-c"]
        );
        assert_eq!(view.topics_erased("my-conn"), 1);
        // A tombstone for a record never read still counts, by its key.
        view.apply(b"status-topic-z:connector-my-conn", None);
        assert_eq!(view.topics_erased("my-conn"), 2);
        assert_eq!(view.topics("other").len(), 1);
        view.apply(b"status-topic-x:connector-y", Some(b"garbage"));
        assert!(view.topics("y").is_empty());
        // Not a status: ignored, nothing panics.
        view.apply(b"status-task-x", Some(b"garbage"));
        view.apply(b"status-task-x-y", Some(v));
        assert_eq!(view.task("x", 0), None);
    }
}
