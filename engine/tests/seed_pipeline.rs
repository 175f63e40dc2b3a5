//! The seed pipeline end to end, with real processes: a REST-managed worker takes the seed's
//! two connector bodies (the syslog source and the Elasticsearch sink, with Confluent's class
//! names and keys; only the port, topic and URL are this test's own), util-linux `logger`
//! sends RFC 3164, RFC 5424 and octet-counted messages, and each one is found in OpenSearch
//! with the seed's fields and an `_id` of `topic+partition+offset`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::{state_topics, worker_properties, TempDir, WorkerProcess};
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::SearchParts;
use serde_json::{json, Value};
use sluice_testkit::{free_port, stack, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn logger_to_opensearch_through_the_seeds_connectors() -> Result<()> {
    let stack = stack()?;
    let topic = unique_name("syslog-tcp");
    let dir = TempDir::new("seed")?;
    let (rest, syslog) = (free_port()?, free_port()?);
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            rest,
            &unique_name("seed"),
            &unique_name("seed-offsets"),
            &format!("{}offset.flush.interval.ms=500\n", state_topics("seed")),
        ),
    )?;
    let mut w = WorkerProcess::distributed(&worker, rest, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let source = json!({"name": "tcpsyslog", "config": {
        "tasks.max": 1,
        "connector.class": "io.confluent.kafka.connect.syslog.source.TCPSyslogSourceConnector",
        "kafka.topic": topic, "syslog.port": syslog, "syslog.reverse.dns.remote.ip": true}});
    let sink = json!({"name": "elasticsearch-sink", "config": {
        "connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
        "tasks.max": 1, "topics": topic, "key.ignore": true,
        "connection.url": stack.opensearch_url, "type.name": "kafka-connect"}});
    for body in [&source, &sink] {
        let (status, text) = w.request("POST", "/connectors", Some(body))?;
        assert_eq!(status, 201, "{text}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", syslog)).is_err() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let marker = unique_name("seed-msg");
    for (form, n) in [("--rfc3164", 1), ("--rfc5424", 2), ("--octet-count", 3)] {
        let status = Command::new("logger")
            .args(["--tcp", "-n", "127.0.0.1", "-P", &syslog.to_string(), form])
            .arg(format!("{marker} number {n}"))
            .status()?;
        ensure!(status.success(), "logger {form}: {status}");
    }

    let client = stack.opensearch()?;
    let index = topic.to_lowercase();
    let mut hits: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while hits.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&index]))
            .send()
            .await;
        let Ok(response) = client
            .search(SearchParts::Index(&[&index]))
            .body(json!({"query": {"match_all": {}}, "size": 100}))
            .send()
            .await
        else {
            continue;
        };
        let body: Value = response.json().await.unwrap_or_default();
        hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
    }
    let (_, status) = w.get_json("/connectors/elasticsearch-sink/status")?;
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(
        hits.len(),
        3,
        "hits {hits:?}; sink {status}; log:\n{}",
        w.log_text()
    );
    for n in 1..=3 {
        let hit = hits
            .iter()
            .find(|h| {
                h["_source"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("{marker} number {n}")))
            })
            .cloned()
            .unwrap_or_default();
        let doc = &hit["_source"];
        assert_eq!(hit["_index"], json!(index), "{hit}");
        let id = hit["_id"].as_str().unwrap_or_default();
        assert!(id.starts_with(&format!("{topic}+0+")), "{id}");
        assert_eq!(doc["hostname"], "localhost", "{doc}");
        assert_eq!(doc["charset"], "UTF-8", "{doc}");
        assert!(
            doc["remote_address"]
                .as_str()
                .unwrap_or_default()
                .starts_with("localhost/127.0.0.1:"),
            "{doc}"
        );
        assert!(doc["date"].as_i64().is_some(), "{doc}");
        assert!(
            doc["facility"].is_number() && doc["level"].is_number(),
            "{doc}"
        );
        assert!(doc["host"].is_string(), "{doc}");
    }
    Ok(())
}
