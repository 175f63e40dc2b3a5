//! The group member: coordinator discovery, the join/sync rounds, heartbeats and leaving,
//! on a thread of its own.
//!
//! The states follow the classic group protocol (KIP-345 static membership aside):
//! discover the coordinator, join (the broker may first answer `MEMBER_ID_REQUIRED` with an
//! id to rejoin with), and if elected leader ask the owner for the assignment; sync; then
//! heartbeat every `heartbeat.interval.ms` until the broker says a rebalance started (join
//! again, keeping the work: the owner's protocol is cooperative) or that this member is no
//! longer known (the work must stop: [`Event::Lost`]). A member that cannot reach its
//! coordinator for a whole session timeout treats its membership as lost too, as the broker
//! will have done by then: Kafka Connect's self-fencing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn::Connection;
use crate::{GroupError, Security};

/// The highest versions used: librdkafka's own consumer group caps (`rdkafka_request.c`),
/// which every broker from Kafka 2.x to 4.1 serves. Newer versions add the flexible
/// encoding, a reason, static-membership details and the chosen protocol echoed back, none
/// of which the member needs; and librdkafka's mock cluster, which the unit tests run
/// against, closes the connection on flexible JoinGroup and SyncGroup requests.
const JOIN_GROUP_MAX: i16 = 5;
const SYNC_GROUP_MAX: i16 = 3;
const HEARTBEAT_MAX: i16 = 3;
const LEAVE_GROUP_MAX: i16 = 1;
const FIND_COORDINATOR_MAX: i16 = 2;

/// How a member joins: Kafka Connect's distributed keys, with Sluice's protocol names.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// `host:port` of brokers to ask for the coordinator.
    pub bootstrap: Vec<String>,
    pub group_id: String,
    /// Sent with every request, and the prefix the broker gives member ids.
    pub client_id: String,
    /// The group's protocol type: members of another type are refused by the broker.
    pub protocol_type: String,
    /// The one protocol this member offers.
    pub protocol_name: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The bound on any request but a JoinGroup or SyncGroup (which wait for the rebalance).
    pub request_timeout: Duration,
    /// The wait before trying again after a failure.
    pub retry_backoff: Duration,
    /// TLS and SASL for every connection the member opens.
    pub security: Security,
}

impl MemberConfig {
    fn check(&self) -> Result<(), GroupError> {
        if self.bootstrap.is_empty() {
            return Err(GroupError::Config("no bootstrap servers".into()));
        }
        if self.group_id.is_empty() {
            return Err(GroupError::Config("group.id is empty".into()));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(GroupError::Config(format!(
                "heartbeat.interval.ms ({} ms) must be below session.timeout.ms ({} ms)",
                self.heartbeat_interval.as_millis(),
                self.session_timeout.as_millis()
            )));
        }
        Ok(())
    }
}

/// A member as the leader sees it when computing the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub metadata: Bytes,
}

/// What a completed rebalance gave this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i32,
    pub member_id: String,
    pub leader_id: String,
    /// The owner's assignment, as the leader encoded it.
    pub data: Bytes,
    /// The number to acknowledge it with ([`Member::ack`]).
    pub event: u64,
}

impl Assignment {
    /// Whether this member leads the group in this generation.
    pub fn is_leader(&self) -> bool {
        self.member_id == self.leader_id
    }
}

/// What the member tells its owner.
#[derive(Debug)]
pub enum Event {
    /// This member leads the new generation: compute every member's assignment and send
    /// it back (member id, bytes) before the rebalance timeout. Dropping `reply` makes the
    /// member join again.
    Assign {
        generation: i32,
        members: Vec<JoinedMember>,
        reply: oneshot::Sender<Vec<(String, Bytes)>>,
    },
    /// A rebalance completed.
    Assigned(Assignment),
    /// The broker started a rebalance; the member is joining again. Work may continue
    /// until the next assignment says otherwise.
    Rebalancing { reason: String },
    /// The membership is gone (evicted, or the coordinator unreachable for a session
    /// timeout): stop all work now; another member may be running it. The member joins
    /// again by itself.
    Lost {
        reason: String,
        /// The number to acknowledge it with ([`Member::ack`]).
        event: u64,
    },
    /// The member gave up and stopped (a configuration the broker refuses, such as a group
    /// whose members speak another protocol type).
    Failed { reason: String },
}

