//! The request-response codec of the store protocol: each request and each
//! response is one [`PeerMessage`] in a length-prefixed frame (4-byte big-endian
//! length, then postcard). The length is checked against [`MAX_FRAME`] before a
//! buffer is allocated; a frame that does not decode fails the stream, and the
//! event loop drops the peer.

use std::io;

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use tillswarm_protocol::wire::{self, MAX_FRAME, PeerMessage};

/// The postcard codec for [`wire::PROTOCOL_NAME`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<PeerMessage> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the cap"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    wire::decode(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
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

impl request_response::Codec for StoreCodec {
    type Protocol = StreamProtocol;
    type Request = PeerMessage;
    type Response = PeerMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<PeerMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<PeerMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
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
        res: PeerMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillswarm_protocol::ChunkHash;

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
