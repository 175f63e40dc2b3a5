//! The initial snapshot: every captured table's rows as Debezium's `r` events, read in
//! chunks by `snapshot.max.threads` parallel readers, before streaming starts at the
//! slot's consistent point.
//!
//! On a first start the slot is created with an exported snapshot and every reader imports
//! it before the exporting session does anything else, so all chunks see exactly the state
//! at the consistent point. A table with a primary key is cut into key ranges of
//! `snapshot.fetch.size` rows (`key > a AND key <= b`); the bounds are found ahead by a
//! walk over the key's index (`OFFSET n LIMIT 1`, keys only), so readers never wait for
//! each other. A table without one is cut into ranges of heap blocks (`ctid >= '(a,0)' AND
//! ctid < '(b,0)'`, a TID range scan) sized from its rows per page. A table's last chunk
//! has no upper bound, so rows added after planning are read too (the snapshot's
//! visibility decides what they show).
//!
//! Readers run ahead: while the engine sends and commits one chunk, the next ones are being
//! read and turned into records (on the blocking pool, so another core does that work).
//! Chunks are still handed out in plan order, and each chunk's records carry the snapshot's
//! progress as their offset (`snapshot_table`, and `snapshot_key`, the last key of the
//! chunk, or `snapshot_block`, the first block not read; neither once the table is done),
//! committed with them, with the snapshot's transaction ids (`snapshot_txids`). A task
//! that stops in the middle resumes there; the exported snapshot is gone by then, so the
//! rest is read as it is now, but only the rows whose current version that snapshot saw
//! (their inserting transaction had committed): a row inserted, updated or deleted since
//! is left to streaming, which replays every change from the consistent point. So no row
//! is read twice, nor read and streamed both, and the topic ends in the database's state.
//! (A row updated since the consistent point then arrives as its update only.)

use std::collections::VecDeque;
use std::sync::Arc;

use sluice_proto::{ConnectorError, SourceOffset, SourcePartition, SourceRecord, Value};
use tokio::task::JoinHandle;

use crate::config::PostgresConfig;
use crate::envelope::{SourceInfo, TableSchemas};
use crate::pgoutput::{Column, Datum, Lsn, Relation, ReplicaIdentity};
use crate::replication::quote_ident;

/// The offset keys of the snapshot's progress.
pub const SNAPSHOT: &str = "snapshot";
pub const IN_PROGRESS: &str = "in_progress";
pub const SNAPSHOT_TABLE: &str = "snapshot_table";
pub const SNAPSHOT_BLOCK: &str = "snapshot_block";
pub const SNAPSHOT_KEY: &str = "snapshot_key";

/// Rows per page assumed for a table never analysed.
const DEFAULT_ROWS_PER_PAGE: f64 = 50.0;

/// One captured table to read.
#[derive(Debug, Clone)]
pub struct Table {
    /// `schema.table`.
    pub name: String,
    pub relation: Relation,
    /// The primary key's columns, in key order (empty for none).
    pub key: Vec<String>,
    /// Heap pages when planned.
    pub pages: u32,
    /// Live rows per page, from the planner's statistics.
    pub rows_per_page: f64,
}

/// A captured table as the catalogue lists it, before its key and columns are read.
struct Listed {
    oid: u32,
    schema: String,
    name: String,
    pages: i64,
    tuples: f64,
    stat_pages: i64,
}

