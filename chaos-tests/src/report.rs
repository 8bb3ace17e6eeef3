//! The run report: per fault window availability, latency, detection, failover, recovery and
//! shard moves; totals per fault kind; memory and gauges; the checker's verdict. As JSON (for
//! tools) and Markdown (for people); the timeline picture is [`crate::timeline`].
//!
//! Definitions (all from the window's scheduled start):
//!
//! - **availability**: requests started in the window that were acknowledged, over all started;
//! - **detection**: until every observer of the window (the other side of the cut) lists every
//!   victim as down, from the monitor's samples (every 200 ms, so ±200 ms);
//! - **failover**: until the first request that started after detection, went to a node that
//!   is not a victim and was acknowledged with no reading rejected, completed — the cluster
//!   serves the victims' shards again;
//! - **recovery**: from the window's end to the first acknowledged request started after it;
//! - **shards moved**: most shards whose owner changed in the first observer's map during the
//!   window, against its map just before;
//! - **join**: for a node that joins, until every member lists it alive and owning shards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::checker::CheckResult;
use crate::monitor::{self, Observations};
use crate::nemesis::Applied;
use crate::proxy::{Link, LinkStats};
use crate::schedule::{FaultKind, FaultWindow};
use crate::workload::{Op, Outcome};

/// Request statistics of one period of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodStats {
    /// Requests acknowledged.
    pub ok: usize,
    /// Requests refused.
    pub failed: usize,
    /// Requests without a definite answer.
    pub unknown: usize,
    /// Latency percentiles of all requests in the period, ms: p50, p99, p99.9.
    pub latency_ms: [f64; 3],
}

impl PeriodStats {
    /// Share of requests acknowledged.
    pub fn availability(&self) -> f64 {
        let total = self.ok + self.failed + self.unknown;
        if total == 0 {
            1.0
        } else {
            self.ok as f64 / total as f64
        }
    }
}

/// Statistics of the requests that started in `[from, to)`.
pub fn period_stats(history: &[Op], from: Duration, to: Duration) -> PeriodStats {
    let ops: Vec<&Op> = history
        .iter()
        .filter(|op| op.start >= from && op.start < to)
        .collect();
    let mut latencies: Vec<f64> = ops
        .iter()
        .map(|op| op.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut stats = PeriodStats {
        latency_ms: [
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 99.9),
        ],
        ..PeriodStats::default()
    };
    for op in ops {
        match op.outcome {
            Outcome::Acked { .. } => stats.ok += 1,
            Outcome::Failed(_) => stats.failed += 1,
            Outcome::Unknown(_) => stats.unknown += 1,
        }
    }
    stats
}

/// Time from the end of a window to the first acknowledged request started after it.
pub fn recovery_time(history: &[Op], window: &FaultWindow) -> Option<Duration> {
    history
        .iter()
        .filter(|op| op.start >= window.end() && matches!(op.outcome, Outcome::Acked { .. }))
        .map(|op| op.start + op.latency - window.end())
        .min()
}

/// Time from the window's start until a request started after `detection`, sent to a node
/// that is not a victim, was fully acknowledged.
pub fn failover_time(
    history: &[Op],
    window: &FaultWindow,
    detection: Option<Duration>,
) -> Option<Duration> {
    let detected_at = window.start + detection?;
    let victims = window.victims();
    history
        .iter()
        .filter(|op| op.start >= detected_at && !victims.contains(&op.node))
        .filter(|op| matches!(&op.outcome, Outcome::Acked { rejected } if rejected.is_empty()))
        .map(|op| op.start + op.latency - window.start)
        .min()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything a report needs.
#[derive(Debug)]
pub struct RunSummary<'a> {
    /// Seed of the run.
    pub seed: u64,
    /// How the nodes were isolated ("loopback" or "netns").
    pub mode: &'a str,
    /// Why that mode (e.g. why not netns), shown with it.
    pub mode_note: String,
    /// Nodes at the start.
    pub nodes: usize,
    /// Faulty duration.
    pub duration: Duration,
    /// The windows as applied (see [`crate::nemesis::NemesisLog::effective`]); figures are
    /// measured from these.
    pub windows: &'a [FaultWindow],
    /// The windows as scheduled.
    pub planned: &'a [FaultWindow],
    /// When each window really started and healed.
    pub applied: &'a [Applied],
    /// The history.
    pub history: &'a [Op],
    /// What the monitor sampled.
    pub observations: &'a Observations,
    /// The checker's result.
    pub check: &'a CheckResult,
    /// Further violations found (aggregates, counters, memory, views, proxy), human-readable.
    pub other_violations: &'a [String],
    /// Copies per reading the cluster keeps (decides whether wipe losses are expected).
    pub replication_factor: u32,
    /// How long the replicas took to converge after the views did (`None`: not checked, or
    /// did not converge — then a violation says so).
    pub replicas_converged_after: Option<Duration>,
    /// How long the views took to converge after healing (`None`: single node).
    pub converged_after: Option<Duration>,
    /// Proxy counters per link (namespace mode).
    pub proxy: Vec<(Link, LinkStats)>,
    /// Fault kinds asked for that this mode cannot inject, and why.
    pub skipped_faults: Vec<String>,
    /// Memory bound checked, bytes.
    pub max_rss_bytes: u64,
    /// Command that replays the run.
    pub replay: String,
    /// The alert probe's check (`None` where the probe did not run).
    pub alerts: Option<&'a crate::checker::AlertCheck>,
}

