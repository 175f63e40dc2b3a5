//! Exactly-once source across a broker restart: the stack's Kafka is stopped and started
//! again while a file source runs; whether the producer rides it out or the task fails and
//! resumes from committed offsets, every line lands exactly once, in order.
//!
//! Restarting the broker disturbs every test using it, so this test has its own binary
//! (cargo runs test binaries one at a time).

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use common::{assert_exactly_once_in_order, committed_lines, Numbers, WorkerProcess};
use sluice_testkit::{free_port, stack, stack_script, unique_name};

const LINES: usize = 100_000;

fn stack_cmd(args: &[&str]) -> Result<String> {
    let out = Command::new("bash")
        .arg(stack_script())
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("stack {args:?} failed: {text}");
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_run_loses_and_duplicates_nothing() -> Result<()> {
    let stack = stack()?;
    let status = stack_cmd(&["status"])?;
    if !status
        .lines()
        .any(|l| l.starts_with("kafka") && l.contains(" up "))
    {
        // A broker the script did not start (SLUICE_KAFKA_PORT pointing elsewhere) is not ours
        // to restart.
        eprintln!("SKIPPED: the Kafka broker was not started by deploy/local/stack:\n{status}");
        return Ok(());
    }
    let numbers = Numbers::new(stack, "broker-restart", LINES, 50).await?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "worker.properties",
        port,
        &unique_name("broker-restart"),
        &unique_name("broker-restart-offsets"),
        "task.restart.max.attempts=1000",
    )?;
    let (topic, connector, dir) = (&numbers.topic, &numbers.connector, &numbers.dir);
    let mut process =
        WorkerProcess::standalone(&worker, &[connector], port, dir.0.join("worker.log"))?;
    process.wait_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(1500));

    let before_restart = committed_lines(stack, topic)?.len();
    assert!(
        before_restart < LINES,
        "the input was done before the broker restart; the test exercised nothing"
    );
    stack_cmd(&["down", "kafka"])?;
    std::thread::sleep(Duration::from_secs(3));
    stack_cmd(&["up", "kafka"])?;

    // Right after the restart, partitions may still be electing leaders: keep asking.
    numbers.wait_for_all(stack, LINES, Duration::from_secs(240));
    let status = process.terminate(Duration::from_secs(30))?;
    let log = process.log_text();
    assert!(status.success(), "worker exit: {status}\n{log}");
    eprintln!("{before_restart} records committed before the broker restart");
    // Either librdkafka rode the restart out (the transaction coordinator's state is
    // durable) or the task failed and resumed from committed offsets: both must hold.
    let lines = committed_lines(stack, topic)?;
    assert_exactly_once_in_order(&lines, LINES);
    Ok(())
}