/// The captured tables, in name order (bytewise), as the catalogue lists them.
async fn listed(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<Vec<Listed>, ConnectorError> {
    let rows = sql
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint, \
                    c.reltuples::float8, c.relpages::bigint \
               FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
              ORDER BY n.nspname::text COLLATE \"C\", c.relname::text COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("listing the tables to snapshot", e))?;
    Ok(rows
        .iter()
        .map(|row| Listed {
            oid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            pages: row.get(3),
            tuples: row.get(4),
            stat_pages: row.get(5),
        })
        .filter(|l| config.captures(&l.schema, &l.name))
        .collect())
}

/// The captured tables' schemas and names, in plan order, without reading their columns.
pub async fn captured(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<Vec<(String, String)>, ConnectorError> {
    Ok(listed(sql, config)
        .await?
        .into_iter()
        .map(|l| (l.schema, l.name))
        .collect())
}

/// The captured tables of the database, in name order, with their columns, keys and sizes.
pub async fn plan(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<Vec<Table>, ConnectorError> {
    let mut tables = Vec::new();
    for l in listed(sql, config).await? {
        tables.push(describe(sql, config, l).await?);
    }
    Ok(tables)
}

/// The captured table `name` (`schema.table`) with its columns, key and size, if there is
/// one.
pub async fn plan_one(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
    name: &str,
) -> Result<Option<Table>, ConnectorError> {
    let found = listed(sql, config)
        .await?
        .into_iter()
        .find(|l| format!("{}.{}", l.schema, l.name) == name);
    match found {
        Some(l) => Ok(Some(describe(sql, config, l).await?)),
        None => Ok(None),
    }
}

/// A listed table's key, columns and size.
async fn describe(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
    listed: Listed,
) -> Result<Table, ConnectorError> {
    let Listed {
        oid,
        schema,
        name,
        pages,
        tuples,
        stat_pages,
    } = listed;
    let key: Vec<String> = sql
        .query(
            "SELECT a.attname::text FROM pg_index i \
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
              WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.pos",
            &[&oid],
        )
        .await
        .map_err(|e| crate::retriable("reading a primary key", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The events' key: `message.key.columns`' for the table, else the primary key
    // (which also cuts the table into chunks).
    let message_key = config.message_key(&schema, &name);
    let columns = sql
        .query(
            "SELECT attname::text, atttypid, atttypmod FROM pg_attribute \
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| crate::retriable("reading a table's columns", e))?
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            Column {
                key: message_key.map_or_else(|| key.contains(&name), |k| k.contains(&name)),
                name,
                type_oid: r.get(1),
                type_modifier: r.get(2),
            }
        })
        .collect();
    Ok(Table {
        name: format!("{schema}.{name}"),
        relation: Relation {
            oid,
            schema,
            name,
            identity: ReplicaIdentity::Default,
            columns,
        },
        key,
        pages: u32::try_from(pages.max(0)).unwrap_or(u32::MAX),
        rows_per_page: if tuples > 0.0 && stat_pages > 0 {
            tuples / stat_pages as f64
        } else {
            DEFAULT_ROWS_PER_PAGE
        },
    })
}

/// Which rows of a table a chunk reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Keys in `(after, upto]` of a table with a primary key; `None`: unbounded.
    Keys {
        after: Option<Vec<String>>,
        upto: Option<Vec<String>>,
    },
    /// Heap blocks `[from, to)` of a table without one; `None`: to the end.
    Blocks { from: u32, to: Option<u32> },
}

/// One chunk to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub table: usize,
    pub bound: Bound,
}

impl Range {
    /// Whether the chunk ends its table.
    pub fn last(&self) -> bool {
        matches!(
            self.bound,
            Bound::Keys { upto: None, .. } | Bound::Blocks { to: None, .. }
        )
    }
}

/// Work not started yet: a chunk, or the rest of a keyed table after a key (cut into
/// chunks as the readers get to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Todo {
    Chunk(Range),
    KeysAfter {
        table: usize,
        after: Option<Vec<String>>,
    },
}

/// Where a snapshot starts: at a table's beginning, or within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Table(usize),
    AfterKey(usize, Vec<String>),
    AtBlock(usize, u32),
}

