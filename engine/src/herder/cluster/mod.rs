//! Cluster mode: workers with the same `group.id` share the work through Kafka's group
//! coordinator, as Kafka Connect's distributed herder does.
//!
//! Every worker follows the config topic (the source of truth) and the status topic. The
//! broker elects a leader among the group's members ([`sluice_group`]); the leader reads
//! the config topic as far as every member has, splits the connectors and their tasks
//! over the members ([`protocol::plan`]: balanced, sticky, two-round revocation) and hands
//! each member its share with the config offset it was computed at. A member reads the
//! config topic up to that offset, stops what it lost, starts what it gained
//! ([`units::Units`]), and joins again if it had to give work back so the next round can
//! hand that work on. Config writes are the leader's, through a transactional producer
//! claimed at each election (a deposed leader is fenced); the other workers forward writes
//! to it. A worker that loses its membership (evicted, or cut off from the coordinator for
//! a session timeout) stops all its work, and exactly-once tasks that moved meanwhile have
//! fenced its producers already (per-task transactional ids).

mod delay;
pub(crate) mod herder;
pub mod protocol;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_group::{Event, JoinedMember, Member, MemberConfig};
use tokio::sync::{mpsc, watch};

use self::protocol::{AssignError, Assignment, Metadata, Unit};
use self::units::Units;
use super::worker::Worker;
use super::HerderError;
use crate::storage::configs::{ConfigStore, Followed, StoredConnector};
use crate::storage::status_view::StatusView;
use crate::task::supervisor::TargetState;

pub use self::herder::Distributed;

/// How long a member waits to read the config topic as far as an assignment says.
const CATCH_UP: Duration = Duration::from_secs(10);

/// What this worker knows of the group.
#[derive(Debug, Clone, Default)]
struct View {
    generation: i32,
    leader_id: Option<String>,
    leader_url: Option<String>,
    is_leader: bool,
    /// Set once the first assignment has been applied.
    ready: bool,
    /// Set when the member gave up (the worker cannot be part of the cluster).
    failed: Option<String>,
}

/// How often a worker records the topics its tasks started using (KIP-558).
const TOPIC_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The cluster as this worker takes part in it.
pub struct Cluster {
    worker: Worker,
    store: ConfigStore,
    followed: Followed,
    statuses: StatusView,
    units: Units,
    member: tokio::sync::Mutex<Option<Member>>,
    /// Whether the membership is current, by the member's own clock (set once it runs).
    standing: Arc<std::sync::OnceLock<sluice_group::Standing>>,
    metadata: watch::Sender<bytes::Bytes>,
    view: RwLock<View>,
    /// The group generation of the last assignment, written into status records.
    generation: Arc<AtomicU64>,
    /// This worker's REST URL, as advertised to the others.
    url: String,
    transactional_id: String,
    /// Each connector as this worker last saw it in the config topic, to name changes.
    seen: std::sync::Mutex<BTreeMap<String, StoredConnector>>,
    /// As the leader: the work of departed workers held back for a while.
    delay: std::sync::Mutex<delay::Delay>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("worker_id", &self.worker.worker_id)
            .finish_non_exhaustive()
    }
}

/// The group member's settings from the worker config.
fn member_config(worker: &Worker) -> Result<MemberConfig, HerderError> {
    let parsed = &worker.config.parsed;
    let ms = |key: &str, default: i64| {
        Duration::from_millis(u64::try_from(parsed.long(key).unwrap_or(default)).unwrap_or(0))
    };
    // The member's connection is secured like every other client of the worker; files
    // are checked now, so a wrong path fails the start, not every join after it.
    let security = sluice_group::Security::from_client_props(&worker.config.security_props())
        .map_err(|e| HerderError::BadConfig(format!("the cluster's group member: {e}")))?;
    security
        .check()
        .map_err(|e| HerderError::BadConfig(format!("the cluster's group member: {e}")))?;
    Ok(MemberConfig {
        bootstrap: worker
            .config
            .bootstrap_servers
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        group_id: worker.group_id.clone(),
        client_id: format!("sluice-{}", worker.worker_id),
        protocol_type: protocol::PROTOCOL_TYPE.into(),
        protocol_name: protocol::PROTOCOL_NAME.into(),
        session_timeout: ms("session.timeout.ms", 6000),
        rebalance_timeout: ms("rebalance.timeout.ms", 60_000),
        heartbeat_interval: ms("heartbeat.interval.ms", 1000),
        request_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(100),
        security,
    })
}

