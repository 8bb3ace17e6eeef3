//! Users, sessions and revocations of the cluster, and the checks every call goes through.
//!
//! **State.** Every node holds every user, session and revocation ([`store::AuthStore`]: a
//! fjall keyspace mirrored in memory), so any node checks any token with a few hash lookups
//! and no network call. Changes merge with the rules of [`merge`] (last writer wins for users
//! and sessions, a grow-only set for revocations), so they can travel in any order.
//!
//! **Propagation.** A change is stored durably here, then sent to every reachable member
//! (`AuthCall.apply`), concurrently, each of which stores it durably before confirming. A
//! revocation returns only when every reachable member confirmed it; otherwise the call fails
//! `UNAVAILABLE` naming the members that did not (resending is safe: merges are idempotent).
//! A member that was unreachable (down, partitioned) catches up by the periodic sync: every
//! `auth.sync_interval` each node compares a digest of its state with one peer's and merges
//! the peer's full state when they differ. So a revoked token is refused on every reachable
//! node when the call returns, and on any other node at most one sync interval (plus the
//! digest round trip) after it can reach a member that has the revocation.
//!
//! **Sessions.** A login creates a session (id, user, hash of the refresh secret) on every
//! node; its [`crate::session::SessionActor`] lives on the node that owns the session id's
//! shard, like meters and feeders. The actor tracks activity (touches from every node,
//! debounced), ends the session after `auth.session_idle_timeout` without activity, and is the
//! only place a refresh token is checked and rotated (so two refreshes of one token cannot
//! both succeed). Streams (`Push`) are tracked by the node serving them and closed when their
//! session or user is revoked.
//!
//! **Checks** ([`Auth::authenticate`]): the JWT (see `gridmesh_auth::token`), then the user
//! (exists, not disabled, current roles and scope), then revocations (the session, the API
//! token, or "all of this user's tokens before t").

pub mod merge;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gridmesh_auth::password::PasswordHasher;
use gridmesh_auth::role::parse_roles;
use gridmesh_auth::secret::{random_id, random_secret, sha256_b64};
use gridmesh_auth::throttle::{LoginThrottle, ThrottleSettings};
use gridmesh_auth::token::{Claims, KeyRing, TYP_ACCESS, TYP_API, TokenError, TokenPolicy};
use gridmesh_auth::{Principal, Role};
use gridmesh_proto::internal::{
    AuthCall, AuthDigest, AuthDigestRequest, AuthDumpRequest, AuthReply, AuthState, Revocation,
    RevocationKind, SessionRecord, SessionRefresh, SessionTouch, UserRecord, auth_call, auth_reply,
    cluster_reply, cluster_request,
};
use gridmesh_proto::v1::{AuditEvent, TokenPair};
use ractor::ActorRef;
use tokio::sync::watch;
use tonic::Status;

use self::store::{AuthStore, Changed};
use crate::cluster::{Owner, into_result};
use crate::context::{NodeContext, now_ms};
use crate::session::{SessionSupervisorMsg, SessionView};
use crate::status;

/// How long a node waits before telling a session's owner about more activity.
const TOUCH_EVERY: Duration = Duration::from_secs(10);

/// Settings of the auth layer (from `[auth]`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Longest a login session lives.
    pub refresh_ttl: Duration,
    /// A session idle this long ends.
    pub idle_timeout: Duration,
    /// How often state is compared with a peer.
    pub sync_interval: Duration,
    /// Failed-login backoff.
    pub throttle: ThrottleSettings,
}

/// Why a call's token was refused (logged and counted; the caller only sees UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The JWT itself is invalid.
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    /// No such user (anymore).
    #[error("unknown user")]
    UnknownUser,
    /// The user is disabled.
    #[error("user disabled")]
    Disabled,
    /// The session, the API token or all of the user's tokens were revoked.
    #[error("revoked")]
    Revoked,
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Token(e) => e.label(),
            Refusal::UnknownUser => "unknown_user",
            Refusal::Disabled => "disabled",
            Refusal::Revoked => "revoked",
        }
    }
}

/// An open stream tied to a session.
#[derive(Debug)]
struct StreamEntry {
    id: u64,
    user: String,
    close: watch::Sender<bool>,
}

