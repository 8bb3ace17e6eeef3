//! TLS on and off: gRPC over TLS with a test CA (scripts/gen-certs.sh), and mutual TLS between
//! cluster nodes whose accept path survives a peer that connects and never handshakes.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use gridmesh_chaos::{NodeProcess, admin_credentials, cluster_processes};
use gridmesh_proto::client::{Client, ClientTls, ConnectOptions};
use gridmesh_proto::v1::{ListMembersRequest, MemberState, WhoAmIRequest};

const COOKIE: &str = "tls-test-cookie-0123456789";

fn make_certs(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-certs.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .args(["n0", "n1", "n2", "other"])
        .status()
        .expect("gen-certs.sh runs");
    assert!(status.success(), "gen-certs.sh failed");
    out
}

fn tls_options(ca: &Path) -> ConnectOptions {
    ConnectOptions {
        credentials: admin_credentials(),
        tls: Some(ClientTls {
            ca_pem: Some(std::fs::read(ca).expect("ca")),
            domain: Some("localhost".into()),
            identity: None,
        }),
    }
}

fn with_env(node: &mut NodeProcess, vars: &[(&str, String)]) {
    for (k, v) in vars {
        node.env.push(((*k).to_owned(), v.clone()));
    }
}

#[tokio::test]
async fn grpc_over_tls_and_plaintext_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let mut node = node(dir.path(), &[]);
    with_env(
        &mut node,
        &[
            (
                "GRIDMESH_TLS__GRPC_CERT_FILE",
                certs.join("n0.pem").display().to_string(),
            ),
            (
                "GRIDMESH_TLS__GRPC_KEY_FILE",
                certs.join("n0.key").display().to_string(),
            ),
        ],
    );
    node.start().expect("node starts with TLS");
    let client = Client::connect_with(&node.grpc_target(), tls_options(&certs.join("ca.pem")))
        .await
        .expect("TLS client logs in");
    let me = client
        .auth()
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("call");
    assert_eq!(me.into_inner().user, "admin");

    // Plaintext to a TLS port fails; so does TLS verified against a CA that did not sign it.
    let plain = Client::connect_with(&node.grpc_target(), admin_credentials()).await;
    assert!(plain.is_err(), "a plaintext client got through");
    let other = tempfile::tempdir().expect("tempdir");
    let other_certs = make_certs(other.path());
    let wrong_ca = Client::connect_with(
        &node.grpc_target(),
        tls_options(&other_certs.join("ca.pem")),
    )
    .await;
    assert!(
        wrong_ca.is_err(),
        "a certificate from another CA was accepted"
    );
}

async fn alive(client: &Client) -> usize {
    client
        .admin()
        .list_members(ListMembersRequest {})
        .await
        .map(|r| {
            let members = r.into_inner().members;
            members
                .iter()
                .filter(|m| m.state == MemberState::Alive as i32)
                .count()
        })
        .unwrap_or(0)
}

fn metric(node: &NodeProcess, needle: &str) -> f64 {
    let (_, body) = node.http_get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tls_survives_a_stalled_handshake_and_refuses_plaintext_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let binary = env!("CARGO_BIN_EXE_gridmesh");
    let mut nodes = cluster_processes(dir.path(), 3, binary.as_ref(), COOKIE).expect("ports");
    for (i, node) in nodes.iter_mut().take(2).enumerate() {
        with_env(
            node,
            &[
                (
                    "GRIDMESH_TLS__CLUSTER_CERT_FILE",
                    certs.join(format!("n{i}.pem")).display().to_string(),
                ),
                (
                    "GRIDMESH_TLS__CLUSTER_KEY_FILE",
                    certs.join(format!("n{i}.key")).display().to_string(),
                ),
                (
                    "GRIDMESH_TLS__CLUSTER_CA_FILE",
                    certs.join("ca.pem").display().to_string(),
                ),
                ("GRIDMESH_TLS__HANDSHAKE_TIMEOUT", "1s".to_owned()),
            ],
        );
    }
    nodes[0].start().expect("n0 starts");
    let cluster_addr = nodes[0].cluster_addr().expect("cluster address");

    // A peer that connects and never sends a byte, and one that sends garbage.
    let stalled = std::net::TcpStream::connect(cluster_addr).expect("stalled connect");
    let mut garbage = std::net::TcpStream::connect(cluster_addr).expect("garbage connect");
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");

    nodes[1].start().expect("n1 starts");
    let c0 = connect(&nodes[0]).await;
    let c1 = connect(&nodes[1]).await;
    let start = Instant::now();
    while alive(&c0).await < 2 || alive(&c1).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "TLS members did not meet while a handshake was stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &nodes[0],
        "gridmesh_cluster_handshakes_total{outcome=\"timeout\"",
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the stalled handshake was never timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);

    // A node with the right cookie but no TLS cannot join.
    nodes[2].start().expect("plaintext n2 starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &nodes[0],
        "gridmesh_cluster_handshakes_total{outcome=\"failed\"",
    ) < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "the plaintext peer's attempts were not seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alive(&c0).await, 2, "the plaintext node became a member");
}
