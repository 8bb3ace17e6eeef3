//! `MembershipActor`: the node's cluster listener, its heartbeats and failure detector, and the
//! connector that keeps a full mesh.
//!
//! It owns the ractor_cluster `NodeServer` (spawned linked: if the server dies, this actor
//! fails and the node supervisor restarts both with a new incarnation). Every
//! `cluster.heartbeat_interval` it ticks the failure detector ([`Membership`]) and heartbeats
//! every peer whose gateway it sees; heartbeats received by the gateway come back here. Down
//! peers still get a heartbeat every fifth tick, so they learn they were held down and take a
//! new incarnation. On every view change it publishes the view and shard map to
//! [`Cluster`], and shards this node no longer owns passivate their meters.
//!
//! The connector task dials every known cluster address that has no live member behind it:
//! the configured seeds, the DNS seed (re-resolved every few seconds) and addresses learned
//! from heartbeats, with exponential backoff and jitter per address.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_proto::internal::Heartbeat as WireHeartbeat;
use prost::Message;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, RactorMessage,
};
use rand::Rng;

use super::gateway::GatewayMsg;
use super::{Cluster, View, gateway_group};
use crate::context::{NodeContext, now_ms};
use crate::membership::{Addresses, Deadlines, Event, Heartbeat, MemberState, Membership};
use crate::placement::ShardMap;
use crate::shard::ShardMsg;

/// Messages of the membership actor. Local only.
#[derive(RactorMessage)]
pub enum MembershipMsg {
    /// Advance the failure detector and send heartbeats.
    Tick,
    /// A peer's heartbeat (from the gateway).
    Heard(WireHeartbeat),
    /// The session with a peer closed.
    Disconnected(String),
    /// Start or stop draining this node.
    SetDraining(bool),
    /// A registry copy from a peer finished (with the entries copied, or why it failed).
    RegistrySynced(String, Result<u64, String>),
}

/// The membership actor.
#[derive(Debug)]
pub struct MembershipActor;

