//! The refresh of an unchanged heartbeat: a till that repeats the heartbeat
//! last written for it, past the quiet window (see
//! `service::quiet_polls`), needs only its last contact and the values
//! that vary without counting as a change written. [`refresh_unchanged`]
//! does that in one statement whose conditions are everything the full
//! path would otherwise act on: a valid token, the revision the till holds,
//! the same version, state, peer id and swarm addresses as stored, no
//! version flag to set or clear, and no install waiting for the till's
//! version. When any of them does not hold it writes nothing and the
//! caller takes the full path. On PostgreSQL this turns the most common
//! write of steady state from seven round trips into one.

use crate::db::sql::{Transaction, params};
use tillswarm_protocol::api::HeartbeatRequest;

use crate::auth::secret_hash;
use crate::device_auth::is_device_token;
use crate::error::Result;

/// The columns a heartbeat writes to its till's row, as stored.
pub(crate) struct Columns {
    pub version: Option<String>,
    pub version_key: Option<String>,
    pub state: Option<String>,
    pub ip: Option<String>,
    pub free_disk: Option<i64>,
    pub warnings: String,
    pub swarm_addrs: Option<String>,
}

impl Columns {
    /// What `req` (seen from `seen_ip`) writes.
    pub(crate) fn of(req: &HeartbeatRequest, seen_ip: Option<String>) -> Self {
        Self {
            version: req.version.as_ref().map(|v| v.as_str().to_owned()),
            version_key: req.version.as_ref().map(|v| v.sort_key()),
            state: serde_json::to_value(req.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            ip: req.ip.clone().or(seen_ip),
            free_disk: req.free_disk_bytes.map(|b| b.min(i64::MAX as u64) as i64),
            warnings: serde_json::to_string(&req.warnings).unwrap_or_else(|_| "[]".into()),
            swarm_addrs: (!req.swarm_addrs.is_empty())
                .then(|| serde_json::to_string(&req.swarm_addrs).ok())
                .flatten(),
        }
    }
}

/// Writes the last contact of a till whose heartbeat changes nothing the
/// full path acts on; `false` (nothing written) sends it down the full path.
pub fn refresh_unchanged(
    tx: &Transaction<'_>,
    token: &str,
    req: &HeartbeatRequest,
    seen_ip: Option<String>,
    now_ms: i64,
) -> Result<bool> {
    let Some(known) = req.known_revision else {
        return Ok(false);
    };
    if !is_device_token(token) || known > i64::MAX as u64 {
        return Ok(false);
    }
    let c = Columns::of(req, seen_ip);
    let written = tx
        .prepare_cached(
            "UPDATE devices SET ip = ?6, free_disk = ?7, warnings = ?8, connected_peers = ?9,
                 last_seen_ms = ?10
             WHERE guid = ?1 AND assign_rev = ?2 AND last_seen_ms IS NOT NULL
               AND approved = 1 AND public_key IS NOT NULL
               AND version IS NOT DISTINCT FROM ?3 AND state IS NOT DISTINCT FROM ?4
               AND peer_id IS NOT DISTINCT FROM ?5 AND swarm_addrs IS NOT DISTINCT FROM ?11
               AND version_flag IS NOT DISTINCT FROM
                   (CASE WHEN version_key > (SELECT max(version_key) FROM packages)
                         THEN 'unknown_version' END)
               AND EXISTS (SELECT 1 FROM device_tokens k
                           WHERE k.hash = ?12 AND k.device = devices.guid AND k.expires_ms > ?10)
               AND NOT EXISTS (SELECT 1 FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
                               WHERE tt.device = devices.guid AND t.kind <> 'download'
                                 AND t.status = 'running'
                                 AND tt.state IN ('installing', 'rebooting'))",
        )?
        .execute(params![
            req.device_id.to_string(),
            known as i64,
            c.version,
            c.state,
            req.peer_id,
            c.ip,
            c.free_disk,
            c.warnings,
            req.connected_peers,
            now_ms,
            c.swarm_addrs,
            secret_hash(token),
        ])?;
    Ok(written == 1)
}

#[cfg(test)]
mod tests {
    use tillswarm_protocol::DeviceId;
    use tillswarm_protocol::api::DeviceState;
    use tillswarm_protocol::manifest::SecretKey;

    use super::*;
    use crate::db::sql::Connection;
    use crate::device_auth::login;
    use crate::devices::record_heartbeat;

    const DAY_MS: i64 = 86_400_000;

    /// A till seen once, with its token and the heartbeat it repeats.
    struct Seen {
        conn: Connection,
        token: String,
        req: HeartbeatRequest,
    }

