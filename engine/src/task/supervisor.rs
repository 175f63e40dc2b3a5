//! The connector supervisor: one actor per connector owning its tasks' restart policy.
//! A task that fails (an error or a panic, both reported by its actor) is restarted after
//! an exponential backoff; past the attempt limit it is FAILED with its trace and stays so
//! until restarted by hand. A restart resumes from committed offsets, so it neither loses
//! nor duplicates records. Each task runs on its own arbiter (thread): a connector that
//! blocks or spins cannot stall another connector or the REST API. A RUNNING task that is
//! retrying a failure in place shows it in its trace (see [`crate::task::health`]).

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::storage::status::StatusStore;
use crate::task::actor::{StopTask, TaskActor, TaskExited, TaskLauncher};
use crate::task::health::{HealthWatch, TaskHealth};

/// How failed tasks are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Restarts before the task is FAILED.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Failures are counted within this window: a task is FAILED when more than
    /// `max_attempts` of its lives failed within it, however long each life ran.
    pub healthy_after: Duration,
    /// How long a manual restart waits for the running life to end (committing what it
    /// has) before the next life starts anyway (`task.shutdown.graceful.timeout.ms`).
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (1-based): initial * 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A task's state, with Kafka Connect's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Working.
    Running,
    /// Waiting for its restart after a failure (Kafka Connect shows RESTARTING).
    Restarting,
    /// Gave up; see the trace.
    Failed,
    /// Stopped on request (worker shutdown, or a restart in progress).
    Unassigned,
    /// Paused by the user; resumes from committed offsets.
    Paused,
}

impl TaskState {
    /// Every state, for the per-state status gauge.
    pub const ALL: [TaskState; 5] = [
        TaskState::Running,
        TaskState::Restarting,
        TaskState::Failed,
        TaskState::Unassigned,
        TaskState::Paused,
    ];

    /// Kafka Connect's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Running => "RUNNING",
            TaskState::Restarting => "RESTARTING",
            TaskState::Failed => "FAILED",
            TaskState::Unassigned => "UNASSIGNED",
            TaskState::Paused => "PAUSED",
        }
    }

    /// The state of that name (as the status topic holds it).
    pub fn from_name(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What the user wants the connector to do (Kafka Connect's target state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    /// Run the tasks.
    Started,
    /// Tasks stop, keeping their assignment; `resume` restarts them.
    Paused,
    /// Tasks shut down (KIP-875); offsets may then be altered or reset.
    Stopped,
}

/// One task's status for the REST API.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// Task number.
    pub id: u32,
    /// State.
    pub state: TaskState,
    /// The last failure's trace; while RUNNING, what the task is retrying, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Failures within the policy's window (`healthy_after`).
    #[serde(skip)]
    pub attempts: u32,
}

struct Slot {
    launcher: TaskLauncher,
    arbiter: Arbiter,
    addr: Option<Addr<TaskActor>>,
    generation: u64,
    /// When recent lives failed, oldest first (those within the policy's window).
    failures: std::collections::VecDeque<Instant>,
    /// A manual restart waits for the running life to exit before the next one starts.
    restart_pending: bool,
    /// The running life was told to stop for a target change (PAUSED, STOPPED): a
    /// resume before it has exited starts the next life once it has.
    stop_asked: bool,
    status: TaskStatus,
    /// What the life started last says of its health.
    health: Option<HealthWatch>,
}

impl Slot {
    /// The status as the API shows it: a RUNNING task that is retrying says so.
    fn current_status(&self) -> TaskStatus {
        let mut status = self.status.clone();
        if status.state == TaskState::Running && status.trace.is_none() {
            status.trace = self.health.as_ref().and_then(HealthWatch::note);
        }
        status
    }
}

