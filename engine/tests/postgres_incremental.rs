//! Incremental snapshots of the PostgreSQL source (Debezium's signal table and DBLog
//! watermarks), against the stack's PostgreSQL 15 and broker, exactly-once on.
//!
//! A table is added to `table.include.list` while its rows are being updated, deleted and
//! inserted all along; an `execute-snapshot` row in the signal table reads it in chunks
//! while streaming goes on, and the worker is SIGKILLed in the middle of it and started
//! again. Each close watermark is held back 200 ms by a trigger, so that changes commit
//! between a chunk's read and its close, where a read left as it was would be stale.
//! Rebuilt from its topic once the writes stop, the table equals PostgreSQL's: no
//! gap (rows the stream never carried are read), no stale read overwriting a newer value
//! (a read lands after every change older than it), no row read twice, no change twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::postgres::PgCase;
use common::rebuild::{decoded, rebuild, table, Rebuilt};
use common::{counter, WorkerProcess};
use sluice_testkit::stack;

/// Rows of the added table before the snapshot.
const ROWS: i64 = 3_000;

/// Updates, deletes and inserts of `items` until `stop`: about 400 a second, on random
/// keys, so that many land inside the snapshot's windows.
async fn writer(db: tokio_postgres::Client, stop: Arc<AtomicBool>) -> Result<u64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next_id = ROWS + 1;
    let mut writes = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut sql = String::new();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = (state % ROWS as u64) as i64 + 1;
            match state % 20 {
                0 => sql.push_str(&format!("DELETE FROM items WHERE id = {id};")),
                1 => {
                    sql.push_str(&format!(
                        "INSERT INTO items VALUES ({next_id}, 0, 'new') ON CONFLICT DO NOTHING;"
                    ));
                    next_id += 1;
                }
                _ => sql.push_str(&format!("UPDATE items SET v = v + 1 WHERE id = {id};")),
            }
        }
        db.batch_execute(&sql).await?;
        writes += 8;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(writes)
}

