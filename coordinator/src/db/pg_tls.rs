//! TLS to PostgreSQL: rustls on ring (the tree's one TLS stack) through
//! `tokio-postgres-rustls`. `sslmode=require` in the database URL turns it
//! on (libpq's `verify-ca` and `verify-full` read as the same), and then the
//! server's certificate and name are always checked: against the system's
//! roots, plus the CA file that `sslrootcert=PATH` names (a private CA, as
//! most database servers use). TLS that accepted any certificate would give
//! the database password to whoever sits on the path. Any other mode, or
//! none, connects over plain TCP, for a database on the same machine or a
//! private network.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// A PostgreSQL server to connect to: where, as whom, and how (TLS or not).
#[derive(Clone)]
pub(crate) struct Server {
    /// Host, user, database, options; `ssl_mode` is `Require` or `Disable`.
    pub config: tokio_postgres::Config,
    /// The connector: verifies the server when `config` requires TLS.
    pub tls: MakeRustlsConnect,
}

impl Server {
    /// Reads a `postgres://` URL (see the module doc for its TLS keys).
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let (mut config, root) = parse(url)?;
        let tls = match config.get_ssl_mode() {
            SslMode::Require => client_config(root.as_deref())?,
            _ => {
                config.ssl_mode(SslMode::Disable);
                empty_client_config()?
            }
        };
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// Opens a session (its connection's task is the caller's to spawn).
    pub(crate) async fn connect(
        &self,
    ) -> std::result::Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }

    /// Whether connections use TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        self.config.get_ssl_mode() == SslMode::Require
    }
}

/// Splits `url` into what `tokio-postgres` reads and the CA file named by
/// `sslrootcert`; `verify-ca` and `verify-full` become `require`.
pub(crate) fn parse(url: &str) -> Result<(tokio_postgres::Config, Option<PathBuf>)> {
    let bad = |m: String| Error::bad("invalid_database", m);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut root = None;
    let mut mode = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslrootcert" => {
                let path = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| bad("sslrootcert is not UTF-8".into()))?;
                root = Some(PathBuf::from(path.as_ref()));
            }
            "sslmode" => {
                let value = match value {
                    "verify-ca" | "verify-full" => "require",
                    other => other,
                };
                mode = Some(value.to_owned());
                kept.push(format!("sslmode={value}"));
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    if root.is_some() && mode.as_deref() != Some("require") {
        return Err(bad(
            "sslrootcert needs sslmode=require (or verify-full): without it the \
             connection would not use TLS"
                .into(),
        ));
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad(e.to_string()))?;
    Ok((config, root))
}

/// rustls on ring trusting the system's roots and `root`'s certificates.
fn client_config(root: Option<&Path>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped.
        let _ = roots.add(cert);
    }
    if let Some(path) = root {
        let bad = |e: &dyn std::fmt::Display| {
            Error::bad(
                "invalid_database",
                format!("sslrootcert {}: {e}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"the file has no CERTIFICATE block"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(&e))?;
        }
    }
    Ok(builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector that is never used (plain TCP): no roots to load.
fn empty_client_config() -> Result<rustls::ClientConfig> {
    Ok(builder()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_keys_are_read_and_the_rest_passes_through() {
        let (config, root) = parse(
            "postgres://u:p@db.example:5433/tillswarm?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Ftillswarm%2Fdb%20ca.pem&application_name=x",
        )
        .expect("parse");
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(root, Some(PathBuf::from("/etc/tillswarm/db ca.pem")));
        let (config, root) = parse("postgres://u@h/d").expect("plain");
        assert_eq!((config.get_ssl_mode(), root), (SslMode::Prefer, None));
    }

    #[test]
    fn only_require_turns_tls_on_and_a_ca_without_it_is_refused() {
        let plain = Server::from_url("postgres://u@h/d?sslmode=prefer").expect("prefer");
        assert!(!plain.uses_tls(), "prefer would trust any certificate");
        let e = Server::from_url("postgres://u@h/d?sslrootcert=/ca.pem").err();
        assert_eq!(e.map(|e| e.code()), Some("invalid_database"));
        let e = Server::from_url("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent.pem")
            .err()
            .expect("a missing CA file is an error");
        assert!(e.to_string().contains("/nonexistent.pem"), "{e}");
        assert!(parse("postgres://u@h/d?sslmode=allow").is_err());
    }
}

/// Names the CA file of the PostgreSQL test server's certificate (made by
/// `.ci/postgres.sh`), for the tests of TLS to it.
#[cfg(test)]
pub(crate) const TEST_CA_ENV: &str = "TILLSWARM_TEST_POSTGRES_CA";

#[cfg(test)]
mod server_tests {
    use super::super::{Database, Db, TEST_POSTGRES_ENV};

    /// The test server's URL and its CA file, or `None` to skip (a failure
    /// under `CI=true`).
    fn test_server() -> Option<(String, String)> {
        let url = std::env::var(TEST_POSTGRES_ENV)
            .ok()
            .filter(|u| !u.is_empty());
        let ca = std::env::var(super::TEST_CA_ENV)
            .ok()
            .filter(|c| !c.is_empty());
        match (url, ca) {
            (Some(url), Some(ca)) => Some((url, ca)),
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "TLS to PostgreSQL needs {TEST_POSTGRES_ENV} and {}",
                    super::TEST_CA_ENV
                );
                eprintln!("skipping: no PostgreSQL test server with a known CA");
                None
            }
        }
    }

    fn schema() -> String {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("random");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("t_tls_{hex}")
    }

    /// Drops the schema the test's coordinator made.
    async fn drop_schema(db: &Db) {
        let name = db
            .call_snapshot(|c| {
                Ok(c.query_row("SELECT current_schema()", [], |r| r.get::<_, String>(0))?)
            })
            .await
            .expect("schema");
        db.call(move |c| Ok(c.execute_batch(&format!("DROP SCHEMA {name} CASCADE"))?))
            .await
            .expect("drop");
    }

    const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    #[tokio::test]
    async fn every_session_runs_over_tls_when_asked_and_a_strange_certificate_is_refused() {
        let Some((url, ca)) = test_server() else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let verified = Database::Postgres(format!("{url}?sslmode=verify-full&sslrootcert={ca}"))
            .in_schema(&schema())
            .expect("schema");
        let db = Db::connect(&verified, dir.path())
            .await
            .expect("connected over TLS");
        let ssl = |c: &crate::db::sql::Connection| {
            Ok(c.query_row(SSL_IN_USE, [], |r| r.get::<_, bool>(0))?)
        };
        assert!(db.call_snapshot(ssl).await.expect("pool session"));
        assert!(
            db.call_batched(move |tx| ssl(tx))
                .await
                .expect("group-commit session")
        );
        assert!(db.call(move |c| ssl(c)).await.expect("writer session"));
        drop_schema(&db).await;

        // The system's roots do not vouch for the test server's private CA.
        let dir = tempfile::tempdir().expect("tempdir");
        let unverified = Database::Postgres(format!("{url}?sslmode=require"))
            .in_schema(&schema())
            .expect("schema");
        let refused = Db::connect(&unverified, dir.path())
            .await
            .err()
            .expect("a certificate no trusted root signed is refused");
        assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");

        // Plain TCP when TLS is not asked for (the cluster offers it).
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = Database::Postgres(url)
            .in_schema(&schema())
            .expect("schema");
        let db = Db::connect(&plain, dir.path()).await.expect("plain");
        assert!(!db.call_snapshot(ssl).await.expect("plain session"));
        drop_schema(&db).await;
    }
}
