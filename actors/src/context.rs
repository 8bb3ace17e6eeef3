//! What every actor of a node shares: the store, the writer, the settings and the current
//! references of the long-lived actors (which change when a supervisor restarts one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use gridmesh_config::Config;
use ractor::ActorRef;

use crate::alerts::{AlertFeed, AlertMsg};
use crate::auth::Auth;
use crate::cluster::gateway::LocalHandler;
use crate::cluster::{Cluster, ClusterTls, ForwardSettings, Secret};
use crate::feeder::FeederSupervisorMsg;
use crate::grid::OutageSignal;
use crate::mailbox::{Mailbox, MailboxKind, Mailboxes};
use crate::membership::{Addresses, Member, MemberState};
use crate::meter::FeederUpdate;
use crate::notify::NotifyMsg;
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
    /// Mailbox depths of the actors on the ingest path.
    pub mailboxes: Mailboxes,
    /// Per shard id, the mailbox counter of its current supervisor.
    shard_mailboxes: Vec<Mailbox>,
    /// The mailbox counter of the current feeder supervisor.
    feeder_mailbox: Mailbox,
    /// Slots of the bounded queue of feeder updates (see [`NodeContext::send_feeder_updates`]).
    feeder_slots: Arc<tokio::sync::Semaphore>,
    /// Digests and progress of hinted handoff and anti-entropy.
    pub repair: RepairState,
    replicator: RwLock<Option<ActorRef<ReplicatorMsg>>>,
    /// The alert change feed watchers subscribe to.
    pub alert_feed: AlertFeed,
    alert_manager: RwLock<Option<ActorRef<AlertMsg>>>,
    notifier: RwLock<Option<ActorRef<NotifyMsg>>>,
    cookie: OnceLock<Secret>,
    handler: OnceLock<Arc<dyn LocalHandler>>,
    auth: OnceLock<Arc<Auth>>,
    cluster_tls: OnceLock<ClusterTls>,
    daily: OnceLock<Option<crate::daily::DailyTariff>>,
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
        let mailboxes = Mailboxes::default();
        let shard_mailboxes = (0..config.actors.shards)
            .map(|_| mailboxes.open(MailboxKind::Shard))
            .collect();
        let feeder_mailbox = mailboxes.open(MailboxKind::FeederSupervisor);
        Arc::new(Self {
            store,
            writer,
            config,
            shards: RwLock::new(shards),
            feeders: RwLock::new(None),
            cluster,
            counters: Counters::default(),
            mailboxes,
            shard_mailboxes,
            feeder_mailbox,
            feeder_slots: Arc::new(tokio::sync::Semaphore::new(FEEDER_UPDATE_SLOTS)),
            repair,
            replicator: RwLock::new(None),
            alert_feed: AlertFeed::default(),
            alert_manager: RwLock::new(None),
            notifier: RwLock::new(None),
            cookie: OnceLock::new(),
            handler: OnceLock::new(),
            auth: OnceLock::new(),
            cluster_tls: OnceLock::new(),
            daily: OnceLock::new(),
        })
    }

    /// Sets what clustering needs before the node supervisor starts: the cookie and the
    /// handler of forwarded calls. Set once; later calls are ignored.
    pub fn set_cluster_runtime(&self, cookie: Secret, handler: Arc<dyn LocalHandler>) {
        let _ = self.cookie.set(cookie);
        let _ = self.handler.set(handler);
    }

    /// Sets the node's auth layer (users, sessions, keys) before the node supervisor starts,
    /// which then starts the session supervisor. Set once; later calls are ignored.
    pub fn set_auth(&self, auth: Arc<Auth>) {
        let _ = self.auth.set(auth);
    }

    /// The auth layer, when set (always on a served node; tests of the actor tree may run
    /// without one).
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.get()
    }

    /// Sets TLS for the cluster port, before the node supervisor starts. Set once.
    pub fn set_cluster_tls(&self, tls: ClusterTls) {
        let _ = self.cluster_tls.set(tls);
    }

    /// TLS for the cluster port, when configured.
    pub fn cluster_tls(&self) -> Option<&ClusterTls> {
        self.cluster_tls.get()
    }

    /// The calendar daily aggregates are computed and stored with (built once; `None` when
    /// the analytics are off).
    pub fn daily_tariff(&self) -> Option<&crate::daily::DailyTariff> {
        self.daily
            .get_or_init(|| crate::daily::DailyTariff::from_config(&self.config.analytics))
            .as_ref()
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

    /// The mailbox counter of `shard`'s supervisor.
    pub fn shard_mailbox(&self, shard: u32) -> &Mailbox {
        &self.shard_mailboxes[shard as usize]
    }

    /// Sends `msg` to the current supervisor of `shard`, counting it into its mailbox (the
    /// shard counts `Ingest` messages out). `false` when the shard is restarting.
    pub fn send_to_shard(&self, shard: u32, msg: ShardMsg) -> bool {
        let Some(actor) = self.shard(shard) else {
            return false;
        };
        let mailbox = self.shard_mailbox(shard);
        mailbox.sent();
        if actor.cast(msg).is_err() {
            mailbox.received();
            return false;
        }
        true
    }

    /// The mailbox counter of the feeder supervisor.
    pub fn feeder_mailbox(&self) -> &Mailbox {
        &self.feeder_mailbox
    }

    /// Sends the updates of one feeder to the current feeder supervisor, counting them into
    /// its mailbox. Feeder updates leave the ingest path after their readings are durable, so
    /// admission does not bound them: each message holds one of [`FEEDER_UPDATE_SLOTS`] slots
    /// until the feeder actor has taken it in, and a sender waits for a free slot. A slow
    /// feeder actor therefore slows the acks instead of growing a queue. Dropped while the
    /// supervisor restarts (feeder views are rebuilt from stored contributions).
    pub async fn send_feeder_updates(
        &self,
        feeder_id: String,
        updates: Vec<FeederUpdate>,
        signals: Vec<OutageSignal>,
    ) {
        let Ok(slot) = self.feeder_slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let Some(actor) = self.feeder_supervisor() else {
            return;
        };
        self.feeder_mailbox.sent();
        let msg = FeederSupervisorMsg::Updates {
            feeder_id,
            updates,
            signals,
            slot,
        };
        if actor.cast(msg).is_err() {
            self.feeder_mailbox.received();
        }
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
        if actor.is_none() {
            // What waited in the dead supervisor's mailbox went with it.
            self.shard_mailboxes[shard as usize].close();
        }
        shards[shard as usize] = actor;
    }

    /// The current feeder supervisor.
    pub fn feeder_supervisor(&self) -> Option<ActorRef<FeederSupervisorMsg>> {
        self.feeders
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current alert manager.
    pub fn alert_manager(&self) -> Option<ActorRef<AlertMsg>> {
        self.alert_manager
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_alert_manager(&self, actor: Option<ActorRef<AlertMsg>>) {
        *self
            .alert_manager
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }

    /// The current notifier.
    pub fn notifier(&self) -> Option<ActorRef<NotifyMsg>> {
        self.notifier
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_notifier(&self, actor: Option<ActorRef<NotifyMsg>>) {
        *self
            .notifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
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
        if actor.is_none() {
            self.feeder_mailbox.close();
        }
        *self
            .feeders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }
}

/// Feeder-update messages a node lets wait for feeder actors at once.
pub const FEEDER_UPDATE_SLOTS: usize = 1_024;

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
    /// Supervised actors that stopped unexpectedly (meters, feeders, sessions, the node
    /// supervisor's children).
    pub actor_failures: AtomicU64,
    /// Session actors resident now (set by the session supervisor).
    pub active_sessions: AtomicU64,
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
