//! Simulated links for demos and benches on one machine, named as such: a
//! store's WAN link as a token bucket its tills share, and the store LAN's
//! introductions (what mDNS does on a real LAN) for nodes on loopback.
//! Nothing in a real node uses this module.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tillswarm_protocol::ChunkHash;

use crate::client::{CoordinatorClient, RateLimiter};
use crate::error::Result;
use crate::stage::{ChunkSource, Origin};
use crate::swarm::StoreNet;

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
    fn fetch<'a>(
        &'a self,
        hash: &'a ChunkHash,
        len: u32,
    ) -> BoxFuture<'a, Result<(Vec<u8>, Origin)>> {
        Box::pin(async move {
            self.link.acquire(len as usize).await;
            Ok((self.client.chunk(hash, len).await?, Origin::Wan))
        })
    }
}

/// The store LAN's introductions, simulated: dials every pair of `nets` not
/// yet connected. Call it again after a node restarts.
pub async fn introduce(nets: &[StoreNet]) {
    for a in nets {
        let view = a.view();
        for b in nets.iter().filter(|b| b.peer_id != a.peer_id) {
            if !view.contains_key(&b.peer_id) {
                let _ = a.add_peer(b.peer_id, vec![b.listen_addr.clone()]).await;
            }
        }
    }
}
