//! The node's one download driver: the [`Planner`] decides, this driver
//! fetches (LAN from store peers, WAN from the coordinator), verifies through
//! the chunk store, announces each verified chunk at once so peers can relay
//! it, and bans peers that send bad bytes. Without a store swarm the planner
//! runs with zero peers: every chunk comes over the WAN, with the same limits,
//! retries and progress.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use libp2p::PeerId;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::manifest::Manifest;

use super::planner::{Action, Limits, Outcome, Planner};
use super::{PeerAnswer, StoreNet};
use crate::chunks::ChunkStore;
use crate::client::RateLimiter;
use crate::error::{Error, Result};
use crate::stage::{ChunkSource, Progress};

/// Longest wait of a download for its connected peers' answers to its
/// bitfield (their holdings) before its first WAN fetch.
pub const HOLDINGS_WAIT_MS: i64 = 1_000;
/// Least time between two copies of the peers' holdings into the plan: peers
/// announce chunks many times a second, and copying every peer's holdings
/// at each announcement cost more CPU than the plan gains from it.
const VIEW_REFRESH: Duration = Duration::from_millis(50);
/// Longest time between two such copies (time alone changes who counts:
/// the task's join-by time, the holders' wait).
const VIEW_REFRESH_MAX: Duration = Duration::from_millis(200);
/// Longest wait for one chunk from a peer before asking elsewhere.
const LAN_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for one chunk from the coordinator (a slow, capped WAN).
const WAN_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Copies of one chunk from the coordinator that may fail verification before
/// the download fails: the coordinator's copy, or the WAN path, is bad, and
/// fetching it again cannot help.
const MAX_WAN_CORRUPT: u32 = 3;

/// The store's other tills of the task, from the assignment: until `until_ms`
/// (the swarm's clock) those connected rank as WAN owners before they join.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Their GUIDs (checked against each peer's Hello).
    pub devices: HashSet<DeviceId>,
    /// When every till of the store knows the task.
    pub until_ms: i64,
    /// Tills of the store that already hold the package: until they are
    /// seen, or `holders_until_ms` passes, nothing goes over the WAN.
    pub holders: HashSet<DeviceId>,
    /// How long to wait for `holders` (the swarm's clock).
    pub holders_until_ms: i64,
}

/// What became of one planned fetch.
enum Landed {
    /// Verified and stored; its length.
    Stored(u64),
    /// The bytes failed verification.
    Corrupt(String),
    /// The chunk store failed (disk): the download stops.
    Fatal(Error),
    /// The peer does not hold it.
    NotHave,
    /// The peer is busy.
    Busy,
    /// The request failed.
    Failed(Error),
}

