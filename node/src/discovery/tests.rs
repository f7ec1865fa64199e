//! Discovery's rules without a network, and two real mDNS nodes on loopback.

use super::*;
use mdns_sd::{IntoTxtProperties, TxtProperty};
use std::net::Ipv4Addr;

const GUID_A: &str = "71110000-0000-0000-0000-00000000000a";
const GUID_B: &str = "71110000-0000-0000-0000-00000000000b";

fn advert(peer: &str, guid: &str, store: &str) -> LocalAdvert {
    LocalAdvert {
        chain: ChainId::new("acme").expect("chain"),
        store: StoreId::new(store).expect("store"),
        device: guid.parse().expect("guid"),
        peer_id: peer.into(),
        port: 4001,
        protocol_version: PROTOCOL_VERSION,
    }
}

fn txt(pairs: &[(&str, &[u8])]) -> TxtProperties {
    pairs
        .iter()
        .map(|(k, v)| TxtProperty::from((*k, *v)))
        .collect::<Vec<_>>()
        .into_txt_properties()
}

fn valid_txt() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("chain", b"acme".to_vec()),
        ("store", b"store-001".to_vec()),
        ("peer", b"12D3KooWPeerB".to_vec()),
        ("pv", PROTOCOL_VERSION.to_string().into_bytes()),
        ("dev", GUID_B.as_bytes().to_vec()),
    ]
}

fn with(key: &str, value: Option<&[u8]>) -> TxtProperties {
    let mut pairs = valid_txt();
    pairs.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        pairs.push((Box::leak(key.to_string().into_boxed_str()), v.to_vec()));
    }
    let borrowed: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (*k, &v[..])).collect();
    txt(&borrowed)
}

fn lan_ip() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 12))]
}

#[test]
fn a_valid_record_of_our_store_is_a_peer() {
    let me = advert("12D3KooWPeerA", GUID_A, "store-001");
    let mut ips = lan_ip();
    ips.extend([
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
        "fe80::1".parse().expect("ip"),
        "fd00::2".parse().expect("ip"),
    ]);
    let peer = parse_peer(&with("x", None), &ips, 4001, &me).expect("valid");
    assert_eq!(peer.peer_id, "12D3KooWPeerB");
    assert_eq!(peer.device, Some(GUID_B.parse().expect("guid")));
    assert_eq!(
        peer.addrs,
        vec![
            "10.0.0.3:4001".parse().expect("addr"),
            "192.168.1.12:4001".parse().expect("addr"),
            "[fd00::2]:4001".parse().expect("addr"),
        ]
    );
    // Without `dev` the peer is still usable.
    let peer = parse_peer(&with("dev", None), &lan_ip(), 4001, &me).expect("no dev");
    assert_eq!(peer.device, None);
    // Keys are case-insensitive (DNS-SD); braces around the GUID are accepted.
    let braced = format!("{{{GUID_B}}}");
    let peer =
        parse_peer(&with("DEV", Some(braced.as_bytes())), &lan_ip(), 4001, &me).expect("braced");
    assert_eq!(peer.device, Some(GUID_B.parse().expect("guid")));
}

#[test]
fn records_of_others_are_rejected() {
    let me = advert("12D3KooWPeerA", GUID_A, "store-001");
    let check = |t: TxtProperties, want: Rejected| {
        assert_eq!(parse_peer(&t, &lan_ip(), 4001, &me), Err(want));
    };
    check(with("chain", Some(b"other")), Rejected::OtherChain);
    check(with("store", Some(b"store-002")), Rejected::OtherStore);
    check(with("pv", Some(b"2")), Rejected::OtherProtocol(2));
    check(with("pv", Some(b"0")), Rejected::OtherProtocol(0));
    check(with("peer", Some(b"12D3KooWPeerA")), Rejected::Ours);
}

