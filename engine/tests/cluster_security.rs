//! Cluster mode over the stack's SASL_SSL listener: every connection of the workers (the
//! group member's, the storage topics', the tasks' transactional producers) logs in with
//! SCRAM-SHA-512 over TLS; two workers share an exactly-once source; a worker given a
//! wrong password refuses to start and says why.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::cluster::{assert_exactly_once, balanced_placement, datagen, spread, Cluster};
use common::{worker_properties, WorkerProcess};
use sluice_testkit::{free_port, stack, Stack};

/// Worker keys that secure every connection, in librdkafka's names.
fn secured(stack: &Stack, password: &str) -> String {
    let (user, _) = stack.kafka_sasl();
    format!(
        "bootstrap.servers={}\nsecurity.protocol=SASL_SSL\nssl.ca.location={}\n\
         sasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\nsasl.password={password}\n",
        stack.kafka_sasl_ssl_bootstrap,
        stack.kafka_tls().ca.display()
    )
}

#[test]
fn a_cluster_runs_over_sasl_ssl_and_a_wrong_password_stops_a_worker_at_start() -> Result<()> {
    let stack = stack()?;
    let rt = tokio::runtime::Runtime::new()?;
    let topic = rt.block_on(stack.create_topic("secured-out", 2))?;
    let (_, password) = stack.kafka_sasl();
    let mut cluster = Cluster::new()?;
    let plain_extra = cluster.extra.clone();
    cluster.extra.push_str(&secured(stack, password));
    for _ in 0..2 {
        cluster.start(stack)?;
    }
    let (code, body) =
        cluster
            .any()?
            .request("POST", "/connectors", Some(&datagen("sec", &topic, 4)))?;
    ensure!(code == 201, "create: {code} {body}");
    let placement = balanced_placement(&cluster, "sec", 4).with_context(|| cluster.logs())?;
    println!("over SASL_SSL: {:?}", spread(&cluster, &placement));
    ensure!(
        spread(&cluster, &placement).iter().all(|n| *n == 2),
        "{placement:?}"
    );

    // The same worker config with a wrong password: the start stops at the group
    // member's login, with the mechanism and the broker's answer in the reason.
    let port = free_port()?;
    let bad = worker_properties(
        stack,
        port,
        &cluster.group,
        &cluster.offsets,
        &format!("{plain_extra}{}", secured(stack, "not-the-password")),
    );
    let path = cluster.dir.write("bad.properties", &bad)?;
    let mut worker = WorkerProcess::distributed(&path, port, cluster.dir.0.join("bad.log"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = worker.child.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "a worker with a wrong password still runs:\n{}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = worker.log_text();
    ensure!(!status.success(), "exited with {status}:\n{log}");
    ensure!(
        log.contains("SASL authentication") && log.contains("SCRAM-SHA-512"),
        "the reason is not in the log:\n{log}"
    );
    println!("refused: {}", log.lines().last().unwrap_or_default());

    // Records keep flowing for a while, then each task's sequence is there exactly once.
    std::thread::sleep(Duration::from_secs(3));
    for w in cluster.workers.values_mut() {
        w.terminate(Duration::from_secs(30))?;
    }
    let records = assert_exactly_once(stack, &topic, 4)?;
    ensure!(records > 0, "no record written over SASL_SSL");
    println!("{records} records written over SASL_SSL, each once");
    Ok(())
}
