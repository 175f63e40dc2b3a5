//! Debezium's transaction metadata (`provide.transaction.metadata=true`): a BEGIN and an END
//! record per PostgreSQL transaction on `<topic.prefix>.<topic.transaction>`, and a
//! `transaction` block (`id`, `total_order`, `data_collection_order`) in each change event.
//!
//! As Debezium's PostgreSQL connector: the id is `<xid>:<lsn>` with the LSN of the record
//! at hand (the change's own for an event, the first change's for BEGIN, the commit's end
//! for END), so only the xid part is common to a transaction; both orders count from 1 and
//! restart with each transaction; END lists the tables' counts (`schema.table`) in the
//! order Java's `HashMap` iterates them, which is what Debezium writes; `ts_ms` is the
//! commit time. Tombstones are not counted.

use std::sync::{Arc, OnceLock};

use sluice_proto::{Schema, SchemaType, SourcePartition, SourceRecord, Value};

use crate::java::java_hashmap_order;
use crate::pgoutput::Lsn;

/// The counts of one transaction.
#[derive(Debug, Default)]
pub struct Counts {
    total: i64,
    /// Per table, in first-seen order.
    tables: Vec<(String, i64)>,
}

impl Counts {
    /// Counts one event of `table`; the event's `transaction` block.
    pub fn event(&mut self, xid: u32, lsn: Lsn, table: &str) -> Value {
        self.total += 1;
        let order = match self.tables.iter_mut().find(|(t, _)| t == table) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.tables.push((table.to_owned(), 1));
                1
            }
        };
        Value::Struct(vec![
            ("id".into(), Value::String(id(xid, lsn))),
            ("total_order".into(), Value::Int64(self.total)),
            ("data_collection_order".into(), Value::Int64(order)),
        ])
    }
}

fn id(xid: u32, lsn: Lsn) -> String {
    format!("{xid}:{}", lsn.0)
}

/// The key schema of BEGIN/END records.
fn key_schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut s = Schema::structure()
                .named("io.debezium.connector.common.TransactionMetadataKey")
                .field("id", Schema::of(SchemaType::String));
            s.version = Some(1);
            Arc::new(s)
        })
        .clone()
}

/// The value schema of BEGIN/END records.
fn value_schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut collection = Schema::structure()
                .optional()
                .named("event.collection")
                .field("data_collection", Schema::of(SchemaType::String))
                .field("event_count", Schema::of(SchemaType::Int64));
            collection.version = Some(1);
            let mut s = Schema::structure()
                .named("io.debezium.connector.common.TransactionMetadataValue")
                .field("status", Schema::of(SchemaType::String))
                .field("id", Schema::of(SchemaType::String))
                .field("event_count", Schema::of(SchemaType::Int64).optional())
                .field("data_collections", Schema::array(collection).optional())
                .field("ts_ms", Schema::of(SchemaType::Int64));
            s.version = Some(1);
            Arc::new(s)
        })
        .clone()
}

/// Where BEGIN and END records go, and what they carry.
pub struct Boundary<'a> {
    pub topic: &'a str,
    pub partition: &'a SourcePartition,
    pub xid: u32,
    pub commit_millis: i64,
}

impl Boundary<'_> {
    fn record(&self, id: String, value: Vec<(String, Value)>) -> SourceRecord {
        SourceRecord {
            source_partition: self.partition.clone(),
            source_offset: sluice_proto::SourceOffset(serde_json::Map::new()),
            topic: self.topic.to_owned(),
            partition: None,
            key_schema: Some(key_schema()),
            key: Value::Struct(vec![("id".into(), Value::String(id))]),
            value_schema: Some(value_schema()),
            value: Value::Struct(value),
            timestamp: Some(self.commit_millis),
            headers: Vec::new(),
        }
    }

    /// The BEGIN record (`lsn`: the transaction's first change, or its commit's end when
    /// it has none).
    pub fn begin(&self, lsn: Lsn) -> SourceRecord {
        let id = id(self.xid, lsn);
        self.record(
            id.clone(),
            vec![
                ("status".into(), Value::String("BEGIN".into())),
                ("id".into(), Value::String(id)),
                ("event_count".into(), Value::Null),
                ("data_collections".into(), Value::Null),
                ("ts_ms".into(), Value::Int64(self.commit_millis)),
            ],
        )
    }

    /// The END record, with the transaction's counts.
    pub fn end(&self, end_lsn: Lsn, counts: Counts) -> SourceRecord {
        let id = id(self.xid, end_lsn);
        let collections = java_hashmap_order(counts.tables)
            .into_iter()
            .map(|(table, n)| {
                Value::Struct(vec![
                    ("data_collection".into(), Value::String(table)),
                    ("event_count".into(), Value::Int64(n)),
                ])
            })
            .collect();
        self.record(
            id.clone(),
            vec![
                ("status".into(), Value::String("END".into())),
                ("id".into(), Value::String(id)),
                ("event_count".into(), Value::Int64(counts.total)),
                ("data_collections".into(), Value::Array(collections)),
                ("ts_ms".into(), Value::Int64(self.commit_millis)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_count_from_one_per_transaction_and_per_table() {
        let mut c = Counts::default();
        let order = |v: Value| match v {
            Value::Struct(f) => (f[0].1.clone(), f[1].1.clone(), f[2].1.clone()),
            _ => panic!("not a struct"),
        };
        assert_eq!(
            order(c.event(571, Lsn(100), "public.a")),
            (
                Value::String("571:100".into()),
                Value::Int64(1),
                Value::Int64(1)
            )
        );
        c.event(571, Lsn(120), "public.b");
        assert_eq!(order(c.event(571, Lsn(140), "public.a")).2, Value::Int64(2));
        assert_eq!(c.total, 3);
    }
}
