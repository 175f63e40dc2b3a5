//! The herder: what runs connectors for the REST API, in the place of Kafka Connect's
//! `Herder` interface. The REST layer talks to [`Herder`] alone, through the shared types
//! below; [`worker::Worker`] is the single-worker implementation (one worker is the
//! cluster), and a multi-worker one goes beside it. [`plugins`] is the catalogue of
//! connector plugins and their config validation, the same for every implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use crate::task::supervisor::{TargetState, TaskState};
pub use crate::telemetry::{LoggerLevel, LoggersError};
pub use plugins::{ConfigInfos, ConfigKeyInfo, PluginInfo};
pub use sluice_proto::{SourceOffset, SourcePartition};

pub mod cluster;
mod follow;
mod offsets;
mod plan;
pub mod plugins;
mod standalone;

pub use standalone::Standalone;
pub mod worker;

/// Why a cluster action was refused; the message names the key or resource at fault. A
/// refused action changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HerderError {
    /// The config is invalid.
    #[error("{0}")]
    BadConfig(String),
    /// A connector of that name exists.
    #[error("Connector {0} already exists")]
    Exists(String),
    /// The request needs another connector state (e.g. offsets of a running connector).
    #[error("{0}")]
    WrongState(String),
    /// No connector of that name.
    #[error("Connector {0} not found")]
    NotFound(String),
    /// No plugin of that class name.
    #[error("Unknown plugin {0}")]
    UnknownPlugin(String),
    /// No such task.
    #[error("Task {1} of connector {0} not found")]
    TaskNotFound(String, u32),
    /// An actor did not answer.
    #[error("worker internal error: {0}")]
    Internal(String),
    /// The worker is still starting.
    #[error("Request cannot be completed because the worker is still starting up.")]
    Starting,
    /// Kafka (the config topic) did not take the change; nothing changed, try again.
    #[error("{0} (Kafka is unavailable; nothing was changed, the request can be retried)")]
    Unavailable(String),
    /// The connector's outside system failed the request (a signal could not be written):
    /// the message names what and why; try again once it is back.
    #[error("{0}")]
    External(String),
    /// The cluster cannot take the request right now (a rebalance, no leader known, the
    /// leader changed while it was forwarded); nothing changed, try again.
    #[error(
        "Cannot complete request because of a conflicting operation (e.g. worker rebalance): {0}"
    )]
    Conflict(String),
}

/// The worker's health (KIP-1017).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Still starting.
    Starting,
    /// Started, and everything answers.
    Healthy,
    /// Started, but this did not answer.
    Unhealthy(String),
}

/// A connector as `GET /connectors/{name}` shows it (secrets masked).
#[derive(Debug, Clone)]
pub struct ConnectorInfo {
    /// Its name.
    pub name: String,
    /// Its config, secrets masked.
    pub config: BTreeMap<String, String>,
    /// Its task configs, secrets masked.
    pub task_configs: Vec<BTreeMap<String, String>>,
    /// How many tasks it runs.
    pub tasks: u32,
    /// `source` or `sink`.
    pub kind: &'static str,
    /// What the user asked it to do.
    pub target: TargetState,
}

/// One task's status, with the worker it runs on.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// Task number.
    pub id: u32,
    /// State.
    pub state: TaskState,
    /// The worker running it.
    pub worker_id: String,
    /// The last failure's trace; while RUNNING, what the task is retrying, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A connector's status: its own state and its tasks'.
#[derive(Debug, Clone)]
pub struct ConnectorStatus {
    /// Its name.
    pub name: String,
    /// What the user asked it to do (RUNNING, PAUSED or STOPPED in the REST API).
    pub target: TargetState,
    /// The worker running the connector object.
    pub worker_id: String,
    /// Its tasks (none while STOPPED, KIP-875).
    pub tasks: Vec<TaskInfo>,
    /// `source` or `sink`.
    pub kind: &'static str,
}

/// A change to one key of a connector's config (`PATCH`): a value, or `None` to remove it.
pub type ConfigPatch = BTreeMap<String, Option<String>>;

/// A connector's committed offsets, by source partition (a sink's in Kafka Connect's
/// `{"kafka_topic","kafka_partition"}` -> `{"kafka_offset"}` shape).
pub type Offsets = BTreeMap<SourcePartition, SourceOffset>;

/// Every cluster action the REST API needs. Implementations validate before they act: a
/// refused action returns an error and changes nothing.
#[async_trait::async_trait]
pub trait Herder: Send + Sync {
    /// This worker's id (`host:port`).
    fn worker_id(&self) -> String;

    /// Where a write (a config change, a restart) is served: `Ok(None)` here, `Ok(Some)`
    /// by the worker at that REST URL (the cluster's leader, as Kafka Connect forwards),
    /// `Err` while no leader is known (a rebalance: 409, nothing changed).
    fn route_writes(&self) -> Result<Option<String>, HerderError> {
        Ok(None)
    }

    /// KIP-1017: whether the worker has started and every actor it relies on answers
    /// within `timeout`.
    async fn health(&self, timeout: Duration) -> Health;

    /// Connector names, sorted.
    async fn connectors(&self) -> Result<Vec<String>, HerderError>;

    /// One connector.
    async fn connector_info(&self, name: &str) -> Result<ConnectorInfo, HerderError>;

