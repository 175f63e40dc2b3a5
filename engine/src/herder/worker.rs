//! The worker: its table of running connectors and their lifecycle. A connector is
//! planned first (`plan.rs`: validation and task specs), then launched under a connector
//! supervisor, stored in the config topic, paused, resumed, restarted, replaced or
//! forgotten here; KIP-875 offsets are in `offsets.rs`, the config-topic follower in
//! `follow.rs`. The REST layer reaches it through [`super::Standalone`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;

use super::plan::{name_from_path, Planned};
use super::HerderError;
use crate::config::connector::common_def;
use crate::config::worker::WorkerConfig;
use crate::kafka::router::PartitionRouter;
use crate::registry;
use crate::storage::configs::ConfigStore;
use crate::storage::offsets::OffsetStore;
use crate::storage::status::StatusStore;
use crate::task::sink;
use crate::task::supervisor::{
    ConnectorSupervisor, GetStatus, RestartTask, SetTarget, StopConnector, TargetState, TaskState,
    TaskStatus,
};

/// What the worker keeps per connector.
#[derive(Clone)]
pub struct ConnectorEntry {
    /// The supervisor.
    pub supervisor: Addr<ConnectorSupervisor>,
    /// Canonical class.
    pub class: &'static str,
    /// The config as given (secrets included: never shown).
    pub config: BTreeMap<String, String>,
    /// The config, secrets masked.
    pub masked_config: BTreeMap<String, String>,
    /// Each task's config, secrets masked.
    pub task_configs: Vec<BTreeMap<String, String>>,
    /// Each task's config as the connector produced it (for the config topic only).
    pub raw_task_configs: Vec<BTreeMap<String, String>>,
    /// Task count.
    pub tasks: u32,
    /// What the user asked for.
    pub target: TargetState,
    /// Topics the connector's records went to (KIP-558).
    pub topics: Arc<Mutex<BTreeSet<String>>>,
    /// `source` or `sink`.
    pub kind: &'static str,
    /// A sink's topics.
    pub subscription: Option<sink::Subscription>,
}

/// Puts the stored value back where an update gives a secret as the mask `GET` shows:
/// only for keys that were masked (secrets), so no other value can be taken for one.
pub(super) fn keep_masked_secrets(
    props: &mut BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
    masked_config: &BTreeMap<String, String>,
) {
    for (key, value) in props.iter_mut() {
        if value == sluice_proto::config::HIDDEN
            && masked_config.get(key).map(String::as_str) == Some(sluice_proto::config::HIDDEN)
        {
            if let Some(stored) = config.get(key) {
                value.clone_from(stored);
            }
        }
    }
}

/// The worker.
#[derive(Clone)]
pub struct Worker {
    pub(super) config: Arc<WorkerConfig>,
    pub(super) router: Addr<PartitionRouter>,
    pub(super) offsets: OffsetStore,
    pub(super) group_id: String,
    /// `host:port` of this worker, as the status API reports it.
    pub worker_id: String,
    connectors: Arc<RwLock<BTreeMap<String, ConnectorEntry>>>,
    store: Option<ConfigStore>,
    status: Option<StatusStore>,
    /// Held by every change of the connector table (REST, or a config-topic record), so
    /// the config-topic follower sees a change this worker wrote only once it is applied.
    pub(super) changes: Arc<tokio::sync::Mutex<()>>,
    /// What the config-topic follower has read, once it runs.
    pub(super) followed: Arc<std::sync::OnceLock<crate::storage::configs::Followed>>,
    /// Asked before a task takes its transactional id (a cluster's membership check).
    pub(super) claim: crate::kafka::producer::ClaimGuard,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// Counts a connector creation in `sluice_connector_startup_total`.
fn count_startup(
    result: Result<ConnectorEntry, HerderError>,
) -> Result<ConnectorEntry, HerderError> {
    let outcome = if result.is_ok() { "success" } else { "failure" };
    metrics::counter!("sluice_connector_startup_total", "result" => outcome).increment(1);
    result
}

impl Worker {
    /// A worker writing offsets to `offsets`, routing through `router`.
    pub fn new(
        config: Arc<WorkerConfig>,
        router: Addr<PartitionRouter>,
        offsets: OffsetStore,
    ) -> Self {
        let group_id = config
            .group_id
            .clone()
            .unwrap_or_else(|| "sluice-standalone".to_owned());
        let worker_id = config
            .listeners
            .first()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        Worker {
            config,
            router,
            offsets,
            group_id,
            worker_id,
            connectors: Arc::new(RwLock::new(BTreeMap::new())),
            store: None,
            status: None,
            changes: Arc::new(tokio::sync::Mutex::new(())),
            followed: Arc::new(std::sync::OnceLock::new()),
            claim: crate::kafka::producer::ClaimGuard::default(),
        }
    }

