//! A sink connector's consumer group seen from outside its tasks (KIP-875): its committed
//! offsets read, altered or deleted while the connector is stopped.

use super::*;

/// A sink connector's consumer group could not be read or changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("consumer group {group}: {message}")]
pub struct GroupError {
    /// The group.
    pub group: String,
    /// What failed.
    pub message: String,
}

fn group_consumer(
    props: &BTreeMap<String, String>,
    group: &str,
) -> Result<BaseConsumer, GroupError> {
    let mut props = props.clone();
    props.insert("group.id".into(), group.to_owned());
    props.insert("enable.auto.commit".into(), "false".into());
    client_config(&props).create().map_err(|e| GroupError {
        group: group.to_owned(),
        message: sluice_proto::config::redact(&e.to_string(), &props),
    })
}

/// The committed offsets (next to read) of a sink connector's group, for every partition of
/// the topics its subscription names now.
pub async fn group_offsets(
    props: &BTreeMap<String, String>,
    group: &str,
    subscription: &Subscription,
    timeout: Duration,
) -> Result<Offsets, GroupError> {
    let consumer = group_consumer(props, group)?;
    let subscription = subscription.clone();
    let group_name = group.to_owned();
    let fail = move |message: String| GroupError {
        group: group_name.clone(),
        message,
    };
    crate::kafka::blocking(timeout, move || {
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(|e| fail(format!("fetching metadata: {e}")))?;
        let regex = match &subscription {
            Subscription::Regex(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| fail(format!("topics.regex: {e}")))?,
            ),
            Subscription::Topics(_) => None,
        };
        let mut list = TopicPartitionList::new();
        for topic in metadata.topics() {
            let wanted = match (&subscription, &regex) {
                (Subscription::Topics(ts), _) => ts.iter().any(|t| t == topic.name()),
                (_, Some(r)) => r.is_match(topic.name()),
                _ => false,
            };
            if wanted {
                for p in topic.partitions() {
                    list.add_partition(topic.name(), p.id());
                }
            }
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .map_err(|e| fail(format!("reading committed offsets: {e}")))?;
        Ok(offsets_of(&committed))
    })
    .await
    .map_err(|e| GroupError {
        group: group.to_owned(),
        message: format!("reader thread: {e}"),
    })?
}

/// Commits `offsets` for a group with no active member (a STOPPED sink connector),
/// waiting at most `timeout`.
pub async fn alter_group_offsets(
    props: &BTreeMap<String, String>,
    group: &str,
    offsets: Offsets,
    timeout: Duration,
) -> Result<(), GroupError> {
    let consumer = group_consumer(props, group)?;
    let name = group.to_owned();
    crate::kafka::blocking(timeout, move || {
        consumer
            .commit(&tpl(&offsets), CommitMode::Sync)
            .map_err(|e| GroupError {
                group: name,
                message: format!("committing offsets: {e}"),
            })
    })
    .await
    .map_err(|e| GroupError {
        group: group.to_owned(),
        message: format!("commit thread: {e}"),
    })?
}

/// Deletes a group (and with it every committed offset): the sink starts over from
/// `auto.offset.reset`.
pub async fn delete_group(
    props: &BTreeMap<String, String>,
    group: &str,
    timeout: Duration,
) -> Result<(), GroupError> {
    let fail = |message: String| GroupError {
        group: group.to_owned(),
        message,
    };
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(props)
            .create()
            .map_err(|e| fail(sluice_proto::config::redact(&e.to_string(), props)))?;
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(timeout));
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        admin.delete_groups(&[group], &options),
    )
    .await
    .map_err(|_| fail("DeleteGroups timed out".into()))?
    .map_err(|e| fail(format!("DeleteGroups: {e}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, code)) => return Err(fail(format!("DeleteGroups: {code}"))),
        }
    }
    Ok(())
}