/// The work of `tables` from `start`: keyed tables as cursors, keyless ones cut into
/// block ranges of about `rows` rows.
pub fn plan_work(tables: &[Table], start: &Start, rows: usize) -> VecDeque<Todo> {
    let first = match start {
        Start::Table(t) | Start::AfterKey(t, _) | Start::AtBlock(t, _) => *t,
    };
    let mut out = VecDeque::new();
    for (index, table) in tables.iter().enumerate().skip(first) {
        if !table.key.is_empty() {
            let after = match start {
                Start::AfterKey(t, key) if *t == index => Some(key.clone()),
                _ => None,
            };
            out.push_back(Todo::KeysAfter {
                table: index,
                after,
            });
            continue;
        }
        let step = ((rows as f64 / table.rows_per_page.max(1.0)).ceil() as u32).max(1);
        let mut from = match start {
            Start::AtBlock(t, block) if *t == index => *block,
            _ => 0,
        };
        let chunk = |from, to| {
            Todo::Chunk(Range {
                table: index,
                bound: Bound::Blocks { from, to },
            })
        };
        while from.saturating_add(step) < table.pages {
            out.push_back(chunk(from, Some(from + step)));
            from += step;
        }
        out.push_back(chunk(from, None));
    }
    out
}

/// What a reader needs to turn rows into records, shared by all chunk jobs.
pub struct Emitter {
    pub tables: Vec<Table>,
    /// Each table's event schemas, by index.
    pub schemas: Vec<TableSchemas>,
    pub config: PostgresConfig,
    pub partition: SourcePartition,
    /// The consistent point (streaming starts there; the `lsn` of every snapshot offset).
    pub point: Lsn,
    /// The snapshot the rows are read in (`pg_current_snapshot()` as text), kept in every
    /// chunk's offset so that a resumed snapshot reads only the rows that snapshot saw.
    pub txids: Option<String>,
    /// When resuming: the filter that keeps only rows whose version the original snapshot
    /// saw ([`visible_in`]).
    pub visible: Option<String>,
    /// The metrics' labels.
    pub connector: String,
    pub task: String,
}

/// The offset key of the snapshot's transaction ids.
pub const SNAPSHOT_TXIDS: &str = "snapshot_txids";

/// A filter keeping the rows whose current version the snapshot `txids` (text of a
/// `pg_snapshot`, `xmin:xmax:xip,...`) saw: their inserting transaction (the row's `xmin`)
/// had committed when it was taken. A row inserted or updated since is left out: its change
/// is streamed from the consistent point anyway, so reading it too would emit it twice (a
/// keyless table cannot tell the two apart). "Since" is the window of transaction ids from
/// the snapshot's `xmax` to the next one now, plus those running when it was taken (its
/// `xip`); anything else is older, including frozen rows whose raw `xmin` is far in the past
/// (compared modulo 2^32, the `xmin` column's type, a plain comparison would take an old
/// enough one for a future one). `None` when `txids` does not parse.
pub fn visible_in(txids: &str) -> Option<String> {
    let mut parts = txids.split(':');
    let _xmin: u64 = parts.next()?.trim().parse().ok()?;
    let xmax: u64 = parts.next()?.trim().parse().ok()?;
    let xip: Vec<u64> = parts
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    let low = |v: u64| v & 0xFFFF_FFFF;
    let x = low(xmax);
    let running = if xip.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = xip.iter().map(|v| low(*v).to_string()).collect();
        format!("xmin::text::int8 NOT IN ({}) AND ", list.join(", "))
    };
    Some(format!(
        "(xmin::text::int8 < 3 OR ({running}\
         (xmin::text::int8 - {x} + 4294967296) % 4294967296 >= \
         (pg_snapshot_xmax(pg_current_snapshot())::text::int8 % 4294967296 - {x} + 4294967296) % 4294967296))"
    ))
}

/// One chunk read: its range and its records.
pub struct Chunk {
    pub range: Range,
    pub records: Vec<SourceRecord>,
}

type Job = JoinHandle<Result<Chunk, ConnectorError>>;