/// State of the membership actor.
pub struct MembershipState {
    ctx: Arc<NodeContext>,
    membership: Membership,
    server: ActorRef<NodeServerMessage>,
    ticker: JoinHandle<()>,
    connector: tokio::task::JoinHandle<()>,
    /// The TLS accept loop, when the cluster port uses TLS.
    acceptor: Option<tokio::task::JoinHandle<()>>,
    map: Arc<ShardMap>,
    home: Arc<ShardMap>,
    ticks: u64,
    started: Instant,
    /// The peer a registry copy is running from.
    syncing: Option<String>,
    /// Peers refused for another shard count (logged once each).
    refused: std::collections::HashSet<String>,
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        ctx: Arc<NodeContext>,
    ) -> Result<MembershipState, ActorProcessingErr> {
        let config = &ctx.config;
        let settings = &config.cluster;
        let cookie = ctx
            .cluster_cookie()
            .ok_or("cluster enabled without a cookie")?;
        let incarnation = ctx.store.next_incarnation(now_ms() as u64)?;
        let advertised = settings.advertised_addr();
        let addresses = Addresses {
            grpc: settings
                .advertise_grpc_addr
                .unwrap_or(config.node.grpc_addr)
                .to_string(),
            cluster: advertised.to_string(),
        };
        let deadlines = Deadlines {
            suspect_after: settings.suspect_after,
            down_after: settings.down_after,
        };
        let mut membership = Membership::new(
            &config.node.name,
            incarnation,
            addresses,
            deadlines,
            Instant::now(),
        );
        // Owns nothing until it has the registry (see `sync_step`).
        membership.set_joining();

        let tls = ctx.cluster_tls().cloned();
        // With TLS, our own accept loop owns the cluster address (see `ClusterTls`); the
        // NodeServer's listener only gets a loopback port, TLS-only too.
        let (port, ip, encryption, tls_listener) = match &tls {
            None => (
                settings.listen_addr.port(),
                settings.listen_addr.ip(),
                IncomingEncryptionMode::Raw,
                None,
            ),
            Some(t) => (
                0,
                std::net::IpAddr::from([127, 0, 0, 1]),
                IncomingEncryptionMode::Tls(t.acceptor.clone()),
                Some(tokio::net::TcpListener::bind(settings.listen_addr).await?),
            ),
        };
        let server = NodeServer::new(
            port,
            cookie.to_owned(),
            config.node.name.clone(),
            advertised.ip().to_string(),
            Some(encryption),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(ip)
        .with_max_inbound_frame_size(settings.max_frame_bytes);
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let acceptor = match (tls_listener, &tls) {
            (Some(listener), Some(t)) => Some(tokio::spawn(tls_accept_loop(
                listener,
                t.clone(),
                server.clone(),
            ))),
            _ => None,
        };
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "gridmesh.membership".to_owned(),
            subscription: Box::new(SessionEvents {
                membership: myself.clone(),
                authenticated: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
            }),
        })?;
        let ticker = myself.send_interval(settings.heartbeat_interval, || MembershipMsg::Tick);
        let connector = tokio::spawn(connect_loop(
            server.clone(),
            ctx.cluster.clone(),
            ConnectSettings {
                seeds: settings.seeds.clone(),
                seed_dns: settings.seed_dns.clone(),
                own: advertised,
                listen: settings.listen_addr,
                min: settings.reconnect_min,
                max: settings.reconnect_max,
                tls: tls.clone(),
            },
        ));
        ctx.cluster.set_membership_actor(Some(myself.clone()));
        tracing::info!(
            node = %config.node.name,
            incarnation,
            listen = %settings.listen_addr,
            seeds = ?settings.seeds,
            tls = tls.is_some(),
            "cluster listener started"
        );
        let map = ctx.cluster.map();
        let home = ctx.cluster.view().home;
        let mut state = MembershipState {
            ctx,
            membership,
            server,
            ticker,
            connector,
            acceptor,
            map,
            home,
            ticks: 0,
            started: Instant::now(),
            syncing: None,
            refused: std::collections::HashSet::new(),
        };
        state.publish();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MembershipMsg>,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.connector.abort();
        if let Some(acceptor) = &state.acceptor {
            acceptor.abort();
        }
        state.ctx.cluster.set_membership_actor(None);
        state
            .server
            .stop(Some("membership actor stopped".to_owned()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let events = match msg {
            MembershipMsg::Tick => {
                let mut events = state.membership.tick(now);
                events.extend(state.sync_step(&myself));
                state.send_heartbeats();
                state.ticks += 1;
                events
            }
            MembershipMsg::RegistrySynced(peer, result) => {
                state.syncing = None;
                match result {
                    Ok(copied) => {
                        tracing::info!(peer, copied, "registry copied from peer");
                        state.membership.set_ready()
                    }
                    Err(e) => {
                        tracing::warn!(peer, error = %e, "registry copy failed; will retry");
                        Vec::new()
                    }
                }
            }
            MembershipMsg::Heard(wire) if wire.shards != state.ctx.config.actors.shards => {
                // Never a member: it would route the same meter to another shard.
                if state.refused.insert(wire.from.clone()) {
                    tracing::error!(
                        peer = %wire.from,
                        theirs = wire.shards,
                        ours = state.ctx.config.actors.shards,
                        "refusing a peer with another shard count; actors.shards must be the \
                         same on every member"
                    );
                    metrics::counter!("gridmesh_cluster_peers_refused_total", "reason" => "shards")
                        .increment(1);
                }
                Vec::new()
            }
            MembershipMsg::Heard(wire) => {
                state.ctx.cluster.learn_addresses(&wire.known_cluster_addrs);
                let heartbeat = Heartbeat {
                    from: wire.from,
                    incarnation: wire.incarnation,
                    addresses: Addresses {
                        grpc: wire.grpc_addr,
                        cluster: wire.cluster_addr,
                    },
                    draining: wire.draining,
                    joining: wire.joining,
                    you_are_down_at: wire.you_are_down_at,
                };
                state.membership.on_heartbeat(&heartbeat, now)
            }
            MembershipMsg::Disconnected(peer) => state.membership.on_disconnect(&peer),
            MembershipMsg::SetDraining(draining) => state.membership.set_draining(draining),
        };
        state.apply(&events);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MembershipMsg>,
        event: SupervisionEvent,
        _state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                Err(format!("cluster node server stopped: {reason:?}").into())
            }
            SupervisionEvent::ActorFailed(_, error) => {
                Err(format!("cluster node server failed: {error}").into())
            }
            _ => Ok(()),
        }
    }
}

