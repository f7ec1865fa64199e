//! The PostgreSQL backend: a `deadpool-postgres` pool of `tokio-postgres`
//! clients, the translation of the shared SQL (`?N` placeholders become
//! `$N`), and the value codecs between PostgreSQL's types and
//! [`super::sql::Value`].
//!
//! Queries run on blocking threads that wait on the client's futures, so the
//! table modules' synchronous code runs unchanged. Every writing transaction
//! takes one advisory lock first ([`BEGIN`]): writers, from any number of
//! coordinators on the database, run one at a time as SQLite's single writer
//! does, so no read-then-write in the table modules can interleave with
//! another.

use super::pg_tls::Server;
use std::borrow::Cow;
use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::sql::{Error, Result, Value, ValueRef};

// Advisory locks are keyed on the schema's oid and a kind, so coordinators
// of different schemas of one database (the test suite's) do not contend.

/// How a writing transaction begins: with the writers' lock (kind 1).
pub const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
     SELECT pg_advisory_xact_lock(current_schema()::regnamespace::oid::int4, 1)";

/// Takes the writers' lock for the session (a job of [`super::Db`]).
pub const LOCK_WRITERS: &str =
    "SELECT pg_advisory_lock(current_schema()::regnamespace::oid::int4, 1)";

/// Releases it.
pub const UNLOCK_WRITERS: &str =
    "SELECT pg_advisory_unlock(current_schema()::regnamespace::oid::int4, 1)";

/// Waits for the chunk store's lock (kind 2) for the session: package
/// ingestion, deletion and chunk collection, one at a time across the
/// coordinators of the database (they share the chunk store).
const LOCK_CHUNKS: &str = "SELECT pg_advisory_lock(current_schema()::regnamespace::oid::int4, 2)";

/// Tries for the scheduler's lock (kind 3) for the session.
const TRY_LEAD: &str = "SELECT pg_try_advisory_lock(current_schema()::regnamespace::oid::int4, 3)";

/// The server's words for a failure (its message, detail and code), not
/// tokio-postgres's bare "db error".
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut out = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                out.push_str(": ");
                out.push_str(detail);
            }
            out
        }
        // The cause says what went wrong (a refused connection, a
        // certificate no trusted root signed); tokio-postgres's own text
        // only names the step ("error performing TLS handshake").
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

pub(super) fn is_constraint_violation(e: &tokio_postgres::Error) -> bool {
    // Class 23: integrity constraint violation.
    e.code().is_some_and(|c| c.code().starts_with("23"))
}

/// The shared SQL in PostgreSQL's form, and which of the caller's values
/// to bind (`None`: all, in order).
///
/// `?N` becomes `$N` and a bare `?` the next number; quoted text, quoted
/// names and comments stay as they are. PostgreSQL must know the type of
/// every parameter up to the highest, while SQLite ignores one a query does
/// not use (a group's id where the group's query needs none): unused numbers
/// are closed up and their values left out.
pub fn translate(sql: &str) -> (Cow<'_, str>, Option<Vec<usize>>) {
    if !sql.contains('?') {
        return (Cow::Borrowed(sql), None);
    }
    let mut used = Vec::new();
    let numbered = renumber(sql, |n| {
        used.push(n);
        n
    });
    let highest = used.iter().copied().max().unwrap_or(0);
    used.sort_unstable();
    used.dedup();
    if used.len() == highest {
        return (Cow::Owned(numbered), None);
    }
    let out = renumber(&numbered.replace('$', "?"), |n| {
        used.binary_search(&n).map_or(n, |i| i + 1)
    });
    (Cow::Owned(out), Some(used.iter().map(|n| n - 1).collect()))
}

