//! The storage interface: one connection type over both backends, SQLite
//! (rusqlite, embedded) and PostgreSQL (tokio-postgres, see [`super::pg`]).
//! The table modules write their queries once, in the SQL both engines
//! accept (`?N` placeholders, `ON CONFLICT`, `RETURNING`), bind values through
//! [`ToSql`] and read columns through [`FromSql`]; nothing above this module
//! names a backend. Its shape follows rusqlite's, so a query reads the same
//! whichever engine runs it.

use std::cell::Cell;

use super::pg;

/// What a query could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused or failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed (or its connection broke).
    #[error("postgres: {}", pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// `query_row` found no row (see [`OptionalExtension`]).
    #[error("query returned no rows")]
    QueryReturnedNoRows,
    /// A column held a value the reader could not take as its type.
    #[error("column {0} ({1:?}): {2}")]
    FromSqlConversionFailure(usize, types::Type, Box<dyn std::error::Error + Send + Sync>),
    /// A value could not be bound as a parameter.
    #[error("parameter: {0}")]
    ToSqlConversionFailure(Box<dyn std::error::Error + Send + Sync>),
    /// The backend around the queries failed: the pool, its runtime, a
    /// transaction found aborted at commit.
    #[error("database: {0}")]
    Backend(String),
}

impl Error {
    /// A UNIQUE (or PRIMARY KEY) constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) => pg::is_unique_violation(e),
            _ => false,
        }
    }

    /// Any constraint (unique, foreign key, check, not null) refused the write.
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Postgres(e) => pg::is_constraint_violation(e),
            _ => false,
        }
    }
}

/// The result of a query.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Value types, as rusqlite names them.
pub mod types {
    pub use super::{Value, ValueRef};

    /// The kind of a stored value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Type {
        /// SQL NULL.
        Null,
        /// A 64-bit integer (or a boolean).
        Integer,
        /// A double.
        Real,
        /// UTF-8 text.
        Text,
        /// Bytes.
        Blob,
    }
}

/// A value read from or bound to a query, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer; booleans read as 0 and 1.
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// A borrowed view of this value.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// A value read from or bound to a query, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// An integer; booleans read as 0 and 1.
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl ValueRef<'_> {
    fn kind(&self) -> types::Type {
        match self {
            ValueRef::Null => types::Type::Null,
            ValueRef::Integer(_) => types::Type::Integer,
            ValueRef::Real(_) => types::Type::Real,
            ValueRef::Text(_) => types::Type::Text,
            ValueRef::Blob(_) => types::Type::Blob,
        }
    }
}

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef as V;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match *self {
            ValueRef::Null => V::Null,
            ValueRef::Integer(i) => V::Integer(i),
            ValueRef::Real(f) => V::Real(f),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

/// A Rust value that can be bound as a query parameter.
pub trait ToSql {
    /// The value as the query sees it.
    fn to_sql(&self) -> Result<ValueRef<'_>>;
}

macro_rules! to_sql_int {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Result<ValueRef<'_>> {
                i64::try_from(*self)
                    .map(ValueRef::Integer)
                    .map_err(|e| Error::ToSqlConversionFailure(Box::new(e)))
            }
        }
    )*};
}
to_sql_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

impl ToSql for bool {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Integer(i64::from(*self)))
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Real(*self))
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Text(self))
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Text(self))
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Blob(self))
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(ValueRef::Blob(self))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        Ok(self.as_ref())
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        match self {
            Some(v) => v.to_sql(),
            None => Ok(ValueRef::Null),
        }
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        (**self).to_sql()
    }
}

impl<T: ToSql + ?Sized> ToSql for Box<T> {
    fn to_sql(&self) -> Result<ValueRef<'_>> {
        (**self).to_sql()
    }
}

/// A column value that can be read as this Rust type.
pub trait FromSql: Sized {
    /// Reads `value`; an `Err` says why it does not fit.
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError>;
}

/// Why a column's value does not fit the type read.
#[derive(Debug, thiserror::Error)]
pub enum FromSqlError {
    /// A value of another kind (text for an integer, NULL for a non-Option).
    #[error("a {0:?} value where another kind was expected")]
    InvalidType(types::Type),
    /// An integer outside the type's range.
    #[error("integer {0} out of range")]
    OutOfRange(i64),
    /// Text that is not the expected form.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

macro_rules! from_sql_int {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
                match value {
                    ValueRef::Integer(i) => <$t>::try_from(i).map_err(|_| FromSqlError::OutOfRange(i)),
                    other => Err(FromSqlError::InvalidType(other.kind())),
                }
            }
        }
    )*};
}
from_sql_int!(i32, i64, u8, u16, u32, u64, usize);

