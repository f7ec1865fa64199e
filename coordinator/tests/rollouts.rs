//! Rollouts and install permits against the service, with a clock moved by
//! hand: the recommended template to the end with an approval and soak
//! times, the error threshold pausing a rollout (and nothing new permitted),
//! a store stopped by its first failure, windows in three time zones and on
//! a DST change day, K tills per store, automatic retries with backoff,
//! unreachable tills, and a coordinator restarted mid-rollout.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use tillswarm_protocol::TaskId;

use serde_json::json;
use tillswarm_coordinator::audit;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::clock::parse_rfc3339;
use tillswarm_coordinator::rollouts::{NewRollout, Rollout};
use tillswarm_coordinator::service::{Config, Coordinator};
use tillswarm_coordinator::tasks::{NewTask, TaskDetail};
use tillswarm_protocol::api::{Assignment, TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId};

use common::fleet::{
    Fixture, fixture, fixture_with, heartbeat, postgres_or_skip, report, send, small_package, till,
    upload,
};

static SEQ: AtomicU64 = AtomicU64::new(1);

fn sys() -> Caller {
    Caller::system("test")
}

async fn say(c: &Coordinator, d: DeviceId, task: TaskId, attempt: u32, state: TargetState) {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    send(c, report(d, task, attempt, seq, state))
        .await
        .expect("report accepted");
}

/// The till downloads, installs and comes back at `version`.
async fn install(c: &Coordinator, d: DeviceId, task: TaskId, version: &str) {
    say(c, d, task, 1, TargetState::Downloaded).await;
    say(c, d, task, 1, TargetState::Installing).await;
    heartbeat(c, d, version, None).await;
}

async fn rollout_from(c: &Coordinator, body: serde_json::Value) -> Rollout {
    let input: NewRollout = serde_json::from_value(body).expect("rollout body");
    c.create_rollout(input, &sys()).await.expect("created")
}

async fn task_of(c: &Coordinator, r: &Rollout, wave: usize) -> TaskDetail {
    let r = c.rollout(r.id).await.expect("rollout");
    let id = r.waves[wave].task_id.expect("wave started");
    c.task(id).await.expect("task")
}

/// The assignment a till receives now for `task`.
async fn assignment(c: &Coordinator, d: DeviceId, task: TaskId) -> Option<Assignment> {
    heartbeat(c, d, "1.0", None)
        .await
        .assignments
        .expect("instructions")
        .into_iter()
        .find(|a| a.task_id == task)
}

async fn everyone_heard(f: &Fixture) {
    for s in 0..2 {
        for n in 1..=6 {
            heartbeat(&f.coordinator, till(s, n), "1.0", None).await;
        }
    }
}

fn tills_of(t: &TaskDetail) -> Vec<DeviceId> {
    t.target_details.iter().map(|x| x.device).collect()
}

