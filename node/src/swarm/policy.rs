//! Whom a till talks to on the store LAN.
//!
//! - [`DialPolicy`]: addresses a record (mDNS or otherwise) names are dialled
//!   only when they lie in one of this till's own interface subnets (or a
//!   subnet the config lists) and their port is in the configured range, and
//!   each address is re-dialled at a bounded pace, so a device advertising
//!   records cannot turn the store's tills against other hosts or ports.
//! - [`Membership`]: when the coordinator's signed instructions list the
//!   store's tills (device GUID and peer id, each reported over the till's
//!   authenticated heartbeat), a peer whose Hello is not on that list is not
//!   a store peer, even if it holds the chain's swarm key.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::trust::StoreMember;

/// How long the list of this till's interface subnets is reused.
const INTERFACES_TTL: Duration = Duration::from_secs(30);
/// Dials of one address: at most this many in a burst...
const REDIAL_BURST: u32 = 2;
/// ...then one per this period.
const REDIAL_PERIOD: Duration = Duration::from_secs(10);

/// Why an address is not dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `/ip4|ip6/<addr>/tcp/<port>`.
    NotTcp,
    /// Outside this till's subnets and the configured ones.
    OffSubnet,
    /// A port outside the configured range.
    Port,
    /// Dialled too often lately.
    Paced,
}

/// Which peer addresses may be dialled, and how often.
pub struct DialPolicy {
    configured: Vec<IpNet>,
    ports: RangeInclusive<u16>,
    allow_loopback: bool,
    interfaces: Option<(Instant, Vec<IpNet>)>,
    pace: DefaultKeyedRateLimiter<SocketAddr>,
}

impl DialPolicy {
    /// A policy admitting this till's own interface subnets plus
    /// `configured`, ports in `ports`, and loopback only when the swarm
    /// itself listens on loopback (a single machine: tests, the demo).
    pub fn new(configured: Vec<IpNet>, ports: RangeInclusive<u16>, allow_loopback: bool) -> Self {
        let burst = NonZeroU32::new(REDIAL_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(REDIAL_PERIOD)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            configured,
            ports,
            allow_loopback,
            interfaces: None,
            pace: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// The addresses of `addrs` that may be dialled now, and the reasons the
    /// others may not.
    pub fn filter(&mut self, addrs: Vec<Multiaddr>) -> (Vec<Multiaddr>, Vec<Refusal>) {
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for addr in addrs {
            match self.admit(&addr) {
                Ok(()) => ok.push(addr),
                Err(r) => refused.push(r),
            }
        }
        if self.pace.len() > 4096 {
            self.pace.retain_recent();
        }
        (ok, refused)
    }

    fn admit(&mut self, addr: &Multiaddr) -> Result<(), Refusal> {
        let socket = tcp_socket(addr).ok_or(Refusal::NotTcp)?;
        if !self.ports.contains(&socket.port()) {
            return Err(Refusal::Port);
        }
        if !self.on_subnet(socket.ip()) {
            return Err(Refusal::OffSubnet);
        }
        self.pace.check_key(&socket).map_err(|_| Refusal::Paced)
    }

    /// Whether `ip` is in one of this till's subnets or a configured one.
    pub fn on_subnet(&mut self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        if self.configured.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        let fresh = self
            .interfaces
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < INTERFACES_TTL);
        if !fresh {
            self.interfaces = Some((Instant::now(), interface_subnets()));
        }
        self.interfaces
            .as_ref()
            .is_some_and(|(_, nets)| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// The subnets of this machine's non-loopback interfaces.
fn interface_subnets() -> Vec<IpNet> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => IpNet::new(IpAddr::V4(v4.ip), v4.prefixlen).ok(),
            if_addrs::IfAddr::V6(v6) => IpNet::new(IpAddr::V6(v6.ip), v6.prefixlen).ok(),
        })
        .map(|n| n.trunc())
        .collect()
}

/// `/ip4|ip6/<addr>/tcp/<port>` as a socket address; `None` for anything else.
pub fn tcp_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    match parts.next() {
        None | Some(Protocol::P2p(_)) => Some(SocketAddr::new(ip, port)),
        Some(_) => None,
    }
}

