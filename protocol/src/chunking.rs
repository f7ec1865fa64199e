//! Content-defined chunking of a package, with blake3 hashes, in one streaming pass.
//!
//! Boundaries come from FastCDC (the 2020 variant, normalisation level 1) at the
//! sizes of a [`Chunker`]. Because boundaries depend on content rather than
//! offsets, an edit moves at most the boundaries around it, and consecutive
//! package versions share most chunks: a till that holds version N fetches only
//! the chunks of N+1 it lacks.
//!
//! The reader is consumed through a fixed buffer (a few maximum-sized chunks): the
//! file is never held in memory, whatever its size.

use std::io::{self, Read};
use std::sync::mpsc::sync_channel;

use fastcdc::v2020;
use serde::{Deserialize, Serialize};

use crate::id::{ChunkHash, PackageId};

/// Largest chunk of any chunker; also the cap on a chunk in manifests and peer
/// messages.
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// A chunker setting: FastCDC's minimum, average and maximum chunk size. A
/// manifest names the one that cut it, so a till never has to cut again and
/// old manifests stay readable when the setting changes. Each is pinned by a
/// committed boundary vector (`fixtures/vectors/chunking-v*.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Chunker {
    /// 256 KiB / 1 MiB / 4 MiB: manifest formats 1 and 2.
    V1,
    /// 32 KiB / 128 KiB / 512 KiB: manifest format 3. Chosen with
    /// `tillswarm-bench chunk-sizes`: a store holding N fetches 0.127x of a
    /// 64 MiB package for ten scattered changes making 10% of it (V1: 0.380x),
    /// with an eighth of the chunks of 16 / 64 / 256 KiB for 0.010x more.
    V2,
}

impl Chunker {
    /// The setting new packages are cut with.
    pub const CURRENT: Chunker = Chunker::V2;

    /// Smallest chunk it cuts (the last chunk of a file may be shorter).
    pub const fn min(self) -> usize {
        match self {
            Chunker::V1 => 256 * 1024,
            Chunker::V2 => 32 * 1024,
        }
    }

    /// Target average chunk size.
    pub const fn avg(self) -> usize {
        match self {
            Chunker::V1 => 1024 * 1024,
            Chunker::V2 => 128 * 1024,
        }
    }

    /// Largest chunk it cuts.
    pub const fn max(self) -> usize {
        match self {
            Chunker::V1 => 4 * 1024 * 1024,
            Chunker::V2 => 512 * 1024,
        }
    }

    /// The code a format 3 manifest carries.
    pub const fn code(self) -> u8 {
        match self {
            Chunker::V1 => 1,
            Chunker::V2 => 2,
        }
    }

    /// The chunker a manifest's code names, if this build knows it.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Chunker::V1),
            2 => Some(Chunker::V2),
            _ => None,
        }
    }
}

/// Maximum chunks read ahead of the cut point: enough that the tail moved to
/// the front when the buffer is refilled stays small relative to the bytes
/// processed per refill.
const BUFFER_CHUNKS: usize = 4;

/// One chunk of a file: where it sits and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Byte offset of the chunk in the file.
    pub offset: u64,
    /// Chunk length in bytes (1 ..= the chunker's maximum).
    pub length: u32,
    /// blake3 of the chunk's bytes.
    pub hash: ChunkHash,
}

/// The result of chunking a whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedFile {
    /// blake3 of the whole file (what `b3sum` prints).
    pub package_id: PackageId,
    /// Total size in bytes.
    pub size: u64,
    /// Chunks in file order; they tile the file exactly.
    pub chunks: Vec<ChunkInfo>,
}

