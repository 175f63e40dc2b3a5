//! The syslog source task: TCP (RFC 6587 framing, detected per frame) or UDP listeners feed
//! a bounded queue that `poll` drains. A full queue stops reading the sockets, so TCP
//! clients are slowed by flow control instead of memory growing.
//!
//! Delivery: plain TCP and UDP carry no acknowledgements. A message the worker had received
//! but not yet committed to Kafka when it is killed is lost, and UDP loses datagrams under
//! load by design. A TCP client that disconnects mid-frame loses only that partial frame
//! (counted and logged); every whole frame it sent is kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, ExactlyOnceSupport, Props, Schema, SchemaType,
    SourceConnector, SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
    Value,
};
use tokio::sync::mpsc;

use crate::config::{
    self, BATCH, LISTEN, LISTENER, MAX_CONNECTIONS, MAX_MESSAGE, PORT, RELP_MAX_PEERS, RELP_WINDOW,
    REVERSE_DNS, SSL_CERT_CHAIN, SSL_CLIENT_CA, SSL_KEY, SSL_KEY_PASSWORD, SSL_SELF_SIGNED, TOPIC,
};
use crate::hosts::PeerNames;
use crate::relp::RecentMessages;
use crate::relp_state::RelpState;
use crate::serve::{self, Received, Reply, Shared};

/// Which transport a connector listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP, newline or octet-counted frames.
    Tcp,
    /// UDP, one message per datagram.
    Udp,
    /// RELP (rsyslog's `omrelp`): each message acknowledged once its Kafka transaction
    /// committed.
    Relp,
    /// TCP with TLS (RFC 5425), framed as TCP.
    Tls,
    /// Chosen by `syslog.listener` (Confluent's generic class; UDP unless set).
    Listener,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Relp => "relp",
            Protocol::Tls => "tcpssl",
            Protocol::Listener => "listener",
        }
    }

    /// The listener a task of this class runs, given `syslog.listener`: the generic class
    /// takes it as it is, the TCP class can be switched to TLS, any other mismatch is a
    /// configuration error naming the key.
    pub fn resolve(self, listener: &str) -> Result<Protocol, String> {
        let chosen = match listener.to_ascii_uppercase().as_str() {
            "" => None,
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "TCPSSL" => Some(Protocol::Tls),
            "RELP" => Some(Protocol::Relp),
            other => {
                return Err(format!(
                    "{LISTENER}: {other:?} is not one of TCP, UDP, TCPSSL, RELP"
                ))
            }
        };
        match (self, chosen) {
            (Protocol::Listener, None) => Ok(Protocol::Udp),
            (Protocol::Listener, Some(p)) | (Protocol::Tcp, Some(p @ Protocol::Tls)) => Ok(p),
            (class, None) => Ok(class),
            (class, Some(p)) if class == p => Ok(p),
            (class, Some(_)) => Err(format!(
                "{LISTENER}={listener}: this connector class listens on {}; \
                 io.confluent.connect.syslog.SyslogSourceConnector takes any listener",
                class.name()
            )),
        }
    }

    fn of(self, config: &Props) -> Result<Protocol, ConnectorError> {
        self.resolve(config.get(LISTENER).map_or("", String::as_str))
            .map_err(ConnectorError::config)
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
        self.0.of(config)?;
        Ok(vec![config.clone()])
    }
}

impl SourceConnector for SyslogSource {
    fn exactly_once_support(&self, config: &Props) -> ExactlyOnceSupport {
        // Only RELP lets a message be acknowledged after its transaction committed and
        // asked again for after a crash; plain TCP, TLS and UDP lose what was in flight.
        if self.0.of(config).ok() == Some(Protocol::Relp) {
            ExactlyOnceSupport::Supported
        } else {
            ExactlyOnceSupport::Unsupported
        }
    }

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
    connector: String,
    relp: RelpState,
}

fn relp_partition(peer: &str) -> SourcePartition {
    let mut map = serde_json::Map::new();
    map.insert("protocol".into(), "relp".into());
    map.insert("peer".into(), peer.into());
    SourcePartition::new(map)
}

/// How often /etc/hosts is read again (`syslog.reverse.dns.remote.ip`).
const HOSTS_REFRESH: Duration = Duration::from_secs(60);

