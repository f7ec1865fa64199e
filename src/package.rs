//! `tillswarm package ...`: inspect package files.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use tillswarm_protocol::{ChunkInfo, PackageId, chunk_reader};

use crate::remote::Remote;

/// Package subcommands.
#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Chunk and hash a package file as the coordinator would, and print the
    /// package id (the file's blake3, as `b3sum` prints it) and the chunk list.
    Inspect {
        /// The package file (tar or tar.gz).
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
        /// The package file (a tar or tar.gz holding up.sh).
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
struct Inspection<'a> {
    package_id: PackageId,
    size: u64,
    chunk_count: usize,
    chunks: &'a [ChunkInfo],
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
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(&file).with_context(|| format!("opening {}", file.display()))?,
    );
    let chunked = chunk_reader(reader).with_context(|| format!("reading {}", file.display()))?;
    if json {
        let out = Inspection {
            package_id: chunked.package_id,
            size: chunked.size,
            chunk_count: chunked.chunks.len(),
            chunks: &chunked.chunks,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("package_id  {}", chunked.package_id);
        println!("size        {} bytes", chunked.size);
        println!("chunks      {}", chunked.chunks.len());
        println!("{:>12} {:>9}  blake3", "offset", "length");
        for c in &chunked.chunks {
            println!("{:>12} {:>9}  {}", c.offset, c.length, c.hash);
        }
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
