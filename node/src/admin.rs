//! `gridmesh admin`: what an operator asks a cluster (any node answers).

use std::io::Write as _;

use clap::Subcommand;
use gridmesh_proto::v1::{
    DrainNodeRequest, GetNodeStatsRequest, GetReplicaStatusRequest, GetReplicaStatusResponse,
    GetShardMapRequest, ListActiveMetersRequest, ListMembersRequest, MemberState, RepairRequest,
};

/// `gridmesh admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Members as the node sees them: state, incarnation, addresses, heartbeat age, shards.
    Members {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The shard map: owner and preference list of every shard, with the view's epoch.
    Shards {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Move a node's shards to the other members (then it can be stopped).
    Drain {
        /// Node address (gRPC) of any member.
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Node to drain (default: the one at --target).
        #[arg(long)]
        node: Option<String>,
        /// Stop draining: the node takes shards again.
        #[arg(long)]
        cancel: bool,
    },
    /// Replication: per shard the home set and each member's copy; per member the hinted
    /// handoff backlog and anti-entropy progress.
    Replicas {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Only these shards (repeatable).
        #[arg(long)]
        shard: Vec<u32>,
        /// List every shard, not only those whose copies differ.
        #[arg(long)]
        all: bool,
        /// Only readings stamped before this time (RFC 3339 or ms since epoch): whether the
        /// copies agree on everything older, while newer writes are still arriving.
        #[arg(long)]
        before: Option<String>,
    },
    /// Compare the replicas of every shard (or the given ones); exits 1 when any differ.
    Verify {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Only these shards (repeatable).
        #[arg(long)]
        shard: Vec<u32>,
        /// Only readings stamped before this time (RFC 3339 or ms since epoch): whether the
        /// copies agree on everything older, while newer writes are still arriving.
        #[arg(long)]
        before: Option<String>,
    },
    /// Run anti-entropy and hinted handoff now, on every reachable member or one.
    Repair {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Only these shards (repeatable).
        #[arg(long)]
        shard: Vec<u32>,
        /// Only this member runs the round.
        #[arg(long)]
        node: Option<String>,
    },
    /// Actor and ingest statistics of every reachable node, and cluster totals.
    Stats {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// The meters with a resident actor on the node at the target address, one per line;
    /// those of shards it does not own (merging copies) are marked `copies`.
    ActiveMeters {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
}

fn state_name(state: i32) -> &'static str {
    match MemberState::try_from(state) {
        Ok(MemberState::Alive) => "alive",
        Ok(MemberState::Suspect) => "suspect",
        Ok(MemberState::Down) => "down",
        _ => "unknown",
    }
}

async fn replica_status(
    target: &str,
    shards: Vec<u32>,
    before: Option<&str>,
) -> anyhow::Result<GetReplicaStatusResponse> {
    let before_ts_ms = before
        .map(|b| crate::topology::parse_time(Some(b), 0))
        .transpose()?;
    let client = crate::connect::connect(target).await?;
    Ok(client
        .admin()
        .get_replica_status(GetReplicaStatusRequest {
            shards,
            before_ts_ms,
        })
        .await?
        .into_inner())
}

/// Prints shards (all, or only those not converged); returns how many are not converged.
fn print_shards(status: &GetReplicaStatusResponse, all: bool) -> usize {
    let differing = status.shards.iter().filter(|s| !s.converged).count();
    println!(
        "replication factor {}, write quorum {}; {} shards, {} not converged",
        status.replication_factor,
        status.write_quorum,
        status.shards.len(),
        differing
    );
    let mut out = std::io::stdout().lock();
    for s in status.shards.iter().filter(|s| all || !s.converged) {
        let copies: Vec<String> = s
            .copies
            .iter()
            .map(|c| {
                let mark = if c.home { "" } else { " (extra)" };
                format!("{}={}@{:016x}{mark}", c.node, c.readings, c.digest)
            })
            .collect();
        let unavailable = if s.unavailable.is_empty() {
            String::new()
        } else {
            format!("  unavailable: {}", s.unavailable.join(","))
        };
        let line = format!(
            "{:>5} {:<9} home {:<24} {}{unavailable}",
            s.shard,
            if s.converged { "converged" } else { "DIFFERS" },
            s.home.join(","),
            copies.join(" ")
        );
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    differing
}

/// Runs an admin command.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Replicas {
            target,
            shard,
            all,
            before,
        } => {
            let status = replica_status(&target, shard, before.as_deref()).await?;
            print_shards(&status, all);
            println!(
                "{:<20} {:>14} {:>12} {:>10} {:>14} {:>20}",
                "NODE", "HINTS PENDING", "HANDED OFF", "AE ROUNDS", "AE COPIED", "LAST ROUND"
            );
            for n in &status.nodes {
                if !n.error.is_empty() {
                    println!("{:<20} unavailable: {}", n.node, n.error);
                    continue;
                }
                let pending: u64 = n.hints_pending.values().sum();
                let last = if n.anti_entropy_last_ms == 0 {
                    "never".to_owned()
                } else {
                    let age = gridmesh_actors::context::now_ms() - n.anti_entropy_last_ms;
                    format!("{:.1} s ago", age as f64 / 1000.0)
                };
                println!(
                    "{:<20} {:>14} {:>12} {:>10} {:>14} {:>20}",
                    n.node,
                    pending,
                    n.handed_off,
                    n.anti_entropy_rounds,
                    n.anti_entropy_pushed,
                    last
                );
            }
            Ok(())
        }
        AdminCommand::Verify {
            target,
            shard,
            before,
        } => {
            let status = replica_status(&target, shard, before.as_deref()).await?;
            let differing = print_shards(&status, false);
            if differing > 0 {
                anyhow::bail!(
                    "{differing} shards have replicas that differ; `gridmesh admin repair` copies \
                     what is missing (and anti-entropy does so on its own)"
                );
            }
            println!("every shard's live home replicas hold the same readings");
            Ok(())
        }
        AdminCommand::Repair {
            target,
            shard,
            node,
        } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .repair(RepairRequest {
                    shards: shard,
                    node: node.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!(
                "{} readings copied by {} members ({})",
                r.readings_copied,
                r.nodes.len(),
                r.nodes.join(", ")
            );
            for e in &r.errors {
                println!("not run: {e}");
            }
            Ok(())
        }
        AdminCommand::Members { target, json } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .list_members(ListMembersRequest {})
                .await?
                .into_inner();
            if json {
                let members: Vec<_> = r
                    .members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name,
                            "state": state_name(m.state),
                            "incarnation": m.incarnation,
                            "grpc_addr": m.grpc_addr,
                            "cluster_addr": m.cluster_addr,
                            "draining": m.draining,
                            "last_heartbeat_age_ms": m.last_heartbeat_age_ms,
                            "is_self": m.is_self,
                            "shards_owned": m.shards_owned,
                        })
                    })
                    .collect();
                let out = serde_json::json!({
                    "answered_by": r.answered_by,
                    "epoch": r.epoch,
                    "members": members,
                });
                println!("{out}");
                return Ok(());
            }
            println!("view of {} at epoch {}", r.answered_by, r.epoch);
            println!(
                "{:<20} {:<8} {:>15} {:<22} {:<22} {:>9} {:>6}",
                "NAME", "STATE", "INCARNATION", "GRPC", "CLUSTER", "HB AGE", "SHARDS"
            );
            for m in r.members {
                let state = if m.draining {
                    format!("{}*", state_name(m.state))
                } else {
                    state_name(m.state).to_owned()
                };
                let age = if m.is_self {
                    "self".to_owned()
                } else {
                    format!("{} ms", m.last_heartbeat_age_ms)
                };
                println!(
                    "{:<20} {:<8} {:>15} {:<22} {:<22} {:>9} {:>6}",
                    m.name, state, m.incarnation, m.grpc_addr, m.cluster_addr, age, m.shards_owned
                );
            }
            Ok(())
        }
        AdminCommand::Shards { target } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .get_shard_map(GetShardMapRequest {})
                .await?
                .into_inner();
            println!(
                "shard map of {} at epoch {} ({} shards)",
                r.answered_by, r.epoch, r.shard_count
            );
            let mut out = std::io::stdout().lock();
            for s in r.shards {
                // A closed pipe (`| head`) ends the listing quietly.
                if writeln!(out, "{:>5}  {}", s.shard, s.preference.join(" > ")).is_err() {
                    break;
                }
            }
            Ok(())
        }
        AdminCommand::Drain {
            target,
            node,
            cancel,
        } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .drain_node(DrainNodeRequest {
                    node: node.unwrap_or_default(),
                    cancel,
                })
                .await?
                .into_inner();
            if cancel {
                println!("{} takes shards again", r.node);
            } else {
                println!(
                    "{} drains: {} shards move to the other members; stop it when \
                     `gridmesh admin members` shows it owns none",
                    r.node, r.shards_moving
                );
            }
            Ok(())
        }
        AdminCommand::ActiveMeters { target } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .list_active_meters(ListActiveMetersRequest {})
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            for meter in &r.meter_ids {
                writeln!(out, "{meter}")?;
            }
            for meter in &r.copy_meter_ids {
                writeln!(out, "{meter} copies")?;
            }
            eprintln!(
                "{}: {} active meters in owned shards, {} merging copies (view epoch {})",
                r.answered_by,
                r.meter_ids.len(),
                r.copy_meter_ids.len(),
                r.epoch
            );
            Ok(())
        }
        AdminCommand::Stats { target, node } => {
            let client = crate::connect::connect(&target).await?;
            let r = client
                .admin()
                .get_node_stats(GetNodeStatsRequest {
                    node: node.unwrap_or_default(),
                })
                .await?
                .into_inner();
            println!(
                "{:<20} {:>10} {:>8} {:>9} {:>12} {:>14} {:>12} {:>10} {:>9} {:>8}",
                "NODE",
                "METERS",
                "FEEDERS",
                "SESSIONS",
                "PASSIVATED",
                "ACCEPTED",
                "REJECTED",
                "FORWARDED",
                "FAILURES",
                "UPTIME"
            );
            let (mut accepted, mut rejected) = (0, 0);
            for n in &r.nodes {
                if !n.error.is_empty() {
                    println!("{:<20} unavailable: {}", n.node, n.error);
                    continue;
                }
                accepted += n.readings_accepted;
                rejected += n.readings_rejected;
                println!(
                    "{:<20} {:>10} {:>8} {:>9} {:>12} {:>14} {:>12} {:>10} {:>9} {:>7}s",
                    n.node,
                    n.active_meters,
                    n.active_feeders,
                    n.active_sessions,
                    n.passivations,
                    n.readings_accepted,
                    n.readings_rejected,
                    n.batches_forwarded,
                    n.restarts,
                    n.uptime_s
                );
                let mailboxes: Vec<String> = n
                    .mailboxes
                    .iter()
                    .map(|m| format!("{} {}/{}", m.kind, m.queued, m.high_water))
                    .collect();
                println!(
                    "{:<20} mailboxes (queued now / deepest since start): {}",
                    "",
                    mailboxes.join(", ")
                );
            }
            println!("cluster: {accepted} readings accepted, {rejected} rejected");
            Ok(())
        }
    }
}
