//! The PostgreSQL source's type mapping against golden records: `golden/postgres_types.json`
//! holds, for one row of every covered column type, the field schema and value that
//! Debezium's documentation gives (written from the documentation and, where it is silent,
//! from Debezium's own code and tests: those columns are marked `uncertain` there, with the
//! reason), not from Sluice's output. The row is read once by the snapshot (`r`) and once
//! streamed (`c`); both must match field by field, schema and value, through Kafka
//! Connect's JsonConverter with schemas.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::postgres::{running, streaming, PgCase};
use serde_json::Value;
use sluice_testkit::{stack, Isolation};

/// The `after` field schemas (by name, without `field`) and values of `topic`'s events.
fn events(stack: &sluice_testkit::Stack, topic: &str) -> Result<Vec<(String, Value, Value)>> {
    stack
        .read_topic(topic, Isolation::ReadCommitted, Duration::from_secs(30))?
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_deref().context("a tombstone")?)?;
            let after_schema = v["schema"]["fields"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["field"] == "after"))
                .cloned()
                .context("no after field in the schema")?;
            Ok((
                v["payload"]["op"].as_str().unwrap_or_default().to_owned(),
                after_schema,
                v["payload"]["after"].clone(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_covered_type_matches_debeziums_documented_mapping() -> Result<()> {
    let golden: Value = serde_json::from_str(include_str!("golden/postgres_types.json"))?;
    let setup = golden["setup"].as_str().context("setup")?;
    let insert = golden["insert"].as_str().context("insert")?;
    let stack = stack()?;
    let case = PgCase::new(stack, "pgtypes", &format!("{setup} {insert}")).await?;
    let file = case.connector_file(&[
        ("snapshot.mode", "initial"),
        ("table.include.list", "public.golden"),
        ("value.converter.schemas.enable", "true"),
    ])?;
    let mut w = case.worker_with(&file, "w")?;
    running(&w, "pg")?;
    streaming(&case.db, &case.slot).await?;
    // The same row again, streamed this time.
    case.db
        .batch_execute(&insert.replacen("VALUES (1,", "VALUES (2,", 1))
        .await?;
    let topic = format!("{}.public.golden", case.prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = events(stack, &topic).unwrap_or_default();
        if got.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    w.terminate(Duration::from_secs(30))?;
    case.drop_slot().await?;
    let ops: Vec<&str> = got.iter().map(|(op, _, _)| op.as_str()).collect();
    ensure!(ops == ["r", "c"], "events {ops:?}");
    let mut wrong = Vec::new();
    for (op, schema, after) in &got {
        let fields = schema["fields"]
            .as_array()
            .context("after without fields")?;
        for column in golden["columns"].as_array().context("columns")? {
            let name = column["column"].as_str().context("column")?;
            let mut want_value = column["value"].clone();
            if name == "id" && op == "c" {
                want_value = Value::from(2);
            }
            let field = fields.iter().find(|f| f["field"] == name);
            let got_schema = field.map(|f| {
                let mut f = f.clone();
                if let Some(o) = f.as_object_mut() {
                    o.remove("field");
                }
                f
            });
            if got_schema.as_ref() != Some(&column["schema"]) {
                wrong.push(format!(
                    "{op} {name} schema: got {}, Debezium {}",
                    got_schema.unwrap_or(Value::Null),
                    column["schema"]
                ));
            }
            if after[name] != want_value {
                wrong.push(format!(
                    "{op} {name} value: got {}, Debezium {want_value}",
                    after[name]
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} differences from Debezium's mapping:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!(
        "{} columns match Debezium's documented mapping in the snapshot and in streaming",
        golden["columns"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}