impl RunSummary<'_> {
    /// Whether the run passed every check.
    pub fn passed(&self) -> bool {
        self.check.is_ok() && self.other_violations.is_empty()
    }

    fn violations(&self) -> Vec<&String> {
        self.check
            .lost
            .iter()
            .chain(&self.check.refused_but_stored)
            .chain(&self.check.phantoms)
            .chain(&self.check.duplicated)
            .chain(self.other_violations)
            .collect()
    }
}

/// Everything the report says about one window.
#[derive(Debug, Clone)]
pub struct WindowFigures {
    /// Requests started inside it.
    pub stats: PeriodStats,
    /// See the module docs.
    pub detection: Option<Duration>,
    /// See the module docs.
    pub failover: Option<Duration>,
    /// See the module docs.
    pub recovery: Option<Duration>,
    /// See the module docs.
    pub shards_moved: Option<usize>,
    /// For `join`: until every member lists the new node alive and owning shards.
    pub join: Option<Duration>,
}

/// The figures of window `w`.
pub fn window_figures(run: &RunSummary<'_>, w: &FaultWindow) -> WindowFigures {
    let detection = monitor::detection_time(&run.observations.views, w);
    WindowFigures {
        stats: period_stats(run.history, w.start, w.end()),
        detection,
        failover: failover_time(run.history, w, detection),
        recovery: recovery_time(run.history, w),
        shards_moved: monitor::shards_moved(&run.observations.views, w),
        join: (w.kind == FaultKind::Join)
            .then(|| monitor::join_time(&run.observations.views, w))
            .flatten(),
    }
}

/// Per-kind totals: windows, summed request outcomes, worst detection and failover.
#[derive(Debug, Clone, Default)]
pub struct KindTotals {
    /// Windows of the kind.
    pub windows: usize,
    /// Requests acknowledged, refused, unknown in those windows.
    pub ok: usize,
    /// See `ok`.
    pub failed: usize,
    /// See `ok`.
    pub unknown: usize,
    /// Windows in which the victims were detected down.
    pub detected: usize,
    /// Worst detection.
    pub worst_detection: Option<Duration>,
    /// Worst failover.
    pub worst_failover: Option<Duration>,
}

impl KindTotals {
    /// Share of requests acknowledged.
    pub fn availability(&self) -> f64 {
        let total = self.ok + self.failed + self.unknown;
        if total == 0 {
            1.0
        } else {
            self.ok as f64 / total as f64
        }
    }
}

