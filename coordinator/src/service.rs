//! [`Coordinator`]: the service's operations, independent of HTTP. Each one is a
//! short job on the database thread, plus chunk-store IO off the executor.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tillswarm_protocol::manifest::{PublicKey, SecretKey};
use tillswarm_protocol::operator::groups::GroupId;
use tillswarm_protocol::{DeviceId, TaskId};

use crate::audit::{self, Note, Outcome};
use crate::auth::limiter::{LoginLimiter, LoginLimits};
use crate::auth::password::Hasher;
use crate::auth::{Caller, rules};
use crate::chunks::ChunkStore;
use crate::clock::{Clock, SystemClock};
use crate::db::Db;
use crate::devices::{self, Device, DeviceFilter, ImportSummary, Store};
use crate::error::{Error, Result};
use crate::events::Change;
use crate::groups::{self, Group, GroupInput};
use crate::metrics::Metrics;
use crate::tasks::{self, NewTask, TaskDetail, TaskFilter, TaskSummary};
use crate::till_types::{self, TillType, TillTypeInput};

/// The database's file name in the data folder.
pub const DB_FILE: &str = crate::db::SQLITE_FILE;

/// Coordinator settings. Every field has a default suited to a single head office.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder for the database, chunk store and signing key.
    pub data_dir: PathBuf,
    /// Largest package upload accepted, in bytes.
    pub max_package_bytes: u64,
    /// Largest size a package may unpack to, in bytes (a compressed archive
    /// declaring more is refused at upload: decompression bombs).
    pub max_unpacked_bytes: u64,
    /// How often tills should poll, in milliseconds (before jitter).
    pub poll_interval_ms: u64,
    /// Random spread added to each poll hint, as a fraction of the interval, so
    /// tills that started together do not poll together.
    pub poll_jitter: f64,
    /// How often the scheduler looks for due tasks, in milliseconds.
    pub scheduler_tick_ms: u64,
    /// How long a till may act on a signed timestamp or accept signed
    /// instructions, in seconds: past it, a till cut off from the coordinator
    /// (or fed old answers) reports `stale_instructions` instead of acting.
    pub instructions_ttl_s: u64,
    /// How long a device token from one till login lasts, in seconds.
    pub device_token_ttl_s: u64,
    /// A login session unused this long ends, in seconds.
    pub session_idle_timeout_s: u64,
    /// A login session ends this long after login however busy, in seconds.
    pub session_max_age_s: u64,
    /// Audit rows older than this many days are purged.
    pub audit_retention_days: u64,
    /// Origins besides the coordinator's own (`https://panel.example:8443`) whose
    /// pages may make cookie-authenticated changes (a proxy's public address).
    pub allowed_origins: Vec<String>,
    /// When set, `/metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// Session cookies are `Secure` (and `__Host-` prefixed) even on plain
    /// HTTP requests: for a coordinator behind a TLS-terminating proxy.
    /// Requests that arrive over the coordinator's own TLS always get them.
    pub secure_cookies: bool,
    /// Login attempts in a burst for one user name, then one per
    /// `login_user_period_s`.
    pub login_user_burst: u32,
    /// Seconds per further login attempt for one user name.
    pub login_user_period_s: u64,
    /// Login attempts in a burst from one client address, then one per
    /// `login_client_period_s`.
    pub login_client_burst: u32,
    /// Seconds per further login attempt from one client address.
    pub login_client_period_s: u64,
    /// The IANA time zone of stores whose registry entry names none.
    pub default_time_zone: String,
    /// A till not heard from (heartbeat or report) for this many seconds is
    /// `unreachable` in its tasks: counted apart from failed, and it gives
    /// back an unused install permit.
    pub unreachable_after_s: u64,
    /// Keep chunks in this bucket (S3-compatible, `AWS_*` environment)
    /// instead of `<data>/chunks`. Never serialized (it holds the secret).
    #[serde(skip)]
    pub chunk_store: Option<crate::chunks::bucket::BucketConfig>,
    /// Tills fetch chunks from this `http(s)://` base URL (a CDN or the
    /// bucket's endpoint with the key prefix), falling back to the
    /// coordinator; named in their signed instructions.
    pub chunk_base_url: Option<String>,
    /// Where the tables live: SQLite in the data folder, or PostgreSQL.
    #[serde(skip)]
    pub database: crate::db::Database,
}