/// A snapshot being read.
pub struct Snapshot {
    emitter: Arc<Emitter>,
    readers: Vec<Arc<tokio_postgres::Client>>,
    /// The session that finds key-range bounds (outside the snapshot: a bound only sizes a
    /// chunk, the ranges cover the key space whatever it is).
    planner: tokio_postgres::Client,
    /// Work not started yet, in order.
    todo: VecDeque<Todo>,
    /// Chunks being read, in order (at most one per reader).
    running: VecDeque<Job>,
    /// The reader the next chunk goes to.
    next_reader: usize,
    /// Why a chunk failed: the snapshot goes no further (a retried poll must not carry on
    /// past the chunk, and a reader's snapshot transaction is aborted by its error); the
    /// task restarts from the committed offsets.
    failed: Option<String>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for job in &self.running {
            job.abort();
        }
    }
}

impl Snapshot {
    /// A snapshot of `emitter.tables` from `start`, read by `readers` (each already inside
    /// the exported snapshot's transaction, if there is one).
    pub fn new(
        emitter: Emitter,
        readers: Vec<tokio_postgres::Client>,
        planner: tokio_postgres::Client,
        start: &Start,
    ) -> Snapshot {
        let todo = plan_work(&emitter.tables, start, emitter.config.snapshot_fetch_size);
        Snapshot {
            emitter: Arc::new(emitter),
            readers: readers.into_iter().map(Arc::new).collect(),
            planner,
            todo,
            running: VecDeque::new(),
            next_reader: 0,
            failed: None,
        }
    }

    /// How many tables the snapshot reads.
    pub fn tables(&self) -> usize {
        self.emitter.tables.len()
    }

    /// The next chunk to read, cutting the next key range off a keyed table's cursor.
    async fn next_range(&mut self) -> Result<Option<Range>, ConnectorError> {
        let Some(todo) = self.todo.pop_front() else {
            return Ok(None);
        };
        let (table, after) = match todo {
            Todo::Chunk(range) => return Ok(Some(range)),
            Todo::KeysAfter { table, after } => (table, after),
        };
        let Some(t) = self.emitter.tables.get(table) else {
            return Err(ConnectorError::internal("a snapshot chunk of no table"));
        };
        let query = bound_query(t, after.as_deref(), self.emitter.config.snapshot_fetch_size);
        let messages = self
            .planner
            .simple_query(&query)
            .await
            .map_err(|e| crate::retriable(&format!("cutting {} into chunks", t.name), e))?;
        let upto = first_row_texts(&messages, t.key.len());
        if let Some(upto) = &upto {
            self.todo.push_front(Todo::KeysAfter {
                table,
                after: Some(upto.clone()),
            });
        }
        Ok(Some(Range {
            table,
            bound: Bound::Keys { after, upto },
        }))
    }

    /// The next chunk with rows, in plan order, or `None` once every table is read.
    pub async fn next(&mut self) -> Result<Option<Chunk>, ConnectorError> {
        if let Some(reason) = &self.failed {
            return Err(ConnectorError::retriable(format!(
                "the snapshot stopped at a failed chunk: {reason}"
            )));
        }
        let next = self.next_inner().await;
        if let Err(e) = &next {
            self.failed = Some(e.to_string());
        }
        next
    }

    async fn next_inner(&mut self) -> Result<Option<Chunk>, ConnectorError> {
        loop {
            while self.running.len() < self.readers.len() {
                let Some(range) = self.next_range().await? else {
                    break;
                };
                let Some(reader) = self.readers.get(self.next_reader % self.readers.len()) else {
                    break;
                };
                self.next_reader = self.next_reader.wrapping_add(1);
                let (reader, emitter) = (reader.clone(), self.emitter.clone());
                self.running
                    .push_back(tokio::spawn(read(reader, emitter, range)));
            }
            let Some(job) = self.running.front_mut() else {
                return Ok(None);
            };
            // Awaiting a handle is cancel-safe: a poll dropped here leaves the job queued.
            let done = job
                .await
                .map_err(|e| ConnectorError::internal(format!("a snapshot reader ended: {e}")));
            self.running.pop_front();
            let chunk = done??;
            let (connector, task) = (&self.emitter.connector, &self.emitter.task);
            metrics::counter!("sluice_postgres_snapshot_rows_total", "connector" => connector.clone(), "task" => task.clone())
                .increment(chunk.records.len() as u64);
            metrics::counter!("sluice_postgres_snapshot_chunks_total", "connector" => connector.clone(), "task" => task.clone())
                .increment(1);
            if chunk.range.last() {
                metrics::counter!("sluice_postgres_snapshot_tables_total", "connector" => connector.clone(), "task" => task.clone())
                    .increment(1);
            }
            if !chunk.records.is_empty() {
                return Ok(Some(chunk));
            }
        }
    }
}

