//! Whom a till's swarm talks to, over real loopback sockets: records naming
//! an address off the till's subnets or a port outside the range are not
//! dialled, a flapping address is re-dialled at a bounded pace, a peer off the
//! coordinator's signed member list gets nothing, what a peer says it holds is
//! kept only for packages this till tracks, and a download that starts while
//! a connected peer holds the package takes nothing over the WAN.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tillswarm_node::chunks::{ChunkStore, Wire};
use tillswarm_node::swarm::{self, PeerAnswer, StoreNet, SwarmConfig};
use tillswarm_protocol::trust::StoreMember;
use tillswarm_protocol::{ChainId, ChunkHash, DeviceId, PackageId, StoreId};
use tokio::sync::watch;

struct Till {
    net: StoreNet,
    store: Arc<ChunkStore>,
    device: DeviceId,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn till(n: u8, ports: std::ops::RangeInclusive<u16>) -> Till {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ChunkStore::open(&dir.path().join("chunks")).expect("store"));
    let key = swarm::load_or_create_key(dir.path()).expect("key");
    let device = DeviceId::from_bytes([n; 16]);
    let config = SwarmConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        psk: [42; 32],
        chain: ChainId::new("chain").expect("chain"),
        store: StoreId::new("store-1").expect("store"),
        device,
        max_uploads: 4,
        peer_subnets: Vec::new(),
        peer_ports: ports,
    };
    let (stop, shutdown) = watch::channel(false);
    let (net, _task) = swarm::start(config, key, store.clone(), shutdown)
        .await
        .expect("swarm");
    Till {
        net,
        store,
        device,
        _stop: stop,
        _dir: dir,
    }
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("multiaddr")
}

/// A documentation address on no interface of this machine.
fn off_subnet() -> std::net::IpAddr {
    let nets: Vec<ipnet::IpNet> = if_addrs::get_if_addrs()
        .expect("interfaces")
        .into_iter()
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => ipnet::IpNet::new(v4.ip.into(), v4.prefixlen).ok(),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect();
    ["192.0.2.10", "198.51.100.10", "203.0.113.10"]
        .into_iter()
        .map(|s| s.parse().expect("ip"))
        .find(|ip| !nets.iter().any(|n| n.contains(ip)))
        .expect("a documentation network not used here")
}

