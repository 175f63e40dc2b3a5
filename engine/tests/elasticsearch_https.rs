//! The Elasticsearch sink over https: OpenSearch behind a TLS terminator (socat, with a
//! certificate from a test CA), the sink trusting that CA through Confluent's keys
//! (`elastic.security.protocol=SSL`, `elastic.https.ssl.truststore.location`, type PEM).
//! Every record arrives, in bulks of at most `batch.size`. A truststore in a format the
//! sink does not read fails the task with the key named.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::{opensearch_count, tls_certificates, worker_properties, TempDir, WorkerProcess};
use rdkafka::producer::{BaseRecord, Producer as _};
use serde_json::json;
use sluice_testkit::{free_port, http_get, stack, unique_name};

/// Kills and reaps a child process when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_writes_over_https_trusting_a_pem_ca() -> Result<()> {
    let stack = stack()?;
    let topic = stack.create_topic("es-https", 1).await?;
    let index = topic.to_lowercase();
    let dir = TempDir::new("es-https")?;
    tls_certificates(&dir.0)?;
    let tls_port = free_port()?;
    let upstream = stack
        .opensearch_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let _socat = Reaped(
        Command::new("socat")
            .current_dir(&dir.0)
            .arg(format!(
                "openssl-listen:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"
            ))
            .arg(format!("tcp:{upstream}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting socat (deploy/local/install-deps installs it)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        ensure!(Instant::now() < deadline, "socat is not listening");
        std::thread::sleep(Duration::from_millis(50));
    }

    let producer = stack.producer()?;
    for i in 0..100 {
        let value = json!({"n": i}).to_string();
        producer
            .send(BaseRecord::<[u8], [u8]>::to(&topic).payload(value.as_bytes()))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let port = free_port()?;
    let worker = dir.write(
        "w.properties",
        &worker_properties(
            stack,
            port,
            &unique_name("es-https"),
            &unique_name("es-https-offsets"),
            "",
        ),
    )?;
    let ca = dir.0.join("ca.pem").display().to_string();
    let config = |name: &str, truststore_type: &str| {
        json!({"name": name, "config": {
            "connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
            "topics": topic, "key.ignore": "true",
            "connection.url": format!("https://127.0.0.1:{tls_port}"),
            "elastic.security.protocol": "SSL",
            "elastic.https.ssl.truststore.location": ca,
            "elastic.https.ssl.truststore.type": truststore_type,
            "batch.size": "7", "max.in.flight.requests": "3",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false"}})
        .to_string()
    };
    let good = dir.write("good.json", &config("es-https", "PEM"))?;
    let bad = dir.write("bad.json", &config("es-jks", "JKS"))?;
    let mut w = WorkerProcess::standalone(&worker, &[&good, &bad], port, dir.0.join("w.log"))?;
    w.wait_ready(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while opensearch_count(stack, &index).await < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let total = opensearch_count(stack, &index).await;
    let (_, metrics) = http_get(port, "/metrics")?;
    let (_, bad_status) = w.get_json("/connectors/es-jks/status")?;
    w.terminate(Duration::from_secs(30))?;
    assert_eq!(total, 100, "log:\n{}", w.log_text());

    // 100 records in bulks of at most 7: at least 15 requests.
    let bulks: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("sluice_elasticsearch_bulk_seconds_count")
                && l.contains("connector=\"es-https\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(bulks >= 15.0, "{bulks} bulk requests for 100 records");

    assert_eq!(bad_status["tasks"][0]["state"], "FAILED", "{bad_status}");
    let trace = bad_status["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(
        trace.contains("elastic.https.ssl.truststore.type: only PEM"),
        "{trace}"
    );
    Ok(())
}
