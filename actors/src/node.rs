//! `NodeSupervisor`: the root of a node's supervision tree.
//!
//! ```text
//! NodeSupervisor (one_for_one; escalation = the process exits non-zero)
//! ├── ShardSupervisor × shards ── MeterActor × active meters
//! ├── FeederSupervisor ────────── FeederActor × active feeders
//! ├── SessionSupervisor ───────── SessionActor × sessions owned here (with an auth layer)
//! ├── AlertManagerActor            dedup, lifecycle, every node keeps every alert
//! ├── NotifierActor                webhook sinks: retry, circuit breaker, dead letters
//! ├── GatewayActor                 cluster-visible entry point   (cluster mode only)
//! ├── MembershipActor ── NodeServer (ractor_cluster)            (cluster mode only)
//! └── ReplicatorActor              hinted handoff, anti-entropy   (cluster mode only)
//! ```
//!
//! (The storage writer is a dedicated thread rather than an actor: fjall calls block. Its
//! failure is fatal and reported through [`crate::writer::WriterTask::failure`].)
//!
//! Restart policy: one_for_one. A shard or the feeder supervisor that fails is restarted alone,
//! with a fresh state and the backoff of [`RestartBudget`]; its meters and feeders are simply
//! re-activated from stored state on demand. Each child may fail `actors.max_restarts` times
//! within `actors.restart_window`; one more and the node supervisor fails itself, which the
//! binary turns into a non-zero exit. While a shard restarts, batches for its meters are
//! answered with RETRY for those readings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::alerts::AlertManagerActor;
use crate::cluster::Owner;
use crate::cluster::gateway::{GatewayActor, GatewayArgs};
use crate::cluster::runtime::MembershipActor;
use crate::context::NodeContext;
use crate::feeder::{FeederSupervisor, FeederSupervisorMsg};
use crate::notify::NotifierActor;
use crate::repair::ReplicatorActor;
use crate::restart::{RestartBudget, RestartDecision};
use crate::session::SessionSupervisor;
use crate::shard::{ShardArgs, ShardMsg, ShardStats, ShardSupervisor};

/// Messages of the node supervisor. Local only.
#[derive(RactorMessage)]
pub enum NodeMsg {
    /// Start (again) the supervisor of one shard.
    StartShard(u32),
    /// Start (again) the feeder supervisor.
    StartFeeders,
    /// Start (again) the cluster gateway.
    StartGateway,
    /// Start (again) the membership actor (and with it the cluster listener).
    StartMembership,
    /// Start (again) the replicator.
    StartReplicator,
    /// Start (again) the session supervisor.
    StartSessions,
    /// Start (again) the alert manager.
    StartAlerts,
    /// Start (again) the notifier.
    StartNotifier,
    /// Restarts per child so far (for tests and admin).
    Restarts(RpcReplyPort<u64>),
}

/// Which child an actor id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Child {
    Shard(u32),
    Feeders,
    Gateway,
    Membership,
    Replicator,
    Sessions,
    Alerts,
    Notifier,
}

/// The root supervisor.
#[derive(Debug)]
pub struct NodeSupervisor;

/// State of the root supervisor.
pub struct NodeState {
    ctx: Arc<NodeContext>,
    children: std::collections::HashMap<ActorId, Child>,
    budgets: std::collections::HashMap<Child, RestartBudget>,
    restarts: u64,
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        ctx: Arc<NodeContext>,
    ) -> Result<NodeState, ActorProcessingErr> {
        let mut state = NodeState {
            ctx,
            children: Default::default(),
            budgets: Default::default(),
            restarts: 0,
        };
        state.start_feeders(&myself).await?;
        state.start_notifier(&myself).await?;
        state.start_alerts(&myself).await?;
        for shard in 0..state.ctx.config.actors.shards {
            state.start_shard(&myself, shard, false).await?;
        }
        if state.ctx.auth().is_some() {
            state.start_sessions(&myself).await?;
        }
        if state.ctx.config.cluster.enabled {
            state.start_gateway(&myself).await?;
            state.start_membership(&myself).await?;
            state.start_replicator(&myself).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        s: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::StartShard(shard) => s.start_shard(&myself, shard, true).await,
            NodeMsg::StartFeeders => s.start_feeders(&myself).await,
            NodeMsg::StartGateway => s.start_gateway(&myself).await,
            NodeMsg::StartMembership => s.start_membership(&myself).await,
            NodeMsg::StartReplicator => s.start_replicator(&myself).await,
            NodeMsg::StartSessions => s.start_sessions(&myself).await,
            NodeMsg::StartAlerts => s.start_alerts(&myself).await,
            NodeMsg::StartNotifier => s.start_notifier(&myself).await,
            NodeMsg::Restarts(reply) => {
                let _ = reply.send(s.restarts);
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        s: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            _ => return Ok(()),
        };
        let Some(child) = s.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        s.child_down(&myself, child, &reason)
    }
}

