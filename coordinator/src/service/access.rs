//! The coordinator's operations on operators: logging in and out, resolving a
//! request's credentials, users, API tokens and the audit log. The command line
//! does the same through [`crate::admin::Accounts`] on the data folder.

use std::net::IpAddr;

use super::{Coordinator, Page, page_of};
use crate::audit::{self, Note, Outcome};
use crate::auth::accounts::{self, NewToken, SessionLimits, Token, User};
use crate::auth::password::{self};
use crate::auth::{Actor, ActorKind, Caller, Role};
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// The one message for every failed login: it never says which part was wrong.
pub const BAD_LOGIN: &str = "wrong user name or password";

pub use tillswarm_protocol::operator::accounts::{
    AuthMethod, LoginInput, NewTokenInput, NewUserInput, PasswordInput, SessionInfo,
    UserWithPassword,
};

/// A successful login: the cookie value to set, once, and who logged in.
#[derive(Debug, Clone)]
pub struct Login {
    /// The session id for the cookie (stored only hashed).
    pub cookie: String,
    /// Seconds until the session's absolute expiry (the cookie's Max-Age).
    pub max_age_s: u64,
    /// Who logged in.
    pub info: SessionInfo,
}

/// Longest token lifetime, in days.
pub const MAX_TOKEN_DAYS: u32 = 3650;

impl Coordinator {
    fn session_limits(&self) -> SessionLimits {
        let c = self.config();
        SessionLimits {
            idle_ms: (c.session_idle_timeout_s.max(1) * 1000) as i64,
            max_age_ms: (c.session_max_age_s.max(1) * 1000) as i64,
        }
    }

