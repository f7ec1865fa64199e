//! Task life cycles against the service itself (no HTTP), with a clock moved by
//! hand: activation times, group membership at activation, skips, the
//! installed-after-reboot rule, pause/resume/restart, failed tills -> group,
//! idempotent reports and cheap unchanged polls.

mod common;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::clock::rfc3339;
use tillswarm_coordinator::devices::DeviceFilter;
use tillswarm_coordinator::groups::GroupId;
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::service::{Coordinator, Paging};
use tillswarm_coordinator::tasks::{NewTask, TaskDetail, TaskFilter};
use tillswarm_coordinator::till_types::TillTypeInput;
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId};

use common::fleet::{T0, fixture, heartbeat, report, send, small_package, till, upload};
use common::{key_of, log_in};

fn task(kind: TaskKind, package_id: PackageId, group_id: i64, at: Option<i64>) -> NewTask {
    NewTask {
        kind,
        package_id,
        group_id: GroupId(group_id),
        activate_at: at.map(rfc3339),
        rollback: false,
        window: None,
        max_installing_per_store: None,
        install_retries: None,
    }
}

fn state_of(t: &TaskDetail, d: DeviceId) -> TargetState {
    t.target_details
        .iter()
        .find(|x| x.device == d)
        .map(|x| x.state)
        .expect("target")
}

#[tokio::test]
async fn timed_task_activates_on_time_and_takes_members_then() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let group = c
        .create_group(
            GroupInput {
                name: Some("pilot".into()),
                description: None,
                members: Some(vec![till(0, 1)]),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group");
    let t = c
        .create_task(
            task(TaskKind::Update, pkg, group.id.0, Some(T0 + 60_000)),
            &Caller::system("test"),
        )
        .await
        .expect("task");
    assert_eq!(t.summary.status, "scheduled");
    assert_eq!(t.summary.targets, 0);
    // Membership changes before activation count.
    c.update_group(
        group.id,
        GroupInput {
            members: Some(vec![till(0, 1), till(1, 2)]),
            ..Default::default()
        },
        &Caller::system("test"),
    )
    .await
    .expect("edit");
    f.clock.advance_ms(59_000);
    assert!(c.tick().await.expect("tick").is_empty(), "not yet due");
    assert!(
        heartbeat(c, till(0, 1), "0.9", None)
            .await
            .assignments
            .expect("list")
            .is_empty()
    );
    f.clock.advance_ms(1_000);
    assert_eq!(c.tick().await.expect("tick"), vec![t.summary.id]);
    let t = c.task(t.summary.id).await.expect("task");
    assert_eq!(t.summary.status, "running");
    assert_eq!(t.summary.targets, 2);
    let hb = heartbeat(c, till(0, 1), "0.9", None).await;
    let assignments = hb.assignments.clone().expect("list");
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].kind, TaskKind::Update);
    assert_eq!(hb.settings.auto_update_timeout_minutes, Some(15));
    // Same revision: no list in the answer (a cheap poll).
    let again = heartbeat(c, till(0, 1), "0.9", Some(hb.revision)).await;
    assert!(again.assignments.is_none());
}

#[tokio::test]
async fn starting_a_timed_forced_update_now_installs_now() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let night = T0 + 6 * 3_600_000;
    let t = c
        .create_task(
            task(TaskKind::ForcedUpdate, pkg, 1, Some(night)),
            &Caller::system("test"),
        )
        .await
        .expect("task");
    assert_eq!(t.summary.status, "scheduled");
    f.clock.advance_ms(5_000);
    let started = c
        .restart_task(t.summary.id, &Caller::system("test"))
        .await
        .expect("start now");
    assert_eq!(started.summary.status, "running");
    let hb = heartbeat(c, till(0, 1), "0.9", None).await;
    let assignments = hb.assignments.expect("list");
    assert_eq!(assignments.len(), 1);
    assert_eq!(
        assignments[0].install_at_unix,
        Some(((T0 + 5_000) / 1000) as u64),
        "installs now, not at the time it was waiting for ({})",
        night / 1000
    );
}