#[test]
fn invalid_records_are_rejected_without_panicking() {
    let me = advert("12D3KooWPeerA", GUID_A, "store-001");
    let invalid = |key: &'static str, why: &'static str| Rejected::Invalid { key, why };
    let long = vec![b'a'; 300];
    let cases: Vec<(TxtProperties, Rejected)> = vec![
        // Over-long values.
        (with("peer", Some(&long)), invalid("peer", "too long")),
        (with("peer", Some(&[b'a'; 64])), invalid("peer", "too long")),
        (with("chain", Some(&long)), invalid("chain", "too long")),
        (
            with("store", Some(&[b's'; 65])),
            invalid("store", "too long"),
        ),
        (with("pv", Some(b"000001")), invalid("pv", "too long")),
        (with("dev", Some(&long)), invalid("dev", "too long")),
        // Values that do not parse.
        (with("peer", Some(b"a.b")), invalid("peer", "not a peer id")),
        (with("peer", Some(b"")), invalid("peer", "not a peer id")),
        (
            with("peer", Some(b"\xff\xfe")),
            invalid("peer", "not UTF-8"),
        ),
        (
            with("chain", Some(b"a b")),
            invalid("chain", "not a chain id"),
        ),
        (with("store", Some(b"")), invalid("store", "not a store id")),
        (with("pv", Some(b"-1")), invalid("pv", "not a number")),
        (with("pv", Some(b"+1")), invalid("pv", "not a number")),
        (
            with("pv", Some(b"70000")),
            invalid("pv", "not a 16-bit number"),
        ),
        (with("pv", Some(b"")), invalid("pv", "not a 16-bit number")),
        (
            with("dev", Some(b"not-a-guid")),
            invalid("dev", "not a GUID"),
        ),
        (
            with("dev", Some(b"71110000000000000000000000000000b")),
            invalid("dev", "not a GUID"),
        ),
        // Missing fields, and keys without a value.
        (with("peer", None), invalid("peer", "missing")),
        (with("chain", None), invalid("chain", "missing")),
        (with("store", None), invalid("store", "missing")),
        (with("pv", None), invalid("pv", "missing")),
        (txt(&[]), invalid("peer", "missing")),
    ];
    for (t, want) in cases {
        assert_eq!(parse_peer(&t, &lan_ip(), 4001, &me), Err(want), "{t}");
    }
    let mut no_value = valid_txt();
    no_value.retain(|(k, _)| *k != "store");
    let mut props: Vec<TxtProperty> = no_value
        .iter()
        .map(|(k, v)| TxtProperty::from((*k, &v[..])))
        .collect();
    props.push(TxtProperty::from("store"));
    assert_eq!(
        parse_peer(&props.into_txt_properties(), &lan_ip(), 4001, &me),
        Err(invalid("store", "no value"))
    );
    // No address, or only unusable ones, or port 0.
    let t = with("x", None);
    assert_eq!(parse_peer(&t, &[], 4001, &me), Err(Rejected::NoAddress));
    let bad_ips = [
        IpAddr::V4(Ipv4Addr::BROADCAST),
        "fe80::2".parse().expect("ip"),
        "ff02::fb".parse().expect("ip"),
    ];
    assert_eq!(
        parse_peer(&t, &bad_ips, 4001, &me),
        Err(Rejected::NoAddress)
    );
    assert_eq!(parse_peer(&t, &lan_ip(), 0, &me), Err(Rejected::NoAddress));
    // Many addresses are capped.
    let many: Vec<IpAddr> = (1..=200u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)))
        .collect();
    assert_eq!(
        parse_peer(&t, &many, 4001, &me).expect("many").addrs.len(),
        MAX_ADDRS
    );
}

