//! Command-line interface.
//!
//! Exit codes: 0 success; 1 the node or command failed at run time; 2 bad usage or an invalid
//! configuration (the message says what to change).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gridmesh_config::{Config, SyncMode};

use crate::{admin, alerts_cli, demo, server, topology};

/// GridMesh: smart-grid analytics on a cluster of identical actor nodes.
#[derive(Debug, Parser)]
#[command(name = "gridmesh", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node until SIGTERM/SIGINT.
    Serve(ServeArgs),
    /// Start a node with a built-in simulator and watch it work (the first thing to run).
    Demo(demo::DemoArgs),
    /// Drive any running node with the simulator; prints throughput and ack latency.
    Simulate(demo::SimulateArgs),
    /// Load or generate grid topology (feeders and meters).
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Ask a node for readings, meter status or feeder load.
    #[command(subcommand)]
    Query(topology::QueryCommand),
    /// Inspect a cluster: members, shard map, per-node statistics.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Alerts: list, watch, acknowledge, resolve; undelivered notifications.
    #[command(subcommand)]
    Alerts(alerts_cli::AlertsCommand),
    /// Check a configuration, or print the annotated defaults.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Log in with --user and print an access token (for `--token` / $GRIDMESH_TOKEN).
    Login {
        /// Node address (gRPC).
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Users, roles, sessions, API tokens and the audit log.
    #[command(subcommand)]
    User(crate::users::UserCommand),
    /// JWT keys: generate one, print public keys.
    #[command(subcommand)]
    Auth(crate::users::AuthCommand),
}

/// Node options: a config file plus the most used overrides.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see `gridmesh config defaults`).
    #[arg(long, short = 'c', env = "GRIDMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (node.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (node.grpc_addr).
    #[arg(long)]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address for /metrics, /healthz, /readyz (node.http_addr).
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// Node name (node.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Register unknown meters on their first reading (ingest.auto_register).
    #[arg(long)]
    pub auto_register: bool,
    /// When acks wait for the disk (storage.sync).
    #[arg(long, value_enum)]
    pub sync: Option<SyncArg>,
    /// Join a cluster, listening for peers here (sets cluster.enabled and
    /// cluster.listen_addr). The cookie comes from cluster.cookie_file or $GRIDMESH_COOKIE.
    #[arg(long)]
    pub cluster_addr: Option<std::net::SocketAddr>,
    /// Cluster address of another node (repeatable; adds to cluster.seeds).
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
}

/// `storage.sync` on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncArg {
    /// Group commit, fsync before ack.
    Group,
    /// One fsync per write request.
    PerBatch,
    /// No fsync (process-crash safe only).
    None,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate a configuration (file + GRIDMESH_* environment) and print it.
    Check {
        /// TOML config file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// Print the annotated default configuration.
    Defaults,
}

impl ServeArgs {
    /// Loads file + environment, applies flags, validates.
    pub fn load(&self) -> Result<Config, gridmesh_config::ConfigError> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = &self.data_dir {
            config.node.data_dir = dir.clone();
        }
        if let Some(addr) = self.grpc_addr {
            config.node.grpc_addr = addr;
        }
        if let Some(addr) = self.http_addr {
            config.node.http_addr = addr;
        }
        if let Some(name) = &self.name {
            config.node.name = name.clone();
        }
        if self.auto_register {
            config.ingest.auto_register = true;
        }
        if let Some(addr) = self.cluster_addr {
            config.cluster.enabled = true;
            config.cluster.listen_addr = addr;
        }
        config.cluster.seeds.extend(self.seeds.iter().cloned());
        if let Some(sync) = self.sync {
            config.storage.sync = match sync {
                SyncArg::Group => SyncMode::Group,
                SyncArg::PerBatch => SyncMode::PerBatch,
                SyncArg::None => SyncMode::None,
            };
        }
        config.validate()?;
        Ok(config)
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gridmesh")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    // The demo logs in as its own node's bootstrap admin unless credentials were given.
    let given = cli.connect.token.is_some() || cli.connect.user.is_some();
    let needs_options = !matches!(
        cli.command,
        Command::Serve(_) | Command::Config(_) | Command::Auth(_)
    ) && (given || !matches!(cli.command, Command::Demo(_)));
    if needs_options {
        match cli.connect.options() {
            Ok(options) => crate::connect::set_options(options),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match cli.command {
        Command::Serve(args) => return serve(args).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Simulate(args) => demo::simulate(args).await,
        Command::Topology(command) => topology::run_topology(command).await,
        Command::Query(command) => topology::run_query(command).await,
        Command::Admin(command) => admin::run(command).await,
        Command::Login { target } => crate::users::login(&target).await,
        Command::User(command) => crate::users::run(command).await,
        Command::Auth(command) => crate::users::run_auth(command),
        Command::Alerts(command) => alerts_cli::run(command).await,
        Command::Config(ConfigCommand::Check { config }) => return check_config(config),
        Command::Config(ConfigCommand::Defaults) => {
            print!(
                "{}",
                include_str!("../../cluster-config/gridmesh.example.toml")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let loaded =
        Config::load(path.as_deref(), std::env::vars()).and_then(|c| c.validate().map(|()| c));
    match loaded.map(|c| toml::to_string_pretty(&c)) {
        Ok(Ok(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(&config.log);
    let mut node = match server::RunningNode::start(config).await {
        Ok(node) => node,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        () = server::shutdown_signal() => {}
        reason = node.failed() => {
            tracing::error!(reason, "node failed");
            return ExitCode::FAILURE;
        }
    }
    match node.shutdown().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("shutdown failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
