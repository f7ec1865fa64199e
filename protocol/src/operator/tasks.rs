//! Tasks as operators create and read them: a package delivered to a group
//! of tills, each till's state in it, per store traffic and maintenance
//! windows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::groups::GroupId;
use super::names;
use super::rollouts::RolloutId;
use crate::api::{TargetState, TaskKind};
use crate::id::{DeviceId, PackageId, StoreId, TaskId};

/// A store-local maintenance window as operators write it: local clock times
/// and weekdays, evaluated in each store's IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM`; earlier than `start` only with `crosses_midnight`.
    pub end: String,
    /// Days the window starts on (`mon` .. `sun`; the coordinator also takes
    /// them in any case, padded); empty: every day.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("items" = {
            "type": "string",
            "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        }))
    )]
    pub days: Vec<String>,
    /// The window ends the next day (`22:00`-`04:00`); must be set exactly
    /// when `end` is earlier than `start`.
    #[serde(default)]
    pub crosses_midnight: bool,
}

/// A new task as an operator submits it (`POST /api/v1/tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// Download, update or forced_update.
    pub kind: TaskKind,
    /// The package to deliver.
    pub package_id: PackageId,
    /// The group of tills, taken at activation.
    pub group_id: GroupId,
    /// RFC 3339 time to activate (the seed's Timer); absent: immediately.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub activate_at: Option<String>,
    /// Allow installing a version older than the till runs.
    #[serde(default)]
    pub rollback: bool,
    /// Install only inside this store-local maintenance window (downloads
    /// still pre-stage outside it; an Update asks the cashier only inside it).
    #[serde(default)]
    pub window: Option<Window>,
    /// At most this many tills of one store install at once (default: half
    /// the store's tills, at least one).
    #[serde(default)]
    pub max_installing_per_store: Option<u32>,
    /// A failed install is retried automatically this many times (with
    /// backoff), each attempt's log kept. Default 0.
    #[serde(default)]
    pub install_retries: Option<u32>,
}

names! {
    /// Where a task stands: `scheduled` (waiting for its time) -> `running`
    /// (targets taken from the group at activation) -> `completed` or
    /// `completed_with_failures` (every target final), with `paused` beside
    /// running and scheduled.
    pub enum TaskStatus ("task status") {
        /// Waiting for its activation time.
        Scheduled = "scheduled",
        /// Activated: tills are working on it.
        Running = "running",
        /// Stopped by an operator; tills get no assignment from it.
        Paused = "paused",
        /// Every target is final and none failed.
        Completed = "completed",
        /// Every target is final, some failed.
        CompletedWithFailures = "completed_with_failures",
    }
}

impl TaskStatus {
    /// Whether it is one of the two final statuses.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::CompletedWithFailures)
    }
}

/// Counts of targets per state (the state's name: every
/// [`TargetState`], sorted by name, plus `unreachable` in details).
pub type StateCounts = BTreeMap<String, u64>;

/// A task as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TaskSummary {
    /// Task id.
    pub id: TaskId,
    /// Task type.
    pub kind: TaskKind,
    /// Where it stands.
    pub status: TaskStatus,
    /// Package id.
    pub package_id: PackageId,
    /// Package name.
    pub package_name: String,
    /// Package version.
    pub package_version: String,
    /// Package size in bytes.
    pub package_size: u64,
    /// Group id (absent once the group is deleted).
    pub group_id: Option<GroupId>,
    /// Group name at creation.
    pub group_name: String,
    /// When it activates (absent: immediately).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub activate_at: Option<String>,
    /// When it activated.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub activated: Option<String>,
    /// When it completed.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub completed: Option<String>,
    /// When it was created.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created: String,
    /// Explicit rollback.
    pub rollback: bool,
    /// Bumped by each restart.
    pub attempt: u32,
    /// Targets.
    pub targets: u64,
    /// Targets per state.
    pub states: StateCounts,
    /// Bytes fetched from the coordinator by all targets.
    pub wan_bytes: u64,
    /// Bytes fetched from peers by all targets.
    pub lan_bytes: u64,
    /// The rollout this task is a wave of.
    pub rollout_id: Option<RolloutId>,
    /// The store-local maintenance window installs wait for.
    pub window: Option<Window>,
    /// At most this many tills of a store install at once (absent: half the
    /// store's tills, at least one).
    pub max_installing_per_store: Option<u32>,
    /// Automatic retries of a failed install.
    pub install_retries: u32,
    /// Unfinished targets not heard from for the unreachable time (task
    /// details only; counted apart from failed).
    #[serde(default)]
    pub unreachable: u64,
}

