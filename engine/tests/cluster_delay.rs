//! `scheduled.rebalance.max.delay.ms` in a cluster: the leader holds the tasks of a worker
//! that died, waiting for it to come back. A worker that joins in its place within the
//! delay takes them at once; when nobody comes, they move to the survivors once the delay
//! has passed. The output stays exactly once throughout.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::cluster::{assert_exactly_once, balanced_placement, datagen, sequences, Cluster};
use sluice_testkit::{stack, Isolation};

const DELAY: Duration = Duration::from_secs(8);
const HELD: &str = "held for their return";
const EXPIRED: &str = "scheduled.rebalance.max.delay.ms has passed";

/// Waits until some worker's log holds `line` `count` times.
fn wait_log(cluster: &Cluster, line: &str, count: usize, within: Duration) -> Result<Instant> {
    let deadline = Instant::now() + within;
    while cluster.whole_logs().matches(line).count() < count {
        ensure!(
            Instant::now() < deadline,
            "no {line:?} (#{count}) within {within:?}:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Instant::now())
}

#[test]
fn a_dead_workers_tasks_wait_for_its_return_or_the_delay() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("delay-out", 2))?;
    let mut cluster = Cluster::new()?;
    cluster.extra.push_str(&format!(
        "scheduled.rebalance.max.delay.ms={}\n",
        DELAY.as_millis()
    ));
    cluster.start(stack)?;
    cluster.start(stack)?;
    let (code, body) =
        cluster
            .any()?
            .request("POST", "/connectors", Some(&datagen("dg", &topic, 4)))?;
    ensure!(code == 201, "create: {code} {body}");
    balanced_placement(&cluster, "dg", 4).with_context(|| cluster.logs())?;
    let leader = cluster.leader()?;

    // A worker dies and another joins in its place within the delay: it takes the held
    // tasks at once, without waiting for the delay.
    let victim = cluster.follower(&leader)?;
    cluster.workers.remove(&victim).context("victim")?.kill()?;
    wait_log(&cluster, HELD, 1, Duration::from_secs(30))?;
    let replacement = cluster.start(stack)?;
    let placed = balanced_placement(&cluster, "dg", 4).with_context(|| cluster.logs())?;
    ensure!(placed.values().any(|w| *w == replacement), "{placed:?}");
    ensure!(
        !cluster.whole_logs().contains(EXPIRED),
        "the replacement waited for the delay:\n{}",
        cluster.logs()
    );
    println!("a replacement within the delay took the held tasks: {placed:?}");

    // It dies too and nobody comes: its tasks move to the leader once the delay is over.
    cluster
        .workers
        .remove(&replacement)
        .context("replacement")?
        .kill()?;
    let held = wait_log(&cluster, HELD, 2, Duration::from_secs(30))?;
    let placed = cluster
        .placement("dg", 4, Duration::from_secs(60))
        .with_context(|| cluster.logs())?;
    let waited = held.elapsed();
    ensure!(placed.values().all(|w| *w == leader), "{placed:?}");
    ensure!(
        cluster.whole_logs().contains(EXPIRED),
        "moved without the delay passing:\n{}",
        cluster.logs()
    );
    ensure!(
        waited + Duration::from_secs(1) >= DELAY,
        "the held tasks moved {waited:?} after they were held, before the delay of {DELAY:?}"
    );
    println!(
        "held tasks moved to the survivor {} ms after they were held",
        waited.as_millis()
    );

    // A task that moved twice may not have committed anything yet: every task writes
    // before the connector stops, so the check below sees all four.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (seqs, _, _) = sequences(stack, &topic, Isolation::ReadCommitted)?;
        if seqs.len() == 4 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tasks with output: {:?}\n{}",
            seqs.keys(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _) = cluster.any()?.request("PUT", "/connectors/dg/stop", None)?;
    ensure!(code == 202 || code == 204, "stop: {code}");
    std::thread::sleep(Duration::from_secs(3));
    let total = assert_exactly_once(stack, &topic, 4).with_context(|| cluster.logs())?;
    println!("{total} records, each once");
    Ok(())
}
