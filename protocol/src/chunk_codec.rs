//! How a chunk is kept and sent: raw, or as one zstd frame when that is
//! smaller. The manifest lists the frame's length ([`ChunkRef::zstd_len`]) and
//! every store and message says which form it holds, so nothing is ever
//! sniffed; a chunk's blake3 is always of its uncompressed bytes. A chunk the
//! manifest lists compressed may still travel raw (a till that got it from a
//! bundle holds it raw); one listed raw never travels compressed.
//!
//! Decoding trusts nothing but the signed manifest: a frame must be shorter
//! than the chunk, declare exactly the chunk's length, decompress into a
//! buffer that cannot grow past that length (a zstd bomb stops at the cap,
//! without allocating what it asks for), and hash to the chunk's hash.

use std::io;

use crate::id::ChunkHash;
use crate::manifest::ChunkRef;

/// The zstd level chunks are compressed at: near the best ratio per CPU
/// second for a once-per-package cost at the coordinator, while decoding
/// speed (what tills pay) barely depends on it.
pub const LEVEL: i32 = 9;

/// Why a chunk's bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The bytes are not the length the manifest lists.
    #[error("chunk is {got} bytes on the wire, the manifest says {want}")]
    WireLength {
        /// Bytes received.
        got: usize,
        /// Bytes the manifest lists.
        want: u32,
    },
    /// The frame does not declare the chunk's length.
    #[error("zstd frame declares {declared:?} bytes, the manifest says {want}")]
    DeclaredLength {
        /// What the frame header says (None: not stated or unreadable).
        declared: Option<u64>,
        /// The chunk's length.
        want: u32,
    },
    /// The frame is corrupt or decompresses to another length than declared.
    #[error("zstd frame does not decode to the chunk's {want} bytes: {reason}")]
    Decode {
        /// The chunk's length.
        want: u32,
        /// zstd's reason.
        reason: String,
    },
    /// The bytes hash to another value.
    #[error("chunk does not hash to {0}")]
    Hash(ChunkHash),
}

