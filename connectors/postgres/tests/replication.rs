//! The replication session against the local stack's PostgreSQL 15: real pgoutput
//! messages decode (relation, insert, update with an unchanged TOASTed column, delete with
//! the old key), and a stream started after a transaction's end LSN does not replay it.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sluice_connector_postgres::pgoutput::{Datum, Lsn, Message, ReplicaIdentity};
use sluice_connector_postgres::replication::{drop_slot, ensure_slot, Event, Session, Stream};
use sluice_testkit::{stack, unique_name};

/// The data messages of the next `commits` transactions (keepalives skipped).
async fn transactions(stream: &mut Stream, commits: usize) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < commits {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("no replication event within 30 s")??;
        match event {
            Some(Event::Data(m) | Event::Change { message: m, .. }) => {
                if matches!(m, Message::Commit { .. }) {
                    seen += 1;
                }
                out.push(m);
            }
            Some(Event::Idle { .. }) => {}
            None => bail!("the stream ended"),
        }
    }
    Ok(out)
}

fn text(v: &str) -> Datum {
    Datum::Text(v.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_decode_and_a_restart_after_an_end_lsn_replays_nothing() -> Result<()> {
    let stack = stack()?;
    let (database, db) = stack.create_database("cdc").await?;
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL;
         CREATE PUBLICATION sluice_pub FOR TABLE orders;",
    )
    .await?;
    let slot = unique_name("slot").replace('-', "_");
    let created = ensure_slot(&db, &slot).await?;
    assert!(created.is_some(), "the slot was not created");
    assert_eq!(ensure_slot(&db, &slot).await?, None, "created twice");
    let session = Session {
        host: "127.0.0.1".into(),
        port: stack.postgres_port,
        user: "postgres".into(),
        password: String::new(),
        database,
        slot: slot.clone(),
        publication: "sluice_pub".into(),
    };
    // An external (TOASTed, uncompressed) value over 2 kB: unchanged by the update below.
    let long = "x".repeat(5000);
    db.execute("INSERT INTO orders VALUES (1, 10, $1)", &[&long])
        .await?;
    db.batch_execute("UPDATE orders SET qty = 11 WHERE id = 1")
        .await?;
    db.batch_execute("DELETE FROM orders WHERE id = 1").await?;

    let mut stream = Stream::start(&session, Lsn(0)).await?;
    let got = transactions(&mut stream, 3).await?;
    let relation = got.iter().find_map(|m| match m {
        Message::Relation(r) => Some(r.clone()),
        _ => None,
    });
    let relation = relation.context("no Relation message")?;
    assert_eq!(
        (relation.schema.as_str(), relation.name.as_str()),
        ("public", "orders")
    );
    assert_eq!(relation.identity, ReplicaIdentity::Default);
    let keys: Vec<(&str, bool)> = relation
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.key))
        .collect();
    assert_eq!(keys, [("id", true), ("qty", false), ("note", false)]);

    let changes: Vec<&Message> = got
        .iter()
        .filter(|m| {
            matches!(
                m,
                Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
            )
        })
        .collect();
    assert_eq!(changes.len(), 3, "{got:?}");
    assert!(
        matches!(changes[0], Message::Insert { new, .. } if *new == vec![text("1"), text("10"), text(&long)])
    );
    assert!(
        matches!(changes[1], Message::Update { old: None, new, .. } if *new == vec![text("1"), text("11"), Datum::UnchangedToast]),
        "{:?}",
        changes[1]
    );
    assert!(
        matches!(changes[2], Message::Delete { old, old_is_key_only: true, .. } if *old == vec![text("1"), Datum::Null, Datum::Null]),
        "{:?}",
        changes[2]
    );
    let ends: Vec<Lsn> = got
        .iter()
        .filter_map(|m| match m {
            Message::Commit { end_lsn, .. } => Some(*end_lsn),
            _ => None,
        })
        .collect();
    stream.stop().await?;

    // Resumed after the second transaction's end: the delete comes first, the rest never.
    db.batch_execute("INSERT INTO orders VALUES (2, 20, 'short')")
        .await?;
    let mut stream = Stream::start(&session, ends[1]).await?;
    let again = transactions(&mut stream, 2).await?;
    let changes: Vec<&Message> = again
        .iter()
        .filter(|m| {
            matches!(
                m,
                Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. }
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{again:?}");
    assert!(matches!(changes[0], Message::Delete { .. }), "{again:?}");
    assert!(matches!(changes[1], Message::Insert { new, .. } if new[0] == text("2")));
    stream.stop().await?;
    drop_slot(&db, &slot).await?;
    Ok(())
}

/// Real pgoutput text output of each covered type maps to Debezium's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_row_of_each_covered_type_maps_to_debeziums_values() -> Result<()> {
    use sluice_connector_postgres::types::{
        DecimalMode, Extensions, HstoreMode, Mapping, TimeMode,
    };
    use sluice_proto::Value;

    let stack = stack()?;
    let (database, db) = stack.create_database("cdc_types").await?;
    db.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, ok boolean, n numeric(10,2), free numeric,
            m money, d date, t3 time(3), t6 time, ts3 timestamp(3), ts6 timestamp,
            tz timestamptz, b bytea, u uuid, j jsonb, r real, ia int[], ta text[], iv interval);
         CREATE PUBLICATION p FOR TABLE t;",
    )
    .await?;
    let slot = unique_name("slot").replace('-', "_");
    ensure_slot(&db, &slot).await?;
    db.batch_execute(
        "SET TIME ZONE 'Asia/Kolkata';
         INSERT INTO t VALUES (7, true, 1234.5, -12.345, 1000.05, '2024-03-05', '01:00:00.5',
            '01:00:00.000001', '1970-01-02 00:00:00.25', '1969-12-31 23:59:59.999999',
            '2024-03-05 13:45:06.5+05:30', '\\x0aff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{\"k\": [1, 2]}', 1.5, '{1,NULL,3}', ARRAY['a', 'b,c', NULL, 'd\"e'],
            '1 day -01:00:00.5');",
    )
    .await?;
    let session = Session {
        host: "127.0.0.1".into(),
        port: stack.postgres_port,
        user: "postgres".into(),
        password: String::new(),
        database,
        slot: slot.clone(),
        publication: "p".into(),
    };
    let mut stream = Stream::start(&session, Lsn(0)).await?;
    let got = transactions(&mut stream, 1).await?;
    stream.stop().await?;
    drop_slot(&db, &slot).await?;
    let relation = got
        .iter()
        .find_map(|m| match m {
            Message::Relation(r) => Some(r.clone()),
            _ => None,
        })
        .context("no Relation")?;
    let row = got
        .iter()
        .find_map(|m| match m {
            Message::Insert { new, .. } => Some(new.clone()),
            _ => None,
        })
        .context("no Insert")?;
    let mapping = Mapping {
        decimal: DecimalMode::Precise,
        time: TimeMode::Adaptive,
        unknown: false,
        hstore: HstoreMode::Json,
        extensions: Extensions::NONE,
    };
    let mut values = Vec::new();
    for (column, datum) in relation.columns.iter().zip(&row) {
        let Datum::Text(text) = datum else {
            bail!("{}: {datum:?}", column.name)
        };
        values.push((column.name.clone(), mapping.value(column, text)?));
    }
    let expected = vec![
        ("id", Value::Int64(7)),
        ("ok", Value::Boolean(true)),
        ("n", Value::Bytes(vec![0x01, 0xE2, 0x3A])),
        (
            "free",
            Value::Struct(vec![
                ("scale".into(), Value::Int32(3)),
                ("value".into(), Value::Bytes(vec![0xCF, 0xC7])),
            ]),
        ),
        ("m", Value::Bytes(vec![0x01, 0x86, 0xA5])),
        ("d", Value::Int32(19_787)),
        ("t3", Value::Int32(3_600_500)),
        ("t6", Value::Int64(3_600_000_001)),
        ("ts3", Value::Int64(86_400_250)),
        ("ts6", Value::Int64(-1)),
        ("tz", Value::String("2024-03-05T08:15:06.500000Z".into())),
        ("b", Value::Bytes(vec![0x0a, 0xff])),
        (
            "u",
            Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        ("j", Value::String("{\"k\": [1, 2]}".into())),
        ("r", Value::Float32(1.5)),
        (
            "ia",
            Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(3)]),
        ),
        (
            "ta",
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("b,c".into()),
                Value::Null,
                Value::String("d\"e".into()),
            ]),
        ),
        ("iv", Value::Int64(82_799_500_000)),
    ];
    let expected: Vec<(String, Value)> = expected
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    assert_eq!(values, expected);
    Ok(())
}
