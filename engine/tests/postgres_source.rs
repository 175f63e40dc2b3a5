//! The PostgreSQL source (Debezium's class name and keys) through `sluice standalone`,
//! exactly-once on, against the stack's PostgreSQL 15 and broker: inserts, updates,
//! deletes and a multi-row transaction, with the worker killed (SIGKILL) in the middle of
//! the workload and started again. Read with read_committed, the topic holds every change
//! once, in commit order, as Debezium's envelope (a delete followed by its tombstone), and
//! the slot has been confirmed past the changes.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::postgres::{
    confirmed, connector, events, events_at_least, kill_mid_snapshot, lsn_value, running,
    streaming, PgCase,
};
use common::WorkerProcess;
use serde_json::{json, Value};
use sluice_testkit::{stack, unique_name, Isolation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_once_in_commit_order_across_a_kill() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgsrc",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)",
    )
    .await?;
    let (db, slot, port) = (&case.db, case.slot.clone(), case.port);
    let topic = case.topic();
    let connector = case.connector_file(&[])?;
    let mut expected: Vec<Option<(String, i64)>> = Vec::new();
    let workload = |from: i64, to: i64, expected: &mut Vec<Option<(String, i64)>>| {
        let mut sql = String::new();
        for id in from..to {
            sql.push_str(&format!("INSERT INTO orders VALUES ({id}, 1, 'n{id}');"));
            expected.push(Some(("c".into(), id)));
            if id % 3 == 0 {
                sql.push_str(&format!("UPDATE orders SET qty = 2 WHERE id = {id};"));
                expected.push(Some(("u".into(), id)));
            }
            if id % 5 == 0 {
                sql.push_str(&format!("DELETE FROM orders WHERE id = {id};"));
                expected.push(Some(("d".into(), id)));
                expected.push(None);
            }
        }
        sql
    };

    let mut w = case.streaming_worker(&connector, "w1").await?;
    // Each statement its own transaction (simple query mode, no BEGIN).
    db.batch_execute(&workload(1, 200, &mut expected)).await?;
    // One transaction of 50 rows: all or none of it in Kafka.
    let batch = workload(200, 250, &mut expected);
    db.batch_execute(&format!("BEGIN;{batch}COMMIT;")).await?;
    // Killed while changes are on their way.
    db.batch_execute(&workload(250, 400, &mut expected)).await?;
    w.kill()?;
    db.batch_execute(&workload(400, 500, &mut expected)).await?;

    let mut w = case.worker_with(&connector, "w2")?;
    running(&w, "pg")?;
    let got = events_at_least(stack, &topic, expected.len(), 60).await;
    if got != expected {
        let first = got.iter().zip(&expected).position(|(g, e)| g != e);
        bail!(
            "{} events, {} expected; first difference at {first:?}: {:?} vs {:?}\n{}",
            got.len(),
            expected.len(),
            first.and_then(|i| got.get(i)),
            first.and_then(|i| expected.get(i)),
            w.log_text()
        );
    }
    let (_, metrics) = sluice_testkit::http_get(port, "/metrics")?;
    ensure!(
        metrics.contains("sluice_postgres_lag_seconds") && metrics.contains("op=\"d\""),
        "lag or change counters missing from /metrics"
    );
    // The slot is confirmed once Kafka has the changes (the worker commits, then confirms).
    let lsn_now: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    w.terminate(Duration::from_secs(30))?;
    let confirmed = confirmed(db, &slot).await?;
    println!(
        "{} events once, in order; slot confirmed {confirmed:?} (WAL at {lsn_now})",
        got.len()
    );
    ensure!(confirmed.is_some(), "the slot has no confirmed position");
    case.drop_slot().await?;
    Ok(())
}

