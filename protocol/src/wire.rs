//! Messages between the tills of one store.
//!
//! **Participants**: the nodes of one chain and one store, on the store LAN.
//! **Goals**: each node learns which chunks its peers hold, and fetches missing
//! chunks from them, so a package crosses the WAN about once per store.
//! **Non-goals**: discovery (mDNS, outside this module), authentication and
//! encryption (the transport's job: noise with a chain key), trust in content
//! (every chunk is checked against its blake3 hash by the receiver).
//!
//! Every message is one postcard-encoded [`PeerMessage`]. On a byte stream a
//! message travels as a frame: a 4-byte big-endian length, then the message.
//! [`decode`] refuses anything longer than [`MAX_FRAME`] before looking inside,
//! and every collection in a message has its own cap, so a hostile peer can make
//! a node spend at most [`MAX_FRAME`] bytes of memory per message.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::chunking::MAX_CHUNK;
use crate::id::{ChainId, ChunkHash, DeviceId, PackageId, StoreId};
use crate::manifest::MAX_CHUNKS;

/// The protocol's name on the libp2p stream; a new incompatible version gets a
/// new name, so old and new tills simply do not speak it to each other.
pub const PROTOCOL_NAME: &str = "/tillswarm/store/1";
/// The version carried in [`Hello`] and in mDNS TXT records.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest encoded message: one maximum chunk plus headroom for its header.
pub const MAX_FRAME: usize = MAX_CHUNK + 1024;
/// Most chunk indices in one [`PeerMessage::Have`].
pub const MAX_HAVE_INDICES: usize = 4096;

/// Why bytes from a peer were refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The bytes do not decode as a message.
    #[error("malformed peer message: {0}")]
    Malformed(String),
    /// The message decodes but breaks a rule (a cap, an inconsistent field).
    #[error("invalid peer message: {0}")]
    Invalid(String),
    /// The underlying stream failed or ended mid-frame.
    #[error("peer stream: {0}")]
    Io(#[from] io::Error),
}

/// The first message on a connection: who is talking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Peers of another chain are disconnected.
    pub chain: ChainId,
    /// Peers of another store are disconnected.
    pub store: StoreId,
    /// The till's GUID, for accounting and logs.
    pub device: DeviceId,
}

/// Which chunks of one package a peer holds: bit `i` (LSB first within each
/// byte) is set when the peer holds chunk `i` of the package's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitfield {
    /// Number of chunks in the package.
    pub chunk_count: u32,
    /// `ceil(chunk_count / 8)` bytes; bits past `chunk_count` are zero.
    #[serde(with = "serde_bytes")]
    pub bits: Vec<u8>,
}

impl Bitfield {
    /// An empty bitfield for `chunk_count` chunks.
    pub fn new(chunk_count: u32) -> Self {
        Self {
            chunk_count,
            bits: vec![0; (chunk_count as usize).div_ceil(8)],
        }
    }