#[tokio::test]
async fn the_recommended_rollout_runs_pilot_even_odd_with_soak_and_approval() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let r = rollout_from(
        c,
        json!({"package_id": pkg, "template": "pilot-even-odd",
               "template_options": {"soak_minutes": 30}}),
    )
    .await;
    assert_eq!(r.state, "running");
    let names: Vec<_> = r.waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["Pre-stage", "Pilot", "Even", "Odd"]);
    let prestage = task_of(c, &r, 0).await;
    assert_eq!(prestage.summary.kind, TaskKind::Download);
    assert_eq!(prestage.summary.targets, 12);
    assert_eq!(prestage.summary.rollout_id, Some(r.id));
    for d in tills_of(&prestage) {
        say(c, d, prestage.summary.id, 1, TargetState::Downloaded).await;
    }
    c.tick().await.expect("tick");
    // Pre-stage passed (no soak on it): the pilots, till 1 of each store.
    let pilot = task_of(c, &r, 1).await;
    assert_eq!(pilot.summary.kind, TaskKind::Update);
    let mut pilots = tills_of(&pilot);
    pilots.sort();
    assert_eq!(pilots, [till(0, 1), till(1, 1)]);
    for d in &pilots {
        install(c, *d, pilot.summary.id, "2.0").await;
    }
    c.tick().await.expect("tick");
    let now = c.rollout(r.id).await.expect("rollout");
    assert_eq!(now.state, "running", "soaking");
    assert_eq!(now.waves[1].state, "soaking");
    assert!(now.waves[2].task_id.is_none(), "Even waits for the soak");
    f.clock.advance_ms(29 * 60_000);
    c.tick().await.expect("tick");
    assert!(c.rollout(r.id).await.expect("r").waves[2].task_id.is_none());
    f.clock.advance_ms(2 * 60_000);
    c.tick().await.expect("tick");
    let now = c.rollout(r.id).await.expect("rollout");
    assert_eq!(now.state, "waiting_for_approval");
    assert!(now.reason.as_deref().unwrap_or("").contains("Pilot"));
    let approver = Caller {
        actor: tillswarm_coordinator::auth::Actor {
            kind: tillswarm_coordinator::auth::ActorKind::User,
            name: "olga".into(),
            role: Some(tillswarm_coordinator::auth::Role::Approver),
            session: None,
        },
        client: "10.0.0.9".into(),
        method: "POST".into(),
        route: format!("/api/v1/rollouts/{}/approve", r.id),
    };
    let now = c.approve_rollout(r.id, &approver).await.expect("approved");
    assert_eq!(now.state, "running");
    assert_eq!(now.waves[1].approved_by.as_deref(), Some("olga"));
    let even = task_of(c, &r, 2).await;
    assert_eq!(even.summary.targets, 6);
    for d in tills_of(&even) {
        install(c, d, even.summary.id, "2.0").await;
    }
    c.tick().await.expect("tick");
    f.clock.advance_ms(31 * 60_000);
    c.tick().await.expect("tick");
    let odd = task_of(c, &r, 3).await;
    assert_eq!(odd.summary.kind, TaskKind::ForcedUpdate);
    // The pilots are odd and already run 2.0.
    assert_eq!(odd.summary.states.get("skipped"), Some(&2));
    for t in odd
        .target_details
        .iter()
        .filter(|t| t.state != TargetState::Skipped)
    {
        install(c, t.device, odd.summary.id, "2.0").await;
    }
    c.tick().await.expect("tick");
    let done = c.rollout(r.id).await.expect("rollout");
    assert_eq!(done.state, "completed");
    // The pilot's history: 1.0 when first heard, then 2.0 by the pilot task.
    let history = c.device_detail(pilots[0]).await.expect("device");
    let versions: Vec<_> = history
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.task_id))
        .collect();
    assert_eq!(versions, [("2.0", Some(pilot.summary.id)), ("1.0", None)]);
    assert!(done.waves.iter().all(|w| w.state == "passed"));
    let log = c
        .audit_log(audit::Filter {
            target: Some(format!("rollout:{}", r.id)),
            ..Default::default()
        })
        .await
        .expect("audit");
    let approve = log
        .items
        .iter()
        .find(|x| x.action == "rollout.approve")
        .expect("the approval is audited");
    assert_eq!(approve.actor, "olga");
    assert!(
        log.items
            .iter()
            .any(|x| x.action == "rollout.finished" && x.actor == "scheduler")
    );
}

