//! The request-response codec of the store protocol: each request and each
//! response is one [`PeerMessage`] in a length-prefixed frame (4-byte big-endian
//! length, then postcard). The length is checked against [`MAX_FRAME`] before a
//! buffer is allocated; a frame that does not decode fails the stream, and the
//! event loop drops the peer.
//!
//! Chunk bytes are never copied between the socket and the chunk store: a
//! received chunk stays in its frame's buffer ([`Reply::Chunk`]), and an upload
//! is streamed from its chunk file in [`UPLOAD_PIECE`]-byte pieces
//! ([`Reply::Upload`]), so serving a chunk costs one piece of memory, not the
//! whole chunk.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use tillswarm_protocol::ChunkHash;
use tillswarm_protocol::wire::{self, MAX_FRAME, PeerMessage};

/// Bytes of a chunk file read and sent at a time.
pub const UPLOAD_PIECE: usize = 256 * 1024;

/// A response of the store protocol as this node sends and receives it.
pub enum Reply {
    /// Any message but a chunk's bytes.
    Message(PeerMessage),
    /// A chunk received from a peer; its bytes (not verified yet) stay in the
    /// frame's buffer.
    Chunk {
        /// The hash the peer claims.
        hash: ChunkHash,
        /// Whether the bytes are the chunk's zstd frame.
        compressed: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A held chunk to send, streamed from its file. `slot` (the upload's
    /// place among the node's concurrent uploads) is released once written.
    Upload {
        /// The chunk's hash.
        hash: ChunkHash,
        /// Its file, open for reading.
        file: std::fs::File,
        /// Whether the file holds the chunk's zstd frame.
        compressed: bool,
        /// Its length (the file's, checked while sending).
        len: usize,
        /// Released when the upload ends.
        slot: tokio::sync::OwnedSemaphorePermit,
    },
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(m) => write!(f, "Message({m:?})"),
            Self::Chunk { hash, data, .. } => write!(f, "Chunk({hash}, {} bytes)", data.len()),
            Self::Upload { hash, len, .. } => write!(f, "Upload({hash}, {len} bytes)"),
        }
    }
}

/// The postcard codec for [`wire::PROTOCOL_NAME`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCodec;

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(invalid(format!("frame of {len} bytes over the cap")));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<PeerMessage> {
    wire::decode(&read_body(io).await?).map_err(invalid)
}

async fn read_reply<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Reply> {
    let body = read_body(io).await?;
    match wire::chunk_layout(&body).map_err(invalid)? {
        Some(layout) => Ok(Reply::Chunk {
            hash: layout.hash,
            compressed: layout.compressed,
            data: Bytes::from(body).slice(layout.range),
        }),
        None => Ok(Reply::Message(wire::decode(&body).map_err(invalid)?)),
    }
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    msg: &PeerMessage,
) -> io::Result<()> {
    let body = wire::encode(msg);
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message over the frame cap",
        ));
    }
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

/// Streams a chunk file as a [`PeerMessage::Chunk`] frame (a
/// [`PeerMessage::Zstd`] one when `compressed`), a piece at a time (each read
/// on the blocking pool); fails if the file is not `len` bytes.
async fn write_upload<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    hash: &ChunkHash,
    compressed: bool,
    mut file: std::fs::File,
    len: usize,
) -> io::Result<()> {
    let head = wire::chunk_header(hash, compressed, len);
    if head.len() + len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "chunk over the frame cap",
        ));
    }
    io.write_all(&((head.len() + len) as u32).to_be_bytes())
        .await?;
    io.write_all(&head).await?;
    let mut piece = vec![0u8; UPLOAD_PIECE.min(len)];
    let mut left = len;
    while left > 0 {
        let want = left.min(piece.len());
        let (f, p, read) = tokio::task::spawn_blocking(move || {
            let read = file.read_exact(&mut piece[..want]);
            (file, piece, read)
        })
        .await
        .map_err(io::Error::other)?;
        (file, piece) = (f, p);
        read?;
        io.write_all(&piece[..want]).await?;
        left -= want;
    }
    io.close().await
}

