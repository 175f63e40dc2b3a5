//! Proves the local stack is the real thing: Kafka transactions commit, abort and fence;
//! OpenSearch indexes and searches; PostgreSQL stores and returns rows.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use elasticsearch::{BulkParts, IndexParts, SearchParts};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::{json, Value};
use sluice_testkit::{stack, unique_name, Isolation};

const T: Duration = Duration::from_secs(30);

fn values(records: &[sluice_testkit::Consumed]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn read_committed_sees_only_committed_transactions() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("txn-visibility", 2).await?;
    let txn_id = unique_name("txn-visibility");
    let stack2 = stack.clone();
    let topic2 = topic.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let producer = stack2.transactional_producer(&txn_id)?;
        producer.init_transactions(T)?;

        producer.begin_transaction()?;
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            let value = format!("committed-{i}");
            producer
                .send(BaseRecord::to(&topic2).key(*key).payload(&value))
                .map_err(|(e, _)| e)?;
        }
        producer.commit_transaction(T)?;

        producer.begin_transaction()?;
        for i in 0..2 {
            let value = format!("aborted-{i}");
            producer
                .send(BaseRecord::to(&topic2).key("a").payload(&value))
                .map_err(|(e, _)| e)?;
        }
        // Make sure the aborted records really reached the log before the abort.
        producer.flush(T)?;
        producer.abort_transaction(T)?;
        Ok(())
    })
    .await??;

    let committed = stack.read_topic(&topic, Isolation::ReadCommitted, T)?;
    let mut seen = values(&committed);
    seen.sort();
    assert_eq!(seen, ["committed-0", "committed-1", "committed-2"]);

    let uncommitted = stack.read_topic(&topic, Isolation::ReadUncommitted, T)?;
    let mut seen = values(&uncommitted);
    seen.sort();
    assert_eq!(
        seen,
        [
            "aborted-0",
            "aborted-1",
            "committed-0",
            "committed-1",
            "committed-2"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() -> Result<()> {
    let stack = stack()?.clone();
    let topic = stack.create_topic("txn-fencing", 1).await?;
    let txn_id = unique_name("txn-fencing");
    let reader = stack.clone();
    let topic2 = topic.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let zombie = stack.transactional_producer(&txn_id)?;
        zombie.init_transactions(T)?;
        zombie.begin_transaction()?;
        zombie
            .send(BaseRecord::<(), str>::to(&topic2).payload("from-zombie"))
            .map_err(|(e, _)| e)?;
        zombie.flush(T)?;

        let successor = stack.transactional_producer(&txn_id)?;
        // Fences the zombie and aborts its open transaction.
        successor.init_transactions(T)?;
        successor.begin_transaction()?;
        successor
            .send(BaseRecord::<(), str>::to(&topic2).payload("from-successor"))
            .map_err(|(e, _)| e)?;
        successor.commit_transaction(T)?;

        match zombie.commit_transaction(T) {
            Ok(()) => bail!("the fenced producer committed its transaction"),
            Err(KafkaError::Transaction(e)) => {
                let fenced = matches!(
                    e.code(),
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                );
                if !(e.is_fatal() || fenced) {
                    bail!("expected a fatal fencing error, got {e} ({:?})", e.code());
                }
            }
            Err(other) => bail!("expected a transaction error, got {other}"),
        }
        Ok(())
    })
    .await??;

    let committed = reader.read_topic(&topic, Isolation::ReadCommitted, T)?;
    assert_eq!(values(&committed), ["from-successor"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_bulk_index_then_search() -> Result<()> {
    let stack = stack()?;
    let client = stack.opensearch()?;
    let index = unique_name("docs");
    let body: Vec<elasticsearch::http::request::JsonBody<Value>> = vec![
        json!({"index": {"_id": "syslog-tcp+0+1"}}).into(),
        json!({"host": "alpha", "level": 4, "message": "disk almost full"}).into(),
        json!({"index": {"_id": "syslog-tcp+0+2"}}).into(),
        json!({"host": "beta", "level": 6, "message": "all good"}).into(),
    ];
    let response = client
        .bulk(BulkParts::Index(&index))
        .refresh(elasticsearch::params::Refresh::WaitFor)
        .body(body)
        .send()
        .await
        .context("bulk request")?;
    assert!(response.status_code().is_success());
    let bulk: Value = response.json().await?;
    // Bulk answers 200 even when items fail: check each item.
    assert_eq!(bulk["errors"], json!(false), "{bulk}");
    assert_eq!(bulk["items"].as_array().map(Vec::len), Some(2));

    let response = client
        .search(SearchParts::Index(&[&index]))
        .body(json!({"query": {"match": {"message": "disk"}}}))
        .send()
        .await
        .context("search request")?;
    let found: Value = response.json().await?;
    assert_eq!(found["hits"]["total"]["value"], json!(1), "{found}");
    assert_eq!(found["hits"]["hits"][0]["_id"], json!("syslog-tcp+0+1"));
    assert_eq!(found["hits"]["hits"][0]["_source"]["host"], json!("alpha"));

    // Re-indexing the same _id replaces the document: the basis of effectively-once sinks.
    client
        .index(IndexParts::IndexId(&index, "syslog-tcp+0+1"))
        .refresh(elasticsearch::params::Refresh::WaitFor)
        .body(json!({"host": "alpha", "level": 3, "message": "disk full"}))
        .send()
        .await?
        .error_for_status_code()?;
    let count: Value = client
        .count(elasticsearch::CountParts::Index(&[&index]))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(count["count"], json!(2), "{count}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_round_trip_and_logical_decoding_is_on() -> Result<()> {
    let stack = stack()?;
    let (_name, client) = stack.create_database("roundtrip").await?;
    client
        .batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, body text NOT NULL)")
        .await?;
    for (id, body) in [(1_i64, "one"), (2, "two")] {
        client
            .execute(
                "INSERT INTO events (id, body) VALUES ($1, $2)",
                &[&id, &body],
            )
            .await?;
    }
    let rows = client
        .query("SELECT id, body FROM events ORDER BY id", &[])
        .await?;
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, "one".to_owned()), (2, "two".to_owned())]);

    // The CDC source needs logical decoding.
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    assert_eq!(wal_level, "logical");
    Ok(())
}