/// FastCDC's masks for a chunker's average size, computed once per call.
struct Cutter {
    chunker: Chunker,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    fn new(chunker: Chunker) -> Self {
        // Normalisation level 1: the strict mask has one bit more than the average
        // size calls for, the loose mask one bit less.
        let bits = v2020::logarithm2(chunker.avg() as u32);
        Self {
            chunker,
            mask_s: v2020::MASKS[(bits + 1) as usize],
            mask_l: v2020::MASKS[(bits - 1) as usize],
        }
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at least
    /// the chunker's maximum unless it is the end of the file.
    fn next_len(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut(
            data,
            self.chunker.min(),
            self.chunker.avg(),
            self.chunker.max(),
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }
}

/// Chunks and hashes everything `reader` yields.
pub fn chunk_reader<R: Read>(chunker: Chunker, reader: R) -> io::Result<ChunkedFile> {
    chunk_reader_with(chunker, reader, |_, _| Ok(()))
}

/// Chunks and hashes everything `reader` yields, handing each chunk's bytes to
/// `on_chunk` (in file order, on the caller's thread) once it is hashed, e.g. to
/// store it. An error from `on_chunk` or the reader stops the pass and is returned.
///
/// Two threads share the work: the caller's thread reads and finds boundaries,
/// a scoped worker computes the chunk hashes and the whole-file hash. At most
/// [`IN_FLIGHT`] chunks are between the two, so memory stays bounded.
pub fn chunk_reader_with<R, F>(
    chunker: Chunker,
    mut reader: R,
    mut on_chunk: F,
) -> io::Result<ChunkedFile>
where
    R: Read,
    F: FnMut(&ChunkInfo, &[u8]) -> io::Result<()>,
{
    let (to_hasher, hasher_inbox) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (to_cutter, hashed) = sync_channel::<(Vec<u8>, ChunkHash)>(IN_FLIGHT);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut file = blake3::Hasher::new();
            for data in hasher_inbox {
                file.update(&data);
                let hash = ChunkHash::of(&data);
                if to_cutter.send((data, hash)).is_err() {
                    break; // the cutter gave up; its error is what matters
                }
            }
            PackageId::from(file.finalize())
        });

        let mut chunks = Vec::new();
        let mut offset = 0u64;
        let mut pending = 0usize;
        let mut finish_one =
            |chunks: &mut Vec<ChunkInfo>, offset: &mut u64| -> io::Result<Vec<u8>> {
                let (data, hash) = hashed
                    .recv()
                    .map_err(|_| io::Error::other("chunk hasher stopped"))?;
                let info = ChunkInfo {
                    offset: *offset,
                    length: data.len() as u32,
                    hash,
                };
                on_chunk(&info, &data)?;
                chunks.push(info);
                *offset += data.len() as u64;
                Ok(data)
            };

        let mut spare: Vec<Vec<u8>> = Vec::new();
        let outcome = cut_all(chunker, &mut reader, |piece| {
            let mut data = spare.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(piece);
            if pending == IN_FLIGHT {
                spare.push(finish_one(&mut chunks, &mut offset)?);
                pending -= 1;
            }
            to_hasher
                .send(data)
                .map_err(|_| io::Error::other("chunk hasher stopped"))?;
            pending += 1;
            Ok(())
        });
        let outcome = outcome.and_then(|()| {
            while pending > 0 {
                finish_one(&mut chunks, &mut offset)?;
                pending -= 1;
            }
            Ok(())
        });
        // Closing the channel ends the worker's loop whether or not we failed.
        drop(to_hasher);
        drop(hashed);
        let package_id = hasher
            .join()
            .map_err(|_| io::Error::other("chunk hasher panicked"))?;
        outcome?;
        Ok(ChunkedFile {
            package_id,
            size: offset,
            chunks,
        })
    })
}

/// Most chunks handed to the hashing worker and not yet returned.
const IN_FLIGHT: usize = 4;

