//! A cluster of `sluice worker` processes for tests: start, find the leader, wait for a
//! connector's tasks to run on live workers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};
use sluice_testkit::{free_port, unique_name, Isolation, Stack};

use super::{state_topics, worker_properties, TempDir, WorkerProcess};

pub struct Cluster {
    pub dir: TempDir,
    pub group: String,
    pub offsets: String,
    /// Worker config beyond `worker_properties`: the state topics and cluster keys.
    pub extra: String,
    pub workers: BTreeMap<String, WorkerProcess>,
}

impl Cluster {
    pub fn new() -> Result<Self> {
        Ok(Cluster {
            dir: TempDir::new("cluster")?,
            group: unique_name("cluster"),
            offsets: unique_name("cluster-offsets"),
            extra: format!(
                "{}sluice.cluster.membership=group\nsession.timeout.ms=6000\nheartbeat.interval.ms=500\n",
                state_topics("cluster")
            ),
            workers: BTreeMap::new(),
        })
    }

    /// Starts a worker; its id is `127.0.0.1:<port>`.
    pub fn start(&mut self, stack: &Stack) -> Result<String> {
        let port = free_port()?;
        let props = worker_properties(stack, port, &self.group, &self.offsets, &self.extra);
        let path = self.dir.write(&format!("w{port}.properties"), &props)?;
        let mut w =
            WorkerProcess::distributed(&path, port, self.dir.0.join(format!("w{port}.log")))?;
        w.wait_ready(Duration::from_secs(60))?;
        let id = format!("127.0.0.1:{port}");
        self.workers.insert(id.clone(), w);
        Ok(id)
    }

    pub fn any(&self) -> Result<&WorkerProcess> {
        self.workers.values().next().context("no worker")
    }

    /// A worker other than `leader`.
    pub fn follower(&self, leader: &str) -> Result<String> {
        self.workers
            .keys()
            .find(|w| *w != leader)
            .cloned()
            .context("no worker besides the leader")
    }

