//! The RELP source's acknowledgements and resend recognition, kept by the task between
//! `poll` and `commit`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::relp::RecentMessages;
use crate::serve::{RelpMeta, Reply};

/// The RELP source's acknowledgements and resend recognition.
#[derive(Default)]
pub(crate) struct RelpState {
    /// How many fingerprints to keep per peer (0: resends are not recognised).
    pub(crate) window: usize,
    /// Messages returned by `poll` and not yet committed: acknowledged by `commit`.
    pub(crate) unacked: Vec<(u32, mpsc::OwnedPermit<Reply>)>,
    /// The latest messages of each peer (by IP address), bounded by
    /// [`forget_peers`](Self::forget_peers).
    pub(crate) recent: HashMap<String, PeerRecent>,
    /// Sessions still in their opening run of resent messages.
    pub(crate) resending: HashSet<u64>,
    /// Sequence numbers given to polled messages; those up to `committed` are in Kafka.
    pub(crate) polled: u64,
    pub(crate) committed: u64,
    /// The most peers whose recent messages are kept (`syslog.relp.dedupe.max.peers`).
    pub(crate) max_peers: usize,
    /// When `recent` was last swept for idle peers.
    pub(crate) last_sweep: Option<Instant>,
}

/// One peer's latest messages, and when it last sent one.
#[derive(Debug)]
pub(crate) struct PeerRecent {
    pub(crate) messages: RecentMessages,
    pub(crate) seen: Instant,
}

/// How long a peer's recent messages are kept after it last sent one.
pub(crate) const PEER_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How often `recent` is swept for idle peers (a sweep visits every peer).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl RelpState {
    /// Takes a polled RELP message: `true` if it is to be written, `false` if it is a
    /// resend of one already taken (acknowledged, not written again).
    ///
    /// A client resends the messages it has no acknowledgement for first thing in a new
    /// session. So the opening run of a session is compared with the peer's latest
    /// messages, and the first message that is not among them ends the run: later ones
    /// are new even if identical to an earlier one.
    pub(crate) fn take(
        &mut self,
        connector: &str,
        peer: &str,
        meta: RelpMeta,
        now: Instant,
    ) -> bool {
        if meta.first {
            if self.resending.len() > 10_000 {
                // Sessions that closed inside their opening run: forget them, in bulk.
                self.resending.clear();
            }
            self.resending.insert(meta.session);
        }
        if self.window > 0 && self.resending.contains(&meta.session) {
            let seen = self.recent.get_mut(peer).and_then(|r| {
                r.seen = now;
                r.messages.find(meta.fingerprint)
            });
            if let Some(sequence) = seen {
                metrics::counter!("sluice_syslog_relp_resends_skipped_total", "connector" => connector.to_owned())
                    .increment(1);
                tracing::debug!(
                    connector,
                    peer,
                    txnr = meta.txnr,
                    "RELP resend of a message already taken: acknowledged, not written again"
                );
                if sequence <= self.committed {
                    meta.reply.send(Reply::Ack(meta.txnr));
                } else {
                    // Its first copy is in the open transaction: acknowledge with it.
                    self.unacked.push((meta.txnr, meta.reply));
                }
                return false;
            }
            self.resending.remove(&meta.session);
        }
        self.polled += 1;
        if self.window > 0 {
            let recent = self
                .recent
                .entry(peer.to_owned())
                .or_insert_with(|| PeerRecent {
                    messages: RecentMessages::default(),
                    seen: now,
                });
            recent.seen = now;
            recent
                .messages
                .push(meta.fingerprint, self.polled, self.window);
            self.forget_peers(connector, now);
        }
        self.unacked.push((meta.txnr, meta.reply));
        true
    }

    /// Remembers a peer's messages as committed in its source offset (at start).
    pub(crate) fn restore(&mut self, peer: &str, messages: RecentMessages, now: Instant) {
        self.recent.insert(
            peer.to_owned(),
            PeerRecent {
                messages,
                seen: now,
            },
        );
    }

    /// Bounds `recent`: peers silent for [`PEER_IDLE`] are forgotten, and past `max_peers`
    /// the least recently seen are, down to 90% of it (so a stream of new peers does not
    /// sort the map each time).
    ///
    /// The trade-off: a forgotten peer's resends are no longer recognised, so what it
    /// resends later (after a crash of this worker, or a broken session) is written twice.
    /// A client resends first thing when it reconnects, so the fingerprints matter for a
    /// short while after a peer's last message: a day of silence is far past any reconnect
    /// (and a restart restores them with the time of the restart). The cap only bites when
    /// more peers than that send within a day; without it, memory would grow with every
    /// address that ever sent (up to window x 16 bytes each, and one source partition).
    pub(crate) fn forget_peers(&mut self, connector: &str, now: Instant) {
        let max_peers = self.max_peers.max(1);
        let sweep_due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY);
        if !sweep_due && self.recent.len() <= max_peers {
            return;
        }
        let before = self.recent.len();
        if sweep_due {
            self.last_sweep = Some(now);
            self.recent
                .retain(|_, r| now.saturating_duration_since(r.seen) < PEER_IDLE);
        }
        let idle = before - self.recent.len();
        let mut over_limit = 0;
        if self.recent.len() > max_peers {
            let keep = max_peers - max_peers / 10;
            let mut by_age: Vec<(Instant, String)> = self
                .recent
                .iter()
                .map(|(peer, r)| (r.seen, peer.clone()))
                .collect();
            by_age.sort_unstable();
            over_limit = by_age.len() - keep;
            for (_, peer) in by_age.into_iter().take(over_limit) {
                self.recent.remove(&peer);
            }
        }
        if idle + over_limit > 0 {
            metrics::counter!("sluice_syslog_relp_peers_forgotten_total", "connector" => connector.to_owned())
                .increment((idle + over_limit) as u64);
            tracing::info!(
                connector,
                idle,
                over_limit,
                remembered = self.recent.len(),
                "RELP peers forgotten: resends from them are no longer recognised"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `session` from a peer, with the fingerprint `fingerprint`.
    async fn message(
        replies: &mpsc::Sender<Reply>,
        session: u64,
        first: bool,
        fingerprint: u64,
    ) -> RelpMeta {
        RelpMeta {
            txnr: 1,
            reply: replies.clone().reserve_owned().await.expect("a place"),
            session,
            first,
            fingerprint,
        }
    }

    #[tokio::test]
    async fn peers_are_forgotten_when_idle_long_or_past_the_limit() {
        let (replies, _rx) = mpsc::channel(64);
        let mut state = RelpState {
            window: 8,
            max_peers: 2,
            ..RelpState::default()
        };
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        for (n, peer) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
            let meta = message(&replies, n as u64, true, 100 + n as u64).await;
            assert!(state.take("t", peer, meta, t0 + second * n as u32));
        }
        let mut peers: Vec<_> = state.recent.keys().cloned().collect();
        peers.sort();
        assert_eq!(
            peers,
            ["10.0.0.2", "10.0.0.3"],
            "the least recently seen is forgotten"
        );
        // The peers kept still have their resends recognised.
        state.committed = state.polled;
        let resend = message(&replies, 10, true, 102).await;
        assert!(!state.take("t", "10.0.0.3", resend, t0 + second * 3));

        // A day later, only the peer that just sent is remembered.
        let later = t0 + PEER_IDLE + second * 4;
        let meta = message(&replies, 11, true, 200).await;
        assert!(state.take("t", "10.0.0.4", meta, later));
        let peers: Vec<_> = state.recent.keys().cloned().collect();
        assert_eq!(peers, ["10.0.0.4"]);
    }
}
