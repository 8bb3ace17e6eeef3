//! How replicas converge after any fault: hinted handoff and anti-entropy, run by the
//! [`ReplicatorActor`].
//!
//! - **Hinted handoff.** A member that took a write for a home replica that was down kept a
//!   hint per reading (`hints` keyspace). Every `replication.handoff_interval`, and at once
//!   when a member returns, it sends the hinted readings of every member that is live again
//!   (pages of [`HANDOFF_PAGE`], one request per page) and deletes the hints the member
//!   acknowledged as durable. Copies it kept only as a substitute (it is neither in the
//!   shard's home set nor its primary, and no other member is owed them) are then deleted
//!   through their meter actors, which rebuild the state and feeder contributions without
//!   them.
//! - **Anti-entropy.** Every `replication.anti_entropy_interval` (and when a member joins or
//!   returns), a node compares each shard it holds readings of with every other live member of
//!   the shard's home set, top-down: whole-shard digest, then per day, then per hour, then
//!   the readings of a differing hour by key and hash. It pushes what the peer lacks or holds
//!   in a losing version; the peer merges with [`crate::validation::merge_copy`]. Each side
//!   pushes its own surplus, so after one round each way both hold the union — the maximum of
//!   every reading. A node that holds a shard it is no longer home for (a substitute, or a
//!   former owner after a join or drain) pushes to the home set the same way, which is how a
//!   replaced empty node or a new member is filled. Bandwidth is bounded by
//!   `replication.repair_bytes_per_s` for handoff and anti-entropy together.
//!
//! Digests are computed by one scan of the `readings` keyspace per round ([`DigestTree`]),
//! about 4 M readings/s here; incremental digests would make rounds cheaper for very large
//! stores and are not built yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_proto::internal::{
    BucketDigest, DigestRequest, Digests, Entries, EntriesRequest, ReadingEntry, RepairReply,
    ReplicaStatus, ReplicaStatusRequest, ReplicateCause, ShardDigest, cluster_reply,
    cluster_request,
};
use gridmesh_proto::v1::Reading;
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;

use crate::cluster::into_result;
use crate::context::{NodeContext, now_ms};
use crate::keys;
use crate::placement::{ShardMap, shard_of};
use crate::replica::{Digest, Plan, Target, entry_hash};
use crate::replication::{self, ShardCopies};
use crate::storage::{Store, StoreResult, decode_reading};
use crate::writer::{Row, Space};

/// Hints handed off per request.
pub const HANDOFF_PAGE: usize = 2000;
/// Readings pushed per anti-entropy request.
const PUSH_CHUNK: usize = 2000;
/// Most readings one anti-entropy round pushes (the next round goes on).
const MAX_PUSH_PER_ROUND: u64 = 2_000_000;
/// Shards asked about per digest request.
const DIGEST_CHUNK: usize = 256;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Digests of everything one node stores, per shard, day and hour.
#[derive(Debug, Default)]
pub struct DigestTree {
    /// Per shard with readings.
    pub shards: BTreeMap<u32, ShardTree>,
}

/// Digests of one shard.
#[derive(Debug, Default)]
pub struct ShardTree {
    /// The whole shard.
    pub total: Digest,
    /// Per UTC day (start ms).
    pub days: BTreeMap<i64, Digest>,
    /// Per UTC hour (start ms).
    pub hours: BTreeMap<i64, Digest>,
    /// Meters with readings in the shard.
    pub meters: BTreeSet<String>,
}

impl DigestTree {
    /// Scans the store once.
    pub fn build(store: &Store, shards: u32) -> StoreResult<Self> {
        Self::build_before(store, shards, None)
    }

