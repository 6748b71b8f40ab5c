//! The segment format as bytes (pure): headers, records, and the bounded reader all
//! decoding goes through. Nothing here does IO, allocates more than its input holds, or
//! panics on any input.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{
    kind, valid_camera_id, FrameRecord, Record, SegmentError, SegmentHeader, FRAME_FIXED_LEN, MAGIC, MAX_HEADER_LEN,
    MAX_KEY_LEN, MAX_PARAM_SET_LEN, MAX_REASON_LEN, MAX_RECORD_LEN, RECORD_OVERHEAD, VERSION,
};
use crate::media::{AudioCodec, AudioParams, CodecParams};

/// A bounds-checked reader over a byte slice: every getter returns `None` past the end.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cur { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn encode_codec(c: &CodecParams, out: &mut Vec<u8>) -> Result<(), String> {
    if c.sps.len() > MAX_PARAM_SET_LEN || c.pps.len() > MAX_PARAM_SET_LEN {
        return Err(format!("SPS/PPS longer than {MAX_PARAM_SET_LEN} bytes"));
    }
    out.extend_from_slice(&c.width.to_be_bytes());
    out.extend_from_slice(&c.height.to_be_bytes());
    out.push(c.profile_idc);
    out.push(c.level_idc);
    out.extend_from_slice(&c.fps_num.to_be_bytes());
    out.extend_from_slice(&c.fps_den.to_be_bytes());
    // Both lengths are <= MAX_PARAM_SET_LEN, so they fit in u16.
    out.extend_from_slice(&(c.sps.len() as u16).to_be_bytes());
    out.extend_from_slice(&c.sps);
    out.extend_from_slice(&(c.pps.len() as u16).to_be_bytes());
    out.extend_from_slice(&c.pps);
    Ok(())
}

fn decode_codec(cur: &mut Cur<'_>) -> Result<CodecParams, &'static str> {
    let short = "codec configuration is cut short";
    let width = cur.u32().ok_or(short)?;
    let height = cur.u32().ok_or(short)?;
    let profile_idc = cur.u8().ok_or(short)?;
    let level_idc = cur.u8().ok_or(short)?;
    let fps_num = cur.u32().ok_or(short)?;
    let fps_den = cur.u32().ok_or(short)?;
    let mut param_set = || -> Result<Bytes, &'static str> {
        let len = usize::from(cur.u16().ok_or(short)?);
        if len > MAX_PARAM_SET_LEN {
            return Err("parameter set longer than the maximum");
        }
        Ok(Bytes::copy_from_slice(cur.take(len).ok_or(short)?))
    };
    let sps = param_set()?;
    let pps = param_set()?;
    Ok(CodecParams {
        sps,
        pps,
        width,
        height,
        profile_idc,
        level_idc,
        fps_num,
        fps_den,
    })
}

/// Largest audio extradata kept (an AudioSpecificConfig or OpusHead is tens of bytes).
const MAX_AUDIO_EXTRADATA: usize = 1024;

fn encode_audio(a: &AudioParams, out: &mut Vec<u8>) -> Result<(), String> {
    if a.extradata.len() > MAX_AUDIO_EXTRADATA {
        return Err(format!("audio extradata longer than {MAX_AUDIO_EXTRADATA} bytes"));
    }
    out.push(match a.codec {
        AudioCodec::Aac => 1,
        AudioCodec::Pcma => 2,
        AudioCodec::Pcmu => 3,
        AudioCodec::Opus => 4,
    });
    out.extend_from_slice(&a.sample_rate.to_be_bytes());
    out.push(a.channels.min(255) as u8);
    out.extend_from_slice(&(a.extradata.len() as u16).to_be_bytes());
    out.extend_from_slice(&a.extradata);
    Ok(())
}

