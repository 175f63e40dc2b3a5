//! A sink task's offset bookkeeping: which offsets to ask the group to commit, given
//! what the task consumed and what its sink reports durable, and what is known to be
//! committed already. An offset counts as committed only once the group confirmed it (the
//! poller reports each successful commit): a commit that failed is asked for again at the
//! next periodic commit, also for a partition that receives nothing new.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use sluice_proto::TopicPartition;

/// Next offset to read, per partition.
pub(crate) type Offsets = BTreeMap<TopicPartition, i64>;

/// Commits the group confirmed, reported by the poller thread and read by the task's loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Confirmations(Arc<Mutex<Offsets>>);

impl Confirmations {
    /// Records a successful commit (never moving an offset back).
    pub(crate) fn confirm(&self, offsets: &Offsets) {
        if let Ok(mut seen) = self.0.lock() {
            for (tp, o) in offsets {
                let entry = seen.entry(tp.clone()).or_insert(*o);
                *entry = (*entry).max(*o);
            }
        }
    }

    fn take(&self) -> Offsets {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// What is committed, per partition.
#[derive(Debug, Default)]
pub(crate) struct CommitBook {
    committed: Offsets,
    confirmations: Confirmations,
}

impl CommitBook {
    /// A book fed by `confirmations` (shared with the poller).
    pub(crate) fn new(confirmations: Confirmations) -> Self {
        CommitBook {
            committed: Offsets::new(),
            confirmations,
        }
    }

    /// Takes in what the poller confirmed since the last look.
    fn absorb(&mut self) {
        let confirmed = self.confirmations.take();
        self.confirm(&confirmed);
    }

    /// What was consumed and differs from what is committed (for a transaction's offsets).
    pub(crate) fn pending(&mut self, consumed: &Offsets) -> Offsets {
        self.absorb();
        consumed
            .iter()
            .filter(|(tp, o)| self.committed.get(*tp) != Some(*o))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// The durable offsets to ask the group to commit: only forward (unless `all`, for a
    /// revoke or a stop), only partitions still assigned, never past what was consumed.
    pub(crate) fn request(
        &mut self,
        durable: Offsets,
        assigned: &BTreeSet<TopicPartition>,
        consumed: &Offsets,
        all: bool,
    ) -> Offsets {
        self.absorb();
        let commit: Offsets = durable
            .into_iter()
            .filter(|(tp, o)| {
                assigned.contains(tp)
                    && (all || self.committed.get(tp).is_none_or(|c| o > c))
                    && consumed.get(tp).is_some_and(|c| o <= c)
            })
            .collect();
        // Not marked committed here: only the group's confirmation does that.
        commit
    }

    /// Offsets known committed (the group confirmed them, or a transaction holding
    /// them committed); never moves an offset back.
    pub(crate) fn confirm(&mut self, offsets: &Offsets) {
        for (tp, o) in offsets {
            let entry = self.committed.entry(tp.clone()).or_insert(*o);
            *entry = (*entry).max(*o);
        }
    }

    /// A partition that went away.
    pub(crate) fn forget(&mut self, tp: &TopicPartition) {
        self.absorb();
        self.committed.remove(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: "in".into(),
            partition: p,
        }
    }

    #[test]
    fn a_failed_commit_is_asked_for_again() {
        let mut book = CommitBook::default();
        let assigned: BTreeSet<_> = [tp(0), tp(1)].into_iter().collect();
        let consumed: Offsets = [(tp(0), 10), (tp(1), 5)].into_iter().collect();
        let first = book.request(consumed.clone(), &assigned, &consumed, false);
        assert_eq!(first, consumed);
        // The commit of partition 0 failed, partition 1's succeeded; nothing new arrives
        // (an idle partition): the next periodic commit asks for partition 0 again.
        let confirmations = Confirmations::default();
        let mut book = {
            let mut shared = CommitBook::new(confirmations.clone());
            shared.committed = book.committed.clone();
            shared
        };
        confirmations.confirm(&[(tp(1), 5)].into_iter().collect());
        let second = book.request(consumed.clone(), &assigned, &consumed, false);
        assert_eq!(second, [(tp(0), 10)].into_iter().collect::<Offsets>());
        confirmations.confirm(&second);
        assert!(book
            .request(consumed.clone(), &assigned, &consumed, false)
            .is_empty());
    }
}
