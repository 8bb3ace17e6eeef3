//! `MeterActor`: one per active meter, the only writer of that meter's readings.
//!
//! Supervised by its [`crate::shard::ShardSupervisor`]. It owns the meter's rolling state
//! (newest timestamp, registers, counters, the open 15-minute accumulator) and decides every
//! reading with [`crate::validation::decide`]. Per batch it submits **one** write request with
//! the accepted readings and the meter's contribution to each 15-minute feeder interval the
//! batch touched, plus its state row when a checkpoint is due (at most once per
//! `actors.state_checkpoint_interval`); the batch's outcome for this meter travels with the
//! request and is released only once the write is durable.
//!
//! Activation: the state is loaded in `post_start`, after waiting for the meter's previous
//! incarnation's writes to be applied (its [`WriteCursor`] outlives the actor). A row that may
//! be older than the readings (the node, the shard or this meter stopped uncleanly since it
//! was written) is not trusted: the state is rebuilt from the stored readings instead
//! ([`MeterActorState::rebuild_state`]), so a re-activated meter resumes exactly where the
//! readings on disk say it stopped. Passivation writes the row if anything changed since it
//! was last written.
//!
//! Restart policy (applied by the shard): transient. A failed meter is not restarted eagerly;
//! its next message re-activates it, rebuilding its state from the stored readings. Failures
//! count against the shard's restart budget, which escalates when exceeded.
//!
//! Message types are local-only: meters are never advertised to peers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gridmesh_analytics::alert::AlertEvent;
use gridmesh_analytics::anomaly::AnomalyRules;
use gridmesh_proto::internal::{
    BucketAccumulator, CorrectionAudit, FeederContribution, MeterState,
};
use gridmesh_proto::v1::{
    ActivationState, MeterInfo, MeterStatus, Reading, RejectReason, Rejection,
};
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

use crate::anomaly::LiveAnomaly;
use crate::buckets::{self, Bucket};
use crate::context::{NodeContext, now_ms};
use crate::grid::{MeterRules as GridRules, OutageSignal, SignalKind, signals_of};
use crate::keys;
use crate::mailbox::Mailbox;
use crate::recent::Recent;
use crate::storage::{Store, encode_reading};
use crate::validation::{Decision, History, Merge, MeterRules, Neighbour, decide, merge_copy};
use crate::writer::{Completion, Row, Space, WriteCursor, WriteRequest};

/// The readings of one meter from one batch.
#[derive(Debug)]
pub struct MeterWork {
    /// The meter.
    pub meter_id: String,
    /// Index of this group in its batch, echoed in the outcome.
    pub group: u32,
    /// `(index in batch, reading)`, in batch order. The pipeline moves each reading's
    /// `meter_id` into [`MeterWork::meter_id`], so it is empty here.
    pub readings: Vec<(u32, Reading)>,
    /// Where the outcome goes. Dropping it unanswered means "retry".
    pub outcome: mpsc::Sender<GroupEvent>,
    /// Where the readings come from.
    pub kind: WorkKind,
}

/// Where a meter's work comes from.
#[derive(Debug, Clone)]
pub enum WorkKind {
    /// A client: every reading is decided by the rules. With `replicate`, the meter reports
    /// what it accepted ([`GroupEvent::Decided`]) as soon as it has decided, so the pipeline
    /// can copy it to the replicas while the local write is being synced.
    Client {
        /// Report decisions for replication.
        replicate: bool,
    },
    /// Copies of readings another node accepted (replication, handoff, repair): merged with
    /// [`merge_copy`], never judged again. A hint is kept for each member in `hinted_for`.
    Copy {
        /// The meter's shard (hint keys name it).
        shard: u32,
        /// Members this node keeps the copies for.
        hinted_for: Arc<[String]>,
    },
}

/// What a meter tells the pipeline about its group.
#[derive(Debug)]
pub enum GroupEvent {
    /// The readings this meter accepted, meter id set, before they are durable (only for
    /// client work with `replicate`). Always followed by `Durable`, unless the write fails.
    Decided {
        /// The group index.
        group: u32,
        /// Accepted readings (new, duplicate or correction), as stored.
        copies: Vec<Reading>,
    },
    /// The group's outcome, once its writes are durable.
    Durable(GroupOutcome),
}

/// What happened to one [`MeterWork`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupOutcome {
    /// The group index.
    pub group: u32,
    /// Readings accepted (new, duplicate or correction).
    pub accepted: u32,
    /// Of those, duplicates.
    pub duplicates: u32,
    /// Of those, corrections.
    pub corrections: u32,
    /// Rejected readings.
    pub rejected: Vec<Rejection>,
    /// This meter's new contributions to feeder intervals, durable once the outcome arrives.
    /// The pipeline forwards them to the feeder actors, one message per feeder per batch.
    pub feeder_updates: Vec<FeederUpdate>,
    /// The meter's feeder (empty: none) and what its accepted readings say about its supply
    /// (client work only: outage tracking runs on the meter's primary).
    pub feeder_id: String,
    /// Supply signals for the feeder's outage tracker.
    pub signals: Vec<OutageSignal>,
}

