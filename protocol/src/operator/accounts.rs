//! Operators and their credentials: roles, logins and sessions, users, API
//! tokens, and the stores' enrollment tokens for new tills.

use serde::{Deserialize, Serialize};

use super::{names, row_id};
use crate::id::StoreId;

names! {
    /// What an operator may do; each role includes the ones before it
    /// (`viewer` < `operator` < `approver` < `admin`).
    pub enum Role ("role") {
        /// Reads everything.
        Viewer = "viewer",
        /// Viewer + groups, tasks, packages (upload, delete), till types.
        Operator = "operator",
        /// Operator + approving gated rollout steps.
        Approver = "approver",
        /// Everything: users, tokens, device approval and removal, registry import.
        Admin = "admin",
    }
}

names! {
    /// How a caller proved who it is, as [`SessionInfo`] tells it.
    pub enum AuthMethod ("authentication method") {
        /// A session cookie from a login.
        Session = "session",
        /// An API token (`Authorization: Bearer`).
        Token = "token",
    }
}

/// Body of `POST /api/v1/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Who is logged in (`GET /api/v1/session`, and the answer to a login).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionInfo {
    /// User or token name.
    pub username: String,
    /// Its role.
    pub role: Role,
    /// Session (cookie) or token (bearer).
    pub auth: AuthMethod,
    /// When the session ends at the latest (RFC 3339); tokens: their expiry.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub expires_at: Option<String>,
    /// Seconds of inactivity after which a session ends (sessions only).
    pub idle_timeout_s: Option<u64>,
}

/// Body of `POST /api/v1/users/{name}/password` and of
/// `POST /api/v1/session/password` (which also needs `current`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    /// The caller's current password (changing one's own only).
    #[serde(default)]
    pub current: Option<String>,
    /// The new password; omitted: one is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
}

/// A user as listed (never with the hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct User {
    /// Login name (unique, case-insensitive).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// When the user was added (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    /// When the password was last set (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub password_changed_at: String,
    /// Live sessions of this user.
    pub sessions: u64,
}

/// A user added or a password set, with the generated password if one was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserWithPassword {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// The generated password, shown once; absent when the caller chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUserInput {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The password; omitted: one is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
}

/// An API token as listed (never with the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Token {
    /// Unique among live tokens.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// When it was made (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    /// Who made it.
    pub created_by: String,
    /// When it stops working (RFC 3339); `None`: never.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub expires_at: Option<String>,
    /// Last request made with it (RFC 3339, to the half minute).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub revoked_at: Option<String>,
}

/// A new token with its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NewToken {
    /// The token's listing.
    #[serde(flatten)]
    pub token: Token,
    /// The secret to send as `Authorization: Bearer <token>`; not stored.
    pub token_secret: String,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTokenInput {
    /// Unique among live tokens.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Days until it expires (1 to 3650); omitted: never.
    #[serde(default)]
    pub expires_days: Option<u32>,
}

row_id!(
    /// A store enrollment token, numbered by the coordinator.
    EnrollTokenId
);

/// A store enrollment token as listed (never its secret): lets tills the
/// registry does not list join one store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollToken {
    /// The token's number.
    pub id: EnrollTokenId,
    /// The store its tills join.
    pub store_id: StoreId,
    /// When it was made (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: String,
    /// Who made it.
    pub created_by: String,
    /// When it stops working (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub expires_at: String,
    /// When it was revoked (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub revoked_at: Option<String>,
    /// Tills it may enroll.
    pub max_uses: u32,
    /// Tills it enrolled.
    pub uses: u32,
}

/// A new enrollment token with its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NewEnrollToken {
    /// The token's listing.
    #[serde(flatten)]
    pub token: EnrollToken,
    /// The secret a till's config carries as `enroll_token`; not stored.
    pub token_secret: String,
}

/// Body of `POST /api/v1/enroll-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEnrollTokenInput {
    /// The store the token's tills join.
    pub store_id: String,
    /// Days until it stops working (1 to 90; default 7).
    #[serde(default)]
    pub expires_days: Option<u64>,
    /// Tills it may enroll (default 100).
    #[serde(default)]
    pub max_uses: Option<u32>,
}