/// Supervises one connector's tasks.
pub struct ConnectorSupervisor {
    name: String,
    policy: RestartPolicy,
    status: Option<StatusStore>,
    slots: Vec<Slot>,
    target: TargetState,
    stopping: bool,
    stopped: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl ConnectorSupervisor {
    /// A supervisor for `name` that will run `specs` (one per task) when started.
    pub fn new(
        name: String,
        specs: Vec<TaskLauncher>,
        policy: RestartPolicy,
        target: TargetState,
        status: Option<StatusStore>,
    ) -> Self {
        let slots: Vec<Slot> = specs
            .into_iter()
            .map(|spec| Slot {
                status: TaskStatus {
                    id: spec.task,
                    state: TaskState::Running,
                    trace: None,
                    attempts: 0,
                },
                launcher: spec,
                arbiter: Arbiter::new(),
                addr: None,
                generation: 0,
                failures: std::collections::VecDeque::new(),
                restart_pending: false,
                stop_asked: false,
                health: None,
            })
            .collect();
        let initial = match target {
            TargetState::Started => TaskState::Running,
            TargetState::Paused | TargetState::Stopped => TaskState::Paused,
        };
        let slots = slots
            .into_iter()
            .map(|mut s: Slot| {
                s.status.state = initial;
                s
            })
            .collect();
        ConnectorSupervisor {
            name,
            policy,
            status,
            slots,
            target,
            stopping: false,
            stopped: Vec::new(),
        }
    }

    fn start_task(&mut self, index: usize, ctx: &mut Context<Self>) {
        let me = ctx.address().recipient();
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        slot.generation += 1;
        slot.restart_pending = false;
        slot.status.state = TaskState::Running;
        // A running task shows no trace (as in Kafka Connect); the failure that led here
        // is in the log and in sluice_task_last_error_timestamp_seconds.
        slot.status.trace = None;
        let launcher = slot.launcher.clone();
        let generation = slot.generation;
        let (health, watch) = TaskHealth::new(&self.name, slot.status.id);
        slot.health = Some(watch);
        slot.addr = Some(TaskActor::start_in_arbiter(
            &slot.arbiter.handle(),
            move |_| TaskActor::new(launcher, generation, me, health),
        ));
        metrics::gauge!("sluice_task_running", "connector" => self.name.clone(), "task" => slot.status.id.to_string()).set(1.0);
        tracing::info!(connector = %self.name, task = slot.status.id, generation, "task started");
        self.report(index);
    }

    /// Publishes a task's state: `sluice_task_status`, and the status topic (written off
    /// the actor's path).
    fn report(&self, index: usize) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let id = slot.status.id;
        for state in TaskState::ALL {
            metrics::gauge!("sluice_task_status", "connector" => self.name.clone(), "task" => id.to_string(), "state" => state.name().to_ascii_lowercase())
                .set(if state == slot.status.state { 1.0 } else { 0.0 });
        }
        let Some(store) = self.status.clone() else {
            return;
        };
        let name = self.name.clone();
        let generation = slot.generation;
        let state = slot.status.state.name().to_owned();
        let trace = slot.status.trace.clone();
        actix::spawn(async move {
            store
                .put_task(&name, id, &state, trace.as_deref(), generation)
                .await;
        });
    }

    fn all_exited(&self) -> bool {
        self.slots.iter().all(|s| s.addr.is_none())
    }

