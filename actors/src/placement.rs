//! Which shard a meter (or feeder) belongs to.
//!
//! Ids hash into a fixed number of shards with xxh3, a fast, stable, non-cryptographic hash
//! whose output is specified (it does not change between versions or platforms), so every node
//! and every release computes the same shard for the same id. The shard count is fixed for the
//! life of a data directory. A single node owns every shard; the cluster assigns shards to
//! nodes, so nothing here has to change when nodes are added.

use xxhash_rust::xxh3::xxh3_64;

/// Index of a shard, `0..shards`.
pub type ShardId = u32;

/// The shard of an id.
pub fn shard_of(id: &str, shards: u32) -> ShardId {
    debug_assert!(shards > 0, "shard count is validated to be positive");
    (xxh3_64(id.as_bytes()) % u64::from(shards)) as ShardId
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

    proptest! {
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
