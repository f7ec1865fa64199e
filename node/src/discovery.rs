//! Finding the other tills of this store on the LAN (DESIGN.md section 4).
//!
//! Each node advertises a DNS-SD service [`SERVICE_TYPE`] over mDNS whose TXT
//! record carries its chain, store, libp2p peer id, protocol version and device
//! GUID, with the libp2p TCP port as the service port. It browses the same type
//! and reports, on a bounded channel, the peers of the same chain, store and
//! protocol version ([`DiscoveryEvent::Found`]) and their departure
//! ([`DiscoveryEvent::Lost`]).
//!
//! The LAN is hostile: every TXT value is bounded and parsed
//! ([`parse_peer`]), invalid records are dropped with a debug log, the number of
//! peers and addresses kept is capped. Discovery only says where a peer claims to
//! be; the transport authenticates it (the noise handshake proves the peer id).
//!
//! Discovery sits behind the [`Discovery`] trait so tests inject a static list
//! ([`StaticDiscovery`]); [`MdnsDiscovery`] is the real one. This module does not
//! depend on libp2p: peer ids travel as their base58 text.
//!
//! Timing (with the defaults): a starting node queries at once and peers answer
//! within about a second; each node re-browses after 1 s, 2 s and then every 4 s
//! (clearing its cache, so every live peer answers again), and a peer not heard
//! from for 13 s is reported lost. A node that stops gracefully sends mDNS goodbye
//! packets, so the others report it lost within about a second (see
//! [`MdnsDiscovery`]'s re-browse for how a goodbye survives the cache clearing).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperties};
use serde::Serialize;
use tillswarm_protocol::wire::PROTOCOL_VERSION;
use tillswarm_protocol::{ChainId, DeviceId, StoreId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::NodeConfig;

/// The DNS-SD service type every node advertises and browses.
pub const SERVICE_TYPE: &str = "_tillswarm._udp.local.";
/// The standard mDNS UDP port.
pub const MDNS_PORT: u16 = mdns_sd::MDNS_PORT;
/// Longest peer id accepted, in bytes: it is also the mDNS instance and host
/// label, which DNS caps at 63. libp2p peer ids in base58 are 46 to 53 characters.
pub const MAX_PEER_ID_LEN: usize = 63;
/// Most addresses kept for one peer (a till has one or two).
pub const MAX_ADDRS: usize = 8;
/// Most peers tracked at once; records of further peers are ignored (a store has
/// tens of tills, a flood of fake records must not grow memory).
pub const MAX_PEERS: usize = 256;

/// TXT keys of the advertisement.
mod key {
    pub const CHAIN: &str = "chain";
    pub const STORE: &str = "store";
    pub const PEER: &str = "peer";
    pub const PROTOCOL: &str = "pv";
    pub const DEVICE: &str = "dev";
}

/// What this node advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAdvert {
    /// The node's chain; only peers of the same chain are reported.
    pub chain: ChainId,
    /// The node's store; only peers of the same store are reported.
    pub store: StoreId,
    /// The till's GUID.
    pub device: DeviceId,
    /// The libp2p peer id, base58 text (see [`valid_peer_id`]).
    pub peer_id: String,
    /// The libp2p TCP listen port.
    pub port: u16,
    /// The peer protocol version; peers of another version are not reported.
    pub protocol_version: u16,
}

