//! Two coordinators on one PostgreSQL database share the chunk store (a
//! mounted folder or a bucket): package ingestion, deletion and chunk
//! collection in one wait while the other holds the store, so neither
//! removes a chunk the other is taking up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::service::{Config, Coordinator};
use tillswarm_protocol::ChunkHash;

use common::fleet::{fixture_with, postgres_or_skip, small_package, upload};

/// Long enough for a waiting operation to have finished had it not waited.
const PATIENCE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_sharing_a_chunk_store_take_turns_with_it() {
    let Some(database) = postgres_or_skip("the shared chunk store test") else {
        return;
    };
    let f = fixture_with(Config {
        database: database.clone(),
        ..Config::default()
    })
    .await;
    let a = &f.coordinator;
    let first = upload(a, "pos", "1.0", small_package("1.0")).await;
    // A chunk no package references yet, as an ingestion in progress on
    // coordinator A leaves it in the shared store.
    let pending = b"a chunk of an upload still in progress".to_vec();
    let hex = ChunkHash::of(&pending).to_hex();
    let path = f._dir.path().join("chunks").join(&hex[..2]).join(&hex);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("chunk folder");
    std::fs::write(&path, &pending).expect("pending chunk");

    let held = a.hold_chunk_store().await.expect("A holds the store");
    // Coordinator B, starting, collects unreferenced chunks: it waits.
    let opening = tokio::spawn(Coordinator::open_with_clock(
        Config {
            data_dir: f._dir.path().to_path_buf(),
            database,
            ..Config::default()
        },
        Arc::new(f.clock.clone()),
    ));
    tokio::time::sleep(PATIENCE).await;
    assert!(!opening.is_finished(), "B's collection waits for A");
    assert!(path.exists(), "A's pending chunk is kept meanwhile");
    drop(held);
    let b = tokio::time::timeout(Duration::from_secs(20), opening)
        .await
        .expect("B opens once A lets go")
        .expect("join")
        .expect("open B");
    assert!(!path.exists(), "then collected: no package took it up");

    // B's deletion and upload wait for A in the same way.
    let held = a.hold_chunk_store().await.expect("A holds the store again");
    let deleting = {
        let b = b.clone();
        tokio::spawn(async move { b.delete_package(first, &Caller::system("test")).await })
    };
    let uploading = {
        let b = b.clone();
        tokio::spawn(async move { upload(&b, "pos", "2.0", small_package("2.0")).await })
    };
    tokio::time::sleep(PATIENCE).await;
    assert!(!deleting.is_finished(), "B's deletion waits for A");
    assert!(!uploading.is_finished(), "B's ingestion waits for A");
    drop(held);
    tokio::time::timeout(Duration::from_secs(20), deleting)
        .await
        .expect("deleted once A lets go")
        .expect("join")
        .expect("delete");
    let second = tokio::time::timeout(Duration::from_secs(20), uploading)
        .await
        .expect("uploaded once A lets go")
        .expect("join");
    let listed = a.packages(Default::default()).await.expect("list");
    let ids: Vec<_> = listed.items.iter().map(|p| p.package_id).collect();
    assert_eq!(ids, vec![second], "A sees B's work in the shared database");
}
