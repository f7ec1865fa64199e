//! The store swarm: the tills of one store, connected over the LAN with libp2p,
//! sharing chunks so a package crosses the store's WAN link about once.
//!
//! Transport: TCP, then the chain-key challenge ([`handshake`]: a device without
//! the chain's key sees one random nonce and a closed socket), then noise with
//! a key-derived prologue (so bytes are encrypted once, by noise), then yamux.
//! On top, one request-response protocol ([`wire::PROTOCOL_NAME`]) carrying
//! [`PeerMessage`]s in capped frames ([`codec`]). A peer becomes live only after
//! a `Hello` proving the same chain and store.
//!
//! One event loop owns the libp2p `Swarm` ([`run`]); the rest of the node talks to
//! it through the cloneable [`StoreNet`] handle (commands with oneshot replies) and
//! reads the shared [`NetView`] (live peers and what they hold). The transfer
//! planner ([`planner`]) and the download driver ([`fetch`]) sit on top.

pub mod codec;
pub mod fetch;
pub mod handshake;
pub mod planner;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::core::upgrade::Version;
use libp2p::core::{Multiaddr, Transport};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, StreamProtocol, noise, tcp, yamux};
use tillswarm_protocol::wire::{self, Bitfield, Hello, PeerMessage};
use tillswarm_protocol::{ChainId, ChunkHash, DeviceId, PackageId, StoreId};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use self::codec::Reply;
use crate::chunks::{ChunkStore, Wire};
use crate::error::{Error, Result};

/// Bytes of chunk data one node may have in flight in its downloads (asked
/// for, arriving, or waiting to be written): its memory for fetches. At least
/// one maximum chunk.
pub const FETCH_BUDGET: usize = 16 << 20;
/// Most commands queued for the event loop.
const COMMAND_QUEUE: usize = 256;
/// A peer must answer a request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A new connection must finish challenge, noise and yamux within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most packages remembered as news already told (see [`StoreNet::take_news`]).
const MAX_NEWS: usize = 256;
/// Most peers held while not on the store's member list.
const MAX_UNLISTED: usize = 64;
/// How long such a peer is held before it is disconnected.
const UNLISTED_GRACE_MS: i64 = 30_000;

/// Settings of a node's store swarm.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Where to listen for peers (`0.0.0.0:0`: every interface, any port).
    pub listen: SocketAddr,
    /// The chain's pre-shared key: peers without it fail the handshake.
    pub psk: [u8; 32],
    /// This till's chain.
    pub chain: ChainId,
    /// This till's store.
    pub store: StoreId,
    /// This till's GUID.
    pub device: DeviceId,
    /// Most chunk uploads served at once; further requests get `Busy`.
    pub max_uploads: usize,
    /// Subnets peers may be dialled in besides this till's own interfaces'.
    pub peer_subnets: Vec<ipnet::IpNet>,
    /// Ports peers may be dialled on.
    pub peer_ports: std::ops::RangeInclusive<u16>,
}

/// A peer's answer to a chunk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// The chunk (not verified yet), raw or as its manifest's zstd frame.
    Chunk(Wire),
    /// It does not hold the chunk (any more).
    NotHave,
    /// It serves as many peers as it may: ask again shortly.
    Busy,
}

/// A live peer as the swarm sees it.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    /// Its GUID (from its Hello).
    pub device: Option<DeviceId>,
    /// What it holds, per package, by manifest index.
    pub holds: HashMap<PackageId, HashSet<usize>>,
    /// When it last said anything (monotonic ms since the loop started).
    pub last_heard_ms: i64,
    /// Packages this node tracks whose bitfield it answered (even to say it
    /// takes no part), so its holdings of them are known.
    pub answered: HashSet<PackageId>,
}

/// Live peers and their holdings, shared with the download driver.
#[derive(Debug, Default)]
pub struct NetView {
    /// Peers that passed the Hello check and are connected.
    pub peers: HashMap<PeerId, PeerView>,
}