impl LocalAdvert {
    /// This node's advertisement from its config, with the current
    /// [`PROTOCOL_VERSION`].
    pub fn new(config: &NodeConfig, peer_id: impl Into<String>, port: u16) -> Self {
        Self {
            chain: config.chain_id.clone(),
            store: config.store_id.clone(),
            device: config.device_id,
            peer_id: peer_id.into(),
            port,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// The TXT record: `chain`, `store`, `peer`, `pv`, `dev`.
    fn txt(&self) -> Vec<(&'static str, String)> {
        vec![
            (key::CHAIN, self.chain.to_string()),
            (key::STORE, self.store.to_string()),
            (key::PEER, self.peer_id.clone()),
            (key::PROTOCOL, self.protocol_version.to_string()),
            (key::DEVICE, self.device.to_string()),
        ]
    }
}

/// A peer of the same chain and store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Its libp2p peer id, base58 text as advertised (checked by
    /// [`valid_peer_id`], not decoded: the transport parses it).
    pub peer_id: String,
    /// Its till GUID, if it advertised one.
    pub device: Option<DeviceId>,
    /// Where its libp2p transport listens (TCP): sorted, at most [`MAX_ADDRS`].
    pub addrs: Vec<SocketAddr>,
}

/// What discovery reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum DiscoveryEvent {
    /// A peer appeared, or its addresses (or GUID) changed: the latest wins.
    Found(PeerInfo),
    /// A peer left (goodbye packet) or was not heard from for a while.
    Lost {
        /// The peer id of an earlier [`DiscoveryEvent::Found`].
        peer_id: String,
    },
}

/// A source of store peers. Behind a trait so tests can inject a static list.
pub trait Discovery: Send + 'static {
    /// Starts advertising `me` and reporting peers on `events` until `shutdown`
    /// turns true (or its sender is dropped, or `events` is closed). The returned
    /// task ends soon after; it never waits on a full `events` channel once
    /// shutdown is asked for.
    fn start(
        self: Box<Self>,
        me: LocalAdvert,
        events: mpsc::Sender<DiscoveryEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()>;
}

/// Sends `event`, giving up if shutdown is asked for first. False: stop (shutdown,
/// or nobody listens any more).
async fn emit(
    events: &mpsc::Sender<DiscoveryEvent>,
    event: DiscoveryEvent,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        // An error means the sender is gone: as good as a shutdown.
        _ = shutdown.wait_for(|s| *s) => false,
        sent = events.send(event) => sent.is_ok(),
    }
}

/// A fixed list of peers (tests, or a hand-written peer list): reports each as
/// found once, then waits for shutdown.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    /// The peers to report.
    pub peers: Vec<PeerInfo>,
}

impl Discovery for StaticDiscovery {
    fn start(
        self: Box<Self>,
        _me: LocalAdvert,
        events: mpsc::Sender<DiscoveryEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            for peer in self.peers {
                if !emit(&events, DiscoveryEvent::Found(peer), &mut shutdown).await {
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = events.closed() => {}
            }
        })
    }
}

/// Which network interfaces mDNS runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MdnsInterfaces {
    /// Every interface that is up, except loopback: the store LAN.
    #[default]
    AllButLoopback,
    /// Loopback only: nodes on this machine (tests; no mDNS packet leaves it).
    LoopbackOnly,
    /// These interfaces, by name (e.g. `eth0`).
    Named(Vec<String>),
}

/// Discovery by DNS-SD over mDNS (the mdns-sd crate, which runs its own thread).
#[derive(Debug, Clone)]
pub struct MdnsDiscovery {
    /// Interfaces to advertise and browse on.
    pub interfaces: MdnsInterfaces,
    /// Also use IPv6 (multicast on `ff02::fb`, and peers' non-link-local IPv6
    /// addresses). Off by default: store LANs are IPv4.
    pub ipv6: bool,
    /// UDP port of mDNS: 5353, the standard; tests use another so they meet only
    /// each other.
    pub mdns_port: u16,
    /// Re-browse period after the first two quick ones (1 s, 2 s): each re-browse
    /// clears the cache, so every live peer answers again and stays fresh.
    pub rebrowse_every: Duration,
    /// A peer not heard from for this long is reported lost. Keep it at three
    /// re-browse periods or more, so one lost packet does not drop a peer.
    pub expire_after: Duration,
    /// Accept loopback addresses in peers' records. Off on a LAN (a foreign
    /// record must not point this node at its own local services); on for
    /// [`MdnsInterfaces::LoopbackOnly`].
    pub allow_loopback_addrs: bool,
}

