//! The run report: availability and latency per fault window, recovery times, and the
//! checker's verdict, as JSON (for tools) and Markdown (for people).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::checker::CheckResult;
use crate::schedule::FaultWindow;
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
    /// Nodes.
    pub nodes: usize,
    /// Faulty duration.
    pub duration: Duration,
    /// The schedule.
    pub windows: &'a [FaultWindow],
    /// The history.
    pub history: &'a [Op],
    /// The checker's result.
    pub check: &'a CheckResult,
    /// Further violations found (aggregates, counters), human-readable.
    pub other_violations: &'a [String],
    /// Command that replays the run.
    pub replay: String,
}

/// The JSON report.
pub fn to_json(run: &RunSummary<'_>) -> serde_json::Value {
    let windows: Vec<_> = run
        .windows
        .iter()
        .map(|w| {
            let stats = period_stats(run.history, w.start, w.end());
            json!({
                "kind": w.kind.name(), "node": w.node,
                "start_s": w.start.as_secs_f64(), "end_s": w.end().as_secs_f64(),
                "ok": stats.ok, "failed": stats.failed, "unknown": stats.unknown,
                "availability": stats.availability(),
                "latency_ms": {
                    "p50": stats.latency_ms[0],
                    "p99": stats.latency_ms[1],
                    "p999": stats.latency_ms[2],
                },
                "recovery_s": recovery_time(run.history, w).map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let whole = period_stats(run.history, Duration::ZERO, Duration::MAX);
    let violations: Vec<_> = run
        .check
        .lost
        .iter()
        .chain(&run.check.refused_but_stored)
        .chain(&run.check.phantoms)
        .chain(run.other_violations)
        .take(100)
        .collect();
    json!({
        "seed": run.seed, "mode": run.mode, "nodes": run.nodes,
        "duration_s": run.duration.as_secs_f64(),
        "passed": run.check.is_ok() && run.other_violations.is_empty(),
        "requests": {"ok": whole.ok, "failed": whole.failed, "unknown": whole.unknown},
        "readings": {
            "acked": run.check.acked, "lost": run.check.lost.len(),
            "refused_but_stored": run.check.refused_but_stored.len(),
            "phantoms": run.check.phantoms.len(),
            "unknown_present": run.check.unknown_present,
            "unknown_absent": run.check.unknown_absent,
        },
        "violations": violations,
        "windows": windows,
        "replay": run.replay,
    })
}

/// The Markdown report.
pub fn to_markdown(run: &RunSummary<'_>) -> String {
    let mut out = String::new();
    let passed = run.check.is_ok() && run.other_violations.is_empty();
    let _ = writeln!(
        out,
        "# GridMesh chaos run — {}\n",
        if passed { "PASSED" } else { "FAILED" }
    );
    let _ = writeln!(
        out,
        "seed {} · {} node(s) · {:.0} s of faults · mode {}\n\nReplay: `{}`\n",
        run.seed,
        run.nodes,
        run.duration.as_secs_f64(),
        run.mode,
        run.replay
    );
    let c = run.check;
    let _ = writeln!(out, "## Readings\n");
    let _ = writeln!(
        out,
        "| acknowledged | lost | refused but stored | phantom | unknown: stored | unknown: absent |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        c.acked,
        c.lost.len(),
        c.refused_but_stored.len(),
        c.phantoms.len(),
        c.unknown_present,
        c.unknown_absent
    );
    let _ = writeln!(out, "## Fault windows\n");
    let _ = writeln!(
        out,
        "| # | fault | node | start s | end s | ok | failed | unknown | availability \
         | p50 ms | p99 ms | p99.9 ms | recovery s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, w) in run.windows.iter().enumerate() {
        let s = period_stats(run.history, w.start, w.end());
        let recovery = recovery_time(run.history, w)
            .map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {:.1} % \
             | {:.1} | {:.1} | {:.1} | {} |",
            i + 1,
            w.kind.name(),
            w.node,
            w.start.as_secs_f64(),
            w.end().as_secs_f64(),
            s.ok,
            s.failed,
            s.unknown,
            100.0 * s.availability(),
            s.latency_ms[0],
            s.latency_ms[1],
            s.latency_ms[2],
            recovery
        );
    }
    let violations: Vec<&String> = c
        .lost
        .iter()
        .chain(&c.refused_but_stored)
        .chain(&c.phantoms)
        .chain(run.other_violations)
        .collect();
    if !violations.is_empty() {
        let _ = writeln!(out, "\n## Violations (first 50)\n");
        for v in violations.iter().take(50) {
            let _ = writeln!(out, "- {v}");
        }
    }
    out
}
