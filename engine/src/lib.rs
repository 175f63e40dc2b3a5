//! `sluice-engine` is Sluice's runtime, in the place Kafka Connect's `connect-runtime`
//! holds: it reads the worker's configuration (Kafka Connect's keys), talks to Kafka with
//! librdkafka off the async threads, serves the Kafka Connect compatible REST API with
//! actix-web, and exports Prometheus metrics. On these pieces stand the supervised task
//! actors, the partition router, the exactly-once source path, and the sink runtime
//! (consumer groups, Kafka -> Kafka transactions).

pub mod config_store;
pub mod connector_config;
pub mod convert;
pub mod errors;
pub mod kafka;
mod offset_reader;
pub mod offset_store;
pub mod partitioner;
pub mod producer;
pub mod properties;
pub mod registry;
pub mod replicator;
pub mod rest;
pub mod router;
mod sink_commits;
pub mod sink_task;
pub mod source_task;
mod source_txn;
pub mod status_store;
pub mod supervisor;
pub mod task_actor;
pub mod task_health;
pub mod telemetry;
pub mod transforms;
pub mod worker;
pub mod worker_config;