    /// The worker that leads, from its `sluice_worker_is_leader` gauge.
    pub fn leader(&self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (id, w) in &self.workers {
                if let Ok((200, text)) = sluice_testkit::http_get(w.port, "/metrics") {
                    if text
                        .lines()
                        .any(|l| l.trim() == "sluice_worker_is_leader 1")
                    {
                        return Ok(id.clone());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("no worker leads")
    }

    /// Waits until all `expected` tasks of `name` are RUNNING on live workers; task -> worker id.
    pub fn placement(
        &self,
        name: &str,
        expected: u32,
        timeout: Duration,
    ) -> Result<BTreeMap<u32, String>> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok((200, status)) = self.any()?.get_json(&format!("/connectors/{name}/status")) {
                let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
                let placed: BTreeMap<u32, String> = tasks
                    .iter()
                    .filter(|t| t["state"] == "RUNNING")
                    .filter_map(|t| {
                        let id = u32::try_from(t["id"].as_u64()?).ok()?;
                        let worker = t["worker_id"].as_str()?.to_owned();
                        self.workers.contains_key(&worker).then_some((id, worker))
                    })
                    .collect();
                if tasks.len() == expected as usize && placed.len() == expected as usize {
                    return Ok(placed);
                }
                last = status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("tasks of {name} not all RUNNING on live workers in {timeout:?}: {last}")
    }

    /// How many times a worker's log says it started task `task` of `name`.
    pub fn starts(&self, worker: &str, name: &str, task: u32) -> usize {
        let needle = format!("task started connector={name} task={task} ");
        self.workers
            .get(worker)
            .map_or(0, |w| w.log_text().matches(&needle).count())
    }

    /// Every worker's whole log, to search.
    pub fn whole_logs(&self) -> String {
        self.workers
            .iter()
            .map(|(id, w)| format!("--- {id}\n{}", w.log_text()))
            .collect()
    }

    /// What each worker did that explains a failure: its warnings, errors and membership
    /// and assignment lines (the last 40), so the story fits in a CI report that keeps
    /// only part of the output. The whole logs go to a file named at the end.
    pub fn logs(&self) -> String {
        const TELLING: [&str; 6] = [
            " WARN ",
            " ERROR ",
            "assignment applied",
            "joined the group",
            "membership lost",
            "task started",
        ];
        let mut summary = String::new();
        for (id, w) in &self.workers {
            let text = w.log_text();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| TELLING.iter().any(|t| l.contains(t)))
                .collect();
            summary.push_str(&format!("--- {id} (telling lines, last 40)\n"));
            for line in &lines[lines.len().saturating_sub(40)..] {
                summary.push_str(line);
                summary.push('\n');
            }
        }
        let whole = self.whole_logs();
        let path = std::env::temp_dir().join(format!(
            "sluice-cluster-logs-{}-{}.txt",
            std::process::id(),
            LOG_DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match std::fs::write(&path, whole) {
            Ok(()) => summary.push_str(&format!("(whole logs: {})\n", path.display())),
            Err(e) => summary.push_str(&format!("(whole logs not written: {e})\n")),
        }
        summary
    }
}

static LOG_DUMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Tasks per worker, for every live worker (zero included).
pub fn spread(cluster: &Cluster, placement: &BTreeMap<u32, String>) -> Vec<usize> {
    cluster
        .workers
        .keys()
        .map(|w| placement.values().filter(|p| *p == w).count())
        .collect()
}

pub fn balanced(counts: &[usize]) -> bool {
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// Waits for a placement on the live workers that is balanced.
pub fn balanced_placement(
    cluster: &Cluster,
    name: &str,
    expected: u32,
) -> Result<BTreeMap<u32, String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = cluster.placement(name, expected, Duration::from_secs(60))?;
        if balanced(&spread(cluster, &p)) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("not balanced: {:?} ({p:?})", spread(cluster, &p));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every task of `connectors` (name, task count) runs on a live worker and the
/// workers run their fair share of all tasks together (max - min <= 1, as Kafka Connect
/// balances: over all connectors' tasks, not per connector); returns tasks per worker.
pub fn balanced_total(cluster: &Cluster, connectors: &[(&str, u32)]) -> Result<Vec<usize>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts: BTreeMap<&String, usize> = cluster.workers.keys().map(|w| (w, 0)).collect();
        for (name, count) in connectors {
            let p = cluster.placement(name, *count, Duration::from_secs(60))?;
            for w in p.values() {
                if let Some(c) = counts.get_mut(w) {
                    *c += 1;
                }
            }
        }
        let counts: Vec<usize> = counts.into_values().collect();
        if balanced(&counts) {
            return Ok(counts);
        }
        if Instant::now() > deadline {
            bail!("not balanced: {counts:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A datagen connector of `tasks` exactly-once tasks into `topic`, 200 records/s each.
pub fn datagen(name: &str, topic: &str, tasks: u32) -> Value {
    json!({"name": name, "config": {
        "connector.class": "io.sluice.connect.datagen.DatagenSourceConnector",
        "kafka.topic": topic,
        "tasks.max": tasks.to_string(),
        "datagen.records.per.second": "200",
        "datagen.record.bytes": "120",
        "batch.size": "50",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false"}})
}

/// Every task's seqs in `topic` read with `isolation`, how many records repeated a
/// (task, seq) already seen, and how many records there were.
pub fn sequences(
    stack: &Stack,
    topic: &str,
    isolation: Isolation,
) -> Result<(BTreeMap<u64, BTreeSet<u64>>, usize, usize)> {
    let records = stack.read_topic(topic, isolation, Duration::from_secs(60))?;
    let mut seqs: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut duplicates = 0;
    for r in &records {
        let value: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        let (Some(task), Some(seq)) = (value["task"].as_u64(), value["seq"].as_u64()) else {
            bail!("no task or seq in {value}");
        };
        if !seqs.entry(task).or_default().insert(seq) {
            duplicates += 1;
        }
    }
    Ok((seqs, duplicates, records.len()))
}

/// Read with read_committed, every task's sequence is there once and without a gap;
/// returns the record count.
pub fn assert_exactly_once(stack: &Stack, topic: &str, tasks: u32) -> Result<usize> {
    let (seqs, duplicates, total) = sequences(stack, topic, Isolation::ReadCommitted)?;
    ensure!(
        duplicates == 0,
        "{duplicates} duplicates in {total} records"
    );
    ensure!(
        seqs.len() == tasks as usize,
        "tasks seen: {:?}",
        seqs.keys()
    );
    for (task, s) in &seqs {
        let max = s.iter().next_back().copied().unwrap_or(0);
        ensure!(
            s.len() as u64 == max + 1,
            "task {task}: {} records, highest seq {max}: a gap",
            s.len()
        );
    }
    Ok(total)
}
