//! The cluster as one node sees it: the current membership view and shard map, and calls
//! forwarded to other nodes.
//!
//! ```text
//! gRPC service ── api::Api ──┬── local: IngestPipeline, query, registry
//!                            └── Cluster::forward ──ractor_cluster──▶ peer's gateway
//! MembershipActor: ticks, heartbeats every peer's gateway, runs the failure detector
//!                  (membership.rs), publishes the view and map here
//! connector task:  dials seeds and learned addresses with backoff until connected
//! ```
//!
//! Each node runs one cluster-visible actor, its [`gateway::GatewayActor`], in the process
//! group `gridmesh.gateway.<node name>`; ractor_cluster advertises it to every connected peer,
//! which is how nodes find each other's gateways. Everything else (meters, feeders, shards)
//! is local-only. Messages carry protobuf bytes (`gridmesh.internal.v1.cluster`), decoded with
//! errors handled here rather than by ractor's panicking conversions.
//!
//! A node with clustering disabled has a view of one member and never forwards.

pub mod gateway;
pub mod runtime;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gridmesh_proto::internal::{ClusterReply, ClusterRequest, cluster_reply, cluster_request};
use prost::Message;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::sync::Semaphore;

use crate::membership::{Member, MemberState};
use crate::placement::{ShardId, ShardMap, shard_of};

use self::gateway::GatewayMsg;
use self::runtime::MembershipMsg;

/// Process group of a node's gateway.
pub fn gateway_group(node: &str) -> String {
    format!("gridmesh.gateway.{node}")
}

/// Where a shard's owner is, for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node.
    Local,
    /// Another node, by name.
    Remote(String),
    /// No member owns shards (this node drains and no peer is alive).
    Nobody,
}

/// Why a forwarded call did not produce a reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The call was never sent: nothing happened on the peer.
    #[error("node {node} is unreachable: {why}")]
    NotSent {
        /// The peer.
        node: String,
        /// Why.
        why: String,
    },
    /// The call was sent but no reply came: it may or may not have taken effect.
    #[error("node {node} did not answer within {timeout_ms} ms; the outcome is unknown")]
    Unknown {
        /// The peer.
        node: String,
        /// The timeout.
        timeout_ms: u64,
    },
}

/// The view published by the membership actor.
#[derive(Debug, Clone)]
pub struct View {
    /// Epoch of the view.
    pub epoch: u64,
    /// Every member, this node first.
    pub members: Vec<Member>,
    /// The shard map computed from it: shards over the live members (owner = primary).
    pub map: Arc<ShardMap>,
    /// Shards over the home members: the live ones and those down for less than
    /// `replication.hint_window`. Its preference lists give each shard's home set (the first
    /// R); the live map's are the same lists without the members that are down.
    pub home: Arc<ShardMap>,
}

/// Forwarding settings.
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    /// Timeout of one forwarded call.
    pub timeout: Duration,
    /// Calls in flight to one peer.
    pub max_inflight_per_peer: u32,
}

/// The cluster handle every service and actor of a node shares.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    enabled: bool,
    shards: u32,
    view: RwLock<View>,
    settings: ForwardSettings,
    inflight: Mutex<HashMap<String, Arc<Semaphore>>>,
    forwarded: AtomicU64,
    started: Instant,
    membership: RwLock<Option<ActorRef<MembershipMsg>>>,
    learned: Mutex<BTreeSet<String>>,
    /// The epoch of the latest view, for calls waiting on a peer that may be declared down.
    views: tokio::sync::watch::Sender<u64>,
}

