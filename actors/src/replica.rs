//! Where the copies of a write go, and how replicas tell whether they hold the same readings.
//! Pure code: no I/O, no clocks.
//!
//! **Home sets.** Every shard has a preference list over the cluster's *home members*: the
//! members that are alive, suspect, or down for less than `replication.hint_window`, and
//! neither joining nor draining (see [`crate::placement`]). The first `R` are the shard's home
//! set: the members meant to hold its readings. The shard's primary is the first *live* member
//! of the same list, so when a home member goes down the next one in line takes over with the
//! readings it already holds.
//!
//! **A write's copies** ([`plan`]) go to every live home member, and for each home member that
//! is down, to the next live member beyond the home set, which keeps a *hint* naming the
//! member it stands in for and hands the readings off when that member is back.
//!
//! **Digests** ([`Digest`], [`entry_hash`]): a reading's entry hash covers its key and its
//! stored bytes (so its version); a bucket's digest is the wrapping sum of its entries' hashes
//! and their count. Sums are order-independent, so two replicas holding the same readings have
//! the same digests however they received them, and a digest can be split by day and hour to
//! find where two replicas differ.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hash of one stored reading: its key and its stored value.
pub fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, xxh3_64(key))
}

/// Digest of a set of readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    /// Wrapping sum of entry hashes.
    pub hash: u64,
    /// Readings counted.
    pub readings: u64,
}

impl Digest {
    /// Adds one reading's entry hash.
    pub fn add(&mut self, entry_hash: u64) {
        self.hash = self.hash.wrapping_add(entry_hash);
        self.readings += 1;
    }
}

/// One copy of a shard's write: the member, and the home members it stands in for (a hint for
/// each; empty for a home member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Member that takes the copy.
    pub node: String,
    /// Home members it keeps the copy for.
    pub hinted_for: Vec<String>,
}

/// The copies of one shard's write made by `me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Copies that count (R): `min(factor, home members)`, at least 1.
    pub copies: usize,
    /// Copies on other members, in preference order (`me` stores its own).
    pub targets: Vec<Target>,
    /// Live members beyond the targets, in preference order: substitutes for a target that
    /// fails to answer.
    pub spares: Vec<String>,
}

/// Plans the copies of a write to a shard with home preference list `home_pref` (over home
/// members, best first), made on `me`, with `factor` copies wanted.
///
/// Every live home member other than `me` gets a copy; every home member that is not live gets
/// a substitute, the next live member outside the home set, with a hint. When `me` is outside
/// the home set (views disagree for a moment) its copy is an extra one, and the home set is
/// still covered.
pub fn plan(home_pref: &[&str], is_live: impl Fn(&str) -> bool, me: &str, factor: usize) -> Plan {
    let copies = factor.min(home_pref.len()).max(1);
    let home = &home_pref[..copies.min(home_pref.len())];
    let mut targets: Vec<Target> = home
        .iter()
        .filter(|&&h| h != me && is_live(h))
        .map(|&h| Target {
            node: h.to_owned(),
            hinted_for: Vec::new(),
        })
        .collect();
    let missing: Vec<&str> = home
        .iter()
        .copied()
        .filter(|&h| h != me && !is_live(h))
        .collect();
    let mut beyond = home_pref[home.len()..]
        .iter()
        .copied()
        .filter(|&n| n != me && is_live(n));
    for down in missing {
        match beyond.next() {
            Some(substitute) => targets.push(Target {
                node: substitute.to_owned(),
                hinted_for: vec![down.to_owned()],
            }),
            None => break,
        }
    }
    Plan {
        copies,
        targets,
        spares: beyond.map(str::to_owned).collect(),
    }
}

/// Copies required before an ack: `write_quorum`, at most the copies that count.
pub fn quorum(write_quorum: usize, copies: usize) -> usize {
    write_quorum.min(copies).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn a_down_home_member_gets_a_substitute_with_a_hint() {
        let pref = ["a", "b", "c", "d"];
        let live = |n: &str| n != "b";
        let p = plan(&pref, live, "a", 2);
        assert_eq!(p.copies, 2);
        assert_eq!(
            p.targets,
            vec![Target {
                node: "c".into(),
                hinted_for: vec!["b".into()]
            }]
        );
        assert_eq!(p.spares, vec!["d".to_owned()]);
        // All live: the home set only, no hints.
        let p = plan(&pref, |_| true, "a", 3);
        let nodes: Vec<&str> = p.targets.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(nodes, ["b", "c"]);
        assert!(p.targets.iter().all(|c| c.hinted_for.is_empty()));
        // A cluster of one keeps one copy.
        assert_eq!(plan(&["a"], |_| true, "a", 2).copies, 1);
        assert_eq!(quorum(2, 1), 1);
    }

    proptest! {
        #[test]
        fn plans_cover_the_home_set_once(
            n in 1usize..7,
            factor in 1usize..4,
            down in proptest::collection::btree_set(0usize..7, 0..4),
            me in 0usize..7,
        ) {
            let all = names(n);
            let pref: Vec<&str> = all.iter().map(String::as_str).collect();
            let me = &all[me % n];
            let is_down = |x: &str| down.iter().any(|d| all.get(*d).is_some_and(|a| a == x));
            let is_live = |x: &str| x == me.as_str() || !is_down(x);
            let p = plan(&pref, is_live, me, factor);
            prop_assert_eq!(p.copies, factor.min(n));
            let home: Vec<&str> = pref[..p.copies].to_vec();
            let nodes: Vec<&str> = p.targets.iter().map(|c| c.node.as_str()).collect();
            // Never myself, never twice, only live members, never more copies than count.
            prop_assert!(!nodes.contains(&me.as_str()));
            prop_assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), nodes.len());
            prop_assert!(nodes.iter().all(|n| is_live(n)));
            prop_assert!(nodes.len() < p.copies + usize::from(!home.contains(&me.as_str())));
            for h in &home {
                if *h == me.as_str() { continue; }
                if is_live(h) {
                    // A live home member gets its own copy, unhinted.
                    prop_assert!(p.targets.iter().any(|c| c.node == *h && c.hinted_for.is_empty()));
                } else {
                    // A down one is stood in for by at most one substitute outside the home set.
                    let subs: Vec<&Target> = p.targets.iter()
                        .filter(|c| c.hinted_for.iter().any(|x| x == h)).collect();
                    prop_assert!(subs.len() <= 1);
                    for s in subs { prop_assert!(!home.contains(&s.node.as_str())); }
                }
            }
            // Spares are live, unused, outside the home set.
            for s in &p.spares {
                prop_assert!(is_live(s) && !nodes.contains(&s.as_str()) && s != me);
                prop_assert!(!home.contains(&s.as_str()));
            }
        }

        #[test]
        fn digests_do_not_depend_on_order(
            entries in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20),
        ) {
            let hashes: Vec<u64> = entries
                .iter()
                .map(|(k, v)| entry_hash(&k.to_be_bytes(), &v.to_be_bytes()))
                .collect();
            let mut forward = Digest::default();
            hashes.iter().for_each(|h| forward.add(*h));
            let mut backward = Digest::default();
            hashes.iter().rev().for_each(|h| backward.add(*h));
            prop_assert_eq!(forward, backward);
            prop_assert_eq!(forward.readings, entries.len() as u64);
        }
    }
}
