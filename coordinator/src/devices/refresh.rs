//! The refresh of an unchanged heartbeat: a till that repeats the heartbeat
//! last written for it, past the quiet window (see
//! `service::quiet_polls`), needs only its last contact and the values
//! that vary without counting as a change written. [`refresh_many`] writes
//! them for many tills in one statement whose conditions are everything the
//! full path would otherwise act on: a valid token, the revision the till
//! holds, the same version, state, peer id and swarm addresses as stored,
//! no version flag to set or clear, and no install waiting for the till's
//! version. A till for which any of them does not hold is not written and
//! takes the full path. On PostgreSQL the most common write of steady state
//! so costs a share of one round trip, not seven.

use std::collections::HashSet;

use serde::Serialize;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::HeartbeatRequest;

use crate::db::json_rows;
use crate::db::sql::{Transaction, params};

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

/// One till's unchanged heartbeat, due to be written ([`refresh_many`]).
pub struct Refresh {
    device: DeviceId,
    known: i64,
    columns: Columns,
    connected_peers: Option<u32>,
    peer_id: Option<String>,
    token_hash: String,
}

impl Refresh {
    /// The refresh `req` asks for with `token`, seen from `seen_ip`; `None`
    /// when it cannot be one (no revision held, not a device token), so the
    /// heartbeat takes the full path.
    pub fn of(token: &str, req: &HeartbeatRequest, seen_ip: Option<String>) -> Option<Self> {
        let known = i64::try_from(req.known_revision?).ok()?;
        if !is_device_token(token) {
            return None;
        }
        Some(Self {
            device: req.device_id,
            known,
            columns: Columns::of(req, seen_ip),
            connected_peers: req.connected_peers,
            peer_id: req.peer_id.clone(),
            token_hash: secret_hash(token),
        })
    }
}

/// A refresh as one element of the statement's JSON parameter.
#[derive(Serialize)]
struct Row<'a> {
    g: String,
    r: i64,
    v: &'a Option<String>,
    s: &'a Option<String>,
    p: &'a Option<String>,
    ip: &'a Option<String>,
    d: Option<i64>,
    w: &'a str,
    c: Option<u32>,
    a: &'a Option<String>,
    h: &'a str,
}

/// The columns of the rows `v` the refresh reads (see [`crate::db::json_rows`]).
const ROWS: [(&str, &str); 11] = [
    ("g", "text"),
    ("r", "bigint"),
    ("v", "text"),
    ("s", "text"),
    ("p", "text"),
    ("ip", "text"),
    ("d", "bigint"),
    ("w", "text"),
    ("c", "bigint"),
    ("a", "text"),
    ("h", "text"),
];