fn decode_audio(cur: &mut Cur<'_>) -> Result<AudioParams, &'static str> {
    let short = "audio configuration is cut short";
    let codec = match cur.u8().ok_or(short)? {
        1 => AudioCodec::Aac,
        2 => AudioCodec::Pcma,
        3 => AudioCodec::Pcmu,
        4 => AudioCodec::Opus,
        _ => return Err("unknown audio codec"),
    };
    let sample_rate = cur.u32().ok_or(short)?;
    let channels = u32::from(cur.u8().ok_or(short)?);
    let len = usize::from(cur.u16().ok_or(short)?);
    if len > MAX_AUDIO_EXTRADATA {
        return Err("audio extradata longer than the maximum");
    }
    let extradata = Bytes::copy_from_slice(cur.take(len).ok_or(short)?);
    Ok(AudioParams {
        codec,
        sample_rate,
        channels,
        extradata,
    })
}

/// Encodes a segment header (magic through checksum).
pub fn encode_header(h: &SegmentHeader) -> Result<Vec<u8>, SegmentError> {
    if !valid_camera_id(&h.camera) {
        return Err(SegmentError::InvalidCamera(h.camera.clone()));
    }
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&VERSION.to_be_bytes());
    body.extend_from_slice(&h.start_us.to_be_bytes());
    body.extend_from_slice(&h.created_us.to_be_bytes());
    // valid_camera_id bounds the length to 64.
    body.push(h.camera.len() as u8);
    body.extend_from_slice(h.camera.as_bytes());
    match &h.codec {
        None => body.push(0),
        Some(c) => {
            body.push(1);
            encode_codec(c, &mut body).map_err(|reason| SegmentError::BadHeader {
                path: PathBuf::new(),
                reason,
            })?;
        }
    }
    if let Some(a) = &h.audio {
        body.push(1);
        encode_audio(a, &mut body).map_err(|reason| SegmentError::BadHeader {
            path: PathBuf::new(),
            reason,
        })?;
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    Ok(out)
}

/// Decodes a header from the start of `buf`; returns it and its length on disk.
pub fn decode_header(buf: &[u8], path: &Path) -> Result<(SegmentHeader, u64), SegmentError> {
    let truncated = || SegmentError::TruncatedHeader {
        path: path.to_owned(),
        len: buf.len() as u64,
    };
    let bad = |reason: &str| SegmentError::BadHeader {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut cur = Cur::new(buf);
    let magic = cur.take(MAGIC.len()).ok_or_else(truncated)?;
    if magic != MAGIC {
        return Err(SegmentError::BadMagic { path: path.to_owned() });
    }
    let body_len = cur.u32().ok_or_else(truncated)?;
    if body_len > MAX_HEADER_LEN {
        return Err(bad(&format!(
            "header length {body_len} is over the maximum {MAX_HEADER_LEN}"
        )));
    }
    let body = cur.take(body_len as usize).ok_or_else(truncated)?;
    let crc = cur.u32().ok_or_else(truncated)?;
    if crc != crc32fast::hash(body) {
        return Err(bad("header checksum mismatch"));
    }
    let mut b = Cur::new(body);
    let short = || bad("header body is cut short");
    let version = b.u16().ok_or_else(short)?;
    if version != VERSION {
        return Err(SegmentError::UnsupportedVersion {
            path: path.to_owned(),
            version,
        });
    }
    let start_us = b.i64().ok_or_else(short)?;
    let created_us = b.i64().ok_or_else(short)?;
    let cam_len = usize::from(b.u8().ok_or_else(short)?);
    let camera = std::str::from_utf8(b.take(cam_len).ok_or_else(short)?)
        .map_err(|_| bad("camera id is not UTF-8"))?
        .to_owned();
    if !valid_camera_id(&camera) {
        return Err(bad(&format!("invalid camera id {camera:?}")));
    }
    let codec = match b.u8().ok_or_else(short)? {
        0 => None,
        1 => Some(decode_codec(&mut b).map_err(bad)?),
        other => return Err(bad(&format!("codec flag {other} is neither 0 nor 1"))),
    };
    // Segments written before audio end here.
    let audio = match b.u8() {
        None => None,
        Some(1) => Some(decode_audio(&mut b).map_err(bad)?),
        Some(other) => return Err(bad(&format!("audio flag {other} is not 1"))),
    };
    if !b.is_empty() {
        return Err(bad("trailing bytes in the header body"));
    }
    let header = SegmentHeader {
        version,
        camera,
        start_us,
        created_us,
        codec,
        audio,
    };
    Ok((header, cur.pos as u64))
}

/// Appends one encoded record (length, kind, payload, checksum) to `out`.
pub fn encode_record(rec: &Record, out: &mut Vec<u8>) -> Result<(), SegmentError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, rec.kind()]);
    match rec {
        Record::Frame(f) => {
            out.reserve(FRAME_FIXED_LEN + f.payload.len() + 4);
            out.extend_from_slice(&f.sequence.to_be_bytes());
            out.extend_from_slice(&f.pts_90k.to_be_bytes());
            out.extend_from_slice(&f.dts_90k.to_be_bytes());
            out.extend_from_slice(&f.capture_unix_us.to_be_bytes());
            out.extend_from_slice(&f.key_epoch.to_be_bytes());
            out.extend_from_slice(&f.skipped_before.to_be_bytes());
            out.push(u8::from(f.keyframe));
            out.extend_from_slice(&f.payload);
        }
        Record::Key { epoch, key } => {
            if key.len() > MAX_KEY_LEN {
                out.truncate(start);
                return Err(SegmentError::TooLarge {
                    len: key.len(),
                    max: MAX_KEY_LEN,
                });
            }
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(key);
        }
        Record::Gap { from_us, to_us, reason } => {
            out.extend_from_slice(&from_us.to_be_bytes());
            out.extend_from_slice(&to_us.to_be_bytes());
            out.extend_from_slice(truncate_str(reason, MAX_REASON_LEN).as_bytes());
        }
        Record::Codec(c) => {
            if let Err(reason) = encode_codec(c, out) {
                out.truncate(start);
                return Err(SegmentError::BadHeader {
                    path: PathBuf::new(),
                    reason,
                });
            }
        }
        Record::Seal => {}
    }
    let len = out.len() - start - 5;
    if len > MAX_RECORD_LEN as usize {
        out.truncate(start);
        return Err(SegmentError::TooLarge {
            len,
            max: MAX_RECORD_LEN as usize,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(())
}

pub(super) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes the payload of a record whose length and checksum were already verified.
/// `payload` must be the `Bytes` the record was read into (frames keep a zero-copy slice).
pub(super) fn decode_payload(kind_byte: u8, payload: Bytes) -> Result<Record, String> {
    let mut cur = Cur::new(&payload);
    let short = |what: &str| format!("{what} record is cut short");
    match kind_byte {
        kind::FRAME => {
            let (Some(sequence), Some(pts_90k), Some(dts_90k), Some(capture_unix_us), Some(key_epoch)) =
                (cur.u64(), cur.u64(), cur.u64(), cur.i64(), cur.u64())
            else {
                return Err(short("frame"));
            };
            let skipped_before = cur.u32().ok_or_else(|| short("frame"))?;
            let flags = cur.u8().ok_or_else(|| short("frame"))?;
            if flags > 1 {
                return Err(format!("frame flags {flags:#x} has unknown bits"));
            }
            let data = payload.slice(cur.pos..);
            Ok(Record::Frame(FrameRecord {
                sequence,
                pts_90k,
                dts_90k,
                capture_unix_us,
                keyframe: flags & 1 == 1,
                key_epoch,
                skipped_before,
                payload: data,
            }))
        }
        kind::KEY => {
            let epoch = cur.u64().ok_or_else(|| short("key"))?;
            let key = payload.slice(cur.pos..);
            if key.len() > MAX_KEY_LEN {
                return Err(format!("key of {} bytes is over the maximum {MAX_KEY_LEN}", key.len()));
            }
            Ok(Record::Key { epoch, key })
        }
        kind::GAP => {
            let (Some(from_us), Some(to_us)) = (cur.i64(), cur.i64()) else {
                return Err(short("gap"));
            };
            let reason = cur.rest();
            if reason.len() > MAX_REASON_LEN {
                return Err("gap reason is over the maximum length".into());
            }
            let reason = String::from_utf8_lossy(reason).into_owned();
            Ok(Record::Gap { from_us, to_us, reason })
        }
        kind::CODEC => {
            let codec = decode_codec(&mut cur).map_err(str::to_owned)?;
            if !cur.is_empty() {
                return Err("trailing bytes after the codec configuration".into());
            }
            Ok(Record::Codec(codec))
        }
        kind::SEAL => {
            if !payload.is_empty() {
                return Err("seal record has a payload".into());
            }
            Ok(Record::Seal)
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

/// Outcome of decoding one record from the front of an in-memory buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and the bytes it took.
    Record(Record, u64),
    /// The buffer ends inside the record (a torn tail if this is the end of the file).
    Truncated(String),
    /// The bytes are there but wrong.
    Corrupt(String),
}

/// Decodes one record from the front of `buf` (pure; used by tests and fuzzing; the file
/// reader applies the same checks while reading).
pub fn decode_record(buf: &Bytes) -> Decoded {
    let mut cur = Cur::new(buf);
    let (Some(len), Some(kind_byte)) = (cur.u32(), cur.u8()) else {
        return Decoded::Truncated("the record prefix is cut short".into());
    };
    if len > MAX_RECORD_LEN {
        return Decoded::Corrupt(format!("length {len} is over the maximum {MAX_RECORD_LEN}"));
    }
    let total = len as usize + RECORD_OVERHEAD as usize;
    if buf.len() < total {
        return Decoded::Truncated(format!("needs {total} bytes, {} remain", buf.len()));
    }
    let body_end = 5 + len as usize;
    let crc = u32::from_be_bytes([buf[body_end], buf[body_end + 1], buf[body_end + 2], buf[body_end + 3]]);
    if crc != crc32fast::hash(&buf[..body_end]) {
        return Decoded::Corrupt("checksum mismatch".into());
    }
    match decode_payload(kind_byte, buf.slice(5..body_end)) {
        Ok(rec) => Decoded::Record(rec, total as u64),
        Err(reason) => Decoded::Corrupt(reason),
    }
}
