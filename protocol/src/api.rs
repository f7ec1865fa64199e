//! JSON bodies shared by the coordinator's node API and the till node.
//!
//! The coordinator serves them under `/api/v1/node/...`; operator-facing types live
//! with the coordinator. Free text a till sends (errors, install log tails) is capped
//! here so both sides agree on the limits; [`ProgressReport::validate`] and
//! [`HeartbeatRequest::validate`] enforce them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::{DeviceId, PackageId, TaskId};
use crate::version::Version;

/// Longest error text a node may report.
pub const MAX_ERROR_LEN: usize = 1024;
/// Longest install log tail a node may report.
pub const MAX_LOG_TAIL_LEN: usize = 8 * 1024;
/// Longest free-form short field (IP address, peer id).
pub const MAX_SHORT_FIELD_LEN: usize = 128;
/// Most store peers listed in one [`Assignment`].
pub const MAX_STORE_PEERS: usize = 512;
/// The header of a chunk request and answer on `/api/v1/node/chunks/{hash}`:
/// a till sends `zstd` when it accepts a chunk as the zstd frame its manifest
/// lists; the coordinator answers `zstd` or `raw` for the form it sent (a
/// till that did not ask always gets the raw bytes).
pub const CHUNK_ENCODING: &str = "x-tillswarm-chunk-encoding";

/// What a task makes a till do (the seed's three task types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Fetch and stage the package in the background; no interruption.
    Download,
    /// Stage, then ask the cashier; install when accepted or unanswered in time.
    Update,
    /// Stage, then install at the task's time without asking.
    ForcedUpdate,
}

impl TaskKind {
    /// The snake_case name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Update => "update",
            Self::ForcedUpdate => "forced_update",
        }
    }

    /// Whether the task ends with the package installed (not just staged).
    pub fn installs(self) -> bool {
        !matches!(self, Self::Download)
    }
}

impl std::str::FromStr for TaskKind {
    type Err = crate::operator::UnknownName;

    /// Exactly the names [`TaskKind::as_str`] gives.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Download, Self::Update, Self::ForcedUpdate]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::operator::UnknownName {
                kind: "task kind",
                value: s.chars().take(80).collect(),
                expected: "download update forced_update",
            })
    }
}

/// Where one till stands in one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Assigned, nothing done yet.
    Pending,
    /// Fetching chunks.
    Downloading,
    /// Verified and staged under `update/<version>/`.
    Downloaded,
    /// Waiting for the cashier to accept (Update tasks).
    AwaitingCashier,
    /// Running the package's `up.sh`.
    Installing,
    /// Install succeeded; the till is rebooting.
    Rebooting,
    /// The till reported the new version after its reboot.
    Installed,
    /// Something went wrong; the report carries the reason.
    Failed,
    /// The cashier declined; the till asks again after its next restart.
    Declined,
    /// The till already runs this version or a newer one.
    Skipped,
}

impl TargetState {
    /// The snake_case name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Downloading => "downloading",
            Self::Downloaded => "downloaded",
            Self::AwaitingCashier => "awaiting_cashier",
            Self::Installing => "installing",
            Self::Rebooting => "rebooting",
            Self::Installed => "installed",
            Self::Failed => "failed",
            Self::Declined => "declined",
            Self::Skipped => "skipped",
        }
    }

    /// Whether nothing more will happen for this target in this task run.
    /// `Downloaded` is final only for Download tasks, so the kind is needed.
    pub fn is_final_for(self, kind: TaskKind) -> bool {
        match self {
            Self::Installed | Self::Failed | Self::Skipped => true,
            Self::Downloaded => kind == TaskKind::Download,
            _ => false,
        }
    }
}

impl TargetState {
    /// Every state, in the order of a task's life.
    pub const ALL: [TargetState; 10] = [
        Self::Pending,
        Self::Downloading,
        Self::Downloaded,
        Self::AwaitingCashier,
        Self::Installing,
        Self::Rebooting,
        Self::Installed,
        Self::Failed,
        Self::Declined,
        Self::Skipped,
    ];
}

impl std::str::FromStr for TargetState {
    type Err = crate::operator::UnknownName;

