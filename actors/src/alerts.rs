//! Alerts: the `AlertManagerActor`, the lifecycle rules it applies, and the change feed.
//!
//! The grid rules ([`gridmesh_analytics`]) run in the meter and feeder actors and emit raise
//! and clear events keyed by condition and asset. The node's alert manager turns them into
//! alerts:
//!
//! - **Dedup.** A raise whose key has an alert that is not resolved is an *occurrence* of that
//!   alert (count and last time grow); otherwise it opens a new alert, id
//!   `<dedup_key>@<opened_ms>`.
//! - **Lifecycle.** open → acknowledged (an operator) → resolved (an operator, or automatically
//!   once the condition has stayed clear for `alerts.auto_resolve_after`; a raise meanwhile
//!   un-clears it). A clear because a wider alert covers the condition resolves at once; a
//!   clear because the condition became the new normal leaves the alert to a person.
//! - **Every node keeps every alert.** A change is applied by the alert's *owner* (the node
//!   whose rules raise it; acknowledge and resolve are forwarded there), made durable, and
//!   sent to every reachable peer, which stores it if it is newer (version, then node clock,
//!   then owner name: a total order, so all nodes keep the same record). A node that was away
//!   pulls every alert from a peer when it returns. Two nodes that raised the same condition
//!   while cut off from each other each opened an alert; once both records meet, every node
//!   keeps the earlier one open and the other's owner resolves its own as `merged`.
//! - **Change feed.** Each node appends every change it stores to its `alert_log` (sequence
//!   numbers, `alerts.history` entries kept) and publishes it to watchers; a watcher resumes
//!   from a cursor `node:seq:time` (see `WatchAlerts`).
//!
//! Alerts are persisted through the group-commit writer (durable before they are sent on or
//! notified) and survive restarts.
//!
//! Restart policy: the node supervisor restarts the actor (one_for_one, with the node's
//! restart budget); its state is rebuilt from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gridmesh_analytics::alert::{AlertEvent, AssetKind as RuleAsset, ClearReason, Severity};
use gridmesh_proto::internal::{AlertPageRequest, AlertUpserts, cluster_reply, cluster_request};
use gridmesh_proto::v1::{Alert, AlertSeverity, AlertState, AssetKind};
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::broadcast;

use crate::context::{NodeContext, now_ms};
use crate::storage::{Store, StoreResult};
use crate::writer::{Row, Space};

/// Capacity of the live change channel; a watcher further behind re-reads the log.
const LIVE_CHANNEL: usize = 4096;

/// Alerts per page when a node catches up from a peer.
pub const ALERT_PAGE: usize = 5_000;

/// Why an operator's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No alert has that id.
    #[error("alert {0} does not exist")]
    NotFound(String),
    /// The alert is resolved.
    #[error("alert {0} is already resolved")]
    Resolved(String),
    /// The id is malformed or too long.
    #[error("{0}")]
    Invalid(String),
}

// ------------------------------------------------------------------------------------------
// Lifecycle rules (pure)
// ------------------------------------------------------------------------------------------

fn severity(s: Severity) -> AlertSeverity {
    match s {
        Severity::Info => AlertSeverity::Info,
        Severity::Minor => AlertSeverity::Minor,
        Severity::Major => AlertSeverity::Major,
        Severity::Critical => AlertSeverity::Critical,
    }
}

fn asset_kind(kind: RuleAsset) -> AssetKind {
    match kind {
        RuleAsset::Meter => AssetKind::Meter,
        RuleAsset::Transformer => AssetKind::Transformer,
        RuleAsset::Feeder => AssetKind::Feeder,
    }
}

/// Whether the alert is resolved.
pub fn is_resolved(alert: &Alert) -> bool {
    alert.state == AlertState::Resolved as i32
}

fn touch(alert: &mut Alert, owner: &str, now: i64) {
    alert.version += 1;
    alert.updated_at_ms = now.max(alert.updated_at_ms);
    owner.clone_into(&mut alert.owner);
}

