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
    /// The place of its acknowledgement in the session's reply queue, taken before the
    /// message was read further, so acknowledging never waits (see [`RELP_REPLIES`]).
    pub(crate) reply: mpsc::OwnedPermit<Reply>,
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

/// A connection's first read buffer: most connections are idle or send short lines, and
/// `syslog.max.connections` of them may be open.
const READ_BUFFER_START: usize = 4 * 1024;
/// The largest read buffer: enough for a fast sender's burst per read.
const READ_BUFFER_MAX: usize = 64 * 1024;

/// A connection's read buffer: starts at [`READ_BUFFER_START`] and doubles each time a
/// read fills it, up to [`READ_BUFFER_MAX`].
struct ReadBuffer {
    buf: Vec<u8>,
    /// The last read filled the buffer: the peer sends faster than we read.
    full: bool,
}

impl ReadBuffer {
    fn new() -> Self {
        ReadBuffer {
            buf: vec![0_u8; READ_BUFFER_START],
            full: false,
        }
    }

    /// Reads what the peer sent; the bytes are then [`bytes`](Self::bytes)`(n)`.
    async fn read<S>(&mut self, stream: &mut S) -> std::io::Result<usize>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        if self.full && self.buf.len() < READ_BUFFER_MAX {
            let grown = (self.buf.len() * 2).min(READ_BUFFER_MAX);
            self.buf.resize(grown, 0);
        }
        let n = stream.read(&mut self.buf).await?;
        self.full = n == self.buf.len();
        Ok(n)
    }

    fn bytes(&self, n: usize) -> &[u8] {
        &self.buf[..n]
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.len()
    }
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
    let mut buf = ReadBuffer::new();
    loop {
        let n = match buf.read(&mut stream).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(connector = %shared.connector, peer = %peer, error = %e, "syslog connection error");
                break;
            }
        };
        framer.push(buf.bytes(n));
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

/// The most replies of one RELP session queued for its writer, counting the places of
/// acknowledgements of messages still waiting for their commit (the writer holds at most
/// as many again, in the batch it is writing). When they are all taken the session stops
/// reading its peer until the writer catches up: a peer that never reads its replies then
/// stalls (TCP flow control) instead of growing memory. rsyslog's omrelp keeps at most its
/// window (128 by default) unacknowledged, so a well-behaved peer never meets this.
const RELP_REPLIES: usize = 1024;

/// A place for a message's acknowledgement, waiting for one while the session's replies
/// are all taken (`None`: the writer is gone, the session is over).
async fn reply_place(
    shared: &Shared,
    replies: &mpsc::Sender<Reply>,
    peer: SocketAddr,
) -> Option<mpsc::OwnedPermit<Reply>> {
    match replies.clone().try_reserve_owned() {
        Ok(place) => Some(place),
        Err(mpsc::error::TrySendError::Closed(_)) => None,
        Err(mpsc::error::TrySendError::Full(replies)) => {
            metrics::counter!("sluice_syslog_relp_backpressure_total", "connector" => shared.connector.clone())
                .increment(1);
            tracing::debug!(connector = %shared.connector, peer = %peer, limit = RELP_REPLIES, "RELP peer is not reading its replies: the session stops reading it until they are written");
            replies.reserve_owned().await.ok()
        }
    }
}