impl MembershipState {
    /// While joining: copy the registry from a reachable peer, or, when no peer has shown up
    /// within two down deadlines, start alone (this is the first node of a cluster).
    fn sync_step(&mut self, myself: &ActorRef<MembershipMsg>) -> Vec<Event> {
        if !self.membership.me().joining || self.syncing.is_some() {
            return Vec::new();
        }
        let peer = self
            .membership
            .reachable_peers()
            .find(|m| !m.joining)
            .map(|m| m.name.clone());
        let Some(peer) = peer else {
            // No member that owns shards answers. After a grace period in which a running
            // cluster would have been heard, start: alone, or, when several nodes start
            // together, the first by name goes first and the others copy from it.
            let grace = self.ctx.config.cluster.down_after * 2;
            let me = self.membership.me().name.as_str();
            let first = self
                .membership
                .reachable_peers()
                .all(|m| me < m.name.as_str());
            if first && self.started.elapsed() >= grace {
                tracing::info!("no member owns shards yet; starting as the first one");
                return self.membership.set_ready();
            }
            return Vec::new();
        };
        let Some(handler) = self.ctx.cluster_handler() else {
            return Vec::new();
        };
        self.syncing = Some(peer.clone());
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = handler.sync_registry(peer.clone()).await;
            let _ = myself.cast(MembershipMsg::RegistrySynced(peer, result));
        });
        Vec::new()
    }

    fn send_heartbeats(&self) {
        let me = self.membership.me();
        let known: Vec<String> = self
            .membership
            .members()
            .filter(|m| m.state != MemberState::Down)
            .map(|m| m.addresses.cluster.clone())
            .collect();
        let own_group = gateway_group(&me.name);
        for group in ractor::pg::which_groups() {
            let Some(peer) = group.strip_prefix("gridmesh.gateway.") else {
                continue;
            };
            if group == own_group {
                continue;
            }
            let down = self
                .membership
                .peer(peer)
                .is_some_and(|m| m.state == MemberState::Down);
            if down && !self.ticks.is_multiple_of(5) {
                continue;
            }
            let Some(gateway) = self.ctx.cluster.gateway_of(peer) else {
                continue;
            };
            let hb = self.membership.heartbeat_for(peer);
            let wire = WireHeartbeat {
                from: hb.from,
                incarnation: hb.incarnation,
                grpc_addr: hb.addresses.grpc,
                cluster_addr: hb.addresses.cluster,
                draining: hb.draining,
                joining: hb.joining,
                you_are_down_at: hb.you_are_down_at,
                epoch: self.membership.epoch(),
                known_cluster_addrs: known.clone(),
                shards: self.ctx.config.actors.shards,
            };
            let _ = gateway.cast(GatewayMsg::Heartbeat(wire.encode_to_vec()));
        }
    }

    fn apply(&mut self, events: &[Event]) {
        let changed = events
            .iter()
            .any(|e| matches!(e, Event::Joined(_) | Event::Returned(..) | Event::Ready(_)));
        for event in events {
            match event {
                Event::Joined(peer) => tracing::info!(peer, "member joined"),
                Event::Returned(peer, incarnation) => {
                    tracing::info!(peer, incarnation, "member returned with a new incarnation");
                }
                Event::Suspected(peer) => {
                    metrics::counter!("gridmesh_failure_detections_total", "state" => "suspect")
                        .increment(1);
                    tracing::warn!(peer, "member suspect: no heartbeat");
                }
                Event::Recovered(peer) => tracing::info!(peer, "suspect member heard again"),
                Event::Down(peer) => {
                    metrics::counter!("gridmesh_failure_detections_total", "state" => "down")
                        .increment(1);
                    tracing::warn!(peer, "member down; its shards move");
                }
                Event::Draining(peer, draining) => tracing::info!(peer, draining, "draining"),
                Event::Ready(peer) => tracing::info!(peer, "member ready: it owns shards now"),
                Event::NewIncarnation(incarnation) => {
                    if let Err(e) = self.ctx.store.record_incarnation(*incarnation) {
                        tracing::error!(error = %e, "could not persist the new incarnation");
                    }
                    tracing::warn!(
                        incarnation,
                        "this node was (or may have been) held down by its peers; \
                         returning as a new incarnation"
                    );
                }
            }
        }
        // Ages of last heartbeats change every tick, so the view is republished every tick.
        self.publish();
        // A member that is back or new may lack writes: hand off and compare now.
        if changed && let Some(replicator) = self.ctx.replicator() {
            let _ = replicator.cast(crate::repair::ReplicatorMsg::MemberChanged);
        }
    }

    fn publish(&mut self) {
        let shards = self.ctx.config.actors.shards;
        let live: BTreeSet<&str> = self.membership.placement_members().collect();
        let hint_window = self.ctx.config.replication.hint_window;
        let home: BTreeSet<&str> = self
            .membership
            .home_members(Instant::now(), hint_window)
            .collect();
        if !same_members(&self.home, &home) {
            self.home = Arc::new(ShardMap::compute(
                self.membership.epoch(),
                shards,
                home.iter().copied(),
            ));
            tracing::info!(members = ?self.home.members(), "home members changed");
        }
        if !same_members(&self.map, &live) {
            let map = Arc::new(ShardMap::compute(
                self.membership.epoch(),
                shards,
                live.iter().copied(),
            ));
            let me = self.ctx.config.node.name.as_str();
            let moved = map.moved_from(&self.map);
            metrics::counter!("gridmesh_shard_moves_total").increment(moved.len() as u64);
            let mut lost = 0;
            for &shard in &moved {
                if self.map.owner(shard) == Some(me)
                    && let Some(actor) = self.ctx.shard(shard)
                {
                    lost += 1;
                    let _ = actor.cast(ShardMsg::PassivateAll("moved"));
                }
            }
            tracing::info!(
                epoch = map.epoch(),
                members = ?map.members(),
                moved = moved.len(),
                lost,
                owned = map.owned_by(me).count(),
                "shard map changed"
            );
            self.map = map;
        }
        self.ctx.cluster.publish(View {
            epoch: self.membership.epoch(),
            members: self.membership.members().cloned().collect(),
            map: self.map.clone(),
            home: self.home.clone(),
        });
    }
}

