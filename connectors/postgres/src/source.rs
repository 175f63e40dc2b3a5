//! The PostgreSQL source: Debezium's `PostgresConnector`, streaming changes from a
//! logical replication slot (pgoutput) as Debezium's change events, exactly once.
//!
//! Exactly once rests on three facts. A poll returns whole PostgreSQL transactions only,
//! and the engine commits Kafka transactions only between polls, so a PostgreSQL
//! transaction is never split. Every record of a transaction carries the offset
//! `{"lsn": <its commit's end LSN>}`, committed in the same Kafka transaction. On restart
//! the stream starts at that end LSN, and PostgreSQL skips every transaction whose commit
//! starts before it; the slot is confirmed only up to what Kafka has committed, so it
//! never lets go of WAL a restart still needs. A slot that is missing while offsets exist,
//! or that confirmed past the stored offset, means changes were lost: the task fails and
//! says so instead of carrying on (with `snapshot.mode=when_needed` it takes a new slot and
//! snapshot instead).
//!
//! A quiet slot (its tables idle, or only other tables or databases written) is advanced
//! all the same: every second (or every `heartbeat.interval.ms`, with a heartbeat record on
//! `__debezium-heartbeat.<prefix>`) the server's position is committed to Kafka as the
//! offset, with no record when heartbeats are off, and the slot is confirmed there once it
//! is committed. So the slot's confirmed position never passes the committed offset, and
//! an idle captured database never makes the slot hold WAL (Debezium's slot does, unless
//! heartbeats are set up).
//!
//! The initial snapshot (`snapshot.mode=initial`) is [`crate::snapshot`]'s; incremental
//! snapshots while streaming (signal table rows) are [`crate::incremental`]'s.
//!
//! `snapshot.mode=always` reads every table at the first start as `initial` does, and at
//! every later start as an incremental snapshot while streaming resumes from the committed
//! offset.
//!
//! Not built yet (refused by validate): `snapshot.mode=custom`, blocking snapshots, logical
//! decoding messages, TLS to PostgreSQL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_proto::connector::BoxFuture;
use sluice_proto::{
    ConfigDef, Connector, ConnectorError, ExactlyOnceSupport, Props, Schema, SchemaType,
    SourceConnector, SourceOffset, SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
    Value,
};

use crate::config::{self, PostgresConfig};
use crate::envelope::{SourceInfo, TableSchemas, PG_EPOCH_MICROS};
use crate::incremental::{self, Incremental, Signal};
use crate::now_micros;
use crate::pgoutput::{Datum, Lsn, Message};
use crate::preflight;
use crate::replication::{self, Event, ReplicationError, Session, Stream};
use crate::setup::{
    ensure_publication, free_slot, load_enums, load_extensions, lost_changes, primary_key,
    snapshot_sessions,
};
use crate::snapshot::{
    Emitter, Snapshot, Start, IN_PROGRESS, SNAPSHOT, SNAPSHOT_BLOCK, SNAPSHOT_KEY, SNAPSHOT_TABLE,
};
use crate::txmeta;

/// The class names this source answers to: Debezium's first (a Debezium config works as
/// it is), then Sluice's own.
pub const ALIASES: &[&str] = &[
    "io.debezium.connector.postgresql.PostgresConnector",
    "PostgresConnector",
    "io.sluice.connect.postgres.PostgresCdcSourceConnector",
];

/// The source partition key, as Debezium's: `{"server": <topic.prefix>}`.
const SERVER: &str = "server";
/// The offset key of the end LSN of the last transaction committed to Kafka.
const LSN: &str = "lsn";

/// How often the slot's retained WAL is measured.
const SLOT_CHECK: Duration = Duration::from_secs(10);

/// How often a slot whose captured tables are quiet is confirmed at the server's position
/// when heartbeats are off (with them, at each heartbeat).
const IDLE_CONFIRM: Duration = Duration::from_secs(1);

/// How long a poll waits for more when nothing is ready.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// The connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct PostgresSource;

impl Connector for PostgresSource {
    fn config_def(&self) -> ConfigDef {
        config::source_def()
    }

    fn task_configs(&self, config: &Props, _max_tasks: u32) -> Result<Vec<Props>, ConnectorError> {
        PostgresConfig::parse(config).map_err(|e| ConnectorError::config(e.to_string()))?;
        // A slot has one reader: one task, whatever tasks.max says (as Debezium).
        Ok(vec![config.clone()])
    }

    fn validate_live<'a>(&'a self, config: &'a Props) -> BoxFuture<'a, Vec<(String, String)>> {
        Box::pin(async move {
            match PostgresConfig::parse(config) {
                Ok(config) => preflight::problems(&config).await,
                // Each key's own check reports these.
                Err(_) => Vec::new(),
            }
        })
    }
}

impl SourceConnector for PostgresSource {
    fn task(&self) -> Box<dyn SourceTask> {
        Box::new(PostgresSourceTask::default())
    }

    fn exactly_once_support(&self, _config: &Props) -> ExactlyOnceSupport {
        ExactlyOnceSupport::Supported
    }

    fn signal<'a>(
        &'a self,
        config: &'a Props,
        signal: &'a sluice_proto::Signal,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let config =
                PostgresConfig::parse(config).map_err(|e| ConnectorError::config(e.to_string()))?;
            incremental::send(&config, signal).await
        })
    }
}

