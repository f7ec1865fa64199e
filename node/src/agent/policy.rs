//! The task policy: what the agent does next with one task, decided from the
//! task and the facts around it (installed version, boot, clock, settings, the
//! cashier's answer). Pure: no I/O, no locks; the loop carries the decision out.
//!
//! The rules are the seed's, per task type:
//! - **Download**: fetch, verify, stage; done.
//! - **Update**: stage, then ask the cashier. Declined: ask again after the
//!   next restart. Accepted, or unanswered within `autoUpdateTimeout`
//!   minutes: install. Timeout unset: never ask (a manual install only).
//! - **Forced update**: stage, then install at the task's time, unasked.
//!
//! Never a downgrade (unless the task is an explicit rollback), and nothing
//! new starts on the coordinator's word while its instructions are stale.

use tillswarm_protocol::api::{Assignment, DeviceState, TargetState, TaskKind};
use tillswarm_protocol::{TaskId, Version};

use crate::local_api::Answer;
use crate::state::{DROP_IN_TASK, LocalTask};

/// What the policy sees besides the task.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// The version the till runs.
    pub installed: Option<&'a Version>,
    /// This start's boot number.
    pub boot: u64,
    /// The injectable clock, in ms since the Unix epoch.
    pub now_ms: i64,
    /// The chain's `autoUpdateTimeout` (`None`: never ask).
    pub auto_update_timeout_minutes: Option<u32>,
    /// No fresh signed timestamp came in time: start nothing new.
    pub stale: bool,
    /// An install job runs (one install at a time; no prompt meanwhile).
    pub installing: bool,
    /// The cashier's answer to this task's prompt, if one came.
    pub answer: Option<Answer>,
}

/// The next step for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing to do now.
    Wait,
    /// Not newer than what runs: skip it, with the reason operators see.
    Skip(String),
    /// Fetch, verify and stage the package.
    Download,
    /// Install now (accepted, timed out, forced, or manual).
    Install,
    /// Start asking the cashier; the prompt expires at `deadline_ms`.
    Ask {
        /// When an unanswered prompt installs.
        deadline_ms: i64,
    },
    /// Keep the prompt up (it may have been closed by a restart).
    KeepAsking {
        /// When an unanswered prompt installs.
        deadline_ms: i64,
    },
    /// The cashier declined: ask again after the next restart.
    Decline,
    /// The timeout setting was removed while asking: close the prompt.
    StopAsking,
    /// Declined before this boot: staged again, so it is asked again.
    AskAgain,
    /// The node died while `up.sh` ran.
    Interrupted,
    /// The till came back up on the task's version.
    Installed,
}

/// Why an interrupted install failed (operators read it in the task).
pub(super) const INTERRUPTED: &str =
    "install interrupted (node restarted while up.sh ran); restart the task to reinstall";

/// The next step for `task` (not one a job is busy with).
pub(super) fn next_action(task: &LocalTask, f: &Facts) -> Action {
    let a = &task.assignment;
    let moves_on = matches!(
        task.state,
        TargetState::Pending
            | TargetState::Downloading
            | TargetState::Downloaded
            | TargetState::AwaitingCashier
    );
    if f.stale && moves_on && a.task_id != DROP_IN_TASK {
        return Action::Wait;
    }
    match task.state {
        TargetState::Pending | TargetState::Downloading => {
            if is_not_newer(a, f.installed) {
                Action::Skip(format!(
                    "skipped: the till runs {}, not older than {}",
                    f.installed.map_or("?", |v| v.as_str()),
                    a.version
                ))
            } else {
                Action::Download
            }
        }
        TargetState::Downloaded => after_download(a, f),
        TargetState::AwaitingCashier if f.installing => Action::Wait,
        TargetState::AwaitingCashier => {
            let Some(minutes) = f.auto_update_timeout_minutes else {
                return Action::StopAsking;
            };
            let deadline_ms = task.asked_ms.unwrap_or(f.now_ms) + i64::from(minutes) * 60_000;
            match f.answer {
                Some(Answer::Accept) => Action::Install,
                Some(Answer::Decline) => Action::Decline,
                None if f.now_ms >= deadline_ms => Action::Install,
                None => Action::KeepAsking { deadline_ms },
            }
        }
        TargetState::Declined if task.declined_boot != Some(f.boot) => Action::AskAgain,
        TargetState::Installing => Action::Interrupted,
        TargetState::Rebooting if f.installed == Some(&a.version) => Action::Installed,
        TargetState::Declined
        | TargetState::Rebooting
        | TargetState::Installed
        | TargetState::Failed
        | TargetState::Skipped => Action::Wait,
    }
}

/// Staged: what the task's type says comes next.
fn after_download(a: &Assignment, f: &Facts) -> Action {
    let now_unix = (f.now_ms.max(0) / 1000) as u64;
    if a.kind != TaskKind::Download
        && (a.hold_install || a.install_until_unix.is_some_and(|u| now_unix >= u))
    {
        // The coordinator has not let this till install yet (a few tills of
        // the store at a time, inside the store's window).
        return Action::Wait;
    }
    match a.kind {
        TaskKind::Download => Action::Wait,
        TaskKind::Update => match f.auto_update_timeout_minutes {
            Some(minutes) => Action::Ask {
                deadline_ms: f.now_ms + i64::from(minutes) * 60_000,
            },
            // No timeout configured: never ask; wait for a manual install.
            None => Action::Wait,
        },
        TaskKind::ForcedUpdate => {
            let at = a.install_at_unix.map_or(0, |s| s as i64 * 1000);
            if f.now_ms >= at {
                Action::Install
            } else {
                Action::Wait
            }
        }
    }
}

/// True when the till already runs this version or a newer one (and the task
/// is not an explicit rollback): nothing to do, never downgrade.
pub(super) fn is_not_newer(a: &Assignment, installed: Option<&Version>) -> bool {
    match installed {
        Some(v) if a.rollback => *v == a.version,
        Some(v) => *v >= a.version,
        None => false,
    }
}

/// The staged update a manual install (`tillswarm node install`) installs:
/// the newest one staged, asking, or declined.
pub(super) fn manual_install_candidate(tasks: &[LocalTask]) -> Option<&LocalTask> {
    tasks
        .iter()
        .filter(|t| {
            t.assignment.kind != TaskKind::Download
                && matches!(
                    t.state,
                    TargetState::Downloaded | TargetState::AwaitingCashier | TargetState::Declined
                )
        })
        .max_by(|a, b| a.assignment.version.cmp(&b.assignment.version))
}

/// What the till is doing, for heartbeats and the local interface.
pub(super) fn activity(
    tasks: &[LocalTask],
    busy: impl Fn(TaskId) -> bool,
    waiting_for_sale: bool,
) -> DeviceState {
    if tasks.iter().any(|t| t.state == TargetState::Installing) {
        DeviceState::Installing
    } else if tasks
        .iter()
        .any(|t| t.state == TargetState::AwaitingCashier)
    {
        DeviceState::AwaitingCashier
    } else if waiting_for_sale {
        DeviceState::WaitingForSaleEnd
    } else if tasks.iter().any(|t| busy(t.assignment.task_id)) {
        DeviceState::Downloading
    } else {
        DeviceState::Ready
    }
}

#[cfg(test)]
mod tests;
