//! The nemesis schedule: which fault hits which nodes when, fully determined by a seed.
//!
//! A schedule is a list of **primary** windows that never overlap and are separated by quiet
//! gaps, so every fault's effect (and the recovery from it) can be attributed to one window in
//! the report. **Membership** windows (a node joins, a node is drained) are the exception: they
//! are nested inside a primary window, because what they test is a membership change while
//! another fault is active. Same seed, same configuration, same schedule: a failing run is
//! replayed by its seed.
//!
//! Which nodes a window cuts off and which nodes should notice follows from the window alone
//! ([`FaultWindow::victims`], [`FaultWindow::observers`]), so the nemesis, the report and the
//! checker agree on it without sharing state.

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
    /// SIGKILL, delete the data directory, start again empty. With one copy per reading this
    /// loses what only that node stored, so it is not in the default set (see the README).
    Wipe,
    /// Cut every packet of one node, the clients' path included (a pulled cable).
    Isolate,
    /// Split the nodes into a minority and a majority that cannot reach each other; clients
    /// still reach both sides.
    Split,
    /// One node's packets to one peer are dropped: the peer does not hear it, it hears the
    /// peer.
    OneWay,
    /// A minority/majority split toggled on and off several times within the window.
    Flap,
    /// Two halves that cannot reach each other, both reaching one bridge node.
    Bridge,
    /// Random loss (`param` %) of every packet in and out of one node.
    Loss,
    /// Bandwidth of one node's link limited to `param` kbit/s each way (`tc tbf`).
    Bandwidth,
    /// `param` ms of added latency (± a quarter of it as jitter) on every cluster connection
    /// of one node, through the proxy.
    Latency,
    /// Cluster connections of one node throttled to `param` bytes/s each way, by the proxy.
    Slow,
    /// The proxy resets one node's cluster connections, at once and then each new one after
    /// a short random life.
    Reset,
    /// A new node joins while another fault is active (nested window).
    Join,
    /// A node is drained while another fault is active, and undrained at the window's end
    /// (nested window).
    Drain,
}

/// What a fault needs from the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// Signals and data directories: works everywhere.
    Process,
    /// nftables or tc inside a node's network namespace.
    Network,
    /// The harness's TCP proxy on the links between nodes (network namespaces needed to tell
    /// links apart).
    Proxy,
    /// Membership changes, nested inside another window.
    Membership,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 16] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Wipe,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Flap,
        FaultKind::Bridge,
        FaultKind::Loss,
        FaultKind::Bandwidth,
        FaultKind::Latency,
        FaultKind::Slow,
        FaultKind::Reset,
        FaultKind::Join,
        FaultKind::Drain,
    ];

    /// Faults that need no network control (usable without root).
    pub const PROCESS: [FaultKind; 3] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Restart];

    /// The network faults: nftables, tc and the proxy.
    pub const NETWORK: [FaultKind; 10] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Flap,
        FaultKind::Bridge,
        FaultKind::Loss,
        FaultKind::Bandwidth,
        FaultKind::Latency,
        FaultKind::Slow,
        FaultKind::Reset,
    ];

    /// Membership changes during another fault.
    pub const MEMBERSHIP: [FaultKind; 2] = [FaultKind::Join, FaultKind::Drain];

    /// Parses one name (see [`FaultKind::name`]); `partition` is an alias of `split`.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "partition" {
            return Some(Self::Split);
        }
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses a name or a group: `process`, `network`, `membership`, `all` (every kind but
    /// `wipe`).
    pub fn parse_group(name: &str) -> Option<Vec<Self>> {
        let group = match name {
            "process" => Self::PROCESS.to_vec(),
            "network" => Self::NETWORK.to_vec(),
            "membership" => Self::MEMBERSHIP.to_vec(),
            "all" => Self::ALL.into_iter().filter(|k| *k != Self::Wipe).collect(),
            _ => vec![Self::parse(name)?],
        };
        Some(group)
    }

    /// The name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Restart => "restart",
            Self::Wipe => "wipe",
            Self::Isolate => "isolate",
            Self::Split => "split",
            Self::OneWay => "oneway",
            Self::Flap => "flap",
            Self::Bridge => "bridge",
            Self::Loss => "loss",
            Self::Bandwidth => "bandwidth",
            Self::Latency => "latency",
            Self::Slow => "slow",
            Self::Reset => "reset",
            Self::Join => "join",
            Self::Drain => "drain",
        }
    }

    /// What the fault needs.
    pub fn class(self) -> FaultClass {
        match self {
            Self::Kill | Self::Pause | Self::Restart | Self::Wipe => FaultClass::Process,
            Self::Isolate
            | Self::Split
            | Self::OneWay
            | Self::Flap
            | Self::Bridge
            | Self::Loss
            | Self::Bandwidth => FaultClass::Network,
            Self::Latency | Self::Slow | Self::Reset => FaultClass::Proxy,
            Self::Join | Self::Drain => FaultClass::Membership,
        }
    }

    /// Whether the fault needs network namespaces.
    pub fn needs_namespaces(self) -> bool {
        matches!(self.class(), FaultClass::Network | FaultClass::Proxy)
    }

    /// Fewest members the fault makes sense with (a bridge needs two halves and a bridge).
    pub fn min_members(self) -> usize {
        match self {
            Self::Bridge => 3,
            Self::Split | Self::OneWay | Self::Flap => 2,
            _ => 1,
        }
    }

    /// A random parameter for the kind (see the variants' docs), 0 when it has none.
    fn random_param(self, rng: &mut StdRng) -> u32 {
        match self {
            Self::Loss => rng.random_range(10..=35),
            Self::Bandwidth => rng.random_range(128..=1024),
            Self::Latency => rng.random_range(50..=700),
            Self::Slow => rng.random_range(2_000..=32_000),
            Self::Flap => rng.random_range(3..=6),
            _ => 0,
        }
    }
}