/// The store's tills as the coordinator last listed them (empty: no list
/// yet, and chain, store and swarm key decide alone).
#[derive(Debug, Default)]
pub struct Membership {
    members: HashMap<DeviceId, HashSet<String>>,
}

impl Membership {
    /// Replaces the list.
    pub fn set(&mut self, list: &[StoreMember]) {
        self.members.clear();
        for m in list {
            self.members
                .entry(m.device)
                .or_default()
                .insert(m.peer_id.clone());
        }
    }

    /// Whether a peer proving `peer_id` (noise) and claiming `device` (Hello)
    /// is a store till.
    pub fn admits(&self, device: &DeviceId, peer_id: &str) -> bool {
        self.members.is_empty()
            || self
                .members
                .get(device)
                .is_some_and(|ids| ids.contains(peer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    /// A documentation address on no interface of this machine.
    fn off_subnet() -> IpAddr {
        let nets = interface_subnets();
        ["192.0.2.10", "198.51.100.10", "203.0.113.10"]
            .into_iter()
            .map(|s| s.parse().expect("ip"))
            .find(|ip| !nets.iter().any(|n| n.contains(ip)))
            .expect("a documentation network not used here")
    }

    #[test]
    fn only_own_or_listed_subnets_and_ports_in_range_are_dialled() {
        let listed: IpNet = "10.20.0.0/16".parse().expect("net");
        let mut p = DialPolicy::new(vec![listed], 7000..=7999, false);
        let (ok, refused) = p.filter(vec![
            addr("/ip4/10.20.3.4/tcp/7782"),
            addr("/ip4/10.20.3.5/tcp/22"),
            addr(&format!("/ip4/{}/tcp/7782", off_subnet())),
            addr("/ip4/127.0.0.1/tcp/7782"),
            addr("/ip4/10.20.3.6/udp/7782"),
            addr("/dns4/example.com/tcp/7782"),
        ]);
        assert_eq!(ok, vec![addr("/ip4/10.20.3.4/tcp/7782")]);
        assert_eq!(
            refused,
            vec![
                Refusal::Port,
                Refusal::OffSubnet,
                Refusal::OffSubnet,
                Refusal::NotTcp,
                Refusal::NotTcp
            ]
        );
        let mut local = DialPolicy::new(Vec::new(), 1024..=65535, true);
        assert!(
            local
                .filter(vec![addr("/ip4/127.0.0.1/tcp/7782")])
                .1
                .is_empty()
        );
    }

    #[test]
    fn this_machines_own_subnets_are_admitted() {
        let Some(net) = interface_subnets()
            .into_iter()
            .find(|n| n.prefix_len() < 32)
        else {
            eprintln!("skipped: no interface with a subnet here");
            return;
        };
        let mut p = DialPolicy::new(Vec::new(), 1..=65535, false);
        assert!(p.on_subnet(net.network()));
    }

    #[test]
    fn a_flapping_address_is_redialled_at_a_bounded_pace() {
        let mut p = DialPolicy::new(vec!["10.0.0.0/8".parse().expect("net")], 1..=65535, false);
        let a = addr("/ip4/10.1.1.1/tcp/7782");
        let dialled = (0..50)
            .filter(|_| !p.filter(vec![a.clone()]).0.is_empty())
            .count();
        assert_eq!(dialled, REDIAL_BURST as usize);
        // Another address is not held back by the first.
        assert_eq!(p.filter(vec![addr("/ip4/10.1.1.2/tcp/7782")]).0.len(), 1);
    }

    #[test]
    fn with_a_signed_list_only_listed_tills_are_members() {
        let a: DeviceId = "71110000-0000-0000-0000-000000000001"
            .parse()
            .expect("guid");
        let b: DeviceId = "71110000-0000-0000-0000-000000000002"
            .parse()
            .expect("guid");
        let mut m = Membership::default();
        assert!(
            m.admits(&a, "peer-a"),
            "no list yet: chain and store decide"
        );
        m.set(&[StoreMember {
            device: a,
            peer_id: "peer-a".into(),
            addrs: Vec::new(),
        }]);
        assert!(m.admits(&a, "peer-a"));
        assert!(!m.admits(&a, "peer-x"), "a's GUID with another key");
        assert!(!m.admits(&b, "peer-a"), "a's key claiming b's GUID");
    }
}