/// Applies a rule's event to the current (not resolved) alert of its key, if any. Returns the
/// alert as it is now, or `None` when nothing changes.
pub fn apply_event(
    current: Option<&Alert>,
    event: &AlertEvent,
    feeder_id: &str,
    owner: &str,
    now: i64,
) -> Option<Alert> {
    match event {
        AlertEvent::Raise(raise) => Some(match current {
            Some(open) => {
                let mut alert = open.clone();
                alert.occurrences += 1;
                alert.last_ts_ms = alert.last_ts_ms.max(raise.ts_ms);
                alert.severity = alert.severity.max(severity(raise.severity) as i32);
                alert.value = raise.value;
                alert.limit = raise.limit;
                alert.message.clone_from(&raise.message);
                alert.cleared_ts_ms = 0;
                alert.cleared_at_ms = 0;
                touch(&mut alert, owner, now);
                alert
            }
            None => {
                let key = raise.key.dedup_key();
                let mut alert = Alert {
                    alert_id: format!("{key}@{now}"),
                    dedup_key: key,
                    kind: raise.key.kind.as_str().to_owned(),
                    severity: severity(raise.severity) as i32,
                    asset_kind: asset_kind(raise.key.asset.kind) as i32,
                    asset_id: raise.key.asset.id.clone(),
                    feeder_id: feeder_id.to_owned(),
                    state: AlertState::Open as i32,
                    since_ts_ms: raise.since_ts_ms,
                    raised_ts_ms: raise.ts_ms,
                    last_ts_ms: raise.ts_ms,
                    occurrences: 1,
                    value: raise.value,
                    limit: raise.limit,
                    message: raise.message.clone(),
                    ..Alert::default()
                };
                touch(&mut alert, owner, now);
                alert
            }
        }),
        AlertEvent::Clear { ts_ms, reason, .. } => {
            let open = current?;
            let mut alert = open.clone();
            match reason {
                ClearReason::Recovered => {
                    if alert.cleared_ts_ms != 0 {
                        return None;
                    }
                    alert.cleared_ts_ms = *ts_ms;
                    alert.cleared_at_ms = now;
                }
                ClearReason::Superseded => {
                    alert.cleared_ts_ms = *ts_ms;
                    alert.cleared_at_ms = now;
                    resolve(&mut alert, "auto", "superseded by a wider alert", now);
                }
                ClearReason::NewBaseline => return None,
            }
            touch(&mut alert, owner, now);
            Some(alert)
        }
    }
}

fn resolve(alert: &mut Alert, by: &str, note: &str, now: i64) {
    alert.state = AlertState::Resolved as i32;
    alert.resolved_at_ms = now;
    by.clone_into(&mut alert.resolved_by);
    if !note.is_empty() {
        note.clone_into(&mut alert.note);
    }
}

/// An operator acknowledges.
pub fn acknowledge(
    alert: &Alert,
    by: &str,
    note: &str,
    owner: &str,
    now: i64,
) -> Result<Alert, AlertError> {
    if is_resolved(alert) {
        return Err(AlertError::Resolved(alert.alert_id.clone()));
    }
    let mut a = alert.clone();
    if a.state == AlertState::Open as i32 {
        a.state = AlertState::Acknowledged as i32;
        a.acknowledged_at_ms = now;
        by.clone_into(&mut a.acknowledged_by);
    }
    if !note.is_empty() {
        note.clone_into(&mut a.note);
    }
    touch(&mut a, owner, now);
    Ok(a)
}

/// An operator resolves.
pub fn resolve_by(
    alert: &Alert,
    by: &str,
    note: &str,
    owner: &str,
    now: i64,
) -> Result<Alert, AlertError> {
    if is_resolved(alert) {
        return Err(AlertError::Resolved(alert.alert_id.clone()));
    }
    let mut a = alert.clone();
    resolve(&mut a, by, note, now);
    touch(&mut a, owner, now);
    Ok(a)
}

