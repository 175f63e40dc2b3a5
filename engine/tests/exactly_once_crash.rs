//! Exactly-once source under SIGKILL: a file source over 100,000 numbered lines; the worker
//! is killed at random moments and restarted; the topic, read with read_committed, holds
//! every line exactly once, in order.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{
    assert_exactly_once_in_order, committed_lines, worker_properties, Rng, TempDir, WorkerProcess,
};
use sluice_testkit::{free_port, stack, unique_name};

const LINES: usize = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("eos-crash", 1).await?;
    let dir = TempDir::new("eos-crash")?;
    let body: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    let input = dir.write("input.txt", &body)?;
    let port = free_port()?;
    let worker = dir.write(
        "worker.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("eos-crash"),
            &unique_name("eos-crash-offsets"),
            "",
        ),
    )?;
    let connector = dir.write(
        "source.properties",
        &format!(
            "name=numbers\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\nbatch.size=100\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            input.display()
        ),
    )?;

    let mut rng = Rng::from_env_or_clock();
    let mut kills_mid_stream = 0;
    for round in 0..6 {
        let mut process = WorkerProcess::standalone(
            &worker,
            &[&connector],
            port,
            dir.0.join(format!("run-{round}.log")),
        )?;
        process.wait_ready(Duration::from_secs(60))?;
        std::thread::sleep(rng.millis(200, 1000));
        process.kill()?;
        let so_far = committed_lines(stack, &topic)?;
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
        WorkerProcess::standalone(&worker, &[&connector], port, dir.0.join("final.log"))?;
    last.wait_ready(Duration::from_secs(60))?;
    // Control records inflate the high watermark, so count committed records instead.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut lines = committed_lines(stack, &topic)?;
    while lines.len() < LINES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        lines = committed_lines(stack, &topic)?;
    }
    let status = last.terminate(Duration::from_secs(30))?;
    assert!(
        status.success(),
        "worker exit after SIGTERM: {status}\n{}",
        last.log_text()
    );
    let lines = committed_lines(stack, &topic)?;
    assert_exactly_once_in_order(&lines, LINES);
    Ok(())
}