    /// Scans the store once, counting only readings stamped before `before_ms` (all when
    /// `None`).
    pub fn build_before(store: &Store, shards: u32, before_ms: Option<i64>) -> StoreResult<Self> {
        let mut tree = DigestTree::default();
        let mut current: Option<(String, u32)> = None;
        store.scan_readings(|key, value| {
            let Some((meter, ts)) = keys::split_reading_key(key) else {
                return;
            };
            if before_ms.is_some_and(|before| ts >= before) {
                return;
            }
            let shard = match &current {
                Some((m, s)) if m == meter => *s,
                _ => {
                    let s = shard_of(meter, shards);
                    current = Some((meter.to_owned(), s));
                    tree.shards
                        .entry(s)
                        .or_default()
                        .meters
                        .insert(meter.to_owned());
                    s
                }
            };
            let t = tree.shards.entry(shard).or_default();
            let h = entry_hash(key, value);
            t.total.add(h);
            t.days
                .entry(ts.div_euclid(DAY_MS) * DAY_MS)
                .or_default()
                .add(h);
            t.hours
                .entry(ts.div_euclid(HOUR_MS) * HOUR_MS)
                .or_default()
                .add(h);
        })?;
        Ok(tree)
    }

    /// Answers a digest request: per shard the total and per-day digests, or, for one shard
    /// and a day, that day's per-hour digests.
    pub fn digests(&self, req: &DigestRequest) -> Digests {
        let shards: Vec<u32> = if req.shards.is_empty() {
            self.shards.keys().copied().collect()
        } else {
            req.shards.clone()
        };
        let empty = ShardTree::default();
        Digests {
            shards: shards
                .into_iter()
                .map(|shard| {
                    let t = self.shards.get(&shard).unwrap_or(&empty);
                    let buckets = match req.day_start_ms {
                        None => to_buckets(t.days.iter()),
                        Some(day) => to_buckets(t.hours.range(day..day + DAY_MS)),
                    };
                    ShardDigest {
                        shard,
                        hash: t.total.hash,
                        readings: t.total.readings,
                        buckets,
                    }
                })
                .collect(),
        }
    }
}

fn to_buckets<'a>(it: impl Iterator<Item = (&'a i64, &'a Digest)>) -> Vec<BucketDigest> {
    it.map(|(start, d)| BucketDigest {
        start_ts_ms: *start,
        hash: d.hash,
        readings: d.readings,
    })
    .collect()
}

fn bucket_map(buckets: &[BucketDigest]) -> HashMap<i64, Digest> {
    buckets
        .iter()
        .map(|b| {
            (
                b.start_ts_ms,
                Digest {
                    hash: b.hash,
                    readings: b.readings,
                },
            )
        })
        .collect()
}

/// Stored readings by `(meter, ts)`: entry hash and stored value.
type HourEntries = BTreeMap<(String, i64), (u64, Vec<u8>)>;

/// The readings of one shard and hour a node stores.
fn hour_entries(
    store: &Store,
    tree: &DigestTree,
    shard: u32,
    hour: i64,
) -> StoreResult<HourEntries> {
    let mut out = BTreeMap::new();
    let Some(t) = tree.shards.get(&shard) else {
        return Ok(out);
    };
    for meter in &t.meters {
        for (key, value) in store.raw_readings_between(meter, hour, hour + HOUR_MS)? {
            let Some((_, ts)) = keys::split_reading_key(&key) else {
                continue;
            };
            out.insert((meter.clone(), ts), (entry_hash(&key, &value), value));
        }
    }
    Ok(out)
}

/// Answers an entries request from this node's store.
pub fn entries(store: &Store, tree: &DigestTree, req: &EntriesRequest) -> StoreResult<Entries> {
    let hour = req.hour_start_ms.div_euclid(HOUR_MS) * HOUR_MS;
    Ok(Entries {
        entries: hour_entries(store, tree, req.shard, hour)?
            .into_iter()
            .map(|((meter_id, ts_ms), (hash, _))| ReadingEntry {
                meter_id,
                ts_ms,
                hash,
            })
            .collect(),
    })
}

/// A token bucket over bytes per second.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl RateLimit {
    fn new(bytes_per_s: u64) -> Self {
        Self {
            rate: bytes_per_s as f64,
            tokens: bytes_per_s as f64,
            at: tokio::time::Instant::now(),
        }
    }

    /// How long to wait before sending `bytes`.
    fn take(&mut self, bytes: usize) -> Duration {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + self.rate * (now - self.at).as_secs_f64()).min(self.rate);
        self.at = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Replication bookkeeping of one node, shared by the replicator and the gateway's handler.