impl Default for MdnsDiscovery {
    fn default() -> Self {
        Self {
            interfaces: MdnsInterfaces::AllButLoopback,
            ipv6: false,
            mdns_port: MDNS_PORT,
            rebrowse_every: Duration::from_secs(4),
            expire_after: Duration::from_secs(13),
            allow_loopback_addrs: false,
        }
    }
}

impl MdnsDiscovery {
    /// Discovery among nodes of this machine only, on loopback, on `mdns_port`.
    pub fn loopback(mdns_port: u16) -> Self {
        Self {
            interfaces: MdnsInterfaces::LoopbackOnly,
            mdns_port,
            allow_loopback_addrs: true,
            ..Self::default()
        }
    }

    /// Creates the daemon with only the chosen interfaces enabled. The
    /// selections are queued before any register or browse, so no mDNS packet is
    /// sent on another interface. (mdns-sd 0.21 still joins the multicast group
    /// on every interface when it starts and leaves it at once: the kernel
    /// announces both with IGMP/MLD reports on those links.)
    fn daemon(&self) -> mdns_sd::Result<ServiceDaemon> {
        let daemon = ServiceDaemon::new_with_port(self.mdns_port)?;
        // The last matching selection wins.
        daemon.disable_interface(IfKind::All)?;
        match &self.interfaces {
            MdnsInterfaces::AllButLoopback => {
                daemon.enable_interface(IfKind::All)?;
                daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
            }
            MdnsInterfaces::LoopbackOnly => {
                daemon.enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
            }
            MdnsInterfaces::Named(names) => {
                let kinds: Vec<IfKind> = names.iter().map(|n| IfKind::Name(n.clone())).collect();
                daemon.enable_interface(kinds)?;
            }
        }
        if !self.ipv6 {
            daemon.disable_interface(IfKind::IPv6)?;
        }
        Ok(daemon)
    }

    /// The addresses of a resolved record this node may dial (before
    /// [`parse_peer`]'s own checks).
    fn candidate_ips(&self, resolved: &ResolvedService) -> Vec<IpAddr> {
        resolved
            .get_addresses()
            .iter()
            .map(|a| a.to_ip_addr())
            .filter(|ip| self.ipv6 || ip.is_ipv4())
            .filter(|ip| self.allow_loopback_addrs || !ip.is_loopback())
            .collect()
    }