/// Longest session a setting may ask for (days); longer values are clamped.
const MAX_SESSION_S: u64 = 30 * 86_400;

impl Config {
    /// The settings with every duration clamped to a sane range, and each
    /// allowed origin checked (`http(s)://host[:port]`, nothing else).
    pub fn checked(mut self) -> Result<Self> {
        self.session_max_age_s = self.session_max_age_s.clamp(60, MAX_SESSION_S);
        self.session_idle_timeout_s = self
            .session_idle_timeout_s
            .clamp(60, self.session_max_age_s);
        self.audit_retention_days = self.audit_retention_days.clamp(1, 36_500);
        self.device_token_ttl_s = self.device_token_ttl_s.clamp(60, 86_400);
        self.login_user_period_s = self.login_user_period_s.clamp(1, 86_400);
        self.login_client_period_s = self.login_client_period_s.clamp(1, 86_400);
        self.unreachable_after_s = self.unreachable_after_s.clamp(60, 30 * 86_400);
        crate::windows::zone(&self.default_time_zone, &jiff::tz::TimeZone::UTC)?;
        if let Some(url) = &mut self.chunk_base_url {
            let trimmed = url.trim_end_matches('/');
            if !tillswarm_protocol::trust::is_chunk_base_url(trimmed) {
                return Err(Error::bad(
                    "invalid_chunk_base_url",
                    format!(
                        "chunk base URL {url:?} is not an http(s) URL without query or \
                         fragment, at most {} bytes",
                        tillswarm_protocol::trust::MAX_CHUNK_BASE_URL
                    ),
                ));
            }
            *url = trimmed.to_owned();
        }
        for origin in &self.allowed_origins {
            if crate::http::guard::normalize_origin(origin).is_none() {
                return Err(Error::bad(
                    "invalid_origin",
                    format!(
                        "allowed origin {origin:?} is not scheme://host[:port] with http or https"
                    ),
                ));
            }
        }
        Ok(self)
    }
}

impl Config {
    /// Most bytes of content (the uncompressed tar) an upload may expand to:
    /// the unpacked cap plus room for tar headers and padding (at most 1 KiB
    /// for each of the archive rules' 200,000 entries), within what a
    /// manifest may describe.
    pub fn max_content_bytes(&self) -> u64 {
        self.max_unpacked_bytes
            .saturating_add(256 << 20)
            .min(tillswarm_protocol::manifest::MAX_PACKAGE_SIZE)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tillswarm-data"),
            max_package_bytes: 4 << 30,
            max_unpacked_bytes: 16 << 30,
            poll_interval_ms: 30_000,
            poll_jitter: 0.2,
            scheduler_tick_ms: 250,
            instructions_ttl_s: 24 * 3600,
            device_token_ttl_s: 3600,
            session_idle_timeout_s: 30 * 60,
            session_max_age_s: 12 * 3600,
            audit_retention_days: 365,
            allowed_origins: Vec::new(),
            metrics_token: None,
            secure_cookies: false,
            login_user_burst: 5,
            login_user_period_s: 12,
            login_client_burst: 30,
            login_client_period_s: 2,
            default_time_zone: "UTC".into(),
            unreachable_after_s: 15 * 60,
            chunk_store: None,
            chunk_base_url: None,
            database: crate::db::Database::Default,
        }
    }
}

pub use tillswarm_protocol::operator::Page;