    fn seen() -> Seen {
        let mut conn = crate::db::test_connection();
        let device = DeviceId::from_bytes([7; 16]);
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO packages (package_id, name, version, version_key, size, chunk_count,
                                   manifest, created_ms)
             VALUES ('p2', 'pos', '2.0.0', ?1, 1, 1, ?2, 0)",
            params![
                "2.0.0"
                    .parse::<tillswarm_protocol::Version>()
                    .expect("v")
                    .sort_key(),
                vec![0u8]
            ],
        )
        .expect("package");
        tx.execute(
            "INSERT INTO devices (guid, in_registry, approved) VALUES (?1, 1, 1)",
            [device.to_string()],
        )
        .expect("device");
        let key = SecretKey::from_seed([7; 32]).public();
        let token = login(&tx, &device, &key, None, DAY_MS, 0)
            .expect("login")
            .token
            .expect("token");
        let req = HeartbeatRequest {
            device_id: device,
            version: Some("2.0.0".parse().expect("version")),
            state: DeviceState::Ready,
            ip: Some("10.0.0.5".into()),
            peer_id: Some("peer".into()),
            free_disk_bytes: Some(10 << 30),
            known_revision: None,
            warnings: vec![],
            swarm_addrs: vec!["10.0.0.5:7782".parse().expect("addr")],
            connected_peers: Some(2),
        };
        let rev = record_heartbeat(&tx, &req, None, 1_000)
            .expect("heartbeat")
            .assign_rev;
        tx.commit().expect("commit");
        let req = HeartbeatRequest {
            known_revision: Some(rev),
            ..req
        };
        Seen { conn, token, req }
    }

    fn refresh(s: &mut Seen, req: &HeartbeatRequest, token: &str) -> bool {
        let tx = s.conn.transaction().expect("tx");
        let written = refresh_unchanged(&tx, token, req, None, 90_000).expect("refresh");
        tx.commit().expect("commit");
        written
    }

    fn row(s: &Seen) -> (Option<i64>, Option<i64>, Option<i64>) {
        s.conn
            .query_row(
                "SELECT last_seen_ms, free_disk, connected_peers FROM devices",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row")
    }

    #[test]
    fn an_unchanged_heartbeat_writes_its_last_contact_and_what_may_drift() {
        let mut s = seen();
        let mut req = s.req.clone();
        req.free_disk_bytes = Some((10 << 30) - (1 << 20));
        req.connected_peers = Some(3);
        let token = s.token.clone();
        assert!(refresh(&mut s, &req, &token));
        assert_eq!(
            row(&s),
            (Some(90_000), Some((10 << 30) - (1 << 20)), Some(3))
        );
    }

    #[test]
    fn anything_the_full_path_would_act_on_sends_the_heartbeat_there() {
        type Setup = (
            &'static str,
            fn(&mut Seen, &mut HeartbeatRequest, &mut String),
        );
        let cases: [Setup; 11] = [
            ("no revision held", |_, r, _| r.known_revision = None),
            ("an older revision", |_, r, _| {
                r.known_revision = r.known_revision.map(|v| v - 1)
            }),
            ("another version", |_, r, _| {
                r.version = Some("1.0.0".parse().expect("v"))
            }),
            ("another state", |_, r, _| {
                r.state = DeviceState::Downloading
            }),
            ("another peer id", |_, r, _| r.peer_id = None),
            ("other swarm addresses", |_, r, _| r.swarm_addrs.clear()),
            ("a token of nobody", |_, _, t| {
                *t = format!("tsd_{}", "0".repeat(64))
            }),
            ("an expired token", |s, _, _| {
                s.conn
                    .execute("UPDATE device_tokens SET expires_ms = 90000", [])
                    .expect("expire");
            }),
            ("a till removed and imported again", |s, _, _| {
                s.conn
                    .execute("UPDATE devices SET last_seen_ms = NULL", [])
                    .expect("unseen");
            }),
            ("its version no longer published: flag it", |s, _, _| {
                s.conn
                    .execute("UPDATE packages SET version_key = '0'", [])
                    .expect("unpublish");
            }),
            ("an install waiting for its version", |s, _, _| {
                s.conn
                    .execute_batch(
                        "INSERT INTO tasks (id, kind, package_id, package_name, package_version,
                                            package_version_key, package_size, group_name,
                                            status, created_ms)
                         VALUES (1, 'update', 'p2', 'pos', '2.0.0', 'k', 1, 'g', 'running', 0);
                         INSERT INTO task_targets (task_id, device, state, updated_ms)
                         SELECT 1, guid, 'rebooting', 0 FROM devices;",
                    )
                    .expect("install");
            }),
        ];
        for (what, setup) in cases {
            let mut s = seen();
            let (mut req, mut token) = (s.req.clone(), s.token.clone());
            setup(&mut s, &mut req, &mut token);
            assert!(!refresh(&mut s, &req, &token), "{what}: written");
            assert_eq!(
                row(&s).0,
                if what.contains("removed") {
                    None
                } else {
                    Some(1_000)
                },
                "{what}"
            );
        }
    }
}
