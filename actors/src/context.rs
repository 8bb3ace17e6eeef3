//! What every actor of a node shares: the store, the writer, the settings and the current
//! references of the long-lived actors (which change when a supervisor restarts one).

use std::sync::{Arc, RwLock};

use gridmesh_config::Config;
use ractor::ActorRef;

use crate::feeder::FeederSupervisorMsg;
use crate::shard::ShardMsg;
use crate::storage::Store;
use crate::writer::Writer;

/// Shared node context.
#[derive(Debug)]
pub struct NodeContext {
    /// The node's store.
    pub store: Arc<Store>,
    /// The group-commit writer.
    pub writer: Writer,
    /// The node configuration (validated).
    pub config: Config,
    /// Current shard supervisors, indexed by shard id; `None` while one restarts.
    pub shards: RwLock<Vec<Option<ActorRef<ShardMsg>>>>,
    /// Current feeder supervisor; `None` while it restarts.
    pub feeders: RwLock<Option<ActorRef<FeederSupervisorMsg>>>,
}

impl NodeContext {
    /// A new context with no actors yet.
    pub fn new(store: Arc<Store>, writer: Writer, config: Config) -> Arc<Self> {
        let shards = vec![None; config.actors.shards as usize];
        Arc::new(Self {
            store,
            writer,
            config,
            shards: RwLock::new(shards),
            feeders: RwLock::new(None),
        })
    }

    /// The current supervisor of `shard`.
    pub fn shard(&self, shard: u32) -> Option<ActorRef<ShardMsg>> {
        let shards = self
            .shards
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shards.get(shard as usize).cloned().flatten()
    }

    /// The current shard supervisors (some may be missing while restarting).
    pub fn shard_refs(&self) -> Vec<Option<ActorRef<ShardMsg>>> {
        self.shards
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Installs the current supervisor of `shard` (the node supervisor does this on every
    /// (re)start; tests install stand-ins).
    pub fn set_shard(&self, shard: u32, actor: Option<ActorRef<ShardMsg>>) {
        let mut shards = self
            .shards
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shards[shard as usize] = actor;
    }

    /// The current feeder supervisor.
    pub fn feeder_supervisor(&self) -> Option<ActorRef<FeederSupervisorMsg>> {
        self.feeders
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_feeder_supervisor(&self, actor: Option<ActorRef<FeederSupervisorMsg>>) {
        *self
            .feeders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }
}

/// Milliseconds since the Unix epoch by the node clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
