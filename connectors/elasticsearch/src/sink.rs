//! The sink task: each `put` is written with the bulk API before it returns (split into
//! requests of `batch.size`, up to `max.in.flight.requests` at a time, all within
//! `flush.timeout.ms`), so `pre_commit` has nothing left to flush and the runtime commits
//! offsets only after the bulks succeeded.
//!
//! Effectively-once: with `key.ignore=true` the document id is `topic+partition+offset`;
//! otherwise the record key, with the offset as an external version, so a replay after a
//! crash neither duplicates a document nor overwrites a newer one with an older one. A
//! version conflict is such a replay, and counts as success.
//!
//! As in Confluent's sink, a bulk request that fails in transport (a node restarting) is
//! retried, and so are failed items alone (not the whole bulk) on 429 and 5xx, waiting a
//! random time below `retry.backoff.ms << attempt`, up to `max.retries`; then the put fails
//! retriably and the runtime puts the batch again later (already written documents are
//! idempotent), where Confluent's task would fail. A document the
//! server rejects (4xx, e.g. a mapping conflict) follows `behavior.on.malformed.documents`;
//! `fail` reports a data error naming the record, and the runtime then isolates it for the
//! dead-letter queue (rewriting the others is idempotent).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{
    MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder,
};
use elasticsearch::http::Url;
use elasticsearch::{BulkParts, Elasticsearch};
use serde_json::{json, Map, Value as Json};
use sluice_proto::{
    BoxFuture, ConfigDef, Connector, ConnectorError, ErrorKind, ParsedConfig, Props, SinkConnector,
    SinkRecord, SinkTask, TopicPartition, Value,
};

use crate::config::{self, *};

/// The connector: `tasks.max` tasks share the topics' partitions.
#[derive(Debug, Default)]
pub struct ElasticsearchSink;

impl Connector for ElasticsearchSink {
    fn config_def(&self) -> ConfigDef {
        config::sink_def()
    }

    fn task_configs(&self, config: &Props, max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        Ok((0..max_tasks.max(1)).map(|_| config.clone()).collect())
    }
}

