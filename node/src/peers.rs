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

/// Where the swarm can be reached: `listen_ip` (the configured listen
/// address) with the bound `port`, or, when it listens on every interface,
/// each interface's address that other tills could dial (not loopback, not
/// IPv6 link-local, same family), at most [`MAX_SWARM_ADDRS`].
pub fn swarm_addrs(listen_ip: IpAddr, port: u16) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = if listen_ip.is_unspecified() {
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !i.is_loopback())
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == listen_ip.is_ipv4())
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    } else {
        vec![listen_ip]
    };
    let mut out: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.truncate(MAX_SWARM_ADDRS);
    out
}

/// The TCP port of a listen multiaddress.
pub fn port_of(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    })
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
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(
            swarm_addrs(ip, 4001),
            vec!["10.1.2.3:4001".parse().expect("addr")]
        );
        let bound: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        assert_eq!(port_of(&bound), Some(4001));
    }

    #[test]
    fn every_interface_gives_dialable_addresses_only() {
        // The swarm's first bound address may be loopback; what is reported
        // comes from the configured 0.0.0.0 and the interfaces.
        let addrs = swarm_addrs("0.0.0.0".parse().expect("ip"), 4001);
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