/// Keeps a stream registered while it lives; dropping it unregisters.
#[derive(Debug)]
pub struct StreamGuard {
    auth: Arc<Auth>,
    session_id: String,
    id: u64,
    /// Becomes `true` when the stream's session or user is revoked.
    pub closed: watch::Receiver<bool>,
}

impl StreamGuard {
    /// Resolves when the stream's session, token or user is revoked.
    pub async fn revoked(&mut self) {
        loop {
            if *self.closed.borrow_and_update() {
                return;
            }
            if self.closed.changed().await.is_err() {
                // Unregistered without a revocation: never resolves.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self.auth.lock_streams();
        if let Some(list) = streams.get_mut(&self.session_id) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                streams.remove(&self.session_id);
            }
        }
    }
}

/// The auth layer of one node. Shared by the gRPC layer, the services and the session actors.
pub struct Auth {
    /// Users, sessions, revocations, audit log.
    pub store: AuthStore,
    keys: KeyRing,
    policy: TokenPolicy,
    hasher: PasswordHasher,
    settings: AuthSettings,
    node: String,
    throttle: Mutex<LoginThrottle>,
    touches: Mutex<HashMap<String, Instant>>,
    sessions: RwLock<Option<ActorRef<SessionSupervisorMsg>>>,
    streams: Mutex<HashMap<String, Vec<StreamEntry>>>,
    next_stream: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("node", &self.node)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// A user name's shape: 1 to 64 characters from `[A-Za-z0-9._@-]`.
pub fn check_user_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "user names are 1 to 64 characters from [A-Za-z0-9._@-]",
        ))
    }
}

/// The generic refusal: says nothing about why.
pub fn unauthenticated() -> Status {
    Status::unauthenticated("missing, invalid, expired or revoked credentials")
}