    async fn run(
        self,
        me: LocalAdvert,
        events: mpsc::Sender<DiscoveryEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if let Err(why) = check_advert(&me) {
            tracing::error!(peer = ?cut(&me.peer_id), %why, "not advertising: invalid local advert; discovery off");
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
        let daemon = match self.daemon() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "mDNS daemon failed to start; discovery off");
                let _ = shutdown.wait_for(|s| *s).await;
                return;
            }
        };
        let fullname = match register(&daemon, &me) {
            Ok(name) => Some(name),
            Err(e) => {
                // Still browse: this node can find and dial others.
                tracing::warn!(error = %e, "mDNS registration failed; browsing only");
                None
            }
        };
        tracing::info!(
            peer = %me.peer_id,
            store = %me.store,
            port = me.port,
            interfaces = ?self.interfaces,
            mdns_port = self.mdns_port,
            "mDNS discovery started"
        );

        let mut table = PeerTable::new(me);
        let mut browse = mdns_browse(&daemon);
        // When the daemon's cache was last emptied (here: it starts empty).
        let mut last_clear = Instant::now();
        let mut rebrowse_delays = [Duration::from_secs(1), Duration::from_secs(2)].into_iter();
        let mut next_rebrowse =
            Instant::now() + rebrowse_delays.next().unwrap_or(self.rebrowse_every);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        /// What woke the loop.
        enum Wake {
            Stop,
            Event(Option<ServiceEvent>),
            Tick,
        }
        'run: loop {
            let wake = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => Wake::Stop,
                _ = events.closed() => Wake::Stop,
                event = recv(browse.as_ref()) => Wake::Event(event),
                _ = tick.tick() => Wake::Tick,
            };
            let mut out = Vec::new();
            match wake {
                Wake::Stop => break 'run,
                Wake::Event(Some(event)) => self.handle(&mut table, event, &mut out),
                Wake::Event(None) => {
                    // The daemon ended the subscription (its channel to us was
                    // full, or it stopped): browse anew at the next tick.
                    tracing::debug!("mDNS browse channel closed; re-browsing");
                    browse = None;
                    next_rebrowse = Instant::now();
                }
                Wake::Tick => {
                    if Instant::now() >= next_rebrowse {
                        let live = browse.take();
                        browse = self
                            .rebrowse(&daemon, live, &mut table, &mut last_clear, &mut out)
                            .await;
                        next_rebrowse =
                            Instant::now() + rebrowse_delays.next().unwrap_or(self.rebrowse_every);
                    }
                    out.extend(table.expire(Instant::now(), self.expire_after));
                }
            }
            for event in out {
                if !emit(&events, event, &mut shutdown).await {
                    break 'run;
                }
            }
        }

        // Goodbye packets, so the others report us lost at once; bounded waits.
        if let Some(name) = fullname {
            match daemon.unregister(&name) {
                Ok(done) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), done.recv_async()).await;
                }
                Err(e) => tracing::debug!(error = %e, "mDNS unregister failed"),
            }
        }
        match daemon.shutdown() {
            Ok(done) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), done.recv_async()).await;
            }
            Err(e) => tracing::debug!(error = %e, "mDNS daemon shutdown failed"),
        }
        tracing::info!("mDNS discovery stopped");
    }

    /// Re-browses: every live peer answers the fresh query, which refreshes it
    /// in `table`. Returns the new subscription.
    ///
    /// Clearing the daemon's cache (the only way to make known peers answer
    /// again) would also drop a goodbye received in the last second (a goodbye
    /// leaves its records for one second before the daemon reports the
    /// removal). So first a snapshot of the cache: the daemon lists the cached
    /// instances that are not about to expire between `SearchStarted` and
    /// `SearchStopped`; a peer refreshed since the last clear but missing from it
    /// has said goodbye (or expired) and is reported lost now.
    async fn rebrowse(
        &self,
        daemon: &ServiceDaemon,
        live: Option<mdns_sd::Receiver<ServiceEvent>>,
        table: &mut PeerTable,
        last_clear: &mut Instant,
        out: &mut Vec<DiscoveryEvent>,
    ) -> Option<mdns_sd::Receiver<ServiceEvent>> {
        // The daemon runs these in order: the snapshot replaces (and so ends) the
        // live subscription, stop_browse ends the snapshot and empties the cache,
        // the fresh browse queries anew.
        let snapshot = mdns_browse(daemon);
        if let Err(e) = daemon.stop_browse(SERVICE_TYPE) {
            tracing::debug!(error = %e, "mDNS stop_browse failed");
        }
        let fresh = mdns_browse(daemon);
        let limit = Duration::from_millis(500);
        // Events queued on the old subscription still count.
        if let Some(live) = live {
            let deadline = Instant::now() + limit;
            while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, live.recv_async()).await {
                self.handle(table, event, out);
            }
        }
        if let Some(snapshot) = snapshot {
            match read_snapshot(&snapshot, limit).await {
                Some(cached) => out.extend(table.gone(&cached, *last_clear)),
                None => tracing::debug!("mDNS cache snapshot incomplete; skipped"),
            }
        }
        // Everything handled so far predates the clear.
        *last_clear = Instant::now();
        fresh
    }

    fn handle(&self, table: &mut PeerTable, event: ServiceEvent, out: &mut Vec<DiscoveryEvent>) {
        let now = Instant::now();
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                if resolved.ty_domain != SERVICE_TYPE {
                    return;
                }
                let ips = self.candidate_ips(&resolved);
                out.extend(table.resolved(
                    &resolved.fullname,
                    &resolved.txt_properties,
                    &ips,
                    resolved.port,
                    now,
                ));
            }
            ServiceEvent::ServiceRemoved(_, fullname) => out.extend(table.removed(&fullname)),
            other => tracing::trace!(event = ?other, "mDNS event"),
        }
    }
}

