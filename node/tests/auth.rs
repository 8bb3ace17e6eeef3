//! Authentication and authorisation against a real node: every RPC × every role (× feeder
//! scope), crafted and revoked tokens, login backoff, secrets absent from logs, and JWT
//! interoperability with PyJWT.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use gridmesh_auth::token::{Claims, KeyRing, now_s};
use gridmesh_chaos::{NodeProcess, TEST_ADMIN, TEST_ADMIN_PASSWORD};
use gridmesh_proto::client::{Client, Credentials};
use gridmesh_proto::v1::*;
use tonic::Code;

/// The JWT key the test nodes run with (so tests can craft tokens).
const KEY_LINE: &str = "test-k1 HS256 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const USER_PASSWORD: &str = "a-long-test-passphrase";

fn auth_node(dir: &std::path::Path) -> NodeProcess {
    node(dir, &[]).env("GRIDMESH_JWT_KEYS", KEY_LINE)
}

async fn token_client(node: &NodeProcess, token: &str) -> Client {
    Client::connect_with(&node.grpc_target(), Credentials::token(token))
        .await
        .expect("connect")
}

async fn anonymous(node: &NodeProcess) -> Client {
    Client::connect(&node.grpc_target()).await.expect("connect")
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn create_user(admin: &Client, name: &str, roles: &[&str], feeders: &[&str]) {
    admin
        .auth()
        .create_user(CreateUserRequest {
            name: name.to_owned(),
            password: USER_PASSWORD.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            feeders: feeders.iter().map(|f| (*f).to_owned()).collect(),
            service_account: false,
        })
        .await
        .expect("create user");
}

async fn login(client: &Client, user: &str) -> TokenPair {
    client.login(user, USER_PASSWORD).await.expect("login")
}

/// A node with topology (F-0: T-0000, T-0001; F-1: T-0002, T-0003), one user per role, a
/// scoped user and a service account.
async fn prepared_node(dir: &std::path::Path) -> (NodeProcess, Client) {
    let mut node = auth_node(dir);
    node.start().expect("node starts");
    let admin = connect(&node).await;
    admin
        .registry()
        .import_topology(topology(2, 2))
        .await
        .expect("topology");
    for role in ROLES {
        create_user(&admin, &format!("u-{role}"), &[role], &[]).await;
    }
    create_user(&admin, "target-user", &["viewer"], &[]).await;
    create_user(&admin, "scoped", &["analyst", "ingest"], &["F-0"]).await;
    admin
        .auth()
        .create_user(CreateUserRequest {
            name: "svc".into(),
            roles: vec!["ingest".into()],
            service_account: true,
            ..Default::default()
        })
        .await
        .expect("service account");
    (node, admin)
}

const ROLES: [&str; 5] = ["admin", "operator", "analyst", "viewer", "ingest"];
const ALL: &[&str] = &["admin", "operator", "analyst", "viewer", "ingest"];
const ADMIN: &[&str] = &["admin"];
const INGEST: &[&str] = &["admin", "ingest"];
const DATA: &[&str] = &["admin", "operator", "analyst"];
const STATUS: &[&str] = &["admin", "operator", "analyst", "viewer"];
const OPERATE: &[&str] = &["admin", "operator"];

/// Who may call what, written out from the issue independently of the permission table.
const EXPECTED: &[(&str, &[&str])] = &[
    ("IngestService/PushBatch", INGEST),
    ("IngestService/Push", INGEST),
    ("RegistryService/RegisterMeter", ADMIN),
    ("RegistryService/GetMeter", STATUS),
    ("RegistryService/RegisterFeeder", ADMIN),
    ("RegistryService/GetFeeder", STATUS),
    ("RegistryService/ListFeeders", STATUS),
    ("RegistryService/ImportTopology", ADMIN),
    ("QueryService/GetReadings", DATA),
    ("QueryService/GetMeterStatus", STATUS),
    ("QueryService/GetFeederLoad", STATUS),
    ("QueryService/GetForecast", DATA),
    ("QueryService/GetAggregates", DATA),
    ("QueryService/GetReliability", STATUS),
    ("QueryService/GetValidatedIntervals", DATA),
    ("QueryService/GetMeterAnomalies", DATA),
    ("AlertService/ListAlerts", STATUS),
    ("AlertService/WatchAlerts", STATUS),
    ("AlertService/AcknowledgeAlert", OPERATE),
    ("AlertService/ResolveAlert", OPERATE),
    ("AlertService/ListDeadLetters", ADMIN),
    ("AlertService/ReplayDeadLetters", ADMIN),
    ("AdminService/ListMembers", ADMIN),
    ("AdminService/GetShardMap", ADMIN),
    ("AdminService/GetNodeStats", ADMIN),
    ("AdminService/ListActiveMeters", ADMIN),
    ("AdminService/DrainNode", ADMIN),
    ("AdminService/GetReplicaStatus", ADMIN),
    ("AdminService/Repair", ADMIN),
    ("AuthService/Login", ALL),
    ("AuthService/Refresh", ALL),
    ("AuthService/Logout", ALL),
    ("AuthService/WhoAmI", ALL),
    ("AuthService/ChangePassword", ALL),
    ("AuthService/CreateUser", ADMIN),
    ("AuthService/UpdateUser", ADMIN),
    ("AuthService/ListUsers", ADMIN),
    ("AuthService/ListSessions", ADMIN),
    ("AuthService/RevokeSessions", ADMIN),
    ("AuthService/CreateApiToken", ADMIN),
    ("AuthService/RevokeApiToken", ADMIN),
    ("AuthService/ListAuditEvents", ADMIN),
];

/// Calls `method` as `user` (whose access token `client` carries); returns the status code.
async fn invoke(node: &NodeProcess, client: &Client, user: &str, method: &str, n: i64) -> Code {
    let one = |meter: &str| ReadingBatch {
        batch_id: n as u64,
        readings: vec![reading(meter, n)],
    };
    match method {
        "IngestService/PushBatch" => code(client.ingest().push_batch(one("T-0000")).await),
        "IngestService/Push" => match client.push_stream(1).await {
            Err(gridmesh_proto::client::ClientError::Status(s)) => s.code(),
            Err(e) => panic!("push stream: {e}"),
            Ok((tx, mut acks)) => {
                tx.send(one("T-0001")).await.expect("send");
                match acks.message().await {
                    Ok(Some(_)) => Code::Ok,
                    Ok(None) => Code::Unknown,
                    Err(s) => s.code(),
                }
            }
        },
        "RegistryService/RegisterMeter" => code(
            client
                .registry()
                .register_meter(RegisterMeterRequest {
                    meter: Some(MeterInfo {
                        meter_id: format!("R-{user}"),
                        feeder_id: "F-0".into(),
                        nominal_voltage_v: 230.0,
                        ..Default::default()
                    }),
                })
                .await,
        ),
        "RegistryService/GetMeter" => code(
            client
                .registry()
                .get_meter(GetMeterRequest {
                    meter_id: "T-0000".into(),
                })
                .await,
        ),
        "RegistryService/RegisterFeeder" => code(
            client
                .registry()
                .register_feeder(RegisterFeederRequest {
                    feeder: Some(FeederInfo {
                        feeder_id: format!("RF-{user}"),
                        rating_kva: 100.0,
                        head_meter_id: String::new(),
                        transformers: Vec::new(),
                    }),
                })
                .await,
        ),
        "RegistryService/GetFeeder" => code(
            client
                .registry()
                .get_feeder(GetFeederRequest {
                    feeder_id: "F-0".into(),
                })
                .await,
        ),
        "RegistryService/ListFeeders" => {
            code(client.registry().list_feeders(ListFeedersRequest {}).await)
        }
        "RegistryService/ImportTopology" => code(
            client
                .registry()
                .import_topology(ImportTopologyRequest {
                    feeders: vec![FeederInfo {
                        feeder_id: format!("IF-{user}"),
                        rating_kva: 100.0,
                        head_meter_id: String::new(),
                        transformers: Vec::new(),
                    }],
                    meters: vec![],
                })
                .await,
        ),
        "QueryService/GetReadings" => code(
            client
                .query()
                .get_readings(GetReadingsRequest {
                    meter_id: "T-0000".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                    resolution: Resolution::Raw as i32,
                    limit: 10,
                    local_only: false,
                })
                .await,
        ),
        "QueryService/GetMeterStatus" => code(
            client
                .query()
                .get_meter_status(GetMeterStatusRequest {
                    meter_id: "T-0000".into(),
                })
                .await,
        ),
        "QueryService/GetFeederLoad" => code(
            client
                .query()
                .get_feeder_load(GetFeederLoadRequest {
                    feeder_id: "F-0".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                    resolution: Resolution::Day as i32,
                })
                .await,
        ),
        "QueryService/GetForecast" => code(
            client
                .query()
                .get_forecast(GetForecastRequest {
                    feeder_id: "F-0".into(),
                })
                .await,
        ),
        "QueryService/GetAggregates" => code(
            client
                .query()
                .get_aggregates(GetAggregatesRequest {
                    feeder_id: "F-0".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                    ..Default::default()
                })
                .await,
        ),
        "QueryService/GetValidatedIntervals" => code(
            client
                .query()
                .get_validated_intervals(GetValidatedIntervalsRequest {
                    meter_id: "T-0000".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                    channel: 0,
                })
                .await,
        ),
        "QueryService/GetMeterAnomalies" => code(
            client
                .query()
                .get_meter_anomalies(GetMeterAnomaliesRequest {
                    meter_id: "T-0000".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                })
                .await,
        ),
        "QueryService/GetReliability" => code(
            client
                .query()
                .get_reliability(GetReliabilityRequest {
                    feeder_id: "F-0".into(),
                    from_ts_ms: base_ts(),
                    to_ts_ms: base_ts() + DAY_MS,
                })
                .await,
        ),
        "AlertService/ListAlerts" => code(
            client
                .alerts()
                .list_alerts(ListAlertsRequest::default())
                .await,
        ),
        "AlertService/WatchAlerts" => code(
            client
                .alerts()
                .watch_alerts(WatchAlertsRequest::default())
                .await,
        ),
        "AlertService/AcknowledgeAlert" => code(
            client
                .alerts()
                .acknowledge_alert(AcknowledgeAlertRequest {
                    alert_id: "no-such-alert".into(),
                    ..Default::default()
                })
                .await,
        ),
        "AlertService/ResolveAlert" => code(
            client
                .alerts()
                .resolve_alert(ResolveAlertRequest {
                    alert_id: "no-such-alert".into(),
                    ..Default::default()
                })
                .await,
        ),
        "AlertService/ListDeadLetters" => code(
            client
                .alerts()
                .list_dead_letters(ListDeadLettersRequest::default())
                .await,
        ),
        "AlertService/ReplayDeadLetters" => code(
            client
                .alerts()
                .replay_dead_letters(ReplayDeadLettersRequest::default())
                .await,
        ),
        "AdminService/ListMembers" => {
            code(client.admin().list_members(ListMembersRequest {}).await)
        }
        "AdminService/GetShardMap" => {
            code(client.admin().get_shard_map(GetShardMapRequest {}).await)
        }
        "AdminService/GetNodeStats" => code(
            client
                .admin()
                .get_node_stats(GetNodeStatsRequest::default())
                .await,
        ),
        "AdminService/ListActiveMeters" => code(
            client
                .admin()
                .list_active_meters(ListActiveMetersRequest {})
                .await,
        ),
        "AdminService/DrainNode" => code(
            client
                .admin()
                .drain_node(DrainNodeRequest {
                    node: String::new(),
                    cancel: true,
                })
                .await,
        ),
        "AdminService/GetReplicaStatus" => code(
            client
                .admin()
                .get_replica_status(GetReplicaStatusRequest {
                    shards: vec![0],
                    before_ts_ms: None,
                })
                .await,
        ),
        "AdminService/Repair" => code(
            client
                .admin()
                .repair(RepairRequest {
                    shards: vec![0],
                    node: String::new(),
                })
                .await,
        ),
        "AuthService/Login" => code(client.login(user, USER_PASSWORD).await.map_err(status)),
        "AuthService/Refresh" => {
            let pair = login(client, user).await;
            code(
                client
                    .auth()
                    .refresh(RefreshRequest {
                        refresh_token: pair.refresh_token,
                    })
                    .await,
            )
        }
        "AuthService/Logout" => {
            // A separate session, so the caller's own token stays valid.
            let other = token_client(node, &login(client, user).await.access_token).await;
            code(other.auth().logout(LogoutRequest {}).await)
        }
        "AuthService/WhoAmI" => code(client.auth().who_am_i(WhoAmIRequest {}).await),
        "AuthService/ChangePassword" => code(
            client
                .auth()
                .change_password(ChangePasswordRequest {
                    current_password: "not the current one".into(),
                    new_password: "another-long-passphrase".into(),
                })
                .await,
        ),
        "AuthService/CreateUser" => code(
            client
                .auth()
                .create_user(CreateUserRequest {
                    name: format!("new-{user}"),
                    password: USER_PASSWORD.into(),
                    roles: vec!["viewer".into()],
                    ..Default::default()
                })
                .await,
        ),
        "AuthService/UpdateUser" => code(
            client
                .auth()
                .update_user(UpdateUserRequest {
                    name: "target-user".into(),
                    disabled: Some(false),
                    ..Default::default()
                })
                .await,
        ),
        "AuthService/ListUsers" => code(client.auth().list_users(ListUsersRequest {}).await),
        "AuthService/ListSessions" => code(
            client
                .auth()
                .list_sessions(ListSessionsRequest::default())
                .await,
        ),
        "AuthService/RevokeSessions" => code(
            client
                .auth()
                .revoke_sessions(RevokeSessionsRequest {
                    session_id: String::new(),
                    user: "target-user".into(),
                })
                .await,
        ),
        "AuthService/CreateApiToken" => code(
            client
                .auth()
                .create_api_token(CreateApiTokenRequest {
                    user: "svc".into(),
                    description: "rbac test".into(),
                    ttl_s: 3600,
                })
                .await,
        ),
        "AuthService/RevokeApiToken" => code(
            client
                .auth()
                .revoke_api_token(RevokeApiTokenRequest {
                    user: "svc".into(),
                    token_id: "no-such-token".into(),
                })
                .await,
        ),
        "AuthService/ListAuditEvents" => code(
            client
                .auth()
                .list_audit_events(ListAuditEventsRequest::default())
                .await,
        ),
        other => panic!("no call written for {other}"),
    }
}

fn status(e: gridmesh_proto::client::ClientError) -> tonic::Status {
    match e {
        gridmesh_proto::client::ClientError::Status(s) => s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// Every method of every `gridmesh.v1` service, from the descriptor set the node serves.
fn proto_methods() -> BTreeSet<String> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(gridmesh_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut out = BTreeSet::new();
    for file in set.file {
        if file.package() != "gridmesh.v1" {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                out.insert(format!("{}/{}", service.name(), method.name()));
            }
        }
    }
    out
}

#[test]
fn the_table_covers_every_rpc_of_the_proto() {
    let expected: BTreeSet<String> = EXPECTED.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(expected, proto_methods(), "EXPECTED and the .proto differ");
    let table: BTreeSet<String> = gridmesh_auth::permissions::TABLE
        .iter()
        .map(|r| r.method.trim_start_matches("/gridmesh.v1.").to_owned())
        .collect();
    assert_eq!(
        table,
        proto_methods(),
        "the permission table and the .proto differ"
    );
}

#[tokio::test]
async fn every_rpc_against_every_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = prepared_node(dir.path()).await;
    let mut mismatches = Vec::new();
    for role in ROLES {
        let user = format!("u-{role}");
        let client = token_client(&node, &login(&admin, &user).await.access_token).await;
        for (n, (method, allowed)) in EXPECTED.iter().enumerate() {
            let got = invoke(&node, &client, &user, method, n as i64).await;
            let expected_allowed = allowed.contains(&role);
            let denied = got == Code::PermissionDenied;
            if got == Code::Unauthenticated || denied == expected_allowed {
                mismatches.push(format!("{role} × {method}: got {got:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn without_a_valid_token_only_open_methods_answer_and_errors_say_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _admin) = prepared_node(dir.path()).await;
    for client in [
        anonymous(&node).await,
        token_client(&node, "not-a-jwt").await,
        token_client(&node, "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl").await,
    ] {
        let mut messages = BTreeSet::new();
        let who = client
            .auth()
            .who_am_i(WhoAmIRequest {})
            .await
            .expect_err("must fail");
        let push = client
            .ingest()
            .push_batch(ReadingBatch {
                batch_id: 1,
                readings: vec![reading("T-0000", 1)],
            })
            .await
            .expect_err("must fail");
        messages.insert(who.message().to_owned());
        messages.insert(push.message().to_owned());
        for (n, (method, _)) in EXPECTED.iter().enumerate() {
            let code = match *method {
                "AuthService/Login" | "AuthService/Refresh" => continue,
                "AuthService/Logout" => code(client.auth().logout(LogoutRequest {}).await),
                _ => invoke(&node, &client, "nobody", method, n as i64).await,
            };
            assert_eq!(code, Code::Unauthenticated, "{method}");
        }
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            !messages
                .iter()
                .any(|m| m.contains("kid") || m.contains("signature"))
        );
    }
}

#[tokio::test]
async fn feeder_scope_limits_queries_and_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = prepared_node(dir.path()).await;
    let scoped = token_client(&node, &login(&admin, "scoped").await.access_token).await;
    let readings = |meter: &str| GetReadingsRequest {
        meter_id: meter.into(),
        from_ts_ms: base_ts(),
        to_ts_ms: base_ts() + DAY_MS,
        resolution: Resolution::Raw as i32,
        limit: 10,
        local_only: false,
    };
    assert_eq!(
        code(scoped.query().get_readings(readings("T-0000")).await),
        Code::Ok
    );
    let outside = scoped
        .query()
        .get_readings(readings("T-0002"))
        .await
        .expect_err("must fail");
    let unknown = scoped
        .query()
        .get_readings(readings("T-9999"))
        .await
        .expect_err("must fail");
    assert_eq!(outside.code(), Code::PermissionDenied);
    // An unknown meter looks exactly like one outside the scope.
    assert_eq!(
        (unknown.code(), unknown.message()),
        (outside.code(), outside.message())
    );
    assert_eq!(
        code(admin.query().get_readings(readings("T-9999")).await),
        Code::NotFound
    );
    let status = |m: &str| GetMeterStatusRequest { meter_id: m.into() };
    assert_eq!(
        code(scoped.query().get_meter_status(status("T-0001")).await),
        Code::Ok
    );
    assert_eq!(
        code(scoped.query().get_meter_status(status("T-0003")).await),
        Code::PermissionDenied
    );
    let load = |f: &str| GetFeederLoadRequest {
        feeder_id: f.into(),
        from_ts_ms: base_ts(),
        to_ts_ms: base_ts() + DAY_MS,
        resolution: Resolution::Day as i32,
    };
    assert_eq!(
        code(scoped.query().get_feeder_load(load("F-0")).await),
        Code::Ok
    );
    assert_eq!(
        code(scoped.query().get_feeder_load(load("F-1")).await),
        Code::PermissionDenied
    );
    let meter = |m: &str| GetMeterRequest { meter_id: m.into() };
    assert_eq!(
        code(scoped.registry().get_meter(meter("T-0000")).await),
        Code::Ok
    );
    assert_eq!(
        code(scoped.registry().get_meter(meter("T-0002")).await),
        Code::PermissionDenied
    );
    let feeders = scoped
        .registry()
        .list_feeders(ListFeedersRequest {})
        .await
        .expect("list")
        .into_inner()
        .feeders;
    assert_eq!(
        feeders
            .iter()
            .map(|f| f.feeder_id.as_str())
            .collect::<Vec<_>>(),
        ["F-0"]
    );

    // Alerts: another feeder's are refused, acting on an unknown alert looks out of scope.
    let other = ListAlertsRequest {
        feeder_id: "F-1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(scoped.alerts().list_alerts(other).await),
        Code::PermissionDenied
    );
    let forecast = GetForecastRequest {
        feeder_id: "F-1".into(),
    };
    assert_eq!(
        code(scoped.query().get_forecast(forecast).await),
        Code::PermissionDenied
    );

    // Ingest: a batch with one reading outside the scope is refused whole; nothing stored.
    let mixed = ReadingBatch {
        batch_id: 1,
        readings: vec![reading("T-0000", 50), reading("T-0002", 50)],
    };
    assert_eq!(
        code(scoped.ingest().push_batch(mixed.clone()).await),
        Code::PermissionDenied
    );
    let (tx, mut acks) = scoped.push_stream(1).await.expect("stream");
    tx.send(mixed).await.expect("send");
    assert_eq!(
        acks.message()
            .await
            .map(|_| ())
            .expect_err("must fail")
            .code(),
        Code::PermissionDenied
    );
    let stored = admin
        .query()
        .get_readings(readings("T-0000"))
        .await
        .expect("admin reads")
        .into_inner()
        .readings;
    assert!(
        stored
            .iter()
            .all(|r| r.ts_ms != reading("T-0000", 50).ts_ms)
    );
    let inside = ReadingBatch {
        batch_id: 2,
        readings: vec![reading("T-0000", 51)],
    };
    let ack = scoped
        .ingest()
        .push_batch(inside)
        .await
        .expect("in scope")
        .into_inner();
    assert_eq!(ack.accepted, 1);
}

fn sign(claims: &serde_json::Value, kid: &str, alg: jsonwebtoken::Algorithm) -> String {
    let secret = URL_SAFE_NO_PAD
        .decode(KEY_LINE.split_whitespace().nth(2).expect("test fixture"))
        .expect("test fixture");
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_secret(&secret).expect("test fixture");
    jsonwebtoken::encode(&header, claims, &key).expect("test fixture")
}

fn claims_for(user: &str) -> serde_json::Value {
    let now = now_s();
    serde_json::json!({
        "iss": "gridmesh", "aud": "gridmesh-api", "sub": user, "exp": now + 300,
        "nbf": now - 1, "iat": now - 1, "jti": "crafted", "typ": "access", "sid": "crafted-sid",
        "ims": (now - 1) * 1000
    })
}

#[tokio::test]
async fn crafted_expired_foreign_and_revoked_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = prepared_node(dir.path()).await;
    let whoami = async |token: &str| {
        let client = token_client(&node, token).await;
        code(client.auth().who_am_i(WhoAmIRequest {}).await)
    };
    let hs256 = jsonwebtoken::Algorithm::HS256;
    let good = claims_for("u-viewer");
    assert_eq!(whoami(&sign(&good, "test-k1", hs256)).await, Code::Ok);

    let now = now_s();
    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = (now - 120).into();
    expired["iat"] = (now - 1000).into();
    expired["nbf"] = (now - 1000).into();
    cases.push(("expired", sign(&expired, "test-k1", hs256)));
    let mut early = good.clone();
    early["nbf"] = (now + 600).into();
    cases.push(("not yet valid", sign(&early, "test-k1", hs256)));
    let mut aud = good.clone();
    aud["aud"] = "someone-else".into();
    cases.push(("wrong audience", sign(&aud, "test-k1", hs256)));
    let mut iss = good.clone();
    iss["iss"] = "elsewhere".into();
    cases.push(("wrong issuer", sign(&iss, "test-k1", hs256)));
    cases.push((
        "HS512",
        sign(&good, "test-k1", jsonwebtoken::Algorithm::HS512),
    ));
    cases.push(("unknown kid", sign(&good, "test-k2", hs256)));
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test-k1"}"#);
    let body = URL_SAFE_NO_PAD.encode(good.to_string());
    cases.push(("alg none", format!("{none_header}.{body}.")));
    let real = sign(&good, "test-k1", hs256);
    let parts: Vec<&str> = real.split('.').collect();
    let mut forged = good.clone();
    forged["sub"] = "u-admin".into();
    let forged_body = URL_SAFE_NO_PAD.encode(forged.to_string());
    cases.push((
        "tampered",
        format!("{}.{forged_body}.{}", parts[0], parts[2]),
    ));
    let mut no_jti = good.clone();
    no_jti.as_object_mut().expect("test fixture").remove("jti");
    cases.push(("no jti", sign(&no_jti, "test-k1", hs256)));
    let mut ghost = good.clone();
    ghost["sub"] = "nobody-here".into();
    cases.push(("unknown user", sign(&ghost, "test-k1", hs256)));
    for (what, token) in &cases {
        assert_eq!(whoami(token).await, Code::Unauthenticated, "{what}");
    }

    // Revoked: logout ends the session's access and refresh tokens.
    let pair = login(&admin, "u-viewer").await;
    let session = token_client(&node, &pair.access_token).await;
    assert_eq!(whoami(&pair.access_token).await, Code::Ok);
    session
        .auth()
        .logout(LogoutRequest {})
        .await
        .expect("logout");
    assert_eq!(whoami(&pair.access_token).await, Code::Unauthenticated);
    let refresh = RefreshRequest {
        refresh_token: pair.refresh_token,
    };
    assert_eq!(
        code(admin.auth().refresh(refresh).await),
        Code::Unauthenticated
    );

    // Disabled users' tokens stop working at once; enabling restores them.
    let pair = login(&admin, "u-analyst").await;
    let set_disabled = async |disabled: bool| {
        admin
            .auth()
            .update_user(UpdateUserRequest {
                name: "u-analyst".into(),
                disabled: Some(disabled),
                ..Default::default()
            })
            .await
            .expect("update");
    };
    set_disabled(true).await;
    assert_eq!(whoami(&pair.access_token).await, Code::Unauthenticated);
    assert_eq!(
        code(
            admin
                .login("u-analyst", USER_PASSWORD)
                .await
                .map_err(status)
        ),
        Code::Unauthenticated
    );
    set_disabled(false).await;
    assert_eq!(whoami(&pair.access_token).await, Code::Ok);

    // API tokens: work for their user's roles, then stop when revoked.
    let created = admin
        .auth()
        .create_api_token(CreateApiTokenRequest {
            user: "svc".into(),
            description: "head-end 1".into(),
            ttl_s: 3600,
        })
        .await
        .expect("api token")
        .into_inner();
    let headend = token_client(&node, &created.token).await;
    let batch = ReadingBatch {
        batch_id: 7,
        readings: vec![reading("T-0001", 3)],
    };
    assert_eq!(
        code(headend.ingest().push_batch(batch.clone()).await),
        Code::Ok
    );
    assert_eq!(
        code(
            headend
                .query()
                .get_meter_status(GetMeterStatusRequest {
                    meter_id: "T-0001".into()
                })
                .await
        ),
        Code::PermissionDenied
    );
    admin
        .auth()
        .revoke_api_token(RevokeApiTokenRequest {
            user: "svc".into(),
            token_id: created.info.expect("info").token_id,
        })
        .await
        .expect("revoke");
    assert_eq!(
        code(headend.ingest().push_batch(batch).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_revoked_stream_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = prepared_node(dir.path()).await;
    let pair = login(&admin, "u-ingest").await;
    let client = token_client(&node, &pair.access_token).await;
    let (tx, mut acks) = client.push_stream(1).await.expect("stream");
    tx.send(ReadingBatch {
        batch_id: 1,
        readings: vec![reading("T-0000", 1)],
    })
    .await
    .expect("send");
    assert!(acks.message().await.expect("ack").is_some());
    admin
        .auth()
        .revoke_sessions(RevokeSessionsRequest {
            session_id: pair.session_id,
            user: String::new(),
        })
        .await
        .expect("revoke");
    let ended = tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("the stream ends promptly");
    assert_eq!(
        ended.map(|_| ()).expect_err("must fail").code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn repeated_login_failures_back_off_without_revealing_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = auth_node(dir.path());
    node.start().expect("node starts");
    let client = anonymous(&node).await;
    let attempt = async |user: &str, password: &str| {
        let request = LoginRequest {
            user: user.into(),
            password: password.into(),
        };
        client
            .auth()
            .login(request)
            .await
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_owned()))
    };
    // A wrong password and an unknown user get the same answer.
    let wrong = attempt(TEST_ADMIN, "wrong password!")
        .await
        .expect_err("must fail");
    let unknown = attempt("no-such-user", "wrong password!")
        .await
        .expect_err("must fail");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, Code::Unauthenticated);
    for _ in 0..2 {
        let failed = attempt("no-such-user", "wrong password!")
            .await
            .expect_err("must fail");
        assert_eq!(failed.0, Code::Unauthenticated);
    }
    // Four failures from this address: blocked now, whoever logs in and whatever the
    // password (the correct one is not even checked).
    assert_eq!(
        attempt(TEST_ADMIN, TEST_ADMIN_PASSWORD)
            .await
            .expect_err("must fail")
            .0,
        Code::ResourceExhausted
    );
    assert_eq!(
        attempt("no-such-user", "wrong password!")
            .await
            .expect_err("must fail")
            .0,
        Code::ResourceExhausted
    );
    // The delay passes (1 s after the 4th failure) and the right password works again.
    let start = Instant::now();
    loop {
        match attempt(TEST_ADMIN, TEST_ADMIN_PASSWORD).await {
            Ok(()) => break,
            Err((Code::ResourceExhausted, _)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still blocked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = connect(&node).await;
    let events = admin
        .auth()
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .events;
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(count("login_failed"), 4);
    assert!(count("login_throttled") >= 2);
    assert!(events.iter().all(|e| !e.detail.contains("wrong password")));
}

#[tokio::test]
async fn secrets_never_reach_the_logs_metrics_or_help() {
    const COOKIE: &str = "log-test-cookie-5f0e1d2c3b4a";
    const OTHER_PASSWORD: &str = "second-user-passphrase";
    const WRONG_PASSWORD: &str = "wrong-guess-passphrase";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = auth_node(dir.path())
        .clustered("n0", COOKIE, &[])
        .expect("cluster port")
        .env("RUST_LOG", "debug");
    node.start().expect("node starts");
    let admin = connect(&node).await;
    admin
        .auth()
        .create_user(CreateUserRequest {
            name: "bob".into(),
            password: OTHER_PASSWORD.into(),
            roles: vec!["analyst".into()],
            ..Default::default()
        })
        .await
        .expect("create");
    let _ = admin.login("bob", WRONG_PASSWORD).await;
    let pair = admin.login("bob", OTHER_PASSWORD).await.expect("login");
    let refreshed = admin
        .auth()
        .refresh(RefreshRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner();
    let api = admin
        .auth()
        .create_api_token(CreateApiTokenRequest {
            user: "bob".into(),
            description: String::new(),
            ttl_s: 60,
        })
        .await
        .expect("api token")
        .into_inner()
        .token;
    let _ = token_client(&node, &api)
        .await
        .auth()
        .who_am_i(WhoAmIRequest {})
        .await;
    let _ = token_client(&node, "garbage.token.value")
        .await
        .auth()
        .who_am_i(WhoAmIRequest {})
        .await;
    let (_, metrics) = node.http_get("/metrics").expect("metrics");
    node.terminate(Duration::from_secs(20)).expect("stops");
    let log = node.log();
    assert!(
        log.contains("login") || log.contains("node ready"),
        "the log was captured"
    );
    let key = KEY_LINE.split_whitespace().nth(2).expect("test fixture");
    let secrets = [
        ("bootstrap password", TEST_ADMIN_PASSWORD.to_owned()),
        ("user password", OTHER_PASSWORD.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("jwt key", key.to_owned()),
        ("cookie", COOKIE.to_owned()),
        ("access token", pair.access_token.clone()),
        ("refresh token", pair.refresh_token.clone()),
        (
            "refresh secret",
            pair.refresh_token
                .split('.')
                .nth(1)
                .expect("test fixture")
                .to_owned(),
        ),
        ("rotated refresh", refreshed.refresh_token.clone()),
        ("api token", api.clone()),
        (
            "token signature",
            api.rsplit('.').next().expect("test fixture").to_owned(),
        ),
    ];
    for (what, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{what} appears in the node log"
        );
        assert!(
            !metrics.contains(secret.as_str()),
            "{what} appears in /metrics"
        );
    }
    // `--help` shows variable names, never their values.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_gridmesh"))
        .args(["user", "list", "--help"])
        .env("GRIDMESH_TOKEN", &api)
        .env("GRIDMESH_PASSWORD", OTHER_PASSWORD)
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("GRIDMESH_TOKEN"), "{help}");
    assert!(!help.contains(&api) && !help.contains(OTHER_PASSWORD));
}

#[tokio::test]
async fn tokens_interoperate_with_pyjwt() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import jwt"])
        .status();
    if !python.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("GRIDMESH_REQUIRE_PYJWT").is_none(),
            "PyJWT is required (GRIDMESH_REQUIRE_PYJWT) but python3 cannot import jwt"
        );
        eprintln!("skipped: python3 with PyJWT is not installed (scripts/install-test-deps.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = prepared_node(dir.path()).await;
    let token = login(&admin, "u-analyst").await.access_token;
    let secret = KEY_LINE.split_whitespace().nth(2).expect("test fixture");
    // PyJWT verifies ours with the shared secret, pinning the algorithm, issuer and audience;
    // and signs one that the node accepts.
    let script = r#"
import base64, json, sys, time, jwt
token, secret = sys.argv[1], sys.argv[2]
key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
claims = jwt.decode(token, key, algorithms=["HS256"], audience="gridmesh-api",
                    issuer="gridmesh", options={"require": ["exp", "nbf", "iat", "jti", "sub"]})
assert jwt.get_unverified_header(token)["kid"] == "test-k1"
try:
    jwt.decode(token, key, algorithms=["HS256"], audience="other")
    sys.exit("wrong audience accepted")
except jwt.InvalidAudienceError:
    pass
now = int(time.time())
mine = jwt.encode({"iss": "gridmesh", "aud": "gridmesh-api", "sub": claims["sub"],
                   "exp": now + 60, "nbf": now, "iat": now, "jti": "py-1", "typ": "access",
                   "sid": "py-session", "ims": now * 1000},
                  key, algorithm="HS256", headers={"kid": "test-k1"})
print(json.dumps({"sub": claims["sub"], "token": mine}))
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, &token, secret])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answer["sub"], "u-analyst");
    let theirs = answer["token"].as_str().expect("token");
    let me = token_client(&node, theirs)
        .await
        .auth()
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("a PyJWT token is accepted")
        .into_inner();
    assert_eq!(me.user, "u-analyst");
    // And our own key ring verifies what PyJWT made.
    let ring = KeyRing::parse(KEY_LINE).expect("test fixture");
    let policy = gridmesh_auth::token::TokenPolicy {
        issuer: "gridmesh".into(),
        audience: "gridmesh-api".into(),
        skew_s: 30,
        access_ttl_s: 900,
        max_api_ttl_s: 86_400,
    };
    let claims: Claims = policy.verify(&ring, theirs).expect("verifies");
    assert_eq!(claims.jti, "py-1");
}

/// Starts `node` expecting it to refuse; returns its log.
fn refused(mut node: NodeProcess) -> String {
    node.spawn().expect("spawn");
    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node exits");
    assert!(
        !status.success(),
        "a production node started: {}",
        node.log()
    );
    node.log()
}

#[test]
fn production_mode_refuses_missing_and_published_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-certs.sh");
    let made = std::process::Command::new("bash")
        .arg(script)
        .arg(&certs)
        .arg("n0")
        .status()
        .expect("gen-certs.sh");
    assert!(made.success());
    let tls = |node: NodeProcess| {
        node.env(
            "GRIDMESH_TLS__GRPC_CERT_FILE",
            &certs.join("n0.pem").display().to_string(),
        )
        .env(
            "GRIDMESH_TLS__GRPC_KEY_FILE",
            &certs.join("n0.key").display().to_string(),
        )
    };
    let production =
        |name: &str| node(&dir.path().join(name), &[]).env("GRIDMESH_NODE__MODE", "production");

    let log = refused(production("no-tls"));
    assert!(log.contains("requires TLS on gRPC"), "{log}");
    let log = refused(tls(production("no-keys")));
    assert!(log.contains("needs JWT keys"), "{log}");
    let log = refused(tls(production("published-key")).env("GRIDMESH_JWT_KEYS", KEY_LINE));
    assert!(log.contains("published"), "{log}");
    let own_key = gridmesh_auth::token::generate_key_line("prod-1", false);
    // NodeProcess gives every node the (published) test bootstrap password.
    let log = refused(tls(production("published-password")).env("GRIDMESH_JWT_KEYS", &own_key));
    assert!(
        log.contains("bootstrap password") && log.contains("published"),
        "{log}"
    );
    let mut fresh = tls(production("no-password")).env("GRIDMESH_JWT_KEYS", &own_key);
    fresh
        .env
        .retain(|(k, _)| k != "GRIDMESH_BOOTSTRAP_PASSWORD");
    let log = refused(fresh);
    assert!(log.contains("never generated in production"), "{log}");
    for secret in [
        own_key.split_whitespace().nth(2).expect("key"),
        TEST_ADMIN_PASSWORD,
    ] {
        assert!(!log.contains(secret));
    }

    let mut good = tls(production("good")).env("GRIDMESH_JWT_KEYS", &own_key);
    good.env.retain(|(k, _)| k != "GRIDMESH_BOOTSTRAP_PASSWORD");
    let good = good.env(
        "GRIDMESH_BOOTSTRAP_PASSWORD",
        "an-operator-chosen-passphrase",
    );
    let mut good = good;
    good.start()
        .expect("a production node with every secret starts");
}
