//! A whole cluster stopped long enough for the broker to forget its group starts again at
//! group generation 1, below the generations its status records were written at. The
//! status API must show the new life (tasks RUNNING on the new workers), not the last
//! records of the old one. The forgetting is played by deleting the empty group, which is
//! what the broker itself does once an empty group without offsets is cleaned up.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::cluster::{datagen, Cluster};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sluice_testkit::stack;

#[test]
fn a_cluster_restarted_after_its_group_was_forgotten_reports_its_new_life() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("restart-out", 1))?;
    let mut cluster = Cluster::new()?;
    let first = cluster.start(stack)?;
    // Each connector created is a rebalance: the old life ends a few generations up.
    for name in ["c1", "c2", "c3", "c4"] {
        let (code, body) =
            cluster
                .any()?
                .request("POST", "/connectors", Some(&datagen(name, &topic, 1)))?;
        ensure!(code == 201, "create {name}: {code} {body}");
        cluster
            .placement(name, 1, Duration::from_secs(60))
            .with_context(|| cluster.logs())?;
    }
    let (_, old) = cluster.any()?.get_json("/connectors/c1/status")?;
    println!("old life: {old}");
    let mut gone = cluster.workers.remove(&first).context("the first worker")?;
    gone.terminate(Duration::from_secs(30))?;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .create()?;
    let deleted = rt.block_on(admin.delete_groups(&[&cluster.group], &AdminOptions::new()))?;
    for result in deleted {
        ensure!(result.is_ok(), "deleting the group: {result:?}");
    }

    // Two workers in the new life: each answers for the tasks the other runs from the
    // status topic, where the old life's records sit at higher generations.
    cluster.start(stack)?;
    cluster.start(stack)?;
    let names = ["c1", "c2", "c3", "c4"];
    let deadline = Instant::now() + Duration::from_secs(30);
    'settled: loop {
        let mut wrong = Vec::new();
        for (id, w) in &cluster.workers {
            for name in names {
                let (_, status) = w.get_json(&format!("/connectors/{name}/status"))?;
                let task = &status["tasks"][0];
                let live = task["worker_id"]
                    .as_str()
                    .is_some_and(|t| cluster.workers.contains_key(t));
                if task["state"] != "RUNNING" || !live {
                    wrong.push(format!("{id} says {name}: {status}"));
                }
            }
        }
        if wrong.is_empty() {
            break 'settled;
        }
        ensure!(
            Instant::now() < deadline,
            "the old life's status is still shown:\n{}\n{}",
            wrong.join("\n"),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
