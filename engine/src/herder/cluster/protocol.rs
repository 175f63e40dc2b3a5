//! What workers tell the group when they join, and what the leader tells each of them:
//! Kafka Connect's incremental cooperative protocol (its `IncrementalCooperativeConnectProtocol`
//! fields) carried as JSON under Sluice's own protocol type, so a Java worker cannot join a
//! Sluice group by accident and the records stay readable with any group tool.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The protocol type every Sluice worker joins with.
pub const PROTOCOL_TYPE: &str = "sluice";
/// The protocol this version offers.
pub const PROTOCOL_NAME: &str = "sluice-v1";

/// A unit of work: a connector (`task: None`, what Kafka Connect assigns as task -1) or
/// one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    pub connector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
}

impl Unit {
    pub fn connector(name: &str) -> Self {
        Unit {
            connector: name.to_owned(),
            task: None,
        }
    }

    pub fn task(name: &str, task: u32) -> Self {
        Unit {
            connector: name.to_owned(),
            task: Some(task),
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.task {
            Some(t) => write!(f, "{}-{t}", self.connector),
            None => write!(f, "{}", self.connector),
        }
    }
}

/// What a worker says when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: u16,
    /// `host:port`, as the status API reports it.
    pub worker_id: String,
    /// Where its REST API answers (writes are forwarded to the leader's).
    pub url: String,
    /// How far it has read the config topic (the offset of the next record).
    pub config_offset: i64,
    /// What it runs now.
    pub owned: BTreeSet<Unit>,
}

/// Why the leader assigned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignError {
    /// The leader could not read the config topic as far as a member had: everyone joins
    /// again (Kafka Connect's CONFIG_MISMATCH).
    ConfigMismatch,
}

/// What the leader tells one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub version: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AssignError>,
    /// The leader's worker id and REST URL.
    pub leader: String,
    pub leader_url: String,
    /// The config-topic offset the assignment was computed at: read up to it before
    /// starting anything.
    pub config_offset: i64,
    /// Everything the worker runs after this round.
    pub run: BTreeSet<Unit>,
    /// What it runs and must stop, then join again.
    pub revoke: BTreeSet<Unit>,
}

/// Encodes for the wire (JSON cannot fail on these types; an empty body would be refused
/// by the reader as malformed).
pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes from the wire, naming what was malformed.
pub fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed group {what}: {e}"))
}

/// The leader's work: every member's plan, connectors and tasks balanced separately (as
/// Kafka Connect does), so each worker runs a fair share of both.
pub fn plan(
    members: &BTreeMap<String, Metadata>,
    work: &BTreeSet<Unit>,
) -> BTreeMap<String, sluice_group::assign::Plan<Unit>> {
    let split = |tasks: bool| -> (BTreeMap<String, BTreeSet<Unit>>, BTreeSet<Unit>) {
        let owned = members
            .iter()
            .map(|(m, meta)| {
                let mine = meta
                    .owned
                    .iter()
                    .filter(|u| u.task.is_some() == tasks)
                    .cloned()
                    .collect();
                (m.clone(), mine)
            })
            .collect();
        let work = work
            .iter()
            .filter(|u| u.task.is_some() == tasks)
            .cloned()
            .collect();
        (owned, work)
    };
    let (owned_c, work_c) = split(false);
    let (owned_t, work_t) = split(true);
    let mut plans = sluice_group::assign::assign(&owned_c, &work_c);
    for (m, p) in sluice_group::assign::assign(&owned_t, &work_t) {
        let mine = plans.entry(m).or_default();
        mine.run.extend(p.run);
        mine.revoke.extend(p.revoke);
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, owned: &[Unit]) -> Metadata {
        Metadata {
            version: 1,
            worker_id: id.into(),
            url: format!("http://{id}"),
            config_offset: 7,
            owned: owned.iter().cloned().collect(),
        }
    }

    #[test]
    fn metadata_and_assignments_round_trip() {
        let m = meta("w1:8083", &[Unit::connector("c"), Unit::task("c", 0)]);
        assert_eq!(decode::<Metadata>("metadata", &encode(&m)), Ok(m));
        let a = Assignment {
            version: 1,
            error: Some(AssignError::ConfigMismatch),
            leader: "w1:8083".into(),
            leader_url: "http://w1:8083".into(),
            config_offset: 9,
            run: BTreeSet::from([Unit::task("c", 1)]),
            revoke: BTreeSet::new(),
        };
        assert_eq!(decode::<Assignment>("assignment", &encode(&a)), Ok(a));
        let err = decode::<Metadata>("metadata", b"{\"version\":1}")
            .err()
            .unwrap_or_default();
        assert!(err.contains("malformed group metadata"), "{err}");
    }

    #[test]
    fn connectors_and_tasks_are_balanced_each_on_their_own() {
        let members = BTreeMap::from([
            ("a".to_owned(), meta("a", &[])),
            ("b".to_owned(), meta("b", &[])),
        ]);
        let mut work = BTreeSet::new();
        for c in ["x", "y"] {
            work.insert(Unit::connector(c));
            for t in 0..3 {
                work.insert(Unit::task(c, t));
            }
        }
        let plans = plan(&members, &work);
        for p in plans.values() {
            assert_eq!(p.run.iter().filter(|u| u.task.is_none()).count(), 1);
            assert_eq!(p.run.iter().filter(|u| u.task.is_some()).count(), 3);
        }
    }
}
