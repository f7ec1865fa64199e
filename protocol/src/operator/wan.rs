//! A task's WAN report per store (`GET /api/v1/tasks/{id}/wan`): the bytes
//! of the task's package served to each store's tills against the package's
//! size, the chunks served more than once and to which tills, and the tills
//! whose swarm reported no store peer; and a store's WAN bytes per recent
//! task (`GET /api/v1/stores/{id}/wan`).

use serde::{Deserialize, Serialize};

use crate::api::TaskKind;
use crate::id::{ChunkHash, DeviceId, PackageId, StoreId, TaskId};
use crate::operator::tasks::TaskStatus;

/// A task's WAN report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TaskWan {
    /// The task.
    pub task_id: TaskId,
    /// Its package.
    pub package_id: PackageId,
    /// The package's size in bytes.
    pub package_size: u64,
    /// Distinct chunks in the package's manifest.
    pub package_chunks: u64,
    /// Chunks served from this time on count (the task's creation).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub since: String,
    /// Stores with tills in the task (1 with `?store=`).
    pub stores_total: u64,
    /// 1-based page of stores.
    pub page: u64,
    /// Stores per page.
    pub per_page: u64,
    /// This page's stores, by store id.
    pub stores: Vec<StoreWan>,
}

/// One store's WAN account for a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreWan {
    /// Store id.
    pub store_id: StoreId,
    /// Store name.
    pub store_name: Option<String>,
    /// The store's tills in the task.
    pub tills: u64,
    /// The package's size in bytes.
    pub package_size: u64,
    /// Bytes of the package's chunks served to the store's tills.
    pub wan_bytes: u64,
    /// `wan_bytes` / package size: 1.0 means the package crossed the link once.
    pub wan_ratio: f64,
    /// Chunk requests served (a resumed range is not another one).
    pub fetches: u64,
    /// Chunks served to the store more than once.
    pub duplicate_chunks_total: u64,
    /// The first of them (at most 100), most served first.
    pub duplicate_chunks: Vec<DuplicateChunk>,
    /// Tills of the store in the task whose last heartbeat reported no
    /// connected store peer, or no count at all (none in a store of one till).
    pub unconnected_tills_total: u64,
    /// The first of them (at most 100), by till number.
    pub unconnected_tills: Vec<UnconnectedTill>,
}

/// A chunk that crossed a store's link more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DuplicateChunk {
    /// The chunk.
    pub hash: ChunkHash,
    /// Its length in bytes.
    pub length: u64,
    /// Times it was served to the store's tills.
    pub fetches: u64,
    /// Which tills fetched it, and how often.
    pub tills: Vec<ChunkFetcher>,
}

/// A till that fetched a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChunkFetcher {
    /// Till GUID.
    pub device: DeviceId,
    /// Till name, from the registry.
    pub name: Option<String>,
    /// Times it fetched the chunk.
    pub fetches: u64,
    /// Whether the till is a target of this task.
    pub in_task: bool,
}

/// A till that was not connected to the rest of its store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UnconnectedTill {
    /// Till GUID.
    pub device: DeviceId,
    /// Till name, from the registry.
    pub name: Option<String>,
    /// Store peers at its last heartbeat: 0, or `None` when it never
    /// reported a count.
    pub connected_peers: Option<u32>,
    /// Its last heartbeat.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_seen: Option<String>,
}

/// `GET /api/v1/stores/{id}/wan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreWanHistory {
    /// The store.
    pub store_id: StoreId,
    /// Its name, if the registry gave one.
    pub store_name: Option<String>,
    /// Its recent tasks, newest first.
    pub tasks: Vec<StoreTaskWan>,
}

/// One task's WAN bytes into one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoreTaskWan {
    /// The task.
    pub task_id: TaskId,
    /// `download`, `update` or `forced_update`.
    pub kind: TaskKind,
    /// The task's status.
    pub status: TaskStatus,
    /// Its package.
    pub package_id: PackageId,
    /// The package's name.
    pub package_name: String,
    /// The package's version.
    pub package_version: String,
    /// The package's content size in bytes.
    pub package_size: u64,
    /// Its chunks' bytes as sent (compressed where that saves), when the
    /// package is still held.
    pub wire_size: Option<u64>,
    /// Bytes of the package served to the store's tills since the task was
    /// created.
    pub wan_bytes: u64,
    /// `wan_bytes / package_size` (`null` for an empty package).
    pub wan_ratio: Option<f64>,
    /// The store's tills in the task.
    pub tills: u64,
    /// When the task was created (RFC 3339).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created: String,
}