#[tokio::test]
async fn the_error_threshold_pauses_the_rollout_and_no_new_install_is_permitted() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let r = rollout_from(
        c,
        json!({"package_id": pkg, "store_failure_limit": 5, "waves": [
            {"name": "All", "kind": "forced_update", "targets": {"type": "group", "group_id": 1},
             "max_installing_per_store": 1, "gate": {"max_failed": 1}},
            {"name": "Never", "kind": "forced_update", "targets": {"type": "group", "group_id": 1}}]}),
    )
    .await;
    let task = task_of(c, &r, 0).await;
    let id = task.summary.id;
    // One till per store may install; the others hold.
    let permitted: Vec<_> = task
        .target_details
        .iter()
        .filter(|t| t.install_permit)
        .collect();
    assert_eq!(permitted.len(), 2, "one per store");
    let first = permitted[0].device;
    let held = task
        .target_details
        .iter()
        .find(|t| !t.install_permit && t.store_id == permitted[0].store_id)
        .expect("a held till")
        .device;
    assert!(
        assignment(c, held, id)
            .await
            .expect("assigned")
            .hold_install
    );
    assert!(
        !assignment(c, first, id)
            .await
            .expect("assigned")
            .hold_install
    );
    say(c, first, id, 1, TargetState::Downloaded).await;
    say(c, first, id, 1, TargetState::Failed).await;
    c.tick().await.expect("tick");
    let now = c.rollout(r.id).await.expect("rollout");
    assert_eq!(now.state, "paused");
    assert!(
        now.reason.as_deref().unwrap_or("").contains("1 of 12"),
        "{:?}",
        now.reason
    );
    // The paused wave reaches no till: nothing more can start.
    assert!(assignment(c, held, id).await.is_none());
    f.clock.advance_ms(60_000);
    c.tick().await.expect("tick");
    let after = c.task(id).await.expect("task");
    assert_eq!(after.summary.status, "paused");
    assert!(!after.summary.states.contains_key("installing"));
    // Direct task actions are refused while the rollout owns the task.
    let e = c.resume_task(id, &sys()).await.expect_err("refused");
    assert_eq!(e.code(), "rollout_task");
    // Resuming accepts the failure so far; the wave goes on.
    let resumed = c.resume_rollout(r.id, &sys()).await.expect("resumed");
    assert_eq!(resumed.state, "running");
    c.tick().await.expect("tick");
    assert_eq!(c.rollout(r.id).await.expect("r").state, "running");
    assert!(assignment(c, held, id).await.is_some());
}

