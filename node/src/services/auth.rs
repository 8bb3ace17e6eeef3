//! `AuthService`: login, refresh, logout, users, sessions, API tokens and the audit log.
//!
//! The auth layer ([`crate::authn`]) has already checked the caller's role against the
//! permission table; handlers here check the request itself and act through
//! [`gridmesh_actors::auth::Auth`], which stores changes on every reachable member.

use std::collections::BTreeSet;
use std::sync::Arc;

use gridmesh_actors::auth::{Auth, check_user_name, forward_auth, merge, revocations};
use gridmesh_actors::context::{NodeContext, now_ms};
use gridmesh_auth::password::check_policy;
use gridmesh_auth::role::parse_roles;
use gridmesh_auth::token::Claims;
use gridmesh_auth::{Principal, Role};
use gridmesh_proto::ids::check_feeder_id;
use gridmesh_proto::internal::{
    AuthCall, AuthState, Revocation, RevocationKind, SessionsQuery, UserRecord, auth_call,
    auth_reply,
};
use gridmesh_proto::v1::auth_service_server::AuthService;
use gridmesh_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::authn::principal;
use crate::status;

/// The auth service.
#[derive(Debug, Clone)]
pub struct AuthApi {
    auth: Arc<Auth>,
    ctx: Arc<NodeContext>,
}

impl AuthApi {
    /// A service over the node's auth layer.
    pub fn new(auth: Arc<Auth>, ctx: Arc<NodeContext>) -> Self {
        Self { auth, ctx }
    }

    async fn hash(&self, password: String) -> Result<String, Status> {
        let auth = self.auth.clone();
        gridmesh_actors::status::blocking(move || {
            auth.hasher()
                .hash(&password)
                .map_err(|e| status::internal(&e))
        })
        .await
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, Status> {
        let auth = self.auth.clone();
        gridmesh_actors::status::blocking(move || Ok(auth.hasher().verify(&password, &hash))).await
    }

    fn to_user(&self, record: &UserRecord) -> User {
        let mem = self.auth.store.read();
        User {
            name: record.name.clone(),
            roles: record.roles.clone(),
            feeders: record.feeders.clone(),
            disabled: record.disabled,
            service_account: record.service_account,
            created_ms: record.created_ms,
            updated_ms: record.updated_ms,
            api_tokens: record
                .api_tokens
                .iter()
                .map(|t| ApiTokenInfo {
                    revoked: t.revoked || mem.is_revoked(RevocationKind::Token, &t.token_id),
                    ..t.clone()
                })
                .collect(),
        }
    }

    /// Stores a changed user record everywhere, with a new version.
    async fn save_user(&self, mut record: UserRecord) -> Result<UserRecord, Status> {
        let now = now_ms();
        record.version = merge::next_version(record.version, now);
        record.updated_by = self.auth.node().to_owned();
        record.updated_ms = now;
        let state = AuthState {
            users: vec![record.clone()],
            ..AuthState::default()
        };
        self.auth.apply_everywhere(&self.ctx, state).await?;
        Ok(record)
    }

    /// Refuses a change that would leave no enabled admin.
    fn keeps_an_admin(&self, changed: &UserRecord) -> Result<(), Status> {
        let mem = self.auth.store.read();
        let is_admin = |u: &UserRecord| !u.disabled && u.roles.iter().any(|r| r == "admin");
        let others = mem
            .users
            .values()
            .filter(|u| u.name != changed.name)
            .any(is_admin);
        if others || is_admin(changed) {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "this change would leave no enabled admin; create another admin first",
            ))
        }
    }

    /// Peers' answers to an auth call, and the members that did not answer.
    async fn gather(&self, call: AuthCall) -> (Vec<auth_reply::Reply>, Vec<String>) {
        let peers = self.ctx.cluster.reachable_peers();
        let replies = futures::future::join_all(peers.iter().map(|node| {
            let call = call.clone();
            async move { (node.clone(), forward_auth(&self.ctx, node, call).await) }
        }))
        .await;
        let mut ok = Vec::new();
        let mut missing = Vec::new();
        for (node, reply) in replies {
            match reply {
                Ok(reply) => ok.push(reply),
                Err(_) => missing.push(node),
            }
        }
        (ok, missing)
    }
}