/// Sends a RELP session's replies in order, several per write when they queue up. A
/// `close` is answered only after every message before it was acknowledged, so the
/// client never closes with messages it would think lost.
async fn write_replies<W>(mut write: W, mut replies: mpsc::Receiver<Reply>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
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
pub(crate) async fn serve_relp<S>(shared: Shared, stream: S, peer: SocketAddr, session: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let hostname = shared.names.name(&peer);
    let (mut read, write) = tokio::io::split(stream);
    let (replies, rx) = mpsc::channel(RELP_REPLIES);
    tokio::spawn(write_replies(write, rx));
    let mut reader = RelpReader::default();
    let mut opened = false;
    let mut messages = 0_u64;
    let mut buf = ReadBuffer::new();
    'session: loop {
        let n = match buf.read(&mut read).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(connector = %shared.connector, peer = %peer, error = %e, "RELP connection error");
                break;
            }
        };
        reader.push(buf.bytes(n));
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
                    if replies
                        .send(Reply::Now(relp::reply(frame.txnr, &data)))
                        .await
                        .is_err()
                    {
                        break 'session;
                    }
                }
                "syslog" if opened => {
                    let Some(reply) = reply_place(&shared, &replies, peer).await else {
                        break 'session;
                    };
                    messages += 1;
                    let meta = RelpMeta {
                        txnr: frame.txnr,
                        reply,
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
                    let close = Reply::Close {
                        txnr: frame.txnr,
                        after: messages,
                    };
                    let _ = replies.send(close).await;
                    break 'session;
                }
                other => {
                    tracing::warn!(connector = %shared.connector, peer = %peer, command = other, opened, "RELP command refused");
                    let refused = relp::reply(frame.txnr, b"500 command not supported");
                    if replies.send(Reply::Now(refused)).await.is_err() {
                        break 'session;
                    }
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

/// A connection holding one of the `syslog.max.connections` places; counted in the
/// open-connections gauge until it ends.
struct OpenConnection {
    _place: tokio::sync::OwnedSemaphorePermit,
    connector: String,
}

impl OpenConnection {
    fn new(place: tokio::sync::OwnedSemaphorePermit, connector: &str) -> Self {
        metrics::gauge!("sluice_syslog_connections_open", "connector" => connector.to_owned())
            .increment(1.0);
        OpenConnection {
            _place: place,
            connector: connector.to_owned(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("sluice_syslog_connections_open", "connector" => self.connector.clone())
            .decrement(1.0);
    }
}

/// Accepts connections of a TCP-based listener, each served on its own task. At most
/// `max_connections` are served at once: each holds buffers and a task, so past the limit
/// a new connection is closed as soon as it is accepted (the client sees the close and
/// retries; leaving it in the backlog would only make it wait unseen).
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    protocol: Protocol,
    acceptor: Option<Arc<openssl::ssl::SslAcceptor>>,
    shared: Shared,
    max_connections: usize,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(
        max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    // Warn once each time the limit is reached, not for every refused connection.
    let mut refusing = false;
    let mut sessions = 0_u64;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                    metrics::counter!("sluice_syslog_connections_refused_total", "connector" => shared.connector.clone()).increment(1);
                    if refusing {
                        tracing::debug!(connector = %shared.connector, peer = %peer, "syslog connection refused: syslog.max.connections reached");
                    } else {
                        tracing::warn!(connector = %shared.connector, peer = %peer, limit = max_connections, "syslog.max.connections reached: new connections are closed at once until one ends");
                        refusing = true;
                    }
                    drop(stream);
                    continue;
                };
                if refusing {
                    tracing::info!(connector = %shared.connector, limit = max_connections, "syslog connections below syslog.max.connections again: accepting");
                    refusing = false;
                }
                metrics::counter!("sluice_syslog_connections_total", "connector" => shared.connector.clone()).increment(1);
                sessions += 1;
                let open = OpenConnection::new(place, &shared.connector);
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _open = open;
                    match (protocol, acceptor) {
                        (Protocol::Relp, _) => serve_relp(shared, stream, peer, sessions).await,
                        (Protocol::Tls, Some(acceptor)) => {
                            serve_tls(shared, acceptor, stream, peer).await;
                        }
                        _ => serve_tcp(shared, stream, peer).await,
                    }
                });
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

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// What a test connection shares: a 1 KiB frame limit, no name lookups.
    pub(crate) fn shared(queue: mpsc::Sender<Received>) -> Shared {
        Shared {
            queue,
            limit: 1024,
            names: PeerNames::disabled(),
            connector: "syslog-test".into(),
        }
    }

    /// Whether the server closed the connection (EOF or reset) within a second.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0_u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Idle connections are the common case: a connection starts with a small buffer and
    /// it grows only while reads fill it.
    #[tokio::test]
    async fn read_buffers_start_small_and_grow_while_reads_fill_them() {
        let mut buf = ReadBuffer::new();
        assert_eq!(buf.capacity(), 4096);
        let (mut client, mut server) = tokio::io::duplex(256 * 1024);
        client.write_all(&vec![b'x'; 200_000]).await.expect("sent");
        let mut reads = Vec::new();
        for _ in 0..6 {
            reads.push(buf.read(&mut server).await.expect("read"));
        }
        assert_eq!(reads, [4096, 8192, 16_384, 32_768, 65_536, 65_536]);
        assert_eq!(buf.bytes(3), b"xxx");
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_accept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let address = listener.local_addr().expect("address");
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(accept(listener, Protocol::Tcp, None, shared(tx), 2));
        let connect = || tokio::net::TcpStream::connect(address);
        let mut first = connect().await.expect("first");
        let mut second = connect().await.expect("second");
        let mut third = connect().await.expect("third");
        assert!(
            closed_by_server(&mut third).await,
            "a third connection was kept"
        );
        second
            .write_all(b"<13>Jan  1 00:00:00 h a: second\n")
            .await
            .expect("sent");
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(got.is_ok_and(|r| r.is_some_and(|r| r.message.message.ends_with("second"))));
        // A closed connection frees its place.
        first.shutdown().await.expect("closed");
        drop(first);
        let mut served = false;
        for _ in 0..50 {
            let mut again = connect().await.expect("connected");
            if !closed_by_server(&mut again).await {
                again
                    .write_all(b"<13>Jan  1 00:00:00 h a: again\n")
                    .await
                    .expect("sent");
                let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
                served = got.is_ok_and(|r| r.is_some_and(|r| r.message.message.ends_with("again")));
                break;
            }
        }
        assert!(served, "no place freed after a connection closed");
    }
}
