//! The herder: what runs connectors for the REST API. Today one worker is the cluster
//! ([`worker`]).

pub mod worker;