/// Resolves a cleared alert whose condition stayed clear for `after`.
pub fn auto_resolve(alert: &Alert, after: Duration, owner: &str, now: i64) -> Option<Alert> {
    if is_resolved(alert) || alert.cleared_at_ms == 0 {
        return None;
    }
    if now < alert.cleared_at_ms.saturating_add(after.as_millis() as i64) {
        return None;
    }
    let mut a = alert.clone();
    resolve(&mut a, "auto", "", now);
    touch(&mut a, owner, now);
    Some(a)
}

/// Whether a record from a peer replaces the stored one: a total order over (version, node
/// clock, owner), so every node keeps the same record whatever order copies arrive in.
pub fn newer(remote: &Alert, stored: Option<&Alert>) -> bool {
    match stored {
        None => true,
        Some(s) => {
            (remote.version, remote.updated_at_ms, &remote.owner)
                > (s.version, s.updated_at_ms, &s.owner)
        }
    }
}

/// Of two alerts open at once for one key, the one every node keeps open: the earlier opened
/// (ids embed the opening time), then the smaller id.
pub fn canonical<'a>(a: &'a Alert, b: &'a Alert) -> &'a Alert {
    let opened = |x: &Alert| {
        x.alert_id
            .rsplit_once('@')
            .and_then(|(_, t)| t.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    if (opened(a), &a.alert_id) <= (opened(b), &b.alert_id) {
        a
    } else {
        b
    }
}

// ------------------------------------------------------------------------------------------
// Store
// ------------------------------------------------------------------------------------------

fn decode(bytes: &[u8]) -> Option<Alert> {
    Alert::decode(bytes).ok()
}

/// Every alert stored on this node, in id order.
pub fn all_alerts(store: &Store) -> StoreResult<Vec<Alert>> {
    let mut out = Vec::new();
    for item in store.alerts.iter() {
        let value = item.value()?;
        if let Some(alert) = decode(&value) {
            out.push(alert);
        }
    }
    Ok(out)
}

/// One alert by id.
pub fn alert(store: &Store, id: &str) -> StoreResult<Option<Alert>> {
    Ok(store.alerts.get(id.as_bytes())?.and_then(|v| decode(&v)))
}

/// Up to `limit` alerts with ids after `after`, and the id to continue after.
pub fn alert_page(store: &Store, after: &str, limit: usize) -> StoreResult<(Vec<Alert>, String)> {
    let start = std::ops::Bound::Excluded(after.as_bytes().to_vec());
    let mut out = Vec::new();
    let mut last = String::new();
    for item in store
        .alerts
        .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        .take(limit)
    {
        let (key, value) = item.into_inner()?;
        last = String::from_utf8_lossy(&key).into_owned();
        if let Some(a) = decode(&value) {
            out.push(a);
        }
    }
    let next = if out.len() == limit {
        last
    } else {
        String::new()
    };
    Ok((out, next))
}

/// The alert-log entries after `seq`, oldest first, at most `limit`: `(seq, alert)`.
pub fn log_after(store: &Store, seq: u64, limit: usize) -> StoreResult<Vec<(u64, Alert)>> {
    let start = (seq + 1).to_be_bytes().to_vec();
    let mut out = Vec::new();
    for item in store.alert_log.range(start..).take(limit) {
        let (key, value) = item.into_inner()?;
        let Ok(bytes) = <[u8; 8]>::try_from(key.as_ref()) else {
            continue;
        };
        if let Some(a) = decode(&value) {
            out.push((u64::from_be_bytes(bytes), a));
        }
    }
    Ok(out)
}

fn last_seq(store: &Store) -> StoreResult<u64> {
    Ok(match store.alert_log.last_key_value() {
        Some(item) => {
            let key = item.key()?;
            <[u8; 8]>::try_from(key.as_ref()).map_or(0, u64::from_be_bytes)
        }
        None => 0,
    })
}

// ------------------------------------------------------------------------------------------
// The change feed
// ------------------------------------------------------------------------------------------

/// What watchers subscribe to: the node's newest log sequence and the live changes.
#[derive(Debug)]
pub struct AlertFeed {
    head: AtomicU64,
    live: broadcast::Sender<(u64, Alert)>,
}

impl Default for AlertFeed {
    fn default() -> Self {
        Self {
            head: AtomicU64::new(0),
            live: broadcast::channel(LIVE_CHANNEL).0,
        }
    }
}

impl AlertFeed {
    /// Live changes from now on, and the sequence they follow.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<(u64, Alert)>) {
        let rx = self.live.subscribe();
        (self.head.load(Ordering::Acquire), rx)
    }

    fn publish(&self, seq: u64, alert: Alert) {
        self.head.store(seq, Ordering::Release);
        let _ = self.live.send((seq, alert));
    }
}

// ------------------------------------------------------------------------------------------
// The actor
// ------------------------------------------------------------------------------------------

/// Messages of the alert manager. Local only.
#[derive(RactorMessage)]
pub enum AlertMsg {
    /// Events of a rule about assets of `feeder_id`.
    Events {
        /// Feeder of the assets (scopes and filters use it).
        feeder_id: String,
        /// The events, in order.
        events: Vec<AlertEvent>,
    },
    /// An operator acknowledges (`resolve == false`) or resolves an alert owned here.
    Command {
        /// The alert.
        alert_id: String,
        /// Resolve instead of acknowledge.
        resolve: bool,
        /// Who.
        by: String,
        /// Why.
        note: String,
        /// The alert after the change, or why not.
        reply: RpcReplyPort<Result<Alert, AlertError>>,
    },
    /// Records from peers (their owners' changes, or a catch-up page).
    Upserts(Vec<Alert>),
    /// Resolve cleared alerts whose time has come.
    Tick,
}

/// The alert manager actor.
#[derive(Debug)]
pub struct AlertManagerActor;

/// State of the alert manager.
pub struct AlertManagerState {
    ctx: Arc<NodeContext>,
    /// Open (not resolved) alerts by dedup key: the ones events apply to.
    open: HashMap<String, Alert>,
    seq: u64,
}

impl Actor for AlertManagerActor {
    type Msg = AlertMsg;
    type State = AlertManagerState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<AlertMsg>,
        ctx: Arc<NodeContext>,
    ) -> Result<AlertManagerState, ActorProcessingErr> {
        let mut open: HashMap<String, Alert> = HashMap::new();
        for a in all_alerts(&ctx.store)? {
            if is_resolved(&a) {
                continue;
            }
            match open.get(&a.dedup_key) {
                Some(other) if canonical(other, &a).alert_id == other.alert_id => {}
                _ => {
                    open.insert(a.dedup_key.clone(), a);
                }
            }
        }
        let seq = last_seq(&ctx.store)?;
        ctx.alert_feed.head.store(seq, Ordering::Release);
        myself.send_interval(Duration::from_secs(1), || AlertMsg::Tick);
        ctx.set_alert_manager(Some(myself));
        metrics::gauge!("gridmesh_alerts_open").set(open.len() as f64);
        Ok(AlertManagerState { ctx, open, seq })
    }

    async fn post_stop(
        &self,
        _: ActorRef<AlertMsg>,
        s: &mut AlertManagerState,
    ) -> Result<(), ActorProcessingErr> {
        s.ctx.set_alert_manager(None);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AlertMsg>,
        msg: AlertMsg,
        s: &mut AlertManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertMsg::Events { feeder_id, events } => {
                let me = s.ctx.cluster.name().to_owned();
                let mut changed = Vec::new();
                for event in &events {
                    let key = event.key().dedup_key();
                    let now = now_ms();
                    if let Some(alert) = apply_event(s.open.get(&key), event, &feeder_id, &me, now)
                    {
                        let kind = if event.is_raise() { "raise" } else { "clear" };
                        metrics::counter!("gridmesh_alert_events_total", "event" => kind)
                            .increment(1);
                        s.remember(alert.clone());
                        changed.push(alert);
                    }
                }
                s.commit(changed, true).await?;
            }
            AlertMsg::Command {
                alert_id,
                resolve,
                by,
                note,
                reply,
            } => {
                let me = s.ctx.cluster.name().to_owned();
                let result = match alert(&s.ctx.store, &alert_id)? {
                    None => Err(AlertError::NotFound(alert_id)),
                    Some(current) => {
                        let now = now_ms();
                        if resolve {
                            resolve_by(&current, &by, &note, &me, now)
                        } else {
                            acknowledge(&current, &by, &note, &me, now)
                        }
                    }
                };
                if let Ok(alert) = &result {
                    s.remember(alert.clone());
                    s.commit(vec![alert.clone()], true).await?;
                }
                let _ = reply.send(result);
            }
            AlertMsg::Upserts(alerts) => {
                let mut changed = Vec::new();
                for remote in alerts {
                    let stored = alert(&s.ctx.store, &remote.alert_id)?;
                    if newer(&remote, stored.as_ref()) {
                        s.remember(remote.clone());
                        changed.push(remote);
                    }
                }
                s.commit(changed, false).await?;
                s.merge_duplicates().await?;
            }
            AlertMsg::Tick => {
                let me = s.ctx.cluster.name().to_owned();
                let after = s.ctx.config.alerts.auto_resolve_after;
                let now = now_ms();
                let due: Vec<Alert> = s
                    .open
                    .values()
                    .filter(|a| a.owner == me)
                    .filter_map(|a| auto_resolve(a, after, &me, now))
                    .collect();
                for a in &due {
                    s.remember(a.clone());
                }
                s.commit(due, true).await?;
            }
        }
        metrics::gauge!("gridmesh_alerts_open").set(s.open.len() as f64);
        Ok(())
    }
}

