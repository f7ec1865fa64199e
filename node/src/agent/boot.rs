//! The agent's start-up: the store swarm, peer discovery (injected, see
//! [`super::Wiring`]), and offering the store every package this till holds
//! completely.

use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Agent;
use crate::discovery::{Discovery, DiscoveryEvent, LocalAdvert};
use crate::error::Result;

/// Most held packages offered to the store after a start (newest first).
const MAX_SEEDED_PACKAGES: usize = 8;

impl Agent {
    /// Starts the store swarm if the config has a swarm key.
    pub(super) async fn start_swarm(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>> {
        let c = &self.inner.config;
        let Some(psk) = c.swarm_psk()? else {
            return Ok(None);
        };
        let key = crate::swarm::load_or_create_key(&c.data_dir)?;
        let config = crate::swarm::SwarmConfig {
            listen: c.swarm_listen,
            psk,
            chain: c.chain_id.clone(),
            store: c.store_id.clone(),
            device: c.device_id,
            max_uploads: c.max_uploads,
            peer_subnets: c.swarm_peer_subnets.clone(),
            peer_ports: c.swarm_peer_ports[0]..=c.swarm_peer_ports[1],
        };
        let (net, task) =
            crate::swarm::start(config, key, self.inner.store.clone(), shutdown.clone()).await?;
        tracing::info!(peer = %net.peer_id, addr = %net.listen_addr, "store swarm listening");
        net.set_members(self.inner.state.store_members().await?)
            .await?;
        let discovery = self.inner.discovery.lock().ok().and_then(|mut d| d.take());
        if let Some(discovery) = discovery {
            self.start_discovery(discovery, &net, shutdown);
        }
        self.seed_held_packages(&net).await;
        self.inner.ui.attach_net(net.clone());
        let _ = self.inner.net.set(net);
        Ok(Some(task))
    }

    /// Offers the store every package this till holds completely (verified
    /// manifest, every chunk present), newest first, so tills of a later task
    /// for the same package (the next rollout wave) fetch it over the LAN even
    /// after this till restarted.
    async fn seed_held_packages(&self, net: &crate::swarm::StoreNet) {
        let dir = self.inner.config.data_dir.join("manifests");
        let Ok(Some(key)) = self.online_key().await else {
            return;
        };
        let store = self.inner.store.clone();
        let held = tokio::task::spawn_blocking(move || {
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_none())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            files
                .into_iter()
                .filter_map(|(_, path)| {
                    let bytes = std::fs::read(&path).ok()?;
                    if bytes.len() > tillswarm_protocol::manifest::MAX_SIGNED_MANIFEST_BYTES {
                        return None;
                    }
                    let m = tillswarm_protocol::manifest::SignedManifest::from_bytes(&bytes)
                        .and_then(|s| s.verify(&key))
                        .ok()?;
                    m.chunks
                        .iter()
                        .all(|c| store.contains(&c.hash))
                        .then_some(m)
                })
                .take(MAX_SEEDED_PACKAGES)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for m in held {
            tracing::debug!(package = %m.package_id, version = %m.version, "offering a held package to the store");
            let hashes = m.chunks.iter().map(|c| c.hash).collect();
            if net.track(m.package_id, hashes).await.is_err() {
                return;
            }
        }
    }

    /// Advertises this node and dials every store peer `discovery` finds.
    fn start_discovery(
        &self,
        discovery: Box<dyn Discovery>,
        net: &crate::swarm::StoreNet,
        shutdown: watch::Receiver<bool>,
    ) {
        use libp2p::multiaddr::Protocol;
        let port = net
            .listen_addr
            .iter()
            .find_map(|p| match p {
                Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap_or(0);
        let advert = LocalAdvert::new(&self.inner.config, net.peer_id.to_string(), port);
        let (events, mut found) = tokio::sync::mpsc::channel(64);
        let _discovery = discovery.start(advert, events, shutdown);
        let net = net.clone();
        tokio::spawn(async move {
            while let Some(event) = found.recv().await {
                let DiscoveryEvent::Found(peer) = event else {
                    continue;
                };
                let Ok(id) = peer.peer_id.parse::<libp2p::PeerId>() else {
                    continue;
                };
                let addrs = peer
                    .addrs
                    .iter()
                    .map(|a| {
                        let ip = match a.ip() {
                            std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
                            std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
                        };
                        libp2p::Multiaddr::empty()
                            .with(ip)
                            .with(Protocol::Tcp(a.port()))
                    })
                    .collect();
                if net.add_peer(id, addrs).await.is_err() {
                    break;
                }
            }
        });
    }
}