/// Whether `map` was computed over exactly `members`.
fn same_members(map: &ShardMap, members: &BTreeSet<&str>) -> bool {
    map.members()
        .iter()
        .map(String::as_str)
        .eq(members.iter().copied())
}

/// Session events from the node server: the last authenticated session to a peer closing
/// feeds the failure detector (a duplicate closing does not); sessions that close before
/// authenticating are logged as refused.
struct SessionEvents {
    membership: ActorRef<MembershipMsg>,
    /// Authenticated sessions, with the peer each one is to.
    authenticated: Mutex<HashMap<ActorId, Option<String>>>,
    /// Sessions closed before authenticating, per peer name (or address when unnamed).
    failures: Mutex<HashMap<String, u32>>,
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _session: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        let peer = session.peer_name.as_ref().map(|n| node_name(&n.name));
        {
            let mut failures = self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            failures.remove(&session.peer_addr);
            if let Some(peer) = &peer {
                failures.remove(peer);
            }
        }
        self.authenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.actor.get_id(), peer.clone());
        tracing::info!(peer = ?peer, addr = %session.peer_addr, "cluster session authenticated");
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let peer = session.peer_name.as_ref().map(|n| node_name(&n.name));
        let (was_authenticated, others) = {
            let mut sessions = self
                .authenticated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was = sessions.remove(&session.actor.get_id()).is_some();
            let others = sessions.values().any(|p| p.is_some() && *p == peer);
            (was, others)
        };
        if was_authenticated {
            tracing::info!(peer = ?peer, addr = %session.peer_addr, "cluster session closed");
            if let Some(peer) = peer
                && !others
            {
                let _ = self.membership.cast(MembershipMsg::Disconnected(peer));
            }
        } else {
            metrics::counter!("gridmesh_cluster_sessions_refused_total").increment(1);
            // Two nodes dialling each other at once make one duplicate session, which closes
            // before authenticating: that is normal once. Repeated closes are not.
            let repeated = {
                let mut failures = self
                    .failures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let key = peer.clone().unwrap_or_else(|| session.peer_addr.clone());
                let count = failures.entry(key).or_insert(0);
                *count += 1;
                *count == 2 || (*count > 2 && (*count).is_multiple_of(20))
            };
            if repeated {
                tracing::warn!(
                    peer = ?peer,
                    addr = %session.peer_addr,
                    "cluster connection refused: closed before authenticating, repeatedly \
                     (wrong cookie, or not a GridMesh node)"
                );
            } else {
                tracing::debug!(peer = ?peer, addr = %session.peer_addr, "unauthenticated \
                    cluster session closed (a duplicate, or refused)");
            }
        }
    }
}

struct ConnectSettings {
    seeds: Vec<String>,
    seed_dns: String,
    own: SocketAddr,
    listen: SocketAddr,
    min: Duration,
    max: Duration,
    tls: Option<crate::cluster::ClusterTls>,
}

/// Most incoming TLS handshakes in progress at once; more connections are dropped at once.
const MAX_HANDSHAKES: usize = 64;

