//! The supervised actor of one task life, for sources and sinks alike.
//!
//! The actor runs the task's loop in a spawned tokio task on the task's own arbiter, so a
//! panic inside connector code surfaces as a `JoinError` the actor reports (actix itself
//! would just lose the actor), and a connector that blocks its thread stalls only its own
//! arbiter. The supervisor sees [`TaskExited`] and sends [`StopTask`]; while the life runs,
//! it reads what the life says of its health through a [`TaskHealth`] channel.

use std::sync::Arc;

use actix::prelude::*;
use sluice_proto::BoxFuture;
use tokio::sync::watch;

use crate::task::health::TaskHealth;

/// One life of a task: runs until `stop` turns true (then commits and returns `Ok`) or
/// fails (`Err` carries the trace for the status API); reports retries in place through
/// its [`TaskHealth`].
pub type TaskRun = Arc<
    dyn Fn(watch::Receiver<bool>, TaskHealth) -> BoxFuture<'static, Result<(), TaskFailure>>
        + Send
        + Sync,
>;

/// How a task life failed.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The error and its causes, for the status API.
    pub trace: String,
    /// A restart cannot help (the configuration is wrong): the task is FAILED at once, as
    /// Kafka Connect does, instead of being restarted with backoff.
    pub permanent: bool,
}

impl TaskFailure {
    /// A failure a restart may cure.
    pub fn transient(trace: String) -> Self {
        TaskFailure {
            trace,
            permanent: false,
        }
    }
}

/// The `connector` and `task` labels every task metric carries.
pub(crate) struct Labels {
    pub(crate) connector: String,
    pub(crate) task: String,
}

impl Labels {
    /// The label pairs, for the `metrics` macros.
    pub(crate) fn pairs(&self) -> [(&'static str, String); 2] {
        [
            ("connector", self.connector.clone()),
            ("task", self.task.clone()),
        ]
    }

    /// Counts a start of the connector's task in `sluice_task_startup_total`.
    pub(crate) fn count_startup(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        metrics::counter!("sluice_task_startup_total", "connector" => self.connector.clone(), "task" => self.task.clone(), "result" => result)
            .increment(1);
    }
}

/// What the supervisor keeps to (re)start a task.
#[derive(Clone)]
pub struct TaskLauncher {
    /// Task number.
    pub task: u32,
    /// Starts one life.
    pub run: TaskRun,
}

impl std::fmt::Debug for TaskLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLauncher")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// Tells the supervisor a task's life ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TaskExited {
    /// Task number.
    pub task: u32,
    /// Which start of the task this was.
    pub generation: u64,
    /// `Err` carries the trace for the status API.
    pub outcome: Result<(), TaskFailure>,
}

/// Asks a task to stop after committing what it has.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopTask;

/// The supervised actor of one task life.
pub struct TaskActor {
    launcher: TaskLauncher,
    generation: u64,
    supervisor: Recipient<TaskExited>,
    stop: Option<watch::Sender<bool>>,
    /// Handed to the life when it starts.
    health: Option<TaskHealth>,
}

impl TaskActor {
    /// A task actor reporting its exit to `supervisor`, and its health through `health`.
    pub fn new(
        launcher: TaskLauncher,
        generation: u64,
        supervisor: Recipient<TaskExited>,
        health: TaskHealth,
    ) -> Self {
        TaskActor {
            launcher,
            generation,
            supervisor,
            stop: None,
            health: Some(health),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = watch::channel(false);
        self.stop = Some(tx);
        let Some(health) = self.health.take() else {
            return; // started twice: actix starts an actor once
        };
        let handle = tokio::spawn((self.launcher.run)(rx, health));
        let watcher = async move {
            match handle.await {
                Ok(outcome) => outcome,
                Err(join) if join.is_panic() => Err(TaskFailure::transient(format!(
                    "task panicked: {}",
                    panic_message(join.into_panic().as_ref())
                ))),
                Err(join) => Err(TaskFailure::transient(format!(
                    "task was cancelled: {join}"
                ))),
            }
        };
        ctx.spawn(watcher.into_actor(self).map(|outcome, actor, ctx| {
            actor.supervisor.do_send(TaskExited {
                task: actor.launcher.task,
                generation: actor.generation,
                outcome,
            });
            ctx.stop();
        }));
    }
}

/// An error with its causes, one per line, as the status API's trace shows it.
pub fn trace(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str("\ncaused by: ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Handler<StopTask> for TaskActor {
    type Result = ();

    fn handle(&mut self, _msg: StopTask, _ctx: &mut Self::Context) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
    }
}