impl request_response::Codec for StoreCodec {
    type Protocol = StreamProtocol;
    type Request = PeerMessage;
    type Response = Reply;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<PeerMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Reply>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_reply(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: PeerMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Reply,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Reply::Message(m) => write_frame(io, &m).await,
            Reply::Chunk {
                hash,
                compressed,
                data,
            } => {
                let head = wire::chunk_header(&hash, compressed, data.len());
                if head.len() + data.len() > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "chunk over the frame cap",
                    ));
                }
                io.write_all(&((head.len() + data.len()) as u32).to_be_bytes())
                    .await?;
                io.write_all(&head).await?;
                io.write_all(&data).await?;
                io.close().await
            }
            Reply::Upload {
                hash,
                file,
                compressed,
                len,
                slot,
            } => {
                let sent = write_upload(io, &hash, compressed, file, len).await;
                drop(slot);
                sent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillswarm_protocol::ChunkHash;

    #[tokio::test]
    async fn an_upload_streamed_from_its_file_reads_back_as_the_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Over two pieces, not a multiple of one.
        let data: Vec<u8> = (0..UPLOAD_PIECE * 2 + 777)
            .map(|i| (i % 251) as u8)
            .collect();
        let hash = ChunkHash::of(&data);
        let path = dir.path().join("c");
        std::fs::write(&path, &data).expect("write");
        let mut buf = futures_util::io::Cursor::new(Vec::new());
        let open = || std::fs::File::open(&path).expect("open");
        write_upload(&mut buf, &hash, false, open(), data.len())
            .await
            .expect("upload");
        let wire_bytes = buf.into_inner();
        let mut r = futures_util::io::Cursor::new(wire_bytes.clone());
        match read_reply(&mut r).await.expect("read") {
            Reply::Chunk {
                hash: h,
                data: d,
                compressed,
            } => assert!(h == hash && d == data && !compressed),
            other => panic!("{other:?}"),
        }
        // The same bytes as the whole message framed at once.
        let mut whole = futures_util::io::Cursor::new(Vec::new());
        write_frame(
            &mut whole,
            &PeerMessage::Chunk {
                hash,
                data: data.clone(),
            },
        )
        .await
        .expect("frame");
        assert_eq!(wire_bytes, whole.into_inner());
        // A file shorter than it claims fails the upload (the peer sees a cut
        // frame and asks elsewhere).
        let mut sink = futures_util::io::Cursor::new(Vec::new());
        let err = write_upload(&mut sink, &hash, false, open(), data.len() + 1)
            .await
            .expect_err("short file");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn frames_round_trip_and_hostile_frames_fail_cleanly() {
        let msg = PeerMessage::Chunk {
            hash: ChunkHash::of(b"x"),
            data: b"x".to_vec(),
        };
        let mut buf = futures_util::io::Cursor::new(Vec::new());
        write_frame(&mut buf, &msg).await.expect("write");
        let mut r = futures_util::io::Cursor::new(buf.into_inner());
        assert_eq!(read_frame(&mut r).await.expect("read"), msg);

        // A 4 GiB length prefix is refused before any allocation.
        let mut huge = futures_util::io::Cursor::new(vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        let err = read_frame(&mut huge).await.expect_err("oversized");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Garbage of a plausible length.
        let mut garbage = vec![0, 0, 0, 4];
        garbage.extend_from_slice(&[0xFE, 0xFE, 0xFE, 0xFE]);
        let err = read_frame(&mut futures_util::io::Cursor::new(garbage))
            .await
            .expect_err("garbage");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Truncated.
        let err = read_frame(&mut futures_util::io::Cursor::new(vec![0, 0, 0, 9, 1]))
            .await
            .expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