impl Discovery for MdnsDiscovery {
    fn start(
        self: Box<Self>,
        me: LocalAdvert,
        events: mpsc::Sender<DiscoveryEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn((*self).run(me, events, shutdown))
    }
}

/// Registers `me`; returns the service's full name.
fn register(daemon: &ServiceDaemon, me: &LocalAdvert) -> mdns_sd::Result<String> {
    let host = format!("{}.local.", me.peer_id);
    let info = ServiceInfo::new(SERVICE_TYPE, &me.peer_id, &host, (), me.port, &me.txt()[..])?
        // Addresses follow the enabled interfaces, and their changes.
        .enable_addr_auto();
    let fullname = info.get_fullname().to_string();
    daemon.register(info)?;
    Ok(fullname)
}

fn mdns_browse(daemon: &ServiceDaemon) -> Option<mdns_sd::Receiver<ServiceEvent>> {
    match daemon.browse(SERVICE_TYPE) {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "mDNS browse failed; retrying at the next re-browse");
            None
        }
    }
}

/// The instances of a snapshot subscription (see [`MdnsDiscovery::rebrowse`]),
/// or `None` if it did not end cleanly within `limit`.
async fn read_snapshot(
    rx: &mdns_sd::Receiver<ServiceEvent>,
    limit: Duration,
) -> Option<std::collections::HashSet<String>> {
    let deadline = Instant::now() + limit;
    let mut names = std::collections::HashSet::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv_async()).await {
            Ok(Ok(ServiceEvent::ServiceResolved(r))) => {
                names.insert(r.fullname);
            }
            Ok(Ok(ServiceEvent::SearchStopped(_))) => return Some(names),
            Ok(Ok(_)) => {}
            // Closed early (its channel overflowed) or too slow: no verdict.
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// The next event of the subscription; `None` once it is closed. Without a
/// subscription, never resolves.
async fn recv(rx: Option<&mdns_sd::Receiver<ServiceEvent>>) -> Option<ServiceEvent> {
    match rx {
        Some(rx) => rx.recv_async().await.ok(),
        None => std::future::pending().await,
    }
}

/// Text from the network, cut for a log line (log it with `?`, which escapes).
fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Whether `s` may be a peer id here: 1 to [`MAX_PEER_ID_LEN`] ASCII letters,
/// digits, `-` or `_` (base58 is a subset; the set keeps it one plain DNS label).
pub fn valid_peer_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PEER_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_advert(me: &LocalAdvert) -> Result<(), &'static str> {
    if !valid_peer_id(&me.peer_id) {
        return Err("peer id must be 1 to 63 letters, digits, '-' or '_'");
    }
    if me.port == 0 {
        return Err("port 0");
    }
    Ok(())
}

/// Why a discovered record was not reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// It is this node's own advertisement.
    #[error("our own advertisement")]
    Ours,
    /// A node of another chain.
    #[error("another chain")]
    OtherChain,
    /// A node of another store.
    #[error("another store")]
    OtherStore,
    /// A node speaking another protocol version.
    #[error("protocol version {0}")]
    OtherProtocol(u16),
    /// A TXT value is missing, too long or does not parse.
    #[error("TXT {key}: {why}")]
    Invalid {
        /// The TXT key.
        key: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No address this node could dial, or port 0.
    #[error("no usable address")]
    NoAddress,
}

/// The value of TXT `key` as text: present, with a value of at most `max` bytes
/// of UTF-8. The length is checked before anything else is done with it.
fn txt_value<'a>(
    txt: &'a TxtProperties,
    key: &'static str,
    max: usize,
) -> Result<Option<&'a str>, Rejected> {
    let invalid = |why| Rejected::Invalid { key, why };
    match txt.get_property_val(key) {
        None => Ok(None),
        Some(None) => Err(invalid("no value")),
        Some(Some(bytes)) if bytes.len() > max => Err(invalid("too long")),
        Some(Some(bytes)) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| invalid("not UTF-8")),
    }
}

