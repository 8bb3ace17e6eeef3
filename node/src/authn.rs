//! The one gRPC auth layer: every call passes here before any service sees it.
//!
//! 1. The method path is looked up in `gridmesh_auth::permissions::TABLE`.
//! 2. An `authorization: Bearer <token>` header, if any, is validated
//!    ([`gridmesh_actors::auth::Auth::authenticate`]: signature, claims, user, revocations).
//! 3. Open methods pass. Otherwise no valid token → `UNAUTHENTICATED`; a valid token without
//!    a role the table allows (or an unknown method) → `PERMISSION_DENIED`. Both messages are
//!    fixed texts: they say nothing about the token, the user or the method's existence.
//! 4. Allowed calls carry the [`Principal`] in their request extensions; services that apply
//!    feeder scope read it with [`principal`]. The session's owner hears of the activity.
//!
//! Refusals are counted (`gridmesh_auth_refused_total{reason}`) and logged at debug level
//! with the reason, never with the token.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use gridmesh_actors::auth::Auth;
use gridmesh_actors::context::NodeContext;
use gridmesh_auth::{Decision, Principal};
use tonic::Status;
use tonic::body::Body;

/// The layer.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
    ctx: Arc<NodeContext>,
}

impl AuthLayer {
    /// A layer checking calls with `auth`.
    pub fn new(auth: Arc<Auth>, ctx: Arc<NodeContext>) -> Self {
        Self { auth, ctx }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            auth: self.auth.clone(),
            ctx: self.ctx.clone(),
        }
    }
}

/// The layer's service.
#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    auth: Arc<Auth>,
    ctx: Arc<NodeContext>,
}

/// The bearer token of a request, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The principal of an authenticated call (set by the layer).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(gridmesh_actors::auth::unauthenticated)
}

fn refuse(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl<S, B> tower::Service<http::Request<B>> for AuthMiddleware<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let checked = bearer(request.headers()).map(|token| self.auth.authenticate(token));
        let principal = match &checked {
            Some(Ok((principal, _))) => Some(principal.clone()),
            Some(Err(refusal)) => {
                metrics::counter!("gridmesh_auth_refused_total", "reason" => refusal.label())
                    .increment(1);
                tracing::debug!(method, reason = %refusal, "token refused");
                None
            }
            None => None,
        };
        match gridmesh_auth::check(&method, principal.as_ref()) {
            Decision::Allow => {}
            Decision::Unauthenticated => {
                if checked.is_none() {
                    metrics::counter!("gridmesh_auth_refused_total", "reason" => "no_token")
                        .increment(1);
                }
                return Box::pin(async { Ok(refuse(gridmesh_actors::auth::unauthenticated())) });
            }
            Decision::Denied => {
                metrics::counter!("gridmesh_auth_refused_total", "reason" => "role").increment(1);
                let user = principal.as_ref().map_or("", |p| p.user.as_str());
                self.auth.audit(user, "denied", &method, false, "role", "");
                return Box::pin(async {
                    Ok(refuse(Status::permission_denied(
                        "your roles do not allow this call",
                    )))
                });
            }
        }
        if let Some(Ok((principal, claims))) = checked {
            self.auth.touch(&self.ctx, &principal.session_id);
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(claims);
        }
        // The inner service was made ready by poll_ready; keep it and leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_case_insensitively() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer abc.def".parse().unwrap(),
        );
        assert_eq!(bearer(&headers), Some("abc.def"));
        headers.insert(http::header::AUTHORIZATION, "bearer  xyz".parse().unwrap());
        assert_eq!(bearer(&headers), Some("xyz"));
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic dXNlcjpwdw==".parse().unwrap(),
        );
        assert_eq!(bearer(&headers), None);
    }
}
