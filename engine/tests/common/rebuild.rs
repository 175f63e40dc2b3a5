//! A table rebuilt from its topic of Debezium change events (last row per key, deletes
//! applied; a keyless table as a multiset of rows), and the same table as PostgreSQL has
//! it, to compare the two.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use sluice_testkit::{Isolation, Stack};

/// The events of a topic, decoded (tombstones as `None`).
pub fn decoded(stack: &Stack, topic: &str) -> Result<Vec<(Value, Option<Value>)>> {
    stack
        .read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(30))?
        .iter()
        .map(|r| {
            let key = match r.key.as_deref() {
                Some(k) => serde_json::from_slice(k)?,
                None => Value::Null,
            };
            let value = r.value.as_deref().map(serde_json::from_slice).transpose()?;
            Ok((key, value))
        })
        .collect()
}

/// What a table's topic says: the rebuilt rows (by key, or for a keyless table by the row
/// itself, counted), the number of `r` events, and the change events seen twice.
pub struct Rebuilt {
    pub rows: BTreeMap<String, (Value, usize)>,
    pub reads: usize,
    pub repeated: usize,
    /// Keys read twice by the snapshot.
    pub read_twice: usize,
    /// Keys first seen as an update: rows updated after the snapshot's consistent point,
    /// which a resumed snapshot leaves to streaming.
    pub first_updated: usize,
}

pub fn rebuild(stack: &Stack, topic: &str, columns: &[&str]) -> Result<Rebuilt> {
    let pick =
        |row: &Value| -> Value { Value::Array(columns.iter().map(|c| row[*c].clone()).collect()) };
    let mut out = Rebuilt {
        rows: BTreeMap::new(),
        reads: 0,
        repeated: 0,
        read_twice: 0,
        first_updated: 0,
    };
    let mut seen = BTreeSet::new();
    let (mut keys, mut read) = (BTreeSet::new(), BTreeSet::new());
    for (key, value) in decoded(stack, topic)? {
        let Some(v) = value else {
            out.rows.remove(&key.to_string());
            continue;
        };
        let op = v["op"].as_str().context("no op")?;
        if !key.is_null() && keys.insert(key.to_string()) && op == "u" {
            out.first_updated += 1;
        }
        if op == "r" {
            out.reads += 1;
            if !key.is_null() && !read.insert(key.to_string()) {
                out.read_twice += 1;
            }
        } else {
            // A change is identified by its commit's position and its place in it.
            let id = (
                v["source"]["lsn"].to_string(),
                v["source"]["sequence"].to_string(),
                key.to_string(),
                op.to_owned(),
            );
            if !seen.insert(id) {
                out.repeated += 1;
            }
        }
        if key.is_null() {
            // Keyless (insert only): a multiset of rows.
            let row = pick(&v["after"]).to_string();
            out.rows.entry(row).or_insert((Value::Null, 0)).1 += 1;
        } else if op == "d" {
            out.rows.remove(&key.to_string());
        } else {
            out.rows.insert(key.to_string(), (pick(&v["after"]), 1));
        }
    }
    Ok(out)
}

/// The table as PostgreSQL has it, in the rebuilt form.
pub async fn table(
    db: &tokio_postgres::Client,
    sql: &str,
    keyed: bool,
) -> Result<BTreeMap<String, (Value, usize)>> {
    let mut out = BTreeMap::new();
    for row in db.query(sql, &[]).await? {
        let values: Vec<Value> = (0..row.len())
            .map(|i| Value::from(row.get::<_, i64>(i)))
            .collect();
        if keyed {
            let key = serde_json::json!({ row.columns()[0].name(): values[0] }).to_string();
            out.insert(key, (Value::Array(values), 1));
        } else {
            out.entry(Value::Array(values).to_string())
                .or_insert((Value::Null, 0))
                .1 += 1;
        }
    }
    Ok(out)
}
