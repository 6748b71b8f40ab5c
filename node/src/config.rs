//! Node configuration: a TOML file in the data directory, validated with errors that
//! name the field, and presets for the camera, nvr and viewer roles.
//!
//! Every limit that protects the node from a peer lives in [`Limits`] with a default
//! that says why it has its value.
//!
//! A leaf of the node: it checks ids, keys, addresses and URLs with [`crate::ids`] and
//! [`crate::addr`], which import nothing of ours, and nothing it uses imports it back.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::addr;
use crate::ids::{root_key_from_text, valid_id};

mod camera;
mod link;
mod motion;
pub mod nvr;
mod onvif;
mod preset;
mod relay;
pub use camera::{CameraConfig, RtspTransport};
pub use link::LinkConfig;
pub use motion::MotionSection;
pub use nvr::{NvrSection, RecordRule, ReplicateOrder, ReplicateRule};
pub use onvif::OnvifConfig;
pub use relay::relay_preset_toml;

/// What a node is for. Decides defaults (DHT server mode, which services run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Camera,
    Nvr,
    #[default]
    Viewer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Camera => "camera",
            Role::Nvr => "nvr",
            Role::Viewer => "viewer",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub limits: Limits,
    #[serde(rename = "camera", skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<CameraConfig>,
    /// What an NVR node records and keeps (role `nvr`).
    #[serde(skip_serializing_if = "NvrSection::is_default")]
    pub nvr: NvrSection,
    /// Other nodes' cameras this node re-serves, sealed (application-level forwarding;
    /// needs a `forward` or `live` grant for each).
    #[serde(rename = "forward", skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardConfig>,
    /// Caps on what this node sends to a peer per second, live first (`[[link]]`).
    #[serde(rename = "link", skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkConfig>,
}

