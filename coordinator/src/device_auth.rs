//! Tills prove who they are: each node holds its own ed25519 key; it logs in
//! by signing a one-time challenge and gets a short-lived device token for
//! its requests (a bearer token, stored here only as a blake3 hash).
//!
//! Why a token from a challenge, not a signature on every request: no clock on
//! a till has to agree with ours (a challenge is ours, used once), chunk
//! downloads stay plain bearer requests, and revocation is one row.
//!
//! Binding: the first login of a GUID the store registry lists binds its key
//! (trust on first use, for tills the chain already knows); a GUID the registry
//! does not list binds its key with a store enrollment token, or else waits as
//! a pending device (at most [`MAX_PENDING`]) until an admin approves it. A
//! bound key never changes until an admin resets it. Removing a device or
//! resetting its key ends its tokens at once.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::db::sql::{OptionalExtension, Transaction, params};
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::manifest::PublicKey;

use crate::auth::{random_hex, secret_hash};
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Every device token starts with this.
pub const DEVICE_TOKEN_PREFIX: &str = "tsd_";
/// Every enrollment token starts with this.
pub const ENROLL_TOKEN_PREFIX: &str = "tse_";
/// Pending (unknown, unapproved) devices kept at most; more are refused, so
/// random GUIDs cannot flood the device list.
pub const MAX_PENDING: u64 = 1_000;
/// Answered challenges remembered at most (each needed a valid signature of
/// a device key to get here, so only real tills fill it).
const MAX_USED: usize = 100_000;
/// How long a challenge may be answered, in milliseconds.
pub const CHALLENGE_TTL_MS: i64 = 60_000;

/// Login challenges. Issuing one stores nothing: a challenge is
/// `issued.nonce.mac`, keyed-hashed with a secret of this process over the
/// device, so a flood of challenge requests costs no memory. A challenge is
/// then accepted once, while fresh: answered ones are remembered until they
/// go stale.
pub struct Challenges {
    key: [u8; 32],
    used: Mutex<HashMap<String, i64>>,
}

impl Challenges {
    /// Challenges keyed with a fresh random secret (a restart voids open ones;
    /// tills ask again).
    pub fn new() -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        Ok(Self {
            key,
            used: Mutex::new(HashMap::new()),
        })
    }

    fn mac(&self, device: &DeviceId, issued_ms: i64, nonce: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(device.as_bytes());
        h.update(&issued_ms.to_le_bytes());
        h.update(nonce.as_bytes());
        h.finalize()
    }

    /// A new challenge for `device`.
    pub fn issue(&self, device: &DeviceId, now_ms: i64) -> Result<String> {
        let nonce = random_hex(16)?;
        Ok(format!(
            "{now_ms:x}.{nonce}.{}",
            self.mac(device, now_ms, &nonce).to_hex()
        ))
    }

    /// Whether `challenge` is one we issued to `device`, still fresh and not
    /// yet answered; marks it answered. Call only after the login's signature
    /// checked out.
    pub fn take(&self, device: &DeviceId, challenge: &str, now_ms: i64) -> Result<bool> {
        let mut parts = challenge.splitn(3, '.');
        let (Some(issued), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(false);
        };
        let Ok(issued_ms) = i64::from_str_radix(issued, 16) else {
            return Ok(false);
        };
        // blake3's Hash compares in constant time.
        let genuine =
            blake3::Hash::from_hex(mac).is_ok_and(|m| m == self.mac(device, issued_ms, nonce));
        let fresh = (0..CHALLENGE_TTL_MS).contains(&(now_ms - issued_ms));
        if !genuine || !fresh {
            return Ok(false);
        }
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.len() >= MAX_USED {
            used.retain(|_, at| now_ms - *at < CHALLENGE_TTL_MS);
            if used.len() >= MAX_USED {
                return Err(Error::Unavailable(
                    "too many logins at once; try again".into(),
                ));
            }
        }
        Ok(used.insert(challenge.to_owned(), issued_ms).is_none())
    }
}

/// What a verified login leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// A device token (valid `ttl_ms`); `None` while the device waits for approval.
    pub token: Option<String>,
    /// What this login changed, for the audit log (nothing for a routine login).
    pub event: Option<LoginEvent>,
}

