//! Tills and stores as operators see them: the store registry's rows, the
//! listing of tills with what each last reported, and a till's history.

use serde::{Deserialize, Serialize};

use super::names;
use crate::api::{TargetState, TaskKind};
use crate::id::{DeviceId, StoreId, TaskId};
use crate::operator::rollouts::RolloutId;

/// One till as the store registry lists it (a row of `POST /api/v1/devices/import`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegistryEntry {
    /// The till's GUID on its till server.
    pub guid: DeviceId,
    /// The till's name, e.g. `Till 3`.
    pub till_name: String,
    /// The till's number in its store (decides Even/Odd).
    pub till_number: u32,
    /// The store's id.
    pub store_id: StoreId,
    /// The store's name.
    pub store_name: String,
    /// The store's address.
    #[serde(default)]
    pub store_address: String,
    /// The till type, which selects its update settings.
    #[serde(default = "default_till_type")]
    pub till_type: String,
    /// The store's IANA time zone, e.g. `Europe/Moscow` (informational).
    #[serde(default)]
    pub time_zone: String,
}

fn default_till_type() -> String {
    "standard".into()
}

/// What a registry import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportSummary {
    /// Rows read.
    pub rows: usize,
    /// Stores created or updated.
    pub stores: usize,
    /// Tills new to the coordinator.
    pub devices_added: usize,
    /// Tills already known (pending ones become approved).
    pub devices_updated: usize,
}

names! {
    /// Whether a till may take part in tasks.
    pub enum DeviceStatus ("device status") {
        /// Listed by the registry or approved by an admin.
        Approved = "approved",
        /// Heard from but not approved: no assignments.
        Pending = "pending",
    }
}

names! {
    /// Why the version a till reports is not taken at its word.
    pub enum VersionFlag ("version flag") {
        /// Above every published package (a till cannot run what was never
        /// published): tasks do not skip the till on its word.
        UnknownVersion = "unknown_version",
    }
}

names! {
    /// What a till is doing as operators see it: the
    /// [`DeviceState`](crate::api::DeviceState) it reported, except that an
    /// idle till whose last install failed shows `install_failed` until an
    /// install succeeds.
    pub enum ShownState ("device state") {
        /// In sale mode, nothing to do.
        Ready = "ready",
        /// Fetching or sharing a package.
        Downloading = "downloading",
        /// An update is staged and the cashier has been asked.
        AwaitingCashier = "awaiting_cashier",
        /// Waiting for the sale in progress to end before installing.
        WaitingForSaleEnd = "waiting_for_sale_end",
        /// Out of sale mode, installing.
        Installing = "installing",
        /// Rebooting after an install.
        Rebooting = "rebooting",
        /// The node hit an error it cannot recover from by itself.
        Error = "error",
        /// Idle, and its last install failed.
        InstallFailed = "install_failed",
    }
}

/// A till as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Device {
    /// GUID.
    pub guid: DeviceId,
    /// Name from the registry.
    pub name: Option<String>,
    /// Number in its store, from the registry.
    pub number: Option<u32>,
    /// Store id, from the registry.
    pub store_id: Option<StoreId>,
    /// Store name.
    pub store_name: Option<String>,
    /// Store address.
    pub store_address: Option<String>,
    /// Till type, from the registry.
    pub till_type: Option<String>,
    /// Approved or pending.
    pub status: DeviceStatus,
    /// Whether the registry lists it.
    pub in_registry: bool,
    /// Heard from within the last 120 seconds.
    pub online: bool,
    /// Version the till runs, as it reported.
    pub version: Option<String>,
    /// Set when the reported version is not trusted.
    pub version_flag: Option<VersionFlag>,
    /// What the till last reported it wants operators to know, e.g.
    /// `stale_instructions` (no fresh signed timestamp reached it in time).
    pub warnings: Vec<String>,
    /// What the till is doing, as it reported.
    pub state: Option<ShownState>,
    /// Its LAN address.
    pub ip: Option<String>,
    /// Its libp2p peer id.
    pub peer_id: Option<String>,
    /// Where its store swarm listens (`ip:port`), as it reported; its
    /// store's other tills are told to dial these.
    #[serde(default)]
    pub swarm_addrs: Vec<String>,
    /// How many of its store's tills its swarm was connected to at its last
    /// heartbeat (`None`: it reported no count, e.g. a node without a swarm).
    #[serde(default)]
    pub connected_peers: Option<u32>,
    /// Free bytes on its update volume.
    pub free_disk_bytes: Option<u64>,
    /// Last heartbeat (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_seen: Option<String>,
    /// The till's device key (64 hex), bound at its first login; `None`
    /// until then, or after an admin reset it.
    pub public_key: Option<String>,
    /// When the key was bound (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub key_bound_at: Option<String>,
}

/// A store with its till counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Store {
    /// Store id.
    pub id: StoreId,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Tills in the registry for this store.
    pub tills: u32,
    /// Of which online now.
    pub online: u32,
}

/// One change of the version a till runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VersionChange {
    /// The version it ran from then.
    pub version: String,
    /// When the coordinator first heard it (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
    /// The install task that brought it, if one did.
    pub task_id: Option<TaskId>,
}

/// The till's part in one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceTaskOutcome {
    /// Task id.
    pub task_id: TaskId,
    /// The task's type.
    pub kind: TaskKind,
    /// Package name.
    pub package_name: String,
    /// Package version.
    pub package_version: String,
    /// The till's state in it.
    pub state: TargetState,
    /// Why it failed.
    pub error: Option<String>,
    /// Attempt number.
    pub attempt: u32,
    /// The rollout the task is a wave of.
    pub rollout_id: Option<RolloutId>,
    /// Last report (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub updated: String,
    /// When it became final (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub finished: Option<String>,
}

/// A till with its history (`GET /api/v1/devices/{guid}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceDetail {
    /// The till as listed.
    #[serde(flatten)]
    pub device: Device,
    /// Versions it ran, newest first.
    pub versions: Vec<VersionChange>,
    /// Its most recent tasks, newest first.
    pub recent_tasks: Vec<DeviceTaskOutcome>,
    /// Its latest failure in any task.
    pub last_error: Option<String>,
    /// When that failure was reported (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_error_at: Option<String>,
}
