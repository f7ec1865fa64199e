//! The node's client of the coordinator: heartbeats, progress reports, manifests
//! and chunks. Chunk downloads pass through the WAN rate cap; every response is
//! size-capped before it is read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tillswarm_protocol::api::{HeartbeatRequest, HeartbeatResponse, ProgressReport};
use tillswarm_protocol::chunking::MAX_CHUNK;
use tillswarm_protocol::manifest::MAX_SIGNED_MANIFEST_BYTES;
use tillswarm_protocol::{ChunkHash, PackageId};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Largest JSON answer read from the coordinator.
const MAX_JSON_RESPONSE: usize = 4 << 20;

/// A token bucket over bytes per second, shared by every WAN download of a node.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_s: f64,
    /// (tokens available, when they were counted)
    bucket: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    /// A limiter of `kbit` kilobits per second, with a burst of a quarter second.
    pub fn kbit(kbit: u64) -> Self {
        let bytes_per_s = kbit as f64 * 1000.0 / 8.0;
        Self {
            bytes_per_s,
            bucket: Mutex::new((bytes_per_s / 4.0, tokio::time::Instant::now())),
        }
    }

    /// Waits until `n` bytes may pass. Cancel-safe: a cancelled wait takes nothing.
    pub async fn acquire(&self, n: usize) {
        let n = n as f64;
        let wait = {
            let mut b = self.bucket.lock().await;
            let now = tokio::time::Instant::now();
            let burst = self.bytes_per_s / 4.0;
            b.0 =
                (b.0 + now.duration_since(b.1).as_secs_f64() * self.bytes_per_s).min(burst.max(n));
            b.1 = now;
            b.0 -= n;
            if b.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.0 / self.bytes_per_s)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Client of one coordinator.
#[derive(Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    wan_cap: Option<Arc<RateLimiter>>,
}

impl CoordinatorClient {
    /// A client of the coordinator at `base` (no trailing slash), trusting
    /// `ca_file` (or the system's roots) for `https://`.
    pub fn new(
        base: &str,
        token: Option<String>,
        wan_rate_limit_kbit: Option<u64>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let http = crate::tls::http_client(ca_file)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            wan_cap: wan_rate_limit_kbit.map(|k| Arc::new(RateLimiter::kbit(k))),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Reads a body of at most `cap` bytes (refusing more before buffering it).
    async fn read_capped(
        resp: reqwest::Response,
        cap: usize,
        limiter: Option<&RateLimiter>,
    ) -> Result<Vec<u8>> {
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::Coordinator(format!(
                "{status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        if resp.content_length().is_some_and(|l| l > cap as u64) {
            return Err(Error::Coordinator(format!(
                "response over the {cap}-byte limit"
            )));
        }
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| Error::Coordinator(e.to_string()))?;
            if out.len() + piece.len() > cap {
                return Err(Error::Coordinator(format!(
                    "response over the {cap}-byte limit"
                )));
            }
            if let Some(l) = limiter {
                l.acquire(piece.len()).await;
            }
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    async fn post_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        let bytes = Self::read_capped(resp, MAX_JSON_RESPONSE, None).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Coordinator(format!("bad answer from {path}: {e}")))
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        self.post_json("/api/v1/node/heartbeat", req).await
    }

    /// Sends a progress report; returns whether it was accepted (false: stale).
    pub async fn report(&self, report: &ProgressReport) -> Result<bool> {
        #[derive(serde::Deserialize)]
        struct Outcome {
            accepted: bool,
        }
        let o: Outcome = self.post_json("/api/v1/node/progress", report).await?;
        Ok(o.accepted)
    }

    /// Fetches a package's signed manifest bytes (not yet verified).
    pub async fn manifest(&self, id: &PackageId) -> Result<Vec<u8>> {
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/node/manifests/{id}"),
            )
            .send()
            .await
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        Self::read_capped(resp, MAX_SIGNED_MANIFEST_BYTES, None).await
    }

    /// Fetches a chunk's bytes over the WAN (not yet verified), at most `len` bytes.
    pub async fn chunk(&self, hash: &ChunkHash, len: u32) -> Result<Vec<u8>> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/api/v1/node/chunks/{hash}"))
            .send()
            .await
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        let cap = (len as usize).min(MAX_CHUNK);
        Self::read_capped(resp, cap, self.wan_cap.as_deref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_cap_holds() {
        // 800 kbit/s = 100 kB/s: 500 kB take about 5 s (minus the initial burst).
        let l = RateLimiter::kbit(800);
        let start = tokio::time::Instant::now();
        for _ in 0..50 {
            l.acquire(10_000).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((4.5..5.5).contains(&secs), "took {secs} s");
    }
}
