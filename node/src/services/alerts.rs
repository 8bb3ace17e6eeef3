//! `AlertService`: list, watch, acknowledge and resolve alerts on any node.
//!
//! `WatchAlerts` streams from this node's alert log. A cursor is `node:seq:updated_at_ms`:
//! on the node that issued it, the stream resumes right after `seq` (from the stored log, then
//! live), so nothing is missed or repeated. A cursor of another node, or one older than the
//! retained log, restarts from the alerts changed at or after its time, so nothing is missed;
//! a change seen twice has the same `(alert_id, version)`. A watcher that falls more than the
//! live channel behind is caught up from the log the same way, transparently.

use std::sync::Arc;

use gridmesh_actors::alerts::{self, is_resolved};
use gridmesh_actors::api::Api;
use gridmesh_actors::context::NodeContext;
use gridmesh_proto::v1::alert_service_server::AlertService;
use gridmesh_proto::v1::{
    AcknowledgeAlertRequest, Alert, AlertChange, ListAlertsRequest, ListAlertsResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, ReplayDeadLettersRequest,
    ReplayDeadLettersResponse, ResolveAlertRequest, WatchAlertsRequest,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::authn::principal;
use crate::scope;

/// Changes read from the log per step while catching up.
const LOG_PAGE: usize = 1000;
/// Changes buffered per watcher; a slow watcher holds back only itself.
const WATCH_BUFFER: usize = 256;

/// The alert service.
#[derive(Debug, Clone)]
pub struct AlertApi {
    api: Api,
}

impl AlertApi {
    /// A service over the node's API.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

/// A parsed cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    node: String,
    seq: u64,
    ts_ms: i64,
}

fn parse_cursor(text: &str) -> Result<Cursor, Status> {
    let bad = || Status::invalid_argument(format!("cursor {text:?} is not one this API issued"));
    let mut parts = text.rsplitn(3, ':');
    let ts_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let node = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    Ok(Cursor {
        node: node.to_owned(),
        seq,
        ts_ms,
    })
}

fn cursor(node: &str, seq: u64, alert: &Alert) -> String {
    format!("{node}:{seq}:{}", alert.updated_at_ms)
}

fn wanted(alert: &Alert, req: &WatchAlertsRequest) -> bool {
    (req.feeder_id.is_empty() || alert.feeder_id == req.feeder_id)
        && alert.severity >= req.min_severity
}

/// Sends log entries after `seq` (and, with `since_ts`, only those changed at or after it);
/// returns the last sequence sent past, or `None` when the watcher went away.
async fn replay_log(
    ctx: &Arc<NodeContext>,
    req: &WatchAlertsRequest,
    tx: &mpsc::Sender<Result<AlertChange, Status>>,
    mut seq: u64,
    since_ts: Option<i64>,
    until: u64,
) -> Option<u64> {
    let node = ctx.cluster.name().to_owned();
    while seq < until {
        let store_ctx = ctx.clone();
        let page = blocking(move || {
            alerts::log_after(&store_ctx.store, seq, LOG_PAGE)
                .map_err(|e| Status::internal(e.to_string()))
        })
        .await;
        let page = match page {
            Ok(page) => page,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return None;
            }
        };
        if page.is_empty() {
            break;
        }
        for (s, alert) in page {
            if s > until {
                return Some(seq);
            }
            seq = s;
            if since_ts.is_some_and(|t| alert.updated_at_ms < t) || !wanted(&alert, req) {
                continue;
            }
            let change = AlertChange {
                cursor: cursor(&node, s, &alert),
                alert: Some(alert),
            };
            if tx.send(Ok(change)).await.is_err() {
                return None;
            }
        }
    }
    Some(seq)
}

