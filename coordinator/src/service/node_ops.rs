//! The till-facing operations of [`Coordinator`]: device login (a signed
//! challenge for a short-lived device token), heartbeats answered with signed
//! instructions, progress reports, and the admin's side of device identity
//! (key resets, store enrollment tokens).
//!
//! Every till request names its device in the body; the device token must
//! belong to that device, checked in the same database job that acts on it.

use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::{
    Challenge, DeviceLogin, DeviceSession, HeartbeatRequest, HeartbeatResponse, ProgressReport,
};
use tillswarm_protocol::trust::{
    self, Domain, Instructions, Signed, StoreMember, Timestamp, TrustBundle, login_message,
};

use super::Coordinator;
use super::quiet_polls::Seen;
use crate::audit::{self, Note, Outcome};
use crate::auth::Caller;
use crate::device_auth::{self, CHALLENGE_TTL_MS, EnrollToken, EnrollTokenId, NewEnrollToken};
use crate::devices::{self, Device};
use crate::error::{Error, Result};
use crate::tasks::{self, ReportOutcome};
use crate::till_types;

/// Most days an enrollment token may last.
pub const MAX_ENROLL_DAYS: u64 = 90;

pub use tillswarm_protocol::operator::accounts::NewEnrollTokenInput;

/// Checks, inside a job, that `token` is a live device token of `claimed`.
fn check_device(
    conn: &crate::db::sql::Connection,
    token: &str,
    claimed: &DeviceId,
    now_ms: i64,
) -> Result<()> {
    match device_auth::device_of(conn, token, now_ms)? {
        None => Err(Error::unauthenticated(
            "invalid_device_token",
            "the device token is invalid or expired; log in again",
        )),
        Some(d) if d != *claimed => Err(Error::forbidden(
            "wrong_device",
            format!("this device token belongs to {d}, not {claimed}"),
        )),
        Some(_) => Ok(()),
    }
}

impl Coordinator {
    /// A one-time challenge for `device` to sign. Stores nothing.
    pub fn device_challenge(&self, device: DeviceId) -> Result<Challenge> {
        Ok(Challenge {
            challenge: self.inner.challenges.issue(&device, self.now_ms())?,
            expires_in_ms: CHALLENGE_TTL_MS as u64,
        })
    }

    /// Checks a till's signed challenge; binds its key on first contact (see
    /// [`device_auth`]) and answers with a device token once it is approved.
    pub async fn device_login(&self, login: DeviceLogin, client: String) -> Result<DeviceSession> {
        login
            .validate()
            .map_err(|m| Error::bad("invalid_login", m))?;
        let refused = || {
            Error::unauthenticated(
                "invalid_login",
                "the signature or challenge does not check out; ask for a new challenge",
            )
        };
        let message = login_message(&login.device_id, &login.challenge, &login.public_key);
        if !trust::verify_bytes(
            &login.public_key,
            Domain::DeviceLogin,
            &message,
            &login.signature,
        ) {
            return Err(refused());
        }
        if !self
            .inner
            .challenges
            .take(&login.device_id, &login.challenge, self.now_ms())?
        {
            return Err(refused());
        }
        let ttl_ms = self.inner.config.device_token_ttl_s as i64 * 1000;
        let outcome = self
            .write(move |tx, now| {
                let device = login.device_id;
                let outcome = device_auth::login(
                    tx,
                    &device,
                    &login.public_key,
                    login.enroll_token.as_deref(),
                    ttl_ms,
                    now,
                )?;
                if let Some(event) = &outcome.event {
                    let caller = Caller::device(&device, client, "/api/v1/node/session");
                    let mut note = Note::on(format!("device:{device}"));
                    note.detail(match event {
                        device_auth::LoginEvent::Enrolled { store } => format!("store {store}"),
                        _ => format!("key {}", login.public_key),
                    });
                    audit::append(tx, &caller, event.action(), &note, Outcome::Ok, 200, now)?;
                }
                Ok(outcome)
            })
            .await?;
        Ok(DeviceSession {
            approved: outcome.token.is_some(),
            token: outcome.token,
            expires_in_ms: if ttl_ms > 0 { ttl_ms as u64 } else { 0 },
        })
    }