#[derive(Debug)]
pub struct RepairState {
    tree: Mutex<Option<(Instant, Arc<DigestTree>)>>,
    /// The last tree asked for with a cutoff, and the cutoff (a wipe gate polls the same one).
    tree_before: Mutex<Option<(Instant, i64, Arc<DigestTree>)>>,
    limit: Mutex<RateLimit>,
    rounds: AtomicU64,
    pushed: AtomicU64,
    last_round_ms: AtomicI64,
    handed_off: AtomicU64,
}

impl RepairState {
    /// Fresh bookkeeping with the repair bandwidth.
    pub fn new(bytes_per_s: u64) -> Self {
        Self {
            tree: Mutex::new(None),
            tree_before: Mutex::new(None),
            limit: Mutex::new(RateLimit::new(bytes_per_s)),
            rounds: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            last_round_ms: AtomicI64::new(0),
            handed_off: AtomicU64::new(0),
        }
    }

    /// The digest tree, rebuilt when older than `max_age` (blocking: scans the store).
    pub fn tree(
        &self,
        store: &Store,
        shards: u32,
        max_age: Duration,
    ) -> StoreResult<Arc<DigestTree>> {
        if let Some((at, tree)) = self.tree.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() <= max_age
        {
            return Ok(tree.clone());
        }
        let started = Instant::now();
        let tree = Arc::new(DigestTree::build(store, shards)?);
        metrics::histogram!("gridmesh_digest_build_seconds")
            .record(started.elapsed().as_secs_f64());
        *self.tree.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), tree.clone()));
        Ok(tree)
    }

    /// The digest tree of readings stamped before `before`, rebuilt when older than
    /// `max_age` or asked for another cutoff (blocking: scans the store).
    fn tree_before(
        &self,
        store: &Store,
        shards: u32,
        before: i64,
        max_age: Duration,
    ) -> StoreResult<Arc<DigestTree>> {
        let mut cached = self.tree_before.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, cutoff, tree)) = cached.as_ref()
            && *cutoff == before
            && at.elapsed() <= max_age
        {
            return Ok(tree.clone());
        }
        let tree = Arc::new(DigestTree::build_before(store, shards, Some(before))?);
        *cached = Some((Instant::now(), before, tree.clone()));
        Ok(tree)
    }

    async fn throttle(&self, bytes: usize) {
        let wait = self
            .limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// This node's replication status.
    pub fn status(
        &self,
        ctx: &NodeContext,
        req: &ReplicaStatusRequest,
    ) -> StoreResult<ReplicaStatus> {
        let shards = ctx.config.actors.shards;
        let max_age = Duration::from_secs(1);
        let tree = match req.before_ts_ms {
            Some(before) => self.tree_before(&ctx.store, shards, before, max_age)?,
            None => self.tree(&ctx.store, shards, max_age)?,
        };
        let mut digests = tree.digests(&DigestRequest {
            shards: req.shards.clone(),
            day_start_ms: None,
        });
        for shard in &mut digests.shards {
            shard.buckets.clear();
        }
        digests
            .shards
            .retain(|s| s.readings > 0 || !req.shards.is_empty());
        Ok(ReplicaStatus {
            shards: digests.shards,
            hints_pending: ctx.store.hint_counts()?.into_iter().collect(),
            anti_entropy_rounds: self.rounds.load(Ordering::Relaxed),
            anti_entropy_pushed: self.pushed.load(Ordering::Relaxed),
            anti_entropy_last_ms: self.last_round_ms.load(Ordering::Relaxed),
            handed_off: self.handed_off.load(Ordering::Relaxed),
        })
    }
}

/// The home set of `shard`.
pub fn home_set(home: &ShardMap, shard: u32, factor: usize) -> Vec<String> {
    home.preference_list(shard)
        .take(factor)
        .map(str::to_owned)
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}

async fn ask(
    ctx: &NodeContext,
    node: &str,
    call: cluster_request::Call,
) -> Result<cluster_reply::Reply, String> {
    let reply = ctx
        .cluster
        .forward(node, call, true)
        .await
        .map_err(|e| e.to_string())?;
    into_result(node, reply)
        .map_err(|s| s.message().to_owned())?
        .ok_or_else(|| format!("node {node} sent an empty reply"))
}

