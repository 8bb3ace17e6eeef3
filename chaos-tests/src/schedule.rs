//! The nemesis schedule: which fault hits which node when, fully determined by a seed.
//!
//! Windows never overlap on one node and are separated by quiet gaps, so every fault's effect
//! (and the recovery from it) can be attributed to one window in the report. Same seed, same
//! configuration, same schedule: a failing run is replayed by its seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A kind of fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL, then start the node again on the same data directory.
    Kill,
    /// SIGSTOP for the window, then SIGCONT.
    Pause,
    /// SIGTERM (graceful), then start again.
    Restart,
}

impl FaultKind {
    /// Parses `kill`, `pause`, `restart`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kill" => Some(Self::Kill),
            "pause" => Some(Self::Pause),
            "restart" => Some(Self::Restart),
            _ => None,
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Restart => "restart",
        }
    }

    /// Faults that need no network control (usable without root).
    pub const PROCESS: [FaultKind; 3] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Restart];
}

/// One fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultWindow {
    /// Start, from the beginning of the run.
    pub start: Duration,
    /// How long the fault lasts (down time, pause length).
    pub length: Duration,
    /// Which fault.
    pub kind: FaultKind,
    /// Which node (index).
    pub node: usize,
}

impl FaultWindow {
    /// End of the window.
    pub fn end(&self) -> Duration {
        self.start + self.length
    }
}

/// Schedule parameters.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Seed.
    pub seed: u64,
    /// Length of the faulty part of the run.
    pub duration: Duration,
    /// Fault kinds to use (each is used at least once when the duration allows).
    pub faults: Vec<FaultKind>,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Shortest and longest fault window.
    pub window: (Duration, Duration),
    /// Shortest and longest quiet gap between windows.
    pub gap: (Duration, Duration),
}

/// Generates the windows, ordered by start.
pub fn generate(config: &ScheduleConfig) -> Vec<FaultWindow> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut windows = Vec::new();
    if config.faults.is_empty() || config.nodes == 0 {
        return windows;
    }
    let mut now = random_between(&mut rng, config.gap);
    let mut unused: Vec<FaultKind> = config.faults.clone();
    loop {
        let length = random_between(&mut rng, config.window);
        if now + length > config.duration {
            break;
        }
        // Use every kind once before choosing freely, so short runs still cover all kinds.
        let kind = if unused.is_empty() {
            config.faults[rng.random_range(0..config.faults.len())]
        } else {
            unused.remove(rng.random_range(0..unused.len()))
        };
        let node = rng.random_range(0..config.nodes);
        windows.push(FaultWindow {
            start: now,
            length,
            kind,
            node,
        });
        now += length + random_between(&mut rng, config.gap);
    }
    windows
}

fn random_between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    let millis = rng.random_range(low.as_millis() as u64..=high.as_millis() as u64);
    Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(seed: u64, secs: u64) -> ScheduleConfig {
        ScheduleConfig {
            seed,
            duration: Duration::from_secs(secs),
            faults: FaultKind::PROCESS.to_vec(),
            nodes: 3,
            window: (Duration::from_millis(500), Duration::from_secs(3)),
            gap: (Duration::from_millis(500), Duration::from_secs(2)),
        }
    }

    #[test]
    fn a_seed_replays_the_same_schedule() {
        assert_eq!(generate(&config(42, 60)), generate(&config(42, 60)));
        assert_ne!(generate(&config(42, 60)), generate(&config(43, 60)));
    }

    proptest! {
        #[test]
        fn windows_fit_do_not_overlap_and_cover_every_kind(
            seed in any::<u64>(),
            secs in 20u64..300,
        ) {
            let config = config(seed, secs);
            let windows = generate(&config);
            prop_assert!(windows.iter().all(|w| w.end() <= config.duration && w.node < 3));
            prop_assert!(windows.windows(2).all(|p| p[0].end() < p[1].start));
            for kind in FaultKind::PROCESS {
                prop_assert!(windows.iter().any(|w| w.kind == kind), "{kind:?} missing");
            }
        }
    }
}