/// Paging parameters (`?page=2&per_page=50`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Paging {
    /// 1-based page, default 1.
    pub page: Option<u64>,
    /// Page size, default 100, at most [`MAX_PER_PAGE`].
    pub per_page: Option<u64>,
}

/// Largest page size.
pub const MAX_PER_PAGE: u64 = 1000;

impl Paging {
    pub(crate) fn resolve(self) -> Result<(u64, u64)> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(100);
        if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE || page > 1_000_000 {
            return Err(Error::bad(
                "invalid_paging",
                format!("page starts at 1 and per_page is 1 to {MAX_PER_PAGE}"),
            ));
        }
        Ok((page, per_page))
    }
}

pub(crate) fn page_of<T>(items: Vec<T>, total: u64, page: u64, per_page: u64) -> Page<T> {
    Page {
        items,
        total,
        page,
        per_page,
    }
}

pub use tillswarm_protocol::operator::packages::PackageDetail;

/// The coordinator service. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: Db,
    chunks: ChunkStore,
    /// The root's chain and the online key; replaced when the command line
    /// rotates keys (noticed by the scheduler).
    keys: std::sync::RwLock<Arc<crate::keys::KeyRing>>,
    /// `trust.json` as last loaded, to notice a rotation.
    keys_stamp: std::sync::Mutex<Option<(u64, std::time::SystemTime)>>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// Serialises package ingestion, deletion and chunk collection in this
    /// process (see [`package_ops::ChunkStoreLock`]).
    ingest: Arc<tokio::sync::Mutex<()>>,
    /// Password hashing off the executor, a few at a time.
    hasher: Hasher,
    /// Slows repeated login attempts.
    logins: LoginLimiter,
    /// Device login challenges.
    challenges: crate::device_auth::Challenges,
    /// When the scheduler last purged old audit rows and sessions (ms).
    last_purge_ms: std::sync::atomic::AtomicI64,
    /// Set once an operator account is known to exist (the last admin cannot
    /// be removed, so it never turns false again).
    has_users: std::sync::atomic::AtomicBool,
    /// Live changes for the panel's event streams.
    events: crate::events::Bus,
    /// The last heartbeat written per till (unchanged polls skip writing).
    quiet_polls: quiet_polls::QuietPolls,
    /// Quiet polls' reads, answered many to a statement.
    quiet_reads: Arc<coalesce::Coalesce<devices::quiet::QuietAsk, Option<u64>>>,
    /// Unchanged heartbeats' refreshes, written many to a statement.
    refreshes: Arc<coalesce::Coalesce<devices::refresh::Refresh, bool>>,
}

