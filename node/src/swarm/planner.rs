//! Which chunk to fetch from where: a plain state machine with no IO, so every
//! rule is unit-tested without sockets.
//!
//! Rules:
//! - A missing chunk that some live, unbanned peer holds is fetched over the LAN,
//!   rarest first (fewest holders), from the holder with the fewest requests in
//!   flight.
//! - A chunk no peer holds has one WAN owner: rendezvous hashing of (chunk hash,
//!   peer id) over the store's live peers and this node ranks the candidates;
//!   the first is the owner. The driver decides who the live peers are: those
//!   taking part in the package, plus the task's other tills of the store that
//!   are connected but have not joined yet, until every till knows the task. Only the owner fetches it from the coordinator; the
//!   others wait for it to appear on the LAN. A peer that departs, or that has
//!   announced nothing for [`Limits::owner_stall_ms`], drops out of the ranking,
//!   so the next peer takes its chunks over. No tracker: every node computes the
//!   same ranking from the same inputs.
//! - A peer that sends bytes that fail blake3 is banned for [`Limits::ban_ms`];
//!   a busy or failed peer is skipped for a moment.

use std::collections::{HashMap, HashSet};

use tillswarm_protocol::ChunkHash;
use tillswarm_protocol::manifest::ChunkRef;

/// A peer, as an opaque stable id (the libp2p peer id's bytes).
pub type PeerKey = Vec<u8>;

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most chunk fetches over the WAN at once (this node).
    pub wan_in_flight: usize,
    /// Most chunk fetches over the LAN at once (this node).
    pub lan_in_flight: usize,
    /// Most requests in flight to one peer.
    pub per_peer_in_flight: usize,
    /// A live owner silent for this long is passed over.
    pub owner_stall_ms: i64,
    /// How long a peer that sent a bad chunk is ignored.
    pub ban_ms: i64,
    /// How long a busy or failing peer is skipped.
    pub backoff_ms: i64,
    /// No WAN fetch before this time (the swarm's clock): peers starting
    /// together first discover each other, so ownership is shared from the start.
    pub wan_start_ms: i64,
    /// How long what a departed peer held is waited for before it is
    /// fetched over the WAN.
    pub rejoin_grace_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wan_in_flight: 2,
            lan_in_flight: 8,
            per_peer_in_flight: 3,
            owner_stall_ms: 30_000,
            ban_ms: 10 * 60_000,
            backoff_ms: 500,
            wan_start_ms: 0,
            rejoin_grace_ms: 10_000,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch chunk `index` from the coordinator.
    Wan {
        /// Manifest index.
        index: usize,
    },
    /// Fetch chunk `index` from `peer`.
    Lan {
        /// Manifest index.
        index: usize,
        /// The holder.
        peer: PeerKey,
    },
}

/// How a fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and stored.
    Stored,
    /// The bytes failed blake3: ban the source (when it is a peer).
    Corrupt,
    /// The peer did not have it, timed out, or the WAN failed: try again later.
    Failed,
    /// The peer holds it but the request failed or timed out: skip it
    /// briefly and keep counting it as a holder, so the chunk is not taken
    /// over the WAN; at most [`MAX_RETRY_STREAK`] times in a row.
    Retry,
    /// The peer holds it and answered that its upload slots are all taken:
    /// it is alive and serving others, so it keeps counting as a holder
    /// however often it says so, until it has said nothing else for
    /// [`Limits::owner_stall_ms`].
    Busy,
}

#[derive(Debug, Default)]
struct PeerState {
    holds: HashSet<usize>,
    in_flight: usize,
    /// Last time it announced anything (ms).
    last_heard: i64,
    banned_until: i64,
    skip_until: i64,
    /// Retries since its last chunk: past [`MAX_RETRY_STREAK`] it counts as
    /// not holding the chunk, so a peer that only ever says busy (or never
    /// answers) cannot hold a download up.
    retry_streak: u32,
    /// Since when it has answered only "busy" (reset by a chunk from it).
    busy_since: Option<i64>,
    /// When it left, if it did: what it held is waited for during
    /// [`Limits::rejoin_grace_ms`] (a restarting till is back in seconds)
    /// instead of being fetched over the WAN at once.
    departed_at: Option<i64>,
}

/// Retries in a row from one peer before its holdings stop counting.
pub const MAX_RETRY_STREAK: u32 = 20;

