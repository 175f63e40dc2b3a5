//! The member against the local stack's real Kafka broker.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{config, start, Seen};
use sluice_testkit::{stack, unique_name};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_leader_and_a_graceful_leave_rebalances_at_once() -> Result<()> {
    let kafka = &stack()?.kafka_bootstrap;
    let group = unique_name("group");
    let mut members = Vec::new();
    for name in ["w1", "w2", "w3"] {
        members.push(start(config(kafka, &group, name))?);
    }
    // Members start at once; the broker may need a round or two to settle on all three.
    let mut last = Vec::new();
    for m in &mut members {
        last.push(m.assigned(WAIT).await?);
    }
    loop {
        let gens: Vec<i32> = last.iter().map(|a| a.generation).collect();
        let top = gens.iter().copied().max().unwrap_or(0);
        if gens.iter().all(|g| *g == top) {
            break;
        }
        for (i, m) in members.iter_mut().enumerate() {
            if last[i].generation < top {
                last[i] = m.assigned(WAIT).await?;
            }
        }
    }
    let leaders: Vec<&str> = last.iter().map(|a| a.leader_id.as_str()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    assert_eq!(last.iter().filter(|a| a.is_leader()).count(), 1);
    for a in &last {
        assert_eq!(a.data, a.member_id.as_bytes());
    }

    // A graceful leave is seen at the others' next heartbeat, not after a session timeout.
    let gone = members.remove(0);
    let started = std::time::Instant::now();
    gone.member.leave().await;
    for m in &mut members {
        let a = m.assigned(WAIT).await?;
        assert!(a.generation > last[1].generation);
    }
    let took = started.elapsed();
    println!("rebalance after a graceful leave: {} ms", took.as_millis());
    assert!(
        took < Duration::from_millis(6000),
        "took {took:?}, a session timeout or more"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_protocol_type_is_refused_by_the_broker() -> Result<()> {
    let kafka = &stack()?.kafka_bootstrap;
    let group = unique_name("group");
    let mut sluice = start(config(kafka, &group, "sluice"))?;
    sluice.assigned(WAIT).await?;
    // A Kafka Connect worker with the same group.id: the broker refuses it, by name.
    let mut connect = config(kafka, &group, "java");
    connect.protocol_type = "connect".into();
    connect.protocol_name = "sessioned".into();
    let mut java = start(connect)?;
    let failed = loop {
        match java.next(WAIT).await? {
            Seen::Failed(reason) => break reason,
            other => anyhow::ensure!(!matches!(other, Seen::Assigned(_)), "joined: {other:?}"),
        }
    };
    assert!(failed.contains("InconsistentGroupProtocol"), "{failed}");
    assert!(failed.contains("another protocol type"), "{failed}");
    Ok(())
}