enum Command {
    AddPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    Fetch {
        peer: PeerId,
        hash: ChunkHash,
        reply: oneshot::Sender<Result<PeerAnswer>>,
    },
    Track {
        package: PackageId,
        chunks: Vec<ChunkHash>,
    },
    Untrack {
        package: PackageId,
    },
    Announce {
        package: PackageId,
        indices: Vec<u32>,
    },
    Ban {
        peer: PeerId,
        for_ms: i64,
    },
    Members(Vec<tillswarm_protocol::trust::StoreMember>),
}

/// Handle to a running store swarm. Cheap to clone.
#[derive(Clone)]
pub struct StoreNet {
    commands: mpsc::Sender<Command>,
    view: Arc<Mutex<NetView>>,
    /// Notified whenever the view changes.
    pub changed: Arc<Notify>,
    /// Counts the view's changes (see [`StoreNet::view_version`]).
    version: Arc<std::sync::atomic::AtomicU64>,
    /// This node's peer id.
    pub peer_id: PeerId,
    /// The address it listens on.
    pub listen_addr: Multiaddr,
    start: tokio::time::Instant,
    dials_refused: Arc<std::sync::atomic::AtomicU64>,
    /// [`FETCH_BUDGET`] in KiB permits.
    budget: Arc<Semaphore>,
    /// Set when a store peer took up a package this node does not track.
    news: Arc<std::sync::atomic::AtomicBool>,
}

impl StoreNet {
    /// Whether a store peer has started on a package this node does not
    /// track since the last call: the store has news (a task this till may
    /// not have heard of yet), worth polling the coordinator for at once.
    pub fn take_news(&self) -> bool {
        self.news.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Reserves room for `bytes` of chunk data in flight (waits while the
    /// node's [`FETCH_BUDGET`] is spent); the room returns when dropped.
    pub async fn reserve(&self, bytes: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = (bytes as usize)
            .div_ceil(1024)
            .clamp(1, FETCH_BUDGET / 1024) as u32;
        self.budget.clone().acquire_many_owned(kib).await.ok()
    }

    /// Queues a command, waiting while the loop's inbox is full (bounded).
    async fn send(&self, c: Command) -> Result<()> {
        self.commands
            .send(c)
            .await
            .map_err(|_| Error::Swarm("stopped".into()))
    }

    /// Monotonic ms since the swarm started (the view's time base).
    pub fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// Dials a peer found by discovery.
    pub async fn add_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.commands
            .send(Command::AddPeer { peer, addrs })
            .await
            .map_err(|_| Error::Swarm("stopped".into()))
    }

    /// Sets the store's member list from the coordinator's signed
    /// instructions: from then on only listed tills are store peers, and
    /// connected peers no longer listed are dropped.
    pub async fn set_members(
        &self,
        members: Vec<tillswarm_protocol::trust::StoreMember>,
    ) -> Result<()> {
        self.send(Command::Members(members)).await
    }

    /// Addresses discovery named that the dial policy refused so far.
    pub fn dials_refused(&self) -> u64 {
        self.dials_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches a chunk from `peer`. The bytes are not verified yet.
    /// Cancel-safe (the answer is dropped).
    pub async fn fetch(&self, peer: PeerId, hash: ChunkHash) -> Result<PeerAnswer> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Fetch { peer, hash, reply })
            .await
            .map_err(|_| Error::Swarm("stopped".into()))?;
        answer.await.map_err(|_| Error::Swarm("stopped".into()))?
    }

    /// Starts serving and advertising the held chunks of a package.
    pub async fn track(&self, package: PackageId, chunks: Vec<ChunkHash>) -> Result<()> {
        self.send(Command::Track { package, chunks }).await
    }

    /// Stops advertising a package (its chunks stay servable by hash).
    pub async fn untrack(&self, package: PackageId) -> Result<()> {
        self.send(Command::Untrack { package }).await
    }

    /// Tells the live peers about newly verified chunks.
    pub async fn announce(&self, package: PackageId, indices: Vec<u32>) -> Result<()> {
        self.send(Command::Announce { package, indices }).await
    }

    /// Disconnects and ignores a peer for a while (it sent a bad chunk).
    pub async fn ban(&self, peer: PeerId, for_ms: i64) -> Result<()> {
        self.send(Command::Ban { peer, for_ms }).await
    }