impl AlertManagerState {
    /// Tracks `alert` as the open one of its key (or forgets the key when it is resolved).
    fn remember(&mut self, alert: Alert) {
        let key = alert.dedup_key.clone();
        if is_resolved(&alert) {
            if self
                .open
                .get(&key)
                .is_some_and(|o| o.alert_id == alert.alert_id)
            {
                self.open.remove(&key);
            }
            return;
        }
        match self.open.get(&key) {
            Some(other) if other.alert_id != alert.alert_id => {
                let keep = canonical(other, &alert).alert_id.clone();
                if keep == alert.alert_id {
                    self.open.insert(key, alert);
                }
            }
            _ => {
                self.open.insert(key, alert);
            }
        }
    }

    /// Resolves, as `merged`, open alerts owned here that lost to another open alert of the
    /// same key.
    async fn merge_duplicates(&mut self) -> Result<(), ActorProcessingErr> {
        let me = self.ctx.cluster.name().to_owned();
        let store = self.ctx.store.clone();
        let mut losers = Vec::new();
        for a in all_alerts(&store)? {
            if is_resolved(&a) || a.owner != me {
                continue;
            }
            if let Some(winner) = self.open.get(&a.dedup_key)
                && winner.alert_id != a.alert_id
            {
                let now = now_ms();
                let note = format!("merged into {}", winner.alert_id);
                if let Ok(merged) = resolve_by(&a, "merged", &note, &me, now) {
                    losers.push(merged);
                }
            }
        }
        self.commit(losers, true).await
    }

