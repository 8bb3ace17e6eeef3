//! The session actors and their supervision, on a real store: refresh rotation, reuse
//! detection, idle expiry, and the restart policy (killed session actors come back on demand;
//! too many failures restart the session supervisor). Every wait polls with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_actors::auth::store::AuthStore;
use gridmesh_actors::auth::{Auth, AuthSettings};
use gridmesh_actors::context::NodeContext;
use gridmesh_actors::node::NodeSupervisor;
use gridmesh_actors::session::SessionSupervisorMsg;
use gridmesh_actors::storage::Store;
use gridmesh_actors::writer::{Writer, WriterTask};
use gridmesh_auth::password::{Cost, PasswordHasher};
use gridmesh_auth::throttle::ThrottleSettings;
use gridmesh_auth::token::{KeyRing, TokenPolicy};
use gridmesh_config::Config;
use gridmesh_proto::internal::{AuthState, RevocationKind, UserRecord};
use gridmesh_proto::v1::TokenPair;
use ractor::Actor;
use tonic::Code;

struct Node {
    ctx: Arc<NodeContext>,
    auth: Arc<Auth>,
    root: ractor::ActorRef<gridmesh_actors::node::NodeMsg>,
    _writer: WriterTask,
    _dir: tempfile::TempDir,
}

const PASSWORD: &str = "sessions-test-passphrase";

async fn start(idle: Duration) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::default();
    let store = Arc::new(Store::open(dir.path(), config.actors.shards, 8).expect("store"));
    let (writer, task) = Writer::spawn(store.clone(), &config.storage).expect("writer");
    let ctx = NodeContext::new(store, writer, config);
    let hasher = PasswordHasher::new(Cost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    })
    .expect("hasher");
    let policy = TokenPolicy {
        issuer: "gridmesh".into(),
        audience: "gridmesh-api".into(),
        skew_s: 30,
        access_ttl_s: 900,
        max_api_ttl_s: 86_400,
    };
    let settings = AuthSettings {
        refresh_ttl: Duration::from_secs(3600),
        idle_timeout: idle,
        sync_interval: Duration::from_secs(1),
        throttle: ThrottleSettings::default(),
    };
    let auth_store = AuthStore::open(&ctx.store).expect("auth store");
    let keys = KeyRing::derived_hs256("test", b"seed");
    let auth = Arc::new(Auth::new(
        auth_store, keys, policy, hasher, settings, "test",
    ));
    let user = UserRecord {
        name: "alice".into(),
        password_hash: auth.hasher().hash(PASSWORD).expect("hash"),
        roles: vec!["analyst".into()],
        version: 1,
        ..UserRecord::default()
    };
    auth.merge_local(AuthState {
        users: vec![user],
        ..AuthState::default()
    })
    .expect("user stored");
    ctx.set_auth(auth.clone());
    let (root, _) = Actor::spawn(None, NodeSupervisor, ctx.clone())
        .await
        .expect("root starts");
    poll("the session supervisor", async || auth.session_supervisor()).await;
    Node {
        ctx,
        auth,
        root,
        _writer: task,
        _dir: dir,
    }
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn login(node: &Node) -> TokenPair {
    node.auth
        .login(&node.ctx, "alice", PASSWORD, "127.0.0.1:1")
        .await
        .expect("login")
}

async fn refresh(node: &Node, token: &str) -> Result<TokenPair, tonic::Status> {
    node.auth.refresh(&node.ctx, token, "127.0.0.1:1").await
}

