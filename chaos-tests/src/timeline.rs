//! The timeline picture: acknowledged readings per second and request latency (p50, p99) over
//! the run, with every fault window shaded and labelled. Plain SVG written by hand, so the
//! report needs no plotting dependency and opens in any browser.

use std::fmt::Write as _;
use std::time::Duration;

use crate::schedule::FaultWindow;
use crate::workload::{Op, Outcome};

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 180.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;

/// Per-second figures of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Second {
    /// Readings acknowledged by requests that completed in this second.
    pub acked_readings: u64,
    /// Requests that completed in this second without an ack.
    pub not_acked: u64,
    /// p50 and p99 latency of the requests that started in this second, ms.
    pub latency_ms: Option<(f64, f64)>,
}

/// Buckets the history by second, from 0 to `length`.
pub fn seconds(history: &[Op], length: Duration) -> Vec<Second> {
    let n = length.as_secs() as usize + 1;
    let mut out = vec![Second::default(); n];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); n];
    for op in history {
        let done = ((op.start + op.latency).as_secs() as usize).min(n - 1);
        match &op.outcome {
            Outcome::Acked { rejected } => {
                out[done].acked_readings += (op.readings.len() - rejected.len()) as u64;
            }
            _ => out[done].not_acked += 1,
        }
        let started = (op.start.as_secs() as usize).min(n - 1);
        latencies[started].push(op.latency.as_secs_f64() * 1000.0);
    }
    for (second, mut values) in out.iter_mut().zip(latencies) {
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let at =
            |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        second.latency_ms = Some((at(0.50), at(0.99)));
    }
    out
}

/// The SVG document.
pub fn svg(history: &[Op], windows: &[FaultWindow], length: Duration, title: &str) -> String {
    let buckets = seconds(history, length);
    let span = length.as_secs_f64().max(1.0);
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * t / span;
    let height = TOP + 2.0 * PANEL + GAP + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{}</text>",
        escape(title)
    );
    shade_windows(&mut out, windows, &x, height);

    let throughput: Vec<f64> = buckets.iter().map(|b| b.acked_readings as f64).collect();
    let top1 = TOP;
    let max_rate = throughput.iter().copied().fold(1.0, f64::max);
    axes(&mut out, top1, max_rate, "acked readings/s", &x, span);
    polyline(&mut out, &throughput, top1, max_rate, &x, "#1f77b4");
    let failures: Vec<f64> = buckets.iter().map(|b| b.not_acked as f64).collect();
    for (second, count) in failures.iter().enumerate().filter(|(_, c)| **c > 0.0) {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d62728\"><title>{count} \
             requests not acknowledged</title></circle>",
            x(second as f64 + 0.5),
            top1 + PANEL - 4.0
        );
    }

    let top2 = TOP + PANEL + GAP;
    let p50: Vec<f64> = buckets
        .iter()
        .map(|b| b.latency_ms.map_or(0.0, |l| l.0))
        .collect();
    let p99: Vec<f64> = buckets
        .iter()
        .map(|b| b.latency_ms.map_or(0.0, |l| l.1))
        .collect();
    let max_latency = p99.iter().copied().fold(1.0, f64::max);
    axes(
        &mut out,
        top2,
        max_latency,
        "latency ms (p50 blue, p99 orange)",
        &x,
        span,
    );
    polyline(&mut out, &p50, top2, max_latency, &x, "#1f77b4");
    polyline(&mut out, &p99, top2, max_latency, &x, "#ff7f0e");
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.0}\">time since the workload started, s · shaded: fault \
         windows (nested membership windows darker) · red dots: requests not acknowledged</text>",
        height - 8.0
    );
    let _ = writeln!(out, "</svg>");
    out
}

fn shade_windows(out: &mut String, windows: &[FaultWindow], x: &impl Fn(f64) -> f64, h: f64) {
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start.as_secs_f64()), x(w.end().as_secs_f64()));
        let (fill, label_y) = if w.nested {
            ("#9467bd", TOP + 2.0 * PANEL + GAP + 14.0)
        } else {
            (
                "#bbbbbb",
                TOP + 2.0 * PANEL + GAP + 4.0 + 10.0 * (i % 2) as f64 - 10.0,
            )
        };
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
             fill-opacity=\"0.25\"><title>#{} {} {:.1}–{:.1} s</title></rect>",
            (x1 - x0).max(1.0),
            h - TOP - 40.0,
            i + 1,
            escape(&w.describe()),
            w.start.as_secs_f64(),
            w.end().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "<text x=\"{x0:.1}\" y=\"{label_y:.0}\" font-size=\"9\">{}</text>",
            w.kind.name()
        );
    }
}

fn axes(out: &mut String, top: f64, max: f64, label: &str, x: &impl Fn(f64) -> f64, span: f64) {
    let bottom = top + PANEL;
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\
         <line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"black\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\">{}</text><text x=\"4\" y=\"{}\">{max:.0}</text>\
         <text x=\"4\" y=\"{bottom}\">0</text>",
        LEFT + 4.0,
        top - 4.0,
        escape(label),
        top + 10.0
    );
    let step = tick_step(span);
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{t:.0}</text>",
            x(t),
            bottom + 14.0
        );
        t += step;
    }
}

fn tick_step(span: f64) -> f64 {
    [5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| span / s <= 20.0)
        .unwrap_or(1200.0)
}

fn polyline(
    out: &mut String,
    values: &[f64],
    top: f64,
    max: f64,
    x: &impl Fn(f64) -> f64,
    color: &str,
) {
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                x(i as f64 + 0.5),
                top + PANEL - PANEL * v / max
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
        points.join(" ")
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::FaultKind;

    fn op(start_ms: u64, latency_ms: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            node: 0,
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(latency_ms),
            readings: vec![("m".into(), 0, 1.0), ("m".into(), 1, 1.0)],
            outcome,
        }
    }

    #[test]
    fn buckets_count_acked_readings_and_latency_per_second() {
        let history = vec![
            op(100, 50, Outcome::Acked { rejected: vec![] }),
            op(200, 900, Outcome::Acked { rejected: vec![1] }),
            op(1_500, 2_000, Outcome::Unknown("DeadlineExceeded".into())),
        ];
        let buckets = seconds(&history, Duration::from_secs(4));
        assert_eq!(buckets.len(), 5);
        assert_eq!(
            (buckets[0].acked_readings, buckets[1].acked_readings),
            (2, 1)
        );
        assert_eq!(buckets[3].not_acked, 1);
        assert_eq!(buckets[0].latency_ms, Some((50.0, 900.0)));
        assert_eq!(buckets[2].latency_ms, None);
    }

    #[test]
    fn the_picture_names_every_window() {
        let windows = [FaultWindow {
            start: Duration::from_secs(1),
            length: Duration::from_secs(2),
            kind: FaultKind::Bridge,
            node: 1,
            peer: 1,
            members: 3,
            param: 0,
            nested: false,
        }];
        let history = vec![op(100, 50, Outcome::Acked { rejected: vec![] })];
        let picture = svg(&history, &windows, Duration::from_secs(5), "run <1>");
        assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
        assert!(picture.contains(">bridge<") && picture.contains("run &lt;1&gt;"));
    }
}