/// The plan for one package.
#[derive(Debug)]
pub struct Planner {
    me: PeerKey,
    chunks: Vec<ChunkRef>,
    have: Vec<bool>,
    /// Chunk index -> where it is being fetched from (None: WAN).
    in_flight: HashMap<usize, Option<PeerKey>>,
    peers: HashMap<PeerKey, PeerState>,
    limits: Limits,
    /// Chunks whose WAN fetch failed, with when they may be tried again.
    wan_retry_at: HashMap<usize, i64>,
    /// No WAN fetch starts while set (see [`Planner::hold_wan`]).
    wan_held: bool,
}

/// The rendezvous score of `peer` for `chunk`: higher ranks first.
pub fn score(chunk: &ChunkHash, peer: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(chunk.as_bytes());
    h.update(peer);
    *h.finalize().as_bytes()
}

impl Planner {
    /// A plan for `chunks`, where `have[i]` says which are already held.
    pub fn new(me: PeerKey, chunks: Vec<ChunkRef>, have: Vec<bool>, limits: Limits) -> Self {
        Self {
            me,
            chunks,
            have,
            in_flight: HashMap::new(),
            peers: HashMap::new(),
            limits,
            wan_retry_at: HashMap::new(),
            wan_held: false,
        }
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.have.iter().all(|&h| h)
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> u64 {
        self.chunks
            .iter()
            .zip(&self.have)
            .filter(|(_, h)| **h)
            .map(|(c, _)| u64::from(c.length))
            .sum()
    }

    /// The chunk list.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// A peer joined (or is still there).
    pub fn peer_up(&mut self, peer: PeerKey, now: i64) {
        let state = self.peers.entry(peer).or_default();
        state.last_heard = now;
        state.departed_at = None;
    }

    /// Replaces what a participating peer holds (from the swarm's view) and when
    /// it was last heard from. Bans, backoffs and requests in flight are kept.
    pub fn set_peer(
        &mut self,
        peer: PeerKey,
        holds: impl IntoIterator<Item = usize>,
        last_heard: i64,
    ) {
        let n = self.chunks.len();
        let state = self.peers.entry(peer).or_default();
        state.last_heard = last_heard;
        state.departed_at = None;
        state.holds = holds.into_iter().filter(|&i| i < n).collect();
    }

    /// No WAN fetch starts before `until` (the swarm's clock).
    pub fn hold_wan_until(&mut self, until: i64) {
        self.limits.wan_start_ms = self.limits.wan_start_ms.max(until);
    }

    /// Holds WAN fetches back while `held` (e.g. until the connected peers'
    /// holdings are known); set again before each [`Planner::next`].
    pub fn hold_wan(&mut self, held: bool) {
        self.wan_held = held;
    }

    /// The peers the plan knows.
    pub fn peers(&self) -> Vec<PeerKey> {
        self.peers.keys().cloned().collect()
    }

    /// A peer left: it owns nothing from now on; what it held is waited for
    /// until `now + rejoin_grace_ms`, then forgotten.
    pub fn peer_down(&mut self, peer: &[u8], now: i64) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if state.holds.is_empty() {
            self.peers.remove(peer);
        } else if state.departed_at.is_none() {
            state.departed_at = Some(now);
        }
    }

    /// A peer announced holdings (a full bitfield or new chunks).
    pub fn peer_has(&mut self, peer: PeerKey, indices: impl IntoIterator<Item = usize>, now: i64) {
        let n = self.chunks.len();
        let state = self.peers.entry(peer).or_default();
        state.last_heard = now;
        state.departed_at = None;
        state.holds.extend(indices.into_iter().filter(|&i| i < n));
    }

    /// Another node's chunk landed here by other means (e.g. shared with another package).
    pub fn mark_held(&mut self, index: usize) {
        if let Some(h) = self.have.get_mut(index) {
            *h = true;
        }
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &[u8], now: i64) -> bool {
        self.peers.get(peer).is_some_and(|p| p.banned_until > now)
    }