    /// Whether any operator account exists (asked on unauthenticated calls,
    /// so a yes is remembered instead of asked again).
    pub async fn has_users(&self) -> Result<bool> {
        use std::sync::atomic::Ordering;
        if self.inner.has_users.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let found = self.read(|c, _| accounts::user_count(c)).await? > 0;
        if found {
            self.inner.has_users.store(true, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Checks a user name and password; on success opens a session (and
    /// ends `replaces`, the session the browser logged in from, if any).
    /// Attempts are rate-limited per client address and per name from it (429
    /// past the limit, before any password check); failures and successes are
    /// audited, a success under the name as stored.
    pub async fn login(
        &self,
        input: LoginInput,
        ip: Option<IpAddr>,
        replaces: Option<String>,
        by: &Caller,
    ) -> Result<Login> {
        if let Err(retry_after_s) = self.inner.logins.attempt(&input.username, ip) {
            return Err(Error::TooManyAttempts { retry_after_s });
        }
        let name = input.username.clone();
        let record = if accounts::validate_name(&name, "user").is_ok()
            && input.password.len() <= password::MAX_LEN
        {
            self.read(move |c, _| accounts::login_record(c, &name))
                .await?
        } else {
            None
        };
        let phc = record.as_ref().map(|r| r.phc.clone());
        let matches = self.inner.hasher.verify(input.password, phc).await?;
        let record = match record {
            Some(record) if matches => record,
            _ => {
                self.audit(by, "session.login", Note::default(), Outcome::Denied, 401)
                    .await;
                return Err(Error::unauthenticated("invalid_credentials", BAD_LOGIN));
            }
        };
        let limits = self.session_limits();
        let mut caller = by.clone();
        caller.actor = Actor {
            kind: ActorKind::User,
            name: record.name.clone(),
            role: Some(record.role),
            session: None,
        };
        let client = by.client.clone();
        let user_id = record.id;
        let (cookie, expires) = self
            .write(move |tx, now| {
                if let Some(old) = replaces {
                    accounts::delete_session(tx, &old)?;
                }
                let session = accounts::create_session(tx, user_id, &client, limits, now)?;
                let note = Note::default();
                audit::append(tx, &caller, "session.login", &note, Outcome::Ok, 200, now)?;
                Ok(session)
            })
            .await?;
        Ok(Login {
            cookie,
            max_age_s: ((expires - self.now_ms()).max(0) / 1000) as u64,
            info: SessionInfo {
                username: record.name,
                role: record.role,
                auth: AuthMethod::Session,
                expires_at: Some(rfc3339(expires)),
                idle_timeout_s: Some(self.config().session_idle_timeout_s),
            },
        })
    }

    /// Resolves a request's credentials: a bearer token if one is sent, else
    /// the session cookie. `Ok(None)` when neither names a live credential.
    /// Expiry and revocation count from this request on (nothing is cached).
    pub async fn authenticate(
        &self,
        bearer: Option<String>,
        cookie: Option<String>,
    ) -> Result<Option<(Actor, SessionInfo)>> {
        if bearer.is_none() && cookie.is_none() {
            return Ok(None);
        }
        let limits = self.session_limits();
        let idle_s = self.config().session_idle_timeout_s;
        self.write(move |tx, now| {
            if let Some(secret) = bearer {
                let Some(actor) = accounts::token_actor(tx, &secret, now)? else {
                    return Ok(None);
                };
                let expires: Option<i64> = tx.query_row(
                    "SELECT expires_ms FROM api_tokens WHERE name = ?1 AND revoked_ms IS NULL",
                    [&actor.name],
                    |r| r.get(0),
                )?;
                let info = SessionInfo {
                    username: actor.name.clone(),
                    role: actor.role.unwrap_or(Role::Viewer),
                    auth: AuthMethod::Token,
                    expires_at: expires.map(rfc3339),
                    idle_timeout_s: None,
                };
                return Ok(Some((actor, info)));
            }
            let Some(secret) = cookie else {
                return Ok(None);
            };
            Ok(
                accounts::session_actor(tx, &secret, limits, now)?.map(|(actor, expires)| {
                    let info = SessionInfo {
                        username: actor.name.clone(),
                        role: actor.role.unwrap_or(Role::Viewer),
                        auth: AuthMethod::Session,
                        expires_at: Some(rfc3339(expires)),
                        idle_timeout_s: Some(idle_s),
                    };
                    (actor, info)
                }),
            )
        })
        .await
    }

    /// Ends the caller's session (a no-op for tokens: revoke those instead).
    pub async fn logout(&self, by: &Caller) -> Result<()> {
        let session = by.actor.session.clone();
        self.change(
            by,
            "session.logout",
            Note::default(),
            move |tx, _, _| match session {
                Some(hash) => accounts::delete_session(tx, &hash),
                None => Ok(()),
            },
        )
        .await
    }

    /// Changes the caller's own password (users only), checking the current one.
    pub async fn change_own_password(
        &self,
        input: PasswordInput,
        by: &Caller,
    ) -> Result<UserWithPassword> {
        if by.actor.kind != ActorKind::User {
            let e = Error::bad(
                "not_a_user",
                "only a logged-in user can change their own password",
            );
            self.audit_failure(by, "session.password", Note::default(), &e)
                .await;
            return Err(e);
        }
        let name = by.actor.name.clone();
        // Guessing the current password through a stolen session is slowed
        // like any login.
        let ip = by.client.parse::<IpAddr>().ok();
        if let Err(retry_after_s) = self.inner.logins.attempt(&name, ip) {
            return Err(Error::TooManyAttempts { retry_after_s });
        }
        let current = input.current.clone().unwrap_or_default();
        let record = {
            let name = name.clone();
            self.read(move |c, _| accounts::login_record(c, &name))
                .await?
        };
        let phc = record.map(|r| r.phc);
        if !self.inner.hasher.verify(current, phc).await? {
            let e = Error::bad("wrong_password", "the current password is wrong");
            self.audit_failure(by, "session.password", Note::on(format!("user:{name}")), &e)
                .await;
            return Err(e);
        }
        self.set_password(name, input.password, "session.password", by)
            .await
    }

    /// Sets a user's password (generated when `password` is `None`) and ends
    /// every session of that user, except the caller's own when a user changes
    /// their own password.
    pub async fn set_password(
        &self,
        name: String,
        password: Option<String>,
        action: &'static str,
        by: &Caller,
    ) -> Result<UserWithPassword> {
        let keep = if by.actor.kind == ActorKind::User && by.actor.name.eq_ignore_ascii_case(&name)
        {
            by.actor.session.clone()
        } else {
            None
        };
        self.set_password_keeping(name, password, action, keep, by)
            .await
    }

    async fn set_password_keeping(
        &self,
        name: String,
        password: Option<String>,
        action: &'static str,
        keep: Option<String>,
        by: &Caller,
    ) -> Result<UserWithPassword> {
        let note = Note::on(format!("user:{name}"));
        let (password, generated) = match self.choose_password(password) {
            Ok(p) => p,
            Err(e) => {
                self.audit_failure(by, action, note, &e).await;
                return Err(e);
            }
        };
        let phc = self.inner.hasher.hash(password.clone()).await?;
        let idle_ms = self.session_limits().idle_ms;
        let user = self
            .change(by, action, note, move |tx, now, _| {
                accounts::set_password(tx, &name, &phc, keep.as_deref(), now)?;
                accounts::get_user(tx, &name, now, idle_ms)
            })
            .await?;
        Ok(UserWithPassword {
            user,
            password: generated.then_some(password),
        })
    }

    fn choose_password(&self, password: Option<String>) -> Result<(String, bool)> {
        match password {
            Some(p) => {
                password::check_chosen(&p)?;
                Ok((p, false))
            }
            None => Ok((password::generate()?, true)),
        }
    }

    /// Every user.
    pub async fn users(&self) -> Result<Vec<User>> {
        let idle_ms = self.session_limits().idle_ms;
        self.read(move |c, now| accounts::list_users(c, now, idle_ms))
            .await
    }

    /// Adds a user (with a generated password when none is given).
    pub async fn add_user(&self, input: NewUserInput, by: &Caller) -> Result<UserWithPassword> {
        let note = Note::on(format!("user:{}", input.name));
        let chosen = accounts::validate_name(&input.name, "user")
            .and_then(|()| self.choose_password(input.password));
        let (password, generated) = match chosen {
            Ok(p) => p,
            Err(e) => {
                self.audit_failure(by, "user.add", note, &e).await;
                return Err(e);
            }
        };
        let phc = self.inner.hasher.hash(password.clone()).await?;
        let idle_ms = self.session_limits().idle_ms;
        let (name, role) = (input.name, input.role);
        let user = self
            .change(by, "user.add", note, move |tx, now, note| {
                note.detail(format!("role {role}"));
                accounts::add_user(tx, &name, role, &phc, now)?;
                accounts::get_user(tx, &name, now, idle_ms)
            })
            .await?;
        Ok(UserWithPassword {
            user,
            password: generated.then_some(password),
        })
    }

    /// Removes a user (never the last admin).
    pub async fn remove_user(&self, name: String, by: &Caller) -> Result<()> {
        let note = Note::on(format!("user:{name}"));
        self.change(by, "user.remove", note, move |tx, _, _| {
            accounts::remove_user(tx, &name)
        })
        .await
    }

    /// Every API token (without secrets).
    pub async fn tokens(&self) -> Result<Vec<Token>> {
        self.read(|c, _| accounts::list_tokens(c)).await
    }

    /// Makes an API token; its secret is in the answer and nowhere else.
    pub async fn create_token(&self, input: NewTokenInput, by: &Caller) -> Result<NewToken> {
        let note = Note::on(format!("token:{}", input.name));
        if input
            .expires_days
            .is_some_and(|d| !(1..=MAX_TOKEN_DAYS).contains(&d))
        {
            let e = Error::bad(
                "invalid_expiry",
                format!("expires_days is 1 to {MAX_TOKEN_DAYS}"),
            );
            self.audit_failure(by, "token.create", note, &e).await;
            return Err(e);
        }
        let created_by = by.actor.name.clone();
        self.change(by, "token.create", note, move |tx, now, note| {
            note.detail(format!("role {}", input.role));
            let expires = input.expires_days.map(|d| now + i64::from(d) * 86_400_000);
            accounts::create_token(tx, &input.name, input.role, expires, &created_by, now)
        })
        .await
    }

    /// Revokes a live API token by name.
    pub async fn revoke_token(&self, name: String, by: &Caller) -> Result<()> {
        let note = Note::on(format!("token:{name}"));
        self.change(by, "token.revoke", note, move |tx, now, _| {
            accounts::revoke_token(tx, &name, now)
        })
        .await
    }

    /// A page of the audit log, newest first. With `format=csv` paging is
    /// ignored: the newest [`audit::MAX_CSV_ROWS`] matching rows come at once.
    pub async fn audit_log(&self, filter: audit::Filter) -> Result<Page<audit::Record>> {
        if filter
            .format
            .as_deref()
            .is_some_and(|f| f != "csv" && f != "json")
        {
            return Err(Error::bad("invalid_format", "format is json or csv"));
        }
        let (page, per) = if filter.format.as_deref() == Some("csv") {
            (1, audit::MAX_CSV_ROWS)
        } else {
            super::Paging {
                page: filter.page,
                per_page: filter.per_page,
            }
            .resolve()?
        };
        let (items, total) = self
            .read(move |c, _| audit::list(c, &filter, (page - 1) * per, per))
            .await?;
        Ok(page_of(items, total, page, per))
    }

    /// Removes expired sessions and audit rows past retention.
    pub(crate) async fn purge(&self) -> Result<()> {
        let limits = self.session_limits();
        let keep_ms = (self.config().audit_retention_days.max(1) as i64).saturating_mul(86_400_000);
        let (sessions, rows) = self
            .write(move |tx, now| {
                Ok((
                    accounts::purge_sessions(tx, limits, now)?,
                    audit::purge(tx, now.saturating_sub(keep_ms))?,
                ))
            })
            .await?;
        self.inner.logins.forget_idle();
        if sessions + rows > 0 {
            tracing::info!(
                sessions,
                audit_rows = rows,
                "purged expired sessions and old audit rows"
            );
        }
        Ok(())
    }
}
