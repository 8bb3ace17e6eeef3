//! What every actor of a node shares: the store, the writer, the settings and the current
//! references of the long-lived actors (which change when a supervisor restarts one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use gridmesh_config::Config;
use ractor::ActorRef;

use crate::cluster::gateway::LocalHandler;
use crate::cluster::{Cluster, ForwardSettings, Secret};
use crate::feeder::FeederSupervisorMsg;
use crate::membership::{Addresses, Member, MemberState};
use crate::repair::{RepairState, ReplicatorMsg};
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
    /// The cluster as this node sees it (a view of one when clustering is off).
    pub cluster: Arc<Cluster>,
    /// Counters since start, for the admin API.
    pub counters: Counters,
    /// Digests and progress of hinted handoff and anti-entropy.
    pub repair: RepairState,
    replicator: RwLock<Option<ActorRef<ReplicatorMsg>>>,
    cookie: OnceLock<Secret>,
    handler: OnceLock<Arc<dyn LocalHandler>>,
}

impl std::fmt::Debug for dyn LocalHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalHandler")
    }
}

impl NodeContext {
    /// A new context with no actors yet.
    pub fn new(store: Arc<Store>, writer: Writer, config: Config) -> Arc<Self> {
        let shards = vec![None; config.actors.shards as usize];
        let cluster_settings = &config.cluster;
        let me = Member {
            name: config.node.name.clone(),
            incarnation: 0,
            state: MemberState::Alive,
            addresses: Addresses {
                grpc: cluster_settings
                    .advertise_grpc_addr
                    .unwrap_or(config.node.grpc_addr)
                    .to_string(),
                cluster: if cluster_settings.enabled {
                    cluster_settings.advertised_addr().to_string()
                } else {
                    String::new()
                },
            },
            draining: false,
            joining: false,
            last_heard: std::time::Instant::now(),
        };
        let cluster = Cluster::new(
            &config.node.name,
            cluster_settings.enabled,
            config.actors.shards,
            ForwardSettings {
                timeout: cluster_settings.forward_timeout,
                max_inflight_per_peer: cluster_settings.max_inflight_per_peer,
            },
            me,
        );
        let repair = RepairState::new(config.replication.repair_bytes_per_s);
        Arc::new(Self {
            store,
            writer,
            config,
            shards: RwLock::new(shards),
            feeders: RwLock::new(None),
            cluster,
            counters: Counters::default(),
            repair,
            replicator: RwLock::new(None),
            cookie: OnceLock::new(),
            handler: OnceLock::new(),
        })
    }

    /// Sets what clustering needs before the node supervisor starts: the cookie and the
    /// handler of forwarded calls. Set once; later calls are ignored.
    pub fn set_cluster_runtime(&self, cookie: Secret, handler: Arc<dyn LocalHandler>) {
        let _ = self.cookie.set(cookie);
        let _ = self.handler.set(handler);
    }

    /// The cluster cookie, when set.
    pub fn cluster_cookie(&self) -> Option<&str> {
        self.cookie.get().map(Secret::expose)
    }

    /// The handler of forwarded calls, when set.
    pub fn cluster_handler(&self) -> Option<Arc<dyn LocalHandler>> {
        self.handler.get().cloned()
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

    /// The current replicator (cluster mode).
    pub fn replicator(&self) -> Option<ActorRef<ReplicatorMsg>> {
        self.replicator
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_replicator(&self, actor: Option<ActorRef<ReplicatorMsg>>) {
        *self
            .replicator
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }

    pub(crate) fn set_feeder_supervisor(&self, actor: Option<ActorRef<FeederSupervisorMsg>>) {
        *self
            .feeders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }
}

/// Counters of one node since it started (the Prometheus metrics count the same events; these
/// are what the admin API reports per node).
#[derive(Debug, Default)]
pub struct Counters {
    /// Readings stored (accepted, not duplicates).
    pub readings_accepted: AtomicU64,
    /// Readings rejected.
    pub readings_rejected: AtomicU64,
    /// Meter passivations.
    pub passivations: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the Unix epoch by the node clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