/// A meter's contribution to one feeder interval (replaces its previous one).
#[derive(Debug, Clone, PartialEq)]
pub struct FeederUpdate {
    /// Feeder.
    pub feeder_id: String,
    /// Interval start, ms.
    pub interval_start_ms: i64,
    /// Meter.
    pub meter_id: String,
    /// The contribution.
    pub contribution: FeederContribution,
}

/// Messages of a meter actor. Local only.
#[derive(RactorMessage)]
pub enum MeterMsg {
    /// Decide and store readings.
    Ingest(MeterWork),
    /// Report live status. `was_active` says whether the actor was resident before this.
    Status {
        /// Whether the meter was active before the request.
        was_active: bool,
        /// Reply.
        reply: RpcReplyPort<Option<MeterStatus>>,
    },
    /// Delete these stored readings (a substitute's copies, handed off to their home
    /// replica) and rebuild the state and feeder contributions they were part of. The
    /// outcome arrives as [`GroupEvent::Durable`] once the deletion is durable.
    Forget {
        /// Timestamps to delete.
        ts_ms: Vec<i64>,
        /// Where the outcome goes.
        outcome: mpsc::Sender<GroupEvent>,
    },
    /// Stop after everything queued before this message.
    Passivate,
}

/// Start-up arguments.
#[derive(Debug)]
pub struct MeterArgs {
    /// Registry entry.
    pub info: MeterInfo,
    /// Write `info` to the registry with the first batch (auto-registration).
    pub register: bool,
    /// The previous incarnation stopped without writing its state (it failed, or its shard
    /// did): rebuild the state from the stored readings instead of trusting the row.
    pub rebuild: bool,
    /// Write cursor shared with earlier incarnations.
    pub cursor: Arc<WriteCursor>,
    /// Node context.
    pub ctx: Arc<NodeContext>,
    /// Depth counter of this actor's mailbox; the shard counts every message in.
    pub mailbox: Mailbox,
}

/// The actor (stateless; everything lives in [`MeterActorState`]).
#[derive(Debug)]
pub struct MeterActor;

/// Live state of one meter.
pub struct MeterActorState {
    info: MeterInfo,
    is_head_meter: bool,
    register: bool,
    rules: MeterRules,
    state: MeterState,
    /// `state` differs from the stored row.
    state_dirty: bool,
    /// When the state row was last written (see `actors.state_checkpoint_interval`).
    checkpointed: std::time::Instant,
    /// See [`MeterArgs::rebuild`].
    rebuild: bool,
    /// The newest stored readings, for late readings (see [`crate::recent`]).
    recent: Recent,
    cursor: Arc<WriteCursor>,
    ctx: Arc<NodeContext>,
    /// Grid rules (voltage), when analytics are on and the meter has a nominal voltage.
    grid: Option<GridRules>,
    /// Anomaly rules, when live anomaly alerts are on (see [`crate::anomaly`]).
    anomaly_rules: Option<AnomalyRules>,
    /// Their detector, loaded when the first client batch closes an interval.
    anomaly: Option<LiveAnomaly>,
    mailbox: Mailbox,
}

