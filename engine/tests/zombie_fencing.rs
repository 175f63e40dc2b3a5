//! Zombie fencing: two worker processes run the same exactly-once task (same
//! `transactional.id`). Each start fences the other, so they keep taking over from each
//! other; the output, read with read_committed, still holds every line exactly once.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{
    assert_exactly_once_in_order, committed_lines, worker_properties, TempDir, WorkerProcess,
};
use sluice_testkit::{free_port, stack, unique_name};

const LINES: usize = 50_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_older_instance_is_fenced_and_nothing_is_duplicated() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("zombie", 1).await?;
    let dir = TempDir::new("zombie")?;
    let body: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    let input = dir.write("input.txt", &body)?;
    let group = unique_name("zombie");
    let offsets = unique_name("zombie-offsets");
    let (port_a, port_b) = (free_port()?, free_port()?);
    // Many restarts are expected: the two fence each other over and over.
    let extra = "task.restart.max.attempts=1000";
    let worker_a = dir.write(
        "a.properties",
        &worker_properties(stack, port_a, &group, &offsets, extra),
    )?;
    let worker_b = dir.write(
        "b.properties",
        &worker_properties(stack, port_b, &group, &offsets, extra),
    )?;
    let connector = dir.write(
        "source.properties",
        &format!(
            "name=numbers\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\nbatch.size=50\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            input.display()
        ),
    )?;

    let mut a = WorkerProcess::standalone(&worker_a, &[&connector], port_a, dir.0.join("a.log"))?;
    a.wait_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    let mut b = WorkerProcess::standalone(&worker_b, &[&connector], port_b, dir.0.join("b.log"))?;
    b.wait_ready(Duration::from_secs(60))?;

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = committed_lines(stack, &topic)?;
    while lines.len() < LINES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        lines = committed_lines(stack, &topic)?;
    }
    a.terminate(Duration::from_secs(30))?;
    b.terminate(Duration::from_secs(30))?;

    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(
        logs.contains("source task fenced"),
        "neither instance was fenced; the test did not exercise zombie fencing"
    );
    let lines = committed_lines(stack, &topic)?;
    assert_exactly_once_in_order(&lines, LINES);
    Ok(())
}
