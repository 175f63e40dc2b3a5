//! The delivery modes besides exactly-once per poll: at-least-once (the fallback when the
//! worker's `exactly.once.source.support` is not enabled) and exactly-once with
//! `transaction.boundary=interval`.

mod common;

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use common::{assert_exactly_once_in_order, counter, Numbers, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name};

const LINES: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_delivers_and_resumes_from_committed_offsets() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "alo", LINES, 500).await?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "worker.properties",
        port,
        &unique_name("alo"),
        &unique_name("alo-offsets"),
        "exactly.once.source.support=disabled",
    )?;
    let mut w = WorkerProcess::standalone(
        &worker,
        &[&numbers.connector],
        port,
        numbers.dir.0.join("w.log"),
    )?;
    w.wait_ready(Duration::from_secs(60))?;
    let lines = numbers.wait_for_all(stack, LINES, Duration::from_secs(120));
    assert!(
        w.log_text().contains("exactly_once=false"),
        "the task did not run at-least-once"
    );
    w.terminate(Duration::from_secs(30))?;
    // A clean run of at-least-once delivers each record once.
    assert_exactly_once_in_order(&lines, LINES);

    // More lines arrive; the restarted worker reads only those.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&numbers.input)?;
    for i in LINES + 1..=LINES + 100 {
        writeln!(file, "{i}")?;
    }
    let mut w = WorkerProcess::standalone(
        &worker,
        &[&numbers.connector],
        port,
        numbers.dir.0.join("w.log"),
    )?;
    w.wait_ready(Duration::from_secs(60))?;
    let lines = numbers.wait_for_all(stack, LINES + 100, Duration::from_secs(60));
    w.terminate(Duration::from_secs(30))?;
    assert_exactly_once_in_order(&lines, LINES + 100);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn interval_boundary_commits_many_polls_per_transaction() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "interval", LINES, 50).await?;
    // 400 polls of 50 lines; a transaction every 500 ms holds many of them.
    let connector = numbers.dir.write(
        "interval.properties",
        &format!(
            "{}transaction.boundary=interval\ntransaction.boundary.interval.ms=500\n",
            std::fs::read_to_string(&numbers.connector)?
        ),
    )?;
    let port = free_port()?;
    let worker = numbers.worker(
        stack,
        "worker.properties",
        port,
        &unique_name("interval"),
        &unique_name("interval-offsets"),
        "",
    )?;
    let mut w =
        WorkerProcess::standalone(&worker, &[&connector], port, numbers.dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let lines = numbers.wait_for_all(stack, LINES, Duration::from_secs(120));
    let transactions =
        counter(port, "sluice_source_transactions_committed_total").context("metrics")?;
    let polled = counter(port, "sluice_source_records_polled_total")?;
    w.terminate(Duration::from_secs(30))?;
    assert_exactly_once_in_order(&lines, LINES);
    assert_eq!(polled, LINES as f64);
    assert!(
        (1.0..100.0).contains(&transactions),
        "{transactions} transactions for 400 polls: the interval boundary did not group them"
    );
    Ok(())
}
