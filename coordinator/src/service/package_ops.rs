//! The package operations of [`Coordinator`]: upload (streamed to a temporary
//! file, then checked, chunked, stored and signed under the ingestion lock),
//! listing, deletion with chunk garbage collection, and serving manifests and
//! chunks to tills.

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use tillswarm_protocol::bundle;
use tillswarm_protocol::{ChunkHash, PackageId, Version};
use tokio::io::AsyncWriteExt;

use super::{Coordinator, PackageDetail, Page, Paging, page_of};
use crate::audit::{self, Note, Outcome};
use crate::auth::{Caller, rules};
use crate::error::{Error, Result};
use crate::packages::{self, Package};

/// A bundle being exported.
pub struct ExportedBundle {
    /// `<name>-<version>.tsb`.
    pub file_name: String,
    /// Its exact length in bytes.
    pub length: u64,
    /// Its bytes, in order; an error ends it early.
    pub body: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
}

/// Held by package ingestion, deletion and chunk collection, one at a time:
/// within this coordinator and, on PostgreSQL, across every coordinator of
/// the database, since they share the chunk store (a chunk a refused upload
/// wrote, or a deleted package left, is removed only while no other package
/// can be taking it up). See [`Coordinator::hold_chunk_store`].
pub struct ChunkStoreLock {
    _here: tokio::sync::OwnedMutexGuard<()>,
    _everywhere: crate::db::ChunksLock,
}

impl Coordinator {
    /// Waits for the chunk store's lock ([`ChunkStoreLock`]): while it is
    /// held no package is ingested or deleted and no chunk collected, so a
    /// tool can copy the store as it is.
    pub async fn hold_chunk_store(&self) -> Result<ChunkStoreLock> {
        let here = self.inner.ingest.clone().lock_owned().await;
        let everywhere = self.inner.db.lock_chunks().await?;
        Ok(ChunkStoreLock {
            _here: here,
            _everywhere: everywhere,
        })
    }

    /// Streams an upload to a temporary file (never holding it in memory), then
    /// checks, chunks, stores and signs it. Nothing is visible until it is complete.
    pub async fn upload_package<S, B, E>(
        &self,
        name: String,
        version: String,
        body: S,
        by: &Caller,
    ) -> Result<Package>
    where
        S: Stream<Item = Result<B, E>> + Send + Unpin,
        B: Buf,
        E: std::fmt::Display,
    {
        let mut note = Note::default();
        note.detail(format!("{name} {version}"));
        let result = self.upload_unaudited(name, version, body, by).await;
        if let Err(e) = &result {
            self.audit_failure(by, "package.upload", note, e).await;
        }
        result
    }