/// A change a login made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginEvent {
    /// A registry (or reset) device bound its key.
    KeyBound,
    /// A new device joined a store with an enrollment token.
    Enrolled {
        /// The store it joined.
        store: String,
    },
    /// A new device waits for an admin's approval.
    Pending,
}

impl LoginEvent {
    /// The audit action.
    pub fn action(&self) -> &'static str {
        match self {
            LoginEvent::KeyBound => "device.key_bind",
            LoginEvent::Enrolled { .. } => "device.enroll",
            LoginEvent::Pending => "device.pending",
        }
    }
}

/// Binds or checks `device`'s key and opens a session. The login's signature
/// is already verified; `enroll` is a store enrollment token, if the till has one.
pub fn login(
    tx: &Transaction<'_>,
    device: &DeviceId,
    key: &PublicKey,
    enroll: Option<&str>,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<LoginOutcome> {
    let guid = device.to_string();
    let key_text = key.to_string();
    let row: Option<(Option<String>, bool)> = tx
        .prepare_cached("SELECT public_key, approved FROM devices WHERE guid = ?1")?
        .query_row([&guid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (approved, event) = match row {
        Some((Some(bound), approved)) => {
            // Constant-time: the bound key is public, but there is no reason
            // to leak how much of a guess matched.
            if blake3::hash(bound.as_bytes()) != blake3::hash(key_text.as_bytes()) {
                return Err(Error::unauthenticated(
                    "key_mismatch",
                    "this device is bound to another key; an admin can reset it",
                ));
            }
            (approved, None)
        }
        Some((None, approved)) => {
            // First contact of a GUID the registry (or an admin) vouched for.
            tx.execute(
                "UPDATE devices SET public_key = ?2, key_bound_ms = ?3 WHERE guid = ?1",
                params![guid, key_text, now_ms],
            )?;
            (approved, Some(LoginEvent::KeyBound))
        }
        None => match enroll {
            Some(token) => {
                let store = redeem_enroll_token(tx, token, now_ms)?;
                tx.execute(
                    "INSERT INTO devices (guid, store_id, approved, in_registry, public_key,
                                          key_bound_ms, first_seen_ms)
                     VALUES (?1, ?2, 1, 0, ?3, ?4, ?4)",
                    params![guid, store, key_text, now_ms],
                )?;
                (true, Some(LoginEvent::Enrolled { store }))
            }
            None => {
                let pending: i64 =
                    tx.query_row("SELECT count(*) FROM devices WHERE approved = 0", [], |r| {
                        r.get(0)
                    })?;
                if pending as u64 >= MAX_PENDING {
                    return Err(Error::Unavailable(format!(
                        "{MAX_PENDING} devices already wait for approval; \
                         approve or remove some, or enroll tills with a store token"
                    )));
                }
                tx.execute(
                    "INSERT INTO devices (guid, approved, public_key, key_bound_ms, first_seen_ms)
                     VALUES (?1, 0, ?2, ?3, ?3)",
                    params![guid, key_text, now_ms],
                )?;
                (false, Some(LoginEvent::Pending))
            }
        },
    };
    if !approved {
        return Ok(LoginOutcome { token: None, event });
    }
    let token = format!("{DEVICE_TOKEN_PREFIX}{}", random_hex(32)?);
    tx.execute(
        "INSERT INTO device_tokens (hash, device, expires_ms) VALUES (?1, ?2, ?3)",
        params![secret_hash(&token), guid, now_ms + ttl_ms],
    )?;
    // Expired tokens of this device go as new ones come.
    tx.execute(
        "DELETE FROM device_tokens WHERE device = ?1 AND expires_ms <= ?2",
        params![guid, now_ms],
    )?;
    Ok(LoginOutcome {
        token: Some(token),
        event,
    })
}

/// Whether `token` is shaped like a device token (`tsd_` and 64 hex digits).
pub fn is_device_token(token: &str) -> bool {
    token
        .strip_prefix(DEVICE_TOKEN_PREFIX)
        .is_some_and(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The device a live token belongs to (approved, key still bound).
pub fn device_of(
    conn: &crate::db::sql::Connection,
    token: &str,
    now_ms: i64,
) -> Result<Option<DeviceId>> {
    if !is_device_token(token) {
        return Ok(None);
    }
    let guid: Option<String> = conn
        .prepare_cached(
            "SELECT t.device FROM device_tokens t JOIN devices d ON d.guid = t.device
             WHERE t.hash = ?1 AND t.expires_ms > ?2 AND d.approved = 1 AND d.public_key IS NOT NULL",
        )?
        .query_row(params![secret_hash(token), now_ms], |r| r.get(0))
        .optional()?;
    Ok(guid.and_then(|g| g.parse().ok()))
}

/// Forgets a device's key and ends its sessions (a replaced or compromised
/// till); its next login binds whatever key it brings, as on first contact.
pub fn reset_key(tx: &Transaction<'_>, device: &DeviceId) -> Result<()> {
    let guid = device.to_string();
    let n = tx.execute(
        "UPDATE devices SET public_key = NULL, key_bound_ms = NULL WHERE guid = ?1",
        [&guid],
    )?;
    if n == 0 {
        return Err(Error::NotFound(format!("no device {device}")));
    }
    // Out of its store's member list until it logs in and reports again.
    crate::devices::bump_store_of(tx, device)?;
    tx.execute("UPDATE devices SET peer_id = NULL WHERE guid = ?1", [&guid])?;
    tx.execute("DELETE FROM device_tokens WHERE device = ?1", [&guid])?;
    Ok(())
}

/// Makes a store enrollment token (shown once): tills not yet in the registry
/// present it at their first login to join `store`.
pub fn create_enroll_token(
    tx: &Transaction<'_>,
    store: &str,
    expires_ms: i64,
    max_uses: u32,
    created_by: &str,
    now_ms: i64,
) -> Result<NewEnrollToken> {
    if !(1..=MAX_ENROLL_USES).contains(&max_uses) {
        return Err(Error::bad(
            "invalid_max_uses",
            format!("max_uses is 1 to {MAX_ENROLL_USES}"),
        ));
    }
    if expires_ms <= now_ms {
        return Err(Error::bad(
            "invalid_expiry",
            "the token must expire in the future",
        ));
    }
    let known: bool = tx
        .prepare_cached("SELECT 1 FROM stores WHERE id = ?1")?
        .exists([store])?;
    if !known {
        return Err(Error::NotFound(format!(
            "no store {store:?}; import the registry first"
        )));
    }
    let token = format!("{ENROLL_TOKEN_PREFIX}{}", random_hex(32)?);
    let id: i64 = tx.query_row(
        "INSERT INTO enroll_tokens (hash, store_id, created_ms, created_by, expires_ms, max_uses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![
            secret_hash(&token),
            store,
            now_ms,
            created_by,
            expires_ms,
            max_uses
        ],
        |r| r.get(0),
    )?;
    Ok(NewEnrollToken {
        token: enroll_token(tx, id)?,
        token_secret: token,
    })
}

pub use tillswarm_protocol::operator::accounts::{EnrollToken, EnrollTokenId, NewEnrollToken};

/// Most tills one enrollment token may enroll (a store's worth).
pub const MAX_ENROLL_USES: u32 = 1_000;

/// Every enrollment token, newest first.
pub fn enroll_tokens(conn: &crate::db::sql::Connection) -> Result<Vec<EnrollToken>> {
    let mut stmt = conn.prepare(
        "SELECT id, store_id, created_ms, created_by, expires_ms, revoked_ms, max_uses, uses
         FROM enroll_tokens ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([], enroll_row)?;
    Ok(rows.collect::<crate::db::sql::Result<_>>()?)
}

/// One enrollment token.
pub fn enroll_token(conn: &crate::db::sql::Connection, id: i64) -> Result<EnrollToken> {
    conn.query_row(
        "SELECT id, store_id, created_ms, created_by, expires_ms, revoked_ms, max_uses, uses
         FROM enroll_tokens WHERE id = ?1",
        [id],
        enroll_row,
    )
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("no enrollment token {id}")))
}

fn enroll_row(r: &crate::db::sql::Row<'_>) -> crate::db::sql::Result<EnrollToken> {
    Ok(EnrollToken {
        id: EnrollTokenId(r.get(0)?),
        store_id: crate::db::get_parsed(r, 1)?,
        created_at: rfc3339(r.get(2)?),
        created_by: r.get(3)?,
        expires_at: rfc3339(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(rfc3339),
        max_uses: r.get(6)?,
        uses: r.get(7)?,
    })
}

/// Revokes an enrollment token (tills it enrolled stay enrolled).
pub fn revoke_enroll_token(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    let n = tx.execute(
        "UPDATE enroll_tokens SET revoked_ms = coalesce(revoked_ms, ?2) WHERE id = ?1",
        params![id, now_ms],
    )?;
    if n == 0 {
        return Err(Error::NotFound(format!("no enrollment token {id}")));
    }
    Ok(())
}

fn redeem_enroll_token(tx: &Transaction<'_>, token: &str, now_ms: i64) -> Result<String> {
    let refused = || {
        Error::unauthenticated(
            "invalid_enrollment",
            "the enrollment token is invalid, expired, revoked or used up",
        )
    };
    if !token.starts_with(ENROLL_TOKEN_PREFIX) || token.len() > 128 {
        return Err(refused());
    }
    let row: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, store_id FROM enroll_tokens
             WHERE hash = ?1 AND expires_ms > ?2 AND revoked_ms IS NULL AND uses < max_uses",
            params![secret_hash(token), now_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, store) = row.ok_or_else(refused)?;
    tx.execute(
        "UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?1",
        [id],
    )?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillswarm_protocol::manifest::SecretKey;

    fn db() -> crate::db::sql::Connection {
        crate::db::test_connection()
    }

    fn key(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    fn token(outcome: Result<LoginOutcome>) -> String {
        outcome.expect("login").token.expect("a token")
    }

    #[test]
    fn a_registry_till_binds_its_key_once() {
        let mut conn = db();
        let tx = conn.transaction().expect("tx");
        let d = DeviceId::from_bytes([1; 16]);
        tx.execute(
            "INSERT INTO devices (guid, in_registry, approved) VALUES (?1, 1, 1)",
            [d.to_string()],
        )
        .expect("registry");
        let first = login(&tx, &d, &key(1), None, 60_000, 0).expect("login");
        assert_eq!(first.event, Some(LoginEvent::KeyBound));
        let t = first.token.expect("a registry till gets a token");
        assert_eq!(device_of(&tx, &t, 1).expect("lookup"), Some(d));
        assert_eq!(device_of(&tx, &t, 60_000).expect("lookup"), None, "expired");
        assert_eq!(device_of(&tx, "tsd_nonsense", 1).expect("lookup"), None);
        let again = login(&tx, &d, &key(1), None, 60_000, 0).expect("login");
        assert_eq!(again.event, None, "a routine login changes nothing");
        // Another key for the same GUID is refused.
        let e = login(&tx, &d, &key(2), None, 60_000, 0).expect_err("another key");
        assert_eq!(e.code(), "key_mismatch");
        // A reset ends the session and lets the next key bind.
        reset_key(&tx, &d).expect("reset");
        assert_eq!(device_of(&tx, &t, 1).expect("lookup"), None);
        let t2 = token(login(&tx, &d, &key(2), None, 60_000, 0));
        // Removing the device ends its tokens too.
        tx.execute("DELETE FROM devices WHERE guid = ?1", [d.to_string()])
            .expect("delete");
        assert_eq!(device_of(&tx, &t2, 1).expect("lookup"), None);
    }

    #[test]
    fn strangers_wait_or_enroll_and_pending_ones_are_capped() {
        let mut conn = db();
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO stores (id, name) VALUES ('store-001', 'M')",
            [],
        )
        .expect("store");
        let stranger = DeviceId::from_bytes([7; 16]);
        let waiting = login(&tx, &stranger, &key(7), None, 60_000, 0).expect("login");
        assert_eq!(waiting.token, None);
        assert_eq!(waiting.event, Some(LoginEvent::Pending));
        // Approval gives the same key a token; another key stays out.
        tx.execute(
            "UPDATE devices SET approved = 1 WHERE guid = ?1",
            [stranger.to_string()],
        )
        .expect("approve");
        assert!(login(&tx, &stranger, &key(8), None, 60_000, 0).is_err());
        token(login(&tx, &stranger, &key(7), None, 60_000, 0));

        let enroll = create_enroll_token(&tx, "store-001", 10_000, 2, "cli", 0).expect("enroll");
        assert!(create_enroll_token(&tx, "store-404", 10_000, 2, "cli", 0).is_err());
        assert!(create_enroll_token(&tx, "store-001", 10_000, 0, "cli", 0).is_err());
        let newcomer = DeviceId::from_bytes([8; 16]);
        assert!(login(&tx, &newcomer, &key(8), Some("tse_bogus"), 60_000, 0).is_err());
        let joined = login(
            &tx,
            &newcomer,
            &key(8),
            Some(&enroll.token_secret),
            60_000,
            0,
        )
        .expect("enrolled");
        assert!(joined.token.is_some());
        assert_eq!(
            joined.event,
            Some(LoginEvent::Enrolled {
                store: "store-001".into()
            })
        );
        let late = DeviceId::from_bytes([9; 16]);
        let e = login(
            &tx,
            &late,
            &key(9),
            Some(&enroll.token_secret),
            60_000,
            10_000,
        );
        assert!(e.is_err(), "expired token");
        let second = DeviceId::from_bytes([10; 16]);
        token(login(
            &tx,
            &second,
            &key(10),
            Some(&enroll.token_secret),
            60_000,
            1,
        ));
        let third = DeviceId::from_bytes([11; 16]);
        let e = login(&tx, &third, &key(11), Some(&enroll.token_secret), 60_000, 2);
        assert!(e.is_err(), "used up");
        let listed = enroll_token(&tx, enroll.token.id.0).expect("listed");
        assert_eq!((listed.uses, listed.max_uses), (2, 2));
        let other = create_enroll_token(&tx, "store-001", 10_000, 5, "cli", 0).expect("enroll");
        revoke_enroll_token(&tx, other.token.id.0, 3).expect("revoke");
        let e = login(&tx, &third, &key(11), Some(&other.token_secret), 60_000, 4);
        assert!(e.is_err(), "revoked");

        tx.execute("UPDATE devices SET approved = 0", [])
            .expect("all pending");
        for i in 0..MAX_PENDING {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&(i + 1000).to_le_bytes());
            let _ = login(&tx, &DeviceId::from_bytes(b), &key(3), None, 60_000, 0);
        }
        assert!(matches!(
            login(
                &tx,
                &DeviceId::from_bytes([0xee; 16]),
                &key(4),
                None,
                60_000,
                0
            ),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn a_challenge_answers_one_login_while_fresh() {
        let c = Challenges::new().expect("challenges");
        let d = DeviceId::from_bytes([1; 16]);
        let other = DeviceId::from_bytes([2; 16]);
        let ch = c.issue(&d, 0).expect("challenge");
        assert!(!c.take(&d, "other", 1).expect("take"));
        assert!(
            !c.take(&other, &ch, 1).expect("take"),
            "bound to its device"
        );
        // Change the last character to a different one (a fixed "0" would
        // equal the real one in one challenge of every alphabet size).
        let last = if ch.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &ch[..ch.len() - 1]);
        assert!(!c.take(&d, &forged, 1).expect("take"), "the mac is checked");
        assert!(c.take(&d, &ch, 1).expect("take"));
        assert!(!c.take(&d, &ch, 2).expect("take"), "used once");
        let ch = c.issue(&d, 0).expect("challenge");
        assert!(!c.take(&d, &ch, CHALLENGE_TTL_MS).expect("take"), "stale");
        let ch = c.issue(&d, 10).expect("challenge");
        assert!(!c.take(&d, &ch, 5).expect("take"), "not from the future");
        let other_process = Challenges::new().expect("challenges");
        let ch = other_process.issue(&d, 0).expect("challenge");
        assert!(!c.take(&d, &ch, 1).expect("take"), "keyed per process");
    }
}
