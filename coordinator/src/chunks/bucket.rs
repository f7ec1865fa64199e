//! Chunks in S3-compatible object storage (`--chunk-store s3://BUCKET/PREFIX`)
//! through the `object_store` crate: the same layout as the folder store,
//! `PREFIX/<first two hex digits>/<hex>` for a raw chunk and `<hex>.zst` for a
//! zstd frame, so a CDN or the bucket's own endpoint can serve chunks by the
//! names a manifest implies. Credentials, region and endpoint come from the
//! usual `AWS_*` variables (`AWS_ENDPOINT_URL` for a store other than AWS;
//! an `http://` endpoint is allowed only when named so). HTTPS uses the one
//! TLS stack of the tree: rustls on ring, with the system's roots.
//!
//! Each package's signed manifest is kept beside its chunks, under
//! `PREFIX/manifests/<package id>`, so the bucket describes every package it
//! holds chunks of (the database stays the copy served to tills).
//!
//! The chunk store's callers run on blocking threads (ingest, serving,
//! collection), so this keeps their synchronous interface and waits on the
//! runtime it was opened from.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutMode};
use tillswarm_protocol::chunking::MAX_CHUNK;
use tillswarm_protocol::manifest::MAX_SIGNED_MANIFEST_BYTES;
use tillswarm_protocol::{ChunkHash, PackageId};

/// The folder of manifests under the prefix.
const MANIFESTS: &str = "manifests";

/// Largest manifest read back: the protocol's limit.
const MAX_MANIFEST: u64 = MAX_SIGNED_MANIFEST_BYTES as u64;

/// Where chunks live in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct BucketUrl {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix, without slashes at either end (may be empty).
    pub prefix: String,
}

impl std::str::FromStr for BucketUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?}: a chunk store is s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 of a-z 0-9 . -, starting and ending
        // with a letter or digit.
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!("{bucket:?} is not an S3 bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!("{prefix:?} is not a usable key prefix"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl TryFrom<String> for BucketUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            p => write!(f, "s3://{}/{p}", self.bucket),
        }
    }
}

