//! The checker: compares the workload's history with what the cluster stores.
//!
//! [`check_history`] is pure: given every request with its outcome and every stored reading,
//! it finds acknowledged readings that are missing or changed (lost), readings that were
//! refused yet stored, and stored readings nobody sent. Unknown outcomes may go either way and
//! are counted. [`read_back`] fetches what the node stores, paginating through every meter.

use std::collections::HashMap;

use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{GetReadingsRequest, Resolution};

use crate::workload::{Op, Outcome};

/// Stored readings: (meter, ts) → energy.
pub type Stored = HashMap<(String, i64), f64>;

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckResult {
    /// Readings acknowledged.
    pub acked: u64,
    /// Acknowledged readings missing or stored with another value.
    pub lost: Vec<String>,
    /// Readings refused (definitely not stored) that are stored anyway.
    pub refused_but_stored: Vec<String>,
    /// Stored readings that no request sent.
    pub phantoms: Vec<String>,
    /// Readings with unknown outcome found stored.
    pub unknown_present: u64,
    /// Readings with unknown outcome not stored.
    pub unknown_absent: u64,
    /// Readings refused and (correctly) absent.
    pub refused: u64,
}

impl CheckResult {
    /// Whether no invariant was violated.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty() && self.refused_but_stored.is_empty() && self.phantoms.is_empty()
    }
}

/// Checks the history against the stored readings.
pub fn check_history(history: &[Op], stored: &Stored) -> CheckResult {
    let mut result = CheckResult::default();
    let mut sent: HashMap<(String, i64), ()> = HashMap::new();
    for op in history {
        for (index, (meter, ts, energy)) in op.readings.iter().enumerate() {
            let key = (meter.clone(), *ts);
            sent.insert(key.clone(), ());
            let found = stored.get(&key);
            let describe = || {
                format!(
                    "{meter}@{ts} (request at {:?}, client {})",
                    op.start, op.client
                )
            };
            match &op.outcome {
                Outcome::Acked { rejected } if !rejected.contains(&(index as u32)) => {
                    result.acked += 1;
                    if found != Some(energy) {
                        result.lost.push(describe());
                    }
                }
                Outcome::Acked { .. } | Outcome::Failed(_) => {
                    result.refused += 1;
                    if found.is_some() {
                        result.refused_but_stored.push(describe());
                    }
                }
                Outcome::Unknown(_) => match found {
                    Some(_) => result.unknown_present += 1,
                    None => result.unknown_absent += 1,
                },
            }
        }
    }
    for (meter, ts) in stored.keys() {
        if !sent.contains_key(&(meter.clone(), *ts)) {
            result.phantoms.push(format!("{meter}@{ts}"));
        }
    }
    result
}

/// Everything `client` stores for `meters` between `from` and `to`.
pub async fn read_back(
    client: &Client,
    meters: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Stored> {
    let mut stored = Stored::new();
    for meter in meters {
        let mut cursor = from;
        loop {
            let request = GetReadingsRequest {
                meter_id: meter.clone(),
                from_ts_ms: cursor,
                to_ts_ms: to,
                resolution: Resolution::Raw as i32,
                limit: 10_000,
                local_only: false,
            };
            let page = client.query().get_readings(request).await?.into_inner();
            if !page.unavailable_nodes.is_empty() {
                anyhow::bail!(
                    "reading back {meter}: nodes {:?} did not answer; cannot check",
                    page.unavailable_nodes
                );
            }
            for r in &page.readings {
                stored.insert(
                    (meter.clone(), r.ts_ms),
                    r.interval_energy_import_wh.unwrap_or(f64::NAN),
                );
            }
            match (page.truncated, page.readings.last()) {
                (true, Some(last)) => cursor = last.ts_ms + 1,
                _ => break,
            }
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(outcome: Outcome, readings: &[(&str, i64, f64)]) -> Op {
        Op {
            client: 0,
            start: Duration::ZERO,
            latency: Duration::ZERO,
            readings: readings
                .iter()
                .map(|(m, t, e)| ((*m).to_owned(), *t, *e))
                .collect(),
            outcome,
        }
    }

    #[test]
    fn finds_lost_changed_refused_and_phantom_readings() {
        let history = vec![
            op(
                Outcome::Acked { rejected: vec![1] },
                &[("a", 1, 5.0), ("a", 2, 6.0)],
            ),
            op(
                Outcome::Acked { rejected: vec![] },
                &[("b", 1, 1.0), ("b", 2, 2.0)],
            ),
            op(
                Outcome::Failed("ResourceExhausted".into()),
                &[("c", 1, 1.0)],
            ),
            op(
                Outcome::Unknown("DeadlineExceeded".into()),
                &[("d", 1, 1.0), ("d", 2, 1.0)],
            ),
        ];
        let stored: Stored = [
            (("a".to_owned(), 1), 5.0), // acked, present
            (("b".to_owned(), 1), 9.0), // acked, wrong value
            (("c".to_owned(), 1), 1.0), // refused but stored
            (("d".to_owned(), 1), 1.0), // unknown, present
            (("e".to_owned(), 7), 1.0), // nobody sent it
        ]
        .into_iter()
        .collect();
        let result = check_history(&history, &stored);
        assert_eq!(result.acked, 3);
        assert_eq!(
            result.lost.len(),
            2,
            "b@1 changed and b@2 missing: {:?}",
            result.lost
        );
        assert_eq!(result.refused_but_stored.len(), 1);
        assert_eq!(result.phantoms, vec!["e@7".to_owned()]);
        assert_eq!((result.unknown_present, result.unknown_absent), (1, 1));
        assert_eq!(result.refused, 2);
        assert!(!result.is_ok());
    }

    #[test]
    fn a_clean_history_passes() {
        let history = vec![op(Outcome::Acked { rejected: vec![] }, &[("a", 1, 5.0)])];
        let stored: Stored = [(("a".to_owned(), 1), 5.0)].into_iter().collect();
        assert!(check_history(&history, &stored).is_ok());
    }
}
