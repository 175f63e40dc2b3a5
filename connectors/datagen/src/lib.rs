//! A data generator source for tests and benchmarks, in the place of Confluent's datagen
//! connector: each task writes numbered records to `kafka.topic`, a struct value of `task`,
//! `seq` (from 0, per task), `ts` and a random `payload` padding the value to
//! `datagen.record.bytes`, keyed `"<task>-<seq>"`. Records are spaced by a rate
//! (`datagen.records.per.second`) or, as in Confluent's, by random gaps below
//! `max.interval`; `iterations` bounds each task. A task's source partition is `{"task": N}`
//! and its offset `{"seq": n}`, so a restarted task resumes right after its last committed
//! record, which makes it exactly-once capable, and `iterations` counts across restarts.
//! Confluent's Avro schema keys (`quickstart`, `schema.*`) are refused until Sluice has a
//! schema registry.

pub mod config;
pub mod source;

pub use source::{DatagenSource, DatagenSourceTask};

/// The class names this source answers to: Sluice's own first, as for Sluice's other
/// connectors that are not drop-in replacements (its records are not Confluent's
/// Avro-generated data), then the name Kafka Connect users know.
pub const ALIASES: &[&str] = &[
    "io.sluice.connect.datagen.DatagenSourceConnector",
    "DatagenSourceConnector",
    "io.confluent.kafka.connect.datagen.DatagenConnector",
    "DatagenConnector",
];
