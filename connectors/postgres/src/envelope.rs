//! Debezium's change event for a PostgreSQL row: the key struct of the key columns, and
//! the envelope value (`before`, `after`, `source`, `transaction`, `op`, `ts_ms`, `ts_us`,
//! `ts_ns`) with Debezium's schema names, so consumers and transforms written for
//! Debezium's PostgreSQL connector read Sluice's events unchanged.

use std::sync::Arc;

use sluice_proto::data::{Schema, SchemaType, Value};

use crate::pgoutput::{Datum, Lsn, Relation};
use crate::types::{Mapping, TypeError};

/// The source block's schema name.
pub const SOURCE_SCHEMA: &str = "io.debezium.connector.postgresql.Source";
/// The values `source.snapshot` may take (Debezium's `SnapshotRecord`).
const SNAPSHOT_VALUES: &str =
    "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental";

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The schemas of one table's events, built when its Relation message arrives.
#[derive(Debug, Clone)]
pub struct TableSchemas {
    /// `<prefix>.<schema>.<table>`: the topic, and the prefix of the schema names.
    pub topic: String,
    pub schema: String,
    pub table: String,
    /// The key struct; `None` when the table has no key columns (events have no key).
    pub key: Option<Arc<Schema>>,
    pub envelope: Arc<Schema>,
    row: Arc<Schema>,
    /// For each field of the row: the index of its column in the Relation's tuples.
    fields: Vec<usize>,
    key_fields: Vec<usize>,
    columns: Relation,
    /// Column index -> the allowed labels of its enum type (`io.debezium.data.Enum`).
    enums: std::collections::BTreeMap<usize, String>,
}

/// How the source block of one event reads.
#[derive(Debug, Clone)]
pub struct SourceInfo<'a> {
    pub connector_name: &'a str,
    pub database: &'a str,
    pub xid: u32,
    /// The change's position (for a snapshot row, the snapshot's consistent point).
    pub lsn: Lsn,
    /// `source.snapshot`: `"false"` for streamed changes, `"true"` for snapshot rows.
    pub snapshot: &'a str,
    /// The previous transaction's commit LSN, for `sequence`.
    pub last_commit: Option<Lsn>,
    /// The commit time, microseconds since 1970-01-01.
    pub commit_micros: i64,
}

fn source_schema() -> Schema {
    let opt = |ty| Schema::of(ty).optional();
    let mut snapshot = Schema::of(SchemaType::String)
        .optional()
        .named("io.debezium.data.Enum");
    snapshot.version = Some(1);
    snapshot
        .parameters
        .insert("allowed".into(), SNAPSHOT_VALUES.into());
    snapshot.default = Some(Value::String("false".into()));
    let mut s = Schema::structure()
        .named(SOURCE_SCHEMA)
        .field("version", Schema::of(SchemaType::String))
        .field("connector", Schema::of(SchemaType::String))
        .field("name", Schema::of(SchemaType::String))
        .field("ts_ms", Schema::of(SchemaType::Int64))
        .field("snapshot", snapshot)
        .field("db", Schema::of(SchemaType::String))
        .field("sequence", opt(SchemaType::String))
        .field("ts_us", opt(SchemaType::Int64))
        .field("ts_ns", opt(SchemaType::Int64))
        .field("schema", Schema::of(SchemaType::String))
        .field("table", Schema::of(SchemaType::String))
        .field("txId", opt(SchemaType::Int64))
        .field("lsn", opt(SchemaType::Int64))
        .field("xmin", opt(SchemaType::Int64));
    s.version = Some(1);
    s
}

fn transaction_schema() -> Schema {
    let mut t = Schema::structure()
        .optional()
        .named("event.block")
        .field("id", Schema::of(SchemaType::String))
        .field("total_order", Schema::of(SchemaType::Int64))
        .field("data_collection_order", Schema::of(SchemaType::Int64));
    t.version = Some(1);
    t
}

