//! The node's embedded store: one fjall database with the keyspaces described in [`crate::keys`].
//!
//! All reads here are synchronous and short (point reads and bounded range scans); writes go
//! only through the group-commit [`crate::writer`], never directly, so that every acknowledged
//! write is synced and write order per meter is the order its actor decided it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use gridmesh_proto::internal::{FeederContribution, MeterState};
use gridmesh_proto::v1::{FeederInfo, MeterInfo, Reading};
use prost::Message;

use crate::keys;

/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "gridmesh.lock";
/// Format version of the data directory this build writes.
const FORMAT_VERSION: &str = "1";

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the data directory open.
    #[error("data directory {0} is in use by another gridmesh node (lock held on gridmesh.lock)")]
    Locked(PathBuf),
    /// File system error outside fjall.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// fjall failed.
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// The directory was created with another shard count.
    #[error(
        "data directory was created with {found} shards but actors.shards = {configured}; \
         set actors.shards = {found} (the shard count cannot change for existing data)"
    )]
    ShardMismatch {
        /// Shards recorded in the directory.
        found: u32,
        /// Shards configured now.
        configured: u32,
    },
    /// A stored record does not decode.
    #[error("corrupt record in keyspace {space}: {message}")]
    Corrupt {
        /// Keyspace name.
        space: &'static str,
        /// Decoder message.
        message: String,
    },
}

/// A reading kept for a member that was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The reading's shard.
    pub shard: u32,
    /// Its meter.
    pub meter: String,
    /// Its timestamp.
    pub ts_ms: i64,
    /// The hint's own key (to delete it once handed off).
    pub key: Vec<u8>,
}

/// Result alias of this module.
pub type StoreResult<T> = Result<T, StoreError>;

/// Handles to the database and its keyspaces. Cheap to share behind an `Arc`.
pub struct Store {
    pub(crate) db: Database,
    pub(crate) readings: Keyspace,
    pub(crate) meters: Keyspace,
    pub(crate) anomaly: Keyspace,
    pub(crate) daily: Keyspace,
    pub(crate) registry: Keyspace,
    pub(crate) feeder_load: Keyspace,
    pub(crate) audit: Keyspace,
    pub(crate) hints: Keyspace,
    pub(crate) alerts: Keyspace,
    pub(crate) alert_log: Keyspace,
    pub(crate) dead_letters: Keyspace,
    meta: Keyspace,
    path: PathBuf,
    /// This opening's run number (see [`Store::run`]).
    run: u64,
    /// The first run after the last unclean stop (see [`Store::trusted_from`]).
    trusted_from: u64,
    // Held for the life of the store: the OS releases the lock when the process dies, so a
    // SIGKILLed node never leaves a stale lock behind.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Default of `storage.max_journal_mib`.
pub const DEFAULT_MAX_JOURNAL_MIB: u64 = 128;

impl Store {
    /// Opens (or creates) the data directory, taking its lock first, with the default
    /// journal bound (see [`Store::open_with_journal`]).
    pub fn open(dir: &Path, shards: u32, cache_mib: u64) -> StoreResult<Self> {
        Self::open_with_journal(dir, shards, cache_mib, DEFAULT_MAX_JOURNAL_MIB)
    }

    /// Opens (or creates) the data directory, taking its lock first. Once more than
    /// `max_journal_mib` of journal is on disk, the keyspaces still holding its oldest file
    /// are flushed so that it can go: the quiet keyspaces (alerts, meter state) would
    /// otherwise pin journals until fjall's own 512 MiB limit, and a node restarted after a
    /// crash replays all of it (~14 s under load on two cores) before it serves.
    pub fn open_with_journal(
        dir: &Path,
        shards: u32,
        cache_mib: u64,
        max_journal_mib: u64,
    ) -> StoreResult<Self> {
        let io = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let db = Database::builder(dir.join("db"))
            .cache_size(cache_mib * 1024 * 1024)
            .max_journaling_size(max_journal_mib.max(64) * 1024 * 1024)
            .manual_journal_persist(true)
            .open()?;
        let open = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let store = Self {
            readings: open("readings")?,
            meters: open("meters")?,
            anomaly: open("anomaly")?,
            daily: open("daily")?,
            registry: open("registry")?,
            feeder_load: open("feeder_load")?,
            audit: open("audit")?,
            hints: open("hints")?,
            alerts: open("alerts")?,
            alert_log: open("alert_log")?,
            dead_letters: open("dead_letters")?,
            meta: open("meta")?,
            db,
            path: dir.to_owned(),
            run: 0,
            trusted_from: 0,
            _lock: lock,
        };
        let mut store = store;
        store.check_format(shards)?;
        store.start_run()?;
        Ok(store)
    }

