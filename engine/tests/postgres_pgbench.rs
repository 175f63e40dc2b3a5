//! The PostgreSQL source under pgbench: the snapshot of `pgbench -i` and the changes of
//! `pgbench -N` running all along, with the worker SIGKILLed at random moments (during the
//! snapshot and during streaming) and PostgreSQL restarted once. Afterwards every table is
//! rebuilt from its topic (last row per key, deletes applied; the keyless history table as
//! a multiset of rows) and compared with PostgreSQL: identical, no row read twice (a row
//! updated after the snapshot's consistent point and before a resumed snapshot reached it
//! arrives as its update only), and no change event twice.
//!
//! Restarting the database disturbs every test using it, so this test has its own binary
//! (cargo runs test binaries one at a time).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use common::postgres::{kill_mid_snapshot, restart_postgres, running, PgCase};
use common::rebuild::{rebuild, table};
use common::WorkerProcess;
use sluice_testkit::{stack, Stack};

/// Worker kills over the run (the first one during the snapshot).
const KILLS: usize = 5;

fn pgbench(stack: &Stack, database: &str, args: &[&str]) -> Result<Command> {
    let bin =
        std::env::var("SLUICE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let mut c = Command::new(format!("{bin}/pgbench"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &stack.postgres_port.to_string(),
        "-U",
        "postgres",
    ])
    .args(args)
    .arg(database);
    Ok(c)
}

/// `pgbench -N` writing in the background, throttled so the run stays short.
fn writer(stack: &Stack, database: &str) -> Result<Child> {
    Ok(pgbench(
        stack,
        database,
        &["-n", "-N", "-c", "2", "-R", "150", "-T", "600"],
    )?
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?)
}

/// A small xorshift generator, seeded from the clock (the seed is printed, to replay).
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn start(case: &PgCase, file: &std::path::Path, n: usize) -> Result<WorkerProcess> {
    let w = case.worker_with(file, &format!("w{n}"))?;
    running(&w, "pg")?;
    Ok(w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tables_rebuild_exactly_across_kills_and_a_postgres_restart() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(stack, "pgbench", "").await?;
    let init = pgbench(stack, &case.database, &["-i", "-q", "-s", "1"])?.output()?;
    ensure!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    case.db
        .batch_execute(&format!(
            "CREATE PUBLICATION \"{}_pub\" FOR ALL TABLES",
            case.slot
        ))
        .await?;
    let file = case.connector_file(&[
        ("snapshot.mode", "initial"),
        ("snapshot.fetch.size", "2000"),
        ("snapshot.max.threads", "2"),
        ("table.include.list", "public\\.pgbench_.*"),
        ("publication.autocreate.mode", "disabled"),
    ])?;
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    println!("seed {seed}");
    let mut random = Random(seed);
    let accounts = format!("{}.public.pgbench_accounts", case.prefix);
    // pgbench writes all along, throttled so the run stays short.
    let mut bench = writer(stack, &case.database)?;
    let mut w = start(&case, &file, 0)?;
    // The first kill in the middle of the snapshot.
    kill_mid_snapshot(stack, &mut w, &accounts, 10_000, 100_000).await?;
    for n in 1..KILLS {
        w = start(&case, &file, n)?;
        let wait = 1000 + random.below(4000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if n == 2 {
            // Once: PostgreSQL itself restarted under the running task (pgbench ends with
            // its connections, and starts again after).
            let _ = bench.kill();
            let _ = bench.wait();
            restart_postgres()?;
            bench = writer(stack, &case.database)?;
            tokio::time::sleep(Duration::from_millis(2000)).await;
        }
        println!("kill {} after {wait} ms", n + 1);
        w.kill()?;
    }
    w = start(&case, &file, KILLS)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = bench.kill();
    let _ = bench.wait();
    let db = stack.postgres(&case.database).await?;
    // A transaction pgbench sent before it was killed may still commit: the tables are
    // final once its sessions are gone (found once: a commit just after the tables were
    // read, in the topic but not in what it was compared with).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND application_name = 'pgbench'",
                &[],
            )
            .await?
            .get(0);
        if left == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "{left} pgbench sessions left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tables = [
        (
            "pgbench_accounts",
            "SELECT aid::int8, bid::int8, abalance::int8 FROM pgbench_accounts",
            vec!["aid", "bid", "abalance"],
            true,
        ),
        (
            "pgbench_branches",
            "SELECT bid::int8, bbalance::int8 FROM pgbench_branches",
            vec!["bid", "bbalance"],
            true,
        ),
        (
            "pgbench_tellers",
            "SELECT tid::int8, bid::int8, tbalance::int8 FROM pgbench_tellers",
            vec!["tid", "bid", "tbalance"],
            true,
        ),
        (
            "pgbench_history",
            "SELECT tid::int8, bid::int8, aid::int8, delta::int8 FROM pgbench_history",
            vec!["tid", "bid", "aid", "delta"],
            false,
        ),
    ];
    // The history table is written before the slot exists too: its reads are not known.
    let snapshot_rows = [Some(100_000), Some(1), Some(10), None];
    let mut summary = Vec::new();
    for ((name, sql, columns, keyed), rows) in tables.iter().zip(snapshot_rows) {
        let expected = table(&db, sql, *keyed).await?;
        let topic = format!("{}.public.{name}", case.prefix);
        let deadline = Instant::now() + Duration::from_secs(120);
        let got = loop {
            let got = rebuild(stack, &topic, columns)?;
            if got.rows == expected || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        ensure!(
            got.rows == expected,
            "{name}: rebuilt {} rows, PostgreSQL has {}; first difference {:?}\n{}",
            got.rows.len(),
            expected.len(),
            got.rows.iter().zip(&expected).find(|(a, b)| a != b),
            w.log_text()
        );
        ensure!(
            got.repeated == 0,
            "{name}: {} change events twice",
            got.repeated
        );
        ensure!(
            got.read_twice == 0,
            "{name}: {} rows read twice",
            got.read_twice
        );
        if let Some(rows) = rows {
            // Each row read once, or (updated after the consistent point, before a resumed
            // snapshot got to it) arriving as its update.
            ensure!(
                got.reads + got.first_updated == rows,
                "{name}: {} snapshot reads and {} rows first seen updated, of {rows} rows",
                got.reads,
                got.first_updated
            );
        }
        summary.push(format!(
            "{name} {} rows ({} read, {} first seen updated)",
            expected.len(),
            got.reads,
            got.first_updated
        ));
    }
    let (_, status) = w.get_json("/connectors/pg/status")?;
    ensure!(status["tasks"][0]["state"] == "RUNNING", "{status}");
    w.terminate(Duration::from_secs(30))?;
    // The case's own connection ended with the restart.
    db.execute("SELECT pg_drop_replication_slot($1)", &[&case.slot])
        .await?;
    println!("{KILLS} kills and a PostgreSQL restart: {} equal to PostgreSQL, every snapshot row read once, no change twice", summary.join(", "));
    Ok(())
}
