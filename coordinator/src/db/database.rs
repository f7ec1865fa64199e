//! Which database a coordinator uses: `--database sqlite` (the file in the
//! data folder) or `--database postgres://...`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::sql::Connection;
use crate::error::{Error, Result};

/// The SQLite file's name in the data folder.
pub const SQLITE_FILE: &str = "coordinator.sqlite3";

/// Names the PostgreSQL server tests may use (`postgres://...`): tests of
/// PostgreSQL itself run there, and the whole suite when
/// [`TEST_BACKEND_ENV`] says so. Never read for a database chosen
/// explicitly, as the command line's always is.
pub const TEST_POSTGRES_ENV: &str = "TILLSWARM_TEST_POSTGRES_URL";

/// `postgres`: every coordinator a test opens with [`Database::Default`]
/// gets a schema of its own on [`TEST_POSTGRES_ENV`]'s server, so the whole
/// suite runs on PostgreSQL.
pub const TEST_BACKEND_ENV: &str = "TILLSWARM_TEST_BACKEND";

/// The file in a data folder naming its PostgreSQL test schema.
const TEST_SCHEMA_FILE: &str = "postgres-test-schema";

/// Where a coordinator keeps its tables.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Database {
    /// SQLite in the data folder; when [`TEST_BACKEND_ENV`] is `postgres`,
    /// a fresh schema on the test server instead (how the whole coordinator
    /// suite runs on both backends).
    #[default]
    Default,
    /// SQLite in the data folder (`sqlite`).
    Sqlite,
    /// A PostgreSQL server (`postgres://user:password@host:port/dbname`;
    /// a `?options=-c search_path=...` names a schema).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Database {
    /// The choice, with any password in a URL hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Default | Database::Sqlite => f.write_str("sqlite"),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` with the password of its user part replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((user_part, host_part)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match user_part.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host_part}"),
        None => url.to_owned(),
    }
}

impl FromStr for Database {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sqlite" | "sqlite:" => Ok(Database::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                super::pg_tls::parse(url)
                    .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", redact(url)))?;
                Ok(Database::Postgres(url.to_owned()))
            }
            other => Err(format!(
                "unknown database {:?}: `sqlite` or a postgres:// URL",
                redact(other)
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A database choice made concrete.
pub(super) enum Resolved {
    Sqlite(PathBuf),
    Postgres(Box<super::pg_tls::Server>),
}

impl Database {
    pub(super) fn resolve(&self, data_dir: &Path) -> Result<Resolved> {
        match self {
            Database::Default if std::env::var(TEST_BACKEND_ENV).as_deref() == Ok("postgres") => {
                match test_postgres(data_dir) {
                    Some(db) => db.resolve(data_dir),
                    None => Err(Error::Internal(format!(
                        "{TEST_BACKEND_ENV}=postgres needs {TEST_POSTGRES_ENV}"
                    ))),
                }
            }
            Database::Default => Ok(Resolved::Sqlite(data_dir.join(SQLITE_FILE))),
            Database::Sqlite => Ok(Resolved::Sqlite(data_dir.join(SQLITE_FILE))),
            Database::Postgres(url) => {
                let mut server = super::pg_tls::Server::from_url(url)?;
                let config = &mut server.config;
                if config.get_application_name().is_none() {
                    config.application_name("tillswarm-coordinator");
                }
                config.connect_timeout(std::time::Duration::from_secs(10));
                Ok(Resolved::Postgres(Box::new(server)))
            }
        }
    }
}

/// The schema `config` names through `-c search_path=NAME,...` in its
/// options, if it does.
pub(super) fn named_schema(config: &tokio_postgres::Config) -> Option<String> {
    let options = config.get_options()?;
    let path = options.split("search_path=").nth(1)?;
    let first = path.split([',', ' ']).next()?.trim();
    (!first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| first.to_owned())
}

/// Creates the schema the URL names (`search_path`), if it names one.
pub(super) fn prepare_schema(conn: &Connection, config: &tokio_postgres::Config) -> Result<()> {
    if let Some(schema) = named_schema(config) {
        conn.execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .or_else(|e| match e {
                // Two coordinators creating it at once: one wins.
                e if e.is_unique_violation() => Ok(()),
                e => Err(e),
            })?;
    }
    Ok(())
}

/// The test server's database for the data folder `data_dir`, if
/// [`TEST_POSTGRES_ENV`] names one: a schema of its own, named in the
/// folder so that reopening the folder (a restarted coordinator, a second
/// coordinator on the same data) finds its tables again.
pub fn test_postgres(data_dir: &Path) -> Option<Database> {
    let url = std::env::var(TEST_POSTGRES_ENV)
        .ok()
        .filter(|u| !u.is_empty())?;
    let marker = data_dir.join(TEST_SCHEMA_FILE);
    let schema = match std::fs::read_to_string(&marker) {
        Ok(name) => name.trim().to_owned(),
        Err(_) => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).ok()?;
            let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("t_{name}");
            std::fs::create_dir_all(data_dir).ok()?;
            std::fs::write(&marker, &name).ok()?;
            name
        }
    };
    Database::Postgres(url).in_schema(&schema)
}

