use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_are_valid() {
    let config = Config::load(None, env(&[])).expect("defaults load");
    assert_eq!(config, Config::default());
    config.validate().expect("defaults validate");
}

#[test]
fn file_values_and_env_overrides_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        concat!(
            "version = 1\n[node]\nname = \"n7\"\n",
            "[ingest]\nfuture_tolerance = \"90s\"\nauto_register = false\n",
        ),
    )
    .expect("write config");
    let config = Config::load(
        Some(&path),
        env(&[
            ("GRIDMESH_INGEST__AUTO_REGISTER", "true"),
            ("UNRELATED", "x"),
            ("GRIDMESH_NODE__NAME", "n8"),
        ]),
    )
    .expect("load");
    assert_eq!(config.node.name, "n8");
    assert!(config.ingest.auto_register);
    assert_eq!(config.ingest.future_tolerance, Duration::from_secs(90));
}

#[test]
fn unknown_keys_are_rejected_in_file_and_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "[ingest]\nmax_batch_reading = 5\n").expect("write config");
    let err = Config::load(Some(&path), env(&[])).expect_err("typo must be rejected");
    assert!(err.to_string().contains("max_batch_reading"), "{err}");

    let err =
        Config::load(None, env(&[("GRIDMESH_STORAGE__SYNCC", "none")])).expect_err("env typo");
    assert!(err.to_string().contains("syncc"), "{err}");
}

#[test]
fn impossible_values_explain_themselves() {
    let mut config = Config::default();
    config.ingest.max_batch_readings = 0;
    let err = config.validate().expect_err("zero batch");
    assert!(
        err.to_string().contains("ingest.max_batch_readings"),
        "{err}"
    );

    let mut config = Config::default();
    config.node.http_addr = config.node.grpc_addr;
    assert!(
        config
            .validate()
            .expect_err("same port")
            .to_string()
            .contains("different ports")
    );

    let mut config = Config::default();
    config.actors.max_active_meters = 2;
    assert!(config.validate().is_err());

    let config = Config::load(None, env(&[("GRIDMESH_INGEST__ACK_TIMEOUT", "soon")]));
    assert!(
        config
            .expect_err("bad duration")
            .to_string()
            .contains("not a duration")
    );

    let config = Config {
        version: 2,
        ..Config::default()
    };
    assert!(
        config
            .validate()
            .expect_err("version")
            .to_string()
            .contains("version = 2")
    );
}

#[test]
fn example_file_is_the_documented_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gridmesh.example.toml");
    let config = Config::load(Some(&path), env(&[])).expect("example parses");
    assert_eq!(
        config,
        Config::default(),
        "gridmesh.example.toml drifted from the defaults"
    );
}

#[test]
fn meters_per_shard_rounds_up() {
    let actors = ActorsConfig {
        shards: 64,
        max_active_meters: 100,
        ..ActorsConfig::default()
    };
    assert_eq!(actors.meters_per_shard(), 2);
}

fn cluster_config() -> Config {
    let mut config = Config::default();
    config.cluster.enabled = true;
    config.cluster.seeds = vec!["127.0.0.1:7201".to_owned()];
    config
}

#[test]
fn cluster_settings_are_checked_together() {
    cluster_config()
        .validate()
        .expect("defaults with a seed validate");

    let mut config = cluster_config();
    config.cluster.seeds.push("no-port".to_owned());
    let err = config.validate().expect_err("seed without port");
    assert!(err.to_string().contains("no-port"), "{err}");

    let mut config = cluster_config();
    config.cluster.down_after = config.cluster.suspect_after;
    let err = config.validate().expect_err("down before suspect");
    assert!(err.to_string().contains("cluster.down_after"), "{err}");

    let mut config = cluster_config();
    config.cluster.listen_addr = config.node.grpc_addr;
    let err = config.validate().expect_err("same port twice");
    assert!(err.to_string().contains("node.grpc_addr"), "{err}");

    let mut config = cluster_config();
    config.cluster.max_frame_bytes = 1024;
    let err = config.validate().expect_err("frames smaller than a batch");
    assert!(err.to_string().contains("max_frame_bytes"), "{err}");

    let mut config = cluster_config();
    config.replication.write_quorum = 3;
    let err = config.validate().expect_err("W above R");
    assert!(
        err.to_string().contains("replication.write_quorum"),
        "{err}"
    );

    let mut config = cluster_config();
    config.replication.factor = 0;
    let err = config.validate().expect_err("no copies");
    assert!(err.to_string().contains("replication.factor"), "{err}");

    // Not checked while clustering is off.
    let mut config = Config::default();
    config.cluster.seeds = vec!["no-port".to_owned()];
    config.validate().expect("cluster disabled");
}

#[test]
fn the_cookie_comes_from_a_file_or_the_environment_and_never_appears_in_errors() {
    let config = cluster_config();
    let secret = "0123456789abcdef0123";
    let env = |name: &str| (name == "GRIDMESH_COOKIE").then(|| format!("{secret}\n"));
    assert_eq!(config.cluster.read_cookie(env).expect("from env"), secret);

    let err = config.cluster.read_cookie(|_| None).expect_err("no cookie");
    assert!(err.to_string().contains("GRIDMESH_COOKIE"), "{err}");
    let err = config
        .cluster
        .read_cookie(|_| Some("short".to_owned()))
        .expect_err("short cookie");
    assert!(
        !err.to_string().contains("short"),
        "the value must not leak: {err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = cluster_config();
    config.cluster.cookie_file = dir.path().join("cookie");
    std::fs::write(&config.cluster.cookie_file, secret).expect("write cookie");
    assert_eq!(
        config.cluster.read_cookie(|_| None).expect("from file"),
        secret
    );
}

#[test]
fn seeds_can_be_given_in_the_environment() {
    let config = Config::load(
        None,
        env(&[
            ("GRIDMESH_CLUSTER__ENABLED", "true"),
            (
                "GRIDMESH_CLUSTER__SEEDS",
                "[\"127.0.0.1:7201\", \"127.0.0.1:7202\"]",
            ),
        ]),
    )
    .expect("load");
    assert!(config.cluster.enabled);
    assert_eq!(config.cluster.seeds.len(), 2);
}
