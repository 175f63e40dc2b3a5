//! Zombie fencing: two worker processes run the same exactly-once task (same
//! `transactional.id`). Each start fences the other, so they keep taking over from each
//! other; the output, read with read_committed, still holds every line exactly once.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{assert_exactly_once_in_order, committed_lines, Numbers, WorkerProcess};
use sluice_testkit::{free_port, stack, unique_name};

const LINES: usize = 50_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_older_instance_is_fenced_and_nothing_is_duplicated() -> Result<()> {
    let stack = stack()?;
    let numbers = Numbers::new(stack, "zombie", LINES, 50).await?;
    let group = unique_name("zombie");
    let offsets = unique_name("zombie-offsets");
    let (port_a, port_b) = (free_port()?, free_port()?);
    // Many restarts are expected: the two fence each other over and over.
    let extra = "task.restart.max.attempts=1000";
    let worker_a = numbers.worker(stack, "a.properties", port_a, &group, &offsets, extra)?;
    let worker_b = numbers.worker(stack, "b.properties", port_b, &group, &offsets, extra)?;

    let mut a = WorkerProcess::standalone(
        &worker_a,
        &[&numbers.connector],
        port_a,
        numbers.dir.0.join("a.log"),
    )?;
    a.wait_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    let mut b = WorkerProcess::standalone(
        &worker_b,
        &[&numbers.connector],
        port_b,
        numbers.dir.0.join("b.log"),
    )?;
    b.wait_ready(Duration::from_secs(60))?;

    numbers.wait_for_all(stack, LINES, Duration::from_secs(120));
    a.terminate(Duration::from_secs(30))?;
    b.terminate(Duration::from_secs(30))?;

    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(
        logs.contains("source task fenced"),
        "neither instance was fenced; the test did not exercise zombie fencing"
    );
    assert_exactly_once_in_order(&committed_lines(stack, &numbers.topic)?, LINES);
    Ok(())
}
