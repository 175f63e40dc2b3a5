//! [`Herder`] for a worker of a cluster: reads are served from what this worker follows
//! (the config and status topics), config writes by the leader (the REST layer forwards
//! them there, see [`Herder::route_writes`]), task restarts by the worker running the task.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::Cluster;
use crate::herder::plan::name_from_path;
use crate::herder::worker::{keep_masked_secrets, Worker};
use crate::herder::{
    ConfigPatch, ConnectorInfo, ConnectorStatus, Health, Herder, HerderError, Offsets,
    SourceOffset, SourcePartition, TargetState, TaskInfo, TaskState,
};
use crate::kafka::producer::TaskProducer;
use crate::storage::configs::{ConfigStoreError, StoredConnector};
use crate::telemetry::Loggers;

/// The header a forwarded request carries, so it is served where it lands and never
/// forwarded again (Kafka Connect's `forward=false`).
pub(crate) const FORWARDED: &str = "x-sluice-forwarded";

/// A failed config write: refused because another worker leads now (409, as Kafka
/// Connect's `NotLeaderException`), or Kafka did not take it (503); nothing changed either way.
fn write_error(what: String, e: ConfigStoreError) -> HerderError {
    match e {
        ConfigStoreError::NotLeader { .. } => HerderError::Conflict(format!("{what}: {e}")),
        other => HerderError::Unavailable(format!("{what}: {other}")),
    }
}

/// How long a write waits for the follower to read it back.
const SETTLE: Duration = Duration::from_secs(10);

/// The cluster herder. It exists from the process's start; connector actions answer
/// [`HerderError::Starting`] until the worker has joined.
#[derive(Debug)]
pub struct Distributed {
    cluster: OnceLock<Arc<Cluster>>,
    loggers: Arc<Loggers>,
    client: reqwest::Client,
}

fn kind_of(class: &str) -> &'static str {
    match crate::registry::lookup(class) {
        Some(p) if p.is_sink() => "sink",
        _ => "source",
    }
}

impl Distributed {
    /// A herder whose worker is still joining, with this process's log levels.
    pub fn new(loggers: Arc<Loggers>) -> Self {
        Distributed {
            cluster: OnceLock::new(),
            loggers,
            client: reqwest::Client::new(),
        }
    }

    /// The worker has joined: connector actions are served from now on.
    pub fn ready(&self, cluster: Arc<Cluster>) {
        if self.cluster.set(cluster).is_err() {
            tracing::warn!("the herder's cluster was set twice; the first one stays");
        }
    }

    fn cluster(&self) -> Result<&Arc<Cluster>, HerderError> {
        self.cluster.get().ok_or(HerderError::Starting)
    }

    fn stored(&self, name: &str) -> Result<StoredConnector, HerderError> {
        self.cluster()?
            .followed
            .get(name)
            .ok_or_else(|| HerderError::NotFound(name.to_owned()))
    }

    /// Config writes are the leader's: refused elsewhere (a request forwarded to a worker
    /// that no longer leads).
    fn leader(&self) -> Result<&Arc<Cluster>, HerderError> {
        let cluster = self.cluster()?;
        if cluster.view().is_leader {
            // A leader that stalled past its session may not have heard it was replaced:
            // it refuses before writing rather than count on the new leader's fencing.
            cluster.membership_current().map_err(|why| {
                HerderError::Conflict(format!(
                    "this worker's membership in the cluster is not current ({why}); it is rejoining, try again"
                ))
            })?;
            Ok(cluster)
        } else {
            Err(HerderError::Conflict(
                "this worker is not the cluster's leader (it changed while the request was forwarded)".into(),
            ))
        }
    }

    /// Plans `config` (every key checked, the task configs made) without running it.
    async fn plan(
        &self,
        config: &BTreeMap<String, String>,
    ) -> Result<crate::herder::plan::Planned, HerderError> {
        let worker = &self.cluster()?.worker;
        worker
            .plan_off_thread(Worker::plugin_of(config)?, config)
            .await
    }

