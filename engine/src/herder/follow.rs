//! The worker follows its config topic for as long as it runs, so a connector config
//! written by anyone (another worker of the group, a tool, an operator restoring a backup
//! of the topic) reaches it, as Kafka Connect's `KafkaConfigBackingStore` does. Each
//! changed connector is reconciled with the running table: created, replaced with its new
//! config, given its new target state, or stopped and forgotten. The worker's own REST
//! changes come back through the topic too; they hold the table's change lock until they
//! are applied, so by the time the follower looks they are already in place and nothing
//! happens twice.

use std::time::{Duration, Instant};

use super::worker::Worker;
use super::HerderError;

/// How long a change made over REST waits for the follower to read it back.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Worker {
    /// Starts following the config topic (a REST-managed worker; without a store there is
    /// nothing to follow). The follower lives as long as the actix system.
    pub fn follow_config_topic(&self) -> Result<(), HerderError> {
        let Some(store) = self.config_store() else {
            return Ok(());
        };
        let (changes, mut received) = tokio::sync::mpsc::unbounded_channel();
        let followed = store
            .follow(changes)
            .map_err(|e| HerderError::Internal(format!("following the config topic: {e}")))?;
        if self.followed.set(followed).is_err() {
            return Err(HerderError::Internal(
                "the config topic is followed already".into(),
            ));
        }
        let worker = self.clone();
        actix::spawn(async move {
            while let Some(name) = received.recv().await {
                worker.reconcile(&name).await;
            }
        });
        Ok(())
    }

    /// After this worker wrote a change to the config topic (and applied it), waits until
    /// the follower has read it: the follower then judges later records against a state
    /// that includes it, never against the one before. Called with the change lock held.
    pub(super) async fn settle(&self) {
        let Some(followed) = self.followed.get() else {
            return;
        };
        let end = match followed.end_offset().await {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(error = %e, "the config topic's end offset is unknown; not waiting for the follower");
                return;
            }
        };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while followed.position() < end {
            if Instant::now() > deadline {
                tracing::warn!(
                    end,
                    position = followed.position(),
                    "the config topic follower is behind; going on without it"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes the running connector `name` what the config topic says now.
    async fn reconcile(&self, name: &str) {
        let _change = self.changes.lock().await;
        let Some(followed) = self.followed.get() else {
            return;
        };
        let stored = followed.get(name);
        let running = self.connector(name).ok();
        let action = match (running, stored) {
            (None, None) => return,
            (Some(_), None) => match self.forget(name).await {
                Ok(()) => "deleted",
                Err(e) => {
                    tracing::warn!(connector = %name, error = %e, "a connector deleted in the config topic could not be stopped");
                    return;
                }
            },
            (None, Some(stored)) => match self.create_connector(&stored.config, stored.target) {
                Ok(_) => "created",
                Err(e) => {
                    tracing::error!(connector = %name, error = %e, "a connector config found in the config topic is invalid; not started");
                    return;
                }
            },
            (Some(entry), Some(stored)) if entry.config != stored.config => {
                let planned = match Self::plugin_of(&stored.config) {
                    Ok(plugin) => self.plan_off_thread(plugin, &stored.config).await,
                    Err(e) => Err(e),
                };
                let planned = match planned {
                    Ok(planned) => planned,
                    Err(e) => {
                        tracing::error!(connector = %name, error = %e, "a new config found in the config topic is invalid; the connector keeps its running config");
                        return;
                    }
                };
                if let Err(e) = self.forget(name).await {
                    tracing::warn!(connector = %name, error = %e, "the connector could not be stopped for its new config");
                    return;
                }
                if let Err(e) = self.launch(planned, stored.target) {
                    tracing::error!(connector = %name, error = %e, "the connector did not start with its new config");
                    return;
                }
                "updated"
            }
            (Some(entry), Some(stored)) if entry.target != stored.target => {
                if self.apply_target(name, &entry, stored.target).is_err() {
                    return;
                }
                "target"
            }
            (Some(_), Some(_)) => return,
        };
        metrics::counter!("sluice_config_topic_changes_total", "action" => action).increment(1);
        tracing::info!(connector = %name, action, "connector changed through the config topic");
    }
}