/// What a worker of the cluster checks before writing a state record (Kafka Connect's
/// `putSafe`, plus the membership): a worker whose membership has lapsed writes none (its
/// work may run elsewhere already), and an UNASSIGNED or FAILED record does not overwrite
/// another worker's record of a newer generation (a late write of a worker that lost the
/// work). Readers take the latest record, so this is where stale writes are stopped.
fn status_guard(
    me: &str,
    view: &StatusView,
    standing: &Arc<std::sync::OnceLock<sluice_group::Standing>>,
) -> crate::storage::status::WriteGuard {
    let (me, view, standing) = (me.to_owned(), view.clone(), Arc::clone(standing));
    Arc::new(move |key: &str, state: &str, generation: u64| {
        let standing = standing
            .get()
            .ok_or_else(|| "this worker has not joined the cluster".to_owned())?;
        standing
            .current()
            .map_err(|e| format!("membership not current: {e}"))?;
        if matches!(state, "UNASSIGNED" | "FAILED") {
            if let Some(kept) = view.by_key(key) {
                if kept.worker_id != me && kept.generation > generation {
                    return Err(format!(
                        "{} holds it at generation {}, this worker is at {generation}",
                        kept.worker_id, kept.generation
                    ));
                }
            }
        }
        Ok(())
    })
}

/// This worker's REST URL for the others: `rest.advertised.*`, else its first listener.
fn advertised_url(worker: &Worker) -> String {
    let parsed = &worker.config.parsed;
    let listener = worker.config.listeners.first();
    let scheme = parsed
        .string("rest.advertised.listener")
        .unwrap_or("http")
        .to_ascii_lowercase();
    let host = parsed
        .string("rest.advertised.host.name")
        .map(str::to_owned)
        .or_else(|| listener.map(|l| l.ip().to_string()))
        .unwrap_or_else(|| "localhost".into());
    let port = parsed
        .long("rest.advertised.port")
        .or_else(|| listener.map(|l| i64::from(l.port())))
        .unwrap_or(8083);
    format!("{scheme}://{host}:{port}")
}

/// The work the config topic describes: every connector, and the tasks of those not
/// STOPPED (KIP-875: a stopped connector has none).
fn work(stored: &BTreeMap<String, StoredConnector>) -> BTreeSet<Unit> {
    let mut work = BTreeSet::new();
    for (name, c) in stored {
        work.insert(Unit::connector(name));
        if c.target != TargetState::Stopped {
            for t in 0..c.tasks.unwrap_or(0) {
                work.insert(Unit::task(name, t));
            }
        }
    }
    work
}