/// One fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultWindow {
    /// Start, from the beginning of the run.
    pub start: Duration,
    /// How long the fault lasts (down time, pause length, partition length).
    pub length: Duration,
    /// Which fault.
    pub kind: FaultKind,
    /// The node the fault is about: the one killed, isolated, limited; the first of the
    /// minority of a split; the bridge node; the node not heard in a one-way cut; the node
    /// that joins or is drained.
    pub node: usize,
    /// The other end of a one-way cut (the node that does not hear `node`); else `node`.
    pub peer: usize,
    /// Members when the window starts (initial nodes plus those joined before it). Sides of
    /// splits are drawn from `0..members`.
    pub members: usize,
    /// Kind-specific parameter: loss %, kbit/s, latency ms, bytes/s, flap toggles.
    pub param: u32,
    /// Whether the window is nested inside a primary one (membership faults).
    pub nested: bool,
}

impl FaultWindow {
    /// End of the window.
    pub fn end(&self) -> Duration {
        self.start + self.length
    }

    /// The nodes cut off, stopped or degraded: the ones the others should (or might) list as
    /// down. Empty for membership windows.
    pub fn victims(&self) -> Vec<usize> {
        match self.kind {
            FaultKind::Split | FaultKind::Flap => self.minority(),
            FaultKind::Bridge => self.bridge_halves().1,
            FaultKind::Join | FaultKind::Drain => Vec::new(),
            _ => vec![self.node],
        }
    }

    /// The nodes that should notice: the other side of the cut.
    pub fn observers(&self) -> Vec<usize> {
        match self.kind {
            FaultKind::OneWay => vec![self.peer],
            FaultKind::Bridge => self.bridge_halves().0,
            FaultKind::Join | FaultKind::Drain => Vec::new(),
            _ => {
                let victims = self.victims();
                (0..self.members).filter(|n| !victims.contains(n)).collect()
            }
        }
    }

    /// The minority of a split: `(members - 1) / 2` nodes from `node` on (at least one).
    pub fn minority(&self) -> Vec<usize> {
        let size = (self.members.saturating_sub(1) / 2).max(1);
        (0..size).map(|k| (self.node + k) % self.members).collect()
    }

    /// The two halves of a bridge topology (everyone but the bridge node `node`, in order,
    /// split in two); only links between the halves are cut.
    pub fn bridge_halves(&self) -> (Vec<usize>, Vec<usize>) {
        let others: Vec<usize> = (0..self.members).filter(|n| *n != self.node).collect();
        let (left, right) = others.split_at(others.len() / 2);
        (left.to_vec(), right.to_vec())
    }

