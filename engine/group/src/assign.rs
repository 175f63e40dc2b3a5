//! The leader's assignment: balanced and sticky, with two-round revocation, as Kafka
//! Connect's incremental cooperative assignor (KIP-415).
//!
//! Each member reports what it runs; the leader keeps every member's work where it is up
//! to that member's fair share, hands out work nobody runs (new, or its owner left) at
//! once to the members furthest below their share, and takes away what a member runs
//! beyond its share. Taken work is *not* handed to anyone in the same round: its owner
//! stops it and joins again, and the next round gives it out as work nobody runs. So no
//! unit of work ever runs on two members at once, and work that does not move never
//! restarts. Fair shares differ by at most one (`max - min <= 1`).

use std::collections::{BTreeMap, BTreeSet};

/// What one member is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<W> {
    /// Everything the member should run after this round (kept and new).
    pub run: BTreeSet<W>,
    /// What the member runs and must stop before joining again.
    pub revoke: BTreeSet<W>,
}

impl<W> Default for Plan<W> {
    fn default() -> Self {
        Plan {
            run: BTreeSet::new(),
            revoke: BTreeSet::new(),
        }
    }
}

/// Assigns `work` over `members` (member id -> what it reports running). Work a member
/// runs that is no longer in `work` is revoked; work two members claim is revoked from both
/// (and handed out in the next round).
pub fn assign<M, W>(members: &BTreeMap<M, BTreeSet<W>>, work: &BTreeSet<W>) -> BTreeMap<M, Plan<W>>
where
    M: Ord + Clone,
    W: Ord + Clone,
{
    let mut plans: BTreeMap<M, Plan<W>> = members
        .keys()
        .map(|m| (m.clone(), Plan::default()))
        .collect();
    if members.is_empty() {
        return plans;
    }
    // Work two members claim (one of them has not heard it lost it) is taken from both
    // and handed out next round, as Kafka Connect does: it must stop everywhere before it
    // runs anywhere again.
    let mut claims: BTreeMap<&W, usize> = BTreeMap::new();
    for owned in members.values() {
        for w in owned {
            *claims.entry(w).or_default() += 1;
        }
    }
    // What each member keeps for now: its claims still configured and claimed by it alone.
    // Everything claimed counts as taken this round (a revoked unit still runs until its
    // owner has stopped it).
    let taken: BTreeSet<&W> = claims.keys().copied().collect();
    let mut kept: BTreeMap<&M, Vec<&W>> = BTreeMap::new();
    for (m, owned) in members {
        let plan = plans.entry(m.clone()).or_default();
        let mine = kept.entry(m).or_default();
        for w in owned {
            if work.contains(w) && claims.get(w) == Some(&1) {
                mine.push(w);
            } else {
                plan.revoke.insert(w.clone());
            }
        }
    }
    // Fair shares: `rem` members get one more; those already running the most keep it.
    let n = members.len();
    let (base, rem) = (work.len() / n, work.len() % n);
    let mut order: Vec<&M> = members.keys().collect();
    order.sort_by_key(|m| std::cmp::Reverse(kept.get(m).map_or(0, Vec::len)));
    let share: BTreeMap<&M, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + usize::from(i < rem)))
        .collect();
    // Beyond its share, a member gives work back (the last it listed).
    for (m, mine) in &mut kept {
        let quota = share.get(m).copied().unwrap_or(base);
        while mine.len() > quota {
            if let (Some(w), Some(plan)) = (mine.pop(), plans.get_mut(*m)) {
                plan.revoke.insert(w.clone());
            }
        }
    }
    // Work nobody runs goes to whoever is furthest below its share.
    let mut count: BTreeMap<&M, usize> = kept.iter().map(|(m, v)| (*m, v.len())).collect();
    for w in work.iter().filter(|w| !taken.contains(w)) {
        let best = members
            .keys()
            .filter(|m| count.get(m).copied().unwrap_or(0) < share.get(m).copied().unwrap_or(base))
            .min_by_key(|m| {
                let c = count.get(m).copied().unwrap_or(0);
                (
                    c,
                    std::cmp::Reverse(share.get(m).copied().unwrap_or(base) - c),
                )
            })
            .or_else(|| {
                members
                    .keys()
                    .min_by_key(|m| count.get(m).copied().unwrap_or(0))
            });
        if let Some(m) = best {
            *count.entry(m).or_default() += 1;
            if let Some(plan) = plans.get_mut(m) {
                plan.run.insert(w.clone());
            }
        }
    }
    for (m, mine) in kept {
        if let Some(plan) = plans.get_mut(m) {
            plan.run.extend(mine.into_iter().cloned());
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[u32]) -> BTreeSet<u32> {
        items.iter().copied().collect()
    }

    fn counts(plans: &BTreeMap<&str, Plan<u32>>) -> Vec<usize> {
        plans.values().map(|p| p.run.len()).collect()
    }

    /// Runs rounds until nothing is revoked, as members would: each stops what it was told
    /// to and reports what it runs. Returns the rounds taken and the final plans.
    fn settle(
        mut members: BTreeMap<&'static str, BTreeSet<u32>>,
        work: &BTreeSet<u32>,
    ) -> (usize, BTreeMap<&'static str, Plan<u32>>) {
        for round in 1..10 {
            let plans = assign(&members, work);
            // No unit runs on two members at once, at any point.
            let mut seen = BTreeSet::new();
            for p in plans.values() {
                for w in &p.run {
                    assert!(seen.insert(*w), "{w} assigned twice in round {round}");
                }
            }
            if plans.values().all(|p| p.revoke.is_empty()) {
                return (round, plans);
            }
            members = plans.iter().map(|(m, p)| (*m, p.run.clone())).collect();
        }
        panic!("did not settle");
    }

    #[test]
    fn new_work_is_spread_evenly() {
        let members = BTreeMap::from([("a", set(&[])), ("b", set(&[])), ("c", set(&[]))]);
        let work: BTreeSet<u32> = (0..10).collect();
        let (rounds, plans) = settle(members, &work);
        assert_eq!(rounds, 1);
        let mut c = counts(&plans);
        c.sort_unstable();
        assert_eq!(c, [3, 3, 4]);
        let all: BTreeSet<u32> = plans.values().flat_map(|p| p.run.clone()).collect();
        assert_eq!(all, work);
    }

    #[test]
    fn a_lost_members_work_moves_at_once_and_the_rest_stays() {
        // "c" died: its work has no owner and goes out in this very round.
        let members = BTreeMap::from([("a", set(&[0, 1, 2])), ("b", set(&[3, 4, 5]))]);
        let work: BTreeSet<u32> = (0..9).collect();
        let plans = assign(&members, &work);
        assert!(plans.values().all(|p| p.revoke.is_empty()));
        assert!(plans["a"].run.is_superset(&set(&[0, 1, 2])));
        assert!(plans["b"].run.is_superset(&set(&[3, 4, 5])));
        let mut c = counts(&plans);
        c.sort_unstable();
        assert_eq!(c, [4, 5]);
    }

    #[test]
    fn a_joining_member_gets_its_share_in_a_second_round_without_moving_the_rest() {
        let members = BTreeMap::from([
            ("a", set(&[0, 1, 2, 3, 4])),
            ("b", set(&[5, 6, 7, 8, 9])),
            ("c", set(&[])),
        ]);
        let work: BTreeSet<u32> = (0..10).collect();
        let first = assign(&members, &work);
        // First round: the new member gets nothing yet; the others give back their excess.
        assert!(first["c"].run.is_empty());
        let given_back: usize = first.values().map(|p| p.revoke.len()).sum();
        assert_eq!(given_back, 3);
        let (rounds, plans) = settle(members, &work);
        assert_eq!(rounds, 2);
        let mut c = counts(&plans);
        c.sort_unstable();
        assert_eq!(c, [3, 3, 4]);
        // Whatever was not given back stayed where it ran.
        assert!(plans["a"].run.is_subset(&set(&[0, 1, 2, 3, 4])));
        assert!(plans["b"].run.is_subset(&set(&[5, 6, 7, 8, 9])));
        assert_eq!(plans["c"].run.len(), 3);
    }

    #[test]
    fn deleted_and_doubly_claimed_work_is_revoked() {
        // 7 is no longer configured; 2 is claimed by both (a member that has not heard it
        // lost it): it stops on both before it runs anywhere again.
        let members = BTreeMap::from([("a", set(&[1, 2, 7])), ("b", set(&[2, 3]))]);
        let work = set(&[1, 2, 3, 4]);
        let plans = assign(&members, &work);
        assert_eq!(plans["a"].revoke, set(&[2, 7]));
        assert_eq!(plans["b"].revoke, set(&[2]));
        assert!(plans.values().all(|p| !p.run.contains(&2)));
        assert!(plans["a"].run.contains(&1) && plans["b"].run.contains(&3));
        assert!(plans.values().any(|p| p.run.contains(&4)));
        let (_, settled) = settle(members, &work);
        assert!(settled.values().any(|p| p.run.contains(&2)));
    }

    #[test]
    fn balance_holds_for_any_member_count_and_history() {
        for n in 1..6_usize {
            for total in 0..20_u32 {
                let names = ["a", "b", "c", "d", "e"];
                // A skewed history: everything on the first member.
                let members: BTreeMap<&'static str, BTreeSet<u32>> = names[..n]
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        (
                            *m,
                            if i == 0 {
                                (0..total).collect()
                            } else {
                                set(&[])
                            },
                        )
                    })
                    .collect();
                let work: BTreeSet<u32> = (0..total).collect();
                let (_, plans) = settle(members, &work);
                let c = counts(&plans);
                let (lo, hi) = (c.iter().min().copied(), c.iter().max().copied());
                assert!(
                    hi.unwrap_or(0) - lo.unwrap_or(0) <= 1,
                    "n={n} total={total}: {c:?}"
                );
                let all: BTreeSet<u32> = plans.values().flat_map(|p| p.run.clone()).collect();
                assert_eq!(all, work);
            }
        }
    }
}