/// Pushes readings of `shard` to `node` (anti-entropy or handoff); returns whether they are
/// durable there.
async fn push(
    ctx: &Arc<NodeContext>,
    node: &str,
    shard: u32,
    readings: Vec<Reading>,
    cause: ReplicateCause,
) -> Result<(), String> {
    let bytes: usize = readings.iter().map(Message::encoded_len).sum();
    ctx.repair.throttle(bytes).await;
    let plan = Plan {
        copies: 2,
        targets: vec![Target {
            node: node.to_owned(),
            hinted_for: Vec::new(),
        }],
        spares: Vec::new(),
    };
    let copies = vec![ShardCopies {
        shard,
        plan,
        readings,
    }];
    let timeout = ctx.config.replication.timeout * 5;
    let results = replication::copy(&ctx.cluster, copies, cause, timeout).await;
    match results.get(&shard) {
        Some(r) if r.durable_on.iter().any(|n| n == node) => Ok(()),
        Some(r) => Err(r.failures.join("; ")),
        None => Err("no result".to_owned()),
    }
}

/// What one anti-entropy round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Readings pushed to peers.
    pub pushed: u64,
    /// (shard, peer) pairs compared.
    pub compared: u32,
    /// Pairs that differed at the start of the round.
    pub differing: u32,
    /// Pairs that could not be compared (peer unreachable).
    pub failed: u32,
}

/// One anti-entropy round over `only` (empty: every shard this node holds readings of).
pub async fn anti_entropy_round(ctx: &Arc<NodeContext>, only: &[u32]) -> RoundStats {
    let mut stats = RoundStats::default();
    let shards_total = ctx.config.actors.shards;
    let factor = ctx.config.replication.factor as usize;
    let store = ctx.store.clone();
    let repair = ctx.clone();
    let tree =
        match blocking(move || repair.repair.tree(&store, shards_total, Duration::ZERO)).await {
            Ok(tree) => tree,
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy: could not scan the store");
                return stats;
            }
        };
    let view = ctx.cluster.view();
    let me = ctx.cluster.name().to_owned();
    for peer in view.map.members().iter().filter(|p| **p != me) {
        let shards: Vec<u32> = tree
            .shards
            .keys()
            .copied()
            .filter(|s| only.is_empty() || only.contains(s))
            .filter(|s| home_set(&view.home, *s, factor).contains(peer))
            .collect();
        for chunk in shards.chunks(DIGEST_CHUNK) {
            if stats.pushed >= MAX_PUSH_PER_ROUND {
                break;
            }
            let call = cluster_request::Call::Digests(DigestRequest {
                shards: chunk.to_vec(),
                day_start_ms: None,
            });
            let theirs = match ask(ctx, peer, call).await {
                Ok(cluster_reply::Reply::Digests(d)) => d,
                Ok(_) | Err(_) => {
                    stats.failed += chunk.len() as u32;
                    continue;
                }
            };
            let theirs: HashMap<u32, ShardDigest> =
                theirs.shards.into_iter().map(|d| (d.shard, d)).collect();
            for &shard in chunk {
                stats.compared += 1;
                let Some(mine) = tree.shards.get(&shard) else {
                    continue;
                };
                let their = theirs.get(&shard);
                let same = their.is_some_and(|t| {
                    t.hash == mine.total.hash && t.readings == mine.total.readings
                });
                if same {
                    continue;
                }
                stats.differing += 1;
                let their_days = their.map(|t| bucket_map(&t.buckets)).unwrap_or_default();
                match sync_shard(ctx, &tree, peer, shard, mine, &their_days).await {
                    Ok(n) => stats.pushed += n,
                    Err(e) => {
                        stats.failed += 1;
                        tracing::debug!(peer, shard, error = %e, "anti-entropy: shard not synced");
                    }
                }
            }
        }
    }
    let repair = &ctx.repair;
    repair.rounds.fetch_add(1, Ordering::Relaxed);
    repair.pushed.fetch_add(stats.pushed, Ordering::Relaxed);
    repair.last_round_ms.store(now_ms(), Ordering::Relaxed);
    metrics::counter!("gridmesh_anti_entropy_rounds_total").increment(1);
    metrics::counter!("gridmesh_anti_entropy_pushed_total").increment(stats.pushed);
    metrics::gauge!("gridmesh_anti_entropy_differing_shards").set(f64::from(stats.differing));
    if stats.pushed > 0 {
        tracing::info!(
            pushed = stats.pushed,
            compared = stats.compared,
            differing = stats.differing,
            "anti-entropy round copied readings to peers"
        );
    }
    stats
}

