//! Users, sessions, revocations and the audit log of one node: a fjall keyspace (`auth`) with
//! the whole state mirrored in memory, so checking a token costs a few hash lookups.
//!
//! Keys: `u` + user name → `UserRecord`; `s` + session id → `SessionRecord`; `r` + kind byte +
//! id → `Revocation`; `a` + ts_ms (u64 BE) + sequence (u64 BE) → `AuditEvent` (this node's
//! own log, not replicated); `m` + name → node-local values (the development key seed).
//!
//! Writes are rare (admin operations, logins, refreshes) and must be durable before the call
//! that made them returns, so they bypass the readings' group-commit writer: each merge is one
//! atomic batch synced to disk. Audit events are written without a sync (a crash may lose the
//! last few; a sync per failed login would let a password guesser drive the disk).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gridmesh_proto::internal::{AuthState, Revocation, RevocationKind, SessionRecord, UserRecord};
use gridmesh_proto::v1::AuditEvent;
use prost::Message;

use super::merge::{entry_hash, merge_revocation, session_wins, user_wins};
use crate::storage::{Store, StoreError, StoreResult};

/// Audit events older than this are dropped by [`AuthStore::gc`].
const AUDIT_RETENTION_MS: i64 = 90 * 24 * 3600 * 1000;

/// The in-memory state.
#[derive(Debug, Default, Clone)]
pub struct AuthMem {
    /// Users by name.
    pub users: HashMap<String, UserRecord>,
    /// Sessions by id.
    pub sessions: HashMap<String, SessionRecord>,
    /// Revocations by (kind, id).
    pub revocations: HashMap<(i32, String), Revocation>,
}

impl AuthMem {
    /// Whether `(kind, id)` is revoked.
    pub fn is_revoked(&self, kind: RevocationKind, id: &str) -> bool {
        self.revocations.contains_key(&(kind as i32, id.to_owned()))
    }

    /// Tokens of `user` issued before this time (ms) are refused; 0 when none are.
    pub fn user_revoked_before(&self, user: &str) -> i64 {
        self.revocations
            .get(&(RevocationKind::UserBefore as i32, user.to_owned()))
            .map_or(0, |r| r.before_ms)
    }

    /// Everything, for a full sync.
    pub fn dump(&self) -> AuthState {
        AuthState {
            users: self.users.values().cloned().collect(),
            sessions: self.sessions.values().cloned().collect(),
            revocations: self.revocations.values().cloned().collect(),
        }
    }

    /// Order-independent digest: (wrapping sum of entry hashes, entries).
    pub fn digest(&self) -> (u64, u64) {
        let users = self
            .users
            .values()
            .map(|u| entry_hash(b'u', &u.encode_to_vec()));
        let sessions = self
            .sessions
            .values()
            .map(|s| entry_hash(b's', &s.encode_to_vec()));
        let revocations = self
            .revocations
            .values()
            .map(|r| entry_hash(b'r', &r.encode_to_vec()));
        let all: Vec<u64> = users.chain(sessions).chain(revocations).collect();
        (
            all.iter().fold(0u64, |acc, h| acc.wrapping_add(*h)),
            all.len() as u64,
        )
    }
}

/// What a merge changed (for the effects: closing streams, stopping session actors).
#[derive(Debug, Default, Clone)]
pub struct Changed {
    /// Users whose record changed.
    pub users: Vec<String>,
    /// Sessions whose record changed.
    pub sessions: Vec<String>,
    /// Revocations added or widened.
    pub revocations: Vec<Revocation>,
}

impl Changed {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.sessions.is_empty() && self.revocations.is_empty()
    }
}

/// The auth keyspace and its mirror.
pub struct AuthStore {
    db: Database,
    space: Keyspace,
    mem: RwLock<AuthMem>,
    /// Serialises merges so memory and disk change in the same order.
    write: Mutex<()>,
    audit_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore").finish_non_exhaustive()
    }
}

fn user_key(name: &str) -> Vec<u8> {
    [b"u".as_slice(), name.as_bytes()].concat()
}

fn session_key(id: &str) -> Vec<u8> {
    [b"s".as_slice(), id.as_bytes()].concat()
}

fn revocation_key(kind: i32, id: &str) -> Vec<u8> {
    [b"r".as_slice(), &[kind as u8], id.as_bytes()].concat()
}

fn corrupt(e: prost::DecodeError) -> StoreError {
    StoreError::Corrupt {
        space: "auth",
        message: e.to_string(),
    }
}

