//! The store swarm in one process: ten tills of one store (libp2p on loopback,
//! static discovery) share a package so it crosses the "WAN" (the coordinator)
//! about once; peers leaving, a peer serving corrupt chunks, and delta updates.

use std::sync::Arc;
use tillswarm_coordinator::groups::GroupId;
use tillswarm_protocol::TaskId;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::tasks::TaskDetail;
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::clock::SystemClock;
use tillswarm_protocol::{DeviceId, PackageId};
use tillswarm_tests::{
    Cluster, RunningNode, TEST_SWARM_KEY, connect_all, eventually, mesh, sample_till,
};

/// Ten tills of one store (the sample registry has six per store; the rest
/// enroll with a store token).
fn tills() -> Vec<DeviceId> {
    (1..=10u32)
        .map(|n| {
            if n <= 6 {
                sample_till(0, n)
            } else {
                format!("71110000-0000-0000-0000-0000000000{n:02}")
                    .parse()
                    .expect("guid")
            }
        })
        .collect()
}

async fn setup(cluster: &Cluster, tills: &[DeviceId]) -> GroupId {
    cluster.import_sample_registry().await;
    for &d in tills {
        // Tills the registry does not list join the store with an enrollment token.
        if cluster.coordinator.device(d).await.is_err() {
            cluster.enroll(d, "store-001").await;
        }
    }
    cluster
        .coordinator
        .create_group(
            GroupInput {
                name: Some("store".into()),
                description: None,
                members: Some(tills.to_vec()),
            },
            &Caller::system("test"),
        )
        .await
        .expect("group")
        .id
}

fn start_node(cluster: &Cluster, d: DeviceId) -> RunningNode {
    let mut config = cluster.node_config(d, "store-001");
    config.swarm_key = Some(TEST_SWARM_KEY.into());
    RunningNode::start_wired(config, Arc::new(SystemClock), cluster.swarm_wiring())
}

async fn download(cluster: &Cluster, pkg: PackageId, group: GroupId) -> TaskId {
    cluster.task(TaskKind::Download, pkg, group).await
}

