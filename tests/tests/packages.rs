//! Packages end to end: a compressed upload reaches a till as its content,
//! its chunks cross the WAN compressed, and the next version is staged from
//! the first one's files.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use tillswarm_coordinator::groups::GroupId;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_fixtures::{RawEntry, raw_tar};
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::clock::SystemClock;
use tillswarm_protocol::{DeviceId, PackageId};
use tillswarm_tests::{Cluster, RunningNode, eventually, sample_till};

const POLL_MS: u64 = 100;

/// Version `v` of a package of a compressible library and a noise file;
/// only `settings.txt` differs between versions.
fn package(v: &str) -> Vec<u8> {
    let library = b"fn receipt_line(total: Money) -> String { format(total) }\n".repeat(20_000);
    raw_tar(&[
        RawEntry::file("up.sh", 0o755, b"#!/bin/sh\nexit 0\n"),
        RawEntry::file("lib.txt", 0o644, &library),
        RawEntry::file("noise.bin", 0o644, &tillswarm_fixtures::noise(300_000, 9)),
        RawEntry::file("settings.txt", 0o644, format!("version = {v}\n").as_bytes()),
    ])
}

/// Runs a Download task of `package` until `till` holds it; returns the WAN
/// bytes the till reported for it.
async fn download(cluster: &Cluster, package: PackageId, group: GroupId, till: DeviceId) -> u64 {
    let t = cluster
        .coordinator
        .create_task(
            NewTask {
                kind: TaskKind::Download,
                package_id: package,
                group_id: group,
                activate_at: None,
                rollback: false,
                window: None,
                max_installing_per_store: None,
                install_retries: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("task");
    let id = t.summary.id;
    eventually(60, "the till to hold the package", || async {
        let t = cluster.coordinator.task(id).await.ok()?;
        t.target_details
            .iter()
            .find(|x| x.device == till && x.state == TargetState::Downloaded)
            .map(|x| x.wan_bytes)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_gz_arrives_compressed_and_the_next_version_reuses_the_first() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let till = sample_till(0, 1);
    let group = cluster
        .coordinator
        .create_group(
            GroupInput {
                name: Some("one".into()),
                description: None,
                members: Some(vec![till]),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group")
        .id;
    let (tar1, tar2) = (package("1.0.0"), package("1.1.0"));
    let gz1 = tillswarm_fixtures::gzip(&tar1);
    let id1 = cluster.upload("lib", "1.0.0", gz1.clone()).await;
    // The package is its content; the upload is named beside it.
    assert_eq!(id1, PackageId::of(&tar1));
    let p = cluster.coordinator.package(id1).await.expect("package");
    let p = p.package;
    assert_eq!(p.upload_id, PackageId::of(&gz1));
    assert_eq!(
        (p.size, p.upload_size),
        (tar1.len() as u64, gz1.len() as u64)
    );
    assert!(p.wire_size < p.size / 2, "{} of {}", p.wire_size, p.size);

    let node = RunningNode::start(
        cluster.node_config(till, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let first_wan = download(&cluster, id1, group, till).await;
    let n = node.update_root().join("update/1.0.0");
    assert!(tillswarm_node::stage::is_staged(&n, &id1));
    assert_eq!(
        std::fs::read(n.join("lib.txt")).expect("lib"),
        tar_entry(&tar1, "lib.txt")
    );
    // Over the WAN as compressed chunks: what the manifest says, well under
    // the content.
    assert_eq!(first_wan, p.wire_size);

    // Version 1.1.0 as a plain tar: only its changed chunks cross the WAN,
    // and its unchanged files are N's own inodes.
    let id2 = cluster.upload("lib", "1.1.0", tar2.clone()).await;
    let second_wan = download(&cluster, id2, group, till).await;
    let n1 = node.update_root().join("update/1.1.0");
    assert!(tillswarm_node::stage::is_staged(&n1, &id2));
    let ino = |p: std::path::PathBuf| std::fs::metadata(p).expect("stat").ino();
    assert_eq!(ino(n.join("lib.txt")), ino(n1.join("lib.txt")));
    assert_eq!(ino(n.join("noise.bin")), ino(n1.join("noise.bin")));
    assert_ne!(ino(n.join("settings.txt")), ino(n1.join("settings.txt")));
    assert_eq!(
        std::fs::read_to_string(n1.join("settings.txt")).expect("settings"),
        "version = 1.1.0\n"
    );
    assert!(second_wan < first_wan / 2, "{second_wan} of {first_wan}");
    node.stop().await;
    cluster.stop().await;
}

/// The bytes of a regular file in a tar.
fn tar_entry(tar: &[u8], name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut a = tar::Archive::new(tar);
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_str() == Some(name) {
            let mut out = Vec::new();
            e.read_to_end(&mut out).expect("read");
            return out;
        }
    }
    panic!("no {name}");
}
