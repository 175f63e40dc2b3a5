//! File connectors with the configuration of Kafka Connect's `FileStreamSource`
//! (`file`, `topic`, `batch.size`): each line of a file becomes a record with a string
//! value. The source's offset is the byte position after the last line it returned, so a
//! restarted task re-reads nothing and skips nothing, which makes it exactly-once capable.

pub mod config;
pub mod source;

pub use source::{FileSource, FileSourceTask};

/// The class names Kafka Connect users know this source by.
pub const SOURCE_ALIASES: &[&str] = &[
    "org.apache.kafka.connect.file.FileStreamSourceConnector",
    "FileStreamSourceConnector",
    "FileStreamSource",
    "io.sluice.connect.file.FileSourceConnector",
];
