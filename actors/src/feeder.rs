//! `FeederSupervisor` and `FeederActor`: the live load of each feeder.
//!
//! The durable feeder load is the set of per-meter contributions the meters write under
//! (feeder, interval, meter); queries sum those rows, so stored feeder load is exact whatever
//! happens to these actors. A `FeederActor` keeps the live view: the last
//! [`LIVE_INTERVALS`] 15-minute intervals with each meter's contribution (replaced, never
//! added, so a revised contribution cannot count twice), the customer total and head meter
//! separately, and the highest interval load seen since activation. Grid rules (loading,
//! reverse flow, energy balance) build on this view.
//!
//! Supervision: the node supervisor supervises the `FeederSupervisor`; it supervises one
//! `FeederActor` per active feeder, activated on the first contribution or query. Restart
//! policy: transient, like meters: a failed feeder actor is re-activated on demand (rebuilding
//! its live view from stored contributions), and more than `actors.max_restarts` failures
//! within `actors.restart_window` escalate to the node supervisor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use gridmesh_proto::internal::FeederContribution;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::buckets::MIN15_MS;
use crate::context::{NodeContext, now_ms};
use crate::grid::{FeederForecast, FeederRules, FeederSetup, IntervalTotals, OutageSignal};
use crate::mailbox::{Mailbox, MailboxKind};
use crate::meter::FeederUpdate;
use crate::restart::{RestartBudget, RestartDecision};

/// Intervals kept in the live view (two hours).
pub const LIVE_INTERVALS: usize = 8;

/// Messages of the feeder supervisor. Local only.
#[derive(RactorMessage)]
pub enum FeederSupervisorMsg {
    /// Durable meter contributions to intervals of one feeder (each replaces that meter's
    /// previous contribution to that interval).
    Updates {
        /// Feeder.
        feeder_id: String,
        /// The contributions.
        updates: Vec<FeederUpdate>,
        /// Supply signals of the feeder's meters (readings, last gasps, restores).
        signals: Vec<OutageSignal>,
        /// One of the node's feeder-update slots, held until the feeder actor has taken the
        /// updates in (see [`crate::context::NodeContext::send_feeder_updates`]).
        slot: FeederSlot,
    },
    /// The latest day-ahead forecast of a feeder (activates it).
    Forecast {
        /// Feeder.
        feeder_id: String,
        /// Reply.
        reply: RpcReplyPort<Option<FeederForecast>>,
    },
    /// The live view of a feeder (activates it).
    Live {
        /// Feeder.
        feeder_id: String,
        /// Reply.
        reply: RpcReplyPort<FeederLive>,
    },
    /// Number of active feeder actors.
    ActiveCount(RpcReplyPort<usize>),
    /// The registry entries of these feeders (or of their meters) changed: running feeder
    /// actors among them rebuild their rules (inactive ones read the registry when they
    /// start anyway).
    Reconfigure(Vec<String>),
}

/// Messages of one feeder actor. Local only.
#[derive(RactorMessage)]
pub enum FeederMsg {
    /// See [`FeederSupervisorMsg::Updates`].
    Updates(Vec<FeederUpdate>, Vec<OutageSignal>, FeederSlot),
    /// See [`FeederSupervisorMsg::Forecast`].
    Forecast(RpcReplyPort<Option<FeederForecast>>),
    /// See [`FeederSupervisorMsg::Live`].
    Live(RpcReplyPort<FeederLive>),
    /// See [`FeederSupervisorMsg::Reconfigure`].
    Reconfigure,
}

/// A slot of the node's bounded queue of feeder updates; dropping it frees the slot.
pub type FeederSlot = tokio::sync::OwnedSemaphorePermit;

/// Live totals of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveInterval {
    /// Interval start, ms.
    pub start_ts_ms: i64,
    /// Customer meters contributing.
    pub meters: u32,
    /// Customer import minus export, Wh.
    pub customer_net_wh: f64,
    /// Head meter import, Wh.
    pub head_import_wh: f64,
}

impl LiveInterval {
    /// Mean net customer load over the interval, W.
    pub fn mean_load_w(&self) -> f64 {
        self.customer_net_wh * 3_600_000.0 / MIN15_MS as f64
    }
}

/// The live view of a feeder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeederLive {
    /// Recent intervals, oldest first.
    pub intervals: Vec<LiveInterval>,
    /// Highest mean interval load seen since activation, W, and its interval start.
    pub peak: Option<(i64, f64)>,
}

