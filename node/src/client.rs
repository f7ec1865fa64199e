//! The node's client of the coordinator: device login, heartbeats, progress
//! reports, manifests and chunks. Every request carries the till's device
//! token (renewed by logging in again); chunk downloads pass through the WAN
//! rate cap; every response is size-capped before it is read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tillswarm_protocol::api::CHUNK_ENCODING;
use tillswarm_protocol::api::{
    Challenge, ChallengeRequest, DeviceLogin, DeviceSession, HeartbeatRequest, HeartbeatResponse,
    ProgressReport,
};
use tillswarm_protocol::chunking::MAX_CHUNK;
use tillswarm_protocol::manifest::ChunkRef;

use crate::chunks::Wire;
use tillswarm_protocol::manifest::{MAX_SIGNED_MANIFEST_BYTES, SecretKey};
use tillswarm_protocol::trust::{self, Domain};
use tillswarm_protocol::{DeviceId, PackageId};
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

/// How a client proves itself to the coordinator.
#[derive(Clone)]
pub enum Credential {
    /// A till: logs in with its device key (see [`DeviceCredential`]).
    Device(Arc<DeviceCredential>),
    /// A fixed bearer token (tests that speak for a till with a token they got).
    Bearer(String),
}

/// A till's device key and the session it earns: on first use (and when the
/// token nears its end or is refused) the client asks for a challenge, signs
/// it and gets a short-lived device token.
pub struct DeviceCredential {
    device: DeviceId,
    key: SecretKey,
    enroll_token: Option<String>,
    /// The device token and when to renew it.
    session: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl DeviceCredential {
    /// The credential of `device` holding `key`; `enroll_token` joins a store
    /// the registry does not list the till in.
    pub fn new(device: DeviceId, key: SecretKey, enroll_token: Option<String>) -> Self {
        Self {
            device,
            key,
            enroll_token,
            session: Mutex::new(None),
        }
    }

    /// The till's GUID.
    pub fn device(&self) -> DeviceId {
        self.device
    }
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("device", &self.device)
            .field("public_key", &self.key.public())
            .finish_non_exhaustive()
    }
}

/// Client of one coordinator.
#[derive(Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    credential: Credential,
    wan_cap: Option<Arc<RateLimiter>>,
    /// Where chunks may be fetched without the coordinator, from the last
    /// accepted instructions (see [`CoordinatorClient::set_chunk_base`]).
    chunk_base: Arc<std::sync::RwLock<Option<String>>>,
    /// The client for `chunk_base`: the system's roots, no credential.
    cdn: reqwest::Client,
}

