//! Incremental snapshots, as Debezium's (after Netflix's DBLog): tables read again while
//! streaming goes on, in chunks of `incremental.snapshot.chunk.size` rows in primary-key
//! order, triggered by an `execute-snapshot` row in the signal table
//! (`signal.data.collection`). For a table added to `table.include.list`, or to refill a
//! topic, with no pause of the stream and no stale value.
//!
//! Each chunk is read between two watermarks the task writes to the signal table itself:
//! a `snapshot-window-open` row, committed before the chunk's SELECT, and a
//! `snapshot-window-close` row, committed after it. The chunk's rows wait in memory while
//! the stream catches up to the close row; any change streamed between the two (the rows'
//! newer versions, or their deletes) takes its row out of the chunk, since the stream
//! already carries something at least as new. At the close row the rows left are emitted
//! as `r` events (`source.snapshot=incremental`) in that transaction, so each read lands
//! after every change older than it and before every change newer than it.
//!
//! The progress (tables left, the last key read, the table's largest key when it
//! started) goes into every offset committed while a snapshot is running, in the same
//! Kafka transaction as the chunk: a task that restarts reads the next chunk after the last
//! committed one. Watermarks of a chunk that was not committed come back in the replayed
//! stream with an id the new task did not write: they are ignored, and the chunk is read
//! again in a new window.

use std::collections::{HashMap, VecDeque};

use sluice_proto::{ConnectorError, SourceRecord};

use crate::config::PostgresConfig;
use crate::envelope::{SourceInfo, TableSchemas};
use crate::pgoutput::{Datum, Lsn};
use crate::replication::quote_ident;
use crate::snapshot::{
    after_clause, first_row_texts, key_order, key_texts, literal, qualified, Table,
};

/// The offset keys of an incremental snapshot's progress (Debezium's names).
pub const OFFSET_COLLECTIONS: &str = "incremental_snapshot_collections";
pub const OFFSET_KEY: &str = "incremental_snapshot_primary_key";
pub const OFFSET_MAXIMUM_KEY: &str = "incremental_snapshot_maximum_key";

/// The signal types Sluice acts on (Debezium's names).
pub const EXECUTE_SNAPSHOT: &str = "execute-snapshot";
pub const STOP_SNAPSHOT: &str = "stop-snapshot";
pub const WINDOW_OPEN: &str = "snapshot-window-open";
pub const WINDOW_CLOSE: &str = "snapshot-window-close";

pub use sluice_proto::Signal;

/// The signal in a row of the signal table: `id`, `type`, `data`, its first three columns
/// (by position, as Debezium reads them), if it has them.
pub fn signal_in(tuple: &[Datum]) -> Option<Signal> {
    let text = |i: usize| match tuple.get(i) {
        Some(Datum::Text(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Datum::Null) => Some(String::new()),
        _ => None,
    };
    Some(Signal {
        id: text(0)?,
        kind: text(1)?,
        data: text(2)?,
    })
}

/// What an `execute-snapshot` or `stop-snapshot` signal asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Regular expressions over `schema.table`; empty (stop only) for every table.
    pub collections: Vec<String>,
}

