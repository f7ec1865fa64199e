//! A till's history: the versions it reported running (when, and through
//! which task), its recent task outcomes and its last error.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::operator::rollouts::RolloutId;
use tillswarm_protocol::{DeviceId, TaskId};

use super::Device;
use crate::clock::rfc3339;
use crate::db::get_parsed;
use crate::error::Result;

/// Versions kept per till (older rows are dropped as new ones come).
const KEPT_VERSIONS: i64 = 100;
/// Task outcomes shown.
const RECENT_TASKS: i64 = 20;

pub use tillswarm_protocol::operator::devices::{DeviceDetail, DeviceTaskOutcome, VersionChange};

/// Records that `device` now runs `version` (called when a heartbeat reports
/// a version other than the stored one), naming the install task that was
/// bringing it, if any.
pub fn note_version(
    tx: &Transaction<'_>,
    device: &DeviceId,
    version: &str,
    now_ms: i64,
) -> Result<()> {
    let guid = device.to_string();
    let task: Option<i64> = tx
        .prepare_cached(
            "SELECT t.id FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.device = ?1 AND t.package_version = ?2 AND t.kind <> 'download'
               AND tt.state IN ('installing', 'rebooting', 'installed')
             ORDER BY t.id DESC LIMIT 1",
        )?
        .query_row(params![guid, version], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        "INSERT INTO device_versions (device, version, task_id, at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![guid, version, task, now_ms])?;
    tx.prepare_cached(
        "DELETE FROM device_versions WHERE device = ?1 AND id <= (
             SELECT id FROM device_versions WHERE device = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![guid, KEPT_VERSIONS])?;
    Ok(())
}

/// The till with its history.
pub fn detail(conn: &Connection, device: Device) -> Result<DeviceDetail> {
    let guid = device.guid.to_string();
    let versions = conn
        .prepare_cached(
            "SELECT version, at_ms, task_id FROM device_versions WHERE device = ?1 ORDER BY id DESC",
        )?
        .query_map([&guid], |r| {
            Ok(VersionChange {
                version: r.get(0)?,
                at: rfc3339(r.get(1)?),
                task_id: r.get::<_, Option<i64>>(2)?.map(|t| TaskId(t as u64)),
            })
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    let recent_tasks = conn
        .prepare_cached(
            "SELECT t.id, t.kind, t.package_name, t.package_version, tt.state, tt.error, tt.attempt,
                    t.rollout_id, tt.updated_ms, tt.finished_ms
             FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.device = ?1 ORDER BY t.id DESC LIMIT ?2",
        )?
        .query_map(params![guid, RECENT_TASKS], |r| {
            Ok(DeviceTaskOutcome {
                task_id: TaskId(r.get::<_, i64>(0)? as u64),
                kind: get_parsed(r, 1)?,
                package_name: r.get(2)?,
                package_version: r.get(3)?,
                state: get_parsed(r, 4)?,
                error: r.get(5)?,
                attempt: r.get(6)?,
                rollout_id: r.get::<_, Option<i64>>(7)?.map(RolloutId),
                updated: rfc3339(r.get(8)?),
                finished: r.get::<_, Option<i64>>(9)?.map(rfc3339),
            })
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    // The newest failure, in a task or in an earlier attempt of one.
    let last: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT error, at FROM (
                 SELECT error, updated_ms AS at FROM task_targets
                  WHERE device = ?1 AND state = 'failed' AND error IS NOT NULL
                 UNION ALL
                 SELECT error, finished_ms AS at FROM target_attempts
                  WHERE device = ?1 AND state = 'failed' AND error IS NOT NULL) failures
             ORDER BY at DESC LIMIT 1",
        )?
        .query_row([&guid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(DeviceDetail {
        device,
        versions,
        recent_tasks,
        last_error: last.as_ref().map(|l| l.0.clone()),
        last_error_at: last.map(|l| rfc3339(l.1)),
    })
}
