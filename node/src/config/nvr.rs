//! The `[nvr]` section of a node's config: where recordings go, how durable they are,
//! export limits, where the storage key lives, which cameras to record, and where to
//! replicate them (`[[nvr.replicate]]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The NVR role: where recordings go, how durable they are, and what to record with
/// which retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvrSection {
    /// Folder of the recordings; empty: `<data-dir>/recordings`.
    pub recordings_dir: PathBuf,
    /// Roll to a new segment file at the first keyframe after this many seconds.
    pub segment_duration_s: u64,
    /// Every recorded frame is on disk (fsynced) at most this long after it arrived.
    pub fsync_interval_ms: u64,
    /// Disk quota of all recordings in bytes (0: none; a full disk still frees the oldest).
    pub quota_bytes: u64,
    /// Default maximum age of recordings in seconds (0: keep until the quota needs room).
    pub max_age_s: u64,
    /// Seconds between retention runs.
    pub retention_interval_s: u64,
    /// Longest range one export covers, in seconds.
    pub export_max_range_s: u64,
    /// Exports this NVR runs at once (each peer one at a time).
    pub exports_at_once: usize,
    /// Where the storage key is: empty (`<data-dir>/nvr-storage.key`, beside the
    /// recordings), `file:<path>`, `env:<VAR>` or `credential:<name>` (systemd).
    pub storage_key: String,
    /// Cameras to record, by id or tag, each with its own retention.
    #[serde(rename = "record", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordRule>,
    /// Event kinds that lock the recording around them against retention, as evidence
    /// (e.g. `["motion"]`; a kind ending in `/` is a prefix, `onvif/`); locks go first
    /// when replicating. Empty: events are indexed but lock nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_events: Vec<String>,
    /// Seconds locked before and after such an event (motion: its start and its end).
    pub event_margin_s: u64,
    /// Where this NVR's recordings go when a link allows (store-and-forward to shore).
    #[serde(rename = "replicate", skip_serializing_if = "Vec::is_empty")]
    pub replicates: Vec<ReplicateRule>,
}

impl Default for NvrSection {
    fn default() -> Self {
        Self {
            recordings_dir: PathBuf::new(),
            segment_duration_s: 300,
            fsync_interval_ms: 1000,
            quota_bytes: 0,
            max_age_s: 0,
            retention_interval_s: 30,
            export_max_range_s: 3600,
            exports_at_once: 2,
            storage_key: String::new(),
            records: Vec::new(),
            lock_events: Vec::new(),
            event_margin_s: 30,
            replicates: Vec::new(),
        }
    }
}

impl NvrSection {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks `[[nvr.replicate]]`: (field, reason) of the first mistake.
    pub(super) fn validate_replicates(&self) -> Result<(), (String, String)> {
        for (i, r) in self.replicates.iter().enumerate() {
            let field = |f: &str| format!("nvr.replicate[{i}].{f}");
            if r.to.trim().is_empty() {
                return Err((field("to"), "name the shore NVR (peer id or certificate name)".into()));
            }
            if r.cameras.is_empty() {
                return Err((field("cameras"), "name cameras by id, or \"*\"".into()));
            }
            for a in &r.addrs {
                if a.parse::<libp2p::Multiaddr>().is_err() {
                    return Err((field("addrs"), format!("{a:?} is not a multiaddr")));
                }
            }
            for p in &r.priority {
                parse_range(p).map_err(|e| (field("priority"), e))?;
            }
        }
        Ok(())
    }
}

/// A range `"<from>..<to>"`, each end RFC 3339 or Unix microseconds, to
/// `(from_us, to_us)`.
pub fn parse_range(s: &str) -> Result<(i64, i64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: write a range as <from>..<to>"))?;
    let one = |t: &str| -> Result<i64, String> {
        let t = t.trim();
        if let Ok(us) = t.parse::<i64>() {
            return Ok(us);
        }
        let at = humantime::parse_rfc3339_weak(t).map_err(|e| format!("{t:?}: {e}"))?;
        let d = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("{t:?} is before 1970"))?;
        i64::try_from(d.as_micros()).map_err(|_| format!("{t:?} is too far ahead"))
    };
    let (from, to) = (one(a)?, one(b)?);
    if from > to {
        return Err(format!("{s:?}: the start is after the end"));
    }
    Ok((from, to))
}