/// A transaction read up to its commit.
struct Open {
    xid: u32,
    /// Where the commit record starts: `source.lsn` of the transaction's events.
    final_lsn: Lsn,
    commit_micros: i64,
    records: Vec<SourceRecord>,
    /// The first change's position (captured or not): BEGIN's, for transaction metadata.
    first_lsn: Option<Lsn>,
    /// The events counted for transaction metadata.
    counts: txmeta::Counts,
    /// Rows written to the signal table, acted on at the commit.
    signals: Vec<Signal>,
}

struct Running {
    config: PostgresConfig,
    /// `<connector>-<task>`, for log lines.
    label: String,
    /// The metrics' labels.
    connector: String,
    task: String,
    sql: tokio_postgres::Client,
    stream: Option<Stream>,
    /// A session holding an exported snapshot, started once the snapshot is read.
    pending: Option<Stream>,
    /// The snapshot being read, if any; streaming starts when it is done.
    snapshot: Option<Snapshot>,
    session: Session,
    /// The position streaming starts at after the snapshot (its consistent point).
    snapshot_point: Lsn,
    partition: SourcePartition,
    /// Relation OID -> its event schemas, or `None` for a table not captured.
    tables: HashMap<u32, Option<TableSchemas>>,
    /// Enum type OID -> its labels in order, comma-separated (`io.debezium.data.Enum`).
    enums: HashMap<u32, String>,
    open: Option<Open>,
    ready: Vec<SourceRecord>,
    /// The end LSN the stream resumed after: a transaction ending there or before is old.
    resumed_at: Lsn,
    /// The end LSN of the last transaction a poll returned.
    returned: Option<Lsn>,
    /// Its commit time (µs since 1970), for the lag once Kafka has it.
    returned_commit_micros: Option<i64>,
    /// When the slot's retained WAL was last measured (at the first poll, then every 10 s).
    slot_checked: Option<Instant>,
    /// A position past `returned` with nothing captured in between (transactions of other
    /// tables, keepalives between transactions): a heartbeat record carries it to Kafka,
    /// after which the slot may be confirmed there (so a quiet slot lets go of WAL).
    idle_end: Option<Lsn>,
    /// `heartbeat.interval.ms`, if heartbeats are on, and when the last one went out.
    heartbeat: Option<Duration>,
    last_heartbeat: Instant,
    /// When `heartbeat.action.query` last ran.
    last_action: Option<Instant>,
    last_commit: Option<Lsn>,
    /// The incremental snapshot, if one is running.
    incremental: Incremental,
    /// The signal table's relation OID, once its Relation message came.
    signal_oid: Option<u32>,
}

/// The task.
#[derive(Default)]
pub struct PostgresSourceTask {
    running: Option<Running>,
}

impl std::fmt::Debug for PostgresSourceTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSourceTask")
            .field("running", &self.running.as_ref().map(|r| &r.label))
            .finish()
    }
}

impl From<ReplicationError> for ConnectorError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Decode(d) => ConnectorError::data(d.to_string()),
            ReplicationError::Setup(s) => ConnectorError::config(s),
            other => ConnectorError::retriable(other.to_string()),
        }
    }
}

