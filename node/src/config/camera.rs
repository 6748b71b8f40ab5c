//! One camera of a camera node (`[[camera]]`): its sources, how RTSP carries RTP, its
//! tags, its ONVIF service and its motion detection.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{MotionSection, OnvifConfig};

/// One camera a camera node serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Fleet-unique id (`[a-z0-9_-]`, 1..=64): what viewers ask for.
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// A file (Annex B `.h264` or any container ffmpeg opens; relative paths are relative
    /// to the config file), or an `rtsp://[user:password@]host[:port]/path` URL of an IP
    /// camera (pulled with ffmpeg, passed through without decoding; the password is never
    /// logged).
    pub source: PathBuf,
    /// The camera's sub (low-resolution) stream, a file or an `rtsp://` URL: what viewers
    /// get when they ask for profile `sub`. Without it, both profiles get `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_source: Option<PathBuf>,
    /// How RTSP sources carry RTP: `tcp` (interleaved in the RTSP connection; the
    /// default, it passes NAT and firewalls) or `udp`.
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    #[serde(default = "yes")]
    pub looping: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The camera's ONVIF device service, for PTZ (`mesh ptz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif: Option<OnvifConfig>,
    /// Motion detection on this camera's video (`[camera.motion]`): events for
    /// `mesh events`, the NVR and the web page. Off without the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<MotionSection>,
    /// Talkback (`mesh talk`): the camera's RTSP URL that offers the ONVIF audio
    /// backchannel (`rtsp://[user:password@]host[:port]/path`), or `source` for the
    /// camera's own `source` URL. Off without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talkback: Option<String>,
}

impl CameraConfig {
    /// The RTSP URL talkback goes to, when configured.
    pub fn talkback_url(&self) -> Option<String> {
        match self.talkback.as_deref()? {
            "source" => Some(self.source.to_string_lossy().into_owned()),
            url => Some(url.to_owned()),
        }
    }

    /// `Err(reason)` when talkback is set but names no `rtsp://` URL.
    pub fn check_talkback(&self) -> Result<(), String> {
        match self.talkback_url() {
            Some(u) if !u.starts_with("rtsp://") => Err(format!(
                "{:?} is not an rtsp:// URL (talkback = \"source\" needs an rtsp:// source)",
                self.talkback.as_deref().unwrap_or_default()
            )),
            _ => Ok(()),
        }
    }
}

fn yes() -> bool {
    true
}

/// RTP transport for `rtsp://` sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

impl RtspTransport {
    /// The value of ffmpeg's `rtsp_transport` option.
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}
