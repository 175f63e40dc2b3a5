//! [`Herder`] for one worker that is the whole cluster: every action is served by the
//! local [`Worker`], and a cluster-wide log level is this worker's.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::worker::{ConnectorEntry, Worker};
use super::{
    ConfigPatch, ConnectorInfo, ConnectorStatus, Health, Herder, HerderError, Offsets,
    SourceOffset, SourcePartition, TargetState, TaskInfo,
};
use crate::telemetry::Loggers;

/// The single-worker herder. It exists from the process's start (plugins and log levels
/// are served at once); connector actions answer [`HerderError::Starting`] until the
/// worker is [`ready`](Standalone::ready).
#[derive(Debug)]
pub struct Standalone {
    worker: OnceLock<Worker>,
    loggers: Arc<Loggers>,
}

impl Standalone {
    /// A herder whose worker is still starting, with this process's log levels.
    pub fn new(loggers: Arc<Loggers>) -> Self {
        Standalone {
            worker: OnceLock::new(),
            loggers,
        }
    }

    /// The worker has started: connector actions are served from now on.
    pub fn ready(&self, worker: Worker) {
        if self.worker.set(worker).is_err() {
            tracing::warn!("the herder's worker was set twice; the first one stays");
        }
    }

    fn worker(&self) -> Result<&Worker, HerderError> {
        self.worker.get().ok_or(HerderError::Starting)
    }

    fn info(name: &str, entry: &ConnectorEntry) -> ConnectorInfo {
        ConnectorInfo {
            name: name.to_owned(),
            config: entry.masked_config.clone(),
            task_configs: entry.task_configs.clone(),
            tasks: entry.tasks,
            kind: entry.kind,
            target: entry.target,
        }
    }

    fn entry_info(&self, name: &str) -> Result<ConnectorInfo, HerderError> {
        Ok(Self::info(name, &self.worker()?.connector(name)?))
    }
}

#[async_trait::async_trait]
impl Herder for Standalone {
    fn worker_id(&self) -> String {
        self.worker
            .get()
            .map(|w| w.worker_id.clone())
            .unwrap_or_default()
    }

    async fn health(&self, timeout: Duration) -> Health {
        let Some(worker) = self.worker.get() else {
            return Health::Starting;
        };
        match worker.health(timeout).await {
            Ok(()) => Health::Healthy,
            Err(problem) => Health::Unhealthy(problem),
        }
    }

    async fn connectors(&self) -> Result<Vec<String>, HerderError> {
        Ok(self.worker()?.connector_names())
    }

    async fn connector_info(&self, name: &str) -> Result<ConnectorInfo, HerderError> {
        self.entry_info(name)
    }

    async fn connector_config(&self, name: &str) -> Result<BTreeMap<String, String>, HerderError> {
        Ok(self.worker()?.connector(name)?.config)
    }

    async fn connector_status(&self, name: &str) -> Result<ConnectorStatus, HerderError> {
        let worker = self.worker()?;
        let entry = worker.connector(name)?;
        let statuses = worker.task_statuses(name).await?;
        // A STOPPED connector has no tasks (KIP-875).
        let tasks = if entry.target == TargetState::Stopped {
            Vec::new()
        } else {
            statuses
                .into_iter()
                .map(|t| TaskInfo {
                    id: t.id,
                    state: t.state,
                    worker_id: worker.worker_id.clone(),
                    trace: t.trace,
                })
                .collect()
        };
        Ok(ConnectorStatus {
            name: name.to_owned(),
            target: entry.target,
            worker_id: worker.worker_id.clone(),
            tasks,
            kind: entry.kind,
        })
    }

    async fn create_connector(
        &self,
        config: BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorInfo, HerderError> {
        let entry = self
            .worker()?
            .create_connector_stored(&config, target)
            .await?;
        let name = config.get("name").cloned().unwrap_or_default();
        Ok(Self::info(&name, &entry))
    }

    async fn put_connector_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(bool, ConnectorInfo), HerderError> {
        let created = self.worker()?.put_config(name, &config).await?;
        Ok((created, self.entry_info(name)?))
    }

    async fn patch_connector_config(
        &self,
        name: &str,
        patch: ConfigPatch,
    ) -> Result<ConnectorInfo, HerderError> {
        // Patched over the stored config (secrets unmasked), as Kafka Connect does.
        let mut config = self.worker()?.connector(name)?.config;
        for (key, value) in patch {
            match value {
                Some(v) => config.insert(key, v),
                None => config.remove(&key),
            };
        }
        self.worker()?.put_config(name, &config).await?;
        self.entry_info(name)
    }

    async fn delete_connector(&self, name: &str) -> Result<(), HerderError> {
        self.worker()?.delete_connector(name).await
    }

    async fn restart_connector(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<u32>, HerderError> {
        self.worker()?.restart_connector(name, only_failed).await
    }

    async fn restart_task(&self, name: &str, task: u32) -> Result<(), HerderError> {
        self.worker()?.restart_task(name, task).await
    }

    async fn set_target_state(&self, name: &str, target: TargetState) -> Result<(), HerderError> {
        self.worker()?.set_target(name, target).await
    }

    async fn topics(&self, name: &str) -> Result<Vec<String>, HerderError> {
        self.worker()?.topics(name)
    }

    async fn reset_topics(&self, name: &str) -> Result<(), HerderError> {
        self.worker()?.reset_topics(name)
    }

    async fn offsets(&self, name: &str) -> Result<Offsets, HerderError> {
        self.worker()?.offsets(name).await
    }

    async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(SourcePartition, Option<SourceOffset>)>,
    ) -> Result<(), HerderError> {
        self.worker()?.alter_offsets(name, changes).await
    }

    fn loggers(&self) -> &Loggers {
        &self.loggers
    }
}