async fn wait_all(cluster: &Cluster, task: TaskId, tills: &[DeviceId], secs: u64) -> TaskDetail {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let t = cluster.coordinator.task(task).await.expect("task");
        let done = tills.iter().all(|d| {
            t.target_details
                .iter()
                .any(|x| x.device == *d && x.state == TargetState::Downloaded)
        });
        if done {
            return t;
        }
        if tokio::time::Instant::now() > deadline {
            let states: Vec<String> = t
                .target_details
                .iter()
                .map(|x| {
                    format!(
                        "{} {:?} {}/{}",
                        x.device, x.state, x.bytes_done, t.summary.package_size
                    )
                })
                .collect();
            panic!(
                "task {task}: not every till holds the package after {secs} s:\n{}",
                states.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn wan_total(t: &TaskDetail, tills: &[DeviceId]) -> u64 {
    t.target_details
        .iter()
        .filter(|x| tills.contains(&x.device))
        .map(|x| x.wan_bytes)
        .sum()
}

/// The swarm tests run one at a time: each runs up to ten tills on this
/// machine's two cores, and in parallel they would only slow each other down.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn package(version: &str, mib: usize) -> Vec<u8> {
    tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        &tillswarm_fixtures::noise(mib << 20, 99),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tills_share_a_package_crossing_the_wan_about_once() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills = tills();
    let group = setup(&cluster, &tills).await;
    let bytes = package("1.0.0", 64);
    let size = bytes.len() as u64;
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    let nodes: Vec<RunningNode> = tills.iter().map(|&d| start_node(&cluster, d)).collect();
    mesh(&nodes.iter().collect::<Vec<_>>()).await;
    let task = download(&cluster, pkg, group).await;
    let t = wait_all(&cluster, task, &tills, 240).await;
    let wan = wan_total(&t, &tills);
    let lan: u64 = t.target_details.iter().map(|x| x.lan_bytes).sum();
    let ratio = wan as f64 / size as f64;
    eprintln!(
        "10 tills, {} MiB: WAN {wan} bytes = {ratio:.3} x package, LAN {lan} bytes",
        size >> 20
    );
    assert!(ratio <= 1.05, "WAN bytes {ratio:.3} x package size");
    assert_eq!(
        t.stores
            .iter()
            .find(|s| s.store_id == "store-001")
            .map(|s| s.tills),
        Some(10)
    );
    // Every till verified and staged the same bytes.
    for n in &nodes {
        assert!(tillswarm_node::stage::is_staged(
            &n.update_root().join("update/1.0.0"),
            &pkg
        ));
    }
    // WAN fetches were spread across the tills, not all on one.
    let fetchers = t.target_details.iter().filter(|x| x.wan_bytes > 0).count();
    assert!(fetchers >= 5, "only {fetchers} tills used the WAN");
    // Heartbeats carry each till's libp2p peer id.
    let dev = cluster.coordinator.device(tills[0]).await.expect("device");
    let expected = nodes[0].agent.net().expect("swarm").peer_id.to_string();
    assert_eq!(dev.peer_id.as_deref(), Some(expected.as_str()));
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_finish_when_three_tills_die_midway() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills = tills();
    let group = setup(&cluster, &tills).await;
    let bytes = package("1.0.0", 48);
    let size = bytes.len() as u64;
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    let mut nodes: Vec<RunningNode> = tills.iter().map(|&d| start_node(&cluster, d)).collect();
    mesh(&nodes.iter().collect::<Vec<_>>()).await;
    let task = download(&cluster, pkg, group).await;
    // Midway: some bytes have moved, not all.
    eventually(120, "the transfer to be under way", || async {
        let t = cluster.coordinator.task(task).await.ok()?;
        let done: u64 = t.target_details.iter().map(|x| x.bytes_done).sum();
        (done > size * 2).then_some(())
    })
    .await;
    let dead: Vec<RunningNode> = nodes.drain(..3).collect();
    for n in dead {
        n.kill().await;
    }
    let survivors = &tills[3..];
    let t = wait_all(&cluster, task, survivors, 240).await;
    let wan = wan_total(&t, &tills) as f64 / size as f64;
    eprintln!("3 of 10 tills killed midway: the other 7 finished; WAN {wan:.3} x package");
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_chunks_is_banned_and_everyone_finishes() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills: Vec<DeviceId> = tills().into_iter().take(5).collect();
    let group = setup(&cluster, &tills).await;
    let bytes = package("1.0.0", 16);
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    let manifest = cluster
        .coordinator
        .package(pkg)
        .await
        .expect("package")
        .manifest;
    // The evil till claims every chunk: its chunk store holds garbage under the right names.
    let evil_config = {
        let mut c = cluster.node_config(tills[0], "store-001");
        c.swarm_key = Some(TEST_SWARM_KEY.into());
        c
    };
    for chunk in &manifest.chunks {
        let hex = chunk.hash.to_hex();
        let dir = evil_config.data_dir.join("chunks").join(&hex[..2]);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(&hex), vec![0xEE; chunk.length as usize]).expect("garbage");
    }
    let evil = RunningNode::start_wired(evil_config, Arc::new(SystemClock), cluster.swarm_wiring());
    let honest: Vec<RunningNode> = tills[1..]
        .iter()
        .map(|&d| start_node(&cluster, d))
        .collect();
    let mut all: Vec<&RunningNode> = vec![&evil];
    all.extend(honest.iter());
    mesh(&all).await;
    let task = download(&cluster, pkg, group).await;
    let t = wait_all(&cluster, task, &tills[1..], 120).await;
    for n in &honest {
        assert!(
            tillswarm_node::stage::is_staged(&n.update_root().join("update/1.0.0"), &pkg),
            "right hash"
        );
        let net = n.agent.net().expect("swarm");
        let evil_id = evil.agent.net().expect("swarm").peer_id;
        assert!(
            !net.view().contains_key(&evil_id),
            "the evil till is no longer a live peer"
        );
    }
    eprintln!(
        "corrupt peer banned; honest WAN {:.3} x package",
        wan_total(&t, &tills[1..]) as f64 / t.summary.package_size as f64
    );
    evil.stop().await;
    for n in honest {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_fetches_only_the_changed_chunks() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills: Vec<DeviceId> = tills().into_iter().take(5).collect();
    let group = setup(&cluster, &tills).await;
    let size = tillswarm_fixtures::DEMO_PAYLOAD_SIZE;
    let old = cluster
        .upload(
            "demo",
            "1.0.0",
            tillswarm_fixtures::demo_package("1.0.0", size),
        )
        .await;
    let new_bytes = tillswarm_fixtures::demo_package("1.1.0", size);
    let new_size = new_bytes.len() as u64;
    let new = cluster.upload("demo", "1.1.0", new_bytes).await;
    let nodes: Vec<RunningNode> = tills.iter().map(|&d| start_node(&cluster, d)).collect();
    mesh(&nodes.iter().collect::<Vec<_>>()).await;
    let first = download(&cluster, old, group).await;
    wait_all(&cluster, first, &tills, 120).await;
    let second = download(&cluster, new, group).await;
    let t = wait_all(&cluster, second, &tills, 120).await;
    let ratio = wan_total(&t, &tills) as f64 / new_size as f64;
    eprintln!("delta 1.0.0 -> 1.1.0 on 5 tills: WAN {ratio:.3} x package");
    assert!(ratio <= 0.2, "delta WAN {ratio:.3} x package");
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tills_find_each_other_through_the_coordinator_without_multicast() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills: Vec<DeviceId> = tills().into_iter().take(5).collect();
    let group = setup(&cluster, &tills).await;
    let bytes = package("1.0.0", 16);
    let size = bytes.len() as u64;
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    // No mDNS, not on the simulated LAN: each learns the others' swarm
    // addresses only from its signed instructions.
    let nodes: Vec<RunningNode> = tills
        .iter()
        .map(|&d| {
            let mut config = cluster.node_config(d, "store-001");
            config.swarm_key = Some(TEST_SWARM_KEY.into());
            RunningNode::start(config, Arc::new(SystemClock), None)
        })
        .collect();
    for n in &nodes {
        assert!(!n.agent.config().mdns);
    }
    eventually(30, "every till to see the other four", || async {
        nodes
            .iter()
            .all(|n| n.agent.net().is_some_and(|net| net.view().len() == 4))
            .then_some(())
    })
    .await;
    let dev = cluster.coordinator.device(tills[0]).await.expect("device");
    let listen = nodes[0].agent.net().expect("swarm").listen_addr;
    let port = tillswarm_node::peers::port_of(&listen).expect("port");
    let reported: Vec<String> =
        tillswarm_node::peers::swarm_addrs(nodes[0].agent.config().swarm_listen.ip(), port)
            .iter()
            .map(ToString::to_string)
            .collect();
    assert!(!reported.is_empty());
    assert_eq!(
        dev.swarm_addrs, reported,
        "the coordinator shows where the till's swarm listens"
    );
    let task = download(&cluster, pkg, group).await;
    let t = wait_all(&cluster, task, &tills, 120).await;
    let ratio = wan_total(&t, &tills) as f64 / size as f64;
    eprintln!("5 tills without multicast: WAN {ratio:.3} x package");
    // `node status` lists the till's peers and what they hold.
    let chunks = tillswarm_protocol::manifest::SignedManifest::from_bytes(
        &cluster
            .coordinator
            .signed_manifest(pkg)
            .await
            .expect("manifest"),
    )
    .and_then(|m| m.verify(&cluster.coordinator.online_public_key()))
    .expect("manifest")
    .chunks
    .len();
    let status = eventually(10, "the peers' holdings in the status", || async {
        let s = nodes[0].agent.ui().status().await;
        let full = |p: &tillswarm_node::local_api::PeerStatus| {
            p.holds
                .iter()
                .any(|h| h.package_id == pkg && h.chunks == chunks)
        };
        (s.peers.len() == 4 && s.peers.iter().all(full)).then_some(s)
    })
    .await;
    let mut devices: Vec<DeviceId> = status.peers.iter().filter_map(|p| p.device).collect();
    devices.sort();
    let mut others = tills[1..].to_vec();
    others.sort();
    assert_eq!(devices, others, "the status names the four other tills");
    assert!(ratio <= 1.05, "WAN bytes {ratio:.3} x package size");
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_devices_cannot_join_the_store() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    cluster.import_sample_registry().await;
    let member = start_node(&cluster, sample_till(0, 1));
    let friend = start_node(&cluster, sample_till(0, 2));
    // Same store, another chain key: the private-network handshake fails.
    let mut config = cluster.node_config(sample_till(0, 3), "store-001");
    config.swarm_key = Some("22".repeat(32));
    let stranger = RunningNode::start(config, Arc::new(SystemClock), None);
    // The right key, another store: refused at Hello.
    let mut config = cluster.node_config(sample_till(1, 1), "store-002");
    config.swarm_key = Some(TEST_SWARM_KEY.into());
    let neighbour = RunningNode::start(config, Arc::new(SystemClock), None);
    connect_all(&[&member, &friend, &stranger, &neighbour]).await;
    let net = member.agent.net().expect("swarm");
    let friend_id = friend.agent.net().expect("swarm").peer_id;
    eventually(10, "the store peer to join", || async {
        net.view().contains_key(&friend_id).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let live: Vec<_> = net.view().into_keys().collect();
    assert_eq!(
        live,
        vec![friend_id],
        "only the store's own till is a live peer"
    );
    for n in [member, friend, stranger, neighbour] {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_till_still_offers_the_package_it_holds_to_the_next_wave() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(100).await;
    let tills = tills();
    let (pilot, rest) = (tills[0], tills[1]);
    setup(&cluster, &tills).await;
    let group_of = |name: &str, d: DeviceId| GroupInput {
        name: Some(name.into()),
        description: None,
        members: Some(vec![d]),
    };
    let g_pilot = cluster
        .coordinator
        .create_group(group_of("pilot", pilot), &Caller::system("test"))
        .await
        .expect("group")
        .id;
    let g_rest = cluster
        .coordinator
        .create_group(group_of("rest", rest), &Caller::system("test"))
        .await
        .expect("group")
        .id;
    let bytes = package("1.0.0", 8);
    let size = bytes.len() as u64;
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    // Wave 1: the pilot alone fetches everything over the WAN.
    let node = start_node(&cluster, pilot);
    let task = download(&cluster, pkg, g_pilot).await;
    let t = wait_all(&cluster, task, &[pilot], 60).await;
    assert_eq!(wan_total(&t, &[pilot]), size);
    // The pilot restarts (an install ends in a reboot); its task is over.
    node.stop().await;
    let pilot_node = start_node(&cluster, pilot);
    let other = start_node(&cluster, rest);
    mesh(&[&pilot_node, &other]).await;
    // Wait until they are store peers (this test is about the offer after a
    // restart, not discovery timing). The other till keeps what the pilot
    // holds only once it takes part in the package itself.
    let pilot_peer = pilot_node.agent.net().expect("swarm").peer_id;
    let other_net = other.agent.net().expect("swarm");
    eventually(20, "the pilot to be the next till's store peer", || async {
        other_net.view().contains_key(&pilot_peer).then_some(())
    })
    .await;
    assert!(
        !other_net.view()[&pilot_peer].holds.contains_key(&pkg),
        "holdings of a package the till does not take part in were kept"
    );
    // Wave 2: the next till gets it from the pilot, not over the WAN.
    let task = download(&cluster, pkg, g_rest).await;
    let t = wait_all(&cluster, task, &[rest], 60).await;
    let wan = wan_total(&t, &[rest]);
    eprintln!("second wave after the pilot restarted: WAN {wan} of {size} bytes");
    assert_eq!(wan, 0, "the second wave fetched over the WAN");
    pilot_node.stop().await;
    other.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_hears_of_a_task_from_its_first_till_not_at_its_next_poll() {
    let _serial = SERIAL.lock().await;
    // A long poll interval: without news over the LAN the other tills would
    // learn of the task only at their next poll, ~30 s after they started.
    let cluster = Cluster::start(30_000).await;
    let tills = tills()[..4].to_vec();
    let group = setup(&cluster, &tills).await;
    let pkg = cluster.upload("demo", "1.0.0", package("1.0.0", 2)).await;
    let mut nodes: Vec<RunningNode> = tills.iter().map(|&d| start_node(&cluster, d)).collect();
    mesh(&nodes.iter().collect::<Vec<_>>()).await;
    for n in &nodes {
        let net = n.agent.net().expect("swarm");
        eventually(20, "every till to see its three peers", || async {
            (net.view().len() == 3).then_some(())
        })
        .await;
    }
    let created = tokio::time::Instant::now();
    let task = download(&cluster, pkg, group).await;
    // One till restarts and polls at once; it tells the store.
    nodes.remove(0).stop().await;
    nodes.insert(0, start_node(&cluster, tills[0]));
    mesh(&nodes.iter().collect::<Vec<_>>()).await;
    wait_all(&cluster, task, &tills, 15).await;
    eprintln!(
        "every till staged {:.1} s after the task was created (poll interval 30 s)",
        created.elapsed().as_secs_f64()
    );
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}