impl NodeState {
    async fn start_shard(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        shard: u32,
        recovering: bool,
    ) -> Result<(), ActorProcessingErr> {
        let args = ShardArgs {
            shard,
            ctx: self.ctx.clone(),
            recovering,
        };
        let (actor, _) =
            Actor::spawn_linked(None, ShardSupervisor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Shard(shard));
        self.ctx.set_shard(shard, Some(actor));
        Ok(())
    }

    async fn start_feeders(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, _) =
            Actor::spawn_linked(None, FeederSupervisor, self.ctx.clone(), myself.get_cell())
                .await?;
        self.children.insert(actor.get_id(), Child::Feeders);
        self.ctx.set_feeder_supervisor(Some(actor));
        Ok(())
    }

    async fn start_gateway(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let handler = self
            .ctx
            .cluster_handler()
            .ok_or("cluster enabled but no handler for forwarded calls was set")?;
        let args = GatewayArgs {
            cluster: self.ctx.cluster.clone(),
            handler,
            max_inflight: (self.ctx.config.cluster.max_inflight_per_peer as usize) * 4,
        };
        let (actor, _) = Actor::spawn_linked(None, GatewayActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Gateway);
        Ok(())
    }

    async fn start_membership(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, _) =
            Actor::spawn_linked(None, MembershipActor, self.ctx.clone(), myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Membership);
        Ok(())
    }

    async fn start_replicator(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, _) =
            Actor::spawn_linked(None, ReplicatorActor, self.ctx.clone(), myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Replicator);
        Ok(())
    }

    async fn start_sessions(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let auth = self
            .ctx
            .auth()
            .ok_or("the session supervisor needs the auth layer")?
            .clone();
        let args = (self.ctx.clone(), auth);
        let (actor, _) =
            Actor::spawn_linked(None, SessionSupervisor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Sessions);
        Ok(())
    }

    async fn start_alerts(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        let (actor, _) =
            Actor::spawn_linked(None, AlertManagerActor, self.ctx.clone(), myself.get_cell())
                .await?;
        self.children.insert(actor.get_id(), Child::Alerts);
        Ok(())
    }

    async fn start_notifier(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, _) =
            Actor::spawn_linked(None, NotifierActor, self.ctx.clone(), myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Notifier);
        Ok(())
    }

    fn child_down(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        child: Child,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        tracing::warn!(?child, reason, "supervised child stopped");
        let kind = match child {
            Child::Shard(shard) => {
                self.ctx.set_shard(shard, None);
                "shard"
            }
            Child::Feeders => {
                self.ctx.set_feeder_supervisor(None);
                "feeder_supervisor"
            }
            Child::Gateway => "gateway",
            Child::Membership => "membership",
            Child::Replicator => "replicator",
            Child::Sessions => "session_supervisor",
            Child::Alerts => "alert_manager",
            Child::Notifier => "notifier",
        };
        metrics::counter!("gridmesh_actor_failures_total", "kind" => kind).increment(1);
        crate::context::Counters::add(&self.ctx.counters.actor_failures, 1);
        let actors = &self.ctx.config.actors;
        let budget = self
            .budgets
            .entry(child)
            .or_insert_with(|| RestartBudget::new(actors.max_restarts, actors.restart_window));
        match budget.record_failure(Instant::now()) {
            RestartDecision::Restart { after } => {
                self.restarts += 1;
                let msg = match child {
                    Child::Shard(shard) => NodeMsg::StartShard(shard),
                    Child::Feeders => NodeMsg::StartFeeders,
                    Child::Gateway => NodeMsg::StartGateway,
                    Child::Membership => NodeMsg::StartMembership,
                    Child::Replicator => NodeMsg::StartReplicator,
                    Child::Sessions => NodeMsg::StartSessions,
                    Child::Alerts => NodeMsg::StartAlerts,
                    Child::Notifier => NodeMsg::StartNotifier,
                };
                if after.is_zero() {
                    myself.cast(msg)?;
                } else {
                    myself.send_after(after, move || msg);
                }
                Ok(())
            }
            RestartDecision::Escalate => {
                tracing::error!(?child, "restart budget exhausted; node supervisor gives up");
                Err(format!(
                    "{child:?} failed more than {} times within {:?}",
                    actors.max_restarts, actors.restart_window
                )
                .into())
            }
        }
    }
}