fn required<'a>(
    txt: &'a TxtProperties,
    key: &'static str,
    max: usize,
) -> Result<&'a str, Rejected> {
    txt_value(txt, key, max)?.ok_or(Rejected::Invalid {
        key,
        why: "missing",
    })
}

/// Checks a discovered record against this node's advertisement: `txt` must
/// carry a valid `peer` other than ours, the same `chain`, `store` and `pv`, and
/// `dev` if present must be a GUID. `ips` (already filtered for the loopback and
/// IPv6 policy) lose unspecified, multicast, broadcast and IPv6 link-local
/// addresses; the rest, with `port`, become the peer's sorted addresses (at most
/// [`MAX_ADDRS`]). Never panics, whatever the input.
pub fn parse_peer(
    txt: &TxtProperties,
    ips: &[IpAddr],
    port: u16,
    me: &LocalAdvert,
) -> Result<PeerInfo, Rejected> {
    let peer_id = required(txt, key::PEER, MAX_PEER_ID_LEN)?;
    if !valid_peer_id(peer_id) {
        return Err(Rejected::Invalid {
            key: key::PEER,
            why: "not a peer id",
        });
    }
    if peer_id == me.peer_id {
        return Err(Rejected::Ours);
    }
    let chain = ChainId::new(required(txt, key::CHAIN, ChainId::MAX_LEN)?).map_err(|_| {
        Rejected::Invalid {
            key: key::CHAIN,
            why: "not a chain id",
        }
    })?;
    if chain != me.chain {
        return Err(Rejected::OtherChain);
    }
    let store = StoreId::new(required(txt, key::STORE, StoreId::MAX_LEN)?).map_err(|_| {
        Rejected::Invalid {
            key: key::STORE,
            why: "not a store id",
        }
    })?;
    if store != me.store {
        return Err(Rejected::OtherStore);
    }
    let pv = required(txt, key::PROTOCOL, 5)?;
    if !pv.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejected::Invalid {
            key: key::PROTOCOL,
            why: "not a number",
        });
    }
    let pv: u16 = pv.parse().map_err(|_| Rejected::Invalid {
        key: key::PROTOCOL,
        why: "not a 16-bit number",
    })?;
    if pv != me.protocol_version {
        return Err(Rejected::OtherProtocol(pv));
    }
    // `{` + 36 + `}`: the longest GUID form DeviceId accepts.
    let device = match txt_value(txt, key::DEVICE, 38)? {
        None => None,
        Some(text) => Some(text.parse::<DeviceId>().map_err(|_| Rejected::Invalid {
            key: key::DEVICE,
            why: "not a GUID",
        })?),
    };
    if port == 0 {
        return Err(Rejected::NoAddress);
    }
    let mut addrs: Vec<SocketAddr> = ips
        .iter()
        .filter(|ip| usable_ip(ip))
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs.truncate(MAX_ADDRS);
    if addrs.is_empty() {
        return Err(Rejected::NoAddress);
    }
    Ok(PeerInfo {
        peer_id: peer_id.to_string(),
        device,
        addrs,
    })
}

fn usable_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        // Link-local IPv6 needs a scope id the transport would have to carry.
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

/// A peer reported as found.
#[derive(Debug)]
struct Known {
    peer: PeerInfo,
    /// The mDNS instance it was last resolved from (removals name the instance).
    fullname: String,
    last_seen: Instant,
}

/// The peers reported so far, and the events their records call for. No IO, so
/// the rules are tested without a network.
#[derive(Debug)]
struct PeerTable {
    me: LocalAdvert,
    peers: HashMap<String, Known>,
}

impl PeerTable {
    fn new(me: LocalAdvert) -> Self {
        Self {
            me,
            peers: HashMap::new(),
        }
    }