impl FromSql for bool {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        match value {
            ValueRef::Integer(i) => Ok(i != 0),
            other => Err(FromSqlError::InvalidType(other.kind())),
        }
    }
}

impl FromSql for f64 {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            other => Err(FromSqlError::InvalidType(other.kind())),
        }
    }
}

impl FromSql for String {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        match value {
            ValueRef::Text(s) => Ok(s.to_owned()),
            other => Err(FromSqlError::InvalidType(other.kind())),
        }
    }
}

impl FromSql for Vec<u8> {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        match value {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            other => Err(FromSqlError::InvalidType(other.kind())),
        }
    }
}

impl FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn column_result(value: ValueRef<'_>) -> std::result::Result<Self, FromSqlError> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::column_result(other).map(Some),
        }
    }
}

/// The parameters of one query: `[]`, `params![...]`, an array of one type,
/// or [`params_from_iter`].
pub trait Params {
    /// The values, in placeholder order.
    fn values(&self) -> Result<Vec<ValueRef<'_>>>;
}

impl Params for () {
    fn values(&self) -> Result<Vec<ValueRef<'_>>> {
        Ok(Vec::new())
    }
}

impl Params for [&dyn ToSql; 0] {
    fn values(&self) -> Result<Vec<ValueRef<'_>>> {
        Ok(Vec::new())
    }
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Result<Vec<ValueRef<'_>>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

macro_rules! params_array {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Result<Vec<ValueRef<'_>>> {
                self.iter().map(|p| p.to_sql()).collect()
            }
        }
    )*};
}
params_array!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters from an iterator of values of one type.
pub struct ParamsFromIter<T>(Vec<T>);

/// Binds the items of `iter`, in order.
pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I::Item>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: ToSql> Params for ParamsFromIter<T> {
    fn values(&self) -> Result<Vec<ValueRef<'_>>> {
        self.0.iter().map(|p| p.to_sql()).collect()
    }
}

/// Query parameters of mixed types, in placeholder order.
#[macro_export]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::db::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::db::sql::ToSql),+] as &[&dyn $crate::db::sql::ToSql] };
}
pub use crate::sql_params as params;

/// One row of a query's answer.
pub enum Row<'r> {
    /// A row SQLite is stepping through.
    Sqlite(&'r rusqlite::Row<'r>),
    /// A row PostgreSQL sent.
    Postgres(&'r tokio_postgres::Row),
}

/// A column index ([`Row::get`] takes it as its first type parameter, as
/// rusqlite does).
pub trait RowIndex: Copy {
    /// The zero-based column.
    fn idx(self) -> usize;
}

impl RowIndex for usize {
    fn idx(self) -> usize {
        self
    }
}

impl Row<'_> {
    /// Column `idx` as `T`.
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let idx = idx.idx();
        let failed = |e: FromSqlError, kind| match e {
            FromSqlError::Other(e) => Error::FromSqlConversionFailure(idx, kind, e),
            e => Error::FromSqlConversionFailure(idx, kind, Box::new(e)),
        };
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef as V;
                let v = match r.get_ref(idx)? {
                    V::Null => ValueRef::Null,
                    V::Integer(i) => ValueRef::Integer(i),
                    V::Real(f) => ValueRef::Real(f),
                    V::Text(t) => ValueRef::Text(std::str::from_utf8(t).map_err(|e| {
                        Error::FromSqlConversionFailure(idx, types::Type::Text, Box::new(e))
                    })?),
                    V::Blob(b) => ValueRef::Blob(b),
                };
                T::column_result(v).map_err(|e| failed(e, v.kind()))
            }
            Row::Postgres(r) => {
                let v = pg::column(r, idx)?;
                let v = v.as_ref();
                T::column_result(v).map_err(|e| failed(e, v.kind()))
            }
        }
    }
}

/// Makes "no row" an answer rather than an error.
pub trait OptionalExtension<T> {
    /// `Ok(None)` where the query found no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How a top-level transaction takes its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    /// Locks when first needed.
    Deferred,
    /// Takes the write lock at once (SQLite's `BEGIN IMMEDIATE`; PostgreSQL
    /// always takes the writers' lock at `BEGIN`, see [`super::pg`]).
    Immediate,
}

/// A connection to either backend.
pub struct Connection {
    backend: Backend,
    /// Open transactions and savepoints.
    depth: Cell<u32>,
    /// PostgreSQL: a statement failed inside the open transaction, which
    /// now refuses everything until it is rolled back.
    aborted: Cell<bool>,
    /// PostgreSQL: this session holds the writers' lock.
    locked: Cell<bool>,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<pg::Client>),
}