enum Command {
    Rejoin(String),
    Leave(oneshot::Sender<()>),
    /// The owner has acted on the `Assigned` or `Lost` of this number: its metadata says
    /// what it runs now, so the member may join again (once the latest one is acknowledged).
    Ack(u64),
}

/// Whether a member's membership is current: it holds an assignment and has heard from
/// its coordinator within a session timeout (past that, the broker has evicted it). A task
/// asks before it takes a resource another member may hold now (a transactional id).
#[derive(Debug, Clone)]
pub struct Standing(Arc<StandingState>);

#[derive(Debug)]
struct StandingState {
    session: Duration,
    assigned: AtomicBool,
    last_contact: std::sync::Mutex<Instant>,
}

impl Standing {
    /// `Ok` while the membership is current, else why not.
    pub fn current(&self) -> Result<(), String> {
        if !self.0.assigned.load(Ordering::SeqCst) {
            return Err(
                "this worker holds no assignment (membership lost or not joined yet)".into(),
            );
        }
        let since = self
            .0
            .last_contact
            .lock()
            .map_or(Duration::MAX, |t| t.elapsed());
        if since >= self.0.session {
            return Err(format!(
                "no word from the group coordinator for {} ms (session {} ms): the membership has probably expired",
                since.as_millis(),
                self.0.session.as_millis()
            ));
        }
        Ok(())
    }
}

/// Acknowledges assignments and losses for a [`Member`] (a cloneable handle for the task
/// that handles its events).
#[derive(Debug, Clone)]
pub struct Acker(mpsc::UnboundedSender<Command>);

impl Acker {
    /// The owner has acted on the [`Event::Assigned`] or [`Event::Lost`] numbered `event`
    /// and its metadata is current: see [`Member::ack`].
    pub fn ack(&self, event: u64) {
        let _ = self.0.send(Command::Ack(event));
    }
}

/// The handle of a running member. Dropping it leaves the group.
#[derive(Debug)]
pub struct Member {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    standing: Standing,
}

impl Member {
    /// Connects once to the group's coordinator, as [`Member::start`]'s member would, and
    /// hangs up: checks addresses, TLS and credentials before joining. A refused TLS
    /// handshake or SASL login comes back as itself, not as "no broker answered".
    pub async fn probe(config: &MemberConfig) -> Result<(), GroupError> {
        config.check()?;
        find_coordinator(config).await.map(|_| ())
    }

