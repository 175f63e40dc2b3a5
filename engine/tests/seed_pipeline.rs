//! The seed pipeline end to end, with real processes: a REST-managed worker takes the seed's
//! two connector bodies (the syslog source and the Elasticsearch sink, with Confluent's class
//! names and keys; only the port, topic and URL are this test's own), util-linux `logger`
//! sends RFC 3164, RFC 5424 and octet-counted messages, and each one is found in OpenSearch
//! with the seed's fields and an `_id` of `topic+partition+offset`. Then the seed's own path:
//! a local rsyslog forwarding everything with the seed's `*.* @@host:port` line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::{state_topics, worker_properties, TempDir, WorkerProcess};
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::SearchParts;
use serde_json::{json, Value};
use sluice_testkit::{free_port, stack, unique_name, Stack};

/// A REST-managed worker with the seed's two connectors created from their verbatim bodies
/// (only port, topic and URL are the test's own); returns it with the topic and the port.
fn seed_worker(stack: &Stack, dir: &TempDir) -> Result<(WorkerProcess, String, u16)> {
    let topic = unique_name("syslog-tcp");
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
        ensure!(status == 201, "{text}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", syslog)).is_err() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((w, topic, syslog))
}

/// The documents of `index` once there are `n` (or after 90 s, what there is).
async fn documents(stack: &Stack, index: &str, n: usize) -> Result<Vec<Value>> {
    let client = stack.opensearch()?;
    let mut hits: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while hits.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[index]))
            .send()
            .await;
        let Ok(response) = client
            .search(SearchParts::Index(&[index]))
            .body(json!({"query": {"match_all": {}}, "size": 100}))
            .send()
            .await
        else {
            continue;
        };
        let body: Value = response.json().await.unwrap_or_default();
        hits = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
    }
    Ok(hits)
}

/// The hit whose message contains `text`.
fn hit_with(hits: &[Value], text: &str) -> Value {
    hits.iter()
        .find(|h| {
            h["_source"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))
        })
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_to_opensearch_through_the_seeds_connectors() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("seed")?;
    let (mut w, topic, syslog) = seed_worker(stack, &dir)?;
    let marker = unique_name("seed-msg");
    for (form, n) in [("--rfc3164", 1), ("--rfc5424", 2), ("--octet-count", 3)] {
        let status = Command::new("logger")
            .args(["--tcp", "-n", "127.0.0.1", "-P", &syslog.to_string(), form])
            .arg(format!("{marker} number {n}"))
            .status()?;
        ensure!(status.success(), "logger {form}: {status}");
    }

    let index = topic.to_lowercase();
    let hits = documents(stack, &index, 3).await?;
    let (_, status) = w.get_json("/connectors/elasticsearch-sink/status")?;
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(
        hits.len(),
        3,
        "hits {hits:?}; sink {status}; log:\n{}",
        w.log_text()
    );
    for n in 1..=3 {
        let hit = hit_with(&hits, &format!("{marker} number {n}"));
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

/// The seed's own path: programs log to the local rsyslog (here on its own socket), whose
/// `*.* @@host:port` line (the seed's, legacy syntax) forwards everything over TCP.
#[tokio::test(flavor = "multi_thread")]
async fn rsyslog_forwarding_as_in_the_seed() -> Result<()> {
    let stack = stack()?;
    let dir = TempDir::new("seed-rsyslog")?;
    let (mut w, topic, syslog) = seed_worker(stack, &dir)?;
    let socket = dir.0.join("log.sock");
    let work = dir.0.join("rsyslog-work");
    std::fs::create_dir_all(&work)?;
    let config = dir.write(
        "rsyslog.conf",
        &format!(
            "global(workDirectory=\"{}\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imuxsock\" Socket=\"{}\")\n\
             *.* @@127.0.0.1:{syslog}\n",
            work.display(),
            socket.display()
        ),
    )?;
    let rsyslogd = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&config)
        .arg("-i")
        .arg(dir.0.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("rsyslog.log"))?)
        .spawn()
        .context("starting rsyslogd (deploy/local/install-deps installs rsyslog)")?;
    let _rsyslogd = Reaped(rsyslogd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        ensure!(Instant::now() < deadline, "rsyslogd made no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let marker = unique_name("via-rsyslog");
    for n in 1..=3 {
        let status = Command::new("logger")
            .arg("-u")
            .arg(&socket)
            .args(["-t", "seedapp", "-p", "local3.warning"])
            .arg(format!("{marker} line {n}"))
            .status()?;
        ensure!(status.success(), "logger -u: {status}");
    }
    let index = topic.to_lowercase();
    let hits = documents(stack, &index, 3).await?;
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(
        hits.len(),
        3,
        "hits {hits:?}; rsyslog: {}; log:\n{}",
        std::fs::read_to_string(dir.0.join("rsyslog.log")).unwrap_or_default(),
        w.log_text()
    );
    for n in 1..=3 {
        let hit = hit_with(&hits, &format!("{marker} line {n}"));
        let doc = &hit["_source"];
        // local3.warning (rsyslog would rewrite kern from a local socket to user).
        assert_eq!(
            (doc["facility"].clone(), doc["level"].clone()),
            (json!(19), json!(4)),
            "{doc}"
        );
        assert_eq!(doc["hostname"], "localhost", "{doc}");
        assert!(
            doc["message"]
                .as_str()
                .unwrap_or_default()
                .contains("seedapp"),
            "{doc}"
        );
    }
    Ok(())
}

/// Kills and reaps a child process when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
