//! The CI-sized network schedule: the real `gridmesh-chaos` binary against three nodes, each in
//! its own network namespace, with every network fault kind at least once (isolate, split,
//! one-way, flapping, bridge, loss, bandwidth, latency, slow, reset) and a join and a drain
//! nested inside them, over 52 seconds; then the checker, replicas included.
//!
//! Needs root, iproute2 and nftables; without them it prints why and passes without running
//! (`scripts/install-test-deps.sh` installs the packages in CI). Needs the `gridmesh` binary
//! beside this test's executable (`cargo test --workspace` builds it) or in `GRIDMESH_BIN`.

use std::process::Command;

use gridmesh_chaos::{gridmesh_binary, netns};

const NETWORK_KINDS: [&str; 10] = [
    "isolate",
    "split",
    "oneway",
    "flap",
    "bridge",
    "loss",
    "bandwidth",
    "latency",
    "slow",
    "reset",
];

#[test]
fn network_faults_lose_no_acknowledged_reading() {
    if let Some(reason) = netns::unavailable_reason() {
        println!("skipped: the network chaos schedule needs namespaces: {reason}");
        return;
    }
    let seed = 20_261_205u64;
    let out = tempfile::tempdir().expect("tempdir");
    let gridmesh = gridmesh_binary().expect("the gridmesh binary (cargo build -p gridmesh)");
    let run = Command::new(env!("CARGO_BIN_EXE_gridmesh-chaos"))
        .args(["run", "--net", "netns", "--nodes", "3", "--duration", "52s"])
        .args([
            "--seed",
            &seed.to_string(),
            "--faults",
            "network,membership",
        ])
        .args(["--window-min", "2s", "--window-max", "3500ms"])
        .args(["--gap-min", "1s", "--gap-max", "1500ms", "--clients", "3"])
        .arg("--out")
        .arg(out.path())
        .arg("--gridmesh-bin")
        .arg(&gridmesh)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gridmesh-chaos starts");
    // Namespaces, bridge and veths carry the harness's pid.
    let harness = format!("gmc{}", run.id());
    let run = run.wait_with_output().expect("gridmesh-chaos runs");
    // Shown by `cargo test -- --nocapture`, and on failure.
    println!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "chaos run failed: {}", run.status);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).expect("report"))
            .expect("report.json is JSON");
    assert_eq!(report["passed"], true);
    assert_eq!(report["mode"], "netns");
    assert_eq!(report["seed"], seed);
    let readings = &report["readings"];
    assert!(
        readings["acked"].as_u64().expect("acked") > 1_000,
        "{readings}"
    );
    assert_eq!(readings["lost"], 0);
    assert_eq!(readings["duplicated"], 0);
    assert_eq!(readings["phantoms"], 0);

    // Replication is on by default in a cluster: the replicas converged on their own, and every
    // acknowledged reading has its copies (a violation otherwise, so `passed` covers it too).
    assert_eq!(
        report["replicas_checked"], true,
        "{}",
        report["replication_factor"]
    );
    assert!(report["replicas_converged_s"].is_number());

    let windows = report["windows"].as_array().expect("windows");
    let kind = |w: &serde_json::Value| w["kind"].as_str().expect("kind").to_owned();
    for expected in NETWORK_KINDS.iter().chain(&["join", "drain"]) {
        assert!(
            windows.iter().any(|w| kind(w) == *expected),
            "no {expected} window"
        );
    }
    for w in windows.iter().filter(|w| w["nested"] == false) {
        assert!(w["recovery_s"].is_number(), "window never recovered: {w}");
    }
    // Cuts longer than the down deadline (1.5 s) are seen by the other side.
    for w in windows
        .iter()
        .filter(|w| ["isolate", "split", "oneway", "bridge"].contains(&kind(w).as_str()))
    {
        assert!(w["detection_s"].is_number(), "cut never detected: {w}");
    }
    let proxy = report["proxy"].as_array().expect("proxy stats");
    assert!(
        proxy.len() >= 6,
        "every link of three nodes used the proxy: {proxy:?}"
    );
    let resets: u64 = proxy
        .iter()
        .map(|l| l["resets"].as_u64().expect("resets"))
        .sum();
    assert!(resets > 0, "the reset window reset connections");
    assert!(out.path().join("timeline.svg").is_file());
    // Everything the run created is gone.
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(!links.contains(&harness), "left behind: {links}");
}
