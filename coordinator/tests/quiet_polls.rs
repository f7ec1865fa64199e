//! A poll that repeats the last heartbeat written for its till is answered
//! without a write (the `tillswarm_quiet_polls_total` counter counts them),
//! and never at the cost of correctness: a change, new instructions, an
//! install waiting for its version, a till imported again, or a minute since
//! the last write each take the full, writing path. The fleet gauges read
//! the contact these polls keep.

mod common;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_protocol::api::{DeviceState, HeartbeatRequest, TargetState, TaskKind};

use common::fleet::{fixture, heartbeat, report, send, small_package, till, upload};

#[tokio::test]
async fn an_unchanged_poll_writes_nothing_until_a_minute_has_passed() {
    let f = fixture().await;
    let c = &f.coordinator;
    let d = till(0, 1);
    let quiet = || c.metrics().quiet_polls();
    let last_seen = || async { c.device(d).await.expect("device").last_seen };

    let first = heartbeat(c, d, "0.9", None).await;
    assert!(
        first.assignments.is_some(),
        "the first poll gets instructions"
    );
    let seen_first = last_seen().await.expect("seen");
    assert_eq!(quiet(), 0);

    // Ten seconds on, the same heartbeat with the revision it holds: quiet.
    f.clock.advance_ms(10_000);
    let again = heartbeat(c, d, "0.9", Some(first.revision)).await;
    assert_eq!(again.revision, first.revision);
    assert!(again.assignments.is_none());
    assert_eq!(quiet(), 1, "answered from a read");
    assert_eq!(
        last_seen().await.as_deref(),
        Some(seen_first.as_str()),
        "nothing written"
    );

    // A stale revision: the full path, which sends the instructions again.
    f.clock.advance_ms(1_000);
    let stale = heartbeat(c, d, "0.9", Some(first.revision + 7)).await;
    assert!(stale.assignments.is_some());
    assert_eq!(quiet(), 1);

    // A change (another version) is written at once.
    f.clock.advance_ms(1_000);
    heartbeat(c, d, "1.0.0", Some(first.revision)).await;
    assert_eq!(quiet(), 1);
    let device = c.device(d).await.expect("device");
    assert_eq!(device.version.as_deref(), Some("1.0.0"));
    let seen_change = device.last_seen.expect("seen");
    assert_ne!(seen_change, seen_first);

    // Unchanged again: quiet until a minute after that write, then written.
    f.clock.advance_ms(30_000);
    heartbeat(c, d, "1.0.0", Some(first.revision)).await;
    assert_eq!(quiet(), 2);
    assert_eq!(last_seen().await.as_deref(), Some(seen_change.as_str()));
    f.clock.advance_ms(30_000);
    heartbeat(c, d, "1.0.0", Some(first.revision)).await;
    assert_eq!(quiet(), 2, "a minute after the last write: written");
    assert_eq!(c.metrics().refreshed_polls(), 1, "in one statement");
    assert_ne!(last_seen().await.as_deref(), Some(seen_change.as_str()));

    // A token that no longer holds (the till's key was reset meanwhile) is
    // refused, as on the full path: within the quiet minute and when due
    // for a refresh.
    let old_token = common::log_in(c, d).await.expect("token");
    c.reset_device_key(d, &Caller::system("test"))
        .await
        .expect("reset");
    let unchanged = HeartbeatRequest {
        device_id: d,
        version: Some("1.0.0".parse().expect("version")),
        state: DeviceState::Ready,
        ip: None,
        peer_id: None,
        free_disk_bytes: Some(1 << 30),
        known_revision: Some(first.revision),
        warnings: Vec::new(),
        swarm_addrs: Vec::new(),
        connected_peers: None,
    };
    for advance in [1_000, 61_000] {
        f.clock.advance_ms(advance);
        let refused = c
            .heartbeat(old_token.clone(), unchanged.clone(), None)
            .await
            .expect_err("a reset key ends the session");
        assert_eq!(refused.code(), "invalid_device_token", "{advance}");
    }
    assert_eq!((quiet(), c.metrics().refreshed_polls()), (2, 1));
}

