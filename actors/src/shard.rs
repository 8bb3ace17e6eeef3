//! `ShardSupervisor`: owns the meters of one shard and supervises their actors.
//!
//! Meters hash into a fixed number of shards ([`crate::placement`]); on a single node every
//! shard lives here, in a cluster a node runs only the shards it owns. The shard:
//!
//! - routes each meter's work to its actor, **activating** it on demand (registry lookup first:
//!   unknown meters are refused here, so garbage ids never spawn actors);
//! - keeps the shard's share of the node's active-meter budget, **passivating** the least
//!   recently used meter beyond it, and idle meters on a timer;
//! - buffers messages for a meter whose previous actor is still stopping, and delivers them to
//!   the next incarnation once the old one has terminated: two actors of one meter never run at
//!   the same time on a node;
//! - applies the meters' restart policy (see [`crate::meter`]): failed meters are re-activated
//!   on demand; more than `actors.max_restarts` meter failures within `actors.restart_window`
//!   escalate (the shard fails, and the node supervisor restarts it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_proto::v1::{MeterInfo, MeterStatus, RejectReason};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::RactorMessage;

use crate::context::NodeContext;
use crate::mailbox::{Mailbox, MailboxKind};
use crate::meter::{MeterActor, MeterArgs, MeterMsg, MeterWork, reject_all};
use crate::restart::{RestartBudget, RestartDecision};
use crate::writer::WriteCursor;

/// Messages of a shard supervisor. Local only.
#[derive(RactorMessage)]
pub enum ShardMsg {
    /// Work for meters of this shard.
    Ingest(Vec<MeterWork>),
    /// Status of one meter (activates it). `None` when the meter is not registered.
    Status {
        /// The meter.
        meter_id: String,
        /// Reply.
        reply: RpcReplyPort<Option<MeterStatus>>,
    },
    /// The meter's registry entry changed: passivate it so the next activation reloads it.
    Refresh(String),
    /// Delete stored readings of one meter (see [`MeterMsg::Forget`]).
    Forget {
        /// The meter.
        meter_id: String,
        /// Timestamps to delete.
        ts_ms: Vec<i64>,
        /// Where the outcome goes.
        outcome: tokio::sync::mpsc::Sender<crate::meter::GroupEvent>,
    },
    /// Look for idle meters.
    Tick,
    /// Passivate every meter (each writes its state first), for the reason given as the
    /// passivation metric's label: `moved` when this node no longer owns the shard (the new
    /// owner activates them from its store), `shutdown` at graceful shutdown.
    PassivateAll(&'static str),
    /// Counters of this shard.
    Stats(RpcReplyPort<ShardStats>),
    /// The meters whose actor is resident (not passivating).
    ActiveMeters(RpcReplyPort<Vec<String>>),
    /// The actor of an active meter, if any (for tests and admin tools).
    Lookup {
        /// The meter.
        meter_id: String,
        /// Reply.
        reply: RpcReplyPort<Option<ActorCell>>,
    },
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Meter actors resident.
    pub active_meters: usize,
    /// Meters whose actor is stopping.
    pub passivating: usize,
    /// Meter failures inside the current restart window.
    pub recent_failures: usize,
}

/// Start-up arguments.
#[derive(Debug)]
pub struct ShardArgs {
    /// Shard index.
    pub shard: u32,
    /// Node context.
    pub ctx: Arc<NodeContext>,
    /// This shard supervisor replaces one that failed: its meters stopped without writing
    /// their state, so each rebuilds it from the stored readings on its first activation.
    pub recovering: bool,
}

/// The supervisor actor.
#[derive(Debug)]
pub struct ShardSupervisor;

struct ActiveMeter {
    actor: ActorRef<MeterMsg>,
    mailbox: Mailbox,
    lru_tick: u64,
    last_used: Instant,
}

/// A meter whose actor is stopping, with what arrived for it meanwhile.
struct Passivating {
    buffered: Vec<MeterMsg>,
    mailbox: Mailbox,
}

/// State of a shard supervisor.
pub struct ShardState {
    shard: u32,
    ctx: Arc<NodeContext>,
    budget: usize,
    idle_timeout: Duration,
    active: HashMap<String, ActiveMeter>,
    lru: BTreeMap<u64, String>,
    tick: u64,
    by_actor: HashMap<ActorId, String>,
    passivating: HashMap<String, Passivating>,
    cursors: HashMap<String, Arc<WriteCursor>>,
    /// Meters whose actor stopped without writing its state (it failed): the next
    /// incarnation rebuilds it from the stored readings.
    unclean: HashSet<String>,
    /// Set when this supervisor replaced a failed one: meters not activated since.
    recovering: Option<HashSet<String>>,
    restarts: RestartBudget,
}

impl Actor for ShardSupervisor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let actors = &args.ctx.config.actors;
        myself.send_interval(actors.passivation_interval, || ShardMsg::Tick);
        Ok(ShardState {
            shard: args.shard,
            budget: actors.meters_per_shard(),
            idle_timeout: actors.meter_idle_timeout,
            restarts: RestartBudget::new(actors.max_restarts, actors.restart_window),
            ctx: args.ctx,
            active: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            by_actor: HashMap::new(),
            passivating: HashMap::new(),
            cursors: HashMap::new(),
            unclean: HashSet::new(),
            recovering: args.recovering.then(HashSet::new),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        s: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Ingest(work) => {
                s.ctx.shard_mailbox(s.shard).received();
                s.ingest(&myself, work).await
            }
            ShardMsg::Status { meter_id, reply } => s.status(&myself, meter_id, reply).await,
            ShardMsg::Refresh(meter_id) => {
                s.passivate(&meter_id, "refresh");
                Ok(())
            }
            ShardMsg::Forget {
                meter_id,
                ts_ms,
                outcome,
            } => {
                if !s.active.contains_key(&meter_id) && !s.passivating.contains_key(&meter_id) {
                    // Unregistered: nothing of it can be stored; dropping `outcome` says so.
                    let Some(info) = s.ctx.store.meter_info(&meter_id)? else {
                        return Ok(());
                    };
                    s.activate(&myself, info, false).await?;
                }
                s.deliver(&meter_id, MeterMsg::Forget { ts_ms, outcome });
                Ok(())
            }
            ShardMsg::Tick => {
                s.passivate_idle();
                Ok(())
            }
            ShardMsg::PassivateAll(reason) => {
                let meters: Vec<String> = s.active.keys().cloned().collect();
                for meter_id in meters {
                    s.passivate(&meter_id, reason);
                }
                Ok(())
            }
            ShardMsg::Stats(reply) => {
                let _ = reply.send(s.stats());
                Ok(())
            }
            ShardMsg::ActiveMeters(reply) => {
                let _ = reply.send(s.active.keys().cloned().collect());
                Ok(())
            }
            ShardMsg::Lookup { meter_id, reply } => {
                let _ = reply.send(s.active.get(&meter_id).map(|m| m.actor.get_cell()));
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardMsg>,
        event: SupervisionEvent,
        s: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                s.meter_stopped(&myself, &cell, reason.as_deref().unwrap_or("stopped"))
                    .await
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                s.meter_stopped(&myself, &cell, &format!("failed: {error}"))
                    .await
            }
            _ => Ok(()),
        }
    }
}

