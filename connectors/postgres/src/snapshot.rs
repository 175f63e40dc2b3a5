//! The initial snapshot: every captured table's rows as Debezium's `r` events, read in
//! primary-key order (CTID order for a table without one) in chunks, before streaming
//! starts at the slot's consistent point.
//!
//! On a first start the slot is created with an exported snapshot and the chunks are read
//! inside it, so the rows are exactly the state at the consistent point. Each chunk's
//! records carry the snapshot's progress as their offset (`snapshot_table`,
//! `snapshot_key`: the last key read), committed with them. A task that stops in the
//! middle resumes after the last committed key; the exported snapshot is gone by then, so
//! the rest is read as it is now, and streaming from the consistent point replays every
//! change since: no row is emitted twice, and the topic ends in the database's state.

use std::collections::HashMap;

use crate::config::PostgresConfig;
use crate::pgoutput::{Column, Relation, ReplicaIdentity};
use crate::replication::quote_ident;
use sluice_proto::ConnectorError;

/// One captured table to read.
#[derive(Debug, Clone)]
pub struct Table {
    /// `schema.table`.
    pub name: String,
    pub relation: Relation,
    /// The primary key's columns, in key order; empty: read in CTID order.
    pub key: Vec<String>,
}

/// Where the snapshot is: the table being read and the last key read in it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tables: Vec<Table>,
    pub index: usize,
    /// The last key read in `tables[index]` (its primary key's values, or the CTID).
    pub after: Option<Vec<String>>,
    pub chunk: usize,
}

/// A text literal.
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The captured tables of the database, in name order, with their columns and keys.
pub async fn plan(
    sql: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<Vec<Table>, ConnectorError> {
    let rows = sql
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
              ORDER BY 2, 3",
            &[],
        )
        .await
        .map_err(|e| crate::retriable("listing the tables to snapshot", e))?;
    let mut tables = Vec::new();
    for row in rows {
        let (oid, schema, name): (u32, String, String) = (row.get(0), row.get(1), row.get(2));
        if !config.captures(&schema, &name) {
            continue;
        }
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
                    key: key.contains(&name),
                    name,
                    type_oid: r.get(1),
                    type_modifier: r.get(2),
                }
            })
            .collect();
        tables.push(Table {
            name: format!("{schema}.{name}"),
            relation: Relation {
                oid,
                schema,
                name,
                identity: ReplicaIdentity::Default,
                columns,
            },
            key,
        });
    }
    Ok(tables)
}

/// One chunk: rows as text (`None` for NULL), and the key after its last row.
pub struct Chunk {
    pub table: usize,
    pub rows: Vec<Vec<Option<String>>>,
    pub last: Option<Vec<String>>,
}

impl Snapshot {
    /// The next chunk, or `None` once every table has been read.
    pub async fn next(
        &mut self,
        sql: &tokio_postgres::Client,
    ) -> Result<Option<Chunk>, ConnectorError> {
        while let Some(table) = self.tables.get(self.index) {
            let rel = &table.relation;
            let from = format!("{}.{}", quote_ident(&rel.schema), quote_ident(&rel.name));
            let columns: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let (order, after) = if table.key.is_empty() {
                let after = self
                    .after
                    .as_ref()
                    .and_then(|a| a.first())
                    .map(|t| format!("WHERE ctid > {}::tid", literal(t)));
                ("ctid".to_owned(), after)
            } else {
                let key: Vec<String> = table.key.iter().map(|k| quote_ident(k)).collect();
                let after = self.after.as_ref().map(|values| {
                    let values: Vec<String> = values.iter().map(|v| literal(v)).collect();
                    format!("WHERE ({}) > ({})", key.join(", "), values.join(", "))
                });
                (key.join(", "), after)
            };
            // Every column as text (the simple query protocol's format), then the key.
            let query = format!(
                "SELECT {}, ctid::text FROM {from} {} ORDER BY {order} LIMIT {}",
                columns.join(", "),
                after.unwrap_or_default(),
                self.chunk
            );
            let messages = sql
                .simple_query(&query)
                .await
                .map_err(|e| crate::retriable(&format!("reading {}", table.name), e))?;
            let mut rows = Vec::new();
            for m in messages {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                    let values: Vec<Option<String>> = (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect();
                    rows.push(values);
                }
            }
            let Some(last_row) = rows.last() else {
                self.index += 1;
                self.after = None;
                continue;
            };
            let positions: HashMap<&str, usize> = rel
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect();
            let last: Vec<String> = if table.key.is_empty() {
                vec![last_row.last().cloned().flatten().unwrap_or_default()]
            } else {
                table
                    .key
                    .iter()
                    .map(|k| {
                        positions
                            .get(k.as_str())
                            .and_then(|i| last_row.get(*i).cloned().flatten())
                            .unwrap_or_default()
                    })
                    .collect()
            };
            let table_index = self.index;
            if rows.len() < self.chunk {
                self.index += 1;
                self.after = None;
            } else {
                self.after = Some(last.clone());
            }
            // The CTID column is not part of the row.
            for r in &mut rows {
                r.pop();
            }
            return Ok(Some(Chunk {
                table: table_index,
                rows,
                last: Some(last),
            }));
        }
        Ok(None)
    }
}
