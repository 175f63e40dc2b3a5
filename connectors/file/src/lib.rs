//! File connectors with the configuration of Kafka Connect's `FileStreamSource`
//! (`file`, `topic`, `batch.size`) and `FileStreamSink` (`file`, `topics`). The source turns
//! each line of a file into a record with a string value; its offset is the byte position
//! after the last line it returned, so a restarted task re-reads nothing and skips nothing,
//! which makes it exactly-once capable. The sink appends each record's value as a line and
//! syncs the file before its offsets are committed.

pub mod config;
pub mod sink;
pub mod source;

pub use sink::{FileSink, FileSinkTask};
pub use source::{FileSource, FileSourceTask};

/// The class names Kafka Connect users know this source by.
pub const SOURCE_ALIASES: &[&str] = &[
    "org.apache.kafka.connect.file.FileStreamSourceConnector",
    "FileStreamSourceConnector",
    "FileStreamSource",
    "io.sluice.connect.file.FileSourceConnector",
];

/// The class names Kafka Connect users know the sink by.
pub const SINK_ALIASES: &[&str] = &[
    "org.apache.kafka.connect.file.FileStreamSinkConnector",
    "FileStreamSinkConnector",
    "FileStreamSink",
    "io.sluice.connect.file.FileSinkConnector",
];