/// Only tables the connector does not capture are written: without heartbeats the slot
/// would hold all that WAL. A heartbeat record carries the position into Kafka and the
/// slot is confirmed past the writes; a restart then finds the slot at or before the
/// committed offset (no false alarm) and goes on streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_advance_a_slot_whose_tables_are_quiet() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pghb",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await?;
    let (db, slot, prefix, port) = (&case.db, case.slot.clone(), case.prefix.clone(), case.port);
    db.batch_execute("CREATE TABLE beats (id serial PRIMARY KEY, at timestamptz)")
        .await?;
    let connector = case.connector_file(&[
        ("heartbeat.interval.ms", "300"),
        (
            "heartbeat.action.query",
            "INSERT INTO beats (at) VALUES (now())",
        ),
    ])?;
    let mut w = case.streaming_worker(&connector, "w1").await?;
    let mut sql = String::new();
    for id in 0..200 {
        sql.push_str(&format!("INSERT INTO other VALUES ({id});"));
    }
    db.batch_execute(&sql).await?;
    let written: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let written: u64 = lsn_value(&written)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = confirmed(db, &slot)
            .await?
            .map(|l| lsn_value(&l))
            .transpose()?;
        if now.is_some_and(|c| c >= written) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "slot confirmed {now:?}, not past the writes at {written}:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let beats = stack.read_topic(
        &format!("__debezium-heartbeat.{prefix}"),
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    )?;
    ensure!(!beats.is_empty(), "no heartbeat record");
    let actions: i64 = db
        .query_one("SELECT count(*) FROM beats", &[])
        .await?
        .get(0);
    ensure!(actions > 0, "heartbeat.action.query never ran");
    let (_, metrics) = sluice_testkit::http_get(port, "/metrics")?;
    for series in [
        "sluice_postgres_heartbeats_total",
        "sluice_postgres_heartbeat_actions_total",
        "sluice_postgres_slot_retained_wal_bytes",
        "sluice_postgres_slot_wal_status",
        "sluice_postgres_confirmed_lsn",
    ] {
        ensure!(metrics.contains(series), "{series} missing from /metrics");
    }

    w.terminate(Duration::from_secs(30))?;
    let mut w = case.streaming_worker(&connector, "w2").await?;
    db.batch_execute("INSERT INTO orders VALUES (1, 1, 'after')")
        .await?;
    let topic = case.topic();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = events(stack, &topic).unwrap_or_default();
        if got == [Some(("c".to_owned(), 1))] {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after the restart: {got:?}\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} heartbeat records; the slot went past the quiet writes",
        beats.len()
    );
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    Ok(())
}

/// The server's WAL position.
async fn current_lsn(db: &tokio_postgres::Client) -> Result<u64> {
    let text: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    lsn_value(&text)
}

/// An idle captured database on a busy cluster, heartbeats off (Debezium's default): the
/// other database's writes go through the slot's WAL too, and Debezium's slot would hold
/// all of it until the next captured change. Sluice commits the server's position as an
/// offset alone and confirms the slot there, so the slot's confirmed position follows the
/// server's closely and the WAL it holds stays bounded (PostgreSQL moves a logical slot's
/// restart point only at its running-transactions records, about every 15 s, so what it
/// holds is a sawtooth of up to ~15 s of WAL) while the cluster writes 200 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_database_on_a_busy_cluster_keeps_the_slot_small() -> Result<()> {
    // 20 rounds (about 45 s) here; `deploy/chaos/pg-idle-soak` runs it for minutes.
    let rounds: usize = std::env::var("SLUICE_PG_IDLE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    const MIB: i64 = 1 << 20;
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgidle",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)",
    )
    .await?;
    let file = case.connector_file(&[])?;
    let mut w = case.streaming_worker(&file, "w").await?;
    let (busy_name, busy) = stack.create_database("pgbusy").await?;
    busy.batch_execute("CREATE TABLE big (id bigserial, pad text)")
        .await?;
    let start = current_lsn(&busy).await?;
    // After each round: the WAL the slot holds, and how far its confirmed position is
    // behind the server's, in MiB.
    let (mut held, mut behind) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // About 11 MiB of WAL a round, none of it captured.
        busy.batch_execute(
            "INSERT INTO big (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 10000) g",
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let row = case
            .db
            .query_one(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, \
                        (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&case.slot],
            )
            .await?;
        held.push(row.get::<_, i64>(0) / MIB);
        behind.push(row.get::<_, i64>(1) / MIB);
    }
    let written = (current_lsn(&busy).await? - start) as i64 / MIB;
    let (_, metrics) = sluice_testkit::http_get(case.port, "/metrics")?;
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    drop(busy);
    stack
        .postgres("postgres")
        .await?
        .batch_execute(&format!("DROP DATABASE \"{busy_name}\" WITH (FORCE)"))
        .await?;
    ensure!(
        written > 9 * rounds as i64,
        "only {written} MiB of WAL written"
    );
    let late = |v: &[i64]| v.iter().skip(rounds / 2).max().copied().unwrap_or_default();
    ensure!(
        late(&behind) < 16 && late(&held) < 100,
        "confirmed position behind by {behind:?} MiB, WAL held {held:?} MiB after each round ({written} MiB written)"
    );
    ensure!(
        metrics.contains("sluice_postgres_idle_confirms_total"),
        "no idle confirmation counted"
    );
    println!(
        "{written} MiB of WAL written by another database; the idle slot confirmed within {} MiB of the server and held at most {} MiB ({held:?})",
        late(&behind),
        late(&held)
    );
    Ok(())
}