    /// The incarnation for a (re)start of this node's cluster membership: above every earlier
    /// one and at least `now_ms`, persisted before it is used.
    pub fn next_incarnation(&self, now_ms: u64) -> StoreResult<u64> {
        let previous = match self.meta.get("incarnation")? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        };
        let next = now_ms.max(previous + 1);
        self.record_incarnation(next)?;
        Ok(next)
    }

    /// Persists `incarnation` as the highest used so far.
    pub fn record_incarnation(&self, incarnation: u64) -> StoreResult<()> {
        self.meta.insert("incarnation", incarnation.to_string())?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Records the format and shard count on first open; refuses a mismatch later.
    fn check_format(&self, shards: u32) -> StoreResult<()> {
        let corrupt = |message: String| StoreError::Corrupt {
            space: "meta",
            message,
        };
        match self.meta.get("shards")? {
            Some(found) => {
                let found = std::str::from_utf8(&found)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| corrupt("shards is not a number".to_owned()))?;
                if found != shards {
                    return Err(StoreError::ShardMismatch {
                        found,
                        configured: shards,
                    });
                }
            }
            None => {
                let mut batch = self
                    .db
                    .batch()
                    .durability(Some(fjall::PersistMode::SyncAll));
                batch.insert(&self.meta, "format", FORMAT_VERSION);
                batch.insert(&self.meta, "shards", shards.to_string());
                batch.commit()?;
            }
        }
        Ok(())
    }

    /// Numbers this opening of the directory and works out whether the previous one ended
    /// cleanly ([`Store::mark_clean`] was its last act). Meter actors write their state row
    /// at most once per `actors.state_checkpoint_interval` and whenever they stop, so a state
    /// row written before an unclean stop may be older than the readings beside it.
    fn start_run(&mut self) -> StoreResult<()> {
        let number = |key: &str| -> StoreResult<u64> {
            Ok(self
                .meta
                .get(key)?
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
                .unwrap_or(0))
        };
        let (previous, clean, trusted) = (
            number("run")?,
            number("clean_run")?,
            number("trusted_from")?,
        );
        self.run = previous + 1;
        // A directory from before runs were counted has state rows written with every batch.
        self.trusted_from = if clean == previous { trusted } else { self.run };
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        batch.insert(&self.meta, "run", self.run.to_string());
        batch.insert(&self.meta, "trusted_from", self.trusted_from.to_string());
        batch.commit()?;
        if self.trusted_from == self.run && previous > 0 {
            tracing::info!(
                run = self.run,
                "the previous run did not stop cleanly: meter state is rebuilt from the readings \
                 as each meter activates"
            );
        }
        Ok(())
    }

    /// This opening's run number, counted from 1 on the directory's first opening.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// State rows written in this run or later ones are current; older ones may predate
    /// readings written before an unclean stop, and the meter rebuilds what it can from the
    /// readings instead.
    pub fn trusted_from(&self) -> u64 {
        self.trusted_from
    }

    /// Records that this run stopped cleanly: every meter wrote its state and everything
    /// written is synced. Called last at graceful shutdown.
    pub fn mark_clean(&self) -> StoreResult<()> {
        self.meta.insert("clean_run", self.run.to_string())?;
        self.persist()
    }

    /// How many readings of `meter` are stored (a scan of its keys; used to rebuild a meter's
    /// count after an unclean stop).
    pub fn count_readings(&self, meter: &str) -> StoreResult<u64> {
        let mut end = keys::id_prefix(meter);
        end.extend_from_slice(&[0xff; 9]);
        let range = keys::reading_key(meter, 0)..end;
        let mut count = 0;
        for item in self.readings.range(range) {
            item.key()?;
            count += 1;
        }
        Ok(count)
    }