    async fn upload_unaudited<S, B, E>(
        &self,
        name: String,
        version: String,
        body: S,
        by: &Caller,
    ) -> Result<Package>
    where
        S: Stream<Item = Result<B, E>> + Send + Unpin,
        B: Buf,
        E: std::fmt::Display,
    {
        tillswarm_protocol::manifest::validate_name(&name)
            .map_err(|e| Error::bad("invalid_package", e.to_string()))?;
        let version: Version = version
            .parse()
            .map_err(|e: tillswarm_protocol::VersionError| {
                Error::bad("invalid_version", e.to_string())
            })?;
        {
            let (n, v) = (name.clone(), version.clone());
            self.read(move |c, _| packages::ensure_new(c, &n, &v))
                .await?;
        }
        let tmp = self.inner.chunks.temp_path("upload");
        let result = self.receive_and_ingest(&tmp, name, version, body, by).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    async fn receive_and_ingest<S, B, E>(
        &self,
        tmp: &std::path::Path,
        name: String,
        version: Version,
        mut body: S,
        by: &Caller,
    ) -> Result<Package>
    where
        S: Stream<Item = Result<B, E>> + Send + Unpin,
        B: Buf,
        E: std::fmt::Display,
    {
        let limit = self.inner.config.max_package_bytes;
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut received = 0u64;
        let mut upload_hash = blake3::Hasher::new();
        while let Some(piece) = body.next().await {
            let mut piece = piece
                .map_err(|e| Error::bad("upload_interrupted", format!("upload failed: {e}")))?;
            received += piece.remaining() as u64;
            if received > limit {
                return Err(Error::TooLarge(format!(
                    "packages are limited to {limit} bytes"
                )));
            }
            while piece.has_remaining() {
                let n = file.write(piece.chunk()).await?;
                upload_hash.update(&piece.chunk()[..n]);
                piece.advance(n);
            }
        }
        file.sync_all().await?;
        drop(file);
        if received == 0 {
            return Err(Error::bad("invalid_package", "the upload is empty"));
        }
        // One ingestion (or package deletion) at a time: chunks a refused package
        // newly wrote can then be removed without racing another package that
        // shares them. Bodies still stream in concurrently above.
        let _ingesting = self.hold_chunk_store().await?;
        let this = self.clone();
        let path = tmp.to_path_buf();
        let now = self.now_ms();
        let received = packages::Received {
            id: PackageId::from(upload_hash.finalize()),
            size: received,
        };
        let limits = packages::IngestLimits {
            max_unpacked: this.inner.config.max_unpacked_bytes,
            max_content: this.inner.config.max_content_bytes(),
        };
        let (manifest, signed, written) = tokio::task::spawn_blocking(move || {
            packages::ingest_file(
                &path,
                &name,
                version,
                &this.inner.chunks,
                &this.online_secret(),
                now,
                limits,
                received,
            )
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let id = manifest.package_id;
        // A bucket keeps the signed manifest beside the chunks it lists.
        let manifest_written = {
            let this = self.clone();
            let signed = signed.to_bytes();
            tokio::task::spawn_blocking(move || this.inner.chunks.put_manifest(&id, &signed))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        };
        let manifest_written = match manifest_written {
            Ok(new) => new,
            Err(e) => {
                self.forget_chunks(written, None).await;
                return Err(e.into());
            }
        };
        let (content_bytes, wire_bytes) = (manifest.size, manifest.wire_size());
        let caller = by.clone();
        let uploader = by.actor.name.clone();
        let ok_status = rules::ok_status(&by.method, &by.route);
        let mut note = Note::on(format!("package:{id}"));
        note.detail(format!("{} {}", manifest.name, manifest.version));
        if let Err(e) = self
            .write(move |tx, now| {
                packages::insert(tx, &manifest, &signed, &uploader, now)?;
                audit::append(
                    tx,
                    &caller,
                    "package.upload",
                    &note,
                    Outcome::Ok,
                    ok_status,
                    now,
                )
            })
            .await
        {
            self.forget_chunks(written, manifest_written.then_some(id))
                .await;
            return Err(e);
        }
        tracing::info!(
            package = %id,
            upload_bytes = received.size,
            content_bytes,
            wire_bytes,
            user = %by.actor.name,
            client = %by.client,
            "package uploaded"
        );
        self.publish(crate::events::Change::Package {
            package_id: Some(id),
        });
        self.read(move |c, _| packages::get(c, &id)).await
    }

    /// A page of packages.
    pub async fn packages(&self, paging: Paging) -> Result<Page<Package>> {
        let (page, per) = paging.resolve()?;
        let (items, total) = self
            .read(move |c, _| packages::list(c, (page - 1) * per, per))
            .await?;
        Ok(page_of(items, total, page, per))
    }

    /// One package with its manifest.
    pub async fn package(&self, id: PackageId) -> Result<PackageDetail> {
        let key = self.online_public_key();
        self.read(move |c, _| {
            Ok(PackageDetail {
                package: packages::get(c, &id)?,
                manifest: packages::manifest(c, &id, &key)?,
            })
        })
        .await
    }

    /// Deletes a package no unfinished task uses, and its unshared chunks.
    pub async fn delete_package(&self, id: PackageId, by: &Caller) -> Result<()> {
        let _ingesting = self.hold_chunk_store().await?;
        let note = Note::on(format!("package:{id}"));
        let orphans = self
            .change(by, "package.delete", note, move |tx, _, _| {
                packages::delete(tx, &id)
            })
            .await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            this.inner.chunks.remove_manifest(&id)?;
            for h in orphans {
                this.inner.chunks.remove(&h)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Removes what a refused upload newly wrote to the chunk store (under
    /// the chunk store's lock, so no other package took it up meanwhile);
    /// best effort: what is left is collected at the next start.
    async fn forget_chunks(&self, written: Vec<ChunkHash>, manifest: Option<PackageId>) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(id) = manifest {
                let _ = this.inner.chunks.remove_manifest(&id);
            }
            for h in written {
                let _ = this.inner.chunks.remove(&h);
            }
        })
        .await;
    }

    /// The signed manifest bytes of a package.
    pub async fn signed_manifest(&self, id: PackageId) -> Result<Vec<u8>> {
        self.read(move |c, _| packages::signed_manifest(c, &id))
            .await
    }

    /// A package as a manual-path bundle (see [`tillswarm_protocol::bundle`]):
    /// its file name, total length and bytes, streamed chunk by chunk from
    /// the chunk store (never whole in memory).
    pub async fn export_bundle(&self, id: PackageId) -> Result<ExportedBundle> {
        let signed = self.signed_manifest(id).await?;
        let manifest = tillswarm_protocol::SignedManifest::from_bytes(&signed)
            .and_then(|m| m.body_unverified())
            .map_err(|e| Error::Internal(format!("stored manifest of {id}: {e}")))?;
        let ring = self.key_ring();
        let chain = bundle::BundleTrust {
            rotations: ring.trust.rotations.clone(),
            online_key: ring.trust.online_key.clone(),
        };
        let header = bundle::BundleHeader {
            format: bundle::FORMAT,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        };
        let json = |r: serde_json::Result<Vec<u8>>| r.map_err(|e| Error::Internal(e.to_string()));
        let mtime = manifest.created_unix;
        let mut prefix = Vec::new();
        for (name, data) in [
            (bundle::HEADER_FILE, json(serde_json::to_vec(&header))?),
            (bundle::TRUST_FILE, json(serde_json::to_vec(&chain))?),
            (bundle::MANIFEST_FILE, signed),
        ] {
            let h = bundle::entry_header(name, data.len() as u64, mtime)?;
            prefix.extend_from_slice(h.as_bytes());
            prefix.extend_from_slice(&data);
            prefix.resize(prefix.len() + bundle::padding(data.len() as u64), 0);
        }
        let h = bundle::entry_header(bundle::PACKAGE_FILE, manifest.size, mtime)?;
        prefix.extend_from_slice(h.as_bytes());
        // The package's padding, then the two zero blocks that end a tar.
        let suffix = vec![0u8; bundle::padding(manifest.size) + 1024];
        let length = (prefix.len() + suffix.len()) as u64 + manifest.size;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let this = self.clone();
        let hashes: Vec<ChunkHash> = manifest.chunks.iter().map(|c| c.hash).collect();
        tokio::spawn(async move {
            if tx.send(Ok(prefix.into())).await.is_err() {
                return;
            }
            for hash in hashes {
                let chunk = this.chunk(hash, false).await.map(|(data, _)| data.into());
                let failed = chunk.is_err();
                let sent = tx
                    .send(chunk.map_err(|e| std::io::Error::other(e.to_string())))
                    .await;
                if failed || sent.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(suffix.into())).await;
        });
        Ok(ExportedBundle {
            file_name: format!(
                "{}-{}.{}",
                manifest.name,
                manifest.version,
                bundle::EXTENSION
            ),
            length,
            body: rx,
        })
    }

    /// A whole chunk: as the zstd frame it is stored as when `zstd` is
    /// accepted (the bool says so), else its content.
    pub async fn chunk(&self, hash: ChunkHash, zstd: bool) -> Result<(Vec<u8>, bool)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, bool)> {
            let missing = || Error::NotFound(format!("no chunk {hash}"));
            let chunks = &this.inner.chunks;
            let (data, compressed) = if zstd {
                chunks.read_stored(&hash)?.ok_or_else(missing)?
            } else {
                (chunks.read_content(&hash)?.ok_or_else(missing)?, false)
            };
            this.inner.metrics.add_chunk_bytes(data.len() as u64);
            Ok((data, compressed))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Removes chunks no package references (left by an interrupted upload).
    /// Under the chunk store's lock: another coordinator's ingestion in
    /// progress holds chunks no package references yet.
    pub(super) async fn collect_garbage(&self) -> Result<()> {
        let _collecting = self.hold_chunk_store().await?;
        let (referenced, known) = self
            .read(|c, _| Ok((packages::referenced_chunks(c)?, packages::ids(c)?)))
            .await?;
        let this = self.clone();
        let (chunks, manifests) = tokio::task::spawn_blocking(move || -> Result<(usize, usize)> {
            let store = &this.inner.chunks;
            let mut chunks = 0;
            for h in store.list()? {
                if !referenced.contains(&h) {
                    store.remove(&h)?;
                    chunks += 1;
                }
            }
            let mut manifests = 0;
            for id in store.manifests()? {
                if !known.contains(&id) {
                    store.remove_manifest(&id)?;
                    manifests += 1;
                }
            }
            Ok((chunks, manifests))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        if chunks + manifests > 0 {
            tracing::info!(chunks, manifests, "removed what no package references");
        }
        Ok(())
    }
}