/// Brings `peer`'s copy of `shard` up to this node's: the days, then hours, that differ, then
/// the readings of those hours it lacks or holds older.
async fn sync_shard(
    ctx: &Arc<NodeContext>,
    tree: &Arc<DigestTree>,
    peer: &str,
    shard: u32,
    mine: &ShardTree,
    their_days: &HashMap<i64, Digest>,
) -> Result<u64, String> {
    let mut pushed = 0;
    for (day, digest) in &mine.days {
        if their_days.get(day) == Some(digest) {
            continue;
        }
        let call = cluster_request::Call::Digests(DigestRequest {
            shards: vec![shard],
            day_start_ms: Some(*day),
        });
        let their_hours = match ask(ctx, peer, call).await? {
            cluster_reply::Reply::Digests(d) => d
                .shards
                .first()
                .map(|s| bucket_map(&s.buckets))
                .unwrap_or_default(),
            _ => return Err("wrong reply to a digest request".to_owned()),
        };
        for (hour, digest) in mine.hours.range(*day..*day + DAY_MS) {
            if their_hours.get(hour) == Some(digest) {
                continue;
            }
            pushed += sync_hour(ctx, tree, peer, shard, *hour).await?;
        }
    }
    Ok(pushed)
}

async fn sync_hour(
    ctx: &Arc<NodeContext>,
    tree: &Arc<DigestTree>,
    peer: &str,
    shard: u32,
    hour: i64,
) -> Result<u64, String> {
    let call = cluster_request::Call::Entries(EntriesRequest {
        shard,
        hour_start_ms: hour,
    });
    let theirs: HashMap<(String, i64), u64> = match ask(ctx, peer, call).await? {
        cluster_reply::Reply::Entries(e) => e
            .entries
            .into_iter()
            .map(|e| ((e.meter_id, e.ts_ms), e.hash))
            .collect(),
        _ => return Err("wrong reply to an entries request".to_owned()),
    };
    let (store, tree) = (ctx.store.clone(), tree.clone());
    let mine = blocking(move || hour_entries(&store, &tree, shard, hour)).await?;
    let mut missing = Vec::new();
    for ((meter, ts), (hash, value)) in mine {
        if theirs.get(&(meter.clone(), ts)) == Some(&hash) {
            continue;
        }
        let key = keys::reading_key(&meter, ts);
        let (_, reading) = decode_reading(&meter, &key, &value).map_err(|e| e.to_string())?;
        missing.push(reading);
    }
    let n = missing.len() as u64;
    for chunk in missing.chunks(PUSH_CHUNK) {
        push(ctx, peer, shard, chunk.to_vec(), ReplicateCause::Repair).await?;
    }
    Ok(n)
}

/// Hands off hinted writes to every member that is live again. Returns readings handed off.
pub async fn handoff_round(ctx: &Arc<NodeContext>) -> u64 {
    let store = ctx.store.clone();
    let counts = match blocking(move || store.hint_counts()).await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "handoff: could not read hints");
            return 0;
        }
    };
    let total: u64 = counts.values().sum();
    metrics::gauge!("gridmesh_hints_pending").set(total as f64);
    let view = ctx.cluster.view();
    let live = view.map.members();
    let me = ctx.cluster.name();
    let mut handed = 0;
    for target in counts.keys() {
        if target == me || live.binary_search(target).is_err() {
            continue;
        }
        loop {
            match handoff_page(ctx, target).await {
                Ok(0) => break,
                Ok(n) => handed += n,
                Err(e) => {
                    tracing::debug!(target, error = %e, "handoff: page not handed off");
                    break;
                }
            }
        }
    }
    if handed > 0 {
        ctx.repair.handed_off.fetch_add(handed, Ordering::Relaxed);
        metrics::counter!("gridmesh_hints_handed_off_total").increment(handed);
        tracing::info!(handed, "hinted writes handed off");
    }
    handed
}