    /// Syncs everything written so far to disk (used at shutdown, whatever the sync mode).
    pub fn persist(&self) -> StoreResult<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the keyspaces occupy on disk (journal included).
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// The encoded reading at exactly `ts_ms`.
    pub fn reading_at(&self, meter: &str, ts_ms: i64) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .readings
            .get(keys::reading_key(meter, ts_ms))?
            .map(|v| v.to_vec()))
    }

    /// Readings of `meter` in `[from, to)`, oldest first, at most `limit`.
    pub fn readings_between(
        &self,
        meter: &str,
        from_ts_ms: i64,
        to_ts_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Reading)>> {
        let (from, to) = (from_ts_ms.max(0), to_ts_ms.max(0));
        let range = keys::reading_key(meter, from)..keys::reading_key(meter, to);
        let mut out = Vec::new();
        for item in self.readings.range(range).take(limit) {
            let (key, value) = item.into_inner()?;
            out.push(decode_reading(meter, &key, &value)?);
        }
        Ok(out)
    }

    /// Stored daily rows of a meter for local days `from_day..=to_day`, undecoded (see
    /// [`crate::daily`]).
    pub fn daily_rows(
        &self,
        meter: &str,
        from_day: i64,
        to_day: i64,
    ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        if from_day > to_day {
            return Ok(Vec::new());
        }
        let range = keys::daily_key(meter, from_day)..=keys::daily_key(meter, to_day);
        let mut out = Vec::new();
        for item in self.daily.range(range) {
            let (key, value) = item.into_inner()?;
            if let Some(day) = keys::ts_of_reading_key(&key) {
                out.push((day, value.to_vec()));
            }
        }
        Ok(out)
    }

    /// The closest reading strictly before `ts_ms`.
    pub fn reading_before(&self, meter: &str, ts_ms: i64) -> StoreResult<Option<(i64, Reading)>> {
        let range = keys::reading_key(meter, 0)..keys::reading_key(meter, ts_ms);
        match self.readings.range(range).next_back() {
            Some(item) => {
                let (key, value) = item.into_inner()?;
                Ok(Some(decode_reading(meter, &key, &value)?))
            }
            None => Ok(None),
        }
    }

    /// The closest reading strictly after `ts_ms`.
    pub fn reading_after(&self, meter: &str, ts_ms: i64) -> StoreResult<Option<(i64, Reading)>> {
        let mut end = keys::id_prefix(meter);
        end.extend_from_slice(&[0xff; 9]);
        let range = keys::reading_key(meter, ts_ms.saturating_add(1))..end;
        match self.readings.range(range).next() {
            Some(item) => {
                let (key, value) = item.into_inner()?;
                Ok(Some(decode_reading(meter, &key, &value)?))
            }
            None => Ok(None),
        }
    }

    /// The persisted state of a meter actor.
    pub fn meter_state(&self, meter: &str) -> StoreResult<Option<MeterState>> {
        self.decode_get(&self.meters, "meters", meter.as_bytes())
    }

    /// The persisted anomaly detector of a meter (see [`crate::anomaly`]), undecoded.
    pub fn anomaly_state(&self, meter: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.anomaly.get(meter.as_bytes())?.map(|v| v.to_vec()))
    }

    /// A meter's registry entry.
    pub fn meter_info(&self, meter: &str) -> StoreResult<Option<MeterInfo>> {
        self.decode_get(&self.registry, "registry", &keys::meter_info_key(meter))
    }

    /// A feeder's registry entry.
    pub fn feeder_info(&self, feeder: &str) -> StoreResult<Option<FeederInfo>> {
        self.decode_get(&self.registry, "registry", &keys::feeder_info_key(feeder))
    }

    /// Up to `limit` registry entries with keys after `after` (feeders first, then meters, by
    /// id), and the key to continue after when more remain.
    #[allow(clippy::type_complexity)]
    pub fn registry_page(
        &self,
        after: &[u8],
        limit: usize,
    ) -> StoreResult<(Vec<FeederInfo>, Vec<MeterInfo>, Option<Vec<u8>>)> {
        let (mut feeders, mut meters, mut last) = (Vec::new(), Vec::new(), None);
        let start = std::ops::Bound::Excluded(after.to_vec());
        let range = (start, std::ops::Bound::Unbounded);
        for item in self.registry.range::<Vec<u8>, _>(range).take(limit) {
            let (key, value) = item.into_inner()?;
            match key.first() {
                Some(b'f') => feeders
                    .push(FeederInfo::decode(value.as_ref()).map_err(|e| corrupt("registry", e))?),
                Some(b'm') => meters
                    .push(MeterInfo::decode(value.as_ref()).map_err(|e| corrupt("registry", e))?),
                _ => {}
            }
            last = Some(key.to_vec());
        }
        let more = feeders.len() + meters.len() == limit;
        Ok((feeders, meters, if more { last } else { None }))
    }

    /// The meters registered on `feeder`, with their transformer ids (one registry scan).
    pub fn meters_of_feeder(&self, feeder: &str) -> StoreResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for item in self.registry.prefix(b"m") {
            let value = item.value()?;
            let info = MeterInfo::decode(value.as_ref()).map_err(|e| corrupt("registry", e))?;
            if info.feeder_id == feeder {
                out.push((info.meter_id, info.transformer_id));
            }
        }
        Ok(out)
    }

    /// Every registered feeder, ordered by id.
    pub fn feeders(&self) -> StoreResult<Vec<FeederInfo>> {
        let mut out = Vec::new();
        for item in self.registry.prefix(b"f") {
            let value = item.value()?;
            out.push(FeederInfo::decode(value.as_ref()).map_err(|e| corrupt("registry", e))?);
        }
        Ok(out)
    }

    /// Meter contributions to `feeder` for intervals starting in `[from, to)`, ordered by
    /// interval: `(interval_start, meter, contribution)`.
    pub fn feeder_contributions(
        &self,
        feeder: &str,
        from_ts_ms: i64,
        to_ts_ms: i64,
    ) -> StoreResult<Vec<(i64, String, FeederContribution)>> {
        let range = keys::reading_key(feeder, from_ts_ms.max(0))
            ..keys::reading_key(feeder, to_ts_ms.max(0));
        let mut out = Vec::new();
        for item in self.feeder_load.range(range) {
            let (key, value) = item.into_inner()?;
            let (start, meter) =
                keys::split_feeder_load_key(&key).ok_or_else(|| StoreError::Corrupt {
                    space: "feeder_load",
                    message: "bad key".to_owned(),
                })?;
            let contribution = FeederContribution::decode(value.as_ref())
                .map_err(|e| corrupt("feeder_load", e))?;
            out.push((start, meter.to_owned(), contribution));
        }
        Ok(out)
    }

    /// Visits every stored reading, in key order: `f(key, stored value)`.
    pub fn scan_readings(&self, mut f: impl FnMut(&[u8], &[u8])) -> StoreResult<()> {
        for item in self.readings.iter() {
            let (key, value) = item.into_inner()?;
            f(&key, &value);
        }
        Ok(())
    }

    /// Readings of `meter` in `[from, to)` as stored: `(key, value)`.
    pub fn raw_readings_between(
        &self,
        meter: &str,
        from_ts_ms: i64,
        to_ts_ms: i64,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (from, to) = (from_ts_ms.max(0), to_ts_ms.max(0));
        let range = keys::reading_key(meter, from)..keys::reading_key(meter, to);
        let mut out = Vec::new();
        for item in self.readings.range(range) {
            let (key, value) = item.into_inner()?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Hinted writes kept for each member, counted.
    pub fn hint_counts(&self) -> StoreResult<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for item in self.hints.iter() {
            let key = item.key()?;
            if let Some((node, ..)) = keys::split_hint_key(&key) {
                *counts.entry(node.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// Whether a hint for the reading `(meter, ts_ms)` of `shard` is kept for `node`.
    pub fn has_hint(&self, node: &str, shard: u32, meter: &str, ts_ms: i64) -> StoreResult<bool> {
        Ok(self
            .hints
            .contains_key(keys::hint_key(node, shard, meter, ts_ms))?)
    }

    /// Up to `limit` hints kept for `node`, in key order (by shard, meter, time).
    pub fn hints_for(&self, node: &str, limit: usize) -> StoreResult<Vec<Hint>> {
        let mut out = Vec::new();
        for item in self.hints.prefix(keys::id_prefix(node)).take(limit) {
            let key = item.key()?;
            let (_, shard, meter, ts_ms) =
                keys::split_hint_key(&key).ok_or_else(|| StoreError::Corrupt {
                    space: "hints",
                    message: "bad key".to_owned(),
                })?;
            out.push(Hint {
                shard,
                meter: meter.to_owned(),
                ts_ms,
                key: key.to_vec(),
            });
        }
        Ok(out)
    }

    fn decode_get<M: Message + Default>(
        &self,
        space: &Keyspace,
        name: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<M>> {
        match space.get(key)? {
            Some(value) => Ok(Some(
                M::decode(value.as_ref()).map_err(|e| corrupt(name, e))?,
            )),
            None => Ok(None),
        }
    }
}

fn corrupt(space: &'static str, e: prost::DecodeError) -> StoreError {
    StoreError::Corrupt {
        space,
        message: e.to_string(),
    }
}

/// Decodes a stored reading of `meter` from its key and value (id and timestamp filled in).
pub fn decode_reading(meter: &str, key: &[u8], value: &[u8]) -> StoreResult<(i64, Reading)> {
    let ts = keys::ts_of_reading_key(key).ok_or_else(|| StoreError::Corrupt {
        space: "readings",
        message: "short key".to_owned(),
    })?;
    Ok((ts, decode_stored(meter, ts, value)?))
}

/// A stored reading's encoding (see [`encode_reading`]) back as the reading at `ts_ms`.
pub fn decode_stored(meter: &str, ts_ms: i64, value: &[u8]) -> StoreResult<Reading> {
    let mut reading = Reading::decode(value).map_err(|e| corrupt("readings", e))?;
    reading.meter_id = meter.to_owned();
    reading.ts_ms = ts_ms;
    Ok(reading)
}

/// The storage encoding of a reading: the protobuf without the meter id (it is in the key).
pub fn encode_reading(reading: &Reading) -> Vec<u8> {
    if reading.meter_id.is_empty() {
        // The ingest pipeline moves the id out of each reading, so this is the hot path.
        return reading.encode_to_vec();
    }
    let mut stored = reading.clone();
    stored.meter_id.clear();
    stored.encode_to_vec()
}
