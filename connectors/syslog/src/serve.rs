//! Serving the syslog source's sockets: accepting TCP, TLS and RELP connections, reading
//! UDP datagrams, framing and parsing what arrives, and queueing it for the task's `poll`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use crate::hosts::PeerNames;
use crate::parse::{self, Frame, Framer, Message};
use crate::relp::{self, RelpReader};
use crate::source::Protocol;

/// A message with where it came from.
pub(crate) struct Received {
    pub(crate) message: Message,
    /// When it arrived, in milliseconds since the epoch: the record's timestamp.
    pub(crate) received: i64,
    pub(crate) peer: SocketAddr,
    pub(crate) hostname: String,
    /// Set for RELP: how to acknowledge it, and what recognises a resend of it.
    pub(crate) relp: Option<RelpMeta>,
}

/// What the task needs to acknowledge a RELP message and to recognise it when resent.
pub(crate) struct RelpMeta {
    pub(crate) txnr: u32,
    pub(crate) replies: mpsc::UnboundedSender<Reply>,
    /// The session it came in on (a number unique within this task).
    pub(crate) session: u64,
    /// The first message of its session: resends of unacknowledged messages come first.
    pub(crate) first: bool,
    pub(crate) fingerprint: u64,
}

/// What a RELP session's writer sends.
pub(crate) enum Reply {
    /// `200 OK` for a syslog frame.
    Ack(u32),
    /// Bytes to send as they are (the reply to `open`, errors).
    Now(Vec<u8>),
    /// Reply to `close` once `after` messages have been acknowledged, then hang up.
    Close { txnr: u32, after: u64 },
}

/// What each connection needs.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) queue: mpsc::Sender<Received>,
    pub(crate) limit: usize,
    /// Names peers for the `hostname` field (a table lookup, no I/O).
    pub(crate) names: PeerNames,
    pub(crate) connector: String,
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) async fn enqueue(
    shared: &Shared,
    bytes: &[u8],
    truncated: bool,
    peer: SocketAddr,
    hostname: &str,
    relp: Option<RelpMeta>,
) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let received = now_millis();
    let mut message = parse::parse(&text, received);
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
            received,
            peer,
            hostname: hostname.to_owned(),
            relp,
        })
        .await
        .is_ok()
}

/// A TLS connection: the handshake (bounded, so a silent client cannot hold a task), then
/// the same framing as plain TCP.
async fn serve_tls(
    shared: Shared,
    acceptor: Arc<openssl::ssl::SslAcceptor>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let handshake = async {
        let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
        let mut tls = tokio_openssl::SslStream::new(ssl, stream).map_err(|e| e.to_string())?;
        std::pin::Pin::new(&mut tls)
            .accept()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(tls)
    };
    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(tls)) => serve_tcp(shared, tls, peer).await,
        outcome => {
            let error = match outcome {
                Ok(Err(e)) => e,
                _ => "no handshake within 10 s".to_owned(),
            };
            metrics::counter!("sluice_syslog_tls_handshake_failures_total", "connector" => shared.connector.clone())
                .increment(1);
            tracing::warn!(connector = %shared.connector, peer = %peer, %error, "TLS handshake failed: connection closed");
        }
    }
}

async fn serve_tcp<S>(shared: Shared, mut stream: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let hostname = shared.names.name(&peer);
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
            if !enqueue(&shared, &bytes, truncated, peer, &hostname, None).await {
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
        if !enqueue(&shared, &bytes, false, peer, &hostname, None).await {
            return;
        }
    }
    if framer.pending() > 0 {
        metrics::counter!("sluice_syslog_partial_frames_total", "connector" => shared.connector.clone())
            .increment(1);
        tracing::warn!(connector = %shared.connector, peer = %peer, bytes = framer.pending(), "peer closed mid-frame; the partial frame is dropped");
    }
}

