//! One connection to one broker: framing, correlation ids and version negotiation.
//!
//! Requests go one at a time (a group member has at most one outstanding request: a
//! JoinGroup blocks until the rebalance completes, and nothing else is due meanwhile).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::secure::{plain_token, Mechanism, Scram, Security};
use crate::GroupError;

/// A byte stream to a broker: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Stream for T {}

/// The largest response accepted (a JoinGroup response carries every member's metadata).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A connection with the versions both sides support.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: String,
    stream: Box<dyn Stream>,
    client_id: StrBytes,
    correlation: i32,
    /// Per API key: the highest version the broker supports.
    broker_max: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (`host:port`), secured as `security` says, asks which versions
    /// the broker speaks, and authenticates.
    pub(crate) async fn open(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        security: &Security,
    ) -> Result<Self, GroupError> {
        let io = |e: std::io::Error| GroupError::Io {
            addr: addr.to_owned(),
            source: e,
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| GroupError::Timeout {
                what: format!("connecting to {addr}"),
            })?
            .map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match security.connector()? {
            None => Box::new(tcp),
            Some((connector, verify_hostname)) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let tls_error = |e: &dyn std::fmt::Display| GroupError::Tls {
                    addr: addr.to_owned(),
                    detail: e.to_string(),
                };
                let ssl = connector
                    .configure()
                    .map_err(|e| tls_error(&e))?
                    .verify_hostname(verify_hostname)
                    .into_ssl(host)
                    .map_err(|e| tls_error(&e))?;
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_error(&e))?;
                tokio::time::timeout(timeout, std::pin::Pin::new(&mut tls).connect())
                    .await
                    .map_err(|_| GroupError::Timeout {
                        what: format!("TLS handshake with {addr}"),
                    })?
                    .map_err(|e| tls_error(&e))?;
                Box::new(tls)
            }
        };
        let mut conn = Connection {
            addr: addr.to_owned(),
            stream,
            client_id: StrBytes::from_string(client_id.to_owned()),
            correlation: 0,
            broker_max: HashMap::new(),
        };
        // v0 is understood by every broker and answers with every API's range.
        let versions = conn
            .call_at(&ApiVersionsRequest::default(), 0, timeout)
            .await?;
        if versions.error_code != 0 {
            return Err(GroupError::broker("ApiVersions", versions.error_code, None));
        }
        conn.broker_max = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl, timeout).await?;
        }
        Ok(conn)
    }

    /// SASL over Kafka's own framing (KIP-152): SaslHandshake names the mechanism, then
    /// each token travels in a SaslAuthenticate request.
    async fn authenticate(
        &mut self,
        sasl: &crate::secure::Sasl,
        timeout: Duration,
    ) -> Result<(), GroupError> {
        let refused = |code: i16, message: Option<String>| {
            GroupError::Sasl(format!(
                "{} as {:?} refused: {}{}",
                sasl.mechanism.name(),
                sasl.username,
                kafka_protocol::ResponseError::try_from_code(code)
                    .map_or_else(|| format!("error {code}"), |e| format!("{e:?}")),
                message.map(|m| format!(" ({m})")).unwrap_or_default()
            ))
        };
        let version = self.version::<SaslHandshakeRequest>(1)?;
        let mut hello = SaslHandshakeRequest::default();
        hello.mechanism = StrBytes::from_static_str(sasl.mechanism.name());
        let answer = self.call_at(&hello, version, timeout).await?;
        if answer.error_code != 0 {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(
                answer.error_code,
                Some(format!("the broker offers {}", offered.join(", "))),
            ));
        }
        let version = self.version::<SaslAuthenticateRequest>(2)?;
        let step = |token: Vec<u8>| {
            let mut request = SaslAuthenticateRequest::default();
            request.auth_bytes = Bytes::from(token);
            request
        };
        match sasl.mechanism {
            Mechanism::Plain => {
                let answer = self
                    .call_at(&step(plain_token(sasl)), version, timeout)
                    .await?;
                if answer.error_code != 0 {
                    return Err(refused(
                        answer.error_code,
                        answer.error_message.map(|m| m.to_string()),
                    ));
                }
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = Scram::new(sasl)?;
                let first = self
                    .call_at(&step(scram.first().into_bytes()), version, timeout)
                    .await?;
                if first.error_code != 0 {
                    return Err(refused(
                        first.error_code,
                        first.error_message.map(|m| m.to_string()),
                    ));
                }
                let last = scram.last(&first.auth_bytes)?;
                let done = self
                    .call_at(&step(last.into_bytes()), version, timeout)
                    .await?;
                if done.error_code != 0 {
                    return Err(refused(
                        done.error_code,
                        done.error_message.map(|m| m.to_string()),
                    ));
                }
                scram.verify(&done.auth_bytes)?;
            }
        }
        tracing::debug!(addr = %self.addr, mechanism = sasl.mechanism.name(), "authenticated");
        Ok(())
    }

    /// The address this connection goes to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `R` to use: the highest both sides (and `cap`) support.
    pub(crate) fn version<R: Request>(&self, cap: i16) -> Result<i16, GroupError> {
        let ours = R::VERSIONS;
        let Some(&(min, max)) = self.broker_max.get(&R::KEY) else {
            return Err(GroupError::Unsupported {
                api: R::KEY,
                addr: self.addr.clone(),
            });
        };
        let high = max.min(ours.max).min(cap);
        let low = min.max(ours.min);
        if high < low {
            return Err(GroupError::Unsupported {
                api: R::KEY,
                addr: self.addr.clone(),
            });
        }
        Ok(high)
    }

    /// Sends `request` at `version` and waits up to `wait` for its response.
    pub(crate) async fn call_at<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response, GroupError> {
        let codec = |e: String| GroupError::Codec {
            api: R::KEY,
            detail: e,
        };
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(self.client_id.clone());
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        request
            .encode(&mut body, version)
            .map_err(|e| codec(e.to_string()))?;
        let len = i32::try_from(body.len()).map_err(|e| codec(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(len);
        frame.extend_from_slice(&body);
        tracing::trace!(addr = %self.addr, api = R::KEY, version, correlation, "request");
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_RESPONSE && *l >= 4)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("response length {len} out of range"),
                    )
                })?;
            let mut buf = vec![0_u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(Bytes::from(buf))
        };
        let mut buf = tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| GroupError::Timeout {
                what: format!("api {} request to {}", R::KEY, self.addr),
            })?
            .map_err(|e| GroupError::Io {
                addr: self.addr.clone(),
                source: e,
            })?;
        tracing::trace!(
            api = R::KEY,
            version,
            correlation,
            bytes = buf.len(),
            "response"
        );
        // The response header: the correlation id, then (flexible versions) tagged fields.
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let head = kafka_protocol::messages::ResponseHeader::decode(&mut buf, header_version)
            .map_err(|e| codec(e.to_string()))?;
        if head.correlation_id != correlation {
            return Err(codec(format!(
                "correlation id {}, expected {correlation}",
                head.correlation_id
            )));
        }
        let response = R::Response::decode(&mut buf, version).map_err(|e| codec(e.to_string()))?;
        Ok(response)
    }
}