    /// Moves on with every change of the view: a reader that saw version `v`
    /// has nothing new to read while it is still `v`.
    pub fn view_version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A copy of the view (every live peer and its holdings).
    pub fn view(&self) -> HashMap<PeerId, PeerView> {
        self.view
            .lock()
            .map(|v| v.peers.clone())
            .unwrap_or_default()
    }

    /// How many store peers are connected and introduced (their Hello came).
    pub fn connected_peers(&self) -> usize {
        self.view
            .lock()
            .map(|v| v.peers.values().filter(|p| p.device.is_some()).count())
            .unwrap_or(0)
    }
}

/// Loads the node's libp2p identity from `<data>/node.key` (created 0600 on
/// first use), so its peer id survives restarts.
pub fn load_or_create_key(data_dir: &std::path::Path) -> Result<Keypair> {
    let seed = crate::identity::load_or_create_seed(&data_dir.join("node.key"))?;
    Keypair::ed25519_from_bytes(seed).map_err(|e| Error::Config(format!("node key: {e}")))
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    rr: request_response::Behaviour<codec::StoreCodec>,
}

fn build_swarm(key: Keypair, chain_key: handshake::ChainKey) -> Result<libp2p::Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                .with_prologue(chain_key.prologue());
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, endpoint| {
                    handshake::prove(socket, chain_key, endpoint.is_dialer())
                })
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(HANDSHAKE_TIMEOUT)
                .boxed();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .map_err(|e| Error::Swarm(format!("transport: {e}")))?
        .with_behaviour(|_| Behaviour {
            rr: request_response::Behaviour::with_codec(
                codec::StoreCodec,
                [(
                    StreamProtocol::new(wire::PROTOCOL_NAME),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(64),
            ),
        })
        .map_err(|e| Error::Swarm(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// Starts the swarm's event loop; returns its handle and the loop's task. The
/// loop ends when `shutdown` turns true.
pub async fn start(
    config: SwarmConfig,
    key: Keypair,
    store: Arc<ChunkStore>,
    shutdown: watch::Receiver<bool>,
) -> Result<(StoreNet, tokio::task::JoinHandle<()>)> {
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(key, handshake::ChainKey::new(&config.psk))?;
    let listen: Multiaddr = format!("/ip4/{}/tcp/{}", config.listen.ip(), config.listen.port())
        .parse()
        .map_err(|e| Error::Config(format!("swarm listen address: {e}")))?;
    swarm
        .listen_on(listen)
        .map_err(|e| Error::Config(format!("swarm listen: {e}")))?;
    // Wait for the actual address (the port may have been 0).
    let listen_addr = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            SwarmEvent::ListenerError { error, .. } => return Err(Error::Io(error)),
            _ => {}
        }
    };
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
    let view = Arc::new(Mutex::new(NetView::default()));
    let changed = Arc::new(Notify::new());
    let version = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start_at = tokio::time::Instant::now();
    let dials_refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let news = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let net = StoreNet {
        commands,
        view: view.clone(),
        changed: changed.clone(),
        version: version.clone(),
        peer_id,
        listen_addr,
        start: start_at,
        dials_refused: dials_refused.clone(),
        budget: Arc::new(Semaphore::new(FETCH_BUDGET / 1024)),
        news: news.clone(),
    };
    let policy = policy::DialPolicy::new(
        config.peer_subnets.clone(),
        config.peer_ports.clone(),
        config.listen.ip().is_loopback(),
    );
    let event_loop = EventLoop {
        policy,
        members: policy::Membership::default(),
        dials_refused,
        swarm,
        config: config.clone(),
        store,
        view,
        changed,
        version,
        start: start_at,
        tracked: HashMap::new(),
        pending_fetch: HashMap::new(),
        hello_ok: HashSet::new(),
        unlisted: HashMap::new(),
        banned: HashMap::new(),
        uploads: Arc::new(Semaphore::new(config.max_uploads.max(1))),
        news,
        news_heard: HashSet::new(),
        upload_done: mpsc::channel(64),
    };
    let task = tokio::spawn(tracing::Instrument::instrument(
        event_loop.run(inbox, shutdown),
        tracing::Span::current(),
    ));
    Ok((net, task))
}

type UploadDone = (ResponseChannel<Reply>, Reply);

struct EventLoop {
    /// Which addresses may be dialled, and how often.
    policy: policy::DialPolicy,
    /// The coordinator's list of the store's tills (empty: none yet).
    members: policy::Membership,
    dials_refused: Arc<std::sync::atomic::AtomicU64>,
    swarm: libp2p::Swarm<Behaviour>,
    config: SwarmConfig,
    store: Arc<ChunkStore>,
    view: Arc<Mutex<NetView>>,
    changed: Arc<Notify>,
    version: Arc<std::sync::atomic::AtomicU64>,
    start: tokio::time::Instant,
    /// Packages this node advertises: their chunk hashes in manifest order.
    tracked: HashMap<PackageId, Vec<ChunkHash>>,
    pending_fetch: HashMap<OutboundRequestId, oneshot::Sender<Result<PeerAnswer>>>,
    /// Peers whose Hello matched (chain, store, protocol) and, when there is
    /// a member list, who are on it.
    hello_ok: HashSet<PeerId>,
    /// Peers the member list does not name (yet), with their GUID and since
    /// when: held without exchanging anything when they arrived unlisted,
    /// still sharing when a new list left them out; disconnected after
    /// [`UNLISTED_GRACE_MS`].
    unlisted: HashMap<PeerId, (DeviceId, i64)>,
    /// Peers ignored until the given ms.
    banned: HashMap<PeerId, i64>,
    uploads: Arc<Semaphore>,
    upload_done: (mpsc::Sender<UploadDone>, mpsc::Receiver<UploadDone>),
    /// See [`StoreNet::take_news`].
    news: Arc<std::sync::atomic::AtomicBool>,
    /// Untracked packages peers already told of (news once each; bounded).
    news_heard: HashSet<PackageId>,
}

impl EventLoop {
    fn now(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    fn hello(&self) -> PeerMessage {
        PeerMessage::Hello(Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            chain: self.config.chain.clone(),
            store: self.config.store.clone(),
            device: self.config.device,
        })
    }

    fn hello_matches(&self, h: &Hello) -> bool {
        h.protocol_version == wire::PROTOCOL_VERSION
            && h.chain == self.config.chain
            && h.store == self.config.store
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|&until| until > self.now())
    }

    fn bitfield(&self, package: &PackageId) -> Option<Bitfield> {
        let hashes = self.tracked.get(package)?;
        let mut bf = Bitfield::new(hashes.len() as u32);
        for (i, h) in hashes.iter().enumerate() {
            if self.store.contains(h) {
                bf.set(i as u32);
            }
        }
        Some(bf)
    }

    fn touch(&self, peer: &PeerId, update: impl FnOnce(&mut PeerView)) {
        if !self.hello_ok.contains(peer) {
            return;
        }
        let now = self.now();
        if let Ok(mut v) = self.view.lock() {
            let p = v.peers.entry(*peer).or_default();
            p.last_heard_ms = now;
            update(p);
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Records a peer's holdings of a package. An empty bitfield (no chunk
    /// count) means the peer does not take part in that package. Only
    /// packages this node tracks, and indices within them, are kept: what a
    /// peer says costs memory bounded by this node's own interest.
    fn record_bitfield(&self, peer: &PeerId, package: PackageId, have: &Bitfield) {
        let count = self.tracked_len(&package);
        if have.chunk_count == 0 || count == 0 {
            self.touch(peer, |_| {});
            return;
        }
        self.touch(peer, |p| {
            let held = (0..have.chunk_count.min(count as u32))
                .filter(|&i| have.get(i))
                .map(|i| i as usize);
            p.holds.entry(package).or_default().extend(held);
        });
    }

    /// Chunks in a tracked package (0: not tracked).
    fn tracked_len(&self, package: &PackageId) -> usize {
        self.tracked.get(package).map_or(0, Vec::len)
    }

    fn drop_peer(&mut self, peer: &PeerId) {
        self.hello_ok.remove(peer);
        self.unlisted.remove(peer);
        if let Ok(mut v) = self.view.lock() {
            v.peers.remove(peer);
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.changed.notify_waiters();
    }

    fn send_bitfields_to(&mut self, peer: PeerId) {
        let packages: Vec<PackageId> = self.tracked.keys().copied().collect();
        for package in packages {
            if let Some(have) = self.bitfield(&package) {
                self.swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, PeerMessage::Bitfield { package, have });
            }
        }
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = sweep.tick(), if !self.unlisted.is_empty() => self.expire_unlisted(),
                Some(cmd) = inbox.recv() => self.on_command(cmd),
                Some((channel, response)) = self.upload_done.1.recv() => {
                    let _ = self.swarm.behaviour_mut().rr.send_response(channel, response);
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        for (_, reply) in self.pending_fetch.drain() {
            let _ = reply.send(Err(Error::Swarm("stopped".into())));
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer { peer, addrs } => {
                if peer == *self.swarm.local_peer_id()
                    || self.is_banned(&peer)
                    || self.swarm.is_connected(&peer)
                {
                    return;
                }
                let (addrs, refused) = self.policy.filter(addrs);
                if !refused.is_empty() {
                    tracing::debug!(peer = %peer, ?refused, "not dialling addresses outside the dial policy");
                    self.dials_refused
                        .fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                if addrs.is_empty() {
                    return;
                }
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(peer = %peer, error = %e, "dial failed");
                }
            }
            Command::Fetch { peer, hash, reply } => {
                if !self.hello_ok.contains(&peer) {
                    // Not (or no longer) a checked store peer: nothing from it.
                    let _ = reply.send(Ok(PeerAnswer::NotHave));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, PeerMessage::Request { hash });
                self.pending_fetch.insert(id, reply);
            }
            Command::Track { package, chunks } => {
                self.tracked.insert(package, chunks);
                let peers: Vec<PeerId> = self.hello_ok.iter().copied().collect();
                for p in peers {
                    if let Some(have) = self.bitfield(&package) {
                        self.swarm
                            .behaviour_mut()
                            .rr
                            .send_request(&p, PeerMessage::Bitfield { package, have });
                    }
                }
            }
            Command::Untrack { package } => {
                self.tracked.remove(&package);
                if let Ok(mut v) = self.view.lock() {
                    for p in v.peers.values_mut() {
                        p.holds.remove(&package);
                        p.answered.remove(&package);
                    }
                }
            }
            Command::Members(list) => {
                self.members.set(&list);
                // Store peers the new list leaves out keep sharing for the
                // grace time (a list may lag a till's first report), then go.
                let now = self.now();
                let devices: Vec<(PeerId, DeviceId)> = self
                    .view
                    .lock()
                    .map(|v| {
                        v.peers
                            .iter()
                            .filter_map(|(id, p)| Some((*id, p.device?)))
                            .collect()
                    })
                    .unwrap_or_default();
                for (peer, device) in devices {
                    if !self.members.admits(&device, &peer.to_string()) {
                        self.unlisted.entry(peer).or_insert((device, now));
                    }
                }
                self.expire_unlisted();
            }
            Command::Announce { package, indices } => {
                let peers: Vec<PeerId> = self.hello_ok.iter().copied().collect();
                for batch in indices.chunks(wire::MAX_HAVE_INDICES) {
                    for p in &peers {
                        let msg = PeerMessage::Have {
                            package,
                            indices: batch.to_vec(),
                        };
                        self.swarm.behaviour_mut().rr.send_request(p, msg);
                    }
                }
            }
            Command::Ban { peer, for_ms } => {
                tracing::warn!(peer = %peer, "banning a peer that sent a bad chunk");
                let until = self.now() + for_ms;
                self.banned.insert(peer, until);
                self.drop_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else if num_established.get() == 1 {
                    let hello = self.hello();
                    self.swarm.behaviour_mut().rr.send_request(&peer_id, hello);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "store peer left");
                self.drop_peer(&peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_rr_event(event),
            _ => {}
        }
    }

    fn accept_hello(&mut self, peer: PeerId, h: &Hello) -> bool {
        if !self.hello_matches(h) {
            tracing::warn!(peer = %peer, chain = %h.chain, store = %h.store, "peer of another chain or store; disconnecting");
            self.banned.insert(peer, self.now() + 60_000);
            let _ = self.swarm.disconnect_peer_id(peer);
            return false;
        }
        if !self.members.admits(&h.device, &peer.to_string()) {
            // A till that just joined is listed at the coordinator's next
            // answer: held (exchanging nothing) for a while, a bounded few.
            self.expire_unlisted();
            if self.unlisted.len() >= MAX_UNLISTED && !self.unlisted.contains_key(&peer) {
                let _ = self.swarm.disconnect_peer_id(peer);
                return false;
            }
            tracing::info!(peer = %peer, device = %h.device, "peer not on the store's member list (yet); holding it");
            let now = self.now();
            self.unlisted.entry(peer).or_insert((h.device, now));
            return true;
        }
        self.join(peer, h.device);
        true
    }

    /// Makes a checked peer a store peer.
    fn join(&mut self, peer: PeerId, device: DeviceId) {
        self.unlisted.remove(&peer);
        if self.hello_ok.insert(peer) {
            tracing::info!(peer = %peer, device = %device, "store peer joined");
            self.touch(&peer, |p| p.device = Some(device));
            self.send_bitfields_to(peer);
        }
    }

    /// Admits held peers the member list now names; disconnects those
    /// unlisted for longer than [`UNLISTED_GRACE_MS`].
    fn expire_unlisted(&mut self) {
        let now = self.now();
        let held: Vec<(PeerId, DeviceId, i64)> = self
            .unlisted
            .iter()
            .map(|(p, (d, since))| (*p, *d, *since))
            .collect();
        for (peer, device, since) in held {
            if self.members.admits(&device, &peer.to_string()) {
                self.join(peer, device);
            } else if now - since > UNLISTED_GRACE_MS {
                tracing::warn!(peer = %peer, device = %device, "peer not on the store's member list; disconnecting");
                self.drop_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_rr_event(&mut self, event: request_response::Event<PeerMessage, Reply>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.on_request(peer, request, channel);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending_fetch.remove(&request_id) {
                    let answer = match response {
                        Reply::Chunk {
                            data, compressed, ..
                        } => Ok(PeerAnswer::Chunk(Wire { data, compressed })),
                        Reply::Message(PeerMessage::NotHave { .. }) => Ok(PeerAnswer::NotHave),
                        Reply::Message(PeerMessage::Busy { .. }) => Ok(PeerAnswer::Busy),
                        other => Err(Error::Verify(format!(
                            "unexpected answer to a chunk request: {other:?}"
                        ))),
                    };
                    self.touch(&peer, |_| {});
                    let _ = reply.send(answer);
                    return;
                }
                match response {
                    Reply::Message(PeerMessage::Hello(h)) => {
                        self.accept_hello(peer, &h);
                    }
                    Reply::Message(PeerMessage::Bitfield { package, have }) => {
                        self.record_bitfield(&peer, package, &have);
                        if self.tracked.contains_key(&package) {
                            self.touch(&peer, |p| {
                                p.answered.insert(package);
                            });
                        }
                    }
                    _ => {}
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(peer = %peer, error = %error, "request to a peer failed");
                if let Some(reply) = self.pending_fetch.remove(&request_id) {
                    let _ = reply.send(Err(Error::Io(std::io::Error::other(format!(
                        "request to peer {peer} failed: {error}"
                    )))));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                // A frame over the cap or one that does not decode is hostile or
                // broken: drop the connection (the codec already refused to read on).
                if let request_response::InboundFailure::Io(e) = &error {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        tracing::warn!(peer = %peer, error = %e, "garbage from a peer; disconnecting");
                        self.drop_peer(&peer);
                        let _ = self.swarm.disconnect_peer_id(peer);
                        return;
                    }
                }
                tracing::debug!(peer = %peer, error = %error, "request from a peer failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn respond(&mut self, channel: ResponseChannel<Reply>, msg: PeerMessage) {
        let _ = self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, Reply::Message(msg));
    }

    fn on_request(&mut self, peer: PeerId, request: PeerMessage, channel: ResponseChannel<Reply>) {
        if self.is_banned(&peer) {
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        match request {
            PeerMessage::Hello(h) => {
                let mine = self.hello();
                if self.accept_hello(peer, &h) {
                    self.respond(channel, mine);
                }
            }
            early if !self.hello_ok.contains(&peer) => {
                // Its Hello may still be in flight on another stream: answer
                // harmlessly and record nothing. Its holdings arrive again in the
                // bitfield exchange that follows the Hello; no chunk is served yet.
                let answer = match early {
                    PeerMessage::Request { hash } => PeerMessage::NotHave { hash },
                    _ => PeerMessage::Ack,
                };
                self.respond(channel, answer);
            }
            PeerMessage::Bitfield { package, have } => {
                if have.chunk_count > 0 && !self.tracked.contains_key(&package) {
                    if self.news_heard.len() >= MAX_NEWS {
                        self.news_heard.clear();
                    }
                    if self.news_heard.insert(package) {
                        tracing::debug!(peer = %peer, %package, "a store peer took up a package this till does not track");
                        self.news.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                self.record_bitfield(&peer, package, &have);
                let mine = self.bitfield(&package).unwrap_or_else(|| Bitfield::new(0));
                self.respond(
                    channel,
                    PeerMessage::Bitfield {
                        package,
                        have: mine,
                    },
                );
            }
            PeerMessage::Have { package, indices } => {
                let count = self.tracked_len(&package);
                self.touch(&peer, |p| {
                    if count > 0 {
                        let held = indices.iter().map(|&i| i as usize).filter(|&i| i < count);
                        p.holds.entry(package).or_default().extend(held);
                    }
                });
                self.respond(channel, PeerMessage::Ack);
            }
            PeerMessage::Request { hash } => {
                let Ok(permit) = self.uploads.clone().try_acquire_owned() else {
                    self.respond(
                        channel,
                        PeerMessage::Busy {
                            hash,
                            retry_after_ms: 200,
                        },
                    );
                    return;
                };
                let store = self.store.clone();
                let done = self.upload_done.0.clone();
                tokio::spawn(async move {
                    // Opened on the blocking pool; the codec streams it and
                    // releases the upload's slot when it is sent.
                    let opened = tokio::task::spawn_blocking(move || store.open_chunk(&hash).ok())
                        .await
                        .ok()
                        .flatten();
                    let response = match opened {
                        Some((file, compressed, len)) => Reply::Upload {
                            hash,
                            file,
                            compressed,
                            len: len as usize,
                            slot: permit,
                        },
                        None => Reply::Message(PeerMessage::NotHave { hash }),
                    };
                    let _ = done.send((channel, response)).await;
                });
            }
            other => {
                tracing::debug!(peer = %peer, message = ?other, "unexpected request; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunk_data_in_flight_stays_within_the_fetch_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ChunkStore::open(dir.path()).expect("store"));
        let config = SwarmConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            psk: [1; 32],
            chain: ChainId::new("chain").expect("chain"),
            store: StoreId::new("store").expect("store"),
            device: DeviceId::from_bytes([1; 16]),
            max_uploads: 4,
            peer_subnets: Vec::new(),
            peer_ports: 1..=65535,
        };
        let key = Keypair::generate_ed25519();
        let (_stop, shutdown) = watch::channel(false);
        let (net, _task) = start(config, key, store, shutdown).await.expect("start");
        let max_chunk = tillswarm_protocol::chunking::MAX_CHUNK as u32;
        let mut held = Vec::new();
        for _ in 0..FETCH_BUDGET / max_chunk as usize {
            held.push(net.reserve(max_chunk).await.expect("room"));
        }
        let wait = Duration::from_millis(100);
        assert!(
            tokio::time::timeout(wait, net.reserve(1)).await.is_err(),
            "the budget is spent: a further chunk waits"
        );
        held.pop();
        // A chunk larger than the budget still gets all of it, once free.
        assert!(
            tokio::time::timeout(wait, net.reserve(u32::MAX))
                .await
                .is_err()
        );
        held.clear();
        assert!(
            tokio::time::timeout(wait, net.reserve(u32::MAX))
                .await
                .is_ok()
        );
    }
}
