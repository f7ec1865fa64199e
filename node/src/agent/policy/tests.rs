//! The seed's rules, one by one, against [`next_action`].

use tillswarm_protocol::PackageId;

use super::*;

const MIN: i64 = 60_000;
const NOW: i64 = 1_700_000_000_000;

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

fn task(kind: TaskKind, version: &str, state: TargetState) -> LocalTask {
    LocalTask {
        assignment: Assignment {
            task_id: TaskId(7),
            kind,
            package_id: PackageId::of(b"p"),
            package_name: "pos".into(),
            version: v(version),
            size: 10,
            install_at_unix: None,
            rollback: false,
            attempt: 1,
            join_by_unix_ms: None,
            store_peers: Vec::new(),
            store_holders: Vec::new(),
            hold_install: false,
            install_until_unix: None,
        },
        state,
        bytes_done: 0,
        wan_bytes: 0,
        lan_bytes: 0,
        error: None,
        log_tail: None,
        declined_boot: None,
        asked_ms: None,
        unreported: false,
        change: 0,
    }
}

fn facts(installed: Option<&Version>) -> Facts<'_> {
    Facts {
        installed,
        boot: 3,
        now_ms: NOW,
        auto_update_timeout_minutes: Some(10),
        stale: false,
        installing: false,
        answer: None,
    }
}

#[test]
fn a_newer_package_downloads_and_an_older_or_equal_one_is_skipped_with_a_reason() {
    let old = v("1.0");
    let t = task(TaskKind::Update, "1.1", TargetState::Pending);
    assert_eq!(next_action(&t, &facts(Some(&old))), Action::Download);
    assert_eq!(next_action(&t, &facts(None)), Action::Download);
    let resumed = task(TaskKind::Update, "1.1", TargetState::Downloading);
    assert_eq!(next_action(&resumed, &facts(Some(&old))), Action::Download);
    for runs in ["1.1", "2.0"] {
        let installed = v(runs);
        let Action::Skip(why) = next_action(&t, &facts(Some(&installed))) else {
            panic!("not skipped at {runs}");
        };
        assert!(why.contains(runs) && why.contains("1.1"), "{why}");
    }
}

#[test]
fn a_rollback_installs_an_older_version_but_not_the_running_one() {
    let mut t = task(TaskKind::ForcedUpdate, "1.0", TargetState::Pending);
    t.assignment.rollback = true;
    let newer = v("1.2");
    assert_eq!(next_action(&t, &facts(Some(&newer))), Action::Download);
    let same = v("1.0");
    assert!(matches!(
        next_action(&t, &facts(Some(&same))),
        Action::Skip(_)
    ));
}

#[test]
fn stale_instructions_start_nothing_new_but_the_drop_in_path_still_works() {
    let stale = Facts {
        stale: true,
        ..facts(None)
    };
    for state in [
        TargetState::Pending,
        TargetState::Downloading,
        TargetState::Downloaded,
        TargetState::AwaitingCashier,
    ] {
        let t = task(TaskKind::ForcedUpdate, "1.1", state);
        assert_eq!(next_action(&t, &stale), Action::Wait, "{state:?}");
    }
    let mut dropped = task(TaskKind::Update, "1.1", TargetState::Downloaded);
    dropped.assignment.task_id = DROP_IN_TASK;
    assert!(matches!(next_action(&dropped, &stale), Action::Ask { .. }));
    // What is already under way still finishes: a reboot is recognised.
    let installed = v("1.1");
    let rebooting = task(TaskKind::ForcedUpdate, "1.1", TargetState::Rebooting);
    let stale_up = Facts {
        stale: true,
        ..facts(Some(&installed))
    };
    assert_eq!(next_action(&rebooting, &stale_up), Action::Installed);
}

#[test]
fn a_download_task_is_done_once_staged() {
    let t = task(TaskKind::Download, "1.1", TargetState::Downloaded);
    assert_eq!(next_action(&t, &facts(None)), Action::Wait);
}

#[test]
fn an_update_asks_the_cashier_with_the_timeout_and_never_without_one() {
    let t = task(TaskKind::Update, "1.1", TargetState::Downloaded);
    assert_eq!(
        next_action(&t, &facts(None)),
        Action::Ask {
            deadline_ms: NOW + 10 * MIN
        }
    );
    let unset = Facts {
        auto_update_timeout_minutes: None,
        ..facts(None)
    };
    assert_eq!(next_action(&t, &unset), Action::Wait);
}

#[test]
fn an_asked_cashier_accepts_declines_or_lets_the_timeout_install() {
    let mut t = task(TaskKind::Update, "1.1", TargetState::AwaitingCashier);
    t.asked_ms = Some(NOW - 4 * MIN);
    let f = facts(None);
    assert_eq!(
        next_action(&t, &f),
        Action::KeepAsking {
            deadline_ms: NOW + 6 * MIN
        }
    );
    let accept = Facts {
        answer: Some(Answer::Accept),
        ..f
    };
    assert_eq!(next_action(&t, &accept), Action::Install);
    let decline = Facts {
        answer: Some(Answer::Decline),
        ..f
    };
    assert_eq!(next_action(&t, &decline), Action::Decline);
    t.asked_ms = Some(NOW - 10 * MIN);
    assert_eq!(next_action(&t, &f), Action::Install, "unanswered in time");
    // The setting removed while asking: stop asking.
    let unset = Facts {
        auto_update_timeout_minutes: None,
        ..f
    };
    assert_eq!(next_action(&t, &unset), Action::StopAsking);
    // No prompt while another install runs.
    let busy = Facts {
        installing: true,
        answer: Some(Answer::Accept),
        ..f
    };
    assert_eq!(next_action(&t, &busy), Action::Wait);
}

