//! A man in the middle for tests (simulated attacker): a plain-HTTP proxy
//! between tills and the coordinator that forwards every request and lets a
//! test rewrite the answers, as an attacker on the network path could when
//! tills talk plain HTTP.

use std::sync::Arc;

use tokio::sync::oneshot;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};

/// Rewrites an answer: gets the request path and the answer's body, returns
/// the body to send instead.
pub type Rewrite = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A running proxy; dropped, it stops.
pub struct SimulatedMitm {
    /// Its base URL (give it to tills as `coordinator_url`).
    pub url: String,
    _stop: oneshot::Sender<()>,
}

impl SimulatedMitm {
    /// Proxies to `target` (a base URL), rewriting answers with `rewrite`.
    pub async fn start(target: &str, rewrite: Rewrite) -> Self {
        let client = tillswarm_node::tls::http_client(None)
            .expect("client")
            .build()
            .expect("client");
        let target = target.trim_end_matches('/').to_owned();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let (client, target, rewrite) =
                        (client.clone(), target.clone(), rewrite.clone());
                    async move {
                        let mut url = format!("{target}{}", path.as_str());
                        if !query.is_empty() {
                            url = format!("{url}?{query}");
                        }
                        let mut req = client.request(method, &url).body(body.to_vec());
                        for name in ["authorization", "content-type", "range"] {
                            if let Some(v) = headers.get(name) {
                                req = req.header(name, v.clone());
                            }
                        }
                        match req.send().await {
                            Ok(resp) => {
                                let status = resp.status();
                                let ct = resp.headers().get("content-type").cloned();
                                let body =
                                    resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                                let body = rewrite(path.as_str(), body);
                                let mut r = warp::reply::Response::new(body.into());
                                *r.status_mut() = status;
                                if let Some(ct) = ct {
                                    r.headers_mut().insert("content-type", ct);
                                }
                                r
                            }
                            Err(_) => {
                                let mut r = warp::reply::Response::new(Vec::new().into());
                                *r.status_mut() = StatusCode::BAD_GATEWAY;
                                r
                            }
                        }
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        Self { url, _stop: stop }
    }
}
