//! A real cluster: three (then four) `gridmesh` processes on loopback ports with their own data
//! directories, talking ractor_cluster over TCP. Every wait polls observable state (the admin
//! API, the node logs) with a deadline; nothing sleeps a fixed time.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use gridmesh_actors::placement::shard_of;
use gridmesh_chaos::{NodeProcess, cluster_processes};
use gridmesh_proto::client::Client;
use gridmesh_proto::v1::{
    DrainNodeRequest, GetFeederLoadRequest, GetMeterStatusRequest, GetReadingsRequest,
    GetShardMapRequest, ListMembersRequest, MemberState, ReadingBatch, RejectReason, Resolution,
};

const COOKIE: &str = "test-cookie-0123456789abcdef";
const METERS: usize = 30;

/// name → (state, incarnation) as `client`'s node sees the cluster.
async fn members(client: &Client) -> HashMap<String, (MemberState, u64)> {
    let Ok(r) = client.admin().list_members(ListMembersRequest {}).await else {
        return HashMap::new();
    };
    r.into_inner()
        .members
        .into_iter()
        .map(|m| {
            let state = MemberState::try_from(m.state).unwrap_or(MemberState::Unspecified);
            (m.name, (state, m.incarnation))
        })
        .collect()
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns the time it took.
async fn until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_see(clients: &[&Client], names: &[&str], state: MemberState) -> bool {
    for client in clients {
        let view = members(client).await;
        if !names
            .iter()
            .all(|n| view.get(*n).is_some_and(|(s, _)| *s == state))
        {
            return false;
        }
    }
    true
}

/// Whether every client's node has the same shard map over exactly `names`.
async fn converged(clients: &[&Client], names: &[&str]) -> bool {
    let mut maps = Vec::new();
    for client in clients {
        let Ok(map) = client.admin().get_shard_map(GetShardMapRequest {}).await else {
            return false;
        };
        let map = map.into_inner();
        let complete = map.shards.iter().all(|s| {
            let mut pref: Vec<&str> = s.preference.iter().map(String::as_str).collect();
            pref.sort_unstable();
            pref == names
        });
        if !complete {
            return false;
        }
        maps.push(map.shards);
    }
    maps.windows(2).all(|w| w[0] == w[1])
}

/// Polls until every node has joined and every client's node has the same map over `names`.
async fn wait_converged(clients: &[&Client], names: &[&str], timeout: Duration) -> Duration {
    let start = Instant::now();
    while !(all_see(clients, names, MemberState::Alive).await && converged(clients, names).await) {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {names:?} to converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Polls until every client's node sees every name in `state`; returns the time it took.
async fn wait_all_see(
    clients: &[&Client],
    names: &[&str],
    state: MemberState,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    while !all_see(clients, names, state).await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {names:?} to be {state:?} everywhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Pushes the k-th reading of every meter through `client`, resending readings whose owner was
/// unavailable, until all are accepted or `timeout` passes.
async fn push_round(client: &Client, k: i64, timeout: Duration) -> u32 {
    let mut pending: Vec<_> = (0..METERS).map(|m| reading(&meter_id(m), k)).collect();
    let deadline = Instant::now() + timeout;
    let mut accepted = 0;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "round {k}: {} readings never accepted",
            pending.len()
        );
        let batch = ReadingBatch {
            batch_id: k as u64,
            readings: pending.clone(),
        };
        match client.ingest().push_batch(batch).await {
            Ok(ack) => {
                let ack = ack.into_inner();
                accepted += ack.accepted;
                let retry: Vec<usize> = ack
                    .rejected
                    .iter()
                    .map(|r| {
                        assert_eq!(
                            r.reason,
                            RejectReason::OwnerUnavailable as i32,
                            "only an unavailable owner may refuse these: {r:?}"
                        );
                        r.index as usize
                    })
                    .collect();
                pending = retry.into_iter().map(|i| pending[i].clone()).collect();
            }
            // Unknown outcome: resending is safe (duplicates are acknowledged idempotently).
            Err(status) if status.code() == tonic::Code::Unavailable => {}
            Err(status) => panic!("round {k}: {status}"),
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    accepted
}

async fn stored(client: &Client, meter: &str) -> usize {
    client
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: meter.to_owned(),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Raw as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("readings")
        .into_inner()
        .readings
        .len()
}

fn start_all(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut() {
        node.spawn().expect("spawn");
    }
    for node in nodes.iter_mut() {
        node.wait_ready(Duration::from_secs(30)).expect("ready");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_route_detect_failures_rejoin_and_rebalance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = env!("CARGO_BIN_EXE_gridmesh");
    // A forward timeout far above the down deadline: a call to a hung peer must end when the
    // peer is declared down, not when this timeout runs out (checked at the SIGSTOP below).
    let mut nodes: Vec<NodeProcess> = cluster_processes(dir.path(), 3, binary.as_ref(), COOKIE)
        .expect("ports")
        .into_iter()
        .map(|n| n.env("GRIDMESH_CLUSTER__FORWARD_TIMEOUT", "60s"))
        .collect();
    start_all(&mut nodes);
    let c0 = connect(&nodes[0]).await;
    let c1 = connect(&nodes[1]).await;
    let c2 = connect(&nodes[2]).await;
    let all = ["n0", "n1", "n2"];
    wait_converged(&[&c0, &c1, &c2], &all, Duration::from_secs(20)).await;

    // Every node computes the same map, and the test's meters live on all three nodes.
    let map = c0
        .admin()
        .get_shard_map(GetShardMapRequest {})
        .await
        .expect("map");
    let map = map.into_inner();
    let map1 = c1
        .admin()
        .get_shard_map(GetShardMapRequest {})
        .await
        .expect("map");
    assert_eq!(
        map.shards,
        map1.into_inner().shards,
        "views agree, maps agree"
    );
    let owner = |m: usize| {
        map.shards[shard_of(&meter_id(m), map.shard_count) as usize]
            .owner
            .clone()
    };
    for name in all {
        assert!(
            (0..METERS).any(|m| owner(m) == name),
            "no test meter on {name}"
        );
    }

    // Register through one node, ingest through another, read through the third.
    c0.registry()
        .import_topology(topology(3, METERS / 3))
        .await
        .expect("import");
    assert_eq!(
        push_round(&c1, 0, Duration::from_secs(20)).await,
        METERS as u32
    );
    for m in 0..METERS {
        assert_eq!(stored(&c2, &meter_id(m)).await, 1, "meter {m} via n2");
    }
    let status = c0
        .query()
        .get_meter_status(GetMeterStatusRequest {
            meter_id: meter_id(7),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.readings_accepted, 1);
    let load = c2
        .query()
        .get_feeder_load(GetFeederLoadRequest {
            feeder_id: "F-1".to_owned(),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Day as i32,
        })
        .await
        .expect("feeder load")
        .into_inner();
    // Ten meters of F-1, reading 0 each: 10 Wh each, spread over three nodes' stores.
    assert_eq!(load.intervals.len(), 1);
    assert!(
        (load.intervals[0].customer_energy_import_wh - 100.0).abs() < 1e-9,
        "{load:?}"
    );
    assert_eq!(load.intervals[0].meters_reporting, 10);

    // SIGKILL n1: it is down for the others within the deadline, and ingestion of its meters
    // continues on the new owners.
    nodes[1].kill().expect("kill");
    let detected = wait_all_see(
        &[&c0, &c2],
        &["n1"],
        MemberState::Down,
        Duration::from_secs(10),
    )
    .await;
    println!("SIGKILL detected in {detected:?}");
    // While n1 is down nothing is missing: every reading has a second copy, and one member
    // down is fewer than the write quorum, so answers are complete and say so.
    let answer = c0
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: meter_id(0),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Hour as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("readings while n1 is down")
        .into_inner();
    assert!(answer.unavailable_nodes.is_empty(), "{answer:?}");
    for m in 0..METERS {
        assert_eq!(
            stored(&c0, &meter_id(m)).await,
            1,
            "meter {m} while n1 is down"
        );
    }
    assert_eq!(
        push_round(&c0, 1, Duration::from_secs(20)).await,
        METERS as u32
    );

    // Restarted, it rejoins with a higher incarnation.
    let before = members(&c0).await["n1"].1;
    nodes[1].start().expect("restart n1");
    let c1 = connect(&nodes[1]).await;
    wait_converged(&[&c0, &c1, &c2], &all, Duration::from_secs(20)).await;
    assert!(
        members(&c0).await["n1"].1 > before,
        "a restart is a new incarnation"
    );
    // Every reading is visible from anywhere, and n1 gets what it missed (hinted handoff).
    for m in 0..METERS {
        assert_eq!(
            stored(&c2, &meter_id(m)).await,
            2,
            "meter {m} after n1 returned"
        );
    }

    // SIGSTOP n2 past the down deadline: down; SIGCONT: it returns as a new incarnation.
    let before = members(&c0).await["n2"].1;
    nodes[2].signal(libc::SIGSTOP).expect("stop");
    // Pushed before anyone noticed: n2's part goes to a peer that never answers. It ends
    // (accepted or refused per reading) once n2 is down, well inside the 60 s timeout.
    let stuck = ReadingBatch {
        batch_id: 2,
        readings: (0..METERS).map(|m| reading(&meter_id(m), 2)).collect(),
    };
    let answered =
        tokio::time::timeout(Duration::from_secs(30), c1.ingest().push_batch(stuck)).await;
    match answered {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
        Err(_) => panic!("a call to the hung node waited for the forward timeout"),
    }
    let detected = wait_all_see(
        &[&c0, &c1],
        &["n2"],
        MemberState::Down,
        Duration::from_secs(10),
    )
    .await;
    println!("SIGSTOP detected in {detected:?}");
    assert_eq!(
        push_round(&c1, 2, Duration::from_secs(20)).await,
        METERS as u32
    );
    nodes[2].signal(libc::SIGCONT).expect("cont");
    wait_converged(&[&c0, &c1, &c2], &all, Duration::from_secs(20)).await;
    assert!(
        members(&c0).await["n2"].1 > before,
        "a paused node returns as a new incarnation"
    );
    assert!(nodes[2].log().contains("returning as a new incarnation"));

    // A fourth node joins with only one seed: it meets everyone and takes about a quarter.
    let mut n3 = NodeProcess::new(&dir.path().join("n3"))
        .expect("ports")
        .binary(binary)
        .clustered("n3", COOKIE, &[nodes[0].cluster_addr().expect("clustered")])
        .expect("ports");
    n3.start().expect("n3 starts");
    let c3 = connect(&n3).await;
    let four = ["n0", "n1", "n2", "n3"];
    wait_converged(&[&c0, &c1, &c2, &c3], &four, Duration::from_secs(20)).await;
    let map = c2
        .admin()
        .get_shard_map(GetShardMapRequest {})
        .await
        .expect("map")
        .into_inner();
    let taken = map.shards.iter().filter(|s| s.owner == "n3").count() as f64;
    let quarter = f64::from(map.shard_count) / 4.0;
    assert!(
        (taken - quarter).abs() <= 0.05 * f64::from(map.shard_count),
        "n3 took {taken} of {} shards",
        map.shard_count
    );
    assert_eq!(
        push_round(&c3, 3, Duration::from_secs(20)).await,
        METERS as u32
    );

    // Drain n3 (asked through n0): its shards go back to the others while it still answers.
    let drained = c0
        .admin()
        .drain_node(DrainNodeRequest {
            node: "n3".to_owned(),
            cancel: false,
        })
        .await
        .expect("drain")
        .into_inner();
    assert_eq!(drained.node, "n3");
    let three = ["n0", "n1", "n2"];
    let took = until(
        Duration::from_secs(10),
        "n3's shards to move away",
        || async { converged(&[&c0, &c1, &c2, &c3], &three).await },
    )
    .await;
    println!("drain moved n3's shards in {took:?}");
    assert_eq!(
        push_round(&c3, 4, Duration::from_secs(20)).await,
        METERS as u32
    );
    // SIGTERM: it drains (already) and exits cleanly; the others see it go.
    let status = n3.terminate(Duration::from_secs(30)).expect("n3 stops");
    assert!(status.success(), "{status}");
    wait_all_see(&[&c0], &["n3"], MemberState::Down, Duration::from_secs(10)).await;
    // Every acknowledged reading has a second copy (replication factor 2, write quorum 2):
    // with n3 gone, every meter still has all five rounds, including those n3 stored as
    // owner in round 3.
    for m in 0..METERS {
        let answer = c1
            .query()
            .get_readings(GetReadingsRequest {
                meter_id: meter_id(m),
                from_ts_ms: base_ts(),
                to_ts_ms: base_ts() + DAY_MS,
                resolution: Resolution::Raw as i32,
                limit: 0,
                local_only: false,
            })
            .await
            .expect("readings")
            .into_inner();
        assert!(answer.unavailable_nodes.is_empty(), "{answer:?}");
        assert_eq!(answer.readings.len(), 5, "meter {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_or_shard_count_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = env!("CARGO_BIN_EXE_gridmesh");
    let mut nodes = cluster_processes(dir.path(), 2, binary.as_ref(), COOKIE).expect("ports");
    start_all(&mut nodes);
    let c0 = connect(&nodes[0]).await;
    wait_all_see(
        &[&c0],
        &["n0", "n1"],
        MemberState::Alive,
        Duration::from_secs(20),
    )
    .await;

    let seeds: Vec<_> = nodes.iter().filter_map(NodeProcess::cluster_addr).collect();
    let mut intruder = NodeProcess::new(&dir.path().join("intruder"))
        .expect("ports")
        .binary(binary)
        .clustered("intruder", "another-cookie-0123456789", &seeds)
        .expect("ports");
    intruder.start().expect("intruder starts");
    let ci = connect(&intruder).await;
    // Its attempts are refused and logged, on both sides.
    until(Duration::from_secs(20), "the refusal in the logs", || {
        let logs = (intruder.log(), nodes[0].log());
        async move { logs.0.contains("cluster connection refused") && logs.1.contains("auth_fail") }
    })
    .await;
    // Never half-joined: nobody lists it, it lists nobody, and it owns every shard alone.
    assert!(!members(&c0).await.contains_key("intruder"));
    let view = members(&ci).await;
    assert_eq!(view.keys().collect::<Vec<_>>(), ["intruder"]);

    // The right cookie but another shard count: the session opens, yet neither side takes
    // the other as a member (the same meter would map to different shards).
    let default_shards = gridmesh_config::ActorsConfig::default().shards;
    let mut odd = NodeProcess::new(&dir.path().join("odd"))
        .expect("ports")
        .binary(binary)
        .env("GRIDMESH_ACTORS__SHARDS", &(default_shards / 2).to_string())
        .clustered("odd", COOKIE, &seeds)
        .expect("ports");
    odd.start().expect("odd starts");
    let co = connect(&odd).await;
    until(
        Duration::from_secs(20),
        "the shard-count refusal in both logs",
        || {
            let logs = (odd.log(), nodes[0].log());
            let refused = "another shard count";
            async move { logs.0.contains(refused) && logs.1.contains(refused) }
        },
    )
    .await;
    assert!(!members(&c0).await.contains_key("odd"));
    assert_eq!(members(&co).await.keys().collect::<Vec<_>>(), ["odd"]);

    // Garbage on the cluster port, and a frame header announcing 16 EiB: the connection is
    // dropped, the node and its cluster carry on.
    let cluster_addr = nodes[0].cluster_addr().expect("clustered");
    for payload in [vec![0x5a_u8; 64 * 1024], vec![0xff_u8; 16]] {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(cluster_addr).expect("connect");
        let _ = stream.write_all(&payload);
        let _ = stream.flush();
    }
    let c1 = connect(&nodes[1]).await;
    wait_converged(&[&c0, &c1], &["n0", "n1"], Duration::from_secs(10)).await;
    assert_eq!(nodes[0].http_get("/healthz").expect("healthz").0, 200);
}