/// The feeder supervisor.
#[derive(Debug)]
pub struct FeederSupervisor;

/// State of the feeder supervisor.
pub struct FeederSupervisorState {
    ctx: Arc<NodeContext>,
    active: HashMap<String, (ActorRef<FeederMsg>, Mailbox)>,
    by_actor: HashMap<ActorId, String>,
    restarts: RestartBudget,
}

impl Actor for FeederSupervisor {
    type Msg = FeederSupervisorMsg;
    type State = FeederSupervisorState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        ctx: Arc<NodeContext>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let actors = &ctx.config.actors;
        Ok(FeederSupervisorState {
            restarts: RestartBudget::new(actors.max_restarts, actors.restart_window),
            ctx,
            active: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FeederSupervisorMsg::Updates {
                feeder_id,
                updates,
                signals,
                slot,
            } => {
                s.ctx.feeder_mailbox().received();
                let msg = FeederMsg::Updates(updates, signals, slot);
                s.send(&myself, &feeder_id, msg).await?;
            }
            FeederSupervisorMsg::Forecast { feeder_id, reply } => {
                s.send(&myself, &feeder_id, FeederMsg::Forecast(reply))
                    .await?;
            }
            FeederSupervisorMsg::Live { feeder_id, reply } => {
                s.send(&myself, &feeder_id, FeederMsg::Live(reply)).await?;
            }
            FeederSupervisorMsg::ActiveCount(reply) => {
                let _ = reply.send(s.active.len());
            }
            FeederSupervisorMsg::Reconfigure(feeders) => {
                for feeder_id in feeders {
                    if s.active.contains_key(&feeder_id) {
                        s.send(&myself, &feeder_id, FeederMsg::Reconfigure).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_default())
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            _ => return Ok(()),
        };
        let Some(feeder_id) = s.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if let Some((_, mailbox)) = s.active.remove(&feeder_id) {
            mailbox.close();
        }
        tracing::warn!(feeder = %feeder_id, reason, "feeder actor stopped unexpectedly");
        metrics::counter!("gridmesh_actor_failures_total", "kind" => "feeder").increment(1);
        crate::context::Counters::add(&s.ctx.counters.actor_failures, 1);
        match s.restarts.record_failure(Instant::now()) {
            RestartDecision::Restart { .. } => Ok(()),
            RestartDecision::Escalate => {
                Err("feeder actor failures exceeded the restart budget".into())
            }
        }
    }
}

impl FeederSupervisorState {
    /// Sends `msg` to the feeder's actor, activating it first when needed. A failed send
    /// means the actor just died; its supervision event follows and the message is lost with
    /// it (a dropped reply port tells a waiting caller).
    async fn send(
        &mut self,
        myself: &ActorRef<FeederSupervisorMsg>,
        feeder_id: &str,
        msg: FeederMsg,
    ) -> Result<(), ActorProcessingErr> {
        if !self.active.contains_key(feeder_id) {
            let mailbox = self.ctx.mailboxes.open(MailboxKind::Feeder);
            let args = (feeder_id.to_owned(), self.ctx.clone(), mailbox.clone());
            let (actor, _) =
                Actor::spawn_linked(None, FeederActor, args, myself.get_cell()).await?;
            self.by_actor.insert(actor.get_id(), feeder_id.to_owned());
            self.active.insert(feeder_id.to_owned(), (actor, mailbox));
        }
        if let Some((actor, mailbox)) = self.active.get(feeder_id) {
            mailbox.sent();
            if actor.cast(msg).is_err() {
                mailbox.received();
            }
        }
        Ok(())
    }
}

/// One feeder's live view.
#[derive(Debug)]
pub struct FeederActor;

/// State of a feeder actor.
pub struct FeederState {
    feeder_id: String,
    intervals: BTreeMap<i64, HashMap<String, FeederContribution>>,
    peak: Option<(i64, f64)>,
    /// Grid rules (loading, outages, balance, forecast), when analytics are on.
    rules: Option<FeederRules>,
    ctx: Option<Arc<NodeContext>>,
    mailbox: Option<Mailbox>,
}

impl Actor for FeederActor {
    type Msg = FeederMsg;
    type State = FeederState;
    type Arguments = (String, Arc<NodeContext>, Mailbox);

    async fn pre_start(
        &self,
        _: ActorRef<FeederMsg>,
        (feeder_id, ctx, mailbox): Self::Arguments,
    ) -> Result<FeederState, ActorProcessingErr> {
        // Rebuild the live window from the stored contributions of the last intervals.
        let from = now_ms() - (LIVE_INTERVALS as i64 + 1) * MIN15_MS;
        let rules = rules_from_registry(&ctx, &feeder_id)?;
        let mut state = FeederState {
            feeder_id,
            intervals: BTreeMap::new(),
            peak: None,
            rules,
            ctx: Some(ctx.clone()),
            mailbox: Some(mailbox),
        };
        state.record_all(
            ctx.store
                .feeder_contributions(&state.feeder_id, from, i64::MAX)?,
        );
        metrics::gauge!("gridmesh_active_actors", "kind" => "feeder").increment(1.0);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<FeederMsg>,
        _: &mut FeederState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("gridmesh_active_actors", "kind" => "feeder").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<FeederMsg>,
        msg: FeederMsg,
        s: &mut FeederState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(mailbox) = &s.mailbox {
            mailbox.received();
        }
        match msg {
            FeederMsg::Updates(updates, signals, _slot) => {
                s.record_all(
                    updates
                        .into_iter()
                        .map(|u| (u.interval_start_ms, u.meter_id, u.contribution)),
                );
                s.run_rules(&signals);
            }
            FeederMsg::Forecast(reply) => {
                let _ = reply.send(s.rules.as_ref().and_then(|r| r.forecast().cloned()));
            }
            FeederMsg::Live(reply) => {
                let _ = reply.send(s.live());
            }
            FeederMsg::Reconfigure => {
                if let Some(ctx) = s.ctx.clone() {
                    let mut rules = rules_from_registry(&ctx, &s.feeder_id)?;
                    if let (Some(new), Some(old)) = (rules.as_mut(), s.rules.take()) {
                        new.inherit(old);
                    }
                    s.rules = rules;
                    tracing::info!(feeder = %s.feeder_id, "feeder rules rebuilt from the registry");
                }
            }
        }
        Ok(())
    }
}

/// The grid rules of a feeder from its registry entry and its meters' (none when analytics
/// are off or the feeder is not registered).
fn rules_from_registry(
    ctx: &NodeContext,
    feeder_id: &str,
) -> Result<Option<FeederRules>, ActorProcessingErr> {
    Ok(match ctx.store.feeder_info(feeder_id)? {
        Some(info) if ctx.config.analytics.enabled => {
            let meters = ctx
                .store
                .meters_of_feeder(feeder_id)?
                .into_iter()
                .filter(|(m, _)| *m != info.head_meter_id)
                .collect();
            FeederRules::new(
                &ctx.config.analytics,
                FeederSetup {
                    feeder_id: feeder_id.to_owned(),
                    rating_kva: info.rating_kva,
                    meters,
                    transformers: info
                        .transformers
                        .iter()
                        .map(|t| (t.transformer_id.clone(), t.rating_kva))
                        .collect(),
                },
            )
        }
        _ => None,
    })
}

impl FeederState {
    /// Feeds the rules the new signals, judges the intervals now due and raises what they
    /// found.
    fn run_rules(&mut self, signals: &[OutageSignal]) {
        let Some(rules) = self.rules.as_mut() else {
            return;
        };
        let mut events = rules.signals(signals);
        for start in rules.due() {
            let mut totals = IntervalTotals::default();
            let mut transformers: BTreeMap<String, IntervalTotals> = BTreeMap::new();
            let mut meters = Vec::new();
            for (meter, c) in self.intervals.get(&start).into_iter().flatten() {
                if c.head_meter {
                    totals.head_import_wh += c.energy_import_wh;
                    totals.head_export_wh += c.energy_export_wh;
                    continue;
                }
                let net_wh = c.energy_import_wh - c.energy_export_wh;
                totals.customer_net_wh += net_wh;
                totals.customer_reactive_var += c.reactive_power_var;
                if let Some(t) = rules.transformer_of(meter) {
                    let t = transformers.entry(t.to_owned()).or_default();
                    t.customer_net_wh += net_wh;
                    t.customer_reactive_var += c.reactive_power_var;
                }
                meters.push(meter.clone());
            }
            events.extend(rules.judge(start, totals, &transformers, &meters));
        }
        if events.is_empty() {
            return;
        }
        if let Some(manager) = self.ctx.as_ref().and_then(|c| c.alert_manager()) {
            let _ = manager.cast(crate::alerts::AlertMsg::Events {
                feeder_id: self.feeder_id.clone(),
                events,
            });
        }
    }

    /// Records one meter's contribution to a live interval; returns whether it was kept
    /// (intervals older than the live window are not).
    fn record(&mut self, start: i64, meter_id: String, contribution: FeederContribution) -> bool {
        let oldest_kept = self
            .intervals
            .keys()
            .next_back()
            .map_or(i64::MIN, |newest| {
                newest - (LIVE_INTERVALS as i64 - 1) * MIN15_MS
            });
        if start < oldest_kept {
            return false; // too old for the live view; the stored row is what queries use
        }
        self.intervals
            .entry(start)
            .or_default()
            .insert(meter_id, contribution);
        while self.intervals.len() > LIVE_INTERVALS {
            self.intervals.pop_first();
        }
        true
    }

    /// Records contributions, then raises the live peak to the load of each interval they
    /// changed, summed once per interval (summing after each contribution would cost the
    /// interval's meter count per meter).
    fn record_all(
        &mut self,
        contributions: impl IntoIterator<Item = (i64, String, FeederContribution)>,
    ) {
        let mut touched = Vec::new();
        for (start, meter, contribution) in contributions {
            if self.record(start, meter, contribution) && touched.last() != Some(&start) {
                touched.push(start);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for start in touched {
            if let Some(total) = self.total(start) {
                let load = total.mean_load_w();
                if self.peak.is_none_or(|(_, peak)| load > peak) {
                    self.peak = Some((start, load));
                }
            }
        }
    }

    fn total(&self, start: i64) -> Option<LiveInterval> {
        let meters = self.intervals.get(&start)?;
        let mut live = LiveInterval {
            start_ts_ms: start,
            ..LiveInterval::default()
        };
        for c in meters.values() {
            if c.head_meter {
                live.head_import_wh += c.energy_import_wh;
            } else {
                live.meters += 1;
                live.customer_net_wh += c.energy_import_wh - c.energy_export_wh;
            }
        }
        Some(live)
    }

    fn live(&self) -> FeederLive {
        FeederLive {
            intervals: self
                .intervals
                .keys()
                .filter_map(|s| self.total(*s))
                .collect(),
            peak: self.peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(import_wh: f64, head: bool) -> FeederContribution {
        FeederContribution {
            energy_import_wh: import_wh,
            energy_export_wh: 0.0,
            reading_count: 1,
            head_meter: head,
            reactive_power_var: 0.0,
        }
    }

    #[test]
    fn revised_contributions_replace_instead_of_adding() {
        let mut state = FeederState {
            feeder_id: "f".into(),
            intervals: BTreeMap::new(),
            peak: None,
            rules: None,
            ctx: None,
            mailbox: None,
        };
        state.record_all([(0, "m1".into(), contribution(100.0, false))]);
        state.record_all([
            (0, "m1".into(), contribution(150.0, false)),
            (0, "m2".into(), contribution(50.0, false)),
            (0, "head".into(), contribution(210.0, true)),
        ]);
        let live = state.live();
        assert_eq!(live.intervals.len(), 1);
        assert_eq!(live.intervals[0].customer_net_wh, 200.0);
        assert_eq!(live.intervals[0].meters, 2);
        assert_eq!(live.intervals[0].head_import_wh, 210.0);
        assert_eq!(
            live.peak.map(|p| p.1),
            Some(800.0),
            "200 Wh in 15 min is 800 W"
        );
    }

    #[test]
    fn live_window_is_bounded() {
        let mut state = FeederState {
            feeder_id: "f".into(),
            intervals: BTreeMap::new(),
            peak: None,
            rules: None,
            ctx: None,
            mailbox: None,
        };
        for i in 0..100 {
            state.record_all([(i * MIN15_MS, "m".into(), contribution(1.0, false))]);
        }
        assert_eq!(state.intervals.len(), LIVE_INTERVALS);
        // A late contribution far behind the window does not grow it again.
        state.record_all([(0, "m".into(), contribution(1.0, false))]);
        assert_eq!(state.intervals.len(), LIVE_INTERVALS);
    }
}