impl Database {
    /// The same PostgreSQL database with its tables in schema `schema`
    /// (created on first connect; PostgreSQL's `public` stays on the search
    /// path for the citext extension). `None` for SQLite, or a name that is
    /// not plain ASCII letters, digits and `_`.
    pub fn in_schema(&self, schema: &str) -> Option<Database> {
        let Database::Postgres(url) = self else {
            return None;
        };
        let plain = !schema.is_empty()
            && schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return None;
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(Database::Postgres(format!(
            "{url}{sep}options=-c%20search_path%3D{schema}%2Cpublic"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_passwords_stay_out_of_display() {
        assert_eq!("sqlite".parse::<Database>(), Ok(Database::Sqlite));
        let pg: Database = "postgres://tills:s3cret@db.example:5432/tillswarm"
            .parse()
            .expect("url");
        assert_eq!(
            pg.to_string(),
            "postgres://tills:***@db.example:5432/tillswarm"
        );
        assert!(format!("{pg:?}").contains("***") && !format!("{pg:?}").contains("s3cret"));
        assert!("mysql://x".parse::<Database>().is_err());
        assert!("postgres://h:notaport/db".parse::<Database>().is_err());
    }

    #[test]
    fn a_schema_named_in_the_options_is_found() {
        let config = tokio_postgres::Config::from_str(
            "postgres://u@h/db?options=-c%20search_path%3Dt_01ab%2Cpublic",
        )
        .expect("url");
        assert_eq!(named_schema(&config).as_deref(), Some("t_01ab"));
        let evil = tokio_postgres::Config::from_str(
            "postgres://u@h/db?options=-c%20search_path%3D%22x%3Bdrop%22",
        )
        .expect("url");
        assert_eq!(named_schema(&evil), None, "only plain names are created");
    }

    #[test]
    fn a_schema_is_named_only_for_plain_names_on_postgres() {
        let pg = Database::Postgres("postgres://u@h/db".into());
        let Some(Database::Postgres(url)) = pg.in_schema("bench_1") else {
            panic!("a plain name on PostgreSQL");
        };
        let config = tokio_postgres::Config::from_str(&url).expect("url");
        assert_eq!(named_schema(&config).as_deref(), Some("bench_1"));
        assert_eq!(pg.in_schema("x;drop"), None);
        assert_eq!(pg.in_schema(""), None);
        assert_eq!(Database::Sqlite.in_schema("a"), None);
        let with_query = Database::Postgres("postgres://u@h/db?connect_timeout=5".into());
        let Some(Database::Postgres(url)) = with_query.in_schema("s") else {
            panic!("a plain name on PostgreSQL");
        };
        assert!(url.contains("connect_timeout=5&options="), "{url}");
    }
}