/// Totals per fault kind.
pub fn kind_totals(run: &RunSummary<'_>) -> BTreeMap<FaultKind, KindTotals> {
    let mut totals: BTreeMap<FaultKind, KindTotals> = BTreeMap::new();
    for w in run.windows {
        let f = window_figures(run, w);
        let t = totals.entry(w.kind).or_default();
        t.windows += 1;
        t.ok += f.stats.ok;
        t.failed += f.stats.failed;
        t.unknown += f.stats.unknown;
        t.detected += usize::from(f.detection.is_some());
        t.worst_detection = t.worst_detection.max(f.detection);
        t.worst_failover = t.worst_failover.max(f.failover);
    }
    totals
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// The JSON report.
pub fn to_json(run: &RunSummary<'_>) -> serde_json::Value {
    let windows: Vec<_> = run
        .windows
        .iter()
        .zip(
            run.applied
                .iter()
                .chain(std::iter::repeat(&Applied::default())),
        )
        .zip(run.planned)
        .map(|((w, applied), planned)| {
            let f = window_figures(run, w);
            json!({
                "kind": w.kind.name(), "describe": w.describe(), "node": w.node,
                "victims": w.victims(), "observers": w.observers(), "param": w.param,
                "nested": w.nested,
                "start_s": w.start.as_secs_f64(), "end_s": w.end().as_secs_f64(),
                "planned_start_s": planned.start.as_secs_f64(),
                "planned_end_s": planned.end().as_secs_f64(),
                "applied": applied.started.is_some() && applied.healed.is_some(),
                "notes": applied.notes,
                "ok": f.stats.ok, "failed": f.stats.failed, "unknown": f.stats.unknown,
                "availability": f.stats.availability(),
                "latency_ms": {
                    "p50": f.stats.latency_ms[0],
                    "p99": f.stats.latency_ms[1],
                    "p999": f.stats.latency_ms[2],
                },
                "detection_s": secs(f.detection),
                "failover_s": secs(f.failover),
                "recovery_s": secs(f.recovery),
                "shards_moved": f.shards_moved,
                "join_s": secs(f.join),
            })
        })
        .collect();
    let kinds: serde_json::Map<String, serde_json::Value> = kind_totals(run)
        .into_iter()
        .map(|(kind, t)| {
            (
                kind.name().to_owned(),
                json!({
                    "windows": t.windows, "ok": t.ok, "failed": t.failed, "unknown": t.unknown,
                    "availability": t.availability(), "detected": t.detected,
                    "worst_detection_s": secs(t.worst_detection),
                    "worst_failover_s": secs(t.worst_failover),
                }),
            )
        })
        .collect();
    let whole = period_stats(run.history, Duration::ZERO, Duration::MAX);
    let activation = crate::activation::check(run.observations);
    let rss: BTreeMap<String, u64> = run
        .observations
        .max_rss()
        .into_iter()
        .map(|(node, bytes)| (monitor::node_name(node), bytes >> 20))
        .collect();
    let proxy: Vec<_> = run
        .proxy
        .iter()
        .map(|((from, to), s)| {
            json!({"from": from, "to": to, "connections": s.connections, "bytes": s.bytes,
                   "resets": s.resets, "upstream_failures": s.upstream_failures})
        })
        .collect();
    json!({
        "seed": run.seed, "mode": run.mode, "mode_note": run.mode_note, "nodes": run.nodes,
        "duration_s": run.duration.as_secs_f64(),
        "passed": run.passed(),
        "replication_factor": run.replication_factor,
        "replicas_converged_s": secs(run.replicas_converged_after),
        "replicas_checked": run.replication_factor > 1,
        "skipped_faults": run.skipped_faults,
        "requests": {"ok": whole.ok, "failed": whole.failed, "unknown": whole.unknown},
        "readings": {
            "acked": run.check.acked, "lost": run.check.lost.len(),
            "duplicated": run.check.duplicated.len(),
            "refused_but_stored": run.check.refused_but_stored.len(),
            "phantoms": run.check.phantoms.len(),
            "unknown_present": run.check.unknown_present,
            "unknown_absent": run.check.unknown_absent,
            "lost_to_wipes_expected": run.check.wiped.len(),
        },
        "views_converged_s": secs(run.converged_after),
        "memory": {
            "max_rss_mib": rss, "bound_mib": run.max_rss_bytes >> 20,
            "max_gauges": run.observations.max_gauges(),
        },
        "samples": {
            "views": run.observations.views.len(),
            "resources": run.observations.resources.len(),
            "activity": run.observations.activity.len(),
        },
        "single_activation": {
            "rounds": activation.rounds, "overlaps": activation.overlaps,
            "unexplained": activation.unexplained,
            "longest_overlap_s": activation.longest_overlap.as_secs_f64(),
            "grace_s": crate::activation::OVERLAP_GRACE.as_secs(),
        },
        "alerts_once": run.alerts.map(|a| json!({
            "probe_readings": a.probe_readings, "alerts": a.alerts, "merged": a.merged,
            "violations": a.violations.len(),
        })),
        "proxy": proxy,
        "violations": run.violations().into_iter().take(100).collect::<Vec<_>>(),
        "kinds": kinds,
        "windows": windows,
        "replay": run.replay,
    })
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// The Markdown report.
pub fn to_markdown(run: &RunSummary<'_>) -> String {
    let mut out = String::new();
    let verdict = if run.passed() { "PASSED" } else { "FAILED" };
    let _ = writeln!(out, "# GridMesh chaos run — {verdict}\n");
    let _ = writeln!(
        out,
        "seed {} · {} node(s) · {:.0} s of faults · mode **{}** ({}) · replication factor {}\n\n\
         Replay: `{}`\n\n![timeline](timeline.svg)\n",
        run.seed,
        run.nodes,
        run.duration.as_secs_f64(),
        run.mode,
        run.mode_note,
        run.replication_factor,
        run.replay
    );
    if !run.skipped_faults.is_empty() {
        let _ = writeln!(
            out,
            "Not injected in this mode: {}\n",
            run.skipped_faults.join("; ")
        );
    }
    readings_section(&mut out, run);
    kinds_section(&mut out, run);
    windows_section(&mut out, run);
    resources_section(&mut out, run);
    let violations = run.violations();
    if !violations.is_empty() {
        let _ = writeln!(out, "\n## Violations (first 50)\n");
        for v in violations.iter().take(50) {
            let _ = writeln!(out, "- {v}");
        }
    }
    out
}

fn readings_section(out: &mut String, run: &RunSummary<'_>) {
    let c = run.check;
    let _ = writeln!(out, "## Readings\n");
    let _ = writeln!(
        out,
        "| acknowledged | lost | duplicated | refused but stored | phantom | unknown: stored \
         | unknown: absent | lost to wipes (expected, R=1) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.acked,
        c.lost.len(),
        c.duplicated.len(),
        c.refused_but_stored.len(),
        c.phantoms.len(),
        c.unknown_present,
        c.unknown_absent,
        c.wiped.len()
    );
    let converged = match run.converged_after {
        Some(d) => format!("views converged {:.1} s after healing", d.as_secs_f64()),
        None => "single node: no views to converge".to_owned(),
    };
    let replicas = match (run.replication_factor, run.replicas_converged_after) {
        (1, _) => "replica convergence not checked (one copy per reading)".to_owned(),
        (_, Some(d)) => format!(
            "replicas converged {:.1} s later, every acknowledged reading checked for {} copies",
            d.as_secs_f64(),
            run.replication_factor
        ),
        (_, None) => "replicas did NOT converge (see violations)".to_owned(),
    };
    let _ = writeln!(out, "{converged}; {replicas}.\n");
}

fn kinds_section(out: &mut String, run: &RunSummary<'_>) {
    let _ = writeln!(out, "## Per fault kind\n");
    let _ = writeln!(
        out,
        "| fault | windows | availability | ok | failed | unknown | detected | worst \
         detection s | worst failover s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (kind, t) in kind_totals(run) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} % | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            t.windows,
            100.0 * t.availability(),
            t.ok,
            t.failed,
            t.unknown,
            t.detected,
            opt_secs(t.worst_detection),
            opt_secs(t.worst_failover)
        );
    }
    let _ = writeln!(out);
}

fn windows_section(out: &mut String, run: &RunSummary<'_>) {
    let _ = writeln!(out, "## Fault windows\n");
    let _ = writeln!(
        out,
        "| # | fault | start s | end s | ok | failed | unknown | availability | p50 ms \
         | p99 ms | p99.9 ms | detection s | failover s | recovery s | shards moved | notes |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (i, w) in run.windows.iter().enumerate() {
        let f = window_figures(run, w);
        let s = &f.stats;
        let mut notes = run
            .applied
            .get(i)
            .map(|a| a.notes.join("; "))
            .unwrap_or_default();
        if let Some(join) = f.join {
            notes = format!("joined in {:.2} s {notes}", join.as_secs_f64());
        }
        let _ = writeln!(
            out,
            "| {} | {}{} | {:.1} | {:.1} | {} | {} | {} | {:.1} % | {:.1} | {:.1} | {:.1} \
             | {} | {} | {} | {} | {} |",
            i + 1,
            if w.nested { "↳ " } else { "" },
            w.describe(),
            w.start.as_secs_f64(),
            w.end().as_secs_f64(),
            s.ok,
            s.failed,
            s.unknown,
            100.0 * s.availability(),
            s.latency_ms[0],
            s.latency_ms[1],
            s.latency_ms[2],
            opt_secs(f.detection),
            opt_secs(f.failover),
            opt_secs(f.recovery),
            f.shards_moved.map_or("-".to_owned(), |m| m.to_string()),
            notes.replace('|', "/").replace('\n', " ")
        );
    }
}

fn resources_section(out: &mut String, run: &RunSummary<'_>) {
    let _ = writeln!(out, "\n## Resources (maximum over the run)\n");
    let mut rss: Vec<(usize, u64)> = run.observations.max_rss().into_iter().collect();
    rss.sort();
    let listed: Vec<String> = rss
        .iter()
        .map(|(node, bytes)| format!("n{node} {} MiB", bytes >> 20))
        .collect();
    let _ = writeln!(
        out,
        "- resident memory: {} (bound {} MiB)",
        listed.join(", "),
        run.max_rss_bytes >> 20
    );
    let mut gauges: Vec<(String, f64)> = run.observations.max_gauges().into_iter().collect();
    gauges.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in gauges {
        let _ = writeln!(out, "- {name}: {value}");
    }
    let activation = crate::activation::check(run.observations);
    let _ = writeln!(
        out,
        "- single activation: {} sampled rounds, {} meter-rounds active on two nodes \
         (longest {:.1} s), {} while views agreed and were settled",
        activation.rounds,
        activation.overlaps,
        activation.longest_overlap.as_secs_f64(),
        activation.unexplained
    );
    if let Some(a) = run.alerts {
        let _ = writeln!(
            out,
            "- alerts raised once: the probe's {} identical intervals became {} frozen-run \
             alert(s), {} of them merged into another; {} violation(s)",
            a.probe_readings,
            a.alerts,
            a.merged,
            a.violations.len()
        );
    }
    if !run.proxy.is_empty() {
        let connections: u64 = run.proxy.iter().map(|(_, s)| s.connections).sum();
        let bytes: u64 = run.proxy.iter().map(|(_, s)| s.bytes).sum();
        let resets: u64 = run.proxy.iter().map(|(_, s)| s.resets).sum();
        let _ = writeln!(
            out,
            "- proxy: {connections} cluster connections over {} links, {} MiB, {resets} reset",
            run.proxy.len(),
            bytes >> 20
        );
    }
}

/// Writes `report.json`, `report.md` and `timeline.svg` (over `length`) to `out`, and prints
/// the Markdown.
pub fn write_all(
    out: &std::path::Path,
    summary: &RunSummary<'_>,
    length: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&to_json(summary))?,
    )?;
    let markdown = to_markdown(summary);
    std::fs::write(out.join("report.md"), &markdown)?;
    let title = format!(
        "GridMesh chaos run, seed {}, {} nodes, mode {} — {}",
        summary.seed,
        summary.nodes,
        summary.mode,
        if summary.passed() { "passed" } else { "FAILED" }
    );
    let picture = crate::timeline::svg(summary.history, summary.windows, length, &title);
    std::fs::write(out.join("timeline.svg"), picture)?;
    println!("{markdown}");
    println!("reports written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(node: usize, start_ms: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node,
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(100),
            readings: vec![("m".into(), 0, 1.0)],
            outcome,
        }
    }

    #[test]
    fn failover_is_the_first_clean_ack_after_detection_from_a_survivor() {
        let w = FaultWindow {
            start: Duration::from_secs(10),
            length: Duration::from_secs(5),
            kind: FaultKind::Kill,
            node: 0,
            peer: 0,
            members: 3,
            param: 0,
            nested: false,
        };
        let ok = || Outcome::Acked { rejected: vec![] };
        let history = vec![
            op(1, 10_500, ok()),                                 // before detection
            op(0, 12_000, ok()),                                 // to the victim
            op(2, 12_100, Outcome::Acked { rejected: vec![0] }), // partly rejected
            op(1, 12_300, ok()),                                 // this one
            op(2, 12_400, ok()),
        ];
        let failover = failover_time(&history, &w, Some(Duration::from_millis(1_600)));
        assert_eq!(failover, Some(Duration::from_millis(2_400)));
        assert_eq!(failover_time(&history, &w, None), None);
    }
}
