//! The syslog source task: TCP (RFC 6587 framing, detected per frame) or UDP listeners feed
//! a bounded queue that `poll` drains. A full queue stops reading the sockets, so TCP
//! clients are slowed by flow control instead of memory growing.
//!
//! Delivery: plain TCP and UDP carry no acknowledgements. A message the worker had received
//! but not yet committed to Kafka when it is killed is lost, and UDP loses datagrams under
//! load by design. A TCP client that disconnects mid-frame loses only that partial frame
//! (counted and logged); every whole frame it sent is kept.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, Props, Schema, SchemaType, SourceConnector,
    SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext, Value,
};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use crate::config::{self, BATCH, LISTEN, MAX_MESSAGE, PORT, REVERSE_DNS, TOPIC};
use crate::parse::{self, Frame, Framer, Message};

/// Which transport a connector listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP, newline or octet-counted frames.
    Tcp,
    /// UDP, one message per datagram.
    Udp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The connector: one task owns the listening socket.
#[derive(Debug)]
pub struct SyslogSource(pub Protocol);

impl Connector for SyslogSource {
    fn config_def(&self) -> ConfigDef {
        config::source_def()
    }

    fn task_configs(&self, config: &Props, _max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for SyslogSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(SyslogSourceTask::new(self.0))
    }
}

/// The value schema: the seed's fields plus RFC 5424's.
pub fn value_schema() -> Schema {
    let text = || Schema::of(SchemaType::String).optional();
    Schema::structure()
        .named("io.sluice.connect.syslog.Message")
        .field("date", Schema::of(SchemaType::Int64).optional())
        .field("facility", Schema::of(SchemaType::Int32).optional())
        .field("level", Schema::of(SchemaType::Int32).optional())
        .field("host", text())
        .field("hostname", text())
        .field("remote_address", text())
        .field("charset", text())
        .field("message", text())
        .field("version", Schema::of(SchemaType::Int32).optional())
        .field("app_name", text())
        .field("process_id", text())
        .field("message_id", text())
        .field(
            "structured_data",
            Schema::map(
                Schema::of(SchemaType::String),
                Schema::map(
                    Schema::of(SchemaType::String),
                    Schema::of(SchemaType::String),
                ),
            )
            .optional(),
        )
        .field("parse_error", text())
}

/// A message with where it came from.
struct Received {
    message: Message,
    peer: SocketAddr,
    hostname: String,
}

fn opt_text(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::String)
}

fn to_value(r: Received) -> Value {
    let m = r.message;
    let sd = if m.structured_data.is_empty() {
        Value::Null
    } else {
        Value::Map(
            m.structured_data
                .into_iter()
                .map(|(id, params)| {
                    (
                        Value::String(id),
                        Value::Map(
                            params
                                .into_iter()
                                .map(|(k, v)| (Value::String(k), Value::String(v)))
                                .collect(),
                        ),
                    )
                })
                .collect(),
        )
    };
    Value::Struct(vec![
        ("date".into(), m.date.map_or(Value::Null, Value::Int64)),
        (
            "facility".into(),
            m.facility.map_or(Value::Null, Value::Int32),
        ),
        ("level".into(), m.level.map_or(Value::Null, Value::Int32)),
        ("host".into(), opt_text(m.host)),
        ("hostname".into(), Value::String(r.hostname.clone())),
        // Java's InetSocketAddress.toString: name/ip:port.
        (
            "remote_address".into(),
            Value::String(format!("{}/{}", r.hostname, r.peer)),
        ),
        ("charset".into(), Value::String("UTF-8".into())),
        ("message".into(), Value::String(m.message)),
        (
            "version".into(),
            m.version.map_or(Value::Null, Value::Int32),
        ),
        ("app_name".into(), opt_text(m.app_name)),
        ("process_id".into(), opt_text(m.process_id)),
        ("message_id".into(), opt_text(m.message_id)),
        ("structured_data".into(), sd),
        ("parse_error".into(), opt_text(m.error)),
    ])
}

