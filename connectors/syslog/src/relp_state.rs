//! The RELP source's acknowledgements and resend recognition, kept by the task between
//! `poll` and `commit`.

use std::collections::{HashMap, HashSet};

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
    /// The latest messages of each peer (by IP address).
    pub(crate) recent: HashMap<String, RecentMessages>,
    /// Sessions still in their opening run of resent messages.
    pub(crate) resending: HashSet<u64>,
    /// Sequence numbers given to polled messages; those up to `committed` are in Kafka.
    pub(crate) polled: u64,
    pub(crate) committed: u64,
}

impl RelpState {
    /// Takes a polled RELP message: `true` if it is to be written, `false` if it is a
    /// resend of one already taken (acknowledged, not written again).
    ///
    /// A client resends the messages it has no acknowledgement for first thing in a new
    /// session. So the opening run of a session is compared with the peer's latest
    /// messages, and the first message that is not among them ends the run: later ones
    /// are new even if identical to an earlier one.
    pub(crate) fn take(&mut self, connector: &str, peer: &str, meta: RelpMeta) -> bool {
        if meta.first {
            if self.resending.len() > 10_000 {
                // Sessions that closed inside their opening run: forget them, in bulk.
                self.resending.clear();
            }
            self.resending.insert(meta.session);
        }
        if self.window > 0 && self.resending.contains(&meta.session) {
            let seen = self.recent.get(peer).and_then(|r| r.find(meta.fingerprint));
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
            self.recent.entry(peer.to_owned()).or_default().push(
                meta.fingerprint,
                self.polled,
                self.window,
            );
        }
        self.unacked.push((meta.txnr, meta.reply));
        true
    }
}
