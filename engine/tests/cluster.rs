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
use common::cluster::{
    assert_exactly_once, balanced_placement, datagen, sequences, spread, Cluster,
};
use serde_json::{json, Value};
use sluice_engine::storage::configs::ConfigStore;
use sluice_engine::task::supervisor::TargetState;
use sluice_testkit::unique_name;
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
    let (code, body) =
        writer.request("POST", "/connectors", Some(&datagen("dg", &topic, TASKS)))?;
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
    let total = assert_exactly_once(stack, &topic, TASKS)?;
    println!("{total} records, each task's sequence once and complete");
    Ok(())
}

/// A worker stalled (SIGSTOP) past its session timeout loses its tasks to the others; when
/// it resumes, its membership is gone, its exactly-once tasks are fenced (their open
/// transactions were aborted by the new owners), their late status writes do not hide the
/// new owners', and read_committed shows every record once.
#[test]
fn a_worker_stalled_past_its_session_is_fenced_when_it_resumes() -> Result<()> {
    const TASKS: u32 = 4;
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("zombie-out", 2))?;
    let mut cluster = Cluster::new()?;
    let a = cluster.start(stack)?;
    let b = cluster.start(stack)?;
    let (code, body) =
        cluster
            .any()?
            .request("POST", "/connectors", Some(&datagen("dg", &topic, TASKS)))?;
    ensure!(code == 201, "create: {code} {body}");
    let before = balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
    let (zombie, survivor) = if before.values().any(|w| *w == b) {
        (b, a)
    } else {
        (a, b)
    };
    let stalled_at = Instant::now();
    // Out of the table while it is stopped: it could not answer a read.
    let stopped = cluster.workers.remove(&zombie).context("zombie")?;
    stopped.signal("-STOP")?;
    // The survivor takes every task once the zombie's session has run out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = cluster.placement("dg", TASKS, Duration::from_secs(60))?;
        if p.values().all(|w| *w == survivor) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tasks did not leave the stalled worker: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "SIGSTOP: tasks RUNNING on the survivor after {} ms",
        stalled_at.elapsed().as_millis()
    );
    stopped.signal("-CONT")?;
    // It notices it was evicted at its first heartbeat (until then it answers reads with
    // what it still believes it runs).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopped.log_text().contains("cluster membership lost") {
        ensure!(
            Instant::now() < deadline,
            "the resumed worker did not notice:\n{}",
            stopped.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.workers.insert(zombie.clone(), stopped);
    // It notices it was evicted, stops what it ran, joins again and gets a share back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let p = balanced_placement(&cluster, "dg", TASKS).with_context(|| cluster.logs())?;
        if p.values().any(|w| *w == zombie) {
            break p;
        }
        ensure!(
            Instant::now() < deadline,
            "the resumed worker got nothing back: {p:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("after the stall: {:?}", spread(&cluster, &after));
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = cluster.any()?.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let total = assert_exactly_once(stack, &topic, TASKS)?;
    // What the zombie had sent before it stalled was aborted: a read_uncommitted reader
    // may see those records twice (the new owner sent them again), never a committed one.
    let (_, repeats, uncommitted) = sequences(stack, &topic, Isolation::ReadUncommitted)?;
    println!(
        "{total} committed records, each once; read_uncommitted: {uncommitted} records, {repeats} repeats (aborted sends)"
    );
    Ok(())
}

/// A worker that stalled while its `init_transactions` was on the way finishes it when it
/// resumes, after the task's new owner took the id (seen in this file's SIGSTOP test): the
/// owner's task is fenced although its worker still owns it. It takes its id back (the
/// cluster's assignment says who owns a task) rather than stay FAILED, and the output stays
/// exactly once. The late claim is played by a producer of the test's own.
#[test]
fn a_task_fenced_by_a_late_claim_takes_its_id_back_while_its_worker_owns_it() -> Result<()> {
    const TASKS: u32 = 2;
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("late-claim-out", 2))?;
    let mut cluster = Cluster::new()?;
    let worker = cluster.start(stack)?;
    let (code, body) =
        cluster
            .any()?
            .request("POST", "/connectors", Some(&datagen("dg", &topic, TASKS)))?;
    ensure!(code == 201, "create: {code} {body}");
    cluster
        .placement("dg", TASKS, Duration::from_secs(60))
        .with_context(|| cluster.logs())?;
    std::thread::sleep(Duration::from_secs(1));
    let late = stack.transactional_producer(&format!("{}-dg-0", cluster.group))?;
    rdkafka::producer::Producer::init_transactions(&late, Duration::from_secs(30))?;
    // The task notices at its next commit and takes the id back: by a restart, or, when
    // the fence first shows as a failed commit, by recovering in place with a new producer
    // (whose init_transactions fences the late claim in turn).
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered = "transaction recovered and committed connector=dg task=0 ";
    while cluster.starts(&worker, "dg", 0) < 2 && !cluster.whole_logs().contains(recovered) {
        ensure!(
            Instant::now() < deadline,
            "task 0 did not start again after it was fenced:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.whole_logs();
    ensure!(
        log.contains("source task fenced") || log.contains("fenced by a newer instance"),
        "task 0 was not fenced:\n{}",
        cluster.logs()
    );
    cluster
        .placement("dg", TASKS, Duration::from_secs(60))
        .with_context(|| cluster.logs())?;
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = cluster.any()?.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let total = assert_exactly_once(stack, &topic, TASKS)?;
    println!("{total} committed records, each once, across the fencing and the claim back");
    Ok(())
}

/// Each task's committed `seq` in the offsets a worker answers for `dg`.
fn offset_seqs(w: &common::WorkerProcess) -> Result<BTreeMap<u64, u64>> {
    let (code, body) = w.get_json("/connectors/dg/offsets")?;
    ensure!(code == 200, "offsets: {code} {body}");
    Ok(body["offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o["partition"]["task"].as_u64()?,
                o["offset"]["seq"].as_u64()?,
            ))
        })
        .collect())
}

