//! The Docker lane end to end: builds the scratch image from the local `gridmesh` binary, brings
//! up the three-node compose cluster, kills, pauses, restarts and disconnects containers for
//! 40 s, and checks. Not in CI (about two minutes, and it needs a Docker engine and root on
//! the Docker host); run it with
//!
//! ```text
//! cargo test -p gridmesh-chaos --test docker_lane -- --ignored --nocapture
//! ```
//!
//! Without an engine the lane prints `SKIPPED: …` and succeeds, and so does this test.

use std::process::Command;

use gridmesh_chaos::gridmesh_binary;

#[test]
#[ignore = "needs a Docker engine; about two minutes"]
fn the_compose_cluster_loses_no_acknowledged_reading() {
    let out = tempfile::tempdir().expect("tempdir");
    let gridmesh = gridmesh_binary().expect("the gridmesh binary (cargo build -p gridmesh)");
    let run = Command::new(env!("CARGO_BIN_EXE_gridmesh-chaos"))
        .args(["docker", "--duration", "40s", "--seed", "20261206"])
        .arg("--out")
        .arg(out.path())
        .arg("--gridmesh-bin")
        .arg(&gridmesh)
        .output()
        .expect("gridmesh-chaos runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "docker lane failed: {}", run.status);
    if stdout.contains("SKIPPED:") {
        return;
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).expect("report"))
            .expect("report.json is JSON");
    assert_eq!(report["passed"], true);
    assert_eq!(report["mode"], "docker");
    assert_eq!(report["readings"]["lost"], 0);
    assert!(report["readings"]["acked"].as_u64().expect("acked") > 500);
    let kinds: Vec<&str> = report["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| w["kind"].as_str().expect("kind"))
        .collect();
    for kind in ["kill", "pause", "restart", "isolate"] {
        assert!(kinds.contains(&kind), "no {kind} window in {kinds:?}");
    }
}