    /// Tasks planned from now on ask `claim` before they take their transactional id.
    #[must_use]
    pub fn with_claim_guard(mut self, claim: crate::kafka::producer::ClaimGuard) -> Self {
        self.claim = claim;
        self
    }

    /// Writes connector and task status to `status` (Kafka Connect's status topic).
    #[must_use]
    pub fn with_status(mut self, status: StatusStore) -> Self {
        self.status = Some(status);
        self
    }

    pub(super) fn report_connector(&self, name: &str, target: TargetState) {
        self.report_connector_to(name, target, self.status.clone());
    }

    /// [`Worker::report_connector`] into `status` (a cluster's, with its generation).
    pub(super) fn report_connector_to(
        &self,
        name: &str,
        target: TargetState,
        status: Option<StatusStore>,
    ) {
        let state = match target {
            TargetState::Started => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        };
        for s in ["RUNNING", "PAUSED", "STOPPED"] {
            metrics::gauge!("sluice_connector_status", "connector" => name.to_owned(), "state" => s.to_ascii_lowercase())
                .set(if s == state { 1.0 } else { 0.0 });
        }
        let Some(status) = status else {
            return;
        };
        let name = name.to_owned();
        actix::spawn(async move { status.put_connector(&name, state).await });
    }

    /// The config store, for a REST-managed worker.
    pub(super) fn config_store(&self) -> Option<&ConfigStore> {
        self.store.as_ref()
    }

    /// The status store, for a REST-managed worker.
    pub(super) fn status_store(&self) -> Option<StatusStore> {
        self.status.clone()
    }