/// A zstd compressor for chunks (one per thread that stores chunks).
pub struct Compressor(zstd::bulk::Compressor<'static>);

impl Compressor {
    /// A compressor at [`LEVEL`].
    pub fn new() -> io::Result<Self> {
        Self::with_level(LEVEL)
    }

    /// A compressor at another level (benches).
    pub fn with_level(level: i32) -> io::Result<Self> {
        // One-shot frames state their content size (zstd's default), which
        // the decoder requires; no checksum: blake3 covers the content.
        Ok(Self(zstd::bulk::Compressor::new(level)?))
    }

    /// The frame for `raw` if it is at least 1/32 smaller than `raw` (else the
    /// chunk is kept raw: compressing it again would only cost CPU on every till).
    pub fn compress(&mut self, raw: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let worth = raw.len() - raw.len() / 32;
        if worth == 0 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(worth);
        match self.0.compress_to_buffer(raw, &mut out) {
            Ok(n) if n < worth => Ok(Some(out)),
            Ok(_) => Ok(None),
            // Zstd stops when the output does not fit: not worth it.
            Err(_) => Ok(None),
        }
    }
}

/// A zstd decompressor for chunks, with its reusable output buffer.
pub struct Decoder {
    context: zstd::bulk::Decompressor<'static>,
}

impl Decoder {
    /// A decoder.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            context: zstd::bulk::Decompressor::new()?,
        })
    }

    /// Checks `wire` (the chunk as stored or received, a zstd frame when
    /// `compressed`) against the manifest's `chunk` and returns the chunk's
    /// bytes: `wire` itself for a raw chunk, else the frame decoded into `out`
    /// (cleared; it never grows past the chunk's length).
    pub fn decode<'a>(
        &mut self,
        chunk: &ChunkRef,
        compressed: bool,
        wire: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], ChunkError> {
        let want = if compressed {
            chunk.zstd_len
        } else {
            chunk.length
        };
        if wire.len() != want as usize || want == 0 {
            return Err(ChunkError::WireLength {
                got: wire.len(),
                want,
            });
        }
        let bytes: &[u8] = if !compressed {
            wire
        } else {
            let declared = zstd::zstd_safe::get_frame_content_size(wire).ok().flatten();
            if declared != Some(u64::from(chunk.length)) {
                return Err(ChunkError::DeclaredLength {
                    declared,
                    want: chunk.length,
                });
            }
            out.clear();
            out.reserve_exact(chunk.length as usize);
            // Decoding into a Vec writes into its spare capacity only, so a
            // frame that lies about its length fails here instead of growing it.
            let capacity_before = out.capacity();
            let decoded = self.context.decompress_to_buffer(wire, &mut *out);
            debug_assert_eq!(out.capacity(), capacity_before);
            match decoded {
                Ok(n) if n == chunk.length as usize => {}
                Ok(n) => {
                    return Err(ChunkError::Decode {
                        want: chunk.length,
                        reason: format!("{n} bytes"),
                    });
                }
                Err(e) => {
                    return Err(ChunkError::Decode {
                        want: chunk.length,
                        reason: e.to_string(),
                    });
                }
            }
            &out[..]
        };
        if ChunkHash::of(bytes) != chunk.hash {
            return Err(ChunkError::Hash(chunk.hash));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        b"till 0042 sold one loaf of bread; "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunk_of(raw: &[u8], frame: Option<&[u8]>) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash::of(raw),
            length: raw.len() as u32,
            zstd_len: frame.map_or(0, |f| f.len() as u32),
        }
    }

    #[test]
    fn compressible_chunks_round_trip_and_noise_stays_raw() {
        let mut c = Compressor::new().expect("compressor");
        let mut d = Decoder::new().expect("decoder");
        let raw = text(128 * 1024);
        let frame = c
            .compress(&raw)
            .expect("compress")
            .expect("text compresses");
        assert!(frame.len() < raw.len() / 10);
        let chunk = chunk_of(&raw, Some(&frame));
        let mut out = Vec::new();
        assert_eq!(
            d.decode(&chunk, true, &frame, &mut out).expect("decode"),
            &raw[..]
        );

        let raw = noise(64 * 1024);
        assert!(c.compress(&raw).expect("compress").is_none());
        let chunk = chunk_of(&raw, None);
        assert_eq!(
            d.decode(&chunk, false, &raw, &mut out).expect("raw"),
            &raw[..]
        );
        assert!(c.compress(&[7]).expect("compress").is_none());
    }

    #[test]
    fn a_zstd_bomb_is_refused_without_growing_the_buffer() {
        // 64 MiB of zeros in a frame of a few KiB, listed as a 64 KiB chunk.
        let mut c = Compressor::new().expect("compressor");
        let bomb = c
            .compress(&vec![0u8; 64 << 20])
            .expect("compress")
            .expect("zeros compress");
        assert!(bomb.len() < 64 * 1024);
        let mut d = Decoder::new().expect("decoder");
        let mut out = Vec::new();
        let listed = ChunkRef {
            hash: ChunkHash::of(&[0u8; 65_536]),
            length: 65_536,
            zstd_len: bomb.len() as u32,
        };
        let err = d.decode(&listed, true, &bomb, &mut out).expect_err("bomb");
        assert!(matches!(err, ChunkError::DeclaredLength { .. }), "{err}");
        assert!(out.capacity() < 1 << 20);
    }

    #[test]
    fn a_frame_hiding_its_length_cannot_decode_past_the_chunk() {
        // A frame written without a content size, then patched to declare the
        // listed length: the decoder still stops at the buffer's capacity.
        let raw = vec![0u8; 1 << 20];
        let mut honest = zstd::bulk::Compressor::new(3).expect("compressor");
        let frame = honest.compress(&raw).expect("compress");
        let listed = ChunkRef {
            hash: ChunkHash::of(&raw[..4096]),
            length: 4096,
            zstd_len: frame.len() as u32,
        };
        let mut d = Decoder::new().expect("decoder");
        let mut out = Vec::new();
        match d.decode(&listed, true, &frame, &mut out) {
            Err(ChunkError::DeclaredLength { declared, .. }) => {
                assert_eq!(declared, Some(1 << 20));
            }
            other => panic!("{other:?}"),
        }
        assert!(out.capacity() < 1 << 20);
    }

    #[test]
    fn lengths_and_hashes_must_match_the_manifest() {
        let mut c = Compressor::new().expect("compressor");
        let mut d = Decoder::new().expect("decoder");
        let raw = text(100_000);
        let frame = c.compress(&raw).expect("compress").expect("compresses");
        let mut out = Vec::new();
        let good = chunk_of(&raw, Some(&frame));

        // Truncated frame: the wire length differs.
        let cut = &frame[..frame.len() - 1];
        assert!(matches!(
            d.decode(&good, true, cut, &mut out),
            Err(ChunkError::WireLength { .. })
        ));
        // A truncated frame listed at its own length: zstd refuses it.
        let listed_cut = ChunkRef {
            zstd_len: cut.len() as u32,
            ..good
        };
        assert!(matches!(
            d.decode(&listed_cut, true, cut, &mut out),
            Err(ChunkError::Decode { .. })
        ));
        // The manifest lists another length than the frame decodes to.
        let other = text(99_999);
        let frame_other = c.compress(&other).expect("compress").expect("compresses");
        let lying = ChunkRef {
            zstd_len: frame_other.len() as u32,
            ..good
        };
        assert!(matches!(
            d.decode(&lying, true, &frame_other, &mut out),
            Err(ChunkError::DeclaredLength { .. })
        ));
        // Same length, other bytes: the hash catches it.
        let mut swapped = raw.clone();
        swapped[5] ^= 1;
        let frame_swapped = c.compress(&swapped).expect("compress").expect("compresses");
        let hashed = ChunkRef {
            zstd_len: frame_swapped.len() as u32,
            ..good
        };
        assert!(matches!(
            d.decode(&hashed, true, &frame_swapped, &mut out),
            Err(ChunkError::Hash(_))
        ));
        // Garbage of the listed length is refused, not a panic.
        let garbage = vec![0x28u8; frame.len()];
        assert!(d.decode(&good, true, &garbage, &mut out).is_err());
        // A chunk listed compressed may travel raw; one listed raw never compressed.
        assert_eq!(
            d.decode(&good, false, &raw, &mut out).expect("raw"),
            &raw[..]
        );
        let listed_raw = chunk_of(&raw, None);
        assert!(matches!(
            d.decode(&listed_raw, true, &frame, &mut out),
            Err(ChunkError::WireLength { want: 0, .. })
        ));
    }

    #[test]
    fn a_raw_chunk_starting_with_the_zstd_magic_stays_raw() {
        let mut raw = vec![0x28, 0xb5, 0x2f, 0xfd];
        raw.extend(noise(1000));
        let chunk = chunk_of(&raw, None);
        let mut d = Decoder::new().expect("decoder");
        let mut out = Vec::new();
        assert_eq!(
            d.decode(&chunk, false, &raw, &mut out).expect("raw"),
            &raw[..]
        );
    }
}
