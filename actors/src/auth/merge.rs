//! How auth records from different nodes combine (pure; property-tested).
//!
//! Every node holds every user, session and revocation, and any node may change them. Changes
//! are broadcast and periodically compared (see [`super`]), so the same records can arrive in
//! any order, more than once. The merge is therefore a join: commutative, associative and
//! idempotent, and every node ends with the same state whatever the order.
//!
//! - Users and sessions: the record with the highest `(version, tie-break)` wins, where the
//!   version is `max(now_ms, previous + 1)` at the node making the change. Two admins changing
//!   one user on two nodes in the same millisecond: one change wins everywhere. Admin
//!   operations are rare, so last-writer-wins is acceptable here; revocations do not rely on it.
//! - Revocations: a grow-only set keyed by (kind, id); merging keeps the larger `before_ms`
//!   and `expires_ms`. Nothing can un-revoke, so a concurrent user edit never resurrects a
//!   revoked session or token.

use gridmesh_proto::internal::{Revocation, SessionRecord, UserRecord};
use prost::Message;

/// Whether `new` replaces `old` (a user record).
pub fn user_wins(old: &UserRecord, new: &UserRecord) -> bool {
    (new.version, &new.updated_by, new.encode_to_vec())
        > (old.version, &old.updated_by, old.encode_to_vec())
}

/// Whether `new` replaces `old` (a session record).
pub fn session_wins(old: &SessionRecord, new: &SessionRecord) -> bool {
    (new.version, new.encode_to_vec()) > (old.version, old.encode_to_vec())
}

/// The join of two revocations of the same (kind, id); `None` when `old` already covers
/// `new` (nothing to store).
pub fn merge_revocation(old: &Revocation, new: &Revocation) -> Option<Revocation> {
    let merged = Revocation {
        kind: old.kind,
        id: old.id.clone(),
        before_ms: old.before_ms.max(new.before_ms),
        expires_ms: old.expires_ms.max(new.expires_ms),
        revoked_ms: old.revoked_ms.max(new.revoked_ms),
    };
    (merged != *old).then_some(merged)
}

/// The next version after `previous` at time `now_ms`.
pub fn next_version(previous: u64, now_ms: i64) -> u64 {
    (now_ms.max(0) as u64).max(previous + 1)
}

/// Hash of one record for the state digest.
pub fn entry_hash(tag: u8, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, u64::from(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn user(version: u64, by: &str, role: &str) -> UserRecord {
        UserRecord {
            name: "u".into(),
            version,
            updated_by: by.into(),
            roles: vec![role.into()],
            ..Default::default()
        }
    }

    /// Applies records in order with the merge rule; returns the final record.
    fn fold_users(records: &[UserRecord]) -> Option<UserRecord> {
        let mut current: Option<UserRecord> = None;
        for r in records {
            match &current {
                Some(old) if !user_wins(old, r) => {}
                _ => current = Some(r.clone()),
            }
        }
        current
    }

    fn fold_revocations(records: &[Revocation]) -> BTreeMap<(i32, String), Revocation> {
        let mut set: BTreeMap<(i32, String), Revocation> = BTreeMap::new();
        for r in records {
            let key = (r.kind, r.id.clone());
            match set.get(&key) {
                Some(old) => {
                    if let Some(m) = merge_revocation(old, r) {
                        set.insert(key, m);
                    }
                }
                None => {
                    set.insert(key, r.clone());
                }
            }
        }
        set
    }

    #[test]
    fn higher_version_wins_and_ties_break_by_node() {
        assert!(user_wins(&user(1, "n1", "viewer"), &user(2, "n0", "admin")));
        assert!(!user_wins(
            &user(2, "n0", "admin"),
            &user(1, "n1", "viewer")
        ));
        assert!(user_wins(&user(2, "n0", "admin"), &user(2, "n1", "viewer")));
        assert!(!user_wins(
            &user(2, "n1", "viewer"),
            &user(2, "n1", "viewer")
        ));
    }

    #[test]
    fn versions_grow() {
        assert_eq!(next_version(0, 1000), 1000);
        assert_eq!(next_version(5000, 1000), 5001);
    }

    proptest! {
        #[test]
        fn users_converge_in_any_order(
            versions in prop::collection::vec((0u64..5, 0u8..3, 0u8..3), 1..8),
            seed in any::<u64>(),
        ) {
            let records: Vec<UserRecord> = versions
                .iter()
                .map(|(v, n, r)| user(*v, &format!("n{n}"), &format!("r{r}")))
                .collect();
            let mut shuffled = records.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut twice = shuffled.clone();
            twice.extend(records.iter().cloned());
            prop_assert_eq!(fold_users(&records), fold_users(&shuffled));
            prop_assert_eq!(fold_users(&records), fold_users(&twice));
        }

        #[test]
        fn revocations_only_grow_and_converge(
            entries in prop::collection::vec((0i32..3, 0u8..3, 0i64..100, 0i64..100), 1..10),
        ) {
            let records: Vec<Revocation> = entries
                .iter()
                .map(|(k, id, before, exp)| Revocation {
                    kind: *k,
                    id: format!("id{id}"),
                    before_ms: *before,
                    expires_ms: *exp,
                    revoked_ms: 0,
                })
                .collect();
            let mut reversed = records.clone();
            reversed.reverse();
            let forward = fold_revocations(&records);
            prop_assert_eq!(&forward, &fold_revocations(&reversed));
            for r in &records {
                let kept = &forward[&(r.kind, r.id.clone())];
                prop_assert!(kept.before_ms >= r.before_ms && kept.expires_ms >= r.expires_ms);
            }
        }
    }
}