    /// Stores changes durably, appends them to the change log, publishes them to watchers
    /// and, for changes made here (`own`), sends them to every reachable peer and to the
    /// notifier.
    async fn commit(&mut self, alerts: Vec<Alert>, own: bool) -> Result<(), ActorProcessingErr> {
        if alerts.is_empty() {
            return Ok(());
        }
        let retain = self.ctx.config.alerts.history;
        let mut rows = Vec::with_capacity(alerts.len() * 3);
        let mut logged = Vec::with_capacity(alerts.len());
        for a in &alerts {
            let bytes = a.encode_to_vec();
            rows.push(Row::put(
                Space::Alerts,
                a.alert_id.as_bytes().to_vec(),
                bytes.clone(),
            ));
            self.seq += 1;
            rows.push(Row::put(
                Space::AlertLog,
                self.seq.to_be_bytes().to_vec(),
                bytes,
            ));
            if self.seq > retain {
                rows.push(Row::delete(
                    Space::AlertLog,
                    (self.seq - retain).to_be_bytes().to_vec(),
                ));
            }
            logged.push((self.seq, a.clone()));
        }
        self.ctx.writer.write(rows).await?;
        for (seq, a) in logged {
            self.ctx.alert_feed.publish(seq, a);
        }
        if own {
            metrics::counter!("gridmesh_alert_changes_total").increment(alerts.len() as u64);
            if let Some(notifier) = self.ctx.notifier() {
                let _ = notifier.cast(crate::notify::NotifyMsg::Changes(alerts.clone()));
            }
            let cluster = self.ctx.cluster.clone();
            tokio::spawn(async move {
                let peers = cluster.reachable_peers();
                let calls = peers.iter().map(|peer| {
                    let call = cluster_request::Call::AlertUpserts(AlertUpserts {
                        alerts: alerts.clone(),
                    });
                    let cluster = cluster.clone();
                    async move { cluster.forward(peer, call, false).await }
                });
                // Best effort: a peer that misses this catches up when it returns.
                let _ = futures::future::join_all(calls).await;
            });
        }
        Ok(())
    }
}

