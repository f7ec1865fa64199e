//! `tillswarm package ...`: inspect package files.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use tillswarm_protocol::{ChunkInfo, PackageId, chunk_reader};

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
}

#[derive(Serialize)]
struct Inspection<'a> {
    package_id: PackageId,
    size: u64,
    chunk_count: usize,
    chunks: &'a [ChunkInfo],
}

/// Runs a package subcommand.
pub fn run(cmd: PackageCommand) -> anyhow::Result<()> {
    match cmd {
        PackageCommand::Inspect { file, json } => {
            let reader = BufReader::with_capacity(
                1 << 20,
                File::open(&file).with_context(|| format!("opening {}", file.display()))?,
            );
            let chunked =
                chunk_reader(reader).with_context(|| format!("reading {}", file.display()))?;
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
    }
}