/// KIP-875 in a cluster: any worker reads a connector's offsets (wherever its tasks run);
/// an alteration through a worker that does not lead is forwarded to the leader, refused
/// while the connector runs, applied once it is STOPPED, and the resumed task starts from it.
#[test]
fn offsets_are_read_on_any_worker_and_altered_through_any() -> Result<()> {
    const TASKS: u32 = 2;
    const MOVED_TO: u64 = 1_000_000;
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("offsets-out", 2))?;
    let mut cluster = Cluster::new()?;
    cluster.start(stack)?;
    cluster.start(stack)?;
    let leader = cluster.leader()?;
    let follower = cluster.follower(&leader)?;
    let via = &cluster.workers[&follower];
    let (code, body) = via.request("POST", "/connectors", Some(&datagen("dg", &topic, TASKS)))?;
    ensure!(code == 201, "create: {code} {body}");
    cluster
        .placement("dg", TASKS, Duration::from_secs(60))
        .with_context(|| cluster.logs())?;
    std::thread::sleep(Duration::from_secs(2));
    let running = offset_seqs(via)?;
    ensure!(
        running.len() == TASKS as usize,
        "offsets while running: {running:?}"
    );
    let patch = json!({"offsets": [{"partition": {"task": 0}, "offset": {"seq": MOVED_TO}}]});
    let (code, body) = via.request("PATCH", "/connectors/dg/offsets", Some(&patch))?;
    ensure!(code == 400, "altered while running: {code} {body}");
    let (code, _) = via.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let stopped: Vec<BTreeMap<u64, u64>> = cluster
        .workers
        .values()
        .map(offset_seqs)
        .collect::<Result<_>>()?;
    ensure!(
        stopped.windows(2).all(|w| w[0] == w[1]),
        "workers disagree on the offsets: {stopped:?}"
    );
    let (code, body) = via.request("PATCH", "/connectors/dg/offsets", Some(&patch))?;
    ensure!(code == 200, "alter: {code} {body}\n{}", cluster.logs());
    for w in cluster.workers.values() {
        let seqs = offset_seqs(w)?;
        ensure!(
            seqs.get(&0) == Some(&MOVED_TO),
            "after the alteration: {seqs:?}"
        );
    }
    let (code, _) = via.request("PUT", "/connectors/dg/resume", None)?;
    ensure!(code == 202 || code == 204, "resume: {code}");
    cluster
        .placement("dg", TASKS, Duration::from_secs(60))
        .with_context(|| cluster.logs())?;
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = via.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let (seqs, duplicates, _) = sequences(stack, &topic, Isolation::ReadCommitted)?;
    ensure!(duplicates == 0, "{duplicates} duplicates");
    ensure!(
        seqs.get(&0).is_some_and(|s| s.contains(&(MOVED_TO + 1))),
        "task 0 did not resume after the altered offset {MOVED_TO}"
    );
    Ok(())
}