/// Rewrites each placeholder outside quotes and comments as `$` and the
/// number `f` gives for it (a bare `?` is one past the previous).
fn renumber(sql: &str, mut f: impl FnMut(usize) -> usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = if digits.is_empty() {
                    next + 1
                } else {
                    digits.parse().unwrap_or(0)
                };
                next = next.max(n);
                out.push('$');
                out.push_str(&f(n).to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// Where a client's futures run: the caller's runtime (a blocking thread of
/// it), or a runtime of the client's own (the command line, unit tests).
enum Runtime {
    Handle(tokio::runtime::Handle),
    Owned(tokio::runtime::Runtime),
}

enum Conn {
    Pooled(deadpool_postgres::Object),
    Plain(tokio_postgres::Client),
    /// Discarded as its connection ended (see [`Client::discard`]).
    Gone,
}

/// Most statements a plain client keeps prepared.
const MAX_PREPARED: usize = 512;

/// One PostgreSQL client, used synchronously from a thread that may block.
pub struct Client {
    conn: Conn,
    runtime: Runtime,
    /// A plain client's prepared statements by their PostgreSQL text (a
    /// pooled one has its pool's cache).
    prepared: std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

impl Client {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Runtime::Handle(h) => h.block_on(f),
            Runtime::Owned(rt) => rt.block_on(f),
        }
    }

    /// Drops the session instead of returning it to the pool (its state is
    /// unknown after a failed cleanup).
    pub(super) fn discard(&mut self) {
        if let Conn::Pooled(o) = std::mem::replace(&mut self.conn, Conn::Gone) {
            drop(deadpool_postgres::Object::take(o));
        }
    }

    /// Whether the session ended (the server went away or closed it).
    pub(super) fn is_closed(&self) -> bool {
        if let Runtime::Owned(rt) = &self.runtime {
            // The connection's task runs only while this thread waits on the
            // runtime: let it take in what the server sent meanwhile (its
            // goodbye, or the end of the socket).
            rt.block_on(tokio::task::yield_now());
        }
        match &self.conn {
            Conn::Pooled(o) => o.is_closed(),
            Conn::Plain(c) => c.is_closed(),
            Conn::Gone => true,
        }
    }

    fn client(&self) -> &tokio_postgres::Client {
        match &self.conn {
            Conn::Pooled(o) => o,
            Conn::Plain(c) => c,
            Conn::Gone => unreachable!("a discarded client is not used again"),
        }
    }

    /// Connects outside any runtime, on a single-threaded one of its own:
    /// the connection's task runs on the calling thread while it waits for
    /// an answer, so a query costs no hop between threads.
    pub(crate) fn connect_blocking(server: &Server) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("runtime: {e}")))?;
        let client = rt.block_on(async {
            let (client, connection) = server.config.connect(server.tls.clone()).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok::<_, Error>(client)
        })?;
        Ok(Self {
            conn: Conn::Plain(client),
            runtime: Runtime::Owned(rt),
            prepared: Default::default(),
        })
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.block_on(self.client().batch_execute(sql))?)
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<Prepared> {
        let (sql, pick) = translate(sql);
        let statement = match &self.conn {
            Conn::Pooled(o) => self.block_on(o.prepare_cached(&sql))?,
            Conn::Plain(c) => {
                let cached = self.cached(&sql);
                match cached {
                    Some(statement) => statement,
                    None => {
                        let statement = self.block_on(c.prepare(&sql))?;
                        if let Ok(mut cache) = self.prepared.lock() {
                            if cache.len() >= MAX_PREPARED {
                                // Text built at run time (lists of values)
                                // must not grow it without end.
                                cache.clear();
                            }
                            cache.insert(sql.into_owned(), statement.clone());
                        }
                        statement
                    }
                }
            }
            Conn::Gone => unreachable!("a discarded client is not used again"),
        };
        Ok(Prepared { statement, pick })
    }

    fn cached(&self, sql: &str) -> Option<tokio_postgres::Statement> {
        self.prepared.lock().ok()?.get(sql).cloned()
    }

    pub(super) fn execute(&self, stmt: &Prepared, values: &[ValueRef<'_>]) -> Result<u64> {
        let params = stmt.bind(values);
        Ok(self.block_on(self.client().execute(&stmt.statement, &params))?)
    }

    pub(super) fn query(
        &self,
        stmt: &Prepared,
        values: &[ValueRef<'_>],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let params = stmt.bind(values);
        Ok(self.block_on(self.client().query(&stmt.statement, &params))?)
    }
}

/// A statement prepared on PostgreSQL, with the values it takes.
pub struct Prepared {
    statement: tokio_postgres::Statement,
    /// Which of the caller's values to bind (see [`translate`]).
    pick: Option<Vec<usize>>,
}

impl Prepared {
    fn bind<'v>(&self, values: &'v [ValueRef<'v>]) -> Vec<&'v (dyn ToSql + Sync)> {
        match &self.pick {
            None => values.iter().map(|v| v as _).collect(),
            Some(pick) => pick
                .iter()
                .map(|&i| values.get(i).unwrap_or(&ValueRef::Null) as _)
                .collect(),
        }
    }
}

/// A pool of clients for one database (and schema), and this
/// coordinator's claim to run the scheduler.
#[derive(Clone)]
pub struct Pool {
    pool: deadpool_postgres::Pool,
    server: Server,
    leader: std::sync::Arc<tokio::sync::Mutex<Leader>>,
}

/// The session that holds (or tries for) the scheduler's lock ([`TRY_LEAD`]):
/// held by one session of one coordinator at a time, released by PostgreSQL
/// when that session ends (its coordinator stopped, crashed or lost the
/// network), so another takes over at its next tick.
#[derive(Default)]
struct Leader {
    client: Option<tokio_postgres::Client>,
    leading: bool,
}

/// The session holding the chunk store's lock (see [`Pool::lock_chunks`]).
pub struct ChunksLock {
    _session: tokio_postgres::Client,
}

/// Most connections one coordinator holds.
const POOL_SIZE: usize = 16;

impl Pool {
    /// A pool for `server`; connects lazily.
    pub(crate) fn new(server: Server) -> Result<Self> {
        let manager = deadpool_postgres::Manager::from_config(
            server.config.clone(),
            server.tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::Backend(format!("pool: {e}")))?;
        Ok(Self {
            pool,
            server,
            leader: Default::default(),
        })
    }

    /// Whether this coordinator runs the scheduler now: it holds the leader
    /// lock, or just took it. Cheap while held (one query a tick, which also
    /// notices a session the server ended).
    pub async fn lead(&self) -> Result<bool> {
        let mut leader = self.leader.lock().await;
        if leader.client.as_ref().is_some_and(|c| c.is_closed()) {
            if leader.leading {
                tracing::warn!(
                    "lost the scheduler's lock with its session; trying to take it back"
                );
            }
            *leader = Leader::default();
        }
        if leader.client.is_none() {
            let (client, connection) = self.server.connect().await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            leader.client = Some(client);
        }
        let Some(client) = leader.client.as_ref() else {
            return Ok(false);
        };
        let sql = if leader.leading {
            // Still ours? (A query on a dead session fails here.)
            "SELECT true"
        } else {
            TRY_LEAD
        };
        match client.query_one(sql, &[]).await {
            Ok(row) => {
                let now: bool = row.get(0);
                if now && !leader.leading {
                    tracing::info!("this coordinator now runs the scheduler");
                }
                leader.leading = now;
                Ok(now)
            }
            Err(e) => {
                *leader = Leader::default();
                Err(e.into())
            }
        }
    }

    /// Waits until this coordinator holds the chunk store's lock
    /// ([`LOCK_CHUNKS`]) on a session of its own, kept while the returned
    /// guard lives. PostgreSQL releases it when that session ends: the
    /// guard dropped, or its process gone.
    pub async fn lock_chunks(&self) -> Result<ChunksLock> {
        let (client, connection) = self.server.connect().await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client.query_one(LOCK_CHUNKS, &[]).await?;
        Ok(ChunksLock { _session: client })
    }

    /// A client from the pool, to use on a blocking thread of this runtime.
    pub async fn get(&self) -> Result<Client> {
        let object = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Postgres(e),
            e => Error::Backend(format!("pool: {e}")),
        })?;
        Ok(Client {
            conn: Conn::Pooled(object),
            runtime: Runtime::Handle(tokio::runtime::Handle::current()),
            prepared: Default::default(),
        })
    }
}

