//! The fleet-state log on disk: `<data-dir>/fleet-state.log`, append-only.
//!
//! Each record is a 4-byte big-endian length and an encoded `Signed` entry. An entry is
//! written and fsynced before the node acts on it. Reading stops at the first record that
//! is torn (a crash mid-write) or oversize, and the file is cut back to the last whole
//! record; the entries are then re-judged by [`super::fleetlog::FleetLog`] like any
//! other, so a file edited by hand cannot add what the root did not sign.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use camesh_proto::pb;
use prost::Message;

use super::fleetlog::MAX_ENTRY_BYTES;

pub const STATE_FILE: &str = "fleet-state.log";

/// The open log file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
}

/// What reading the file found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<pb::Signed>,
    /// Bytes cut from a torn or corrupt tail.
    pub cut_bytes: u64,
}

impl StateFile {
    /// Opens (creating) the log in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Loaded)> {
        let path = dir.join(STATE_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let (entries, good) = parse(&data);
        let loaded = Loaded {
            entries,
            cut_bytes: (data.len() - good) as u64,
        };
        if loaded.cut_bytes > 0 {
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        Ok((Self { path, file }, loaded))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and waits until it is on disk.
    pub fn append(&mut self, s: &pb::Signed) -> std::io::Result<()> {
        let body = s.encode_to_vec();
        let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("entry too large"))?;
        let mut rec = Vec::with_capacity(4 + body.len());
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(&body);
        self.file.write_all(&rec)?;
        self.file.sync_data()
    }
}

/// Whole records of `data`, and how many bytes they span.
pub fn parse(data: &[u8]) -> (Vec<pb::Signed>, usize) {
    let (mut out, mut at) = (Vec::new(), 0usize);
    while data.len() - at >= 4 {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        if len > MAX_ENTRY_BYTES || data.len() - at - 4 < len {
            break;
        }
        match pb::Signed::decode(&data[at + 4..at + 4 + len]) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
        at += 4 + len;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> pb::Signed {
        pb::Signed {
            body: vec![n; 40].into(),
            signature: vec![n; 64].into(),
            signer: vec![n; 36].into(),
        }
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, loaded) = StateFile::open(dir.path()).expect("open");
        assert!(loaded.entries.is_empty());
        f.append(&entry(1)).expect("append");
        f.append(&entry(2)).expect("append");
        drop(f);
        // A crash mid-write leaves half a record.
        let path = dir.path().join(STATE_FILE);
        let mut data = std::fs::read(&path).expect("read");
        let whole = data.len();
        data.extend_from_slice(&[0, 0, 0, 200, 1, 2, 3]);
        std::fs::write(&path, &data).expect("write");
        let (mut f, loaded) = StateFile::open(dir.path()).expect("reopen");
        assert_eq!(loaded.entries, vec![entry(1), entry(2)]);
        assert_eq!(loaded.cut_bytes, 7);
        assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, whole);
        f.append(&entry(3)).expect("append after cut");
        let (_, loaded) = StateFile::open(dir.path()).expect("reopen");
        assert_eq!(loaded.entries.len(), 3);
    }

    #[test]
    fn oversize_lengths_stop_reading() {
        let mut data = (u32::MAX).to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&data), (vec![], 0));
    }
}