impl Cluster {
    /// Whether task `task` of `connector` may take its transactional id here, judged on
    /// the config topic read to its end (Kafka Connect's `verifyTaskGenerationAndOwnership`):
    /// the leader fences the tasks a change ends (fewer tasks, STOPPED, deleted) before it
    /// writes that change, so a fenced task must not take its id back on a config it has
    /// not caught up with. The task must be this worker's, in the stored task count, of a
    /// connector that is not STOPPED, with the config its unit was started with.
    async fn verify_task(&self, connector: &str, task: u32) -> Result<(), String> {
        let end = self
            .followed
            .end_offset()
            .await
            .map_err(|e| format!("the config topic's end is unknown: {e}"))?;
        if !self.catch_up(end).await {
            return Err(format!(
                "the config topic was not read to its end ({} of {end}) within {CATCH_UP:?}",
                self.followed.position()
            ));
        }
        let stored = self
            .followed
            .get(connector)
            .ok_or_else(|| format!("connector {connector} is not in the config topic (deleted)"))?;
        if stored.target == TargetState::Stopped {
            return Err(format!("connector {connector} is STOPPED"));
        }
        if task >= stored.tasks.unwrap_or(0) {
            return Err(format!(
                "connector {connector} has {} tasks now",
                stored.tasks.unwrap_or(0)
            ));
        }
        match self.units.started_config(connector, task) {
            None => Err(format!(
                "task {task} of {connector} is not in this worker's assignment (moved, or being stopped)"
            )),
            Some(config) if config != stored.config => Err(format!(
                "connector {connector}'s config changed since task {task} started here"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Connects once to the group's coordinator with the worker's addresses, TLS and SASL
    /// settings: a refused handshake or login is a configuration error; a broker that does
    /// not answer yet is only logged (the member keeps trying once started).
    pub async fn check_membership(worker: &Worker) -> Result<(), HerderError> {
        let config = member_config(worker)?;
        match Member::probe(&config).await {
            Ok(()) => Ok(()),
            Err(
                e @ (sluice_group::GroupError::Tls { .. }
                | sluice_group::GroupError::Sasl(_)
                | sluice_group::GroupError::Config(_)),
            ) => Err(HerderError::BadConfig(format!(
                "the cluster's group member cannot connect: {e}"
            ))),
            Err(e) => {
                tracing::warn!(group = %worker.group_id, worker = %worker.worker_id, error = %e, "the group coordinator does not answer yet; joining anyway");
                Ok(())
            }
        }
    }

    /// Joins the cluster: follows the config and status topics, starts the group member,
    /// and handles what it says from then on (on the actix system).
    pub fn start(
        worker: Worker,
        store: ConfigStore,
        status_topic: &str,
    ) -> Result<Arc<Cluster>, HerderError> {
        let internal = |what: &str, e: String| HerderError::Internal(format!("{what}: {e}"));
        let member_config = member_config(&worker)?;
        // Tasks take their transactional id only while this worker's membership is current
        // and their task is in its assignment.
        let standing: Arc<std::sync::OnceLock<sluice_group::Standing>> = Arc::default();
        let units_slot: Arc<std::sync::OnceLock<std::sync::Weak<Cluster>>> = Arc::default();
        let (member_slot, cluster_slot) = (Arc::clone(&standing), Arc::clone(&units_slot));
        let worker = worker.with_claim_guard(crate::kafka::producer::ClaimGuard::new(
            move |connector, task| {
                let standing = member_slot.get().cloned();
                let cluster = cluster_slot.get().and_then(std::sync::Weak::upgrade);
                let connector = connector.to_owned();
                Box::pin(async move {
                    let not_joined = || "this worker has not joined the cluster yet".to_owned();
                    let standing = standing.ok_or_else(not_joined)?;
                    let cluster = cluster.ok_or_else(not_joined)?;
                    standing.current()?;
                    cluster.verify_task(&connector, task).await?;
                    // The check read the config topic: still current after it?
                    standing.current()
                })
            },
        ));
        let (changes, mut changed) = mpsc::unbounded_channel();
        let followed = store
            .follow(changes)
            .map_err(|e| internal("following the config topic", e.to_string()))?;
        let statuses =
            StatusView::follow(status_topic, &worker.config.kafka_client_props("consumer."))
                .map_err(|e| internal("following the status topic", e))?;
        let grace = Duration::from_millis(
            u64::try_from(
                worker
                    .config
                    .parsed
                    .long("task.shutdown.graceful.timeout.ms")
                    .unwrap_or(5000),
            )
            .unwrap_or(5000),
        );
        let scheduled_delay = Duration::from_millis(
            u64::try_from(
                worker
                    .config
                    .parsed
                    .long("scheduled.rebalance.max.delay.ms")
                    .unwrap_or(0),
            )
            .unwrap_or(0),
        );
        let url = advertised_url(&worker);
        let transactional_id = format!("sluice-cluster-{}", worker.group_id);
        let (metadata, metadata_rx) = watch::channel(bytes::Bytes::new());
        let generation = Arc::new(AtomicU64::new(0));
        let cluster = Arc::new(Cluster {
            units: Units::new(
                worker.clone(),
                grace,
                Arc::clone(&generation),
                status_guard(&worker.worker_id, &statuses, &standing),
            ),
            generation,
            worker,
            store,
            followed,
            statuses,
            member: tokio::sync::Mutex::new(None),
            standing: Arc::clone(&standing),
            metadata,
            view: RwLock::new(View::default()),
            url,
            transactional_id,
            seen: std::sync::Mutex::default(),
            delay: std::sync::Mutex::new(delay::Delay::new(scheduled_delay)),
        });
        let _ = units_slot.set(Arc::downgrade(&cluster));
        cluster.publish();
        let (member, mut events) = Member::start(member_config, metadata_rx)
            .map_err(|e| internal("joining the group", e.to_string()))?;
        let _ = standing.set(member.standing());
        if let Ok(mut slot) = cluster.member.try_lock() {
            *slot = Some(member);
        }
        tracing::info!(group = %cluster.worker.group_id, worker = %cluster.worker.worker_id, url = %cluster.url, "joining the cluster");
        let me = Arc::clone(&cluster);
        // New active topics are recorded within a second of their first use, apart from
        // the event loop (a slow status topic must not hold up a rebalance).
        let reporter = Arc::downgrade(&cluster);
        actix::spawn(async move {
            let mut tick = tokio::time::interval(TOPIC_REPORT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = reporter.upgrade() else { break };
                me.units.report_topics(&me.statuses).await;
            }
        });
        actix::spawn(async move {
            let mut last_work: Option<BTreeSet<Unit>> = None;
            // The held work's deadline this loop has joined again for already.
            let mut woken_for = None;
            loop {
                let wake = me
                    .delay
                    .lock()
                    .ok()
                    .and_then(|d| d.deadline())
                    .filter(|d| Some(*d) != woken_for);
                let sleep = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => {
                        woken_for = wake;
                        me.rejoin("scheduled.rebalance.max.delay.ms has passed: handing out the work of departed workers").await;
                    }
                    event = events.recv() => match event {
                        Some(event) => me.on_event(event, &mut last_work).await,
                        None => break,
                    },
                    name = changed.recv() => match name {
                        Some(name) => me.on_config_change(&name, &mut last_work).await,
                        None => break,
                    },
                }
            }
            tracing::info!("cluster membership ended");
        });
        Ok(cluster)
    }

    /// `Err` with the reason while this worker's membership has lapsed (a stall past the
    /// session timeout) and its event loop has not caught up yet.
    pub(crate) fn membership_current(&self) -> Result<(), String> {
        self.standing.get().map_or_else(
            || Err("not joined yet".to_owned()),
            sluice_group::Standing::current,
        )
    }

    fn view(&self) -> View {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut View)) {
        if let Ok(mut v) = self.view.write() {
            f(&mut v);
        }
    }

    /// The metadata this worker joins with: what it runs and how far it has read.
    fn publish(&self) {
        let meta = Metadata {
            version: 1,
            worker_id: self.worker.worker_id.clone(),
            url: self.url.clone(),
            config_offset: self.followed.position(),
            owned: self.units.owned(),
        };
        self.metadata.send_replace(protocol::encode(&meta));
    }

    /// Tells the member this worker has acted on what it was told and its metadata says
    /// what it runs now: it may join again (never with stale metadata, which would let the
    /// leader hand out work still running here).
    async fn ack(&self, event: u64) {
        if let Some(member) = self.member.lock().await.as_ref() {
            member.ack(event);
        }
    }

    async fn rejoin(&self, reason: &str) {
        self.publish();
        if let Some(member) = self.member.lock().await.as_ref() {
            member.rejoin(reason);
        }
    }

    /// Waits until the config topic has been read up to `offset`.
    async fn catch_up(&self, offset: i64) -> bool {
        let deadline = Instant::now() + CATCH_UP;
        while self.followed.position() < offset {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    async fn on_event(&self, event: Event, last_work: &mut Option<BTreeSet<Unit>>) {
        match event {
            Event::Assign {
                generation,
                members,
                reply,
            } => {
                let (assignments, work) = self.assign(generation, members).await;
                *last_work = work;
                let _ = reply.send(assignments);
            }
            Event::Assigned(a) => {
                let event = a.event;
                self.on_assigned(a).await;
                self.ack(event).await;
            }
            Event::Rebalancing { reason } => {
                tracing::info!(worker = %self.worker.worker_id, reason = %reason, "rebalance started; work continues meanwhile");
            }
            Event::Lost { reason, event } => {
                tracing::warn!(worker = %self.worker.worker_id, reason = %reason, "cluster membership lost: stopping all work here (it may run elsewhere now)");
                self.update(|v| {
                    v.is_leader = false;
                    v.leader_id = None;
                    v.leader_url = None;
                });
                self.store.release().await;
                self.units.stop_all().await;
                self.publish();
                self.ack(event).await;
            }
            Event::Failed { reason } => {
                tracing::error!(worker = %self.worker.worker_id, reason = %reason, "this worker cannot take part in the cluster; all work here stops");
                self.update(|v| {
                    v.failed = Some(reason);
                    v.is_leader = false;
                    v.leader_id = None;
                    v.leader_url = None;
                });
                self.store.release().await;
                self.units.stop_all().await;
            }
        }
    }

    /// The leader's part of a rebalance: every member's share.
    async fn assign(
        &self,
        generation: i32,
        members: Vec<JoinedMember>,
    ) -> (Vec<(String, bytes::Bytes)>, Option<BTreeSet<Unit>>) {
        let mut metas = BTreeMap::new();
        for m in &members {
            match protocol::decode::<Metadata>("metadata", &m.metadata) {
                Ok(meta) => {
                    metas.insert(m.member_id.clone(), meta);
                }
                Err(e) => {
                    // Still a member: it gets a share computed as if it ran nothing.
                    tracing::warn!(member = %m.member_id, error = %e, "a member's metadata is unreadable");
                    metas.insert(
                        m.member_id.clone(),
                        Metadata {
                            version: 1,
                            worker_id: m.member_id.clone(),
                            url: String::new(),
                            config_offset: -1,
                            owned: BTreeSet::new(),
                        },
                    );
                }
            }
        }
        let highest = metas.values().map(|m| m.config_offset).max().unwrap_or(0);
        let caught_up = self.catch_up(highest).await;
        let offset = self.followed.position();
        let reply =
            |error: Option<AssignError>,
             plans: &BTreeMap<String, sluice_group::assign::Plan<Unit>>| {
                metas
                    .keys()
                    .map(|id| {
                        let plan = plans.get(id);
                        let a = Assignment {
                            version: 1,
                            error,
                            leader: self.worker.worker_id.clone(),
                            leader_url: self.url.clone(),
                            config_offset: offset,
                            run: plan.map(|p| p.run.clone()).unwrap_or_default(),
                            revoke: plan.map(|p| p.revoke.clone()).unwrap_or_default(),
                        };
                        (id.clone(), protocol::encode(&a))
                    })
                    .collect::<Vec<_>>()
            };
        if !caught_up {
            tracing::warn!(generation, highest, offset, "the leader could not read the config topic as far as a member has; everyone joins again");
            return (
                reply(Some(AssignError::ConfigMismatch), &BTreeMap::new()),
                None,
            );
        }
        let work = work(&self.followed.all());
        let owned: BTreeSet<Unit> = metas.values().flat_map(|m| m.owned.clone()).collect();
        let (held, deadline) = self.delay.lock().map_or_else(
            |_| (BTreeSet::new(), None),
            |mut d| {
                (
                    d.hold(Instant::now(), metas.len(), &owned, &work),
                    d.deadline(),
                )
            },
        );
        metrics::gauge!("sluice_cluster_held_units").set(held.len() as f64);
        if let Some(deadline) = deadline.filter(|_| !held.is_empty()) {
            tracing::info!(
                generation,
                held = held.len(),
                hand_out_in_ms = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
                "work of departed workers held for their return (scheduled.rebalance.max.delay.ms)"
            );
        }
        let offered: BTreeSet<Unit> = work.difference(&held).cloned().collect();
        let plans = protocol::plan(&metas, &offered);
        if let Ok(mut d) = self.delay.lock() {
            let run = plans.values().flat_map(|p| p.run.clone()).collect();
            d.planned(metas.len(), run, held);
        }
        for (id, plan) in &plans {
            let worker = metas.get(id).map_or(id.as_str(), |m| m.worker_id.as_str());
            tracing::info!(generation, worker = %worker, run = plan.run.len(), revoke = plan.revoke.len(), "assignment");
        }
        metrics::gauge!("sluice_cluster_members").set(metas.len() as f64);
        (reply(None, &plans), Some(work))
    }

    async fn on_assigned(&self, member: sluice_group::Assignment) {
        let a = match protocol::decode::<Assignment>("assignment", &member.data) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "the leader's assignment is unreadable; joining again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.rejoin("unreadable assignment").await;
                return;
            }
        };
        if let Some(error) = a.error {
            tracing::warn!(?error, "the leader assigned nothing; joining again");
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.rejoin("config mismatch").await;
            return;
        }
        let leads = member.is_leader();
        self.generation.store(
            u64::try_from(member.generation).unwrap_or(0),
            Ordering::SeqCst,
        );
        self.update(|v| {
            v.generation = member.generation;
            v.leader_id = Some(a.leader.clone());
            v.leader_url = Some(a.leader_url.clone());
            v.is_leader = leads;
        });
        if leads {
            if let Err(e) = self.store.claim(self.transactional_id.clone()).await {
                tracing::error!(error = %e, "elected leader, but the config topic could not be claimed; the next config write claims it again");
            }
        } else {
            self.store.release().await;
            if let Ok(mut d) = self.delay.lock() {
                d.forget();
            }
        }
        let revoked: Vec<Unit> = a.revoke.iter().cloned().collect();
        self.units.stop(&revoked).await;
        if !self.catch_up(a.config_offset).await {
            tracing::warn!(
                offset = a.config_offset,
                position = self.followed.position(),
                "the config topic could not be read as far as the assignment; joining again"
            );
            self.rejoin("behind the config topic").await;
            return;
        }
        let started = self.units.apply(&a.run, &self.followed.all()).await;
        self.update(|v| v.ready = true);
        tracing::info!(
            generation = member.generation,
            leader = %a.leader,
            leads,
            runs = a.run.len(),
            started = started.len(),
            revoked = revoked.len(),
            "assignment applied"
        );
        self.publish();
        if !revoked.is_empty() {
            // The revoked work has stopped: the next round hands it on.
            self.rejoin("revoked work stopped").await;
        }
    }

    async fn on_config_change(&self, name: &str, last_work: &mut Option<BTreeSet<Unit>>) {
        let stored = self.followed.get(name);
        let change = self.note_change(name, stored.as_ref());
        self.units.reconcile(name, stored.as_ref()).await;
        self.publish();
        if !self.view().is_leader {
            return;
        }
        // The leader rebalances when the set of work changed (a connector created or
        // deleted, a task count or STOPPED changed). A connector deleted and created again
        // under its name leaves the set as it was (read after both), yet its new units run
        // nowhere: a creation or a deletion always rebalances.
        let now = work(&self.followed.all());
        let born_or_gone = matches!(change, Some("created" | "deleted"));
        if born_or_gone || last_work.as_ref() != Some(&now) {
            tracing::info!(connector = %name, "the cluster's work changed; rebalancing");
            *last_work = Some(now);
            self.rejoin("config changed").await;
        }
    }

    /// Logs what changed about connector `name` in the config topic (written by the
    /// leader through any worker, or by a tool writing Kafka Connect's records), and says
    /// what (`None`: nothing this worker had not seen).
    fn note_change(&self, name: &str, now: Option<&StoredConnector>) -> Option<&'static str> {
        let Ok(mut seen) = self.seen.lock() else {
            return None;
        };
        let before = match now {
            Some(s) => seen.insert(name.to_owned(), s.clone()),
            None => seen.remove(name),
        };
        let change = match (&before, now) {
            (None, Some(_)) => "created",
            (Some(_), None) => "deleted",
            (Some(b), Some(n)) if b.config != n.config => "updated",
            (Some(b), Some(n)) if b.target != n.target => "target",
            _ => return None,
        };
        let target = now.map(|n| format!("{:?}", n.target)).unwrap_or_default();
        tracing::info!(connector = %name, change, target = %target, "connector changed in the config topic");
        Some(change)
    }

    /// Leaves the group (its work moves at once) after stopping everything here.
    pub async fn leave(&self) {
        self.units.stop_all().await;
        self.store.release().await;
        if let Some(member) = self.member.lock().await.take() {
            member.leave().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_connector_has_no_tasks_in_the_work() {
        let stored = BTreeMap::from([
            (
                "a".to_owned(),
                StoredConnector {
                    config: BTreeMap::new(),
                    target: TargetState::Started,
                    tasks: Some(2),
                },
            ),
            (
                "b".to_owned(),
                StoredConnector {
                    config: BTreeMap::new(),
                    target: TargetState::Stopped,
                    tasks: Some(3),
                },
            ),
        ]);
        let w = work(&stored);
        assert_eq!(
            w,
            BTreeSet::from([
                Unit::connector("a"),
                Unit::task("a", 0),
                Unit::task("a", 1),
                Unit::connector("b"),
            ])
        );
    }
}
