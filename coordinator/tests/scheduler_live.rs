//! The scheduler running inside `serve`, on the real clock: a timed task
//! activates within one second of its time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::clock::{parse_rfc3339, rfc3339};
use tillswarm_coordinator::service::{Config, Coordinator};
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_protocol::api::TaskKind;

#[tokio::test]
async fn timed_task_activates_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await
    .expect("open");
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    c.import_registry(registry, true, &Caller::system("test"))
        .await
        .expect("import");
    let tar = tillswarm_fixtures::package_tar(&tillswarm_fixtures::up_sh("demo", "1.0", 0), b"x");
    let pkg = c
        .upload_package(
            "demo".into(),
            "1.0".into(),
            stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(tar))]),
            &Caller::system("test"),
        )
        .await
        .expect("upload");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tillswarm_coordinator::serve(c.clone(), listener, async {
        let _ = stopped.await;
    }));

    // Timers have whole-second precision: aim two seconds ahead.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let at_ms = (now_ms / 1000 + 2) * 1000;
    let task = c
        .create_task(
            NewTask {
                kind: TaskKind::Download,
                package_id: pkg.package_id,
                group_id: tillswarm_coordinator::groups::GroupId(1),
                activate_at: Some(rfc3339(at_ms)),
                rollback: false,
                window: None,
                max_installing_per_store: None,
                install_retries: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("task");
    assert_eq!(task.summary.status, "scheduled");
    let (detail, seen_ms) = loop {
        let t = c.task(task.summary.id).await.expect("task");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        if t.summary.status != "scheduled" {
            break (t, now);
        }
        assert!(now < at_ms + 5_000, "never activated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Seen by a 10 ms poll: the activation happened at most `late` ms after its time.
    let late = seen_ms - at_ms;
    assert!(late <= 1000, "activated {late} ms after its time");
    let activated =
        parse_rfc3339(detail.summary.activated.as_deref().expect("activated")).expect("time");
    assert!(activated >= at_ms, "not before its time");
    assert_eq!(detail.summary.targets, 12);
    let _ = stop.send(());
    server.await.expect("server stops");
}