#[tokio::test]
async fn a_stores_first_failure_leaves_that_store_out_of_the_later_waves() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let r = rollout_from(
        c,
        json!({"package_id": pkg, "waves": [
            {"name": "Pilot", "kind": "update", "targets": {"type": "till_number", "till_number": 1},
             "gate": {"success_percent": 50}},
            {"name": "Even", "kind": "update", "targets": {"type": "group", "group_id": 2}}]}),
    )
    .await;
    let pilot = task_of(c, &r, 0).await;
    say(c, till(0, 1), pilot.summary.id, 1, TargetState::Downloaded).await;
    say(c, till(0, 1), pilot.summary.id, 1, TargetState::Failed).await;
    install(c, till(1, 1), pilot.summary.id, "2.0").await;
    c.tick().await.expect("tick");
    let now = c.rollout(r.id).await.expect("rollout");
    assert_eq!(now.state, "running");
    assert_eq!(now.paused_stores.len(), 1);
    assert_eq!(now.paused_stores[0].store_id, "store-001");
    let even = task_of(c, &r, 1).await;
    let stores: Vec<_> = even
        .target_details
        .iter()
        .map(|t| {
            t.store_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(stores, ["store-002"; 3], "store-001 is left out");
}

/// A third store, in Yekaterinburg, with two tills (GUIDs `...0002000000nn`).
async fn add_yekaterinburg(c: &Coordinator) {
    let entries: Vec<_> = (1..=2)
        .map(|n| {
            json!({"guid": format!("71110000-0000-0000-0000-0002{n:08x}"), "till_name": format!("Till {n}"),
                   "till_number": n, "store_id": "store-003", "store_name": "Plotinka",
                   "store_address": "1 Lenin Ave, Yekaterinburg", "till_type": "standard",
                   "time_zone": "Asia/Yekaterinburg"})
        })
        .collect();
    let body = serde_json::to_vec(&entries).expect("json");
    c.import_registry(body, true, &sys()).await.expect("import");
}

fn ms(text: &str) -> i64 {
    parse_rfc3339(text).expect("time")
}

async fn permits_by_store(c: &Coordinator, task: TaskId) -> Vec<(String, usize)> {
    let t = c.task(task).await.expect("task");
    let mut out: std::collections::BTreeMap<String, usize> = Default::default();
    for x in &t.target_details {
        *out.entry(
            x.store_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        )
        .or_default() += usize::from(x.install_permit);
    }
    out.into_iter().collect()
}

/// At `at`, every till of the three stores is heard, then the scheduler runs.
async fn keep_heard(f: &Fixture, at: &str) {
    f.clock.set_ms(ms(at));
    for (s, n) in [(0, 6), (1, 6), (2, 2)] {
        for i in 1..=n {
            heartbeat(&f.coordinator, till(s, i), "1.0", None).await;
        }
    }
    f.coordinator.tick().await.expect("tick");
}

/// Whether till `d` holds a permit in `task` at `at` (heard just before).
async fn permitted_at(f: &Fixture, task: TaskId, d: DeviceId, at: &str) -> bool {
    f.clock.set_ms(ms(at));
    heartbeat(&f.coordinator, d, "1.0", None).await;
    f.coordinator.tick().await.expect("tick");
    f.coordinator.task(task).await.expect("task").target_details[0].install_permit
}

#[tokio::test]
async fn windows_open_at_each_stores_own_local_time() {
    let f = fixture().await;
    let c = &f.coordinator;
    add_yekaterinburg(c).await;
    // Tuesday 1 December 2026, 12:00 UTC: 15:00 in Moscow, 16:00 in Samara,
    // 17:00 in Yekaterinburg.
    f.clock.set_ms(ms("2026-12-01T12:00:00Z"));
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let input: NewTask = serde_json::from_value(json!({
        "kind": "forced_update", "package_id": pkg, "group_id": 1,
        "window": {"start": "01:00", "end": "05:00"}, "max_installing_per_store": 10}))
    .expect("task");
    keep_heard(&f, "2026-12-01T12:00:00Z").await;
    let task = c.create_task(input, &sys()).await.expect("task");
    let id = task.summary.id;
    let shown = c.task(id).await.expect("task");
    let starts: Vec<_> = shown
        .windows
        .iter()
        .map(|w| {
            (
                w.store_id.as_str(),
                w.start.as_deref().unwrap_or(""),
                w.start_local.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        starts,
        [
            (
                "store-001",
                "2026-12-01T22:00:00Z",
                "2026-12-02T01:00:00+03:00"
            ),
            (
                "store-002",
                "2026-12-01T21:00:00Z",
                "2026-12-02T01:00:00+04:00"
            ),
            (
                "store-003",
                "2026-12-01T20:00:00Z",
                "2026-12-02T01:00:00+05:00"
            ),
        ]
    );
    assert!(
        permits_by_store(c, id).await.iter().all(|(_, n)| *n == 0),
        "no store's window is open"
    );
    // A held till stages but does not install.
    let a = assignment(c, till(0, 2), id).await.expect("assigned");
    assert!(a.hold_install);
    keep_heard(&f, "2026-12-01T20:30:00Z").await;
    assert_eq!(
        permits_by_store(c, id).await,
        [
            ("store-001".into(), 0),
            ("store-002".into(), 0),
            ("store-003".into(), 2)
        ]
    );
    keep_heard(&f, "2026-12-01T21:30:00Z").await;
    assert_eq!(
        permits_by_store(c, id).await,
        [
            ("store-001".into(), 0),
            ("store-002".into(), 6),
            ("store-003".into(), 2)
        ]
    );
    let a = assignment(c, till(1, 3), id).await.expect("assigned");
    assert!(!a.hold_install);
    assert_eq!(
        a.install_until_unix,
        Some((ms("2026-12-02T01:00:00Z") / 1000) as u64),
        "05:00 in Samara"
    );
    // 05:00 in Yekaterinburg: its unused permits are taken back.
    keep_heard(&f, "2026-12-02T00:30:00Z").await;
    assert_eq!(
        permits_by_store(c, id).await,
        [
            ("store-001".into(), 6),
            ("store-002".into(), 6),
            ("store-003".into(), 0)
        ]
    );
}

#[tokio::test]
async fn a_window_keeps_local_time_on_a_dst_change_day() {
    let f = fixture().await;
    let c = &f.coordinator;
    let entries = json!([{"guid": "71110000-0000-0000-0000-000300000001", "till_name": "Till 1",
        "till_number": 1, "store_id": "store-004", "store_name": "Mitte", "store_address": "Berlin",
        "till_type": "standard", "time_zone": "Europe/Berlin"}]);
    c.import_registry(serde_json::to_vec(&entries).expect("json"), true, &sys())
        .await
        .expect("import");
    let berlin = till(3, 1);
    // Saturday 27 March 2027; on Sunday 28 March 02:00 CET becomes 03:00 CEST.
    f.clock.set_ms(ms("2027-03-27T12:00:00Z"));
    heartbeat(c, berlin, "1.0", None).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let group = c
        .create_group(
            serde_json::from_value(json!({"name": "Berlin", "members": [berlin]})).expect("group"),
            &sys(),
        )
        .await
        .expect("group");
    let input: NewTask = serde_json::from_value(json!({
        "kind": "forced_update", "package_id": pkg, "group_id": group.id,
        "window": {"start": "01:00", "end": "05:00"}}))
    .expect("task");
    let id = c.create_task(input, &sys()).await.expect("task").summary.id;
    assert!(
        !permitted_at(&f, id, berlin, "2027-03-27T23:30:00Z").await,
        "00:30 CET"
    );
    assert!(
        permitted_at(&f, id, berlin, "2027-03-28T00:30:00Z").await,
        "01:30 CET"
    );
    assert!(
        permitted_at(&f, id, berlin, "2027-03-28T02:30:00Z").await,
        "04:30 CEST"
    );
    // A fixed +01:00 would still read 04:30 here; it is 05:30 CEST.
    assert!(
        !permitted_at(&f, id, berlin, "2027-03-28T03:30:00Z").await,
        "05:30 CEST"
    );
}

#[tokio::test]
async fn at_most_k_tills_of_a_store_install_at_once() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let input: NewTask = serde_json::from_value(json!({
        "kind": "forced_update", "package_id": pkg, "group_id": 1}))
    .expect("task");
    let id = c.create_task(input, &sys()).await.expect("task").summary.id;
    // Default: half of each store's six tills.
    assert_eq!(
        permits_by_store(c, id).await,
        [("store-001".into(), 3), ("store-002".into(), 3)]
    );
    let t = c.task(id).await.expect("task");
    let busy: Vec<_> = t
        .target_details
        .iter()
        .filter(|x| x.install_permit)
        .map(|x| x.device)
        .collect();
    // A till installing does not free its slot; an installed one does.
    say(c, busy[0], id, 1, TargetState::Installing).await;
    c.tick().await.expect("tick");
    assert_eq!(
        permits_by_store(c, id).await,
        [("store-001".into(), 3), ("store-002".into(), 3)]
    );
    heartbeat(c, busy[0], "2.0", None).await;
    f.clock.advance_ms(1_500);
    c.tick().await.expect("tick");
    let t = c.task(id).await.expect("task");
    let store = t
        .target_details
        .iter()
        .find(|x| x.device == busy[0])
        .and_then(|x| x.store_id.clone());
    let now_permitted = t
        .target_details
        .iter()
        .filter(|x| x.store_id == store && x.install_permit && x.state != TargetState::Installed)
        .count();
    assert_eq!(now_permitted, 3, "the next till of that store got the slot");
}

#[tokio::test]
async fn two_install_tasks_share_a_stores_k_slots() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pos = upload(c, "pos", "2.0", small_package("2.0")).await;
    let scales = upload(c, "scales", "3.0", small_package("3.0")).await;
    let task = |pkg: PackageId, group: i64| {
        serde_json::from_value::<NewTask>(json!({
            "kind": "forced_update", "package_id": pkg, "group_id": group}))
        .expect("task")
    };
    // Even: three of each store's six tills, all of the default K = 3.
    let even = c
        .create_task(task(pos, 2), &sys())
        .await
        .expect("even")
        .summary
        .id;
    assert_eq!(
        permits_by_store(c, even).await,
        [("store-001".into(), 3), ("store-002".into(), 3)]
    );
    // Odd, another package at the same time: no slot is left in either store.
    let odd = c
        .create_task(task(scales, 3), &sys())
        .await
        .expect("odd")
        .summary
        .id;
    c.tick().await.expect("tick");
    assert_eq!(
        permits_by_store(c, odd).await,
        [("store-001".into(), 0), ("store-002".into(), 0)]
    );
    // One Even till of store-001 finishes: one Odd till of that store moves up.
    let done = c.task(even).await.expect("task").target_details[0].device;
    install(c, done, even, "2.0").await;
    f.clock.advance_ms(1_500);
    c.tick().await.expect("tick");
    assert_eq!(
        permits_by_store(c, odd).await,
        [("store-001".into(), 1), ("store-002".into(), 0)]
    );
}

#[tokio::test]
async fn a_failed_install_is_retried_with_backoff_and_each_attempt_is_kept() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let group = c
        .create_group(
            serde_json::from_value(json!({"name": "One", "members": [till(0, 2)]})).expect("group"),
            &sys(),
        )
        .await
        .expect("group");
    let input: NewTask = serde_json::from_value(json!({
        "kind": "forced_update", "package_id": pkg, "group_id": group.id, "install_retries": 2}))
    .expect("task");
    let id = c.create_task(input, &sys()).await.expect("task").summary.id;
    let d = till(0, 2);
    say(c, d, id, 1, TargetState::Failed).await;
    let t = c.task(id).await.expect("task");
    assert_eq!(t.summary.status, "running", "a retry is due");
    assert!(t.target_details[0].retry_at.is_some());
    f.clock.advance_ms(59_000);
    c.tick().await.expect("tick");
    assert_eq!(
        c.task(id).await.expect("t").target_details[0].state,
        TargetState::Failed
    );
    f.clock.advance_ms(2_000);
    c.tick().await.expect("tick");
    heartbeat(c, d, "1.0", None).await;
    let a = assignment(c, d, id).await.expect("assigned again");
    assert_eq!(a.attempt, 2);
    say(c, d, id, 2, TargetState::Failed).await;
    f.clock.advance_ms(61_000);
    c.tick().await.expect("tick");
    assert_eq!(
        c.task(id).await.expect("t").target_details[0].state,
        TargetState::Failed,
        "the second wait is two minutes"
    );
    f.clock.advance_ms(60_000);
    c.tick().await.expect("tick");
    heartbeat(c, d, "1.0", None).await;
    say(c, d, id, 3, TargetState::Failed).await;
    f.clock.advance_ms(3_600_000);
    c.tick().await.expect("tick");
    let t = c.task(id).await.expect("task");
    assert_eq!(t.summary.status, "completed_with_failures", "no retry left");
    let x = &t.target_details[0];
    assert_eq!(x.retries, 2);
    let attempts: Vec<_> = x
        .attempts
        .iter()
        .map(|a| (a.attempt, a.state.as_str()))
        .collect();
    assert_eq!(attempts, [(1, "failed"), (2, "failed")]);
    assert!(
        x.attempts[0].log_tail.is_some(),
        "each attempt's log is kept"
    );
    let history = c.device_detail(d).await.expect("device");
    assert_eq!(history.recent_tasks[0].task_id, id);
    assert_eq!(history.recent_tasks[0].state, TargetState::Failed);
    assert_eq!(history.last_error.as_deref(), Some("up.sh exited 1"));
}