    /// A record resolved (first time, changed, or again after a re-browse).
    fn resolved(
        &mut self,
        fullname: &str,
        txt: &TxtProperties,
        ips: &[IpAddr],
        port: u16,
        now: Instant,
    ) -> Vec<DiscoveryEvent> {
        let mut out = Vec::new();
        let peer = match parse_peer(txt, ips, port, &self.me) {
            Ok(peer) => peer,
            Err(Rejected::Ours) => return out,
            Err(why) => {
                tracing::debug!(instance = ?cut(fullname), %why, "mDNS record ignored");
                // An instance we reported no longer qualifies (moved store, ...).
                out.extend(self.removed(fullname));
                return out;
            }
        };
        // The instance now names another peer id: the old one is gone.
        if let Some(old) = self
            .peers
            .iter()
            .find(|(id, k)| k.fullname == fullname && **id != peer.peer_id)
            .map(|(id, _)| id.clone())
        {
            self.peers.remove(&old);
            out.push(DiscoveryEvent::Lost { peer_id: old });
        }
        let full = self.peers.len() >= MAX_PEERS;
        match self.peers.get_mut(&peer.peer_id) {
            Some(known) => {
                known.last_seen = now;
                known.fullname = fullname.to_string();
                if known.peer != peer {
                    tracing::debug!(peer = %peer.peer_id, addrs = ?peer.addrs, "peer changed");
                    known.peer = peer.clone();
                    out.push(DiscoveryEvent::Found(peer));
                }
            }
            None if full => {
                tracing::debug!(peer = %peer.peer_id, max = MAX_PEERS, "too many peers; record ignored");
            }
            None => {
                tracing::debug!(peer = %peer.peer_id, device = ?peer.device, addrs = ?peer.addrs, "peer found");
                self.peers.insert(
                    peer.peer_id.clone(),
                    Known {
                        peer: peer.clone(),
                        fullname: fullname.to_string(),
                        last_seen: now,
                    },
                );
                out.push(DiscoveryEvent::Found(peer));
            }
        }
        out
    }

    /// The instance `fullname` said goodbye (or its records expired).
    fn removed(&mut self, fullname: &str) -> Option<DiscoveryEvent> {
        let id = self
            .peers
            .iter()
            .find(|(_, k)| k.fullname == fullname)
            .map(|(id, _)| id.clone())?;
        self.peers.remove(&id);
        tracing::debug!(peer = %id, "peer left");
        Some(DiscoveryEvent::Lost { peer_id: id })
    }

    /// Peers refreshed since `since` (the last time the daemon's cache was
    /// emptied), whose instance is no longer among the `cached` ones: they said
    /// goodbye.
    fn gone(
        &mut self,
        cached: &std::collections::HashSet<String>,
        since: Instant,
    ) -> Vec<DiscoveryEvent> {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, k)| k.last_seen >= since && !cached.contains(&k.fullname))
            .map(|(id, _)| id.clone())
            .collect();
        gone.into_iter()
            .map(|id| {
                self.peers.remove(&id);
                tracing::debug!(peer = %id, "peer left (no longer cached)");
                DiscoveryEvent::Lost { peer_id: id }
            })
            .collect()
    }

    /// Peers not heard from within `after`.
    fn expire(&mut self, now: Instant, after: Duration) -> Vec<DiscoveryEvent> {
        let stale: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, k)| now.saturating_duration_since(k.last_seen) > after)
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .into_iter()
            .map(|id| {
                self.peers.remove(&id);
                tracing::debug!(peer = %id, "peer silent; expired");
                DiscoveryEvent::Lost { peer_id: id }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
        let peer = parse_peer(&with("DEV", Some(braced.as_bytes())), &lan_ip(), 4001, &me)
            .expect("braced");
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
        let moved_store =
            table.resolved(name, &with("store", Some(b"store-9")), &lan_ip(), 4001, t1);
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
        let rx =
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("bind: {e}"))?;
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
}