impl Auth {
    /// The auth layer over `store` with the node's keys.
    pub fn new(
        store: AuthStore,
        keys: KeyRing,
        policy: TokenPolicy,
        hasher: PasswordHasher,
        settings: AuthSettings,
        node: &str,
    ) -> Self {
        Self {
            store,
            keys,
            policy,
            throttle: Mutex::new(LoginThrottle::new(settings.throttle)),
            hasher,
            settings,
            node: node.to_owned(),
            touches: Mutex::new(HashMap::new()),
            sessions: RwLock::new(None),
            streams: Mutex::new(HashMap::new()),
            next_stream: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The token policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The current session supervisor.
    pub fn session_supervisor(&self) -> Option<ActorRef<SessionSupervisorMsg>> {
        self.sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_session_supervisor(&self, actor: Option<ActorRef<SessionSupervisorMsg>>) {
        *self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = actor;
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<StreamEntry>>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates a bearer token and builds the principal (see the module docs).
    pub fn authenticate(&self, token: &str) -> Result<(Principal, Claims), Refusal> {
        let claims = self.policy.verify(&self.keys, token)?;
        let mem = self.store.read();
        let user = mem.users.get(&claims.sub).ok_or(Refusal::UnknownUser)?;
        if user.disabled {
            return Err(Refusal::Disabled);
        }
        if mem.user_revoked_before(&claims.sub) > claims.ims as i64 {
            return Err(Refusal::Revoked);
        }
        let revoked = match claims.typ.as_str() {
            TYP_ACCESS => mem.is_revoked(RevocationKind::Session, &claims.sid),
            TYP_API => {
                mem.is_revoked(RevocationKind::Token, &claims.jti)
                    || !user.api_tokens.iter().any(|t| t.token_id == claims.jti)
            }
            _ => true,
        };
        if revoked {
            return Err(Refusal::Revoked);
        }
        let principal = Principal {
            user: user.name.clone(),
            roles: parse_roles(&user.roles).unwrap_or_default(),
            feeders: user.feeders.iter().cloned().collect(),
            session_id: claims.sid.clone(),
            token_id: claims.jti.clone(),
        };
        Ok((principal, claims))
    }

    /// Records an audit event in this node's log (failures to write are logged, not raised:
    /// the audited action has already happened).
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        success: bool,
        detail: &str,
        addr: &str,
    ) {
        let event = AuditEvent {
            ts_ms: now_ms(),
            node: self.node.clone(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            success,
            detail: detail.to_owned(),
            client_addr: addr.to_owned(),
        };
        metrics::counter!("gridmesh_auth_events_total", "action" => action.to_owned(),
            "success" => if success { "true" } else { "false" })
        .increment(1);
        if let Err(e) = self.store.audit(&event) {
            tracing::error!(error = %e, action, "could not write an audit event");
        }
    }

    /// Mints an access token for `user` in session `sid`.
    pub fn access_token(&self, user: &UserRecord, sid: &str) -> (String, i64) {
        let claims = self
            .policy
            .access_claims(&user.name, sid, user.roles.clone());
        let expires = claims.exp as i64 * 1000;
        (self.keys.sign(&claims), expires)
    }

    /// A fresh session for `user` and the token pair of it.
    fn new_session(&self, user: &UserRecord, client_addr: &str) -> (SessionRecord, TokenPair) {
        let now = now_ms();
        let sid = random_id();
        let secret = random_secret();
        let record = SessionRecord {
            session_id: sid.clone(),
            user: user.name.clone(),
            refresh_hash: sha256_b64(secret.as_bytes()),
            previous_refresh_hash: String::new(),
            created_ms: now,
            last_activity_ms: now,
            expires_ms: now + self.settings.refresh_ttl.as_millis() as i64,
            client_addr: client_addr.to_owned(),
            version: merge::next_version(0, now),
        };
        let (access_token, access_expires_ms) = self.access_token(user, &sid);
        let pair = TokenPair {
            access_token,
            access_expires_ms,
            refresh_token: format!("{sid}.{secret}"),
            refresh_expires_ms: record.expires_ms,
            session_id: sid,
        };
        (record, pair)
    }

    /// Password login (see `AuthService.Login`).
    pub async fn login(
        self: &Arc<Self>,
        ctx: &NodeContext,
        name: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<TokenPair, Status> {
        let ip = client_addr
            .rsplit_once(':')
            .map_or(client_addr, |(ip, _)| ip);
        let keys = [format!("user:{name}"), format!("addr:{ip}")];
        let blocked = self
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&keys, Instant::now());
        if let Err(wait) = blocked {
            self.audit("", "login_throttled", name, false, "", client_addr);
            return Err(Status::resource_exhausted(format!(
                "too many failed logins; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let user = self.store.user(name);
        let (this, password) = (self.clone(), password.to_owned());
        let candidate = user.clone();
        let ok = tokio::task::spawn_blocking(move || match candidate {
            Some(u) if !u.disabled && !u.password_hash.is_empty() => {
                this.hasher.verify(&password, &u.password_hash)
            }
            _ => this.hasher.verify_nobody(&password),
        })
        .await
        .map_err(|e| status::internal(&e))?;
        let Some(user) = user.filter(|_| ok) else {
            let delay = self
                .throttle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .failure(&keys, Instant::now());
            let detail = format!("backoff {} ms", delay.as_millis());
            self.audit("", "login_failed", name, false, &detail, client_addr);
            return Err(Status::unauthenticated("invalid user name or password"));
        };
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .success(&keys[0]);
        let (record, pair) = self.new_session(&user, client_addr);
        let state = AuthState {
            sessions: vec![record],
            ..AuthState::default()
        };
        // A member that misses the new session still accepts its access tokens (they are
        // checked by signature); its record arrives with the next sync.
        if let Err(e) = self.apply_everywhere(ctx, state).await {
            tracing::warn!(error = %e.message(), "login session not confirmed by every member");
        }
        self.audit(name, "login", &pair.session_id, true, "", client_addr);
        Ok(pair)
    }

    /// Refresh: routed to the node owning the session, whose actor checks and rotates.
    pub async fn refresh(
        &self,
        ctx: &NodeContext,
        token: &str,
        client_addr: &str,
    ) -> Result<TokenPair, Status> {
        let Some((sid, _)) = token.split_once('.') else {
            return Err(unauthenticated());
        };
        match ctx.cluster.owner_of(sid) {
            Owner::Remote(node) => {
                let call = AuthCall {
                    call: Some(auth_call::Call::Refresh(SessionRefresh {
                        refresh_token: token.to_owned(),
                        client_addr: client_addr.to_owned(),
                    })),
                };
                match forward_auth(ctx, &node, call).await? {
                    auth_reply::Reply::Refresh(pair) => Ok(pair),
                    _ => Err(Status::internal("a peer sent a reply of the wrong kind")),
                }
            }
            Owner::Local | Owner::Nobody => self.refresh_local(token, client_addr).await,
        }
    }

    async fn refresh_local(&self, token: &str, client_addr: &str) -> Result<TokenPair, Status> {
        let supervisor = self
            .session_supervisor()
            .ok_or_else(|| status::actor_unavailable("the session supervisor"))?;
        let (token, addr) = (token.to_owned(), client_addr.to_owned());
        ractor::call_t!(
            supervisor,
            |reply| SessionSupervisorMsg::Refresh {
                token,
                client_addr: addr,
                reply
            },
            10_000
        )
        .map_err(|_| status::actor_unavailable("the session actor"))?
    }

    /// Tells the session's owner about activity, at most every `TOUCH_EVERY` per session
    /// from this node.
    pub fn touch(&self, ctx: &Arc<NodeContext>, session_id: &str) {
        if session_id.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut touches = self
                .touches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if touches
                .get(session_id)
                .is_some_and(|t| now.duration_since(*t) < TOUCH_EVERY)
            {
                return;
            }
            if touches.len() > 10_000 {
                touches.retain(|_, t| now.duration_since(*t) < TOUCH_EVERY);
            }
            touches.insert(session_id.to_owned(), now);
        }
        let touch = SessionTouch {
            session_id: session_id.to_owned(),
            at_ms: now_ms(),
        };
        match ctx.cluster.owner_of(session_id) {
            Owner::Remote(node) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let call = AuthCall {
                        call: Some(auth_call::Call::Touch(touch)),
                    };
                    let _ = forward_auth(&ctx, &node, call).await;
                });
            }
            Owner::Local | Owner::Nobody => self.touch_local(touch),
        }
    }

    fn touch_local(&self, touch: SessionTouch) {
        if let Some(supervisor) = self.session_supervisor() {
            let _ = supervisor.cast(SessionSupervisorMsg::Touch(touch));
        }
    }

    /// Registers a stream of `principal`'s session; it is closed when revoked.
    pub fn register_stream(self: &Arc<Self>, principal: &Principal) -> StreamGuard {
        let (close, closed) = watch::channel(false);
        let id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = if principal.session_id.is_empty() {
            format!("token:{}", principal.token_id)
        } else {
            principal.session_id.clone()
        };
        self.lock_streams()
            .entry(key.clone())
            .or_default()
            .push(StreamEntry {
                id,
                user: principal.user.clone(),
                close,
            });
        StreamGuard {
            auth: self.clone(),
            session_id: key,
            id,
            closed,
        }
    }

    /// Open streams on this node.
    pub fn open_streams(&self) -> usize {
        self.lock_streams().values().map(Vec::len).sum()
    }

    /// Applies what a merge changed: closes streams and ends session actors of revoked
    /// sessions, tokens and users.
    fn effects(&self, changed: &Changed) {
        if changed.is_empty() {
            return;
        }
        let mem = self.store.read();
        let mut ended_sessions = Vec::new();
        let mut ended_users = Vec::new();
        for r in &changed.revocations {
            match RevocationKind::try_from(r.kind) {
                Ok(RevocationKind::Session) => ended_sessions.push(r.id.clone()),
                Ok(RevocationKind::Token) => ended_sessions.push(format!("token:{}", r.id)),
                Ok(RevocationKind::UserBefore) => ended_users.push(r.id.clone()),
                _ => {}
            }
        }
        for name in &changed.users {
            if mem.users.get(name).is_some_and(|u| u.disabled) {
                ended_users.push(name.clone());
            }
        }
        drop(mem);
        let mut streams = self.lock_streams();
        streams.retain(|key, list| {
            let end = ended_sessions.contains(key);
            list.retain(|s| {
                let close = end || ended_users.contains(&s.user);
                if close {
                    let _ = s.close.send(true);
                }
                !close
            });
            !list.is_empty()
        });
        drop(streams);
        if let Some(supervisor) = self.session_supervisor() {
            let _ = supervisor.cast(SessionSupervisorMsg::Ended {
                sessions: ended_sessions,
                users: ended_users,
            });
        }
    }

    /// Merges `state` here (durably) and applies its effects.
    pub fn merge_local(&self, state: AuthState) -> Result<Changed, Status> {
        let changed = self
            .store
            .merge(state, now_ms())
            .map_err(|e| status::internal(&e))?;
        self.effects(&changed);
        Ok(changed)
    }

    /// Merges `state` here, then on every reachable member; returns the members that
    /// confirmed (this one first). Fails UNAVAILABLE naming those that did not.
    pub async fn apply_everywhere(
        &self,
        ctx: &NodeContext,
        state: AuthState,
    ) -> Result<Vec<String>, Status> {
        let blocking_state = state.clone();
        self.merge_local(blocking_state)?;
        let peers = ctx.cluster.reachable_peers();
        let results = futures::future::join_all(peers.iter().map(|node| {
            let call = AuthCall {
                call: Some(auth_call::Call::Apply(state.clone())),
            };
            async move { (node.clone(), forward_auth(ctx, node, call).await) }
        }))
        .await;
        let mut confirmed = vec![self.node.clone()];
        let mut failed = Vec::new();
        for (node, result) in results {
            match result {
                Ok(_) => confirmed.push(node),
                Err(e) => failed.push(format!("{node}: {}", e.message())),
            }
        }
        if failed.is_empty() {
            return Ok(confirmed);
        }
        Err(Status::unavailable(format!(
            "applied on {} of {} members; not confirmed by {}. They catch up within \
             auth.sync_interval of being reachable again; sending the same request again is safe",
            confirmed.len(),
            peers.len() + 1,
            failed.join("; ")
        )))
    }

    /// Revokes one session everywhere.
    pub async fn revoke_session(
        &self,
        ctx: &NodeContext,
        sid: &str,
    ) -> Result<Vec<String>, Status> {
        let expires = self.store.session(sid).map_or(
            now_ms() + self.settings.refresh_ttl.as_millis() as i64,
            |s| s.expires_ms,
        );
        let revocation = Revocation {
            kind: RevocationKind::Session as i32,
            id: sid.to_owned(),
            before_ms: 0,
            // Access tokens of the session may outlive the refresh token by one access TTL.
            expires_ms: expires + self.policy.access_ttl_s as i64 * 1000,
            revoked_ms: now_ms(),
        };
        self.apply_everywhere(ctx, revocations(vec![revocation]))
            .await
    }

    /// Revokes every session and token of `user` issued until now, everywhere.
    pub async fn revoke_user(&self, ctx: &NodeContext, user: &str) -> Result<Vec<String>, Status> {
        let now = now_ms();
        let revocation = Revocation {
            kind: RevocationKind::UserBefore as i32,
            id: user.to_owned(),
            before_ms: now,
            expires_ms: now + self.policy.max_api_ttl_s as i64 * 1000,
            revoked_ms: now,
        };
        self.apply_everywhere(ctx, revocations(vec![revocation]))
            .await
    }

    /// Compares state with one reachable peer and merges the peer's when they differ;
    /// drops expired records. Run every `auth.sync_interval` by the session supervisor.
    pub async fn sync_round(&self, ctx: &NodeContext) {
        let now = now_ms();
        if let Err(e) = self.store.gc(now) {
            tracing::warn!(error = %e, "auth gc failed");
        }
        let peers = ctx.cluster.reachable_peers();
        if peers.is_empty() {
            return;
        }
        let peer = &peers[rand::random_range(0..peers.len())];
        let call = AuthCall {
            call: Some(auth_call::Call::Digest(AuthDigestRequest {})),
        };
        let Ok(auth_reply::Reply::Digest(theirs)) = forward_auth(ctx, peer, call).await else {
            return;
        };
        let (hash, entries) = self.store.read().digest();
        if theirs.hash == hash && theirs.entries == entries {
            return;
        }
        let call = AuthCall {
            call: Some(auth_call::Call::Dump(AuthDumpRequest {})),
        };
        if let Ok(auth_reply::Reply::Dump(state)) = forward_auth(ctx, peer, call).await {
            match self.merge_local(state) {
                Ok(changed) if !changed.is_empty() => tracing::info!(
                    peer,
                    users = changed.users.len(),
                    sessions = changed.sessions.len(),
                    revocations = changed.revocations.len(),
                    "auth state synced from peer"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(peer, error = %e.message(), "auth sync failed"),
            }
        }
    }

    /// Answers an auth call forwarded by a peer.
    pub async fn answer(&self, ctx: &NodeContext, call: AuthCall) -> Result<AuthReply, Status> {
        let Some(call) = call.call else {
            return Err(Status::invalid_argument("auth call without a call"));
        };
        let reply = match call {
            auth_call::Call::Apply(state) => {
                self.merge_local(state)?;
                auth_reply::Reply::Applied(Default::default())
            }
            auth_call::Call::Digest(_) => {
                let (hash, entries) = self.store.read().digest();
                auth_reply::Reply::Digest(AuthDigest { hash, entries })
            }
            auth_call::Call::Dump(_) => auth_reply::Reply::Dump(self.store.read().dump()),
            auth_call::Call::Refresh(r) => auth_reply::Reply::Refresh(
                self.refresh_local(&r.refresh_token, &r.client_addr).await?,
            ),
            auth_call::Call::Touch(touch) => {
                self.touch_local(touch);
                auth_reply::Reply::Touch(Default::default())
            }
            auth_call::Call::Audit(req) => auth_reply::Reply::Audit(self.local_audit(&req)?),
            auth_call::Call::Sessions(_) => {
                auth_reply::Reply::Sessions(gridmesh_proto::v1::ListSessionsResponse {
                    sessions: self.live_sessions(ctx).await,
                })
            }
        };
        Ok(AuthReply { reply: Some(reply) })
    }

    /// This node's audit events for a request.
    pub fn local_audit(
        &self,
        req: &gridmesh_proto::v1::ListAuditEventsRequest,
    ) -> Result<gridmesh_proto::v1::ListAuditEventsResponse, Status> {
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit.min(10_000)
        } as usize;
        let events = self
            .store
            .audit_events(req.since_ms, &req.user, limit)
            .map_err(|e| status::internal(&e))?;
        Ok(gridmesh_proto::v1::ListAuditEventsResponse {
            events,
            unavailable_nodes: vec![],
        })
    }

    /// Live activity of the sessions whose actors run here.
    pub async fn live_sessions(&self, ctx: &NodeContext) -> Vec<gridmesh_proto::v1::SessionInfo> {
        let Some(supervisor) = self.session_supervisor() else {
            return Vec::new();
        };
        let views: Vec<SessionView> =
            ractor::call_t!(supervisor, SessionSupervisorMsg::List, 5_000).unwrap_or_default();
        views
            .into_iter()
            .map(|v| gridmesh_proto::v1::SessionInfo {
                session_id: v.session_id,
                user: v.user,
                last_activity_ms: v.last_activity_ms,
                owner_node: ctx.cluster.name().to_owned(),
                ..Default::default()
            })
            .collect()
    }

    /// Whether `principal` holds `role`.
    pub fn is(principal: &Principal, role: Role) -> bool {
        principal.has(role)
    }
}

/// An auth state holding only revocations.
pub fn revocations(revocations: Vec<Revocation>) -> AuthState {
    AuthState {
        revocations,
        ..AuthState::default()
    }
}

/// Forwards an auth call to `node` and unwraps its reply.
pub async fn forward_auth(
    ctx: &NodeContext,
    node: &str,
    call: AuthCall,
) -> Result<auth_reply::Reply, Status> {
    let reply = ctx
        .cluster
        .forward(node, cluster_request::Call::Auth(call), true)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    match into_result(node, reply)? {
        Some(cluster_reply::Reply::Auth(AuthReply { reply: Some(reply) })) => Ok(reply),
        _ => Err(Status::internal(format!(
            "node {node} sent a reply of the wrong kind"
        ))),
    }
}