/// One `[[nvr.record]]` entry: a camera id (`*`: every camera) or a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordRule {
    pub camera: String,
    pub tag: String,
    /// Maximum age in seconds (0: the section's `max_age_s`).
    pub max_age_s: u64,
    /// This rule's cameras may hold at most this share (0-1) of `quota_bytes`
    /// (0: no own limit, only the shared quota).
    pub quota_share: f64,
}

impl Default for RecordRule {
    fn default() -> Self {
        Self {
            camera: String::new(),
            tag: String::new(),
            max_age_s: 0,
            quota_share: 0.0,
        }
    }
}

/// What goes first among footage that is neither locked nor in a priority range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicateOrder {
    /// The newest footage first (what happened last matters most), then backwards.
    #[default]
    Newest,
    /// The oldest first (it is the next retention deletes).
    Oldest,
}

/// One `[[nvr.replicate]]` entry: push the recordings of some cameras to a shore NVR
/// whenever a link allows. Evidence locks go first, then `priority` ranges, then the rest
/// in `order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicateRule {
    /// The shore NVR: its peer id, or the name in its membership certificate.
    pub to: String,
    /// Addresses to dial the shore at (multiaddrs; empty: wherever the node knows).
    pub addrs: Vec<String>,
    /// Cameras to replicate, by id (`*`: every recorded camera).
    pub cameras: Vec<String>,
    /// Ranges that go right after the locks (`"<from>..<to>"`, RFC 3339 or Unix
    /// microseconds), e.g. events flagged by the crew.
    pub priority: Vec<String>,
    pub order: ReplicateOrder,
    /// Rate cap of this replication in kbit/s (0: no cap; leave room for live video).
    pub rate_kbps: u64,
    /// Use a link only while one of these peers (peer ids or certificate names) is
    /// connected, e.g. the depot's Wi-Fi access node; empty: any link.
    pub via: Vec<String>,
}

impl Default for ReplicateRule {
    fn default() -> Self {
        Self {
            to: String::new(),
            addrs: Vec::new(),
            cameras: vec!["*".into()],
            priority: Vec::new(),
            order: ReplicateOrder::Newest,
            rate_kbps: 0,
            via: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn replicate_rules_parse_and_are_checked() {
        let c = Config::parse(
            "[node]\nrole = \"nvr\"\n[[nvr.replicate]]\nto = \"shore\"\ncameras = [\"cam1\"]\n\
             order = \"oldest\"\nrate_kbps = 1500\nvia = [\"depot-wifi\"]\n\
             priority = [\"2026-01-01T10:00:00Z..2026-01-01T10:05:00Z\"]\n\
             addrs = [\"/ip4/10.0.0.1/udp/4001/quic-v1\"]\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        let r = &c.nvr.replicates[0];
        assert_eq!(r.order, ReplicateOrder::Oldest);
        assert_eq!(r.rate_kbps, 1500);
        assert_eq!(Config::parse(&c.to_toml()).expect("roundtrip"), c);
        let mut bad = c.clone();
        bad.nvr.replicates[0].priority = vec!["10..5".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("priority"));
        let mut bad = c.clone();
        bad.nvr.replicates[0].to = " ".into();
        assert!(bad.validate().unwrap_err().to_string().contains("replicate[0].to"));
        let mut bad = c;
        bad.nvr.replicates[0].addrs = vec!["10.0.0.1:4001".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("multiaddr"));
        assert_eq!(parse_range("1..2"), Ok((1, 2)));
        assert_eq!(parse_range("1970-01-01T00:00:01Z..2000000"), Ok((1_000_000, 2_000_000)));
        assert!(parse_range("1-2").is_err());
    }
}
