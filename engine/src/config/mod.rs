//! Configuration: the worker's properties file (Kafka Connect's keys), a connector's
//! common keys (converters, transforms, errors, exactly-once), and the `.properties`
//! reader both come from.

pub mod connector;
pub mod properties;
pub mod worker;