/// Parses the `data` of an `execute-snapshot` or `stop-snapshot` signal:
/// `{"data-collections": ["schema.table", ...], "type": "incremental"}`. What Sluice does
/// not do (blocking snapshots, `additional-conditions`, `surrogate-key`) is an error that
/// says so, never a snapshot of something else.
pub fn parse_request(kind: &str, data: &str) -> Result<Request, String> {
    let json: serde_json::Value =
        serde_json::from_str(data).map_err(|e| format!("data is not JSON: {e}"))?;
    let snapshot_type = json
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("incremental");
    if !snapshot_type.eq_ignore_ascii_case("incremental") {
        return Err(format!(
            "type {snapshot_type:?}: only incremental snapshots are supported by Sluice's PostgreSQL source"
        ));
    }
    for key in [
        "additional-conditions",
        "additional-condition",
        "surrogate-key",
    ] {
        let set = match json.get(key) {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(format!(
                "{key} is not supported by Sluice's PostgreSQL source yet"
            ));
        }
    }
    let collections: Vec<String> = match json.get("data-collections") {
        None | Some(serde_json::Value::Null) if kind == STOP_SNAPSHOT => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("data-collections holds {c}, not a table name"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("data-collections (an array of schema.table names) is missing".into()),
    };
    for c in &collections {
        regex::Regex::new(&format!("^(?:{c})$"))
            .map_err(|e| format!("data-collections: {c:?}: {e}"))?;
    }
    if kind == EXECUTE_SNAPSHOT && collections.is_empty() {
        return Err("data-collections is empty".into());
    }
    Ok(Request { collections })
}

/// Writes a signal sent over REST to the signal table, once it is one the task will act on
/// (`execute-snapshot` or `stop-snapshot`, with data it can parse): the task reads it from
/// the stream like a row a user inserted, wherever it runs, even if it is restarting.
pub async fn send(config: &PostgresConfig, signal: &Signal) -> Result<(), ConnectorError> {
    let Some((schema, table)) = &config.signal_table else {
        return Err(ConnectorError::config(format!(
            "{}: not set; signals reach the task through the signal table it names",
            crate::config::SIGNAL_DATA_COLLECTION
        )));
    };
    if signal.kind != EXECUTE_SNAPSHOT && signal.kind != STOP_SNAPSHOT {
        return Err(ConnectorError::config(format!(
            "type: {:?} is not a signal Sluice's PostgreSQL source acts on ({EXECUTE_SNAPSHOT}, {STOP_SNAPSHOT})",
            signal.kind
        )));
    }
    parse_request(&signal.kind, &signal.data)
        .map_err(|e| ConnectorError::config(format!("data: {e}")))?;
    let sql = crate::preflight::connect(config, &config.topic_prefix, "signal")
        .await
        .map_err(|e| crate::preflight::connect_error(config, &e))?;
    let written = sql
        .execute(
            &format!(
                "INSERT INTO {}.{} VALUES ($1, $2, $3)",
                quote_ident(schema),
                quote_ident(table)
            ),
            &[&signal.id, &signal.kind, &signal.data],
        )
        .await;
    if let Err(e) = &written {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return Err(ConnectorError::config(format!(
                "id: the signal table already holds a signal {:?}",
                signal.id
            )));
        }
    }
    written.map_err(|e| {
        crate::retriable(
            &format!(
                "{}: writing the signal",
                crate::config::SIGNAL_DATA_COLLECTION
            ),
            e,
        )
    })?;
    tracing::info!(topic_prefix = %config.topic_prefix, id = %signal.id, r#type = %signal.kind, "signal written to the signal table");
    Ok(())
}

/// The tables of `planned` (`schema.table` names) that `patterns` name, in plan order,
/// and the patterns that name none.
pub fn matching(planned: &[String], patterns: &[String]) -> (Vec<String>, Vec<String>) {
    let regexes: Vec<(String, Option<regex::Regex>)> = patterns
        .iter()
        .map(|p| (p.clone(), regex::Regex::new(&format!("^(?:{p})$")).ok()))
        .collect();
    let hit = |name: &str, (p, r): &(String, Option<regex::Regex>)| {
        p == name || r.as_ref().is_some_and(|r| r.is_match(name))
    };
    let tables = planned
        .iter()
        .filter(|t| regexes.iter().any(|r| hit(t, r)))
        .cloned()
        .collect();
    let unmatched = regexes
        .iter()
        .filter(|r| !planned.iter().any(|t| hit(t, r)))
        .map(|(p, _)| p.clone())
        .collect();
    (tables, unmatched)
}

/// The table being read.
pub struct Current {
    pub table: Table,
    pub schemas: TableSchemas,
    /// The columns chunks are cut by: the primary key, else `message.key.columns`'.
    pub key: Vec<String>,
}

/// A chunk read and waiting for its close watermark.
pub struct Window {
    /// The chunk's id: its watermarks' ids are `<id>-open` and `<id>-close`.
    pub id: String,
    /// Whether the stream has passed the open watermark: from then on a streamed change
    /// of a key takes that key's row out of the chunk.
    pub opened: bool,
    pub topic: String,
    pub rows: Vec<SourceRecord>,
    /// The chunk's last key (the progress once it is emitted).
    pub last_key: Option<Vec<String>>,
    /// Whether the chunk ends the table.
    pub ends_table: bool,
}

/// A chunk whose close watermark went by.
pub struct Closed {
    /// Its rows no streamed change superseded, to emit now.
    pub rows: Vec<SourceRecord>,
    /// The table it ended, if it did.
    pub table_done: Option<String>,
}

/// An incremental snapshot's state.
#[derive(Default)]
pub struct Incremental {
    /// Tables (`schema.table`) left to read, the first being read.
    pub collections: VecDeque<String>,
    pub current: Option<Current>,
    /// The last key emitted of the first table, as text.
    pub last_key: Option<Vec<String>>,
    /// The first table's largest key when its snapshot started: rows added after are
    /// streamed anyway.
    pub maximum_key: Option<Vec<String>>,
    pub window: Option<Window>,
    /// Chunks written so far, for the next window's id.
    pub chunks: u64,
}

fn strings(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    value.and_then(serde_json::Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

impl Incremental {
    /// The progress a committed offset holds, if a snapshot was running.
    pub fn restore(offset: &serde_json::Map<String, serde_json::Value>) -> Incremental {
        Incremental {
            collections: strings(offset.get(OFFSET_COLLECTIONS))
                .unwrap_or_default()
                .into(),
            last_key: strings(offset.get(OFFSET_KEY)),
            maximum_key: strings(offset.get(OFFSET_MAXIMUM_KEY)),
            ..Incremental::default()
        }
    }

    /// Adds the progress to an offset being committed (nothing once no snapshot runs).
    pub fn save(&self, offset: &mut serde_json::Map<String, serde_json::Value>) {
        if self.collections.is_empty() {
            return;
        }
        offset.insert(
            OFFSET_COLLECTIONS.into(),
            serde_json::Value::from(Vec::from(self.collections.clone())),
        );
        if let Some(key) = &self.last_key {
            offset.insert(OFFSET_KEY.into(), serde_json::Value::from(key.clone()));
        }
        if let Some(key) = &self.maximum_key {
            offset.insert(
                OFFSET_MAXIMUM_KEY.into(),
                serde_json::Value::from(key.clone()),
            );
        }
    }

    /// Whether a chunk should be read now: tables are left and none is in flight.
    pub fn wants_chunk(&self) -> bool {
        self.window.is_none() && !self.collections.is_empty()
    }

    /// Adds tables to read (those already queued stay where they are).
    pub fn add(&mut self, tables: Vec<String>) {
        for t in tables {
            if !self.collections.contains(&t) {
                self.collections.push_back(t);
            }
        }
    }

    /// Stops the snapshot of the tables `patterns` name (of all, with none).
    pub fn stop(&mut self, patterns: &[String]) {
        let names: Vec<String> = self.collections.iter().cloned().collect();
        let (stopped, _) = if patterns.is_empty() {
            (names, Vec::new())
        } else {
            matching(&names, patterns)
        };
        if self
            .collections
            .front()
            .is_some_and(|first| stopped.contains(first))
        {
            self.next_table();
        }
        self.collections.retain(|t| !stopped.contains(t));
    }

    /// Done with the first table: on to the next.
    pub fn next_table(&mut self) {
        self.collections.pop_front();
        self.current = None;
        self.window = None;
        self.last_key = None;
        self.maximum_key = None;
    }

    /// Rows of the open window that a streamed change of the same key supersedes are
    /// dropped; returns how many.
    pub fn supersede(&mut self, streamed: &[SourceRecord]) -> usize {
        let Some(window) = self.window.as_mut().filter(|w| w.opened) else {
            return 0;
        };
        let before = window.rows.len();
        for record in streamed.iter().filter(|r| r.topic == window.topic) {
            window.rows.retain(|row| row.key != record.key);
        }
        before - window.rows.len()
    }

    /// A watermark went by in the stream: the open one marks the window open; the close
    /// one returns the chunk's rows left, and moves the progress past the chunk.
    pub fn watermark(&mut self, signal: &Signal) -> Option<Closed> {
        let window = self.window.as_mut()?;
        if signal.kind == WINDOW_OPEN && signal.id == format!("{}-open", window.id) {
            window.opened = true;
            return None;
        }
        if signal.kind != WINDOW_CLOSE || signal.id != format!("{}-close", window.id) {
            return None;
        }
        let window = self.window.take()?;
        let table_done = if window.ends_table {
            let done = self.collections.front().cloned();
            self.next_table();
            done
        } else {
            self.last_key = window.last_key;
            None
        };
        Some(Closed {
            rows: window.rows,
            table_done,
        })
    }
}

/// What reading a chunk needs from the task.
pub struct Reader<'a> {
    pub sql: &'a tokio_postgres::Client,
    pub config: &'a PostgresConfig,
    pub enums: &'a HashMap<u32, String>,
    pub partition: &'a sluice_proto::SourcePartition,
    /// The stream's position, for the events' `source.lsn`.
    pub lsn: Lsn,
    /// `<connector>-<task>` and the metrics' labels.
    pub label: &'a str,
    pub connector: &'a str,
    pub task: &'a str,
}

impl Reader<'_> {
    /// The first table left, ready to read: its columns, key and schemas, or `None` (with
    /// a WARN) when it cannot be read (gone, not captured, no key).
    async fn load(&self, name: &str) -> Result<Option<Current>, ConnectorError> {
        let Some(table) = crate::snapshot::plan_one(self.sql, self.config, name).await? else {
            tracing::warn!(task = %self.label, table = name, "incremental snapshot: the table does not exist or is not captured (table.include.list, schema.include.list): skipped");
            return Ok(None);
        };
        let (schema, relname) = (&table.relation.schema, &table.relation.name);
        let key = match self.config.message_key(schema, relname) {
            Some(columns) => columns.to_vec(),
            None => table.key.clone(),
        };
        if key.is_empty() {
            tracing::warn!(task = %self.label, table = name, "incremental snapshot: the table has no primary key (nor message.key.columns) to read it in chunks by: skipped");
            return Ok(None);
        }
        let prefix = format!("{name}.");
        let (schemas, _) = TableSchemas::new(
            &self.config.topic_prefix,
            &table.relation,
            &self.config.mapping,
            self.enums,
            |c| self.config.columns.allows(&format!("{prefix}{c}")),
        );
        Ok(Some(Current {
            table,
            schemas,
            key,
        }))
    }

    /// Writes a watermark row to the signal table (committed when this returns).
    async fn watermark(&self, id: &str, kind: &str, field: &str) -> Result<(), ConnectorError> {
        let Some((schema, table)) = &self.config.signal_table else {
            return Err(ConnectorError::internal(
                "a watermark without a signal table",
            ));
        };
        let data = serde_json::json!({ field: crate::now_micros().div_euclid(1000) }).to_string();
        self.sql
            .execute(
                &format!(
                    "INSERT INTO {}.{} VALUES ($1, $2, $3)",
                    quote_ident(schema),
                    quote_ident(table)
                ),
                &[&id, &kind, &data],
            )
            .await
            .map_err(|e| {
                crate::retriable(
                    &format!("signal.data.collection: writing the {kind} watermark"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Reads the next chunk of the first table left between an open and a close watermark
    /// (skipping tables that cannot be read or are empty), and leaves it in the window.
    pub async fn next_chunk(&self, inc: &mut Incremental) -> Result<(), ConnectorError> {
        let maximum = loop {
            let Some(name) = inc.collections.front().cloned() else {
                return Ok(());
            };
            if inc.current.is_none() {
                match self.load(&name).await? {
                    Some(current) => inc.current = Some(current),
                    None => {
                        inc.next_table();
                        continue;
                    }
                }
            }
            let Some(current) = inc.current.as_ref() else {
                continue;
            };
            if let Some(maximum) = inc.maximum_key.clone() {
                break maximum;
            }
            let rows = self
                .sql
                .simple_query(&maximum_key_query(&current.table, &current.key))
                .await
                .map_err(|e| crate::retriable(&format!("reading {name}'s largest key"), e))?;
            let maximum = first_row_texts(&rows, current.key.len());
            match maximum {
                Some(maximum) => {
                    tracing::info!(task = %self.label, table = %name, maximum_key = ?maximum, "incremental snapshot of a table starting");
                    inc.maximum_key = Some(maximum);
                }
                None => {
                    tracing::info!(task = %self.label, table = %name, "incremental snapshot: the table is empty");
                    metrics::counter!("sluice_postgres_incremental_tables_total", "connector" => self.connector.to_owned(), "task" => self.task.to_owned())
                        .increment(1);
                    inc.next_table();
                }
            }
        };
        let Some(current) = inc.current.as_ref() else {
            return Ok(());
        };
        inc.chunks += 1;
        let id = format!("sluice-{:x}-{}", crate::now_micros(), inc.chunks);
        self.watermark(&format!("{id}-open"), WINDOW_OPEN, "openWindowTimestamp")
            .await?;
        let chunk_size = self.config.incremental_chunk_size.max(1);
        let messages = self
            .sql
            .simple_query(&chunk_query(
                &current.table,
                &current.key,
                inc.last_key.as_deref(),
                &maximum,
                chunk_size,
            ))
            .await
            .map_err(|e| crate::retriable(&format!("reading {}", current.table.name), e))?;
        let (rows, last_key) =
            chunk_records(current, self.config, self.partition, self.lsn, messages)?;
        let ends_table = rows.len() < chunk_size || last_key.as_ref() == Some(&maximum);
        self.watermark(&format!("{id}-close"), WINDOW_CLOSE, "closeWindowTimestamp")
            .await?;
        tracing::debug!(task = %self.label, table = %current.table.name, rows = rows.len(), after = ?inc.last_key, "incremental snapshot chunk read");
        inc.window = Some(Window {
            id,
            opened: false,
            topic: current.schemas.topic.clone(),
            rows,
            last_key,
            ends_table,
        });
        Ok(())
    }
}

/// `SELECT`s for a chunk: every column as text, then the key columns as text (the chunk's
/// last key is the progress), in key order, after `after` and up to `upto`.
pub fn chunk_query(
    table: &Table,
    key: &[String],
    after: Option<&[String]>,
    upto: &[String],
    rows: usize,
) -> String {
    let rel = &table.relation;
    let quoted: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let mut columns: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
    columns.extend(key_texts(key));
    let upto: Vec<String> = upto.iter().map(|v| literal(v)).collect();
    let after = after_clause(&quoted, after);
    let upto = format!("({}) <= ({})", quoted.join(", "), upto.join(", "));
    let filter = if after.is_empty() {
        format!("WHERE {upto}")
    } else {
        format!("{after} AND {upto}")
    };
    format!(
        "SELECT {} FROM {} {filter} ORDER BY {} LIMIT {rows}",
        columns.join(", "),
        qualified(rel),
        key_order(rel, key, "")
    )
}

/// The query of a table's largest key, as text.
pub fn maximum_key_query(table: &Table, key: &[String]) -> String {
    format!(
        "SELECT {} FROM {} ORDER BY {} LIMIT 1",
        key_texts(key).join(", "),
        qualified(&table.relation),
        key_order(&table.relation, key, " DESC")
    )
}

/// The rows of a chunk (as [`chunk_query`] returns them) as `r` events with
/// `source.snapshot=incremental`, and the last row's key.
pub fn chunk_records(
    current: &Current,
    config: &PostgresConfig,
    partition: &sluice_proto::SourcePartition,
    lsn: Lsn,
    messages: Vec<tokio_postgres::SimpleQueryMessage>,
) -> Result<(Vec<SourceRecord>, Option<Vec<String>>), ConnectorError> {
    let schemas = &current.schemas;
    let width = current.table.relation.columns.len();
    let now = crate::now_micros();
    let source = SourceInfo {
        connector_name: &config.topic_prefix,
        database: &config.dbname,
        xid: 0,
        lsn,
        snapshot: "incremental",
        last_commit: None,
        commit_micros: now,
    };
    let mut out = Vec::with_capacity(messages.len());
    let mut last = None;
    for m in messages {
        let tokio_postgres::SimpleQueryMessage::Row(row) = m else {
            continue;
        };
        let tuple = crate::snapshot::tuple_of(&row, width);
        last = Some(
            (0..current.key.len())
                .map(|i| row.get(width + i).unwrap_or_default().to_owned())
                .collect(),
        );
        out.push(crate::snapshot::read_event(
            schemas,
            config,
            partition,
            sluice_proto::SourceOffset(serde_json::Map::new()),
            &source,
            &tuple,
        )?);
    }
    Ok((out, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::Value;

    fn record(topic: &str, id: i32) -> SourceRecord {
        SourceRecord {
            source_partition: sluice_proto::SourcePartition::single("server", "p"),
            source_offset: sluice_proto::SourceOffset(serde_json::Map::new()),
            topic: topic.into(),
            partition: None,
            key_schema: None,
            key: Value::Struct(vec![("id".into(), Value::Int32(id))]),
            value_schema: None,
            value: Value::Null,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    fn signal(id: &str, kind: &str) -> Signal {
        Signal {
            id: id.into(),
            kind: kind.into(),
            data: String::new(),
        }
    }

    #[test]
    fn requests_are_parsed_and_what_is_not_built_is_refused() {
        let r = parse_request(
            EXECUTE_SNAPSHOT,
            r#"{"data-collections": ["public.items", "s.t.*"], "type": "INCREMENTAL"}"#,
        )
        .unwrap();
        assert_eq!(r.collections, ["public.items", "s.t.*"]);
        let r = parse_request(EXECUTE_SNAPSHOT, r#"{"data-collections": ["a.b"]}"#).unwrap();
        assert_eq!(r.collections, ["a.b"]);
        assert_eq!(
            parse_request(STOP_SNAPSHOT, r#"{"type": "incremental"}"#)
                .unwrap()
                .collections,
            Vec::<String>::new()
        );
        for (data, fragment) in [
            (
                r#"{"data-collections": ["a.b"], "type": "blocking"}"#,
                "blocking",
            ),
            ("not json", "not JSON"),
            (r#"{"type": "incremental"}"#, "missing"),
            (r#"{"data-collections": []}"#, "empty"),
            (r#"{"data-collections": [1]}"#, "not a table name"),
            (r#"{"data-collections": ["("]}"#, "\"(\""),
            (
                r#"{"data-collections": ["a.b"], "additional-conditions": [{"data-collection": "a.b", "filter": "x > 1"}]}"#,
                "additional-conditions",
            ),
        ] {
            let e = parse_request(EXECUTE_SNAPSHOT, data).unwrap_err();
            assert!(e.contains(fragment), "{data}: {e}");
        }
    }

    #[test]
    fn collections_match_by_name_or_pattern_in_plan_order() {
        let planned: Vec<String> = ["public.a", "public.b", "s.items"].map(String::from).into();
        let (tables, unmatched) = matching(
            &planned,
            &["s.items".into(), "public\\..*".into(), "x.y".into()],
        );
        assert_eq!(tables, ["public.a", "public.b", "s.items"]);
        assert_eq!(unmatched, ["x.y"]);
    }

    #[test]
    fn a_streamed_change_supersedes_its_row_only_once_the_window_is_open() {
        let mut inc = Incremental::default();
        inc.add(vec!["public.items".into()]);
        inc.window = Some(Window {
            id: "w1".into(),
            opened: false,
            topic: "p.public.items".into(),
            rows: (1..=4).map(|i| record("p.public.items", i)).collect(),
            last_key: Some(vec!["4".into()]),
            ends_table: false,
        });
        // Before the open watermark: the read saw this change already.
        assert_eq!(inc.supersede(&[record("p.public.items", 1)]), 0);
        // Another window's watermark changes nothing.
        assert!(inc.watermark(&signal("w0-open", WINDOW_OPEN)).is_none());
        assert!(!inc.window.as_ref().unwrap().opened);
        assert!(inc.watermark(&signal("w1-open", WINDOW_OPEN)).is_none());
        // Another table's change of the same key is not this row's.
        assert_eq!(inc.supersede(&[record("p.public.other", 2)]), 0);
        assert_eq!(inc.supersede(&[record("p.public.items", 2)]), 1);
        assert!(inc.watermark(&signal("w0-close", WINDOW_CLOSE)).is_none());
        let closed = inc.watermark(&signal("w1-close", WINDOW_CLOSE)).unwrap();
        assert_eq!(closed.table_done, None);
        let rows = closed.rows;
        let keys: Vec<&Value> = rows.iter().map(|r| &r.key).collect();
        assert_eq!(
            keys,
            [1, 3, 4]
                .map(|i| Value::Struct(vec![("id".into(), Value::Int32(i))]))
                .iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(inc.last_key, Some(vec!["4".to_owned()]));
        assert!(inc.wants_chunk());
    }

    #[test]
    fn progress_round_trips_through_the_offset_and_ends_with_the_last_table() {
        let mut inc = Incremental::default();
        let mut offset = serde_json::Map::new();
        inc.save(&mut offset);
        assert!(offset.is_empty(), "no snapshot, no keys");
        inc.add(vec![
            "public.a".into(),
            "public.b".into(),
            "public.a".into(),
        ]);
        inc.last_key = Some(vec!["7".into(), "x".into()]);
        inc.maximum_key = Some(vec!["9".into(), "z".into()]);
        inc.save(&mut offset);
        let back = Incremental::restore(&offset);
        assert_eq!(
            Vec::from(back.collections.clone()),
            ["public.a", "public.b"]
        );
        assert_eq!(back.last_key, inc.last_key);
        assert_eq!(back.maximum_key, inc.maximum_key);
        inc.window = Some(Window {
            id: "w".into(),
            opened: true,
            topic: "t".into(),
            rows: Vec::new(),
            last_key: None,
            ends_table: true,
        });
        let closed = inc.watermark(&signal("w-close", WINDOW_CLOSE)).unwrap();
        assert_eq!(closed.table_done.as_deref(), Some("public.a"));
        assert_eq!(Vec::from(inc.collections.clone()), ["public.b"]);
        assert_eq!(inc.last_key, None);
        inc.stop(&[]);
        let mut offset = serde_json::Map::new();
        inc.save(&mut offset);
        assert!(offset.is_empty());
    }
}
