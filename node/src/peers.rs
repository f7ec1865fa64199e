//! Store peers the coordinator vouches for: the second way tills of a store
//! find each other, beside mDNS, for LANs where multicast does not reach
//! (VLANs, Wi-Fi client isolation). Each till reports where its store swarm
//! listens ([`swarm_addrs`]) in its authenticated heartbeat; the coordinator
//! hands every till its store's members with those addresses in the signed
//! instructions; the node dials the members it is not connected to
//! ([`dial_members`]) after each poll. Only addresses the swarm's dial policy
//! allows are dialled, and the noise handshake still proves each peer's id.

use std::net::{IpAddr, SocketAddr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tillswarm_protocol::api::{MAX_SWARM_ADDRS, check_swarm_addrs};
use tillswarm_protocol::trust::StoreMember;

use crate::swarm::StoreNet;

/// Where the swarm listening on `listen` can be reached: its own address,
/// or, when it listens on every interface, each interface's address that
/// other tills could dial (not loopback, not IPv6 link-local), at most
/// [`MAX_SWARM_ADDRS`].
pub fn swarm_addrs(listen: &Multiaddr) -> Vec<SocketAddr> {
    let (mut ip, mut port) = (None, None);
    for p in listen {
        match p {
            Protocol::Ip4(v4) => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return Vec::new();
    };
    let ips: Vec<IpAddr> = if ip.is_unspecified() {
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !i.is_loopback())
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == listen_is_v4(listen))
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    } else {
        vec![ip]
    };
    let mut out: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.truncate(MAX_SWARM_ADDRS);
    out
}

fn listen_is_v4(listen: &Multiaddr) -> bool {
    !listen.iter().any(|p| matches!(p, Protocol::Ip6(_)))
}

/// The members of `members` worth dialling: another till's valid peer id
/// with addresses that pass [`check_swarm_addrs`], as multiaddresses.
pub fn dial_list(me: &PeerId, members: &[StoreMember]) -> Vec<(PeerId, Vec<Multiaddr>)> {
    members
        .iter()
        .filter(|m| !m.addrs.is_empty() && check_swarm_addrs(&m.addrs).is_ok())
        .filter_map(|m| Some((m.peer_id.parse::<PeerId>().ok()?, &m.addrs)))
        .filter(|(id, _)| id != me)
        .map(|(id, addrs)| (id, addrs.iter().map(to_multiaddr).collect()))
        .collect()
}

/// Dials every listed member this node is not connected to (the swarm skips
/// connected and banned peers and addresses outside its dial policy).
pub async fn dial_members(net: &StoreNet, members: &[StoreMember]) -> crate::Result<()> {
    for (peer, addrs) in dial_list(&net.peer_id, members) {
        net.add_peer(peer, addrs).await?;
    }
    Ok(())
}

fn to_multiaddr(a: &SocketAddr) -> Multiaddr {
    let ip = match a.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(a.port()))
}

#[cfg(test)]
mod tests {
    use tillswarm_protocol::DeviceId;

    use super::*;

    #[test]
    fn a_specific_listen_address_is_reported_as_is() {
        let listen: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().expect("addr");
        assert_eq!(
            swarm_addrs(&listen),
            vec!["10.1.2.3:4001".parse().expect("addr")]
        );
        assert!(swarm_addrs(&"/ip4/10.1.2.3".parse().expect("addr")).is_empty());
    }

    #[test]
    fn every_interface_gives_dialable_addresses_only() {
        let listen: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().expect("addr");
        let addrs = swarm_addrs(&listen);
        assert!(addrs.len() <= MAX_SWARM_ADDRS);
        for a in &addrs {
            assert!(a.is_ipv4() && !a.ip().is_loopback() && !a.ip().is_unspecified());
            assert_eq!(a.port(), 4001);
        }
    }

    #[test]
    fn only_other_tills_with_sane_addresses_are_dialled() {
        let me = PeerId::random();
        let other = PeerId::random();
        let member = |peer: &PeerId, addrs: &[&str]| StoreMember {
            device: DeviceId::from_bytes([1; 16]),
            peer_id: peer.to_string(),
            addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
        };
        let list = dial_list(
            &me,
            &[
                member(&me, &["10.0.0.1:4001"]),
                member(&other, &["10.0.0.2:4001"]),
                member(&PeerId::random(), &[]),
                member(&PeerId::random(), &["0.0.0.0:4001"]),
                member(&PeerId::random(), &["224.0.0.251:5353"]),
                member(&PeerId::random(), &["10.0.0.9:0"]),
                StoreMember {
                    peer_id: "not a peer id".into(),
                    ..member(&other, &["10.0.0.3:4001"])
                },
            ],
        );
        assert_eq!(
            list,
            vec![(other, vec!["/ip4/10.0.0.2/tcp/4001".parse().expect("addr")])]
        );
    }
}