    /// Exactly the names [`TargetState::as_str`] gives.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::operator::UnknownName {
                kind: "target state",
                value: s.chars().take(80).collect(),
                expected: "pending downloading downloaded awaiting_cashier installing \
                           rebooting installed failed declined skipped",
            })
    }
}

/// What a till is doing, as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// In sale mode, nothing to do.
    Ready,
    /// Fetching or sharing a package.
    Downloading,
    /// An update is staged and the cashier has been asked.
    AwaitingCashier,
    /// An install is due; the POS has been asked to leave sale mode and the
    /// till waits for the sale in progress to end.
    WaitingForSaleEnd,
    /// Out of sale mode, installing.
    Installing,
    /// Rebooting after an install.
    Rebooting,
    /// The node hit an error it cannot recover from by itself.
    Error,
}

/// Per till type settings (the seed's `update.conf`), sent to every till of the type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TillSettings {
    /// Minutes to wait for the cashier before installing anyway. `None` (the
    /// commented-out setting) means never ask: Update tasks install only by hand.
    pub auto_update_timeout_minutes: Option<u32>,
}

/// A node's periodic check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The till's GUID.
    pub device_id: DeviceId,
    /// The version the till is running now (`None` before its first install).
    pub version: Option<Version>,
    /// What the till is doing.
    pub state: DeviceState,
    /// The till's LAN address, for operators.
    pub ip: Option<String>,
    /// The node's libp2p peer id, for operators and accounting.
    pub peer_id: Option<String>,
    /// Free bytes on the update volume.
    pub free_disk_bytes: Option<u64>,
    /// The instructions revision the node already holds; when it is current
    /// the coordinator answers with a fresh timestamp only.
    pub known_revision: Option<u64>,
    /// What the node wants operators to know (at most [`MAX_WARNINGS`] of
    /// [`MAX_SHORT_FIELD_LEN`] bytes): `stale_instructions` when no fresh
    /// timestamp came in time, refused instructions, an unsigned drop-in.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Where the node's store swarm listens on the LAN (at most
    /// [`MAX_SWARM_ADDRS`] socket addresses): the coordinator passes them to
    /// the store's other tills, which dial them when multicast (mDNS) does
    /// not reach them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_addrs: Vec<SocketAddr>,
    /// How many of the store's tills the node's swarm is connected to now
    /// (`None` without a store swarm): a till at 0 in a store of several
    /// fetches alone over the WAN, which operators see in a task's WAN
    /// diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_peers: Option<u32>,
}

/// Most warnings in one heartbeat.
pub const MAX_WARNINGS: usize = 8;

/// Most swarm addresses a till reports (a till has one or two LAN addresses).
pub const MAX_SWARM_ADDRS: usize = 4;

impl HeartbeatRequest {
    /// Checks the free-text caps.
    pub fn validate(&self) -> Result<(), String> {
        // Revisions are signed 64-bit integers in the coordinator's database.
        if self.known_revision.is_some_and(|r| r > i64::MAX as u64) {
            return Err(format!("known_revision is over the limit of {}", i64::MAX));
        }
        if self.free_disk_bytes.is_some_and(|b| b > i64::MAX as u64) {
            return Err(format!("free_disk_bytes is over the limit of {}", i64::MAX));
        }
        if self.warnings.len() > MAX_WARNINGS {
            return Err(format!("at most {MAX_WARNINGS} warnings"));
        }
        for w in &self.warnings {
            check_len("warning", Some(w), MAX_SHORT_FIELD_LEN)?;
        }
        check_len("ip", self.ip.as_deref(), MAX_SHORT_FIELD_LEN)?;
        check_len("peer_id", self.peer_id.as_deref(), MAX_SHORT_FIELD_LEN)?;
        check_swarm_addrs(&self.swarm_addrs)
    }
}

/// The coordinator's answer to a heartbeat. Everything a till acts on is in
/// `trust`, signed (see [`crate::trust`]); the rest only paces polling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Revision of this till's instructions; echo it as `known_revision`.
    pub revision: u64,
    /// The key chain, a fresh timestamp and, when `known_revision` was not
    /// current, the signed instructions.
    pub trust: crate::trust::TrustBundle,
    /// When to poll next, already jittered by the coordinator.
    pub poll_interval_ms: u64,
}

