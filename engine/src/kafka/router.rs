//! The partition router: the actor between task actors and Kafka. Source tasks send it
//! converted batches; it knows every topic's partition count (fetched off-thread and
//! cached), places keyed records with Java's murmur2 partitioner and spreads unkeyed
//! ones, and hands the per-partition batch back to the task's producer. One router serves
//! all tasks of a worker, so topic metadata is fetched once, not per task.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::kafka::partitioner::{partition_for_key, StickySpreader};
use crate::kafka::producer::OutRecord;
use crate::storage::offsets::partition_count;

/// A converted record whose partition may still be open.
#[derive(Debug, Clone)]
pub struct Unrouted {
    /// Topic.
    pub topic: String,
    /// A partition the connector fixed, if any.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Timestamp.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Routing failed (the topic's metadata could not be had, or a fixed partition is out of
/// range); the task retries or fails with this message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("routing to topic {topic}: {message}")]
pub struct RouteError {
    /// The topic.
    pub topic: String,
    /// What went wrong.
    pub message: String,
}

/// Place a batch: answers with every record's partition set, in the input order.
#[derive(Debug)]
pub struct Route(pub Vec<Unrouted>);

impl Message for Route {
    type Result = Result<Vec<OutRecord>, RouteError>;
}

/// Answers at once: `/health` checks the router's mailbox is served.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for PartitionRouter {
    type Result = ();

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
}

/// Forget a topic's partition count (after a produce error that hints it changed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Invalidate(pub String);

/// How long a partition count is trusted before it is fetched again: partitions can be
/// added to a topic while Sluice runs.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// The router actor.
pub struct PartitionRouter {
    client_props: BTreeMap<String, String>,
    partitions: HashMap<String, (i32, Instant)>,
    spreaders: HashMap<String, StickySpreader>,
    metadata_timeout: Duration,
}

impl PartitionRouter {
    /// A router whose metadata requests use `client_props` (bootstrap and security).
    pub fn new(client_props: BTreeMap<String, String>) -> Self {
        PartitionRouter {
            client_props,
            partitions: HashMap::new(),
            spreaders: HashMap::new(),
            metadata_timeout: Duration::from_secs(30),
        }
    }

    /// The longest a batch waits for topic metadata (30 s by default).
    #[must_use]
    pub fn with_metadata_timeout(mut self, timeout: Duration) -> Self {
        self.metadata_timeout = timeout;
        self
    }

    fn place(&mut self, batch: Vec<Unrouted>) -> Result<Vec<OutRecord>, RouteError> {
        // One sticky partition per topic per batch keeps unkeyed batches large.
        let mut sticky: HashMap<String, i32> = HashMap::new();
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            let count = self
                .partitions
                .get(&r.topic)
                .map(|(n, _)| *n)
                .ok_or_else(|| RouteError {
                    topic: r.topic.clone(),
                    message: "no partition count known".into(),
                })?;
            let partition = match (r.partition, &r.key) {
                (Some(p), _) if (0..count).contains(&p) => p,
                (Some(p), _) => {
                    return Err(RouteError {
                        topic: r.topic.clone(),
                        message: format!("partition {p} requested, but the topic has {count}"),
                    })
                }
                (None, Some(key)) => partition_for_key(key, count),
                (None, None) => *sticky.entry(r.topic.clone()).or_insert_with(|| {
                    self.spreaders
                        .entry(r.topic.clone())
                        .or_default()
                        .next_partition(count)
                }),
            };
            out.push(OutRecord {
                topic: r.topic,
                partition,
                key: r.key,
                value: r.value,
                timestamp: r.timestamp,
                headers: r.headers,
            });
        }
        Ok(out)
    }
}

impl Actor for PartitionRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded: a task sending faster than routing happens waits in `send().await`.
        ctx.set_mailbox_capacity(64);
        tracing::info!("partition router started");
    }
}

impl Handler<Route> for PartitionRouter {
    type Result = ResponseActFuture<Self, Result<Vec<OutRecord>, RouteError>>;

