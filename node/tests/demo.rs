//! The newcomer's first command, `gridmesh demo`, end to end at a small size: it must ingest,
//! and the grid rules must catch every grid event the simulator plays out (an overload, a
//! voltage sag, a transformer outage, theft-like under-reporting).

use std::process::Command;

#[test]
fn the_demo_catches_every_simulated_grid_event() {
    let output = Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        // Batches of 200: with 400 meters the 8 batches in flight span 4 intervals, which
        // the demo's settle time covers (see demo_settle).
        .args(["demo", "--meters", "400", "--feeders", "5", "--days", "4"])
        .args(["--batch-size", "200"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Alerts raised by the grid rules"),
        "{stdout}"
    );
    let caught = stdout.matches("caught: ").count() - stdout.matches("NOT caught").count();
    assert_eq!(stdout.matches("NOT caught").count(), 0, "{stdout}");
    assert_eq!(caught, 4, "{stdout}");
    // The outage shows in the reliability indices of its feeder.
    assert!(
        stdout.contains("SAIFI") && stdout.contains("sustained"),
        "{stdout}"
    );
}
