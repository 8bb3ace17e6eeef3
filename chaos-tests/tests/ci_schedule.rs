//! The CI-sized chaos schedules: the real `gridmesh-chaos` binary against real node processes
//! (one node, then a three-node cluster), with SIGKILL, SIGSTOP/SIGCONT and restart windows
//! over 20 seconds (the cluster also gets restarts with an emptied data directory, over 30
//! seconds), then the checker.
//!
//! Needs the `gridmesh` binary beside this test's executable (`cargo test --workspace` builds
//! it) or in `GRIDMESH_BIN`.

use std::process::Command;

use gridmesh_chaos::gridmesh_binary;

const PROCESS_KINDS: [&str; 3] = ["kill", "pause", "restart"];

#[test]
fn seeded_process_faults_lose_no_acknowledged_reading() {
    run_schedule(1, 20_261_203, &PROCESS_KINDS, "20s");
}

/// Three members: kills, pauses past the down deadline, restarts and wipes (a node restarted
/// with an empty data directory, as after a disk replacement) move shards between nodes while
/// clients write through all of them. With two copies of every reading a wipe loses none.
#[test]
fn a_three_node_cluster_loses_no_acknowledged_reading() {
    let kinds = [PROCESS_KINDS.as_slice(), &["wipe"]].concat();
    // This seed's schedule has two wipes: the second waits for the first one's refill.
    run_schedule(3, 20_261_211, &kinds, "30s");
}

fn run_schedule(nodes: usize, seed: u64, kinds: &[&str], duration: &str) {
    let out = tempfile::tempdir().expect("tempdir");
    let gridmesh = gridmesh_binary().expect("the gridmesh binary (cargo build -p gridmesh)");
    let run = Command::new(env!("CARGO_BIN_EXE_gridmesh-chaos"))
        .args(["run", "--duration", duration, "--nodes", &nodes.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--faults", &kinds.join(","), "--clients", "3"])
        .arg("--out")
        .arg(out.path())
        .arg("--gridmesh-bin")
        .arg(&gridmesh)
        .output()
        .expect("gridmesh-chaos runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    // Shown by `cargo test -- --nocapture`, and on failure.
    println!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "chaos run failed: {}", run.status);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).expect("report"))
            .expect("report.json is JSON");
    assert_eq!(report["passed"], true);
    assert_eq!(report["seed"], seed);
    assert_eq!(report["nodes"], nodes);
    let readings = &report["readings"];
    assert!(
        readings["acked"].as_u64().expect("acked count") > 1_000,
        "{readings}"
    );
    assert_eq!(readings["lost"], 0);
    assert_eq!(readings["duplicated"], 0);
    assert_eq!(readings["phantoms"], 0);
    let windows = report["windows"].as_array().expect("windows");
    let seen: Vec<&str> = windows
        .iter()
        .map(|w| w["kind"].as_str().expect("kind"))
        .collect();
    for kind in kinds {
        assert!(seen.contains(kind), "no {kind} window in {seen:?}");
    }
    if nodes > 1 {
        // Replicated: a wipe loses nothing, and the emptied node was refilled (`passed`
        // includes every acknowledged reading having its copies).
        assert_eq!(report["replicas_checked"], true, "{report}");
        assert_eq!(readings["lost_to_wipes_expected"], 0, "{readings}");
        let notes: Vec<String> = windows
            .iter()
            .filter(|w| w["kind"] == "wipe")
            .map(|w| w["notes"].to_string())
            .collect();
        assert!(notes.len() >= 2, "two wipes planned: {notes:?}");
        assert!(
            notes[1..]
                .iter()
                .all(|n| n.contains("seen converged on the readings written before")),
            "a later wipe did not wait for the earlier one's refill: {notes:?}"
        );
    }
    // Every window healed and the node served again afterwards.
    for w in windows {
        assert!(w["recovery_s"].is_number(), "window never recovered: {w}");
    }
    // The monitor listed the nodes' active meters and read their mailbox depths throughout.
    let activation = &report["single_activation"];
    let rounds = activation["rounds"].as_u64().expect("rounds");
    assert!(nodes == 1 || rounds >= 10, "{activation}");
    assert_eq!(activation["unexplained"], 0, "{activation}");
    // The alert probe's stuck register became one frozen-run alert, kept alike on every node.
    let alerts = &report["alerts_once"];
    assert!(
        alerts["probe_readings"].as_u64().expect("probe readings") > 13,
        "{alerts}"
    );
    let live =
        alerts["alerts"].as_u64().expect("alerts") - alerts["merged"].as_u64().expect("merged");
    assert_eq!(live, 1, "{alerts}");
    assert_eq!(alerts["violations"], 0, "{alerts}");
    let gauges = &report["memory"]["max_gauges"];
    assert!(
        gauges["gridmesh_mailbox_high_water"]
            .as_f64()
            .expect("mailbox gauge")
            >= 1.0,
        "{gauges}"
    );
    assert!(
        std::fs::read_to_string(out.path().join("report.md"))
            .expect("report.md")
            .contains("PASSED")
    );
}
