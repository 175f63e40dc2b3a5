//! Exactly-once source under SIGKILL: a file source over 100,000 numbered lines; the worker
//! is killed at random moments and restarted; the topic, read with read_committed, holds
//! every line exactly once, in order.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{assert_exactly_once_in_order, committed_lines, Numbers, Rng, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name};

const LINES: usize = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "eos-crash", LINES, 100).await?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "worker.properties",
        port,
        &unique_name("eos-crash"),
        &unique_name("eos-crash-offsets"),
        "",
    )?;
    let log = |name: &str| numbers.dir.0.join(name);

    let mut rng = Rng::from_env_or_clock();
    let mut kills_mid_stream = 0;
    for round in 0..6 {
        let mut process = WorkerProcess::standalone(
            &worker,
            &[&numbers.connector],
            port,
            log(&format!("run-{round}.log")),
        )?;
        process.wait_ready(Duration::from_secs(60))?;
        std::thread::sleep(rng.millis(200, 1000));
        process.kill()?;
        let so_far = committed_lines(stack, &numbers.topic)?;
        eprintln!(
            "round {round}: killed with {} records committed",
            so_far.len()
        );
        // Whatever was committed so far is already a gap-free, duplicate-free prefix.
        assert_exactly_once_in_order(&so_far, so_far.len());
        if so_far.len() < LINES {
            kills_mid_stream += 1;
        }
    }
    assert!(
        kills_mid_stream >= 5,
        "only {kills_mid_stream} kills landed before the end of the input"
    );

    let mut last =
        WorkerProcess::standalone(&worker, &[&numbers.connector], port, log("final.log"))?;
    last.wait_ready(Duration::from_secs(60))?;
    numbers.wait_for_all(stack, LINES, Duration::from_secs(180));
    let status = last.terminate(Duration::from_secs(30))?;
    assert!(
        status.success(),
        "worker exit after SIGTERM: {status}\n{}",
        last.log_text()
    );
    assert_exactly_once_in_order(&committed_lines(stack, &numbers.topic)?, LINES);
    Ok(())
}