impl ShardState {
    async fn ingest(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        work: Vec<MeterWork>,
    ) -> Result<(), ActorProcessingErr> {
        for item in work {
            let meter_id = item.meter_id.clone();
            if !self.active.contains_key(&meter_id) && !self.passivating.contains_key(&meter_id) {
                let Some((info, register)) = self.lookup_or_register(&meter_id)? else {
                    reject_all(item, RejectReason::UnknownMeter, "meter is not registered");
                    continue;
                };
                self.activate(myself, info, register).await?;
            }
            self.deliver(&meter_id, MeterMsg::Ingest(item));
        }
        Ok(())
    }

    async fn status(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        meter_id: String,
        reply: RpcReplyPort<Option<MeterStatus>>,
    ) -> Result<(), ActorProcessingErr> {
        let was_active = self.active.contains_key(&meter_id);
        if !was_active && !self.passivating.contains_key(&meter_id) {
            let Some(info) = self.ctx.store.meter_info(&meter_id)? else {
                let _ = reply.send(None);
                return Ok(());
            };
            self.activate(myself, info, false).await?;
        }
        // The meter answers the caller directly; a dropped port tells the caller it failed.
        self.deliver(&meter_id, MeterMsg::Status { was_active, reply });
        Ok(())
    }

    /// The registry entry, or a fresh one when auto-registration is on. `None`: refuse.
    fn lookup_or_register(
        &self,
        meter_id: &str,
    ) -> Result<Option<(MeterInfo, bool)>, ActorProcessingErr> {
        if let Some(info) = self.ctx.store.meter_info(meter_id)? {
            return Ok(Some((info, false)));
        }
        if !self.ctx.config.ingest.auto_register {
            return Ok(None);
        }
        let info = MeterInfo {
            meter_id: meter_id.to_owned(),
            ..MeterInfo::default()
        };
        Ok(Some((info, true)))
    }

