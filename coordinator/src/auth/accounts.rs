//! Users, sessions and API tokens: plain functions over the database, shared by
//! the HTTP API and the command line (which works on the data folder directly).
//!
//! Secrets are never stored: passwords as argon2id hashes, session ids and
//! tokens as blake3 hashes (they carry 256 random bits, so a fast hash is safe).

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};

use super::{Actor, ActorKind, Role, random_hex, secret_hash};
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Longest user or token name.
pub const MAX_NAME_LEN: usize = 64;
/// Every API token starts with this, so a leaked one is easy to recognise.
pub const TOKEN_PREFIX: &str = "tsw_";
/// Session activity is written back at most this often, or every half idle
/// time if that is shorter (it bounds writes per read request).
const TOUCH_EVERY_MS: i64 = 30_000;
/// Token use is written back at most this often.
const TOKEN_TOUCH_EVERY_MS: i64 = 30_000;

pub use tillswarm_protocol::operator::accounts::{NewToken, Token, User};

/// Refuses names that are empty, too long or hold anything beyond letters,
/// digits and `. _ @ -` (names end up in logs, CSV and URLs).
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Err(Error::bad(
            "invalid_name",
            format!("a {what} name is 1 to {MAX_NAME_LEN} letters, digits or . _ @ - characters"),
        ));
    }
    Ok(())
}

fn unique_violation(e: &crate::db::sql::Error) -> bool {
    e.is_unique_violation()
}

// ----- users -----

/// Number of users.
pub fn user_count(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Adds a user with an already computed password hash.
pub fn add_user(tx: &Transaction<'_>, name: &str, role: Role, phc: &str, now: i64) -> Result<()> {
    validate_name(name, "user")?;
    tx.execute(
        "INSERT INTO users (name, role, password_hash, created_ms, password_changed_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![name, role.as_str(), phc, now],
    )
    .map_err(|e| {
        if unique_violation(&e) {
            Error::conflict("user_exists", format!("a user named {name:?} exists"))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// Every user, by name, with their live sessions (sessions idle for
/// `idle_ms` or more do not count).
pub fn list_users(conn: &Connection, now: i64, idle_ms: i64) -> Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.name, u.role, u.created_ms, u.password_changed_ms,
                (SELECT count(*) FROM sessions s WHERE s.user_id = u.id
                   AND s.expires_ms > ?1 AND s.last_seen_ms > ?1 - ?2)
         FROM users u ORDER BY u.name",
    )?;
    let rows = stmt.query_map(params![now, idle_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, role, created, changed, sessions) = row?;
        out.push(User {
            name,
            role: role.parse()?,
            created_at: rfc3339(created),
            password_changed_at: rfc3339(changed),
            sessions: sessions as u64,
        });
    }
    Ok(out)
}

/// One user.
pub fn get_user(conn: &Connection, name: &str, now: i64, idle_ms: i64) -> Result<User> {
    list_users(conn, now, idle_ms)?
        .into_iter()
        .find(|u| u.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| Error::NotFound(format!("no user {name:?}")))
}

/// A user as a login sees it.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// Row id.
    pub id: i64,
    /// The name as stored (a login may type it in another case).
    pub name: String,
    /// Role.
    pub role: Role,
    /// argon2id PHC string.
    pub phc: String,
}

/// A user's login record, if the name exists (case-insensitively).
pub fn login_record(conn: &Connection, name: &str) -> Result<Option<LoginRecord>> {
    let row = conn
        .prepare_cached("SELECT id, name, role, password_hash FROM users WHERE name = ?1")?
        .query_row([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()?;
    row.map(|(id, name, role, phc)| {
        Ok(LoginRecord {
            id,
            name,
            role: role.parse()?,
            phc,
        })
    })
    .transpose()
}

/// Whether `secret` has the shape of a session id (64 hex digits); anything
/// else is refused without a database lookup.
fn session_shaped(secret: &str) -> bool {
    secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `secret` has the shape of an API token (`tsw_` + 64 hex digits).
pub fn token_shaped(secret: &str) -> bool {
    secret
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(session_shaped)
}

/// Removes a user and their sessions; the last admin stays.
pub fn remove_user(tx: &Transaction<'_>, name: &str) -> Result<()> {
    let role: Option<String> = tx
        .query_row("SELECT role FROM users WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(role) = role else {
        return Err(Error::NotFound(format!("no user {name:?}")));
    };
    if role == "admin" {
        let admins: i64 =
            tx.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
                r.get(0)
            })?;
        if admins <= 1 {
            return Err(Error::conflict(
                "last_admin",
                "this is the only admin; add another admin before removing it",
            ));
        }
    }
    tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    Ok(())
}

/// Sets a user's password hash and ends every session of that user but
/// `keep` (the session that changed its own password).
pub fn set_password(
    tx: &Transaction<'_>,
    name: &str,
    phc: &str,
    keep: Option<&str>,
    now: i64,
) -> Result<()> {
    let changed = tx.execute(
        "UPDATE users SET password_hash = ?2, password_changed_ms = ?3 WHERE name = ?1",
        params![name, phc, now],
    )?;
    if changed == 0 {
        return Err(Error::NotFound(format!("no user {name:?}")));
    }
    tx.execute(
        "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)
         AND id_hash IS DISTINCT FROM ?2",
        params![name, keep],
    )?;
    Ok(())
}

// ----- sessions -----

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session unused this long ends, in milliseconds.
    pub idle_ms: i64,
    /// A session ends this long after login whatever its use, in milliseconds.
    pub max_age_ms: i64,
}

/// Opens a session for user `user_id`; returns the cookie value (shown once)
/// and the absolute expiry.
pub fn create_session(
    tx: &Transaction<'_>,
    user_id: i64,
    client: &str,
    limits: SessionLimits,
    now: i64,
) -> Result<(String, i64)> {
    let secret = random_hex(32)?;
    let expires = now + limits.max_age_ms;
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, created_ms, last_seen_ms, expires_ms, client)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
        params![secret_hash(&secret), user_id, now, expires, client],
    )?;
    Ok((secret, expires))
}

