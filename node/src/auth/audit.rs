//! The audit log: every admission, grant, revocation and refusal, one JSON line each,
//! appended to `<data-dir>/audit.log` (rotated at [`MAX_BYTES`], one old file kept).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Rotate the log beyond this size; the previous file is kept as `audit.log.1`.
pub const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub unix_s: i64,
    /// admitted, refused-connection, refused-stream, stream-opened, grant-issued,
    /// revocation, invite-issued, invite-redeemed, key-rotated, ...
    pub event: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub camera: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug)]
pub struct Audit {
    path: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Audit {
    /// A log at `<dir>/audit.log`.
    pub fn open(dir: &Path) -> Self {
        Self {
            path: Some(dir.join("audit.log")),
            lock: Mutex::new(()),
        }
    }

    /// A log that records nothing (tests of pure logic).
    pub fn none() -> Self {
        Self {
            path: None,
            lock: Mutex::new(()),
        }
    }

    pub fn record(&self, event: &str, peer: &str, camera: &str, detail: &str) {
        tracing::info!(target: "camesh_audit", event, peer, camera, detail);
        let Some(path) = &self.path else { return };
        let entry = Entry {
            unix_s: super::now_s(),
            event: event.to_owned(),
            peer: peer.to_owned(),
            camera: camera.chars().take(64).collect(),
            detail: detail.chars().take(512).collect(),
        };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if std::fs::metadata(path).map(|m| m.len() > MAX_BYTES).unwrap_or(false) {
            let _ = std::fs::rename(path, path.with_extension("log.1"));
        }
        let line = match serde_json::to_string(&entry) {
            Ok(l) => l,
            Err(_) => return,
        };
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the audit log");
        }
    }

    /// The last `n` entries (oldest first).
    pub fn tail(&self, n: usize) -> Vec<Entry> {
        let Some(path) = &self.path else { return Vec::new() };
        let Ok(f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let mut ring = std::collections::VecDeque::with_capacity(n.min(4096));
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                if ring.len() == n {
                    ring.pop_front();
                }
                ring.push_back(e);
            }
        }
        ring.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Audit::open(dir.path());
        for i in 0..5 {
            a.record("refused-stream", "12D3", "cam1", &format!("n={i}"));
        }
        let t = a.tail(2);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].detail, "n=4");
    }
}
