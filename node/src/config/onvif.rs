//! A camera's ONVIF device service (`[camera.onvif]`): where the camera node sends PTZ
//! calls (#17) and reads the camera's events, and the WS-Security credentials it signs
//! them with.

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifConfig {
    /// The device service, e.g. `http://192.168.1.20/onvif/device_service` (the PTZ and
    /// media services are found through its GetCapabilities).
    pub url: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// The media profile PTZ calls name; empty: the camera's first profile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// Forward the camera's own ONVIF events (motion, tampering, inputs; read from its
    /// event service with a PullPoint subscription) as `onvif/<topic>` events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events: bool,
}

/// Never prints the password.
impl std::fmt::Debug for OnvifConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvifConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("profile", &self.profile)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl OnvifConfig {
    /// `Err(reason)` unless `url` is an http:// URL with a host.
    pub fn check(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{:?} is not an http:// URL (https is not supported yet)", self.url))?;
        if rest.split('/').next().is_none_or(|h| h.is_empty()) {
            return Err(format!("{:?} has no host", self.url));
        }
        Ok(())
    }
}