impl Running {
    /// Applies one event; a commit moves its transaction's records to `ready`.
    async fn apply(&mut self, event: Event) -> Result<(), ConnectorError> {
        let (message, change_lsn) = match event {
            Event::Data(message) => (message, None),
            Event::Change { message, lsn } => (message, Some(lsn)),
            Event::Idle { wal_end } => {
                if self.open.is_none() {
                    self.idle_end = self.idle_end.max(Some(wal_end));
                }
                return Ok(());
            }
        };
        if let (Some(lsn), Some(open)) = (change_lsn, self.open.as_mut()) {
            open.first_lsn.get_or_insert(lsn);
        }
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.open = Some(Open {
                    xid,
                    final_lsn,
                    commit_micros: commit_time.saturating_add(PG_EPOCH_MICROS),
                    records: Vec::new(),
                    first_lsn: None,
                    counts: txmeta::Counts::default(),
                    signals: Vec::new(),
                });
            }
            Message::Relation(mut relation) => {
                // The key is the primary key, as Debezium's (the Relation message flags the
                // replica identity's columns: all of them under REPLICA IDENTITY FULL).
                let primary = primary_key(&self.sql, relation.oid).await?;
                let custom = self.config.message_key(&relation.schema, &relation.name);
                for column in &mut relation.columns {
                    // `message.key.columns` names the key instead, where it names the table.
                    column.key = match custom {
                        Some(columns) => columns.contains(&column.name),
                        None => primary.contains(&column.name),
                    };
                }
                // A type created after the start (user types have OIDs from 16384 on).
                if relation.columns.iter().any(|c| {
                    c.type_oid >= 16_384
                        && !self.enums.contains_key(&c.type_oid)
                        && !self.config.mapping.extensions.knows(c.type_oid)
                }) {
                    self.enums = load_enums(&self.sql).await?;
                    self.config.mapping.extensions = load_extensions(&self.sql).await?;
                }
                if self
                    .config
                    .signal_table
                    .as_ref()
                    .is_some_and(|(schema, table)| {
                        *schema == relation.schema && *table == relation.name
                    })
                {
                    self.signal_oid = Some(relation.oid);
                }
                let captured = self.config.captures(&relation.schema, &relation.name);
                let schemas = captured.then(|| {
                    let prefix = format!("{}.{}.", relation.schema, relation.name);
                    let (schemas, left_out) = TableSchemas::new(
                        &self.config.topic_prefix,
                        &relation,
                        &self.config.mapping,
                        &self.enums,
                        |c| self.config.columns.allows(&format!("{prefix}{c}")),
                    );
                    if !left_out.is_empty() {
                        tracing::info!(task = %self.label, table = %schemas.topic, columns = ?left_out, "columns left out of the events (excluded, or of a type not covered yet)");
                    }
                    schemas
                });
                self.tables.insert(relation.oid, schemas);
            }
            Message::Insert { relation, new } => {
                if Some(relation) == self.signal_oid {
                    if let (Some(signal), Some(open)) =
                        (incremental::signal_in(&new), self.open.as_mut())
                    {
                        open.signals.push(signal);
                    }
                }
                self.change(relation, 'c', None, Some(&new), false, change_lsn)?;
            }
            Message::Update {
                relation,
                old,
                old_is_key_only,
                new,
            } => self.change(
                relation,
                'u',
                old.as_deref(),
                Some(&new),
                old_is_key_only,
                change_lsn,
            )?,
            Message::Delete {
                relation,
                old,
                old_is_key_only,
            } => self.change(relation, 'd', Some(&old), None, old_is_key_only, change_lsn)?,
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time: _,
            } => {
                let Some(open) = self.open.take() else {
                    return Err(ConnectorError::data(format!(
                        "a commit at {commit_lsn} without its begin"
                    )));
                };
                if end_lsn <= self.resumed_at {
                    // Already in Kafka (the server skips these; this is a second guard).
                    return Ok(());
                }
                // The streamed changes go first: they supersede rows of an open window.
                let superseded = self.incremental.supersede(&open.records);
                if superseded > 0 {
                    metrics::counter!("sluice_postgres_incremental_superseded_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                        .increment(superseded as u64);
                }
                let mut reads = Vec::new();
                for signal in &open.signals {
                    reads.extend(self.signal(signal).await?);
                }
                let offset = self.offset(vec![
                    (LSN, serde_json::Value::from(end_lsn.0)),
                    ("lsn_commit", serde_json::Value::from(commit_lsn.0)),
                    ("txId", serde_json::Value::from(open.xid)),
                    ("ts_usec", serde_json::Value::from(open.commit_micros)),
                ]);
                let commit_micros = open.commit_micros;
                let mut records = open.records;
                if let Some(topic) = &self.config.transaction_topic {
                    // Debezium's BEGIN and END, around the events (even none of them).
                    let boundary = txmeta::Boundary {
                        topic,
                        partition: &self.partition,
                        xid: open.xid,
                        commit_millis: commit_micros.div_euclid(1000),
                    };
                    records.insert(0, boundary.begin(open.first_lsn.unwrap_or(end_lsn)));
                    records.push(boundary.end(end_lsn, open.counts));
                }
                records.append(&mut reads);
                let count = records.len();
                for mut r in records {
                    r.source_offset = offset.clone();
                    self.ready.push(r);
                }
                if count > 0 {
                    self.returned = Some(end_lsn);
                    self.returned_commit_micros = Some(commit_micros);
                } else {
                    self.idle_end = self.idle_end.max(Some(end_lsn));
                }
                self.last_commit = Some(commit_lsn);
                metrics::counter!("sluice_postgres_transactions_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                    .increment(1);
            }
            // Truncates are skipped (Debezium's default, skipped.operations=t); origins,
            // types and logical messages carry nothing for the events yet.
            Message::Truncate { .. }
            | Message::Origin { .. }
            | Message::Type { .. }
            | Message::Logical { .. } => {}
        }
        Ok(())
    }

    /// An offset of `pairs`, with the incremental snapshot's progress while one runs.
    fn offset(&self, pairs: Vec<(&str, serde_json::Value)>) -> SourceOffset {
        let mut map: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.incremental.save(&mut map);
        SourceOffset(map)
    }

    /// Acts on a committed row of the signal table; returns the rows of an incremental
    /// snapshot chunk whose window it closes. A signal that cannot be acted on is logged
    /// and counted, never a failure of the task.
    async fn signal(&mut self, signal: &Signal) -> Result<Vec<SourceRecord>, ConnectorError> {
        let kind = signal.kind.as_str();
        if kind == incremental::WINDOW_OPEN || kind == incremental::WINDOW_CLOSE {
            let Some(closed) = self.incremental.watermark(signal) else {
                return Ok(Vec::new());
            };
            metrics::counter!("sluice_postgres_incremental_chunks_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                .increment(1);
            metrics::counter!("sluice_postgres_incremental_rows_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                .increment(closed.rows.len() as u64);
            if let Some(table) = closed.table_done {
                tracing::info!(task = %self.label, table = %table, "incremental snapshot of a table done");
                metrics::counter!("sluice_postgres_incremental_tables_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                    .increment(1);
            }
            return Ok(closed.rows);
        }
        let known = kind == incremental::EXECUTE_SNAPSHOT || kind == incremental::STOP_SNAPSHOT;
        metrics::counter!("sluice_postgres_signals_total", "connector" => self.connector.clone(), "task" => self.task.clone(), "type" => if known { kind.to_owned() } else { "other".to_owned() })
            .increment(1);
        if !known {
            tracing::warn!(task = %self.label, id = %signal.id, r#type = kind, "signal of a type Sluice's PostgreSQL source does not act on (execute-snapshot, stop-snapshot): ignored");
            return Ok(Vec::new());
        }
        let request = match incremental::parse_request(kind, &signal.data) {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(task = %self.label, id = %signal.id, r#type = kind, data = %signal.data, error = %e, "signal refused");
                metrics::counter!("sluice_postgres_signals_refused_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                    .increment(1);
                return Ok(Vec::new());
            }
        };
        if kind == incremental::STOP_SNAPSHOT {
            tracing::info!(task = %self.label, id = %signal.id, collections = ?request.collections, "incremental snapshot stopped");
            self.incremental.stop(&request.collections);
            return Ok(Vec::new());
        }
        let planned: Vec<String> = crate::snapshot::plan(&self.sql, &self.config)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let (tables, unmatched) = incremental::matching(&planned, &request.collections);
        if !unmatched.is_empty() {
            tracing::warn!(task = %self.label, id = %signal.id, collections = ?unmatched, "execute-snapshot names tables that do not exist or are not captured (table.include.list): left out");
        }
        tracing::info!(task = %self.label, id = %signal.id, tables = ?tables, "incremental snapshot requested");
        self.incremental.add(tables);
        Ok(Vec::new())
    }

    /// Reads the incremental snapshot's next chunk, if one is due.
    async fn incremental_chunk(&mut self) -> Result<(), ConnectorError> {
        if !self.incremental.wants_chunk() {
            return Ok(());
        }
        let reader = incremental::Reader {
            sql: &self.sql,
            config: &self.config,
            enums: &self.enums,
            partition: &self.partition,
            lsn: self.last_commit.unwrap_or(self.resumed_at),
            label: &self.label,
            connector: &self.connector,
            task: &self.task,
        };
        reader.next_chunk(&mut self.incremental).await
    }

    /// The next chunk of the snapshot as `r` events, or, once every table is read, the
    /// start of streaming at the consistent point.
    async fn snapshot_chunk(&mut self) -> Result<Vec<SourceRecord>, ConnectorError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(chunk) = snapshot.next().await? else {
            // Dropping the snapshot closes its readers (and their transactions).
            let tables = self.snapshot.take().map_or(0, |s| s.tables());
            tracing::info!(task = %self.label, tables, "snapshot done");
            if self.config.snapshot_mode == "initial_only" {
                return Ok(Vec::new());
            }
            self.stream = Some(match self.pending.take() {
                Some(mut stream) => {
                    stream.begin().await?;
                    stream
                }
                None => Stream::start(&self.session, self.snapshot_point).await?,
            });
            tracing::info!(task = %self.label, from = %self.snapshot_point, "streaming changes after the snapshot");
            return Ok(Vec::new());
        };
        tracing::debug!(task = %self.label, table = chunk.range.table, bound = ?chunk.range.bound, rows = chunk.records.len(), "snapshot chunk read");
        Ok(chunk.records)
    }

    /// The WAL the slot holds back (`pg_current_wal_lsn() - restart_lsn`) and its
    /// `wal_status`, as gauges: what an operator watches so a stuck slot never fills a disk.
    async fn measure_slot(&self) {
        let row = self
            .sql
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await;
        match row {
            Ok(Some(row)) => {
                let retained: Option<i64> = row.get(0);
                let status: Option<String> = row.get(1);
                metrics::gauge!("sluice_postgres_slot_retained_wal_bytes", "connector" => self.connector.clone(), "task" => self.task.clone())
                    .set(retained.unwrap_or(0) as f64);
                for s in ["reserved", "extended", "unreserved", "lost"] {
                    metrics::gauge!("sluice_postgres_slot_wal_status", "connector" => self.connector.clone(), "task" => self.task.clone(), "status" => s)
                        .set(if status.as_deref() == Some(s) { 1.0 } else { 0.0 });
                }
                if status.as_deref() == Some("lost") {
                    tracing::error!(task = %self.label, slot = %self.config.slot, "the slot's WAL is lost (max_slot_wal_keep_size): changes were removed before they were read");
                }
            }
            Ok(None) => {
                tracing::warn!(task = %self.label, slot = %self.config.slot, "the replication slot is gone");
            }
            Err(e) => {
                tracing::warn!(task = %self.label, error = %e, "measuring the replication slot");
            }
        }
    }

    /// `heartbeat.action.query`, every `heartbeat.interval.ms` (Debezium runs it with each
    /// heartbeat; the slot advances without it here, so it is for what users do with it:
    /// a heartbeat table, a liveness mark).
    async fn heartbeat_action(&mut self) -> Result<(), ConnectorError> {
        let (Some(interval), Some(query)) = (self.heartbeat, &self.config.heartbeat_action_query)
        else {
            return Ok(());
        };
        if self.last_action.is_some_and(|t| t.elapsed() < interval) {
            return Ok(());
        }
        self.last_action = Some(Instant::now());
        self.sql
            .batch_execute(query)
            .await
            .map_err(|e| crate::retriable(config::HEARTBEAT_ACTION_QUERY, e))?;
        metrics::counter!("sluice_postgres_heartbeat_actions_total", "connector" => self.connector.clone(), "task" => self.task.clone())
            .increment(1);
        Ok(())
    }

    /// The idle position, when due: in a heartbeat record (Debezium's, on
    /// `__debezium-heartbeat.<prefix>`) or, without heartbeats, as an offset alone. Once
    /// Kafka commits it, the slot is confirmed there.
    fn beat(&mut self) {
        let Some(idle) = self.idle_end else { return };
        let behind = self.returned.unwrap_or(self.resumed_at);
        if self.open.is_some()
            || !self.ready.is_empty()
            || idle <= behind
            || self.last_heartbeat.elapsed() < self.heartbeat.unwrap_or(IDLE_CONFIRM)
        {
            return;
        }
        self.last_heartbeat = Instant::now();
        // Caught up: the lag measured at this commit is the commit's own.
        self.returned_commit_micros = Some(now_micros());
        let offset = self.offset(vec![(LSN, serde_json::Value::from(idle.0))]);
        self.returned = Some(idle);
        if self.heartbeat.is_none() {
            // No heartbeat topic asked for: the position alone, committed without a record
            // (Debezium's slot would hold WAL here until the next captured change).
            self.ready
                .push(SourceRecord::offset_only(self.partition.clone(), offset));
            metrics::counter!("sluice_postgres_idle_confirms_total", "connector" => self.connector.clone(), "task" => self.task.clone())
                .increment(1);
            return;
        }
        let key_schema = std::sync::Arc::new(
            Schema::structure()
                .named("io.debezium.connector.common.ServerNameKey")
                .field("serverName", Schema::of(SchemaType::String)),
        );
        let value_schema = std::sync::Arc::new(
            Schema::structure()
                .named("io.debezium.connector.common.Heartbeat")
                .field("ts_ms", Schema::of(SchemaType::Int64)),
        );
        let now = now_micros().div_euclid(1000);
        self.ready.push(SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: offset,
            topic: format!(
                "{}.{}",
                self.config.heartbeat_prefix, self.config.topic_prefix
            ),
            partition: None,
            key_schema: Some(key_schema),
            key: Value::Struct(vec![(
                "serverName".into(),
                Value::String(self.config.topic_prefix.clone()),
            )]),
            value_schema: Some(value_schema),
            value: Value::Struct(vec![("ts_ms".into(), Value::Int64(now))]),
            timestamp: Some(now),
            headers: Vec::new(),
        });
        metrics::counter!("sluice_postgres_heartbeats_total", "connector" => self.connector.clone(), "task" => self.task.clone())
            .increment(1);
    }

    /// One row change as Debezium's event(s): a delete is followed by its tombstone, and
    /// a change of key reads as a delete (and tombstone) of the old key and a create.
    fn change(
        &mut self,
        relation: u32,
        op: char,
        old: Option<&[Datum]>,
        new: Option<&[Datum]>,
        old_is_key_only: bool,
        change_lsn: Option<Lsn>,
    ) -> Result<(), ConnectorError> {
        let Some(entry) = self.tables.get(&relation) else {
            return Err(ConnectorError::data(format!(
                "a change of relation {relation} before its Relation message"
            )));
        };
        let Some(table) = entry else { return Ok(()) };
        let Some(open) = self.open.as_mut() else {
            return Err(ConnectorError::data(format!(
                "a change of {} outside a transaction",
                table.topic
            )));
        };
        let config = &self.config;
        let mapping = &config.mapping;
        let placeholder = config.unavailable_placeholder.as_str();
        let data =
            |e: crate::types::TypeError| ConnectorError::data(format!("{}: {e}", table.topic));
        let source = SourceInfo {
            connector_name: &config.topic_prefix,
            database: &config.dbname,
            xid: open.xid,
            lsn: change_lsn.unwrap_or(open.final_lsn),
            snapshot: "false",
            last_commit: self.last_commit,
            commit_micros: open.commit_micros,
        };
        let now = now_micros();
        let mut emit = |op: char, key: Value, before: Value, after: Value| {
            if config.skipped.contains(&op) {
                return;
            }
            let tombstone = op == 'd' && config.tombstones_on_delete;
            let mut value = table.envelope(op, before, after, &source, now);
            if config.transaction_topic.is_some() {
                let block = open.counts.event(
                    source.xid,
                    source.lsn,
                    &format!("{}.{}", table.schema, table.table),
                );
                if let Value::Struct(fields) = &mut value {
                    if let Some(field) = fields.iter_mut().find(|(n, _)| n == "transaction") {
                        field.1 = block;
                    }
                }
            }
            let record = |value: Value, schema: bool| SourceRecord {
                source_partition: self.partition.clone(),
                source_offset: SourceOffset(serde_json::Map::new()),
                topic: table.topic.clone(),
                partition: None,
                key_schema: table.key.clone(),
                key: key.clone(),
                value_schema: schema.then(|| table.envelope.clone()),
                value,
                timestamp: Some(source.commit_micros.div_euclid(1000)),
                headers: Vec::new(),
            };
            open.records.push(record(value, true));
            if tombstone {
                open.records.push(record(Value::Null, false));
            }
            metrics::counter!("sluice_postgres_changes_total", "connector" => self.connector.clone(), "task" => self.task.clone(), "op" => op.to_string())
                .increment(1);
        };
        match (op, old, new) {
            ('c', _, Some(new)) => {
                let key = table.key(mapping, new).map_err(data)?;
                let after = table.row(mapping, placeholder, new).map_err(data)?;
                emit('c', key, Value::Null, after);
            }
            ('u', old, Some(new)) => {
                let key = table.key(mapping, new).map_err(data)?;
                let after = table.row(mapping, placeholder, new).map_err(data)?;
                let old_key = old
                    .map(|o| table.key(mapping, o))
                    .transpose()
                    .map_err(data)?;
                match old_key {
                    Some(old_key) if old_key != key => {
                        let before = old
                            .map(|o| table.row(mapping, placeholder, o))
                            .transpose()
                            .map_err(data)?
                            .unwrap_or(Value::Null);
                        emit('d', old_key, before, Value::Null);
                        emit('c', key, Value::Null, after);
                    }
                    _ => {
                        // With REPLICA IDENTITY DEFAULT an update sends no old row.
                        let before = match old {
                            Some(o) if !old_is_key_only => {
                                table.row(mapping, placeholder, o).map_err(data)?
                            }
                            _ => Value::Null,
                        };
                        emit('u', key, before, after);
                    }
                }
            }
            ('d', Some(old), _) => {
                let key = table.key(mapping, old).map_err(data)?;
                let before = table.row(mapping, placeholder, old).map_err(data)?;
                emit('d', key, before, Value::Null);
            }
            _ => {}
        }
        Ok(())
    }
}

impl SourceTask for PostgresSourceTask {
    fn start<'a>(
        &'a mut self,
        config: &'a Props,
        context: SourceTaskContext,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move {
            let config =
                PostgresConfig::parse(config).map_err(|e| ConnectorError::config(e.to_string()))?;
            let label = format!("{}-{}", context.connector, context.task);
            let session = Session::of(&config);
            let (sql, connection) =
                tokio_postgres::connect(&session.conninfo(), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| preflight::connect_error(&config, &e))?;
            let name = label.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(task = %name, error = %e, "PostgreSQL connection ended");
                }
            });
            preflight::check_server(&sql, &config).await?;
            let mut config = config;
            config.mapping.extensions = load_extensions(&sql).await?;
            ensure_publication(&sql, &config).await?;
            preflight::check_signal_table(&sql, &config).await?;
            let unpublishable =
                preflight::tables_without_identity(&sql, |s, t| config.captures(s, t)).await?;
            if !unpublishable.is_empty() {
                tracing::warn!(task = %label, tables = ?unpublishable, "captured tables without a primary key and with REPLICA IDENTITY DEFAULT: PostgreSQL refuses their UPDATE and DELETE while they are published; give them a key or REPLICA IDENTITY FULL");
            }
            let partition = SourcePartition::single(SERVER, config.topic_prefix.as_str());
            let stored = context
                .offset(&partition)
                .and_then(|o| o.0.get(LSN))
                .and_then(serde_json::Value::as_u64)
                .map(Lsn);
            let offset = context.offset(&partition).map(|o| o.0.clone());
            // A snapshot left in the middle: its table and the first block not committed.
            let resume = offset
                .as_ref()
                .filter(|o| {
                    o.get(SNAPSHOT).and_then(serde_json::Value::as_str) == Some(IN_PROGRESS)
                })
                .map(|o| {
                    let table = o
                        .get(SNAPSHOT_TABLE)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let key: Option<Vec<String>> = o.get(SNAPSHOT_KEY).and_then(|k| {
                        k.as_array().map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                    });
                    let block = o
                        .get(SNAPSHOT_BLOCK)
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|b| u32::try_from(b).ok());
                    let txids = o
                        .get(crate::snapshot::SNAPSHOT_TXIDS)
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                    (table, key, block, txids)
                });
            let wants_snapshot = matches!(
                config.snapshot_mode.as_str(),
                "initial" | "initial_only" | "when_needed" | "always"
            );
            let mut stored = stored;
            let mut resume = resume;
            let mut slot_exists = replication::slot_state(&sql, &config.slot).await?.is_some();
            if config.snapshot_mode == "when_needed" {
                if let Some(lost) = lost_changes(&sql, &config, stored).await? {
                    // The changes after the offset are gone: a new slot and a snapshot of
                    // the tables as they are bring the topics back to the database's state
                    // (rows deleted in the gap keep their last event).
                    tracing::warn!(task = %label, slot = %config.slot, lost = %lost, "snapshot.mode=when_needed: changes after the committed offset are lost; taking a new snapshot");
                    metrics::counter!("sluice_postgres_resnapshots_total", "connector" => context.connector.clone(), "task" => context.task.to_string())
                        .increment(1);
                    if slot_exists {
                        free_slot(&sql, &config.slot, &label).await?;
                        replication::drop_slot(&sql, &config.slot).await?;
                    }
                    (stored, resume, slot_exists) = (None, None, false);
                }
            }
            let mut exported = None;
            let created = if wants_snapshot && stored.is_none() && !slot_exists {
                // A first start: the slot and a snapshot of the tables at its consistent point.
                let (stream, point, name) = Stream::create_exported(&session).await?;
                tracing::info!(task = %label, slot = %config.slot, consistent_point = %point, "slot created with an exported snapshot");
                exported = Some((stream, point, name));
                None
            } else {
                replication::ensure_slot(&sql, &config.slot).await?
            };
            if let (Some(at), Some(stored)) = (created, stored) {
                return Err(ConnectorError::config(format!(
                    "slot.name: slot {} did not exist (created now at {at}) although offsets were committed up to {stored}: the changes in between are lost; set snapshot.mode=when_needed to take a new snapshot, or delete this connector's offsets to start from the slot's position",
                    config.slot
                )));
            }
            if exported.is_none() {
                free_slot(&sql, &config.slot, &label).await?;
            }
            if let Some(stored) = stored.filter(|_| exported.is_none()) {
                if replication::slot_lost(&sql, &config.slot).await? {
                    return Err(ConnectorError::config(format!(
                        "slot.name: slot {} lost WAL it still needed (wal_status lost: max_slot_wal_keep_size was reached): the changes after the committed offset {stored} are gone; set snapshot.mode=when_needed to take a new snapshot",
                        config.slot
                    )));
                }
            }
            if let (Some(stored), Some((Some(confirmed), _))) =
                (stored, replication::slot_state(&sql, &config.slot).await?)
            {
                if confirmed > stored {
                    return Err(ConnectorError::config(format!(
                        "slot.name: slot {} confirmed {confirmed}, past the committed offset {stored}: the changes in between are lost (another reader of the slot?); set snapshot.mode=when_needed to take a new snapshot",
                        config.slot
                    )));
                }
            }
            let mut from = stored.unwrap_or_default();
            let enums = load_enums(&sql).await?;
            let mut pending = None;
            // What to read: (exported snapshot to import, table and block to start at).
            let plan = if let Some((stream, point, name)) = exported {
                from = point;
                pending = Some(stream);
                Some((Some(name), None))
            } else if let Some((table, key, block, txids)) = resume.filter(|_| wants_snapshot) {
                // The exported snapshot is gone: the rest is read as it is now; streaming
                // from the consistent point replays what changed since.
                tracing::info!(task = %label, table = %table, key = ?key, block = ?block, "resuming the snapshot after its last committed chunk");
                Some((None, Some((table, key, block, txids))))
            } else if wants_snapshot && stored.is_none() {
                // The slot exists but nothing was committed: every table, as it is now.
                Some((None, None))
            } else {
                None
            };
            let snapshot = match plan {
                None => None,
                Some((exported, resume)) => {
                    let readers = snapshot_sessions(
                        &session,
                        &config,
                        config.snapshot_max_threads.max(1),
                        exported.as_deref(),
                        &label,
                    )
                    .await?;
                    let Some(first) = readers.first() else {
                        return Err(ConnectorError::internal("no snapshot reader"));
                    };
                    let tables = crate::snapshot::plan(first, &config).await?;
                    // The snapshot's transactions: from the exported snapshot itself, or,
                    // resuming, from the offset (to read only what it saw).
                    let (txids, visible) = match (&exported, &resume) {
                        (Some(_), _) => {
                            let txids = first
                                .query_one("SELECT pg_current_snapshot()::text", &[])
                                .await
                                .map_err(|e| {
                                    crate::retriable("reading the snapshot's transactions", e)
                                })?
                                .get::<_, String>(0);
                            (Some(txids), None)
                        }
                        (None, Some((_, _, _, Some(txids)))) => {
                            let visible = crate::snapshot::visible_in(txids);
                            if visible.is_none() {
                                tracing::warn!(task = %label, txids = %txids, "the snapshot's transactions in the offset do not parse: the rest is read without them (rows changed since may be read and streamed both)");
                            }
                            (Some(txids.clone()), visible)
                        }
                        _ => (None, None),
                    };
                    let start = resume.map_or(Start::Table(0), |(table, key, block, _)| {
                        crate::snapshot::resume_at(&tables, &table, key, block)
                    });
                    // One more session, outside the snapshot, cuts keyed tables into chunks.
                    let planner = snapshot_sessions(&session, &config, 1, None, &label).await?;
                    let schemas = tables
                        .iter()
                        .map(|t| {
                            let prefix = format!("{}.", t.name);
                            TableSchemas::new(
                                &config.topic_prefix,
                                &t.relation,
                                &config.mapping,
                                &enums,
                                |c| config.columns.allows(&format!("{prefix}{c}")),
                            )
                            .0
                        })
                        .collect();
                    let emitter = Emitter {
                        tables,
                        schemas,
                        config: config.clone(),
                        partition: partition.clone(),
                        point: from,
                        txids,
                        visible,
                        connector: context.connector.clone(),
                        task: context.task.to_string(),
                    };
                    let planner = planner
                        .into_iter()
                        .next()
                        .ok_or_else(|| ConnectorError::internal("no snapshot planner"))?;
                    Some(Snapshot::new(emitter, readers, planner, &start))
                }
            };
            let stream = if snapshot.is_some() {
                tracing::info!(task = %label, tables = snapshot.as_ref().map_or(0, Snapshot::tables), readers = config.snapshot_max_threads, "snapshot starting");
                None
            } else {
                let stream = Stream::start(&session, from).await?;
                tracing::info!(task = %label, slot = %config.slot, publication = %config.publication, from = %from, "streaming changes");
                Some(stream)
            };
            let mut incremental = offset
                .as_ref()
                .map(Incremental::restore)
                .unwrap_or_default();
            if config.snapshot_mode == "always"
                && snapshot.is_none()
                && incremental.collections.is_empty()
            {
                // Every start after the first: all tables again, read while streaming goes
                // on from the committed offset (an initial snapshot here would race the
                // replay of the changes since).
                let signals = config
                    .signal_table
                    .as_ref()
                    .map(|(schema, table)| format!("{schema}.{table}"));
                let tables: Vec<String> = crate::snapshot::plan(&sql, &config)
                    .await?
                    .into_iter()
                    .map(|t| t.name)
                    .filter(|name| Some(name) != signals.as_ref())
                    .collect();
                tracing::info!(task = %label, tables = ?tables, "snapshot.mode=always: reading every table again as an incremental snapshot");
                incremental.add(tables);
            }
            if !incremental.collections.is_empty() {
                if config.signal_table.is_none() {
                    tracing::warn!(task = %label, tables = ?incremental.collections, "an incremental snapshot was running but signal.data.collection is no longer set: it is dropped");
                    incremental = Incremental::default();
                } else {
                    tracing::info!(task = %label, tables = ?incremental.collections, after = ?incremental.last_key, "resuming the incremental snapshot after its last committed chunk");
                }
            }
            let heartbeat = config.heartbeat_interval;
            self.running = Some(Running {
                incremental,
                signal_oid: None,
                heartbeat,
                config,
                label,
                connector: context.connector.clone(),
                task: context.task.to_string(),
                sql,
                stream,
                pending,
                snapshot,
                session,
                partition,
                tables: HashMap::new(),
                enums,
                open: None,
                ready: Vec::new(),
                resumed_at: from,
                snapshot_point: from,
                returned: None,
                returned_commit_micros: None,
                slot_checked: None,
                idle_end: None,
                last_heartbeat: Instant::now(),
                last_action: None,
                last_commit: None,
            });
            Ok(())
        })
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, ConnectorError>> {
        Box::pin(async move {
            let Some(run) = self.running.as_mut() else {
                return Err(ConnectorError::internal("poll before start"));
            };
            if run.snapshot.is_some() {
                return run.snapshot_chunk().await;
            }
            if run.stream.is_none() {
                // initial_only: the snapshot is all there is.
                tokio::time::sleep(POLL_WAIT).await;
                return Ok(Vec::new());
            }
            run.incremental_chunk().await?;
            let deadline = tokio::time::Instant::now() + POLL_WAIT;
            while run.ready.len() < run.config.max_batch_size {
                let Some(stream) = run.stream.as_mut() else {
                    break;
                };
                let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => break,
                    Ok(next) => next?,
                };
                let Some(event) = next else {
                    return Err(ConnectorError::retriable("the replication stream ended"));
                };
                run.apply(event).await?;
                if run.incremental.wants_chunk() {
                    // A chunk was emitted: the next one is read at the next poll.
                    break;
                }
            }
            run.beat();
            run.heartbeat_action().await?;
            if run.slot_checked.is_none_or(|t| t.elapsed() >= SLOT_CHECK) {
                run.slot_checked = Some(Instant::now());
                run.measure_slot().await;
            }
            Ok(std::mem::take(&mut run.ready))
        })
    }

    fn commit_needs_durable_offsets(&self) -> bool {
        // The slot is confirmed in `commit`: past that, PostgreSQL may drop the WAL.
        true
    }

    fn commit(&mut self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            if let Some(run) = self.running.as_ref() {
                if let (Some(stream), Some(end)) = (run.stream.as_ref(), run.returned) {
                    stream.confirm(end);
                    metrics::gauge!("sluice_postgres_confirmed_lsn", "connector" => run.connector.clone(), "task" => run.task.clone())
                        .set(end.0 as f64);
                    if let Some(committed) = run.returned_commit_micros {
                        let lag = (now_micros() - committed).max(0) as f64 / 1e6;
                        metrics::gauge!("sluice_postgres_lag_seconds", "connector" => run.connector.clone(), "task" => run.task.clone())
                            .set(lag);
                    }
                }
            }
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(mut run) = self.running.take() else {
                return;
            };
            if let Some(stream) = run.stream.take() {
                if let Err(e) = stream.stop().await {
                    tracing::warn!(task = %run.label, error = %e, "ending the replication stream");
                }
            }
            if run.config.slot_drop_on_stop {
                match replication::drop_slot(&run.sql, &run.config.slot).await {
                    Ok(()) => {
                        tracing::info!(task = %run.label, slot = %run.config.slot, "slot dropped (slot.drop.on.stop)");
                    }
                    Err(e) => tracing::warn!(task = %run.label, error = %e, "dropping the slot"),
                }
            }
        })
    }
}