/// The user behind a session cookie value, if the session is live; marks it
/// used (at most every half minute) and removes it once expired.
pub fn session_actor(
    tx: &Transaction<'_>,
    secret: &str,
    limits: SessionLimits,
    now: i64,
) -> Result<Option<(Actor, i64)>> {
    if !session_shaped(secret) {
        return Ok(None);
    }
    let hash = secret_hash(secret);
    let row = tx
        .prepare_cached(
            "SELECT u.name, u.role, s.last_seen_ms, s.expires_ms
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?1",
        )?
        .query_row([&hash], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((name, role, last_seen, expires)) = row else {
        return Ok(None);
    };
    if now >= expires || now - last_seen >= limits.idle_ms {
        tx.execute("DELETE FROM sessions WHERE id_hash = ?1", [&hash])?;
        return Ok(None);
    }
    if now - last_seen >= TOUCH_EVERY_MS.min(limits.idle_ms / 2) {
        tx.execute(
            "UPDATE sessions SET last_seen_ms = ?2 WHERE id_hash = ?1",
            params![hash, now],
        )?;
    }
    let actor = Actor {
        kind: ActorKind::User,
        name,
        role: Some(role.parse()?),
        session: Some(hash),
    };
    Ok(Some((actor, expires)))
}

/// Ends a session (by its id hash).
pub fn delete_session(tx: &Transaction<'_>, id_hash: &str) -> Result<()> {
    tx.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}

/// Removes sessions that have expired; returns how many.
pub fn purge_sessions(tx: &Transaction<'_>, limits: SessionLimits, now: i64) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM sessions WHERE expires_ms <= ?1 OR last_seen_ms <= ?2",
        params![now, now - limits.idle_ms],
    )?)
}

// ----- API tokens -----