    /// Pairs of nodes whose links the window cuts (both directions), for partitions.
    pub fn cut_pairs(&self) -> Vec<(usize, usize)> {
        let (a, b) = match self.kind {
            FaultKind::Split | FaultKind::Flap => (self.minority(), self.observers()),
            FaultKind::Bridge => self.bridge_halves(),
            _ => return Vec::new(),
        };
        a.iter()
            .flat_map(|x| b.iter().map(move |y| (*x, *y)))
            .collect()
    }

    /// A short description for logs and reports, e.g. `split [0] vs [1, 2]`.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            FaultKind::Split | FaultKind::Flap => {
                format!("{:?} vs {:?}", self.minority(), self.observers())
            }
            FaultKind::Bridge => {
                let (left, right) = self.bridge_halves();
                format!("{left:?} vs {right:?}, both see node {}", self.node)
            }
            FaultKind::OneWay => format!("node {} does not hear node {}", self.peer, self.node),
            _ => format!("node {}", self.node),
        };
        let param = match self.kind {
            FaultKind::Loss => format!(", {} % loss", self.param),
            FaultKind::Bandwidth => format!(", {} kbit/s", self.param),
            FaultKind::Latency => format!(", {} ms ± {} ms", self.param, self.param / 4),
            FaultKind::Slow => format!(", {} B/s", self.param),
            FaultKind::Flap => format!(", {} toggles", self.param),
            _ => String::new(),
        };
        format!("{} {what}{param}", self.kind.name())
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
    /// Nodes in the cluster at the start.
    pub nodes: usize,
    /// Nodes that may join during the run (each `join` window uses one).
    pub spare_nodes: usize,
    /// Shortest and longest fault window.
    pub window: (Duration, Duration),
    /// Shortest and longest quiet gap between windows.
    pub gap: (Duration, Duration),
}

impl ScheduleConfig {
    /// The shortest duration that guarantees every requested kind a window.
    pub fn duration_for_every_kind(&self) -> Duration {
        let primaries = self.primary_kinds().len().max(1) as u32;
        (self.window.1 + self.gap.1) * primaries + self.gap.1
    }

    fn primary_kinds(&self) -> Vec<FaultKind> {
        let primary: Vec<FaultKind> = self
            .faults
            .iter()
            .copied()
            .filter(|k| k.class() != FaultClass::Membership)
            .collect();
        // Membership faults alone stand as primary windows.
        if primary.is_empty() {
            self.faults.clone()
        } else {
            primary
        }
    }
}

/// Generates the windows, ordered by start (a nested window right after its host).
pub fn generate(config: &ScheduleConfig) -> Vec<FaultWindow> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut windows = Vec::new();
    if config.faults.is_empty() || config.nodes == 0 {
        return windows;
    }
    let primary = config.primary_kinds();
    let nest: Vec<FaultKind> = config
        .faults
        .iter()
        .copied()
        .filter(|k| k.class() == FaultClass::Membership && !primary.contains(k))
        .collect();
    let mut unused = primary.clone();
    let mut unused_nested = nest.clone();
    let mut members = config.nodes;
    let mut now = random_between(&mut rng, config.gap);
    loop {
        let length = random_between(&mut rng, config.window);
        if now + length > config.duration {
            break;
        }
        // Use every kind once before choosing freely, so short runs still cover all kinds.
        let pick = |rng: &mut StdRng, unused: &mut Vec<FaultKind>| {
            if unused.is_empty() {
                primary[rng.random_range(0..primary.len())]
            } else {
                unused.remove(rng.random_range(0..unused.len()))
            }
        };
        let kind = pick(&mut rng, &mut unused);
        let host = make_window(&mut rng, config, kind, now, length, members, &windows);
        if let Some(host) = host {
            members += usize::from(kind == FaultKind::Join);
            windows.push(host);
            let nested = nested_window(&mut rng, config, &host, &nest, &mut unused_nested);
            if let Some(nested) = nested {
                members += usize::from(nested.kind == FaultKind::Join);
                windows.push(nested);
            }
        }
        now += length + random_between(&mut rng, config.gap);
    }
    windows
}

