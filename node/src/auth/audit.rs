//! The audit log: every admission, grant, revocation and refusal, one JSON line each.
//!
//! Security events (admissions, grants, revocations, cuts, key changes, ...) go to
//! `<data-dir>/audit.log`; refusals (`refused-*`), which anyone on the network can cause,
//! go to `<data-dir>/audit-refusals.log`, so a flood of refusals can never rotate a
//! security event away. Refusals are also rate-limited: at most [`PER_PEER_PER_MINUTE`]
//! lines per event and peer and [`REFUSALS_PER_MINUTE`] in all per minute; what is held
//! back is counted and summarized in one `refusals-suppressed` line per minute (in both
//! files). Each file rotates at [`MAX_BYTES`] with one old file kept.
//!
//! Tamper evidence: every line carries `prev`, the SHA-256 (hex) of the line before it in
//! the same log (across a rotation, the last line of `<name>.1`); [`verify_chain`] (`mesh
//! audit --verify`) finds a line that was changed, removed or inserted.

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
    /// The hash of the last line of each log file, once read or written.
    last: HashMap<PathBuf, String>,
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
    /// SHA-256 (hex) of the previous line of this log; empty for the first.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
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
            prev: String::new(),
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
                    prev: String::new(),
                };
                tracing::warn!(target: "camesh_audit", suppressed = w.suppressed, "refusals-suppressed");
                append(&mut w.last, path, &summary);
                append(&mut w.last, &Self::refusals_path(path), &summary);
            }
            let last = std::mem::take(&mut w.last);
            *w = Window {
                last,
                minute: now / 60,
                ..Window::default()
            };
        }
        if !event.starts_with("refused") {
            tracing::info!(target: "camesh_audit", event, peer, camera, detail);
            append(&mut w.last, path, &entry);
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
        append(&mut w.last, &Self::refusals_path(path), &entry);
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

fn sha256_hex(line: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rotated(path: &Path) -> PathBuf {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    PathBuf::from(old)
}

/// The hash of the last line of `path` (else of its rotated file), empty for none.
fn last_hash(path: &Path) -> String {
    for p in [path.to_owned(), rotated(path)] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            if let Some(line) = text.lines().last() {
                return sha256_hex(line);
            }
        }
    }
    String::new()
}

/// Appends one line to `path`, chained to the one before, rotating beyond [`MAX_BYTES`].
fn append(last: &mut HashMap<PathBuf, String>, path: &Path, entry: &Entry) {
    if std::fs::metadata(path).map(|m| m.len() > MAX_BYTES).unwrap_or(false) {
        let _ = std::fs::rename(path, rotated(path));
    }
    let prev = last.entry(path.to_owned()).or_insert_with(|| last_hash(path));
    let chained = Entry {
        prev: prev.clone(),
        ..entry.clone()
    };
    let Ok(line) = serde_json::to_string(&chained) else {
        return;
    };
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    match result {
        Ok(()) => *prev = sha256_hex(&line),
        Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot write the audit log"),
    }
}

/// Checks the hash chain of the audit logs in `dir` (`audit.log` after `audit.log.1`,
/// and the refusals' pair): the number of lines checked, or the first line that breaks
/// the chain (changed, removed or inserted before it).
pub fn verify_chain(dir: &Path) -> Result<usize, String> {
    let mut checked = 0;
    for name in ["audit.log", "audit-refusals.log"] {
        let path = dir.join(name);
        let mut prev: Option<String> = None;
        for p in [rotated(&path), path.clone()] {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                let e: Entry = serde_json::from_str(line)
                    .map_err(|err| format!("{} line {}: not an audit entry ({err})", p.display(), i + 1))?;
                // The first line ever may start the chain; any later one must link.
                if let Some(want) = &prev {
                    if &e.prev != want {
                        return Err(format!(
                            "{} line {}: the chain breaks here (a line before it was changed, removed or inserted)",
                            p.display(),
                            i + 1
                        ));
                    }
                }
                prev = Some(sha256_hex(line));
                checked += 1;
            }
        }
    }
    Ok(checked)
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
    fn the_chain_finds_a_changed_a_removed_and_an_inserted_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Audit::open(dir.path());
        for i in 0..5 {
            a.record("admitted", &format!("p{i}"), "", "Viewer");
        }
        drop(a);
        // A new process continues the chain from the file.
        let a = Audit::open(dir.path());
        a.record("revocation", "admin", "", "revoked p1");
        assert_eq!(verify_chain(dir.path()), Ok(6));
        let path = dir.path().join("audit.log");
        let good = std::fs::read_to_string(&path).expect("log");
        let lines: Vec<&str> = good.lines().collect();
        let write = |ls: Vec<String>| std::fs::write(&path, ls.join("\n") + "\n").expect("write");
        let own = |ls: &[&str]| ls.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        // Changed.
        let mut changed = own(&lines);
        changed[2] = changed[2].replace("p2", "px");
        write(changed);
        assert!(verify_chain(dir.path()).unwrap_err().contains("line 4"));
        // Removed.
        let mut removed = own(&lines);
        removed.remove(5);
        write(removed);
        assert!(
            verify_chain(dir.path()).is_ok(),
            "the last line can go unnoticed only at the end"
        );
        let mut removed = own(&lines);
        removed.remove(3);
        write(removed);
        assert!(verify_chain(dir.path()).unwrap_err().contains("line 4"));
        // Inserted.
        let mut inserted = own(&lines);
        inserted.insert(1, lines[0].to_owned());
        write(inserted);
        assert!(verify_chain(dir.path()).unwrap_err().contains("line 2"));
    }

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
