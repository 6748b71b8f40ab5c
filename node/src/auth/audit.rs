//! The audit log: every admission, grant, revocation and refusal, one JSON line each.
//!
//! Security events (admissions, grants, revocations, cuts, key changes, ...) go to
//! `<data-dir>/audit.log`; refusals (`refused-*`), which anyone on the network can cause,
//! go to `<data-dir>/audit-refusals.log`, so a flood of refusals can never rotate a
//! security event away. Refusals are also rate-limited: at most [`PER_PEER_PER_MINUTE`]
//! lines per event and peer and [`REFUSALS_PER_MINUTE`] in all per minute; what is held
//! back is counted and summarized in one `refusals-suppressed` line per minute (in both
//! files). Each file rotates at [`MAX_BYTES`] with one old file kept.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Rotate a log beyond this size; the previous file is kept as `<name>.1`.
pub const MAX_BYTES: u64 = 16 << 20;
/// Refusal lines per (event, peer) per minute.
pub const PER_PEER_PER_MINUTE: u32 = 5;
/// Refusal lines per minute in all.
pub const REFUSALS_PER_MINUTE: u32 = 600;
/// (event, peer) pairs tracked per minute; beyond, refusals are only counted.
const MAX_TRACKED: usize = 4096;

/// The rate limiter's minute.
#[derive(Debug, Default)]
struct Window {
    minute: i64,
    per_peer: HashMap<(String, String), u32>,
    written: u32,
    suppressed: u64,
}

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
    /// `audit.log`, and `audit-refusals.log` beside it.
    path: Option<PathBuf>,
    window: Mutex<Window>,
}

impl Audit {
    /// A log at `<dir>/audit.log` (refusals in `<dir>/audit-refusals.log`).
    pub fn open(dir: &Path) -> Self {
        Self {
            path: Some(dir.join("audit.log")),
            window: Mutex::new(Window::default()),
        }
    }

    /// A log that records nothing (tests of pure logic).
    pub fn none() -> Self {
        Self {
            path: None,
            window: Mutex::new(Window::default()),
        }
    }

    fn refusals_path(path: &Path) -> PathBuf {
        path.with_file_name("audit-refusals.log")
    }

    pub fn record(&self, event: &str, peer: &str, camera: &str, detail: &str) {
        let Some(path) = &self.path else {
            tracing::info!(target: "camesh_audit", event, peer, camera, detail);
            return;
        };
        let now = super::now_s();
        let entry = Entry {
            unix_s: now,
            event: event.to_owned(),
            peer: peer.to_owned(),
            camera: camera.chars().take(64).collect(),
            detail: detail.chars().take(512).collect(),
        };
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.minute != now / 60 {
            if w.suppressed > 0 {
                let summary = Entry {
                    unix_s: now,
                    event: "refusals-suppressed".into(),
                    peer: String::new(),
                    camera: String::new(),
                    detail: format!(
                        "{} refusals in the minute before were not written (rate limit)",
                        w.suppressed
                    ),
                };
                tracing::warn!(target: "camesh_audit", suppressed = w.suppressed, "refusals-suppressed");
                append(path, &summary);
                append(&Self::refusals_path(path), &summary);
            }
            *w = Window {
                minute: now / 60,
                ..Window::default()
            };
        }
        if !event.starts_with("refused") {
            tracing::info!(target: "camesh_audit", event, peer, camera, detail);
            append(path, &entry);
            return;
        }
        let tracked = w.per_peer.len() < MAX_TRACKED || w.per_peer.contains_key(&(event.to_owned(), peer.to_owned()));
        let n = if tracked {
            let n = w.per_peer.entry((event.to_owned(), peer.to_owned())).or_insert(0);
            *n += 1;
            *n
        } else {
            u32::MAX
        };
        if n > PER_PEER_PER_MINUTE || w.written >= REFUSALS_PER_MINUTE {
            w.suppressed += 1;
            return;
        }
        w.written += 1;
        tracing::info!(target: "camesh_audit", event, peer, camera, detail);
        append(&Self::refusals_path(path), &entry);
    }

    /// The last `n` entries of both files (oldest first).
    pub fn tail(&self, n: usize) -> Vec<Entry> {
        let Some(path) = &self.path else { return Vec::new() };
        let mut all = read_tail(path, n);
        all.extend(read_tail(&Self::refusals_path(path), n));
        // Stable: within a second, each file keeps its order.
        all.sort_by_key(|e| e.unix_s);
        let skip = all.len().saturating_sub(n);
        all.split_off(skip)
    }
}

/// Appends one line to `path`, rotating it beyond [`MAX_BYTES`].
fn append(path: &Path, entry: &Entry) {
    if std::fs::metadata(path).map(|m| m.len() > MAX_BYTES).unwrap_or(false) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(path, PathBuf::from(old));
    }
    let Ok(line) = serde_json::to_string(entry) else { return };
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = result {
        tracing::warn!(error = %e, path = %path.display(), "cannot write the audit log");
    }
}

/// The last `n` entries of one file.
fn read_tail(path: &Path, n: usize) -> Vec<Entry> {
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

    #[test]
    fn a_refusal_flood_is_rate_limited_and_never_pushes_out_security_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Audit::open(dir.path());
        a.record("admitted", "member", "", "Viewer v");
        a.record("revocation", "admin", "", "revoked x");
        // 10,000 refusals from 2,000 made-up peers, as fast as they come.
        for i in 0..10_000 {
            a.record("refused-connection", &format!("p{}", i % 2000), "", "no certificate");
        }
        let main = std::fs::read_to_string(dir.path().join("audit.log")).expect("main log");
        assert_eq!(main.lines().count(), 2, "refusals stay out of the security log");
        let refusals = std::fs::read_to_string(dir.path().join("audit-refusals.log")).expect("refusals");
        let n = refusals.lines().count();
        // (A minute boundary during the loop can allow one more window's worth.)
        assert!(n <= 2 * REFUSALS_PER_MINUTE as usize + 2, "{n} refusal lines");
        assert!(n > 0);
        let t = a.tail(100_000);
        assert!(t.iter().any(|e| e.event == "admitted") && t.iter().any(|e| e.event == "revocation"));
        // One peer's repeats are capped too.
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Audit::open(dir.path());
        for _ in 0..100 {
            b.record("refused-stream", "one", "cam1", "no grant");
        }
        let n = b.tail(1000).len();
        assert!(n <= 2 * PER_PEER_PER_MINUTE as usize, "{n} lines for one peer");
    }
}
