//! The ingest pipeline: from a client's batch to its ack.
//!
//! 1. **Admission.** Empty and oversized batches are refused whole. The batch then takes one
//!    permit per reading from the node's in-flight budget (`ingest.max_inflight_readings`);
//!    unary calls that find it exhausted are refused with RESOURCE_EXHAUSTED, stream calls wait
//!    (and so stop reading their stream). This is the bound on ingest memory.
//! 2. **Shape.** Each reading is checked without any state ([`check_shape`]); bad ones are
//!    rejected individually and never reach an actor.
//! 3. **Split.** Valid readings are grouped by meter, groups by shard, and each shard gets
//!    one message with all its groups: messages per batch grow with shards touched, not
//!    readings.
//! 4. **Replicate.** In a cluster, each meter reports what it accepted as soon as it has
//!    decided ([`GroupEvent::Decided`]); once every group has, the accepted readings go to the
//!    shards' other replicas ([`crate::replication::copy`]), one request per node, while the
//!    local write is being synced.
//! 5. **Collect.** Every group's outcome arrives on one bounded channel once its writes are
//!    durable. A group whose actor died before deciding is answered RETRY (nothing of it was
//!    stored). The ack goes out when every shard's readings are durable on
//!    `replication.write_quorum` nodes (this one included). If that does not happen, or the
//!    acks do not all arrive within `ingest.ack_timeout`, the call fails with UNAVAILABLE: the
//!    outcome is unknown and resending is safe because ingest is idempotent.
//!
//! [`IngestPipeline::apply_copies`] is the other way in: readings another node accepted,
//! merged by this node's meters without being judged again.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use gridmesh_proto::ids::check_meter_id;
use gridmesh_proto::internal::{
    ContributionUpdate, FeederDelta, FeederUpdates, ReplicaPartResult, ReplicateCause,
    ReplicateReply, ReplicateRequest, SupplySignal, SupplySignalKind, cluster_request,
};
use gridmesh_proto::v1::{PushAck, Reading, ReadingBatch, RejectReason, Rejection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::cluster::Owner;
use crate::context::{Counters, NodeContext, now_ms};
use crate::grid::{OutageSignal, SignalKind};
use crate::meter::{FeederUpdate, GroupEvent, MeterWork, WorkKind};
use crate::placement::shard_of;
use crate::replica::{Plan, quorum};
use crate::replication::{self, ShardCopies, ShardResult};
use crate::shard::ShardMsg;
use crate::validation::check_shape;

/// Rejection text for readings whose meter actor died before storing them.
const RETRY_MESSAGE: &str =
    "the meter's actor restarted before storing this reading; nothing was stored, send it again";

/// Why a whole batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch has no readings.
    #[error("batch {batch_id} has no readings")]
    Empty {
        /// The batch id.
        batch_id: u64,
    },
    /// The batch has more readings than allowed.
    #[error("batch {batch_id} has {len} readings; at most {max} are accepted per batch")]
    TooLarge {
        /// The batch id.
        batch_id: u64,
        /// Readings in it.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The node's in-flight budget is exhausted.
    #[error("node is saturated ({inflight} readings in flight); retry with backoff")]
    Saturated {
        /// Readings in flight now.
        inflight: u32,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The acks did not arrive in time.
    #[error(
        "batch {batch_id} was not acknowledged within {timeout_ms} ms; its outcome is unknown \
         and resending is safe"
    )]
    AckTimeout {
        /// The batch id.
        batch_id: u64,
        /// The configured timeout.
        timeout_ms: u64,
    },
    /// Some readings are stored, but on fewer nodes than the write quorum.
    #[error(
        "batch {batch_id}: readings of shard {shard} are durable on {copies} of the {needed} \
         nodes the write quorum needs ({why}); the outcome is unknown and resending is safe"
    )]
    Unreplicated {
        /// The batch id.
        batch_id: u64,
        /// The first shard short of its quorum.
        shard: u32,
        /// Durable copies.
        copies: usize,
        /// Copies needed.
        needed: usize,
        /// What the replicas said.
        why: String,
    },
}

