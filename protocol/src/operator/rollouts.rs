//! Rollouts: one package delivered in ordered waves (each wave an ordinary
//! task), with a gate between waves.
//!
//! States: `draft` -> `running` <-> `waiting_for_approval`, `paused` (with a
//! reason), then `completed`, `completed_with_failures` or `cancelled`.

use serde::{Deserialize, Serialize};

use super::groups::GroupId;
use super::tasks::Window;
use super::{names, row_id};
use crate::api::TaskKind;
use crate::id::{PackageId, StoreId, TaskId};

row_id!(
    /// A rollout, numbered by the coordinator.
    RolloutId
);

/// The recommended template's name.
pub const TEMPLATE_PILOT_EVEN_ODD: &str = "pilot-even-odd";

/// A rollout as an operator submits it (`POST /api/v1/rollouts`): explicit
/// waves, or a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// Shown in lists (default: the package's name and version).
    #[serde(default)]
    pub name: Option<String>,
    /// The package delivered by every wave.
    pub package_id: PackageId,
    /// `pilot-even-odd`: the recommended waves (then `waves` stays empty).
    /// Text, so that an unknown template is refused with its own error code
    /// (`unknown_template`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["pilot-even-odd"])))]
    pub template: Option<String>,
    /// The waves, in order.
    #[serde(default)]
    pub waves: Vec<WaveSpec>,
    /// The store-local maintenance window for waves activated `in_window`.
    #[serde(default)]
    pub window: Option<Window>,
    /// This many failed tills in one store stop that store's part of the
    /// remaining waves (default 1).
    #[serde(default)]
    pub store_failure_limit: Option<u32>,
    /// Create without starting (`resume` starts it).
    #[serde(default)]
    pub draft: bool,
    /// Settings of the template.
    #[serde(default)]
    pub template_options: TemplateOptions,
}

/// Settings of the `pilot-even-odd` template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateOptions {
    /// The pilot till of each store, by till number (default 1).
    #[serde(default)]
    pub pilot_till_number: Option<u32>,
    /// Minutes each wave must hold before the next starts (default 60).
    #[serde(default)]
    pub soak_minutes: Option<u32>,
    /// The Even wave waits for an approver after the pilots (default true).
    #[serde(default)]
    pub approval_after_pilot: Option<bool>,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    /// Shown name (`Pilot`, `Even`).
    pub name: String,
    /// The task type of the wave.
    pub kind: TaskKind,
    /// Which tills.
    pub targets: WaveTargets,
    /// When the wave's task starts once the wave's turn comes.
    #[serde(default)]
    pub activation: Activation,
    /// What must hold before the next wave.
    #[serde(default)]
    pub gate: Gate,
    /// At most this many tills of one store install at once (default: half
    /// the store's tills, at least one).
    #[serde(default)]
    pub max_installing_per_store: Option<u32>,
    /// Automatic retries of a failed install (default 0).
    #[serde(default)]
    pub install_retries: Option<u32>,
}

/// The tills of a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WaveTargets {
    /// A group's members (All, Even, Odd or a custom one such as a pilot group).
    Group {
        /// The group.
        group_id: GroupId,
    },
    /// The till with this number in each store (the stores' pilot tills).
    TillNumber {
        /// Till number, from 1.
        till_number: u32,
    },
    /// Every till of this share of the stores, picked in turn from each time
    /// zone (the chain's regions) so the share is spread across them.
    StoresPercent {
        /// 1 to 100.
        percent: u32,
    },
}

/// When a wave's task starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Activation {
    /// As soon as the previous wave's gate passes.
    #[default]
    Immediately,
    /// Not before this RFC 3339 time.
    At {
        /// RFC 3339.
        #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
        at: String,
    },
    /// At once (downloads pre-stage), but installs only inside the rollout's
    /// window, in each store's local time.
    InWindow,
}

