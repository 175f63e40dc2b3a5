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
//! This file starts the task and answers the engine's calls; the running task's state and
//! its handling of the stream are [`crate::running`]'s. The initial snapshot
//! (`snapshot.mode=initial`) is [`crate::snapshot`]'s; incremental snapshots while
//! streaming (signal table rows) are [`crate::incremental`]'s.
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
    ConfigDef, Connector, ConnectorError, ExactlyOnceSupport, Props, SourceConnector,
    SourcePartition, SourceRecord, SourceTask, SourceTaskContext,
};

use crate::config::{self, PostgresConfig};
use crate::envelope::TableSchemas;
use crate::incremental::{self, Incremental};
use crate::now_micros;
use crate::pgoutput::Lsn;
use crate::preflight;
use crate::replication::{self, ReplicationError, Session, Stream};
use crate::running::{Running, LSN};
use crate::setup::{
    ensure_publication, free_slot, load_enums, load_extensions, lost_changes, snapshot_sessions,
};
use crate::snapshot::{
    Emitter, Snapshot, Start, IN_PROGRESS, SNAPSHOT, SNAPSHOT_BLOCK, SNAPSHOT_KEY, SNAPSHOT_TABLE,
};

/// The class names this source answers to: Debezium's first (a Debezium config works as
/// it is), then Sluice's own.
pub const ALIASES: &[&str] = &[
    "io.debezium.connector.postgresql.PostgresConnector",
    "PostgresConnector",
    "io.sluice.connect.postgres.PostgresCdcSourceConnector",
];

/// The source partition key, as Debezium's: `{"server": <topic.prefix>}`.
const SERVER: &str = "server";

/// How often the slot's retained WAL is measured.
const SLOT_CHECK: Duration = Duration::from_secs(10);

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
            let sql = preflight::connect(&config, &label, "task")
                .await
                .map_err(|e| preflight::connect_error(&config, &e))?;
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
                    let planner = snapshot_sessions(&config, 1, None, &label).await?;
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
                let tables: Vec<String> = crate::snapshot::captured(&sql, &config)
                    .await?
                    .into_iter()
                    .map(|(schema, table)| format!("{schema}.{table}"))
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