/// Whether an admission waits for in-flight budget or fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Fail with [`IngestError::Saturated`] (unary calls).
    FailFast,
    /// Wait for budget (streams: waiting stops reading the stream).
    Wait,
}

/// The node's ingest entry point. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestPipeline {
    ctx: Arc<NodeContext>,
    inflight: Arc<Semaphore>,
    /// Readings other nodes asked this one to copy, in flight: a budget of its own, so that
    /// two saturated nodes whose clients wait on each other's copies never starve each other.
    copies_inflight: Arc<Semaphore>,
}

struct Group {
    indices: Vec<u32>,
    shard: u32,
    /// Reported its decisions (its readings may be on replicas even if it never answers).
    decided: bool,
    answered: bool,
}

/// What a batch's replication is waiting on.
struct Replication {
    /// Plans of the shards whose readings need copies.
    plans: HashMap<u32, Plan>,
    /// Groups that have not decided yet.
    undecided: usize,
    /// Accepted readings per shard, from the groups that decided.
    copies: HashMap<u32, Vec<Reading>>,
}

type CopyFuture = Pin<Box<dyn Future<Output = BTreeMap<u32, ShardResult>> + Send>>;

impl IngestPipeline {
    /// A pipeline over a running node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        let permits = ctx.config.ingest.max_inflight_readings as usize;
        Self {
            ctx,
            inflight: Arc::new(Semaphore::new(permits)),
            copies_inflight: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Readings currently in flight.
    pub fn inflight(&self) -> u32 {
        self.ctx.config.ingest.max_inflight_readings - self.inflight.available_permits() as u32
    }

    /// Refuses all new batches and copies (graceful shutdown); in-flight ones complete.
    pub fn close(&self) {
        self.inflight.close();
        self.copies_inflight.close();
    }

    /// Waits until no batch and no copy is in flight, or `timeout` passes. Returns whether it
    /// drained.
    pub async fn drained(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let max = self.ctx.config.ingest.max_inflight_readings as usize;
        while self.inflight() > 0 || self.copies_inflight.available_permits() < max {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Ingests one batch and returns its ack once every accepted reading is durable.
    pub async fn push(
        &self,
        batch: ReadingBatch,
        admission: Admission,
    ) -> Result<PushAck, IngestError> {
        let started = Instant::now();
        let batch_id = batch.batch_id;
        let _permit = self.admit(&batch, admission).await?;
        let len = batch.readings.len();

        let mut ack = PushAck {
            batch_id,
            ..PushAck::default()
        };
        let (mut groups, mut per_shard, rx) = self.split(batch, &mut ack.rejected);
        let replication = self.replication_for(&mut per_shard);
        self.dispatch(per_shard);
        let news = self.collect(rx, &mut groups, &mut ack, replication).await?;
        self.notify_feeders(news).await;

        ack.rejected.sort_by_key(|r| r.index);
        record_metrics(&ack, len, started);
        let counters = &self.ctx.counters;
        Counters::add(
            &counters.readings_accepted,
            u64::from(ack.accepted - ack.duplicates),
        );
        Counters::add(&counters.readings_rejected, ack.rejected.len() as u64);
        Ok(ack)
    }

    async fn admit(
        &self,
        batch: &ReadingBatch,
        admission: Admission,
    ) -> Result<OwnedSemaphorePermit, IngestError> {
        let len = batch.readings.len();
        let max = self.ctx.config.ingest.max_batch_readings;
        if len == 0 {
            return Err(IngestError::Empty {
                batch_id: batch.batch_id,
            });
        }
        if len > max as usize {
            return Err(IngestError::TooLarge {
                batch_id: batch.batch_id,
                len,
                max,
            });
        }
        let permits = len as u32;

        match admission {
            Admission::FailFast => self
                .inflight
                .clone()
                .try_acquire_many_owned(permits)
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::Closed => IngestError::ShuttingDown,
                    tokio::sync::TryAcquireError::NoPermits => {
                        metrics::counter!("gridmesh_ingest_saturated_total").increment(1);
                        IngestError::Saturated {
                            inflight: self.inflight(),
                        }
                    }
                }),
            Admission::Wait => self
                .inflight
                .clone()
                .acquire_many_owned(permits)
                .await
                .map_err(|_| IngestError::ShuttingDown),
        }
    }

    /// Shape-checks readings and groups the valid ones by meter and shard.
    #[allow(clippy::type_complexity)]
    fn split(
        &self,
        batch: ReadingBatch,
        rejected: &mut Vec<Rejection>,
    ) -> (
        Vec<Group>,
        HashMap<u32, Vec<MeterWork>>,
        mpsc::Receiver<GroupEvent>,
    ) {
        let ingest = &self.ctx.config.ingest;
        let (now, tolerance) = (now_ms(), ingest.future_tolerance.as_millis() as i64);
        let mut by_meter: HashMap<String, Vec<(u32, Reading)>> =
            HashMap::with_capacity(batch.readings.len());
        for (index, reading) in batch.readings.into_iter().enumerate() {
            let index = index as u32;
            match check_shape(&reading, now, tolerance) {
                Ok(()) => {
                    // The id moves to the group: stored readings do not repeat it.
                    let mut reading = reading;
                    let meter_id = std::mem::take(&mut reading.meter_id);
                    // Most meters have one reading per batch: no room for four.
                    by_meter
                        .entry(meter_id)
                        .or_insert_with(|| Vec::with_capacity(1))
                        .push((index, reading));
                }
                Err((reason, message)) => rejected.push(Rejection {
                    index,
                    reason: reason as i32,
                    message,
                }),
            }
        }
        self.group(by_meter, |_, _| WorkKind::Client { replicate: false })
    }

    /// Turns per-meter readings into groups and per-shard work.
    #[allow(clippy::type_complexity)]
    fn group(
        &self,
        by_meter: HashMap<String, Vec<(u32, Reading)>>,
        kind: impl Fn(&str, u32) -> WorkKind,
    ) -> (
        Vec<Group>,
        HashMap<u32, Vec<MeterWork>>,
        mpsc::Receiver<GroupEvent>,
    ) {
        // Two events per group at most (decided, durable): sends never wait.
        let (tx, rx) = mpsc::channel(2 * by_meter.len().max(1));
        let shards = self.ctx.config.actors.shards;
        let mut groups = Vec::with_capacity(by_meter.len());
        let mut per_shard: HashMap<u32, Vec<MeterWork>> = HashMap::new();
        for (meter_id, readings) in by_meter {
            let group = groups.len() as u32;
            let shard = shard_of(&meter_id, shards);
            groups.push(Group {
                indices: readings.iter().map(|(i, _)| *i).collect(),
                shard,
                decided: false,
                answered: false,
            });
            let kind = kind(&meter_id, shard);
            per_shard
                .entry(shard)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(MeterWork {
                    meter_id,
                    group,
                    readings,
                    outcome: tx.clone(),
                    kind,
                });
        }
        (groups, per_shard, rx)
    }

    /// Plans the copies of this batch's shards (in a cluster with more than one copy) and
    /// asks their meters to report decisions.
    fn replication_for(&self, per_shard: &mut HashMap<u32, Vec<MeterWork>>) -> Option<Replication> {
        if !self.ctx.cluster.enabled() {
            return None;
        }
        let factor = self.ctx.config.replication.factor as usize;
        let mut plans = HashMap::new();
        let mut undecided = 0;
        for (shard, work) in per_shard.iter_mut() {
            let plan = self.ctx.cluster.plan(*shard, factor);
            if plan.copies <= 1 {
                continue;
            }
            for item in work.iter_mut() {
                item.kind = WorkKind::Client { replicate: true };
                undecided += 1;
            }
            plans.insert(*shard, plan);
        }
        (!plans.is_empty()).then(|| Replication {
            plans,
            undecided,
            copies: HashMap::new(),
        })
    }

    /// Stores readings other nodes accepted (replication, handoff, repair): each meter merges
    /// its copies; hints are kept as the parts ask. Answers per part whether it is durable.
    pub async fn apply_copies(&self, request: ReplicateRequest) -> ReplicateReply {
        let parts = request.parts.len();
        let fail = |error: String| ReplicateReply {
            parts: (0..parts)
                .map(|_| ReplicaPartResult {
                    durable: false,
                    error: error.clone(),
                })
                .collect(),
        };
        let total: usize = request.parts.iter().map(|p| p.readings.len()).sum();
        let limit = self.ctx.config.ingest.max_inflight_readings as usize;
        if total > limit {
            return fail(format!(
                "{total} readings exceed the node's in-flight limit"
            ));
        }
        let timeout = self.ctx.config.replication.timeout;
        let _permit = match tokio::time::timeout(
            timeout,
            self.inflight
                .clone()
                .acquire_many_owned(total.max(1) as u32),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return fail("node is shutting down".to_owned()),
            Err(_) => return fail("node is saturated".to_owned()),
        };
        let cause = ReplicateCause::try_from(request.cause).unwrap_or_default();
        metrics::counter!("gridmesh_replica_readings_received_total", "cause" => cause_label(cause))
            .increment(total as u64);

        // Groups are per (part, meter): a meter's readings of one part share its hints.
        let mut by_meter: HashMap<String, Vec<(u32, Reading)>> = HashMap::new();
        let mut part_of_meter: HashMap<String, usize> = HashMap::new();
        let mut results: Vec<ReplicaPartResult> = (0..parts)
            .map(|_| ReplicaPartResult {
                durable: true,
                error: String::new(),
            })
            .collect();
        let mut hints: HashMap<usize, Arc<[String]>> = HashMap::new();
        let mut shard_of_part: Vec<u32> = Vec::with_capacity(parts);
        let shards = self.ctx.config.actors.shards;
        for (p, part) in request.parts.into_iter().enumerate() {
            shard_of_part.push(part.shard);
            hints.insert(p, part.hinted_for.into());
            for mut reading in part.readings {
                let meter = std::mem::take(&mut reading.meter_id);
                let wrong_shard = shard_of(&meter, shards) != part.shard;
                if let Err(e) = check_meter_id(&meter).map(|()| wrong_shard) {
                    results[p] = ReplicaPartResult {
                        durable: false,
                        error: format!("bad meter id: {e}"),
                    };
                    continue;
                }
                if wrong_shard {
                    results[p] = ReplicaPartResult {
                        durable: false,
                        error: format!("meter {meter} is not in shard {}", part.shard),
                    };
                    continue;
                }
                // A meter in two parts (two hint sets) would mix hints: keep the first part's
                // and mark the second for resending; senders never do this.
                match part_of_meter.get(&meter) {
                    Some(&first) if first != p => {
                        results[p] = ReplicaPartResult {
                            durable: false,
                            error: format!("meter {meter} appears in two parts"),
                        };
                        continue;
                    }
                    _ => {
                        part_of_meter.insert(meter.clone(), p);
                    }
                }
                by_meter.entry(meter).or_default().push((p as u32, reading));
            }
        }
        let part_of = |meter: &str| part_of_meter.get(meter).copied().unwrap_or(0);
        let (mut groups, per_shard, mut rx) = self.group(by_meter, |meter, _| {
            let p = part_of(meter);
            WorkKind::Copy {
                shard: shard_of_part[p],
                hinted_for: hints
                    .get(&p)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(Vec::new())),
            }
        });
        let mut group_part = vec![0; groups.len()];
        for item in per_shard.values().flatten() {
            group_part[item.group as usize] = part_of(&item.meter_id);
        }
        self.dispatch(per_shard);
        let deadline = tokio::time::Instant::now() + self.ctx.config.ingest.ack_timeout;
        let mut feeder_updates = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(GroupEvent::Durable(outcome))) => {
                    let g = outcome.group as usize;
                    if let Some(group) = groups.get_mut(g) {
                        group.answered = true;
                    }
                    if let Some(first) = outcome.rejected.first() {
                        let p = group_part[g];
                        results[p] = ReplicaPartResult {
                            durable: false,
                            error: first.message.clone(),
                        };
                    }
                    feeder_updates.extend(outcome.feeder_updates);
                }
                Ok(Some(GroupEvent::Decided { .. })) => {}
                Ok(None) => break,
                Err(_) => {
                    for (g, group) in groups.iter().enumerate() {
                        if !group.answered {
                            results[group_part[g]] = ReplicaPartResult {
                                durable: false,
                                error: "not stored in time".to_owned(),
                            };
                        }
                    }
                    return ReplicateReply { parts: results };
                }
            }
        }
        for (g, group) in groups.iter().enumerate() {
            if !group.answered {
                results[group_part[g]] = ReplicaPartResult {
                    durable: false,
                    error: "a meter actor restarted; send again".to_owned(),
                };
            }
        }
        // The live feeder views hear of these from the primary, which wrote them first.
        drop(feeder_updates);
        ReplicateReply { parts: results }
    }

    fn dispatch(&self, per_shard: HashMap<u32, Vec<MeterWork>>) {
        for (shard, work) in per_shard {
            if !self.ctx.send_to_shard(shard, ShardMsg::Ingest(work)) {
                // The shard is restarting. The work (and its outcome senders) is dropped, so
                // `collect` answers its groups RETRY; nothing of it was stored.
                tracing::debug!(shard, "shard unavailable; readings answered with retry");
            }
        }
    }

    async fn collect(
        &self,
        mut rx: mpsc::Receiver<GroupEvent>,
        groups: &mut [Group],
        ack: &mut PushAck,
        mut replication: Option<Replication>,
    ) -> Result<FeederNews, IngestError> {
        let timeout = self.ctx.config.ingest.ack_timeout;
        // Most groups bring one feeder update: grown once, not doubled per group.
        let mut news = FeederNews {
            updates: Vec::with_capacity(groups.len()),
            signals: Vec::with_capacity(groups.len()),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut copying: Option<CopyFuture> = None;
        let mut copied: Option<BTreeMap<u32, ShardResult>> = None;
        let mut closed = false;
        let timed_out = || {
            metrics::counter!("gridmesh_ingest_ack_timeouts_total").increment(1);
            IngestError::AckTimeout {
                batch_id: ack.batch_id,
                timeout_ms: timeout.as_millis() as u64,
            }
        };
        loop {
            // Copy once every group that needs copies has decided (or can no longer).
            if copying.is_none()
                && copied.is_none()
                && let Some(r) = replication.as_mut()
                && (r.undecided == 0 || closed)
            {
                copying = Some(self.start_copies(r));
            }
            if closed && (replication.is_none() || copied.is_some()) {
                break;
            }
            tokio::select! {
                done = async { copying.as_mut().expect("guarded").await }, if copying.is_some() => {
                    copying = None;
                    copied = Some(done);
                }
                event = tokio::time::timeout_at(deadline, rx.recv()), if !closed => match event {
                    Ok(Some(GroupEvent::Decided { group, copies })) => {
                        if let Some(g) = groups.get_mut(group as usize) {
                            g.decided = true;
                            if let Some(r) = replication.as_mut() {
                                r.undecided = r.undecided.saturating_sub(1);
                                r.copies.entry(g.shard).or_default().extend(copies);
                            }
                        }
                    }
                    Ok(Some(GroupEvent::Durable(outcome))) => {
                        if let Some(group) = groups.get_mut(outcome.group as usize) {
                            group.answered = true;
                        }
                        ack.accepted += outcome.accepted;
                        ack.duplicates += outcome.duplicates;
                        ack.corrections += outcome.corrections;
                        ack.rejected.extend(outcome.rejected);
                        news.updates.extend(outcome.feeder_updates);
                        if !outcome.feeder_id.is_empty() {
                            let feeder = outcome.feeder_id;
                            news.signals
                                .extend(outcome.signals.into_iter().map(|s| (feeder.clone(), s)));
                        }
                    }
                    // Every sender is gone: all groups answered or their actors dropped them.
                    Ok(None) => closed = true,
                    Err(_) => return Err(timed_out()),
                },
                () = tokio::time::sleep_until(deadline), if closed => return Err(timed_out()),
            }
        }
        // A group that decided but never became durable here may be stored elsewhere.
        if groups.iter().any(|g| g.decided && !g.answered) {
            return Err(timed_out());
        }
        for group in groups.iter().filter(|g| !g.answered) {
            for index in &group.indices {
                ack.rejected.push(Rejection {
                    index: *index,
                    reason: RejectReason::Retry as i32,
                    message: RETRY_MESSAGE.to_owned(),
                });
            }
        }
        if let (Some(r), Some(copied)) = (&replication, &copied) {
            self.check_quorum(ack.batch_id, r, copied)?;
        }
        Ok(news)
    }

    fn start_copies(&self, r: &mut Replication) -> CopyFuture {
        let shards: Vec<ShardCopies> = std::mem::take(&mut r.copies)
            .into_iter()
            .filter(|(_, readings)| !readings.is_empty())
            .filter_map(|(shard, readings)| {
                Some(ShardCopies {
                    shard,
                    plan: r.plans.get(&shard)?.clone(),
                    readings,
                })
            })
            .collect();
        let cluster = self.ctx.cluster.clone();
        let timeout = self.ctx.config.replication.timeout;
        Box::pin(async move {
            let started = Instant::now();
            let results = replication::copy(&cluster, shards, ReplicateCause::Write, timeout).await;
            metrics::histogram!("gridmesh_replication_latency_seconds")
                .record(started.elapsed().as_secs_f64());
            results
        })
    }

    /// Every shard with accepted readings must be durable on the write quorum.
    fn check_quorum(
        &self,
        batch_id: u64,
        r: &Replication,
        copied: &BTreeMap<u32, ShardResult>,
    ) -> Result<(), IngestError> {
        let w = self.ctx.config.replication.write_quorum as usize;
        for (shard, result) in copied {
            let Some(plan) = r.plans.get(shard) else {
                continue;
            };
            let needed = quorum(w, plan.copies);
            let copies = 1 + result.durable_on.len();
            if copies < needed {
                metrics::counter!("gridmesh_ingest_unreplicated_total").increment(1);
                let why = if result.failures.is_empty() {
                    "not enough live members".to_owned()
                } else {
                    result.failures.join("; ")
                };
                return Err(IngestError::Unreplicated {
                    batch_id,
                    shard: *shard,
                    copies,
                    needed,
                    why,
                });
            }
        }
        Ok(())
    }

    /// Hands durable feeder contributions and supply signals to the feeders' actors, on the
    /// nodes that own the feeders: one message per feeder here, one call per other owner.
    /// Local messages wait for a slot of the node's bounded feeder queue, so the ack waits
    /// when feeder actors fall behind; calls to other owners are bounded by the per-peer
    /// in-flight limit and dropped (counted) beyond it. Best effort: the stored rows are the
    /// source of truth for feeder load; the live view feeds the grid rules.
    async fn notify_feeders(&self, news: FeederNews) {
        if news.updates.is_empty() && news.signals.is_empty() {
            return;
        }
        let mut by_feeder: HashMap<String, (Vec<FeederUpdate>, Vec<OutageSignal>)> = HashMap::new();
        for update in news.updates {
            by_feeder
                .entry(update.feeder_id.clone())
                .or_default()
                .0
                .push(update);
        }
        for (feeder, signal) in news.signals {
            by_feeder.entry(feeder).or_default().1.push(signal);
        }
        let mut remote: HashMap<String, Vec<FeederDelta>> = HashMap::new();
        for (feeder_id, (updates, signals)) in by_feeder {
            match self.ctx.cluster.owner_of(&feeder_id) {
                Owner::Remote(node) => {
                    remote
                        .entry(node)
                        .or_default()
                        .push(feeder_delta(feeder_id, updates, signals));
                }
                Owner::Local | Owner::Nobody => {
                    self.ctx
                        .send_feeder_updates(feeder_id, updates, signals)
                        .await;
                }
            }
        }
        for (node, feeders) in remote {
            let cluster = self.ctx.cluster.clone();
            tokio::spawn(async move {
                let call = cluster_request::Call::FeederUpdates(FeederUpdates { feeders });
                if let Err(e) = cluster.forward(&node, call, false).await {
                    metrics::counter!("gridmesh_feeder_updates_dropped_total").increment(1);
                    tracing::debug!(node, error = %e, "feeder updates not delivered");
                }
            });
        }
    }
}