/// One camera stream to forward: `camera` from `from` (its node, or another forwarder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub camera: String,
    /// The upstream's address ending in `/p2p/<peer id>`, or just `/p2p/<peer id>` when
    /// discovery knows where it is.
    pub from: Multiaddr,
    /// `main` (the default) or `sub`.
    #[serde(default)]
    pub profile: ForwardProfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProfile {
    #[default]
    Main,
    Sub,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    pub role: Role,
    /// A display name for people (defaults to the role).
    pub name: String,
    /// Scopes the DHT protocol name and gossipsub topics: fleets never mix.
    pub fleet_id: String,
    /// The fleet root public key (base58, as `mesh fleet init` prints it): the trust
    /// anchor for membership certificates, grants and revocations. Required to run.
    pub fleet_root: String,
    /// Where to listen; QUIC first, TCP as fallback.
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to at start (`/ip4/.../udp/.../quic-v1/p2p/<peer-id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the LAN with mDNS (not on loopback interfaces).
    pub mdns: bool,
    /// Serve the Kademlia DHT to others; `None` decides by role (cameras, NVRs and
    /// relays with `relay_server = true` do).
    pub dht_server: Option<bool>,
    /// Seconds between camera announcements on gossipsub.
    pub announce_interval_s: u64,
    /// Serve circuit relay v2 to fleet members: `None` lets AutoNAT decide (on when this
    /// node is publicly reachable), `Some(true|false)` forces it.
    pub relay_server: Option<bool>,
    /// Relays to keep a reservation on when this node is behind NAT (with `/p2p/<id>`).
    pub relays: Vec<Multiaddr>,
    /// Listen on libp2p WebRTC-direct too (browsers dial it with no signalling server).
    /// `None` decides by role ([`Config::webrtc`]): cameras, NVRs, relays and forwarders do.
    pub webrtc: Option<bool>,
    /// Where WebRTC-direct listens (`/ip4/<ip>/udp/<port>/webrtc-direct`). Empty: the IPs of
    /// the QUIC addresses in `listen`, each on a port the system picks ([`Config::webrtc_listen`]).
    /// Set a fixed port where browsers are given the address.
    pub webrtc_listen: Vec<Multiaddr>,
}

/// Bounds on what a peer can make this node hold or do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest media frame accepted or sent. A 4K IDR at high quality is ~1-2 MB;
    /// 4 MiB leaves headroom and still bounds a hostile length prefix.
    pub max_frame_bytes: usize,
    /// Largest control message (requests, responses, announcements).
    pub max_control_bytes: usize,
    /// Concurrent media streams one peer may open to this node.
    pub max_streams_per_peer: usize,
    /// Concurrent media streams this node serves in total.
    pub max_streams_total: usize,
    /// Frames queued per subscriber beyond its instant-start backlog. 90 frames is 3 s at
    /// 30 fps: a viewer further behind than that skips to the next keyframe.
    pub subscriber_queue_frames: usize,
    /// Bytes queued per subscriber beyond its instant-start backlog (4 Mbit/s * 3 s ≈ 1.5 MB; 8 MiB
    /// bounds memory per subscriber even at high bitrates).
    pub subscriber_queue_bytes: usize,
    /// The GOP cache per camera; a GOP larger than this is not cached (no instant start
    /// until the next keyframe). 10 s at 8 Mbit/s is 10 MB.
    pub gop_cache_bytes: usize,
    /// Seconds a peer has to send its request after opening a stream.
    pub request_timeout_s: u64,
    /// QUIC receive window per stream: how much a source may have in flight to us.
    /// This bounds how far behind live a stalled viewer can fall before the source's
    /// queue skips: 1 MiB is ~2 s at 4 Mbit/s, and still allows 13 Mbit/s per stream at
    /// a 600 ms satellite round trip. QUIC's default (10 MB) would be 20 s of backlog.
    pub stream_window_bytes: usize,
    /// QUIC receive window per connection (all streams from one peer).
    pub connection_window_bytes: usize,
    /// How long a new peer has to prove fleet membership before it is disconnected.
    pub membership_grace_ms: u64,
    /// Clock difference allowed when judging certificates and grants (both ends of
    /// their validity). A peer whose clock is further off shows it in `mesh peers`
    /// and the audit log.
    pub clock_skew_s: u64,
    /// A live frame captured longer ago than this plus `clock_skew_s` is refused as
    /// stale (a replayed or delayed GOP), at viewers, forwarders and recorders alike.
    pub live_max_age_s: u64,
    /// Every camera changes its media key this often (and on every revocation), so a
    /// viewer whose grant expired, and who can no longer fetch keys, stops decrypting.
    pub key_rotation_s: u64,
    /// AutoNAT (which decides whether a node with `relay_server` unset relays) only
    /// trusts peers at global addresses, as a client picking servers and as a server
    /// answering probes: a peer on the same private LAN or CGNAT would vouch for an
    /// address nobody outside can reach. `false` only for labs on private addresses.
    pub autonat_only_global_ips: bool,
    /// First AutoNAT probe this long after start, so bootstrap connections exist to
    /// probe through (libp2p's default, 15 s).
    pub autonat_boot_delay_ms: u64,
    /// Next AutoNAT probe this long after one that was inconclusive or not yet confident
    /// (no server connected, a different answer); libp2p's default, 90 s, keeps probes
    /// rare on thin uplinks.
    pub autonat_retry_interval_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 4 << 20,
            max_control_bytes: 64 << 10,
            max_streams_per_peer: 8,
            max_streams_total: 256,
            subscriber_queue_frames: 90,
            subscriber_queue_bytes: 8 << 20,
            gop_cache_bytes: 16 << 20,
            request_timeout_s: 5,
            stream_window_bytes: 1 << 20,
            connection_window_bytes: 16 << 20,
            membership_grace_ms: 1000,
            clock_skew_s: 60,
            live_max_age_s: 10,
            key_rotation_s: 3600,
            autonat_only_global_ips: true,
            autonat_boot_delay_ms: 15_000,
            autonat_retry_interval_ms: 90_000,
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            role: Role::Viewer,
            name: String::new(),
            fleet_id: "default".into(),
            fleet_root: String::new(),
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("static multiaddr"),
                "/ip4/0.0.0.0/tcp/0".parse().expect("static multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            dht_server: None,
            announce_interval_s: 5,
            relay_server: None,
            relays: Vec::new(),
            webrtc: None,
            webrtc_listen: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::preset(Role::Viewer)
    }
}

/// A config that cannot be used, with the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Config {
    pub fn preset(role: Role) -> Self {
        Self {
            node: NodeSection {
                role,
                name: role.to_string(),
                ..NodeSection::default()
            },
            limits: Limits::default(),
            cameras: Vec::new(),
            nvr: NvrSection::default(),
            forwards: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Reads, parses and validates a TOML file. Relative camera sources are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for cam in &mut config.cameras {
            for source in std::iter::once(&mut cam.source).chain(cam.sub_source.as_mut()) {
                if source.is_relative() && addr::source_url(source).is_none() {
                    *source = base.join(&*source);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no file checks); the error names the line and the key.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: one_line(&e.to_string()),
        })
    }

    pub fn to_toml(&self) -> String {
        // Serializing plain data structs to TOML cannot fail.
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// Checks every field a TOML type cannot: ranges, ids, files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.node.fleet_id) {
            return Err(invalid("node.fleet_id", "use 1-64 characters of a-z, 0-9, '-' or '_'"));
        }
        let l = &self.limits;
        for (field, v, lo, hi) in [
            ("limits.max_frame_bytes", l.max_frame_bytes, 1024, 64 << 20),
            ("limits.max_control_bytes", l.max_control_bytes, 1024, 16 << 20),
            ("limits.max_streams_per_peer", l.max_streams_per_peer, 1, 1024),
            ("limits.max_streams_total", l.max_streams_total, 1, 65536),
            ("limits.subscriber_queue_frames", l.subscriber_queue_frames, 2, 100_000),
            (
                "limits.subscriber_queue_bytes",
                l.subscriber_queue_bytes,
                64 << 10,
                1 << 30,
            ),
            ("limits.gop_cache_bytes", l.gop_cache_bytes, 0, 1 << 30),
            ("limits.request_timeout_s", l.request_timeout_s as usize, 1, 600),
            ("limits.stream_window_bytes", l.stream_window_bytes, 16 << 10, 256 << 20),
            ("limits.clock_skew_s", l.clock_skew_s as usize, 0, 86_400),
            ("limits.live_max_age_s", l.live_max_age_s as usize, 1, 3_600),
            ("limits.key_rotation_s", l.key_rotation_s as usize, 1, 604_800),
            (
                "limits.membership_grace_ms",
                l.membership_grace_ms as usize,
                100,
                60_000,
            ),
            (
                "limits.connection_window_bytes",
                l.connection_window_bytes,
                16 << 10,
                1 << 30,
            ),
            (
                "limits.autonat_boot_delay_ms",
                l.autonat_boot_delay_ms as usize,
                0,
                3_600_000,
            ),
            (
                "limits.autonat_retry_interval_ms",
                l.autonat_retry_interval_ms as usize,
                1000,
                86_400_000,
            ),
            (
                "node.announce_interval_s",
                self.node.announce_interval_s as usize,
                1,
                3600,
            ),
        ] {
            if v < lo || v > hi {
                return Err(invalid(field, format!("{v} is outside {lo}..={hi}")));
            }
        }
        if !self.node.fleet_root.is_empty() {
            if let Err(reason) = root_key_from_text(&self.node.fleet_root) {
                // Worded as auth::fleet::root_from_text words it.
                return Err(invalid(
                    "node.fleet_root",
                    format!("malformed fleet root key: {reason}"),
                ));
            }
        }
        if self.node.listen.is_empty() {
            return Err(invalid("node.listen", "at least one listen address is needed"));
        }
        for (i, a) in self.node.webrtc_listen.iter().enumerate() {
            if !addr::webrtc_listen_addr(a) {
                return Err(invalid(
                    format!("node.webrtc_listen[{i}]"),
                    format!("{a}: expected /ip4/<ip>/udp/<port>/webrtc-direct (or /ip6/...)"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            if let Some(Err(e)) = cam.onvif.as_ref().map(OnvifConfig::check) {
                return Err(invalid(format!("camera[{i}].onvif.url"), e));
            }
            if let Some(Err((field, e))) = cam.motion.as_ref().map(MotionSection::check) {
                return Err(invalid(format!("camera[{i}].motion.{field}"), e));
            }
            cam.check_talkback()
                .map_err(|e| invalid(format!("camera[{i}].talkback"), e))?;
            if !valid_id(&cam.id) {
                return Err(invalid(
                    format!("camera[{i}].id"),
                    format!("{:?}: use 1-64 characters of a-z, 0-9, '-' or '_'", cam.id),
                ));
            }
            if !seen.insert(cam.id.as_str()) {
                return Err(invalid(
                    format!("camera[{i}].id"),
                    format!("{:?} is used twice", cam.id),
                ));
            }
            let sources = [("source", Some(&cam.source)), ("sub_source", cam.sub_source.as_ref())];
            for (field, source) in sources {
                let Some(source) = source else { continue };
                if let Some(url) = addr::source_url(source) {
                    if let Err(e) = addr::check_url(url) {
                        return Err(invalid(format!("camera[{i}].{field}"), e));
                    }
                } else if !source.is_file() {
                    return Err(invalid(
                        format!("camera[{i}].{field}"),
                        format!("{} is not a readable file (or an rtsp:// URL)", source.display()),
                    ));
                }
            }
        }
        for (i, f) in self.forwards.iter().enumerate() {
            if !valid_id(&f.camera) {
                return Err(invalid(
                    format!("forward[{i}].camera"),
                    format!("{:?} is not a camera id", f.camera),
                ));
            }
            if addr::split_p2p(f.from.clone()).0.is_none() {
                return Err(invalid(
                    format!("forward[{i}].from"),
                    format!("{} does not end in /p2p/<peer id>", f.from),
                ));
            }
        }
        link::check(&self.links).map_err(|(field, msg)| invalid(field, msg))?;
        self.validate_nvr()?;
        if !self.cameras.is_empty() && self.node.role != Role::Camera {
            return Err(invalid(
                "camera",
                format!("only role = \"camera\" serves cameras (role is {})", self.node.role),
            ));
        }
        Ok(())
    }

    fn validate_nvr(&self) -> Result<(), ConfigError> {
        let n = &self.nvr;
        if (!n.records.is_empty() || !n.replicates.is_empty()) && self.node.role == Role::Viewer {
            return Err(invalid(
                "nvr.record",
                "only role = \"nvr\" or \"camera\" records (role is viewer)",
            ));
        }
        for (field, v, lo, hi) in [
            ("nvr.segment_duration_s", n.segment_duration_s, 1, 3600),
            ("nvr.fsync_interval_ms", n.fsync_interval_ms, 10, 60_000),
            ("nvr.retention_interval_s", n.retention_interval_s, 1, 86_400),
            ("nvr.export_max_range_s", n.export_max_range_s, 1, 86_400),
            ("nvr.exports_at_once", n.exports_at_once as u64, 1, 64),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(field, format!("must be between {lo} and {hi}")));
            }
        }
        let k = &n.storage_key;
        if !(k.is_empty() || ["file:/", "env:", "credential:"].iter().any(|p| k.starts_with(p))) {
            return Err(invalid(
                "nvr.storage_key",
                "use file:<absolute path>, env:<VAR> or credential:<name>",
            ));
        }
        let mut shares = 0.0;
        for (i, r) in n.records.iter().enumerate() {
            let field = |f: &str| format!("nvr.record[{i}].{f}");
            match (r.camera.is_empty(), r.tag.is_empty()) {
                (true, true) | (false, false) => {
                    return Err(invalid(
                        format!("nvr.record[{i}]"),
                        "set exactly one of `camera` or `tag`",
                    ))
                }
                (false, true) if r.camera != "*" && !valid_id(&r.camera) => {
                    return Err(invalid(
                        field("camera"),
                        format!("{:?} is not a camera id or \"*\"", r.camera),
                    ))
                }
                _ => {}
            }
            if !(0.0..=1.0).contains(&r.quota_share) {
                return Err(invalid(field("quota_share"), "must be between 0 and 1"));
            }
            if r.quota_share > 0.0 && n.quota_bytes == 0 {
                return Err(invalid(
                    field("quota_share"),
                    "is a share of nvr.quota_bytes, which is not set",
                ));
            }
            shares += r.quota_share;
        }
        if shares > 1.0 + 1e-9 {
            return Err(invalid(
                "nvr.record",
                format!("quota shares add up to {shares:.2}, more than 1"),
            ));
        }
        n.validate_replicates().map_err(|(f, r)| invalid(f, r))
    }

    /// Whether this node serves the DHT to others: unless `node.dht_server` says,
    /// cameras and NVRs do, and so does a relay (`relay_server = true`): members that
    /// know only the relay publish and find provider records there.
    pub fn dht_server(&self) -> bool {
        self.node
            .dht_server
            .unwrap_or(self.node.role != Role::Viewer || self.node.relay_server == Some(true))
    }

    /// Whether this node listens on WebRTC-direct: unless `node.webrtc` says, cameras and
    /// NVRs do, and so does a viewer that relays (`relay_server = true`) or forwards
    /// cameras; a plain viewer (and the `mesh` CLI) does not.
    pub fn webrtc(&self) -> bool {
        self.node.webrtc.unwrap_or(
            self.node.role != Role::Viewer || self.node.relay_server == Some(true) || !self.forwards.is_empty(),
        )
    }

    /// Where WebRTC-direct listens when it is on: `node.webrtc_listen`, or else each QUIC
    /// address of `node.listen` with `/quic-v1` replaced by `/webrtc-direct` on port 0 (one
    /// UDP socket cannot serve both).
    pub fn webrtc_listen(&self) -> Vec<Multiaddr> {
        if !self.webrtc() {
            return Vec::new();
        }
        if !self.node.webrtc_listen.is_empty() {
            return self.node.webrtc_listen.clone();
        }
        let mut out: Vec<Multiaddr> = Vec::new();
        for w in self.node.listen.iter().filter_map(addr::webrtc_beside_quic) {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_roundtrip() {
        for role in [Role::Camera, Role::Nvr, Role::Viewer] {
            let c = Config::preset(role);
            c.validate().expect("preset is valid");
            assert_eq!(Config::parse(&c.to_toml()).expect("roundtrip"), c);
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse("[node]\nrole = \"camera\"\nlisten_on = []\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[node]\nrole = \"toaster\"\n").unwrap_err();
        assert!(
            e.to_string().contains("role") || e.to_string().contains("toaster"),
            "{e}"
        );
        let mut c = Config::preset(Role::Camera);
        c.limits.max_streams_per_peer = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("limits.max_streams_per_peer"), "{e}");
    }

    #[test]
    fn camera_ids_are_checked() {
        let mut c = Config::preset(Role::Camera);
        c.cameras.push(CameraConfig {
            id: "Front Door".into(),
            name: String::new(),
            source: "/dev/null".into(),
            sub_source: None,
            rtsp_transport: RtspTransport::Tcp,
            looping: true,
            tags: vec![],
            onvif: None,
            motion: None,
            talkback: None,
        });
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("camera[0].id"), "{e}");
    }

    #[test]
    fn missing_source_is_named() {
        let mut c = Config::preset(Role::Camera);
        c.cameras.push(CameraConfig {
            id: "cam1".into(),
            name: String::new(),
            source: "/nonexistent/x.h264".into(),
            sub_source: None,
            rtsp_transport: RtspTransport::Tcp,
            looping: true,
            tags: vec![],
            onvif: None,
            motion: None,
            talkback: None,
        });
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("camera[0].source"), "{e}");
    }

    #[test]
    fn nvr_section_parses_and_is_checked() {
        let c = Config::parse(
            "[node]\nrole = \"nvr\"\n[nvr]\nquota_bytes = 1000\nfsync_interval_ms = 200\n\
             [[nvr.record]]\ncamera = \"cam1\"\nmax_age_s = 60\nquota_share = 0.5\n\
             [[nvr.record]]\ntag = \"door\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.nvr.records.len(), 2);
        assert_eq!(c.nvr.records[1].tag, "door");
        assert_eq!(Config::parse(&c.to_toml()).expect("roundtrip"), c);
        let mut bad = c.clone();
        bad.nvr.records[0].quota_share = 0.7;
        bad.nvr.records[1].quota_share = 0.7;
        assert!(bad.validate().unwrap_err().to_string().contains("nvr.record"));
        let mut bad = c.clone();
        bad.nvr.records[1].camera = "cam2".into();
        assert!(bad.validate().unwrap_err().to_string().contains("nvr.record[1]"));
        let mut bad = c.clone();
        bad.node.role = Role::Viewer;
        assert!(bad.validate().unwrap_err().to_string().contains("only role"));
        let mut bad = c;
        bad.nvr.fsync_interval_ms = 0;
        assert!(bad.validate().unwrap_err().to_string().contains("fsync_interval_ms"));
    }

    #[test]
    fn autonat_limits_parse_and_default_to_libp2p() {
        let d = Limits::default();
        assert!(d.autonat_only_global_ips);
        assert_eq!(
            (d.autonat_boot_delay_ms, d.autonat_retry_interval_ms),
            (15_000, 90_000),
            "production keeps libp2p's AutoNAT timing"
        );
        let c = Config::parse(
            "[limits]\nautonat_only_global_ips = false\nautonat_boot_delay_ms = 500\n\
             autonat_retry_interval_ms = 2000\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert!(!c.limits.autonat_only_global_ips);
        assert_eq!(c.limits.autonat_boot_delay_ms, 500);
        assert_eq!(c.limits.autonat_retry_interval_ms, 2000);
        assert_eq!(Config::parse(&c.to_toml()).expect("roundtrip"), c);
        let mut bad = c;
        bad.limits.autonat_retry_interval_ms = 10;
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("limits.autonat_retry_interval_ms"), "{e}");
    }

    #[test]
    fn rtsp_sources_and_sub_streams() {
        let dir = std::env::temp_dir().join(format!("camesh-config-rtsp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "[node]\nrole = \"camera\"\n\n[[camera]]\nid = \"door\"\n\
             source = \"rtsp://admin:pw@192.168.1.20:554/main\"\n\
             sub_source = \"rtsp://admin:pw@192.168.1.20:554/sub\"\nrtsp_transport = \"udp\"\n",
        )
        .expect("write");
        let c = Config::load(&path).expect("valid");
        let cam = &c.cameras[0];
        assert_eq!(
            cam.source,
            PathBuf::from("rtsp://admin:pw@192.168.1.20:554/main"),
            "URLs are not paths"
        );
        assert_eq!(
            cam.sub_source.as_deref(),
            Some(Path::new("rtsp://admin:pw@192.168.1.20:554/sub"))
        );
        assert_eq!(cam.rtsp_transport, RtspTransport::Udp);
        let mut bad = c.clone();
        bad.cameras[0].sub_source = Some("rtsp://admin:pw@:554/sub".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("camera[0].sub_source") && !e.contains(":pw@"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn webrtc_is_on_for_cameras_nvrs_relays_and_forwarders() {
        assert!(Config::preset(Role::Camera).webrtc());
        assert!(Config::preset(Role::Nvr).webrtc());
        let mut v = Config::preset(Role::Viewer);
        assert!(!v.webrtc() && v.webrtc_listen().is_empty());
        v.node.relay_server = Some(true);
        assert!(v.webrtc(), "a relay");
        v.node.relay_server = None;
        v.forwards.push(ForwardConfig {
            camera: "door".into(),
            from: "/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .expect("addr"),
            profile: ForwardProfile::default(),
        });
        assert!(v.webrtc(), "a forwarder");
        let mut c = Config::preset(Role::Camera);
        c.node.webrtc = Some(false);
        assert!(!c.webrtc() && c.webrtc_listen().is_empty());
        c.node.webrtc = None;
        let shown: Vec<String> = c.webrtc_listen().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            ["/ip4/0.0.0.0/udp/0/webrtc-direct"],
            "the QUIC address's IP, TCP skipped"
        );
        c.node.webrtc_listen = vec!["/ip4/0.0.0.0/udp/9090/webrtc-direct".parse().expect("addr")];
        assert_eq!(c.webrtc_listen(), c.node.webrtc_listen);
        c.validate().expect("valid");
        c.node.webrtc_listen = vec!["/ip4/0.0.0.0/udp/9090/quic-v1".parse().expect("addr")];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("node.webrtc_listen[0]"), "{e}");
        let parsed = Config::parse("[node]\nrole = \"viewer\"\nwebrtc = true\n").expect("parses");
        assert!(parsed.webrtc());
    }
}