/// Listens and queues messages for `poll`.
pub struct SyslogSourceTask {
    protocol: Protocol,
    topic: String,
    batch: usize,
    queue: Option<mpsc::Receiver<Received>>,
    listener: Option<tokio::task::JoinHandle<()>>,
    partition: SourcePartition,
    sequence: Arc<AtomicU64>,
    schema: Arc<Schema>,
}

impl SyslogSourceTask {
    fn new(protocol: Protocol) -> Self {
        SyslogSourceTask {
            protocol,
            topic: String::new(),
            batch: 1000,
            queue: None,
            listener: None,
            partition: SourcePartition::single("protocol", protocol.name()),
            sequence: Arc::new(AtomicU64::new(0)),
            schema: Arc::new(value_schema()),
        }
    }
}

/// What each connection needs.
#[derive(Clone)]
struct Shared {
    queue: mpsc::Sender<Received>,
    limit: usize,
    reverse_dns: bool,
    connector: String,
}

fn this_year() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Close enough for the year of an RFC 3164 timestamp: 365.2425 days a year.
    1970 + i64::try_from(secs / 31_556_952).unwrap_or(0)
}

/// The peer's name: loopback is `localhost` (what the seed's documents show); others keep
/// the address unless /etc/hosts names them.
fn peer_name(peer: &SocketAddr, reverse_dns: bool) -> String {
    let ip = peer.ip();
    if !reverse_dns {
        return ip.to_string();
    }
    if ip.is_loopback() {
        return "localhost".into();
    }
    std::fs::read_to_string("/etc/hosts")
        .ok()
        .and_then(|hosts| {
            hosts.lines().find_map(|l| {
                let mut words = l.split('#').next()?.split_whitespace();
                (words.next()?.parse::<std::net::IpAddr>().ok()? == ip)
                    .then(|| words.next().map(str::to_owned))
                    .flatten()
            })
        })
        .unwrap_or_else(|| ip.to_string())
}

async fn enqueue(
    shared: &Shared,
    bytes: &[u8],
    truncated: bool,
    peer: SocketAddr,
    hostname: &str,
) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let mut message = parse::parse(&text, this_year());
    if truncated {
        metrics::counter!("sluice_syslog_truncated_total", "connector" => shared.connector.clone())
            .increment(1);
        tracing::warn!(connector = %shared.connector, peer = %peer, limit = shared.limit, "syslog message longer than syslog.max.message.bytes: cut");
        if message.error.is_none() {
            message.error = Some(format!("truncated to {} bytes", shared.limit));
        }
    }
    if message.error.is_some() {
        metrics::counter!("sluice_syslog_parse_errors_total", "connector" => shared.connector.clone())
            .increment(1);
    }
    shared
        .queue
        .send(Received {
            message,
            peer,
            hostname: hostname.to_owned(),
        })
        .await
        .is_ok()
}

async fn serve_tcp(shared: Shared, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    let hostname = peer_name(&peer, shared.reverse_dns);
    let mut framer = Framer::default();
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(connector = %shared.connector, peer = %peer, error = %e, "syslog connection error");
                break;
            }
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame(shared.limit) {
            let (bytes, truncated) = match frame {
                Frame::Message(b) => (b, false),
                Frame::Truncated(b) => (b, true),
            };
            if !enqueue(&shared, &bytes, truncated, peer, &hostname).await {
                return;
            }
        }
    }
    // A last line without its newline is a whole message once the peer closed cleanly.
    if framer.pending() > 0 {
        framer.push(b"\n");
    }
    while let Some(Frame::Message(bytes) | Frame::Truncated(bytes)) =
        framer.next_frame(shared.limit)
    {
        if !enqueue(&shared, &bytes, false, peer, &hostname).await {
            return;
        }
    }
    if framer.pending() > 0 {
        metrics::counter!("sluice_syslog_partial_frames_total", "connector" => shared.connector.clone())
            .increment(1);
        tracing::warn!(connector = %shared.connector, peer = %peer, bytes = framer.pending(), "peer closed mid-frame; the partial frame is dropped");
    }
}