impl TableSchemas {
    /// The schemas of `relation`'s events under `prefix`, with the columns `include`
    /// lets through (key columns always) and whose types `mapping` covers; the columns
    /// left out are returned by name.
    pub fn new(
        prefix: &str,
        relation: &Relation,
        mapping: &Mapping,
        enums: &std::collections::HashMap<u32, String>,
        include: impl Fn(&str) -> bool,
    ) -> (TableSchemas, Vec<String>) {
        let mut enum_columns = std::collections::BTreeMap::new();
        let base = format!("{prefix}.{}.{}", relation.schema, relation.name);
        let mut row = Schema::structure()
            .named(format!("{base}.Value"))
            .optional();
        let mut key = Schema::structure().named(format!("{base}.Key"));
        let mut fields = Vec::new();
        let mut key_fields = Vec::new();
        let mut left_out = Vec::new();
        for (i, column) in relation.columns.iter().enumerate() {
            let schema = match enums.get(&column.type_oid) {
                Some(allowed) => {
                    enum_columns.insert(i, allowed.clone());
                    let mut e = Schema::of(SchemaType::String).named("io.debezium.data.Enum");
                    e.version = Some(1);
                    e.parameters.insert("allowed".into(), allowed.clone());
                    Some(if column.key { e } else { e.optional() })
                }
                None => mapping.schema(column),
            };
            let Some(schema) = schema else {
                left_out.push(column.name.clone());
                continue;
            };
            if column.key {
                key = key.field(column.name.clone(), schema.clone());
                key_fields.push(i);
            } else if !include(&column.name) {
                left_out.push(column.name.clone());
                continue;
            }
            row = row.field(column.name.clone(), schema);
            fields.push(i);
        }
        let row = Arc::new(row);
        let opt = |ty| Schema::of(ty).optional();
        let mut envelope = Schema::structure()
            .named(format!("{base}.Envelope"))
            .field("before", (*row).clone())
            .field("after", (*row).clone())
            .field("source", source_schema())
            .field("transaction", transaction_schema())
            .field("op", Schema::of(SchemaType::String))
            .field("ts_ms", opt(SchemaType::Int64))
            .field("ts_us", opt(SchemaType::Int64))
            .field("ts_ns", opt(SchemaType::Int64));
        envelope.version = Some(2);
        let schemas = TableSchemas {
            topic: base,
            schema: relation.schema.clone(),
            table: relation.name.clone(),
            key: (!key_fields.is_empty()).then(|| Arc::new(key)),
            envelope: Arc::new(envelope),
            row,
            fields,
            key_fields,
            columns: relation.clone(),
            enums: enum_columns,
        };
        (schemas, left_out)
    }

    fn convert(
        &self,
        mapping: &Mapping,
        placeholder: &str,
        index: usize,
        datum: Option<&Datum>,
    ) -> Result<Value, TypeError> {
        let Some(column) = self.columns.columns.get(index) else {
            return Ok(Value::Null);
        };
        Ok(match datum {
            None | Some(Datum::Null) => Value::Null,
            Some(Datum::Text(text)) if self.enums.contains_key(&index) => {
                Value::String(String::from_utf8_lossy(text).into_owned())
            }
            Some(Datum::Text(text)) => mapping.value(column, text)?,
            // Not sent because unchanged: Debezium's placeholder where the type can hold it.
            Some(Datum::UnchangedToast) => match mapping.schema(column).map(|s| s.ty) {
                Some(SchemaType::String) => Value::String(placeholder.to_owned()),
                Some(SchemaType::Bytes) => Value::Bytes(placeholder.as_bytes().to_vec()),
                _ => Value::Null,
            },
        })
    }

    /// The row struct of `tuple`.
    pub fn row(
        &self,
        mapping: &Mapping,
        placeholder: &str,
        tuple: &[Datum],
    ) -> Result<Value, TypeError> {
        let mut out = Vec::with_capacity(self.fields.len());
        for (field, index) in self.row.fields.iter().zip(&self.fields) {
            out.push((
                field.name.clone(),
                self.convert(mapping, placeholder, *index, tuple.get(*index))?,
            ));
        }
        Ok(Value::Struct(out))
    }

    /// The key struct of `tuple` (`Null` for a table without key columns).
    pub fn key(&self, mapping: &Mapping, tuple: &[Datum]) -> Result<Value, TypeError> {
        let Some(schema) = &self.key else {
            return Ok(Value::Null);
        };
        let mut out = Vec::with_capacity(self.key_fields.len());
        for (field, index) in schema.fields.iter().zip(&self.key_fields) {
            out.push((
                field.name.clone(),
                self.convert(mapping, "", *index, tuple.get(*index))?,
            ));
        }
        Ok(Value::Struct(out))
    }

