//! Package chunks in S3-compatible object storage, against a real S3
//! server on loopback (`s3s-fs`, see `tillswarm_tests::s3`): the coordinator
//! keeps, serves and collects chunks (and signed manifests) there, a wrong
//! key or bucket stops its start, and tills fetch chunks straight from a
//! chunk base URL named in their signed instructions, falling back to the
//! coordinator.

use std::path::Path;
use std::sync::Arc;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::chunks::bucket::BucketConfig;
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::clock::SystemClock;
use tillswarm_protocol::{ChunkHash, SignedManifest};
use tillswarm_tests::s3::S3Server;
use tillswarm_tests::{Cluster, RunningNode, eventually, sample_till};

async fn open(
    data: &Path,
    chunk_store: BucketConfig,
) -> tillswarm_coordinator::Result<Coordinator> {
    Coordinator::open(Config {
        data_dir: data.to_path_buf(),
        chunk_store: Some(chunk_store),
        ..Config::default()
    })
    .await
}

async fn upload(
    c: &Coordinator,
    name: &str,
    version: &str,
    bytes: Vec<u8>,
) -> tillswarm_protocol::PackageId {
    let body = futures_util::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(bytes))]);
    c.upload_package(name.into(), version.into(), body, &Caller::system("test"))
        .await
        .expect("upload")
        .package_id
}

