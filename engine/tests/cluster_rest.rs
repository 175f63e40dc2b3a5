//! REST writes across a change of the cluster's leader. A leader stalled (SIGSTOP) past its
//! session is replaced; when it resumes, a write that reaches it as the leader (forwarded
//! by a worker that still took it for one) changes nothing and is answered 409, a client's
//! write is answered 409 while it has no leader to forward to (it is rejoining), then
//! forwarded to the new leader. Every worker ends with the same connectors.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::cluster::{datagen, Cluster};
use sluice_testkit::stack;

/// The header a forwarded write carries (`FORWARDED` in the cluster herder).
const FORWARDED: (&str, &str) = ("x-sluice-forwarded", "1");

#[test]
fn a_stalled_leader_writes_nothing_after_it_resumes_and_answers_409_until_it_rejoins() -> Result<()>
{
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("stale-leader-out", 1))?;
    let mut cluster = Cluster::new()?;
    for _ in 0..3 {
        cluster.start(stack)?;
    }
    let old = cluster.leader()?;
    let stalled = cluster
        .workers
        .remove(&old)
        .context("the leader's process")?;
    stalled.signal("-STOP")?;
    let stopped = Instant::now();
    // The others elect a new leader once the stalled one's session (6 s) has lapsed.
    let new = cluster.leader().with_context(|| cluster.logs())?;
    println!(
        "{old} stalled; {new} leads after {} ms",
        stopped.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(1));
    stalled.signal("-CONT")?;

    // As the leader: nothing is written, and the answer says why.
    let (code, body) = stalled.request_with(
        "POST",
        "/connectors",
        &[FORWARDED],
        Some(&datagen("stale", &topic, 1)),
    )?;
    ensure!(code == 409, "a write to the deposed leader: {code} {body}");
    ensure!(
        body.contains("lead") || body.contains("membership"),
        "{body}"
    );
    println!("deposed leader's own write: {code} {body}");

    // As any worker: 409 while it rejoins, then forwarded to the new leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conflicts = Vec::new();
    loop {
        let (code, body) =
            stalled.request("POST", "/connectors", Some(&datagen("after", &topic, 1)))?;
        match code {
            201 => break,
            409 => conflicts.push(body),
            _ => bail!("a client's write through the resumed worker: {code} {body}"),
        }
        ensure!(
            Instant::now() < deadline,
            "no 201 within 60 s: {conflicts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "client writes answered 409 while the resumed worker rejoined: {} (first: {:?})",
        conflicts.len(),
        conflicts.first()
    );

    cluster.workers.insert(old, stalled);
    for (id, w) in &cluster.workers {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, list) = w.get_json("/connectors")?;
            ensure!(code == 200, "{id}: {code} {list}");
            let names: Vec<&str> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            ensure!(
                !names.contains(&"stale"),
                "{id} lists the deposed leader's write: {names:?}"
            );
            if names.contains(&"after") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{id} does not list the forwarded write: {names:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