impl Actor for MeterActor {
    type Msg = MeterMsg;
    type State = MeterActorState;
    type Arguments = MeterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<MeterMsg>,
        args: MeterArgs,
    ) -> Result<MeterActorState, ActorProcessingErr> {
        let ingest = &args.ctx.config.ingest;
        let rules = MeterRules {
            out_of_order_window_ms: ingest.out_of_order_window.as_millis() as i64,
            nominal_voltage_v: args.info.nominal_voltage_v,
        };
        Ok(MeterActorState {
            is_head_meter: false,
            register: args.register,
            rules,
            state: MeterState::default(),
            state_dirty: false,
            checkpointed: std::time::Instant::now(),
            rebuild: args.rebuild,
            recent: Recent::unknown(),
            grid: GridRules::new(
                &args.ctx.config.analytics,
                &args.info.meter_id,
                args.info.nominal_voltage_v,
            ),
            anomaly_rules: crate::anomaly::rules(&args.ctx.config.analytics),
            anomaly: None,
            info: args.info,
            cursor: args.cursor,
            ctx: args.ctx,
            mailbox: args.mailbox,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<MeterMsg>,
        s: &mut MeterActorState,
    ) -> Result<(), ActorProcessingErr> {
        // The previous incarnation may still have writes queued; read only after they landed.
        s.cursor.wait_applied().await;
        let ctx = s.ctx.clone();
        let store = &ctx.store;
        let row = store.meter_state(&s.info.meter_id)?;
        // A row written before the store's last unclean stop may be older than readings
        // stored after it (state rows are written at most once per checkpoint interval).
        let current = row
            .as_ref()
            .is_some_and(|r| r.checkpoint_run >= store.trusted_from());
        s.state = row.unwrap_or_default();
        if s.rebuild || !current {
            s.rebuild_state()?;
        }
        s.recent = Recent::above(s.state.last_ts_ms);
        s.state.activations += 1;
        s.state_dirty = true;
        if !s.info.feeder_id.is_empty() {
            s.is_head_meter = store
                .feeder_info(&s.info.feeder_id)?
                .is_some_and(|f| f.head_meter_id == s.info.meter_id);
        }
        metrics::gauge!("gridmesh_active_actors", "kind" => "meter").increment(1.0);
        metrics::counter!("gridmesh_meter_activations_total").increment(1);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MeterMsg>,
        _s: &mut MeterActorState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("gridmesh_active_actors", "kind" => "meter").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MeterMsg>,
        msg: MeterMsg,
        s: &mut MeterActorState,
    ) -> Result<(), ActorProcessingErr> {
        s.mailbox.received();
        match msg {
            // Boxed: the ingest future is large, and ractor moves the handler's future by
            // value through several layers per message; a box is one allocation instead.
            MeterMsg::Ingest(work) => Box::pin(s.ingest(work)).await,
            MeterMsg::Status { was_active, reply } => s.status(was_active, reply).await,
            MeterMsg::Forget { ts_ms, outcome } => s.forget(ts_ms, outcome).await,
            MeterMsg::Passivate => s.passivate(myself).await,
        }
    }
}

/// The effect of one batch on one meter, built up reading by reading.
struct BatchEffect {
    outcome: GroupOutcome,
    rows: Vec<Row>,
    /// Readings accepted in this batch, not yet in the store: `ts → (reading, index of its
    /// row in `rows`)`.
    pending: BTreeMap<i64, (Reading, usize)>,
    /// 15-minute buckets other than the open one that changed (backfill, corrections).
    dirty_buckets: BTreeSet<i64>,
    /// Buckets this batch changed and then closed (a later in-order reading opened a newer
    /// one): their final accumulators, written as feeder contributions.
    closed: BTreeMap<i64, BucketAccumulator>,
    /// Every bucket an in-order reading of this batch closed, oldest first, with its final
    /// accumulator (what the anomaly rules judge).
    finalized: Vec<BucketAccumulator>,
    /// The open bucket must be recomputed from storage (a correction landed in it).
    open_dirty: bool,
    /// Whether the open bucket changed at all.
    open_touched: bool,
    /// Local days in-order readings of this batch closed, oldest first (see
    /// [`crate::daily`]).
    closed_days: Vec<i64>,
    /// Closed local days a reading of this batch changed: their stored daily rows go.
    stale_days: BTreeSet<i64>,
}

impl MeterActorState {
    async fn ingest(&mut self, work: MeterWork) -> Result<(), ActorProcessingErr> {
        // Decisions about older timestamps read the store, unless the newest stored readings
        // held in memory answer them: our own queued writes must be there.
        if work.readings.iter().any(|(_, r)| {
            r.ts_ms <= self.state.last_ts_ms
                && !self.recent.covers(r.ts_ms, Bucket::Min15.start_of(r.ts_ms))
        }) {
            self.cursor.wait_applied().await;
        }
        let mut effect = BatchEffect {
            // Sized for the usual batch of one reading per meter, which closes one interval,
            // contributes to one feeder interval and sends one supply signal: Vec's first
            // growth would make room for four of each.
            outcome: GroupOutcome {
                group: work.group,
                feeder_id: self.info.feeder_id.clone(),
                feeder_updates: Vec::with_capacity(1),
                signals: Vec::with_capacity(1),
                ..GroupOutcome::default()
            },
            rows: Vec::with_capacity(work.readings.len() + 3),
            pending: BTreeMap::new(),
            dirty_buckets: BTreeSet::new(),
            closed: BTreeMap::new(),
            finalized: Vec::with_capacity(1),
            open_dirty: false,
            open_touched: false,
            closed_days: Vec::new(),
            stale_days: BTreeSet::new(),
        };
        match &work.kind {
            WorkKind::Client { replicate } => {
                let mut copies = Vec::new();
                let mut alerts = Vec::new();
                let mut newest: Option<i64> = None;
                for (index, reading) in work.readings {
                    let copy = replicate.then(|| reading.clone());
                    let in_order = reading.ts_ms > self.state.last_ts_ms;
                    let signals = (!self.info.feeder_id.is_empty())
                        .then(|| signals_of(&self.info.meter_id, &reading));
                    if let Some(grid) = self.grid.as_mut().filter(|_| in_order) {
                        // Judged before the decision moves the reading; a rejected reading's
                        // window is fed nothing (the events are only kept when accepted).
                        let events = grid.observe(&reading);
                        if self.decide_one(index, reading, &mut effect)? {
                            alerts.extend(events);
                            if let Some(mut copy) = copy {
                                copy.meter_id.clone_from(&self.info.meter_id);
                                copies.push(copy);
                            }
                            push_signals(&mut effect.outcome.signals, &mut newest, signals);
                        }
                        continue;
                    }
                    if self.decide_one(index, reading, &mut effect)? {
                        if let Some(mut copy) = copy {
                            copy.meter_id.clone_from(&self.info.meter_id);
                            copies.push(copy);
                        }
                        push_signals(&mut effect.outcome.signals, &mut newest, signals);
                    }
                }
                alerts.extend(self.judge_closed(&effect).await?);
                if !alerts.is_empty()
                    && let Some(manager) = self.ctx.alert_manager()
                {
                    let _ = manager.cast(crate::alerts::AlertMsg::Events {
                        feeder_id: self.info.feeder_id.clone(),
                        events: alerts,
                    });
                }
                if *replicate {
                    // Capacity is two events per group, so this never fails for a live receiver.
                    let _ = work.outcome.try_send(GroupEvent::Decided {
                        group: work.group,
                        copies,
                    });
                }
            }
            WorkKind::Copy { shard, hinted_for } => {
                for (_, reading) in work.readings {
                    self.merge_one(*shard, hinted_for, reading, &mut effect);
                }
            }
        }
        self.finish_batch(&mut effect)?;
        self.recent.trim();
        let closed_days = std::mem::take(&mut effect.closed_days);
        self.submit(effect, work.outcome).await;
        if !closed_days.is_empty() {
            self.close_days(&closed_days).await;
        }
        Ok(())
    }

    /// Stores the aggregates of the local days in-order readings just closed, computed from
    /// this node's store once this actor's writes (the days' last readings among them) are
    /// applied. The batch's ack does not wait for it; a failure only leaves a day to be
    /// computed from readings at query time.
    async fn close_days(&mut self, days: &[i64]) {
        let Some(tariff) = self.ctx.daily_tariff() else {
            return;
        };
        self.cursor.wait_applied().await;
        let mut rows = Vec::with_capacity(days.len());
        for &day in days {
            match crate::daily::day_row(&self.ctx.store, tariff, &self.info.meter_id, day) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    let meter = &self.info.meter_id;
                    tracing::warn!(meter, day, error = %e, "daily aggregate not stored");
                }
            }
        }
        if rows.is_empty() {
            return;
        }
        let stored = rows.len() as u64;
        let request = WriteRequest {
            rows,
            cursor: Some((self.cursor.clone(), self.cursor.next_seq())),
            completion: None,
        };
        if self.ctx.writer.submit(request).await.is_ok() {
            metrics::counter!("gridmesh_daily_aggregates_stored_total").increment(stored);
        }
    }

    /// Runs the anomaly rules over the intervals this client batch closed, loading the
    /// detector first when this incarnation has none yet.
    async fn judge_closed(
        &mut self,
        effect: &BatchEffect,
    ) -> Result<Vec<AlertEvent>, ActorProcessingErr> {
        let Some(rules) = self.anomaly_rules else {
            return Ok(Vec::new());
        };
        let Some(first) = effect.finalized.first() else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        if self.anomaly.is_none() {
            // The history it loads must hold this incarnation's and the last one's writes.
            self.cursor.wait_applied().await;
            let (live, caught_up) = LiveAnomaly::load(
                &self.ctx.store,
                &self.info.meter_id,
                rules,
                first.start_ts_ms,
            )
            .map_err(|e| format!("meter {}: {e}", self.info.meter_id))?;
            self.anomaly = Some(live);
            events = caught_up;
        }
        if let Some(live) = self.anomaly.as_mut() {
            events.extend(live.observe_closed(&effect.finalized));
        }
        Ok(events)
    }

    /// Merges a copy of a reading another node accepted; keeps a hint per `hinted_for`.
    fn merge_one(
        &mut self,
        shard: u32,
        hinted_for: &[String],
        reading: Reading,
        effect: &mut BatchEffect,
    ) {
        let encoded = encode_reading(&reading);
        let ts = reading.ts_ms;
        // Above the newest timestamp nothing is stored (every write of this meter on this node
        // passes through this actor, state and readings in one atomic batch).
        let newer = self.state.last_ts_ms == 0 || ts > self.state.last_ts_ms;
        let existing = if newer {
            None
        } else {
            Overlay {
                store: &self.ctx.store,
                meter: &self.info.meter_id,
                pending: &effect.pending,
                rows: &effect.rows,
                recent: &self.recent,
            }
            .at(ts)
        };
        effect.outcome.accepted += 1;
        for node in hinted_for {
            let key = keys::hint_key(node, shard, &self.info.meter_id, ts);
            effect.rows.push(Row::put(Space::Hints, key, Vec::new()));
        }
        match merge_copy(existing.as_deref(), &encoded, reading.version) {
            Merge::Insert => {
                self.state.readings_accepted += 1;
                self.state.out_of_order += u64::from(!newer);
                self.apply(reading, encoded, false, effect);
            }
            Merge::Replace { replaced } => {
                effect.outcome.corrections += 1;
                self.state.corrections += 1;
                self.audit(ts, replaced, effect);
                self.apply(reading, encoded, true, effect);
            }
            Merge::Same | Merge::KeepStored => effect.outcome.duplicates += 1,
        }
    }

    fn audit(&self, ts_ms: i64, replaced: Vec<u8>, effect: &mut BatchEffect) {
        let audit = CorrectionAudit {
            applied_at_ms: now_ms(),
            replaced_reading: replaced,
        };
        let key = keys::audit_key(&self.info.meter_id, ts_ms, audit.applied_at_ms);
        effect
            .rows
            .push(Row::put(Space::Audit, key, audit.encode_to_vec()));
    }

    /// Decides one client reading; returns whether it was accepted.
    fn decide_one(
        &mut self,
        index: u32,
        reading: Reading,
        effect: &mut BatchEffect,
    ) -> Result<bool, ActorProcessingErr> {
        let encoded = encode_reading(&reading);
        let decision = {
            let mut history = Overlay {
                store: &self.ctx.store,
                meter: &self.info.meter_id,
                pending: &effect.pending,
                rows: &effect.rows,
                recent: &self.recent,
            };
            decide(&self.state, &self.rules, &reading, &encoded, &mut history)
        };
        let outcome = &mut effect.outcome;
        match decision {
            Decision::Insert { out_of_order } => {
                outcome.accepted += 1;
                self.state.readings_accepted += 1;
                self.state.out_of_order += u64::from(out_of_order);
                self.apply(reading, encoded, false, effect);
            }
            Decision::Duplicate => {
                outcome.accepted += 1;
                outcome.duplicates += 1;
                self.state.duplicates += 1;
            }
            Decision::Correction { replaced } => {
                outcome.accepted += 1;
                outcome.corrections += 1;
                self.state.corrections += 1;
                self.audit(reading.ts_ms, replaced, effect);
                self.apply(reading, encoded, true, effect);
            }
            Decision::Reject((reason, message)) => {
                self.state.readings_rejected += 1;
                outcome.rejected.push(Rejection {
                    index,
                    reason: reason as i32,
                    message,
                });
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores an accepted reading and updates the rolling state and accumulators.
    fn apply(
        &mut self,
        reading: Reading,
        encoded: Vec<u8>,
        correction: bool,
        effect: &mut BatchEffect,
    ) {
        let ts = reading.ts_ms;
        let bucket = Bucket::Min15.start_of(ts);
        self.recent.stored(ts, &encoded);
        // Two versions of one timestamp in a batch: the later replaces the earlier's row (rows of
        // one atomic batch share a sequence number, so a key must not be sent twice).
        let row = match effect.pending.get(&ts) {
            Some((_, row)) => {
                effect.rows[*row].value = Some(encoded);
                *row
            }
            None => {
                let key = keys::reading_key(&self.info.meter_id, ts);
                effect.rows.push(Row::put(Space::Readings, key, encoded));
                effect.rows.len() - 1
            }
        };

        let open_start = self.state.open_interval.as_ref().map(|a| a.start_ts_ms);
        if ts > self.state.last_ts_ms {
            match &mut self.state.open_interval {
                Some(open) if open.start_ts_ms == bucket => buckets::accumulate(open, &reading),
                _ => {
                    // A newer bucket opens. The previous one is final now: if this batch
                    // changed it, its contribution must be written; if not, the batch that last
                    // changed it already wrote it.
                    if let Some(previous) = self.state.open_interval.take() {
                        if let Some(tariff) = self.ctx.daily_tariff() {
                            let day = tariff.day_of_interval(previous.start_ts_ms);
                            if tariff.day_of_interval(bucket) > day {
                                effect.closed_days.push(day);
                            }
                        }
                        effect.finalized.push(previous);
                        if effect.open_dirty {
                            effect.dirty_buckets.insert(previous.start_ts_ms);
                        } else if effect.open_touched {
                            effect.closed.insert(previous.start_ts_ms, previous);
                        }
                    }
                    effect.open_dirty = false;
                    let mut open = buckets::empty_accumulator(bucket);
                    buckets::accumulate(&mut open, &reading);
                    self.state.open_interval = Some(open);
                }
            }
            effect.open_touched = true;
            self.state.last_ts_ms = ts;
            self.track_registers(&reading);
        } else if open_start == Some(bucket) {
            effect.open_touched = true;
            if correction {
                effect.open_dirty = true;
            } else if let Some(open) = &mut self.state.open_interval {
                buckets::accumulate(open, &reading);
            }
            if ts == self.state.last_ts_ms {
                self.track_registers(&reading);
            }
        } else {
            effect.dirty_buckets.insert(bucket);
            if let (Some(tariff), Some(open)) = (self.ctx.daily_tariff(), open_start) {
                let day = tariff.day_of_interval(bucket);
                if day < tariff.day_of_interval(open) {
                    effect.stale_days.insert(day);
                }
            }
        }
        effect.pending.insert(ts, (reading, row));
    }

    fn track_registers(&mut self, reading: &Reading) {
        if reading.energy_import_register_wh.is_some() {
            self.state.last_import_register_wh = reading.energy_import_register_wh;
        }
        if reading.energy_export_register_wh.is_some() {
            self.state.last_export_register_wh = reading.energy_export_register_wh;
        }
    }

    /// Recomputes changed buckets and adds state, feeder and registry rows.
    fn finish_batch(&mut self, effect: &mut BatchEffect) -> Result<(), ActorProcessingErr> {
        if effect.open_dirty
            && let Some(open) = &self.state.open_interval
        {
            self.state.open_interval =
                Some(self.recompute(open.start_ts_ms, &effect.pending, &BTreeSet::new())?);
        }
        // Closed in this batch, then recomputed (a late reading may have touched a bucket
        // after it closed), then the open one: later entries replace earlier ones.
        let mut changed = std::mem::take(&mut effect.closed);
        for start in std::mem::take(&mut effect.dirty_buckets) {
            changed.insert(
                start,
                self.recompute(start, &effect.pending, &BTreeSet::new())?,
            );
        }
        if effect.open_touched
            && let Some(open) = self.state.open_interval
        {
            changed.insert(open.start_ts_ms, open);
        }
        for bucket in &mut effect.finalized {
            if let Some(recomputed) = changed.get(&bucket.start_ts_ms) {
                *bucket = *recomputed;
            }
        }
        let changed: Vec<BucketAccumulator> = changed.into_values().collect();
        self.contribute(&changed, effect);
        for day in std::mem::take(&mut effect.stale_days) {
            effect
                .rows
                .push(crate::daily::stale(&self.info.meter_id, day));
        }

        if self.register {
            let key = keys::meter_info_key(&self.info.meter_id);
            effect
                .rows
                .push(Row::put(Space::Registry, key, self.info.encode_to_vec()));
            self.register = false;
        }
        if !effect.rows.is_empty() || self.state_dirty {
            if self.checkpoint_due(effect) {
                let row = self.state_row();
                effect.rows.push(row);
            } else {
                self.state_dirty = true;
            }
        }
        Ok(())
    }

    /// Whether this batch writes the state row: once per `actors.state_checkpoint_interval`,
    /// and whenever [`MeterActorState::rebuild_state`] could not reproduce the state from the
    /// stored readings, which is when the newest reading lacks a register the state holds.
    fn checkpoint_due(&self, effect: &BatchEffect) -> bool {
        let interval = self.ctx.config.actors.state_checkpoint_interval;
        if self.checkpointed.elapsed() >= interval {
            return true;
        }
        effect
            .pending
            .get(&self.state.last_ts_ms)
            .is_some_and(|(newest, _)| {
                newest.energy_import_register_wh.is_none()
                    && self.state.last_import_register_wh.is_some()
                    || newest.energy_export_register_wh.is_none()
                        && self.state.last_export_register_wh.is_some()
            })
    }

    /// The state row, stamped with the store's run; marks the state saved.
    fn state_row(&mut self) -> Row {
        self.state.checkpoint_run = self.ctx.store.run();
        self.state_dirty = false;
        self.checkpointed = std::time::Instant::now();
        let key = self.info.meter_id.as_bytes().to_vec();
        Row::put(Space::Meters, key, self.state.encode_to_vec())
    }

    /// Rebuilds the state from the stored readings after an unclean stop: the newest
    /// timestamp, its registers (a register the newest reading lacks keeps the row's value:
    /// such a batch always writes the row), the open 15-minute accumulator and the count of
    /// stored readings. The other counters keep the row's values (what happened since it was
    /// written is lost).
    fn rebuild_state(&mut self) -> Result<(), ActorProcessingErr> {
        let store = &self.ctx.store;
        let meter = &self.info.meter_id;
        let newest = store.reading_before(meter, i64::MAX)?;
        self.state.readings_accepted = store.count_readings(meter)?;
        match newest {
            Some((ts, reading)) => {
                self.state.last_ts_ms = ts;
                if reading.energy_import_register_wh.is_some() {
                    self.state.last_import_register_wh = reading.energy_import_register_wh;
                }
                if reading.energy_export_register_wh.is_some() {
                    self.state.last_export_register_wh = reading.energy_export_register_wh;
                }
                let open = Bucket::Min15.start_of(ts);
                self.state.open_interval =
                    Some(self.recompute(open, &BTreeMap::new(), &BTreeSet::new())?);
            }
            None => {
                self.state.last_ts_ms = 0;
                self.state.last_import_register_wh = None;
                self.state.last_export_register_wh = None;
                self.state.open_interval = None;
            }
        }
        metrics::counter!("gridmesh_meter_state_rebuilds_total").increment(1);
        Ok(())
    }

    /// Rebuilds one 15-minute bucket from stored readings overlaid with this batch's, without
    /// the `deleted` ones.
    fn recompute(
        &self,
        start: i64,
        pending: &BTreeMap<i64, (Reading, usize)>,
        deleted: &BTreeSet<i64>,
    ) -> Result<BucketAccumulator, ActorProcessingErr> {
        // A reading stamped t belongs to the bucket holding t - 1: the range is (start, end].
        let end = start + Bucket::Min15.len_ms();
        let known = deleted
            .is_empty()
            .then(|| self.recent.between(start + 1, end + 1))
            .flatten();
        let stored = match known {
            Some(known) => known
                .into_iter()
                .map(|(ts, encoded)| {
                    crate::storage::decode_stored(&self.info.meter_id, ts, encoded).map(|r| (ts, r))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => self.ctx.store.readings_between(
                &self.info.meter_id,
                start + 1,
                end + 1,
                usize::MAX,
            )?,
        };
        let mut merged: BTreeMap<i64, Reading> = stored
            .into_iter()
            .filter(|(ts, _)| !deleted.contains(ts))
            .collect();
        for (ts, (reading, _)) in pending.range(start + 1..end + 1) {
            merged.insert(*ts, reading.clone());
        }
        let mut acc = buckets::empty_accumulator(start);
        merged
            .values()
            .for_each(|r| buckets::accumulate(&mut acc, r));
        Ok(acc)
    }

    /// Writes this meter's contribution to each changed feeder interval; the outcome carries
    /// the same contributions so the feeder's live view hears of them once they are durable.
    fn contribute(&self, changed: &[BucketAccumulator], effect: &mut BatchEffect) {
        if self.info.feeder_id.is_empty() {
            return;
        }
        for acc in changed {
            let contribution = FeederContribution {
                energy_import_wh: acc.energy_import_wh,
                energy_export_wh: acc.energy_export_wh,
                reading_count: acc.reading_count,
                head_meter: self.is_head_meter,
                reactive_power_var: if acc.reactive_count > 0 {
                    acc.reactive_sum_var / f64::from(acc.reactive_count)
                } else {
                    0.0
                },
            };
            let key =
                keys::feeder_load_key(&self.info.feeder_id, acc.start_ts_ms, &self.info.meter_id);
            effect.rows.push(Row::put(
                Space::FeederLoad,
                key,
                contribution.encode_to_vec(),
            ));
            effect.outcome.feeder_updates.push(FeederUpdate {
                feeder_id: self.info.feeder_id.clone(),
                interval_start_ms: acc.start_ts_ms,
                meter_id: self.info.meter_id.clone(),
                contribution,
            });
        }
    }

    /// Hands the rows to the writer; the outcome is sent once they are durable. Even a batch
    /// with nothing to write goes through the writer, so that an ack for a duplicate never
    /// overtakes the still-unsynced write of the original.
    async fn submit(&mut self, effect: BatchEffect, outcome_tx: mpsc::Sender<GroupEvent>) {
        let outcome = effect.outcome;
        let completion: Completion = Box::new(move |result| {
            if result.is_ok() {
                // Capacity is two events per group, so this never fails for a live receiver.
                let _ = outcome_tx.try_send(GroupEvent::Durable(outcome));
            }
        });
        let request = WriteRequest {
            rows: effect.rows,
            cursor: Some((self.cursor.clone(), self.cursor.next_seq())),
            completion: Some(completion),
        };
        if self.ctx.writer.submit(request).await.is_err() {
            tracing::warn!(meter = %self.info.meter_id, "writer stopped; batch not stored");
        }
    }

    /// Deletes stored readings and rebuilds what depended on them, in one atomic write.
    async fn forget(
        &mut self,
        ts_ms: Vec<i64>,
        outcome: mpsc::Sender<GroupEvent>,
    ) -> Result<(), ActorProcessingErr> {
        self.cursor.wait_applied().await;
        let meter = self.info.meter_id.clone();
        let mut effect = BatchEffect {
            outcome: GroupOutcome::default(),
            rows: Vec::new(),
            pending: BTreeMap::new(),
            dirty_buckets: BTreeSet::new(),
            closed: BTreeMap::new(),
            finalized: Vec::new(),
            open_dirty: false,
            open_touched: false,
            closed_days: Vec::new(),
            stale_days: BTreeSet::new(),
        };
        let mut deleted = BTreeSet::new();
        for ts in ts_ms {
            if self.ctx.store.reading_at(&meter, ts)?.is_some() {
                effect
                    .rows
                    .push(Row::delete(Space::Readings, keys::reading_key(&meter, ts)));
                deleted.insert(ts);
            }
        }
        let touched: BTreeSet<i64> = deleted.iter().map(|t| Bucket::Min15.start_of(*t)).collect();
        let mut changed = Vec::new();
        for start in &touched {
            changed.push(self.recompute(*start, &BTreeMap::new(), &deleted)?);
        }
        // The newest remaining reading carries the state on.
        if deleted.contains(&self.state.last_ts_ms) {
            let mut newest = None;
            let mut before = self.state.last_ts_ms;
            while let Some((ts, reading)) = self.ctx.store.reading_before(&meter, before)? {
                if !deleted.contains(&ts) {
                    newest = Some((ts, reading));
                    break;
                }
                before = ts;
            }
            self.state.last_import_register_wh = None;
            self.state.last_export_register_wh = None;
            match newest {
                Some((ts, reading)) => {
                    self.state.last_ts_ms = ts;
                    self.track_registers(&reading);
                    let bucket = Bucket::Min15.start_of(ts);
                    self.state.open_interval =
                        Some(self.recompute(bucket, &BTreeMap::new(), &deleted)?);
                }
                None => {
                    self.state.last_ts_ms = 0;
                    self.state.open_interval = None;
                }
            }
        } else if let Some(open) = self.state.open_interval
            && touched.contains(&open.start_ts_ms)
        {
            self.state.open_interval =
                Some(self.recompute(open.start_ts_ms, &BTreeMap::new(), &deleted)?);
        }
        self.contribute(&changed, &mut effect);
        if let Some(tariff) = self.ctx.daily_tariff() {
            let days: BTreeSet<i64> = deleted.iter().map(|t| tariff.day_of_reading(*t)).collect();
            for day in days {
                effect.rows.push(crate::daily::stale(&meter, day));
            }
        }
        let row = self.state_row();
        effect.rows.push(row);
        // The readings held in memory may include deleted ones: start over above the newest.
        self.recent = Recent::above(self.state.last_ts_ms);
        effect.outcome.accepted = deleted.len() as u32;
        self.submit(effect, outcome).await;
        Ok(())
    }

    async fn status(
        &mut self,
        was_active: bool,
        reply: RpcReplyPort<Option<MeterStatus>>,
    ) -> Result<(), ActorProcessingErr> {
        self.cursor.wait_applied().await;
        let last_reading = match self.state.last_ts_ms {
            0 => None,
            ts => self
                .ctx
                .store
                .readings_between(&self.info.meter_id, ts, ts + 1, 1)?
                .pop()
                .map(|(_, r)| r),
        };
        let s = &self.state;
        let activation = if was_active {
            ActivationState::Active
        } else {
            ActivationState::Passivated
        };
        let _ = reply.send(Some(MeterStatus {
            meter_id: self.info.meter_id.clone(),
            activation: activation as i32,
            last_reading,
            readings_accepted: s.readings_accepted,
            readings_rejected: s.readings_rejected,
            duplicates: s.duplicates,
            corrections: s.corrections,
            out_of_order: s.out_of_order,
            activations: s.activations,
        }));
        Ok(())
    }

    async fn passivate(&mut self, myself: ActorRef<MeterMsg>) -> Result<(), ActorProcessingErr> {
        let mut rows = Vec::new();
        if self.state_dirty {
            // Everything since the last checkpoint, and the activation count even when the
            // meter only answered queries.
            rows.push(self.state_row());
        }
        if let Some(row) = self
            .anomaly
            .as_ref()
            .and_then(|a| a.row(&self.info.meter_id))
        {
            rows.push(row);
        }
        if !rows.is_empty() {
            let request = WriteRequest {
                rows,
                cursor: Some((self.cursor.clone(), self.cursor.next_seq())),
                completion: None,
            };
            let _ = self.ctx.writer.submit(request).await;
        }
        myself.stop(Some("passivated".to_owned()));
        Ok(())
    }
}

/// The meter's history as [`decide`] sees it: the store plus this batch's pending readings,
/// with the newest stored readings answered from memory when [`Recent`] knows them.
struct Overlay<'a> {
    store: &'a Store,
    meter: &'a str,
    pending: &'a BTreeMap<i64, (Reading, usize)>,
    rows: &'a [Row],
    recent: &'a Recent,
}

impl Overlay<'_> {
    fn decoded(&self, known: Option<(i64, &[u8])>) -> Option<(i64, Reading)> {
        let (ts, encoded) = known?;
        crate::storage::decode_stored(self.meter, ts, encoded)
            .ok()
            .map(|r| (ts, r))
    }
}

impl History for Overlay<'_> {
    fn at(&mut self, ts_ms: i64) -> Option<Vec<u8>> {
        if let Some((_, row)) = self.pending.get(&ts_ms) {
            return self.rows.get(*row).and_then(|r| r.value.clone());
        }
        if let Some(known) = self.recent.at(ts_ms) {
            return known.map(<[u8]>::to_vec);
        }
        self.store.reading_at(self.meter, ts_ms).ok().flatten()
    }

    fn before(&mut self, ts_ms: i64) -> Option<Neighbour> {
        let pending = self
            .pending
            .range(..ts_ms)
            .next_back()
            .map(|(t, (r, _))| (*t, r.clone()));
        let stored = match self.recent.before(ts_ms) {
            Some(known) => self.decoded(known),
            None => self.store.reading_before(self.meter, ts_ms).ok().flatten(),
        };
        let best = match (pending, stored) {
            (Some(p), Some(s)) => Some(if p.0 >= s.0 { p } else { s }),
            (p, s) => p.or(s),
        };
        best.map(|(ts_ms, reading)| Neighbour { ts_ms, reading })
    }

    fn after(&mut self, ts_ms: i64) -> Option<Neighbour> {
        let pending = self
            .pending
            .range(ts_ms + 1..)
            .next()
            .map(|(t, (r, _))| (*t, r.clone()));
        let stored = match self.recent.after(ts_ms) {
            Some(known) => self.decoded(known),
            None => self.store.reading_after(self.meter, ts_ms).ok().flatten(),
        };
        let best = match (pending, stored) {
            (Some(p), Some(s)) => Some(if p.0 <= s.0 { p } else { s }),
            (p, s) => p.or(s),
        };
        best.map(|(ts_ms, reading)| Neighbour { ts_ms, reading })
    }
}

/// Keeps every event signal of accepted readings and, of the plain readings, the newest.
fn push_signals(
    out: &mut Vec<OutageSignal>,
    newest: &mut Option<i64>,
    signals: Option<Vec<OutageSignal>>,
) {
    for s in signals.into_iter().flatten() {
        if s.signal != SignalKind::Reading {
            out.push(s);
            continue;
        }
        if newest.is_some_and(|t| t >= s.ts_ms) {
            continue;
        }
        out.retain(|o| o.signal != SignalKind::Reading);
        *newest = Some(s.ts_ms);
        out.push(s);
    }
}

/// Rejects every reading of `work` with one reason (e.g. unknown meter) without an actor.
pub fn reject_all(work: MeterWork, reason: RejectReason, message: &str) {
    let rejected = work
        .readings
        .iter()
        .map(|(index, _)| Rejection {
            index: *index,
            reason: reason as i32,
            message: message.to_owned(),
        })
        .collect();
    let _ = work.outcome.try_send(GroupEvent::Durable(GroupOutcome {
        group: work.group,
        rejected,
        ..GroupOutcome::default()
    }));
}