fn compressible_package(version: &str) -> Vec<u8> {
    // Text compresses (zstd frames), noise does not (raw chunks): both forms.
    let mut payload = "till settings line\n".repeat(40_000).into_bytes();
    payload.extend(tillswarm_fixtures::noise(600_000, 3));
    tillswarm_fixtures::package_tar(&tillswarm_fixtures::up_sh("demo", version, 0), &payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_live_in_the_bucket_and_are_served_and_collected_from_it() {
    let Some(s3) = S3Server::start(true) else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let c = open(data.path(), s3.bucket("prod")).await.expect("open");
    let id = upload(&c, "demo", "1.0.0", compressible_package("1.0.0")).await;
    let manifest = SignedManifest::from_bytes(&c.signed_manifest(id).await.expect("manifest"))
        .and_then(|m| m.verify(&c.online_public_key()))
        .expect("signed manifest");

    // Every chunk is an object named as a manifest implies, none in the
    // folder; the signed manifest lies beside them.
    let stored = s3.objects("prod");
    let expected: Vec<String> = {
        let mut v: Vec<String> = manifest
            .chunks
            .iter()
            .map(|ch| {
                let hex = ch.hash.to_hex();
                let suffix = if ch.zstd_len > 0 { ".zst" } else { "" };
                format!("{}/{hex}{suffix}", &hex[..2])
            })
            .collect();
        v.push(format!("manifests/{}", id.to_hex()));
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(stored, expected);
    assert_eq!(
        std::fs::read(s3.folder("prod").join("manifests").join(id.to_hex())).expect("manifest"),
        c.signed_manifest(id).await.expect("manifest"),
        "the bucket's manifest is the signed one tills get"
    );
    assert!(manifest.chunks.iter().any(|ch| ch.zstd_len > 0));
    assert!(manifest.chunks.iter().any(|ch| ch.zstd_len == 0));
    let local: Vec<_> = std::fs::read_dir(data.path().join("chunks"))
        .expect("chunks folder")
        .flatten()
        .filter(|e| e.file_name() != "tmp")
        .collect();
    assert!(local.is_empty(), "chunks written to the folder: {local:?}");

    // Served from the bucket, in either form, with the content's hash.
    for ch in &manifest.chunks {
        let (content, compressed) = c.chunk(ch.hash, false).await.expect("chunk");
        assert!(!compressed);
        assert_eq!(ChunkHash::of(&content), ch.hash);
        let (stored, compressed) = c.chunk(ch.hash, true).await.expect("stored chunk");
        assert_eq!(compressed, ch.zstd_len > 0);
        if compressed {
            assert_eq!(stored.len(), ch.zstd_len as usize);
        }
    }
    // The same content again is refused, and leaves the bucket as it was.
    let body = futures_util::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(
        compressible_package("1.0.0"),
    ))]);
    let refused = c
        .upload_package("demo".into(), "1.0.1".into(), body, &Caller::system("test"))
        .await;
    assert!(refused.is_err());
    assert_eq!(s3.objects("prod"), expected);

    // An orphan left in the bucket (an interrupted upload) is collected at
    // the next start; deleting the packages removes their chunks.
    let orphan = ChunkHash::of(b"left by an upload that died");
    let hex = orphan.to_hex();
    let orphan_dir = s3.folder("prod").join(&hex[..2]);
    std::fs::create_dir_all(&orphan_dir).expect("dir");
    std::fs::write(orphan_dir.join(&hex), b"left by an upload that died").expect("orphan");
    let stray = s3.folder("prod").join("manifests").join(orphan.to_hex());
    std::fs::write(&stray, b"a manifest of a package the database never took").expect("stray");
    drop(c);
    let c = open(data.path(), s3.bucket("prod")).await.expect("reopen");
    assert_eq!(s3.objects("prod"), expected, "the orphans are collected");
    c.delete_package(id, &Caller::system("test"))
        .await
        .expect("delete");
    assert!(s3.objects("prod").is_empty(), "{:?}", s3.objects("prod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_refused_after_its_chunks_were_uploaded_leaves_none_in_the_bucket() {
    let Some(s3) = S3Server::start(true) else {
        return;
    };
    use tillswarm_fixtures::{RawEntry, raw_tar};
    let data = tempfile::tempdir().expect("tempdir");
    let c = open(data.path(), s3.bucket("prod")).await.expect("open");
    // 12 MB of payload (dozens of chunks, uploaded side by side while the
    // archive is checked), then an entry that escapes the install folder.
    let hostile = raw_tar(&[
        RawEntry::file("up.sh", 0o755, b"#!/bin/sh\nexit 0\n"),
        RawEntry::file(
            "payload.bin",
            0o644,
            &tillswarm_fixtures::noise(12 << 20, 5),
        ),
        RawEntry::file("../../etc/cron.d/x", 0o644, b"x"),
    ]);
    let body = futures_util::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(hostile))]);
    let refused = c
        .upload_package("demo".into(), "1.0.0".into(), body, &Caller::system("test"))
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains(".."), "{refused}");
    assert!(s3.objects("prod").is_empty(), "{:?}", s3.objects("prod"));
    // The bucket still takes a good package afterwards.
    upload(&c, "demo", "1.0.1", compressible_package("1.0.1")).await;
    assert!(!s3.objects("prod").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_a_missing_bucket_stops_the_start() {
    let Some(s3) = S3Server::start(true) else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let mut wrong = s3.bucket("prod");
    wrong.secret_access_key = Some("not-the-secret".into());
    let err = open(data.path(), wrong)
        .await
        .err()
        .expect("a wrong secret is refused");
    assert!(err.to_string().contains("s3://chunks/prod"), "{err}");
    let mut missing = s3.bucket("");
    missing.url = "s3://no-such-bucket".parse().expect("url");
    let err = open(data.path(), missing)
        .await
        .err()
        .expect("a missing bucket is refused");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

/// A coordinator whose chunks live in `s3` under `prefix` and whose tills are
/// told to fetch them from `base`; one till of store 1 in a group.
async fn cluster_with_base(s3: &S3Server, prefix: &str, base: String) -> Cluster {
    let bucket = s3.bucket(prefix);
    let cluster = Cluster::start_configured(100, move |c| Config {
        chunk_store: Some(bucket),
        chunk_base_url: Some(base),
        ..c
    })
    .await;
    cluster.import_sample_registry().await;
    cluster
}

/// Uploads a package, sends a Download task to one till and waits until the
/// till has staged it; returns the package's size.
async fn download_on_one_till(cluster: &Cluster) -> u64 {
    let pkg = cluster
        .upload("demo", "1.0.0", compressible_package("1.0.0"))
        .await;
    let d = sample_till(0, 1);
    let group = cluster.group("one", vec![d]).await;
    let node = RunningNode::start(
        cluster.node_config(d, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let task = cluster.task(TaskKind::Download, pkg, group).await;
    let detail = eventually(60, "the till to stage the package", || async {
        let t = cluster.coordinator.task(task).await.expect("task");
        (t.target_details[0].state == TargetState::Downloaded).then_some(t)
    })
    .await;
    assert!(tillswarm_node::stage::is_staged(
        &node.update_root().join("update/1.0.0"),
        &pkg
    ));
    node.stop().await;
    detail.summary.package_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tills_fetch_chunks_from_the_base_url_not_the_coordinator() {
    // Anonymous reads, as from a public CDN in front of the bucket.
    let Some(s3) = S3Server::start(false) else {
        return;
    };
    let base = format!("http://{}/{}/cdn", s3.addr, tillswarm_tests::s3::BUCKET);
    let cluster = cluster_with_base(&s3, "cdn", base).await;
    let size = download_on_one_till(&cluster).await;
    assert!(size > 0);
    assert_eq!(
        cluster.coordinator.metrics().chunk_bytes(),
        0,
        "every chunk came from the base URL"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_base_url_falls_back_to_the_coordinator() {
    let Some(s3) = S3Server::start(false) else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let cluster = cluster_with_base(&s3, "dead", format!("http://{closed}/nothing")).await;
    download_on_one_till(&cluster).await;
    assert!(
        cluster.coordinator.metrics().chunk_bytes() > 0,
        "the coordinator served the chunks"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_base_url_with_a_query_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        chunk_base_url: Some("https://cdn.example.com/c?sig=1".into()),
        ..Config::default()
    })
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("chunk base URL"), "{err}");
}