/// Fetches every chunk of `manifest` the store lacks, sharing with the store's
/// peers when `net` is given; `wan` is the coordinator. Calls `on_progress`
/// after each chunk lands.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_package(
    manifest: &Manifest,
    store: &Arc<ChunkStore>,
    net: Option<&StoreNet>,
    wan: &dyn ChunkSource,
    limits: Limits,
    expected: &Expected,
    lan_cap: Option<&Arc<RateLimiter>>,
    start: Progress,
    mut on_progress: impl FnMut(Progress),
) -> Result<Progress> {
    let package = manifest.package_id;
    let hashes: Vec<_> = manifest.chunks.iter().map(|c| c.hash).collect();
    if let Some(net) = net {
        net.track(package, hashes.clone()).await?;
    }
    // The swarm's clock, or one of this download's own without a swarm.
    let started = tokio::time::Instant::now();
    let now_ms = || net.map_or_else(|| started.elapsed().as_millis() as i64, |n| n.now_ms());
    let have: Vec<bool> = hashes.iter().map(|h| store.contains(h)).collect();
    let mut planner = Planner::new(
        net.map(|n| n.peer_id.to_bytes()).unwrap_or_default(),
        manifest.chunks.clone(),
        have,
        limits,
    );
    // The connected peers answer the bitfield `track` just sent within
    // moments; until then every chunk would look unowned by anyone else, and
    // a till starting after its peers would fetch its first chunks twice.
    let holdings_by = now_ms() + HOLDINGS_WAIT_MS;
    let mut progress = Progress {
        bytes_done: planner.bytes_held(),
        ..start
    };
    on_progress(progress);
    let mut in_flight = FuturesUnordered::new();
    let mut announce: Vec<u32> = Vec::new();
    let mut peer_ids: HashMap<Vec<u8>, PeerId> = HashMap::new();
    let mut wan_corrupt: HashMap<usize, u32> = HashMap::new();
    // The view's version last copied, and when.
    let mut seen: Option<u64> = None;
    let mut refreshed = tokio::time::Instant::now();
    let (mut holder_unseen, mut unanswered) = (false, false);
    let version = || net.map_or(0, StoreNet::view_version);
    loop {
        let now = now_ms();
        let since = refreshed.elapsed();
        if seen.is_none()
            || (since >= VIEW_REFRESH && seen != Some(version()))
            || since >= VIEW_REFRESH_MAX
        {
            seen = Some(version());
            refreshed = tokio::time::Instant::now();
            (holder_unseen, unanswered) =
                refresh_peers(&mut planner, net, package, expected, now, &mut peer_ids);
        }
        // A holder not seen yet (restarting, not introduced yet, or its
        // holdings not heard yet) is waited for a moment rather than its
        // package fetched again over the WAN.
        if now < expected.holders_until_ms && holder_unseen {
            planner.hold_wan_until(expected.holders_until_ms);
        }
        planner.hold_wan(now < holdings_by && unanswered);
        if planner.is_complete() && in_flight.is_empty() {
            break;
        }
        tracing::trace!(
            held = planner.bytes_held(),
            in_flight = in_flight.len(),
            "fetch loop"
        );
        for action in planner.next(now_ms()) {
            let (index, peer) = match &action {
                Action::Wan { index } => {
                    tracing::debug!(
                        index,
                        peers = planner.peers().len(),
                        "fetching a chunk this till owns over the WAN"
                    );
                    (*index, None)
                }
                Action::Lan { index, peer } => (*index, peer_ids.get(peer).copied()),
            };
            let chunk = planner.chunks()[index];
            let net = net.cloned();
            in_flight.push(async move {
                // Room for the chunk's bytes until they are on disk.
                let _room = match &net {
                    Some(net) => Some(net.reserve(chunk.length).await),
                    None => None,
                };
                // A stalled request is abandoned and the chunk planned again.
                let fetched: Result<PeerAnswer> = match peer {
                    None => tokio::time::timeout(WAN_FETCH_TIMEOUT, wan.fetch(&chunk))
                        .await
                        .unwrap_or_else(|_| Err(Error::Coordinator("chunk fetch timed out".into())))
                        .map(|(wire, _)| PeerAnswer::Chunk(wire)),
                    Some(p) => {
                        if let Some(cap) = lan_cap {
                            cap.acquire(chunk.wire_len() as usize).await;
                        }
                        match &net {
                            Some(net) => {
                                tokio::time::timeout(LAN_FETCH_TIMEOUT, net.fetch(p, chunk.hash))
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(Error::Io(std::io::Error::other(
                                            "peer did not answer in time",
                                        )))
                                    })
                            }
                            // Planned peers come from the swarm's view only.
                            None => Ok(PeerAnswer::NotHave),
                        }
                    }
                };
                // Verified and written here, so chunks of several fetches
                // reach the chunk writer together (one flush per batch).
                let landed = match fetched {
                    Ok(PeerAnswer::Chunk(wire)) => {
                        // Bytes as they travelled (a frame counts its own length).
                        let n = wire.data.len() as u64;
                        match store.store(chunk, wire).await {
                            Ok(()) => Landed::Stored(n),
                            Err(Error::Verify(why)) => Landed::Corrupt(why),
                            Err(e) => Landed::Fatal(e),
                        }
                    }
                    Ok(PeerAnswer::NotHave) => Landed::NotHave,
                    Ok(PeerAnswer::Busy) => Landed::Busy,
                    Err(e) => Landed::Failed(e),
                };
                (index, peer, landed)
            });
        }
        if let Some(net) = net.filter(|_| !announce.is_empty()) {
            net.announce(package, std::mem::take(&mut announce)).await?;
        }
        // Woken by a change of the view, at most every VIEW_REFRESH.
        let changed = async {
            match net {
                Some(net) => {
                    let notified = net.changed.notified();
                    if seen == Some(net.view_version()) {
                        notified.await;
                    }
                    tokio::time::sleep_until(refreshed + VIEW_REFRESH).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((index, peer, landed)) = in_flight.next() => {
                let chunk = planner.chunks()[index];
                let outcome = match landed {
                    Landed::Stored(n) => {
                        match peer {
                            Some(_) => progress.lan_bytes += n,
                            None => progress.wan_bytes += n,
                        }
                        Outcome::Stored
                    }
                    Landed::Corrupt(why) => {
                        tracing::warn!(chunk = %chunk.hash, peer = ?peer, %why, "bad chunk");
                        if let (Some(p), Some(net)) = (peer, net) {
                            let _ = net.ban(p, limits.ban_ms).await;
                        }
                        if peer.is_none() {
                            let n = wan_corrupt.entry(index).or_default();
                            *n += 1;
                            if *n >= MAX_WAN_CORRUPT {
                                return Err(Error::Verify(format!(
                                    "chunk {} from the coordinator failed verification {n} times: {why}",
                                    chunk.hash
                                )));
                            }
                        }
                        Outcome::Corrupt
                    }
                    Landed::Fatal(e) => return Err(e),
                    Landed::NotHave => Outcome::Failed,
                    // Busy or unreachable is not "does not hold it": wait for
                    // it (or another holder) rather than take the chunk over
                    // the WAN.
                    Landed::Busy => Outcome::Busy,
                    Landed::Failed(e) => {
                        tracing::debug!(chunk = %chunk.hash, error = %e, "chunk fetch failed");
                        if peer.is_some() { Outcome::Retry } else { Outcome::Failed }
                    }
                };
                if outcome == Outcome::Stored {
                    announce.push(index as u32);
                }
                planner.finished(index, outcome, now_ms());
                // Chunks repeated in the manifest land together.
                for (i, c) in planner.chunks().to_vec().iter().enumerate() {
                    if c.hash == chunk.hash && outcome == Outcome::Stored {
                        planner.mark_held(i);
                    }
                }
                progress.bytes_done = planner.bytes_held();
                on_progress(progress);
            }
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    if let Some(net) = net.filter(|_| !announce.is_empty()) {
        net.announce(package, announce).await?;
    }
    Ok(progress)
}

/// Copies the peers taking part in `package` from the swarm's view into the
/// plan: those holding some of it, plus the store's tills of this task that
/// have not joined yet, while they still may (they own their share of the
/// WAN work from the start); peers gone from the view are down. Returns
/// whether a holder named by the assignment is not seen yet, and whether a
/// connected peer has not answered this package's bitfield yet.
fn refresh_peers(
    planner: &mut Planner,
    net: Option<&StoreNet>,
    package: tillswarm_protocol::PackageId,
    expected: &Expected,
    now: i64,
    peer_ids: &mut HashMap<Vec<u8>, PeerId>,
) -> (bool, bool) {
    let view = net.map(StoreNet::view).unwrap_or_default();
    let mut present = Vec::new();
    for (id, pv) in &view {
        let key = id.to_bytes();
        if let Some(holds) = pv.holds.get(&package) {
            planner.set_peer(key.clone(), holds.iter().copied(), pv.last_heard_ms);
        } else if now < expected.until_ms
            && pv.device.is_some_and(|d| expected.devices.contains(&d))
        {
            planner.set_peer(key.clone(), [], now);
        } else {
            continue;
        }
        peer_ids.insert(key.clone(), *id);
        present.push(key);
    }
    for gone in planner.peers().into_iter().filter(|k| !present.contains(k)) {
        planner.peer_down(&gone, now);
    }
    let holder_unseen = expected.holders.iter().any(|d| {
        !view
            .values()
            .any(|pv| pv.device == Some(*d) && pv.holds.contains_key(&package))
    });
    let unanswered = view.values().any(|pv| !pv.answered.contains(&package));
    (holder_unseen, unanswered)
}
