//! `tillswarm package ...`: inspect package files.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use tillswarm_protocol::archive::UploadFormat;
use tillswarm_protocol::chunk_codec::Compressor;
use tillswarm_protocol::chunking::chunk_reader_with;
use tillswarm_protocol::{ChunkInfo, Chunker, PackageId};

use crate::remote::Remote;

/// Package subcommands.
#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Decompress, chunk and hash a package file as the coordinator would,
    /// and print both ids: the package id (the blake3 of its content, the
    /// uncompressed tar) and the upload id (the file's blake3, as `b3sum`
    /// prints it), with the chunk list and the bytes each chunk takes on the
    /// wire (zstd-compressed where that saves bytes).
    Inspect {
        /// The package file (tar, tar.gz, tar.zst or tar.xz; told by content).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Upload a package to a coordinator (streamed, with a progress bar).
    Upload {
        #[command(flatten)]
        remote: Remote,
        /// Package name, e.g. `ukm5-till`.
        #[arg(long)]
        name: String,
        /// Package version, dotted numbers, e.g. `5.2.117`.
        #[arg(long)]
        version: String,
        /// The package file (a tar, tar.gz, tar.zst or tar.xz holding up.sh).
        file: PathBuf,
    },
    /// Download a package as a manual-path bundle (key chain, signed manifest
    /// and package in one file) for a till that cannot reach the coordinator:
    /// put the file in the till's `<update_root>/update/` folder. The till
    /// checks it against its pinned root key before offering it.
    Export {
        #[command(flatten)]
        remote: Remote,
        /// The package id (64 hex, from `package inspect` or the panel).
        package_id: PackageId,
        /// Where to write the bundle (`.tsb`); refuses to overwrite a file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Serialize)]
struct Inspection {
    /// blake3 of the content (the uncompressed tar).
    package_id: PackageId,
    /// Bytes of content.
    size: u64,
    /// blake3 of the file.
    upload_id: PackageId,
    /// Bytes of the file.
    upload_size: u64,
    /// How the file is compressed.
    format: UploadFormat,
    /// Bytes all chunks take on the wire.
    wire_size: u64,
    chunk_count: usize,
    chunks: Vec<InspectedChunk>,
}

#[derive(Serialize)]
struct InspectedChunk {
    #[serde(flatten)]
    chunk: ChunkInfo,
    /// Length of its zstd frame; 0: sent raw.
    zstd_len: u32,
}

/// Runs a package subcommand.
pub async fn run(cmd: PackageCommand) -> anyhow::Result<()> {
    match cmd {
        PackageCommand::Upload {
            remote,
            name,
            version,
            file,
        } => upload(&remote, &name, &version, &file).await,
        PackageCommand::Export {
            remote,
            package_id,
            out,
        } => export(&remote, &package_id, &out).await,
        PackageCommand::Inspect { file, json } => {
            tokio::task::spawn_blocking(move || inspect(file, json)).await?
        }
    }
}

fn inspect(file: PathBuf, json: bool) -> anyhow::Result<()> {
    let opening = || format!("opening {}", file.display());
    let mut upload = blake3::Hasher::new();
    upload.update_reader(File::open(&file).with_context(opening)?)?;
    let upload_size = std::fs::metadata(&file)?.len();
    let (format, content) = tillswarm_coordinator::packages::open_content(&file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut zstd = Compressor::new()?;
    let mut zstd_lens = Vec::new();
    let chunked = chunk_reader_with(Chunker::CURRENT, content, |_, data| {
        zstd_lens.push(zstd.compress(data)?.map_or(0, |f| f.len() as u32));
        Ok(())
    })
    .with_context(|| format!("reading {}", file.display()))?;
    let chunks: Vec<InspectedChunk> = chunked
        .chunks
        .iter()
        .zip(zstd_lens)
        .map(|(&chunk, zstd_len)| InspectedChunk { chunk, zstd_len })
        .collect();
    let wire_size = chunks
        .iter()
        .map(|c| {
            u64::from(if c.zstd_len > 0 {
                c.zstd_len
            } else {
                c.chunk.length
            })
        })
        .sum();
    let out = Inspection {
        package_id: chunked.package_id,
        size: chunked.size,
        upload_id: PackageId::from(upload.finalize()),
        upload_size,
        format,
        wire_size,
        chunk_count: chunks.len(),
        chunks,
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "package_id  {}  (content: the uncompressed tar)",
        out.package_id
    );
    println!(
        "upload_id   {}  (the file, {})",
        out.upload_id,
        format.suffix()
    );
    println!(
        "size        {} bytes of content, {} bytes uploaded",
        out.size, out.upload_size
    );
    println!(
        "wire        {} bytes in {} chunks",
        out.wire_size, out.chunk_count
    );
    println!("{:>12} {:>9} {:>9}  blake3", "offset", "length", "zstd");
    for c in &out.chunks {
        let zstd = if c.zstd_len > 0 {
            c.zstd_len.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:>12} {:>9} {:>9}  {}",
            c.chunk.offset, c.chunk.length, zstd, c.chunk.hash
        );
    }
    Ok(())
}

async fn upload(remote: &Remote, name: &str, version: &str, file: &PathBuf) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;

    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    remote.check_access().await?;
    let size = f.metadata().await?.len();
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)
        .inspect_ok(move |b| counted.inc(b.len() as u64));
    let response = remote
        .request(reqwest::Method::POST, "/api/v1/packages")?
        .query(&[("name", name), ("version", version)])
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("uploading to {}", remote.coordinator))?;
    bar.finish_and_clear();
    let text = Remote::check(response, "upload refused").await?;
    println!("{text}");
    Ok(())
}

/// Streams a bundle to a new file next to `out`, then renames it into place,
/// so an interrupted download never leaves a file that looks complete.
async fn export(remote: &Remote, id: &PackageId, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists(),
        "{} exists; choose another --out",
        out.display()
    );
    let response = remote
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/packages/{id}/bundle"),
        )?
        .send()
        .await
        .with_context(|| format!("reaching {}", remote.coordinator))?;
    if !response.status().is_success() {
        let text = Remote::check(response, "the coordinator refused the export").await?;
        anyhow::bail!("unexpected answer: {text}");
    }
    let expected = response.content_length();
    let partial = out.with_extension("tsb.partial");
    let written = save(response, &partial).await?;
    if expected.is_some_and(|e| e != written) {
        let _ = tokio::fs::remove_file(&partial).await;
        anyhow::bail!("the download broke off after {written} bytes");
    }
    tokio::fs::rename(&partial, out).await?;
    println!("wrote {} ({written} bytes)", out.display());
    Ok(())
}

/// Writes a response body to `path` (synced); returns its length. Removes
/// the file when the body breaks off.
async fn save(response: reqwest::Response, path: &Path) -> anyhow::Result<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    let result = async {
        while let Some(piece) = body.next().await {
            let piece = piece.context("the download broke off")?;
            file.write_all(&piece).await?;
            written += piece.len() as u64;
        }
        file.sync_all().await?;
        Ok::<_, anyhow::Error>(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}
