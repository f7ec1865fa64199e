//! Simulated links for tests, demos and benches on one machine, named as
//! such: a store's WAN link as a token bucket its tills share
//! ([`SimulatedWanLink`]), and the store's LAN as a [`Discovery`] that stands
//! in for mDNS ([`SimulatedLan`]). Nothing in a real node uses this module.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tillswarm_protocol::manifest::ChunkRef;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::chunks::Wire;
use crate::client::{CoordinatorClient, RateLimiter};
use crate::discovery::{Discovery, DiscoveryEvent, LocalAdvert, PeerInfo};
use crate::error::Result;
use crate::stage::{ChunkSource, Origin};

/// One store's WAN link, simulated: every till of the store fetches chunks
/// from the coordinator (as itself, with its own client) through this one
/// token bucket, so together they get the link's bandwidth, as behind a real
/// store router. Heartbeats and manifests (small) pass freely.
pub struct SimulatedWanLink {
    link: Arc<RateLimiter>,
}

impl SimulatedWanLink {
    /// A link of `kbit` kbit/s.
    pub fn new(kbit: u64) -> Self {
        Self {
            link: Arc::new(RateLimiter::kbit(kbit.max(1))),
        }
    }

    /// The link's token bucket (to send other traffic through the same link).
    pub fn bucket(&self) -> &Arc<RateLimiter> {
        &self.link
    }

    /// A till's chunk source through this link: `client` (the till's own)
    /// fetches, after the link lets the bytes pass.
    pub fn source(&self, client: CoordinatorClient) -> Arc<dyn ChunkSource> {
        Arc::new(ThroughLink {
            client,
            link: self.link.clone(),
        })
    }
}

struct ThroughLink {
    client: CoordinatorClient,
    link: Arc<RateLimiter>,
}

impl ChunkSource for ThroughLink {
    fn fetch<'a>(&'a self, chunk: &'a ChunkRef) -> BoxFuture<'a, Result<(Wire, Origin)>> {
        Box::pin(async move {
            let wire = self.client.chunk(chunk).await?;
            // The link carries the bytes as sent.
            self.link.acquire(wire.data.len()).await;
            Ok((wire, Origin::Wan))
        })
    }
}

/// How often a node of a [`SimulatedLan`] hears of its store's other nodes
/// again (mDNS re-announces too, so a peer that restarted is found again).
const LAN_ANNOUNCE: Duration = Duration::from_secs(2);

/// A store LAN, simulated for nodes in one process: it stands in for mDNS.
/// Each node's [`Discovery`] (from [`SimulatedLan::discovery`]) joins it and
/// hears of every other joined node of the same chain and store, at `ip` and
/// its advertised port, at once and every [`LAN_ANNOUNCE`]; a node that stops
/// leaves it, and the others hear it was lost. One value for tests, the demo
/// and the bench.
#[derive(Clone)]
pub struct SimulatedLan {
    ip: IpAddr,
    nodes: Arc<Mutex<Vec<LocalAdvert>>>,
}

impl SimulatedLan {
    /// A LAN whose nodes listen on `ip` (e.g. 127.0.0.1).
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            nodes: Arc::default(),
        }
    }

    /// A LAN of nodes on loopback.
    pub fn loopback() -> Self {
        Self::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }

    /// One node's way onto this LAN.
    pub fn discovery(&self) -> Box<dyn Discovery> {
        Box::new(self.clone())
    }

    /// The other nodes `me` hears of.
    fn neighbours(&self, me: &LocalAdvert) -> Vec<PeerInfo> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter(|n| n.peer_id != me.peer_id && n.chain == me.chain && n.store == me.store)
            .map(|n| PeerInfo {
                peer_id: n.peer_id.clone(),
                device: Some(n.device),
                addrs: vec![SocketAddr::new(self.ip, n.port)],
            })
            .collect()
    }

    fn join(&self, me: &LocalAdvert) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n| n.peer_id != me.peer_id);
        nodes.push(me.clone());
    }

    fn leave(&self, me: &LocalAdvert) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n| n.peer_id != me.peer_id || n.port != me.port);
    }
}

impl Discovery for SimulatedLan {
    fn start(
        self: Box<Self>,
        me: LocalAdvert,
        events: mpsc::Sender<DiscoveryEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            self.join(&me);
            let mut heard: Vec<String> = Vec::new();
            loop {
                let now = self.neighbours(&me);
                let lost = heard
                    .iter()
                    .filter(|id| !now.iter().any(|p| &p.peer_id == *id))
                    .map(|id| DiscoveryEvent::Lost {
                        peer_id: id.clone(),
                    });
                let found = now.iter().cloned().map(DiscoveryEvent::Found);
                let news: Vec<_> = lost.chain(found).collect();
                heard = now.into_iter().map(|p| p.peer_id).collect();
                for event in news {
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => break,
                        sent = events.send(event) => if sent.is_err() { break },
                    }
                }
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = events.closed() => break,
                    _ = tokio::time::sleep(LAN_ANNOUNCE) => {}
                }
            }
            self.leave(&me);
        })
    }
}
