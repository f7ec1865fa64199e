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
mod tests;