#[test]
fn a_decline_is_asked_again_only_after_a_restart() {
    let mut t = task(TaskKind::Update, "1.1", TargetState::Declined);
    t.declined_boot = Some(3);
    assert_eq!(next_action(&t, &facts(None)), Action::Wait);
    let next_boot = Facts {
        boot: 4,
        ..facts(None)
    };
    assert_eq!(next_action(&t, &next_boot), Action::AskAgain);
}

#[test]
fn a_forced_update_installs_at_its_time_unasked() {
    let mut t = task(TaskKind::ForcedUpdate, "1.1", TargetState::Downloaded);
    t.assignment.install_at_unix = Some((NOW / 1000 + 60) as u64);
    assert_eq!(next_action(&t, &facts(None)), Action::Wait);
    let later = Facts {
        now_ms: NOW + MIN,
        ..facts(None)
    };
    assert_eq!(next_action(&t, &later), Action::Install);
    t.assignment.install_at_unix = None;
    assert_eq!(
        next_action(&t, &facts(None)),
        Action::Install,
        "immediately"
    );
}

#[test]
fn the_coordinators_hold_and_window_keep_a_staged_update_waiting() {
    let mut t = task(TaskKind::ForcedUpdate, "1.1", TargetState::Downloaded);
    t.assignment.hold_install = true;
    assert_eq!(next_action(&t, &facts(None)), Action::Wait);
    t.assignment.hold_install = false;
    t.assignment.install_until_unix = Some((NOW / 1000) as u64);
    assert_eq!(next_action(&t, &facts(None)), Action::Wait, "window closed");
    t.assignment.install_until_unix = Some((NOW / 1000 + 1) as u64);
    assert_eq!(
        next_action(&t, &facts(None)),
        Action::Install,
        "window open"
    );
    // A download task ignores both (it never installs).
    let mut d = task(TaskKind::Download, "1.1", TargetState::Downloaded);
    d.assignment.hold_install = true;
    assert_eq!(next_action(&d, &facts(None)), Action::Wait);
}

#[test]
fn an_install_the_node_did_not_finish_fails_and_a_reboot_onto_the_version_completes() {
    let t = task(TaskKind::ForcedUpdate, "1.1", TargetState::Installing);
    assert_eq!(next_action(&t, &facts(None)), Action::Interrupted);
    let r = task(TaskKind::ForcedUpdate, "1.1", TargetState::Rebooting);
    let old = v("1.0");
    assert_eq!(next_action(&r, &facts(Some(&old))), Action::Wait);
    let new = v("1.1");
    assert_eq!(next_action(&r, &facts(Some(&new))), Action::Installed);
    for end in [
        TargetState::Installed,
        TargetState::Failed,
        TargetState::Skipped,
    ] {
        let t = task(TaskKind::ForcedUpdate, "1.1", end);
        assert_eq!(next_action(&t, &facts(None)), Action::Wait);
    }
}

#[test]
fn a_manual_install_takes_the_newest_staged_update_never_a_download_task() {
    let mut a = task(TaskKind::Update, "1.1", TargetState::Declined);
    a.assignment.task_id = TaskId(1);
    let mut b = task(TaskKind::ForcedUpdate, "1.2", TargetState::Downloaded);
    b.assignment.task_id = TaskId(2);
    let mut c = task(TaskKind::Download, "1.3", TargetState::Downloaded);
    c.assignment.task_id = TaskId(3);
    let mut d = task(TaskKind::Update, "1.4", TargetState::Downloading);
    d.assignment.task_id = TaskId(4);
    let tasks = [a, b, c, d];
    let pick = manual_install_candidate(&tasks).expect("candidate");
    assert_eq!(pick.assignment.task_id, TaskId(2));
    assert!(manual_install_candidate(&tasks[2..]).is_none());
}

#[test]
fn the_activity_reports_the_most_pressing_state() {
    let idle = task(TaskKind::Update, "1.1", TargetState::Downloaded);
    let asking = task(TaskKind::Update, "1.1", TargetState::AwaitingCashier);
    let up = task(TaskKind::Update, "1.1", TargetState::Installing);
    let none = |_| false;
    let all = |_| true;
    assert_eq!(
        activity(std::slice::from_ref(&idle), none, false),
        DeviceState::Ready
    );
    assert_eq!(
        activity(std::slice::from_ref(&idle), all, false),
        DeviceState::Downloading
    );
    assert_eq!(
        activity(std::slice::from_ref(&idle), all, true),
        DeviceState::WaitingForSaleEnd
    );
    assert_eq!(
        activity(&[idle.clone(), asking.clone()], all, true),
        DeviceState::AwaitingCashier
    );
    assert_eq!(
        activity(&[idle, asking, up], all, true),
        DeviceState::Installing
    );
}
