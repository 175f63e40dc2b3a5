//! PostgreSQL change data capture, in the making (not registered as a connector yet): the
//! pgoutput decoder ([`pgoutput`]) and the replication session ([`replication`]: slot,
//! stream from a stored position, confirmation of durable positions only). The source
//! task, the snapshot and Debezium's envelope build on these.

pub mod pgoutput;
pub mod replication;