    /// The envelope of one change.
    pub fn envelope(
        &self,
        op: char,
        before: Value,
        after: Value,
        source: &SourceInfo<'_>,
        now_micros: i64,
    ) -> Value {
        let sequence = format!(
            "[{},\"{}\"]",
            source
                .last_commit
                .map_or_else(|| "null".to_owned(), |l| format!("\"{}\"", l.0)),
            source.lsn.0
        );
        let commit = source.commit_micros;
        let source_block = Value::Struct(vec![
            (
                "version".into(),
                Value::String(env!("CARGO_PKG_VERSION").into()),
            ),
            ("connector".into(), Value::String("postgresql".into())),
            ("name".into(), Value::String(source.connector_name.into())),
            ("ts_ms".into(), Value::Int64(commit.div_euclid(1000))),
            ("snapshot".into(), Value::String(source.snapshot.into())),
            ("db".into(), Value::String(source.database.into())),
            ("sequence".into(), Value::String(sequence)),
            ("ts_us".into(), Value::Int64(commit)),
            ("ts_ns".into(), Value::Int64(commit.saturating_mul(1000))),
            ("schema".into(), Value::String(self.schema.clone())),
            ("table".into(), Value::String(self.table.clone())),
            ("txId".into(), Value::Int64(i64::from(source.xid))),
            (
                "lsn".into(),
                Value::Int64(i64::try_from(source.lsn.0).unwrap_or(i64::MAX)),
            ),
            ("xmin".into(), Value::Null),
        ]);
        Value::Struct(vec![
            ("before".into(), before),
            ("after".into(), after),
            ("source".into(), source_block),
            ("transaction".into(), Value::Null),
            ("op".into(), Value::String(op.to_string())),
            ("ts_ms".into(), Value::Int64(now_micros.div_euclid(1000))),
            ("ts_us".into(), Value::Int64(now_micros)),
            (
                "ts_ns".into(),
                Value::Int64(now_micros.saturating_mul(1000)),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::{Column, ReplicaIdentity};
    use crate::types::{DecimalMode, Extensions, HstoreMode, TimeMode};

    fn relation() -> Relation {
        let column = |name: &str, key, type_oid| Column {
            name: name.into(),
            key,
            type_oid,
            type_modifier: -1,
        };
        Relation {
            oid: 1,
            schema: "public".into(),
            name: "orders".into(),
            identity: ReplicaIdentity::Default,
            columns: vec![
                column("id", true, 23),
                column("note", false, 25),
                column("secret", false, 25),
                column("shape", false, 603),
            ],
        }
    }

    const MAPPING: Mapping = Mapping {
        decimal: DecimalMode::Precise,
        time: TimeMode::Adaptive,
        unknown: false,
        hstore: HstoreMode::Json,
        extensions: Extensions::NONE,
    };

    #[test]
    fn an_enum_column_is_debeziums_enum_with_its_labels() -> Result<(), TypeError> {
        let mut rel = relation();
        rel.columns[3].type_oid = 16_500;
        let enums = std::collections::HashMap::from([(16_500, "sad,ok,happy".to_owned())]);
        let (t, left_out) = TableSchemas::new("shop", &rel, &MAPPING, &enums, |_| true);
        assert!(left_out.is_empty(), "{left_out:?}");
        let shape = t
            .envelope
            .field_named("after")
            .and_then(|a| a.schema.field_named("shape"))
            .map(|f| {
                (
                    f.schema.name.clone(),
                    f.schema.parameters.get("allowed").cloned(),
                )
            });
        assert_eq!(
            shape,
            Some((
                Some("io.debezium.data.Enum".into()),
                Some("sad,ok,happy".into())
            ))
        );
        let tuple = vec![
            Datum::Text(b"1".to_vec()),
            Datum::Null,
            Datum::Null,
            Datum::Text(b"ok".to_vec()),
        ];
        let row = t.row(&MAPPING, "", &tuple)?;
        assert_eq!(row.get("shape"), Some(&Value::String("ok".into())));
        Ok(())
    }

    #[test]
    fn an_update_reads_as_debeziums_envelope() -> Result<(), TypeError> {
        let (t, left_out) = TableSchemas::new(
            "shop",
            &relation(),
            &MAPPING,
            &std::collections::HashMap::new(),
            |c| c != "secret",
        );
        assert_eq!(left_out, ["secret", "shape"]);
        assert_eq!(t.topic, "shop.public.orders");
        assert_eq!(
            t.envelope.name.as_deref(),
            Some("shop.public.orders.Envelope")
        );
        assert_eq!(
            t.key.as_ref().and_then(|k| k.name.clone()),
            Some("shop.public.orders.Key".into())
        );
        let tuple = vec![
            Datum::Text(b"7".to_vec()),
            Datum::UnchangedToast,
            Datum::Text(b"s".to_vec()),
            Datum::Null,
        ];
        let after = t.row(&MAPPING, "__debezium_unavailable_value", &tuple)?;
        assert_eq!(
            after,
            Value::Struct(vec![
                ("id".into(), Value::Int32(7)),
                (
                    "note".into(),
                    Value::String("__debezium_unavailable_value".into())
                ),
            ])
        );
        assert_eq!(
            t.key(&MAPPING, &tuple)?,
            Value::Struct(vec![("id".into(), Value::Int32(7))])
        );
        let source = SourceInfo {
            connector_name: "shop",
            database: "shopdb",
            xid: 42,
            lsn: Lsn(100),
            snapshot: "false",
            last_commit: Some(Lsn(90)),
            commit_micros: 1_700_000_000_123_456,
        };
        let value = t.envelope('u', Value::Null, after, &source, 1_700_000_001_000_000);
        assert_eq!(value.get("op"), Some(&Value::String("u".into())));
        let block = value.get("source").cloned().unwrap_or(Value::Null);
        assert_eq!(block.get("ts_ms"), Some(&Value::Int64(1_700_000_000_123)));
        assert_eq!(
            block.get("sequence"),
            Some(&Value::String("[\"90\",\"100\"]".into()))
        );
        assert_eq!(block.get("txId"), Some(&Value::Int64(42)));
        value.validate(&t.envelope).map_err(|e| TypeError {
            column: "-".into(),
            type_name: "envelope",
            problem: e.to_string(),
            text: String::new(),
        })?;
        Ok(())
    }
}