    /// Records a heartbeat and answers with the till's signed timestamp and,
    /// when the till's revision is not current, its signed instructions.
    pub async fn heartbeat(
        &self,
        token: String,
        req: HeartbeatRequest,
        seen_ip: Option<String>,
    ) -> Result<HeartbeatResponse> {
        req.validate()
            .map_err(|m| Error::bad("invalid_heartbeat", m))?;
        let config = self.inner.config.clone();
        let jitter = jitter_ms(config.poll_interval_ms, config.poll_jitter);
        let device = req.device_id;
        let fingerprint = super::quiet_polls::fingerprint(&req, seen_ip.as_deref());
        let seen = self
            .inner
            .quiet_polls
            .seen(device, fingerprint, self.now_ms());
        if seen == Seen::Quiet
            && let Some(revision) = self.quiet_heartbeat(&token, &req).await?
        {
            self.inner.metrics.count_quiet_poll();
            return Ok(HeartbeatResponse {
                revision,
                trust: self.trust_bundle(device, revision, None),
                poll_interval_ms: config.poll_interval_ms + jitter,
            });
        }
        if seen == Seen::Due
            && let Some(revision) = self.refresh(&token, &req, seen_ip.clone()).await?
        {
            self.inner
                .quiet_polls
                .wrote(device, fingerprint, self.now_ms());
            self.inner.metrics.count_refreshed_poll();
            return Ok(HeartbeatResponse {
                revision,
                trust: self.trust_bundle(device, revision, None),
                poll_interval_ms: config.poll_interval_ms + jitter,
            });
        }
        let (outcome, news, written_ms) = self
            .write_batched(move |tx, now| {
                check_device(tx, &token, &req.device_id, now)?;
                let outcome = devices::record_heartbeat(tx, &req, seen_ip, now)?;
                tasks::promote_installed(tx, &req.device_id, req.version.as_ref(), now)?;
                let news = if req.known_revision == Some(outcome.assign_rev) {
                    None
                } else {
                    let settings = till_types::settings_for(tx, outcome.till_type.as_deref())?;
                    // Every till polls within interval * (1 + jitter); a second more for skew.
                    let settle = (config.poll_interval_ms as f64 * (1.0 + config.poll_jitter))
                        as i64
                        + 1_000;
                    let members = devices::store_members(tx, &req.device_id)?;
                    Some((
                        tasks::assignments(
                            tx,
                            &req.device_id,
                            settle,
                            tasks::stagger::spread_ms(config.poll_interval_ms),
                        )?,
                        settings,
                        members,
                    ))
                };
                Ok((outcome, news, now))
            })
            .await?;
        self.inner
            .quiet_polls
            .wrote(device, fingerprint, written_ms);
        if outcome.changed {
            self.publish(crate::events::Change::Device { guid: device });
        }
        // Signed here, on the executor, not on the database thread.
        Ok(HeartbeatResponse {
            revision: outcome.assign_rev,
            trust: self.trust_bundle(device, outcome.assign_rev, news),
            poll_interval_ms: config.poll_interval_ms + jitter,
        })
    }

    /// The read-only answer to a heartbeat that repeats the last one written
    /// (see [`super::quiet_polls`]), on PostgreSQL sharing one statement
    /// with the others asked meanwhile (see [`devices::quiet`]): the till's revision when the
    /// token is good, the till was seen before, it already holds that
    /// revision and no install of it awaits confirmation by its version;
    /// `None` sends the heartbeat down the full path.
    async fn quiet_heartbeat(&self, token: &str, req: &HeartbeatRequest) -> Result<Option<u64>> {
        let Some(ask) = devices::quiet::QuietAsk::of(token, req) else {
            return Ok(None);
        };
        if !self.coalesces() {
            return Ok(self.read_quiet(vec![ask]).await?.pop().flatten());
        }
        let this = self.clone();
        self.inner
            .quiet_reads
            .ask(ask, move |asks| {
                let this = this.clone();
                async move { this.read_quiet(asks).await }
            })
            .await
    }