/// The key of the RELP source offset holding the peer's recent-message fingerprints.
const RECENT: &str = "recent";

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
            connector: String::new(),
            relp: RelpState::default(),
        }
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
            self.connector.clone_from(&context.connector);
            self.protocol = self.protocol.of(config)?;
            self.partition = SourcePartition::single("protocol", self.protocol.name());
            let acceptor = if self.protocol == Protocol::Tls {
                let settings = crate::tls::TlsSettings {
                    cert_chain: parsed.string(SSL_CERT_CHAIN).unwrap_or_default().to_owned(),
                    key: parsed.string(SSL_KEY).unwrap_or_default().to_owned(),
                    key_password: parsed
                        .password(SSL_KEY_PASSWORD)
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default(),
                    self_signed: parsed.boolean(SSL_SELF_SIGNED).unwrap_or(false),
                    client_ca: parsed.string(SSL_CLIENT_CA).unwrap_or_default().to_owned(),
                };
                Some(Arc::new(
                    crate::tls::acceptor(&settings).map_err(ConnectorError::config)?,
                ))
            } else {
                None
            };
            if self.protocol == Protocol::Relp {
                self.relp = RelpState {
                    window: usize::try_from(parsed.long(RELP_WINDOW).unwrap_or(512)).unwrap_or(0),
                    max_peers: usize::try_from(parsed.long(RELP_MAX_PEERS).unwrap_or(10_000))
                        .unwrap_or(10_000),
                    ..RelpState::default()
                };
                // What each peer sent last, as committed with it: a client resending after
                // a crash is recognised against this.
                for (partition, offset) in &context.committed {
                    let map = partition.as_map();
                    if map.get("protocol").and_then(serde_json::Value::as_str) != Some("relp") {
                        continue;
                    }
                    let Some(peer) = map.get("peer").and_then(serde_json::Value::as_str) else {
                        continue;
                    };
                    let text = offset
                        .0
                        .get(RECENT)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    match RecentMessages::decode(text, self.relp.window) {
                        Ok(recent) => self.relp.restore(peer, recent, Instant::now()),
                        Err(e) => {
                            tracing::warn!(connector = %context.connector, task = context.task, peer, error = %e, "RELP source offset unreadable: resends from this peer may be written twice");
                        }
                    }
                }
                // More peers in the offsets than are kept: all count as just seen, so which
                // are forgotten is arbitrary (by address).
                self.relp.forget_peers(&context.connector, Instant::now());
            }
            let port = parsed.long(PORT).unwrap_or(0);
            let address = format!("{}:{port}", parsed.string(LISTEN).unwrap_or("0.0.0.0"));
            let names = if parsed.boolean(REVERSE_DNS).unwrap_or(false) {
                PeerNames::load(
                    PathBuf::from("/etc/hosts"),
                    HOSTS_REFRESH,
                    context.connector.clone(),
                )
                .await
            } else {
                PeerNames::disabled()
            };
            let max_connections =
                usize::try_from(parsed.long(MAX_CONNECTIONS).unwrap_or(1000)).unwrap_or(1000);
            let (tx, rx) = mpsc::channel(10_000);
            let shared = Shared {
                queue: tx,
                limit: usize::try_from(parsed.long(MAX_MESSAGE).unwrap_or(65_536))
                    .unwrap_or(65_536),
                names,
                connector: context.connector.clone(),
            };
            let bind_error = |e: std::io::Error| {
                // Retriable: a restarted task may find the port still held for a moment.
                ConnectorError::retriable(format!("listening on {address} ({PORT}): {e}"))
            };
            let handle = match self.protocol {
                protocol @ (Protocol::Tcp | Protocol::Relp | Protocol::Tls) => {
                    let listener = tokio::net::TcpListener::bind(&address)
                        .await
                        .map_err(bind_error)?;
                    tokio::spawn(serve::accept(
                        listener,
                        protocol,
                        acceptor,
                        shared,
                        max_connections,
                    ))
                }
                Protocol::Udp | Protocol::Listener => {
                    let socket = tokio::net::UdpSocket::bind(&address)
                        .await
                        .map_err(bind_error)?;
                    tokio::spawn(serve::receive_udp(socket, shared))
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
            let mut records = Vec::with_capacity(received.len());
            // The last record of each RELP peer in this batch: its offset carries the peer's
            // fingerprints (the engine commits each partition's last offset).
            let mut last_of_peer: HashMap<String, usize> = HashMap::new();
            for mut r in received {
                let mut partition = self.partition.clone();
                if let Some(meta) = r.relp.take() {
                    let peer = r.peer.ip().to_string();
                    if !self.relp.take(&self.connector, &peer, meta, Instant::now()) {
                        continue;
                    }
                    partition = relp_partition(&peer);
                    last_of_peer.insert(peer, records.len());
                }
                let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
                // The receive time, not the message's own date (kept in the value): a
                // sender's clock can be anything, and a record over an hour in the future
                // is refused by the broker, failing the whole transaction.
                let received = r.received;
                let mut record = SourceRecord::new(
                    partition,
                    SourceOffset::single("received", sequence),
                    self.topic.clone(),
                    to_value(r),
                );
                record.value_schema = Some(Arc::clone(&self.schema));
                record.timestamp = Some(received);
                records.push(record);
            }
            for (peer, i) in last_of_peer {
                let recent = self.relp.recent.get(&peer).map(|r| r.messages.encode());
                if let (Some(record), Some(recent)) = (records.get_mut(i), recent) {
                    record.source_offset = SourceOffset::single(RECENT, recent);
                }
            }
            Ok(records)
        })
    }

    fn commit(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            // Everything polled is in Kafka now: only now may the client forget it.
            self.relp.committed = self.relp.polled;
            let acks = std::mem::take(&mut self.relp.unacked);
            if !acks.is_empty() {
                metrics::counter!("sluice_syslog_relp_acks_total", "connector" => self.connector.clone())
                    .increment(acks.len() as u64);
            }
            for (txnr, reply) in acks {
                // A session that is gone has its client resend; the copy is recognised.
                reply.send(Reply::Ack(txnr));
            }
            Ok(())
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use tokio::io::AsyncWriteExt as _;

    use crate::serve::tests::shared;
    use crate::serve::{enqueue, now_millis, serve_relp};

    /// Kafka refuses timestamps far in the future, and one such record would abort the
    /// whole transaction: the record is stamped when it was received, the message's own
    /// date stays in the value.
    #[tokio::test]
    async fn records_are_stamped_with_the_receive_time_not_the_message_date() {
        let (tx, rx) = mpsc::channel(16);
        let peer: SocketAddr = ([127, 0, 0, 1], 5514).into();
        let line = b"<13>1 2099-01-01T00:00:00Z h app - - - from the future";
        let before = now_millis();
        assert!(enqueue(&shared(tx), line, false, peer, "localhost", None).await);
        let after = now_millis();
        let mut task = SyslogSourceTask::new(Protocol::Tcp);
        task.queue = Some(rx);
        let records = task.poll().await.expect("a record");
        assert_eq!(records.len(), 1);
        let stamp = records[0].timestamp;
        assert!(
            stamp.is_some_and(|t| (before..=after).contains(&t)),
            "timestamp {stamp:?} not within {before}..={after}"
        );
        let Value::Struct(fields) = &records[0].value else {
            panic!("not a struct: {:?}", records[0].value);
        };
        let date = fields.iter().find(|(name, _)| name == "date");
        assert_eq!(date.map(|(_, v)| v), Some(&Value::Int64(4_070_908_800_000)));
    }

    #[test]
    fn the_listener_comes_from_the_class_or_syslog_listener() {
        assert_eq!(Protocol::Listener.resolve(""), Ok(Protocol::Udp));
        assert_eq!(Protocol::Listener.resolve("tcpssl"), Ok(Protocol::Tls));
        assert_eq!(Protocol::Listener.resolve("RELP"), Ok(Protocol::Relp));
        assert_eq!(Protocol::Tcp.resolve(""), Ok(Protocol::Tcp));
        assert_eq!(Protocol::Tcp.resolve("TCPSSL"), Ok(Protocol::Tls));
        assert_eq!(Protocol::Udp.resolve("udp"), Ok(Protocol::Udp));
        let e = Protocol::Udp.resolve("TCP").err().unwrap_or_default();
        assert!(
            e.starts_with("syslog.listener=TCP: this connector class listens on udp"),
            "{e}"
        );
        let e = Protocol::Listener.resolve("SCTP").err().unwrap_or_default();
        assert!(e.contains("\"SCTP\" is not one of"), "{e}");
    }

    /// A RELP peer that sends but never reads its replies: the acknowledgements cannot be
    /// written, so the session must stop reading it instead of queueing replies (and
    /// taking messages) without end.
    #[tokio::test]
    async fn a_relp_peer_that_never_reads_its_replies_stops_being_read() {
        const SENT: u32 = 20_000;
        let (tx, rx) = mpsc::channel(10_000);
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(serve_relp(
            shared(tx),
            server,
            ([127, 0, 0, 1], 2514).into(),
            1,
        ));
        let (_unread, mut client) = tokio::io::split(client);
        tokio::spawn(async move {
            let offers = b"relp_version=0\ncommands=syslog";
            let mut open = format!("1 open {} ", offers.len()).into_bytes();
            open.extend_from_slice(offers);
            open.push(b'\n');
            if client.write_all(&open).await.is_err() {
                return;
            }
            for txnr in 2..SENT + 2 {
                let message = format!("<13>1 - h a - - - message {txnr}");
                let frame = format!("{txnr} syslog {} {message}\n", message.len());
                if client.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let mut task = SyslogSourceTask::new(Protocol::Relp);
        task.queue = Some(rx);
        let (mut taken, mut idle) = (0, 0);
        while idle < 3 && taken < SENT as usize {
            let records = task.poll().await.expect("polled");
            task.commit().await.expect("committed");
            if records.is_empty() {
                idle += 1;
            } else {
                (idle, taken) = (0, taken + records.len());
            }
        }
        assert!(
            taken < 5_000,
            "{taken} of {SENT} messages taken from a peer that reads no reply"
        );
    }
}
