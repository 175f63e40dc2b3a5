//! A stand-in owner for members under test: it answers the leader's `Assign` by giving
//! each member its own id as assignment, and passes every other event on.

#![allow(dead_code)] // each test binary uses part of the kit

use std::time::Duration;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use sluice_group::{Assignment, Event, Member, MemberConfig};
use tokio::sync::{mpsc, watch};

pub(crate) fn config(bootstrap: &str, group: &str, name: &str) -> MemberConfig {
    MemberConfig {
        bootstrap: vec![bootstrap.to_owned()],
        group_id: group.to_owned(),
        client_id: name.to_owned(),
        protocol_type: "sluice".into(),
        protocol_name: "sluice-v1".into(),
        session_timeout: Duration::from_millis(6000),
        rebalance_timeout: Duration::from_millis(10_000),
        heartbeat_interval: Duration::from_millis(300),
        request_timeout: Duration::from_millis(5000),
        retry_backoff: Duration::from_millis(100),
        security: sluice_group::Security::default(),
    }
}

/// What the owner saw, other than `Assign` (answered) and the number of members the
/// leader assigned to (as `Led`).
#[derive(Debug)]
pub(crate) enum Seen {
    Led { members: usize },
    Assigned(Assignment),
    Rebalancing,
    Lost(String),
    Failed(String),
}

pub(crate) struct Owned {
    pub(crate) member: Member,
    pub(crate) seen: mpsc::UnboundedReceiver<Seen>,
    _metadata: watch::Sender<Bytes>,
}

pub(crate) fn start(config: MemberConfig) -> Result<Owned> {
    // The member's log, at RUST_LOG's level (`sluice_group=debug` to follow the protocol).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (metadata, watch) = watch::channel(Bytes::from_static(b"meta"));
    let (member, mut events) = Member::start(config, watch)?;
    let acker = member.acker();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // Nothing to start or stop here: acted on at once.
            match &event {
                Event::Assigned(a) => acker.ack(a.event),
                Event::Lost { event, .. } => acker.ack(*event),
                _ => {}
            }
            let seen = match event {
                Event::Assign { members, reply, .. } => {
                    let n = members.len();
                    let _ = reply.send(
                        members
                            .into_iter()
                            .map(|m| {
                                let data = Bytes::from(m.member_id.clone().into_bytes());
                                (m.member_id, data)
                            })
                            .collect(),
                    );
                    Seen::Led { members: n }
                }
                Event::Assigned(a) => Seen::Assigned(a),
                Event::Rebalancing { .. } => Seen::Rebalancing,
                Event::Lost { reason, .. } => Seen::Lost(reason),
                Event::Failed { reason } => Seen::Failed(reason),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    Ok(Owned {
        member,
        seen,
        _metadata: metadata,
    })
}

impl Owned {
    /// The next event within `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Result<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .map_err(|_| anyhow!("no group event within {within:?}"))?
            .ok_or_else(|| anyhow!("the member stopped"))
    }

    /// Skips events until an assignment; fails on `Failed`.
    pub(crate) async fn assigned(&mut self, within: Duration) -> Result<Assignment> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Seen::Assigned(a) => return Ok(a),
                Seen::Failed(r) => return Err(anyhow!("member failed: {r}")),
                _ => {}
            }
        }
    }
}