/// Makes a token; the secret is returned once and only its hash is kept.
pub fn create_token(
    tx: &Transaction<'_>,
    name: &str,
    role: Role,
    expires_ms: Option<i64>,
    created_by: &str,
    now: i64,
) -> Result<NewToken> {
    validate_name(name, "token")?;
    let secret = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
    tx.execute(
        "INSERT INTO api_tokens (name, token_hash, role, created_ms, created_by, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            name,
            secret_hash(&secret),
            role.as_str(),
            now,
            created_by,
            expires_ms
        ],
    )
    .map_err(|e| {
        if unique_violation(&e) {
            Error::conflict(
                "token_exists",
                format!("a live token named {name:?} exists; revoke it first"),
            )
        } else {
            e.into()
        }
    })?;
    let token = list_tokens(tx)?
        .into_iter()
        .find(|t| t.name.eq_ignore_ascii_case(name) && t.revoked_at.is_none())
        .ok_or_else(|| Error::Internal("a token vanished while being made".into()))?;
    Ok(NewToken {
        token,
        token_secret: secret,
    })
}

/// Every token, live ones first, newest first.
pub fn list_tokens(conn: &Connection) -> Result<Vec<Token>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, role, created_ms, created_by, expires_ms, last_used_ms, revoked_ms
         FROM api_tokens ORDER BY revoked_ms IS NOT NULL, created_ms DESC, id DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, role, created, by, expires, used, revoked) = row?;
        out.push(Token {
            name,
            role: role.parse()?,
            created_at: rfc3339(created),
            created_by: by,
            expires_at: expires.map(rfc3339),
            last_used_at: used.map(rfc3339),
            revoked_at: revoked.map(rfc3339),
        });
    }
    Ok(out)
}

/// Revokes the live token named `name`; it fails from the next request on.
pub fn revoke_token(tx: &Transaction<'_>, name: &str, now: i64) -> Result<()> {
    let changed = tx.execute(
        "UPDATE api_tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
        params![name, now],
    )?;
    if changed == 0 {
        return Err(Error::NotFound(format!("no live token {name:?}")));
    }
    Ok(())
}