/// Writes, in one statement, the last contact of each till in `refreshes`
/// whose heartbeat changes nothing the full path acts on; `false` at a
/// position (nothing written) sends that heartbeat down the full path, as
/// does a till that appears twice (all but its first).
pub fn refresh_many(tx: &Transaction<'_>, refreshes: &[Refresh], now_ms: i64) -> Result<Vec<bool>> {
    let mut firsts = HashSet::new();
    let rows: Vec<Row<'_>> = refreshes
        .iter()
        .filter(|f| firsts.insert(f.device))
        .map(|f| Row {
            g: f.device.to_string(),
            r: f.known,
            v: &f.columns.version,
            s: &f.columns.state,
            p: &f.peer_id,
            ip: &f.columns.ip,
            d: f.columns.free_disk,
            w: &f.columns.warnings,
            c: f.connected_peers,
            a: &f.columns.swarm_addrs,
            h: &f.token_hash,
        })
        .collect();
    let rows = serde_json::to_string(&rows)
        .map_err(|e| crate::error::Error::Internal(format!("refresh rows: {e}")))?;
    let sql = format!("{} {REFRESH}", json_rows(tx, &ROWS));
    let written: HashSet<String> = tx
        .prepare_cached(&sql)?
        .query_map(params![rows, now_ms], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut firsts = HashSet::new();
    Ok(refreshes
        .iter()
        .map(|f| firsts.insert(f.device) && written.contains(&f.device.to_string()))
        .collect())
}

/// The refresh of the rows `v`; its guards are everything the full path
/// acts on (see the module's doc).
const REFRESH: &str = "UPDATE devices SET ip = v.ip, free_disk = v.d, warnings = v.w,
        connected_peers = v.c, last_seen_ms = ?2
    FROM v
    WHERE devices.guid = v.g AND devices.assign_rev = v.r
      AND devices.last_seen_ms IS NOT NULL
      AND devices.approved = 1 AND devices.public_key IS NOT NULL
      AND devices.version IS NOT DISTINCT FROM v.v AND devices.state IS NOT DISTINCT FROM v.s
      AND devices.peer_id IS NOT DISTINCT FROM v.p
      AND devices.swarm_addrs IS NOT DISTINCT FROM v.a
      AND devices.version_flag IS NOT DISTINCT FROM
          (CASE WHEN devices.version_key > (SELECT max(version_key) FROM packages)
                THEN 'unknown_version' END)
      AND EXISTS (SELECT 1 FROM device_tokens k
                  WHERE k.hash = v.h AND k.device = devices.guid AND k.expires_ms > ?2)
      AND NOT EXISTS (SELECT 1 FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
                      WHERE tt.device = devices.guid AND t.kind <> 'download'
                        AND t.status = 'running'
                        AND tt.state IN ('installing', 'rebooting'))
    RETURNING devices.guid";

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
        let (token, req) = till(&tx, 7);
        tx.commit().expect("commit");
        Seen { conn, token, req }
    }

    /// Till `n`, approved, logged in and seen once at 1,000 ms: its token
    /// and the heartbeat it repeats.
    fn till(tx: &Transaction<'_>, n: u8) -> (String, HeartbeatRequest) {
        let device = DeviceId::from_bytes([n; 16]);
        tx.execute(
            "INSERT INTO devices (guid, in_registry, approved) VALUES (?1, 1, 1)",
            [device.to_string()],
        )
        .expect("device");
        let key = SecretKey::from_seed([n; 32]).public();
        let token = login(tx, &device, &key, None, DAY_MS, 0)
            .expect("login")
            .token
            .expect("token");
        let req = HeartbeatRequest {
            device_id: device,
            version: Some("2.0.0".parse().expect("version")),
            state: DeviceState::Ready,
            ip: Some("10.0.0.5".into()),
            peer_id: Some(format!("peer{n}")),
            free_disk_bytes: Some(10 << 30),
            known_revision: None,
            warnings: vec![],
            swarm_addrs: vec!["10.0.0.5:7782".parse().expect("addr")],
            connected_peers: Some(2),
        };
        let rev = record_heartbeat(tx, &req, None, 1_000)
            .expect("heartbeat")
            .assign_rev;
        let req = HeartbeatRequest {
            known_revision: Some(rev),
            ..req
        };
        (token, req)
    }

    fn refresh(s: &mut Seen, req: &HeartbeatRequest, token: &str) -> bool {
        let Some(one) = Refresh::of(token, req, None) else {
            return false;
        };
        let tx = s.conn.transaction().expect("tx");
        let written = refresh_many(&tx, &[one], 90_000).expect("refresh");
        tx.commit().expect("commit");
        written == [true]
    }

    fn last_seen(conn: &Connection) -> Vec<Option<i64>> {
        conn.prepare("SELECT last_seen_ms FROM devices ORDER BY guid")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn a_batch_answers_each_till_on_its_own() {
        let mut s = seen();
        let tx = s.conn.transaction().expect("tx");
        let (other_token, other) = till(&tx, 8);
        let (third_token, third) = till(&tx, 9);
        tx.commit().expect("commit");
        let one = |token: &str, req: &HeartbeatRequest| Refresh::of(token, req, None).expect("one");
        let batch = [
            one(&s.token, &s.req),
            one(
                &other_token,
                &HeartbeatRequest {
                    state: DeviceState::Downloading,
                    ..other.clone()
                },
            ),
            one(&third_token, &third),
            one(&s.token, &s.req),
        ];
        let tx = s.conn.transaction().expect("tx");
        let written = refresh_many(&tx, &batch, 90_000).expect("refresh");
        tx.commit().expect("commit");
        assert_eq!(
            written,
            [true, false, true, false],
            "written, changed, written, the same till again"
        );
        assert_eq!(
            last_seen(&s.conn),
            [Some(90_000), Some(1_000), Some(90_000)]
        );
        let tx = s.conn.transaction().expect("tx");
        assert!(refresh_many(&tx, &[], 95_000).expect("none").is_empty());
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
