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
