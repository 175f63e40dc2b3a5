//! PostgreSQL restarted (`deploy/local/stack down/up postgres`, a fast shutdown) while the
//! PostgreSQL source streams:
//! the task loses its replication connection, retries until the server is back, and
//! resumes from its committed offset; every change is in Kafka once, in commit order.
//!
//! Restarting the database disturbs every test using it, so this test has its own binary
//! (cargo runs test binaries one at a time).

mod common;

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use common::postgres::{events_at_least, restart_postgres, PgCase};
use sluice_testkit::stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_once_across_a_postgres_restart() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgrestart",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)",
    )
    .await?;
    // Heartbeats confirm the idle position the server asks about when it shuts down;
    // without them a fast shutdown waits wal_sender_timeout (60 s) for the slot's reader.
    let file = case.connector_file(&[("heartbeat.interval.ms", "200")])?;
    let mut w = case.streaming_worker(&file, "w").await?;
    let mut expected = Vec::new();
    let mut sql = String::new();
    for id in 0..300 {
        sql.push_str(&format!("INSERT INTO orders VALUES ({id}, 1, 'x');"));
        expected.push(Some(("c".to_owned(), i64::from(id))));
    }
    case.db.batch_execute(&sql).await?;
    restart_postgres()?;
    let db = stack.postgres(&case.database).await?;
    let mut sql = String::new();
    for id in 0..300 {
        if id % 2 == 0 {
            sql.push_str(&format!("UPDATE orders SET qty = 2 WHERE id = {id};"));
            expected.push(Some(("u".to_owned(), i64::from(id))));
        }
    }
    db.batch_execute(&sql).await?;
    let topic = case.topic();
    let got = events_at_least(stack, &topic, expected.len(), 120).await;
    if got != expected {
        let first = got.iter().zip(&expected).position(|(g, e)| g != e);
        bail!(
            "{} events, {} expected; first difference at {first:?}\n{}",
            got.len(),
            expected.len(),
            w.log_text()
        );
    }
    let (_, status) = w.get_json("/connectors/pg/status")?;
    ensure!(status["tasks"][0]["state"] == "RUNNING", "{status}");
    println!(
        "{} events once, in order, across a PostgreSQL restart",
        got.len()
    );
    w.terminate(Duration::from_secs(30))?;
    db.execute("SELECT pg_drop_replication_slot($1)", &[&case.slot])
        .await?;
    Ok(())
}