    /// Whether hot statements are batched ([`super::coalesce`]): on
    /// PostgreSQL, where each costs a round trip and the server's work per
    /// statement. SQLite runs in this process, so there batching would only
    /// add hand-overs between tasks (measured: 100,000 tills' closed loop
    /// fell from 7,111 to 5,688 requests a second with it).
    fn coalesces(&self) -> bool {
        self.inner.db.is_postgres()
    }

    /// Answers quiet polls' reads in one statement.
    async fn read_quiet(&self, asks: Vec<devices::quiet::QuietAsk>) -> Result<Vec<Option<u64>>> {
        let now = self.now_ms();
        // On the reader connection: an unchanged poll never queues behind
        // the writer's transactions, nor splits its group commits.
        self.inner
            .db
            .call_read(move |conn| devices::quiet::read_many(conn, &asks, now))
            .await
    }

    /// Writes the last contact of a till whose heartbeat repeats the last
    /// one written and is due ([`Seen::Due`]), on PostgreSQL sharing one
    /// statement with the others due meanwhile (see [`devices::refresh`]):
    /// the revision
    /// the till holds when written, `None` for the full path.
    async fn refresh(
        &self,
        token: &str,
        req: &HeartbeatRequest,
        seen_ip: Option<String>,
    ) -> Result<Option<u64>> {
        let Some(refresh) = devices::refresh::Refresh::of(token, req, seen_ip) else {
            return Ok(None);
        };
        let written = if self.coalesces() {
            let this = self.clone();
            self.inner
                .refreshes
                .ask(refresh, move |refreshes| {
                    let this = this.clone();
                    async move { this.write_refreshes(refreshes).await }
                })
                .await?
        } else {
            self.write_refreshes(vec![refresh]).await?.pop() == Some(true)
        };
        Ok(written.then_some(req.known_revision).flatten())
    }

    /// Writes refreshes in one statement, in a shared transaction.
    async fn write_refreshes(
        &self,
        refreshes: Vec<devices::refresh::Refresh>,
    ) -> Result<Vec<bool>> {
        self.write_batched(move |tx, now| devices::refresh::refresh_many(tx, &refreshes, now))
            .await
    }

    /// The key chain, a timestamp for `device` at `revision` and, with
    /// `news`, its instructions; all valid for `instructions_ttl_s`.
    fn trust_bundle(
        &self,
        device: DeviceId,
        revision: u64,
        news: Option<(
            Vec<tillswarm_protocol::api::Assignment>,
            tillswarm_protocol::api::TillSettings,
            Vec<StoreMember>,
        )>,
    ) -> TrustBundle {
        let ring = self.key_ring();
        let now = (self.now_ms().max(0) / 1000) as u64;
        let expires = now + self.inner.config.instructions_ttl_s.max(60);
        let timestamp = Signed::sign(
            &ring.online,
            Domain::Timestamp,
            &Timestamp {
                device,
                revision,
                expires_unix: expires,
            },
        );
        let instructions = news.map(|(assignments, settings, store_members)| {
            Signed::sign(
                &ring.online,
                Domain::Instructions,
                &Instructions {
                    device,
                    revision,
                    issued_unix: now,
                    expires_unix: expires,
                    assignments,
                    settings,
                    store_members,
                    chunk_base_url: self.inner.config.chunk_base_url.clone(),
                },
            )
        });
        TrustBundle {
            rotations: ring.trust.rotations.clone(),
            online_key: ring.trust.online_key.clone(),
            timestamp,
            instructions,
        }
    }