    fn notify_if_stopped(&mut self) {
        if self.stopping && self.all_exited() {
            for tx in self.stopped.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for ConnectorSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.target == TargetState::Started {
            for i in 0..self.slots.len() {
                self.start_task(i, ctx);
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for slot in &self.slots {
            slot.arbiter.stop();
        }
    }
}

impl Handler<TaskExited> for ConnectorSupervisor {
    type Result = ();

    fn handle(&mut self, msg: TaskExited, ctx: &mut Self::Context) {
        let name = self.name.clone();
        let policy = self.policy;
        let stopping = self.stopping;
        let parked = match self.target {
            TargetState::Started => None,
            TargetState::Paused | TargetState::Stopped => Some(TaskState::Paused),
        };
        let Some(index) = self.slots.iter().position(|s| s.status.id == msg.task) else {
            return;
        };
        let slot = &mut self.slots[index];
        if msg.generation != slot.generation {
            return; // a late report from an earlier life
        }
        slot.addr = None;
        slot.stop_asked = false;
        let labels = [("connector", name.clone()), ("task", msg.task.to_string())];
        metrics::gauge!("sluice_task_running", &labels).set(0.0);
        if slot.restart_pending {
            // A manual restart: this life was asked to end; whatever it reports, the next
            // one starts now that it has released what it held (ports, producers).
            tracing::info!(connector = %name, task = msg.task, "task life ended; restarting it as asked");
            if !stopping && self.target == TargetState::Started {
                self.start_task(index, ctx);
            } else {
                self.slots[index].restart_pending = false;
                self.slots[index].status.state = parked.unwrap_or(TaskState::Unassigned);
                self.report(index);
            }
            self.notify_if_stopped();
            return;
        }
        match msg.outcome {
            Ok(()) => {
                slot.status.state = parked.unwrap_or(TaskState::Unassigned);
                tracing::info!(connector = %name, task = msg.task, state = ?slot.status.state, "task stopped");
            }
            Err(_) if stopping || parked.is_some() => {
                slot.status.state = parked.unwrap_or(TaskState::Unassigned);
            }
            Err(failure) => {
                let trace = failure.trace;
                let now = Instant::now();
                slot.failures.push_back(now);
                while slot
                    .failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > policy.healthy_after)
                {
                    slot.failures.pop_front();
                }
                slot.status.attempts = u32::try_from(slot.failures.len()).unwrap_or(u32::MAX);
                slot.status.trace = Some(trace.clone());
                metrics::counter!("sluice_task_failures_total", &labels).increment(1);
                crate::task::errors::note_error_time(&labels);
                if failure.permanent {
                    slot.status.state = TaskState::Failed;
                    tracing::error!(connector = %name, task = msg.task, trace = %trace, "task FAILED: its configuration is wrong, a restart would not help");
                } else if slot.status.attempts > policy.max_attempts {
                    slot.status.state = TaskState::Failed;
                    tracing::error!(connector = %name, task = msg.task, attempts = slot.status.attempts - 1, trace = %trace, "task FAILED: restart limit reached");
                } else {
                    slot.status.state = TaskState::Restarting;
                    let wait = policy.backoff(slot.status.attempts);
                    tracing::warn!(connector = %name, task = msg.task, attempt = slot.status.attempts, backoff_ms = wait.as_millis() as u64, trace = %trace, "task failed; restarting after backoff");
                    let generation = slot.generation;
                    ctx.run_later(wait, move |act, ctx| {
                        let still_waiting = act.slots.get(index).is_some_and(|s| {
                            s.generation == generation && s.status.state == TaskState::Restarting
                        });
                        if still_waiting && !act.stopping && act.target == TargetState::Started {
                            metrics::counter!("sluice_task_restarts_total", "connector" => act.name.clone(), "task" => msg.task.to_string()).increment(1);
                            act.start_task(index, ctx);
                        }
                    });
                }
            }
        }
        self.report(index);
        self.notify_if_stopped();
    }
}

/// Restarts a task by hand (the REST restart endpoint), clearing its failure count.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RestartTask(pub u32);

impl Handler<RestartTask> for ConnectorSupervisor {
    type Result = bool;

    fn handle(&mut self, msg: RestartTask, ctx: &mut Self::Context) -> bool {
        let Some(index) = self.slots.iter().position(|s| s.status.id == msg.0) else {
            return false;
        };
        let grace = self.policy.stop_grace;
        let slot = &mut self.slots[index];
        slot.status.attempts = 0;
        slot.failures.clear();
        slot.status.trace = None;
        let Some(addr) = &slot.addr else {
            self.start_task(index, ctx);
            return true;
        };
        if slot.restart_pending {
            return true; // already on its way
        }
        // The next life starts when this one has exited (it commits what it has and
        // releases its port and producer); if it does not within the grace period, the
        // next starts anyway and this life's late report is ignored by generation.
        addr.do_send(StopTask);
        slot.restart_pending = true;
        slot.status.state = TaskState::Restarting;
        let generation = slot.generation;
        tracing::info!(connector = %self.name, task = msg.0, "manual restart: stopping the running life first");
        ctx.run_later(grace, move |act, ctx| {
            let overdue = act
                .slots
                .get(index)
                .is_some_and(|s| s.generation == generation && s.restart_pending);
            if overdue && !act.stopping && act.target == TargetState::Started {
                tracing::warn!(connector = %act.name, task = msg.0, grace_ms = grace.as_millis() as u64, "the running life did not end within the grace period; starting the next one anyway");
                act.start_task(index, ctx);
            }
        });
        self.report(index);
        true
    }
}

/// Changes the target state: pausing or stopping lets each task commit and exit;
/// starting (resuming) starts every task that is not running.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetTarget(pub TargetState);

impl Handler<SetTarget> for ConnectorSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetTarget, ctx: &mut Self::Context) {
        self.target = msg.0;
        tracing::info!(connector = %self.name, target = ?msg.0, "target state changed");
        match msg.0 {
            TargetState::Started => {
                for i in 0..self.slots.len() {
                    if self.slots[i].addr.is_none() {
                        self.slots[i].status.attempts = 0;
                        self.start_task(i, ctx);
                    } else if self.slots[i].stop_asked {
                        self.slots[i].restart_pending = true;
                    }
                }
            }
            TargetState::Paused | TargetState::Stopped => {
                for i in 0..self.slots.len() {
                    match &self.slots[i].addr {
                        Some(addr) => {
                            addr.do_send(StopTask);
                            self.slots[i].stop_asked = true;
                        }
                        None => {
                            self.slots[i].status.state = TaskState::Paused;
                            self.report(i);
                        }
                    }
                }
            }
        }
    }
}

