//! The shared kit for Sluice's integration tests: it makes sure the real local stack of
//! `deploy/local/stack` is up (starting it when a service does not answer), hands out
//! uniquely named topics, indices and databases so tests never see each other's data,
//! and builds ready clients for Kafka, OpenSearch and PostgreSQL.
//!
//! Integration tests never mock the outside systems: everything here talks to the real
//! broker, search node and database.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let stack = sluice_testkit::stack()?;
//! let topic = stack.create_topic("orders", 3).await?;
//! let producer = stack.transactional_producer(&sluice_testkit::unique_name("txn"))?;
//! # let _ = (topic, producer); Ok(()) }
//! ```

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use elasticsearch::http::transport::Transport;
use elasticsearch::Elasticsearch;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::BaseProducer;
use rdkafka::TopicPartitionList;

/// Endpoints of the local stack, from the same environment variables that
/// `deploy/local/stack` reads, so tests can run beside a stack a user already has.
#[derive(Debug, Clone)]
pub struct Stack {
    /// `host:port` of the Kafka broker.
    pub kafka_bootstrap: String,
    /// `host:port` of the broker's SSL listener (a certificate of [`Stack::kafka_tls`]'s
    /// CA; a client certificate is asked for, not required).
    pub kafka_ssl_bootstrap: String,
    /// `host:port` of the broker's SASL_SSL listener (PLAIN, SCRAM-SHA-256/512 for
    /// [`Stack::kafka_sasl`]'s user).
    pub kafka_sasl_ssl_bootstrap: String,
    /// Base URL of OpenSearch.
    pub opensearch_url: String,
    /// Port of PostgreSQL on 127.0.0.1 (user `postgres`, trust auth).
    pub postgres_port: u16,
    /// Base URL of Prometheus.
    pub prometheus_url: String,
    /// Port of Prometheus on 127.0.0.1.
    pub prometheus_port: u16,
    /// The stack's state directory (`SLUICE_STACK_DIR`, else `deploy/local/.state`).
    pub state_dir: PathBuf,
}

fn env_port(var: &str, default: u16) -> Result<u16> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{var}={v:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

/// The path of `deploy/local/stack` in this repository.
pub fn stack_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/stack")
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

static STACK: OnceLock<std::result::Result<Stack, String>> = OnceLock::new();

/// The local stack, started by `deploy/local/stack up` if any service does not answer.
/// Called from many tests at once; the stack is checked (and started) once per process.
pub fn stack() -> Result<&'static Stack> {
    let result = STACK.get_or_init(|| ensure_up().map_err(|e| format!("{e:#}")));
    match result {
        Ok(stack) => Ok(stack),
        Err(e) => bail!("the local stack is not available: {e}"),
    }
}

fn ensure_up() -> Result<Stack> {
    let kafka = env_port("SLUICE_KAFKA_PORT", 9092)?;
    let opensearch = env_port("SLUICE_OPENSEARCH_PORT", 9200)?;
    let postgres = env_port("SLUICE_POSTGRES_PORT", 5432)?;
    let prometheus = env_port("SLUICE_PROMETHEUS_PORT", 9090)?;
    if ![kafka, opensearch, postgres, prometheus]
        .iter()
        .all(|p| answers(*p))
    {
        let script = stack_script();
        let status = Command::new("bash")
            .arg(&script)
            .arg("up")
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("`{} up` failed ({status})", script.display());
        }
    }
    Ok(Stack {
        kafka_bootstrap: format!("127.0.0.1:{kafka}"),
        kafka_ssl_bootstrap: format!("127.0.0.1:{}", env_port("SLUICE_KAFKA_SSL_PORT", 9094)?),
        kafka_sasl_ssl_bootstrap: format!(
            "127.0.0.1:{}",
            env_port("SLUICE_KAFKA_SASL_SSL_PORT", 9095)?
        ),
        opensearch_url: format!("http://127.0.0.1:{opensearch}"),
        postgres_port: postgres,
        prometheus_url: format!("http://127.0.0.1:{prometheus}"),
        prometheus_port: prometheus,
        state_dir: std::env::var_os("SLUICE_STACK_DIR")
            .map_or_else(|| repo_root().join("deploy/local/.state"), PathBuf::from),
    })
}

