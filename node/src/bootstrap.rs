//! Starting the auth layer of a node, and the bootstrap admin.
//!
//! A node whose store holds no user at all creates `auth.bootstrap_admin` (role admin) with
//! the password from `auth.bootstrap_password` (file or environment). In development mode,
//! when none is configured, it generates one (144 random bits) and shows it once: on the
//! terminal when standard error is one, and always in `<data_dir>/bootstrap-admin-password`
//! (mode 0600, for headless starts); it never goes through the logger. Production mode
//! refuses to start without a configured one.
//!
//! The bootstrap record has version 1, below any real change (versions are times in ms), so
//! a node that starts empty in a running cluster takes the cluster's admin as soon as it syncs,
//! and a changed admin password is never overwritten by a later bootstrap. In a cluster, give
//! every node the same bootstrap password.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use gridmesh_actors::auth::store::AuthStore;
use gridmesh_actors::auth::{Auth, AuthSettings};
use gridmesh_actors::context::{NodeContext, now_ms};
use gridmesh_auth::Secret;
use gridmesh_auth::password::{Cost, PasswordHasher};
use gridmesh_auth::secret::random_password;
use gridmesh_auth::throttle::ThrottleSettings;
use gridmesh_auth::token::TokenPolicy;
use gridmesh_config::{Config, Mode};
use gridmesh_proto::internal::{AuthState, UserRecord};

use crate::secrets;

/// Name of the file a generated bootstrap password is written to, in the data directory.
pub const PASSWORD_FILE: &str = "bootstrap-admin-password";

/// The bootstrap admin this start created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// Its name.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// Whether the password was generated (not configured).
    pub generated: bool,
}

/// Opens the auth store, loads the secrets, builds the auth layer and bootstraps the admin.
pub async fn start_auth(
    ctx: &Arc<NodeContext>,
    cookie: Option<&str>,
) -> anyhow::Result<(Arc<Auth>, Option<Bootstrapped>)> {
    let store_ctx = ctx.clone();
    let store = tokio::task::spawn_blocking(move || AuthStore::open(&store_ctx.store))
        .await?
        .context("opening the auth keyspace")?;
    let config = &ctx.config;
    let secrets = secrets::load(config, |name| std::env::var(name).ok(), &store, cookie)?;
    let a = &config.auth;
    let cost = Cost {
        memory_kib: a.argon2_memory_kib,
        iterations: a.argon2_iterations,
        parallelism: a.argon2_parallelism,
    };
    let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(cost)).await??;
    let policy = TokenPolicy {
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        skew_s: a.clock_skew.as_secs(),
        access_ttl_s: a.access_ttl.as_secs(),
        max_api_ttl_s: a.api_token_max_ttl.as_secs(),
    };
    let settings = AuthSettings {
        refresh_ttl: a.refresh_ttl,
        idle_timeout: a.session_idle_timeout,
        sync_interval: a.sync_interval,
        throttle: ThrottleSettings {
            free_failures: a.login_free_failures,
            base: a.login_backoff_base,
            max: a.login_backoff_max,
            ..ThrottleSettings::default()
        },
    };
    tracing::info!(kid = secrets.keys.signing_kid(), "JWT signing key loaded");
    let auth = Arc::new(Auth::new(
        store,
        secrets.keys,
        policy,
        hasher,
        settings,
        &config.node.name,
    ));
    let bootstrapped = bootstrap_admin(&auth, config, secrets.bootstrap_password).await?;
    Ok((auth, bootstrapped))
}

async fn bootstrap_admin(
    auth: &Arc<Auth>,
    config: &Config,
    configured: Option<Secret>,
) -> anyhow::Result<Option<Bootstrapped>> {
    if !auth.store.read().users.is_empty() {
        return Ok(None);
    }
    let source = config.auth.bootstrap_password.describe();
    let (password, generated) = match configured {
        Some(password) => (password, false),
        None if config.node.mode == Mode::Production => bail!(
            "node.mode = \"production\" and no user exists yet: set the bootstrap admin's \
             password in {source} (it is never generated in production)"
        ),
        None => (random_password(), true),
    };
    let hasher_auth = auth.clone();
    let plain = password.clone();
    let hash =
        tokio::task::spawn_blocking(move || hasher_auth.hasher().hash(plain.expose())).await??;
    let name = config.auth.bootstrap_admin.clone();
    let record = UserRecord {
        name: name.clone(),
        password_hash: hash,
        roles: vec!["admin".to_owned()],
        created_ms: now_ms(),
        updated_ms: now_ms(),
        version: 1,
        updated_by: config.node.name.clone(),
        ..UserRecord::default()
    };
    auth.merge_local(AuthState {
        users: vec![record],
        ..AuthState::default()
    })
    .map_err(|s| anyhow::anyhow!("storing the bootstrap admin: {}", s.message()))?;
    auth.audit("", "user_created", &name, true, "bootstrap admin", "");
    if generated {
        show_generated(config, &name, &password)?;
    } else {
        tracing::info!(user = %name, from = %source, "bootstrap admin created");
    }
    Ok(Some(Bootstrapped {
        user: name,
        password,
        generated,
    }))
}

/// Writes a generated password to a 0600 file in the data directory, and to the terminal.
fn show_generated(config: &Config, name: &str, password: &Secret) -> anyhow::Result<()> {
    let path = config.node.data_dir.join(PASSWORD_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{}", password.expose())?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "\n  Created the bootstrap admin {name:?} with the generated password\n\n      {}\n\n  \
             It is shown once (and kept in {}, readable by you only). Log in with\n  \
             `gridmesh login --user {name}` and change it with `gridmesh user passwd`.\n",
            password.expose(),
            path.display()
        );
    }
    tracing::info!(
        user = %name,
        file = %path.display(),
        "bootstrap admin created with a generated password (in that file; not logged)"
    );
    Ok(())
}
