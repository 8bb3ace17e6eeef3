//! `gridmesh alerts`: what a grid operator asks a cluster (any node answers).

use clap::Subcommand;
use gridmesh_proto::v1::{
    AcknowledgeAlertRequest, Alert, AlertSeverity, AlertState, ListAlertsRequest,
    ListDeadLettersRequest, ReplayDeadLettersRequest, ResolveAlertRequest, WatchAlertsRequest,
};

use crate::demo::format_ts;

/// `gridmesh alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first.
    List {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Only this feeder.
        #[arg(long)]
        feeder: Option<String>,
        /// Only this kind (e.g. overload, undervoltage, outage).
        #[arg(long)]
        kind: Option<String>,
        /// Only open and acknowledged ones.
        #[arg(long)]
        active: bool,
        /// Most alerts shown.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print alert changes as they happen (Ctrl-C stops); prints the cursor to resume from.
    Watch {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Resume after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Start with every alert that is not resolved.
        #[arg(long)]
        open: bool,
    },
    /// Acknowledge an alert.
    Ack {
        /// The alert id.
        alert_id: String,
        /// Who (until authentication provides it).
        #[arg(long, default_value = "cli")]
        by: String,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Resolve an alert.
    Resolve {
        /// The alert id.
        alert_id: String,
        /// Who.
        #[arg(long, default_value = "cli")]
        by: String,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Notifications given up after their attempts; `--replay` sends them again.
    DeadLetters {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Put them back on their sinks' queues.
        #[arg(long)]
        replay: bool,
        /// Only this sink (with --replay).
        #[arg(long)]
        sink: Option<String>,
    },
}

fn severity(v: i32) -> &'static str {
    match AlertSeverity::try_from(v) {
        Ok(AlertSeverity::Info) => "info",
        Ok(AlertSeverity::Minor) => "minor",
        Ok(AlertSeverity::Major) => "major",
        Ok(AlertSeverity::Critical) => "critical",
        _ => "?",
    }
}

fn state(v: i32) -> &'static str {
    match AlertState::try_from(v) {
        Ok(AlertState::Open) => "open",
        Ok(AlertState::Acknowledged) => "acked",
        Ok(AlertState::Resolved) => "resolved",
        _ => "?",
    }
}

/// One line per alert.
pub fn line(a: &Alert) -> String {
    format!(
        "{:<16} {:<8} {:<9} {:<20} {:>4}x  {}  {}",
        format_ts(a.raised_ts_ms),
        severity(a.severity),
        state(a.state),
        a.kind,
        a.occurrences,
        a.alert_id,
        a.message
    )
}

/// Runs an alerts command.
pub async fn run(command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List {
            target,
            feeder,
            kind,
            active,
            limit,
        } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .alerts()
                .list_alerts(ListAlertsRequest {
                    feeder_id: feeder.unwrap_or_default(),
                    kind: kind.unwrap_or_default(),
                    limit,
                    ..ListAlertsRequest::default()
                })
                .await?
                .into_inner();
            let shown: Vec<&Alert> = r
                .alerts
                .iter()
                .filter(|a| !active || a.state != AlertState::Resolved as i32)
                .collect();
            println!(
                "{:<16} {:<8} {:<9} {:<20} {:>5}  ID  MESSAGE",
                "RAISED (UTC)", "SEVERITY", "STATE", "KIND", "COUNT"
            );
            for a in &shown {
                println!("{}", line(a));
            }
            if r.truncated {
                println!("(more; raise --limit)");
            }
            Ok(())
        }
        AlertsCommand::Watch {
            target,
            cursor,
            open,
        } => {
            let client = crate::connect::connect(&target).await?;
            let mut stream = client
                .alerts()
                .watch_alerts(WatchAlertsRequest {
                    cursor: cursor.unwrap_or_default(),
                    include_open: open,
                    ..WatchAlertsRequest::default()
                })
                .await?
                .into_inner();
            while let Some(change) = stream.message().await? {
                if let Some(a) = &change.alert {
                    println!("{}  [cursor {}]", line(a), change.cursor);
                }
            }
            Ok(())
        }
        AlertsCommand::Ack {
            alert_id,
            by,
            note,
            target,
        } => {
            let client = crate::connect::connect(&target).await?;
            let a = client
                .alerts()
                .acknowledge_alert(AcknowledgeAlertRequest { alert_id, by, note })
                .await?
                .into_inner();
            println!("{}", line(&a));
            Ok(())
        }
        AlertsCommand::Resolve {
            alert_id,
            by,
            note,
            target,
        } => {
            let client = crate::connect::connect(&target).await?;
            let a = client
                .alerts()
                .resolve_alert(ResolveAlertRequest { alert_id, by, note })
                .await?
                .into_inner();
            println!("{}", line(&a));
            Ok(())
        }
        AlertsCommand::DeadLetters {
            target,
            replay,
            sink,
        } => {
            let client = crate::connect::connect(&target).await?;
            if replay {
                let r = client
                    .alerts()
                    .replay_dead_letters(ReplayDeadLettersRequest {
                        sink: sink.unwrap_or_default(),
                        node: String::new(),
                    })
                    .await?
                    .into_inner();
                println!("{} notifications queued again", r.queued);
                for node in r.unavailable {
                    println!("not asked: {node}");
                }
                return Ok(());
            }
            let r = client
                .alerts()
                .list_dead_letters(ListDeadLettersRequest::default())
                .await?
                .into_inner();
            println!(
                "{:<12} {:<16} {:<16} {:<12} {:>8}  ALERT / LAST ERROR",
                "NODE", "FAILED (UTC)", "SINK", "EVENT", "ATTEMPTS"
            );
            for l in &r.letters {
                println!(
                    "{:<12} {:<16} {:<16} {:<12} {:>8}  {} / {}",
                    l.node,
                    format_ts(l.failed_at_ms),
                    l.sink,
                    l.event,
                    l.attempts,
                    l.alert_id,
                    l.last_error
                );
            }
            for node in r.unavailable {
                println!("not asked: {node}");
            }
            Ok(())
        }
    }
}
