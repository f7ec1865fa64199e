//! Ingesting an upload: tell its format by content, decompress it while
//! reading, check the tar inside against the archive rules and cut the same
//! bytes into chunks, all in one streaming pass with bounded memory; store
//! each chunk (zstd-compressed when that saves bytes) and sign a format 3
//! manifest naming the content and the upload.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tillswarm_protocol::archive::{self, UploadFormat};
use tillswarm_protocol::chunk_codec::Compressor;
use tillswarm_protocol::manifest::{Manifest, SecretKey, SignedManifest, Upload};
use tillswarm_protocol::{ChunkHash, Chunker, PackageId, Version};

use crate::chunks::ChunkStore;
use crate::error::{Error, Result};

/// Largest zstd window an upload may use (128 MiB, `zstd --long=27`): the
/// decoder's memory is bounded by it.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Largest xz dictionary memory an upload may need (xz -9 needs ~65 MiB).
const XZ_MEM_LIMIT_KB: u32 = 128 * 1024;
/// Pieces of content queued for the archive check at most.
const CHECK_QUEUE: usize = 8;

/// What bounds an ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Most bytes the package may unpack to (summed over its files).
    pub max_unpacked: u64,
    /// Most bytes of content (the uncompressed tar) an upload may expand to.
    pub max_content: u64,
}

/// The uploaded file as received: its blake3 and size.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// blake3 of the uploaded bytes.
    pub id: PackageId,
    /// Their count.
    pub size: u64,
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::bad("invalid_package", format!("not a package: {why}"))
}

/// The upload's format and its content (the tar) as a stream, decompressed
/// on the fly with bounded memory.
pub fn open_content(path: &Path) -> Result<(UploadFormat, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(UploadFormat::SNIFF_LEN);
    File::open(path)?
        .take(UploadFormat::SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    let format = UploadFormat::detect(&head).map_err(invalid)?;
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let reader: Box<dyn Read + Send> = match format {
        UploadFormat::Tar => Box::new(file),
        // Every member: pigz and concatenated files have several.
        UploadFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        UploadFormat::TarZst => {
            let mut d = zstd::stream::read::Decoder::with_buffer(file)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        UploadFormat::TarXz => Box::new(lzma_rust2::XzReader::new_mem_limit(
            file,
            true,
            XZ_MEM_LIMIT_KB,
        )),
    };
    Ok((format, reader))
}

/// Reads `inner` (a decompressor), failing once more than `left` bytes came
/// out of it; its errors are the upload's fault (`InvalidData`).
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot decompress: {e}"),
            )
        })?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the archive expands to more than {} bytes", self.cap),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hands a copy of every piece it reads to the archive check.
struct Tee<R> {
    inner: R,
    to_check: SyncSender<Vec<u8>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && self.to_check.send(buf[..n].to_vec()).is_err() {
            // The check refused the archive: its verdict is what matters.
            return Err(io::Error::other("the archive check stopped"));
        }
        Ok(n)
    }
}

/// The archive check's side of the [`Tee`].
struct Pieces {
    from: Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.from.recv() {
                Ok(p) => (self.piece, self.at) = (p, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Ingests the upload at `path` into `store` and returns its signed format 3
/// manifest and the chunks this call newly wrote (to remove if the package is
/// refused later). Blocking: run it off the async executor.
#[allow(clippy::too_many_arguments)]
pub fn ingest_file(
    path: &Path,
    name: &str,
    version: Version,
    store: &ChunkStore,
    key: &SecretKey,
    now_ms: i64,
    limits: IngestLimits,
    received: Received,
) -> Result<(Manifest, SignedManifest, Vec<ChunkHash>)> {
    let (format, content) = open_content(path)?;
    let content = Capped {
        inner: content,
        left: limits.max_content,
        cap: limits.max_content,
    };
    let mut zstd = Compressor::new()?;
    let mut writer = store.writer();
    let mut zstd_lens = Vec::new();
    let (to_check, from) = sync_channel(CHECK_QUEUE);
    let (checked, chunked) = std::thread::scope(|scope| {
        let check = scope.spawn(move || {
            let mut pieces = Pieces {
                from,
                piece: Vec::new(),
                at: 0,
            };
            let verdict = archive::scan(&mut pieces, limits.max_unpacked);
            // Whatever follows the end of the archive is content too: drain
            // it so the chunker never waits on a full queue. A refused
            // archive stops the chunker instead (the queue is dropped).
            if verdict.is_ok() {
                while pieces.from.recv().is_ok() {}
            }
            verdict
        });
        let tee = Tee {
            inner: content,
            to_check,
        };
        let chunked =
            tillswarm_protocol::chunking::chunk_reader_with(Chunker::CURRENT, tee, |info, data| {
                zstd_lens.push(writer.put(&info.hash, data, Some(&mut zstd))?);
                Ok(())
            });
        // The tee (and its sender) went with the chunker: the check ends.
        let checked = check
            .join()
            .unwrap_or_else(|_| Err(archive::ArchiveError("the archive check panicked".into())));
        (checked, chunked)
    });
    // Every upload ended, so a refused package leaves none of its chunks.
    let (written, stored) = writer.finish();
    let chunked = chunked.and_then(|c| stored.map(|()| c));
    let outcome = match (checked, chunked) {
        (Err(e), _) => Err(invalid(e)),
        (Ok(_), Err(e)) if e.kind() == io::ErrorKind::InvalidData => Err(invalid(e)),
        (Ok(_), Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(invalid(e)),
        (Ok(_), Err(e)) => Err(Error::from(e)),
        (Ok(unpacked), Ok(chunked)) => {
            let upload = Upload {
                id: received.id,
                size: received.size,
                format,
            };
            Manifest::new_content(
                name,
                version,
                &chunked,
                Chunker::CURRENT,
                &zstd_lens,
                (now_ms / 1000) as u64,
                unpacked,
                upload,
            )
            .map_err(|e| Error::bad("invalid_package", e.to_string()))
        }
    };
    match outcome {
        Ok(manifest) => {
            let signed = key.sign_manifest(&manifest);
            Ok((manifest, signed, written))
        }
        Err(e) => {
            for h in written {
                let _ = store.remove(&h);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