impl CoordinatorClient {
    /// A client of the coordinator at `base` (no trailing slash), trusting
    /// `ca_file` (or the system's roots) for `https://`.
    pub fn new(
        base: &str,
        credential: Credential,
        wan_rate_limit_kbit: Option<u64>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let http = crate::tls::http_client(ca_file)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        let cdn = crate::tls::http_client(None)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Coordinator(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential,
            wan_cap: wan_rate_limit_kbit.map(|k| Arc::new(RateLimiter::kbit(k))),
            chunk_base: Arc::default(),
            cdn,
        })
    }

    /// Fetches chunks from `base` first (a signed instruction named it), or
    /// only from the coordinator with `None`. A base that is not a plain
    /// `http(s)://` URL is ignored.
    pub fn set_chunk_base(&self, base: Option<&str>) {
        let base = base.filter(|b| {
            let ok = tillswarm_protocol::trust::is_chunk_base_url(b);
            if !ok {
                tracing::warn!(
                    base = b,
                    "ignoring a chunk base URL that is not plain http(s)"
                );
            }
            ok
        });
        *self.chunk_base.write().unwrap_or_else(|e| e.into_inner()) = base.map(str::to_owned);
    }

    /// The client of a till with `config`, logging in with its device key
    /// (`device.key` in its data folder, made on first use).
    pub fn for_till(config: &crate::NodeConfig) -> Result<Self> {
        let key = crate::identity::device_key(&config.data_dir)?;
        Self::new(
            config.coordinator(),
            Credential::Device(Arc::new(DeviceCredential::new(
                config.device_id,
                key,
                config.enroll_token.clone(),
            ))),
            config.wan_rate_limit_kbit,
            config.coordinator_ca_file.as_deref(),
        )
    }

    /// The bearer token to send: a fixed one, or the till's device token
    /// (logging in first when there is none or it is due for renewal).
    async fn token(&self) -> Result<String> {
        let cred = match &self.credential {
            Credential::Bearer(t) => return Ok(t.clone()),
            Credential::Device(cred) => cred,
        };
        // Held across the login, so concurrent requests wait for one login.
        let mut session = cred.session.lock().await;
        if let Some((token, renew_at)) = &*session {
            if tokio::time::Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let ch: Challenge = self
            .post_unauthenticated(
                "/api/v1/node/challenge",
                &ChallengeRequest {
                    device_id: cred.device,
                },
            )
            .await?;
        let public_key = cred.key.public();
        let signature = trust::sign_bytes(
            &cred.key,
            Domain::DeviceLogin,
            &trust::login_message(&cred.device, &ch.challenge, &public_key),
        );
        let login = DeviceLogin {
            device_id: cred.device,
            public_key,
            challenge: ch.challenge,
            signature,
            enroll_token: cred.enroll_token.clone(),
        };
        let s: DeviceSession = self
            .post_unauthenticated("/api/v1/node/session", &login)
            .await?;
        let token = match (s.approved, s.token) {
            (true, Some(token)) => token,
            _ => return Err(Error::Pending),
        };
        // Renewed at four fifths of its life, so it never lapses mid-request.
        let life = Duration::from_millis(s.expires_in_ms.saturating_mul(4) / 5);
        *session = Some((token.clone(), tokio::time::Instant::now() + life));
        tracing::debug!(device = %cred.device, "logged in to the coordinator");
        Ok(token)
    }

    /// Forgets `token` if it is still the session's (the coordinator refused
    /// it: expired early, key reset, device removed), so the next request logs in.
    async fn forget(&self, token: &str) {
        if let Credential::Device(cred) = &self.credential {
            let mut session = cred.session.lock().await;
            if session.as_ref().is_some_and(|(t, _)| t == token) {
                *session = None;
            }
        }
    }

    /// Sends a request with the credential; when a device token is refused
    /// (401), logs in again and retries once.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response> {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&'static str, &'static str)],
    ) -> Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut r = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&token);
            for (name, value) in headers {
                r = r.header(*name, *value);
            }
            if let Some(b) = body {
                r = r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            let resp = r.send().await.map_err(Error::Unreachable)?;
            let device = matches!(self.credential, Credential::Device(_));
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && device && !retried {
                self.forget(&token).await;
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }

    async fn post_unauthenticated<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let bytes = Self::read_capped(resp, MAX_JSON_RESPONSE, None).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Coordinator(format!("bad answer from {path}: {e}")))
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
            let piece = piece.map_err(Error::Unreachable)?;
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
        let body = serde_json::to_vec(body).map_err(|e| Error::Coordinator(e.to_string()))?;
        let resp = self.send(reqwest::Method::POST, path, Some(&body)).await?;
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
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/node/manifests/{id}"),
                None,
            )
            .await?;
        Self::read_capped(resp, MAX_SIGNED_MANIFEST_BYTES, None).await
    }

    /// Fetches a chunk over the WAN (not yet verified) in the form the
    /// coordinator keeps it (this till accepts zstd frames), at most the
    /// manifest's length for that form.
    pub async fn chunk(&self, chunk: &ChunkRef) -> Result<Wire> {
        let base = self
            .chunk_base
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(base) = base {
            match self.chunk_from_base(&base, chunk).await {
                Ok(wire) => return Ok(wire),
                Err(e) => {
                    tracing::warn!(chunk = %chunk.hash, error = %e, "chunk base failed; asking the coordinator")
                }
            }
        }
        let resp = self
            .send_with(
                reqwest::Method::GET,
                &format!("/api/v1/node/chunks/{}", chunk.hash),
                None,
                &[(CHUNK_ENCODING, "zstd")],
            )
            .await?;
        let compressed = match resp.headers().get(CHUNK_ENCODING).map(|v| v.as_bytes()) {
            Some(b"zstd") => true,
            None | Some(b"raw") => false,
            Some(_) => {
                return Err(Error::Coordinator("chunk in an unknown encoding".into()));
            }
        };
        let data =
            Self::read_capped(resp, wire_len(chunk, compressed), self.wan_cap.as_deref()).await?;
        Ok(Wire {
            data: data.into(),
            compressed,
        })
    }
}

/// The most bytes a chunk may take on the wire in that form: its zstd
/// frame's listed length, or its own.
fn wire_len(chunk: &ChunkRef, compressed: bool) -> usize {
    let len = if compressed {
        chunk.zstd_len
    } else {
        chunk.length
    };
    (len as usize).min(MAX_CHUNK)
}

impl CoordinatorClient {
    /// A chunk from the chunk base URL, in the form the manifest lists (a
    /// zstd frame when it gives one's length), at most that length.
    async fn chunk_from_base(&self, base: &str, chunk: &ChunkRef) -> Result<Wire> {
        let hex = chunk.hash.to_hex();
        let compressed = chunk.zstd_len > 0;
        let suffix = if compressed { ".zst" } else { "" };
        let url = format!("{base}/{}/{hex}{suffix}", &hex[..2]);
        let resp = self
            .cdn
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Coordinator(format!("{url}: {e}")))?;
        let data =
            Self::read_capped(resp, wire_len(chunk, compressed), self.wan_cap.as_deref()).await?;
        // Checked here as well as where it is staged: a chunk the base got
        // wrong (a stale CDN object, a truncated answer) falls back to the
        // coordinator instead of failing the download.
        let mut decoded = Vec::new();
        tillswarm_protocol::chunk_codec::Decoder::new()
            .map_err(Error::Io)?
            .decode(chunk, compressed, &data, &mut decoded)
            .map_err(|e| Error::Coordinator(format!("{url}: {e}")))?;
        Ok(Wire {
            data: data.into(),
            compressed,
        })
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