impl SinkConnector for ElasticsearchSink {
    fn task(&self) -> Box<dyn SinkTask> {
        Box::new(ElasticsearchSinkTask::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum OnNull {
    Ignore,
    Delete,
    #[default]
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum OnMalformed {
    Ignore,
    Warn,
    #[default]
    Fail,
}

/// Writes batches with the bulk API.
#[derive(Default)]
pub struct ElasticsearchSinkTask {
    writer: Option<Writer>,
    key_ignore: bool,
    upsert: bool,
    on_null: OnNull,
    batch_size: usize,
    in_flight: usize,
    flush_timeout: Duration,
    connector: String,
}

/// What one bulk request needs; cloned into each concurrent request of a put.
#[derive(Clone)]
struct Writer {
    client: Elasticsearch,
    on_malformed: OnMalformed,
    max_retries: u32,
    backoff: Duration,
    connector: String,
}

/// A record's data-model value as a JSON document.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int8(n) => json!(n),
        Value::Int16(n) => json!(n),
        Value::Int32(n) => json!(n),
        Value::Int64(n) => json!(n),
        Value::Float32(n) => json!(n),
        Value::Float64(n) => json!(n),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(String::from_utf8_lossy(b)),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            Json::Object(m)
        }
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

fn key_id(key: &Value) -> Option<String> {
    match key {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(to_json(other).to_string()),
    }
}

fn coordinates(r: &SinkRecord) -> String {
    format!("{}[{}]@{}", r.topic, r.partition, r.offset)
}

/// One bulk item: its action line and optional document line.
struct Item {
    action: Json,
    document: Option<Json>,
    at: String,
}

impl ElasticsearchSinkTask {
    fn item(&self, r: &SinkRecord) -> Result<Option<Item>, ConnectorError> {
        let index = r.topic.to_lowercase();
        let (id, version) = if self.key_ignore {
            (format!("{}+{}+{}", r.topic, r.partition, r.offset), None)
        } else {
            let id = key_id(&r.key).ok_or_else(|| {
                ConnectorError::data(format!(
                    "{}: key.ignore=false but the record has no key",
                    coordinates(r)
                ))
            })?;
            (id, Some(r.offset))
        };
        if r.value == Value::Null {
            return match self.on_null {
                OnNull::Ignore => Ok(None),
                OnNull::Fail => Err(ConnectorError::data(format!(
                    "{}: null value (behavior.on.null.values=fail)",
                    coordinates(r)
                ))),
                OnNull::Delete => {
                    let mut meta = json!({"_index": index, "_id": id});
                    if let Some(v) = version {
                        meta["version"] = json!(v);
                        meta["version_type"] = json!("external");
                    }
                    Ok(Some(Item {
                        action: json!({ "delete": meta }),
                        document: None,
                        at: coordinates(r),
                    }))
                }
            };
        }
        let document = to_json(&r.value);
        if !document.is_object() {
            return Err(ConnectorError::data(format!(
                "{}: the value is not an object and cannot be a document",
                coordinates(r)
            )));
        }
        let mut meta = json!({"_index": index, "_id": id});
        if self.upsert {
            return Ok(Some(Item {
                action: json!({ "update": meta }),
                document: Some(json!({"doc": document, "doc_as_upsert": true})),
                at: coordinates(r),
            }));
        }
        if let Some(v) = version {
            meta["version"] = json!(v);
            meta["version_type"] = json!("external");
        }
        Ok(Some(Item {
            action: json!({ "index": meta }),
            document: Some(document),
            at: coordinates(r),
        }))
    }
}

/// What one bulk request left to do.
struct Outcome {
    /// Items to send again: those refused for now (429/5xx), or all of them when the
    /// request failed in transport (a node restarting refuses or resets connections).
    retry: Vec<Item>,
    /// Why they are sent again, for the log and the error once retries run out.
    reason: String,
    /// Items the server rejected, with its reason.
    rejected: Vec<(Item, String)>,
}

impl Outcome {
    fn retry_all(items: Vec<Item>, reason: String) -> Self {
        Outcome {
            retry: items,
            reason,
            rejected: Vec::new(),
        }
    }
}

/// The longest wait before retry number `attempt` (1-based) of a bulk request:
/// `retry.backoff.ms` doubled per attempt, as Confluent's sink computes it
/// (`retry.backoff.ms << attempt`). The wait is drawn below it (full jitter), so tasks
/// retrying together spread out; with the defaults (100 ms, 5 retries) no wait reaches
/// 3.2 s and a put gives up within 6.2 s of waiting, leaving longer outages to the
/// runtime's put retries.
fn backoff_ceiling(backoff: Duration, attempt: u32) -> Duration {
    backoff.saturating_mul(2_u32.saturating_pow(attempt))
}

impl Writer {
    /// Sends `items`; a request that fails in transport, or is refused whole (429/5xx),
    /// comes back entirely as to be retried: ids are deterministic, so resending what
    /// may have been written adds nothing.
    async fn bulk(&self, items: Vec<Item>) -> Result<Outcome, ConnectorError> {
        let mut body: Vec<JsonBody<Json>> = Vec::with_capacity(items.len() * 2);
        for item in &items {
            body.push(item.action.clone().into());
            if let Some(d) = &item.document {
                body.push(d.clone().into());
            }
        }
        let started = std::time::Instant::now();
        let response = match self.client.bulk(BulkParts::None).body(body).send().await {
            Ok(response) => response,
            Err(e) => return Ok(Outcome::retry_all(items, format!("bulk request: {e}"))),
        };
        metrics::histogram!("sluice_elasticsearch_bulk_seconds", "connector" => self.connector.clone())
            .record(started.elapsed().as_secs_f64());
        let status = response.status_code().as_u16();
        if status == 429 || status >= 500 {
            return Ok(Outcome::retry_all(
                items,
                format!("bulk request answered {status}"),
            ));
        }
        let answer: Json = match response.json().await {
            Ok(answer) => answer,
            Err(e) => return Ok(Outcome::retry_all(items, format!("bulk response: {e}"))),
        };
        if status >= 400 {
            return Err(ConnectorError::external(format!(
                "bulk request refused ({status}): {answer}"
            )));
        }
        let mut outcome = Outcome::retry_all(Vec::new(), String::new());
        if answer["errors"] != json!(true) {
            return Ok(outcome);
        }
        let results = answer["items"].as_array().cloned().unwrap_or_default();
        for (item, result) in items.into_iter().zip(results) {
            let result = result
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or_default();
            let code = result["status"].as_u64().unwrap_or(0);
            match code {
                // A replay meeting the document it wrote before: already done.
                409 => {
                    metrics::counter!("sluice_elasticsearch_version_conflicts_total", "connector" => self.connector.clone()).increment(1);
                }
                // Deleting what is not there is done too.
                404 if item.document.is_none() => {}
                429 | 500.. => {
                    if outcome.reason.is_empty() {
                        outcome.reason = format!("documents refused for now: {}", result["error"]);
                    }
                    outcome.retry.push(item);
                }
                c if c >= 400 => outcome.rejected.push((item, result["error"].to_string())),
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// Writes one chunk: what failed in transport or was refused for now (429/5xx) is
    /// retried alone with jittered backoff, up to `max.retries`; rejected items follow
    /// `behavior.on.malformed.documents`.
    async fn write(self, mut items: Vec<Item>) -> Result<(), ConnectorError> {
        let mut attempt = 0;
        while !items.is_empty() {
            let Outcome {
                retry,
                reason,
                rejected,
            } = self.bulk(items).await?;
            for (item, error) in rejected {
                metrics::counter!("sluice_elasticsearch_rejected_total", "connector" => self.connector.clone()).increment(1);
                match self.on_malformed {
                    OnMalformed::Ignore => {}
                    OnMalformed::Warn => {
                        tracing::warn!(connector = %self.connector, record = %item.at, error = %error, "document rejected; skipped (behavior.on.malformed.documents=warn)");
                    }
                    OnMalformed::Fail => {
                        return Err(ConnectorError::data(format!(
                            "{}: document rejected: {error}",
                            item.at
                        )));
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            attempt += 1;
            if attempt > self.max_retries {
                return Err(ConnectorError::retriable(format!(
                    "{} documents not written after {} retries: {reason}",
                    retry.len(),
                    self.max_retries
                )));
            }
            let wait = jitter(backoff_ceiling(self.backoff, attempt));
            metrics::counter!("sluice_elasticsearch_retries_total", "connector" => self.connector.clone()).increment(1);
            tracing::warn!(connector = %self.connector, items = retry.len(), attempt, max_retries = self.max_retries, backoff_ms = wait.as_millis() as u64, reason = %reason, "bulk not written; retrying what is left");
            tokio::time::sleep(wait).await;
            items = retry;
        }
        Ok(())
    }
}

/// Applies the `elastic.https.*` keys: a PEM truststore, host name checking, and
/// `elastic.security.protocol` checked against the URLs' schemes.
fn tls(
    parsed: &ParsedConfig,
    urls: &[Url],
    builder: TransportBuilder,
) -> Result<TransportBuilder, ConnectorError> {
    let https = urls.iter().filter(|u| u.scheme() == "https").count();
    let ssl = parsed
        .string(SECURITY_PROTOCOL)
        .is_some_and(|p| p.eq_ignore_ascii_case("SSL"));
    if ssl && https < urls.len() {
        return Err(ConnectorError::config(format!(
            "{SECURITY_PROTOCOL}=SSL but {URL} has http URLs"
        )));
    }
    let location = parsed.string(TRUSTSTORE).unwrap_or_default();
    if location.is_empty() {
        return Ok(builder);
    }
    if !parsed
        .string(TRUSTSTORE_TYPE)
        .is_some_and(|t| t.eq_ignore_ascii_case("PEM"))
    {
        return Err(ConnectorError::config(format!(
            "{TRUSTSTORE_TYPE}: only PEM truststores are read; set it to PEM (keytool or openssl can export JKS/PKCS12 certificates as PEM)"
        )));
    }
    let pem = std::fs::read(location)
        .map_err(|e| ConnectorError::config(format!("{TRUSTSTORE}: reading {location}: {e}")))?;
    let certificate = Certificate::from_pem(&pem).map_err(|e| {
        ConnectorError::config(format!(
            "{TRUSTSTORE}: {location} is not PEM certificates: {e}"
        ))
    })?;
    let check_host = !parsed
        .string(ENDPOINT_IDENTIFICATION)
        .unwrap_or("https")
        .is_empty();
    Ok(builder.cert_validation(if check_host {
        CertificateValidation::Full(certificate)
    } else {
        CertificateValidation::Certificate(certificate)
    }))
}

/// Keeps the error that matters most from a finished request: a data error (the runtime
/// isolates the record at fault) before any other, else the first.
fn note(
    failure: &mut Option<ConnectorError>,
    done: Option<Result<Result<(), ConnectorError>, tokio::task::JoinError>>,
) {
    let error = match done {
        None | Some(Ok(Ok(()))) => return,
        Some(Ok(Err(e))) => e,
        Some(Err(e)) => ConnectorError::internal(format!("bulk request task: {e}")),
    };
    let replace = match failure {
        None => true,
        Some(current) => current.kind != ErrorKind::Data && error.kind == ErrorKind::Data,
    };
    if replace {
        *failure = Some(error);
    }
}

/// A wait drawn below `max` (and 0 for a zero `max`).
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from(nanos) % millis)
}

impl SinkTask for ElasticsearchSinkTask {
    fn start<'a>(&'a mut self, config: &'a Props) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let parsed = config::sink_def()
                .parse(config)
                .map_err(|e| ConnectorError::config(e.to_string()))?;
            self.connector = config.get("name").cloned().unwrap_or_default();
            let urls = parsed
                .list(URL)
                .unwrap_or_default()
                .iter()
                .map(|u| {
                    Url::parse(u).map_err(|e| ConnectorError::config(format!("{URL}: {u:?}: {e}")))
                })
                .collect::<Result<Vec<Url>, _>>()?;
            let timeout = Duration::from_millis(
                u64::try_from(parsed.long(READ_TIMEOUT).unwrap_or(15_000)).unwrap_or(15_000),
            );
            let mut builder = match urls.as_slice() {
                [] => return Err(ConnectorError::config(format!("{URL}: no URL given"))),
                [one] => TransportBuilder::new(SingleNodeConnectionPool::new(one.clone())),
                _ => {
                    TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls.clone(), None))
                }
            }
            .timeout(timeout);
            if let Some(user) = parsed.string(USER) {
                let password = parsed
                    .password(PASSWORD)
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default();
                builder = builder.auth(Credentials::Basic(user.to_owned(), password));
            }
            builder = tls(&parsed, &urls, builder)?;
            let transport = builder
                .build()
                .map_err(|e| ConnectorError::config(format!("{URL}: {e}")))?;
            if parsed.string(TYPE_NAME).is_some() {
                tracing::warn!(connector = %self.connector, "type.name is ignored: Elasticsearch 7+ and OpenSearch have no mapping types");
            }
            let long = |key: &str, default: i64| parsed.long(key).unwrap_or(default);
            self.key_ignore = parsed.boolean(KEY_IGNORE).unwrap_or(false);
            self.upsert = parsed.string(WRITE_METHOD) == Some("upsert");
            self.on_null = match parsed.string(NULL_VALUES) {
                Some("ignore") => OnNull::Ignore,
                Some("delete") => OnNull::Delete,
                _ => OnNull::Fail,
            };
            self.batch_size = usize::try_from(long(BATCH_SIZE, 2000))
                .unwrap_or(2000)
                .max(1);
            // Updates carry no version: only one request at a time keeps them in order.
            self.in_flight = if self.upsert {
                1
            } else {
                usize::try_from(long(IN_FLIGHT, 5)).unwrap_or(5).max(1)
            };
            self.flush_timeout = Duration::from_millis(
                u64::try_from(long(FLUSH_TIMEOUT, 180_000)).unwrap_or(180_000),
            );
            self.writer = Some(Writer {
                client: Elasticsearch::new(transport),
                on_malformed: match parsed.string(MALFORMED) {
                    Some("ignore") => OnMalformed::Ignore,
                    Some("warn") => OnMalformed::Warn,
                    _ => OnMalformed::Fail,
                },
                max_retries: u32::try_from(long(MAX_RETRIES, 5)).unwrap_or(5),
                backoff: Duration::from_millis(
                    u64::try_from(long(RETRY_BACKOFF, 100)).unwrap_or(100),
                ),
                connector: self.connector.clone(),
            });
            tracing::info!(connector = %self.connector, nodes = urls.len(), key_ignore = self.key_ignore, "elasticsearch sink started");
            Ok(())
        })
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            let writer = self
                .writer
                .clone()
                .ok_or_else(|| ConnectorError::internal("elasticsearch sink used before start"))?;
            let mut items = Vec::with_capacity(records.len());
            for r in &records {
                items.extend(self.item(r)?);
            }
            let (batch_size, in_flight) = (self.batch_size, self.in_flight);
            let work = async move {
                let mut requests = tokio::task::JoinSet::new();
                let mut failure: Option<ConnectorError> = None;
                let mut items = items.into_iter().peekable();
                while items.peek().is_some() && failure.is_none() {
                    while requests.len() >= in_flight {
                        note(&mut failure, requests.join_next().await);
                    }
                    let chunk: Vec<Item> = items.by_ref().take(batch_size).collect();
                    requests.spawn(writer.clone().write(chunk));
                }
                while let Some(done) = requests.join_next().await {
                    note(&mut failure, Some(done));
                }
                failure.map_or(Ok(()), Err)
            };
            // Dropping `work` on timeout aborts its requests (a JoinSet aborts on drop).
            match tokio::time::timeout(self.flush_timeout, work).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ConnectorError::retriable(format!(
                        "{} records not written within {FLUSH_TIMEOUT}={} ms",
                        records.len(),
                        self.flush_timeout.as_millis()
                    )))
                }
            }
            metrics::counter!("sluice_elasticsearch_documents_total", "connector" => self.connector.clone()).increment(records.len() as u64);
            Ok(())
        })
    }

    fn pre_commit<'a>(
        &'a mut self,
        offsets: &'a BTreeMap<TopicPartition, i64>,
    ) -> BoxFuture<'a, Result<BTreeMap<TopicPartition, i64>, ConnectorError>> {
        // Every put was written before it returned.
        Box::pin(async move { Ok(offsets.clone()) })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer = None;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bulk endpoint on 127.0.0.1 that closes its first `drop_first` connections without
    /// answering (what a node going away looks like to the client), then answers every
    /// bulk with success. Returns its URL and the connections it accepted.
    async fn flaky_bulk_endpoint(drop_first: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if counter.fetch_add(1, Ordering::SeqCst) < drop_first {
                    drop(socket);
                    continue;
                }
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0_u8; 8192];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() < head_end + 4 + length {
                            continue;
                        }
                        request.clear();
                        let body = r#"{"took":1,"errors":false,"items":[]}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn started(url: &str, max_retries: u32) -> ElasticsearchSinkTask {
        let props: Props = [
            ("name", "es-test"),
            ("connection.url", url),
            ("key.ignore", "true"),
            ("retry.backoff.ms", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([(MAX_RETRIES.to_owned(), max_retries.to_string())])
        .collect();
        let mut task = ElasticsearchSinkTask::default();
        task.start(&props).await.unwrap();
        task
    }

    fn record(offset: i64) -> SinkRecord {
        SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            key_schema: None,
            key: Value::Null,
            value_schema: None,
            value: Value::Struct(vec![("n".into(), Value::Int64(offset))]),
            timestamp: None,
            timestamp_type: sluice_proto::TimestampType::NoTimestamp,
            headers: Vec::new(),
        }
    }

    /// Confluent's sink retries a bulk request that failed in transport (connection
    /// refused or reset: a node restarting) up to `max.retries`, as it does refused items.
    #[tokio::test]
    async fn a_bulk_request_failing_in_transport_is_retried_within_the_put() {
        let (url, accepted) = flaky_bulk_endpoint(2).await;
        let mut task = started(&url, 5).await;
        let put = task.put(vec![record(0), record(1)]).await;
        assert!(put.is_ok(), "{put:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "two dropped, then written"
        );
    }

    /// With the defaults a put waits at most 6.2 s in all before it fails and the
    /// runtime's backoff takes over; no single wait reaches 3.2 s.
    #[test]
    fn the_default_backoff_schedule_stays_short() {
        let backoff = Duration::from_millis(100);
        let ceilings: Vec<Duration> = (1..=5).map(|a| backoff_ceiling(backoff, a)).collect();
        assert_eq!(
            ceilings.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            [200, 400, 800, 1600, 3200]
        );
        assert!(ceilings.iter().sum::<Duration>() <= Duration::from_millis(6200));
        for ceiling in ceilings {
            for _ in 0..100 {
                assert!(jitter(ceiling) < ceiling);
            }
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        // Large attempt numbers saturate instead of overflowing.
        assert_eq!(
            backoff_ceiling(backoff, 64),
            backoff.saturating_mul(u32::MAX)
        );
    }

    /// ... and no more: then the put fails retriably and the runtime takes over.
    #[tokio::test]
    async fn transport_retries_stop_at_max_retries() {
        let (url, accepted) = flaky_bulk_endpoint(usize::MAX).await;
        let mut task = started(&url, 2).await;
        let put = task.put(vec![record(0)]).await;
        let error = put.expect_err("every connection was dropped");
        assert!(error.retriable, "{error:?}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "the first try and 2 retries"
        );
    }

    #[test]
    fn structs_and_maps_become_objects() {
        let v = Value::Struct(vec![
            ("a".into(), Value::Int32(1)),
            (
                "m".into(),
                Value::Map(vec![(Value::String("k".into()), Value::Boolean(true))]),
            ),
        ]);
        assert_eq!(to_json(&v), json!({"a": 1, "m": {"k": true}}));
    }
}
