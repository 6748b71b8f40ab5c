//! The length-delimited framing codec (pure).
//!
//! Wire format of one message: `uvarint(len) || body[len]`, `len <= max`. A varint
//! longer than 5 bytes or a value above `u32::MAX` is garbage. The reader feeds whatever
//! bytes arrived into a `BytesMut`; [`LengthCodec::decode`] splits off one complete body
//! (zero-copy) or says it needs more.
//!
//! A media frame body is `uvarint(hlen) || FrameHeader[hlen] || payload`. The writer
//! sends [`MediaFrame::encode_prefix`] and then the payload `Bytes` as they are, so the
//! payload is never copied on the send path; a frame laid out once for every subscriber
//! ([`MediaFrame::laid_out`]) goes out in one write.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::pb;

/// Longest varint we accept for a length: 5 bytes carry 35 bits, enough for `u32`.
const MAX_VARINT_LEN: usize = 5;
/// A frame header is a handful of integers; anything larger is garbage.
pub const MAX_HEADER_LEN: usize = 256;

/// Errors from decoding framed input. Each one means the stream is unusable and must
/// be reset; none of them is a reason to panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("malformed length prefix (varint longer than {MAX_VARINT_LEN} bytes)")]
    BadLength,
    #[error("malformed protobuf {what}: {reason}")]
    BadMessage { what: &'static str, reason: String },
    #[error("frame header of {0} bytes is larger than {MAX_HEADER_LEN}")]
    HeaderTooLarge(usize),
    #[error("frame body ends inside its header")]
    TruncatedHeader,
}

/// Splits a byte stream into length-delimited bodies no longer than `max`.
#[derive(Debug, Clone, Copy)]
pub struct LengthCodec {
    max: usize,
}

impl LengthCodec {
    pub fn new(max: usize) -> Self {
        Self { max }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Splits one complete body off the front of `buf`, or returns `Ok(None)` if more
    /// bytes are needed. On error `buf` is left as it was.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        let Some((len, used)) = read_uvarint(buf)? else {
            return Ok(None);
        };
        if len > self.max as u64 {
            return Err(FramingError::TooLarge { len, max: self.max });
        }
        // `len <= max: usize`, so the cast is lossless.
        let len = len as usize;
        if buf.len() - used < len {
            // Reserve so the next reads fill the buffer without repeated growth.
            buf.reserve(used + len - buf.len());
            return Ok(None);
        }
        buf.advance(used);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Appends `uvarint(len)` for a body of `len` bytes.
    pub fn encode_len(&self, len: usize, dst: &mut BytesMut) -> Result<(), FramingError> {
        if len > self.max {
            return Err(FramingError::TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        write_uvarint(len as u64, dst);
        Ok(())
    }

    /// Appends one length-delimited protobuf message.
    pub fn encode_message<M: Message>(&self, msg: &M, dst: &mut BytesMut) -> Result<(), FramingError> {
        let len = msg.encoded_len();
        self.encode_len(len, dst)?;
        dst.reserve(len);
        // `reserve` above makes room, so encoding cannot run out of buffer.
        msg.encode(dst).map_err(|e| FramingError::BadMessage {
            what: "encode",
            reason: e.to_string(),
        })
    }
}

/// Decodes a protobuf body produced by [`LengthCodec::decode`].
pub fn decode_message<M: Message + Default>(what: &'static str, body: Bytes) -> Result<M, FramingError> {
    M::decode(body).map_err(|e| FramingError::BadMessage {
        what,
        reason: e.to_string(),
    })
}

/// Reads an unsigned LEB128 varint of at most [`MAX_VARINT_LEN`] bytes.
/// Returns `(value, bytes used)`, or `None` when the input ends inside the varint.
fn read_uvarint(buf: &[u8]) -> Result<Option<(u64, usize)>, FramingError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(FramingError::BadLength);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(FramingError::BadLength)
    } else {
        Ok(None)
    }
}

fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn write_uvarint(mut v: u64, dst: &mut BytesMut) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// One media frame: header plus payload (AVCC access unit, or its ciphertext).
#[derive(Debug, Clone)]
pub struct MediaFrame {
    pub header: pb::FrameHeader,
    pub payload: Bytes,
    /// The whole frame as it goes on the wire (outer length, header length, header,
    /// payload) when its sender laid it out once for every subscriber, with `payload` the
    /// tail of the same buffer: one write per frame instead of two. Only used while it
    /// still matches `header` and `payload` ([`Self::wire_if_current`]), so a header
    /// changed later (a subscriber's `skipped_before`) simply falls back to two writes.
    pub wire: Option<Bytes>,
}