/// One task as one till must carry it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// The task's type.
    pub kind: TaskKind,
    /// The package to fetch (its manifest is at `/api/v1/node/manifests/<id>`).
    pub package_id: PackageId,
    /// Package name, for logs and the staging folder.
    pub package_name: String,
    /// Package version.
    pub version: Version,
    /// Package size in bytes.
    pub size: u64,
    /// Unix seconds when a Forced update installs (`None`: at once).
    pub install_at_unix: Option<u64>,
    /// An explicit rollback: the only case where a till installs an older version.
    pub rollback: bool,
    /// Bumped when an operator restarts the task, so a till retries a failure.
    pub attempt: u32,
    /// Unix ms by which every till of the store has learned of the task (its
    /// activation plus one poll interval with jitter, plus slack). Until then the
    /// connected tills named in [`Assignment::store_peers`] rank as WAN owners
    /// even before they join, so a store splits the WAN work from the first chunk
    /// without waiting; after it only tills that joined rank.
    #[serde(default)]
    pub join_by_unix_ms: Option<u64>,
    /// The other tills of this task in the same store (at most
    /// [`MAX_STORE_PEERS`]; a node ignores the rest).
    #[serde(default)]
    pub store_peers: Vec<DeviceId>,
    /// Tills of the same store that already hold the package (an earlier
    /// wave downloaded or installed it; at most [`MAX_STORE_PEERS`]). A node
    /// waits a moment for those it does not see yet (one may be restarting)
    /// before fetching over the WAN what they hold.
    #[serde(default)]
    pub store_holders: Vec<DeviceId>,
    /// Update and Forced update: the till may fetch and stage the package but
    /// not ask its cashier or install yet (the coordinator lets at most a few
    /// tills of a store install at once, and only inside the store's
    /// maintenance window when the task has one).
    #[serde(default)]
    pub hold_install: bool,
    /// Unix seconds after which the till must not start asking or installing
    /// on this assignment (the end of the store's window); it waits for new
    /// instructions instead.
    #[serde(default)]
    pub install_until_unix: Option<u64>,
}

/// A node's report about one task; the coordinator keeps the highest `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The reporting till.
    pub device_id: DeviceId,
    /// The task reported on.
    pub task_id: TaskId,
    /// The task attempt this report belongs to.
    pub attempt: u32,
    /// Increases with every report of this till; older or repeated reports are
    /// acknowledged and ignored, which makes retries safe.
    pub seq: u64,
    /// The till's state in the task.
    pub state: TargetState,
    /// Bytes of the package verified so far.
    pub bytes_done: u64,
    /// Bytes fetched from the coordinator (over the WAN) for this task.
    pub wan_bytes: u64,
    /// Bytes fetched from peers (over the LAN) for this task.
    pub lan_bytes: u64,
    /// Why it failed, when it failed.
    pub error: Option<String>,
    /// The end of the install log (`up.sh` output).
    pub log_tail: Option<String>,
}

impl ProgressReport {
    /// Checks the free-text caps.
    pub fn validate(&self) -> Result<(), String> {
        // Stored as a signed 64-bit integer by the coordinator.
        if self.seq > i64::MAX as u64 {
            return Err(format!(
                "seq {} is over the limit of {}",
                self.seq,
                i64::MAX
            ));
        }
        check_len("error", self.error.as_deref(), MAX_ERROR_LEN)?;
        check_len("log_tail", self.log_tail.as_deref(), MAX_LOG_TAIL_LEN)
    }
}

/// A till asks for a login challenge (`POST /api/v1/node/challenge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    /// The till's GUID.
    pub device_id: DeviceId,
}

/// A one-time login challenge for one till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Sign it with [`crate::trust::login_message`] and answer within `expires_in_ms`.
    pub challenge: String,
    /// How long the challenge may be answered.
    pub expires_in_ms: u64,
}

