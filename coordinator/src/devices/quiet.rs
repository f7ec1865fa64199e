//! The read that answers quiet polls (see `service::quiet_polls`): for each
//! till, whether its token is good, it was seen before, it already holds
//! its current instruction revision and no install awaits confirmation by
//! its version. [`read_many`] answers many tills in one statement, so on
//! PostgreSQL the most common request of steady state costs a share of one
//! round trip.

use serde::Serialize;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::HeartbeatRequest;

use crate::auth::secret_hash;
use crate::db::json_rows;
use crate::db::sql::{self, Connection, params};
use crate::device_auth::is_device_token;
use crate::error::{Error, Result};

/// One till's quiet poll, to be answered by [`read_many`].
pub struct QuietAsk {
    device: DeviceId,
    known: Option<u64>,
    token_hash: String,
}

impl QuietAsk {
    /// The read `req` asks for with `token`; `None` for a token that is not
    /// a device token (the full path says why it fails).
    pub fn of(token: &str, req: &HeartbeatRequest) -> Option<Self> {
        is_device_token(token).then(|| Self {
            device: req.device_id,
            known: req.known_revision,
            token_hash: secret_hash(token),
        })
    }
}

/// A read as one element of the statement's JSON parameter.
#[derive(Serialize)]
struct Row<'a> {
    i: usize,
    g: String,
    h: &'a str,
}

/// The columns of the rows `v` (see [`json_rows`]).
const ROWS: [(&str, &str); 3] = [("i", "bigint"), ("g", "text"), ("h", "text")];

/// The tills of `v` whose token is good at `?2`, with their revision,
/// whether they were seen and whether an install awaits their version.
const READ: &str = "SELECT v.i, d.assign_rev, d.last_seen_ms IS NOT NULL,
        EXISTS (SELECT 1 FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
                WHERE tt.device = d.guid AND t.kind <> 'download'
                  AND t.status = 'running'
                  AND tt.state IN ('installing', 'rebooting'))
    FROM v JOIN devices d ON d.guid = v.g
    WHERE d.approved = 1 AND d.public_key IS NOT NULL
      AND EXISTS (SELECT 1 FROM device_tokens k
                  WHERE k.hash = v.h AND k.device = d.guid AND k.expires_ms > ?2)";

/// The rows `v` of one poll, from bound values (`?3` on; `?1` unused).
const ONE_ROW: &str = "WITH v AS (SELECT ?3 AS i, ?4 AS g, ?5 AS h)";