impl Coordinator {
    /// Opens the data folder (creating it), the database, chunk store and key, and
    /// removes chunks that no package references (left by an interrupted upload).
    pub async fn open(config: Config) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Coordinator::open`], with a given clock (tests move time by hand).
    pub async fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self> {
        let config = config.checked()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let db = Db::connect(&config.database, &config.data_dir).await?;
        let mut chunks = ChunkStore::open(&config.data_dir.join("chunks"))?;
        if let Some(url) = &config.chunk_store {
            chunks = chunks.with_bucket(crate::chunks::bucket::Bucket::open(url).await?);
        }
        let keys = crate::keys::load_or_init(&config.data_dir)?;
        let keys_stamp = crate::keys::stamp(&config.data_dir);
        let logins = LoginLimiter::new(LoginLimits {
            per_user_burst: config.login_user_burst,
            per_user_period: std::time::Duration::from_secs(config.login_user_period_s),
            per_client_burst: config.login_client_burst,
            per_client_period: std::time::Duration::from_secs(config.login_client_period_s),
        });
        let coordinator = Self {
            inner: Arc::new(Inner {
                config,
                db,
                chunks,
                keys: std::sync::RwLock::new(Arc::new(keys)),
                keys_stamp: std::sync::Mutex::new(keys_stamp),
                clock,
                metrics: Metrics::default(),
                ingest: Arc::new(tokio::sync::Mutex::new(())),
                hasher: Hasher::default(),
                logins,
                challenges: crate::device_auth::Challenges::new()?,
                last_purge_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
                has_users: std::sync::atomic::AtomicBool::new(false),
                events: crate::events::Bus::default(),
                quiet_polls: quiet_polls::QuietPolls::default(),
                quiet_reads: coalesce::Coalesce::new("quiet poll reads"),
                refreshes: coalesce::Coalesce::new("heartbeat refreshes"),
            }),
        };
        coordinator.collect_garbage().await?;
        let base = coordinator.inner.config.chunk_base_url.clone();
        let changed = coordinator
            .write(move |tx, _| devices::note_chunk_base_url(tx, base.as_deref()))
            .await?;
        if changed {
            tracing::info!(
                base = ?coordinator.inner.config.chunk_base_url,
                "chunk base URL changed: every till gets new instructions at its next poll"
            );
        }
        coordinator.resign_manifests().await?;
        Ok(coordinator)
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The root public key tills pin (`coordinator.pub`).
    pub fn public_key(&self) -> PublicKey {
        self.key_ring().trust.root
    }

    /// The keys in force.
    pub(crate) fn key_ring(&self) -> Arc<crate::keys::KeyRing> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The online public key (signs manifests, instructions, timestamps).
    pub fn online_public_key(&self) -> PublicKey {
        self.key_ring().online.public()
    }

    /// A copy of the online secret, for signing off the executor.
    pub(crate) fn online_secret(&self) -> SecretKey {
        SecretKey::from_seed(self.key_ring().online.to_seed())
    }

    /// Reloads the keys when the command line rotated them (`trust.json`
    /// changed), then re-signs every stored manifest with the new online key.
    pub async fn reload_keys_if_rotated(&self) -> Result<bool> {
        let dir = self.inner.config.data_dir.clone();
        let now = crate::keys::stamp(&dir);
        {
            let mut seen = self
                .inner
                .keys_stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let ring = tokio::task::spawn_blocking(move || crate::keys::load_or_init(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        tracing::info!(
            serial = ring.trust.serial,
            root_version = ring.trust.root_version,
            "keys rotated; reloaded"
        );
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
        self.resign_manifests().await?;
        Ok(true)
    }

    /// Re-signs every stored manifest that the online key did not sign (after
    /// a rotation, or manifests from before the key hierarchy), so tills that
    /// check manifests against the certified online key accept them.
    async fn resign_manifests(&self) -> Result<()> {
        let key = self.online_secret();
        let resigned = self
            .write(move |tx, _| {
                let public = key.public();
                let rows: Vec<(String, Vec<u8>)> = tx
                    .prepare("SELECT package_id, manifest FROM packages")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<crate::db::sql::Result<_>>()?;
                let mut n = 0;
                for (id, bytes) in rows {
                    let Ok(signed) = tillswarm_protocol::SignedManifest::from_bytes(&bytes) else {
                        continue;
                    };
                    if signed.verify(&public).is_ok() {
                        continue;
                    }
                    let Ok(m) = signed.body_unverified() else {
                        tracing::error!(package = %id, "a stored manifest does not decode; left as it is");
                        continue;
                    };
                    let fresh = key.sign_manifest(&m).to_bytes();
                    tx.execute(
                        "UPDATE packages SET manifest = ?2 WHERE package_id = ?1",
                        crate::db::sql::params![id, fresh],
                    )?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        if resigned > 0 {
            tracing::info!(resigned, "re-signed manifests with the online key");
        }
        Ok(())
    }

    /// Request and traffic counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Now, by the coordinator's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The zone of stores that name none (checked when the config was).
    pub(crate) fn default_zone(&self) -> jiff::tz::TimeZone {
        crate::windows::zone(
            &self.inner.config.default_time_zone,
            &jiff::tz::TimeZone::UTC,
        )
        .unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// Silence after which a till is unreachable, in ms.
    pub(crate) fn unreachable_ms(&self) -> i64 {
        self.inner.config.unreachable_after_s as i64 * 1000
    }

    /// Runs the read `f` on one consistent state of the database (see
    /// [`Db::call_snapshot`]).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&crate::db::sql::Connection, i64) -> Result<T> + Send + 'static,
    {
        let now = self.now_ms();
        self.inner.db.call_snapshot(move |conn| f(conn, now)).await
    }

    /// Runs `f` in one transaction, durable on disk when it returns
    /// (`synchronous=FULL`): acknowledged changes survive a power cut.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&crate::db::sql::Transaction<'_>, i64) -> Result<T> + Send + 'static,
    {
        self.write_with(crate::db::Durability::Full, f).await
    }

    /// [`Coordinator::write`] with a chosen durability: heartbeats, which a
    /// till repeats every poll, may lose their last commits to a power cut
    /// (never corrupting the database) and skip the fsync.
    async fn write_with<T, F>(&self, durability: crate::db::Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&crate::db::sql::Transaction<'_>, i64) -> Result<T> + Send + 'static,
    {
        let now = self.now_ms();
        self.inner
            .db
            .call(move |conn| {
                if let Some(lite) = conn.as_sqlite() {
                    crate::db::set_durability(lite, durability)?;
                }
                // IMMEDIATE: the write lock from the start, so the command
                // line (another process) committing in between cannot fail it.
                let tx =
                    conn.transaction_with_behavior(crate::db::sql::TransactionBehavior::Immediate)?;
                if durability == crate::db::Durability::Relaxed && tx.is_postgres() {
                    tx.execute_batch("SET LOCAL synchronous_commit = off")?;
                }
                let out = f(&tx, now)?;
                tx.commit()?;
                Ok(out)
            })
            .await
    }

    /// Runs `f` as a relaxed write that may share its transaction with the
    /// other such writes waiting for the database (group commit; see
    /// [`crate::db::Db::call_batched`]). For heartbeats: thousands a second
    /// at fleet scale, each cheap, each repeated by its till next poll.
    async fn write_batched<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&crate::db::sql::Transaction<'_>, i64) -> Result<T> + Send + 'static,
    {
        let now = self.now_ms();
        self.inner.db.call_batched(move |tx| f(tx, now)).await
    }

    /// Runs `f` in one transaction and appends its audit row (outcome `ok`) in
    /// the same transaction, so no change commits without its row. If `f` fails,
    /// nothing of it commits and a `failed` row is appended on its own. `f` may
    /// fill in the note's target (e.g. the id it created) and detail.
    async fn change<T, F>(&self, by: &Caller, action: &'static str, note: Note, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&crate::db::sql::Transaction<'_>, i64, &mut Note) -> Result<T> + Send + 'static,
    {
        let caller = by.clone();
        let first = note.clone();
        let ok_status = rules::ok_status(&by.method, &by.route);
        let result = self
            .write(move |tx, now| {
                let mut note = note;
                let out = f(tx, now, &mut note)?;
                audit::append(tx, &caller, action, &note, Outcome::Ok, ok_status, now)?;
                Ok((out, note.target))
            })
            .await;
        match result {
            Ok((out, target)) => {
                if let Some(change) = crate::events::change_of_action(action, target.as_deref()) {
                    self.publish(change);
                }
                Ok(out)
            }
            Err(e) => {
                self.audit_failure(by, action, first, &e).await;
                Err(e)
            }
        }
    }

    /// Tells the open event streams about a change.
    pub fn publish(&self, change: Change) {
        self.inner.events.publish(change);
    }

    /// The change bus (the event stream route subscribes to it).
    pub fn events(&self) -> &crate::events::Bus {
        &self.inner.events
    }

    /// Appends a `failed` audit row for an attempt that ended in `e`.
    pub(crate) async fn audit_failure(
        &self,
        by: &Caller,
        action: &'static str,
        note: Note,
        e: &Error,
    ) {
        let mut note = note;
        if note.detail.is_none() {
            note.detail = Some(e.code().to_owned());
        }
        self.audit(by, action, note, Outcome::Failed, e.status().as_u16())
            .await;
    }

    /// Appends an audit row on its own (a refused or failed attempt, a login).
    /// A failure to write it is logged, never hidden from the log.
    pub(crate) async fn audit(
        &self,
        by: &Caller,
        action: &'static str,
        note: Note,
        outcome: Outcome,
        status: u16,
    ) {
        let by = by.clone();
        let written = self
            .write(move |tx, now| audit::append(tx, &by, action, &note, outcome, status, now))
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, action, "could not write an audit row");
        }
    }

    // ----- devices and stores -----

    /// Imports registry rows (CSV or JSON).
    pub async fn import_registry(
        &self,
        body: Vec<u8>,
        is_json: bool,
        by: &Caller,
    ) -> Result<ImportSummary> {
        let entries = match devices::parse_registry(&body, is_json) {
            Ok(e) => e,
            Err(e) => {
                self.audit_failure(by, "registry.import", Note::on("registry"), &e)
                    .await;
                return Err(e);
            }
        };
        self.change(
            by,
            "registry.import",
            Note::on("registry"),
            move |tx, now, note| {
                let summary = devices::import(tx, &entries, now)?;
                note.detail(format!("{} rows", summary.rows));
                Ok(summary)
            },
        )
        .await
    }

    /// A page of devices.
    pub async fn devices(&self, filter: DeviceFilter, paging: Paging) -> Result<Page<Device>> {
        let (page, per) = paging.resolve()?;
        let (items, total) = self
            .read(move |c, now| devices::list(c, &filter, (page - 1) * per, per, now))
            .await?;
        Ok(page_of(items, total, page, per))
    }

    /// One device.
    pub async fn device(&self, guid: DeviceId) -> Result<Device> {
        self.read(move |c, now| devices::get(c, &guid, now)).await
    }

    /// One device with its history: versions it ran (when, by which task),
    /// recent task outcomes, last error.
    pub async fn device_detail(&self, guid: DeviceId) -> Result<devices::history::DeviceDetail> {
        self.read(move |c, now| devices::history::detail(c, devices::get(c, &guid, now)?))
            .await
    }

    /// Approves a pending device.
    pub async fn approve_device(&self, guid: DeviceId, by: &Caller) -> Result<Device> {
        let note = Note::on(format!("device:{guid}"));
        self.change(by, "device.approve", note, move |tx, now, _| {
            devices::approve(tx, &guid)?;
            devices::get(tx, &guid, now)
        })
        .await
    }

    /// Removes a device.
    pub async fn delete_device(&self, guid: DeviceId, by: &Caller) -> Result<()> {
        let note = Note::on(format!("device:{guid}"));
        self.change(by, "device.delete", note, move |tx, _, _| {
            devices::delete(tx, &guid)
        })
        .await
    }

    /// Every store.
    pub async fn stores(&self) -> Result<Vec<Store>> {
        self.read(devices::stores).await
    }

    // ----- groups -----

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.read(|c, _| groups::list(c)).await
    }

    /// One group with members.
    pub async fn group(&self, id: GroupId) -> Result<Group> {
        let id = id.0;
        self.read(move |c, _| groups::get(c, id)).await
    }

    /// Creates a custom group.
    pub async fn create_group(&self, input: GroupInput, by: &Caller) -> Result<Group> {
        self.change(by, "group.create", Note::default(), move |tx, now, note| {
            let id = groups::create(tx, &input, now)?;
            note.target(format!("group:{id}"));
            groups::get(tx, id)
        })
        .await
    }

    /// Edits a custom group.
    pub async fn update_group(&self, id: GroupId, input: GroupInput, by: &Caller) -> Result<Group> {
        let id = id.0;
        let note = Note::on(format!("group:{id}"));
        self.change(by, "group.update", note, move |tx, _, _| {
            groups::update(tx, id, &input)?;
            groups::get(tx, id)
        })
        .await
    }

    /// Deletes a custom group not waiting to be used by a scheduled task.
    pub async fn delete_group(&self, id: GroupId, by: &Caller) -> Result<()> {
        let id = id.0;
        let note = Note::on(format!("group:{id}"));
        self.change(by, "group.delete", note, move |tx, _, _| {
            let waiting = tx
                .prepare_cached("SELECT 1 FROM tasks WHERE group_id = ?1 AND activated_ms IS NULL")?
                .exists([id])?;
            if waiting {
                return Err(Error::conflict(
                    "group_in_use",
                    "a task that has not started yet targets this group",
                ));
            }
            groups::delete(tx, id)
        })
        .await
    }

    /// Creates a group from the tills of a task in the given states.
    pub async fn group_from_task(
        &self,
        task: TaskId,
        states: Vec<String>,
        input: GroupInput,
        by: &Caller,
    ) -> Result<Group> {
        let task = task.0 as i64;
        let note = Note::on(format!("task:{task}"));
        self.change(by, "task.group", note, move |tx, now, note| {
            let id = groups::from_task(tx, task, &states, &input, now)?;
            note.detail(format!("group:{id}"));
            groups::get(tx, id)
        })
        .await
    }

    // ----- tasks -----

    /// Creates a task (activated now when it has no timer).
    pub async fn create_task(&self, input: NewTask, by: &Caller) -> Result<TaskDetail> {
        let (zone, unreachable) = (self.default_zone(), self.unreachable_ms());
        self.change(by, "task.create", Note::default(), move |tx, now, note| {
            let id = tasks::create(tx, &input, now)?;
            tasks::permits::refresh(tx, id, now, &permits_cx(&zone, now, unreachable))?;
            note.target(format!("task:{id}"));
            // A task for thousands of tills answers with its summary: its
            // details would hold the database (and the answer) for seconds.
            let short = tasks::summary_only(tx, id)?;
            let task = if short.summary.targets > tasks::DETAILS_IN_CREATE {
                short
            } else {
                tasks::get(tx, id)?
            };
            note.detail(format!(
                "{} {} {} for group {}",
                task.summary.kind.as_str(),
                task.summary.package_name,
                task.summary.package_version,
                task.summary.group_name
            ));
            Ok(task)
        })
        .await
    }

    /// A page of tasks.
    pub async fn tasks(&self, filter: TaskFilter, paging: Paging) -> Result<Page<TaskSummary>> {
        let (page, per) = paging.resolve()?;
        let (items, total) = self
            .read(move |c, _| tasks::list(c, &filter, (page - 1) * per, per))
            .await?;
        Ok(page_of(items, total, page, per))
    }

    /// One task with details: per store, its next window (when the task
    /// has one) and which tills are unreachable.
    pub async fn task(&self, id: TaskId) -> Result<TaskDetail> {
        let id = id.0 as i64;
        let (zone, unreachable) = (self.default_zone(), self.unreachable_ms());
        self.read(move |c, now| {
            let mut task = tasks::get(c, id)?;
            tasks::annotate(c, &mut task, &zone, now, now - unreachable)?;
            Ok(task)
        })
        .await
    }

    /// Pauses a task.
    pub async fn pause_task(&self, id: TaskId, by: &Caller) -> Result<TaskDetail> {
        let id = id.0 as i64;
        let note = Note::on(format!("task:{id}"));
        self.change(by, "task.pause", note, move |tx, _, _| {
            tasks::refuse_if_rollout_active(tx, id, "paused")?;
            tasks::pause(tx, id)?;
            tasks::get(tx, id)
        })
        .await
    }

    /// Resumes a task.
    pub async fn resume_task(&self, id: TaskId, by: &Caller) -> Result<TaskDetail> {
        let id = id.0 as i64;
        let note = Note::on(format!("task:{id}"));
        self.change(by, "task.resume", note, move |tx, now, _| {
            tasks::refuse_if_rollout_active(tx, id, "resumed")?;
            tasks::resume(tx, id, now)?;
            tasks::get(tx, id)
        })
        .await
    }

    /// Restarts a task for the tills not yet done.
    pub async fn restart_task(&self, id: TaskId, by: &Caller) -> Result<TaskDetail> {
        let id = id.0 as i64;
        let note = Note::on(format!("task:{id}"));
        self.change(by, "task.restart", note, move |tx, now, _| {
            tasks::refuse_if_rollout_active(tx, id, "restarted")?;
            tasks::restart(tx, id, now)?;
            tasks::get(tx, id)
        })
        .await
    }

    /// Deletes a task.
    pub async fn delete_task(&self, id: TaskId, by: &Caller) -> Result<()> {
        let id = id.0 as i64;
        let note = Note::on(format!("task:{id}"));
        self.change(by, "task.delete", note, move |tx, _, _| {
            tasks::delete(tx, id)
        })
        .await
    }

    /// One scheduler step: activates due tasks (returns their ids); about once
    /// an hour also purges expired sessions, audit rows past retention and
    /// the chunk log's old rows.
    pub async fn tick(&self) -> Result<Vec<TaskId>> {
        if let Err(e) = self.reload_keys_if_rotated().await {
            tracing::error!(error = %e, "could not reload the rotated keys");
        }
        if !self.inner.db.lead().await? {
            // Another coordinator on this database runs the scheduler.
            return Ok(Vec::new());
        }
        let activated = self.write(tasks::activate_due).await?;
        for &id in &activated {
            self.publish(Change::Task {
                task_id: TaskId(id as u64),
            });
        }
        self.drive_rollouts().await?;
        let now = self.now_ms();
        let last = self
            .inner
            .last_purge_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 3_600_000 {
            self.inner
                .last_purge_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            self.purge().await?;
            let pruned = self.prune_chunk_log().await?;
            if pruned > 0 {
                tracing::info!(rows = pruned, "pruned the chunk log");
            }
        }
        Ok(activated.into_iter().map(|id| TaskId(id as u64)).collect())
    }

    // ----- till types -----

    /// Every till type's settings.
    pub async fn till_types(&self) -> Result<Vec<TillType>> {
        self.read(|c, _| till_types::list(c)).await
    }

    /// Sets a till type's settings.
    pub async fn set_till_type(
        &self,
        name: String,
        input: TillTypeInput,
        by: &Caller,
    ) -> Result<Vec<TillType>> {
        let note = Note::on(format!("till_type:{name}"));
        self.change(by, "till_type.set", note, move |tx, _, _| {
            till_types::set(tx, &name, &input)?;
            till_types::list(tx)
        })
        .await
    }

    /// Gauges for `/metrics`, read from the database.
    pub async fn gauges(&self) -> Result<crate::metrics::Gauges> {
        let mut gauges = self.read(crate::metrics::read_gauges).await?;
        let batches = self.inner.db.batch_stats();
        gauges.db_batches = batches.batches();
        gauges.db_batched_jobs = batches.jobs();
        Ok(gauges)
    }
}

pub mod access;
mod coalesce;
pub mod node_ops;
pub mod package_ops;
mod quiet_polls;
pub mod rollout_ops;
pub mod wan_ops;

/// The permit pass's context at `now`.
pub(crate) fn permits_cx(
    zone: &jiff::tz::TimeZone,
    now: i64,
    unreachable_ms: i64,
) -> tasks::permits::Context<'_> {
    tasks::permits::Context {
        default_zone: zone,
        unreachable_before_ms: now - unreachable_ms,
    }
}
