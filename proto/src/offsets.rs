//! Source partitions and offsets, and their persisted form in the offsets topic.
//!
//! Kafka Connect stores a source task's position as a record in a compacted topic: key
//! `["<connector>",{<source partition>}]`, value `{<source offset>}`, both JSON without a
//! schema envelope; a `null` value erases the offset. Sluice writes the same bytes so tools
//! that read Kafka Connect's offsets read Sluice's. Compaction keeps the last record per key,
//! so the key bytes must be the same every time for the same partition: maps are written
//! with their keys sorted.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

/// Where a source reads from (a file, a table, a listener), as a JSON object.
#[derive(Debug, Clone)]
pub struct SourcePartition {
    map: Map<String, Value>,
    canonical: String,
}

/// How far a source has read in its partition (a byte position, an LSN), as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOffset(pub Map<String, Value>);

impl SourcePartition {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        // serde_json's Map (without `preserve_order`) is sorted, so this text is canonical.
        let canonical = Value::Object(map.clone()).to_string();
        SourcePartition { map, canonical }
    }

    /// A partition of one string entry, e.g. `{"filename": "/var/log/app.log"}`.
    pub fn single(key: &str, value: impl Into<Value>) -> Self {
        let mut map = Map::new();
        map.insert(key.to_owned(), value.into());
        SourcePartition::new(map)
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }
}

// Identity is the canonical text: serde_json::Value has no Ord or Hash.
impl PartialEq for SourcePartition {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}
impl Eq for SourcePartition {}
impl PartialOrd for SourcePartition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SourcePartition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.canonical.cmp(&other.canonical)
    }
}
impl Hash for SourcePartition {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl SourceOffset {
    /// An offset of one entry, e.g. `{"position": 1024}`.
    pub fn single(key: &str, value: impl Into<Value>) -> Self {
        let mut map = Map::new();
        map.insert(key.to_owned(), value.into());
        SourceOffset(map)
    }

    /// An entry of the offset.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

/// A record of the offsets topic could not be read; says which part and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetFormatError {
    /// Not JSON at all (`serde_json` gives line and column).
    #[error("offsets topic {part} is not JSON: {message}")]
    NotJson {
        /// `key` or `value`.
        part: &'static str,
        /// The parser's message, with position.
        message: String,
    },
    /// JSON of the wrong shape.
    #[error("offsets topic {part} has the wrong shape: expected {expected}")]
    Shape {
        /// `key` or `value`.
        part: &'static str,
        /// What Kafka Connect's format requires there.
        expected: &'static str,
    },
}

/// The key of an offsets-topic record: which connector, which source partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetKey {
    /// The connector's name.
    pub connector: String,
    /// The source partition.
    pub partition: SourcePartition,
}

impl OffsetKey {
    /// `["<connector>",{<partition>}]`, compact JSON with sorted keys.
    pub fn encode(&self) -> Vec<u8> {
        let key = Value::Array(vec![
            Value::String(self.connector.clone()),
            Value::Object(self.partition.map.clone()),
        ]);
        key.to_string().into_bytes()
    }

    /// Reads a key written by Sluice or Kafka Connect.
    pub fn decode(bytes: &[u8]) -> Result<OffsetKey, OffsetFormatError> {
        const EXPECTED: &str = "[\"<connector>\", {<source partition>}]";
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| OffsetFormatError::NotJson {
                part: "key",
                message: e.to_string(),
            })?;
        let shape = || OffsetFormatError::Shape {
            part: "key",
            expected: EXPECTED,
        };
        let Value::Array(mut items) = value else {
            return Err(shape());
        };
        if items.len() != 2 {
            return Err(shape());
        }
        let partition = items.pop().ok_or_else(shape)?;
        let connector = items.pop().ok_or_else(shape)?;
        match (connector, partition) {
            (Value::String(connector), Value::Object(map)) => Ok(OffsetKey {
                connector,
                partition: SourcePartition::new(map),
            }),
            _ => Err(shape()),
        }
    }
}

/// Encodes an offsets-topic value; `None` (a tombstone) erases the partition's offset.
pub fn encode_offset(offset: Option<&SourceOffset>) -> Option<Vec<u8>> {
    offset.map(|o| Value::Object(o.0.clone()).to_string().into_bytes())
}

/// Decodes an offsets-topic value; a missing payload is a tombstone.
pub fn decode_offset(bytes: Option<&[u8]>) -> Result<Option<SourceOffset>, OffsetFormatError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(Some(SourceOffset(map))),
        Ok(Value::Null) => Ok(None),
        Ok(_) => Err(OffsetFormatError::Shape {
            part: "value",
            expected: "a JSON object or null",
        }),
        Err(e) => Err(OffsetFormatError::NotJson {
            part: "value",
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_bytes_match_kafka_connects_and_are_canonical() {
        let key = OffsetKey {
            connector: "local-file-source".into(),
            partition: SourcePartition::single("filename", "/tmp/test.txt"),
        };
        assert_eq!(
            String::from_utf8(key.encode()).unwrap(),
            r#"["local-file-source",{"filename":"/tmp/test.txt"}]"#
        );

        // Insertion order must not change the bytes, or compaction keeps two offsets.
        let mut a = Map::new();
        a.insert("table".into(), json!("t"));
        a.insert("schema".into(), json!("s"));
        let mut b = Map::new();
        b.insert("schema".into(), json!("s"));
        b.insert("table".into(), json!("t"));
        let ka = OffsetKey {
            connector: "c".into(),
            partition: SourcePartition::new(a),
        };
        let kb = OffsetKey {
            connector: "c".into(),
            partition: SourcePartition::new(b),
        };
        assert_eq!(ka.encode(), kb.encode());
        assert_eq!(ka, kb);
    }

    #[test]
    fn keys_round_trip_including_kafka_connects_spacing() {
        let decoded =
            OffsetKey::decode(br#"[ "pg-cdc" , { "server" : "db1", "slot": "s" } ]"#).unwrap();
        assert_eq!(decoded.connector, "pg-cdc");
        assert_eq!(decoded.partition.as_map()["server"], json!("db1"));
        assert_eq!(OffsetKey::decode(&decoded.encode()).unwrap(), decoded);
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        let e = OffsetKey::decode(b"[\"c\", {\"a\": }]").unwrap_err();
        assert!(
            matches!(e, OffsetFormatError::NotJson { part: "key", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("column"), "{e}");
        let e = OffsetKey::decode(br#"{"connector":"c"}"#).unwrap_err();
        assert!(matches!(e, OffsetFormatError::Shape { part: "key", .. }));
        assert!(OffsetKey::decode(br#"["c", "not an object"]"#).is_err());
    }

    #[test]
    fn values_and_tombstones() {
        let offset = SourceOffset::single("position", 1024);
        let bytes = encode_offset(Some(&offset)).unwrap();
        assert_eq!(bytes, br#"{"position":1024}"#);
        assert_eq!(decode_offset(Some(&bytes)).unwrap(), Some(offset));
        assert_eq!(decode_offset(None).unwrap(), None);
        assert_eq!(decode_offset(Some(b"null")).unwrap(), None);
        assert!(decode_offset(Some(b"[1]")).is_err());
        assert_eq!(encode_offset(None), None);
    }
}
