//! Which shard a meter (or feeder) belongs to, and which node owns each shard.
//!
//! Ids hash into a fixed number of shards with xxh3, a fast, stable, non-cryptographic hash
//! whose output is specified (it does not change between versions or platforms), so every node
//! and every release computes the same shard for the same id. The shard count is fixed for the
//! life of a data directory.
//!
//! Shards are assigned to nodes by rendezvous (highest-random-weight) hashing: every live
//! member gets a score per shard, `xxh3(name, seed = shard)`, and the shard's preference list
//! is the members by descending score. The first is the owner (primary); the next ones are
//! where replicas go. Rendezvous hashing needs no ring state and gives the minimal-movement
//! property exactly: when a member leaves, only its shards move; when one joins, only the shards
//! it now wins move, and they all move to it. Everything here is pure: the same member set gives
//! the same map on every node.

use std::collections::BTreeSet;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Index of a shard, `0..shards`.
pub type ShardId = u32;

/// The shard of an id.
pub fn shard_of(id: &str, shards: u32) -> ShardId {
    debug_assert!(shards > 0, "shard count is validated to be positive");
    (xxh3_64(id.as_bytes()) % u64::from(shards)) as ShardId
}

/// Rendezvous score of `member` for `shard`; ties (astronomically rare) break by name.
fn score(shard: ShardId, member: &str) -> u64 {
    xxh3_64_with_seed(member.as_bytes(), u64::from(shard))
}

/// The assignment of every shard to its preference list of members, for one membership view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    epoch: u64,
    members: Vec<String>,
    /// Per shard, indices into `members` by descending score.
    preference: Vec<Vec<u16>>,
}