/// Waits until every worker answers `dg`'s active topics with `expected`.
fn topics_everywhere(cluster: &Cluster, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = cluster
            .workers
            .values()
            .map(|w| w.get_json("/connectors/dg/topics").map(|(_, b)| b))
            .collect::<Result<Vec<Value>>>()?;
        if last
            .iter()
            .all(|b| b == &json!({"dg": {"topics": expected}}))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "active topics are not {expected:?} on every worker: {last:?}\n{}",
        cluster.logs()
    )
}

/// KIP-558 in a cluster: the topics a connector's tasks use (on whichever worker) are
/// recorded in the status topic and listed by every worker; a reset through any worker
/// erases them until the tasks use them again; a deleted connector's go with it.
#[test]
fn active_topics_are_tracked_across_the_cluster() -> Result<()> {
    const TASKS: u32 = 2;
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("topics-out", 2))?;
    let mut cluster = Cluster::new()?;
    cluster.start(stack)?;
    cluster.start(stack)?;
    let via = cluster.any()?;
    let (code, body) = via.request("POST", "/connectors", Some(&datagen("dg", &topic, TASKS)))?;
    ensure!(code == 201, "create: {code} {body}");
    topics_everywhere(&cluster, &[&topic])?;
    let (code, _) = via.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    let (code, body) = via.request("PUT", "/connectors/dg/topics/reset", None)?;
    ensure!(code == 202, "reset: {code} {body}");
    topics_everywhere(&cluster, &[])?;
    let (code, _) = via.request("PUT", "/connectors/dg/resume", None)?;
    ensure!(code == 202 || code == 204, "resume: {code}");
    topics_everywhere(&cluster, &[&topic])?;
    let (code, _) = via.request("DELETE", "/connectors/dg", None)?;
    ensure!(code == 204, "delete: {code}");
    // A new connector of the same name starts with none of the old one's topics.
    let other = rt.block_on(stack.create_topic("topics-other", 2))?;
    let (code, body) = via.request("POST", "/connectors", Some(&datagen("dg", &other, TASKS)))?;
    ensure!(code == 201, "create again: {code} {body}");
    topics_everywhere(&cluster, &[&other])?;
    Ok(())
}

/// The config topic is written by the leader through a producer it claims at election:
/// once a newer leader has claimed it, a deposed leader's write fails and nothing of it is
/// stored.
#[test]
fn a_deposed_leader_cannot_write_the_config_topic() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let topic = unique_name("deposed-configs");
        let props = BTreeMap::from([(
            "bootstrap.servers".to_owned(),
            stack.kafka_bootstrap.clone(),
        )]);
        let open = || ConfigStore::open(topic.clone(), &props, 1, props.clone(), props.clone());
        let old = open().await?.clustered();
        let new = open().await?.clustered();
        let id = unique_name("sluice-cluster");
        let config =
            BTreeMap::from([("connector.class".to_owned(), "FileStreamSource".to_owned())]);
        let started = TargetState::Started;
        ensure!(
            old.put("a", &config, &[], started).await.is_err(),
            "an unclaimed store wrote"
        );
        old.claim(id.clone()).await?;
        old.put("a", &config, &[], started).await?;
        new.claim(id.clone()).await?;
        let refused = old.put("zombie", &config, &[], started).await;
        ensure!(
            refused.is_err(),
            "the deposed leader wrote the config topic"
        );
        println!(
            "deposed leader's write: {}",
            refused.err().map(|e| e.to_string()).unwrap_or_default()
        );
        new.put("b", &config, &[], started).await?;
        let stored = new.read_all(Duration::from_secs(30)).await?;
        let names: Vec<&String> = stored.keys().collect();
        ensure!(names == ["a", "b"], "stored: {names:?}");
        Ok(())
    })
}

