//! Async framing over a libp2p stream: reads length-delimited bodies through the pure
//! [`LengthCodec`], writes protobuf messages and media frames (prefix, then the payload
//! `Bytes` as they are: no copy of the payload; or, for a frame the hub laid out in one
//! buffer, that buffer in one write).

use bytes::{Bytes, BytesMut};
use camesh_proto::{FramingError, LengthCodec, MediaFrame};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message;

/// Smallest read; large frames read in one go once their length is known.
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("protocol error: {0}")]
    Framing(#[from] FramingError),
    #[error("stream ended in the middle of a message ({0} bytes buffered)")]
    Truncated(usize),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads length-delimited bodies from `R`.
#[derive(Debug)]
pub struct FramedRead<R> {
    io: R,
    buf: BytesMut,
    codec: LengthCodec,
}

impl<R: AsyncRead + Unpin> FramedRead<R> {
    pub fn new(io: R, codec: LengthCodec) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec,
        }
    }

    /// Changes the maximum (a stream carries a small request, then large frames).
    pub fn set_max(&mut self, max: usize) {
        self.codec = LengthCodec::new(max);
    }

    /// The next body, `Ok(None)` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Bytes>, IoError> {
        loop {
            if let Some(body) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(body));
            }
            let start = self.buf.len();
            let want = (self.buf.capacity() - start).max(READ_CHUNK);
            self.buf.resize(start + want, 0);
            let n = match self.io.read(&mut self.buf[start..]).await {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e.into());
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(IoError::Truncated(self.buf.len()))
                };
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.io
    }
}

/// Reads the one request a stream opens with, within `limit`. `Ok(None)`: the peer closed
/// the stream or sent nothing in time (nothing to answer). What the peer sends after the
/// request is not read (request/answer protocols send nothing more until the answer).
pub async fn read_request<R: AsyncRead + Unpin>(
    io: R,
    codec: LengthCodec,
    limit: std::time::Duration,
) -> Result<Option<Bytes>, IoError> {
    let mut reader = FramedRead::new(io, codec);
    tokio::time::timeout(limit, reader.next()).await.unwrap_or(Ok(None))
}

pub async fn write_message<W: AsyncWrite + Unpin, M: Message>(
    io: &mut W,
    codec: &LengthCodec,
    msg: &M,
) -> Result<(), IoError> {
    let mut buf = BytesMut::new();
    codec.encode_message(msg, &mut buf)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Writes one frame without flushing (the caller flushes when its queue is empty).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    codec: &LengthCodec,
    frame: &MediaFrame,
    scratch: &mut BytesMut,
) -> Result<(), IoError> {
    scratch.clear();
    frame.encode_prefix_into(codec, scratch)?;
    if let Some(wire) = frame.wire_if_current(scratch) {
        // Laid out once by the hub for every subscriber: one write (and one copy into
        // quinn's send buffer) instead of two.
        io.write_all(wire).await?;
        return Ok(());
    }
    io.write_all(scratch).await?;
    io.write_all(&frame.payload).await?;
    Ok(())
}