    /// Keeps connector configs in `store` (the REST-managed worker), so they survive a
    /// restart; [`Worker::restore`] reads them back.
    #[must_use]
    pub fn with_store(mut self, store: ConfigStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts every connector found in the config store. A connector whose stored config
    /// no longer validates is logged and skipped; the others start.
    pub async fn restore(&self) -> Result<usize, HerderError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let stored = store
            .read_all(Duration::from_secs(60))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        let mut started = 0;
        for (name, connector) in stored {
            match self.create_connector(&connector.config, connector.target) {
                Ok(_) => {
                    started += 1;
                    tracing::info!(connector = %name, target = ?connector.target, "connector restored from the config topic");
                }
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "stored connector config is invalid; not started");
                }
            }
        }
        Ok(started)
    }

    /// Writes the connector's current config and target to the store (if any).
    async fn persist(&self, name: &str) -> Result<(), HerderError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let entry = self.connector(name)?;
        store
            .put(name, &entry.config, &entry.raw_task_configs, entry.target)
            .await
            .map_err(|e| HerderError::Unavailable(format!("could not store connector {name}: {e}")))
    }

    /// Creates a connector and stores it; if storing fails the connector is removed again,
    /// so a failed request changes nothing.
    pub async fn create_connector_stored(
        &self,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let plugin = match Self::plugin_of(props) {
            Ok(plugin) => plugin,
            Err(e) => return count_startup(Err(e)),
        };
        self.create_connector_stored_with(plugin, props, target)
            .await
    }

    /// Like [`Worker::create_connector_stored`], with the plugin given (for connectors
    /// outside the built-in registry, e.g. in tests).
    pub async fn create_connector_stored_with(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let _change = self.changes.lock().await;
        let name = props.get("name").cloned().unwrap_or_default();
        if self.read_connectors().contains_key(&name) {
            return count_startup(Err(HerderError::Exists(name)));
        }
        let planned = match self.plan_off_thread(plugin, props).await {
            Ok(planned) => planned,
            Err(e) => return count_startup(Err(e)),
        };
        let entry = count_startup(self.launch(planned, target))?;
        if let Err(e) = self.persist(&name).await {
            let _ = self.forget(&name).await;
            return Err(e);
        }
        self.settle().await;
        Ok(entry)
    }

    /// Validates `props` and starts the connector's tasks.
    pub fn create_connector(
        &self,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        count_startup(
            Self::plugin_of(props).and_then(|plugin| self.start_connector(plugin, props, target)),
        )
    }

    /// Like [`Worker::create_connector`], with the plugin given rather than looked up
    /// (for connectors outside the built-in registry, e.g. in tests).
    pub fn create_connector_with(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        count_startup(self.start_connector(plugin, props, target))
    }

    fn start_connector(
        &self,
        plugin: registry::Plugin,
        props: &BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let common = common_def()
            .parse(props)
            .map_err(|e| HerderError::BadConfig(e.to_string()))?;
        let name = common.string("name").unwrap_or_default().to_owned();
        if self.read_connectors().contains_key(&name) {
            return Err(HerderError::Exists(name));
        }
        let planned = self.plan(plugin, props)?;
        self.launch(planned, target)
    }

    /// Starts a planned connector's supervisor and enters it in the connector table.
    pub(super) fn launch(
        &self,
        planned: Planned,
        target: TargetState,
    ) -> Result<ConnectorEntry, HerderError> {
        let Planned {
            name,
            class,
            kind,
            config,
            masked_config,
            masked_tasks,
            raw_tasks,
            specs,
            topics,
            subscription,
            exactly_once,
        } = planned;
        let tasks = u32::try_from(specs.len()).unwrap_or(u32::MAX);
        {
            // Checked and entered under one lock: of two concurrent creations of a name,
            // exactly one starts.
            let mut table = self
                .connectors
                .write()
                .map_err(|_| HerderError::Internal("connector table poisoned".into()))?;
            if table.contains_key(&name) {
                return Err(HerderError::Exists(name));
            }
            let supervisor = ConnectorSupervisor::new(
                name.clone(),
                specs,
                self.policy(),
                target,
                self.status.clone(),
            )
            .start();
            let entry = ConnectorEntry {
                supervisor,
                class,
                config,
                masked_config,
                task_configs: masked_tasks,
                raw_task_configs: raw_tasks,
                tasks,
                target,
                topics,
                kind,
                subscription,
            };
            table.insert(name.clone(), entry);
        }
        self.report_connector(&name, target);
        let entry = self.connector(&name)?;
        crate::telemetry::live().connector_up(&name, tasks);
        tracing::info!(connector = %name, class, kind, tasks, exactly_once, "connector created");
        self.count_connectors();
        Ok(entry)
    }

    /// `sluice_connectors` and `sluice_tasks`.
    fn count_connectors(&self) {
        let table = self.read_connectors();
        metrics::gauge!("sluice_connectors").set(table.len() as f64);
        metrics::gauge!("sluice_tasks")
            .set(table.values().map(|e| f64::from(e.tasks)).sum::<f64>());
    }

    /// Answers `Ok` when the partition router and every connector's supervisor serve
    /// their mailboxes within `timeout` (all together), else says which did not.
    pub async fn health(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.router.send(crate::kafka::router::Ping)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the partition router is gone: {e}")),
            Err(_) => {
                return Err(format!(
                    "the partition router did not answer within {} ms",
                    timeout.as_millis()
                ))
            }
        }
        for (name, entry) in self.read_connectors() {
            match tokio::time::timeout_at(deadline, entry.supervisor.send(GetStatus)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(format!("the supervisor of connector {name} is gone: {e}"))
                }
                Err(_) => {
                    return Err(format!(
                        "the supervisor of connector {name} did not answer within {} ms",
                        timeout.as_millis()
                    ))
                }
            }
        }
        Ok(())
    }

    pub(super) fn read_connectors(&self) -> BTreeMap<String, ConnectorEntry> {
        self.connectors
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Connector names, sorted.
    pub fn connector_names(&self) -> Vec<String> {
        self.read_connectors().into_keys().collect()
    }

    /// One connector's entry.
    pub fn connector(&self, name: &str) -> Result<ConnectorEntry, HerderError> {
        self.read_connectors()
            .get(name)
            .cloned()
            .ok_or_else(|| HerderError::NotFound(name.to_owned()))
    }

    /// The tasks' statuses.
    pub async fn task_statuses(&self, name: &str) -> Result<Vec<TaskStatus>, HerderError> {
        let entry = self.connector(name)?;
        entry
            .supervisor
            .send(GetStatus)
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))
    }

    /// Restarts one task by hand.
    pub async fn restart_task(&self, name: &str, task: u32) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        let found = entry
            .supervisor
            .send(RestartTask(task))
            .await
            .map_err(|e| HerderError::Internal(e.to_string()))?;
        if found {
            Ok(())
        } else {
            Err(HerderError::TaskNotFound(name.to_owned(), task))
        }
    }

    fn update_entry(
        &self,
        name: &str,
        f: impl FnOnce(&mut ConnectorEntry),
    ) -> Result<(), HerderError> {
        let mut table = self
            .connectors
            .write()
            .map_err(|_| HerderError::Internal("connector table poisoned".into()))?;
        let entry = table
            .get_mut(name)
            .ok_or_else(|| HerderError::NotFound(name.to_owned()))?;
        f(entry);
        Ok(())
    }

    /// Stops a connector's tasks (each commits what it has) and forgets it, in the store
    /// too. Its offsets stay.
    pub async fn delete_connector(&self, name: &str) -> Result<(), HerderError> {
        let _change = self.changes.lock().await;
        self.connector(name)?;
        if let Some(store) = &self.store {
            store.delete(name).await.map_err(|e| {
                HerderError::Unavailable(format!(
                    "could not delete connector {name} from the config topic: {e}"
                ))
            })?;
        }
        let tasks = self.connector(name)?.tasks;
        self.forget(name).await?;
        if let Some(status) = &self.status {
            status.delete(name, tasks).await;
        }
        self.settle().await;
        Ok(())
    }

    /// Stops and drops a connector, leaving the store alone.
    pub(super) async fn forget(&self, name: &str) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            entry.supervisor.send(StopConnector),
        )
        .await;
        self.connectors
            .write()
            .map_err(|_| HerderError::Internal("connector table poisoned".into()))?
            .remove(name);
        crate::telemetry::live().connector_down(name);
        self.count_connectors();
        tracing::info!(connector = %name, "connector deleted");
        Ok(())
    }

    /// Replaces a connector's config (restarting it), or creates it; `true` if created.
    /// The new config is checked in full (converters, transforms, exactly-once, the
    /// connector's task configs) before the running connector is touched, so a refused
    /// update changes nothing. A secret given as the mask (`[hidden]`, as `GET` shows it)
    /// keeps its stored value, so a GET-then-PUT round trip never replaces a secret.
    pub async fn put_config(
        &self,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<bool, HerderError> {
        let _change = self.changes.lock().await;
        let mut props = props.clone();
        name_from_path(&mut props, name)?;
        let existing = self.connector(name).ok();
        if let Some(existing) = &existing {
            keep_masked_secrets(&mut props, &existing.config, &existing.masked_config);
        }
        let planned = self
            .plan_off_thread(Self::plugin_of(&props)?, &props)
            .await?;
        let target = existing.as_ref().map_or(TargetState::Started, |e| e.target);
        if let Some(store) = &self.store {
            store
                .put(name, &planned.config, &planned.raw_tasks, target)
                .await
                .map_err(|e| {
                    HerderError::Unavailable(format!("could not store connector {name}: {e}"))
                })?;
        }
        if existing.is_some() {
            self.forget(name).await?;
        }
        count_startup(self.launch(planned, target))?;
        self.settle().await;
        Ok(existing.is_none())
    }

    /// Pauses, resumes or stops a connector, and stores the new target.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), HerderError> {
        let _change = self.changes.lock().await;
        let entry = self.connector(name)?;
        if let Some(store) = &self.store {
            store.put_target(name, target).await.map_err(|e| {
                HerderError::Unavailable(format!("could not store the state of {name}: {e}"))
            })?;
        }
        self.apply_target(name, &entry, target)?;
        self.settle().await;
        Ok(())
    }

    /// Pauses, resumes or stops a running connector (the store is the caller's).
    pub(super) fn apply_target(
        &self,
        name: &str,
        entry: &ConnectorEntry,
        target: TargetState,
    ) -> Result<(), HerderError> {
        entry.supervisor.do_send(SetTarget(target));
        self.report_connector(name, target);
        self.update_entry(name, |e| e.target = target)
    }

    /// Restarts a connector's tasks: all of them, or only the failed ones.
    pub async fn restart_connector(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<u32>, HerderError> {
        let statuses = self.task_statuses(name).await?;
        let mut restarted = Vec::new();
        for t in statuses {
            if !only_failed || t.state == TaskState::Failed {
                self.restart_task(name, t.id).await?;
                restarted.push(t.id);
            }
        }
        Ok(restarted)
    }

    /// Topics the connector has written to since it started or the last reset.
    pub fn topics(&self, name: &str) -> Result<Vec<String>, HerderError> {
        let entry = self.connector(name)?;
        let topics = entry
            .topics
            .lock()
            .map_err(|_| HerderError::Internal("topic set poisoned".into()))?;
        Ok(topics.iter().cloned().collect())
    }

    /// Forgets the connector's active topics.
    pub fn reset_topics(&self, name: &str) -> Result<(), HerderError> {
        let entry = self.connector(name)?;
        entry
            .topics
            .lock()
            .map_err(|_| HerderError::Internal("topic set poisoned".into()))?
            .clear();
        Ok(())
    }

    /// Stops every connector, each task committing what it has, within `timeout` (the
    /// connectors stop concurrently).
    pub async fn stop_all(&self, timeout: Duration) {
        let entries = self.read_connectors();
        let stops = entries.iter().map(|(name, entry)| {
            let name = name.clone();
            let supervisor = entry.supervisor.clone();
            async move {
                match tokio::time::timeout(timeout, supervisor.send(StopConnector)).await {
                    Ok(Ok(())) => tracing::info!(connector = %name, "connector stopped"),
                    Ok(Err(e)) => tracing::warn!(connector = %name, error = %e, "connector supervisor gone"),
                    Err(_) => tracing::warn!(connector = %name, ?timeout, "connector did not stop in time"),
                }
            }
        });
        // All at once: shutdown takes one grace period, not one per connector.
        let mut all = tokio::task::JoinSet::new();
        for stop in stops {
            all.spawn(stop);
        }
        while all.join_next().await.is_some() {}
    }
}