/// The actor behind a bearer token, if it is live; records its use (at most
/// every half minute).
pub fn token_actor(tx: &Transaction<'_>, secret: &str, now: i64) -> Result<Option<Actor>> {
    if !token_shaped(secret) {
        return Ok(None);
    }
    let hash = secret_hash(secret);
    let row = tx
        .prepare_cached(
            "SELECT id, name, role, expires_ms, revoked_ms, last_used_ms
             FROM api_tokens WHERE token_hash = ?1",
        )?
        .query_row([&hash], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()?;
    let Some((id, name, role, expires, revoked, used)) = row else {
        return Ok(None);
    };
    if revoked.is_some() || expires.is_some_and(|e| now >= e) {
        return Ok(None);
    }
    if used.is_none_or(|u| now - u >= TOKEN_TOUCH_EVERY_MS) {
        tx.execute(
            "UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1",
            params![id, now],
        )?;
    }
    Ok(Some(Actor {
        kind: ActorKind::Token,
        name,
        role: Some(role.parse()?),
        session: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        crate::db::test_connection()
    }

    const LIMITS: SessionLimits = SessionLimits {
        idle_ms: 60_000,
        max_age_ms: 600_000,
    };

    #[test]
    fn names_are_validated() {
        validate_name("ops.anna@store-1", "user").expect("valid");
        for bad in ["", "a b", "x/y", "é", &"a".repeat(65), "a;drop"] {
            assert!(validate_name(bad, "user").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_session_ends_when_idle_or_old() {
        let mut conn = db();
        let tx = conn.transaction().expect("tx");
        add_user(&tx, "anna", Role::Operator, "x", 0).expect("add");
        let (secret, expires) = create_session(&tx, 1, "1.2.3.4", LIMITS, 0).expect("session");
        assert!(
            session_actor(&tx, &"0".repeat(63), LIMITS, 1)
                .expect("lookup")
                .is_none()
        );
        assert_eq!(expires, 600_000);
        let (actor, _) = session_actor(&tx, &secret, LIMITS, 59_000)
            .expect("lookup")
            .expect("live");
        assert_eq!(
            (actor.name.as_str(), actor.role),
            ("anna", Some(Role::Operator))
        );
        // Used at 59 s, so live until 119 s; then idle.
        assert!(
            session_actor(&tx, &secret, LIMITS, 118_000)
                .expect("lookup")
                .is_some()
        );
        assert!(
            session_actor(&tx, &secret, LIMITS, 178_000)
                .expect("lookup")
                .is_none()
        );
        let count: i64 = tx
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 0, "an expired session is removed");
        // Kept busy, a session still ends at its absolute expiry.
        let (secret, _) = create_session(&tx, 1, "", LIMITS, 0).expect("session");
        let mut t = 0;
        while t < 600_000 {
            assert!(
                session_actor(&tx, &secret, LIMITS, t)
                    .expect("lookup")
                    .is_some()
            );
            t += 40_000;
        }
        assert!(
            session_actor(&tx, &secret, LIMITS, 600_000)
                .expect("lookup")
                .is_none()
        );
        assert!(
            session_actor(&tx, "nonsense", LIMITS, 0)
                .expect("lookup")
                .is_none()
        );
    }

    #[test]
    fn tokens_expire_and_revoke_and_names_come_free_again() {
        let mut conn = db();
        let tx = conn.transaction().expect("tx");
        let t = create_token(&tx, "ci", Role::Operator, Some(10_000), "cli", 0).expect("token");
        assert!(t.token_secret.starts_with(TOKEN_PREFIX));
        assert!(t.token_secret.len() >= TOKEN_PREFIX.len() + 32, "128+ bits");
        assert!(
            token_actor(&tx, &t.token_secret, 9_999)
                .expect("lookup")
                .is_some()
        );
        assert!(
            token_actor(&tx, &t.token_secret, 10_000)
                .expect("lookup")
                .is_none()
        );
        tx.commit().expect("commit");
        // A refused statement ends its transaction on PostgreSQL: each
        // expected refusal runs in one of its own.
        let tx = conn.transaction().expect("tx");
        assert!(
            create_token(&tx, "CI", Role::Admin, None, "cli", 0).is_err(),
            "live name"
        );
        drop(tx);
        let tx = conn.transaction().expect("tx");
        revoke_token(&tx, "ci", 5).expect("revoke");
        assert!(
            token_actor(&tx, &t.token_secret, 6)
                .expect("lookup")
                .is_none()
        );
        let again = create_token(&tx, "ci", Role::Viewer, None, "cli", 7).expect("reuse name");
        assert_ne!(again.token_secret, t.token_secret);
        let list = list_tokens(&tx).expect("list");
        assert_eq!(list.len(), 2);
        assert!(list[0].revoked_at.is_none() && list[1].revoked_at.is_some());
        assert!(revoke_token(&tx, "nobody", 8).is_err());
    }

    #[test]
    fn the_last_admin_cannot_be_removed_and_passwd_ends_sessions() {
        let mut conn = db();
        let tx = conn.transaction().expect("tx");
        add_user(&tx, "root", Role::Admin, "x", 0).expect("add");
        tx.commit().expect("commit");
        let tx = conn.transaction().expect("tx");
        assert!(
            add_user(&tx, "ROOT", Role::Viewer, "x", 0).is_err(),
            "case-insensitive"
        );
        drop(tx);
        let tx = conn.transaction().expect("tx");
        assert!(remove_user(&tx, "root").is_err());
        add_user(&tx, "second", Role::Admin, "x", 0).expect("add");
        let (secret, _) = create_session(&tx, 1, "", LIMITS, 0).expect("session");
        set_password(&tx, "root", "y", None, 1).expect("passwd");
        assert!(
            session_actor(&tx, &secret, LIMITS, 2)
                .expect("lookup")
                .is_none()
        );
        remove_user(&tx, "root").expect("now removable");
        assert_eq!(user_count(&tx).expect("count"), 1);
    }
}