impl Connection {
    /// Wraps an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Self::new(Backend::Sqlite(conn))
    }

    pub(crate) fn postgres(client: pg::Client) -> Self {
        Self::new(Backend::Postgres(Box::new(client)))
    }

    fn new(backend: Backend) -> Self {
        Self {
            backend,
            depth: Cell::new(0),
            aborted: Cell::new(false),
            locked: Cell::new(false),
        }
    }

    /// The SQLite connection underneath, for SQLite's own settings (pragmas).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether this is a PostgreSQL connection.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Whether no transaction is open.
    pub fn is_autocommit(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(c) => c.is_autocommit(),
            Backend::Postgres(_) => self.depth.get() == 0,
        }
    }

    /// The PostgreSQL client (a statement prepared there runs only there).
    fn pg(&self) -> &pg::Client {
        match &self.backend {
            Backend::Postgres(c) => c,
            Backend::Sqlite(_) => unreachable!("a PostgreSQL statement on SQLite"),
        }
    }

    /// Notes a PostgreSQL failure inside a transaction (it aborts it).
    fn watch<T>(&self, out: Result<T>) -> Result<T> {
        if out.is_err() && self.depth.get() > 0 && self.is_postgres() {
            self.aborted.set(true);
        }
        out
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        let out = match &self.backend {
            Backend::Sqlite(c) => c.execute_batch(sql).map_err(Error::from),
            Backend::Postgres(c) => c.batch(sql),
        };
        self.watch(out)
    }

    /// Runs a query and reads its first row with `f`;
    /// [`Error::QueryReturnedNoRows`] when there is none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Prepares `sql` (kept for reuse by the connection).
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        let inner = match &self.backend {
            Backend::Sqlite(c) => c.prepare_cached(sql).map(Prepared::Sqlite)?,
            Backend::Postgres(c) => Prepared::Postgres(self.watch(c.prepare(sql))?),
        };
        Ok(Statement { conn: self, inner })
    }

    /// As [`Connection::prepare_cached`].
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// Opens a transaction (a savepoint inside one already open).
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.begin(TransactionBehavior::Deferred)
    }

    /// A savepoint inside the open transaction (what a batched job runs
    /// in): rolling it back also clears a PostgreSQL failure inside it, so
    /// the transaction may still commit.
    pub(super) fn savepoint(&self) -> Result<Transaction<'_>> {
        if self.depth.get() == 0 {
            return Err(Error::Backend("a savepoint outside a transaction".into()));
        }
        self.begin(TransactionBehavior::Deferred)
    }

    /// Whether the session is gone (PostgreSQL: the server closed it or
    /// went away; a SQLite connection never is).
    pub(super) fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(c) => c.is_closed(),
        }
    }

    /// As [`Connection::transaction`], with the given locking.
    pub fn transaction_with_behavior(
        &mut self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>> {
        self.begin(behavior)
    }

    fn begin(&self, behavior: TransactionBehavior) -> Result<Transaction<'_>> {
        let depth = self.depth.get();
        let sql = match (&self.backend, depth, behavior) {
            (Backend::Sqlite(_), 0, TransactionBehavior::Deferred) => "BEGIN".to_owned(),
            (Backend::Sqlite(_), 0, TransactionBehavior::Immediate) => "BEGIN IMMEDIATE".to_owned(),
            (Backend::Postgres(_), 0, _) => pg::BEGIN.to_owned(),
            (_, d, _) => format!("SAVEPOINT nested_{d}"),
        };
        self.execute_batch(&sql)?;
        self.depth.set(depth + 1);
        if depth == 0 {
            self.aborted.set(false);
        }
        Ok(Transaction {
            conn: self,
            depth,
            open: true,
        })
    }

    /// Ends the transaction opened at `depth`.
    fn end(&self, depth: u32, commit: bool) -> Result<()> {
        let sql = match (depth, commit) {
            (0, true) if self.aborted.get() => {
                let _ = self.execute_batch("ROLLBACK");
                self.depth.set(0);
                self.aborted.set(false);
                return Err(Error::Backend(
                    "a statement of this transaction failed; it was rolled back".into(),
                ));
            }
            (0, true) => "COMMIT".to_owned(),
            (0, false) => "ROLLBACK".to_owned(),
            (d, true) => format!("RELEASE nested_{d}"),
            (d, false) => format!("ROLLBACK TO nested_{d}; RELEASE nested_{d}"),
        };
        self.depth.set(depth);
        let was_aborted = self.aborted.get();
        let out = match &self.backend {
            Backend::Sqlite(c) => c.execute_batch(&sql).map_err(Error::from),
            Backend::Postgres(c) => c.batch(&sql),
        };
        if depth == 0 || (!commit && out.is_ok()) {
            // Rolled back to before the failure (or out of the transaction).
            self.aborted.set(false);
        } else if was_aborted || out.is_err() {
            self.aborted.set(self.is_postgres());
        }
        out
    }

    /// PostgreSQL: takes the writers' lock for this session, until
    /// [`Connection::unlock_writers`] or the connection's end. A
    /// [`super::Db`] job holds it throughout, so its statements run in
    /// autocommit as SQLite's do, one writer at a time.
    pub(crate) fn lock_writers(&self) -> Result<()> {
        if let Backend::Postgres(c) = &self.backend {
            c.batch(pg::LOCK_WRITERS)?;
            self.locked.set(true);
        }
        Ok(())
    }

    /// PostgreSQL: runs the read-only `f` in a `REPEATABLE READ READ ONLY`
    /// transaction: one consistent snapshot, without the writers' lock, so
    /// it runs beside writers (a write in it fails). SQLite: `f` as it is
    /// (its database thread already runs one job at a time).
    pub(crate) fn snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        if !self.is_postgres() || self.depth.get() > 0 {
            return f(self);
        }
        self.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        self.depth.set(1);
        self.aborted.set(false);
        let out = f(self);
        // Nothing to keep: a read-only transaction ends the same either way.
        self.end(0, false)?;
        out
    }

    /// Releases the lock [`Connection::lock_writers`] took.
    pub(crate) fn unlock_writers(&self) -> Result<()> {
        if let (Backend::Postgres(c), true) = (&self.backend, self.locked.get()) {
            c.batch(pg::UNLOCK_WRITERS)?;
            self.locked.set(false);
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A job that panicked or failed mid-way: its pooled session must not
        // go back to the pool holding the lock or an open transaction.
        let dirty = self.depth.get() > 0 || self.locked.get();
        if let Backend::Postgres(c) = &mut self.backend {
            if dirty
                && c.batch("ROLLBACK; SELECT pg_advisory_unlock_all()")
                    .is_err()
            {
                c.discard();
            }
        }
    }
}