/// Waits until the worker's counter `name` reaches `at_least`.
async fn counted(w: &WorkerProcess, name: &str, at_least: f64, seconds: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if counter(w.port, name).unwrap_or(0.0) >= at_least {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{name} did not reach {at_least} in {seconds} s:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `orders` as PostgreSQL has it (id, qty), in the rebuilt form.
async fn orders(
    db: &tokio_postgres::Client,
) -> Result<BTreeMap<String, (serde_json::Value, usize)>> {
    table(
        db,
        "SELECT id::int8, qty::int8 FROM orders ORDER BY id",
        true,
    )
    .await
}

/// The topic rebuilt once it equals `expected`, or as it is after 60 s (the Kafka commit
/// of the last chunk follows the task's count of it).
async fn settled(
    stack: &sluice_testkit::Stack,
    topic: &str,
    columns: &[&str],
    expected: &BTreeMap<String, (serde_json::Value, usize)>,
) -> Result<Rebuilt> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rebuilt = rebuild(stack, topic, columns)?;
        if rebuilt.rows == *expected || Instant::now() > deadline {
            return Ok(rebuilt);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_while_streaming_is_read_incrementally_with_no_gap_and_no_stale_read(
) -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pginc",
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
             CREATE TABLE debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048));
             CREATE FUNCTION slow_close() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.type = 'snapshot-window-close' THEN PERFORM pg_sleep(0.2); END IF;
               RETURN NEW; END $$;
             CREATE TRIGGER slow_close BEFORE INSERT ON debezium_signal
               FOR EACH ROW EXECUTE FUNCTION slow_close();
             CREATE TABLE items (id int PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO items SELECT g, 0, 'n' || g FROM generate_series(1, {ROWS}) g;"
        ),
    )
    .await?;
    let signals = [
        ("signal.data.collection", "public.debezium_signal"),
        ("incremental.snapshot.chunk.size", "100"),
    ];
    let only_orders = case.connector_file(&signals)?;
    let mut w = case.streaming_worker(&only_orders, "w1").await?;

    // The writes start while `items` is not captured: its changes pass the slot unread.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(writer(
        stack.postgres(&case.database).await?,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.terminate(Duration::from_secs(30))?;

    // The operator adds the table and asks for its snapshot.
    let mut with_items = signals.to_vec();
    with_items.push(("table.include.list", "public.orders,public.items"));
    let file = case.connector_file(&with_items)?;
    let mut w = case.streaming_worker(&file, "w2").await?;
    case.db
        .execute(
            "INSERT INTO debezium_signal VALUES ('ad-hoc-1', 'execute-snapshot', \
             '{\"data-collections\": [\"public.items\"], \"type\": \"incremental\"}')",
            &[],
        )
        .await?;
    // Killed in the middle: a few chunks committed, most not read yet.
    counted(&w, "sluice_postgres_incremental_chunks_total", 5.0, 60).await?;
    w.kill()?;
    let w = case.streaming_worker(&file, "w3").await?;
    counted(&w, "sluice_postgres_incremental_tables_total", 1.0, 120).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writes.await??;
    ensure!(writes > 400, "only {writes} writes");

    // Once the stream has caught up, the topic holds the table as PostgreSQL has it.
    let topic = format!("{}.public.items", case.prefix);
    let expected = table(&case.db, "SELECT id::int8, v FROM items ORDER BY id", true).await?;
    let rebuilt = settled(stack, &topic, &["id", "v"], &expected).await?;
    let differing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| rebuilt.rows.get(*k) != Some(v))
        .take(5)
        .collect();
    ensure!(
        rebuilt.rows == expected,
        "{} rows in the topic, {} in PostgreSQL; first differing: {differing:?}:\n{}",
        rebuilt.rows.len(),
        expected.len(),
        w.log_text()
    );
    ensure!(
        rebuilt.read_twice == 0,
        "{} rows read twice",
        rebuilt.read_twice
    );
    ensure!(rebuilt.repeated == 0, "{} changes twice", rebuilt.repeated);
    // Most rows come from the snapshot (the writes touch a part of them).
    ensure!(
        rebuilt.reads > ROWS as usize / 2 && rebuilt.reads <= expected.len() + 100,
        "{} reads",
        rebuilt.reads
    );
    for (_, value) in decoded(stack, &topic)? {
        let Some(v) = value else { continue };
        if v["op"] == "r" {
            ensure!(v["source"]["snapshot"] == "incremental", "{v}");
        } else {
            ensure!(v["source"]["snapshot"] == "false", "{v}");
        }
    }
    let superseded = counter(w.port, "sluice_postgres_incremental_superseded_total")?;
    ensure!(
        superseded > 0.0,
        "no read was superseded: the test did not test that"
    );
    eprintln!(
        "{writes} writes; {} reads; {superseded} rows superseded in the last worker",
        rebuilt.reads
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_table_outside_the_publication_fails_the_task_naming_the_key() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgsig",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE sig (id varchar(64) PRIMARY KEY, type varchar(32), data varchar(2048));",
    )
    .await?;
    let publication = format!("{}_pub", case.slot);
    case.db
        .batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE orders"
        ))
        .await?;
    let file = case.connector_file(&[("signal.data.collection", "public.sig")])?;
    let w = case.worker_with(&file, "w")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let trace = loop {
        let (_, s) = w.get_json("/connectors/pg/status")?;
        if s["tasks"][0]["state"] == "FAILED" {
            break s["tasks"][0]["trace"]
                .as_str()
                .context("no trace")?
                .to_owned();
        }
        ensure!(Instant::now() < deadline, "not FAILED: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        trace.contains("signal.data.collection") && trace.contains("not in publication"),
        "{trace}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_asked_over_rest_reads_the_table_and_bad_signals_change_nothing() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgrest",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048));
         INSERT INTO orders SELECT g, g % 7, 'n' || g FROM generate_series(1, 500) g;",
    )
    .await?;
    let file = case.connector_file(&[
        ("signal.data.collection", "public.debezium_signal"),
        ("incremental.snapshot.chunk.size", "64"),
    ])?;
    let w = case.streaming_worker(&file, "w").await?;
    // A setup that works validates clean, its checks against the server included.
    let whole: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    let mut config = whole["config"].clone();
    config["name"] = serde_json::json!("pg");
    let (code, text) = w.request(
        "PUT",
        "/connector-plugins/PostgresConnector/config/validate",
        Some(&config),
    )?;
    let infos: serde_json::Value = serde_json::from_str(&text)?;
    ensure!(
        code == 200 && infos["error_count"] == 0,
        "validate {code}: {} errors",
        infos["error_count"]
    );
    let signal = |body: serde_json::Value| w.request("POST", "/connectors/pg/signals", Some(&body));

    // Refused, naming the fault, with nothing written.
    for (body, status, fragment) in [
        (serde_json::json!({"data": {}}), 400, "type"),
        (
            serde_json::json!({"type": "pause-snapshot", "data": {}}),
            400,
            "pause-snapshot",
        ),
        (
            serde_json::json!({"type": "execute-snapshot", "data": {"data-collections": ["public.orders"], "type": "blocking"}}),
            400,
            "blocking",
        ),
        (
            serde_json::json!({"type": "execute-snapshot", "data": {"data-collections": ["public.orders"]}, "extra": 1}),
            400,
            "extra",
        ),
    ] {
        let (code, text) = signal(body.clone())?;
        ensure!(
            code == status && text.contains(fragment),
            "{body}: {code} {text}"
        );
    }
    let (code, text) = w.request(
        "POST",
        "/connectors/nope/signals",
        Some(&serde_json::json!({"type": "execute-snapshot", "data": {"data-collections": ["public.orders"]}})),
    )?;
    ensure!(code == 404, "{code} {text}");
    let written: i64 = case
        .db
        .query_one("SELECT count(*) FROM debezium_signal", &[])
        .await?
        .get(0);
    ensure!(
        written == 0,
        "{written} signals written by refused requests"
    );

    let (code, text) = signal(serde_json::json!({
        "id": "rest-1",
        "type": "execute-snapshot",
        "data": {"data-collections": ["public.orders"], "type": "incremental"}
    }))?;
    ensure!(code == 202, "{code} {text}");
    let (code, text) = signal(serde_json::json!({
        "id": "rest-1",
        "type": "execute-snapshot",
        "data": {"data-collections": ["public.orders"]}
    }))?;
    ensure!(code == 400 && text.contains("rest-1"), "{code} {text}");
    counted(&w, "sluice_postgres_incremental_tables_total", 1.0, 60).await?;
    let expected = orders(&case.db).await?;
    let rebuilt = settled(stack, &case.topic(), &["id", "qty"], &expected).await?;
    ensure!(
        rebuilt.rows == expected,
        "{} rows rebuilt",
        rebuilt.rows.len()
    );
    ensure!(rebuilt.reads == 500, "{} reads", rebuilt.reads);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mode_always_reads_every_table_again_at_each_start() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgalways",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048));
         INSERT INTO orders SELECT g, 1, 'n' || g FROM generate_series(1, 200) g;",
    )
    .await?;
    let file = case.connector_file(&[
        ("snapshot.mode", "always"),
        ("signal.data.collection", "public.debezium_signal"),
        ("incremental.snapshot.chunk.size", "50"),
    ])?;
    let topic = case.topic();
    // The first start: the initial snapshot, then streaming.
    let mut w = case.streaming_worker(&file, "w1").await?;
    case.db
        .batch_execute(
            "UPDATE orders SET qty = 2 WHERE id <= 10;
             DELETE FROM orders WHERE id > 195;
             INSERT INTO orders SELECT g, 3, 'n' || g FROM generate_series(201, 220) g;",
        )
        .await?;
    let expected = orders(&case.db).await?;
    let first = settled(stack, &topic, &["id", "qty"], &expected).await?;
    ensure!(
        first.rows == expected,
        "{} rows after the first start",
        first.rows.len()
    );
    ensure!(
        first.reads == 200,
        "{} reads by the initial snapshot",
        first.reads
    );
    w.terminate(Duration::from_secs(30))?;

    // Changed while the worker is down; the next start streams them and reads it all again.
    case.db
        .batch_execute("UPDATE orders SET qty = 4 WHERE id BETWEEN 11 AND 20")
        .await?;
    let w = case.streaming_worker(&file, "w2").await?;
    counted(&w, "sluice_postgres_incremental_tables_total", 1.0, 60).await?;
    let expected = orders(&case.db).await?;
    let again = settled(stack, &topic, &["id", "qty"], &expected).await?;
    ensure!(
        again.rows == expected,
        "{} rows after the second start",
        again.rows.len()
    );
    let incremental = decoded(stack, &topic)?
        .iter()
        .filter(|(_, v)| {
            v.as_ref()
                .is_some_and(|v| v["op"] == "r" && v["source"]["snapshot"] == "incremental")
        })
        .count();
    ensure!(
        incremental == expected.len(),
        "{incremental} incremental reads of {} rows",
        expected.len()
    );
    ensure!(again.repeated == 0, "{} changes twice", again.repeated);
    Ok(())
}
