//! HTTPS clients of the coordinator (the node's and the command line's): rustls
//! on ring, the one TLS stack in the tree (the coordinator serves with the same).
//!
//! With a CA file, only certificates issued by that CA are trusted (a chain's
//! private CA, pinned); without one, the system's roots. Every reqwest client in
//! tillswarm is built here: reqwest is compiled without a crypto provider of its
//! own, so it gets this configuration handed in.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The trusted roots: the certificates in `ca_file`, or the system's.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Config(format!("cannot read the CA file {}: {e}", path.display()))
                })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!(
                        "a certificate in {} is unusable: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold certificates rustls cannot use; skip them.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// A rustls client configuration trusting `ca_file` (or the system's roots).
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(config)
}

/// A reqwest client builder whose HTTPS trusts `ca_file` (or the system's roots).
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(ca_file)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.pem");
        let e = client_config(Some(&missing)).expect_err("missing");
        assert!(e.to_string().contains("none.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(Some(&empty)).expect_err("empty");
        assert!(e.to_string().contains("no certificate"), "{e}");
        http_client(None)
            .expect("system roots")
            .build()
            .expect("client");
    }
}