impl SourceTask for SyslogSourceTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let parsed = config::source_def()
                .parse(config)
                .map_err(|e| ConnectorError::config(e.to_string()))?;
            self.topic = parsed.string(TOPIC).unwrap_or_default().to_owned();
            self.batch = usize::try_from(parsed.long(BATCH).unwrap_or(1000)).unwrap_or(1000);
            let port = parsed.long(PORT).unwrap_or(0);
            let address = format!("{}:{port}", parsed.string(LISTEN).unwrap_or("0.0.0.0"));
            let (tx, rx) = mpsc::channel(10_000);
            let shared = Shared {
                queue: tx,
                limit: usize::try_from(parsed.long(MAX_MESSAGE).unwrap_or(65_536))
                    .unwrap_or(65_536),
                reverse_dns: parsed.boolean(REVERSE_DNS).unwrap_or(false),
                connector: context.connector.clone(),
            };
            let bind_error = |e: std::io::Error| {
                // Retriable: a restarted task may find the port still held for a moment.
                ConnectorError::retriable(format!("listening on {address} ({PORT}): {e}"))
            };
            let handle = match self.protocol {
                Protocol::Tcp => {
                    let listener = tokio::net::TcpListener::bind(&address)
                        .await
                        .map_err(bind_error)?;
                    tokio::spawn(async move {
                        loop {
                            match listener.accept().await {
                                Ok((stream, peer)) => {
                                    metrics::counter!("sluice_syslog_connections_total", "connector" => shared.connector.clone()).increment(1);
                                    tokio::spawn(serve_tcp(shared.clone(), stream, peer));
                                }
                                Err(e) => {
                                    tracing::warn!(connector = %shared.connector, error = %e, "accepting a syslog connection failed");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            }
                        }
                    })
                }
                Protocol::Udp => {
                    let socket = tokio::net::UdpSocket::bind(&address)
                        .await
                        .map_err(bind_error)?;
                    tokio::spawn(async move {
                        let mut buf = vec![0_u8; 65_536];
                        loop {
                            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                                continue;
                            };
                            let hostname = peer_name(&peer, shared.reverse_dns);
                            let cut = n.min(shared.limit);
                            if !enqueue(&shared, &buf[..cut], n > shared.limit, peer, &hostname)
                                .await
                            {
                                return;
                            }
                        }
                    })
                }
            };
            tracing::info!(connector = %context.connector, task = context.task, protocol = self.protocol.name(), %address, "syslog listener started");
            self.listener = Some(handle);
            self.queue = Some(rx);
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            let queue = self
                .queue
                .as_mut()
                .ok_or_else(|| ConnectorError::internal("syslog source polled before start"))?;
            let mut received = Vec::new();
            match tokio::time::timeout(Duration::from_millis(200), queue.recv()).await {
                Ok(Some(first)) => received.push(first),
                Ok(None) => return Err(ConnectorError::internal("syslog listener stopped")),
                Err(_) => return Ok(Vec::new()),
            }
            while received.len() < self.batch {
                match queue.try_recv() {
                    Ok(r) => received.push(r),
                    Err(_) => break,
                }
            }
            Ok(received
                .into_iter()
                .map(|r| {
                    let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
                    let date = r.message.date;
                    let mut record = SourceRecord::new(
                        self.partition.clone(),
                        SourceOffset::single("received", sequence),
                        self.topic.clone(),
                        to_value(r),
                    );
                    record.value_schema = Some(Arc::clone(&self.schema));
                    record.timestamp = date;
                    record
                })
                .collect())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Frees the port for the next start of this task.
            if let Some(listener) = self.listener.take() {
                listener.abort();
            }
            self.queue = None;
        })
    }
}
