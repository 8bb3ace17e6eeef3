//! Outbound notifications: the `NotifierActor` and its sinks.
//!
//! The alert manager hands the notifier every alert change it made itself (so each change is
//! notified once in the cluster, by the alert's owner). Each configured sink (`[[notify.sinks]]`,
//! a webhook that receives a JSON POST) has a route — minimum severity, kinds, feeders — and a
//! bounded queue worked by its own task:
//!
//! - **Retry** with exponential backoff and full jitter (`notify.retry_initial` doubling up to
//!   `notify.retry_max`), at most `notify.max_attempts` attempts per notification.
//! - **Circuit breaker** per sink: `notify.breaker_failures` consecutive failures open it; while
//!   open nothing is sent; after `notify.breaker_cooldown` one probe is let through
//!   (half-open): success closes it, failure opens it again.
//! - **Dead letters.** A notification that used up its attempts, or found its sink's queue
//!   full, is stored in the `dead_letters` keyspace with its last error. An admin lists and
//!   replays them (`gridmesh admin dead-letters`); a replayed letter goes back to its sink's
//!   queue and leaves the keyspace.
//!
//! Which changes are notified ([`event_of`]): an alert opened, escalated to a higher severity,
//! acknowledged or resolved; plain repeat occurrences are not (they would flood a pager).
//!
//! Restart policy: supervised by the node supervisor (one_for_one, node restart budget).
//! Queued notifications live in memory; a restart drops the queues (the alerts themselves are
//! durable and listed by `ListAlerts`), dead letters are durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gridmesh_config::{NotifyConfig, SinkConfig};
use gridmesh_proto::internal::DeadLetter;
use gridmesh_proto::v1::{Alert, AlertSeverity, AlertState};
use http_body_util::Full;
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use rand::Rng;
use tokio::sync::mpsc;

use crate::context::{NodeContext, now_ms};
use crate::storage::{Store, StoreResult};
use crate::writer::{Row, Space};

/// What happened to an alert, as a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new alert.
    Opened,
    /// An open alert's severity went up.
    Escalated,
    /// An operator acknowledged it.
    Acknowledged,
    /// Resolved (by an operator or automatically).
    Resolved,
}

impl Event {
    /// Name in the JSON payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Escalated => "escalated",
            Event::Acknowledged => "acknowledged",
            Event::Resolved => "resolved",
        }
    }
}

/// The event a change is, given the alert's previous severity and state as the notifier last
/// saw them (`None`: first seen). `None` when the change is not notified.
pub fn event_of(alert: &Alert, before: Option<(i32, i32)>) -> Option<Event> {
    let state = alert.state;
    match before {
        None if state == AlertState::Resolved as i32 => Some(Event::Resolved),
        None => Some(Event::Opened),
        Some((_, s)) if s != state && state == AlertState::Resolved as i32 => Some(Event::Resolved),
        Some((_, s)) if s != state && state == AlertState::Acknowledged as i32 => {
            Some(Event::Acknowledged)
        }
        Some((severity, _)) if alert.severity > severity => Some(Event::Escalated),
        Some(_) => None,
    }
}

/// Whether a sink's route takes `alert`.
pub fn routes(sink: &SinkConfig, alert: &Alert) -> bool {
    let min = min_severity(&sink.min_severity);
    alert.severity >= min as i32
        && (sink.kinds.is_empty() || sink.kinds.contains(&alert.kind))
        && (sink.feeders.is_empty() || sink.feeders.contains(&alert.feeder_id))
}

fn min_severity(name: &str) -> AlertSeverity {
    match name {
        "minor" => AlertSeverity::Minor,
        "major" => AlertSeverity::Major,
        "critical" => AlertSeverity::Critical,
        _ => AlertSeverity::Info,
    }
}

/// The JSON a webhook receives.
pub fn payload(event: Event, alert: &Alert, node: &str) -> String {
    let severity = AlertSeverity::try_from(alert.severity)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ALERT_SEVERITY_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let state = AlertState::try_from(alert.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ALERT_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    serde_json::json!({
        "event": event.as_str(),
        "sent_by": node,
        "alert": {
            "alert_id": alert.alert_id,
            "dedup_key": alert.dedup_key,
            "kind": alert.kind,
            "severity": severity,
            "state": state,
            "asset_id": alert.asset_id,
            "feeder_id": alert.feeder_id,
            "since_ts_ms": alert.since_ts_ms,
            "raised_ts_ms": alert.raised_ts_ms,
            "last_ts_ms": alert.last_ts_ms,
            "occurrences": alert.occurrences,
            "value": alert.value,
            "limit": alert.limit,
            "message": alert.message,
            "acknowledged_by": alert.acknowledged_by,
            "resolved_by": alert.resolved_by,
            "note": alert.note,
            "version": alert.version,
        },
    })
    .to_string()
}

/// Backoff before attempt `attempt` (1-based retries): full jitter over an exponential cap.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let cap = initial
        .saturating_mul(1u32 << attempt.min(20).saturating_sub(1))
        .min(max);
    cap.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Sending normally; consecutive failures so far.
    Closed(u32),
    /// Not sending until the given time (ms).
    Open(i64),
    /// One probe is in flight.
    HalfOpen,
}