/// Frames are equal when header and payload are; `wire` is a cached encoding of them.
impl PartialEq for MediaFrame {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.payload == other.payload
    }
}

/// A codec for the wire prefix of frames laid out before any stream's maximum is known
/// (the writer checks the payload against its own stream's maximum first).
const WIRE_CODEC: LengthCodec = LengthCodec { max: u32::MAX as usize };

impl MediaFrame {
    pub fn new(header: pb::FrameHeader, payload: Bytes) -> Self {
        Self {
            header,
            payload,
            wire: None,
        }
    }

    /// A frame laid out in one buffer: `fill` appends exactly `payload_len` payload bytes
    /// (sealing in place, say) after the prefix, and the payload is a slice of the result.
    pub fn laid_out(
        header: pb::FrameHeader,
        payload_len: usize,
        fill: impl FnOnce(&mut BytesMut),
    ) -> Result<Self, FramingError> {
        let mut buf = BytesMut::with_capacity(3 * MAX_VARINT_LEN + header.encoded_len() + payload_len);
        encode_prefix_parts(&header, payload_len, &WIRE_CODEC, &mut buf)?;
        let start = buf.len();
        fill(&mut buf);
        debug_assert_eq!(buf.len() - start, payload_len, "fill wrote the announced length");
        let wire = buf.freeze();
        Ok(Self {
            payload: wire.slice(start..),
            header,
            wire: Some(wire),
        })
    }

    /// The one-buffer encoding, if there is one and `prefix` (this frame's prefix as
    /// [`Self::encode_prefix_into`] wrote it just now) shows it is still this frame.
    pub fn wire_if_current(&self, prefix: &[u8]) -> Option<&Bytes> {
        let w = self.wire.as_ref()?;
        let same = w.len() == prefix.len() + self.payload.len()
            && w.starts_with(prefix)
            && std::ptr::eq(w[prefix.len()..].as_ptr(), self.payload.as_ptr());
        same.then_some(w)
    }

    /// Everything that goes on the wire before the payload: the outer length, the
    /// header length and the header. Send the payload right after it.
    pub fn encode_prefix(&self, codec: &LengthCodec) -> Result<BytesMut, FramingError> {
        let mut out = BytesMut::with_capacity(3 * MAX_VARINT_LEN + self.header.encoded_len());
        self.encode_prefix_into(codec, &mut out)?;
        Ok(out)
    }

    /// [`Self::encode_prefix`] into a reused buffer (no allocation per frame).
    pub fn encode_prefix_into(&self, codec: &LengthCodec, out: &mut BytesMut) -> Result<(), FramingError> {
        encode_prefix_parts(&self.header, self.payload.len(), codec, out)
    }