    /// One connector's status and its tasks'.
    async fn connector_status(&self, name: &str) -> Result<ConnectorStatus, HerderError>;

    /// The connector's config as its tasks get it, secrets included: for calls into the
    /// connector itself, never shown.
    async fn connector_config(&self, name: &str) -> Result<BTreeMap<String, String>, HerderError>;

    /// Hands a signal to a source connector's tasks, through the connector's own durable
    /// channel ([`sluice_proto::SourceConnector::signal`]), from whichever worker takes it.
    async fn signal(&self, name: &str, signal: sluice_proto::Signal) -> Result<(), HerderError> {
        let config = self.connector_config(name).await?;
        let class = config.get("connector.class").cloned().unwrap_or_default();
        let plugin = crate::registry::lookup(&class).ok_or(HerderError::UnknownPlugin(class))?;
        let crate::registry::Kind::Source(source) = plugin.kind else {
            return Err(HerderError::BadConfig(format!(
                "connector {name} is a sink connector: signals are for source connectors"
            )));
        };
        source()
            .signal(&config, &signal)
            .await
            .map_err(|e| match e.kind {
                sluice_proto::ErrorKind::Config | sluice_proto::ErrorKind::Data => {
                    HerderError::BadConfig(e.message)
                }
                sluice_proto::ErrorKind::External => HerderError::External(e.message),
                sluice_proto::ErrorKind::Internal => HerderError::Internal(e.message),
            })?;
        tracing::info!(connector = %name, id = %signal.id, r#type = %signal.kind, "signal handed to the connector");
        Ok(())
    }

    /// Creates a connector from its config (which names it), in state `target`.
    async fn create_connector(
        &self,
        config: BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorInfo, HerderError>;

    /// Replaces a connector's config, or creates the connector; `true` if created. A
    /// secret given as the mask keeps its stored value.
    async fn put_connector_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(bool, ConnectorInfo), HerderError>;

    /// Changes some keys of a connector's config (`None` removes one).
    async fn patch_connector_config(
        &self,
        name: &str,
        patch: ConfigPatch,
    ) -> Result<ConnectorInfo, HerderError>;

    /// Stops a connector's tasks and forgets it. Its offsets stay.
    async fn delete_connector(&self, name: &str) -> Result<(), HerderError>;

    /// Restarts a connector's tasks (all, or only the failed ones); the ones restarted.
    async fn restart_connector(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<u32>, HerderError>;

    /// Restarts one task.
    async fn restart_task(&self, name: &str, task: u32) -> Result<(), HerderError>;

    /// Pauses, resumes or stops a connector.
    async fn set_target_state(&self, name: &str, target: TargetState) -> Result<(), HerderError>;

    /// Topics the connector has used since it started or the last reset (KIP-558).
    async fn topics(&self, name: &str) -> Result<Vec<String>, HerderError>;

    /// Forgets the connector's active topics.
    async fn reset_topics(&self, name: &str) -> Result<(), HerderError>;

    /// The connector's committed offsets (KIP-875).
    async fn offsets(&self, name: &str) -> Result<Offsets, HerderError>;

    /// Alters offsets of a STOPPED connector (`None` removes a partition's offset).
    async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(SourcePartition, Option<SourceOffset>)>,
    ) -> Result<(), HerderError>;

    /// Resets every offset of a STOPPED connector.
    async fn reset_offsets(&self, name: &str) -> Result<(), HerderError> {
        let changes = self
            .offsets(name)
            .await?
            .into_keys()
            .map(|p| (p, None))
            .collect();
        self.alter_offsets(name, changes).await
    }

    /// The connector plugins (and, unless `connectors_only`, the converters).
    fn plugins(&self, connectors_only: bool) -> Vec<PluginInfo> {
        plugins::list(connectors_only)
    }

    /// A plugin's own config keys.
    fn plugin_config(&self, plugin: &str) -> Result<Vec<ConfigKeyInfo>, HerderError> {
        plugins::config(plugin)
    }

    /// Validates a connector config against a plugin (every key the worker checks).
    async fn validate(
        &self,
        plugin: &str,
        config: BTreeMap<String, String>,
    ) -> Result<ConfigInfos, HerderError> {
        let infos = plugins::validate(plugin, &config)?;
        plugins::validate_live(plugin, &config, infos).await
    }

    /// This process's log levels.
    fn loggers(&self) -> &crate::telemetry::Loggers;

    /// Every logger's level (KIP-495).
    fn logger_levels(&self) -> BTreeMap<String, LoggerLevel> {
        self.loggers().all()
    }

    /// One logger's level.
    fn logger_level(&self, name: &str) -> Result<LoggerLevel, LoggersError> {
        self.loggers().get(name)
    }

    /// Sets a logger's level, on this worker (`cluster` false) or every worker of the
    /// cluster; the loggers changed. The cluster scope is this worker so far: a single
    /// worker is its cluster, and in cluster mode Kafka Connect's cluster-wide levels
    /// (KIP-976, through the config topic) are not built yet.
    async fn set_logger_level(
        &self,
        name: &str,
        level: &str,
        _cluster: bool,
    ) -> Result<Vec<String>, LoggersError> {
        self.loggers().set(name, level)
    }
}
