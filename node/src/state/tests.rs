//! The state database: durability, migrations, task-id reuse.

use rusqlite::Connection;

use super::*;

fn assignment(id: u64, attempt: u32) -> Assignment {
    Assignment {
        task_id: TaskId(id),
        kind: TaskKind::Update,
        package_id: PackageId::of(b"p"),
        package_name: "demo".into(),
        version: "1.0".parse().expect("version"),
        size: 10,
        install_at_unix: None,
        rollback: false,
        attempt,
        join_by_unix_ms: None,
        store_peers: Vec::new(),
        store_holders: Vec::new(),
        hold_install: false,
        install_until_unix: None,
    }
}

#[tokio::test]
async fn survives_reopen_and_tracks_assignments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opening = Opening::open(dir.path()).expect("open");
    assert_eq!(opening.next_boot().expect("boot"), 1);
    opening
        .init_version(Some(&"0.9".parse().expect("v")))
        .expect("init");
    let s = opening.start().expect("start");
    assert_eq!(s.next_seq().await.expect("seq"), 1);
    assert_eq!(
        s.sync_assignments(&[assignment(1, 1), assignment(2, 1)])
            .await
            .expect("sync"),
        (vec![], vec![])
    );
    s.set_declined(TaskId(1), 1).await.expect("decline");
    drop(s);
    let mut opening = Opening::open(dir.path()).expect("reopen");
    assert_eq!(opening.next_boot().expect("boot"), 2);
    let s = opening.start().expect("start");
    assert_eq!(s.next_seq().await.expect("seq"), 2);
    let t = s.task(TaskId(1)).await.expect("task").expect("present");
    assert_eq!(t.state, TargetState::Declined);
    assert_eq!(t.declined_boot, Some(1));
    // Task 2 dropped by the coordinator; task 1 restarted (attempt 2).
    let (gone, replaced) = s.sync_assignments(&[assignment(1, 2)]).await.expect("sync");
    assert_eq!((gone, replaced), (vec![TaskId(2)], vec![]));
    let t = s.task(TaskId(1)).await.expect("task").expect("present");
    assert_eq!(
        (t.state, t.assignment.attempt, t.declined_boot),
        (TargetState::Pending, 2, None)
    );
    s.set_installed(&"1.0".parse().expect("v"))
        .await
        .expect("installed");
    assert_eq!(
        s.previous_version()
            .await
            .expect("prev")
            .map(|v| v.to_string()),
        Some("0.9".into())
    );
}

#[tokio::test]
async fn a_reused_task_id_with_another_package_is_a_new_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = State::open(dir.path()).expect("open");
    // Task 19: an Update of 60.0.0, staged and declined by the cashier.
    let mut old = assignment(19, 1);
    old.kind = TaskKind::Update;
    old.version = "60.0.0".parse().expect("v");
    s.sync_assignments(&[old]).await.expect("sync");
    s.set_state(TaskId(19), TargetState::Downloaded, None, None)
        .await
        .expect("state");
    s.set_declined(TaskId(19), 1).await.expect("decline");
    // The coordinator hands id 19 to a Download of 61.0.0.
    let mut new = assignment(19, 1);
    new.kind = TaskKind::Download;
    new.version = "61.0.0".parse().expect("v");
    new.package_id = PackageId::of(b"61.0.0");
    let (gone, replaced) = s.sync_assignments(&[new.clone()]).await.expect("sync");
    assert_eq!((gone, replaced), (vec![], vec![TaskId(19)]));
    let t = s.task(TaskId(19)).await.expect("task").expect("present");
    assert_eq!(t.assignment, new, "the new task, not the old one");
    assert_eq!((t.state, t.declined_boot), (TargetState::Pending, None));
    // The same assignment again changes nothing.
    assert_eq!(
        s.sync_assignments(&[new]).await.expect("sync"),
        (vec![], vec![])
    );
}

#[tokio::test]
async fn a_database_from_before_migrations_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The first release's schema, at user_version 0, with a task in it.
        let c = Connection::open(dir.path().join("node.sqlite3")).expect("open");
        c.execute_batch(MIGRATIONS[0]).expect("schema 1");
        c.execute(
            "INSERT INTO tasks (task_id, attempt, kind, package_id, name, version, size, rollback, state, wan_start)
             VALUES (7, 1, 'download', ?1, 'demo', '1.0', 10, 0, 'downloading', 1234)",
            [PackageId::of(b"p").to_hex()],
        )
        .expect("row");
    }
    let s = State::open(dir.path()).expect("migrate");
    let t = s.task(TaskId(7)).await.expect("task").expect("kept");
    assert_eq!(t.state, TargetState::Downloading);
    assert_eq!(t.assignment.join_by_unix_ms, Some(1234));
    assert!(t.assignment.store_peers.is_empty());
    // Store peers round-trip, and reopening applies nothing twice.
    let mut a = assignment(8, 1);
    a.store_holders = vec![DeviceId::from_bytes([9; 16])];
    a.store_peers = vec![
        "6f1c2d3e-0000-4000-8000-000000000001"
            .parse()
            .expect("guid"),
    ];
    s.sync_assignments(&[a.clone()]).await.expect("sync");
    drop(s);
    let s = State::open(dir.path()).expect("reopen");
    let t = s.task(TaskId(8)).await.expect("task").expect("present");
    assert_eq!(t.assignment.store_peers, a.store_peers);
    assert_eq!(t.assignment.store_holders, a.store_holders);
}

#[test]
fn a_database_from_a_newer_node_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let c = Connection::open(dir.path().join("node.sqlite3")).expect("open");
        c.pragma_update(None, "user_version", 99).expect("pragma");
    }
    let err = State::open(dir.path()).err().expect("refused").to_string();
    assert!(err.contains("newer node"), "{err}");
}