/// One window of `kind`, or `None` when the cluster is too small for it or no spare node is
/// left to join (the slot then stays quiet).
fn make_window(
    rng: &mut StdRng,
    config: &ScheduleConfig,
    kind: FaultKind,
    start: Duration,
    length: Duration,
    members: usize,
    earlier: &[FaultWindow],
) -> Option<FaultWindow> {
    if members < kind.min_members() {
        return None;
    }
    let node = if kind == FaultKind::Join {
        let joined = earlier.iter().filter(|w| w.kind == FaultKind::Join).count();
        if joined >= config.spare_nodes {
            return None;
        }
        members
    } else {
        rng.random_range(0..members)
    };
    let peer = if kind == FaultKind::OneWay {
        (node + rng.random_range(1..members)) % members
    } else {
        node
    };
    Some(FaultWindow {
        start,
        length,
        kind,
        node,
        peer,
        members,
        param: kind.random_param(rng),
        nested: false,
    })
}

/// A membership window inside `host`: always while some membership kind has not been used
/// yet, else one host in three.
fn nested_window(
    rng: &mut StdRng,
    config: &ScheduleConfig,
    host: &FaultWindow,
    kinds: &[FaultKind],
    unused: &mut Vec<FaultKind>,
) -> Option<FaultWindow> {
    if kinds.is_empty() || (unused.is_empty() && !rng.random_ratio(1, 3)) {
        return None;
    }
    let members = host.members + usize::from(host.kind == FaultKind::Join);
    // A drain needs a node the host fault leaves alone, and someone to take its shards.
    let victims = host.victims();
    let spared: Vec<usize> = (0..members)
        .filter(|n| !victims.contains(n) && *n != host.node)
        .collect();
    let can = |kind: FaultKind| match kind {
        FaultKind::Drain => members >= 2 && !spared.is_empty(),
        FaultKind::Join => members < config.nodes + config.spare_nodes,
        _ => false,
    };
    let candidates: Vec<FaultKind> = if unused.iter().any(|k| can(*k)) {
        unused.iter().copied().filter(|k| can(*k)).collect()
    } else {
        kinds.iter().copied().filter(|k| can(*k)).collect()
    };
    if candidates.is_empty() {
        return None;
    }
    let kind = candidates[rng.random_range(0..candidates.len())];
    unused.retain(|k| *k != kind);
    let node = match kind {
        FaultKind::Join => members,
        _ => spared[rng.random_range(0..spared.len())],
    };
    // Starts in the first half of the host, ends before it.
    let offset = host.length.mul_f64(rng.random_range(0.1..0.4));
    let length = host.length.mul_f64(0.9) - offset;
    Some(FaultWindow {
        start: host.start + offset,
        length,
        kind,
        node,
        peer: node,
        members,
        param: 0,
        nested: true,
    })
}