/// A write the broker refuses for its own reason (a record over the size limit; a broker
/// that stalls past the call's timeout does the same) is an error for that write only: the
/// leader's claim on the config topic stays, and the next write goes through. Only a
/// fencing (a newer leader) ends the claim.
#[test]
fn a_config_write_the_broker_refuses_leaves_the_leader_able_to_write() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let topic = unique_name("refused-configs");
        let props = BTreeMap::from([(
            "bootstrap.servers".to_owned(),
            stack.kafka_bootstrap.clone(),
        )]);
        let store = ConfigStore::open(topic.clone(), &props, 1, props.clone(), props.clone())
            .await?
            .clustered();
        store.claim(unique_name("sluice-cluster")).await?;
        let started = TargetState::Started;
        let config =
            BTreeMap::from([("connector.class".to_owned(), "FileStreamSource".to_owned())]);
        let mut huge = config.clone();
        huge.insert("padding".into(), "x".repeat(2 * 1024 * 1024));
        let refused = store.put("huge", &huge, &[], started).await;
        ensure!(refused.is_err(), "a 2 MiB record was written");
        println!(
            "refused write: {}",
            refused.err().map(|e| e.to_string()).unwrap_or_default()
        );
        store.put("after", &config, &[], started).await?;
        let stored = store.read_all(Duration::from_secs(30)).await?;
        let names: Vec<&String> = stored.keys().collect();
        ensure!(names == ["after"], "stored: {names:?}");
        Ok(())
    })
}

/// `tasks.max` lowered while a worker joins: the tasks that no longer exist stop (fenced
/// first, KIP-618), and none of them commits anything once the new configuration runs;
/// every task's sequence stays gap-free and once.
#[test]
fn a_connector_reconfigured_during_a_rebalance_leaves_no_old_task_committing() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("reconfig-out", 2))?;
    let mut cluster = Cluster::new()?;
    cluster.start(stack)?;
    cluster.start(stack)?;
    let (code, body) =
        cluster
            .any()?
            .request("POST", "/connectors", Some(&datagen("dg", &topic, 4)))?;
    ensure!(code == 201, "create: {code} {body}");
    balanced_placement(&cluster, "dg", 4).with_context(|| cluster.logs())?;
    std::thread::sleep(Duration::from_secs(1));
    let config = datagen("dg", &topic, 2)["config"].clone();
    let (code, body) = cluster
        .any()?
        .request("PUT", "/connectors/dg/config", Some(&config))?;
    ensure!(code == 200, "reconfigure: {code} {body}");
    // A worker joins while the cluster rebalances for the new configuration.
    cluster.start(stack)?;
    let placed = balanced_placement(&cluster, "dg", 2).with_context(|| cluster.logs())?;
    println!("after the reconfiguration: {placed:?}");
    std::thread::sleep(Duration::from_secs(2));
    let (before, _, _) = sequences(stack, &topic, Isolation::ReadCommitted)?;
    std::thread::sleep(Duration::from_secs(4));
    // Stopped before the final read: a read while tasks commit can catch one partition of
    // a transaction and not the other, and show a gap that is not there.
    let (code, _) = cluster.any()?.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let (after, duplicates, total) = sequences(stack, &topic, Isolation::ReadCommitted)?;
    ensure!(
        duplicates == 0,
        "{duplicates} duplicates in {total} records"
    );
    for task in [2_u64, 3] {
        ensure!(
            after.get(&task) == before.get(&task),
            "task {task} of the old configuration committed after the new one ran"
        );
    }
    for task in [0_u64, 1] {
        let grew =
            after.get(&task).map_or(0, BTreeSet::len) > before.get(&task).map_or(0, BTreeSet::len);
        ensure!(grew, "task {task} of the new configuration wrote nothing");
    }
    for (task, s) in &after {
        let max = s.iter().next_back().copied().unwrap_or(0);
        ensure!(
            s.len() as u64 == max + 1,
            "task {task}: a gap ({} records, max {max})",
            s.len()
        );
    }
    let log = cluster.whole_logs();
    ensure!(
        log.contains("exactly-once tasks fenced before they stop existing"),
        "no fencing round:\n{}",
        cluster.logs()
    );
    Ok(())
}