/// A row of [`READ`]: the ask's index, the till's revision, whether it was
/// seen, whether an install awaits its version.
fn read_row(r: &sql::Row<'_>) -> sql::Result<(i64, i64, bool, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// For each of `asks` in order, the revision to answer with when a read
/// answers it (token good at `now_ms`, till seen before, holding that
/// revision, no install awaiting its version); `None` sends that poll down
/// the full path.
pub fn read_many(conn: &Connection, asks: &[QuietAsk], now_ms: i64) -> Result<Vec<Option<u64>>> {
    let mut answers = vec![None; asks.len()];
    let found = match asks {
        // SQLite answers in process: for the one poll it is given at a
        // time, parsing JSON would be much of the statement's work.
        [one] if !conn.is_postgres() => conn
            .prepare_cached(&format!("{ONE_ROW} {READ}"))?
            .query_map(
                params![
                    None::<String>,
                    now_ms,
                    0_i64,
                    one.device.to_string(),
                    &one.token_hash
                ],
                read_row,
            )?
            .collect::<std::result::Result<Vec<_>, _>>()?,
        _ => {
            let rows: Vec<Row<'_>> = asks
                .iter()
                .enumerate()
                .map(|(i, a)| Row {
                    i,
                    g: a.device.to_string(),
                    h: &a.token_hash,
                })
                .collect();
            let rows = serde_json::to_string(&rows)
                .map_err(|e| Error::Internal(format!("quiet poll rows: {e}")))?;
            conn.prepare_cached(&format!("{} {READ}", json_rows(conn, &ROWS)))?
                .query_map(params![rows, now_ms], read_row)?
                .collect::<std::result::Result<Vec<_>, _>>()?
        }
    };
    for (i, rev, seen, installing) in found {
        let (Some(ask), Some(answer)) = (
            usize::try_from(i).ok().and_then(|i| asks.get(i)),
            usize::try_from(i).ok().and_then(|i| answers.get_mut(i)),
        ) else {
            return Err(Error::Internal(format!("quiet poll read: no ask {i}")));
        };
        if seen && !installing && u64::try_from(rev).ok() == ask.known && ask.known.is_some() {
            *answer = ask.known;
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use tillswarm_protocol::api::DeviceState;
    use tillswarm_protocol::manifest::SecretKey;

    use super::*;
    use crate::device_auth::login;
    use crate::devices::record_heartbeat;

    /// Tills 1..=n, approved, logged in and seen once: their tokens and the
    /// heartbeats they repeat.
    fn tills(conn: &mut Connection, n: u8) -> Vec<(String, HeartbeatRequest)> {
        let tx = conn.transaction().expect("tx");
        let out = (1..=n)
            .map(|n| {
                let device = DeviceId::from_bytes([n; 16]);
                tx.execute(
                    "INSERT INTO devices (guid, in_registry, approved) VALUES (?1, 1, 1)",
                    [device.to_string()],
                )
                .expect("device");
                let key = SecretKey::from_seed([n; 32]).public();
                let token = login(&tx, &device, &key, None, 86_400_000, 0)
                    .expect("login")
                    .token
                    .expect("token");
                let req = HeartbeatRequest {
                    device_id: device,
                    version: None,
                    state: DeviceState::Ready,
                    ip: None,
                    peer_id: None,
                    free_disk_bytes: None,
                    known_revision: None,
                    warnings: vec![],
                    swarm_addrs: vec![],
                    connected_peers: None,
                };
                let rev = record_heartbeat(&tx, &req, None, 1_000)
                    .expect("heartbeat")
                    .assign_rev;
                let req = HeartbeatRequest {
                    known_revision: Some(rev),
                    ..req
                };
                (token, req)
            })
            .collect();
        tx.commit().expect("commit");
        out
    }

    #[test]
    fn each_poll_of_a_batch_is_answered_on_its_own() {
        let mut conn = crate::db::test_connection();
        let t = tills(&mut conn, 4);
        conn.execute(
            "UPDATE devices SET last_seen_ms = NULL WHERE guid = ?1",
            [t[2].1.device_id.to_string()],
        )
        .expect("imported again");
        let ask =
            |(token, req): &(String, HeartbeatRequest)| QuietAsk::of(token, req).expect("ask");
        let rev = t[0].1.known_revision;
        let stale = HeartbeatRequest {
            known_revision: rev.map(|r| r.wrapping_sub(1)),
            ..t[1].1.clone()
        };
        let asks = [
            ask(&t[0]),
            ask(&(t[1].0.clone(), stale)),
            ask(&t[2]),
            ask(&(t[0].0.clone(), t[3].1.clone())),
            ask(&t[3]),
            ask(&t[0]),
        ];
        let answers = read_many(&conn, &asks, 5_000).expect("read");
        assert_eq!(
            answers,
            [rev, None, None, None, t[3].1.known_revision, rev],
            "good, an older revision, never seen, another till's token, good, the first again"
        );
        // One at a time (on SQLite the statement without JSON): the same.
        for (ask, want) in asks.iter().zip(&answers) {
            let alone = read_many(&conn, std::slice::from_ref(ask), 5_000).expect("read one");
            assert_eq!(alone, [*want]);
        }
        assert!(read_many(&conn, &[], 5_000).expect("none").is_empty());
        let expired = read_many(&conn, &asks[..1], 86_400_000).expect("read");
        assert_eq!(expired, [None], "a token past its expiry");
    }
}
