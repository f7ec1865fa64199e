//! `tillswarm coordinator enroll-token ...` and `... device reset-key`: till
//! identity administered on the coordinator's data folder (the coordinator
//! may be running).

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use tillswarm_coordinator::admin::Accounts;
use tillswarm_coordinator::db::Database;
use tillswarm_protocol::DeviceId;

/// Store enrollment tokens: how a till the registry does not list joins.
#[derive(Debug, Subcommand)]
pub enum EnrollTokenCommand {
    /// Make a token for one store; prints it as the last line, once. Put it
    /// in the new tills' config as `enroll_token`.
    Create {
        /// The store the tills join (from the imported registry).
        #[arg(long)]
        store: String,
        /// Days until it stops working (1 to 90).
        #[arg(long, default_value_t = 7)]
        expires_days: u64,
        /// Tills it may enroll.
        #[arg(long, default_value_t = 100)]
        max_uses: u32,
    },
    /// List enrollment tokens (never their secrets).
    List,
    /// Revoke a token; tills it enrolled stay enrolled.
    Revoke {
        /// The token's number, from `list`.
        id: i64,
    },
}

/// Device identity.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Forget a till's key and end its sessions: the next key it logs in
    /// with binds (a replaced disk, a reinstalled till).
    ResetKey {
        /// The till's GUID.
        guid: DeviceId,
    },
}

fn open(data: &Path, database: &Database, command: &str) -> anyhow::Result<Accounts> {
    Accounts::open(data, database, &crate::coordinator_cmd::os_user(), command)
        .with_context(|| format!("opening the coordinator data in {}", data.display()))
}

/// Runs `enroll-token ...`.
pub fn enroll_token(
    data: &Path,
    database: &Database,
    cmd: &EnrollTokenCommand,
) -> anyhow::Result<()> {
    match cmd {
        EnrollTokenCommand::Create {
            store,
            expires_days,
            max_uses,
        } => {
            let t = open(data, database, "coordinator enroll-token create")?.create_enroll_token(
                store,
                *expires_days,
                *max_uses,
            )?;
            println!(
                "enrollment token {} for store {store}: up to {max_uses} tills until {}; \
                 shown once, stored only as a hash:",
                t.token.id, t.token.expires_at
            );
            println!("{}", t.token_secret);
        }
        EnrollTokenCommand::List => {
            let tokens = open(data, database, "coordinator enroll-token list")?.enroll_tokens()?;
            println!(
                "{:>4} {:<16} {:<21} {:<21} {:>9} state",
                "id", "store", "created", "expires", "uses"
            );
            for t in tokens {
                let expired = humantime::parse_rfc3339(&t.expires_at)
                    .is_ok_and(|e| e <= std::time::SystemTime::now());
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if expired {
                    "expired"
                } else if t.uses >= t.max_uses {
                    "used up"
                } else {
                    "live"
                };
                println!(
                    "{:>4} {:<16} {:<21} {:<21} {:>9} {state}",
                    t.id,
                    t.store_id,
                    t.created_at,
                    t.expires_at,
                    format!("{}/{}", t.uses, t.max_uses),
                );
            }
        }
        EnrollTokenCommand::Revoke { id } => {
            open(data, database, "coordinator enroll-token revoke")?.revoke_enroll_token(*id)?;
            println!("revoked enrollment token {id}");
        }
    }
    Ok(())
}

/// Runs `device ...`.
pub fn device(data: &Path, database: &Database, cmd: &DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::ResetKey { guid } => {
            open(data, database, "coordinator device reset-key")?.reset_device_key(guid)?;
            println!("reset the key of {guid}; its next login binds a new one");
        }
    }
    Ok(())
}
