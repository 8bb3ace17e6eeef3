//! How the CLI's commands reach a node: the address they are given plus the credentials and
//! TLS options of the command line (global flags, or their environment variables), parsed once
//! in `cli::main`.
//!
//! Credentials, in order: `--token` / `$GRIDMESH_TOKEN` (an API token or access token); else
//! `--user` / `$GRIDMESH_USER` with the password from `--password-file`,
//! `$GRIDMESH_PASSWORD`, or a prompt when standard input is a terminal. Passwords have no
//! command-line flag (it would be visible to every local user in the process list), and the
//! variables' values never show in `--help`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context as _;
use clap::Args;
use gridmesh_proto::client::{Client, ClientTls, ConnectOptions, Credentials};

static OPTIONS: OnceLock<ConnectOptions> = OnceLock::new();

/// Credentials and TLS flags, global to every subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// Bearer token (API token or access token).
    #[arg(long, global = true, env = "GRIDMESH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// User to log in as (the password comes from --password-file, $GRIDMESH_PASSWORD or a
    /// prompt).
    #[arg(long, global = true, env = "GRIDMESH_USER")]
    pub user: Option<String>,
    /// File holding the password of --user.
    #[arg(long, global = true, env = "GRIDMESH_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the node with; connects over TLS.
    #[arg(long, global = true, env = "GRIDMESH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Name expected in the node's certificate (default: the host of the address).
    #[arg(long, global = true, env = "GRIDMESH_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

/// Reads one line from the terminal without echo (via `stty`), or from piped stdin.
pub fn read_secret_line(prompt: &str) -> anyhow::Result<String> {
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if terminal {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.context("reading from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl ConnectArgs {
    /// The options these flags describe (may prompt for a password).
    pub fn options(&self) -> anyhow::Result<ConnectOptions> {
        let credentials = if let Some(token) = &self.token {
            Credentials::Token(token.trim().to_owned())
        } else if let Some(user) = &self.user {
            Credentials::Password {
                user: user.clone(),
                password: self.password(user)?,
            }
        } else {
            Credentials::None
        };
        let tls = match &self.ca_file {
            Some(path) => Some(ClientTls {
                ca_pem: Some(
                    std::fs::read(path)
                        .with_context(|| format!("reading the CA file {}", path.display()))?,
                ),
                domain: self.tls_domain.clone(),
                identity: None,
            }),
            None => None,
        };
        Ok(ConnectOptions { credentials, tls })
    }

    fn password(&self, user: &str) -> anyhow::Result<String> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?;
            return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let Ok(password) = std::env::var("GRIDMESH_PASSWORD") {
            return Ok(password);
        }
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "no password for --user {user}: use --password-file, $GRIDMESH_PASSWORD or a terminal"
        );
        read_secret_line(&format!("password for {user}: "))
    }
}

/// Sets the options every later [`connect`] uses (once; later calls are ignored).
pub fn set_options(options: ConnectOptions) {
    let _ = OPTIONS.set(options);
}

/// The options in effect.
pub fn options() -> ConnectOptions {
    OPTIONS.get().cloned().unwrap_or_default()
}

/// Connects to `target` with the command line's credentials and TLS options.
pub async fn connect(target: &str) -> anyhow::Result<Client> {
    Client::connect_with(target, options())
        .await
        .with_context(|| format!("connecting to {target}"))
}