#[test]
fn peer_table_reports_changes_removals_and_silence() {
    let me = advert("12D3KooWPeerA", GUID_A, "store-001");
    let mut table = PeerTable::new(me);
    let t0 = Instant::now();
    let name = "12D3KooWPeerB._tillswarm._udp.local.";
    let found = table.resolved(name, &with("x", None), &lan_ip(), 4001, t0);
    assert!(matches!(&found[..], [DiscoveryEvent::Found(p)] if p.peer_id == "12D3KooWPeerB"));
    // The same record again (a re-browse) refreshes silently.
    let t1 = t0 + Duration::from_secs(10);
    assert!(
        table
            .resolved(name, &with("x", None), &lan_ip(), 4001, t1)
            .is_empty()
    );
    // Not expired: seen at t1.
    assert!(
        table
            .expire(t0 + Duration::from_secs(20), Duration::from_secs(13))
            .is_empty()
    );
    // A new address: found again with the new list.
    let moved = vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 99))];
    let again = table.resolved(name, &with("x", None), &moved, 4001, t1);
    assert!(matches!(&again[..], [DiscoveryEvent::Found(p)] if p.addrs[0].ip() == moved[0]));
    // Silence: lost.
    let lost = table.expire(t1 + Duration::from_secs(14), Duration::from_secs(13));
    assert_eq!(
        lost,
        vec![DiscoveryEvent::Lost {
            peer_id: "12D3KooWPeerB".into()
        }]
    );
    // Goodbye: lost; an unknown instance's goodbye: nothing.
    table.resolved(name, &with("x", None), &lan_ip(), 4001, t1);
    assert_eq!(
        table.removed(name),
        Some(DiscoveryEvent::Lost {
            peer_id: "12D3KooWPeerB".into()
        })
    );
    assert_eq!(table.removed(name), None);
    // A known instance that moves to another store is lost.
    table.resolved(name, &with("x", None), &lan_ip(), 4001, t1);
    let moved_store = table.resolved(name, &with("store", Some(b"store-9")), &lan_ip(), 4001, t1);
    assert_eq!(moved_store.len(), 1);
    assert!(matches!(moved_store[0], DiscoveryEvent::Lost { .. }));
    // Gone from the daemon's cache: lost, if it was refreshed since the last
    // clear; one not yet refreshed since is left to expiry.
    let t2 = t1 + Duration::from_secs(1);
    let other = "12D3KooWPeerC._tillswarm._udp.local.";
    table.resolved(name, &with("x", None), &lan_ip(), 4001, t1);
    table.resolved(
        other,
        &with("peer", Some(b"12D3KooWPeerC")),
        &lan_ip(),
        4001,
        t2,
    );
    let cached = std::collections::HashSet::from([name.to_string()]);
    assert_eq!(
        table.gone(&cached, t2),
        vec![DiscoveryEvent::Lost {
            peer_id: "12D3KooWPeerC".into()
        }]
    );
    assert!(
        table.gone(&Default::default(), t2).is_empty(),
        "B predates the clear"
    );
    // Our own record is never reported.
    let ours = with("peer", Some(b"12D3KooWPeerA"));
    assert!(table.resolved("a", &ours, &lan_ip(), 4001, t1).is_empty());
}

#[test]
fn events_serialize_as_json_lines() {
    let found = DiscoveryEvent::Found(PeerInfo {
        peer_id: "p".into(),
        device: Some(GUID_B.parse().expect("guid")),
        addrs: vec!["10.0.0.2:4001".parse().expect("addr")],
    });
    assert_eq!(
        serde_json::to_string(&found).expect("json"),
        format!(
            r#"{{"event":"found","peer_id":"p","device":"{GUID_B}","addrs":["10.0.0.2:4001"]}}"#
        )
    );
    let lost = DiscoveryEvent::Lost {
        peer_id: "p".into(),
    };
    assert_eq!(
        serde_json::to_string(&lost).expect("json"),
        r#"{"event":"lost","peer_id":"p"}"#
    );
}

#[tokio::test]
async fn static_discovery_reports_each_peer_once_and_stops() {
    let peers: Vec<PeerInfo> = (1..=3)
        .map(|i| PeerInfo {
            peer_id: format!("peer-{i}"),
            device: None,
            addrs: vec![SocketAddr::from(([10, 0, 0, i], 4001))],
        })
        .collect();
    let (tx, mut rx) = mpsc::channel(8);
    let (stop, stopped) = watch::channel(false);
    let me = advert("me", GUID_A, "store-001");
    let task = Box::new(StaticDiscovery {
        peers: peers.clone(),
    })
    .start(me.clone(), tx, stopped);
    for p in &peers {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("event");
        assert_eq!(ev, DiscoveryEvent::Found(p.clone()));
    }
    // Nothing more while running.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err()
    );
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops in time")
        .expect("no panic");
    assert_eq!(rx.recv().await, None, "sender dropped after stop");

    // A full channel does not hold up shutdown.
    let (tx, _rx) = mpsc::channel(1);
    let (stop, stopped) = watch::channel(false);
    let task = Box::new(StaticDiscovery { peers }).start(me, tx, stopped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops in time with a full channel")
        .expect("no panic");
}

