//! Groups of tills that tasks and rollout waves target: `All`, `Even` and
//! `Odd` are built in, custom groups list their members.

use serde::{Deserialize, Serialize};

use super::{names, row_id};
use crate::id::DeviceId;

row_id!(
    /// A group, numbered by the coordinator (1, 2, 3 are All, Even, Odd).
    GroupId
);

impl GroupId {
    /// The built-in group of every approved till.
    pub const ALL: GroupId = GroupId(1);
}

names! {
    /// How a group's members are decided.
    pub enum GroupKind ("group kind") {
        /// Every approved till (built in).
        All = "all",
        /// Tills with an even number in their store (built in).
        Even = "even",
        /// Tills with an odd number in their store (built in).
        Odd = "odd",
        /// The tills an operator listed.
        Custom = "custom",
    }
}

impl GroupKind {
    /// Built-in groups cannot be edited or deleted.
    pub fn is_builtin(self) -> bool {
        self != Self::Custom
    }
}

/// A group as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Group {
    /// Group id.
    pub id: GroupId,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Built in (`all`, `even`, `odd`) or `custom`.
    pub kind: GroupKind,
    /// Built-in groups cannot be edited or deleted.
    pub builtin: bool,
    /// Tills in the group now.
    pub member_count: u64,
    /// The members' GUIDs (only in single-group answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<DeviceId>>,
}

/// A new group (`POST /api/v1/groups`, where `name` is required), or the
/// fields to change in one (`PUT`/`PATCH /api/v1/groups/{id}`; absent fields
/// stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// Name (required on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Members' GUIDs (replaces the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<DeviceId>>,
}