/// Pulls every alert from `peer` into this node's alert manager (a node back from an absence,
/// or one that just met `peer`, may have missed changes). Returns the records pulled.
pub async fn catch_up(ctx: &NodeContext, peer: &str) -> Result<u64, String> {
    let manager = ctx
        .alert_manager()
        .ok_or("the alert manager is restarting")?;
    let mut after = String::new();
    let mut pulled = 0u64;
    loop {
        let call = cluster_request::Call::AlertPage(AlertPageRequest {
            after_id: after.clone(),
            limit: ALERT_PAGE as u32,
        });
        let reply = ctx
            .cluster
            .forward(peer, call, true)
            .await
            .map_err(|e| e.to_string())?;
        let page = match crate::cluster::into_result(peer, reply) {
            Ok(Some(cluster_reply::Reply::AlertPage(page))) => page,
            Ok(_) => return Err(format!("node {peer} sent a reply of the wrong kind")),
            Err(status) => return Err(status.message().to_owned()),
        };
        pulled += page.alerts.len() as u64;
        if !page.alerts.is_empty() {
            manager
                .cast(AlertMsg::Upserts(page.alerts))
                .map_err(|_| "the alert manager stopped".to_owned())?;
        }
        if page.next.is_empty() {
            return Ok(pulled);
        }
        after = page.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_analytics::alert::{AlertKey, AlertKind, Asset, Raise};
    use proptest::prelude::*;

    fn raise(ts: i64) -> AlertEvent {
        AlertEvent::Raise(Raise {
            key: AlertKey::new(AlertKind::Overload, Asset::feeder("F1")),
            severity: Severity::Major,
            since_ts_ms: ts - 900_000,
            ts_ms: ts,
            value: 112.0,
            limit: 100.0,
            message: "loading 112 %".into(),
        })
    }

    fn clear(ts: i64, reason: ClearReason) -> AlertEvent {
        AlertEvent::Clear {
            key: AlertKey::new(AlertKind::Overload, Asset::feeder("F1")),
            ts_ms: ts,
            reason,
        }
    }

    #[test]
    fn raises_of_an_open_alert_are_occurrences_and_clears_auto_resolve() {
        let a = apply_event(None, &raise(1000), "F1", "n1", 10).expect("opened");
        assert_eq!(a.alert_id, "overload/feeder/F1@10");
        assert_eq!((a.occurrences, a.state), (1, AlertState::Open as i32));
        let a2 = apply_event(Some(&a), &raise(2000), "F1", "n1", 20).expect("occurrence");
        assert_eq!(
            (a2.alert_id.as_str(), a2.occurrences),
            (a.alert_id.as_str(), 2)
        );
        assert!(a2.version > a.version);
        let c = apply_event(
            Some(&a2),
            &clear(3000, ClearReason::Recovered),
            "F1",
            "n1",
            30,
        )
        .expect("cleared");
        assert_eq!(c.cleared_ts_ms, 3000);
        let after = Duration::from_secs(60);
        assert!(auto_resolve(&c, after, "n1", 30 + 59_999).is_none());
        let r = auto_resolve(&c, after, "n1", 30 + 60_000).expect("resolved");
        assert_eq!(
            (r.state, r.resolved_by.as_str()),
            (AlertState::Resolved as i32, "auto")
        );
        // A raise before the time un-clears it.
        let back = apply_event(Some(&c), &raise(4000), "F1", "n1", 40).expect("back");
        assert_eq!(back.cleared_at_ms, 0);
        assert!(auto_resolve(&back, after, "n1", 1_000_000).is_none());
        // A new-baseline clear leaves it for a person; superseded resolves at once.
        assert!(
            apply_event(
                Some(&a),
                &clear(5000, ClearReason::NewBaseline),
                "F1",
                "n1",
                50
            )
            .is_none()
        );
        let s = apply_event(
            Some(&a),
            &clear(5000, ClearReason::Superseded),
            "F1",
            "n1",
            50,
        )
        .expect("superseded");
        assert!(is_resolved(&s));
    }

    #[test]
    fn operators_acknowledge_then_resolve_once() {
        let a = apply_event(None, &raise(1000), "F1", "n1", 10).expect("opened");
        let acked = acknowledge(&a, "ops", "on it", "n1", 11).expect("ack");
        assert_eq!(acked.state, AlertState::Acknowledged as i32);
        assert_eq!(acked.acknowledged_by, "ops");
        let resolved = resolve_by(&acked, "ops", "fixed", "n1", 12).expect("resolve");
        assert!(is_resolved(&resolved));
        assert_eq!(
            resolve_by(&resolved, "ops", "", "n1", 13),
            Err(AlertError::Resolved(a.alert_id.clone()))
        );
        assert!(acknowledge(&resolved, "ops", "", "n1", 13).is_err());
    }

    proptest! {
        /// Whatever order a node receives a set of records of one alert in, it keeps the same
        /// one: the maximum of (version, clock, owner).
        #[test]
        fn peers_keep_the_same_record_whatever_the_order(
            records in proptest::collection::vec((0u64..5, 0i64..5, 0u8..3), 1..8),
            rotate in 0usize..8,
        ) {
            let alerts: Vec<Alert> = records.iter().map(|(v, t, o)| Alert {
                alert_id: "x@1".into(),
                version: *v,
                updated_at_ms: *t,
                owner: format!("n{o}"),
                ..Alert::default()
            }).collect();
            let keep = |order: &[Alert]| {
                let mut stored: Option<Alert> = None;
                for a in order {
                    if newer(a, stored.as_ref()) { stored = Some(a.clone()); }
                }
                stored.map(|a| (a.version, a.updated_at_ms, a.owner))
            };
            let mut other = alerts.clone();
            other.rotate_left(rotate % alerts.len());
            other.reverse();
            prop_assert_eq!(keep(&alerts), keep(&other));
        }

        /// A rule's alternating raise/clear stream never opens two alerts of one key at once.
        #[test]
        fn one_open_alert_per_key(events in proptest::collection::vec(any::<bool>(), 1..30)) {
            let mut open: Option<Alert> = None;
            let mut opened = 0;
            for (i, is_raise) in events.iter().enumerate() {
                let t = i as i64 * 1000;
                let event = if *is_raise { raise(t) } else { clear(t, ClearReason::Superseded) };
                let before = open.as_ref().map(|a| a.alert_id.clone());
                if let Some(a) = apply_event(open.as_ref(), &event, "F1", "n1", t) {
                    if before.as_deref() != Some(a.alert_id.as_str()) { opened += 1; }
                    open = (!is_resolved(&a)).then_some(a);
                }
            }
            let raises_after_resolve = events
                .iter()
                .enumerate()
                .filter(|(i, r)| **r && (*i == 0 || !events[i - 1]))
                .count();
            prop_assert_eq!(opened, raises_after_resolve);
        }
    }
}
