//! The PostgreSQL source's test helpers: its connector config, and waits on the task, the
//! slot and the topic.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};
use sluice_testkit::Isolation;

use super::WorkerProcess;

/// Waits until the connector's task is RUNNING (its slot exists from then on).
pub fn running(w: &WorkerProcess, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, s)) = w.get_json(&format!("/connectors/{name}/status")) {
            if s["tasks"][0]["state"] == "RUNNING" {
                return Ok(());
            }
            ensure!(s["tasks"][0]["state"] != "FAILED", "task failed: {s}");
        }
        ensure!(
            Instant::now() < deadline,
            "not RUNNING within 60 s:\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a session streams from `slot` (the task creates the slot when it starts,
/// which is after it reports RUNNING, as in Kafka Connect; changes before are not in it).
pub async fn streaming(db: &tokio_postgres::Client, slot: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active: Option<bool> = db
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .map(|r| r.get(0));
        if active == Some(true) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "slot {slot} not streamed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (op, id) of every event, `None` for a tombstone.
pub fn events(stack: &sluice_testkit::Stack, topic: &str) -> Result<Vec<Option<(String, i64)>>> {
    let records = stack.read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(30))?;
    records
        .iter()
        .map(|r| -> Result<Option<(String, i64)>> {
            let key: Value = serde_json::from_slice(r.key.as_deref().context("no key")?)?;
            let id = key["id"].as_i64().context("key without id")?;
            let Some(bytes) = r.value.as_deref() else {
                return Ok(None);
            };
            let v: Value = serde_json::from_slice(bytes)?;
            let op = v["op"].as_str().context("no op")?.to_owned();
            ensure!(v["source"]["connector"] == "postgresql", "{v}");
            ensure!(v["source"]["table"] == "orders", "{v}");
            let row = if op == "d" { &v["before"] } else { &v["after"] };
            ensure!(row["id"].as_i64() == Some(id), "key {id} but {v}");
            Ok(Some((op, id)))
        })
        .collect()
}

/// The connector's config (Debezium's class and keys) for `orders` of `database`.
pub fn connector(
    port: u16,
    database: &str,
    prefix: &str,
    slot: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut config = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": port.to_string(),
        "database.user": "postgres",
        "database.dbname": database,
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": format!("{slot}_pub"),
        "snapshot.mode": "no_data",
        "table.include.list": "public.orders",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false"});
    for (k, v) in extra {
        config[*k] = json!(v);
    }
    json!({"name": "pg", "config": config})
}

/// The slot's confirmed position.
pub async fn confirmed(db: &tokio_postgres::Client, slot: &str) -> Result<Option<String>> {
    Ok(db
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .get(0))
}

/// An LSN (`X/Y`) as a number.
pub fn lsn_value(text: &str) -> Result<u64> {
    let (hi, lo) = text.split_once('/').context("not an LSN")?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}

/// [`events`] of `topic` once there are at least `count` of them, or what there is after
/// `seconds` (the topic appears with the first change).
pub async fn events_at_least(
    stack: &sluice_testkit::Stack,
    topic: &str,
    count: usize,
    seconds: u64,
) -> Vec<Option<(String, i64)>> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let got = events(stack, topic).unwrap_or_default();
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One PostgreSQL source test's world: a fresh database (with `ddl` run), unique names for
/// the topic prefix and the slot, a directory and a worker config.
pub struct PgCase {
    pub db: tokio_postgres::Client,
    pub database: String,
    pub prefix: String,
    pub slot: String,
    pub dir: super::TempDir,
    pub port: u16,
    pub worker: std::path::PathBuf,
    postgres_port: u16,
}

impl PgCase {
    pub async fn new(stack: &sluice_testkit::Stack, name: &str, ddl: &str) -> Result<Self> {
        let (database, db) = stack.create_database(name).await?;
        if !ddl.is_empty() {
            db.batch_execute(ddl).await?;
        }
        let dir = super::TempDir::new(name)?;
        let port = sluice_testkit::free_port()?;
        let worker = dir.write(
            "worker.properties",
            &super::worker_properties(
                stack,
                port,
                &sluice_testkit::unique_name(name),
                &sluice_testkit::unique_name(&format!("{name}-offsets")),
                "",
            ),
        )?;
        Ok(PgCase {
            db,
            database,
            prefix: sluice_testkit::unique_name(name).replace('-', "_"),
            slot: sluice_testkit::unique_name("slot").replace('-', "_"),
            dir,
            port,
            worker,
            postgres_port: stack.postgres_port,
        })
    }

    /// The connector's config file, with `extra` keys.
    pub fn connector_file(&self, extra: &[(&str, &str)]) -> Result<std::path::PathBuf> {
        let config = connector(
            self.postgres_port,
            &self.database,
            &self.prefix,
            &self.slot,
            extra,
        );
        self.dir.write("pg.json", &config.to_string())
    }

    /// `orders`' topic.
    pub fn topic(&self) -> String {
        format!("{}.public.orders", self.prefix)
    }

    /// A standalone worker running `file`, its REST API up (log `<log>.log`).
    pub fn worker_with(&self, file: &std::path::Path, log: &str) -> Result<WorkerProcess> {
        let mut w = WorkerProcess::standalone(
            &self.worker,
            &[file],
            self.port,
            self.dir.0.join(format!("{log}.log")),
        )?;
        w.wait_ready(Duration::from_secs(60))?;
        Ok(w)
    }

    /// A worker whose task streams from the slot (changes from now on are captured).
    pub async fn streaming_worker(
        &self,
        file: &std::path::Path,
        log: &str,
    ) -> Result<WorkerProcess> {
        let w = self.worker_with(file, log)?;
        running(&w, "pg")?;
        if let Err(e) = streaming(&self.db, &self.slot).await {
            anyhow::bail!("{e}:\n{}", w.log_text());
        }
        Ok(w)
    }

    /// Drops the slot (it would hold WAL on the shared stack).
    pub async fn drop_slot(&self) -> Result<()> {
        self.db
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await?;
        Ok(())
    }
}

/// Waits until `topic` holds at least `from` of the snapshot's `rows` records (committed),
/// then kills the worker (SIGKILL): in the middle of the snapshot.
pub async fn kill_mid_snapshot(
    stack: &sluice_testkit::Stack,
    w: &mut WorkerProcess,
    topic: &str,
    from: usize,
    rows: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = stack
            .read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(5))
            .map_or(0, |r| r.len());
        if n >= from {
            ensure!(n < rows, "the snapshot finished before the kill");
            return w.kill();
        }
        ensure!(
            Instant::now() < deadline,
            "no snapshot progress:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test that fails before dropping its slot must not leave it behind: a slot holds WAL
/// on the shared stack, and PostgreSQL has a fixed number of them. Best effort, once the
/// slot's session (the worker, dropped before the case) has ended.
impl Drop for PgCase {
    fn drop(&mut self) {
        let (url, slot) = (
            format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.postgres_port
            ),
            self.slot.clone(),
        );
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                for _ in 0..50 {
                    let left = client
                        .query_opt(
                            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                            &[&slot],
                        )
                        .await;
                    match left {
                        Ok(Some(row)) if !row.get::<_, bool>(0) => {
                            let _ = client
                                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                                .await;
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        })
        .join();
    }
}

/// `deploy/local/stack down postgres` then `up postgres`.
pub fn restart_postgres() -> Result<()> {
    for action in ["down", "up"] {
        let out = std::process::Command::new("bash")
            .arg(sluice_testkit::stack_script())
            .args([action, "postgres"])
            .output()?;
        ensure!(
            out.status.success(),
            "stack {action} postgres: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