    /// After a write: waits until this worker has read it back, so the answer (and the
    /// next read) sees it.
    async fn settle(&self) {
        let Ok(cluster) = self.cluster() else { return };
        let Ok(end) = cluster.followed.end_offset().await else {
            return;
        };
        let deadline = tokio::time::Instant::now() + SETTLE;
        while cluster.followed.position() < end && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// KIP-618's fencing round: before an exactly-once connector's tasks `ids` stop
    /// existing (fewer tasks, deleted, STOPPED), their transactional producers are fenced
    /// (`init_transactions` with each id, which bumps its epoch and aborts its open
    /// transaction), so a copy of such a task still running on a worker that has not
    /// noticed (stalled, cut off) cannot commit anything after the change. Tasks that keep
    /// their id are fenced by their own next life instead.
    async fn fence(&self, name: &str, ids: std::ops::Range<u32>) -> Result<(), HerderError> {
        let cluster = self.cluster()?;
        let Some(stored) = cluster.followed.get(name) else {
            return Ok(());
        };
        if ids.is_empty() || !self.plan(&stored.config).await?.exactly_once {
            return Ok(());
        }
        let props = cluster.worker.config.kafka_client_props("producer.");
        let mut all = tokio::task::JoinSet::new();
        for task in ids.clone() {
            let id = format!("{}-{name}-{task}", cluster.worker.group_id);
            let props = props.clone();
            all.spawn(async move {
                TaskProducer::create(props, Some(id.clone()), Duration::from_secs(30))
                    .await
                    .map(drop)
                    .map_err(|e| format!("{id}: {e}"))
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = all.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(e),
                Err(e) => failed.push(e.to_string()),
            }
        }
        metrics::counter!("sluice_cluster_fencings_total").increment(1);
        if !failed.is_empty() {
            return Err(HerderError::Unavailable(format!(
                "fencing the producers of {name}'s tasks {ids:?} failed: {}",
                failed.join("; ")
            )));
        }
        tracing::info!(connector = %name, tasks = ?ids, "exactly-once tasks fenced before they stop existing");
        Ok(())
    }

    /// Stores a validated config (creating or replacing the connector) with `target`.
    async fn store(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorInfo, HerderError> {
        let cluster = self.leader()?;
        let planned = self.plan(&config).await?;
        let new_count = u32::try_from(planned.raw_tasks.len()).unwrap_or(u32::MAX);
        if let Some(old) = cluster.followed.get(name) {
            let old_count = old.tasks.unwrap_or(0);
            self.fence(name, new_count.min(old_count)..old_count)
                .await?;
        }
        cluster
            .store
            .put(name, &planned.config, &planned.raw_tasks, target)
            .await
            .map_err(|e| write_error(format!("could not store connector {name}"), e))?;
        self.settle().await;
        Ok(ConnectorInfo {
            name: name.to_owned(),
            config: planned.masked_config,
            tasks: u32::try_from(planned.masked_tasks.len()).unwrap_or(u32::MAX),
            task_configs: planned.masked_tasks,
            kind: planned.kind,
            target,
        })
    }

    /// Sends a restart to the worker running the task.
    async fn forward_restart(&self, owner: &str, name: &str, task: u32) -> Result<(), HerderError> {
        let url = format!("http://{owner}/connectors/{name}/tasks/{task}/restart");
        let response = self
            .client
            .post(&url)
            .header(FORWARDED, "1")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                HerderError::Unavailable(format!(
                    "forwarding the restart of {name}/{task} to {owner}: {e}"
                ))
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(HerderError::Conflict(format!(
                "the worker running {name}/{task} ({owner}) answered {}",
                response.status()
            )))
        }
    }
}

#[async_trait::async_trait]
impl Herder for Distributed {
    fn worker_id(&self) -> String {
        self.cluster
            .get()
            .map(|c| c.worker.worker_id.clone())
            .unwrap_or_default()
    }

    fn route_writes(&self) -> Result<Option<String>, HerderError> {
        let view = self.cluster()?.view();
        if view.is_leader {
            return Ok(None);
        }
        match view.leader_url {
            Some(url) => Ok(Some(url)),
            None => Err(HerderError::Conflict(
                "no leader is known (the cluster is rebalancing)".into(),
            )),
        }
    }

    async fn health(&self, timeout: Duration) -> Health {
        let Some(cluster) = self.cluster.get() else {
            return Health::Starting;
        };
        let view = cluster.view();
        if let Some(reason) = view.failed {
            return Health::Unhealthy(format!("not part of the cluster: {reason}"));
        }
        if !view.ready {
            return Health::Starting;
        }
        match cluster.worker.health(timeout).await {
            Ok(()) => Health::Healthy,
            Err(problem) => Health::Unhealthy(problem),
        }
    }

    async fn connectors(&self) -> Result<Vec<String>, HerderError> {
        Ok(self.cluster()?.followed.all().into_keys().collect())
    }

    async fn connector_info(&self, name: &str) -> Result<ConnectorInfo, HerderError> {
        let stored = self.stored(name)?;
        let planned = self.plan(&stored.config).await?;
        Ok(ConnectorInfo {
            name: name.to_owned(),
            config: planned.masked_config,
            tasks: stored.tasks.unwrap_or(0),
            task_configs: planned.masked_tasks,
            kind: planned.kind,
            target: stored.target,
        })
    }

    async fn connector_config(&self, name: &str) -> Result<BTreeMap<String, String>, HerderError> {
        let stored = self.stored(name)?;
        Ok(self.plan(&stored.config).await?.config)
    }

    async fn connector_status(&self, name: &str) -> Result<ConnectorStatus, HerderError> {
        let cluster = self.cluster()?;
        let stored = self.stored(name)?;
        let class = stored
            .config
            .get("connector.class")
            .cloned()
            .unwrap_or_default();
        let local: BTreeMap<u32, crate::task::supervisor::TaskStatus> = cluster
            .units
            .statuses(name)
            .await
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        // A STOPPED connector has no tasks (KIP-875).
        let count = if stored.target == TargetState::Stopped {
            0
        } else {
            stored.tasks.unwrap_or(0)
        };
        let tasks = (0..count)
            .map(|id| match local.get(&id) {
                // What runs here is read live; the rest from the status topic.
                Some(t) => TaskInfo {
                    id,
                    state: t.state,
                    worker_id: cluster.worker.worker_id.clone(),
                    trace: t.trace.clone(),
                },
                None => match cluster.statuses.task(name, id) {
                    Some(s) => TaskInfo {
                        id,
                        state: TaskState::from_name(&s.state).unwrap_or(TaskState::Unassigned),
                        worker_id: s.worker_id,
                        trace: s.trace,
                    },
                    None => TaskInfo {
                        id,
                        state: TaskState::Unassigned,
                        worker_id: String::new(),
                        trace: None,
                    },
                },
            })
            .collect();
        let worker_id = cluster
            .statuses
            .connector(name)
            .map(|s| s.worker_id)
            .unwrap_or_default();
        Ok(ConnectorStatus {
            name: name.to_owned(),
            target: stored.target,
            worker_id,
            tasks,
            kind: kind_of(&class),
        })
    }

    async fn create_connector(
        &self,
        config: BTreeMap<String, String>,
        target: TargetState,
    ) -> Result<ConnectorInfo, HerderError> {
        let cluster = self.leader()?;
        let name = config.get("name").cloned().unwrap_or_default();
        if cluster.followed.get(&name).is_some() {
            return Err(HerderError::Exists(name));
        }
        self.store(&name, config, target).await
    }

    async fn put_connector_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(bool, ConnectorInfo), HerderError> {
        let cluster = self.leader()?;
        let mut config = config;
        name_from_path(&mut config, name)?;
        let existing = cluster.followed.get(name);
        if let Some(existing) = &existing {
            let masked = self.plan(&existing.config).await?.masked_config;
            keep_masked_secrets(&mut config, &existing.config, &masked);
        }
        let target = existing.as_ref().map_or(TargetState::Started, |e| e.target);
        let info = self.store(name, config, target).await?;
        Ok((existing.is_none(), info))
    }

    async fn patch_connector_config(
        &self,
        name: &str,
        patch: ConfigPatch,
    ) -> Result<ConnectorInfo, HerderError> {
        self.leader()?;
        let stored = self.stored(name)?;
        let mut config = stored.config;
        for (key, value) in patch {
            match value {
                Some(v) => config.insert(key, v),
                None => config.remove(&key),
            };
        }
        self.store(name, config, stored.target).await
    }

    async fn delete_connector(&self, name: &str) -> Result<(), HerderError> {
        let cluster = self.leader()?;
        let stored = self.stored(name)?;
        self.fence(name, 0..stored.tasks.unwrap_or(0)).await?;
        cluster.store.delete(name).await.map_err(|e| {
            write_error(
                format!("could not delete connector {name} from the config topic"),
                e,
            )
        })?;
        if let Some(status) = cluster.worker.status_store() {
            status.delete(name, stored.tasks.unwrap_or(0)).await;
            // A deleted connector's active topics go with it (KIP-558).
            let topics: Vec<String> = cluster.statuses.topics(name).into_iter().collect();
            status.delete_topics(name, &topics).await;
        }
        self.settle().await;
        Ok(())
    }

    async fn restart_connector(
        &self,
        name: &str,
        only_failed: bool,
    ) -> Result<Vec<u32>, HerderError> {
        let status = self.connector_status(name).await?;
        let mut restarted = Vec::new();
        for t in status.tasks {
            if !only_failed || t.state == TaskState::Failed {
                self.restart_task(name, t.id).await?;
                restarted.push(t.id);
            }
        }
        Ok(restarted)
    }

    async fn restart_task(&self, name: &str, task: u32) -> Result<(), HerderError> {
        let cluster = self.cluster()?;
        let stored = self.stored(name)?;
        if task >= stored.tasks.unwrap_or(0) {
            return Err(HerderError::TaskNotFound(name.to_owned(), task));
        }
        match cluster.units.restart(name, task).await {
            Some(true) => Ok(()),
            Some(false) => Err(HerderError::TaskNotFound(name.to_owned(), task)),
            None => {
                let owner = cluster
                    .statuses
                    .task(name, task)
                    .map(|s| s.worker_id)
                    .filter(|w| !w.is_empty() && *w != cluster.worker.worker_id)
                    .ok_or_else(|| {
                        HerderError::Conflict(format!(
                            "task {name}/{task} runs on no known worker right now"
                        ))
                    })?;
                self.forward_restart(&owner, name, task).await
            }
        }
    }

    async fn set_target_state(&self, name: &str, target: TargetState) -> Result<(), HerderError> {
        let cluster = self.leader()?;
        let stored = self.stored(name)?;
        if target == TargetState::Stopped && stored.target != TargetState::Stopped {
            self.fence(name, 0..stored.tasks.unwrap_or(0)).await?;
        }
        cluster
            .store
            .put_target(name, target)
            .await
            .map_err(|e| write_error(format!("could not store the state of {name}"), e))?;
        self.settle().await;
        Ok(())
    }

    /// What the status topic holds: the workers record the topics their tasks use.
    async fn topics(&self, name: &str) -> Result<Vec<String>, HerderError> {
        self.stored(name)?;
        Ok(self.cluster()?.statuses.topics(name).into_iter().collect())
    }

    /// The leader erases the connector's topic records; each worker then forgets those
    /// topics, until its tasks use them again.
    async fn reset_topics(&self, name: &str) -> Result<(), HerderError> {
        let cluster = self.leader()?;
        self.stored(name)?;
        let topics: Vec<String> = cluster.statuses.topics(name).into_iter().collect();
        let status = cluster
            .worker
            .status_store()
            .ok_or_else(|| HerderError::Internal("this worker has no status topic".into()))?;
        status.delete_topics(name, &topics).await;
        tracing::info!(connector = %name, topics = topics.len(), "active topics reset");
        // Answered once read back, so a GET after it does not list them.
        let deadline = tokio::time::Instant::now() + SETTLE;
        while tokio::time::Instant::now() < deadline {
            let held = cluster.statuses.topics(name);
            if topics.iter().all(|t| !held.contains(t)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Any worker reads them: a source's from the offsets topic every worker follows, a
    /// sink's from its consumer group.
    async fn offsets(&self, name: &str) -> Result<Offsets, HerderError> {
        let stored = self.stored(name)?;
        let planned = self.plan(&stored.config).await?;
        self.cluster()?
            .worker
            .read_offsets(name, planned.subscription.as_ref())
            .await
    }

    /// The leader's, like every write: the connector must be STOPPED in the config topic;
    /// an exactly-once source's tasks are fenced again first.
    async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(SourcePartition, Option<SourceOffset>)>,
    ) -> Result<(), HerderError> {
        let cluster = self.leader()?;
        let stored = self.stored(name)?;
        let planned = self.plan(&stored.config).await?;
        if stored.target == TargetState::Stopped && planned.subscription.is_none() {
            // As Kafka Connect does before it writes a source's offsets: a task life that
            // outlived the STOP (a worker that has not applied it yet) cannot commit
            // offsets after these.
            self.fence(name, 0..stored.tasks.unwrap_or(0)).await?;
        }
        cluster
            .worker
            .write_offsets(name, stored.target, planned.subscription.as_ref(), changes)
            .await
    }

    fn loggers(&self) -> &Loggers {
        &self.loggers
    }
}