    /// Starts the member on its own thread. `metadata` is read at each join, so the owner
    /// keeps it current (what it runs, how far it has read its configuration).
    pub fn start(
        config: MemberConfig,
        metadata: watch::Receiver<Bytes>,
    ) -> Result<(Member, mpsc::UnboundedReceiver<Event>), GroupError> {
        config.check()?;
        let standing = Standing(Arc::new(StandingState {
            session: config.session_timeout,
            assigned: AtomicBool::new(false),
            last_contact: std::sync::Mutex::new(Instant::now()),
        }));
        let shared = standing.clone();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GroupError::Config(format!("no runtime for the group member: {e}")))?;
        let thread = std::thread::Builder::new()
            .name(format!("group-{}", config.group_id))
            .spawn(move || {
                let mut run = Run {
                    config,
                    metadata,
                    commands: command_rx,
                    events: event_tx,
                    conn: None,
                    member_id: String::new(),
                    generation: -1,
                    assigned: false,
                    last_contact: Instant::now(),
                    failures: 0,
                    awaiting_ack: None,
                    told: 0,
                    rejoin_asked: None,
                    standing: shared,
                };
                runtime.block_on(run.main());
            })
            .map_err(|e| GroupError::Config(format!("no thread for the group member: {e}")))?;
        Ok((
            Member {
                commands,
                thread: Some(thread),
                standing,
            },
            events,
        ))
    }

    /// Tells the member the owner has acted on the [`Event::Assigned`] or [`Event::Lost`]
    /// numbered `event` (started and stopped what it said) and published metadata saying
    /// so. Until the latest one is acknowledged the member does not join again (it keeps
    /// heartbeating): a join with stale metadata would let the leader hand out work this
    /// worker still runs, as Kafka Connect avoids by joining from the herder's own thread.
    /// The number matters when an acknowledgement comes late, after the member stopped
    /// waiting for it: it must not stand for a later event.
    pub fn ack(&self, event: u64) {
        let _ = self.commands.send(Command::Ack(event));
    }

    /// Whether this membership is current, for whoever must know before acting.
    pub fn standing(&self) -> Standing {
        self.standing.clone()
    }

    /// A handle to [`Member::ack`] from elsewhere.
    pub fn acker(&self) -> Acker {
        Acker(self.commands.clone())
    }

    /// Joins again (a new configuration needs a new assignment, or revoked work has
    /// stopped and can be handed over).
    pub fn rejoin(&self, reason: impl Into<String>) {
        let _ = self.commands.send(Command::Rejoin(reason.into()));
    }

    /// Leaves the group (LeaveGroup, so the others rebalance at once instead of after a
    /// session timeout) and stops the member.
    pub async fn leave(mut self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            let _ = wait.await;
        }
        if let Some(thread) = self.thread.take() {
            // The member's loop has returned once `done` fired (or it had stopped before).
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let (done, _) = oneshot::channel();
            let _ = self.commands.send(Command::Leave(done));
        }
    }
}

/// Why a round did not end with an assignment.
enum Setback {
    /// Join again at once (a new member id, a rebalance restarted).
    Rejoin,
    /// The coordinator moved or the connection failed: find it again, after a backoff.
    Rediscover(String),
    /// The owner asked to leave meanwhile.
    Leave(oneshot::Sender<()>),
    /// Nothing will help: stop.
    Fatal(String),
}

struct Run {
    config: MemberConfig,
    metadata: watch::Receiver<Bytes>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    conn: Option<Connection>,
    member_id: String,
    generation: i32,
    /// Whether the owner holds an assignment it has not been told is lost.
    assigned: bool,
    /// The last response from the coordinator.
    last_contact: Instant,
    /// Setbacks in a row since the last assignment (for the backoff).
    failures: u32,
    /// Since when the owner has not acknowledged the last `Assigned` or `Lost` (see
    /// [`Member::ack`]).
    awaiting_ack: Option<Instant>,
    /// The number of the last `Assigned` or `Lost` sent to the owner.
    told: u64,
    /// A rejoin the owner asked for while a round was under way (its metadata had gone
    /// out, or the leader's assignment was made, before the change that prompted it): the
    /// member joins again once the round ends.
    rejoin_asked: Option<String>,
    standing: Standing,
}

