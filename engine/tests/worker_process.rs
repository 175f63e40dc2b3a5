//! The `sluice worker` process against the real broker: it reports the cluster it joined,
//! serves health and metrics, and refuses a bad config at start naming the key.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::util::Timeout;
use sluice_testkit::{free_port, http_get, stack, unique_name};

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker config file, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(body: &str) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("{}.properties", unique_name("sluice-worker")));
        std::fs::write(&path, body)?;
        Ok(ConfigFile(path))
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn wait_for_http(port: u16, worker: &mut Worker) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = worker.0.try_wait()? {
            let mut log = String::new();
            if let Some(stderr) = worker.0.stderr.as_mut() {
                stderr.read_to_string(&mut log)?;
            }
            bail!("worker exited early: {status}\n{log}");
        }
        if matches!(http_get(port, "/health"), Ok((200, _))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("worker REST API on port {port} did not come up in 60s")
}

#[test]
fn worker_reports_the_real_cluster_and_serves_health_and_metrics() -> Result<()> {
    let stack = stack()?;
    let port = free_port()?;
    let config = ConfigFile::new(&format!(
        "bootstrap.servers={}\n\
         group.id=sluice-test\n\
         offset.storage.topic={}\n\
         offset.storage.replication.factor=1\n\
         offset.storage.partitions=1\n\
         config.storage.topic={}\n\
         config.storage.replication.factor=1\n\
         status.storage.topic={}\n\
         status.storage.replication.factor=1\n\
         status.storage.partitions=1\n\
         listeners=http://127.0.0.1:{port}\n\
         producer.broker.address.family=v4\n\
         admin.broker.address.family=v4\n\
         no.such.key=1\n",
        stack.kafka_bootstrap,
        unique_name("worker-offsets"),
        unique_name("worker-configs"),
        unique_name("worker-status"),
    ))?;
    let mut worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("worker")
            .arg(&config.0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sluice worker")?,
    );
    wait_for_http(port, &mut worker)?;

    let expected: BaseProducer = stack.kafka_config().create()?;
    let cluster_id = expected
        .client()
        .fetch_cluster_id(Timeout::After(Duration::from_secs(10)))
        .context("cluster id")?;

    let (status, body) = http_get(port, "/")?;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(info["kafka_cluster_id"], serde_json::json!(cluster_id));
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let (status, body) = http_get(port, "/health")?;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], "healthy");
    assert!(health["message"].is_string(), "{body}");

    let (status, body) = http_get(port, "/connectors/nope/status/x")?;
    assert_eq!(status, 404);
    assert!(body.contains("\"error_code\":404"), "{body}");

    let (status, body) = http_get(port, "/metrics")?;
    assert_eq!(status, 200);
    assert!(body.contains("sluice_worker_info{"), "{body}");
    assert!(body.contains("sluice_rest_requests_total{"), "{body}");

    // The unknown key was warned about, by name.
    worker.0.kill()?;
    worker.0.wait()?;
    let mut log = String::new();
    if let Some(stderr) = worker.0.stderr.as_mut() {
        stderr.read_to_string(&mut log)?;
    }
    assert!(log.contains("no.such.key"), "{log}");
    Ok(())
}

#[test]
fn a_malformed_worker_config_stops_the_process_naming_the_key() -> Result<()> {
    for (body, key) in [
        (
            "group.id=g\nlisteners=http://127.0.0.1:notaport\n",
            "listeners",
        ),
        (
            "group.id=g\noffset.storage.topic=o\nconfig.storage.topic=c\n",
            "status.storage.topic",
        ),
        (
            "exactly.once.source.support=sometimes\n",
            "exactly.once.source.support",
        ),
        ("bad=\\u12\n", "line 1"),
    ] {
        let config = ConfigFile::new(body)?;
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("worker")
            .arg(&config.0)
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{body}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{body}: {stderr}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["worker", "/no/such/worker.properties"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/worker.properties"));
    Ok(())
}