#[tokio::test]
async fn a_silent_till_is_unreachable_and_gives_back_its_permit() {
    let f = fixture().await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let input: NewTask = serde_json::from_value(json!({
        "kind": "forced_update", "package_id": pkg, "group_id": 1, "max_installing_per_store": 1}))
    .expect("task");
    let id = c.create_task(input, &sys()).await.expect("task").summary.id;
    let holder = c
        .task(id)
        .await
        .expect("t")
        .target_details
        .iter()
        .find(|x| x.install_permit && x.store_id.as_ref().map(|s| s.as_str()) == Some("store-001"))
        .expect("a holder")
        .device;
    // 16 minutes on, every till but the holder has been heard.
    f.clock.advance_ms(16 * 60_000);
    for s in 0..2 {
        for n in 1..=6 {
            if till(s, n) != holder {
                heartbeat(c, till(s, n), "1.0", None).await;
            }
        }
    }
    f.clock.advance_ms(15_000);
    c.tick().await.expect("tick");
    let t = c.task(id).await.expect("task");
    assert_eq!(t.summary.unreachable, 1);
    let h = t
        .target_details
        .iter()
        .find(|x| x.device == holder)
        .expect("holder");
    assert!(
        h.unreachable && !h.install_permit,
        "its permit went to another till"
    );
    assert_eq!(
        t.summary.states.get("failed"),
        None,
        "unreachable is not failed"
    );
    assert_eq!(permits_by_store(c, id).await[0], ("store-001".into(), 1));
}

