//! `sluice-engine` is Sluice's runtime, in the place Kafka Connect's `connect-runtime`
//! holds: it reads the worker's configuration (Kafka Connect's keys), talks to Kafka with
//! librdkafka off the async threads, serves the Kafka Connect compatible REST API with
//! actix-web, and exports Prometheus metrics. On these pieces stand the supervised task
//! actors, the partition router, the exactly-once source path, and the sink runtime
//! (consumer groups, Kafka -> Kafka transactions).

pub mod config;
pub mod convert;
pub mod herder;
pub mod kafka;
pub mod registry;
pub mod replicator;
pub mod rest;
pub mod storage;
pub mod task;
pub mod telemetry;
pub mod transforms;