async fn watch(
    ctx: Arc<NodeContext>,
    req: WatchAlertsRequest,
    tx: mpsc::Sender<Result<AlertChange, Status>>,
) {
    let node = ctx.cluster.name().to_owned();
    // Subscribe first, so nothing falls between the log and the live channel.
    let (head, mut live) = ctx.alert_feed.subscribe();
    let mut sent = head;
    if req.include_open {
        let store_ctx = ctx.clone();
        let open = blocking(move || {
            alerts::all_alerts(&store_ctx.store).map_err(|e| Status::internal(e.to_string()))
        })
        .await;
        match open {
            Ok(all) => {
                for alert in all
                    .into_iter()
                    .filter(|a| !is_resolved(a) && wanted(a, &req))
                {
                    let change = AlertChange {
                        cursor: cursor(&node, head, &alert),
                        alert: Some(alert),
                    };
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
            }
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
    if !req.cursor.is_empty() {
        let c = match parse_cursor(&req.cursor) {
            Ok(c) => c,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let retained_from = head.saturating_sub(ctx.config.alerts.history);
        let (from, since) = if c.node == node && c.seq >= retained_from && c.seq <= head {
            (c.seq, None)
        } else {
            (retained_from, Some(c.ts_ms))
        };
        match replay_log(&ctx, &req, &tx, from, since, head).await {
            Some(_) => sent = head,
            None => return,
        }
    }
    loop {
        match live.recv().await {
            Ok((seq, alert)) => {
                if seq <= sent {
                    continue;
                }
                sent = seq;
                if !wanted(&alert, &req) {
                    continue;
                }
                let change = AlertChange {
                    cursor: cursor(&node, seq, &alert),
                    alert: Some(alert),
                };
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind the live channel: catch up from the log, then go on live.
                let (head, rx) = ctx.alert_feed.subscribe();
                live = rx;
                match replay_log(&ctx, &req, &tx, sent, None, head).await {
                    Some(_) => sent = head,
                    None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl AlertApi {
    /// A scoped caller may act only on alerts of its feeders; an unknown alert looks the same
    /// as one outside the scope.
    async fn check_alert_scope(
        &self,
        me: &gridmesh_auth::Principal,
        alert_id: &str,
    ) -> Result<(), Status> {
        if !me.is_scoped() {
            return Ok(());
        }
        let (ctx, id) = (self.api.ctx().clone(), alert_id.to_owned());
        let alert = blocking(move || {
            alerts::alert(&ctx.store, &id).map_err(|e| crate::status::internal(&e))
        })
        .await?;
        match alert {
            Some(a) if me.may_see_feeder(&a.feeder_id) => Ok(()),
            _ => Err(scope::outside()),
        }
    }
}

/// Passes on the changes of alerts in the caller's scope; ends the stream with
/// UNAUTHENTICATED when the caller's session, token or user is revoked.
async fn scoped_watch(
    me: gridmesh_auth::Principal,
    mut guard: Option<gridmesh_actors::auth::StreamGuard>,
    mut all: mpsc::Receiver<Result<AlertChange, Status>>,
    tx: mpsc::Sender<Result<AlertChange, Status>>,
) {
    loop {
        let next = match guard.as_mut() {
            Some(guard) => tokio::select! {
                next = all.recv() => next,
                () = guard.revoked() => {
                    let _ = tx.send(Err(gridmesh_actors::auth::unauthenticated())).await;
                    return;
                }
            },
            None => all.recv().await,
        };
        let Some(item) = next else {
            return;
        };
        let visible = match &item {
            Ok(change) => change
                .alert
                .as_ref()
                .is_some_and(|a| me.may_see_feeder(&a.feeder_id)),
            Err(_) => true,
        };
        if visible && tx.send(item).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl AlertService for AlertApi {
    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let me = principal(&request)?;
        let req = request.into_inner();
        if !req.feeder_id.is_empty() {
            scope::feeder(&me, &req.feeder_id)?;
        }
        let mut response = self.api.list_alerts(req).await?;
        // Scope filters after the limit: a scoped user may get fewer than `limit`.
        response.alerts.retain(|a| me.may_see_feeder(&a.feeder_id));
        Ok(Response::new(response))
    }

    type WatchAlertsStream = ReceiverStream<Result<AlertChange, Status>>;

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let me = principal(&request)?;
        let req = request.into_inner();
        if !req.cursor.is_empty() {
            parse_cursor(&req.cursor)?;
        }
        if !req.feeder_id.is_empty() {
            scope::feeder(&me, &req.feeder_id)?;
        }
        let guard = self.api.ctx().auth().map(|auth| auth.register_stream(&me));
        let (all_tx, all_rx) = mpsc::channel(WATCH_BUFFER);
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch(self.api.ctx().clone(), req, all_tx));
        tokio::spawn(scoped_watch(me, guard, all_rx, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<AcknowledgeAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let me = principal(&request)?;
        let r = request.into_inner();
        self.check_alert_scope(&me, &r.alert_id).await?;
        // Who acted is the authenticated caller, whatever the request says.
        self.api
            .alert_command(r.alert_id, false, me.user, r.note)
            .await
            .map(Response::new)
    }

    async fn resolve_alert(
        &self,
        request: Request<ResolveAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let me = principal(&request)?;
        let r = request.into_inner();
        self.check_alert_scope(&me, &r.alert_id).await?;
        self.api
            .alert_command(r.alert_id, true, me.user, r.note)
            .await
            .map(Response::new)
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        self.api
            .dead_letters(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        self.api
            .replay_dead_letters(request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let alert = Alert {
            updated_at_ms: 1234,
            ..Alert::default()
        };
        let text = cursor("node-a:1", 42, &alert);
        assert_eq!(
            parse_cursor(&text).expect("parses"),
            Cursor {
                node: "node-a:1".into(),
                seq: 42,
                ts_ms: 1234
            }
        );
        for bad in ["", "x", "n:1", ":1:2", "n:x:2", "n:1:y"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
