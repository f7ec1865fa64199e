//! The audit log as the API shows it: who did what, when, from where, and
//! how it ended.

use serde::{Deserialize, Serialize};

use super::accounts::Role;
use super::{names, row_id};

row_id!(
    /// An audit row, numbered in the order rows were written.
    AuditId
);

names! {
    /// How an actor proved who it is.
    pub enum ActorKind ("actor kind") {
        /// A user with a session cookie.
        User = "user",
        /// An API token (`Authorization: Bearer`).
        Token = "token",
        /// The command line on the coordinator's machine (it holds the data folder).
        Cli = "cli",
        /// The coordinator itself, or code embedding it (tests, the demo's setup).
        System = "system",
        /// Nobody proven yet (a login attempt).
        Anonymous = "anonymous",
        /// A till, by its device key.
        Device = "device",
    }
}

names! {
    /// How an audited attempt ended.
    pub enum AuditOutcome ("audit outcome") {
        /// It was done.
        Ok = "ok",
        /// It was tried and refused by the operation (bad input, conflict, error).
        Failed = "failed",
        /// The caller was not allowed to try (403) or could not log in.
        Denied = "denied",
    }
}

/// One audit row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditRecord {
    /// Increasing id.
    pub id: AuditId,
    /// When (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
    /// User or token name (the OS user for the CLI).
    pub actor: String,
    /// How the actor proved who it is.
    pub actor_kind: ActorKind,
    /// The actor's role then; `None` for anonymous callers.
    pub role: Option<Role>,
    /// Client address, or `local`.
    pub client: String,
    /// HTTP method, or `CLI`.
    pub method: String,
    /// Request path, or the CLI command.
    pub route: String,
    /// e.g. `task.create`, `session.login`.
    pub action: String,
    /// What it acted on, e.g. `task:12`.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The HTTP status answered (0 for the CLI).
    pub status: u16,
    /// Free text.
    pub detail: Option<String>,
}