async fn session_actor(
    node: &Node,
    sid: &str,
) -> Option<ractor::ActorRef<gridmesh_actors::session::SessionMsg>> {
    let supervisor = node.auth.session_supervisor()?;
    ractor::call_t!(
        supervisor,
        |r| SessionSupervisorMsg::Lookup(sid.to_owned(), r),
        2000
    )
    .ok()?
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let node = start(Duration::from_secs(600)).await;
    let first = login(&node).await;
    let second = refresh(&node, &first.refresh_token).await.expect("refresh");
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(node.auth.authenticate(&second.access_token).is_ok());

    // The first refresh token was used up; presenting it again means a copy exists.
    let reuse = refresh(&node, &first.refresh_token)
        .await
        .expect_err("reuse refused");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(
        node.auth
            .store
            .read()
            .is_revoked(RevocationKind::Session, &first.session_id)
    );
    assert!(node.auth.authenticate(&second.access_token).is_err());
    let after = refresh(&node, &second.refresh_token)
        .await
        .expect_err("session over");
    assert_eq!(after.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_killed_session_actor_comes_back_on_demand_with_its_state() {
    let node = start(Duration::from_secs(600)).await;
    let pair = refresh(&node, &login(&node).await.refresh_token)
        .await
        .expect("refresh");
    let actor = session_actor(&node, &pair.session_id)
        .await
        .expect("active");
    actor.kill();
    poll("the killed actor to be gone", async || {
        session_actor(&node, &pair.session_id)
            .await
            .is_none_or(|a| a.get_id() != actor.get_id())
            .then_some(())
    })
    .await;
    // Re-activated from the stored record: the current refresh token still works once.
    let next = refresh(&node, &pair.refresh_token)
        .await
        .expect("refresh after kill");
    let again = session_actor(&node, &next.session_id)
        .await
        .expect("active again");
    assert_ne!(again.get_id(), actor.get_id());
}

#[tokio::test]
async fn too_many_session_failures_restart_the_session_supervisor() {
    let node = start(Duration::from_secs(600)).await;
    let mut pair = login(&node).await;
    let first_supervisor = node.auth.session_supervisor().expect("supervisor");
    let budget = node.ctx.config.actors.max_restarts;
    for round in 0..=budget {
        pair = refresh(&node, &pair.refresh_token).await.expect("refresh");
        let actor = session_actor(&node, &pair.session_id).await;
        let Some(actor) = actor else {
            panic!("no session actor in round {round}");
        };
        actor.kill();
        let sid = pair.session_id.clone();
        let node_ref = &node;
        poll("the killed session actor to be gone", async || {
            let current = session_actor(node_ref, &sid).await;
            let restarted = node_ref
                .auth
                .session_supervisor()
                .is_some_and(|s| s.get_id() != first_supervisor.get_id());
            (restarted || current.is_none_or(|a| a.get_id() != actor.get_id())).then_some(())
        })
        .await;
    }
    // One failure more than the budget: the session supervisor escalated and the node
    // supervisor started a new one; sessions keep working through it.
    let replaced = poll("a new session supervisor", async || {
        node.auth
            .session_supervisor()
            .filter(|s| s.get_id() != first_supervisor.get_id())
    })
    .await;
    assert_ne!(replaced.get_id(), first_supervisor.get_id());
    let restarts = ractor::call_t!(node.root, gridmesh_actors::node::NodeMsg::Restarts, 2000)
        .expect("restarts");
    assert!(restarts >= 1, "the node supervisor restarted a child");
    refresh(&node, &pair.refresh_token)
        .await
        .expect("refresh through the new supervisor");
}

#[tokio::test]
async fn an_idle_session_ends_everywhere() {
    let node = start(Duration::from_millis(300)).await;
    let pair = login(&node).await;
    // Activity activates the session's actor; then the session is left alone. (No refresh
    // here: on a loaded machine the short idle timeout could pass before it.)
    node.auth.touch(&node.ctx, &pair.session_id);
    poll("the idle session to be revoked", async || {
        node.auth
            .store
            .read()
            .is_revoked(RevocationKind::Session, &pair.session_id)
            .then_some(())
    })
    .await;
    assert!(node.auth.authenticate(&pair.access_token).is_err());
    let refused = refresh(&node, &pair.refresh_token).await.expect_err("idle");
    assert_eq!(refused.code(), Code::Unauthenticated);
}