impl ShardMap {
    /// The map of `shards` shards over the live `members` (order and duplicates do not matter)
    /// of the view with `epoch`. With no members every shard is ownerless.
    pub fn compute<'a>(
        epoch: u64,
        shards: u32,
        members: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let members: Vec<String> = members
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert!(
            members.len() <= usize::from(u16::MAX),
            "member count fits u16"
        );
        let preference = (0..shards)
            .map(|shard| {
                let mut order: Vec<u16> = (0..members.len() as u16).collect();
                order.sort_by(|&a, &b| {
                    let (a, b) = (&members[usize::from(a)], &members[usize::from(b)]);
                    score(shard, b).cmp(&score(shard, a)).then_with(|| a.cmp(b))
                });
                order
            })
            .collect();
        Self {
            epoch,
            members,
            preference,
        }
    }

    /// Epoch of the view this map was computed from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.preference.len() as u32
    }

    /// The members the map was computed over, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The owner (primary) of `shard`; `None` only when there are no members.
    pub fn owner(&self, shard: ShardId) -> Option<&str> {
        self.preference_list(shard).next()
    }

    /// The members of `shard` by preference: owner first, then replica candidates.
    pub fn preference_list(&self, shard: ShardId) -> impl Iterator<Item = &str> + '_ {
        self.preference
            .get(shard as usize)
            .into_iter()
            .flatten()
            .map(|&i| self.members[usize::from(i)].as_str())
    }

    /// The shards `member` owns.
    pub fn owned_by<'a>(&'a self, member: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        (0..self.shards()).filter(move |&s| self.owner(s) == Some(member))
    }

    /// Shards whose owner differs between `self` and `other` (same shard count).
    pub fn moved_from(&self, other: &ShardMap) -> Vec<ShardId> {
        (0..self.shards())
            .filter(|&s| self.owner(s) != other.owner(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: changing them would move every meter of every existing data directory.
        assert_eq!(shard_of("MTR-000001", 64), shard_of("MTR-000001", 64));
        assert_eq!(
            xxh3_64(b"MTR-000001") % 64,
            u64::from(shard_of("MTR-000001", 64))
        );
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn meters_spread_evenly() {
        let shards = 64;
        let mut counts = vec![0u32; shards as usize];
        for i in 0..64_000 {
            counts[shard_of(&format!("MTR-{i:06}"), shards) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            min >= Some(&850) && max <= Some(&1150),
            "uneven spread {min:?}..{max:?}"
        );
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn map(epoch: u64, shards: u32, members: &[String]) -> ShardMap {
        ShardMap::compute(epoch, shards, members.iter().map(String::as_str))
    }

    #[test]
    fn one_member_owns_everything_and_none_owns_nothing() {
        let solo = map(1, 64, &names(1));
        assert!((0..64).all(|s| solo.owner(s) == Some("node-0")));
        assert_eq!(solo.owned_by("node-0").count(), 64);
        let empty = map(2, 64, &[]);
        assert!((0..64).all(|s| empty.owner(s).is_none()));
    }

    /// The names the chaos harness, the compose file and a Kubernetes StatefulSet give
    /// members: a fourth joining three takes about a quarter of the default shards.
    #[test]
    fn a_fourth_member_takes_about_a_quarter_of_the_default_shards() {
        let shards = gridmesh_config::ActorsConfig::default().shards;
        for family in ["n", "node", "gridmesh-"] {
            let names: Vec<String> = (0..4).map(|i| format!("{family}{i}")).collect();
            let before = map(1, shards, &names[..3]);
            let after = map(2, shards, &names);
            let moved = after.moved_from(&before).len() as f64;
            let quarter = f64::from(shards) / 4.0;
            assert!(
                (moved - quarter).abs() <= 0.05 * f64::from(shards),
                "{family}*: {moved} of {shards} moved"
            );
            for name in &names {
                let owned = after.owned_by(name).count() as f64;
                assert!(
                    (owned - quarter).abs() <= 0.05 * f64::from(shards),
                    "{name} owns {owned}"
                );
            }
        }
    }

    #[test]
    fn shards_spread_over_members() {
        let m = map(1, 1024, &names(5));
        for name in names(5) {
            let owned = m.owned_by(&name).count();
            assert!((150..=260).contains(&owned), "{name} owns {owned} of 1024");
        }
    }

    proptest! {
        #[test]
        fn every_node_computes_the_same_map(
            mut members in proptest::collection::vec("[a-z]{1,8}", 1..8),
            shards in 1u32..512,
        ) {
            let a = map(7, shards, &members);
            members.reverse();
            members.push(members[0].clone());
            let b = map(7, shards, &members);
            prop_assert_eq!(&a, &b);
            for s in 0..shards {
                // Never ownerless while a member is alive; every member in every list once.
                prop_assert!(a.owner(s).is_some());
                let mut list: Vec<&str> = a.preference_list(s).collect();
                prop_assert_eq!(list.len(), a.members().len());
                list.sort_unstable();
                list.dedup();
                prop_assert_eq!(list.len(), a.members().len());
            }
        }

        #[test]
        fn a_leaving_member_moves_only_its_own_shards(n in 2usize..10, gone in 0usize..10) {
            let all = names(n);
            let gone = &all[gone % n];
            let before = map(1, 256, &all);
            let rest: Vec<String> = all.iter().filter(|m| *m != gone).cloned().collect();
            let after = map(2, 256, &rest);
            for s in after.moved_from(&before) {
                prop_assert_eq!(before.owner(s), Some(gone.as_str()));
            }
            prop_assert_eq!(before.owned_by(gone).count(), after.moved_from(&before).len());
        }

        #[test]
        fn a_joining_member_takes_about_one_nth(n in 1usize..12) {
            let shards = 1024;
            let before = map(1, shards, &names(n));
            let after = map(2, shards, &names(n + 1));
            let moved = after.moved_from(&before);
            let joined = format!("node-{n}");
            // Every moved shard went to the new member, and about 1/N of them moved.
            for &s in &moved {
                prop_assert_eq!(after.owner(s), Some(joined.as_str()));
            }
            let bound = (f64::from(shards) * (1.0 / (n + 1) as f64 + 0.05)) as usize;
            prop_assert!(moved.len() <= bound, "{} moved, bound {}", moved.len(), bound);
            prop_assert!(!moved.is_empty());
        }

        /// At the default shard count a join stays within 1/N + 5 % of the shards for any
        /// member names, not only for a convenient family of them.
        #[test]
        fn a_join_moves_about_one_nth_whatever_the_names(
            names in proptest::collection::btree_set("[a-z0-9.-]{1,12}", 2..7),
        ) {
            let shards = gridmesh_config::ActorsConfig::default().shards;
            let names: Vec<String> = names.into_iter().collect();
            let (old, joined) = names.split_at(names.len() - 1);
            let before = map(1, shards, old);
            let after = map(2, shards, &names);
            let moved = after.moved_from(&before);
            let bound = f64::from(shards) * (1.0 / names.len() as f64 + 0.05);
            prop_assert!((moved.len() as f64) <= bound, "{} moved, bound {}", moved.len(), bound);
            for &s in &moved {
                prop_assert_eq!(after.owner(s), Some(joined[0].as_str()));
            }
        }

        #[test]
        fn shard_is_in_range_and_deterministic(
            id in "[A-Za-z0-9._:-]{1,64}",
            shards in 1u32..4096,
        ) {
            let shard = shard_of(&id, shards);
            prop_assert!(shard < shards);
            prop_assert_eq!(shard, shard_of(&id, shards));
        }
    }
}