/// Sends a RELP session's replies in order, several per write when they queue up. A
/// `close` is answered only after every message before it was acknowledged, so the
/// client never closes with messages it would think lost.
async fn write_replies(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut replies: mpsc::UnboundedReceiver<Reply>,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut acked = 0_u64;
    let mut close = None;
    let mut out = Vec::new();
    while let Some(first) = replies.recv().await {
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            match reply {
                Reply::Ack(txnr) => {
                    out.extend(relp::reply(txnr, b"200 OK"));
                    acked += 1;
                }
                Reply::Now(bytes) => out.extend(bytes),
                Reply::Close { txnr, after } => close = Some((txnr, after)),
            }
            next = replies.try_recv().ok();
        }
        let closing = close.filter(|(_, after)| acked >= *after);
        if let Some((txnr, _)) = closing {
            out.extend(relp::reply(txnr, b""));
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if closing.is_some() {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// One RELP session: `open` is answered at once, each `syslog` frame is queued with what
/// acknowledges it (the task does, after the commit), `close` ends the session once
/// everything before it was acknowledged. A framing error ends the session: the client
/// reconnects and resends what was not acknowledged, so nothing is lost.
async fn serve_relp(shared: Shared, stream: tokio::net::TcpStream, peer: SocketAddr, session: u64) {
    let hostname = shared.names.name(&peer);
    let (mut read, write) = stream.into_split();
    let (replies, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_replies(write, rx));
    let mut reader = RelpReader::default();
    let mut opened = false;
    let mut messages = 0_u64;
    let mut buf = vec![0_u8; 64 * 1024];
    'session: loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(connector = %shared.connector, peer = %peer, error = %e, "RELP connection error");
                break;
            }
        };
        reader.push(&buf[..n]);
        loop {
            let frame = match reader.next_frame(shared.limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!("sluice_syslog_relp_protocol_errors_total", "connector" => shared.connector.clone()).increment(1);
                    tracing::warn!(connector = %shared.connector, peer = %peer, error = %e, "RELP framing error: session closed (the client resends what was not acknowledged)");
                    break 'session;
                }
            };
            match frame.command.as_str() {
                "open" => {
                    opened = true;
                    let data = relp::open_reply_data();
                    let _ = replies.send(Reply::Now(relp::reply(frame.txnr, &data)));
                }
                "syslog" if opened => {
                    messages += 1;
                    let meta = RelpMeta {
                        txnr: frame.txnr,
                        replies: replies.clone(),
                        session,
                        first: messages == 1,
                        fingerprint: relp::fingerprint(&frame.data),
                    };
                    if !enqueue(
                        &shared,
                        &frame.data,
                        frame.truncated,
                        peer,
                        &hostname,
                        Some(meta),
                    )
                    .await
                    {
                        break 'session;
                    }
                }
                "close" => {
                    let _ = replies.send(Reply::Close {
                        txnr: frame.txnr,
                        after: messages,
                    });
                    break 'session;
                }
                other => {
                    tracing::warn!(connector = %shared.connector, peer = %peer, command = other, opened, "RELP command refused");
                    let _ = replies.send(Reply::Now(relp::reply(
                        frame.txnr,
                        b"500 command not supported",
                    )));
                }
            }
        }
    }
    if !reader.idle() {
        metrics::counter!("sluice_syslog_partial_frames_total", "connector" => shared.connector.clone())
            .increment(1);
        tracing::warn!(connector = %shared.connector, peer = %peer, "RELP peer closed mid-frame; the client resends it (it was not acknowledged)");
    }
}

/// Accepts connections of a TCP-based listener, each served on its own task.
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    protocol: Protocol,
    acceptor: Option<Arc<openssl::ssl::SslAcceptor>>,
    shared: Shared,
) {
    let mut sessions = 0_u64;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                metrics::counter!("sluice_syslog_connections_total", "connector" => shared.connector.clone()).increment(1);
                sessions += 1;
                match (protocol, &acceptor) {
                    (Protocol::Relp, _) => {
                        tokio::spawn(serve_relp(shared.clone(), stream, peer, sessions));
                    }
                    (Protocol::Tls, Some(acceptor)) => {
                        tokio::spawn(serve_tls(
                            shared.clone(),
                            Arc::clone(acceptor),
                            stream,
                            peer,
                        ));
                    }
                    _ => {
                        tokio::spawn(serve_tcp(shared.clone(), stream, peer));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(connector = %shared.connector, error = %e, "accepting a syslog connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads UDP datagrams, one message each.
pub(crate) async fn receive_udp(socket: tokio::net::UdpSocket, shared: Shared) {
    let mut buf = vec![0_u8; 65_536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let hostname = shared.names.name(&peer);
        let cut = n.min(shared.limit);
        if !enqueue(
            &shared,
            &buf[..cut],
            n > shared.limit,
            peer,
            &hostname,
            None,
        )
        .await
        {
            return;
        }
    }
}