    /// Whether chunk `i` is held (false out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.chunk_count && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Marks chunk `i` held; out-of-range indices are ignored.
    pub fn set(&mut self, i: u32) {
        if i < self.chunk_count {
            self.bits[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    /// How many chunks are held.
    pub fn count_ones(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.count_ones() == self.chunk_count
    }

    fn validate(&self) -> Result<(), WireError> {
        if self.chunk_count as usize > MAX_CHUNKS {
            return Err(WireError::Invalid(format!(
                "bitfield for {} chunks exceeds {MAX_CHUNKS}",
                self.chunk_count
            )));
        }
        if self.bits.len() != (self.chunk_count as usize).div_ceil(8) {
            return Err(WireError::Invalid(
                "bitfield length does not match chunk count".into(),
            ));
        }
        let spare = self.chunk_count % 8;
        if spare != 0 && self.bits.last().is_some_and(|b| b >> spare != 0) {
            return Err(WireError::Invalid("bits set past the last chunk".into()));
        }
        Ok(())
    }
}

/// A message between two tills of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Identification; first on every connection, answered with the receiver's own.
    Hello(Hello),
    /// The sender's full holdings of one package.
    Bitfield {
        /// Package the bitfield is about.
        package: PackageId,
        /// Held chunks, by manifest index.
        have: Bitfield,
    },
    /// Chunks of a package that the sender has verified since its last report.
    Have {
        /// Package the indices refer to.
        package: PackageId,
        /// Manifest indices, at most [`MAX_HAVE_INDICES`].
        indices: Vec<u32>,
    },
    /// Asks for one chunk by hash (chunks are shared across packages).
    Request {
        /// The chunk wanted.
        hash: ChunkHash,
    },
    /// A chunk's bytes. The receiver hashes them before keeping or relaying them.
    Chunk {
        /// The hash the sender claims the bytes have.
        hash: ChunkHash,
        /// The bytes, at most [`MAX_CHUNK`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The sender does not hold the requested chunk.
    NotHave {
        /// The chunk asked for.
        hash: ChunkHash,
    },
    /// The sender is serving its maximum number of uploads; try later or elsewhere.
    Busy {
        /// The chunk asked for.
        hash: ChunkHash,
        /// Suggested wait before asking this peer again.
        retry_after_ms: u32,
    },
    /// The answer to a message that needs no other answer (a [`PeerMessage::Have`]).
    Ack,
    /// A chunk as the zstd frame its manifest lists (a format 3 package's
    /// compressed chunk). The receiver decodes it, capped at the chunk's
    /// length, and hashes the result. Old tills never ask for such chunks:
    /// they cannot read format 3 manifests.
    Zstd {
        /// The hash the sender claims the decoded bytes have.
        hash: ChunkHash,
        /// The frame, at most [`MAX_CHUNK`] bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

impl PeerMessage {
    /// Checks the caps and consistency rules serde cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Hello(_)
            | Self::Request { .. }
            | Self::NotHave { .. }
            | Self::Busy { .. }
            | Self::Ack => Ok(()),
            Self::Bitfield { have, .. } => have.validate(),
            Self::Have { indices, .. } => {
                if indices.len() > MAX_HAVE_INDICES {
                    return Err(WireError::Invalid(format!(
                        "{} indices exceed {MAX_HAVE_INDICES}",
                        indices.len()
                    )));
                }
                match indices.iter().find(|&&i| i as usize >= MAX_CHUNKS) {
                    Some(i) => Err(WireError::Invalid(format!("chunk index {i} out of range"))),
                    None => Ok(()),
                }
            }
            Self::Chunk { data, .. } | Self::Zstd { data, .. } => {
                if data.is_empty() || data.len() > MAX_CHUNK {
                    Err(WireError::Invalid(format!(
                        "chunk of {} bytes outside 1..={MAX_CHUNK}",
                        data.len()
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Encodes a message (without the frame length).
pub fn encode(msg: &PeerMessage) -> Vec<u8> {
    // Serialising owned data into a Vec cannot fail.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decodes one message, refusing oversized, malformed, trailing or invalid input.
pub fn decode(bytes: &[u8]) -> Result<PeerMessage, WireError> {
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (msg, rest): (PeerMessage, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    msg.validate()?;
    Ok(msg)
}

/// The body of a [`PeerMessage::Chunk`] frame (a [`PeerMessage::Zstd`] one
/// when `compressed`) up to its bytes: together with `len` bytes of data it is
/// exactly [`encode`]'s output, so a sender can stream the chunk's bytes after
/// it without building the message.
pub fn chunk_header(hash: &ChunkHash, compressed: bool, len: usize) -> Vec<u8> {
    let hash = *hash;
    let data = Vec::new();
    let mut head = encode(&if compressed {
        PeerMessage::Zstd { hash, data }
    } else {
        PeerMessage::Chunk { hash, data }
    });
    // The empty data's length is the last byte (varint 0): put the real one.
    head.pop();
    let mut n = len;
    while n >= 0x80 {
        head.push((n as u8) | 0x80);
        n >>= 7;
    }
    head.push(n as u8);
    head
}

/// Where a chunk's bytes sit in a [`PeerMessage::Chunk`] or
/// [`PeerMessage::Zstd`] frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLayout {
    /// The hash the sender claims.
    pub hash: ChunkHash,
    /// Whether the bytes are a zstd frame.
    pub compressed: bool,
    /// The bytes' range in the frame body.
    pub range: std::ops::Range<usize>,
}

/// The layout of `body` when it carries a chunk, so a receiver can keep its
/// bytes without a copy; `Ok(None)` for any other message (decode it with
/// [`decode`]).
pub fn chunk_layout(body: &[u8]) -> Result<Option<ChunkLayout>, WireError> {
    /// The two chunk variants' shape (one struct: both are hash, then bytes).
    #[derive(Deserialize)]
    struct Head<'a> {
        hash: ChunkHash,
        #[serde(borrow)]
        data: &'a [u8],
    }
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    // Only the variant tag is read for anything but a chunk.
    let Some(&tag) = body.first() else {
        return Err(WireError::Malformed("empty frame".into()));
    };
    if tag != CHUNK_TAG && tag != ZSTD_TAG {
        return Ok(None);
    }
    let (head, rest): (Head<'_>, &[u8]) =
        postcard::take_from_bytes(&body[1..]).map_err(|e| WireError::Malformed(e.to_string()))?;
    let Head { hash, data } = head;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    if data.len() > MAX_CHUNK {
        return Err(WireError::TooLarge(data.len()));
    }
    if data.is_empty() {
        return Err(WireError::Invalid("empty chunk".into()));
    }
    let start = data.as_ptr() as usize - body.as_ptr() as usize;
    Ok(Some(ChunkLayout {
        hash,
        compressed: tag == ZSTD_TAG,
        range: start..start + data.len(),
    }))
}

/// Postcard's tag of [`PeerMessage::Chunk`] (its variant index).
const CHUNK_TAG: u8 = 4;
/// Postcard's tag of [`PeerMessage::Zstd`].
const ZSTD_TAG: u8 = 8;

/// Writes one length-prefixed frame.
pub fn write_frame<W: Write>(w: &mut W, msg: &PeerMessage) -> Result<(), WireError> {
    let body = encode(msg);
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    Ok(())
}

/// Reads one length-prefixed frame. The length is checked against [`MAX_FRAME`]
/// before any buffer is allocated.
pub fn read_frame<R: Read>(r: &mut R) -> Result<PeerMessage, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_chunk_frames_are_the_encoded_message() {
        for compressed in [false, true] {
            for len in [0usize, 1, 127, 128, 300, 16_384, 1 << 20, MAX_CHUNK] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let hash = ChunkHash::of(&data);
                let whole = encode(&if compressed {
                    PeerMessage::Zstd {
                        hash,
                        data: data.clone(),
                    }
                } else {
                    PeerMessage::Chunk {
                        hash,
                        data: data.clone(),
                    }
                });
                let mut streamed = chunk_header(&hash, compressed, len);
                streamed.extend_from_slice(&data);
                assert_eq!(streamed, whole, "length {len}");
                if len == 0 {
                    assert!(chunk_layout(&whole).is_err(), "an empty chunk is refused");
                    continue;
                }
                let layout = chunk_layout(&whole).expect("layout").expect("a chunk");
                assert_eq!(layout.compressed, compressed);
                assert_eq!((layout.hash, &whole[layout.range]), (hash, &data[..]));
            }
        }
        // Any other message is left to decode.
        let other = encode(&PeerMessage::Request {
            hash: ChunkHash::of(b"x"),
        });
        assert!(chunk_layout(&other).expect("layout").is_none());
        // A chunk frame with trailing bytes, cut short, or empty is refused.
        let mut whole = encode(&PeerMessage::Chunk {
            hash: ChunkHash::of(b"x"),
            data: b"x".to_vec(),
        });
        whole.push(0);
        assert!(chunk_layout(&whole).is_err());
        whole.truncate(whole.len() - 2);
        assert!(chunk_layout(&whole).is_err());
        assert!(chunk_layout(&[]).is_err());
    }

    fn hello() -> PeerMessage {
        PeerMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            chain: ChainId::new("acme").expect("chain"),
            store: StoreId::new("store-1").expect("store"),
            device: DeviceId::from_bytes([7; 16]),
        })
    }

    #[test]
    fn frames_round_trip() {
        let mut bf = Bitfield::new(13);
        bf.set(0);
        bf.set(12);
        bf.set(99);
        assert_eq!(bf.count_ones(), 2);
        let msgs = vec![
            hello(),
            PeerMessage::Bitfield {
                package: PackageId::of(b"p"),
                have: bf,
            },
            PeerMessage::Have {
                package: PackageId::of(b"p"),
                indices: vec![1, 2, 3],
            },
            PeerMessage::Request {
                hash: ChunkHash::of(b"c"),
            },
            PeerMessage::Chunk {
                hash: ChunkHash::of(b"c"),
                data: b"c".to_vec(),
            },
            PeerMessage::NotHave {
                hash: ChunkHash::of(b"c"),
            },
            PeerMessage::Busy {
                hash: ChunkHash::of(b"c"),
                retry_after_ms: 250,
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            write_frame(&mut stream, m).expect("write");
        }
        let mut r = &stream[..];
        for m in &msgs {
            assert_eq!(&read_frame(&mut r).expect("read"), m);
        }
        assert!(matches!(read_frame(&mut r), Err(WireError::Io(_))));
    }

    #[test]
    fn a_full_chunk_fits_in_a_frame() {
        let msg = PeerMessage::Chunk {
            hash: ChunkHash::of(b"x"),
            data: vec![0xAB; MAX_CHUNK],
        };
        let bytes = encode(&msg);
        assert!(bytes.len() <= MAX_FRAME);
        // serde_bytes keeps the overhead to the header: no per-byte expansion.
        assert!(bytes.len() < MAX_CHUNK + 64);
        assert_eq!(decode(&bytes).expect("decode"), msg);
    }

    #[test]
    fn hostile_frames_are_refused() {
        // A length prefix of 4 GiB must not allocate.
        let mut r = &[0xFF, 0xFF, 0xFF, 0xFF, 0][..];
        assert!(matches!(read_frame(&mut r), Err(WireError::TooLarge(_))));
        // Oversized chunk.
        let big = PeerMessage::Chunk {
            hash: ChunkHash::of(b"x"),
            data: vec![1; MAX_CHUNK + 1],
        };
        assert!(decode(&encode(&big)).is_err());
        // Bits past the end.
        let bad = PeerMessage::Bitfield {
            package: PackageId::of(b"p"),
            have: Bitfield {
                chunk_count: 3,
                bits: vec![0b1000],
            },
        };
        assert!(matches!(decode(&encode(&bad)), Err(WireError::Invalid(_))));
        // Trailing bytes and unknown variants.
        let mut trailing = encode(&hello());
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        assert!(decode(&[200]).is_err());
        assert!(decode(&[]).is_err());
    }
}