/// What a batch changed for feeders: contributions and supply signals.
#[derive(Debug, Default)]
pub struct FeederNews {
    updates: Vec<FeederUpdate>,
    signals: Vec<(String, OutageSignal)>,
}

fn feeder_delta(
    feeder_id: String,
    updates: Vec<FeederUpdate>,
    signals: Vec<OutageSignal>,
) -> FeederDelta {
    FeederDelta {
        feeder_id,
        contributions: updates
            .into_iter()
            .map(|u| ContributionUpdate {
                meter_id: u.meter_id,
                interval_start_ms: u.interval_start_ms,
                contribution: Some(u.contribution),
            })
            .collect(),
        signals: signals
            .into_iter()
            .map(|s| SupplySignal {
                meter_id: s.meter_id,
                ts_ms: s.ts_ms,
                kind: match s.signal {
                    SignalKind::Reading => SupplySignalKind::Reading,
                    SignalKind::LastGasp => SupplySignalKind::LastGasp,
                    SignalKind::Restore => SupplySignalKind::Restore,
                } as i32,
            })
            .collect(),
    }
}

/// The contributions and signals of a delta from a peer.
pub fn from_delta(delta: FeederDelta) -> (String, Vec<FeederUpdate>, Vec<OutageSignal>) {
    let feeder_id = delta.feeder_id;
    let updates = delta
        .contributions
        .into_iter()
        .filter_map(|c| {
            Some(FeederUpdate {
                feeder_id: feeder_id.clone(),
                interval_start_ms: c.interval_start_ms,
                meter_id: c.meter_id,
                contribution: c.contribution?,
            })
        })
        .collect();
    let signals = delta
        .signals
        .into_iter()
        .filter_map(|s| {
            let signal = match SupplySignalKind::try_from(s.kind).ok()? {
                SupplySignalKind::Reading => SignalKind::Reading,
                SupplySignalKind::LastGasp => SignalKind::LastGasp,
                SupplySignalKind::Restore => SignalKind::Restore,
                SupplySignalKind::Unspecified => return None,
            };
            Some(OutageSignal {
                meter_id: s.meter_id,
                ts_ms: s.ts_ms,
                signal,
            })
        })
        .collect();
    (feeder_id, updates, signals)
}