/// The gate after a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Gate {
    /// Share of the wave's targets (skipped ones excluded) that must be done
    /// (installed; downloaded for a Download wave), 0 to 100. Default 100.
    pub success_percent: u32,
    /// Then wait for an approver (else go on automatically).
    pub approval: bool,
    /// Pause the rollout once this many of the wave's tills failed.
    pub max_failed: Option<u32>,
    /// Pause the rollout once more than this share (0 to 100) failed.
    pub max_failed_percent: Option<u32>,
    /// Minutes the success must hold before the next wave starts.
    pub soak_minutes: u32,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            success_percent: 100,
            approval: false,
            max_failed: None,
            max_failed_percent: None,
            soak_minutes: 0,
        }
    }
}

names! {
    /// Where a rollout stands.
    pub enum RolloutState ("rollout state") {
        /// Created without starting (`resume` starts it).
        Draft = "draft",
        /// Its waves are being delivered.
        Running = "running",
        /// A gate waits for an approver.
        WaitingForApproval = "waiting_for_approval",
        /// Stopped, by an operator or by a gate's error threshold (with a reason).
        Paused = "paused",
        /// Every wave passed.
        Completed = "completed",
        /// Every wave ran, some tills failed.
        CompletedWithFailures = "completed_with_failures",
        /// Stopped for good by an operator.
        Cancelled = "cancelled",
    }
}

impl RolloutState {
    /// Whether the rollout is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithFailures | Self::Cancelled
        )
    }
}

names! {
    /// Where one wave of a rollout stands.
    pub enum WaveState ("wave state") {
        /// Its turn has not come.
        Waiting = "waiting",
        /// Its task runs; the success threshold is not met yet.
        Running = "running",
        /// The threshold is met and must hold for the soak time.
        Soaking = "soaking",
        /// The gate waits for an approver.
        WaitingForApproval = "waiting_for_approval",
        /// The gate opened for the next wave.
        Passed = "passed",
    }
}

/// A store whose part of a rollout was stopped by its failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PausedStore {
    /// Store id.
    pub store_id: StoreId,
    /// Why.
    pub reason: String,
    /// When.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub at: String,
}

/// One wave with its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WaveView {
    /// Position, from 0.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Task type.
    pub kind: TaskKind,
    /// Where it stands.
    pub state: WaveState,
    /// The wave as created (targets, activation, gate).
    pub spec: WaveSpec,
    /// Its task, once started.
    pub task_id: Option<TaskId>,
    /// Tills in the wave.
    pub targets: u64,
    /// Installed (Download: downloaded).
    pub installed: u64,
    /// Failed, no retry left.
    pub failed: u64,
    /// Already at the version.
    pub skipped: u64,
    /// Done as a share of the tills not skipped, 0 to 100.
    pub success_percent: f64,
    /// When its task was created.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub started_at: Option<String>,
    /// When it first met its success threshold.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub passed_at: Option<String>,
    /// When its gate opened for the next wave.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub finished_at: Option<String>,
    /// Who approved the next wave.
    pub approved_by: Option<String>,
    /// When.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub approved_at: Option<String>,
}

/// A rollout with its waves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Rollout {
    /// Id.
    pub id: RolloutId,
    /// Name.
    pub name: String,
    /// Package id.
    pub package_id: PackageId,
    /// Package name.
    pub package_name: String,
    /// Package version.
    pub package_version: String,
    /// Where it stands.
    pub state: RolloutState,
    /// Why it is paused or waiting.
    pub reason: Option<String>,
    /// The wave running or next, from 0.
    pub current_wave: u32,
    /// The store-local maintenance window.
    pub window: Option<Window>,
    /// Failed tills of one store that stop that store's part.
    pub store_failure_limit: u32,
    /// Who created it.
    pub created_by: String,
    /// When.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created: String,
    /// When it started running.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub started: Option<String>,
    /// When it ended.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub finished: Option<String>,
    /// The waves in order.
    pub waves: Vec<WaveView>,
    /// Stores it stopped.
    pub paused_stores: Vec<PausedStore>,
}
