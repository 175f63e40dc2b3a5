//! Cluster mode against the stack's broker: `sluice worker` processes with one `group.id`
//! share the work. Three workers start; a connector is created through a worker that does
//! not lead (the write is forwarded); its tasks spread evenly; a fourth worker joins and
//! takes a share without restarting the tasks that stay; a worker killed with SIGKILL and
//! one stopped with SIGTERM hand their tasks over; the output, read with read_committed,
//! holds every task's sequence once, without a gap.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{state_topics, worker_properties, TempDir, WorkerProcess};
use serde_json::{json, Value};
use sluice_testkit::{free_port, stack, unique_name, Isolation, Stack};

const TASKS: u32 = 6;

struct Cluster {
    dir: TempDir,
    group: String,
    offsets: String,
    /// Worker config beyond `worker_properties`: the state topics and cluster keys.
    extra: String,
    workers: BTreeMap<String, WorkerProcess>,
}

impl Cluster {
    fn new() -> Result<Self> {
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
    fn start(&mut self, stack: &Stack) -> Result<String> {
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

    fn any(&self) -> Result<&WorkerProcess> {
        self.workers.values().next().context("no worker")
    }

    /// The worker that leads, from its `sluice_worker_is_leader` gauge.
    fn leader(&self) -> Result<String> {
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

    /// Waits until every task of `name` is RUNNING on a live worker; task -> worker id.
    fn placement(&self, name: &str, timeout: Duration) -> Result<BTreeMap<u32, String>> {
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
                if tasks.len() == TASKS as usize && placed.len() == TASKS as usize {
                    return Ok(placed);
                }
                last = status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("tasks of {name} not all RUNNING on live workers in {timeout:?}: {last}")
    }

    /// How many times a worker's log says it started task `task` of `name`.
    fn starts(&self, worker: &str, name: &str, task: u32) -> usize {
        let needle = format!("task started connector={name} task={task} ");
        self.workers
            .get(worker)
            .map_or(0, |w| w.log_text().matches(&needle).count())
    }

    fn logs(&self) -> String {
        self.workers
            .iter()
            .map(|(id, w)| format!("--- {id}\n{}", w.log_text()))
            .collect()
    }
}

/// Tasks per worker, for every live worker (zero included).
fn spread(cluster: &Cluster, placement: &BTreeMap<u32, String>) -> Vec<usize> {
    cluster
        .workers
        .keys()
        .map(|w| placement.values().filter(|p| *p == w).count())
        .collect()
}

fn balanced(counts: &[usize]) -> bool {
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// Waits for a placement on the live workers that is balanced.
fn balanced_placement(cluster: &Cluster, name: &str) -> Result<BTreeMap<u32, String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = cluster.placement(name, Duration::from_secs(60))?;
        if balanced(&spread(cluster, &p)) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("not balanced: {:?} ({p:?})", spread(cluster, &p));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn workers_share_the_work_and_hand_it_over_when_one_goes() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("cluster-out", 3))?;
    let mut cluster = Cluster::new()?;
    for _ in 0..3 {
        cluster.start(stack)?;
    }
    let leader = cluster.leader()?;
    let (via, writer) = cluster
        .workers
        .iter()
        .find(|(id, _)| **id != leader)
        .context("no worker besides the leader")?;
    let via = via.clone();
    // Created through a worker that does not lead: the write is forwarded to the leader.
    let (code, body) = writer.request(
        "POST",
        "/connectors",
        Some(&json!({"name": "dg", "config": {
            "connector.class": "io.sluice.connect.datagen.DatagenSourceConnector",
            "kafka.topic": topic,
            "tasks.max": TASKS.to_string(),
            "datagen.records.per.second": "200",
            "datagen.record.bytes": "120",
            "batch.size": "50",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})),
    )?;
    ensure!(
        code == 201,
        "create through {via} (leader {leader}): {code} {body}"
    );
    let first = balanced_placement(&cluster, "dg").with_context(|| cluster.logs())?;
    println!("three workers: {:?}", spread(&cluster, &first));
    // Every worker answers reads with the same placement.
    for w in cluster.workers.values() {
        let (code, status) = w.get_json("/connectors/dg/status")?;
        ensure!(code == 200, "{status}");
        ensure!(
            status["tasks"].as_array().map(Vec::len) == Some(TASKS as usize),
            "{status}"
        );
    }

    // A fourth worker takes a share; the tasks that stay are not restarted.
    let fourth = cluster.start(stack)?;
    let second = balanced_placement(&cluster, "dg").with_context(|| cluster.logs())?;
    println!("four workers: {:?}", spread(&cluster, &second));
    ensure!(
        second.values().any(|w| *w == fourth),
        "the new worker got nothing: {second:?}"
    );
    for (task, worker) in &second {
        if first.get(task) == Some(worker) {
            ensure!(
                cluster.starts(worker, "dg", *task) == 1,
                "task {task} stayed on {worker} but was restarted:\n{}",
                cluster.logs()
            );
        }
    }

    // SIGKILL of a worker that does not lead: its tasks run elsewhere.
    let victim = second
        .values()
        .find(|w| **w != cluster.leader().unwrap_or_default())
        .cloned()
        .context("no victim")?;
    let killed_at = Instant::now();
    if let Some(mut w) = cluster.workers.remove(&victim) {
        w.kill()?;
    }
    let third = balanced_placement(&cluster, "dg").with_context(|| cluster.logs())?;
    println!(
        "SIGKILL of {victim}: tasks RUNNING elsewhere after {} ms",
        killed_at.elapsed().as_millis()
    );
    ensure!(!third.values().any(|w| *w == victim));

    // SIGTERM: the worker commits, leaves the group, and its tasks move without waiting
    // for a session timeout.
    let leaving = third
        .values()
        .find(|w| **w != cluster.leader().unwrap_or_default())
        .cloned()
        .context("no worker to stop")?;
    let stopped_at = Instant::now();
    if let Some(mut w) = cluster.workers.remove(&leaving) {
        let status = w.terminate(Duration::from_secs(30))?;
        ensure!(status.success(), "SIGTERM exit: {status}");
    }
    balanced_placement(&cluster, "dg").with_context(|| cluster.logs())?;
    println!(
        "SIGTERM of {leaving}: tasks RUNNING elsewhere after {} ms",
        stopped_at.elapsed().as_millis()
    );

    // Exactly once: every task's sequence, read_committed, once and without a gap.
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = cluster.any()?.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let records = stack.read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(60))?;
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
    ensure!(
        duplicates == 0,
        "{duplicates} duplicates in {} records",
        records.len()
    );
    ensure!(
        seqs.len() == TASKS as usize,
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
    println!(
        "{} records, each task's sequence once and complete",
        records.len()
    );
    Ok(())
}
