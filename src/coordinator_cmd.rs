//! `tillswarm coordinator ...`: run the head-office service; manage its
//! operator accounts, API tokens and keys on its data folder (enrollment and
//! device keys in `enroll_cmd.rs`); import a store registry into a running one.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tillswarm_coordinator::admin::Accounts;
use tillswarm_coordinator::auth::Role;
use tillswarm_coordinator::db::Database;
use tillswarm_coordinator::{Config, Coordinator, ServeOptions};

use crate::remote::Remote;

mod config_file;

/// Run the coordinator (default) or administer it.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The config file (TOML; each flag below is a key of the same name, and
    /// a flag given here wins). Default: /etc/tillswarm/coordinator.toml when
    /// it exists.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TILLSWARM_COORDINATOR_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Folder for the database, chunk store and signing key.
    #[arg(long, default_value = "./tillswarm-data", global = true)]
    data: PathBuf,
    /// Where the coordinator's tables live: `sqlite` (a file in --data) or a
    /// PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DBNAME (TLS, with
    /// the server's certificate checked: ?sslmode=verify-full, and
    /// &sslrootcert=FILE for a private CA). Keys and (without --chunk-store)
    /// chunks stay in --data either way.
    #[arg(
        long,
        global = true,
        default_value = "sqlite",
        value_name = "URL",
        env = "TILLSWARM_DATABASE",
        hide_env_values = true
    )]
    database: tillswarm_coordinator::db::Database,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest package upload accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_package_mb: u64,
    /// Largest size a package may unpack to, in MiB (larger ones are refused
    /// at upload).
    #[arg(long, default_value_t = 16384)]
    max_unpacked_mb: u64,
    /// Poll interval hinted to tills, in seconds.
    #[arg(long, default_value_t = 30)]
    poll_interval_s: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (operators' passwords
    /// and tokens then cross the network readable); without TLS this is refused.
    #[arg(long)]
    insecure_http: bool,
    /// Another origin whose pages may make changes with a session cookie, e.g.
    /// the public address of a reverse proxy (repeatable).
    #[arg(long, value_name = "URL")]
    allowed_origin: Vec<String>,
    /// Mark session cookies Secure (`__Host-` prefixed) on plain HTTP too: for a
    /// coordinator behind a TLS-terminating proxy. Implied by --tls-cert and by
    /// an https --allowed-origin.
    #[arg(long)]
    secure_cookies: bool,
    /// Require `Authorization: Bearer <this>` on /metrics.
    #[arg(long, env = "TILLSWARM_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Close a connection that sends no complete request head for this long
    /// (also idle keep-alive connections and stalled TLS handshakes).
    #[arg(long, default_value_t = 30)]
    header_timeout_s: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Refuse a request whose body pauses for this long (a slow upload is fine
    /// as long as it keeps moving).
    #[arg(long, default_value_t = 30)]
    body_timeout_s: u64,
    /// A login session unused this long ends, in minutes.
    #[arg(long, default_value_t = 30)]
    session_idle_min: u64,
    /// A login session ends this long after login, in hours.
    #[arg(long, default_value_t = 12)]
    session_max_hours: u64,
    /// Audit log rows older than this are purged, in days.
    #[arg(long, default_value_t = 365)]
    audit_retention_days: u64,
    /// Keep package chunks in S3-compatible storage, s3://BUCKET[/PREFIX],
    /// instead of the data folder (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_REGION as usual).
    #[arg(long, value_name = "URL")]
    chunk_store: Option<tillswarm_coordinator::chunks::bucket::BucketUrl>,
    /// Tills fetch chunks from this http(s) URL first (a CDN, or the chunk
    /// bucket's endpoint and prefix: URL/<2 hex>/<hex>[.zst]), falling back
    /// to the coordinator. Named in their signed instructions.
    #[arg(long, value_name = "URL")]
    chunk_base_url: Option<String>,
    /// If no operator account exists yet, create this admin and print its
    /// generated password once.
    #[arg(long, value_name = "NAME")]
    init_admin: Option<String>,
    #[command(subcommand)]
    command: Option<CoordinatorCommand>,
}

#[derive(Debug, Subcommand)]
enum CoordinatorCommand {
    /// Import a store registry (CSV with a header row, or JSON) into a running
    /// coordinator: GUID, till name and number, store id, name and address, till type.
    Import {
        /// The registry file (`.json` is sent as JSON, anything else as CSV).
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Operator accounts (on the data folder; the coordinator may be running).
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens for scripts and CI (on the data folder).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The root and online keys tills trust (on the data folder; a running
    /// coordinator picks rotations up within a second).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Store enrollment tokens for tills the registry does not list (on the
    /// data folder).
    #[command(subcommand)]
    EnrollToken(crate::enroll_cmd::EnrollTokenCommand),
    /// Till identity (on the data folder).
    #[command(subcommand)]
    Device(crate::enroll_cmd::DeviceCommand),
    /// Copy a stopped SQLite coordinator's database into an empty
    /// PostgreSQL database (keys and chunks stay in the data folder; run the
    /// coordinator with --data DIR --database URL afterwards).
    MigrateToPostgres {
        /// The SQLite coordinator's data folder.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The PostgreSQL database, postgres://USER:PASSWORD@HOST:PORT/DBNAME.
        #[arg(long, value_name = "URL")]
        to: tillswarm_coordinator::db::Database,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the root and online keys if missing and print the root public
    /// key to pin on tills.
    Init {
        /// Move the root secret to this file (then keep it offline; the
        /// rotate commands take it back with --root-key).
        #[arg(long, value_name = "FILE")]
        root_out: Option<PathBuf>,
    },
    /// A new online key certified by the root; tills accept it at their next
    /// poll without being touched.
    RotateOnline {
        /// The root secret, when it is not in the data folder.
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
        /// Days the new online key's certificate lasts.
        #[arg(long, default_value_t = tillswarm_coordinator::keys::DEFAULT_ONLINE_DAYS)]
        valid_days: u64,
    },
    /// A new root, announced by the old one, and a new online key under it.
    RotateRoot {
        /// The current root secret, when it is not in the data folder.
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
        /// Write the new root secret here instead of the data folder.
        #[arg(long, value_name = "FILE")]
        new_root_out: Option<PathBuf>,
        /// Days the new online key's certificate lasts.
        #[arg(long, default_value_t = tillswarm_coordinator::keys::DEFAULT_ONLINE_DAYS)]
        valid_days: u64,
    },
    /// Show the root (to pin on tills) and the online key's certificate.
    Show,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; prints a generated password once unless --password-stdin.
    Add {
        /// Login name: letters, digits, `. _ @ -`.
        name: String,
        /// viewer, operator, approver or admin.
        #[arg(long)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (ends their sessions); prints a generated one
    /// unless --password-stdin.
    Passwd {
        /// The user.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (never the last admin).
    Remove {
        /// The user.
        name: String,
    },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token; prints it as the last line of standard output, once.
    Create {
        /// A name for the token (unique among live tokens).
        #[arg(long)]
        name: String,
        /// viewer, operator, approver or admin.
        #[arg(long)]
        role: Role,
        /// Days until it expires; without it, never.
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token; it fails from its next request on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs a coordinator subcommand; `matches` are the command line's, to tell
/// given flags from defaults when the config file fills in the rest.
pub async fn run(mut args: CoordinatorArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    if let Some(path) = args.apply_config_file(matches)? {
        tracing::info!(config = %path.display(), "read the coordinator config");
    }
    match args.command {
        None => serve(args).await,
        Some(CoordinatorCommand::Import {
            ref file,
            ref remote,
        }) => import(file, remote).await,
        // The database's own client blocks (PostgreSQL's waits on a runtime
        // of its own): off the async workers.
        Some(_) => tokio::task::spawn_blocking(move || administer(&args)).await?,
    }
}

/// Runs an administration subcommand (blocking).
fn administer(args: &CoordinatorArgs) -> anyhow::Result<()> {
    match args.command {
        None | Some(CoordinatorCommand::Import { .. }) => {
            unreachable!("serving and importing are not administration")
        }
        Some(CoordinatorCommand::User(ref cmd)) => user(&args.data, &args.database, cmd),
        Some(CoordinatorCommand::Token(ref cmd)) => token(&args.data, &args.database, cmd),
        Some(CoordinatorCommand::Keys(ref cmd)) => keys(&args.data, cmd),
        Some(CoordinatorCommand::EnrollToken(ref cmd)) => {
            crate::enroll_cmd::enroll_token(&args.data, &args.database, cmd)
        }
        Some(CoordinatorCommand::Device(ref cmd)) => {
            crate::enroll_cmd::device(&args.data, &args.database, cmd)
        }
        Some(CoordinatorCommand::MigrateToPostgres { ref from, ref to }) => {
            migrate_to_postgres(from, to)
        }
    }
}

fn migrate_to_postgres(from: &Path, to: &Database) -> anyhow::Result<()> {
    let copied = tillswarm_coordinator::db::copy::sqlite_to_postgres(from, to)
        .with_context(|| format!("copying {} into {to}", from.display()))?;
    for (table, rows) in &copied.tables {
        println!("{table:<24} {rows:>10} rows");
    }
    println!(
        "copied into {to}; run the coordinator with --data {} --database <the same URL>",
        from.display()
    );
    Ok(())
}

fn keys(data: &Path, cmd: &KeysCommand) -> anyhow::Result<()> {
    use tillswarm_coordinator::keys;
    let trust = match cmd {
        KeysCommand::Init { root_out } => keys::init(data, root_out.as_deref())?.trust,
        KeysCommand::RotateOnline {
            root_key,
            valid_days,
        } => keys::rotate_online(data, root_key.as_deref(), *valid_days)?,
        KeysCommand::RotateRoot {
            root_key,
            new_root_out,
            valid_days,
        } => keys::rotate_root(
            data,
            root_key.as_deref(),
            new_root_out.as_deref(),
            *valid_days,
        )?,
        KeysCommand::Show => keys::load_or_init(data)?.trust,
    };
    let until = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(trust.not_after_unix),
    );
    println!(
        "root (pin on tills as coordinator_public_key): {}",
        trust.root
    );
    println!("root version: {}", trust.root_version);
    println!(
        "online key serial {}, certified until {until}",
        trust.serial
    );
    if !data.join("root.key").exists() {
        println!("the root secret is not in the data folder (offline)");
    }
    Ok(())
}

/// The OS user running the command, for the audit log.
pub(crate) fn os_user() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    match std::env::var("SUDO_USER") {
        Ok(sudo) if sudo != user => format!("{user} (sudo by {sudo})"),
        _ => user,
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

fn user(data: &Path, database: &Database, cmd: &UserCommand) -> anyhow::Result<()> {
    let open = |command: &str| {
        Accounts::open(data, database, &os_user(), command)
            .with_context(|| format!("opening the coordinator data in {}", data.display()))
    };
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            let chosen = password_stdin.then(read_password_line).transpose()?;
            let generated = open("coordinator user add")?.add_user(name, *role, chosen)?;
            println!("added user {name} ({role})");
            if let Some(p) = generated {
                println!("password (shown once): {p}");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let chosen = password_stdin.then(read_password_line).transpose()?;
            let generated = open("coordinator user passwd")?.set_password(name, chosen)?;
            println!("password of {name} set; their sessions ended");
            if let Some(p) = generated {
                println!("password (shown once): {p}");
            }
        }
        UserCommand::Remove { name } => {
            open("coordinator user remove")?.remove_user(name)?;
            println!("removed user {name}");
        }
        UserCommand::List => {
            let users = open("coordinator user list")?.users()?;
            println!("{:<24} {:<9} {:<21} sessions", "name", "role", "added");
            for u in users {
                println!(
                    "{:<24} {:<9} {:<21} {}",
                    u.name, u.role, u.created_at, u.sessions
                );
            }
        }
    }
    Ok(())
}

fn token(data: &Path, database: &Database, cmd: &TokenCommand) -> anyhow::Result<()> {
    let open = |command: &str| {
        Accounts::open(data, database, &os_user(), command)
            .with_context(|| format!("opening the coordinator data in {}", data.display()))
    };
    match cmd {
        TokenCommand::Create {
            name,
            role,
            expires_days,
        } => {
            let t = open("coordinator token create")?.create_token(name, *role, *expires_days)?;
            let expiry = t.token.expires_at.as_deref().unwrap_or("never");
            println!("token {name} ({role}), expires {expiry}; shown once, stored only as a hash:");
            println!("{}", t.token_secret);
        }
        TokenCommand::List => {
            let tokens = open("coordinator token list")?.tokens()?;
            println!(
                "{:<24} {:<9} {:<21} {:<21} {:<21} state",
                "name", "role", "created", "expires", "last used"
            );
            for t in tokens {
                let expired = t
                    .expires_at
                    .as_deref()
                    .and_then(|e| humantime::parse_rfc3339(e).ok())
                    .is_some_and(|e| e <= std::time::SystemTime::now());
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if expired {
                    "expired (revoke it to reuse the name)"
                } else {
                    "live"
                };
                println!(
                    "{:<24} {:<9} {:<21} {:<21} {:<21} {state}",
                    t.name,
                    t.role,
                    t.created_at,
                    t.expires_at.as_deref().unwrap_or("never"),
                    t.last_used_at.as_deref().unwrap_or("never"),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            open("coordinator token revoke")?.revoke_token(name)?;
            println!("revoked token {name}");
        }
    }
    Ok(())
}

async fn serve(args: CoordinatorArgs) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tillswarm_coordinator::server::tls_config(cert, key)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        anyhow::ensure!(
            args.insecure_http,
            "refusing plain HTTP on {}: operators' passwords and tokens would cross the \
             network readable. Give --tls-cert and --tls-key, listen on a loopback address \
             behind a TLS proxy, or pass --insecure-http",
            args.listen
        );
        tracing::warn!(listen = %args.listen, "serving plain HTTP beyond loopback (--insecure-http)");
    }
    if let Some(name) = args.init_admin.clone() {
        let (data, database) = (args.data.clone(), args.database.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut accounts =
                Accounts::open(&data, &database, &os_user(), "coordinator --init-admin")?;
            if accounts.user_count()? == 0 {
                let password = accounts.add_user(&name, Role::Admin, None)?;
                println!(
                    "created admin {name}; password (shown once): {}",
                    password.unwrap_or_default()
                );
            } else {
                println!("--init-admin {name}: operator accounts exist already; nothing created");
            }
            Ok(())
        })
        .await??;
    }
    let config = Config {
        data_dir: args.data.clone(),
        max_package_bytes: args.max_package_mb << 20,
        max_unpacked_bytes: args.max_unpacked_mb << 20,
        poll_interval_ms: args.poll_interval_s * 1000,
        session_idle_timeout_s: args.session_idle_min.max(1) * 60,
        session_max_age_s: args.session_max_hours.max(1) * 3600,
        audit_retention_days: args.audit_retention_days.max(1),
        allowed_origins: args.allowed_origin.clone(),
        secure_cookies: args.secure_cookies
            || tls.is_some()
            || args
                .allowed_origin
                .iter()
                .any(|o| o.trim().to_ascii_lowercase().starts_with("https://")),
        metrics_token: args.metrics_token.clone(),
        chunk_store: args
            .chunk_store
            .clone()
            .map(tillswarm_coordinator::chunks::bucket::BucketConfig::from_env),
        chunk_base_url: args.chunk_base_url.clone(),
        database: args.database.clone(),
        ..Config::default()
    };
    let coordinator = Coordinator::open(config)
        .await
        .with_context(|| format!("opening the coordinator data in {}", args.data.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // stdout may be a closed pipe (a supervisor that read the URL and left):
    // write without panicking.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "tillswarm coordinator listening on {scheme}://{addr}/ (data in {})",
        args.data.display()
    );
    let _ = writeln!(
        out,
        "coordinator public key (pin it on tills): {}",
        coordinator.public_key()
    );
    if !coordinator.has_users().await? {
        let _ = writeln!(
            out,
            "no operator account exists yet: create the first admin with\n  \
             tillswarm coordinator user add NAME --role admin --data {}",
            args.data.display()
        );
    }
    let _ = out.flush();
    let options = ServeOptions {
        tls,
        header_timeout: Duration::from_secs(args.header_timeout_s.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_s.max(1)),
        max_connections: args.max_connections.max(1),
    };
    tillswarm_coordinator::serve_with(coordinator, listener, options, shutdown_signal()).await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn import(file: &Path, remote: &Remote) -> anyhow::Result<()> {
    let body = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let content_type = if is_json {
        "application/json"
    } else {
        "text/csv"
    };
    let response = remote
        .request(reqwest::Method::POST, "/api/v1/devices/import")?
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending to {}", remote.coordinator))?;
    let text = Remote::check(response, "import refused").await?;
    println!("{text}");
    Ok(())
}