/// Prints the schedule, and the requested kinds it has no window for.
pub fn announce(windows: &[FaultWindow], kinds: &[FaultKind], config: &ScheduleConfig) {
    println!(
        "{} fault windows over {:?}:",
        windows.len(),
        config.duration
    );
    for (i, w) in windows.iter().enumerate() {
        println!(
            "  #{:<3} {:>6.1}–{:>6.1} s  {}{}",
            i + 1,
            w.start.as_secs_f64(),
            w.end().as_secs_f64(),
            if w.nested { "↳ " } else { "" },
            w.describe()
        );
    }
    let missing: Vec<&str> = kinds
        .iter()
        .filter(|k| !windows.iter().any(|w| w.kind == **k))
        .map(|k| k.name())
        .collect();
    if !missing.is_empty() {
        println!(
            "warning: no window for {} (a schedule of {:?} covers every kind)",
            missing.join(", "),
            config.duration_for_every_kind()
        );
    }
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

    fn config(seed: u64, secs: u64, faults: Vec<FaultKind>, nodes: usize) -> ScheduleConfig {
        ScheduleConfig {
            seed,
            duration: Duration::from_secs(secs),
            faults,
            nodes,
            spare_nodes: 2,
            window: (Duration::from_millis(500), Duration::from_secs(3)),
            gap: (Duration::from_millis(500), Duration::from_secs(2)),
        }
    }

    fn every_kind() -> Vec<FaultKind> {
        FaultKind::ALL.to_vec()
    }

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let a = config(42, 120, every_kind(), 3);
        assert_eq!(generate(&a), generate(&a));
        assert_ne!(generate(&a), generate(&config(43, 120, every_kind(), 3)));
    }

    #[test]
    fn names_and_groups_parse() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(FaultKind::parse("partition"), Some(FaultKind::Split));
        let all = FaultKind::parse_group("all").expect("group");
        assert!(!all.contains(&FaultKind::Wipe) && all.len() == FaultKind::ALL.len() - 1);
        assert_eq!(FaultKind::parse("netem"), None);
    }

    #[test]
    fn sides_of_partitions() {
        let w = |kind, node, members| FaultWindow {
            start: Duration::ZERO,
            length: Duration::from_secs(1),
            kind,
            node,
            peer: (node + 1) % members,
            members,
            param: 0,
            nested: false,
        };
        let split5 = w(FaultKind::Split, 4, 5);
        assert_eq!(split5.victims(), vec![4, 0]);
        assert_eq!(split5.observers(), vec![1, 2, 3]);
        assert_eq!(split5.cut_pairs().len(), 6);
        let bridge = w(FaultKind::Bridge, 1, 3);
        assert_eq!(bridge.bridge_halves(), (vec![0], vec![2]));
        assert_eq!(bridge.cut_pairs(), vec![(0, 2)]);
        let oneway = w(FaultKind::OneWay, 0, 3);
        assert_eq!((oneway.victims(), oneway.observers()), (vec![0], vec![1]));
        assert_eq!(w(FaultKind::Kill, 2, 3).observers(), vec![0, 1]);
    }

    proptest! {
        #[test]
        fn process_windows_fit_do_not_overlap_and_cover_every_kind(
            seed in any::<u64>(),
            secs in 20u64..300,
        ) {
            let config = config(seed, secs, FaultKind::PROCESS.to_vec(), 3);
            let windows = generate(&config);
            prop_assert!(windows.iter().all(|w| w.end() <= config.duration && w.node < 3));
            prop_assert!(windows.windows(2).all(|p| p[0].end() < p[1].start));
            for kind in FaultKind::PROCESS {
                prop_assert!(windows.iter().any(|w| w.kind == kind), "{kind:?} missing");
            }
        }

        #[test]
        fn every_kind_appears_primaries_never_overlap_and_nested_ones_sit_inside(
            seed in any::<u64>(),
            nodes in 3usize..6,
            extra_secs in 0u64..200,
        ) {
            let mut config = config(seed, 0, every_kind(), nodes);
            config.duration = config.duration_for_every_kind() + Duration::from_secs(extra_secs);
            let windows = generate(&config);
            let primaries: Vec<&FaultWindow> = windows.iter().filter(|w| !w.nested).collect();
            prop_assert!(primaries.windows(2).all(|p| p[0].end() < p[1].start));
            prop_assert!(windows.iter().all(|w| w.end() <= config.duration));
            for kind in FaultKind::ALL {
                prop_assert!(windows.iter().any(|w| w.kind == kind), "{kind:?} missing");
            }
            for nested in windows.iter().filter(|w| w.nested) {
                let host = primaries
                    .iter()
                    .find(|h| h.start <= nested.start && nested.end() <= h.end());
                prop_assert!(host.is_some(), "nested window outside any host: {nested:?}");
                let host = host.expect("checked");
                prop_assert!(nested.kind.class() == FaultClass::Membership);
                if nested.kind == FaultKind::Drain {
                    prop_assert!(!host.victims().contains(&nested.node));
                    prop_assert!(nested.node != host.node);
                }
            }
            let joins = windows.iter().filter(|w| w.kind == FaultKind::Join).count();
            prop_assert!(joins <= config.spare_nodes);
            // Every window's nodes exist when it starts.
            for w in &windows {
                let members = w.members + usize::from(w.kind == FaultKind::Join);
                prop_assert!(w.node < members && w.peer < members, "{w:?}");
                prop_assert!(w.victims().iter().chain(&w.observers()).all(|n| *n < w.members));
            }
        }
    }
}