/// The files of the stack's TLS material, made by `deploy/local/stack` (PEM).
#[derive(Debug, Clone)]
pub struct KafkaTls {
    /// The stack's CA, which signed the broker's and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate and its key, for mutual TLS on the SSL listener.
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

impl Stack {
    /// The stack's TLS files.
    pub fn kafka_tls(&self) -> KafkaTls {
        let dir = self.state_dir.join("kafka/tls");
        KafkaTls {
            ca: dir.join("ca.pem"),
            client_certificate: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The SASL user and password the stack's SASL_SSL listener knows (PLAIN and SCRAM).
    pub fn kafka_sasl(&self) -> (&'static str, &'static str) {
        ("sluice", "sluice-secret")
    }
}

/// A worker the stack's Prometheus scrapes every second (job `sluice-tests`, label
/// `test=<name>`) until this is dropped.
#[derive(Debug)]
pub struct ScrapeTarget {
    file: PathBuf,
    /// The `test` label of the target's series.
    pub name: String,
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `s` percent-encoded for a URL query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A name no other test (in this or any other process) uses: `<prefix>-<pid>-<micros>-<n>`,
/// lower case so it is also a valid OpenSearch index and PostgreSQL identifier.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{}-{}-{}",
        prefix.to_lowercase(),
        std::process::id(),
        micros,
        n
    )
    .replace('_', "-")
}

/// Which records a consumer returns from transactional producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (Kafka Connect's exactly-once readers).
    ReadCommitted,
    /// Everything written, aborted transactions included.
    ReadUncommitted,
}

impl Isolation {
    fn as_config(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// One consumed record, detached from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes, if any.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Stack {
    /// Has the stack's Prometheus scrape the worker whose REST API is on `port`, through
    /// a file-based service-discovery target (see `deploy/local/prometheus/prometheus.yml`).
    pub fn scrape(&self, port: u16) -> Result<ScrapeTarget> {
        let dir = self.state_dir.join("prometheus/targets");
        std::fs::create_dir_all(&dir)?;
        let name = unique_name("scrape");
        let file = dir.join(format!("{name}.json"));
        let body = serde_json::json!([{
            "targets": [format!("127.0.0.1:{port}")],
            "labels": {"test": name}
        }]);
        // Written whole, then renamed: Prometheus never reads half a file.
        let partial = dir.join(format!(".{name}.tmp"));
        std::fs::write(&partial, body.to_string())?;
        std::fs::rename(&partial, &file)?;
        Ok(ScrapeTarget { file, name })
    }

    /// A PromQL instant query through Prometheus's HTTP API: the `data.result` array.
    pub fn promql(&self, query: &str) -> Result<Vec<serde_json::Value>> {
        let path = format!("/api/v1/query?query={}", query_escape(query));
        let (status, body) = http_get(self.prometheus_port, &path)?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("Prometheus answered {body}"))?;
        if status != 200 || json["status"] != "success" {
            bail!("PromQL {query:?}: HTTP {status}: {body}");
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// A client config pointing at the broker, IPv4 only (librdkafka tries `::1` first otherwise).
    pub fn kafka_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.kafka_bootstrap)
            .set("broker.address.family", "v4");
        config
    }

    /// Creates a fresh topic named after `prefix`, with `partitions` partitions, and
    /// returns its name once the broker reports it.
    pub async fn create_topic(&self, prefix: &str, partitions: i32) -> Result<String> {
        let name = unique_name(prefix);
        let admin: AdminClient<DefaultClientContext> = self
            .kafka_config()
            .create()
            .context("creating the Kafka admin client")?;
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .context("CreateTopics request")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
        Ok(name)
    }