/// Accepts cluster connections and runs each TLS handshake in its own task with a deadline,
/// so a peer that connects and stalls holds only its own task (see `ClusterTls`).
async fn tls_accept_loop(
    listener: tokio::net::TcpListener,
    tls: crate::cluster::ClusterTls,
    server: ActorRef<NodeServerMessage>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            metrics::counter!("gridmesh_cluster_handshakes_total", "outcome" => "refused_busy")
                .increment(1);
            continue;
        };
        let (acceptor, server, deadline) =
            (tls.acceptor.clone(), server.clone(), tls.handshake_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let outcome = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let stream = ractor_cluster::NetworkStream::TlsServer {
                        peer_addr: peer,
                        local_addr: local,
                        stream: tls_stream,
                    };
                    let _ = server.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(stream),
                        is_server: true,
                    });
                    "ok"
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cluster TLS handshake failed");
                    "failed"
                }
                Err(_) => {
                    tracing::warn!(%peer, ?deadline, "cluster TLS handshake timed out; dropped");
                    "timeout"
                }
            };
            metrics::counter!("gridmesh_cluster_handshakes_total", "outcome" => outcome)
                .increment(1);
        });
    }
}

/// The name a peer's certificate must carry: the configured one, else its IP address.
fn peer_server_name(
    tls: &crate::cluster::ClusterTls,
    target: SocketAddr,
) -> Option<rustls_pki_types::ServerName<'static>> {
    match &tls.server_name {
        Some(name) => rustls_pki_types::ServerName::try_from(name.clone()).ok(),
        None => Some(rustls_pki_types::ServerName::IpAddress(target.ip().into())),
    }
}

struct Backoff {
    next: Instant,
    delay: Duration,
}

/// Dials every known address with no live member behind it, with backoff per address.
async fn connect_loop(
    server: ActorRef<NodeServerMessage>,
    cluster: Arc<Cluster>,
    settings: ConnectSettings,
) {
    const RESOLVE_EVERY: Duration = Duration::from_secs(5);
    let mut backoff: HashMap<SocketAddr, Backoff> = HashMap::new();
    let mut resolved: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut resolved_at: Option<Instant> = None;
    loop {
        if resolved_at.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY) {
            resolved = resolve_seeds(&settings).await;
            resolved_at = Some(Instant::now());
        }
        let mut targets = resolved.clone();
        targets.extend(
            cluster
                .learned_addresses()
                .iter()
                .filter_map(|a| a.parse::<SocketAddr>().ok()),
        );
        targets.remove(&settings.own);
        targets.remove(&settings.listen);
        let connected: HashSet<SocketAddr> = cluster
            .view()
            .members
            .iter()
            .skip(1)
            .filter(|m| m.state != MemberState::Down && cluster.gateway_of(&m.name).is_some())
            .filter_map(|m| m.addresses.cluster.parse().ok())
            .collect();
        let now = Instant::now();
        for target in targets {
            if connected.contains(&target) {
                backoff.remove(&target);
                continue;
            }
            let entry = backoff.entry(target).or_insert(Backoff {
                next: now,
                delay: settings.min,
            });
            if now < entry.next {
                continue;
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            entry.next = now + entry.delay.mul_f64(jitter);
            entry.delay = (entry.delay * 2).min(settings.max);
            let server = server.clone();
            let tls = settings.tls.clone();
            tokio::spawn(async move {
                let connect = async {
                    match &tls {
                        None => ractor_cluster::client_connect(&server, target).await,
                        Some(t) => match peer_server_name(t, target) {
                            Some(name) => {
                                let connector = t.connector.clone();
                                ractor_cluster::client_connect_enc(&server, target, connector, name)
                                    .await
                            }
                            None => {
                                tracing::warn!("tls.cluster_server_name is not a valid name");
                                Ok(())
                            }
                        },
                    }
                };
                let attempt = tokio::time::timeout(Duration::from_secs(3), connect).await;
                match attempt {
                    Ok(Ok(())) => tracing::debug!(%target, "cluster connection opened"),
                    Ok(Err(e)) => tracing::debug!(%target, error = %e, "cluster connect failed"),
                    Err(_) => tracing::debug!(%target, "cluster connect timed out"),
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn resolve_seeds(settings: &ConnectSettings) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    let names = settings
        .seeds
        .iter()
        .chain(std::iter::once(&settings.seed_dns).filter(|s| !s.is_empty()));
    for name in names {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::debug!(seed = %name, error = %e, "seed does not resolve (yet)"),
        }
    }
    out
}

/// The GridMesh node name in a ractor_cluster peer name (`name@host`).
fn node_name(peer: &str) -> String {
    peer.split_once('@')
        .map_or(peer, |(name, _)| name)
        .to_owned()
}