#[tokio::test]
async fn installed_only_after_the_new_version_is_reported() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let t = c
        .create_task(
            task(TaskKind::ForcedUpdate, pkg, 2, None),
            &Caller::system("test"),
        )
        .await
        .expect("task");
    let id = t.summary.id;
    assert_eq!(t.summary.targets, 6, "even tills of both stores");
    let d = till(0, 2);
    let a = heartbeat(c, d, "0.9", None)
        .await
        .assignments
        .expect("list");
    assert!(
        a[0].install_at_unix.is_some(),
        "forced updates carry their time"
    );
    for (seq, state) in [
        (1, TargetState::Downloading),
        (2, TargetState::Downloaded),
        (3, TargetState::Installing),
    ] {
        assert!(
            send(c, report(d, id, 1, seq, state))
                .await
                .expect("report")
                .accepted
        );
    }
    // The till claims installed before it runs the version: it stays rebooting.
    assert!(
        send(c, report(d, id, 1, 4, TargetState::Installed))
            .await
            .expect("report")
            .accepted
    );
    assert_eq!(
        state_of(&c.task(id).await.expect("task"), d),
        TargetState::Rebooting
    );
    // A duplicate (same seq) is acknowledged but ignored.
    assert!(
        !send(c, report(d, id, 1, 4, TargetState::Failed))
            .await
            .expect("report")
            .accepted
    );
    heartbeat(c, d, "1.0.0", None).await;
    let detail = c.task(id).await.expect("task");
    assert_eq!(state_of(&detail, d), TargetState::Installed);
    assert_eq!(detail.stores.iter().map(|s| s.wan_bytes).sum::<u64>(), 7);
    assert_eq!(detail.summary.status, "running", "other tills are not done");
}