/// Whether IPv4 multicast sent on loopback comes back here (the kernel may
/// refuse it). Uses `port` on 127.0.0.1 only.
fn loopback_multicast_works(port: u16) -> Result<(), String> {
    use std::net::UdpSocket;
    let group = Ipv4Addr::new(224, 0, 0, 251);
    let rx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("bind: {e}"))?;
    rx.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
        .map_err(|e| format!("join 224.0.0.251 on 127.0.0.1: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    // Source 127.0.0.1: the kernel routes this multicast out of lo only.
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    tx.send_to(b"tillswarm-probe", (group, port))
        .map_err(|e| format!("send to 224.0.0.251 via lo: {e}"))?;
    let mut buf = [0u8; 64];
    match rx.recv_from(&mut buf) {
        Ok((n, _)) if &buf[..n] == b"tillswarm-probe" => Ok(()),
        Ok(_) => Err("unexpected datagram".into()),
        Err(e) => Err(format!("multicast on lo did not loop back: {e}")),
    }
}

async fn next_event(
    rx: &mut mpsc::Receiver<DiscoveryEvent>,
    deadline: Instant,
    want: impl Fn(&DiscoveryEvent) -> bool,
) -> Option<DiscoveryEvent> {
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if want(&ev) => return Some(ev),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Two real mDNS nodes on loopback (and a silent third), with a private mDNS
/// port so they meet only each other; no packet leaves the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mdns_nodes_find_each_other_and_notice_departures() {
    // An mdns-sd daemon joins the mDNS group on every interface of the host
    // when it starts (IGMP/MLD reports leave on each link), so this test runs
    // only where a network namespace made by the test harness isolates it.
    if std::env::var_os("TILLSWARM_NETNS").is_none() {
        eprintln!(
            "SKIPPED: real mDNS runs only inside a test network namespace (set by the netns test)"
        );
        return;
    }
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    if let Err(why) = loopback_multicast_works(port) {
        eprintln!("SKIPPED: mDNS test needs IPv4 multicast on loopback: {why}");
        return;
    }
    // A store name unique to this run, so concurrent runs never mix.
    let store = format!("store-test-{}", std::process::id());
    let a = advert("12D3KooWNodeA", GUID_A, &store);
    let b = advert("12D3KooWNodeB", GUID_B, &store);
    let options = MdnsDiscovery {
        rebrowse_every: Duration::from_secs(1),
        // Refreshed every second, so expiry cannot come before 4 s of silence.
        expire_after: Duration::from_secs(5),
        ..MdnsDiscovery::loopback(port)
    };

    let (stop_a, stopped_a) = watch::channel(false);
    let (stop_b, stopped_b) = watch::channel(false);
    let (tx_a, mut rx_a) = mpsc::channel(16);
    let (tx_b, mut rx_b) = mpsc::channel(16);
    let started = Instant::now();
    let task_a = Box::new(options.clone()).start(a.clone(), tx_a, stopped_a);
    let task_b = Box::new(options.clone()).start(b.clone(), tx_b, stopped_b);
    // E re-browses rarely after its first two, and expires late: whatever it
    // reports lost within seconds came from a goodbye, not from expiry.
    let e = advert("12D3KooWNodeE", GUID_A, &store);
    let (stop_e, stopped_e) = watch::channel(false);
    let (tx_e, mut rx_e) = mpsc::channel(16);
    let slow = MdnsDiscovery {
        rebrowse_every: Duration::from_secs(60),
        expire_after: Duration::from_secs(120),
        ..MdnsDiscovery::loopback(port)
    };
    let task_e = Box::new(slow).start(e, tx_e, stopped_e);

    let deadline = started + Duration::from_secs(5);
    let is_found = |id: &'static str| move |ev: &DiscoveryEvent| matches!(ev, DiscoveryEvent::Found(p) if p.peer_id == id);
    let a_saw = next_event(&mut rx_a, deadline, is_found("12D3KooWNodeB"))
        .await
        .expect("A finds B within 5 s");
    let b_saw = next_event(&mut rx_b, deadline, is_found("12D3KooWNodeA"))
        .await
        .expect("B finds A within 5 s");
    eprintln!("found each other after {:?}", started.elapsed());
    let DiscoveryEvent::Found(pb) = a_saw else {
        unreachable!()
    };
    assert_eq!(pb.device, Some(b.device));
    assert_eq!(pb.addrs, vec![SocketAddr::from(([127, 0, 0, 1], b.port))]);
    let DiscoveryEvent::Found(pa) = b_saw else {
        unreachable!()
    };
    assert_eq!(pa.device, Some(a.device));

    // A silent peer (its daemon leaves the network without a goodbye) and a
    // peer of another store: the first expires, the second is never reported.
    let silent = ServiceDaemon::new_with_port(port).expect("daemon");
    silent.disable_interface(IfKind::All).expect("select");
    silent.enable_interface(IfKind::LoopbackV4).expect("select");
    let c = advert("12D3KooWNodeC", GUID_B, &store);
    let d = advert("12D3KooWNodeD", GUID_B, "store-elsewhere");
    register(&silent, &c).expect("register C");
    register(&silent, &d).expect("register D");
    let deadline = Instant::now() + Duration::from_secs(5);
    next_event(&mut rx_a, deadline, is_found("12D3KooWNodeC"))
        .await
        .expect("A finds C");
    silent.disable_interface(IfKind::All).expect("go silent");
    let went_silent = Instant::now();
    let deadline = went_silent + Duration::from_secs(9);
    let lost_c = next_event(&mut rx_a, deadline, |ev| {
        matches!(ev, DiscoveryEvent::Lost { .. } | DiscoveryEvent::Found(_))
    })
    .await
    .expect("C expires");
    assert_eq!(
        lost_c,
        DiscoveryEvent::Lost {
            peer_id: "12D3KooWNodeC".into()
        },
        "nothing else (B is steady, D is of another store)"
    );
    eprintln!("silent peer expired after {:?}", went_silent.elapsed());
    let _ = silent.shutdown();

    // E found B too (long ago; its channel holds the events since).
    next_event(
        &mut rx_e,
        Instant::now() + Duration::from_secs(1),
        is_found("12D3KooWNodeB"),
    )
    .await
    .expect("E found B");

    // B stops gracefully, sending goodbyes. E, whose expiry is two minutes
    // away, reports B lost within seconds: the daemon's removal after a
    // goodbye. A re-browses every second, which empties its cache: it sees
    // the goodbye (in its cache snapshot, or the removal) well before its
    // expiry could fire (4 s at the earliest).
    stop_b.send(true).expect("stop B");
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), task_b)
        .await
        .expect("B stops in time")
        .expect("no panic");
    eprintln!("B's task ended {:?} after its stop", stopping.elapsed());
    let lost_b = DiscoveryEvent::Lost {
        peer_id: "12D3KooWNodeB".into(),
    };
    let is_lost_b = |ev: &DiscoveryEvent| *ev == lost_b;
    next_event(&mut rx_e, stopping + Duration::from_secs(4), is_lost_b)
        .await
        .expect("E notices B's goodbye");
    eprintln!(
        "E reported B lost (goodbye) {:?} after its stop",
        stopping.elapsed()
    );
    next_event(&mut rx_a, stopping + Duration::from_millis(2500), is_lost_b)
        .await
        .expect("A notices B's goodbye before its expiry");
    eprintln!("A reported B lost {:?} after its stop", stopping.elapsed());

    for (stop, task) in [(stop_a, task_a), (stop_e, task_e)] {
        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops in time")
            .expect("no panic");
    }
}