/// `provide.transaction.metadata=true`: BEGIN and END records on `<prefix>.transaction`
/// around each transaction (also one whose changes are all of tables not captured), and
/// each event's `transaction` block, as Debezium writes them: ids `<xid>:<lsn>` with the
/// record's own LSN, orders counted from 1 in the transaction and in the table, END's
/// counts per table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_metadata_brackets_each_transaction() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgtxmeta",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await?;
    let file = case.connector_file(&[("provide.transaction.metadata", "true")])?;
    let mut w = case.streaming_worker(&file, "w").await?;
    case.db
        .batch_execute(
            "BEGIN; INSERT INTO orders VALUES (1, 1, 'a'); INSERT INTO other VALUES (1);
             INSERT INTO orders VALUES (2, 1, 'b'); COMMIT;
             INSERT INTO other VALUES (2);",
        )
        .await?;
    let boundaries = format!("{}.transaction", case.prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (marks, changes) = loop {
        let read = |topic: &str| -> Vec<Value> {
            stack
                .read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(5))
                .unwrap_or_default()
                .iter()
                .filter_map(|r| serde_json::from_slice(r.value.as_deref()?).ok())
                .collect()
        };
        let (marks, changes) = (read(&boundaries), read(&case.topic()));
        if (marks.len() >= 4 && changes.len() >= 2) || Instant::now() > deadline {
            break (marks, changes);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    let status: Vec<&str> = marks.iter().filter_map(|m| m["status"].as_str()).collect();
    ensure!(status == ["BEGIN", "END", "BEGIN", "END"], "{marks:?}");
    let xid = changes
        .first()
        .and_then(|c| c["source"]["txId"].as_i64())
        .unwrap_or_default();
    let xid_of = |id: &Value| {
        id.as_str()
            .and_then(|i| i.split(':').next()?.parse::<i64>().ok())
    };
    ensure!(
        xid_of(&marks[0]["id"]) == Some(xid) && xid_of(&marks[1]["id"]) == Some(xid),
        "{marks:?} for xid {xid}"
    );
    ensure!(
        marks[0]["event_count"].is_null() && marks[0]["data_collections"].is_null(),
        "{:?}",
        marks[0]
    );
    ensure!(
        marks[1]["event_count"] == 2
            && marks[1]["data_collections"]
                == json!([{"data_collection": "public.orders", "event_count": 2}]),
        "{:?}",
        marks[1]
    );
    // The second transaction changed a table not captured: bracketed all the same, empty.
    ensure!(
        marks[3]["event_count"] == 0 && marks[3]["data_collections"] == json!([]),
        "{:?}",
        marks[3]
    );
    for (i, c) in changes.iter().enumerate() {
        let t = &c["transaction"];
        let order = i64::try_from(i)? + 1;
        ensure!(
            t["id"] == format!("{xid}:{}", c["source"]["lsn"])
                && t["total_order"] == order
                && t["data_collection_order"] == order,
            "event {i}: {c}"
        );
    }
    // BEGIN carries the first change's LSN, END the commit's end.
    ensure!(
        marks[0]["id"] == format!("{xid}:{}", changes[0]["source"]["lsn"]),
        "{:?}",
        marks[0]
    );
    println!(
        "transaction metadata: {} boundary records, events numbered in order",
        marks.len()
    );
    Ok(())
}

/// `message.key.columns`: the events of a table it names are keyed by its columns, in the
/// snapshot and in streaming, instead of the primary key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_key_columns_key_the_events() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgmsgkey",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         INSERT INTO orders VALUES (1, 5, 'first');",
    )
    .await?;
    let file = case.connector_file(&[
        ("snapshot.mode", "initial"),
        ("message.key.columns", "public\\.ord.*:note,qty"),
    ])?;
    let mut w = case.worker_with(&file, "w")?;
    running(&w, "pg")?;
    slot_created(&case.db, &case.slot).await?;
    streaming(&case.db, &case.slot).await?;
    case.db
        .batch_execute("INSERT INTO orders VALUES (2, 6, 'second')")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let keys = loop {
        let keys: Vec<Value> = stack
            .read_topic(
                &case.topic(),
                Isolation::ReadCommitted,
                Duration::from_secs(5),
            )
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_slice(r.key.as_deref()?).ok())
            .collect();
        if keys.len() >= 2 || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    ensure!(
        keys == [
            json!({"qty": 5, "note": "first"}),
            json!({"qty": 6, "note": "second"})
        ],
        "{keys:?}"
    );
    println!("keys from message.key.columns: {keys:?}");
    Ok(())
}