/// The query finding the last key of the chunk of `rows` rows after `after`: keys only,
/// in key order. The keys come out as text under names of their own: ordering by a name
/// that is also an output column's would order by that text (`'10' < '9'`), not the key.
fn bound_query(table: &Table, after: Option<&[String]>, rows: usize) -> String {
    let key: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
    format!(
        "SELECT {} FROM {} {} ORDER BY {} OFFSET {} LIMIT 1",
        key_texts(&table.key).join(", "),
        qualified(&table.relation),
        after_clause(&key, after),
        key_order(&table.relation, &table.key, ""),
        rows.saturating_sub(1)
    )
}

/// The key's columns as text under names of their own (`sluice_key_<i>`), to read a key's
/// values back as the bounds of the next range.
pub(crate) fn key_texts(key: &[String]) -> Vec<String> {
    key.iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text AS sluice_key_{i}", quote_ident(k)))
        .collect()
}

/// `ORDER BY` the key's columns qualified by the table's name, each followed by
/// `direction`: a bare name that is also an output column's (the text of
/// [`key_texts`]) would order by that text (`'10' < '9'`).
pub(crate) fn key_order(rel: &Relation, key: &[String], direction: &str) -> String {
    key.iter()
        .map(|k| format!("{}.{}{direction}", quote_ident(&rel.name), quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first row's first `n` columns as text, if a row came back.
pub(crate) fn first_row_texts(
    messages: &[tokio_postgres::SimpleQueryMessage],
    n: usize,
) -> Option<Vec<String>> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
            (0..n)
                .map(|i| row.get(i).unwrap_or_default().to_owned())
                .collect(),
        ),
        _ => None,
    })
}

/// `"schema"."table"`.
pub(crate) fn qualified(rel: &Relation) -> String {
    format!("{}.{}", quote_ident(&rel.schema), quote_ident(&rel.name))
}

/// A text literal.
pub(crate) fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// `WHERE (key) > (after)`, or nothing.
pub(crate) fn after_clause(key: &[String], after: Option<&[String]>) -> String {
    after.map_or_else(String::new, |values| {
        let values: Vec<String> = values.iter().map(|v| literal(v)).collect();
        format!("WHERE ({}) > ({})", key.join(", "), values.join(", "))
    })
}

/// The query of one chunk: every column as text (the simple query protocol's format).
fn chunk_query(table: &Table, bound: &Bound, visible: Option<&str>) -> String {
    let rel = &table.relation;
    let columns: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let columns = if columns.is_empty() {
        "NULL".to_owned()
    } else {
        columns.join(", ")
    };
    let filter = match bound {
        Bound::Keys { after, upto } => {
            let key: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
            let mut filter = after_clause(&key, after.as_deref());
            if let Some(upto) = upto {
                let values: Vec<String> = upto.iter().map(|v| literal(v)).collect();
                filter.push_str(if filter.is_empty() { "WHERE " } else { " AND " });
                filter.push_str(&format!("({}) <= ({})", key.join(", "), values.join(", ")));
            }
            filter
        }
        Bound::Blocks { from, to } => {
            let upper = to
                .map(|to| format!(" AND ctid < '({to},0)'::tid"))
                .unwrap_or_default();
            format!("WHERE ctid >= '({from},0)'::tid{upper}")
        }
    };
    let filter = match (visible, filter.is_empty()) {
        (None, _) => filter,
        (Some(v), true) => format!("WHERE {v}"),
        (Some(v), false) => format!("{filter} AND {v}"),
    };
    format!("SELECT {columns} FROM {} {filter}", qualified(rel))
}

