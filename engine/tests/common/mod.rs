//! Helpers for the engine's process-level tests: config files and `sluice` processes.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use sluice_testkit::{free_port, http_get, unique_name, Stack};

pub mod cluster;
pub mod postgres;
pub mod rebuild;

/// The value of a counter summed over its label sets, from the worker's `/metrics`.
pub fn counter(port: u16, name: &str) -> Result<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn write(&self, name: &str, body: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, body)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A worker config for the stack's broker, REST on `port`, exactly-once on, fast restarts.
pub fn worker_properties(
    stack: &Stack,
    port: u16,
    group: &str,
    offsets_topic: &str,
    extra: &str,
) -> String {
    format!(
        "bootstrap.servers={}\n\
         group.id={group}\n\
         offset.storage.topic={offsets_topic}\n\
         offset.storage.partitions=3\n\
         offset.storage.replication.factor=1\n\
         exactly.once.source.support=enabled\n\
         listeners=http://127.0.0.1:{port}\n\
         task.restart.backoff.initial.ms=100\n\
         task.restart.backoff.max.ms=2000\n\
         producer.broker.address.family=v4\n\
         consumer.broker.address.family=v4\n\
         admin.broker.address.family=v4\n\
         {extra}\n",
        stack.kafka_bootstrap
    )
}

/// A running `sluice standalone`; killed (SIGKILL) on drop.
pub struct WorkerProcess {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn standalone(
        worker: &Path,
        connectors: &[&Path],
        port: u16,
        log: PathBuf,
    ) -> Result<Self> {
        let mut args = vec![PathBuf::from("standalone"), worker.to_path_buf()];
        args.extend(connectors.iter().map(|c| c.to_path_buf()));
        Self::spawn(&args, port, log)
    }

    /// `sluice worker <worker.properties>`: connectors come over REST.
    pub fn distributed(worker: &Path, port: u16, log: PathBuf) -> Result<Self> {
        Self::spawn(&[PathBuf::from("worker"), worker.to_path_buf()], port, log)
    }

    fn spawn(args: &[PathBuf], port: u16, log: PathBuf) -> Result<Self> {
        // Appends: a restarted worker's log follows its previous life's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        // SLUICE_BIN runs the tests against another build (deploy/chaos runs a release one).
        let bin =
            std::env::var("SLUICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_owned());
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting sluice")?;
        Ok(WorkerProcess { child, port, log })
    }

    /// Waits until the REST API answers.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("worker exited early ({status}); log:\n{}", self.log_text());
            }
            // 503 while the worker starts; 200 once it takes requests.
            if matches!(http_get(self.port, "/health"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("worker did not answer on port {} in {timeout:?}", self.port)
    }

    /// SIGKILL: no shutdown hook, no final commit.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal (`-STOP`, `-CONT`, ...) to the worker.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("worker did not exit within {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON of `GET path`.
    pub fn get_json(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let (status, body) = http_get(self.port, path)?;
        let json = serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
        Ok((status, json))
    }

    /// Any request; the body is returned as text (may be empty).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String)> {
        self.request_with(method, path, &[], body)
    }

