//! The node's secrets: JWT keys, the bootstrap admin password, and the checks production mode
//! makes on them and on the cluster cookie.
//!
//! Every secret comes from a file or an environment variable named in the configuration
//! (`gridmesh_config::SecretSource`); values are wrapped in [`Secret`] at once, so they never
//! reach a log line, a metric or an error message (errors name where the node looked).
//!
//! Development mode (the default) keeps a fresh node working with nothing configured: without
//! JWT keys a cluster member derives its key from the cluster cookie (every member has it), a
//! single node from a random seed kept in its data directory; without a bootstrap password one
//! is generated and shown once. Production mode refuses all three, and refuses secrets that
//! appear in GridMesh's own docs and tests.

use anyhow::{Context as _, bail};
use gridmesh_actors::auth::store::AuthStore;
use gridmesh_auth::Secret;
use gridmesh_auth::password::check_policy;
use gridmesh_auth::secret::random_secret;
use gridmesh_auth::token::KeyRing;
use gridmesh_config::{Config, Mode};

/// Secrets that appear in this repository (docs, tests, examples). Production refuses them.
const KNOWN_SECRETS: &[&str] = &[
    "test-cookie-0123456789abcdef",
    "chaos-cookie-0123456789abcdef",
    "correct-horse-battery-staple",
    "gridmesh-test-bootstrap-secret",
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",
];

/// The loaded secrets.
#[derive(Debug)]
pub struct NodeSecrets {
    /// JWT keys.
    pub keys: KeyRing,
    /// The configured bootstrap password, if any.
    pub bootstrap_password: Option<Secret>,
}

fn is_known(value: &str) -> bool {
    KNOWN_SECRETS.iter().any(|k| value.contains(k))
}

/// Loads the secrets for `config` (environment looked up with `env`).
pub fn load(
    config: &Config,
    env: impl Fn(&str) -> Option<String> + Copy,
    store: &AuthStore,
    cookie: Option<&str>,
) -> anyhow::Result<NodeSecrets> {
    let production = config.node.mode == Mode::Production;
    if production && cookie.is_some_and(is_known) {
        bail!(
            "node.mode = \"production\" refuses the cluster cookie from {}: it is an example \
             value published in GridMesh's repository; generate one (`openssl rand -hex 16`)",
            config.cluster.cookie_source()
        );
    }
    let keys = jwt_keys(config, env, store, cookie)?;
    let source = &config.auth.bootstrap_password;
    let bootstrap_password = source
        .read(env)
        .with_context(|| format!("reading the bootstrap password from {}", source.describe()))?
        .map(Secret::new);
    if let Some(password) = &bootstrap_password {
        if production && is_known(password.expose()) {
            bail!(
                "node.mode = \"production\" refuses the bootstrap password from {}: it is \
                 published in GridMesh's repository",
                source.describe()
            );
        }
        check_policy(&config.auth.bootstrap_admin, password.expose())
            .with_context(|| format!("the bootstrap password from {}", source.describe()))?;
    }
    Ok(NodeSecrets {
        keys,
        bootstrap_password,
    })
}

fn jwt_keys(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
    store: &AuthStore,
    cookie: Option<&str>,
) -> anyhow::Result<KeyRing> {
    let source = &config.auth.jwt_keys;
    let text = source
        .read(env)
        .with_context(|| format!("reading JWT keys from {}", source.describe()))?;
    if let Some(text) = text {
        if config.node.mode == Mode::Production && is_known(&text) {
            bail!(
                "node.mode = \"production\" refuses the JWT key from {}: it is published in \
                 GridMesh's repository; make one with `gridmesh auth keygen`",
                source.describe()
            );
        }
        return KeyRing::parse(&text)
            .with_context(|| format!("JWT keys from {}", source.describe()));
    }
    if config.node.mode == Mode::Production {
        bail!(
            "node.mode = \"production\" needs JWT keys: none in {} (make a key file with \
             `gridmesh auth keygen > jwt.keys` and set auth.jwt_keys.file)",
            source.describe()
        );
    }
    if let Some(cookie) = cookie {
        tracing::warn!(
            "development mode: no JWT keys configured; deriving the key from the cluster cookie \
             (set auth.jwt_keys for production)"
        );
        return Ok(KeyRing::derived_hs256("dev-cookie", cookie.as_bytes()));
    }
    let seed = match store.local_value("dev_jwt_seed")? {
        Some(seed) => seed,
        None => {
            let seed = random_secret().into_bytes();
            store.set_local_value("dev_jwt_seed", &seed)?;
            seed
        }
    };
    tracing::info!(
        "development mode: no JWT keys configured; using a random key kept in the data \
         directory (set auth.jwt_keys for production or several nodes)"
    );
    Ok(KeyRing::derived_hs256("dev-local", &seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_are_recognised_inside_longer_values() {
        assert!(is_known(
            "k1 HS256 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"
        ));
        assert!(!is_known(&random_secret()));
    }
}
