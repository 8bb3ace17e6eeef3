//! Users, sessions and revocation across a real three-node cluster: a user created on one node
//! logs in on another, refreshes are routed to the session's owner from anywhere, a revocation
//! is refused on every node when the call returns, and a node that was down during it catches
//! up within the sync interval. Prints the measured times (docs/benchmarks.md).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gridmesh_chaos::cluster_processes;
use gridmesh_proto::client::{Client, Credentials};
use gridmesh_proto::v1::{
    CreateUserRequest, ListMembersRequest, MemberState, RefreshRequest, RevokeSessionsRequest,
    WhoAmIRequest,
};
use tonic::Code;

const COOKIE: &str = "auth-cluster-cookie-0123456789";
const PASSWORD: &str = "long-analyst-passphrase";

async fn whoami(target: &str, token: &str) -> Code {
    let Ok(client) = Client::connect_with(target, Credentials::token(token)).await else {
        return Code::Unavailable;
    };
    match client.auth().who_am_i(WhoAmIRequest {}).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn alive_members(client: &Client) -> usize {
    client
        .admin()
        .list_members(ListMembersRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .members
                .iter()
                .filter(|m| m.state == MemberState::Alive as i32)
                .count()
        })
        .unwrap_or(0)
}

async fn until(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = env!("CARGO_BIN_EXE_gridmesh");
    let mut nodes = cluster_processes(dir.path(), 3, binary.as_ref(), COOKIE).expect("ports");
    for node in &mut nodes {
        node.env
            .push(("GRIDMESH_AUTH__SYNC_INTERVAL".into(), "1s".into()));
    }
    for node in &mut nodes {
        node.spawn().expect("spawn");
    }
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(30)).expect("ready");
    }
    let targets: Vec<String> = nodes.iter().map(|n| n.grpc_target()).collect();
    let admins = [
        connect(&nodes[0]).await,
        connect(&nodes[1]).await,
        connect(&nodes[2]).await,
    ];
    for admin in &admins {
        until(Duration::from_secs(30), "three alive members", async || {
            alive_members(admin).await == 3
        })
        .await;
    }

    // A user created through n0 exists everywhere when the call returns.
    admins[0]
        .auth()
        .create_user(CreateUserRequest {
            name: "carol".into(),
            password: PASSWORD.into(),
            roles: vec!["analyst".into()],
            ..Default::default()
        })
        .await
        .expect("create");
    let pair = admins[2]
        .login("carol", PASSWORD)
        .await
        .expect("login on n2");
    for target in &targets {
        assert_eq!(
            whoami(target, &pair.access_token).await,
            Code::Ok,
            "{target}"
        );
    }

    // Refresh from any node: routed to the session's owner, which rotates the token once.
    let mut refresh_token = pair.refresh_token.clone();
    for admin in &admins {
        let next = admin
            .auth()
            .refresh(RefreshRequest {
                refresh_token: refresh_token.clone(),
            })
            .await
            .expect("refresh")
            .into_inner();
        refresh_token = next.refresh_token;
    }

    // Revocation through n1: refused on every node when the call returns.
    let started = Instant::now();
    admins[1]
        .auth()
        .revoke_sessions(RevokeSessionsRequest {
            session_id: pair.session_id.clone(),
            user: String::new(),
        })
        .await
        .expect("revoke");
    let call = started.elapsed();
    for target in &targets {
        assert_eq!(
            whoami(target, &pair.access_token).await,
            Code::Unauthenticated,
            "{target} still accepts a revoked token"
        );
    }
    let everywhere = started.elapsed();
    println!(
        "revocation: call returned after {:.1} ms; refused on all 3 nodes {:.1} ms after the call \
         started",
        call.as_secs_f64() * 1e3,
        everywhere.as_secs_f64() * 1e3
    );

    // A node that is down during a revocation catches up within the sync interval.
    let second = admins[0]
        .login("carol", PASSWORD)
        .await
        .expect("login again");
    assert_eq!(whoami(&targets[2], &second.access_token).await, Code::Ok);
    nodes[2].kill().expect("kill n2");
    until(Duration::from_secs(10), "n2 down on n0", async || {
        alive_members(&admins[0]).await == 2
    })
    .await;
    admins[0]
        .auth()
        .revoke_sessions(RevokeSessionsRequest {
            session_id: String::new(),
            user: "carol".into(),
        })
        .await
        .expect("revocation with n2 down (confirmed by the reachable members)");
    nodes[2].start().expect("n2 restarts");
    let back = Instant::now();
    let caught_up = until(
        Duration::from_secs(15),
        "n2 to refuse the revoked token",
        async || whoami(&targets[2], &second.access_token).await == Code::Unauthenticated,
    )
    .await;
    println!(
        "revocation: a node that was down refused the token {:.0} ms after it was ready again \
         (auth.sync_interval = 1s)",
        caught_up.max(back.elapsed()).as_secs_f64() * 1e3
    );
    for target in &targets[..2] {
        assert_eq!(
            whoami(target, &second.access_token).await,
            Code::Unauthenticated
        );
    }
}