    /// [`WorkerProcess::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String)> {
        let body = body.map(ToString::to_string);
        sluice_testkit::http_request_with(self.port, method, path, headers, body.as_deref())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A stopped process takes SIGKILL too; CONT first so nothing lingers half-stopped.
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic PRNG (xorshift64*), seeded from the clock and printed, so a
/// failing run can be replayed with SLUICE_TEST_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_clock() -> Self {
        let seed = std::env::var("SLUICE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(42, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("random seed: SLUICE_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The committed values of a single-partition topic, as text.
pub fn committed_lines(stack: &Stack, topic: &str) -> Result<Vec<String>> {
    Ok(stack
        .read_topic(
            topic,
            sluice_testkit::Isolation::ReadCommitted,
            Duration::from_secs(60),
        )?
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect())
}

/// Checks that `lines` are exactly "1".."n", in order; says where they first differ.
pub fn assert_exactly_once_in_order(lines: &[String], n: usize) {
    let mut first_bad = None;
    for (i, line) in lines.iter().enumerate() {
        if *line != (i + 1).to_string() {
            first_bad = Some((i, line.clone()));
            break;
        }
    }
    if let Some((i, line)) = first_bad {
        panic!(
            "record {i} is {line:?}, expected {:?} ({} records in all)",
            (i + 1).to_string(),
            lines.len()
        );
    }
    assert_eq!(
        lines.len(),
        n,
        "records 1..{} present once each, but {n} expected",
        lines.len()
    );
}

/// The fixture of the exactly-once tests: a file of numbered lines `1..=lines`, a fresh
/// one-partition topic, and a file source config (`numbers`) reading one into the other.
pub struct Numbers {
    pub dir: TempDir,
    pub input: PathBuf,
    pub topic: String,
    pub connector: PathBuf,
}

impl Numbers {
    pub async fn new(stack: &Stack, prefix: &str, lines: usize, batch_size: usize) -> Result<Self> {
        let topic = stack.create_topic(prefix, 1).await?;
        let dir = TempDir::new(prefix)?;
        let body: String = (1..=lines).map(|i| format!("{i}\n")).collect();
        let input = dir.write("input.txt", &body)?;
        let connector = dir.write(
            "source.properties",
            &format!(
                "name=numbers\nconnector.class=FileStreamSource\nfile={}\ntopic={topic}\n\
                 batch.size={batch_size}\nvalue.converter=org.apache.kafka.connect.storage.StringConverter\n",
                input.display()
            ),
        )?;
        Ok(Numbers {
            dir,
            input,
            topic,
            connector,
        })
    }

    /// Writes a worker config (see [`worker_properties`]) named `file` into the fixture's directory.
    pub fn worker(
        &self,
        stack: &Stack,
        file: &str,
        port: u16,
        group: &str,
        offsets_topic: &str,
        extra: &str,
    ) -> Result<PathBuf> {
        self.dir.write(
            file,
            &worker_properties(stack, port, group, offsets_topic, extra),
        )
    }

    /// Waits (up to `timeout`) until the topic holds all `lines` committed records, and
    /// returns what it holds then; errors while the broker is unavailable count as "not yet".
    pub fn wait_for_all(&self, stack: &Stack, lines: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match committed_lines(stack, &self.topic) {
                Ok(seen) if seen.len() >= lines || Instant::now() > deadline => return seen,
                Ok(_) => {}
                Err(e) if Instant::now() > deadline => {
                    eprintln!("reading {}: {e:#}", self.topic);
                    return Vec::new();
                }
                Err(e) => eprintln!("broker not ready yet: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The worker keys of a REST-managed worker's own config and status topics: fresh names,
/// replication factor 1 for the single-node broker.
pub fn state_topics(prefix: &str) -> String {
    format!(
        "config.storage.topic={}\nconfig.storage.replication.factor=1\n\
         status.storage.topic={}\nstatus.storage.replication.factor=1\n",
        unique_name(&format!("{prefix}-configs")),
        unique_name(&format!("{prefix}-status"))
    )
}

/// A config map from pairs.
pub fn props(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An in-process standalone worker on the stack's broker, with `extra` worker keys; call it
/// inside an actix system (`#[actix::test]`).
pub async fn in_process_worker(
    stack: &Stack,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Result<sluice_engine::herder::worker::Worker> {
    use actix::Actor as _;
    let offsets_topic = unique_name(&format!("{prefix}-offsets"));
    let group = unique_name(prefix);
    let mut pairs = vec![
        ("bootstrap.servers", stack.kafka_bootstrap.as_str()),
        ("group.id", group.as_str()),
        ("offset.storage.topic", offsets_topic.as_str()),
        ("producer.broker.address.family", "v4"),
        ("consumer.broker.address.family", "v4"),
        ("admin.broker.address.family", "v4"),
    ];
    pairs.extend_from_slice(extra);
    let config = std::sync::Arc::new(sluice_engine::config::worker::WorkerConfig::parse(
        &props(&pairs),
        sluice_engine::config::worker::Mode::Standalone,
    )?);
    sluice_engine::storage::offsets::ensure_compacted_topic(
        &config.kafka_client_props("admin."),
        &offsets_topic,
        1,
        1,
    )
    .await?;
    let offsets = sluice_engine::storage::offsets::OffsetStore::new(
        offsets_topic,
        1,
        config.kafka_client_props("consumer."),
    );
    let router =
        sluice_engine::kafka::router::PartitionRouter::new(config.kafka_client_props("producer."))
            .start();
    Ok(sluice_engine::herder::worker::Worker::new(
        config, router, offsets,
    ))
}

/// The number of documents in `index` after a refresh; 0 while OpenSearch is unreachable.
pub async fn opensearch_count(stack: &Stack, index: &str) -> u64 {
    use elasticsearch::indices::IndicesRefreshParts;
    let Ok(client) = stack.opensearch() else {
        return 0;
    };
    let _ = client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await;
    let Ok(response) = client
        .count(elasticsearch::CountParts::Index(&[index]))
        .send()
        .await
    else {
        return 0;
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["count"].as_u64().unwrap_or(0)
}

/// Every document of `index` (`_id` and `_source`), sorted by the numeric field `by`, read
/// in pages with `search_after` so the 10,000-hit window does not cut it short.
pub async fn opensearch_all(
    stack: &Stack,
    index: &str,
    by: &str,
) -> Result<Vec<(String, serde_json::Value)>> {
    use elasticsearch::indices::IndicesRefreshParts;
    let client = stack.opensearch()?;
    client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await?;
    let mut out = Vec::new();
    let mut after: Option<serde_json::Value> = None;
    loop {
        let mut body = serde_json::json!({"size": 5000, "sort": [{by: "asc"}, {"_id": "asc"}], "query": {"match_all": {}}});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let response = client
            .search(elasticsearch::SearchParts::Index(&[index]))
            .body(body)
            .send()
            .await?;
        let status = response.status_code();
        let page: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("search of {index}: {status}: {page}");
        }
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let Some(last) = hits.last() else {
            return Ok(out);
        };
        after = Some(last["sort"].clone());
        out.extend(hits.into_iter().map(|h| {
            (
                h["_id"].as_str().unwrap_or_default().to_owned(),
                h["_source"].clone(),
            )
        }));
    }
}

fn sh(dir: &Path, script: &str) -> Result<()> {
    let out = Command::new("bash")
        .args(["-euc", script])
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// With the `openssl` command, in `dir`: a CA (`ca.pem`, `ca.key`); a server certificate
/// for 127.0.0.1 (`server.pem`, `server.key`, and the key encrypted under `secret` in
/// `server.enc.key`); a client certificate (`client.pem`, `client.key`); all signed by the CA.
pub fn tls_certificates(dir: &Path) -> Result<()> {
    sh(
        dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
         for who in server client; do
           openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
           printf 'subjectAltName=IP:127.0.0.1\\n' > $who.ext
           openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext 2>/dev/null
         done
         openssl pkey -in server.key -aes256 -passout pass:secret -out server.enc.key",
    )
}

/// A standalone worker running one TCP syslog source (`name` "s") on a free port, writing
/// schemaless JSON to a fresh topic; returned once the listener accepts connections.
pub struct SyslogWorker {
    pub worker: WorkerProcess,
    pub syslog_port: u16,
    pub rest_port: u16,
    pub topic: String,
    pub dir: TempDir,
}

impl SyslogWorker {
    pub fn start(stack: &Stack, prefix: &str) -> Result<Self> {
        let topic = unique_name(prefix);
        let dir = TempDir::new(prefix)?;
        let (rest_port, syslog_port) = (free_port()?, free_port()?);
        let worker = dir.write(
            "w.properties",
            &worker_properties(
                stack,
                rest_port,
                &unique_name(prefix),
                &unique_name(&format!("{prefix}-offsets")),
                "",
            ),
        )?;
        let connector = dir.write(
            "s.json",
            &serde_json::json!({"name": "s", "config": {
                "connector.class": "io.confluent.connect.syslog.SyslogSourceConnector",
                "syslog.listener": "TCP", "syslog.port": syslog_port,
                "syslog.listen.address": "127.0.0.1", "kafka.topic": topic,
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter.schemas.enable": "false"}})
            .to_string(),
        )?;
        let mut worker =
            WorkerProcess::standalone(&worker, &[&connector], rest_port, dir.0.join("w.log"))?;
        worker.wait_ready(Duration::from_secs(60))?;
        wait_listening(syslog_port);
        Ok(SyslogWorker {
            worker,
            syslog_port,
            rest_port,
            topic,
            dir,
        })
    }
}

/// Waits (up to 30 s) until something accepts TCP connections on the port.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