    /// Live peers ranked for `index`, with this node among them; banned peers and
    /// owners silent for too long are left out.
    pub fn owners(&self, index: usize, now: i64) -> Vec<PeerKey> {
        let hash = &self.chunks[index].hash;
        let mut ranked: Vec<(&[u8], [u8; 32])> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                s.banned_until <= now
                    && s.departed_at.is_none()
                    && now - s.last_heard < self.limits.owner_stall_ms
            })
            .map(|(k, _)| (k.as_slice(), score(hash, k)))
            .collect();
        ranked.push((self.me.as_slice(), score(hash, &self.me)));
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked.into_iter().map(|(k, _)| k.to_vec()).collect()
    }

    /// The next fetches to start, within the limits.
    pub fn next(&mut self, now: i64) -> Vec<Action> {
        let grace = self.limits.rejoin_grace_ms;
        self.peers
            .retain(|_, s| s.departed_at.is_none_or(|t| now - t < grace));
        let mut actions = Vec::new();
        let mut lan = self.in_flight.values().filter(|p| p.is_some()).count();
        let mut wan = self.in_flight.len() - lan;
        // Holders per missing chunk, for rarest-first.
        let mut wanted: Vec<(usize, Vec<PeerKey>)> = (0..self.chunks.len())
            .filter(|i| !self.have[*i] && !self.in_flight.contains_key(i))
            .map(|i| {
                let holders = self
                    .peers
                    .iter()
                    .filter(|(_, s)| s.holds.contains(&i) && s.banned_until <= now)
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>();
                (i, holders)
            })
            .collect();
        wanted.sort_by_key(|(i, holders)| (holders.is_empty(), holders.len(), *i));
        for (index, holders) in wanted {
            // A holder skipped for a moment (busy) or gone for a moment (a
            // restart) still holds it: wait.
            let holders: Vec<PeerKey> = if holders.is_empty() {
                holders
            } else {
                let ready: Vec<PeerKey> = holders
                    .into_iter()
                    .filter(|k| {
                        self.peers
                            .get(k)
                            .is_some_and(|s| s.skip_until <= now && s.departed_at.is_none())
                    })
                    .collect();
                if ready.is_empty() {
                    continue;
                }
                ready
            };
            if !holders.is_empty() {
                if lan >= self.limits.lan_in_flight {
                    continue;
                }
                let best = holders
                    .into_iter()
                    .filter(|k| {
                        self.peers
                            .get(k)
                            .is_some_and(|s| s.in_flight < self.limits.per_peer_in_flight)
                    })
                    .min_by_key(|k| {
                        (
                            self.peers.get(k).map_or(0, |s| s.in_flight),
                            score(&self.chunks[index].hash, k),
                        )
                    });
                if let Some(peer) = best {
                    if let Some(s) = self.peers.get_mut(&peer) {
                        s.in_flight += 1;
                    }
                    self.in_flight.insert(index, Some(peer.clone()));
                    lan += 1;
                    actions.push(Action::Lan { index, peer });
                }
                continue;
            }
            // Nobody holds it: only its owner fetches it over the WAN, and not
            // before peers had a moment to find each other.
            if now < self.limits.wan_start_ms
                || self.wan_held
                || wan >= self.limits.wan_in_flight
                || self.wan_retry_at.get(&index).is_some_and(|&t| t > now)
            {
                continue;
            }
            if self.owners(index, now).first() == Some(&self.me) {
                self.in_flight.insert(index, None);
                wan += 1;
                actions.push(Action::Wan { index });
            }
        }
        actions
    }

    /// Records how a fetch of `index` ended.
    pub fn finished(&mut self, index: usize, outcome: Outcome, now: i64) {
        let source = self.in_flight.remove(&index).flatten();
        if let Some(peer) = &source {
            if let Some(s) = self.peers.get_mut(peer) {
                s.in_flight = s.in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Stored => {
                        s.retry_streak = 0;
                        s.busy_since = None;
                    }
                    Outcome::Corrupt => {
                        s.banned_until = now + self.limits.ban_ms;
                        s.holds.clear();
                    }
                    Outcome::Failed => {
                        s.skip_until = now + self.limits.backoff_ms;
                        // It may not hold it after all (NotHave); it will announce again.
                        s.holds.remove(&index);
                    }
                    Outcome::Retry => {
                        s.skip_until = now + self.limits.backoff_ms;
                        s.retry_streak += 1;
                        if s.retry_streak > MAX_RETRY_STREAK {
                            s.holds.remove(&index);
                        }
                    }
                    Outcome::Busy => {
                        s.skip_until = now + self.limits.backoff_ms;
                        let since = *s.busy_since.get_or_insert(now);
                        if now - since >= self.limits.owner_stall_ms {
                            s.holds.remove(&index);
                        }
                    }
                }
            }
        } else if outcome != Outcome::Stored {
            self.wan_retry_at
                .insert(index, now + self.limits.backoff_ms);
        }
        if outcome == Outcome::Stored {
            self.have[index] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                hash: ChunkHash::of(&i.to_le_bytes()),
                length: 1000,
                zstd_len: 0,
            })
            .collect()
    }

    fn peer(n: u8) -> PeerKey {
        vec![n; 8]
    }

    #[test]
    fn alone_a_node_fetches_everything_over_the_wan_within_limits() {
        let mut p = Planner::new(peer(0), chunks(5), vec![false; 5], Limits::default());
        let first = p.next(0);
        assert_eq!(first.len(), 2, "WAN limit");
        assert!(first.iter().all(|a| matches!(a, Action::Wan { .. })));
        for a in first {
            if let Action::Wan { index } = a {
                p.finished(index, Outcome::Stored, 1);
            }
        }
        assert_eq!(p.bytes_held(), 2000);
        while !p.is_complete() {
            for a in p.next(2) {
                if let Action::Wan { index } = a {
                    p.finished(index, Outcome::Stored, 2);
                }
            }
        }
    }

    #[test]
    fn every_chunk_has_exactly_one_wan_owner_among_the_store() {
        let ids: Vec<PeerKey> = (0..10).map(peer).collect();
        let n = 200;
        let mut owners = vec![0usize; n];
        for me in &ids {
            let mut p = Planner::new(
                me.clone(),
                chunks(n),
                vec![false; n],
                Limits {
                    wan_in_flight: n,
                    ..Limits::default()
                },
            );
            for other in ids.iter().filter(|o| *o != me) {
                p.peer_up(other.clone(), 0);
            }
            for a in p.next(0) {
                match a {
                    Action::Wan { index } => owners[index] += 1,
                    Action::Lan { .. } => panic!("nobody holds anything yet"),
                }
            }
        }
        assert!(owners.iter().all(|&o| o == 1), "{owners:?}");
    }

    #[test]
    fn held_chunks_come_from_the_lan_rarest_first_and_owners_wait() {
        let n = 4;
        let mut p = Planner::new(
            peer(0),
            chunks(n),
            vec![false; n],
            Limits {
                wan_in_flight: n,
                ..Limits::default()
            },
        );
        p.peer_up(peer(1), 0);
        p.peer_up(peer(2), 0);
        p.peer_has(peer(1), [0, 1], 0);
        p.peer_has(peer(2), [1], 0);
        let actions = p.next(0);
        // Chunk 0 (one holder) before chunk 1 (two holders).
        assert_eq!(
            actions[0],
            Action::Lan {
                index: 0,
                peer: peer(1)
            }
        );
        assert!(matches!(&actions[1], Action::Lan { index: 1, .. }));
        // Chunks 2 and 3: nobody has them; we fetch only those we own.
        let wan: Vec<usize> = actions
            .iter()
            .filter_map(|a| {
                if let Action::Wan { index } = a {
                    Some(*index)
                } else {
                    None
                }
            })
            .collect();
        for i in 2..n {
            let we_own = p.owners(i, 0).first() == Some(&peer(0));
            assert_eq!(wan.contains(&i), we_own, "chunk {i}");
        }
    }

    #[test]
    fn a_departed_owner_hands_its_chunks_to_the_next_peer() {
        let n = 64;
        let me = peer(0);
        let mut p = Planner::new(
            me.clone(),
            chunks(n),
            vec![false; n],
            Limits {
                wan_in_flight: n,
                ..Limits::default()
            },
        );
        p.peer_up(peer(1), 0);
        let ours_before = p.next(0).len();
        assert!(ours_before > 0 && ours_before < n);
        // Peer 1 leaves: everything becomes ours.
        p.peer_down(&peer(1), 1);
        let ours_after = p.next(1).len();
        assert_eq!(ours_before + ours_after, n);
    }

    #[test]
    fn a_silent_owner_is_passed_over_after_the_stall_time() {
        let n = 32;
        let limits = Limits {
            wan_in_flight: n,
            owner_stall_ms: 1000,
            ..Limits::default()
        };
        let mut p = Planner::new(peer(0), chunks(n), vec![false; n], limits);
        p.peer_up(peer(1), 0);
        let mine = p.next(0).len();
        assert!(p.next(999).is_empty(), "still waiting for the owner");
        let taken_over = p.next(1000).len();
        assert_eq!(mine + taken_over, n);
    }

    #[test]
    fn a_corrupt_chunk_bans_the_peer_and_the_chunk_is_fetched_elsewhere() {
        let mut p = Planner::new(peer(0), chunks(1), vec![false], Limits::default());
        p.peer_up(peer(1), 0);
        p.peer_up(peer(2), 0);
        p.peer_has(peer(1), [0], 0);
        assert_eq!(
            p.next(0),
            vec![Action::Lan {
                index: 0,
                peer: peer(1)
            }]
        );
        p.finished(0, Outcome::Corrupt, 5);
        assert!(p.is_banned(&peer(1), 6));
        p.peer_has(peer(1), [0], 6); // its lies are ignored while banned
        p.peer_has(peer(2), [0], 6);
        assert_eq!(
            p.next(6),
            vec![Action::Lan {
                index: 0,
                peer: peer(2)
            }]
        );
        p.finished(0, Outcome::Stored, 7);
        assert!(p.is_complete());
    }

    #[test]
    fn a_busy_or_briefly_gone_holder_is_waited_for_not_bypassed_over_the_wan() {
        let limits = Limits {
            backoff_ms: 100,
            ..Limits::default()
        };
        let mut p = Planner::new(peer(0), chunks(1), vec![false], limits);
        p.peer_has(peer(1), [0], 0);
        let lan = vec![Action::Lan {
            index: 0,
            peer: peer(1),
        }];
        assert_eq!(p.next(0), lan);
        p.finished(0, Outcome::Retry, 10);
        assert!(p.next(50).is_empty(), "no WAN while the holder is busy");
        let mut now = 10;
        // Asked again after each back-off; a holder that only ever says busy
        // stops counting as one.
        for _ in 0..MAX_RETRY_STREAK {
            now += 100;
            assert_eq!(p.next(now), lan, "asked again after the back-off");
            p.finished(0, Outcome::Retry, now);
        }
        // Then the chunk comes over the WAN: now if this node owns it, else
        // once the silent owner is passed over.
        let mut after = p.next(now + 100);
        if after.is_empty() {
            after = p.next(now + limits.owner_stall_ms);
        }
        assert_eq!(after, vec![Action::Wan { index: 0 }]);

        // "Busy" is not a failure: a holder serving others keeps its
        // holdings however many times it says so, until it has said only
        // that for the stall time.
        let mut p = Planner::new(peer(0), chunks(1), vec![false], limits);
        p.peer_has(peer(1), [0], 0);
        let mut now = 0;
        for _ in 0..(3 * MAX_RETRY_STREAK) {
            assert_eq!(p.next(now), lan, "a busy holder is asked again");
            p.finished(0, Outcome::Busy, now);
            p.peer_has(peer(1), [0], now);
            now += 100;
        }
        now = limits.owner_stall_ms;
        assert_eq!(p.next(now), lan);
        p.finished(0, Outcome::Busy, now);
        assert_eq!(
            p.next(now + 100),
            vec![Action::Wan { index: 0 }],
            "only busy for the whole stall time: over the WAN"
        );

        // A holder that leaves is waited for a moment (a restart), and used
        // again when it is back.
        let mut p = Planner::new(peer(0), chunks(1), vec![false], limits);
        p.peer_has(peer(1), [0], 0);
        p.peer_down(&peer(1), 10);
        assert!(p.next(11).is_empty(), "no WAN while it may come back");
        p.set_peer(peer(1), [0], 500);
        assert_eq!(p.next(500), lan);
        p.finished(0, Outcome::Retry, 600);
        p.peer_down(&peer(1), 600);
        assert!(p.next(600 + limits.rejoin_grace_ms - 1).is_empty());
        assert_eq!(
            p.next(600 + limits.rejoin_grace_ms),
            vec![Action::Wan { index: 0 }],
            "gone for good: over the WAN"
        );
    }

    #[test]
    fn failures_back_off_and_retry() {
        let limits = Limits {
            backoff_ms: 100,
            ..Limits::default()
        };
        let mut p = Planner::new(peer(0), chunks(1), vec![false], limits);
        assert_eq!(p.next(0), vec![Action::Wan { index: 0 }]);
        p.finished(0, Outcome::Failed, 10);
        assert!(p.next(50).is_empty());
        assert_eq!(p.next(110), vec![Action::Wan { index: 0 }]);
    }
}