    /// Applies a till's progress report (idempotent by sequence number).
    pub async fn report(&self, token: String, report: ProgressReport) -> Result<ReportOutcome> {
        report
            .validate()
            .map_err(|m| Error::bad("invalid_report", m))?;
        let change = crate::events::Change::Target {
            task_id: report.task_id,
            guid: report.device_id,
            state: report.state,
        };
        let outcome = self
            .write(move |tx, now| {
                check_device(tx, &token, &report.device_id, now)?;
                tasks::apply_report(tx, &report, now)
            })
            .await?;
        self.publish(change);
        Ok(outcome)
    }

    /// Checks a manifest or chunk request's credential: a live device token
    /// (answers its device), or an operator's API token of any role (`None`).
    pub async fn authorize_fetch(&self, token: String) -> Result<Option<DeviceId>> {
        if device_auth::is_device_token(&token) {
            return self
                .read(
                    move |conn, now| match device_auth::device_of(conn, &token, now)? {
                        Some(device) => Ok(Some(device)),
                        None => Err(Error::unauthenticated(
                            "invalid_device_token",
                            "the device token is invalid or expired; log in again",
                        )),
                    },
                )
                .await;
        }
        match self.authenticate(Some(token), None).await? {
            Some(_) => Ok(None),
            None => Err(Error::unauthenticated(
                "invalid_credentials",
                "manifests and chunks need a device token or an operator's API token",
            )),
        }
    }

    /// Forgets a device's key and ends its sessions: the next key it brings
    /// binds (a replaced disk, a stolen till's successor).
    pub async fn reset_device_key(&self, guid: DeviceId, by: &Caller) -> Result<Device> {
        let note = Note::on(format!("device:{guid}"));
        self.change(by, "device.reset_key", note, move |tx, now, _| {
            device_auth::reset_key(tx, &guid)?;
            devices::get(tx, &guid, now)
        })
        .await
    }

    /// Makes a store enrollment token; its secret is shown once.
    pub async fn create_enroll_token(
        &self,
        input: NewEnrollTokenInput,
        by: &Caller,
    ) -> Result<NewEnrollToken> {
        let days = input.expires_days.unwrap_or(7);
        if !(1..=MAX_ENROLL_DAYS).contains(&days) {
            return Err(Error::bad(
                "invalid_expiry",
                format!("expires_days is 1 to {MAX_ENROLL_DAYS}"),
            ));
        }
        let mut note = Note::on(format!("store:{}", input.store_id));
        note.detail(format!("{days} days"));
        let created_by = by.actor.name.clone();
        self.change(by, "enroll_token.create", note, move |tx, now, note| {
            let made = device_auth::create_enroll_token(
                tx,
                &input.store_id,
                now + days as i64 * 86_400_000,
                input.max_uses.unwrap_or(100),
                &created_by,
                now,
            )?;
            note.detail(format!("token {} for {days} days", made.token.id));
            Ok(made)
        })
        .await
    }

    /// Every enrollment token, newest first.
    pub async fn enroll_tokens(&self) -> Result<Vec<EnrollToken>> {
        self.read(|conn, _| device_auth::enroll_tokens(conn)).await
    }

    /// Revokes an enrollment token.
    pub async fn revoke_enroll_token(&self, id: EnrollTokenId, by: &Caller) -> Result<()> {
        let id = id.0;
        let note = Note::on(format!("enroll_token:{id}"));
        self.change(by, "enroll_token.revoke", note, move |tx, now, _| {
            device_auth::revoke_enroll_token(tx, id, now)
        })
        .await
    }
}

/// A random share of `interval * fraction`, from the OS's randomness.
fn jitter_ms(interval: u64, fraction: f64) -> u64 {
    let span = (interval as f64 * fraction.clamp(0.0, 1.0)) as u64;
    if span == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % span
}