/// Column `idx` of `row`, whatever its PostgreSQL type.
pub(super) fn column(row: &tokio_postgres::Row, idx: usize) -> Result<Value> {
    Ok(row.try_get::<_, Any>(idx)?.0)
}

/// Any column value, decoded by its type.
struct Any(Value);

impl<'a> FromSql<'a> for Any {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Any(match *ty {
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            ref t if <&str as FromSql>::accepts(t) => Value::Text(String::from_sql(ty, raw)?),
            ref t => return Err(format!("column type {t} is not one tillswarm reads").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Any(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A NUMERIC (what `sum` of integers gives): an integer when it has no
/// fraction and fits, else a double.
fn numeric(raw: &[u8]) -> Result<Value, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn StdError + Sync + Send>> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short NUMERIC".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut whole: i128 = 0;
    let mut real = 0f64;
    let mut exact = true;
    for i in 0..ndigits {
        let digit = i128::from(word(8 + 2 * i)?);
        let power = weight - i as i32;
        real += digit as f64 * 10_000f64.powi(power);
        if power < 0 {
            exact &= digit == 0;
        } else {
            whole = whole
                .checked_add(
                    digit
                        .checked_mul(10_000i128.checked_pow(power as u32).unwrap_or(0))
                        .unwrap_or(0),
                )
                .unwrap_or(i128::MAX);
        }
    }
    let whole = if negative { -whole } else { whole };
    match i64::try_from(whole) {
        Ok(i) if exact => Ok(Value::Integer(i)),
        _ => Ok(Value::Real(if negative { -real } else { real })),
    }
}

impl ToSql for ValueRef<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match *self {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                ref t if <&str as ToSql>::accepts(t) => i.to_string().as_str().to_sql(ty, out),
                ref t => Err(format!("an integer bound where {t} was expected").into()),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                ref t => Err(format!("a double bound where {t} was expected").into()),
            },
            ValueRef::Text(s) => match *ty {
                ref t if <&str as ToSql>::accepts(t) => s.to_sql(ty, out),
                ref t => Err(format!("text bound where {t} was expected").into()),
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                ref t => Err(format!("bytes bound where {t} was expected").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes_and_comments() {
        let (sql, pick) =
            translate("SELECT a FROM t WHERE b = ?1 AND c = ?2 AND d = '?3' -- ?4\n AND e = ?");
        assert_eq!(
            sql,
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '?3' -- ?4\n AND e = $3"
        );
        assert_eq!(pick, None);
        assert_eq!(translate("SELECT ? , ?").0, "SELECT $1 , $2");
        assert!(matches!(translate("SELECT 1").0, Cow::Borrowed(_)));
    }

    #[test]
    fn unused_parameters_are_closed_up_and_their_values_left_out() {
        let (sql, pick) = translate("SELECT ?3 FROM t WHERE x = ?2 AND y = ?3");
        assert_eq!(sql, "SELECT $2 FROM t WHERE x = $1 AND y = $2");
        assert_eq!(pick, Some(vec![1, 2]));
    }

    #[test]
    fn numeric_sums_read_as_integers_and_fractions_as_doubles() {
        // 123456789: weight 2, digits 1 2345 6789.
        let raw = [0, 3, 0, 2, 0, 0, 0, 0, 0, 1, 0x09, 0x29, 0x1A, 0x85];
        assert_eq!(numeric(&raw).expect("numeric"), Value::Integer(123_456_789));
        // -2.5: weight 0, digits 2 5000, dscale 1.
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 2, 0x13, 0x88];
        assert_eq!(numeric(&raw).expect("numeric"), Value::Real(-2.5));
        // Zero: no digits.
        assert_eq!(
            numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).expect("zero"),
            Value::Integer(0)
        );
        assert!(
            numeric(&[0, 5, 0, 0]).is_err(),
            "short input is refused, not read past"
        );
    }
}
