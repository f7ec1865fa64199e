//! The live change stream (`GET /api/v1/events`): each `event: change`
//! frame's data is one [`Change`], naming what changed (the panel re-reads it
//! through the API), never its contents.

use serde::{Deserialize, Serialize};

use crate::api::TargetState;
use crate::id::{DeviceId, PackageId, TaskId};
use crate::operator::groups::GroupId;
use crate::operator::rollouts::RolloutId;

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A task was created, changed status (activated, paused, resumed,
    /// restarted, completed) or was deleted.
    Task {
        /// The task.
        task_id: TaskId,
    },
    /// A till reported progress on a task.
    Target {
        /// The task.
        task_id: TaskId,
        /// The till.
        guid: DeviceId,
        /// The state it reported.
        state: TargetState,
    },
    /// A till's state, version or approval changed, or it was removed.
    Device {
        /// The till.
        guid: DeviceId,
    },
    /// A rollout was created or moved on (a wave started, a gate paused it,
    /// an operator paused, resumed, approved or cancelled it).
    Rollout {
        /// The rollout.
        rollout_id: RolloutId,
    },
    /// A package was uploaded or deleted.
    Package {
        /// The package, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        package_id: Option<PackageId>,
    },
    /// A group was created, changed or deleted.
    Group {
        /// The group, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_id: Option<GroupId>,
    },
    /// A till type's settings changed.
    TillType,
}