/// An open transaction (or savepoint): rolled back when dropped uncommitted.
/// Derefs to its connection.
pub struct Transaction<'c> {
    conn: &'c Connection,
    depth: u32,
    open: bool,
}

impl Transaction<'_> {
    /// Makes its changes stay.
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.end(self.depth, true)
    }

    /// Undoes its changes.
    pub fn rollback(mut self) -> Result<()> {
        self.open = false;
        self.conn.end(self.depth, false)
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.end(self.depth, false);
        }
    }
}

enum Prepared<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(pg::Prepared),
}

/// A prepared statement.
pub struct Statement<'c> {
    conn: &'c Connection,
    inner: Prepared<'c>,
}

impl Statement<'_> {
    /// Runs the statement; returns how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values()?;
        let conn = self.conn;
        let out = match &mut self.inner {
            Prepared::Sqlite(s) => s
                .execute(rusqlite::params_from_iter(values.iter()))
                .map_err(Error::from),
            Prepared::Postgres(s) => conn
                .pg()
                .execute(s, &values)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        };
        self.conn.watch(out)
    }

    /// Whether the query finds a row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        self.query_map(params, |_| Ok(()))?
            .next()
            .transpose()
            .map(|r| r.is_some())
    }

    /// Runs the query and reads its first row with `f`.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let mut f = Some(f);
        let mut rows = self.query_map(params, |r| (f.take().expect("first row only"))(r))?;
        rows.next().unwrap_or(Err(Error::QueryReturnedNoRows))
    }

    /// Runs the query; reads each row with `f` as the iterator is drawn.
    pub fn query_map<T, P, F>(&mut self, params: P, f: F) -> Result<MappedRows<'_, F>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let values = params.values()?;
        let rows = match &mut self.inner {
            Prepared::Sqlite(s) => Rows::Sqlite(
                s.query(rusqlite::params_from_iter(values.iter()))
                    .map_err(Error::from)?,
            ),
            Prepared::Postgres(s) => Rows::Postgres(
                self.conn
                    .watch(self.conn.pg().query(s, &values))?
                    .into_iter(),
            ),
        };
        Ok(MappedRows { rows, f })
    }
}

enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(std::vec::IntoIter<tokio_postgres::Row>),
}

/// The rows of a query, each read by the caller's function.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> Result<T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match &mut self.rows {
            Rows::Sqlite(rows) => match rows.next() {
                Ok(Some(r)) => Some((self.f)(&Row::Sqlite(r))),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            },
            Rows::Postgres(rows) => rows.next().map(|r| (self.f)(&Row::Postgres(&r))),
        }
    }
}
