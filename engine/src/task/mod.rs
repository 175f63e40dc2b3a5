//! Connector tasks: each runs as a supervised actix actor ([`actor`], [`supervisor`]);
//! source tasks poll and commit records with their offsets ([`source`], with the open
//! transaction's recovery in [`source_txn`]), sink tasks consume, deliver and commit
//! ([`sink`]); [`errors`] is error tolerance, [`dead_letter`] the dead-letter queue's records, [`health`] what a
//! retrying task reports.

pub mod actor;
pub(crate) mod dead_letter;
pub mod errors;
pub mod health;
pub mod sink;
pub mod source;
pub(crate) mod source_txn;
pub mod supervisor;