impl Run {
    async fn main(&mut self) {
        loop {
            let setback = match self.round().await {
                Ok(_assignment) => {
                    self.failures = 0;
                    match self.heartbeats().await {
                        Ok(()) => continue,
                        Err(s) => s,
                    }
                }
                Err(s) => s,
            };
            match setback {
                Setback::Rejoin => {}
                Setback::Rediscover(reason) => {
                    tracing::warn!(group = %self.config.group_id, member = %self.member_id, reason = %reason, "group coordinator lost; finding it again");
                    self.conn = None;
                    self.check_session(&reason);
                    // Doubling up to 2 s: an unreachable cluster is not asked 10 times a second.
                    self.failures = self.failures.saturating_add(1);
                    let wait = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << self.failures.min(5))
                        .min(Duration::from_secs(2));
                    if let Some(done) = self.pause(wait).await {
                        return self.leave(done).await;
                    }
                }
                Setback::Leave(done) => return self.leave(done).await,
                Setback::Fatal(reason) => {
                    tracing::error!(group = %self.config.group_id, member = %self.member_id, reason = %reason, "group member stops");
                    self.lose(&reason);
                    let _ = self.events.send(Event::Failed { reason });
                    return;
                }
            }
        }
    }

    /// Waits `d`, unless the owner asks to leave meanwhile (returned).
    async fn pause(&mut self, d: Duration) -> Option<oneshot::Sender<()>> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return None,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Rejoin(_)) => {}
                    Some(Command::Ack(event)) => self.acked(event),
                    Some(Command::Leave(done)) => return Some(done),
                    None => {
                        let (done, _) = oneshot::channel();
                        return Some(done);
                    }
                },
            }
        }
    }

    /// Tells the owner its work is lost, once.
    fn lose(&mut self, reason: &str) {
        self.standing.0.assigned.store(false, Ordering::SeqCst);
        if std::mem::take(&mut self.assigned) {
            let event = self.tell();
            metrics::counter!("sluice_worker_membership_lost_total").increment(1);
            let _ = self.events.send(Event::Lost {
                reason: reason.to_owned(),
                event,
            });
        }
    }

    /// Numbers a new `Assigned` or `Lost` and waits for its acknowledgement from now on.
    fn tell(&mut self) -> u64 {
        self.told += 1;
        self.awaiting_ack = Some(Instant::now());
        self.told
    }

    /// An acknowledgement: of the latest event, it ends the wait; of an earlier one (late,
    /// the member has told the owner more since), it is ignored.
    fn acked(&mut self, event: u64) {
        if event == self.told {
            self.awaiting_ack = None;
        } else {
            tracing::debug!(group = %self.config.group_id, member = %self.member_id, event, latest = self.told, "a late acknowledgement, ignored");
        }
    }

    /// Past a session timeout without the coordinator, the broker has evicted this member.
    fn check_session(&mut self, reason: &str) {
        if self.last_contact.elapsed() >= self.config.session_timeout {
            self.lose(&format!(
                "no contact with the group coordinator for {} ms: {reason}",
                self.last_contact.elapsed().as_millis()
            ));
        }
    }

    /// An answer that does not end the membership to a request sent at `sent`: the
    /// coordinator had this member then (its session restarted when the request arrived,
    /// which is later). Counted from the send, never from the answer's arrival: a process
    /// stopped with an answer waiting on its socket reads it when it resumes, possibly a
    /// session after the coordinator evicted it.
    fn contact(&mut self, sent: Instant) {
        self.last_contact = self.last_contact.max(sent);
        if let Ok(mut t) = self.standing.0.last_contact.lock() {
            *t = (*t).max(sent);
        }
    }

    /// The coordinator's connection, taken out: it is put back after a call that got an
    /// answer, and dropped after one that did not (its stream may hold a late response).
    async fn connection(&mut self) -> Result<Connection, Setback> {
        if let Some(conn) = self.conn.take() {
            return Ok(conn);
        }
        let conn = find_coordinator(&self.config)
            .await
            .map_err(|e| Setback::Rediscover(e.to_string()))?;
        tracing::info!(group = %self.config.group_id, coordinator = %conn.addr(), "group coordinator found");
        Ok(conn)
    }

    /// One join and sync, racing the owner's commands (a leave aborts the round).
    async fn round(&mut self) -> Result<Assignment, Setback> {
        let started = Instant::now();
        let result = loop {
            // A round borrows `self` mutably; commands are polled in `join_sync`'s waits.
            match self.join_sync().await {
                Err(Setback::Rejoin) => continue,
                other => break other,
            }
        };
        if let Ok(a) = &result {
            metrics::counter!("sluice_worker_rebalances_total").increment(1);
            metrics::histogram!("sluice_worker_rebalance_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("sluice_worker_generation").set(f64::from(a.generation));
            metrics::gauge!("sluice_worker_is_leader").set(if a.is_leader() { 1.0 } else { 0.0 });
            metrics::gauge!("sluice_worker_last_rebalance_timestamp_seconds").set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            tracing::info!(group = %self.config.group_id, member = %a.member_id, generation = a.generation, leader = %a.leader_id, rebalance_ms = started.elapsed().as_millis() as u64, "joined the group");
        }
        result
    }

    /// Before a join: waits for the owner to acknowledge what it was last told, within the
    /// rebalance timeout (past it, joins anyway and says so).
    async fn wait_ack(&mut self) -> Result<(), Setback> {
        let Some(since) = self.awaiting_ack else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::from_std(since + self.config.rebalance_timeout);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(group = %self.config.group_id, member = %self.member_id, "the owner did not acknowledge its assignment within the rebalance timeout; joining anyway");
                    self.awaiting_ack = None;
                    return Ok(());
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Ack(event)) => {
                        self.acked(event);
                        if self.awaiting_ack.is_none() {
                            return Ok(());
                        }
                    }
                    Some(Command::Rejoin(_)) => {}
                    Some(Command::Leave(done)) => return Err(Setback::Leave(done)),
                    None => {
                        let (done, _) = oneshot::channel();
                        return Err(Setback::Leave(done));
                    }
                },
            }
        }
    }

    async fn join_sync(&mut self) -> Result<Assignment, Setback> {
        self.wait_ack().await?;
        // What was asked before this point is in the metadata read now.
        self.rejoin_asked = None;
        let config = self.config.clone();
        let metadata = self.metadata.borrow().clone();
        let member_id = self.member_id.clone();
        let wait = config.rebalance_timeout + config.request_timeout;
        let mut conn = self.connection().await?;
        let version = conn
            .version::<JoinGroupRequest>(JOIN_GROUP_MAX)
            .map_err(|e| Setback::Fatal(e.to_string()))?;
        let mut join = JoinGroupRequest::default();
        join.group_id = GroupId(StrBytes::from_string(config.group_id.clone()));
        join.session_timeout_ms = millis(config.session_timeout);
        join.rebalance_timeout_ms = millis(config.rebalance_timeout);
        join.member_id = StrBytes::from_string(member_id);
        join.protocol_type = StrBytes::from_string(config.protocol_type.clone());
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = StrBytes::from_string(config.protocol_name.clone());
        protocol.metadata = metadata;
        join.protocols = vec![protocol];
        let join_sent = Instant::now();
        let joined = race(
            &mut self.commands,
            &mut self.rejoin_asked,
            conn.call_at(&join, version, wait),
        )
        .await?;
        let joined = joined.map_err(|e| Setback::Rediscover(e.to_string()))?;
        self.conn = Some(conn);
        // Contact is noted once the answer is known not to end the membership, so
        // `Standing` never looks current in between.
        match ResponseError::try_from_code(joined.error_code) {
            None => self.contact(join_sent),
            Some(ResponseError::MemberIdRequired) => {
                self.member_id = joined.member_id.to_string();
                return Err(Setback::Rejoin);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                self.lose("the coordinator no longer knows this member");
                return Err(Setback::Rejoin);
            }
            Some(e) => return Err(self.classify("JoinGroup", e)),
        }
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let leader = joined.leader.to_string();
        let protocol_name = joined
            .protocol_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if protocol_name != self.config.protocol_name {
            return Err(Setback::Fatal(format!(
                "the group chose protocol {protocol_name:?}; this member speaks {:?}",
                self.config.protocol_name
            )));
        }
        let assignments = if leader == self.member_id {
            let members = joined
                .members
                .iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id.to_string(),
                    metadata: m.metadata.clone(),
                })
                .collect();
            self.assign(members, wait).await?
        } else {
            Vec::new()
        };
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        sync.generation_id = self.generation;
        sync.member_id = StrBytes::from_string(self.member_id.clone());
        sync.assignments = assignments
            .into_iter()
            .map(|(member, data)| {
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = StrBytes::from_string(member);
                a.assignment = data;
                a
            })
            .collect();
        let mut conn = self.connection().await?;
        let version = conn
            .version::<SyncGroupRequest>(SYNC_GROUP_MAX)
            .map_err(|e| Setback::Fatal(e.to_string()))?;
        if version >= 5 {
            sync.protocol_type = Some(StrBytes::from_string(self.config.protocol_type.clone()));
            sync.protocol_name = Some(StrBytes::from_string(self.config.protocol_name.clone()));
        }
        let sync_sent = Instant::now();
        let synced = race(
            &mut self.commands,
            &mut self.rejoin_asked,
            conn.call_at(&sync, version, wait),
        )
        .await?;
        let synced = synced.map_err(|e| Setback::Rediscover(e.to_string()))?;
        self.conn = Some(conn);
        if let Some(e) = ResponseError::try_from_code(synced.error_code) {
            return Err(self.classify("SyncGroup", e));
        }
        self.contact(sync_sent);
        self.assigned = true;
        let event = self.tell();
        let assignment = Assignment {
            generation: self.generation,
            member_id: self.member_id.clone(),
            leader_id: leader,
            data: synced.assignment,
            event,
        };
        self.standing.0.assigned.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Assigned(assignment.clone()));
        Ok(assignment)
    }

    /// Asks the owner for the assignment (this member leads).
    async fn assign(
        &mut self,
        members: Vec<JoinedMember>,
        wait: Duration,
    ) -> Result<Vec<(String, Bytes)>, Setback> {
        let (reply, answer) = oneshot::channel();
        let _ = self.events.send(Event::Assign {
            generation: self.generation,
            members,
            reply,
        });
        match tokio::time::timeout(
            wait,
            race(&mut self.commands, &mut self.rejoin_asked, answer),
        )
        .await
        {
            Ok(Ok(Ok(assignments))) => Ok(assignments),
            Ok(Err(setback)) => Err(setback),
            Ok(Ok(Err(_))) | Err(_) => {
                tracing::warn!(group = %self.config.group_id, generation = self.generation, "the owner computed no assignment; joining again");
                Err(Setback::Rejoin)
            }
        }
    }

    /// What a broker error in a join, sync or heartbeat calls for.
    fn classify(&mut self, api: &'static str, e: ResponseError) -> Setback {
        match e {
            ResponseError::RebalanceInProgress => Setback::Rejoin,
            ResponseError::IllegalGeneration
            | ResponseError::UnknownMemberId
            | ResponseError::FencedInstanceId => {
                if e == ResponseError::UnknownMemberId {
                    self.member_id.clear();
                }
                self.lose(&format!("{api}: {e}"));
                Setback::Rejoin
            }
            ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress => {
                Setback::Rediscover(format!("{api}: {e}"))
            }
            ResponseError::InconsistentGroupProtocol => Setback::Fatal(format!(
                "{api}: {e}: group {:?} has members of another protocol type than {:?} (a Kafka Connect cluster with the same group.id?)",
                self.config.group_id, self.config.protocol_type
            )),
            ResponseError::GroupAuthorizationFailed
            | ResponseError::InvalidSessionTimeout
            | ResponseError::GroupMaxSizeReached
            | ResponseError::InvalidGroupId => Setback::Fatal(format!("{api}: {e}")),
            other => Setback::Rediscover(format!("{api}: {other}")),
        }
    }

    /// Heartbeats until the group needs a new round (`Ok`) or something else happens.
    /// A rejoin asked for (by the owner or the coordinator) waits, heartbeating, until the
    /// owner has acknowledged its assignment.
    async fn heartbeats(&mut self) -> Result<(), Setback> {
        let interval = self.config.heartbeat_interval;
        let mut next = tokio::time::Instant::now() + interval;
        let mut rejoin_pending = false;
        if let Some(reason) = self.rejoin_asked.take() {
            tracing::info!(group = %self.config.group_id, member = %self.member_id, reason = %reason, "joining again (asked while the last round was under way)");
            rejoin_pending = true;
        }
        loop {
            if rejoin_pending && self.awaiting_ack.is_none() {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Ack(event)) => {
                        self.acked(event);
                        continue;
                    }
                    Some(Command::Rejoin(reason)) => {
                        tracing::info!(group = %self.config.group_id, member = %self.member_id, reason = %reason, "joining again");
                        rejoin_pending = true;
                        continue;
                    }
                    Some(Command::Leave(done)) => return Err(Setback::Leave(done)),
                    None => {
                        let (done, _) = oneshot::channel();
                        return Err(Setback::Leave(done));
                    }
                },
            }
            next = tokio::time::Instant::now() + interval;
            let mut beat = HeartbeatRequest::default();
            beat.group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
            beat.generation_id = self.generation;
            beat.member_id = StrBytes::from_string(self.member_id.clone());
            let wait = self.config.request_timeout.min(self.config.session_timeout);
            let mut conn = self.connection().await?;
            let version = conn
                .version::<HeartbeatRequest>(HEARTBEAT_MAX)
                .map_err(|e| Setback::Fatal(e.to_string()))?;
            let sent = Instant::now();
            let answer = match conn.call_at(&beat, version, wait).await {
                Ok(a) => a,
                Err(e) => return Err(Setback::Rediscover(format!("Heartbeat: {e}"))),
            };
            self.conn = Some(conn);
            match ResponseError::try_from_code(answer.error_code) {
                None => self.contact(sent),
                Some(ResponseError::RebalanceInProgress) => {
                    self.contact(sent);
                    if !rejoin_pending {
                        metrics::counter!("sluice_worker_rebalances_started_total").increment(1);
                        let _ = self.events.send(Event::Rebalancing {
                            reason: "the coordinator started a rebalance".into(),
                        });
                    }
                    rejoin_pending = true;
                    // Past the rebalance timeout the coordinator drops a member that has
                    // not joined: join then, acknowledged or not.
                    if self
                        .awaiting_ack
                        .is_some_and(|t| t.elapsed() >= self.config.rebalance_timeout / 2)
                    {
                        tracing::warn!(group = %self.config.group_id, member = %self.member_id, "the owner has not acknowledged its assignment; joining anyway");
                        self.awaiting_ack = None;
                    }
                }
                Some(e) => return Err(self.classify("Heartbeat", e)),
            }
        }
    }

    /// Sends LeaveGroup (best effort, bounded) and tells the owner it is done.
    async fn leave(&mut self, done: oneshot::Sender<()>) {
        if !self.member_id.is_empty() {
            let group = GroupId(StrBytes::from_string(self.config.group_id.clone()));
            let member = StrBytes::from_string(self.member_id.clone());
            let bound = self.config.request_timeout;
            let sent = async {
                let mut conn = self.connection().await.map_err(|_| ())?;
                let version = conn
                    .version::<LeaveGroupRequest>(LEAVE_GROUP_MAX)
                    .map_err(|e| tracing::warn!(error = %e, "LeaveGroup unsupported"))?;
                let mut leave = LeaveGroupRequest::default();
                leave.group_id = group;
                // v0-2 name one member; v3+ a list, with a reason from v5.
                if version >= 3 {
                    let mut me = MemberIdentity::default();
                    me.member_id = member;
                    if version >= 5 {
                        me.reason = Some(StrBytes::from_static_str("the worker is stopping"));
                    }
                    leave.members = vec![me];
                } else {
                    leave.member_id = member;
                }
                let answer = conn
                    .call_at(&leave, version, bound)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "LeaveGroup failed"))?;
                if let Some(e) = ResponseError::try_from_code(answer.error_code) {
                    tracing::warn!(error = %e, "LeaveGroup refused");
                }
                self.conn = Some(conn);
                Ok::<(), ()>(())
            };
            let _ = tokio::time::timeout(bound, sent).await;
            tracing::info!(group = %self.config.group_id, member = %self.member_id, "left the group");
        }
        self.assigned = false;
        self.standing.0.assigned.store(false, Ordering::SeqCst);
        let _ = done.send(());
    }
}

