//! `scheduled.rebalance.max.delay.ms` (KIP-415): how long the leader holds the work of a
//! worker that left before handing it to the others, so a worker that restarts gets its
//! work back instead of every one of its tasks moving twice.
//!
//! As in Kafka Connect's incremental cooperative assignor: work the last round handed out
//! that no member reports now is lost; while fewer members are present than that round had
//! and the delay has not passed since the loss was first seen, the lost work is held (new
//! work is handed out at once); once a member joins in the departed one's place, or the
//! delay passes (the leader joins again then), it is handed out like any unowned work.
//! Sluice's default is 0: lost work moves at once. The state is the leader's own: a new
//! leader starts without it and hands everything out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::protocol::Unit;

/// The leader's memory of the last round, for holding lost work.
#[derive(Debug)]
pub(super) struct Delay {
    max: Duration,
    /// What the last round handed out (or held), and for how many members.
    previous: BTreeSet<Unit>,
    members: usize,
    /// When the held work is handed out, while some is held.
    deadline: Option<Instant>,
}

impl Delay {
    pub(super) fn new(max: Duration) -> Self {
        Delay {
            max,
            previous: BTreeSet::new(),
            members: 0,
            deadline: None,
        }
    }

    /// Of `work`, what this round holds back: the last round's units no member runs now
    /// (`owned`), while `members` is below the last round's count and the delay runs.
    pub(super) fn hold(
        &mut self,
        now: Instant,
        members: usize,
        owned: &BTreeSet<Unit>,
        work: &BTreeSet<Unit>,
    ) -> BTreeSet<Unit> {
        let lost: BTreeSet<Unit> = self
            .previous
            .iter()
            .filter(|u| work.contains(*u) && !owned.contains(*u))
            .cloned()
            .collect();
        if self.max.is_zero() || lost.is_empty() || members >= self.members {
            self.deadline = None;
            return BTreeSet::new();
        }
        let deadline = *self.deadline.get_or_insert(now + self.max);
        if now >= deadline {
            self.deadline = None;
            return BTreeSet::new();
        }
        lost
    }

    /// After a round: what it handed out and held, for `members` members. While work is
    /// held, the member count to wait for stays the one before the loss.
    pub(super) fn planned(&mut self, members: usize, run: BTreeSet<Unit>, held: BTreeSet<Unit>) {
        if held.is_empty() {
            self.members = members;
        }
        self.previous = run;
        self.previous.extend(held);
    }

    /// This worker no longer leads: what it remembers would be stale by its next term.
    pub(super) fn forget(&mut self) {
        self.previous.clear();
        self.members = 0;
        self.deadline = None;
    }

    /// When the leader must join again to hand out held work.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(tasks: &[u32]) -> BTreeSet<Unit> {
        tasks.iter().map(|t| Unit::task("c", *t)).collect()
    }

    #[test]
    fn lost_work_is_held_until_the_delay_passes() {
        let t0 = Instant::now();
        let mut d = Delay::new(Duration::from_secs(10));
        let work = units(&[0, 1, 2, 3]);
        // Two members ran everything.
        assert!(d.hold(t0, 2, &BTreeSet::new(), &work).is_empty());
        d.planned(2, work.clone(), BTreeSet::new());
        // One left with tasks 2 and 3: held, and a new task 4 is handed out at once.
        let mut grown = work.clone();
        grown.insert(Unit::task("c", 4));
        let held = d.hold(t0 + Duration::from_secs(1), 1, &units(&[0, 1]), &grown);
        assert_eq!(held, units(&[2, 3]));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(11)));
        d.planned(1, units(&[0, 1, 4]), held);
        // Another round within the delay holds them still, against the same deadline.
        let held = d.hold(t0 + Duration::from_secs(5), 1, &units(&[0, 1, 4]), &grown);
        assert_eq!(held, units(&[2, 3]));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(11)));
        d.planned(1, units(&[0, 1, 4]), held);
        // Past the deadline: handed out.
        let held = d.hold(t0 + Duration::from_secs(11), 1, &units(&[0, 1, 4]), &grown);
        assert!(held.is_empty());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn a_member_back_in_time_gets_the_work_at_once() {
        let t0 = Instant::now();
        let mut d = Delay::new(Duration::from_secs(300));
        let work = units(&[0, 1, 2, 3]);
        d.planned(2, work.clone(), BTreeSet::new());
        let held = d.hold(t0, 1, &units(&[0, 1]), &work);
        assert_eq!(held, units(&[2, 3]));
        d.planned(1, units(&[0, 1]), held);
        // The departed worker (or another) joins: two members again, nothing held.
        assert!(d
            .hold(t0 + Duration::from_secs(20), 2, &units(&[0, 1]), &work)
            .is_empty());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn no_delay_or_a_deleted_connector_holds_nothing() {
        let t0 = Instant::now();
        let mut none = Delay::new(Duration::ZERO);
        none.planned(2, units(&[0, 1]), BTreeSet::new());
        assert!(none.hold(t0, 1, &units(&[0]), &units(&[0, 1])).is_empty());
        // Lost work that is no longer configured is not held.
        let mut d = Delay::new(Duration::from_secs(10));
        d.planned(2, units(&[0, 1]), BTreeSet::new());
        assert!(d.hold(t0, 1, &units(&[0]), &units(&[0])).is_empty());
        // A new leader remembers nothing and holds nothing.
        d.forget();
        assert!(d.hold(t0, 1, &units(&[0]), &units(&[0, 1])).is_empty());
    }
}