impl AuthStore {
    /// Opens the `auth` keyspace of `store` and loads it into memory.
    pub fn open(store: &Store) -> StoreResult<Self> {
        let space = store.db.keyspace("auth", KeyspaceCreateOptions::default)?;
        let mut mem = AuthMem::default();
        for item in space.prefix(b"u") {
            let value = item.value()?;
            let user = UserRecord::decode(value.as_ref()).map_err(corrupt)?;
            mem.users.insert(user.name.clone(), user);
        }
        for item in space.prefix(b"s") {
            let value = item.value()?;
            let session = SessionRecord::decode(value.as_ref()).map_err(corrupt)?;
            mem.sessions.insert(session.session_id.clone(), session);
        }
        for item in space.prefix(b"r") {
            let value = item.value()?;
            let r = Revocation::decode(value.as_ref()).map_err(corrupt)?;
            mem.revocations.insert((r.kind, r.id.clone()), r);
        }
        Ok(Self {
            db: store.db.clone(),
            space,
            mem: RwLock::new(mem),
            write: Mutex::new(()),
            audit_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The in-memory state, for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, AuthMem> {
        self.mem
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A user, cloned.
    pub fn user(&self, name: &str) -> Option<UserRecord> {
        self.read().users.get(name).cloned()
    }

    /// A session, cloned.
    pub fn session(&self, id: &str) -> Option<SessionRecord> {
        self.read().sessions.get(id).cloned()
    }

    /// Merges `state` (see [`super::merge`]), storing what changed in one synced batch;
    /// records that are already expired at `now_ms` are ignored.
    pub fn merge(&self, state: AuthState, now_ms: i64) -> StoreResult<Changed> {
        let _serial = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self.read().clone();
        let mut changed = Changed::default();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for user in state.users {
            if next
                .users
                .get(&user.name)
                .is_some_and(|old| !user_wins(old, &user))
            {
                continue;
            }
            batch.insert(&self.space, user_key(&user.name), user.encode_to_vec());
            changed.users.push(user.name.clone());
            next.users.insert(user.name.clone(), user);
        }
        for session in state.sessions {
            let id = session.session_id.clone();
            let stale = session.expires_ms < now_ms;
            if stale
                || next
                    .sessions
                    .get(&id)
                    .is_some_and(|old| !session_wins(old, &session))
            {
                continue;
            }
            batch.insert(&self.space, session_key(&id), session.encode_to_vec());
            changed.sessions.push(id.clone());
            next.sessions.insert(id, session);
        }
        for r in state.revocations {
            if r.expires_ms < now_ms || r.id.is_empty() {
                continue;
            }
            let key = (r.kind, r.id.clone());
            let merged = match next.revocations.get(&key) {
                Some(old) => match merge_revocation(old, &r) {
                    Some(m) => m,
                    None => continue,
                },
                None => r,
            };
            batch.insert(
                &self.space,
                revocation_key(merged.kind, &merged.id),
                merged.encode_to_vec(),
            );
            changed.revocations.push(merged.clone());
            next.revocations.insert(key, merged);
        }
        if !changed.is_empty() {
            batch.commit()?;
            *self
                .mem
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        }
        Ok(changed)
    }

    /// Drops sessions and revocations that can no longer matter at `now_ms`, and audit
    /// events past retention. Each node does this on its own clock; the merge ignores expired
    /// records, so a late copy never brings one back.
    pub fn gc(&self, now_ms: i64) -> StoreResult<usize> {
        let _serial = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self.read().clone();
        let mut batch = self.db.batch();
        let mut dropped = 0;
        next.sessions.retain(|id, s| {
            let keep = s.expires_ms >= now_ms;
            if !keep {
                batch.remove(&self.space, session_key(id));
                dropped += 1;
            }
            keep
        });
        next.revocations.retain(|(kind, id), r| {
            let keep = r.expires_ms >= now_ms;
            if !keep {
                batch.remove(&self.space, revocation_key(*kind, id));
                dropped += 1;
            }
            keep
        });
        let cutoff = [
            b"a".as_slice(),
            &((now_ms - AUDIT_RETENTION_MS).max(0) as u64).to_be_bytes(),
        ]
        .concat();
        for item in self.space.range(b"a".to_vec()..cutoff) {
            batch.remove(&self.space, item.key()?.to_vec());
            dropped += 1;
        }
        if dropped > 0 {
            batch.commit()?;
            *self
                .mem
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        }
        Ok(dropped)
    }

    /// Appends an audit event to this node's log.
    pub fn audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let seq = self
            .audit_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = [
            b"a".as_slice(),
            &(event.ts_ms.max(0) as u64).to_be_bytes(),
            &seq.to_be_bytes(),
        ]
        .concat();
        Ok(self.space.insert(key, event.encode_to_vec())?)
    }

    /// This node's audit events at or after `since_ms` matching `user` (actor or target;
    /// empty = all), the newest `limit`, oldest first.
    pub fn audit_events(
        &self,
        since_ms: i64,
        user: &str,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let from = [b"a".as_slice(), &(since_ms.max(0) as u64).to_be_bytes()].concat();
        let mut out = Vec::new();
        for item in self.space.range(from..b"b".to_vec()).rev() {
            let event = AuditEvent::decode(item.value()?.as_ref()).map_err(corrupt)?;
            if user.is_empty() || event.actor == user || event.target == user {
                out.push(event);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// A node-local value (`m` + name).
    pub fn local_value(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let key = [b"m".as_slice(), name.as_bytes()].concat();
        Ok(self.space.get(key)?.map(|v| v.to_vec()))
    }

    /// Stores a node-local value durably.
    pub fn set_local_value(&self, name: &str, value: &[u8]) -> StoreResult<()> {
        let key = [b"m".as_slice(), name.as_bytes()].concat();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.space, key, value.to_vec());
        Ok(batch.commit()?)
    }
}