/// Runs `work` (a step of a round) unless the owner asks to leave first. A rejoin asked
/// for meanwhile is kept in `rejoin_asked`: what prompted it may have come too late for
/// this round (the metadata has gone out; the leader may have assigned already).
async fn race<T>(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    rejoin_asked: &mut Option<String>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Setback> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            cmd = commands.recv() => match cmd {
                Some(Command::Rejoin(reason)) => *rejoin_asked = Some(reason),
                // A late acknowledgement: the member is joining already.
                Some(Command::Ack(_)) => {}
                Some(Command::Leave(done)) => return Err(Setback::Leave(done)),
                None => {
                    let (done, _) = oneshot::channel();
                    return Err(Setback::Leave(done));
                }
            },
        }
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Asks the bootstrap brokers, in turn, where the group's coordinator is, and connects.
async fn find_coordinator(config: &MemberConfig) -> Result<Connection, GroupError> {
    let mut failures = Vec::new();
    for server in &config.bootstrap {
        match ask_coordinator(config, server).await {
            Ok(addr) => {
                return Connection::open(
                    &addr,
                    &config.client_id,
                    config.request_timeout,
                    &config.security,
                )
                .await;
            }
            // Another broker would refuse these settings the same way.
            Err(e @ (GroupError::Tls { .. } | GroupError::Sasl(_) | GroupError::Config(_))) => {
                return Err(e)
            }
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    Err(GroupError::NoBroker(failures.join("; ")))
}

async fn ask_coordinator(config: &MemberConfig, server: &str) -> Result<String, GroupError> {
    let mut conn = Connection::open(
        server,
        &config.client_id,
        config.request_timeout,
        &config.security,
    )
    .await?;
    let group = StrBytes::from_string(config.group_id.clone());
    let version = conn.version::<FindCoordinatorRequest>(FIND_COORDINATOR_MAX)?;
    let mut ask = FindCoordinatorRequest::default();
    // v0-3 name the group in `key`, v4+ in `coordinator_keys`; key type 0 is a group. A
    // field set outside its versions is refused by the encoder.
    if version >= 4 {
        ask.coordinator_keys = vec![group];
    } else {
        ask.key = group;
    }
    let answer = conn.call_at(&ask, version, config.request_timeout).await?;
    coordinator_address(&answer, version)
}

fn coordinator_address(
    answer: &FindCoordinatorResponse,
    version: i16,
) -> Result<String, GroupError> {
    let (code, message, host, port) = if version >= 4 {
        let c = answer
            .coordinators
            .first()
            .ok_or_else(|| GroupError::Codec {
                api: 10,
                detail: "FindCoordinator answered no coordinator".into(),
            })?;
        (c.error_code, c.error_message.as_ref(), &c.host, c.port)
    } else {
        (
            answer.error_code,
            answer.error_message.as_ref(),
            &answer.host,
            answer.port,
        )
    };
    if code != 0 {
        return Err(GroupError::broker(
            "FindCoordinator",
            code,
            message.map(ToString::to_string),
        ));
    }
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_interval_past_the_session_is_refused() {
        let config = MemberConfig {
            bootstrap: vec!["127.0.0.1:9092".into()],
            group_id: "g".into(),
            client_id: "c".into(),
            protocol_type: "sluice".into(),
            protocol_name: "sluice-v1".into(),
            session_timeout: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(100),
            security: Security::default(),
        };
        let err = config
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("heartbeat.interval.ms"), "{err}");
    }

    #[test]
    fn the_coordinator_address_comes_from_the_field_of_the_version() {
        let mut old = FindCoordinatorResponse::default();
        old.host = StrBytes::from_static_str("b1");
        old.port = 9092;
        assert_eq!(
            coordinator_address(&old, 3).ok().as_deref(),
            Some("b1:9092")
        );
        let mut new = FindCoordinatorResponse::default();
        let mut c = kafka_protocol::messages::find_coordinator_response::Coordinator::default();
        c.host = StrBytes::from_static_str("b2");
        c.port = 9093;
        new.coordinators = vec![c.clone()];
        assert_eq!(
            coordinator_address(&new, 4).ok().as_deref(),
            Some("b2:9093")
        );
        c.error_code = 15;
        new.coordinators = vec![c];
        let err = coordinator_address(&new, 4).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("CoordinatorNotAvailable"));
    }
}