/// The status of every task.
#[derive(Debug, Message)]
#[rtype(result = "Vec<TaskStatus>")]
pub struct GetStatus;

impl Handler<GetStatus> for ConnectorSupervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.slots.iter().map(Slot::current_status).collect())
    }
}

/// Stops every task (each commits what it has) and answers when all have exited.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopConnector;

impl Handler<StopConnector> for ConnectorSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: StopConnector, _ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stopped.push(tx);
        for slot in &mut self.slots {
            if let Some(addr) = &slot.addr {
                addr.do_send(StopTask);
            }
        }
        self.notify_if_stopped();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A running supervisor of the one task `launcher` starts.
    fn started(launcher: TaskLauncher) -> Addr<ConnectorSupervisor> {
        ConnectorSupervisor::new(
            "c".into(),
            vec![launcher],
            RestartPolicy::default(),
            TargetState::Started,
            None,
        )
        .start()
    }

    /// A task life retrying in place shows RUNNING with a `retrying:` trace, which clears
    /// when it recovers; a failure's trace is not overwritten by it.
    #[actix::test]
    async fn a_running_task_that_retries_says_so_until_it_recovers() {
        let (recover_tx, recover_rx) = tokio::sync::watch::channel(false);
        let launcher = TaskLauncher {
            task: 0,
            run: Arc::new(move |mut stop, health| {
                let mut recover = recover_rx.clone();
                Box::pin(async move {
                    health.retrying(
                        &"bulk request: connection refused",
                        3,
                        Duration::from_millis(1200),
                    );
                    let _ = recover.wait_for(|r| *r).await;
                    health.recovered();
                    let _ = stop.wait_for(|s| *s).await;
                    Ok(())
                })
            }),
        };
        let supervisor = started(launcher);
        let mut status = Vec::new();
        for _ in 0..100 {
            status = supervisor.send(GetStatus).await.unwrap();
            if status[0].trace.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status[0].state, TaskState::Running);
        assert_eq!(
            status[0].trace.as_deref(),
            Some("retrying: bulk request: connection refused (attempt 3, next in 1200 ms)")
        );
        recover_tx.send(true).unwrap();
        for _ in 0..100 {
            status = supervisor.send(GetStatus).await.unwrap();
            if status[0].trace.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status[0].state, TaskState::Running);
        assert_eq!(status[0].trace, None, "cleared once recovered");
        supervisor.send(StopConnector).await.unwrap();
    }

    /// STOPPED then RUNNING again before the task's life has finished stopping (a quick
    /// stop and resume): the life ends as asked and the next one starts; the task is not
    /// left stopped under a RUNNING connector.
    #[actix::test]
    async fn a_resume_while_the_task_is_still_stopping_starts_it_again() {
        let lives = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&lives);
        let launcher = TaskLauncher {
            task: 0,
            run: Arc::new(move |mut stop, _health| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    let _ = stop.wait_for(|s| *s).await;
                    // Committing what it has takes a while.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(())
                })
            }),
        };
        let supervisor = started(launcher);
        tokio::time::sleep(Duration::from_millis(100)).await;
        supervisor
            .send(SetTarget(TargetState::Stopped))
            .await
            .unwrap();
        supervisor
            .send(SetTarget(TargetState::Started))
            .await
            .unwrap();
        let mut status = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = supervisor.send(GetStatus).await.unwrap();
            if lives.load(std::sync::atomic::Ordering::SeqCst) == 2 {
                break;
            }
        }
        assert_eq!(
            lives.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{status:?}"
        );
        assert_eq!(status[0].state, TaskState::Running);
        supervisor.send(StopConnector).await.unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let p = RestartPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            healthy_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=6).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
