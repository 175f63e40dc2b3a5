//! The work this worker runs for the cluster: each assigned task under a supervisor of its
//! own, so a rebalance stops and starts exactly the tasks that move and no other (one
//! supervisor per connector would restart a connector's every local task whenever one of
//! them moved).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use super::protocol::Unit;
use crate::herder::worker::Worker;
use crate::herder::HerderError;
use crate::storage::configs::StoredConnector;
use crate::storage::status::StatusStore;
use crate::task::supervisor::{
    ConnectorSupervisor, GetStatus, RestartTask, SetTarget, StopConnector, TargetState, TaskStatus,
};

/// One connector's work on this worker.
#[derive(Default)]
struct Local {
    /// The config its tasks were started with.
    config: BTreeMap<String, String>,
    target: Option<TargetState>,
    /// Whether this worker holds the connector unit (it reports the connector's status).
    connector: bool,
    tasks: BTreeMap<u32, Addr<ConnectorSupervisor>>,
    /// The topics its tasks here used, one set per start (with the lowest task of that
    /// start, named in the records).
    topics: Vec<(u32, Arc<Mutex<BTreeSet<String>>>)>,
    /// Topics recorded in the status topic by this worker, not yet read back.
    reported: BTreeSet<String>,
    /// The view's count of this connector's erased topic records at the last round: when
    /// it grows, a reset (or a delete) erased them.
    erased_seen: Option<u64>,
}

/// This worker's share of the cluster's work.
pub(super) struct Units {
    worker: Worker,
    local: Mutex<BTreeMap<String, Local>>,
    grace: Duration,
    /// The status topic, written with the group generation (see [`StatusStore`]).
    status: Option<StatusStore>,
}