/// One page of `target`'s hints: sends the readings, deletes the hints that are durable there,
/// then drops the copies this node no longer needs.
async fn handoff_page(ctx: &Arc<NodeContext>, target: &str) -> Result<u64, String> {
    let (store, node) = (ctx.store.clone(), target.to_owned());
    type Page = BTreeMap<u32, (Vec<Reading>, Vec<Vec<u8>>, Vec<(String, i64)>)>;
    let page: Page = blocking(move || {
        let hints = store.hints_for(&node, HANDOFF_PAGE)?;
        let mut by_shard: Page = BTreeMap::new();
        for hint in hints {
            let entry = by_shard.entry(hint.shard).or_default();
            let key = keys::reading_key(&hint.meter, hint.ts_ms);
            if let Some(value) = store.reading_at(&hint.meter, hint.ts_ms)? {
                entry.0.push(decode_reading(&hint.meter, &key, &value)?.1);
            }
            entry.1.push(hint.key);
            entry.2.push((hint.meter, hint.ts_ms));
        }
        Ok(by_shard)
    })
    .await?;
    if page.is_empty() {
        return Ok(0);
    }
    let mut done = 0;
    for (shard, (readings, hint_keys, handed)) in page {
        let n = hint_keys.len() as u64;
        if !readings.is_empty() {
            push(ctx, target, shard, readings, ReplicateCause::Handoff).await?;
        }
        let rows = hint_keys
            .into_iter()
            .map(|key| Row::delete(Space::Hints, key))
            .collect();
        ctx.writer.write(rows).await.map_err(|e| e.to_string())?;
        done += n;
        drop_substitute_copies(ctx, shard, handed).await;
    }
    Ok(done)
}

/// Deletes copies this node kept only as a substitute: once no member is owed them any more
/// and this node is neither in the shard's home set nor its primary. A copy that is still
/// needed (the node became home again meanwhile) is simply refilled by anti-entropy.
async fn drop_substitute_copies(ctx: &Arc<NodeContext>, shard: u32, readings: Vec<(String, i64)>) {
    let view = ctx.cluster.view();
    let me = ctx.cluster.name().to_owned();
    let factor = ctx.config.replication.factor as usize;
    if home_set(&view.home, shard, factor).contains(&me) || view.map.owner(shard) == Some(&me) {
        return;
    }
    let members: Vec<String> = view.members.iter().map(|m| m.name.clone()).collect();
    let store = ctx.store.clone();
    let owed_to_nobody = blocking(move || {
        let mut by_meter: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        'readings: for (meter, ts) in readings {
            for m in &members {
                if store.has_hint(m, shard, &meter, ts)? {
                    continue 'readings;
                }
            }
            by_meter.entry(meter).or_default().push(ts);
        }
        Ok(by_meter)
    })
    .await;
    let Ok(by_meter) = owed_to_nobody else {
        return;
    };
    let Some(shard_actor) = ctx.shard(shard) else {
        return;
    };
    let mut dropped = 0u64;
    for (meter_id, ts_ms) in by_meter {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let n = ts_ms.len() as u64;
        let msg = crate::shard::ShardMsg::Forget {
            meter_id,
            ts_ms,
            outcome: tx,
        };
        if shard_actor.cast(msg).is_err() {
            return;
        }
        if let Ok(Some(crate::meter::GroupEvent::Durable(_))) =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
        {
            dropped += n;
        }
    }
    if dropped > 0 {
        metrics::counter!("gridmesh_substitute_copies_dropped_total").increment(dropped);
        tracing::debug!(
            shard,
            dropped,
            "dropped copies kept for a member that has them now"
        );
    }
}

/// Messages of the replicator. Local only.
#[derive(RactorMessage)]
pub enum ReplicatorMsg {
    /// Time for a handoff pass.
    HandoffTick,
    /// Time for an anti-entropy round.
    AntiEntropyTick,
    /// A member joined or returned: hand off and compare now.
    MemberChanged,
    /// A round finished (`true`: anti-entropy; `false`: handoff).
    RoundDone(bool),
    /// An admin repair: a round over `shards` (empty: all) now, then the reply.
    Repair {
        /// Shards.
        shards: Vec<u32>,
        /// Reply.
        reply: RpcReplyPort<RepairReply>,
    },
}

