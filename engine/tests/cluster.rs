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
use common::cluster::{balanced_placement, spread, Cluster};
use serde_json::{json, Value};
use sluice_testkit::{stack, Isolation};

const TASKS: u32 = 6;

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
    let first = balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
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
    let second = balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
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
    let third = balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
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
    balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
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