/// Debezium's ExtractNewRecordState on the source: the topic holds rows, not envelopes;
/// a delete leaves its tombstone only (the SMT's default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_new_record_state_turns_events_into_rows() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgsmt",
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE orders (id int PRIMARY KEY, qty int, note text, mood mood)",
    )
    .await?;
    let db = &case.db;
    let connector = case.connector_file(&[
        ("transforms", "unwrap"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        ("transforms.unwrap.add.fields", "op,table"),
    ])?;
    let mut w = case.streaming_worker(&connector, "w1").await?;
    db.batch_execute(
        "INSERT INTO orders VALUES (1, 5, 'a', 'ok'); UPDATE orders SET qty = 6 WHERE id = 1;
         DELETE FROM orders WHERE id = 1;",
    )
    .await?;
    let topic = case.topic();
    let deadline = Instant::now() + Duration::from_secs(60);
    let values = loop {
        let records = stack
            .read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        let values: Vec<Option<Value>> = records
            .iter()
            .map(|r| {
                r.value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice(v).ok())
            })
            .collect();
        if values.len() >= 3 || Instant::now() > deadline {
            break values;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    let expected = vec![
        Some(
            json!({"id": 1, "qty": 5, "note": "a", "mood": "ok", "__op": "c", "__table": "orders"}),
        ),
        Some(
            json!({"id": 1, "qty": 6, "note": "a", "mood": "ok", "__op": "u", "__table": "orders"}),
        ),
        None,
    ];
    ensure!(values == expected, "{values:?}");
    Ok(())
}

/// A setup that cannot work fails the task at once with the setting at fault: a database
/// that does not exist, a user without REPLICATION, and a publication FOR ALL TABLES that
/// would make PostgreSQL refuse UPDATE and DELETE on a table without a primary key (which
/// is then not created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setups_that_cannot_work_fail_the_task_with_the_setting_at_fault() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(stack, "pgbad", "CREATE TABLE keyless (v int)").await?;
    let role = unique_name("plain").replace('-', "_");
    case.db
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await?;
    let slot = case.slot.clone();
    // (connector, its keys, what the task's failure says, the key validate puts it under)
    let cases = [
        (
            "nodb",
            vec![("database.dbname", "no_such_database")],
            "does not exist",
            "database.dbname",
        ),
        (
            "norepl",
            vec![("database.user", role.as_str())],
            "REPLICATION",
            "database.user",
        ),
        (
            "keyless",
            vec![],
            "public.keyless",
            "publication.autocreate.mode",
        ),
    ];
    let mut files = Vec::new();
    let mut configs = Vec::new();
    for (name, extra, _, _) in &cases {
        let mut c = connector(
            stack.postgres_port,
            &case.database,
            name,
            &format!("{slot}_{name}"),
            extra,
        );
        c["name"] = json!(name);
        files.push(case.dir.write(&format!("{name}.json"), &c.to_string())?);
        let mut config = c["config"].clone();
        config["name"] = json!(name);
        configs.push(config);
    }
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let mut w =
        WorkerProcess::standalone(&case.worker, &paths, case.port, case.dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    // Validate says so first, under the key at fault (it checks against the server).
    for ((name, _, expected, key), config) in cases.iter().zip(&configs) {
        let (code, text) = w.request(
            "PUT",
            "/connector-plugins/PostgresConnector/config/validate",
            Some(config),
        )?;
        ensure!(code == 200, "{name}: validate {code} {text}");
        let infos: Value = serde_json::from_str(&text)?;
        let errors: Vec<String> = infos["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["value"]["name"] == *key)
            .flat_map(|c| c["value"]["errors"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        ensure!(
            infos["error_count"].as_u64() >= Some(1) && errors.iter().any(|e| e.contains(expected)),
            "{name}: validate did not name {key} with {expected:?}: {errors:?}, {} errors in all",
            infos["error_count"]
        );
    }
    for (name, _, expected, _) in &cases {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, s) = w.get_json(&format!("/connectors/{name}/status"))?;
            let task = &s["tasks"][0];
            if task["state"] == "FAILED" {
                let trace = task["trace"].as_str().unwrap_or_default();
                ensure!(trace.contains(expected), "{name}: {trace}");
                println!("{name}: {}", trace.lines().next().unwrap_or_default());
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{name} not FAILED: {s}\n{}",
                w.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let publications: i64 = case
        .db
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await?
        .get(0);
    ensure!(publications == 0, "a publication was created");
    w.terminate(Duration::from_secs(30))?;
    Ok(())
}

/// Under REPLICA IDENTITY FULL the server sends whole old rows: updates and deletes carry
/// the full `before`, and the key is still the primary key alone (Debezium's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_gives_whole_before_rows_and_a_primary_key() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgfull",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         ALTER TABLE orders REPLICA IDENTITY FULL;",
    )
    .await?;
    let db = &case.db;
    let file = case.connector_file(&[])?;
    let mut w = case.streaming_worker(&file, "w").await?;
    db.batch_execute(
        "INSERT INTO orders VALUES (1, 5, 'a'); UPDATE orders SET qty = 6 WHERE id = 1;
         DELETE FROM orders WHERE id = 1;",
    )
    .await?;
    let topic = case.topic();
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = stack
            .read_topic(&topic, Isolation::ReadCommitted, Duration::from_secs(10))
            .unwrap_or_default();
        if records.len() >= 4 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    ensure!(records.len() == 4, "{} records", records.len());
    for r in &records {
        let key: Value = serde_json::from_slice(r.key.as_deref().unwrap_or_default())?;
        ensure!(key == json!({"id": 1}), "key {key}");
    }
    let value = |i: usize| -> Result<Value> {
        Ok(serde_json::from_slice(
            records[i].value.as_deref().unwrap_or_default(),
        )?)
    };
    ensure!(
        value(1)?["before"] == json!({"id": 1, "qty": 5, "note": "a"}),
        "{}",
        value(1)?
    );
    ensure!(
        value(2)?["before"] == json!({"id": 1, "qty": 6, "note": "a"}),
        "{}",
        value(2)?
    );
    ensure!(records[3].value.is_none(), "no tombstone after the delete");
    // Each change carries its own LSN, also as the second element of `sequence`.
    let mut last = 0;
    for i in 0..3 {
        let v = value(i)?;
        let lsn = v["source"]["lsn"].as_i64().unwrap_or_default();
        ensure!(lsn > last, "source.lsn {lsn} after {last}: {v}");
        let sequence: Value =
            serde_json::from_str(v["source"]["sequence"].as_str().unwrap_or("[]"))?;
        ensure!(
            sequence[1] == json!(lsn.to_string()),
            "sequence {sequence} for lsn {lsn}"
        );
        last = lsn;
    }
    Ok(())
}

/// Waits until the task has created `slot` (the task reports RUNNING before that).
async fn slot_created(db: &tokio_postgres::Client, slot: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .is_none()
    {
        ensure!(
            Instant::now() < deadline,
            "slot {slot} not created within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What `orders`' topic says: its final state (last `after` per key, deletes applied), the
/// snapshot's reads, and the keys first seen as an update (rows updated after the
/// consistent point, which a resumed snapshot leaves to streaming).
struct Rebuilt {
    state: std::collections::BTreeMap<i64, Value>,
    reads: usize,
    first_updated: usize,
}

fn rebuild(stack: &sluice_testkit::Stack, topic: &str) -> Result<Rebuilt> {
    let mut out = Rebuilt {
        state: std::collections::BTreeMap::new(),
        reads: 0,
        first_updated: 0,
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in stack.read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(30))? {
        let key: Value = serde_json::from_slice(r.key.as_deref().unwrap_or_default())?;
        let id = key["id"].as_i64().unwrap_or_default();
        let Some(bytes) = r.value.as_deref() else {
            out.state.remove(&id);
            continue;
        };
        let v: Value = serde_json::from_slice(bytes)?;
        let op = v["op"].as_str();
        if seen.insert(id) && op == Some("u") {
            out.first_updated += 1;
        }
        match op {
            Some("d") => {
                out.state.remove(&id);
            }
            Some(op) => {
                if op == "r" {
                    out.reads += 1;
                    ensure!(v["source"]["snapshot"] == "true", "{v}");
                }
                out.state.insert(id, v["after"].clone());
            }
            None => bail!("no op: {v}"),
        }
    }
    Ok(out)
}

/// Rebuilds `orders` from `topic` until it equals `expected` or `seconds` have passed; the
/// last rebuild.
async fn settled(
    stack: &sluice_testkit::Stack,
    topic: &str,
    expected: &std::collections::BTreeMap<i64, Value>,
    seconds: u64,
) -> Result<Rebuilt> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let got = rebuild(stack, topic)?;
        if got.state == *expected || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `snapshot.mode=initial`: the rows already there are read as `r` events (each once, in
/// chunks of `snapshot.fetch.size`) inside the slot's exported snapshot, then streaming
/// goes on from its consistent point; writes made meanwhile are not lost. Rebuilt from
/// the topic, the table equals the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_snapshot_then_streaming_rebuilds_the_table() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgsnap",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         INSERT INTO orders SELECT g, g % 7, 'row ' || g FROM generate_series(1, 2500) g;
         CREATE TABLE events (n int, v text);
         ALTER TABLE events REPLICA IDENTITY FULL;
         INSERT INTO events SELECT g, repeat('e', g % 50) FROM generate_series(1, 3000) g;
         ANALYZE events;",
    )
    .await?;
    let db = &case.db;
    // Three readers: key ranges of `orders` and block ranges of the keyless `events` are
    // read in parallel, inside the one exported snapshot.
    let file = case.connector_file(&[
        ("snapshot.mode", "initial"),
        ("snapshot.fetch.size", "400"),
        ("snapshot.max.threads", "3"),
        ("table.include.list", "public.orders,public.events"),
    ])?;
    let mut w = case.worker_with(&file, "w")?;
    running(&w, "pg")?;
    // Writes once the slot (and with it the snapshot's consistent point) exists: while the
    // snapshot runs or right after it. The snapshot reads the 2,500 rows of before.
    slot_created(db, &case.slot).await?;
    db.batch_execute(
        "UPDATE orders SET qty = 100 WHERE id % 10 = 0;
         DELETE FROM orders WHERE id % 13 = 0;
         INSERT INTO orders SELECT g, 1, 'new ' || g FROM generate_series(3001, 3100) g;
         UPDATE events SET v = 'changed' WHERE n % 100 = 0;",
    )
    .await?;
    streaming(db, &case.slot).await?;
    let expected: std::collections::BTreeMap<i64, Value> = db
        .query("SELECT id, qty, note FROM orders", &[])
        .await?
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let qty: i32 = r.get(1);
            let note: String = r.get(2);
            (i64::from(id), json!({"id": id, "qty": qty, "note": note}))
        })
        .collect();
    let topic = case.topic();
    let Rebuilt {
        state,
        reads,
        first_updated,
    } = settled(stack, &topic, &expected, 90).await?;
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    ensure!(
        state == expected,
        "rebuilt {} rows, the table has {}\n{}",
        state.len(),
        expected.len(),
        w.log_text()
    );
    // Inside the exported snapshot: every row read, none first seen as an update.
    ensure!(
        reads == 2500 && first_updated == 0,
        "{reads} snapshot reads of 2500 rows, {first_updated} first seen updated"
    );
    // The keyless table: each row of before read once (3,000 `r`), then its 30 updates.
    let events = stack.read_topic(
        &format!("{}.public.events", case.prefix),
        Isolation::ReadCommitted,
        Duration::from_secs(30),
    )?;
    let mut read: Vec<i64> = Vec::new();
    let mut updated = 0;
    for r in &events {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        match v["op"].as_str() {
            Some("r") => read.push(v["after"]["n"].as_i64().unwrap_or_default()),
            Some("u") => {
                ensure!(v["after"]["v"] == "changed", "{v}");
                updated += 1;
            }
            _ => bail!("unexpected event {v}"),
        }
    }
    read.sort_unstable();
    ensure!(
        read == (1..=3000).collect::<Vec<i64>>() && updated == 30,
        "events: {} reads ({} distinct), {updated} updates",
        read.len(),
        read.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    println!(
        "{reads} rows read by the snapshot once each; rebuilt table equal ({} rows); keyless table read once in block ranges",
        state.len()
    );
    Ok(())
}

/// The slot dropped while the connector was stopped (a cleanup, a failover that lost it):
/// the changes after the committed offset are gone. With `snapshot.mode=initial` the task
/// fails and says so, naming `slot.name` and the way out; with `when_needed` it takes a new
/// slot and snapshot by itself, and the topic is back to the database's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_fails_the_task_or_with_when_needed_takes_a_new_snapshot() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pglost",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         INSERT INTO orders SELECT g, 1, 'a' FROM generate_series(1, 100) g;",
    )
    .await?;
    let db = &case.db;
    let topic = case.topic();
    let table = || async {
        let rows = db.query("SELECT id, qty, note FROM orders", &[]).await?;
        anyhow::Ok(
            rows.iter()
                .map(|r| {
                    let (id, qty, note): (i32, i32, String) = (r.get(0), r.get(1), r.get(2));
                    (i64::from(id), json!({"id": id, "qty": qty, "note": note}))
                })
                .collect::<std::collections::BTreeMap<i64, Value>>(),
        )
    };
    let when_needed = case.connector_file(&[("snapshot.mode", "when_needed")])?;
    let mut w = case.worker_with(&when_needed, "w1")?;
    running(&w, "pg")?;
    slot_created(db, &case.slot).await?;
    streaming(db, &case.slot).await?;
    db.batch_execute("UPDATE orders SET qty = 2 WHERE id <= 10")
        .await?;
    let got = settled(stack, &topic, &table().await?, 90).await?;
    ensure!(got.state == table().await?, "{}", w.log_text());
    w.terminate(Duration::from_secs(30))?;
    // Lost: the slot goes, and the database changes meanwhile.
    case.drop_slot().await?;
    db.batch_execute(
        "UPDATE orders SET qty = 3 WHERE id > 90;
         INSERT INTO orders SELECT g, 4, 'b' FROM generate_series(101, 110) g;",
    )
    .await?;
    let initial = case.connector_file(&[("snapshot.mode", "initial")])?;
    let mut w = case.worker_with(&initial, "w2")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let trace = loop {
        if let Ok((200, s)) = w.get_json("/connectors/pg/status") {
            if s["tasks"][0]["state"] == "FAILED" {
                break s["tasks"][0]["trace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the task did not fail:\n{}",
            w.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        trace.contains("slot.name") && trace.contains("lost") && trace.contains("when_needed"),
        "{trace}"
    );
    w.terminate(Duration::from_secs(30))?;
    let when_needed = case.connector_file(&[("snapshot.mode", "when_needed")])?;
    let mut w = case.worker_with(&when_needed, "w3")?;
    running(&w, "pg")?;
    let expected = table().await?;
    let got = settled(stack, &topic, &expected, 90).await?;
    let (_, metrics) = sluice_testkit::http_get(case.port, "/metrics")?;
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    ensure!(
        got.state == expected,
        "after the new snapshot: {} rows, the table has {}",
        got.state.len(),
        expected.len()
    );
    // The first snapshot's 100 rows, then the new one's 110.
    ensure!(got.reads == 210, "{} snapshot reads", got.reads);
    ensure!(
        metrics.contains("sluice_postgres_resnapshots_total"),
        "no new snapshot counted"
    );
    println!("a lost slot: initial fails the task ({trace}); when_needed took a new snapshot, table equal");
    Ok(())
}

/// The worker killed (SIGKILL) in the middle of the snapshot: the next start resumes after
/// the last key committed with the rows, reading only rows the first snapshot saw, so no
/// row is read twice, and streaming from the consistent point brings what changed
/// meanwhile (a row updated since arrives as its update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_midway_resumes_after_its_last_committed_key() -> Result<()> {
    const ROWS: usize = 40_000;
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgsnapkill",
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         INSERT INTO orders SELECT g, g % 7, 'row ' || g FROM generate_series(1, {ROWS}) g;"
        ),
    )
    .await?;
    let db = &case.db;
    let file =
        case.connector_file(&[("snapshot.mode", "initial"), ("snapshot.fetch.size", "500")])?;
    let topic = case.topic();
    let mut w = case.worker_with(&file, "w1")?;
    kill_mid_snapshot(stack, &mut w, &topic, 3000, ROWS).await?;
    db.batch_execute(
        "UPDATE orders SET qty = 100 WHERE id % 1000 = 0; DELETE FROM orders WHERE id = 7;",
    )
    .await?;
    let mut w = case.worker_with(&file, "w2")?;
    running(&w, "pg")?;
    let expected: std::collections::BTreeMap<i64, Value> = db
        .query("SELECT id, qty, note FROM orders", &[])
        .await?
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let qty: i32 = r.get(1);
            let note: String = r.get(2);
            (i64::from(id), json!({"id": id, "qty": qty, "note": note}))
        })
        .collect();
    let Rebuilt {
        state,
        reads,
        first_updated,
    } = settled(stack, &topic, &expected, 120).await?;
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    ensure!(
        state == expected,
        "rebuilt {} rows, the table has {}",
        state.len(),
        expected.len()
    );
    // Each row read once, or, updated after the kill before the resumed snapshot got to
    // it, arriving as its update only; row 7, deleted after the kill, read before it or
    // not at all.
    let accounted = reads + first_updated;
    ensure!(
        accounted == ROWS || accounted == ROWS - 1,
        "{reads} snapshot reads and {first_updated} rows first seen updated, of {ROWS} rows (a row read twice, or one missing)"
    );
    println!(
        "{reads} snapshot reads across a kill; rebuilt table equal ({} rows)",
        state.len()
    );
    Ok(())
}