/// A till's login (`POST /api/v1/node/session`): its device key and its
/// signature, in [`crate::trust::Domain::DeviceLogin`], over
/// [`crate::trust::login_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLogin {
    /// The till's GUID.
    pub device_id: DeviceId,
    /// The till's ed25519 device key.
    pub public_key: crate::manifest::PublicKey,
    /// The challenge the coordinator issued to this till.
    pub challenge: String,
    /// Hex ed25519 signature.
    pub signature: String,
    /// A store enrollment token, for a till the store registry does not list.
    #[serde(default)]
    pub enroll_token: Option<String>,
}

/// Longest challenge or enrollment token accepted in a login.
pub const MAX_LOGIN_FIELD_LEN: usize = 256;

impl DeviceLogin {
    /// Checks the field caps.
    pub fn validate(&self) -> Result<(), String> {
        check_len("challenge", Some(&self.challenge), MAX_LOGIN_FIELD_LEN)?;
        check_len("signature", Some(&self.signature), MAX_LOGIN_FIELD_LEN)?;
        check_len(
            "enroll_token",
            self.enroll_token.as_deref(),
            MAX_LOGIN_FIELD_LEN,
        )
    }
}

/// The answer to a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSession {
    /// False while an operator has not approved the till: no token yet; log
    /// in again later.
    pub approved: bool,
    /// The device token: `Authorization: Bearer <token>` on every node request.
    pub token: Option<String>,
    /// How long the token lasts.
    pub expires_in_ms: u64,
}

/// An error body, as every API of the coordinator returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_version`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), String> {
    match value {
        Some(v) if v.len() > max => Err(format!(
            "{field} is {} bytes, over the limit of {max}",
            v.len()
        )),
        _ => Ok(()),
    }
}

/// Checks a till's reported swarm addresses: at most [`MAX_SWARM_ADDRS`],
/// each with a port, none unspecified, multicast or broadcast (nothing
/// anybody could dial).
pub fn check_swarm_addrs(addrs: &[SocketAddr]) -> Result<(), String> {
    if addrs.len() > MAX_SWARM_ADDRS {
        return Err(format!("at most {MAX_SWARM_ADDRS} swarm_addrs"));
    }
    for a in addrs {
        let ip = a.ip();
        let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
        if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(format!("swarm address {a} cannot be dialled"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_snake_case() {
        assert_eq!(
            serde_json::to_string(&TaskKind::ForcedUpdate).expect("json"),
            "\"forced_update\""
        );
        assert_eq!(
            serde_json::to_string(&TargetState::AwaitingCashier).expect("json"),
            "\"awaiting_cashier\""
        );
        assert!(serde_json::from_str::<TaskKind>("\"reboot\"").is_err());
        assert!("reboot".parse::<TaskKind>().is_err());
        for state in TargetState::ALL {
            assert_eq!(state.as_str().parse::<TargetState>(), Ok(state));
            let json = serde_json::to_string(&state).expect("json");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("Failed".parse::<TargetState>().is_err());
        assert_eq!(TaskKind::Update.as_str(), "update");
    }

    #[test]
    fn finality_depends_on_kind() {
        assert!(TargetState::Downloaded.is_final_for(TaskKind::Download));
        assert!(!TargetState::Downloaded.is_final_for(TaskKind::Update));
        assert!(!TargetState::Declined.is_final_for(TaskKind::Update));
        assert!(TargetState::Skipped.is_final_for(TaskKind::ForcedUpdate));
    }

    #[test]
    fn oversized_text_is_refused() {
        let report = ProgressReport {
            device_id: DeviceId::from_bytes([1; 16]),
            task_id: TaskId(1),
            attempt: 1,
            seq: 1,
            state: TargetState::Failed,
            bytes_done: 0,
            wan_bytes: 0,
            lan_bytes: 0,
            error: None,
            log_tail: Some("x".repeat(MAX_LOG_TAIL_LEN + 1)),
        };
        assert!(report.validate().is_err());
        let huge_seq = ProgressReport {
            log_tail: None,
            seq: u64::MAX,
            ..report
        };
        assert!(huge_seq.validate().is_err());
    }
}