#[tokio::test]
async fn newer_tills_are_skipped_and_a_task_completes() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let g = c
        .create_group(
            GroupInput {
                name: Some("two".into()),
                description: None,
                members: Some(vec![till(0, 1), till(0, 3)]),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group");
    heartbeat(c, till(0, 1), "1.0", None).await; // the same version as 1.0.0
    heartbeat(c, till(0, 3), "0.5", None).await;
    let t = c
        .create_task(
            task(TaskKind::Download, pkg, g.id.0, None),
            &Caller::system("test"),
        )
        .await
        .expect("task");
    assert_eq!(t.summary.states.get("skipped"), Some(&1));
    assert_eq!(t.summary.states.get("pending"), Some(&1));
    send(
        c,
        report(till(0, 3), t.summary.id, 1, 1, TargetState::Downloaded),
    )
    .await
    .expect("report");
    let done = c.task(t.summary.id).await.expect("task");
    assert_eq!(done.summary.status, "completed");
    let completed = c
        .tasks(
            TaskFilter {
                status: Some("completed".into()),
                sort: None,
            },
            Paging::default(),
        )
        .await
        .expect("list");
    assert_eq!(completed.total, 1);
    // Its package deleted, the completed task cannot be restarted: every
    // till would only fail to fetch it.
    c.delete_package(pkg, &Caller::system("test"))
        .await
        .expect("delete");
    let err = c
        .restart_task(t.summary.id, &Caller::system("test"))
        .await
        .expect_err("restart of a task without its package");
    assert!(err.to_string().contains("deleted"), "{err}");
    let after = c.task(t.summary.id).await.expect("task");
    assert_eq!(after.summary.status, "completed");
    assert_eq!(after.summary.attempt, done.summary.attempt);
}

#[tokio::test]
async fn failures_become_a_group_and_restart_retries_only_them() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let g = c
        .create_group(
            GroupInput {
                name: Some("store-1".into()),
                description: None,
                members: Some(vec![till(0, 1), till(0, 2), till(0, 3)]),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group");
    let id = c
        .create_task(
            task(TaskKind::Update, pkg, g.id.0, None),
            &Caller::system("test"),
        )
        .await
        .expect("task")
        .summary
        .id;
    send(c, report(till(0, 1), id, 1, 1, TargetState::Failed))
        .await
        .expect("report");
    send(c, report(till(0, 2), id, 1, 1, TargetState::Failed))
        .await
        .expect("report");
    send(c, report(till(0, 3), id, 1, 1, TargetState::Rebooting))
        .await
        .expect("report");
    heartbeat(c, till(0, 3), "1.0.0", None).await;
    let t = c.task(id).await.expect("task");
    // Every target is final but two failed: never a plain "completed".
    assert_eq!(t.summary.status, "completed_with_failures");
    let failed = t
        .target_details
        .iter()
        .find(|x| x.device == till(0, 1))
        .expect("target");
    assert_eq!(failed.error.as_deref(), Some("up.sh exited 1"));
    assert_eq!(failed.log_tail.as_deref(), Some("installing...\nerror"));

    let retry = c
        .group_from_task(
            id,
            vec!["failed".into()],
            GroupInput {
                name: Some("retry".into()),
                ..Default::default()
            },
            &Caller::system("test"),
        )
        .await
        .expect("group from failures");
    assert_eq!(
        retry.members.expect("members"),
        vec![till(0, 1), till(0, 2)]
    );

    let bogus = c
        .group_from_task(
            id,
            vec!["bogus".into()],
            GroupInput {
                name: Some("nope".into()),
                ..Default::default()
            },
            &Caller::system("test"),
        )
        .await;
    assert!(
        matches!(
            bogus,
            Err(tillswarm_coordinator::Error::BadRequest {
                code: "invalid_state",
                ..
            })
        ),
        "{bogus:?}"
    );
    let control = c
        .create_group(
            GroupInput {
                name: Some("a\nb".into()),
                ..Default::default()
            },
            &Caller::system("test"),
        )
        .await;
    assert!(control.is_err(), "control characters in a group name");

    let restarted = c
        .restart_task(id, &Caller::system("test"))
        .await
        .expect("restart");
    assert_eq!(restarted.summary.status, "running");
    assert_eq!(restarted.summary.attempt, 2);
    assert_eq!(restarted.summary.states.get("pending"), Some(&2));
    assert_eq!(restarted.summary.states.get("installed"), Some(&1));
    // A late report of the old attempt is ignored.
    assert!(
        !send(c, report(till(0, 1), id, 1, 9, TargetState::Failed))
            .await
            .expect("report")
            .accepted
    );
    let a = heartbeat(c, till(0, 1), "0.9", None)
        .await
        .assignments
        .expect("list");
    assert_eq!(a[0].attempt, 2);
    // The two tills whose install failed read install_failed while idle, and
    // the state filter finds them; a later success clears it.
    let failing = |c: &Coordinator| {
        let c = c.clone();
        async move {
            c.devices(
                DeviceFilter {
                    state: Some("install_failed".into()),
                    ..Default::default()
                },
                Paging::default(),
            )
            .await
            .expect("devices")
            .items
            .into_iter()
            .map(|d| d.guid)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(failing(c).await, vec![till(0, 1), till(0, 2)]);
    assert_eq!(
        c.device(till(0, 1))
            .await
            .expect("device")
            .state
            .map(|s| s.as_str()),
        Some("install_failed")
    );
    send(c, report(till(0, 1), id, 2, 1, TargetState::Rebooting))
        .await
        .expect("report");
    heartbeat(c, till(0, 1), "1.0.0", None).await;
    assert_eq!(failing(c).await, vec![till(0, 2)]);
    assert_eq!(
        c.device(till(0, 1))
            .await
            .expect("device")
            .state
            .map(|s| s.as_str()),
        Some("ready")
    );
}

#[tokio::test]
async fn pause_hides_and_resume_restores_assignments() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let id = c
        .create_task(
            task(TaskKind::Download, pkg, 1, None),
            &Caller::system("test"),
        )
        .await
        .expect("task")
        .summary
        .id;
    let d = till(1, 4);
    let hb = heartbeat(c, d, "0.9", None).await;
    assert_eq!(hb.assignments.expect("list").len(), 1);
    assert_eq!(
        c.pause_task(id, &Caller::system("test"))
            .await
            .expect("pause")
            .summary
            .status,
        "paused"
    );
    let paused = heartbeat(c, d, "0.9", Some(hb.revision)).await;
    assert!(
        paused.revision > hb.revision,
        "pause must change the revision"
    );
    assert!(paused.assignments.expect("list").is_empty());
    assert_eq!(
        c.resume_task(id, &Caller::system("test"))
            .await
            .expect("resume")
            .summary
            .status,
        "running"
    );
    let resumed = heartbeat(c, d, "0.9", Some(paused.revision)).await;
    assert_eq!(resumed.assignments.expect("list").len(), 1);
    c.delete_task(id, &Caller::system("test"))
        .await
        .expect("delete");
    assert!(
        heartbeat(c, d, "0.9", None)
            .await
            .assignments
            .expect("list")
            .is_empty()
    );
    // With the task gone the package can be deleted.
    c.delete_package(pkg, &Caller::system("test"))
        .await
        .expect("delete package");
}

#[tokio::test]
async fn unknown_tills_are_pending_until_approved() {
    let f = fixture().await;
    let c = &f.coordinator;
    let stranger: DeviceId = "0badc0de-0000-4000-8000-000000000001"
        .parse()
        .expect("guid");
    assert_eq!(log_in(c, stranger).await, None, "no token while pending");
    let device = c.device(stranger).await.expect("device");
    assert_eq!(device.status, "pending");
    assert_eq!(
        device.public_key,
        Some(key_of(stranger).public().to_string())
    );
    assert_eq!(
        c.approve_device(stranger, &Caller::system("test"))
            .await
            .expect("approve")
            .status,
        "approved"
    );
    heartbeat(c, stranger, "1.0", None).await;
    assert!(c.device(stranger).await.expect("device").online);
    f.clock.advance_ms(10 * 60_000);
    assert!(
        !c.device(stranger).await.expect("device").online,
        "silent for 10 minutes"
    );
}

#[tokio::test]
async fn till_type_settings_reach_their_tills() {
    let f = fixture().await;
    let c = &f.coordinator;
    // Till 6 of each store is an "express" till in the sample registry.
    let express = till(0, 6);
    let hb = heartbeat(c, express, "1.0", None).await;
    assert_eq!(hb.settings.auto_update_timeout_minutes, Some(15), "default");
    c.set_till_type(
        "express".into(),
        TillTypeInput {
            auto_update_timeout_minutes: None,
        },
        &Caller::system("test"),
    )
    .await
    .expect("set");
    let hb2 = heartbeat(c, express, "1.0", Some(hb.revision)).await;
    assert_eq!(hb2.settings.auto_update_timeout_minutes, None, "never ask");
    assert!(hb2.revision > hb.revision);
    let standard = heartbeat(c, till(0, 1), "1.0", None).await;
    assert_eq!(standard.settings.auto_update_timeout_minutes, Some(15));
}

#[tokio::test]
async fn assignments_name_the_unfinished_tills_of_the_same_store() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let id = c
        .create_task(
            task(TaskKind::Download, pkg, 1, None),
            &Caller::system("test"),
        )
        .await
        .expect("task")
        .summary
        .id;
    let peers_of = |a: &[tillswarm_protocol::api::Assignment]| {
        let mut p = a[0].store_peers.clone();
        p.sort_by_key(|d| d.to_string());
        p
    };
    let a = heartbeat(c, till(0, 1), "0.9", None)
        .await
        .assignments
        .expect("list");
    let expected: Vec<DeviceId> = (2..=6).map(|n| till(0, n)).collect();
    assert_eq!(
        peers_of(&a),
        expected,
        "store 0's other tills, no other store"
    );
    let join_by = a[0].join_by_unix_ms.expect("join-by time");
    assert!(join_by > T0 as u64, "after activation: {join_by}");
    // A till that finished no longer counts.
    send(c, report(till(0, 2), id, 1, 1, TargetState::Downloaded))
        .await
        .expect("report");
    let a = heartbeat(c, till(0, 1), "0.9", None)
        .await
        .assignments
        .expect("list");
    assert_eq!(peers_of(&a), expected[1..].to_vec());
    // ... and now holds the package: a later task of it names it as a holder
    // to its store (not to other stores).
    assert_eq!(a[0].store_holders, vec![till(0, 2)]);
    let later = c
        .create_task(
            task(TaskKind::Update, pkg, 1, None),
            &Caller::system("test"),
        )
        .await
        .expect("task")
        .summary
        .id;
    let a = heartbeat(c, till(0, 3), "0.9", None)
        .await
        .assignments
        .expect("list");
    let mine = a.iter().find(|a| a.task_id == later).expect("later task");
    assert_eq!(mine.store_holders, vec![till(0, 2)]);
    let other_store = heartbeat(c, till(1, 1), "0.9", None)
        .await
        .assignments
        .expect("list");
    assert!(other_store.iter().all(|a| a.store_holders.is_empty()));
}

#[tokio::test]
async fn a_deleted_task_id_is_never_handed_out_again() {
    let f = fixture().await;
    let c = &f.coordinator;
    let v60 = upload(c, "demo", "60.0.0", small_package("60.0.0")).await;
    let v61 = upload(c, "demo", "61.0.0", small_package("61.0.0")).await;
    let by = Caller::system("test");
    let first = c
        .create_task(task(TaskKind::Update, v60, 2, None), &by)
        .await
        .expect("task")
        .summary
        .id;
    c.delete_task(first, &by).await.expect("delete");
    let second = c
        .create_task(task(TaskKind::Download, v61, 2, None), &by)
        .await
        .expect("task")
        .summary
        .id;
    assert!(second > first, "task {first} was deleted; got id {second}");
}

#[tokio::test]
async fn a_version_above_every_package_is_flagged_and_does_not_skip_the_till() {
    let f = fixture().await;
    let c = &f.coordinator;
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let liar = till(0, 2);
    let honest = till(0, 4);
    for (d, v) in [(liar, "50.0.0"), (honest, "1.0.0")] {
        heartbeat(c, d, v, None).await;
    }
    let flagged = c.device(liar).await.expect("device");
    assert_eq!(
        flagged.version_flag.map(|s| s.as_str()),
        Some("unknown_version")
    );
    assert_eq!(c.device(honest).await.expect("device").version_flag, None);
    let t = c
        .create_task(
            task(TaskKind::Update, pkg, 2, None),
            &Caller::system("test"),
        )
        .await
        .expect("task");
    let state = |d: DeviceId| {
        t.target_details
            .iter()
            .find(|x| x.device == d)
            .map(|x| x.state)
    };
    assert_eq!(
        state(liar),
        Some(TargetState::Pending),
        "not skipped on its word"
    );
    assert_eq!(
        state(honest),
        Some(TargetState::Skipped),
        "really runs 1.0.0"
    );
}
