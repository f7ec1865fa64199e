//! The WAN diagnostics of [`Coordinator`]: recording each chunk served to a
//! till, pruning that log, and a task's per-store report (see [`crate::wan`]).

use tillswarm_protocol::{DeviceId, TaskId};

use super::Coordinator;
use crate::error::Result;
use crate::wan::report::{self, TaskWan, WanQuery};
use crate::wan::{self, ChunkServed};

impl Coordinator {
    /// Records that `device` was served a chunk. Shares the heartbeats'
    /// relaxed group commit (a row per ~1 MiB chunk); a failure is logged,
    /// never passed on: the till has its chunk either way.
    pub async fn record_chunk_served(&self, device: DeviceId, served: ChunkServed) {
        let written = self
            .write_batched(move |tx, now| wan::record(tx, &device, &served, now))
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, %device, "could not record a chunk served");
        }
    }

    /// Task `id`'s WAN report for the stores `query` names.
    pub async fn task_wan(&self, id: TaskId, query: WanQuery) -> Result<TaskWan> {
        let id = id.0 as i64;
        self.read(move |c, _| report::task_wan(c, id, &query)).await
    }

    /// A store's WAN bytes per recent task (`GET /api/v1/stores/{id}/wan`).
    pub async fn store_wan(
        &self,
        store_id: String,
        query: crate::wan::store::StoreWanQuery,
    ) -> Result<crate::wan::store::StoreWanHistory> {
        self.read(move |c, _| crate::wan::store::store_history(c, &store_id, &query))
            .await
    }

    /// Deletes chunk log rows past [`wan::RETENTION_MS`] or beyond
    /// [`wan::MAX_ROWS`], a slice per transaction so other jobs run between.
    pub(crate) async fn prune_chunk_log(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self
                .write(|tx, now| wan::prune_slice(tx, now - wan::RETENTION_MS, wan::MAX_ROWS))
                .await?;
            total += n;
            if n < wan::PRUNE_SLICE as usize {
                return Ok(total);
            }
        }
    }
}