fn record_metrics(ack: &PushAck, len: usize, started: Instant) {
    metrics::counter!("gridmesh_ingest_batches_total").increment(1);
    metrics::counter!("gridmesh_readings_received_total").increment(len as u64);
    metrics::counter!("gridmesh_readings_accepted_total")
        .increment(u64::from(ack.accepted - ack.duplicates));
    metrics::counter!("gridmesh_readings_duplicate_total").increment(u64::from(ack.duplicates));
    metrics::counter!("gridmesh_readings_corrected_total").increment(u64::from(ack.corrections));
    for rejection in &ack.rejected {
        let reason = RejectReason::try_from(rejection.reason).unwrap_or(RejectReason::Unspecified);
        metrics::counter!("gridmesh_readings_rejected_total", "reason" => reason_label(reason))
            .increment(1);
    }
    metrics::histogram!("gridmesh_ingest_ack_latency_seconds")
        .record(started.elapsed().as_secs_f64());
}

fn cause_label(cause: ReplicateCause) -> &'static str {
    match cause {
        ReplicateCause::Unspecified => "unspecified",
        ReplicateCause::Write => "write",
        ReplicateCause::Handoff => "handoff",
        ReplicateCause::Repair => "repair",
    }
}

/// A short lowercase label for a reject reason (metrics, reports).
pub fn reason_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Unspecified => "unspecified",
        RejectReason::UnknownMeter => "unknown_meter",
        RejectReason::InvalidMeterId => "invalid_meter_id",
        RejectReason::TimestampTooEarly => "timestamp_too_early",
        RejectReason::TimestampInFuture => "timestamp_in_future",
        RejectReason::TooOld => "too_old",
        RejectReason::Conflict => "conflict",
        RejectReason::RegisterBackwards => "register_backwards",
        RejectReason::NotFinite => "not_finite",
        RejectReason::OutOfRange => "out_of_range",
        RejectReason::Empty => "empty",
        RejectReason::Retry => "retry",
        RejectReason::StaleVersion => "stale_version",
        RejectReason::InvalidEvent => "invalid_event",
        RejectReason::OwnerUnavailable => "owner_unavailable",
    }
}