/// One till in a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TargetDetail {
    /// Till GUID.
    pub device: DeviceId,
    /// Till name.
    pub name: Option<String>,
    /// Till number.
    pub number: Option<u32>,
    /// Store id.
    pub store_id: Option<StoreId>,
    /// State in the task.
    pub state: TargetState,
    /// Verified bytes so far.
    pub bytes_done: u64,
    /// Fraction done, 0..=1.
    pub progress: f64,
    /// Bytes from the coordinator.
    pub wan_bytes: u64,
    /// Bytes from peers.
    pub lan_bytes: u64,
    /// Failure reason.
    pub error: Option<String>,
    /// End of the install log.
    pub log_tail: Option<String>,
    /// First activity.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub started: Option<String>,
    /// Last report.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub updated: String,
    /// Reached a final state.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub finished: Option<String>,
    /// Automatic retries used so far.
    pub retries: u32,
    /// When the next automatic retry starts.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub retry_at: Option<String>,
    /// When the till reported that its install started (this attempt).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub install_started: Option<String>,
    /// Holds an install permit (may ask or install now).
    pub install_permit: bool,
    /// Not final and not heard from for the unreachable time.
    #[serde(default)]
    pub unreachable: bool,
    /// When the till was last heard from.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_seen: Option<String>,
    /// Earlier attempts (automatic retries, restarts), oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptLog>,
}

/// One earlier attempt of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttemptLog {
    /// Attempt number.
    pub attempt: u32,
    /// How it ended.
    pub state: TargetState,
    /// Why it failed.
    pub error: Option<String>,
    /// End of its install log.
    pub log_tail: Option<String>,
    /// When it ended.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub finished: String,
}

/// A store's next maintenance window for a windowed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreWindow {
    /// Store id.
    pub store_id: StoreId,
    /// The store's IANA zone (the default zone when it names none).
    pub time_zone: String,
    /// Whether the window is open now.
    pub open: bool,
    /// Start of the current or next occurrence, UTC.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub start: Option<String>,
    /// The same, in the store's local time with its offset.
    pub start_local: Option<String>,
    /// End of that occurrence, UTC.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub end: Option<String>,
}

/// WAN use of one store in one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreTraffic {
    /// Store id (`-` for tills without a store).
    pub store_id: String,
    /// Targets in the store.
    pub tills: u64,
    /// Bytes the store's tills fetched over the WAN.
    pub wan_bytes: u64,
    /// Bytes they fetched from each other.
    pub lan_bytes: u64,
    /// WAN bytes / package size: 1.0 means the package crossed the link once.
    pub wan_ratio: f64,
}

/// A task with its per-till and per-store details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TaskDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: TaskSummary,
    /// Each till.
    pub target_details: Vec<TargetDetail>,
    /// Each store's traffic.
    pub stores: Vec<StoreTraffic>,
    /// Each store's current or next window (tasks with a window).
    #[serde(default)]
    pub windows: Vec<StoreWindow>,
    /// True when `target_details` and `stores` were left out (the answer to
    /// creating a task for more than 1,000 tills; read them with the task's
    /// GET).
    #[serde(default)]
    pub details_omitted: bool,
}

/// Body of `POST /api/v1/tasks/{id}/group`: a custom group of the task's
/// tills in some states (to retry the failed ones, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskGroupInput {
    /// The new group's name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Target states to take; default `["failed"]`. Kept as text so that a
    /// name no [`TargetState`] has is refused with its own error code
    /// (`invalid_state`); the schema names the accepted states.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<Vec<TargetState>>"))]
    pub states: Option<Vec<String>>,
}
