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
