//! Appending to a segment file: creation (temp file, fsync, rename), one `write` per
//! record with rollback on failure, fsync, seal.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::codec::{encode_header, encode_record};
use super::summary::{KeyframeRef, SegmentSummary};
use super::{io_err, Record, SegmentError, SegmentHeader, SEGMENT_EXT, TMP_EXT};

/// The result of one append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub len: u64,
    pub keyframe: Option<KeyframeRef>,
}

/// Appends records to one segment file. Not thread-safe by design: one writer task owns it.
#[derive(Debug)]
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    len: u64,
    synced_len: u64,
    buf: Vec<u8>,
    broken: bool,
    summary: SegmentSummary,
}

/// Buffers above this are released after use rather than kept for the next record.
const KEEP_BUF: usize = 4 << 20;

impl SegmentWriter {
    /// Creates `<root>/<camera>/<start_us>.cseg` (with a suffix if that exists): header
    /// written to a `.tmp` file, fsynced, renamed, and the folder fsynced.
    pub fn create(root: &Path, header: &SegmentHeader) -> Result<Self, SegmentError> {
        let bytes = encode_header(header)?;
        let dir = root.join(&header.camera);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create the camera folder"))?;
            sync_dir(root)?;
        }
        let base = format!("{:020}", header.start_us.max(0));
        let (name, path) = (0u32..)
            .map(|n| {
                let name = if n == 0 {
                    format!("{base}.{SEGMENT_EXT}")
                } else {
                    format!("{base}-{n}.{SEGMENT_EXT}")
                };
                let path = dir.join(&name);
                (name, path)
            })
            .find(|(_, p)| !p.exists() && !p.with_extension(TMP_EXT).exists())
            .unwrap_or_else(|| unreachable!("an unbounded range always yields a free name"));
        let tmp = path.with_extension(TMP_EXT);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create the segment"))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&tmp, "write the segment header"));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&path, "rename the new segment")(e));
        }
        sync_dir(&dir)?;
        let len = bytes.len() as u64;
        let file_rel = format!("{}/{name}", header.camera);
        Ok(SegmentWriter {
            summary: SegmentSummary::new(header, file_rel, len),
            path,
            file,
            len,
            synced_len: len,
            buf: Vec::new(),
            broken: false,
        })
    }

    /// Reopens an existing segment to append after its valid records (used by recovery to
    /// seal a segment whose writer died): the file is cut to `summary.bytes` first.
    pub(super) fn reopen(path: &Path, summary: SegmentSummary) -> Result<Self, SegmentError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path, "open the segment for writing"))?;
        file.set_len(summary.bytes)
            .map_err(io_err(path, "truncate the torn tail"))?;
        file.seek(SeekFrom::Start(summary.bytes))
            .map_err(io_err(path, "seek in the segment"))?;
        Ok(SegmentWriter {
            path: path.to_owned(),
            file,
            len: summary.bytes,
            synced_len: 0,
            buf: Vec::new(),
            broken: false,
            summary,
        })
    }

    /// Appends one record with a single `write`. If the write fails part-way (a full
    /// disk), the file is cut back to the end of the previous record so no torn record
    /// is left in the middle of the segment; if even that fails the writer is closed.
    pub fn append(&mut self, rec: &Record) -> Result<Appended, SegmentError> {
        if self.broken {
            return Err(SegmentError::Broken {
                path: self.path.clone(),
            });
        }
        self.buf.clear();
        encode_record(rec, &mut self.buf)?;
        let offset = self.len;
        if let Err(e) = self.file.write_all(&self.buf) {
            let rolled_back = self
                .file
                .set_len(offset)
                .and_then(|()| self.file.seek(SeekFrom::Start(offset)).map(|_| ()));
            if rolled_back.is_err() {
                self.broken = true;
            }
            self.release_buf();
            return Err(io_err(&self.path, "append a record")(e));
        }
        let len = self.buf.len() as u64;
        self.len += len;
        self.release_buf();
        let keyframe = self.summary.observe(offset, len, rec);
        Ok(Appended { offset, len, keyframe })
    }

    fn release_buf(&mut self) {
        if self.buf.capacity() > KEEP_BUF {
            self.buf = Vec::new();
        }
    }

    /// Makes everything appended so far durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), SegmentError> {
        if self.synced_len == self.len {
            return Ok(());
        }
        self.file.sync_data().map_err(io_err(&self.path, "fsync the segment"))?;
        self.synced_len = self.len;
        Ok(())
    }

    /// Bytes appended since the last [`Self::sync`].
    pub fn bytes_since_sync(&self) -> u64 {
        self.len - self.synced_len
    }

    /// Length of the file (header and records).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.summary.records == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn summary(&self) -> &SegmentSummary {
        &self.summary
    }

    /// An earlier failed write could not be rolled back: roll to a new segment.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Appends the seal record and fsyncs: the segment is complete.
    pub fn seal(mut self) -> Result<SegmentSummary, SegmentError> {
        self.append(&Record::Seal)?;
        self.sync()?;
        Ok(self.summary)
    }
}

/// fsyncs a folder so that a file created or renamed in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync the folder"))
}