    async fn activate(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        info: MeterInfo,
        register: bool,
    ) -> Result<(), ActorProcessingErr> {
        let meter_id = info.meter_id.clone();
        let cursor = self.cursors.entry(meter_id.clone()).or_default().clone();
        let mailbox = self.ctx.mailboxes.open(MailboxKind::Meter);
        let rebuild = self.unclean.remove(&meter_id)
            | self
                .recovering
                .as_mut()
                .is_some_and(|seen| seen.insert(meter_id.clone()));
        let args = MeterArgs {
            info,
            register,
            rebuild,
            cursor,
            ctx: self.ctx.clone(),
            mailbox: mailbox.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, MeterActor, args, myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), meter_id.clone());
        self.tick += 1;
        self.lru.insert(self.tick, meter_id.clone());
        self.active.insert(
            meter_id,
            ActiveMeter {
                actor,
                mailbox,
                lru_tick: self.tick,
                last_used: Instant::now(),
            },
        );
        while self.active.len() > self.budget {
            let Some((_, oldest)) = self.lru.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.passivate(&oldest, "budget");
        }
        Ok(())
    }

    fn deliver(&mut self, meter_id: &str, msg: MeterMsg) {
        if let Some(passivating) = self.passivating.get_mut(meter_id) {
            passivating.buffered.push(msg);
            return;
        }
        let Some(meter) = self.active.get_mut(meter_id) else {
            return; // dropping the message answers its batch with "retry"
        };
        self.lru.remove(&meter.lru_tick);
        self.tick += 1;
        meter.lru_tick = self.tick;
        meter.last_used = Instant::now();
        self.lru.insert(self.tick, meter_id.to_owned());
        // A failed send means the actor just died; its supervision event follows.
        meter.mailbox.sent();
        if meter.actor.cast(msg).is_err() {
            meter.mailbox.received();
        }
    }

    fn passivate(&mut self, meter_id: &str, reason: &'static str) {
        let Some(meter) = self.active.remove(meter_id) else {
            return;
        };
        self.lru.remove(&meter.lru_tick);
        meter.mailbox.sent();
        if meter.actor.cast(MeterMsg::Passivate).is_err() {
            meter.mailbox.received();
        }
        self.passivating.insert(
            meter_id.to_owned(),
            Passivating {
                buffered: Vec::new(),
                mailbox: meter.mailbox,
            },
        );
        metrics::counter!("gridmesh_meter_passivations_total", "reason" => reason).increment(1);
        crate::context::Counters::add(&self.ctx.counters.passivations, 1);
    }

    fn passivate_idle(&mut self) {
        let now = Instant::now();
        while let Some((_, meter_id)) = self.lru.first_key_value() {
            let idle = self
                .active
                .get(meter_id)
                .is_some_and(|m| now.duration_since(m.last_used) >= self.idle_timeout);
            if !idle {
                break;
            }
            let meter_id = meter_id.clone();
            self.passivate(&meter_id, "idle");
        }
        // Cursors of meters that are gone and fully written are no longer needed.
        let (active, passivating) = (&self.active, &self.passivating);
        self.cursors.retain(|id, c| {
            active.contains_key(id) || passivating.contains_key(id) || !c.is_caught_up()
        });
    }

    /// A meter actor stopped: expected (passivation) or not (failure).
    async fn meter_stopped(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        cell: &ActorCell,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(meter_id) = self.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if let Some(passivating) = self.passivating.remove(&meter_id) {
            passivating.mailbox.close();
            if !passivating.buffered.is_empty() {
                // Work arrived while it stopped: start the next incarnation and hand it over.
                let info = self.ctx.store.meter_info(&meter_id)?;
                match info {
                    Some(info) => {
                        self.activate(myself, info, false).await?;
                        for msg in passivating.buffered {
                            self.deliver(&meter_id, msg);
                        }
                    }
                    None => {
                        tracing::warn!(meter = %meter_id, "meter unregistered while passivating")
                    }
                }
            }
            return Ok(());
        }
        if let Some(meter) = self.active.remove(&meter_id) {
            meter.mailbox.close();
            self.lru.remove(&meter.lru_tick);
        }
        self.unclean.insert(meter_id.clone());
        let shard = self.shard;
        tracing::warn!(shard, meter = %meter_id, reason, "meter actor stopped unexpectedly");
        metrics::counter!("gridmesh_actor_failures_total", "kind" => "meter").increment(1);
        crate::context::Counters::add(&self.ctx.counters.actor_failures, 1);
        match self.restarts.record_failure(Instant::now()) {
            RestartDecision::Restart { .. } => Ok(()),
            RestartDecision::Escalate => Err(format!(
                "shard {}: meter failures exceeded {} within {:?}",
                self.shard,
                self.ctx.config.actors.max_restarts,
                self.ctx.config.actors.restart_window
            )
            .into()),
        }
    }

    fn stats(&self) -> ShardStats {
        ShardStats {
            active_meters: self.active.len(),
            passivating: self.passivating.len(),
            recent_failures: self.restarts.recent_failures(),
        }
    }
}
