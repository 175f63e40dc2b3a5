//! A running PostgreSQL task's state and what it does with it: applying the stream's
//! messages (whole transactions, their events, their offsets), signals and incremental
//! snapshot chunks, the snapshot's chunks, the slot's measurements, idle confirmations and
//! heartbeats. [`crate::source`] starts it and drives it from the engine's calls.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_proto::{
    ConnectorError, Schema, SchemaType, SourceOffset, SourcePartition, SourceRecord, Value,
};

use crate::config::{self, PostgresConfig};
use crate::envelope::{SourceInfo, TableSchemas, PG_EPOCH_MICROS};
use crate::incremental::{self, Incremental, Signal};
use crate::now_micros;
use crate::pgoutput::{Datum, Lsn, Message};
use crate::replication::{Event, Session, Stream};
use crate::setup::{load_enums, load_extensions, primary_key};
use crate::snapshot::Snapshot;
use crate::txmeta;

/// The offset key of the end LSN of the last transaction committed to Kafka.
pub(crate) const LSN: &str = "lsn";

/// How often a slot whose captured tables are quiet is confirmed at the server's position
/// when heartbeats are off (with them, at each heartbeat).
const IDLE_CONFIRM: Duration = Duration::from_secs(1);

/// A transaction read up to its commit.
pub(crate) struct Open {
    pub(crate) xid: u32,
    /// Where the commit record starts: `source.lsn` of the transaction's events.
    pub(crate) final_lsn: Lsn,
    pub(crate) commit_micros: i64,
    pub(crate) records: Vec<SourceRecord>,
    /// The first change's position (captured or not): BEGIN's, for transaction metadata.
    pub(crate) first_lsn: Option<Lsn>,
    /// The events counted for transaction metadata.
    pub(crate) counts: txmeta::Counts,
    /// Rows written to the signal table, acted on at the commit.
    pub(crate) signals: Vec<Signal>,
}

pub(crate) struct Running {
    pub(crate) config: PostgresConfig,
    /// `<connector>-<task>`, for log lines.
    pub(crate) label: String,
    /// The metrics' labels.
    pub(crate) connector: String,
    pub(crate) task: String,
    pub(crate) sql: tokio_postgres::Client,
    pub(crate) stream: Option<Stream>,
    /// A session holding an exported snapshot, started once the snapshot is read.
    pub(crate) pending: Option<Stream>,
    /// The snapshot being read, if any; streaming starts when it is done.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) session: Session,
    /// The position streaming starts at after the snapshot (its consistent point).
    pub(crate) snapshot_point: Lsn,
    pub(crate) partition: SourcePartition,
    /// Relation OID -> its event schemas, or `None` for a table not captured.
    pub(crate) tables: HashMap<u32, Option<TableSchemas>>,
    /// Enum type OID -> its labels in order, comma-separated (`io.debezium.data.Enum`).
    pub(crate) enums: HashMap<u32, String>,
    pub(crate) open: Option<Open>,
    pub(crate) ready: Vec<SourceRecord>,
    /// The end LSN the stream resumed after: a transaction ending there or before is old.
    pub(crate) resumed_at: Lsn,
    /// The end LSN of the last transaction a poll returned.
    pub(crate) returned: Option<Lsn>,
    /// Its commit time (µs since 1970), for the lag once Kafka has it.
    pub(crate) returned_commit_micros: Option<i64>,
    /// When the slot's retained WAL was last measured (at the first poll, then every 10 s).
    pub(crate) slot_checked: Option<Instant>,
    /// A position past `returned` with nothing captured in between (transactions of other
    /// tables, keepalives between transactions): a heartbeat record carries it to Kafka,
    /// after which the slot may be confirmed there (so a quiet slot lets go of WAL).
    pub(crate) idle_end: Option<Lsn>,
    /// `heartbeat.interval.ms`, if heartbeats are on, and when the last one went out.
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) last_heartbeat: Instant,
    /// When `heartbeat.action.query` last ran.
    pub(crate) last_action: Option<Instant>,
    pub(crate) last_commit: Option<Lsn>,
    /// The incremental snapshot, if one is running.
    pub(crate) incremental: Incremental,
    /// The signal table's relation OID, once its Relation message came.
    pub(crate) signal_oid: Option<u32>,
}

impl Running {
    /// Applies one event; a commit moves its transaction's records to `ready`.
    pub(crate) async fn apply(&mut self, event: Event) -> Result<(), ConnectorError> {
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
    pub(crate) fn offset(&self, pairs: Vec<(&str, serde_json::Value)>) -> SourceOffset {
        let mut map: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.incremental.save(&mut map);
        SourceOffset(map)
    }

    /// Acts on a committed row of the signal table; returns the rows of an incremental
    /// snapshot chunk whose window it closes. A signal that cannot be acted on is logged
    /// and counted, never a failure of the task.
    pub(crate) async fn signal(
        &mut self,
        signal: &Signal,
    ) -> Result<Vec<SourceRecord>, ConnectorError> {
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
        let planned: Vec<String> = crate::snapshot::captured(&self.sql, &self.config)
            .await?
            .into_iter()
            .map(|(schema, table)| format!("{schema}.{table}"))
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
    pub(crate) async fn incremental_chunk(&mut self) -> Result<(), ConnectorError> {
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
    pub(crate) async fn snapshot_chunk(&mut self) -> Result<Vec<SourceRecord>, ConnectorError> {
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
    pub(crate) async fn measure_slot(&self) {
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
    pub(crate) async fn heartbeat_action(&mut self) -> Result<(), ConnectorError> {
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
    pub(crate) fn beat(&mut self) {
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
    pub(crate) fn change(
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
