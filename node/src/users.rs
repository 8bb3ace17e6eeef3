//! `gridmesh login`, `gridmesh user …` and `gridmesh auth …`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use gridmesh_auth::token::{KeyRing, generate_key_line};
use gridmesh_proto::v1::{
    ChangePasswordRequest, CreateApiTokenRequest, CreateUserRequest, ListAuditEventsRequest,
    ListSessionsRequest, ListUsersRequest, RevokeApiTokenRequest, RevokeSessionsRequest,
    UpdateUserRequest, User, WhoAmIRequest,
};

use crate::connect::{connect, read_secret_line};

/// `gridmesh user …`: accounts, sessions, API tokens, the audit log (admin unless noted).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Who the credentials belong to (any user).
    Whoami {
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// List users.
    List {
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Create a user; the password is prompted for (twice) or read from stdin.
    Add {
        /// User name.
        name: String,
        /// Role (repeatable): admin, operator, analyst, viewer, ingest.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Feeder the user is limited to (repeatable; none = every feeder).
        #[arg(long = "feeder")]
        feeders: Vec<String>,
        /// A service account: no password, logs in with API tokens (`gridmesh user token`).
        #[arg(long)]
        service_account: bool,
        /// Read the new password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Change a user's roles, feeder scope, state or password.
    Set {
        /// User name.
        name: String,
        /// Replace the roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Replace the feeder scope (repeatable).
        #[arg(long = "feeder")]
        feeders: Vec<String>,
        /// Remove the feeder scope (every feeder).
        #[arg(long, conflicts_with = "feeders")]
        all_feeders: bool,
        /// Disable the user (its tokens stop working at once).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable the user again.
        #[arg(long)]
        enable: bool,
        /// Set a new password (prompted, or from stdin with --password-stdin); ends the
        /// user's sessions.
        #[arg(long)]
        reset_password: bool,
        /// Read the new password from stdin.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Change your own password (any user); ends your sessions.
    Passwd {
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// List login sessions.
    Sessions {
        /// Only this user's.
        user: Option<String>,
        /// Include revoked ones.
        #[arg(long)]
        all: bool,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Revoke one session, or every session and token of a user, on every node.
    Revoke {
        /// The session id.
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        session: Option<String>,
        /// The user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Create an API token for a user (shown once).
    Token {
        /// User (usually a service account).
        name: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime, e.g. 30days (default: auth.api_token_max_ttl).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Revoke an API token by id, on every node.
    RevokeToken {
        /// User.
        name: String,
        /// Token id (from `gridmesh user list`).
        token_id: String,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
    /// Security events (logins, failures, changes, revocations) of every reachable node.
    Audit {
        /// Only events about this user.
        #[arg(long)]
        user: Option<String>,
        /// Only the last this long, e.g. 1h.
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// Most events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, short = 't', default_value = "127.0.0.1:7100")]
        target: String,
    },
}

/// `gridmesh auth …`: key material, offline.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print a new JWT key line (`<kid> <alg> <key>`) for auth.jwt_keys.
    Keygen {
        /// Key id (default: today's date).
        #[arg(long)]
        kid: Option<String>,
        /// An Ed25519 key (EdDSA) instead of an HS256 secret: others can verify tokens with
        /// the public key alone.
        #[arg(long)]
        eddsa: bool,
    },
    /// Print the public keys (PEM) of the EdDSA keys in a key file.
    PublicKey {
        /// The key file.
        keys_file: PathBuf,
    },
}

fn new_password(stdin: bool) -> anyhow::Result<String> {
    if stdin {
        return read_secret_line("");
    }
    let first = read_secret_line("new password: ")?;
    let second = read_secret_line("again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

fn print_user(user: &User) {
    let scope = if user.feeders.is_empty() {
        "all feeders".to_owned()
    } else {
        user.feeders.join(",")
    };
    let state = if user.disabled { "disabled" } else { "enabled" };
    let kind = if user.service_account {
        " service-account"
    } else {
        ""
    };
    println!(
        "{:<24} {:<28} {:<24} {state}{kind}",
        user.name,
        user.roles.join(","),
        scope
    );
    for token in &user.api_tokens {
        let revoked = if token.revoked { " (revoked)" } else { "" };
        println!(
            "    token {} expires {}{revoked}  {}",
            token.token_id,
            crate::demo::format_ts(token.expires_ms),
            token.description
        );
    }
}

/// `gridmesh login`: checks the credentials and prints an access token for scripts.
pub async fn login(target: &str) -> anyhow::Result<()> {
    let options = crate::connect::options();
    let gridmesh_proto::client::Credentials::Password { user, password } = options.credentials
    else {
        bail!("give --user (the password is prompted for, or comes from --password-file)");
    };
    let client = gridmesh_proto::client::Client::connect_with(
        target,
        gridmesh_proto::client::ConnectOptions {
            credentials: Default::default(),
            tls: options.tls,
        },
    )
    .await?;
    let pair = client.login(&user, &password).await?;
    eprintln!(
        "logged in as {user}; session {}; the access token below expires at {}",
        pair.session_id,
        crate::demo::format_ts(pair.access_expires_ms)
    );
    println!("{}", pair.access_token);
    Ok(())
}

/// Runs a `gridmesh user` command.
pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Whoami { target } => {
            let me = connect(&target)
                .await?
                .auth()
                .who_am_i(WhoAmIRequest {})
                .await?;
            let me = me.into_inner();
            println!("user      {}", me.user);
            println!("roles     {}", me.roles.join(","));
            let scope = if me.feeders.is_empty() {
                "all".to_owned()
            } else {
                me.feeders.join(",")
            };
            println!("feeders   {scope}");
            println!(
                "token     {} (expires {})",
                me.token_kind,
                crate::demo::format_ts(me.expires_ms)
            );
        }
        UserCommand::List { target } => {
            let users = connect(&target)
                .await?
                .auth()
                .list_users(ListUsersRequest {})
                .await?;
            for user in &users.into_inner().users {
                print_user(user);
            }
        }
        UserCommand::Add {
            name,
            roles,
            feeders,
            service_account,
            password_stdin,
            target,
        } => {
            let client = connect(&target).await?;
            let password = if service_account {
                String::new()
            } else {
                new_password(password_stdin)?
            };
            let request = CreateUserRequest {
                name,
                password,
                roles,
                feeders,
                service_account,
            };
            let user = client.auth().create_user(request).await?.into_inner();
            print_user(&user.user.context("the node returned no user")?);
        }
        UserCommand::Set {
            name,
            roles,
            feeders,
            all_feeders,
            disable,
            enable,
            reset_password,
            password_stdin,
            target,
        } => {
            let client = connect(&target).await?;
            let new_password = if reset_password {
                new_password(password_stdin)?
            } else {
                String::new()
            };
            let request = UpdateUserRequest {
                name,
                disabled: if disable {
                    Some(true)
                } else if enable {
                    Some(false)
                } else {
                    None
                },
                set_roles: !roles.is_empty(),
                roles,
                set_feeders: all_feeders || !feeders.is_empty(),
                feeders,
                new_password,
            };
            let user = client.auth().update_user(request).await?.into_inner();
            print_user(&user.user.context("the node returned no user")?);
        }
        UserCommand::Passwd { target } => {
            let client = connect(&target).await?;
            let current_password = read_secret_line("current password: ")?;
            let new_password = new_password(false)?;
            let request = ChangePasswordRequest {
                current_password,
                new_password,
            };
            client.auth().change_password(request).await?;
            eprintln!("password changed; every session of yours has ended: log in again");
        }
        UserCommand::Sessions { user, all, target } => {
            let client = connect(&target).await?;
            let request = ListSessionsRequest {
                user: user.unwrap_or_default(),
                include_revoked: all,
            };
            for s in client
                .auth()
                .list_sessions(request)
                .await?
                .into_inner()
                .sessions
            {
                println!(
                    "{}  {:<20} from {:<22} active {}  owner {}{}",
                    s.session_id,
                    s.user,
                    s.client_addr,
                    crate::demo::format_ts(s.last_activity_ms),
                    if s.owner_node.is_empty() {
                        "-"
                    } else {
                        &s.owner_node
                    },
                    if s.revoked { "  (revoked)" } else { "" }
                );
            }
        }
        UserCommand::Revoke {
            session,
            user,
            target,
        } => {
            let client = connect(&target).await?;
            let request = RevokeSessionsRequest {
                session_id: session.unwrap_or_default(),
                user: user.unwrap_or_default(),
            };
            let done = client.auth().revoke_sessions(request).await?.into_inner();
            println!("revoked; confirmed by {}", done.nodes_confirmed.join(", "));
        }
        UserCommand::Token {
            name,
            description,
            ttl,
            target,
        } => {
            let client = connect(&target).await?;
            let ttl_s = ttl.map_or(0, |d| d.as_secs());
            let request = CreateApiTokenRequest {
                user: name,
                description,
                ttl_s,
            };
            let created = client.auth().create_api_token(request).await?.into_inner();
            if let Some(info) = created.info {
                eprintln!(
                    "token {} expires {} (shown once; store it as a secret)",
                    info.token_id,
                    crate::demo::format_ts(info.expires_ms)
                );
            }
            println!("{}", created.token);
        }
        UserCommand::RevokeToken {
            name,
            token_id,
            target,
        } => {
            let client = connect(&target).await?;
            let request = RevokeApiTokenRequest {
                user: name,
                token_id,
            };
            let done = client.auth().revoke_api_token(request).await?.into_inner();
            println!("revoked; confirmed by {}", done.nodes_confirmed.join(", "));
        }
        UserCommand::Audit {
            user,
            since,
            limit,
            target,
        } => {
            let client = connect(&target).await?;
            let since_ms = since.map_or(0, |d| {
                gridmesh_actors::context::now_ms() - d.as_millis() as i64
            });
            let request = ListAuditEventsRequest {
                since_ms,
                limit,
                user: user.unwrap_or_default(),
                local_only: false,
            };
            let events = client.auth().list_audit_events(request).await?.into_inner();
            for e in &events.events {
                println!(
                    "{} {:<6} {:<22} {:<16} {:<24} {} {} {}",
                    crate::demo::format_ts(e.ts_ms),
                    e.node,
                    e.action,
                    if e.actor.is_empty() { "-" } else { &e.actor },
                    e.target,
                    if e.success { "ok" } else { "FAILED" },
                    e.client_addr,
                    e.detail
                );
            }
            if !events.unavailable_nodes.is_empty() {
                eprintln!("not answered: {}", events.unavailable_nodes.join(", "));
            }
        }
    }
    Ok(())
}

/// Runs a `gridmesh auth` command.
pub fn run_auth(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Keygen { kid, eddsa } => {
            let kid = kid.unwrap_or_else(|| {
                crate::demo::format_ts(gridmesh_actors::context::now_ms())[..10].to_owned()
            });
            println!("{}", generate_key_line(&kid, eddsa));
        }
        AuthCommand::PublicKey { keys_file } => {
            let text = std::fs::read_to_string(&keys_file)
                .with_context(|| format!("reading {}", keys_file.display()))?;
            let ring = KeyRing::parse(&text)?;
            if ring.public_pems().is_empty() {
                bail!(
                    "no EdDSA key in {}: HS256 keys are shared secrets",
                    keys_file.display()
                );
            }
            for (kid, pem) in ring.public_pems() {
                println!("# kid {kid}\n{pem}");
            }
        }
    }
    Ok(())
}
