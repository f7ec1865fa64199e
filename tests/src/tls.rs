//! A throwaway certificate authority for tests: a CA and a server certificate
//! it issued, written as PEM files into a temporary folder (what an operator
//! would give `--tls-cert`, `--tls-key`, and a till `coordinator_ca_file`).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of a test CA and one server certificate.
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA's certificate (the file to trust).
    pub ca_pem: PathBuf,
    /// The server's certificate.
    pub cert_pem: PathBuf,
    /// The server's private key.
    pub key_pem: PathBuf,
    /// Another CA's certificate, which did not issue the server's.
    pub other_ca_pem: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (params, key, cert.pem())
}

/// A CA and a certificate for `names` (DNS names or IP addresses) it issued.
pub fn test_pki(names: &[&str]) -> TestPki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_params, ca_key, ca_pem) = ca("tillswarm test CA");
    let (_, _, other_pem) = ca("someone else's CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "tillswarm coordinator");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    TestPki {
        ca_pem: write("ca.pem", &ca_pem),
        cert_pem: write("server.pem", &cert.pem()),
        key_pem: write("server.key", &key.serialize_pem()),
        other_ca_pem: write("other-ca.pem", &other_pem),
        dir,
    }
}
