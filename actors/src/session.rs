//! `SessionSupervisor` and `SessionActor`: one actor per logged-in session.
//!
//! A session's actor runs on the node that owns its id's shard (placement as for meters and
//! feeders); other nodes route refreshes and activity to it. It is activated on demand from
//! the session record every node stores, so when the owner changes (a node dies, joins,
//! drains) the new owner simply activates it on the next refresh or touch.
//!
//! The actor tracks the session's last activity and ends the session (revoking it on every
//! node) after `auth.session_idle_timeout` without any; it is the one place a refresh token is
//! checked and rotated, so two concurrent refreshes of one token cannot both succeed, and the
//! reuse of an already rotated refresh token (a stolen copy) revokes the session.
//!
//! Supervision: the node supervisor supervises the `SessionSupervisor` (one_for_one with the
//! node's restart budget); it supervises one `SessionActor` per active session. Restart
//! policy: transient. A session actor that fails is not restarted eagerly: the next refresh or
//! touch activates it again from the stored record, which is exact (nothing but activity since
//! the last refresh lives only in the actor, and losing it only moves the idle deadline
//! earlier). More than `actors.max_restarts` failures within `actors.restart_window` escalate
//! to the node supervisor. A session actor that stops normally (logout, idle, expiry) is no
//! failure. The supervisor also runs the periodic auth sync (`auth.sync_interval`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_auth::secret::{constant_time_eq, random_secret, sha256_b64};
use gridmesh_proto::internal::{AuthState, RevocationKind, SessionRecord, SessionTouch};
use gridmesh_proto::v1::TokenPair;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tonic::Status;

use crate::auth::{Auth, merge, unauthenticated};
use crate::context::{Counters, NodeContext, now_ms};
use crate::restart::{RestartBudget, RestartDecision};

/// Stop reasons of sessions that ended normally start with this.
const END_PREFIX: &str = "session ended:";

/// Messages of the session supervisor. Local only.
#[derive(RactorMessage)]
pub enum SessionSupervisorMsg {
    /// Check and rotate a refresh token (`<session id>.<secret>`).
    Refresh {
        /// The refresh token.
        token: String,
        /// Where the call came from.
        client_addr: String,
        /// The new pair, or UNAUTHENTICATED.
        reply: RpcReplyPort<Result<TokenPair, Status>>,
    },
    /// Activity of a session.
    Touch(SessionTouch),
    /// Sessions (ids) and users whose sessions were revoked: their actors stop.
    Ended {
        /// Session ids.
        sessions: Vec<String>,
        /// User names (every session of theirs).
        users: Vec<String>,
    },
    /// The active sessions.
    List(RpcReplyPort<Vec<SessionView>>),
    /// The actor of one active session, if any (for tests and diagnostics).
    Lookup(String, RpcReplyPort<Option<ActorRef<SessionMsg>>>),
    /// Compare auth state with a peer (periodic).
    Sync,
    /// A sync round finished.
    SyncDone,
}

/// Messages of one session actor. Local only.
#[derive(RactorMessage)]
pub enum SessionMsg {
    /// See [`SessionSupervisorMsg::Refresh`]; `secret` is the part after the dot.
    Refresh {
        /// The refresh secret.
        secret: String,
        /// Reply.
        reply: RpcReplyPort<Result<TokenPair, Status>>,
    },
    /// Activity at this time (ms).
    Touch(i64),
    /// Check the idle deadline.
    IdleCheck,
    /// The session's live view.
    View(RpcReplyPort<SessionView>),
}

/// What an active session actor reports.
#[derive(Debug, Clone, Default)]
pub struct SessionView {
    /// Session id.
    pub session_id: String,
    /// User.
    pub user: String,
    /// Last activity seen, ms.
    pub last_activity_ms: i64,
}

/// The session supervisor.
#[derive(Debug)]
pub struct SessionSupervisor;