impl Breaker {
    /// Whether a send may go out at `now`; an open breaker past its cooldown lets one probe
    /// through.
    pub fn allow(&mut self, now: i64) -> bool {
        match *self {
            Breaker::Closed(_) => true,
            Breaker::Open(until) if now >= until => {
                *self = Breaker::HalfOpen;
                true
            }
            Breaker::Open(_) | Breaker::HalfOpen => false,
        }
    }

    /// Records a send's result.
    pub fn record(&mut self, ok: bool, now: i64, threshold: u32, cooldown: Duration) {
        let open = Breaker::Open(now + cooldown.as_millis() as i64);
        *self = match (*self, ok) {
            (_, true) => Breaker::Closed(0),
            (Breaker::Closed(n), false) if n + 1 >= threshold => open,
            (Breaker::Closed(n), false) => Breaker::Closed(n + 1),
            (Breaker::HalfOpen | Breaker::Open(_), false) => open,
        };
    }
}

/// One queued notification.
#[derive(Debug, Clone)]
struct Letter {
    body: String,
    alert_id: String,
    event: &'static str,
}

/// Sends one POST; `Err` with a reason on any failure (connect, timeout, non-2xx).
type Sender = Arc<
    dyn Fn(String, String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

fn http_sender(timeout: Duration) -> Sender {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map(|b| b.https_or_http().enable_http1().build());
    let client = match https {
        Ok(connector) => Some(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector),
        ),
        Err(e) => {
            tracing::error!(error = %e, "no TLS roots for webhooks; sinks will fail");
            None
        }
    };
    Arc::new(move |url: String, body: String| {
        let client = client.clone();
        Box::pin(async move {
            let client = client.ok_or("no TLS roots on this host")?;
            let request = hyper::Request::post(url.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "gridmesh-notifier")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, client.request(request)).await {
                Err(_) => Err(format!("no answer within {timeout:?}")),
                Ok(Err(e)) => Err(format!("request failed: {e}")),
                Ok(Ok(response)) if response.status().is_success() => Ok(()),
                Ok(Ok(response)) => Err(format!("answered {}", response.status())),
            }
        })
    })
}

/// Dead letters stored on this node, oldest first, at most `limit`: `(id, letter)`.
pub fn dead_letters(store: &Store, limit: usize) -> StoreResult<Vec<(u64, DeadLetter)>> {
    let mut out = Vec::new();
    for item in store.dead_letters.iter().take(limit) {
        let (key, value) = item.into_inner()?;
        let Ok(bytes) = <[u8; 8]>::try_from(key.as_ref()) else {
            continue;
        };
        if let Ok(letter) = DeadLetter::decode(value.as_ref()) {
            out.push((u64::from_be_bytes(bytes), letter));
        }
    }
    Ok(out)
}

/// Messages of the notifier. Local only.
#[derive(RactorMessage)]
pub enum NotifyMsg {
    /// Alert changes made on this node.
    Changes(Vec<Alert>),
    /// Re-send dead letters (all, or those of one sink); replies with how many were queued.
    Replay {
        /// Only this sink.
        sink: Option<String>,
        /// Reply.
        reply: ractor::RpcReplyPort<u64>,
    },
}

/// The notifier actor.
#[derive(Debug)]
pub struct NotifierActor;

struct Sink {
    config: SinkConfig,
    queue: mpsc::Sender<Letter>,
    task: tokio::task::JoinHandle<()>,
}

/// State of the notifier.
pub struct NotifierState {
    ctx: Arc<NodeContext>,
    sinks: Vec<Sink>,
    /// (severity, state) of each alert as last notified, to tell events apart.
    seen: std::collections::HashMap<String, (i32, i32)>,
}

/// Next dead-letter id (time-ordered, unique within the node).
static NEXT_LETTER: AtomicU64 = AtomicU64::new(0);

fn letter_id() -> u64 {
    let base = (now_ms() as u64) << 16;
    let n = NEXT_LETTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    base | n
}