impl Cluster {
    /// A node's cluster handle. Until the membership actor publishes, the view holds only
    /// this node (which then owns every shard).
    pub fn new(
        name: &str,
        enabled: bool,
        shards: u32,
        settings: ForwardSettings,
        me: Member,
    ) -> Arc<Self> {
        let map = Arc::new(ShardMap::compute(1, shards, [name]));
        Arc::new(Self {
            name: name.to_owned(),
            enabled,
            shards,
            view: RwLock::new(View {
                epoch: 1,
                members: vec![me],
                home: map.clone(),
                map,
            }),
            settings,
            inflight: Mutex::new(HashMap::new()),
            forwarded: AtomicU64::new(0),
            started: Instant::now(),
            membership: RwLock::new(None),
            learned: Mutex::new(BTreeSet::new()),
            views: tokio::sync::watch::Sender::new(1),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this node is part of a multi-node cluster.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// When this handle was created (node start).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The running membership actor, if any.
    pub fn membership_actor(&self) -> Option<ActorRef<MembershipMsg>> {
        self.membership
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_membership_actor(&self, actor: Option<ActorRef<MembershipMsg>>) {
        *self
            .membership
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }

    /// Remembers cluster addresses peers told about (bounded: at most 1024 are kept).
    pub(crate) fn learn_addresses(&self, addresses: &[String]) {
        let mut learned = self
            .learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for address in addresses {
            if learned.len() >= 1024 {
                break;
            }
            if address.parse::<std::net::SocketAddr>().is_ok() {
                learned.insert(address.clone());
            }
        }
    }

    /// Cluster addresses learned from peers.
    pub fn learned_addresses(&self) -> Vec<String> {
        self.learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current shard map.
    pub fn map(&self) -> Arc<ShardMap> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .clone()
    }

    /// Publishes a new view (the membership actor does this).
    pub fn publish(&self, view: View) {
        let gauge_states = [MemberState::Alive, MemberState::Suspect, MemberState::Down];
        for state in gauge_states {
            let count = view.members.iter().filter(|m| m.state == state).count();
            metrics::gauge!("gridmesh_cluster_members", "state" => state.name()).set(count as f64);
        }
        metrics::gauge!("gridmesh_cluster_epoch").set(view.epoch as f64);
        let epoch = view.epoch;
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = view;
        self.views.send_replace(epoch);
    }

    /// Whether `node` is down in the current view.
    pub fn is_down(&self, node: &str) -> bool {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .members
            .iter()
            .any(|m| m.name == node && m.state == MemberState::Down)
    }

    /// Resolves once `node` is down in the published view (never, while it is not).
    async fn down(&self, node: &str) {
        let mut views = self.views.subscribe();
        loop {
            if self.is_down(node) {
                return;
            }
            if views.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The copies of a write to `shard` made here, with `factor` copies wanted.
    pub fn plan(&self, shard: ShardId, factor: usize) -> crate::replica::Plan {
        let view = self.view();
        let live = view.map.members();
        let pref: Vec<&str> = view.home.preference_list(shard).collect();
        crate::replica::plan(
            &pref,
            |n| live.binary_search_by(|m| m.as_str().cmp(n)).is_ok(),
            &self.name,
            factor,
        )
    }

    /// The home set of `shard`: the first `factor` home members by preference.
    pub fn home_set(&self, shard: ShardId, factor: usize) -> Vec<String> {
        self.view()
            .home
            .preference_list(shard)
            .take(factor)
            .map(str::to_owned)
            .collect()
    }

    /// The owner of `shard` in the current map.
    pub fn owner_of_shard(&self, map: &ShardMap, shard: ShardId) -> Owner {
        match map.owner(shard) {
            Some(owner) if owner == self.name => Owner::Local,
            Some(owner) => Owner::Remote(owner.to_owned()),
            None => Owner::Nobody,
        }
    }

    /// The owner of the shard of `id` (a meter or feeder id).
    pub fn owner_of(&self, id: &str) -> Owner {
        let map = self.map();
        self.owner_of_shard(&map, shard_of(id, self.shards))
    }

    /// Names of reachable peers (not down) in the current view.
    pub fn reachable_peers(&self) -> Vec<String> {
        self.view()
            .members
            .iter()
            .skip(1)
            .filter(|m| m.state != MemberState::Down)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Forwarded calls in flight now, over all peers.
    pub fn forwards_inflight(&self) -> u64 {
        let max = self.settings.max_inflight_per_peer as usize;
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|s| (max - s.available_permits()) as u64)
            .sum()
    }

    /// Forwarded calls in flight now, per peer.
    pub fn inflight_per_peer(&self) -> Vec<(String, u64)> {
        let max = self.settings.max_inflight_per_peer as usize;
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(peer, s)| (peer.clone(), (max - s.available_permits()) as u64))
            .collect()
    }

    /// Batches forwarded since start.
    pub fn batches_forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// The gateway of `node`, if its session is up.
    pub fn gateway_of(&self, node: &str) -> Option<ActorRef<GatewayMsg>> {
        ractor::pg::get_members(&gateway_group(node))
            .into_iter()
            .find(|cell| !cell.get_id().is_local())
            .map(ActorRef::from)
    }

    fn peer_slots(&self, node: &str) -> Arc<Semaphore> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(node.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.max_inflight_per_peer as usize))
            })
            .clone()
    }

    /// Sends `call` to `node`'s gateway and waits for the reply. With `wait`, a full in-flight
    /// window is waited for (up to the timeout); without, it fails at once.
    pub async fn forward(
        &self,
        node: &str,
        call: cluster_request::Call,
        wait: bool,
    ) -> Result<ClusterReply, ForwardError> {
        self.forward_within(node, call, wait, self.settings.timeout)
            .await
    }

    /// [`Cluster::forward`] with its own timeout.
    pub async fn forward_within(
        &self,
        node: &str,
        call: cluster_request::Call,
        wait: bool,
        timeout: Duration,
    ) -> Result<ClusterReply, ForwardError> {
        let not_sent = |why: &str| ForwardError::NotSent {
            node: node.to_owned(),
            why: why.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let slots = self.peer_slots(node);
        let _permit = if wait {
            match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(not_sent("too many calls in flight to it")),
            }
        } else {
            slots
                .try_acquire_owned()
                .map_err(|_| not_sent("too many calls in flight to it"))?
        };
        if self.is_down(node) {
            return Err(not_sent("it is down"));
        }
        let gateway = self
            .gateway_of(node)
            .ok_or_else(|| not_sent("no connection to it"))?;
        let request = ClusterRequest {
            origin: self.name.clone(),
            epoch: self.map().epoch(),
            call: Some(call),
        };
        let bytes = request.encode_to_vec();
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A hung peer (SIGSTOP, a partition) keeps its session open and never answers: the
        // call is given up as soon as membership declares the peer down, not at the timeout,
        // so the caller can fail over (spares, hints, other copies) within the down deadline.
        let result = tokio::select! {
            result = gateway.call(|reply| GatewayMsg::Call(bytes, reply), Some(remaining)) => {
                result
            }
            () = self.down(node) => {
                metrics::counter!("gridmesh_forward_unknown_total").increment(1);
                return Err(ForwardError::Unknown {
                    node: node.to_owned(),
                    timeout_ms: started.elapsed().as_millis() as u64,
                });
            }
        };
        let unknown = || ForwardError::Unknown {
            node: node.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let reply = match result {
            // The message could not even be handed to the session: nothing was sent.
            Err(_) => return Err(not_sent("its connection closed")),
            Ok(CallResult::Success(bytes)) => bytes,
            Ok(CallResult::Timeout | CallResult::SenderError) => {
                metrics::counter!("gridmesh_forward_unknown_total").increment(1);
                return Err(unknown());
            }
        };
        metrics::histogram!("gridmesh_forward_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("gridmesh_forwarded_calls_total").increment(1);
        ClusterReply::decode(bytes::Bytes::from(reply)).map_err(|e| {
            tracing::warn!(node, error = %e, "undecodable reply from a peer");
            unknown()
        })
    }
}

/// TLS for the cluster port (mutual: every node presents a certificate from the cluster CA).
///
/// ractor_cluster's own TLS listener performs the handshake inside its accept loop, so one
/// peer that connects and stalls would stop every other connection from being accepted. With
/// TLS the membership actor therefore runs its own accept loop on `cluster.listen_addr`: each
/// handshake runs in its own task with `handshake_timeout`, at most 64 at once, and only
/// finished TLS streams are handed to the `NodeServer` (whose own listener is bound to a
/// loopback port and also requires TLS).
#[derive(Clone)]
pub struct ClusterTls {
    /// Server side of incoming connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Client side of outgoing connections.
    pub connector: tokio_rustls::TlsConnector,
    /// Name checked in peers' certificates; `None`: the peer's IP address.
    pub server_name: Option<String>,
    /// Longest an incoming handshake may take.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// A secret string (the cluster cookie): never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A reply carrying an error status.
pub fn error_reply(status: &tonic::Status) -> ClusterReply {
    ClusterReply {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reply: None,
    }
}

/// A successful reply.
pub fn ok_reply(reply: cluster_reply::Reply) -> ClusterReply {
    ClusterReply {
        code: 0,
        message: String::new(),
        reply: Some(reply),
    }
}

/// The status a reply carries, or its payload.
pub fn into_result(
    node: &str,
    reply: ClusterReply,
) -> Result<Option<cluster_reply::Reply>, tonic::Status> {
    if reply.code == 0 {
        return Ok(reply.reply);
    }
    let code = tonic::Code::from_i32(reply.code);
    Err(tonic::Status::new(
        code,
        format!("node {node}: {}", reply.message),
    ))
}