/// State of the session supervisor.
pub struct SessionSupervisorState {
    ctx: Arc<NodeContext>,
    auth: Arc<Auth>,
    active: HashMap<String, (ActorRef<SessionMsg>, String)>,
    by_actor: HashMap<ActorId, String>,
    restarts: RestartBudget,
    syncing: bool,
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = SessionSupervisorState;
    type Arguments = (Arc<NodeContext>, Arc<Auth>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, auth): (Arc<NodeContext>, Arc<Auth>),
    ) -> Result<Self::State, ActorProcessingErr> {
        auth.set_session_supervisor(Some(myself.clone()));
        myself.send_interval(auth.settings().sync_interval, || SessionSupervisorMsg::Sync);
        let actors = &ctx.config.actors;
        Ok(SessionSupervisorState {
            restarts: RestartBudget::new(actors.max_restarts, actors.restart_window),
            ctx,
            auth,
            active: HashMap::new(),
            by_actor: HashMap::new(),
            syncing: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Only clear the reference if it is still ours (a restart may have replaced it).
        if s.auth
            .session_supervisor()
            .is_some_and(|current| current.get_id() == myself.get_id())
        {
            s.auth.set_session_supervisor(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionSupervisorMsg::Refresh {
                token,
                client_addr,
                reply,
            } => {
                s.refresh(&myself, token, client_addr, reply).await?;
            }
            SessionSupervisorMsg::Touch(touch) => {
                if let Some(actor) = s.actor(&myself, &touch.session_id).await? {
                    let _ = actor.cast(SessionMsg::Touch(touch.at_ms));
                }
            }
            SessionSupervisorMsg::Ended { sessions, users } => s.end(&sessions, &users),
            SessionSupervisorMsg::List(reply) => {
                let mut views = Vec::new();
                for (actor, _) in s.active.values() {
                    if let Ok(view) = ractor::call_t!(actor, SessionMsg::View, 1000) {
                        views.push(view);
                    }
                }
                let _ = reply.send(views);
            }
            SessionSupervisorMsg::Lookup(sid, reply) => {
                let _ = reply.send(s.active.get(&sid).map(|(actor, _)| actor.clone()));
            }
            SessionSupervisorMsg::Sync => s.sync(&myself),
            SessionSupervisorMsg::SyncDone => s.syncing = false,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match &event {
            // A session that ended stops with a reason of ours; anything else (killed, stopped
            // from outside) counts as a failure.
            SupervisionEvent::ActorTerminated(cell, _, Some(reason))
                if reason.starts_with(END_PREFIX) =>
            {
                (cell, None)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                Some(reason.clone().unwrap_or_else(|| "stopped".to_owned())),
            ),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        let Some(sid) = s.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        s.active.remove(&sid);
        s.publish_count();
        let Some(error) = failure else {
            return Ok(());
        };
        tracing::warn!(session = %short(&sid), error, "session actor failed");
        metrics::counter!("gridmesh_actor_failures_total", "kind" => "session").increment(1);
        Counters::add(&s.ctx.counters.actor_failures, 1);
        match s.restarts.record_failure(Instant::now()) {
            RestartDecision::Restart { .. } => Ok(()),
            RestartDecision::Escalate => {
                Err("session actor failures exceeded the restart budget".into())
            }
        }
    }
}

/// The first characters of a session id, enough to tell sessions apart in logs without
/// printing a whole identifier that is part of a refresh token.
fn short(sid: &str) -> &str {
    sid.get(..6).unwrap_or(sid)
}

impl SessionSupervisorState {
    async fn refresh(
        &mut self,
        myself: &ActorRef<SessionSupervisorMsg>,
        token: String,
        client_addr: String,
        reply: RpcReplyPort<Result<TokenPair, Status>>,
    ) -> Result<(), ActorProcessingErr> {
        let Some((sid, secret)) = token.split_once('.') else {
            let _ = reply.send(Err(unauthenticated()));
            return Ok(());
        };
        match self.actor(myself, sid).await? {
            Some(actor) => {
                let secret = secret.to_owned();
                let _ = actor.cast(SessionMsg::Refresh { secret, reply });
            }
            None => {
                self.auth.audit(
                    "",
                    "refresh",
                    short(sid),
                    false,
                    "unknown session",
                    &client_addr,
                );
                let _ = reply.send(Err(unauthenticated()));
            }
        }
        Ok(())
    }

    /// The actor of session `sid`, activated from its record; `None` when the session does
    /// not exist, is revoked or expired.
    async fn actor(
        &mut self,
        myself: &ActorRef<SessionSupervisorMsg>,
        sid: &str,
    ) -> Result<Option<ActorRef<SessionMsg>>, ActorProcessingErr> {
        if let Some((actor, _)) = self.active.get(sid) {
            return Ok(Some(actor.clone()));
        }
        let Some(record) = self.auth.store.session(sid) else {
            return Ok(None);
        };
        let revoked = {
            let mem = self.auth.store.read();
            mem.is_revoked(RevocationKind::Session, sid)
                || mem.user_revoked_before(&record.user) > record.created_ms
        };
        if revoked || record.expires_ms < now_ms() {
            return Ok(None);
        }
        let user = record.user.clone();
        let args = SessionArgs {
            ctx: self.ctx.clone(),
            auth: self.auth.clone(),
            record,
        };
        let (actor, _) = Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), sid.to_owned());
        self.active.insert(sid.to_owned(), (actor.clone(), user));
        self.publish_count();
        Ok(Some(actor))
    }

    /// Publishes the number of resident sessions (metrics and the admin API).
    fn publish_count(&self) {
        let count = self.active.len() as u64;
        metrics::gauge!("gridmesh_sessions_active").set(count as f64);
        self.ctx
            .counters
            .active_sessions
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    fn end(&mut self, sessions: &[String], users: &[String]) {
        for (sid, (actor, user)) in &self.active {
            if sessions.contains(sid) || users.contains(user) {
                actor.stop(Some(format!("{END_PREFIX} revoked")));
            }
        }
    }

    fn sync(&mut self, myself: &ActorRef<SessionSupervisorMsg>) {
        self.publish_count();
        if self.syncing {
            return;
        }
        self.syncing = true;
        let (ctx, auth, myself) = (self.ctx.clone(), self.auth.clone(), myself.clone());
        tokio::spawn(async move {
            auth.sync_round(&ctx).await;
            let _ = myself.cast(SessionSupervisorMsg::SyncDone);
        });
    }
}

/// One login session.
#[derive(Debug)]
pub struct SessionActor;

/// Start-up arguments of a session actor.
pub struct SessionArgs {
    ctx: Arc<NodeContext>,
    auth: Arc<Auth>,
    record: SessionRecord,
}

/// State of a session actor.
pub struct SessionState {
    ctx: Arc<NodeContext>,
    auth: Arc<Auth>,
    record: SessionRecord,
    last_activity_ms: i64,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let state = SessionState {
            last_activity_ms: args.record.last_activity_ms,
            ctx: args.ctx,
            auth: args.auth,
            record: args.record,
        };
        state.schedule_idle_check(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        s: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Refresh { secret, reply } => {
                let result = s.refresh(&secret).await;
                let ended = result.is_err() && s.is_over();
                let _ = reply.send(result);
                if ended {
                    myself.stop(Some(format!("{END_PREFIX} over")));
                }
            }
            SessionMsg::Touch(at_ms) => s.last_activity_ms = s.last_activity_ms.max(at_ms),
            SessionMsg::IdleCheck => {
                if s.idle_for_ms(now_ms()) >= s.idle_ms() {
                    s.end_idle().await;
                    myself.stop(Some(format!("{END_PREFIX} idle")));
                } else if now_ms() >= s.record.expires_ms {
                    myself.stop(Some(format!("{END_PREFIX} expired")));
                } else {
                    s.schedule_idle_check(&myself);
                }
            }
            SessionMsg::View(reply) => {
                let _ = reply.send(SessionView {
                    session_id: s.record.session_id.clone(),
                    user: s.record.user.clone(),
                    last_activity_ms: s.last_activity_ms,
                });
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn idle_ms(&self) -> i64 {
        self.auth.settings().idle_timeout.as_millis() as i64
    }

    fn idle_for_ms(&self, now: i64) -> i64 {
        now - self.last_activity_ms
    }

    fn schedule_idle_check(&self, myself: &ActorRef<SessionMsg>) {
        let left = (self.idle_ms() - self.idle_for_ms(now_ms())).max(1);
        let until_expiry = (self.record.expires_ms - now_ms()).max(1);
        let after = Duration::from_millis(left.min(until_expiry) as u64 + 10);
        myself.send_after(after, || SessionMsg::IdleCheck);
    }

    /// Whether the session cannot be used any more (revoked, expired, idle).
    fn is_over(&self) -> bool {
        let now = now_ms();
        let mem = self.auth.store.read();
        mem.is_revoked(RevocationKind::Session, &self.record.session_id)
            || now >= self.record.expires_ms
            || self.idle_for_ms(now) >= self.idle_ms()
    }

    async fn end_idle(&self) {
        let sid = &self.record.session_id;
        tracing::info!(session = %short(sid), user = %self.record.user, "session idle; ended");
        self.auth.audit(
            &self.record.user,
            "session_idle_expired",
            short(sid),
            true,
            "",
            "",
        );
        if let Err(e) = self.auth.revoke_session(&self.ctx, sid).await {
            tracing::warn!(error = %e.message(), "idle session's revocation not confirmed by all");
        }
    }

    async fn refresh(&mut self, secret: &str) -> Result<TokenPair, Status> {
        let now = now_ms();
        let (sid, user_name) = (self.record.session_id.clone(), self.record.user.clone());
        let addr = self.record.client_addr.clone();
        let fail = |why: &str| {
            self.auth
                .audit(&user_name, "refresh", short(&sid), false, why, &addr);
            Err(unauthenticated())
        };
        if self.is_over() {
            if self.idle_for_ms(now) >= self.idle_ms() {
                self.end_idle().await;
            }
            return fail("session over");
        }
        let user = {
            let mem = self.auth.store.read();
            let revoked = mem.user_revoked_before(&user_name) > self.record.created_ms;
            mem.users
                .get(&user_name)
                .filter(|u| !u.disabled && !revoked)
                .cloned()
        };
        let Some(user) = user else {
            return fail("user disabled, deleted or revoked");
        };
        let presented = sha256_b64(secret.as_bytes());
        if constant_time_eq(
            presented.as_bytes(),
            self.record.previous_refresh_hash.as_bytes(),
        ) {
            // A rotated token came back: someone holds a copy. End the session everywhere.
            tracing::warn!(session = %short(&sid), user = %user_name, "refresh token reuse");
            self.auth
                .audit(&user_name, "refresh_reuse", short(&sid), false, "", &addr);
            let _ = self.auth.revoke_session(&self.ctx, &sid).await;
            return Err(unauthenticated());
        }
        if !constant_time_eq(presented.as_bytes(), self.record.refresh_hash.as_bytes()) {
            return fail("wrong refresh secret");
        }
        self.rotate(&user, now).await
    }

    async fn rotate(
        &mut self,
        user: &gridmesh_proto::internal::UserRecord,
        now: i64,
    ) -> Result<TokenPair, Status> {
        let secret = random_secret();
        let mut record = self.record.clone();
        record.previous_refresh_hash = std::mem::take(&mut record.refresh_hash);
        record.refresh_hash = sha256_b64(secret.as_bytes());
        record.last_activity_ms = now;
        record.version = merge::next_version(record.version, now);
        let state = AuthState {
            sessions: vec![record.clone()],
            ..AuthState::default()
        };
        if let Err(e) = self.auth.apply_everywhere(&self.ctx, state).await {
            // Stored here (the owner, the only place refreshes are checked); peers catch up.
            if e.code() != tonic::Code::Unavailable {
                return Err(e);
            }
        }
        self.record = record;
        self.last_activity_ms = now;
        let (access_token, access_expires_ms) =
            self.auth.access_token(user, &self.record.session_id);
        self.auth.audit(
            &user.name,
            "refresh",
            short(&self.record.session_id),
            true,
            "",
            "",
        );
        Ok(TokenPair {
            access_token,
            access_expires_ms,
            refresh_token: format!("{}.{secret}", self.record.session_id),
            refresh_expires_ms: self.record.expires_ms,
            session_id: self.record.session_id.clone(),
        })
    }
}
