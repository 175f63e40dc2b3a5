//! A sink task's offset bookkeeping: which offsets to ask the group to commit, given
//! what the task consumed and what its sink reports durable, and what is known to be
//! committed already.

use std::collections::{BTreeMap, BTreeSet};

use sluice_proto::TopicPartition;

/// Next offset to read, per partition.
pub(crate) type Offsets = BTreeMap<TopicPartition, i64>;

/// What was last committed (or asked to be), per partition.
#[derive(Debug, Default)]
pub(crate) struct CommitBook {
    committed: Offsets,
}

impl CommitBook {
    /// What was consumed and differs from what is committed (for a transaction's offsets).
    pub(crate) fn pending(&self, consumed: &Offsets) -> Offsets {
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
        let commit: Offsets = durable
            .into_iter()
            .filter(|(tp, o)| {
                assigned.contains(tp)
                    && (all || self.committed.get(tp).is_none_or(|c| o > c))
                    && consumed.get(tp).is_some_and(|c| o <= c)
            })
            .collect();
        self.committed.extend(commit.clone());
        commit
    }

    /// Offsets known committed (a transaction with them committed).
    pub(crate) fn mark(&mut self, offsets: Offsets) {
        self.committed.extend(offsets);
    }

    /// A partition that went away.
    pub(crate) fn forget(&mut self, tp: &TopicPartition) {
        self.committed.remove(tp);
    }
}