/// Runs hinted handoff and anti-entropy on timers, one round of each kind at a time, as tasks
/// (the actor never blocks on a round). Supervised by the node supervisor (one_for_one); a
/// restart loses nothing, since hints are on disk and rounds are idempotent.
#[derive(Debug)]
pub struct ReplicatorActor;

/// State of the replicator.
pub struct ReplicatorState {
    ctx: Arc<NodeContext>,
    handoff: Option<tokio::task::JoinHandle<()>>,
    anti_entropy: Option<tokio::task::JoinHandle<()>>,
    again: bool,
}

impl Actor for ReplicatorActor {
    type Msg = ReplicatorMsg;
    type State = ReplicatorState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        ctx: Arc<NodeContext>,
    ) -> Result<ReplicatorState, ActorProcessingErr> {
        let settings = &ctx.config.replication;
        myself.send_interval(settings.handoff_interval, || ReplicatorMsg::HandoffTick);
        myself.send_interval(settings.anti_entropy_interval, || {
            ReplicatorMsg::AntiEntropyTick
        });
        ctx.set_replicator(Some(myself));
        Ok(ReplicatorState {
            ctx,
            handoff: None,
            anti_entropy: None,
            again: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ReplicatorMsg>,
        s: &mut ReplicatorState,
    ) -> Result<(), ActorProcessingErr> {
        s.ctx.set_replicator(None);
        for task in [s.handoff.take(), s.anti_entropy.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        msg: ReplicatorMsg,
        s: &mut ReplicatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicatorMsg::HandoffTick => s.start_handoff(&myself),
            ReplicatorMsg::AntiEntropyTick => s.start_anti_entropy(&myself, false),
            ReplicatorMsg::MemberChanged => {
                s.start_handoff(&myself);
                s.start_anti_entropy(&myself, true);
                // Alerts too: pull every peer's records (they are few), merge by version.
                let ctx = s.ctx.clone();
                tokio::spawn(async move {
                    for peer in ctx.cluster.reachable_peers() {
                        if let Err(e) = crate::alerts::catch_up(&ctx, &peer).await {
                            tracing::debug!(peer, error = %e, "alert catch-up failed");
                        }
                    }
                });
            }
            ReplicatorMsg::RoundDone(anti_entropy) => {
                if anti_entropy {
                    s.anti_entropy = None;
                    if std::mem::take(&mut s.again) {
                        s.start_anti_entropy(&myself, false);
                    }
                } else {
                    s.handoff = None;
                }
            }
            ReplicatorMsg::Repair { shards, reply } => {
                let ctx = s.ctx.clone();
                tokio::spawn(async move {
                    let handed = handoff_round(&ctx).await;
                    let stats = anti_entropy_round(&ctx, &shards).await;
                    let _ = reply.send(RepairReply {
                        pushed: stats.pushed + handed,
                        shards_compared: stats.compared,
                        shards_differing: stats.differing,
                    });
                });
            }
        }
        Ok(())
    }
}

impl ReplicatorState {
    fn start_handoff(&mut self, myself: &ActorRef<ReplicatorMsg>) {
        if self.handoff.is_some() {
            return;
        }
        let (ctx, me) = (self.ctx.clone(), myself.clone());
        self.handoff = Some(tokio::spawn(async move {
            handoff_round(&ctx).await;
            let _ = me.cast(ReplicatorMsg::RoundDone(false));
        }));
    }

    /// Starts a round unless one runs; with `queue`, a running round is followed by another
    /// (something changed after it started).
    fn start_anti_entropy(&mut self, myself: &ActorRef<ReplicatorMsg>, queue: bool) {
        if self.anti_entropy.is_some() {
            self.again |= queue;
            return;
        }
        let (ctx, me) = (self.ctx.clone(), myself.clone());
        self.anti_entropy = Some(tokio::spawn(async move {
            anti_entropy_round(&ctx, &[]).await;
            let _ = me.cast(ReplicatorMsg::RoundDone(true));
        }));
    }
}
