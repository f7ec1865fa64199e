//! Serving the routes: the coordinator's own accept loop in front of warp's
//! service (warp 0.4 has neither TLS nor timeouts).
//!
//! - TLS (optional): rustls on ring through tokio-rustls, from a PEM
//!   certificate chain and key; the handshake must finish within the header
//!   timeout. Requests that came over TLS carry [`OverTls`] (cookies get
//!   `Secure`, the CSRF check expects `https://`).
//! - Timeouts: hyper's header read timeout closes a connection that sends no
//!   complete request head in time: a silent client, a slow one, or an idle
//!   keep-alive connection. A body that pauses longer than the body timeout
//!   is refused (the routes read it with that limit, from [`BodyIdle`]).
//! - At most `max_connections` connections at once; more wait in the backlog.
//! - Each request carries the peer's address ([`ClientAddr`]).
//! - Shutdown: stop accepting, let in-flight requests finish (bounded by
//!   [`DRAIN_LIMIT`]), then return.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::error::{Error, Result};
use crate::http::BodyIdle;
use crate::http::guard::{ClientAddr, OverTls};

/// How long shutdown waits for in-flight requests.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How the coordinator listens.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve HTTPS with this configuration (see [`tls_config`]); plain HTTP if `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A connection that sends no complete request head (or TLS handshake) in
    /// this time is closed; also the limit on an idle keep-alive connection.
    pub header_timeout: Duration,
    /// A request body that pauses this long is refused (408) and its
    /// connection closed.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_timeout: Duration::from_secs(30),
            body_timeout: crate::http::BODY_IDLE,
            max_connections: 16_384,
        }
    }
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3) from a PEM
/// certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::bad("invalid_tls", format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| bad("cannot read the certificate", cert_pem, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("cannot read the certificate", cert_pem, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in",
            cert_pem,
            &"the file has no CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| bad("cannot read the private key", key_pem, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("the certificate and key do not fit", cert_pem, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` and serves `routes` on each until
/// `shutdown` resolves; then drains in-flight requests and returns.
pub async fn run(
    routes: BoxedFilter<(Response,)>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let service = warp::service(routes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    loop {
        // A slot first: at the cap, connections wait in the backlog instead
        // of each holding a task and a file descriptor here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let timeouts = (options.header_timeout, options.body_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(tcp, service, peer, false, timeouts, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeouts.0, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, service, peer, true, timeouts, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {DRAIN_LIMIT:?}; stopping anyway");
    }
}

async fn serve_connection<S, Svc>(
    io: S,
    service: Svc,
    peer: std::net::SocketAddr,
    tls: bool,
    (header_timeout, body_timeout): (Duration, Duration),
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: tower_service::Service<
            hyper::Request<Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        req.extensions_mut().insert(BodyIdle(body_timeout));
        if tls {
            req.extensions_mut().insert(OverTls);
        }
        let mut service = service.clone();
        tower_service::Service::call(&mut service, req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
