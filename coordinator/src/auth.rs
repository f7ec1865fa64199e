//! Operators: who they are and what they may do.
//!
//! - [`Role`]s are ordered: `viewer` < `operator` < `approver` < `admin`; each
//!   may do everything the one before it may.
//! - [`accounts`]: users (argon2id hashes), server-side sessions and API tokens,
//!   as plain functions over the database; the CLI and the HTTP API share them.
//! - [`rules`]: the one table that names, for every operator route, the role it
//!   needs and the body it takes. The HTTP guard (`http/guard.rs`) consults it
//!   on every operator request; a route without a rule is refused to everyone.
//! - [`password`]: hashing and verifying off the executor, at most a few at once.
//! - [`limiter`]: slows repeated login attempts per client address and per
//!   user name from each address.
//!
//! A [`Caller`] is who made a request and how (client address, method, route):
//! every change the coordinator makes on an operator's behalf carries one, and
//! the audit log records it.

pub mod accounts;
pub mod limiter;
pub mod password;
pub mod rules;

use crate::error::Error;

pub use tillswarm_protocol::operator::accounts::Role;
pub use tillswarm_protocol::operator::audit::ActorKind;

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// How it proved who it is.
    pub kind: ActorKind,
    /// The user or token name (the OS user for the CLI).
    pub name: String,
    /// What it may do (`None` only for anonymous callers).
    pub role: Option<Role>,
    /// The session's id hash, for logging out (sessions only).
    pub session: Option<String>,
}

/// Who made a request and how; every audited change carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub actor: Actor,
    /// The client's address, or `local`.
    pub client: String,
    /// The HTTP method (`CLI` for the command line).
    pub method: String,
    /// The request path, or the command for the CLI.
    pub route: String,
}

impl Caller {
    /// The coordinator acting for code that embeds it (tests, the demo's own
    /// setup, the bench), as an admin.
    pub fn system(name: &str) -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::System,
                name: name.to_owned(),
                role: Some(Role::Admin),
                session: None,
            },
            client: "local".into(),
            method: "-".into(),
            route: "-".into(),
        }
    }

    /// The command line on the coordinator's machine, run by OS user `user`.
    pub fn cli(user: &str, command: &str) -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::Cli,
                name: user.to_owned(),
                role: Some(Role::Admin),
                session: None,
            },
            client: "local".into(),
            method: "CLI".into(),
            route: command.to_owned(),
        }
    }

    /// Someone not yet authenticated (a login attempt for `username`).
    pub fn anonymous(username: &str, client: String, method: &str, route: &str) -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::Anonymous,
                name: username.to_owned(),
                role: None,
                session: None,
            },
            client,
            method: method.to_owned(),
            route: route.to_owned(),
        }
    }

    /// A till, proven by its device key, at `route`.
    pub fn device(device: &tillswarm_protocol::DeviceId, client: String, route: &str) -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::Device,
                name: device.to_string(),
                role: None,
                session: None,
            },
            client,
            method: "POST".into(),
            route: route.to_owned(),
        }
    }

    /// Whether the caller's role includes `role`.
    pub fn may(&self, role: Role) -> bool {
        self.actor.role.is_some_and(|r| r >= role)
    }
}

/// `n` random bytes from the OS, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> crate::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("the OS gave no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The stored form of a secret with 128+ bits of entropy (a token or session
/// id): its blake3 hash. Such secrets need no slow hash; a copy of the
/// database then holds nothing that opens a session or passes as a token.
pub(crate) fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Operator);
        assert!(Role::Operator < Role::Approver);
        assert!(Role::Approver < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().expect("parse"), r);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn random_secrets_differ_and_hash_stably() {
        let a = random_hex(32).expect("random");
        let b = random_hex(32).expect("random");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_ne!(secret_hash(&a), a);
    }
}