    /// A plain (idempotent) producer.
    pub fn producer(&self) -> Result<BaseProducer> {
        self.kafka_config()
            .set("enable.idempotence", "true")
            .create()
            .context("creating a Kafka producer")
    }

    /// A transactional producer with `transactional.id` set; the caller runs
    /// `init_transactions`.
    pub fn transactional_producer(&self, transactional_id: &str) -> Result<BaseProducer> {
        self.kafka_config()
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000")
            .create()
            .context("creating a transactional Kafka producer")
    }

    /// A consumer outside any group, reading with the given isolation.
    pub fn consumer(&self, isolation: Isolation) -> Result<BaseConsumer> {
        self.kafka_config()
            .set("group.id", unique_name("testkit-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation.as_config())
            .create()
            .context("creating a Kafka consumer")
    }

    /// Reads every partition of `topic` from the beginning up to its current end (the
    /// last stable offset under read_committed) and returns the records in partition,
    /// then offset order. Fails if the end is not reached within `timeout`.
    pub fn read_topic(
        &self,
        topic: &str,
        isolation: Isolation,
        timeout: Duration,
    ) -> Result<Vec<Consumed>> {
        let consumer = self.consumer(isolation)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            bail!("topic {topic} has no partitions (does it exist?)");
        }
        let mut ends = std::collections::BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}[{p}]"))?;
            ends.insert(*p, high);
            assignment
                .add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
                .context("building the assignment")?;
        }
        consumer
            .assign(&assignment)
            .context("assigning partitions")?;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut positions: std::collections::BTreeMap<i32, i64> =
            partitions.iter().map(|p| (*p, 0)).collect();
        // Under read_committed the high watermark includes control records and aborted
        // data, so the end is reached when the consumer's position passes it.
        while positions.iter().any(|(p, pos)| *pos < ends[p]) {
            if Instant::now() > deadline {
                bail!("reading {topic}: end not reached in {timeout:?} (at {positions:?}, ends {ends:?})");
            }
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.with_context(|| format!("consuming {topic}"))?;
                out.push(Consumed {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers: message
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            let position = consumer.position().context("consumer position")?;
            for element in position.elements() {
                if let rdkafka::Offset::Offset(o) = element.offset() {
                    positions.insert(element.partition(), o);
                }
            }
        }
        out.sort_by_key(|c| (c.partition, c.offset));
        Ok(out)
    }

    /// An OpenSearch / Elasticsearch client for the stack's node.
    pub fn opensearch(&self) -> Result<Elasticsearch> {
        let transport = Transport::single_node(&self.opensearch_url)
            .context("building the OpenSearch transport")?;
        Ok(Elasticsearch::new(transport))
    }

    /// A connection string for database `database` as user `postgres`.
    pub fn postgres_url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.postgres_port
        )
    }

    /// A connected client for `database`; its connection runs on a spawned task.
    pub async fn postgres(&self, database: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.postgres_url(database), tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connecting to PostgreSQL database {database}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("testkit: PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Creates a fresh database named after `prefix` and returns its name with a client.
    pub async fn create_database(&self, prefix: &str) -> Result<(String, tokio_postgres::Client)> {
        let name = unique_name(prefix).replace('-', "_");
        let admin = self.postgres("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let client = self.postgres(&name).await?;
        Ok((name, client))
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1, returning status and body. Enough for the worker's
/// REST API in tests without pulling an HTTP client into every test crate.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, None)
}

/// A plain HTTP/1.1 request with an optional JSON body on 127.0.0.1.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    http_request_with(port, method, path, &[], body)
}

/// [`http_request`] with extra headers.
pub fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect::<String>()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("truncated chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

/// A TCP port nothing listens on right now (bound once, then released).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_lower_case() {
        let a = unique_name("My_Topic");
        let b = unique_name("My_Topic");
        assert_ne!(a, b);
        assert!(a.starts_with("my-topic-"), "{a}");
        assert_eq!(a, a.to_lowercase());
    }
}