impl Units {
    /// Units of `worker`; their status records carry `generation`, the group generation
    /// the cluster keeps current, and go out only past `guard`.
    pub(super) fn new(
        worker: Worker,
        grace: Duration,
        generation: Arc<AtomicU64>,
        guard: crate::storage::status::WriteGuard,
    ) -> Self {
        let status = worker
            .status_store()
            .map(|s| s.with_group_generation(generation).with_guard(guard));
        Units {
            worker,
            local: Mutex::new(BTreeMap::new()),
            grace,
            status,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Local>) -> T) -> T {
        match self.local.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// What runs here.
    pub(super) fn owned(&self) -> BTreeSet<Unit> {
        self.with(|local| {
            let mut owned = BTreeSet::new();
            for (name, l) in local.iter() {
                if l.connector {
                    owned.insert(Unit::connector(name));
                }
                owned.extend(l.tasks.keys().map(|t| Unit::task(name, *t)));
            }
            owned
        })
    }

    /// KIP-558 across the cluster: records in the status topic each topic this worker's
    /// tasks used that the topic does not hold yet, and forgets here what a reset erased
    /// there (so a topic reappears only once a task uses it again).
    pub(super) async fn report_topics(&self, view: &crate::storage::status_view::StatusView) {
        let Some(status) = &self.status else { return };
        if self.worker.config.parsed.boolean("topic.tracking.enable") == Some(false) {
            return;
        }
        let writes = self.with(|local| {
            let mut writes = Vec::new();
            for (name, l) in local.iter_mut() {
                let held = view.topics(name);
                let erased = view.topics_erased(name);
                if l.erased_seen.is_some_and(|seen| erased > seen) {
                    // Reset since the last round: forget what is no longer held, here too,
                    // so a topic is recorded again only once a task uses it again.
                    for (_, set) in &l.topics {
                        if let Ok(mut set) = set.lock() {
                            set.retain(|t| held.contains(t));
                        }
                    }
                    l.reported.retain(|t| held.contains(t));
                }
                l.erased_seen = Some(erased);
                let mut used: BTreeMap<String, u32> = BTreeMap::new();
                for (task, set) in &l.topics {
                    if let Ok(set) = set.lock() {
                        for t in set.iter() {
                            used.entry(t.clone()).or_insert(*task);
                        }
                    }
                }
                for (t, task) in used {
                    if held.contains(&t) {
                        // Read back (ours or another worker's record).
                        l.reported.remove(&t);
                    } else if l.reported.insert(t.clone()) {
                        writes.push((name.clone(), t, task));
                    }
                }
            }
            writes
        });
        if writes.is_empty() {
            return;
        }
        if status.put_topics(&writes).await {
            for (connector, topic, task) in &writes {
                tracing::info!(connector = %connector, task, topic = %topic, "connector uses a new topic; recorded (KIP-558)");
                metrics::counter!("sluice_cluster_active_topics_recorded_total", "connector" => connector.clone()).increment(1);
            }
        } else {
            // Not written: reported again at the next round.
            self.with(|local| {
                for (connector, topic, _) in &writes {
                    if let Some(l) = local.get_mut(connector) {
                        l.reported.remove(topic);
                    }
                }
            });
        }
    }

    /// The config task `task` of `connector` was started with here, if it is assigned here
    /// and not being stopped (a unit leaves this table before its task is told to stop).
    pub(super) fn started_config(
        &self,
        connector: &str,
        task: u32,
    ) -> Option<BTreeMap<String, String>> {
        self.with(|local| {
            local
                .get(connector)
                .filter(|l| l.tasks.contains_key(&task))
                .map(|l| l.config.clone())
        })
    }

    /// Makes what runs here `run`, as `stored` describes each connector: stops what is
    /// not in it, starts what is missing. Units of a connector that is not stored (deleted
    /// meanwhile) or whose config no longer plans are logged and left out.
    pub(super) async fn apply(
        &self,
        run: &BTreeSet<Unit>,
        stored: &BTreeMap<String, StoredConnector>,
    ) -> BTreeSet<Unit> {
        let gone: Vec<Unit> = self
            .owned()
            .into_iter()
            .filter(|u| !run.contains(u))
            .collect();
        self.stop(&gone).await;
        let mut by_connector: BTreeMap<&str, Vec<&Unit>> = BTreeMap::new();
        for u in run {
            by_connector
                .entry(u.connector.as_str())
                .or_default()
                .push(u);
        }
        let mut started = BTreeSet::new();
        for (name, units) in by_connector {
            let Some(stored) = stored.get(name) else {
                tracing::warn!(connector = %name, "assigned a connector that is not in the config topic (deleted meanwhile?); skipped");
                continue;
            };
            let have = self.owned();
            let missing: Vec<&Unit> = units.into_iter().filter(|u| !have.contains(u)).collect();
            if missing.is_empty() {
                continue;
            }
            match self.start(name, stored, &missing).await {
                Ok(()) => started.extend(missing.into_iter().cloned()),
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "the connector's assigned work did not start");
                }
            }
        }
        started
    }

    /// Starts `units` of connector `name` as `stored` describes it.
    async fn start(
        &self,
        name: &str,
        stored: &StoredConnector,
        units: &[&Unit],
    ) -> Result<(), HerderError> {
        let plugin = Worker::plugin_of(&stored.config)?;
        let planned = self.worker.plan_off_thread(plugin, &stored.config).await?;
        let topics = Arc::clone(&planned.topics);
        let mut specs: BTreeMap<u32, _> = planned.specs.into_iter().map(|s| (s.task, s)).collect();
        let policy = self.worker.policy();
        let status = self.status.clone();
        self.with(|local| {
            let entry = local.entry(name.to_owned()).or_default();
            entry.config.clone_from(&stored.config);
            entry.target = Some(stored.target);
            if let Some(first) = units.iter().filter_map(|u| u.task).min() {
                entry.topics.push((first, Arc::clone(&topics)));
            }
            for u in units {
                match u.task {
                    None => {
                        crate::telemetry::live().unit_up(name, None);
                        entry.connector = true;
                        self.worker
                            .report_connector_to(name, stored.target, status.clone());
                    }
                    Some(task) => {
                        let Some(spec) = specs.remove(&task) else {
                            tracing::warn!(connector = %name, task, "assigned a task the connector's config does not make; skipped");
                            continue;
                        };
                        let supervisor = ConnectorSupervisor::new(
                            name.to_owned(),
                            vec![spec],
                            policy,
                            stored.target,
                            status.clone(),
                        )
                        .start();
                        crate::telemetry::live().unit_up(name, Some(task));
                        entry.tasks.insert(task, supervisor);
                    }
                }
            }
        });
        tracing::info!(connector = %name, units = ?units.iter().map(ToString::to_string).collect::<Vec<_>>(), "assigned work started");
        self.count();
        Ok(())
    }

    /// Stops `units` (each task commits what it has), all at once, each within the grace
    /// period.
    pub(super) async fn stop(&self, units: &[Unit]) {
        if units.is_empty() {
            return;
        }
        let supervisors = self.with(|local| {
            let mut out = Vec::new();
            for u in units {
                let Some(entry) = local.get_mut(&u.connector) else {
                    continue;
                };
                match u.task {
                    None => entry.connector = false,
                    Some(t) => out.extend(entry.tasks.remove(&t).map(|s| (u.clone(), s))),
                }
                let any_left = entry.connector || !entry.tasks.is_empty();
                crate::telemetry::live().unit_down(&u.connector, u.task, any_left);
                if !any_left {
                    local.remove(&u.connector);
                }
            }
            out
        });
        let grace = self.grace;
        let mut all = tokio::task::JoinSet::new();
        for (unit, supervisor) in supervisors {
            all.spawn(async move {
                if tokio::time::timeout(grace, supervisor.send(StopConnector))
                    .await
                    .is_err()
                {
                    tracing::warn!(unit = %unit, "task did not stop within the grace period");
                }
            });
        }
        while all.join_next().await.is_some() {}
        tracing::info!(units = ?units.iter().map(ToString::to_string).collect::<Vec<_>>(), "work stopped");
        self.count();
    }

    /// Stops everything (membership lost, or the worker is stopping).
    pub(super) async fn stop_all(&self) {
        let all: Vec<Unit> = self.owned().into_iter().collect();
        self.stop(&all).await;
    }

    /// A connector changed in the config topic: its local tasks take its new config
    /// (restarted with it) or target state; a deleted connector's tasks stop.
    pub(super) async fn reconcile(&self, name: &str, stored: Option<&StoredConnector>) {
        let (config, target, units) = self.with(|local| match local.get(name) {
            None => (None, None, Vec::new()),
            Some(l) => {
                let mut units: Vec<Unit> = l.tasks.keys().map(|t| Unit::task(name, *t)).collect();
                if l.connector {
                    units.push(Unit::connector(name));
                }
                (Some(l.config.clone()), l.target, units)
            }
        });
        let Some(config) = config else {
            return;
        };
        let Some(stored) = stored else {
            self.stop(&units).await;
            return;
        };
        if config != stored.config {
            // Restarted with the new config; tasks past the new count stay stopped until
            // the next assignment says otherwise.
            self.stop(&units).await;
            let count = stored.tasks.unwrap_or(0);
            let keep: Vec<&Unit> = units
                .iter()
                .filter(|u| u.task.is_none_or(|t| t < count))
                .collect();
            if let Err(e) = self.start(name, stored, &keep).await {
                tracing::error!(connector = %name, error = %e, "the connector's new config did not start");
            }
        } else if target != Some(stored.target) {
            let supervisors = self.with(|local| {
                local.get_mut(name).map(|l| {
                    l.target = Some(stored.target);
                    l.tasks.values().cloned().collect::<Vec<_>>()
                })
            });
            for s in supervisors.unwrap_or_default() {
                s.do_send(SetTarget(stored.target));
            }
            if units.iter().any(|u| u.task.is_none()) {
                self.worker
                    .report_connector_to(name, stored.target, self.status.clone());
            }
        }
    }

    /// The statuses of connector `name`'s tasks running here.
    pub(super) async fn statuses(&self, name: &str) -> Vec<TaskStatus> {
        let supervisors: Vec<Addr<ConnectorSupervisor>> = self.with(|local| {
            local
                .get(name)
                .map(|l| l.tasks.values().cloned().collect())
                .unwrap_or_default()
        });
        let mut out = Vec::new();
        for s in supervisors {
            if let Ok(mut statuses) = s.send(GetStatus).await {
                out.append(&mut statuses);
            }
        }
        out
    }

    /// Restarts a task running here; `None` when it does not run here.
    pub(super) async fn restart(&self, name: &str, task: u32) -> Option<bool> {
        let supervisor = self.with(|local| local.get(name)?.tasks.get(&task).cloned())?;
        supervisor.send(RestartTask(task)).await.ok()
    }

    /// `sluice_worker_connector_count` and `sluice_worker_task_count` (Kafka Connect's
    /// `connector-count` and `task-count` of this worker).
    fn count(&self) {
        let (connectors, tasks, present) = self.with(|local| {
            (
                local.values().filter(|l| l.connector).count(),
                local.values().map(|l| l.tasks.len()).sum::<usize>(),
                local.len(),
            )
        });
        metrics::gauge!("sluice_worker_connector_count").set(connectors as f64);
        metrics::gauge!("sluice_worker_task_count").set(tasks as f64);
        // As on a worker alone: connectors with any unit here.
        metrics::gauge!("sluice_connectors").set(present as f64);
    }
}
