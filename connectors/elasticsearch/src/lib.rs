//! The Elasticsearch / OpenSearch sink: writes records as documents with the bulk API, into
//! the index named after the topic, with ids that make replays harmless
//! (`topic+partition+offset`, or the key with the offset as external version). Its keys and
//! class names are Confluent's, so the seed's REST call works verbatim.

pub mod config;
pub mod sink;

pub use sink::{ElasticsearchSink, ElasticsearchSinkTask};

/// The class names the sink answers to.
pub const ALIASES: &[&str] = &[
    "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
    "ElasticsearchSinkConnector",
    "io.sluice.connect.elasticsearch.ElasticsearchSinkConnector",
];