/// A bucket and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// The bucket and key prefix.
    pub url: BucketUrl,
    /// The S3 endpoint (`AWS_ENDPOINT_URL`); AWS's own when `None`.
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION`); `us-east-1` when `None`.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
    /// Send requests unsigned (`AWS_SKIP_SIGNATURE=true`): a bucket that
    /// takes anonymous writes, such as a store on a closed network.
    pub skip_signature: bool,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("BucketConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl BucketConfig {
    /// `url` with the usual `AWS_*` variables of this process.
    pub fn from_env(url: BucketUrl) -> Self {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        Self {
            url,
            endpoint: var(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            access_key_id: var(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key: var(&["AWS_SECRET_ACCESS_KEY"]),
            session_token: var(&["AWS_SESSION_TOKEN"]),
            skip_signature: var(&["AWS_SKIP_SIGNATURE"]).is_some_and(|v| v == "true"),
        }
    }
}

/// Builds object_store's HTTP clients on our rustls (ring) configuration;
/// its own connector would look for a process-wide crypto provider.
#[derive(Debug)]
struct RingConnector(rustls::ClientConfig);

impl HttpConnector for RingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .as_deref()
            == Some("true");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(self.0.clone())
            .https_only(!allow_http)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(client))
    }
}

/// rustls on ring with the system's trusted roots.
fn tls_config() -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A root the system lists but rustls cannot parse is skipped.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A chunk store in a bucket.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    url: BucketUrl,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

fn store_error(e: object_store::Error) -> io::Error {
    io::Error::other(format!("chunk store: {e}"))
}

impl Bucket {
    /// Connects to the bucket of `config` (from the runtime this is called
    /// in, which its calls then wait on) and checks that it answers.
    pub async fn open(config: &BucketConfig) -> io::Result<Self> {
        let url = config.url.clone();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(false)
            .with_http_connector(RingConnector(tls_config()?));
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(k) = &config.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(k) = &config.secret_access_key {
            builder = builder.with_secret_access_key(k);
        }
        if let Some(t) = &config.session_token {
            builder = builder.with_token(t);
        }
        if config.skip_signature {
            builder = builder.with_skip_signature(true);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(store_error)?);
        let bucket = Self {
            store,
            url,
            runtime: tokio::runtime::Handle::current(),
        };
        // Fail at start, not at the first upload: list one page.
        let prefix = bucket.prefix_path();
        bucket
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| io::Error::other(format!("chunk store {}: {e}", bucket.url)))?;
        Ok(bucket)
    }

    /// The bucket and prefix.
    pub fn url(&self) -> &BucketUrl {
        &self.url
    }

    fn prefix_path(&self) -> ObjectPath {
        ObjectPath::from(self.url.prefix.as_str())
    }

    fn key(&self, hash: &ChunkHash, compressed: bool) -> ObjectPath {
        let hex = hash.to_hex();
        let name = if compressed {
            format!("{hex}.zst")
        } else {
            hex.to_string()
        };
        let dir = &hex[..2];
        match self.url.prefix.as_str() {
            "" => ObjectPath::from(format!("{dir}/{name}")),
            p => ObjectPath::from(format!("{p}/{dir}/{name}")),
        }
    }

    /// Where manifests live: `PREFIX/manifests`.
    fn manifests_path(&self) -> ObjectPath {
        match self.url.prefix.as_str() {
            "" => ObjectPath::from(MANIFESTS),
            p => ObjectPath::from(format!("{p}/{MANIFESTS}")),
        }
    }

    fn manifest_key(&self, id: &PackageId) -> ObjectPath {
        self.manifests_path().join(id.to_hex())
    }

    fn wait<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// How a chunk is stored: `Some(true)` as a zstd frame, `Some(false)` raw.
    pub fn form(&self, hash: &ChunkHash) -> io::Result<Option<bool>> {
        for compressed in [true, false] {
            match self.wait(self.store.head(&self.key(hash, compressed))) {
                Ok(_) => return Ok(Some(compressed)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(None)
    }

    /// Writes `bytes` (a frame when `compressed`) unless that key exists;
    /// whether it was newly written. Chunks are content-addressed, so an
    /// existing object under the key holds the same bytes.
    pub fn put(&self, hash: &ChunkHash, bytes: &[u8], compressed: bool) -> io::Result<bool> {
        let key = self.key(hash, compressed);
        let payload = bytes::Bytes::copy_from_slice(bytes).into();
        match self.wait(self.store.put_opts(&key, payload, PutMode::Create.into())) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Uploads that run side by side (see [`Puts`]).
    pub fn puts(&self) -> Puts {
        Puts {
            bucket: self.clone(),
            running: tokio::task::JoinSet::new(),
            written: Vec::new(),
            failed: None,
        }
    }

    /// A whole stored chunk and whether it is a zstd frame.
    pub fn read_stored(&self, hash: &ChunkHash) -> io::Result<Option<(Vec<u8>, bool)>> {
        for compressed in [true, false] {
            let key = self.key(hash, compressed);
            let got = self.wait(async {
                let r = self.store.get(&key).await?;
                if r.meta.size > MAX_CHUNK as u64 {
                    return Ok(Err(r.meta.size));
                }
                r.bytes().await.map(Ok)
            });
            match got {
                Ok(Ok(bytes)) if bytes.len() <= MAX_CHUNK => {
                    return Ok(Some((bytes.to_vec(), compressed)));
                }
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "stored chunk {hash} is oversized"
                    )));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(None)
    }

    /// Removes a chunk in either form (absent is fine).
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        for compressed in [true, false] {
            match self.wait(self.store.delete(&self.key(hash, compressed))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(())
    }

    /// Writes a package's signed manifest unless one is stored for it;
    /// whether it was newly written.
    pub fn put_manifest(&self, id: &PackageId, signed: &[u8]) -> io::Result<bool> {
        let payload = bytes::Bytes::copy_from_slice(signed).into();
        let key = self.manifest_key(id);
        match self.wait(self.store.put_opts(&key, payload, PutMode::Create.into())) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// A package's stored manifest, if there is one.
    pub fn manifest(&self, id: &PackageId) -> io::Result<Option<Vec<u8>>> {
        let key = self.manifest_key(id);
        let got = self.wait(async {
            let r = self.store.get(&key).await?;
            if r.meta.size > MAX_MANIFEST {
                return Ok(Err(r.meta.size));
            }
            r.bytes().await.map(Ok)
        });
        match got {
            Ok(Ok(bytes)) => Ok(Some(bytes.to_vec())),
            Ok(Err(size)) => Err(io::Error::other(format!(
                "stored manifest of {id} is oversized ({size} bytes)"
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Removes a package's manifest (absent is fine).
    pub fn remove_manifest(&self, id: &PackageId) -> io::Result<()> {
        match self.wait(self.store.delete(&self.manifest_key(id))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The packages whose manifests are stored.
    pub fn manifests(&self) -> io::Result<Vec<PackageId>> {
        let prefix = self.manifests_path();
        let metas: Vec<object_store::ObjectMeta> = self
            .wait(self.store.list(Some(&prefix)).try_collect())
            .map_err(store_error)?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename()?.parse().ok())
            .collect())
    }

    /// Every stored chunk's hash; keys that are not chunks (manifests,
    /// anything else) are ignored.
    pub fn list(&self) -> io::Result<Vec<ChunkHash>> {
        let prefix = self.prefix_path();
        let manifests = self.manifests_path();
        let metas: Vec<object_store::ObjectMeta> = self
            .wait(self.store.list(Some(&prefix)).try_collect())
            .map_err(store_error)?;
        let mut out: Vec<ChunkHash> = metas
            .iter()
            .filter(|m| !m.location.prefix_matches(&manifests))
            .filter_map(|m| {
                let name = m.location.filename()?;
                let hex = name.strip_suffix(".zst").unwrap_or(name);
                hex.parse::<ChunkHash>().ok()
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Most chunk uploads one [`Puts`] keeps in flight.
pub const PARALLEL_PUTS: usize = 8;

/// The chunk uploads of one ingest, up to [`PARALLEL_PUTS`] in flight: a
/// package's thousands of conditional PUTs overlap their round trips
/// instead of adding them up. Blocking, like the rest of the bucket.
pub struct Puts {
    bucket: Bucket,
    running: tokio::task::JoinSet<io::Result<(ChunkHash, bool)>>,
    written: Vec<ChunkHash>,
    failed: Option<io::Error>,
}

impl Puts {
    /// Starts writing `bytes` (a frame when `compressed`) under `hash`
    /// unless that key exists, first waiting for one upload when
    /// [`PARALLEL_PUTS`] run. Fails if an earlier upload failed.
    pub fn put(&mut self, hash: ChunkHash, bytes: Vec<u8>, compressed: bool) -> io::Result<()> {
        while self.running.len() >= PARALLEL_PUTS {
            self.settle_one();
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let bucket = self.bucket.clone();
        self.running.spawn_on(
            async move {
                let key = bucket.key(&hash, compressed);
                let payload = bytes::Bytes::from(bytes).into();
                match bucket
                    .store
                    .put_opts(&key, payload, PutMode::Create.into())
                    .await
                {
                    Ok(_) => Ok((hash, true)),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok((hash, false)),
                    Err(e) => Err(store_error(e)),
                }
            },
            &self.bucket.runtime,
        );
        Ok(())
    }

    /// Waits for one running upload and notes how it ended.
    fn settle_one(&mut self) {
        let Some(ended) = self.bucket.runtime.block_on(self.running.join_next()) else {
            return;
        };
        match ended {
            Ok(Ok((hash, true))) => self.written.push(hash),
            Ok(Ok((_, false))) => {}
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                self.failed
                    .get_or_insert_with(|| io::Error::other(format!("chunk upload: {e}")));
            }
        }
    }

    /// Waits for every upload: the chunks newly written (whatever else
    /// happened, so a refused package can remove them) and the first
    /// failure, if any.
    pub fn finish(mut self) -> (Vec<ChunkHash>, io::Result<()>) {
        while !self.running.is_empty() {
            self.settle_one();
        }
        let outcome = match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        (std::mem::take(&mut self.written), outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_are_checked() {
        let u: BucketUrl = "s3://tills-chunks/prod/chunks/".parse().expect("url");
        assert_eq!(u.bucket, "tills-chunks");
        assert_eq!(u.prefix, "prod/chunks");
        assert_eq!(u.to_string(), "s3://tills-chunks/prod/chunks");
        assert_eq!("s3://abc".parse::<BucketUrl>().expect("url").prefix, "");
        for bad in [
            "tills-chunks",
            "http://bucket",
            "s3://ab",
            "s3://Upper",
            "s3://-dash",
            "s3://b_c",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/sp ace",
        ] {
            assert!(bad.parse::<BucketUrl>().is_err(), "{bad}");
        }
    }
}