/// Collects the stats of every shard (skipping shards that are restarting).
pub async fn shard_stats(ctx: &NodeContext) -> Vec<ShardStats> {
    let mut out = Vec::new();
    for shard in ctx.shard_refs().into_iter().flatten() {
        if let Ok(stats) = ractor::call_t!(shard, ShardMsg::Stats, 2000) {
            out.push(stats);
        }
    }
    out
}

/// Stops every resident meter actor (each writes its state row first, see
/// `actors.state_checkpoint_interval`) and waits until they are gone and everything they
/// wrote is durable, or `timeout` passes. Returns whether they all stopped in time. Part of
/// graceful shutdown: intake is closed before, so nothing re-activates them.
pub async fn stop_meters(ctx: &NodeContext, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    for shard in ctx.shard_refs().into_iter().flatten() {
        let _ = shard.cast(ShardMsg::PassivateAll("shutdown"));
    }
    let stopped = loop {
        let stats = shard_stats(ctx).await;
        if stats
            .iter()
            .all(|s| s.active_meters == 0 && s.passivating == 0)
        {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            let left: usize = stats.iter().map(|s| s.active_meters + s.passivating).sum();
            tracing::warn!(
                left,
                "meter actors still running at the end of the shutdown grace"
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Requests are applied in order: once this empty one is durable, so is every state row
    // the stopped meters queued before it.
    let flushed = tokio::time::timeout_at(deadline, ctx.writer.write(Vec::new()))
        .await
        .is_ok_and(|r| r.is_ok());
    stopped && flushed
}

/// The meter actors resident on a node, split by what they do there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveMeters {
    /// Epoch of the view whose shard map split them (read before listing).
    pub epoch: u64,
    /// Meters of shards the node owns in that view: the actors that decide client writes.
    pub owned: Vec<String>,
    /// Meters of shards it does not own: actors merging copies (replication, hinted handoff,
    /// repair) or not yet passivated after their shard moved. Sorted.
    pub copies: Vec<String>,
}

/// The meters with a resident actor on this node. Fails naming a shard that did not answer
/// within 2 s (a partial list would hide meters).
pub async fn active_meters(ctx: &NodeContext) -> Result<ActiveMeters, String> {
    let view = ctx.cluster.view();
    let mut out = ActiveMeters {
        epoch: view.epoch,
        ..ActiveMeters::default()
    };
    for (shard, actor) in ctx.shard_refs().into_iter().enumerate() {
        let Some(actor) = actor else {
            continue; // restarting: its meters stopped with it
        };
        let meters = ractor::call_t!(actor, ShardMsg::ActiveMeters, 2000)
            .map_err(|e| format!("shard {shard} did not list its meters: {e}"))?;
        let owned = matches!(
            ctx.cluster.owner_of_shard(&view.map, shard as u32),
            Owner::Local | Owner::Nobody
        );
        if owned {
            out.owned.extend(meters);
        } else {
            out.copies.extend(meters);
        }
    }
    out.owned.sort_unstable();
    out.copies.sort_unstable();
    Ok(out)
}

/// Number of active feeder actors.
pub async fn active_feeders(ctx: &NodeContext) -> usize {
    match ctx.feeder_supervisor() {
        Some(sup) => ractor::call_t!(sup, FeederSupervisorMsg::ActiveCount, 2000).unwrap_or(0),
        None => 0,
    }
}