/// Reads one chunk and turns its rows into `r` events (on the blocking pool: that is the
/// CPU-heavy part, and it overlaps the engine's work on the previous chunk).
async fn read(
    reader: Arc<tokio_postgres::Client>,
    emitter: Arc<Emitter>,
    range: Range,
) -> Result<Chunk, ConnectorError> {
    let Some(table) = emitter.tables.get(range.table) else {
        return Err(ConnectorError::internal("a snapshot chunk of no table"));
    };
    let messages = reader
        .simple_query(&chunk_query(
            table,
            &range.bound,
            emitter.visible.as_deref(),
        ))
        .await
        .map_err(|e| crate::retriable(&format!("reading {}", table.name), e))?;
    tokio::task::spawn_blocking(move || records(&emitter, range, messages))
        .await
        .map_err(|e| {
            ConnectorError::internal(format!("a snapshot chunk's conversion ended: {e}"))
        })?
}

/// The offset after a chunk: its table, and where in it the rest starts.
fn progress(emitter: &Emitter, table: &Table, bound: &Bound) -> SourceOffset {
    let mut offset = serde_json::Map::new();
    offset.insert("lsn".into(), serde_json::Value::from(emitter.point.0));
    offset.insert(SNAPSHOT.into(), serde_json::Value::from(IN_PROGRESS));
    offset.insert(
        SNAPSHOT_TABLE.into(),
        serde_json::Value::from(table.name.clone()),
    );
    if let Some(txids) = &emitter.txids {
        offset.insert(
            SNAPSHOT_TXIDS.into(),
            serde_json::Value::from(txids.clone()),
        );
    }
    match bound {
        Bound::Keys {
            upto: Some(upto), ..
        } => {
            offset.insert(SNAPSHOT_KEY.into(), serde_json::Value::from(upto.clone()));
        }
        Bound::Blocks { to: Some(to), .. } => {
            offset.insert(SNAPSHOT_BLOCK.into(), serde_json::Value::from(*to));
        }
        // The table is done: neither.
        _ => {}
    }
    SourceOffset(offset)
}

/// A chunk's rows as `r` events, each carrying the progress after the chunk.
fn records(
    emitter: &Emitter,
    range: Range,
    messages: Vec<tokio_postgres::SimpleQueryMessage>,
) -> Result<Chunk, ConnectorError> {
    let (Some(table), Some(schemas)) = (
        emitter.tables.get(range.table),
        emitter.schemas.get(range.table),
    ) else {
        return Err(ConnectorError::internal("a snapshot chunk of no table"));
    };
    let offset = progress(emitter, table, &range.bound);
    let now = crate::now_micros();
    let config = &emitter.config;
    let source = SourceInfo {
        connector_name: &config.topic_prefix,
        database: &config.dbname,
        xid: 0,
        lsn: emitter.point,
        snapshot: "true",
        last_commit: None,
        commit_micros: now,
    };
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let tokio_postgres::SimpleQueryMessage::Row(row) = m else {
            continue;
        };
        let tuple = tuple_of(&row, table.relation.columns.len());
        out.push(read_event(
            schemas,
            config,
            &emitter.partition,
            offset.clone(),
            &source,
            &tuple,
        )?);
    }
    Ok(Chunk {
        range,
        records: out,
    })
}

/// The first `width` columns of a row read as text, as a tuple.
pub fn tuple_of(row: &tokio_postgres::SimpleQueryRow, width: usize) -> Vec<Datum> {
    (0..width)
        .map(|i| {
            row.get(i)
                .map_or(Datum::Null, |t| Datum::Text(t.as_bytes().to_vec()))
        })
        .collect()
}

