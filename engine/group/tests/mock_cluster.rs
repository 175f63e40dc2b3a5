//! The member's state machine against librdkafka's mock cluster, which serves the group
//! protocol for any protocol type and injects errors: no JVM needed.

mod common;

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use common::{config, start, Seen};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sluice_group::{Event, Member};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_one_generation_and_the_leaders_assignment() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let bootstrap = cluster.bootstrap_servers();
    let mut a = start(config(&bootstrap, "g1", "a"))?;
    let first = a.assigned(WAIT).await?;
    assert!(first.is_leader(), "a lone member leads");
    assert_eq!(first.data, first.member_id.as_bytes());

    let mut b = start(config(&bootstrap, "g1", "b"))?;
    let mut from_b = b.assigned(WAIT).await?;
    let mut from_a = a.assigned(WAIT).await?;
    // A group may take more than one round to settle on both: follow the one behind.
    while from_a.generation != from_b.generation {
        if from_a.generation < from_b.generation {
            from_a = a.assigned(WAIT).await?;
        } else {
            from_b = b.assigned(WAIT).await?;
        }
    }
    assert!(from_a.generation > first.generation);
    assert_eq!(from_a.leader_id, from_b.leader_id);
    assert_ne!(from_a.member_id, from_b.member_id);
    // Each got what the leader computed for it.
    assert_eq!(from_a.data, from_a.member_id.as_bytes());
    assert_eq!(from_b.data, from_b.member_id.as_bytes());

    // One leaves: the other is told at its next heartbeat and leads a group of one.
    b.member.leave().await;
    let alone = a.assigned(WAIT).await?;
    assert!(alone.generation > from_a.generation);
    assert!(alone.is_leader());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_illegal_generation_in_a_heartbeat_loses_the_work_and_the_member_rejoins() -> Result<()>
{
    let cluster = MockCluster::new(1)?;
    let mut a = start(config(&cluster.bootstrap_servers(), "g2", "a"))?;
    let first = a.assigned(WAIT).await?;
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let mut lost = None;
    let again = loop {
        match a.next(WAIT).await? {
            Seen::Lost(reason) => lost = Some(reason),
            Seen::Assigned(x) => break x,
            _ => {}
        }
    };
    let reason = lost.unwrap_or_default();
    assert!(
        reason.contains("IllegalGeneration"),
        "lost because: {reason}"
    );
    assert!(again.generation >= first.generation);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_moves_is_found_again_without_losing_the_work() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut a = start(config(&cluster.bootstrap_servers(), "g3", "a"))?;
    a.assigned(WAIT).await?;
    // One NOT_COORDINATOR answer: the member looks the coordinator up again and goes on.
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(seen) = a.seen.try_recv() {
        assert!(!matches!(seen, Seen::Lost(_) | Seen::Failed(_)), "{seen:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_its_coordinator_for_a_session_gives_up_its_work() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut a = start(config(&cluster.bootstrap_servers(), "g4", "a"))?;
    a.assigned(WAIT).await?;
    let cut = std::time::Instant::now();
    cluster.broker_down(1)?;
    // The broker will have evicted it after a session timeout: its work must stop (Kafka
    // Connect's self-fencing), not run on beside the work's new owner.
    let reason = loop {
        if let Seen::Lost(reason) = a.next(WAIT).await? {
            break reason;
        }
    };
    let after = cut.elapsed();
    assert!(
        reason.contains("no contact with the group coordinator"),
        "{reason}"
    );
    // Whoever asks (a task about to take its transactional id) hears it is not current.
    let standing = a.member.standing();
    assert!(standing.current().is_err());
    // The last heartbeat went at most one interval (300 ms) before the cut.
    assert!(
        after >= Duration::from_millis(5500),
        "lost after {after:?}, before a session"
    );
    assert!(
        after < Duration::from_millis(12_000),
        "lost after {after:?}"
    );
    cluster.broker_up(1)?;
    a.assigned(WAIT).await?;
    assert_eq!(standing.current(), Ok(()));
    Ok(())
}

/// An answer proves the member was alive when its request reached the coordinator, not
/// when the answer was read: a process stopped (SIGSTOP, a frozen VM) with an answer on
/// its socket must not count its session from the moment it resumes, or it would take a
/// task's transactional id back from the task's new owner. Here every answer comes most
/// of a session late: the membership is current only for a session after each request
/// was sent, so between a late answer and the next one it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_counts_from_when_its_request_was_sent() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut config = config(&cluster.bootstrap_servers(), "g5", "a");
    config.session_timeout = Duration::from_millis(3000);
    config.heartbeat_interval = Duration::from_millis(100);
    let mut a = start(config)?;
    a.assigned(WAIT).await?;
    let standing = a.member.standing();
    assert_eq!(standing.current(), Ok(()));
    cluster.broker_round_trip_time(1, Duration::from_millis(2500))?;
    // Requests go every 2.6 s (answer, then the interval); each answer credits its send
    // time, so a session after a send, before the next answer, the membership has lapsed.
    let watching = std::time::Instant::now();
    let mut lapsed = None;
    while watching.elapsed() < Duration::from_secs(10) {
        if let Err(reason) = standing.current() {
            lapsed = Some(reason);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = lapsed.unwrap_or_default();
    assert!(
        reason.contains("no word from the group coordinator"),
        "the membership never lapsed although each answer came 2.5 s after its request (session 3 s): {reason:?}"
    );
    Ok(())
}

/// A rejoin asked for while a round is under way (a connector created after the member's
/// metadata went out, or after the leader assigned) is kept: the member joins again once
/// the round ends, or the new work would wait for some other rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_asked_during_a_round_is_kept_for_after_it() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut a = start(config(&cluster.bootstrap_servers(), "g6", "a"))?;
    let first = a.assigned(WAIT).await?;
    // Every answer a second late: the next round lasts a couple of seconds.
    cluster.broker_round_trip_time(1, Duration::from_millis(1000))?;
    a.member.rejoin("first change");
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.member.rejoin("second change, during the round");
    let second = a.assigned(WAIT).await?;
    assert!(second.generation > first.generation);
    // Nobody asks again: the kept request makes the next round.
    let third = a.assigned(Duration::from_secs(15)).await?;
    assert!(third.generation > second.generation);
    Ok(())
}

/// The next assignment, answering the leader's `Assign` on the way (nothing acknowledged).
async fn next_assigned(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Result<sluice_group::Assignment> {
    loop {
        match events.recv().await {
            Some(Event::Assign { members, reply, .. }) => {
                let _ = reply.send(
                    members
                        .into_iter()
                        .map(|m| (m.member_id, Bytes::from_static(b"work")))
                        .collect(),
                );
            }
            Some(Event::Assigned(a)) => return Ok(a),
            Some(Event::Failed { reason }) => anyhow::bail!("member failed: {reason}"),
            Some(_) => {}
            None => anyhow::bail!("the member stopped"),
        }
    }
}

/// An acknowledgement names the event it answers. Ones that come late, for events the
/// member stopped waiting for (it joined anyway after the rebalance timeout), do not let it
/// join again while the latest assignment is unanswered: that would send metadata that
/// does not say what the owner runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acknowledgement_does_not_stand_for_a_later_assignment() -> Result<()> {
    let cluster = MockCluster::new(1)?;
    let mut c = config(&cluster.bootstrap_servers(), "g7", "a");
    c.rebalance_timeout = Duration::from_secs(3);
    let (_metadata, watch) = tokio::sync::watch::channel(Bytes::from_static(b"meta"));
    let (member, mut events) = Member::start(c, watch)?;
    let first = tokio::time::timeout(WAIT, next_assigned(&mut events)).await??;
    // Unacknowledged; the coordinator drops the generation: the loss is reported and,
    // unacknowledged too, the member joins anyway once the rebalance timeout has passed.
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let lost = loop {
        match tokio::time::timeout(WAIT, events.recv()).await? {
            Some(Event::Lost { event, .. }) => break event,
            Some(Event::Failed { reason }) => anyhow::bail!("member failed: {reason}"),
            Some(_) => {}
            None => anyhow::bail!("the member stopped"),
        }
    };
    let second = tokio::time::timeout(WAIT, next_assigned(&mut events)).await??;
    assert!(second.generation > first.generation);
    assert!(first.event < lost && lost < second.event);

    member.ack(first.event);
    member.ack(lost);
    member.rejoin("asked while the latest assignment is unacknowledged");
    let early = tokio::time::timeout(Duration::from_secs(10), next_assigned(&mut events)).await;
    assert!(
        early.is_err(),
        "joined again on late acknowledgements: {early:?}"
    );
    member.ack(second.event);
    let third = tokio::time::timeout(WAIT, next_assigned(&mut events)).await??;
    assert!(third.generation > second.generation);
    Ok(())
}