/// Reads `reader` to the end and calls `on_piece` with each chunk's bytes in order.
fn cut_all<R: Read>(
    chunker: Chunker,
    reader: &mut R,
    mut on_piece: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let cutter = Cutter::new(chunker);
    let buffer = BUFFER_CHUNKS * chunker.max();
    let mut buf = vec![0u8; buffer];
    let mut start = 0; // first byte not yet cut
    let mut end = 0; // one past the last byte read
    let mut eof = false;
    loop {
        // Keep at least one maximum chunk ahead of the cut point, so a cut is never
        // forced by the buffer edge rather than by content.
        if !eof && end - start < chunker.max() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            while end < buffer {
                match reader.read(&mut buf[end..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if start == end {
            return Ok(());
        }
        let len = cutter.next_len(&buf[start..end]);
        on_piece(&buf[start..start + len])?;
        start += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per call, to prove that the
    /// boundaries do not depend on how the input arrives.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        // xorshift: enough entropy for CDC, no dependency.
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn empty_input_has_no_chunks_and_the_empty_hash() {
        let f = chunk_reader(Chunker::V1, &[][..]).expect("chunk");
        assert_eq!(f.size, 0);
        assert!(f.chunks.is_empty());
        assert_eq!(f.package_id, PackageId::of(b""));
    }

    #[test]
    fn sizes_stay_in_bounds_and_tile_the_file() {
        for chunker in [Chunker::V1, Chunker::V2] {
            sizes_in_bounds(chunker);
        }
    }

    fn sizes_in_bounds(chunker: Chunker) {
        let data = noise(20 * 1024 * 1024 + 12345, 7);
        let f = chunk_reader(chunker, &data[..]).expect("chunk");
        assert_eq!(f.size, data.len() as u64);
        assert_eq!(f.package_id, PackageId::of(&data));
        let mut at = 0u64;
        for (i, c) in f.chunks.iter().enumerate() {
            assert_eq!(c.offset, at);
            let last = i + 1 == f.chunks.len();
            assert!(c.length as usize <= chunker.max());
            assert!(last || c.length as usize >= chunker.min());
            let bytes = &data[c.offset as usize..][..c.length as usize];
            assert_eq!(c.hash, ChunkHash::of(bytes));
            at += u64::from(c.length);
        }
        assert_eq!(at, data.len() as u64);
        let avg = data.len() / f.chunks.len();
        assert!(
            (chunker.avg() / 2..chunker.avg() * 2).contains(&avg),
            "{chunker:?}: average {avg}"
        );
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = noise(9 * 1024 * 1024, 3);
        for chunker in [Chunker::V1, Chunker::V2] {
            let whole = chunk_reader(chunker, &data[..]).expect("chunk");
            let dribbled = chunk_reader(
                chunker,
                Dribble {
                    data: &data,
                    step: 65_537,
                },
            )
            .expect("chunk");
            assert_eq!(whole, dribbled);
        }
    }

    #[test]
    fn zeros_cut_at_the_maximum() {
        for chunker in [Chunker::V1, Chunker::V2] {
            let data = vec![0u8; 3 * chunker.max() + 10];
            let f = chunk_reader(chunker, &data[..]).expect("chunk");
            let lens: Vec<u32> = f.chunks.iter().map(|c| c.length).collect();
            let max = chunker.max() as u32;
            assert_eq!(lens, vec![max, max, max, 10]);
        }
    }

    #[test]
    fn codes_round_trip_and_every_chunker_fits_the_wire_cap() {
        for chunker in [Chunker::V1, Chunker::V2] {
            assert_eq!(Chunker::from_code(chunker.code()), Some(chunker));
            assert!(chunker.min() < chunker.avg() && chunker.avg() < chunker.max());
            assert!(chunker.max() <= MAX_CHUNK);
        }
        assert_eq!(Chunker::from_code(0), None);
        assert_eq!(Chunker::from_code(3), None);
    }

    #[test]
    fn callback_errors_stop_the_pass() {
        let data = noise(3 * 1024 * 1024, 5);
        let err = chunk_reader_with(Chunker::V2, &data[..], |_, _| {
            Err(io::Error::other("disk full"))
        })
        .expect_err("must fail");
        assert_eq!(err.to_string(), "disk full");
    }
}