async fn bury(ctx: &NodeContext, sink: &str, letter: &Letter, attempts: u32, error: &str) {
    let dead = DeadLetter {
        sink: sink.to_owned(),
        body: letter.body.clone(),
        alert_id: letter.alert_id.clone(),
        event: letter.event.to_owned(),
        attempts,
        last_error: error.to_owned(),
        failed_at_ms: now_ms(),
    };
    let row = Row::put(
        Space::DeadLetters,
        letter_id().to_be_bytes().to_vec(),
        dead.encode_to_vec(),
    );
    metrics::counter!("gridmesh_notifications_dead_total", "sink" => sink.to_owned()).increment(1);
    if let Err(e) = ctx.writer.write(vec![row]).await {
        tracing::error!(sink, error = %e, "could not store a dead letter");
    }
    tracing::warn!(sink, alert = %letter.alert_id, attempts, error, "notification dead-lettered");
}

/// Works one sink's queue: send, retry with backoff, obey the breaker, bury what fails.
async fn run_sink(
    ctx: Arc<NodeContext>,
    config: SinkConfig,
    settings: NotifyConfig,
    send: Sender,
    mut queue: mpsc::Receiver<Letter>,
) {
    let name = config.name.clone();
    let mut breaker = Breaker::Closed(0);
    while let Some(letter) = queue.recv().await {
        let mut attempt = 0;
        let mut last_error = String::new();
        loop {
            if attempt >= settings.max_attempts {
                bury(&ctx, &name, &letter, attempt, &last_error).await;
                break;
            }
            let now = now_ms();
            if !breaker.allow(now) {
                // Open: wait for the cooldown to end, then probe with this letter.
                let until = match breaker {
                    Breaker::Open(until) => until,
                    _ => now + 100,
                };
                metrics::gauge!("gridmesh_notify_breaker_open", "sink" => name.clone()).set(1.0);
                tokio::time::sleep(Duration::from_millis((until - now).max(10) as u64)).await;
                continue;
            }
            attempt += 1;
            let started = std::time::Instant::now();
            let result = send(config.url.clone(), letter.body.clone()).await;
            metrics::histogram!("gridmesh_notify_latency_seconds", "sink" => name.clone())
                .record(started.elapsed().as_secs_f64());
            let ok = result.is_ok();
            breaker.record(
                ok,
                now_ms(),
                settings.breaker_failures,
                settings.breaker_cooldown,
            );
            let open = f64::from(u8::from(matches!(breaker, Breaker::Open(_))));
            metrics::gauge!("gridmesh_notify_breaker_open", "sink" => name.clone()).set(open);
            match result {
                Ok(()) => {
                    metrics::counter!("gridmesh_notifications_sent_total", "sink" => name.clone())
                        .increment(1);
                    break;
                }
                Err(e) => {
                    metrics::counter!("gridmesh_notify_failures_total", "sink" => name.clone())
                        .increment(1);
                    tracing::debug!(sink = %name, attempt, error = %e, "notification failed");
                    last_error = e;
                    let jitter = rand::rng().random::<f64>();
                    let wait = backoff(attempt, settings.retry_initial, settings.retry_max, jitter);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Actor for NotifierActor {
    type Msg = NotifyMsg;
    type State = NotifierState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifyMsg>,
        ctx: Arc<NodeContext>,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let settings = ctx.config.notify.clone();
        let send = http_sender(settings.timeout);
        let sinks = settings
            .sinks
            .iter()
            .map(|config| {
                let (tx, rx) = mpsc::channel(settings.queue.max(1) as usize);
                let task = tokio::spawn(run_sink(
                    ctx.clone(),
                    config.clone(),
                    settings.clone(),
                    send.clone(),
                    rx,
                ));
                Sink {
                    config: config.clone(),
                    queue: tx,
                    task,
                }
            })
            .collect();
        ctx.set_notifier(Some(myself));
        Ok(NotifierState {
            ctx,
            sinks,
            seen: std::collections::HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<NotifyMsg>,
        s: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        s.ctx.set_notifier(None);
        for sink in &s.sinks {
            sink.task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<NotifyMsg>,
        msg: NotifyMsg,
        s: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifyMsg::Changes(alerts) => {
                for alert in alerts {
                    let before = s.seen.get(&alert.alert_id).copied();
                    let event = event_of(&alert, before);
                    if alert.state == AlertState::Resolved as i32 {
                        s.seen.remove(&alert.alert_id);
                    } else {
                        s.seen
                            .insert(alert.alert_id.clone(), (alert.severity, alert.state));
                    }
                    let Some(event) = event else { continue };
                    let body = payload(event, &alert, s.ctx.cluster.name());
                    for sink in s.sinks.iter().filter(|k| routes(&k.config, &alert)) {
                        let letter = Letter {
                            body: body.clone(),
                            alert_id: alert.alert_id.clone(),
                            event: event.as_str(),
                        };
                        if let Err(mpsc::error::TrySendError::Full(letter)) =
                            sink.queue.try_send(letter)
                        {
                            bury(&s.ctx, &sink.config.name, &letter, 0, "sink queue full").await;
                        }
                    }
                }
            }
            NotifyMsg::Replay { sink, reply } => {
                let letters = dead_letters(&s.ctx.store, 100_000)?;
                let mut queued = 0;
                let mut done = Vec::new();
                for (id, dead) in letters {
                    if sink.as_ref().is_some_and(|only| *only != dead.sink) {
                        continue;
                    }
                    let Some(target) = s.sinks.iter().find(|k| k.config.name == dead.sink) else {
                        continue;
                    };
                    let event = match dead.event.as_str() {
                        "opened" => Event::Opened,
                        "escalated" => Event::Escalated,
                        "acknowledged" => Event::Acknowledged,
                        _ => Event::Resolved,
                    };
                    let letter = Letter {
                        body: dead.body,
                        alert_id: dead.alert_id,
                        event: event.as_str(),
                    };
                    if target.queue.try_send(letter).is_ok() {
                        queued += 1;
                        done.push(Row::delete(Space::DeadLetters, id.to_be_bytes().to_vec()));
                    }
                }
                if !done.is_empty() {
                    s.ctx.writer.write(done).await?;
                }
                let _ = reply.send(queued);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() {
        let cooldown = Duration::from_secs(10);
        let mut b = Breaker::Closed(0);
        for _ in 0..2 {
            assert!(b.allow(0));
            b.record(false, 0, 3, cooldown);
        }
        assert_eq!(b, Breaker::Closed(2));
        b.record(false, 0, 3, cooldown);
        assert_eq!(b, Breaker::Open(10_000));
        assert!(!b.allow(9_999));
        assert!(b.allow(10_000), "one probe after the cooldown");
        assert!(!b.allow(10_000), "only one");
        b.record(false, 10_000, 3, cooldown);
        assert_eq!(b, Breaker::Open(20_000), "a failed probe opens it again");
        assert!(b.allow(20_000));
        b.record(true, 20_000, 3, cooldown);
        assert_eq!(b, Breaker::Closed(0));
    }

    #[test]
    fn only_lifecycle_changes_are_notified() {
        let mut a = Alert {
            alert_id: "x@1".into(),
            severity: AlertSeverity::Minor as i32,
            state: AlertState::Open as i32,
            ..Alert::default()
        };
        assert_eq!(event_of(&a, None), Some(Event::Opened));
        let seen = Some((a.severity, a.state));
        assert_eq!(event_of(&a, seen), None, "a repeat occurrence");
        a.severity = AlertSeverity::Major as i32;
        assert_eq!(event_of(&a, seen), Some(Event::Escalated));
        a.state = AlertState::Acknowledged as i32;
        assert_eq!(event_of(&a, seen), Some(Event::Acknowledged));
        a.state = AlertState::Resolved as i32;
        assert_eq!(event_of(&a, seen), Some(Event::Resolved));
    }

    #[test]
    fn routes_filter_by_severity_kind_and_feeder() {
        let sink = SinkConfig {
            name: "pager".into(),
            url: "http://127.0.0.1:1/hook".into(),
            min_severity: "major".into(),
            kinds: vec!["overload".into()],
            feeders: vec![],
        };
        let alert = |severity: AlertSeverity, kind: &str| Alert {
            severity: severity as i32,
            kind: kind.into(),
            feeder_id: "F1".into(),
            ..Alert::default()
        };
        assert!(routes(&sink, &alert(AlertSeverity::Critical, "overload")));
        assert!(!routes(&sink, &alert(AlertSeverity::Minor, "overload")));
        assert!(!routes(&sink, &alert(AlertSeverity::Critical, "outage")));
    }

    proptest! {
        #[test]
        fn backoff_stays_under_its_cap_and_grows(attempt in 1u32..40, jitter in 0.0f64..=1.0) {
            let (initial, max) = (Duration::from_millis(100), Duration::from_secs(30));
            let wait = backoff(attempt, initial, max, jitter);
            prop_assert!(wait <= max);
            let cap = backoff(attempt, initial, max, 1.0);
            prop_assert!(cap >= backoff(attempt.saturating_sub(1).max(1), initial, max, 1.0));
            prop_assert!(wait <= cap);
        }
    }
}
