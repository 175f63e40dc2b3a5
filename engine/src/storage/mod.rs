//! The worker's state in Kafka's compacted topics, as Kafka Connect keeps it: connector
//! configs (`config.storage.topic`), source offsets (`offset.storage.topic`, read by one
//! tailing reader per worker) and statuses (`status.storage.topic`).

pub mod configs;
pub(crate) mod offset_reader;
pub mod offsets;
pub mod status;
pub mod status_view;