    fn handle(&mut self, msg: Route, _ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let mut unknown: Vec<String> = msg
            .0
            .iter()
            .map(|r| r.topic.clone())
            .filter(|t| {
                self.partitions
                    .get(t)
                    .is_none_or(|(_, at)| now.duration_since(*at) > METADATA_MAX_AGE)
            })
            .collect();
        unknown.sort();
        unknown.dedup();
        let props = self.client_props.clone();
        let timeout = self.metadata_timeout;
        let fetch = async move {
            let mut found = Vec::new();
            // One deadline for the whole batch: a source's transaction may be open while it
            // waits here, and an unreachable broker must fail it within one timeout, not
            // once per retry.
            let deadline = Instant::now() + timeout;
            for topic in unknown {
                // A just auto-created topic can report no partitions for a moment.
                let count = loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match partition_count(&props, &topic, left).await {
                        Ok(n) => break Ok(n),
                        Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                            tracing::debug!(topic = %topic, error = %e, "metadata not ready, retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            break Err(RouteError {
                                topic: topic.clone(),
                                message: e.to_string(),
                            })
                        }
                    }
                }?;
                found.push((topic, count));
            }
            Ok::<_, RouteError>(found)
        };
        Box::pin(fetch.into_actor(self).map(move |found, actor, _| {
            for (topic, count) in found? {
                tracing::debug!(topic = %topic, partitions = count, "partition count cached");
                actor.partitions.insert(topic, (count, Instant::now()));
            }
            let placed = actor.place(msg.0);
            metrics::counter!("sluice_router_batches_total").increment(1);
            placed
        }))
    }
}

impl Handler<Invalidate> for PartitionRouter {
    type Result = ();

    fn handle(&mut self, msg: Invalidate, _ctx: &mut Self::Context) {
        self.partitions.remove(&msg.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unrouted(topic: &str, key: Option<&[u8]>, partition: Option<i32>) -> Unrouted {
        Unrouted {
            topic: topic.into(),
            partition,
            key: key.map(<[u8]>::to_vec),
            value: Some(b"v".to_vec()),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn keyed_records_follow_murmur2_and_unkeyed_stick_per_batch() {
        let mut router = PartitionRouter::new(BTreeMap::new());
        router.partitions.insert("t".into(), (50, Instant::now()));
        let placed = router
            .place(vec![
                unrouted("t", Some(b"foobar"), None),
                unrouted("t", None, None),
                unrouted("t", None, None),
                unrouted("t", Some(b"x"), Some(7)),
            ])
            .unwrap();
        assert_eq!(placed[0].partition, 16);
        assert_eq!(placed[1].partition, placed[2].partition);
        assert_eq!(placed[3].partition, 7);
        let next = router.place(vec![unrouted("t", None, None)]).unwrap();
        assert_ne!(next[0].partition, placed[1].partition, "batches rotate");
    }

    #[test]
    fn a_fixed_partition_out_of_range_is_refused() {
        let mut router = PartitionRouter::new(BTreeMap::new());
        router.partitions.insert("t".into(), (3, Instant::now()));
        let e = router
            .place(vec![unrouted("t", None, Some(3))])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("partition 3 requested, but the topic has 3"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    /// With no broker to answer, a batch fails within about one metadata timeout (the
    /// retries share one deadline), not one timeout per retry.
    #[actix::test]
    async fn an_unreachable_broker_fails_a_batch_within_one_metadata_timeout() {
        let props: BTreeMap<String, String> = [
            ("bootstrap.servers", "127.0.0.1:1"),
            ("broker.address.family", "v4"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let router = PartitionRouter::new(props)
            .with_metadata_timeout(Duration::from_secs(1))
            .start();
        let started = Instant::now();
        let routed = router
            .send(Route(vec![Unrouted {
                topic: "t".into(),
                partition: None,
                key: None,
                value: None,
                timestamp: None,
                headers: Vec::new(),
            }]))
            .await;
        assert!(matches!(routed, Ok(Err(_))), "{routed:?}");
        // Eleven retries of one second each took over 13 s.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
    }
}