#[tokio::test]
async fn a_restarted_coordinator_carries_on_with_its_rollout() {
    let f = fixture().await;
    let dir = f._dir.path().to_path_buf();
    let clock = f.clock.clone();
    let pkg: PackageId;
    let id;
    {
        let c = &f.coordinator;
        everyone_heard(&f).await;
        pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
        let r = rollout_from(
            c,
            json!({"package_id": pkg, "waves": [
                {"name": "Pilot", "kind": "update", "targets": {"type": "till_number", "till_number": 1},
                 "gate": {"soak_minutes": 10}},
                {"name": "Rest", "kind": "update", "targets": {"type": "stores_percent", "percent": 100}}]}),
        )
        .await;
        id = r.id;
        let pilot = task_of(c, &r, 0).await;
        for d in tills_of(&pilot) {
            install(c, d, pilot.summary.id, "2.0").await;
        }
        c.tick().await.expect("tick");
        assert_eq!(c.rollout(id).await.expect("r").waves[0].state, "soaking");
    }
    let Fixture {
        coordinator, _dir, ..
    } = f;
    drop(coordinator);
    let config = Config {
        data_dir: dir,
        ..Config::default()
    };
    let c = Coordinator::open_with_clock(config, std::sync::Arc::new(clock.clone()))
        .await
        .expect("reopened");
    clock.advance_ms(11 * 60_000);
    c.tick().await.expect("tick");
    let r = c.rollout(id).await.expect("rollout");
    assert_eq!(r.waves[0].state, "passed");
    assert_eq!(
        r.waves[1].targets, 12,
        "the second wave started after the restart"
    );
    let _ = pkg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_takes_over_the_scheduler_when_the_leader_dies() {
    let Some(database) = postgres_or_skip("the leader takeover test") else {
        return;
    };
    let f = fixture_with(Config {
        database: database.clone(),
        ..Config::default()
    })
    .await;
    let a = &f.coordinator;
    // The same data (keys, chunks) and database, as a second machine would
    // mount or copy them.
    let b = Coordinator::open_with_clock(
        Config {
            data_dir: f._dir.path().to_path_buf(),
            database,
            ..Config::default()
        },
        std::sync::Arc::new(f.clock.clone()),
    )
    .await
    .expect("second coordinator");
    a.tick().await.expect("a leads");
    everyone_heard(&f).await;
    let pkg = upload(a, "pos", "2.0", small_package("2.0")).await;
    let r = rollout_from(
        &b,
        json!({"package_id": pkg, "waves": [
            {"name": "Pilot", "kind": "update", "targets": {"type": "till_number", "till_number": 1},
             "gate": {"soak_minutes": 10}},
            {"name": "Rest", "kind": "update", "targets": {"type": "stores_percent", "percent": 100}}]}),
    )
    .await;
    let pilot = task_of(&b, &r, 0).await;
    for d in tills_of(&pilot) {
        install(&b, d, pilot.summary.id, "2.0").await;
    }
    b.tick().await.expect("b follows");
    assert_eq!(
        b.rollout(r.id).await.expect("r").waves[0].state,
        "running",
        "only the leader drives rollouts"
    );
    a.tick().await.expect("a drives");
    assert_eq!(b.rollout(r.id).await.expect("r").waves[0].state, "soaking");
    f.clock.advance_ms(11 * 60_000);
    // The leader dies mid-rollout, the soak over but the next wave not begun.
    let Fixture {
        coordinator, _dir, ..
    } = f;
    drop(coordinator);
    let mut started = None;
    for _ in 0..100 {
        b.tick().await.expect("b ticks");
        let now = b.rollout(r.id).await.expect("rollout");
        if now.waves[1].task_id.is_some() {
            started = Some(now);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = started.expect("the second coordinator took over and started the next wave");
    assert_eq!(r.waves[0].state, "passed");
    assert_eq!(r.waves[1].targets, 12, "every till once");
    for _ in 0..3 {
        b.tick().await.expect("tick");
    }
    let tasks = b
        .tasks(Default::default(), Default::default())
        .await
        .expect("tasks");
    assert_eq!(tasks.total, 2, "one task per wave, none activated twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_coordinator_copied_to_postgres_carries_on_there() {
    let Some(pg) = postgres_or_skip("the migrate-to-postgres test") else {
        return;
    };
    let f = fixture_with(Config {
        database: tillswarm_coordinator::db::Database::Sqlite,
        ..Config::default()
    })
    .await;
    let c = &f.coordinator;
    everyone_heard(&f).await;
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let body = json!({"package_id": pkg, "waves": [
        {"name": "Pilot", "kind": "update", "targets": {"type": "till_number", "till_number": 1},
         "gate": {"soak_minutes": 10}},
        {"name": "Rest", "kind": "update", "targets": {"type": "stores_percent", "percent": 100}}]});
    let r = rollout_from(c, body.clone()).await;
    let pilot = task_of(c, &r, 0).await;
    for d in tills_of(&pilot) {
        install(c, d, pilot.summary.id, "2.0").await;
    }
    c.tick().await.expect("tick");
    let before = c.rollout(r.id).await.expect("rollout");
    let dir = f._dir.path().to_path_buf();
    let Fixture {
        coordinator,
        _dir,
        clock,
    } = f;
    drop(coordinator);

    let copy = |dir: std::path::PathBuf, pg: tillswarm_coordinator::db::Database| {
        tokio::task::spawn_blocking(move || {
            tillswarm_coordinator::db::copy::sqlite_to_postgres(&dir, &pg)
        })
    };
    let copied = copy(dir.clone(), pg.clone())
        .await
        .expect("join")
        .expect("copy");
    let rows = |t: &str| copied.tables.iter().find(|(n, _)| *n == t).map(|(_, r)| *r);
    assert_eq!(rows("devices"), Some(12));
    assert_eq!(rows("tasks"), Some(1));
    assert!(rows("audit").is_some_and(|n| n > 0));

    let c = Coordinator::open_with_clock(
        Config {
            data_dir: dir.clone(),
            database: pg.clone(),
            ..Config::default()
        },
        std::sync::Arc::new(clock.clone()),
    )
    .await
    .expect("the coordinator on PostgreSQL");
    let after = c.rollout(r.id).await.expect("the copied rollout");
    assert_eq!(after.waves[0].state, before.waves[0].state);
    assert_eq!(after.waves[0].task_id, before.waves[0].task_id);
    clock.advance_ms(11 * 60_000);
    c.tick().await.expect("tick");
    let r2 = c.rollout(r.id).await.expect("rollout");
    assert_eq!(r2.waves[1].targets, 12, "the rollout carries on");
    let next = rollout_from(&c, body).await;
    assert!(next.id > r.id, "ids continue after the copied ones");
    assert!(
        copy(dir, pg).await.expect("join").is_err(),
        "a second copy into a database with data is refused"
    );
}