/// A row read by a snapshot (initial or incremental) as its `r` event.
pub fn read_event(
    schemas: &TableSchemas,
    config: &PostgresConfig,
    partition: &SourcePartition,
    offset: SourceOffset,
    source: &SourceInfo<'_>,
    tuple: &[Datum],
) -> Result<SourceRecord, ConnectorError> {
    let data = |e: crate::types::TypeError| ConnectorError::data(format!("{}: {e}", schemas.topic));
    let key = schemas.key(&config.mapping, tuple).map_err(data)?;
    let after = schemas
        .row(&config.mapping, &config.unavailable_placeholder, tuple)
        .map_err(data)?;
    let now = source.commit_micros;
    Ok(SourceRecord {
        source_partition: partition.clone(),
        source_offset: offset,
        topic: schemas.topic.clone(),
        partition: None,
        key_schema: schemas.key.clone(),
        key,
        value_schema: Some(schemas.envelope.clone()),
        value: schemas.envelope('r', Value::Null, after, source, now),
        timestamp: Some(now.div_euclid(1000)),
        headers: Vec::new(),
    })
}

/// Where a committed snapshot offset says to go on, in `tables` as planned now: within the
/// table it names (after its key, or at its block), or at the next table once it is done
/// (a table dropped since is skipped; a table whose key was added or dropped since starts
/// over).
pub fn resume_at(
    tables: &[Table],
    table: &str,
    key: Option<Vec<String>>,
    block: Option<u32>,
) -> Start {
    // The table by its name; if it is gone, the first one after it in plan order (by
    // schema, then name, bytewise: the plan's order).
    let index = tables
        .iter()
        .position(|t| t.name == table)
        .unwrap_or_else(|| {
            let (schema, name) = table.split_once('.').unwrap_or(("", table));
            tables
                .iter()
                .position(|t| {
                    (t.relation.schema.as_str(), t.relation.name.as_str()) > (schema, name)
                })
                .unwrap_or(tables.len())
        });
    let Some(t) = tables.get(index).filter(|t| t.name == table) else {
        return Start::Table(index);
    };
    match (key, block) {
        (Some(key), _) if !t.key.is_empty() && key.len() == t.key.len() => {
            Start::AfterKey(index, key)
        }
        (_, Some(block)) if t.key.is_empty() => Start::AtBlock(index, block),
        (None, None) => Start::Table(index + 1),
        _ => Start::Table(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, key: &[&str], pages: u32, rows_per_page: f64) -> Table {
        Table {
            name: format!("public.{name}"),
            relation: Relation {
                oid: 1,
                schema: "public".into(),
                name: name.into(),
                identity: ReplicaIdentity::Default,
                columns: Vec::new(),
            },
            key: key.iter().map(|k| (*k).to_owned()).collect(),
            pages,
            rows_per_page,
        }
    }

    fn blocks(table: usize, from: u32, to: Option<u32>) -> Todo {
        Todo::Chunk(Range {
            table,
            bound: Bound::Blocks { from, to },
        })
    }

    #[test]
    fn keyless_tables_are_cut_into_block_ranges_ending_unbounded() {
        let tables = [
            table("a", &[], 10, 10.0),
            table("b", &[], 0, 50.0),
            table("c", &["id"], 4, 100.0),
        ];
        let got: Vec<Todo> = plan_work(&tables, &Start::Table(0), 30).into();
        assert_eq!(
            got,
            vec![
                blocks(0, 0, Some(3)),
                blocks(0, 3, Some(6)),
                blocks(0, 6, Some(9)),
                blocks(0, 9, None),
                blocks(1, 0, None),
                Todo::KeysAfter {
                    table: 2,
                    after: None
                },
            ]
        );
        let got: Vec<Todo> = plan_work(&tables, &Start::AtBlock(0, 6), 30).into();
        assert_eq!(got.first(), Some(&blocks(0, 6, Some(9))));
        assert_eq!(got.len(), 4);
        let got: Vec<Todo> = plan_work(&tables, &Start::AfterKey(2, vec!["7".into()]), 30).into();
        assert_eq!(
            got,
            vec![Todo::KeysAfter {
                table: 2,
                after: Some(vec!["7".into()])
            }]
        );
    }

    #[test]
    fn chunk_queries_bound_keys_and_blocks() {
        let t = table("t", &["a", "b"], 1, 1.0);
        let q = chunk_query(
            &t,
            &Bound::Keys {
                after: Some(vec!["1".into(), "x'y".into()]),
                upto: Some(vec!["2".into(), "z".into()]),
            },
            None,
        );
        assert!(
            q.ends_with(r#"WHERE ("a", "b") > ('1', 'x''y') AND ("a", "b") <= ('2', 'z')"#),
            "{q}"
        );
        let q = chunk_query(
            &t,
            &Bound::Keys {
                after: None,
                upto: None,
            },
            None,
        );
        assert!(q.ends_with(r#""t" "#), "{q}");
        let q = chunk_query(&t, &Bound::Blocks { from: 3, to: None }, None);
        assert!(q.ends_with("WHERE ctid >= '(3,0)'::tid"), "{q}");
        let q = chunk_query(&t, &Bound::Blocks { from: 3, to: None }, Some("(v)"));
        assert!(q.ends_with("WHERE ctid >= '(3,0)'::tid AND (v)"), "{q}");
        let q = chunk_query(
            &t,
            &Bound::Keys {
                after: None,
                upto: None,
            },
            Some("(v)"),
        );
        assert!(q.ends_with(r#""t" WHERE (v)"#), "{q}");
    }

    #[test]
    fn chunk_bounds_are_found_in_key_order_not_text_order() {
        let t = table("t", &["id"], 1, 1.0);
        assert_eq!(
            bound_query(&t, Some(&["7".to_owned()]), 100),
            r#"SELECT "id"::text AS sluice_key_0 FROM "public"."t" WHERE ("id") > ('7') ORDER BY "t"."id" OFFSET 99 LIMIT 1"#
        );
    }

    #[test]
    fn a_resumed_snapshot_sees_what_the_first_one_saw() {
        // Epoch 1 (ids above 2^32), two transactions running when it was taken.
        let v = visible_in("4294967396:4294967400:4294967397,4294967398").unwrap();
        assert_eq!(
            v,
            "(xmin::text::int8 < 3 OR (xmin::text::int8 NOT IN (101, 102) AND \
             (xmin::text::int8 - 104 + 4294967296) % 4294967296 >= \
             (pg_snapshot_xmax(pg_current_snapshot())::text::int8 % 4294967296 - 104 + 4294967296) % 4294967296))"
        );
        assert!(visible_in("7:9:").is_some_and(|v| !v.contains("NOT IN")));
        assert_eq!(visible_in("garbage"), None);
    }

    #[test]
    fn resume_follows_the_committed_offset() {
        let tables = [table("a", &[], 10, 10.0), table("c", &["id"], 4, 100.0)];
        assert_eq!(
            resume_at(&tables, "public.a", None, Some(6)),
            Start::AtBlock(0, 6)
        );
        assert_eq!(resume_at(&tables, "public.a", None, None), Start::Table(1));
        assert_eq!(
            resume_at(&tables, "public.c", Some(vec!["9".into()]), None),
            Start::AfterKey(1, vec!["9".into()])
        );
        // A key where the table has none now (or the other way round): the table again.
        assert_eq!(
            resume_at(&tables, "public.a", Some(vec!["9".into()]), None),
            Start::Table(0)
        );
        assert_eq!(
            resume_at(&tables, "public.c", None, Some(2)),
            Start::Table(1)
        );
        // A table dropped since: the next one in plan order, from its start.
        assert_eq!(
            resume_at(&tables, "public.b", None, Some(3)),
            Start::Table(1)
        );
        assert_eq!(resume_at(&tables, "public.z", None, None), Start::Table(2));
        // Found by name, whatever the order of names with '_' and letters.
        let tables = [
            table("account_users", &["id"], 1, 1.0),
            table("accounts", &["id"], 1, 1.0),
        ];
        assert_eq!(
            resume_at(&tables, "public.accounts", Some(vec!["1".into()]), None),
            Start::AfterKey(1, vec!["1".into()])
        );
    }
}