    /// The whole frame in one buffer (copies the payload; for tests and small frames).
    pub fn encode(&self, codec: &LengthCodec) -> Result<BytesMut, FramingError> {
        let mut out = self.encode_prefix(codec)?;
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes a frame body (as split by [`LengthCodec::decode`]); the payload is a
    /// zero-copy slice of `body`.
    pub fn decode(mut body: Bytes) -> Result<Self, FramingError> {
        let Some((hlen, used)) = read_uvarint(&body)? else {
            return Err(FramingError::TruncatedHeader);
        };
        let hlen = usize::try_from(hlen).map_err(|_| FramingError::BadLength)?;
        if hlen > MAX_HEADER_LEN {
            return Err(FramingError::HeaderTooLarge(hlen));
        }
        if body.len() - used < hlen {
            return Err(FramingError::TruncatedHeader);
        }
        body.advance(used);
        let header_bytes = body.split_to(hlen);
        let header = decode_message("frame header", header_bytes)?;
        Ok(Self::new(header, body))
    }
}

/// The wire prefix of a frame with `header` and a payload of `payload_len` bytes.
fn encode_prefix_parts(
    header: &pb::FrameHeader,
    payload_len: usize,
    codec: &LengthCodec,
    out: &mut BytesMut,
) -> Result<(), FramingError> {
    let hlen = header.encoded_len();
    let body_len = uvarint_len(hlen as u64) + hlen + payload_len;
    codec.encode_len(body_len, out)?;
    write_uvarint(hlen as u64, out);
    out.reserve(hlen);
    header.encode(out).map_err(|e| FramingError::BadMessage {
        what: "frame header",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(seq: u64, payload: Vec<u8>) -> MediaFrame {
        MediaFrame {
            header: pb::FrameHeader {
                sequence: seq,
                pts_90k: seq.wrapping_mul(3000),
                dts_90k: seq.wrapping_mul(3000),
                capture_unix_us: 1_700_000_000_000_000,
                keyframe: seq.is_multiple_of(60),
                key_epoch: 7,
                skipped_before: 0,
                new_key: Bytes::new(),
                camera_signature: Bytes::new(),
            },
            payload: Bytes::from(payload),
            wire: None,
        }
    }

    #[test]
    fn a_laid_out_frame_is_its_own_encoding_until_its_header_changes() {
        let codec = LengthCodec::new(1 << 20);
        let plain = frame(61, vec![7u8; 3000]);
        let laid = MediaFrame::laid_out(plain.header.clone(), 3000, |b| b.extend_from_slice(&[7u8; 3000])).unwrap();
        assert_eq!(laid, plain);
        let wire = laid.wire.clone().unwrap();
        assert_eq!(&wire[..], &plain.encode(&codec).unwrap()[..], "one buffer, same bytes");
        let mut prefix = BytesMut::new();
        laid.encode_prefix_into(&codec, &mut prefix).unwrap();
        assert!(laid.wire_if_current(&prefix).is_some());
        // Decoding the wire gives the frame back.
        let mut buf = BytesMut::from(&wire[..]);
        let body = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(MediaFrame::decode(body).unwrap(), plain);

        // A subscriber's skip count changes the header: the cached layout is stale.
        let mut skipped = laid.clone();
        skipped.header.skipped_before = 3;
        prefix.clear();
        skipped.encode_prefix_into(&codec, &mut prefix).unwrap();
        assert!(skipped.wire_if_current(&prefix).is_none());
        // So does a payload swapped for other bytes of the same length.
        let mut swapped = laid.clone();
        swapped.payload = Bytes::from(vec![7u8; 3000]);
        prefix.clear();
        swapped.encode_prefix_into(&codec, &mut prefix).unwrap();
        assert!(swapped.wire_if_current(&prefix).is_none());
        // And a plain frame has none.
        assert!(plain.wire_if_current(&prefix).is_none());
    }

    #[test]
    fn oversize_length_is_an_error_before_the_body_arrives() {
        let codec = LengthCodec::new(1000);
        let mut buf = BytesMut::new();
        write_uvarint(1001, &mut buf);
        assert_eq!(
            codec.decode(&mut buf),
            Err(FramingError::TooLarge { len: 1001, max: 1000 })
        );
    }

    #[test]
    fn endless_varint_is_garbage() {
        let codec = LengthCodec::new(1 << 20);
        let mut buf = BytesMut::from(&[0xff_u8; 5][..]);
        assert_eq!(codec.decode(&mut buf), Err(FramingError::BadLength));
        let mut short = BytesMut::from(&[0xff_u8; 4][..]);
        assert_eq!(codec.decode(&mut short), Ok(None));
    }

    #[test]
    fn garbage_protobuf_is_an_error() {
        let r: Result<pb::StreamRequest, _> = decode_message("request", Bytes::from_static(&[0x0a, 0xff, 0xff]));
        assert!(matches!(r, Err(FramingError::BadMessage { .. })));
    }

    #[test]
    fn header_length_beyond_body_is_truncated() {
        let mut body = BytesMut::new();
        write_uvarint(40, &mut body);
        body.extend_from_slice(&[0u8; 10]);
        assert_eq!(MediaFrame::decode(body.freeze()), Err(FramingError::TruncatedHeader));
    }

    proptest! {
        /// Any split of a stream of encoded messages decodes back to the same bodies.
        #[test]
        fn roundtrip_with_arbitrary_splits(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let codec = LengthCodec::new(300);
            let mut wire = BytesMut::new();
            for b in &bodies {
                codec.encode_len(b.len(), &mut wire).expect("within max");
                wire.extend_from_slice(b);
            }
            let wire = wire.freeze();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter();
            while pos < wire.len() {
                let n = cuts.next().unwrap_or(wire.len()).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                while let Some(body) = codec.decode(&mut buf).expect("valid input") {
                    out.push(body.to_vec());
                }
            }
            prop_assert_eq!(out, bodies);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic the decoders.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
            let codec = LengthCodec::new(max);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(body)) = codec.decode(&mut buf) {
                let _ = MediaFrame::decode(body.clone());
                let _ = decode_message::<pb::StreamRequest>("request", body);
            }
        }

        #[test]
        fn media_frames_roundtrip(seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let codec = LengthCodec::new(4096);
            let f = frame(seq, payload);
            let mut wire = f.encode(&codec).expect("fits");
            let body = codec.decode(&mut wire).expect("valid").expect("complete");
            prop_assert_eq!(MediaFrame::decode(body).expect("valid"), f);
        }
    }
}
