//! Polls that change nothing skip the write path. A till repeats its
//! heartbeat every poll; most carry exactly what the last one did. Such a
//! heartbeat, within [`REFRESH_MS`] of the last one written for its till,
//! is answered from one read (the device token, the till's instruction
//! revision, whether an install of it awaits confirmation) without writing:
//! no write transaction, no WAL growth, no group commit to wait for. Anything
//! different (version, state, addresses, free disk beyond [`DISK_STEP`],
//! warnings), new instructions, an install to confirm, or a minute since the
//! last write takes the full path, which also refreshes `last_seen_ms`: so a
//! till's last contact is at most a minute old (the panel shows a till
//! offline after two). The read also checks the database, not this memory,
//! for what another process may have changed: a till removed and imported
//! again (never seen), a reset key (its token fails), an approval or new
//! work (a new revision).

use std::collections::HashMap;
use std::sync::Mutex;

use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::HeartbeatRequest;

/// An unchanged heartbeat is still written once this long after the last
/// write for its till (ms), refreshing its last contact.
pub const REFRESH_MS: i64 = 60_000;

/// Free disk counts as changed when it moves into another step of this many
/// bytes (a till's logs grow a little every minute; the panel shows GiB).
pub const DISK_STEP: u64 = 64 << 20;

/// What a heartbeat would write, reduced to a hash.
pub(crate) fn fingerprint(req: &HeartbeatRequest, seen_ip: Option<&str>) -> [u8; 16] {
    let view = (
        &req.version,
        req.state,
        req.ip.as_deref().or(seen_ip),
        &req.peer_id,
        req.free_disk_bytes.map(|b| b / DISK_STEP),
        &req.warnings,
        &req.swarm_addrs,
        req.connected_peers,
    );
    // serde_json of a tuple of plain values cannot fail; an empty
    // fingerprint would only make every heartbeat look unchanged from it.
    let bytes = serde_json::to_vec(&view).unwrap_or_default();
    let hash = blake3::hash(&bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

/// How a heartbeat compares with the last one written for its till.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Written less than [`REFRESH_MS`] ago with the same fingerprint: a
    /// read answers it.
    Quiet,
    /// Same fingerprint, written [`REFRESH_MS`] or more ago: its last
    /// contact is due to be written (`devices::refresh`).
    Due,
    /// Never written by this process, or something changed: the full path.
    Changed,
}

/// The last heartbeat written per till, in this process.
#[derive(Default)]
pub(crate) struct QuietPolls {
    written: Mutex<HashMap<DeviceId, ([u8; 16], i64)>>,
}

impl QuietPolls {
    /// How `device`'s heartbeat with `fingerprint` at `now_ms` compares with
    /// its last written one.
    pub(crate) fn seen(&self, device: DeviceId, fingerprint: [u8; 16], now_ms: i64) -> Seen {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&device) {
            Some((fp, at)) if *fp == fingerprint => {
                if (0..REFRESH_MS).contains(&(now_ms - at)) {
                    Seen::Quiet
                } else {
                    Seen::Due
                }
            }
            _ => Seen::Changed,
        }
    }

    /// Notes a heartbeat written for `device` at `now_ms`.
    pub(crate) fn wrote(&self, device: DeviceId, fingerprint: [u8; 16], now_ms: i64) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device, (fingerprint, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillswarm_protocol::api::DeviceState;

    fn req() -> HeartbeatRequest {
        HeartbeatRequest {
            device_id: "71110000-0000-0000-0000-000000000001"
                .parse()
                .expect("guid"),
            version: Some("1.0.0".parse().expect("version")),
            state: DeviceState::Ready,
            ip: None,
            peer_id: Some("peer".into()),
            free_disk_bytes: Some(10 << 30),
            known_revision: Some(3),
            warnings: vec![],
            swarm_addrs: vec![],
            connected_peers: Some(2),
        }
    }

    #[test]
    fn what_is_written_decides_the_fingerprint_and_nothing_else() {
        let base = fingerprint(&req(), Some("10.0.0.5"));
        let mut same = req();
        same.known_revision = Some(9); // answered, never written
        same.free_disk_bytes = Some((10 << 30) + (1 << 20)); // within one step
        assert_eq!(fingerprint(&same, Some("10.0.0.5")), base);
        let changes: [fn(&mut HeartbeatRequest); 8] = [
            |r| r.version = Some("1.0.1".parse().expect("v")),
            |r| r.state = DeviceState::Downloading,
            |r| r.ip = Some("10.0.0.6".into()),
            |r| r.peer_id = None,
            |r| r.free_disk_bytes = Some(9 << 30),
            |r| r.warnings = vec!["unsigned drop-in".into()],
            |r| r.swarm_addrs = vec!["10.0.0.5:7782".parse().expect("addr")],
            |r| r.connected_peers = Some(3),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut r = req();
            change(&mut r);
            assert_ne!(fingerprint(&r, Some("10.0.0.5")), base, "change {i}");
        }
        assert_ne!(fingerprint(&req(), Some("10.0.0.6")), base, "seen address");
    }

    #[test]
    fn an_unchanged_heartbeat_is_quiet_within_the_refresh_interval_then_due() {
        let q = QuietPolls::default();
        let d = req().device_id;
        let fp = fingerprint(&req(), None);
        assert_eq!(q.seen(d, fp, 1_000), Seen::Changed, "never written");
        q.wrote(d, fp, 1_000);
        assert_eq!(q.seen(d, fp, 1_000 + REFRESH_MS - 1), Seen::Quiet);
        assert_eq!(q.seen(d, fp, 1_000 + REFRESH_MS), Seen::Due);
        assert_eq!(q.seen(d, fp, 999), Seen::Due, "a clock that went back");
        assert_eq!(q.seen(d, [0; 16], 2_000), Seen::Changed);
    }
}
