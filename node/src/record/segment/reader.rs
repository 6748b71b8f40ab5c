//! Reading a segment file record by record, stopping at the first truncated or corrupt
//! record; scanning a whole segment; recovering one after a crash.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::codec::{decode_header, decode_payload};
use super::summary::{KeyframeRef, SegmentSummary};
use super::writer::SegmentWriter;
use super::{
    io_err, kind, Record, SegmentError, SegmentHeader, MAGIC, MAX_HEADER_LEN, MAX_RECORD_LEN, RECORD_OVERHEAD,
};

/// Reads a segment's records in order, stopping at the first invalid one.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    file: BufReader<File>,
    header: SegmentHeader,
    header_len: u64,
    offset: u64,
    file_len: u64,
    done: bool,
}

impl SegmentReader {
    /// Opens a segment and checks its header.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let file = File::open(path).map_err(io_err(path, "open the segment"))?;
        let file_len = file.metadata().map_err(io_err(path, "read the segment's size"))?.len();
        let mut file = BufReader::with_capacity(64 << 10, file);
        // The header is at most 8 + 4 + MAX_HEADER_LEN + 4 bytes; read what is there.
        let max = (MAX_MAGIC_AND_LEN + MAX_HEADER_LEN as u64 + 4).min(file_len);
        let mut head = Vec::with_capacity(max as usize);
        (&mut file)
            .take(MAX_MAGIC_AND_LEN)
            .read_to_end(&mut head)
            .map_err(io_err(path, "read the segment header"))?;
        if head.len() as u64 == MAX_MAGIC_AND_LEN && &head[..8] == MAGIC {
            let body_len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
            if body_len <= MAX_HEADER_LEN {
                (&mut file)
                    .take(u64::from(body_len) + 4)
                    .read_to_end(&mut head)
                    .map_err(io_err(path, "read the segment header"))?;
            }
        }
        let (header, header_len) = decode_header(&head, path)?;
        Ok(SegmentReader {
            path: path.to_owned(),
            file,
            header,
            header_len,
            offset: header_len,
            file_len,
            done: false,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Where the records start.
    pub fn data_start(&self) -> u64 {
        self.header_len
    }

    /// The offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file length seen when opened (or at the last [`Self::refresh_len`]).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Re-reads the file length, to follow a segment that is still being written.
    pub fn refresh_len(&mut self) -> Result<(), SegmentError> {
        self.file_len = self
            .file
            .get_ref()
            .metadata()
            .map_err(io_err(&self.path, "read the segment's size"))?
            .len();
        self.done = false;
        Ok(())
    }

    /// Continues reading at `offset` (a record start from the index).
    pub fn seek(&mut self, offset: u64) -> Result<(), SegmentError> {
        if offset < self.header_len || offset > self.file_len {
            return Err(SegmentError::BadOffset {
                path: self.path.clone(),
                offset,
                start: self.header_len,
                end: self.file_len,
            });
        }
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_err(&self.path, "seek in the segment"))?;
        self.offset = offset;
        self.done = false;
        Ok(())
    }

    /// The next record and its offset; `Ok(None)` at the end of the file (on a record
    /// boundary). A truncated or corrupt record is an error, after which the reader
    /// returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<(u64, Record, u64)>, SegmentError> {
        if self.done {
            return Ok(None);
        }
        match self.read_one() {
            Ok(Some(r)) => Ok(Some(r)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn bad(&self, truncated: bool, reason: impl Into<String>) -> SegmentError {
        SegmentError::BadRecord {
            path: self.path.clone(),
            offset: self.offset,
            truncated,
            reason: reason.into(),
        }
    }

    fn read_one(&mut self) -> Result<Option<(u64, Record, u64)>, SegmentError> {
        let remaining = self.file_len.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < 5 {
            return Err(self.bad(true, format!("only {remaining} bytes left for a record prefix")));
        }
        let mut prefix = [0u8; 5];
        self.read_exact_or_torn(&mut prefix)?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > MAX_RECORD_LEN {
            return Err(self.bad(false, format!("length {len} is over the maximum {MAX_RECORD_LEN}")));
        }
        let total = u64::from(len) + RECORD_OVERHEAD;
        if total > remaining {
            return Err(self.bad(true, format!("needs {total} bytes, {remaining} remain")));
        }
        // `len + 4 <= remaining`: never allocates more than the file holds.
        let mut body = vec![0u8; len as usize + 4];
        self.read_exact_or_torn(&mut body)?;
        let crc_at = len as usize;
        let crc = u32::from_be_bytes([body[crc_at], body[crc_at + 1], body[crc_at + 2], body[crc_at + 3]]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&prefix);
        hasher.update(&body[..crc_at]);
        if crc != hasher.finalize() {
            return Err(self.bad(false, "checksum mismatch"));
        }
        body.truncate(crc_at);
        let rec = decode_payload(prefix[4], Bytes::from(body)).map_err(|reason| self.bad(false, reason))?;
        let offset = self.offset;
        self.offset += total;
        Ok(Some((offset, rec, total)))
    }

    fn read_exact_or_torn(&mut self, buf: &mut [u8]) -> Result<(), SegmentError> {
        match self.file.read_exact(buf) {
            Ok(()) => Ok(()),
            // The file shrank under us (recovery or retention elsewhere): a torn read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.bad(true, "the file ends early")),
            Err(e) => Err(io_err(&self.path, "read a record")(e)),
        }
    }
}

const MAX_MAGIC_AND_LEN: u64 = 12;

/// Where and why reading a segment stopped before the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanStop {
    pub offset: u64,
    pub truncated: bool,
    pub reason: String,
}

/// The result of reading a whole segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    pub file_len: u64,
    pub summary: SegmentSummary,
    pub keyframes: Vec<KeyframeRef>,
    /// `None`: every byte of the file belongs to a valid record.
    pub stop: Option<ScanStop>,
}

impl SegmentScan {
    /// Valid length: the header and the whole, valid records.
    pub fn valid_len(&self) -> u64 {
        self.summary.bytes
    }
}

/// Reads a whole segment and summarises it. Errors only when the header is unreadable
/// (or on IO failure); an invalid record ends the scan and is reported in `stop`.
/// `file_rel` is the path relative to the segments folder (`<camera>/<name>.cseg`).
pub fn scan_segment(path: &Path, file_rel: String) -> Result<SegmentScan, SegmentError> {
    let mut reader = SegmentReader::open(path)?;
    let header = reader.header().clone();
    let mut summary = SegmentSummary::new(&header, file_rel, reader.data_start());
    let mut keyframes = Vec::new();
    let mut stop = None;
    loop {
        match reader.next_record() {
            Ok(Some((offset, rec, len))) => {
                if summary.sealed {
                    stop = Some(ScanStop {
                        offset,
                        truncated: false,
                        reason: "a record follows the seal".into(),
                    });
                    break;
                }
                keyframes.extend(summary.observe(offset, len, &rec));
            }
            Ok(None) => break,
            Err(SegmentError::BadRecord {
                offset,
                truncated,
                reason,
                ..
            }) => {
                stop = Some(ScanStop {
                    offset,
                    truncated,
                    reason,
                });
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(SegmentScan {
        header,
        file_len: reader.file_len(),
        summary,
        keyframes,
        stop,
    })
}

/// What recovery did to one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Sealed and whole: nothing to do.
    Intact,
    /// Unsealed (its writer died): the torn tail (`dropped` bytes, possibly 0) was cut
    /// off and a seal appended.
    Sealed { dropped: u64 },
    /// Sealed, but a record before the seal is bad: disk corruption. The file is left
    /// untouched (it may be evidence); only the valid prefix is used.
    Corrupt { offset: u64, reason: String },
}

/// Brings one segment to a consistent state after an unclean shutdown: an unsealed
/// segment is cut back to its valid records and sealed. Never call this on a segment a
/// writer still has open.
pub fn recover_segment(path: &Path, file_rel: String) -> Result<(SegmentScan, Recovery), SegmentError> {
    let mut scan = scan_segment(path, file_rel)?;
    if let Some(stop) = scan.stop.clone() {
        // A sealed segment (or one whose last bytes are a seal: its writer closed it
        // cleanly) with a bad record is not a torn tail: it is damage in the middle.
        // Keep every byte; only the valid prefix is used.
        if scan.summary.sealed || ends_with_seal(path, scan.file_len)? {
            scan.summary.sealed = true;
            scan.summary.corrupt_at = Some(stop.offset);
            let recovery = Recovery::Corrupt {
                offset: stop.offset,
                reason: stop.reason,
            };
            return Ok((scan, recovery));
        }
    } else if scan.summary.sealed {
        return Ok((scan, Recovery::Intact));
    }
    let dropped = scan.file_len - scan.valid_len();
    let mut writer = SegmentWriter::reopen(path, scan.summary.clone())?;
    writer.append(&Record::Seal)?;
    writer.sync()?;
    let summary = writer.summary().clone();
    let file_len = writer.len();
    Ok((
        SegmentScan {
            summary,
            file_len,
            stop: None,
            ..scan
        },
        Recovery::Sealed { dropped },
    ))
}

/// The 9 bytes of a seal record.
fn seal_bytes() -> [u8; RECORD_OVERHEAD as usize] {
    let mut out = [0u8; RECORD_OVERHEAD as usize];
    out[4] = kind::SEAL;
    let crc = crc32fast::hash(&out[..5]);
    out[5..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The file's last bytes are a seal record.
fn ends_with_seal(path: &Path, file_len: u64) -> Result<bool, SegmentError> {
    if file_len < RECORD_OVERHEAD {
        return Ok(false);
    }
    let mut f = File::open(path).map_err(io_err(path, "open the segment"))?;
    f.seek(SeekFrom::Start(file_len - RECORD_OVERHEAD))
        .map_err(io_err(path, "seek in the segment"))?;
    let mut tail = [0u8; RECORD_OVERHEAD as usize];
    match f.read_exact(&mut tail) {
        Ok(()) => Ok(tail == seal_bytes()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(path, "read the segment's end")(e)),
    }
}