/// The tables of `publication`, as `schema.table`, sorted.
async fn published(db: &tokio_postgres::Client, publication: &str) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
              WHERE pubname = $1 ORDER BY 1",
            &[&publication],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// `publication.autocreate.mode=filtered`: the publication holds the captured tables only
/// (a keyless table left out keeps taking UPDATE and DELETE), and follows
/// `table.include.list` when the connector starts again with a longer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_publication_holds_the_captured_tables_only() -> Result<()> {
    let stack = stack()?;
    let case = PgCase::new(
        stack,
        "pgfilt",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE other (id int PRIMARY KEY, qty int, note text);
         CREATE TABLE keyless (v int);
         INSERT INTO keyless VALUES (1);",
    )
    .await?;
    let publication = format!("{}_pub", case.slot);
    let file = case.connector_file(&[("publication.autocreate.mode", "filtered")])?;
    let mut w = case.streaming_worker(&file, "w1").await?;
    ensure!(
        published(&case.db, &publication).await? == ["public.orders"],
        "published: {:?}",
        published(&case.db, &publication).await?
    );
    // Not published: PostgreSQL still takes its UPDATE and DELETE.
    case.db
        .batch_execute("UPDATE keyless SET v = 2; DELETE FROM keyless")
        .await?;
    case.db
        .batch_execute("INSERT INTO orders VALUES (1, 1, 'a')")
        .await?;
    let got = events_at_least(stack, &case.topic(), 1, 30).await;
    ensure!(got == [Some(("c".to_owned(), 1))], "{got:?}");
    w.terminate(Duration::from_secs(30))?;

    let file = case.connector_file(&[
        ("publication.autocreate.mode", "filtered"),
        ("table.include.list", "public.orders,public.other"),
    ])?;
    let _w = case.streaming_worker(&file, "w2").await?;
    ensure!(
        published(&case.db, &publication).await? == ["public.orders", "public.other"],
        "published after the include list grew: {:?}",
        published(&case.db, &publication).await?
    );
    case.db
        .batch_execute("INSERT INTO other VALUES (7, 1, 'b')")
        .await?;
    let other = format!("{}.public.other", case.prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = stack
            .read_topic(&other, Isolation::ReadCommitted, Duration::from_secs(5))
            .map_or(0, |r| r.len());
        if n >= 1 {
            break;
        }
        ensure!(Instant::now() < deadline, "no event of the table added");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