/// Connections `listener` accepted within `wait`.
fn accepted(listener: &TcpListener, wait: Duration) -> usize {
    listener.set_nonblocking(true).expect("nonblocking");
    let until = Instant::now() + wait;
    let mut n = 0;
    while Instant::now() < until {
        match listener.accept() {
            Ok(_) => n += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_off_subnet_or_off_range_are_not_dialled_and_redials_are_paced() {
    // Something listening that a rogue record points at.
    let victim = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = victim.local_addr().expect("addr").port();
    let at = addr(&format!("/ip4/127.0.0.1/tcp/{port}"));

    // Ports outside the range: nothing dialled.
    let narrow = if port == 40_000 {
        40_001..=40_001
    } else {
        40_000..=40_000
    };
    let a = till(1, narrow).await;
    a.net
        .add_peer(PeerId::random(), vec![at.clone()])
        .await
        .expect("add");
    // Off this till's subnets.
    let off = addr(&format!("/ip4/{}/tcp/{port}", off_subnet()));
    let b = till(2, 1024..=65535).await;
    b.net
        .add_peer(PeerId::random(), vec![off])
        .await
        .expect("add");
    assert_eq!(accepted(&victim, Duration::from_secs(1)), 0);
    assert_eq!(a.net.dials_refused(), 1);
    assert_eq!(b.net.dials_refused(), 1);

    // In range and on the subnet (loopback, as b listens there): dialled,
    // but a record flapping 30 times is dialled only a burst's worth.
    for _ in 0..30 {
        b.net
            .add_peer(PeerId::random(), vec![at.clone()])
            .await
            .expect("add");
    }
    let n = accepted(&victim, Duration::from_secs(2));
    assert!((1..=2).contains(&n), "{n} connections from 30 flaps");
    assert_eq!(b.net.dials_refused(), 1 + 30 - n as u64);
}

/// Waits until `of` sees `peer` as a live store peer.
async fn sees(of: &StoreNet, peer: PeerId) {
    let until = Instant::now() + Duration::from_secs(10);
    while !of.view().contains_key(&peer) {
        assert!(Instant::now() < until, "{peer} never became a store peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_off_the_signed_member_list_gets_nothing_until_listed() {
    let a = till(1, 1024..=65535).await;
    let b = till(2, 1024..=65535).await;
    let chunk = vec![7u8; 4096];
    let hash = ChunkHash::of(&chunk);
    a.store.put(&hash, &chunk).expect("put");
    let package = PackageId::of(b"package");
    a.net.track(package, vec![hash]).await.expect("track");
    // The coordinator lists a and some other till, not b.
    let listed = |d: &Till| StoreMember {
        device: d.device,
        peer_id: d.net.peer_id.to_string(),
        addrs: Vec::new(),
    };
    let other = StoreMember {
        device: DeviceId::from_bytes([9; 16]),
        peer_id: PeerId::random().to_string(),
        addrs: Vec::new(),
    };
    a.net
        .set_members(vec![listed(&a), other.clone()])
        .await
        .expect("members");
    b.net
        .add_peer(a.net.peer_id, vec![a.net.listen_addr.clone()])
        .await
        .expect("add");
    // b has no list, so a is a peer to b; a holds b without serving it.
    sees(&b.net, a.net.peer_id).await;
    assert_eq!(
        b.net.fetch(a.net.peer_id, hash).await.expect("fetch"),
        PeerAnswer::NotHave
    );
    assert!(!a.net.view().contains_key(&b.net.peer_id));
    // b claiming a listed GUID with its own key is no better.
    a.net
        .set_members(vec![
            listed(&a),
            StoreMember {
                device: b.device,
                peer_id: other.peer_id.clone(),
                addrs: Vec::new(),
            },
        ])
        .await
        .expect("members");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.net.fetch(a.net.peer_id, hash).await.expect("fetch"),
        PeerAnswer::NotHave
    );
    // Listed properly: b joins and is served.
    a.net
        .set_members(vec![listed(&a), listed(&b)])
        .await
        .expect("members");
    sees(&a.net, b.net.peer_id).await;
    assert_eq!(
        b.net.fetch(a.net.peer_id, hash).await.expect("fetch"),
        PeerAnswer::Chunk(Wire {
            data: chunk.into(),
            compressed: false
        })
    );
    // What a says it holds is kept by b only for packages b tracks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holds = |net: &StoreNet| {
        net.view()
            .get(&a.net.peer_id)
            .map(|p| p.holds.len())
            .unwrap_or(0)
    };
    assert_eq!(
        holds(&b.net),
        0,
        "b kept holdings of a package it does not track"
    );
    b.net.track(package, vec![hash]).await.expect("track");
    let until = Instant::now() + Duration::from_secs(10);
    while holds(&b.net) == 0 {
        assert!(Instant::now() < until, "b never learnt a's holdings");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A coordinator that counts the chunks asked of it.
struct CountingWan(std::sync::atomic::AtomicUsize, Vec<u8>);

impl tillswarm_node::stage::ChunkSource for CountingWan {
    fn fetch<'a>(
        &'a self,
        _: &'a tillswarm_protocol::manifest::ChunkRef,
    ) -> futures_util::future::BoxFuture<
        'a,
        tillswarm_node::Result<(Wire, tillswarm_node::stage::Origin)>,
    > {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data = Wire {
            data: self.1.clone().into(),
            compressed: false,
        };
        Box::pin(async move { Ok((data, tillswarm_node::stage::Origin::Wan)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_starting_beside_a_holder_waits_for_its_holdings_not_the_wan() {
    use tillswarm_protocol::manifest::{ChunkRef, Manifest};
    let a = till(1, 1024..=65535).await;
    let b = till(2, 1024..=65535).await;
    let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 64 * 1024]).collect();
    let refs: Vec<ChunkRef> = chunks
        .iter()
        .map(|c| ChunkRef {
            hash: ChunkHash::of(c),
            length: c.len() as u32,
            zstd_len: 0,
        })
        .collect();
    for c in &chunks {
        a.store.put(&ChunkHash::of(c), c).expect("put");
    }
    let whole: Vec<u8> = chunks.concat();
    let manifest = Manifest {
        name: "pkg".into(),
        version: "1.0.0".parse().expect("version"),
        size: whole.len() as u64,
        package_id: PackageId::of(&whole),
        created_unix: 0,
        chunks: refs,
        unpacked_size: None,
        upload: None,
        chunker: tillswarm_protocol::Chunker::V1,
    };
    a.net
        .track(
            manifest.package_id,
            manifest.chunks.iter().map(|c| c.hash).collect(),
        )
        .await
        .expect("track");
    b.net
        .add_peer(a.net.peer_id, vec![a.net.listen_addr.clone()])
        .await
        .expect("add");
    sees(&b.net, a.net.peer_id).await;
    let wan = CountingWan(Default::default(), chunks[0].clone());
    let progress = swarm::fetch::fetch_package(
        &manifest,
        &b.store,
        Some(&b.net),
        &wan,
        Default::default(),
        &Default::default(),
        None,
        Default::default(),
        |_| {},
    )
    .await
    .expect("fetch");
    assert_eq!(
        wan.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing over the WAN"
    );
    assert_eq!(progress.lan_bytes, whole.len() as u64);
}