#[tokio::test]
async fn an_install_waiting_for_its_version_is_confirmed_by_an_unchanged_poll() {
    let f = fixture().await;
    let c = &f.coordinator;
    let d = till(0, 2);
    let pkg = upload(c, "demo", "1.0.0", small_package("1.0.0")).await;
    let group = c
        .create_group(
            GroupInput {
                name: Some("one".into()),
                description: None,
                members: Some(vec![d]),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group");
    let task = c
        .create_task(
            NewTask {
                kind: TaskKind::ForcedUpdate,
                package_id: pkg,
                group_id: group.id,
                activate_at: None,
                rollback: false,
                window: None,
                max_installing_per_store: None,
                install_retries: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("task")
        .summary
        .id;
    let hb = heartbeat(c, d, "0.9", None).await;
    // The till installed and already runs 1.0.0 (its heartbeat says so)
    // before its report of the reboot arrives.
    f.clock.advance_ms(1_000);
    let hb = heartbeat(c, d, "1.0.0", Some(hb.revision)).await;
    send(c, report(d, task, 1, 1, TargetState::Rebooting))
        .await
        .expect("report");
    // The next poll repeats the last one exactly; it must still confirm.
    f.clock.advance_ms(1_000);
    heartbeat(c, d, "1.0.0", Some(hb.revision)).await;
    let detail = c.task(task).await.expect("task");
    assert_eq!(detail.target_details[0].state, TargetState::Installed);
}

#[tokio::test]
async fn a_till_imported_again_is_seen_at_its_next_poll() {
    let f = fixture().await;
    let c = &f.coordinator;
    let d = till(1, 1);
    let first = heartbeat(c, d, "0.9", None).await;
    f.clock.advance_ms(1_000);
    heartbeat(c, d, "0.9", Some(first.revision)).await;
    assert_eq!(c.metrics().quiet_polls(), 1);
    c.delete_device(d, &Caller::system("test"))
        .await
        .expect("delete");
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    c.import_registry(registry, true, &Caller::system("test"))
        .await
        .expect("import");
    assert!(c.device(d).await.expect("device").last_seen.is_none());
    // Same heartbeat, same revision number as before the removal, within
    // the minute: the database says never seen, so it is written.
    f.clock.advance_ms(1_000);
    let hb = heartbeat(c, d, "0.9", Some(first.revision)).await;
    let _ = hb;
    assert!(c.device(d).await.expect("device").last_seen.is_some());
}

#[tokio::test]
async fn the_fleet_gauges_and_store_counts_follow_approval_and_contact() {
    let f = fixture().await;
    let c = &f.coordinator;
    let before = c.gauges().await.expect("gauges");
    assert_eq!(before.devices_online, 0);
    let (a, b) = (till(0, 1), till(0, 2));
    heartbeat(c, a, "0.9", None).await;
    heartbeat(c, b, "0.9", None).await;
    let g = c.gauges().await.expect("gauges");
    assert_eq!(g.devices_online, 2);
    let online_in_stores = || async {
        let stores = c.stores().await.expect("stores");
        stores.iter().map(|s| s.online).sum::<u32>()
    };
    assert_eq!(online_in_stores().await, 2);
    assert_eq!(g.devices_approved, before.devices_approved);
    assert_eq!(g.devices_pending, before.devices_pending);
    // A stranger logging in waits for approval.
    let stranger = tillswarm_protocol::DeviceId::from_bytes([0xee; 16]);
    assert!(common::log_in(c, stranger).await.is_none());
    let g = c.gauges().await.expect("gauges");
    assert_eq!(g.devices_pending, before.devices_pending + 1);
    // Past the online window, nobody counts as online.
    f.clock.advance_ms(3_600_000);
    assert_eq!(c.gauges().await.expect("gauges").devices_online, 0);
    assert_eq!(online_in_stores().await, 0);
}