fn addr<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

fn check_roles_and_feeders(roles: &[String], feeders: &[String]) -> Result<(), Status> {
    let parsed = parse_roles(roles).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if parsed.is_empty() {
        return Err(Status::invalid_argument("give the user at least one role"));
    }
    for feeder in feeders {
        check_feeder_id(feeder).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(())
}

fn sorted(items: &[String]) -> Vec<String> {
    items
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<TokenPair>, Status> {
        let client = addr(&request);
        let req = request.into_inner();
        let pair = self
            .auth
            .login(&self.ctx, &req.user, &req.password, &client)
            .await?;
        Ok(Response::new(pair))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<TokenPair>, Status> {
        let client = addr(&request);
        let token = request.into_inner().refresh_token;
        let pair = self.auth.refresh(&self.ctx, &token, &client).await?;
        Ok(Response::new(pair))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let me = principal(&request)?;
        if me.session_id.is_empty() {
            return Err(Status::failed_precondition(
                "an API token has no session to log out of; an admin revokes it with \
                 RevokeApiToken",
            ));
        }
        let nodes_confirmed = self.auth.revoke_session(&self.ctx, &me.session_id).await?;
        self.auth.audit(
            &me.user,
            "logout",
            &me.session_id,
            true,
            "",
            &addr(&request),
        );
        Ok(Response::new(LogoutResponse { nodes_confirmed }))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let me = principal(&request)?;
        let claims = request.extensions().get::<Claims>().cloned();
        Ok(Response::new(WhoAmIResponse {
            user: me.user.clone(),
            roles: me.roles.iter().map(|r| r.name().to_owned()).collect(),
            feeders: me.feeders.iter().cloned().collect(),
            session_id: me.session_id.clone(),
            token_kind: claims.as_ref().map(|c| c.typ.clone()).unwrap_or_default(),
            expires_ms: claims.map_or(0, |c| c.exp as i64 * 1000),
        }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        let record = self
            .auth
            .store
            .user(&me.user)
            .ok_or_else(gridmesh_actors::auth::unauthenticated)?;
        if record.service_account {
            return Err(Status::failed_precondition(
                "service accounts have no password",
            ));
        }
        if !self
            .verify(req.current_password, record.password_hash.clone())
            .await?
        {
            self.auth.audit(
                &me.user,
                "password_changed",
                &me.user,
                false,
                "wrong current",
                &client,
            );
            return Err(Status::invalid_argument("the current password is wrong"));
        }
        check_policy(&me.user, &req.new_password)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut record = record;
        record.password_hash = self.hash(req.new_password).await?;
        self.save_user(record).await?;
        self.auth.revoke_user(&self.ctx, &me.user).await?;
        self.auth
            .audit(&me.user, "password_changed", &me.user, true, "", &client);
        Ok(Response::new(ChangePasswordResponse {}))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        check_user_name(&req.name)?;
        check_roles_and_feeders(&req.roles, &req.feeders)?;
        if self.auth.store.user(&req.name).is_some() {
            return Err(Status::already_exists("a user of that name exists"));
        }
        let password_hash = if req.service_account {
            if !req.password.is_empty() {
                return Err(Status::invalid_argument(
                    "service accounts have no password; create an API token for them",
                ));
            }
            String::new()
        } else {
            check_policy(&req.name, &req.password)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.hash(req.password).await?
        };
        let record = UserRecord {
            name: req.name.clone(),
            password_hash,
            roles: sorted(&req.roles),
            feeders: sorted(&req.feeders),
            service_account: req.service_account,
            created_ms: now_ms(),
            ..UserRecord::default()
        };
        let record = self.save_user(record).await?;
        let detail = format!(
            "roles={} feeders={}",
            record.roles.join(","),
            record.feeders.join(",")
        );
        self.auth.audit(
            &me.user,
            "user_created",
            &record.name,
            true,
            &detail,
            &client,
        );
        Ok(Response::new(CreateUserResponse {
            user: Some(self.to_user(&record)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        let mut record = self
            .auth
            .store
            .user(&req.name)
            .ok_or_else(|| Status::not_found("no such user"))?;
        let mut changes = Vec::new();
        if let Some(disabled) = req.disabled {
            record.disabled = disabled;
            changes.push(format!("disabled={disabled}"));
        }
        if req.set_roles {
            check_roles_and_feeders(&req.roles, &[])?;
            record.roles = sorted(&req.roles);
            changes.push(format!("roles={}", record.roles.join(",")));
        }
        if req.set_feeders {
            check_roles_and_feeders(&["viewer".to_owned()], &req.feeders)?;
            record.feeders = sorted(&req.feeders);
            changes.push(format!("feeders={}", record.feeders.join(",")));
        }
        let reset = !req.new_password.is_empty();
        if reset {
            if record.service_account {
                return Err(Status::failed_precondition(
                    "service accounts have no password",
                ));
            }
            check_policy(&record.name, &req.new_password)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            record.password_hash = self.hash(req.new_password).await?;
            changes.push("password reset".to_owned());
        }
        self.keeps_an_admin(&record)?;
        let record = self.save_user(record).await?;
        if reset {
            self.auth.revoke_user(&self.ctx, &record.name).await?;
        }
        self.auth.audit(
            &me.user,
            "user_updated",
            &record.name,
            true,
            &changes.join(" "),
            &client,
        );
        Ok(Response::new(UpdateUserResponse {
            user: Some(self.to_user(&record)),
        }))
    }

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let mut records: Vec<UserRecord> = self.auth.store.read().users.values().cloned().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let users = records.iter().map(|r| self.to_user(r)).collect();
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let req = request.into_inner();
        let mut sessions: Vec<SessionInfo> = {
            let mem = self.auth.store.read();
            mem.sessions
                .values()
                .filter(|s| req.user.is_empty() || s.user == req.user)
                .map(|s| {
                    let revoked = mem.is_revoked(RevocationKind::Session, &s.session_id)
                        || mem.user_revoked_before(&s.user) > s.created_ms;
                    SessionInfo {
                        session_id: s.session_id.clone(),
                        user: s.user.clone(),
                        created_ms: s.created_ms,
                        last_activity_ms: s.last_activity_ms,
                        expires_ms: s.expires_ms,
                        revoked,
                        client_addr: s.client_addr.clone(),
                        owner_node: String::new(),
                    }
                })
                .filter(|s| req.include_revoked || !s.revoked)
                .collect()
        };
        let call = AuthCall {
            call: Some(auth_call::Call::Sessions(SessionsQuery {
                request: Some(req.clone()),
            })),
        };
        let (replies, _) = self.gather(call).await;
        let mut live = self.auth.live_sessions(&self.ctx).await;
        for reply in replies {
            if let auth_reply::Reply::Sessions(r) = reply {
                live.extend(r.sessions);
            }
        }
        for session in &mut sessions {
            if let Some(l) = live.iter().find(|l| l.session_id == session.session_id) {
                session.last_activity_ms = session.last_activity_ms.max(l.last_activity_ms);
                session.owner_node.clone_from(&l.owner_node);
            }
        }
        sessions.sort_by_key(|s| s.created_ms);
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<RevokeSessionsRequest>,
    ) -> Result<Response<RevokeSessionsResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        let (target, confirmed) = match (req.session_id.is_empty(), req.user.is_empty()) {
            (false, true) => {
                let confirmed = self.auth.revoke_session(&self.ctx, &req.session_id).await?;
                (req.session_id, confirmed)
            }
            (true, false) => {
                check_user_name(&req.user)?;
                let confirmed = self.auth.revoke_user(&self.ctx, &req.user).await?;
                (req.user, confirmed)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of session_id (one session) or user (all of theirs)",
                ));
            }
        };
        self.auth
            .audit(&me.user, "sessions_revoked", &target, true, "", &client);
        Ok(Response::new(RevokeSessionsResponse {
            nodes_confirmed: confirmed,
        }))
    }

    async fn create_api_token(
        &self,
        request: Request<CreateApiTokenRequest>,
    ) -> Result<Response<CreateApiTokenResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        let mut record = self
            .auth
            .store
            .user(&req.user)
            .ok_or_else(|| Status::not_found("no such user"))?;
        let policy = self.auth.policy();
        let ttl = if req.ttl_s == 0 {
            policy.max_api_ttl_s
        } else {
            req.ttl_s
        };
        let claims = policy.api_claims(&record.name, record.roles.clone(), ttl);
        let info = ApiTokenInfo {
            token_id: claims.jti.clone(),
            description: req.description.chars().take(200).collect(),
            created_ms: claims.iat as i64 * 1000,
            expires_ms: claims.exp as i64 * 1000,
            revoked: false,
        };
        record.api_tokens.push(info.clone());
        self.save_user(record).await?;
        self.auth.audit(
            &me.user,
            "api_token_created",
            &req.user,
            true,
            &info.token_id,
            &client,
        );
        Ok(Response::new(CreateApiTokenResponse {
            token: self.auth.keys().sign(&claims),
            info: Some(info),
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<RevokeApiTokenResponse>, Status> {
        let me = principal(&request)?;
        let client = addr(&request);
        let req = request.into_inner();
        let mut record = self
            .auth
            .store
            .user(&req.user)
            .ok_or_else(|| Status::not_found("no such user"))?;
        let Some(info) = record
            .api_tokens
            .iter_mut()
            .find(|t| t.token_id == req.token_id)
        else {
            return Err(Status::not_found("the user has no API token with that id"));
        };
        info.revoked = true;
        let revocation = Revocation {
            kind: RevocationKind::Token as i32,
            id: req.token_id.clone(),
            before_ms: 0,
            expires_ms: info.expires_ms,
            revoked_ms: now_ms(),
        };
        let confirmed = self
            .auth
            .apply_everywhere(&self.ctx, revocations(vec![revocation]))
            .await?;
        self.save_user(record).await?;
        self.auth.audit(
            &me.user,
            "api_token_revoked",
            &req.user,
            true,
            &req.token_id,
            &client,
        );
        Ok(Response::new(RevokeApiTokenResponse {
            nodes_confirmed: confirmed,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let mut response = self.auth.local_audit(&req)?;
        if req.local_only {
            return Ok(Response::new(response));
        }
        let call = AuthCall {
            call: Some(auth_call::Call::Audit(ListAuditEventsRequest {
                local_only: true,
                ..req.clone()
            })),
        };
        let (replies, missing) = self.gather(call).await;
        for reply in replies {
            if let auth_reply::Reply::Audit(r) = reply {
                response.events.extend(r.events);
            }
        }
        response.events.sort_by_key(|e| e.ts_ms);
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit as usize
        };
        let excess = response.events.len().saturating_sub(limit);
        response.events.drain(..excess);
        response.unavailable_nodes = missing;
        Ok(Response::new(response))
    }
}

/// Whether `principal` may see meters of `feeder` (admins and unscoped users see all).
pub fn in_scope(principal: &Principal, feeder: &str) -> bool {
    principal.may_see_feeder(feeder)
}

/// Whether the principal is an admin.
pub fn is_admin(principal: &Principal) -> bool {
    principal.has(Role::Admin)
}
