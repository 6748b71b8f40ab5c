//! The camera's own ONVIF events (IO): with `[camera.onvif] events = true`, the camera
//! node keeps a PullPoint subscription on the camera's event service (created, pulled,
//! renewed; re-created with a backoff after any failure) and publishes each notification
//! as a signed `onvif/<topic>` event ([`to_event`], pure, does the mapping).
//!
//! A property that turns true starts an event and one that turns false ends it (boolean
//! data items: `IsMotion`, `LogicalState`, `State`, ...); the camera's report of how
//! things are at subscription time (`Initialized`), and messages without a boolean, are
//! pulses.

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::pb;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::Publisher;
use super::{MAX_DETAIL, MAX_KIND, ONVIF_PREFIX};
use crate::backoff::next_backoff;
use crate::clock::now_unix_us;
use crate::config::OnvifConfig;
use crate::onvif::client::Onvif;
use crate::onvif::events::Notification;

/// How long a subscription lasts unless renewed, and how often it is renewed.
const TERMINATION_S: u32 = 60;
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How long one pull waits on the camera for news.
const PULL_WAIT_S: u32 = 2;

/// The time a camera gives (RFC 3339 UTC), else `now`.
fn camera_time(utc: &str, now: i64) -> i64 {
    humantime::parse_rfc3339_weak(utc.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or(now)
}

/// One notification as an event of `camera` (pure); `now` where the camera gave no
/// readable time.
pub fn to_event(camera: &str, n: &Notification, now: i64) -> pb::CameraEvent {
    let boolean = n.data.iter().find_map(|(_, v)| match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    });
    let state = match (n.operation.as_str(), boolean) {
        ("Initialized", _) | (_, None) => pb::EventState::Pulse,
        ("Deleted", _) | (_, Some(false)) => pb::EventState::End,
        (_, Some(true)) => pb::EventState::Start,
    };
    let items = n.source.iter().chain(n.data.iter());
    let mut detail = items.map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    if detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    let mut kind = format!("{ONVIF_PREFIX}{}", n.topic);
    if kind.len() > MAX_KIND {
        let mut end = MAX_KIND;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
    }
    pb::CameraEvent {
        camera_id: camera.to_owned(),
        unix_us: camera_time(&n.utc_time, now),
        kind,
        state: state as i32,
        detail,
        ..Default::default()
    }
}

/// Keeps a subscription on `camera`'s ONVIF service until `shutdown`.
pub async fn run(camera: String, cfg: OnvifConfig, publisher: Arc<Publisher>, shutdown: CancellationToken) {
    let onvif = Onvif::new(cfg);
    let mut backoff = Duration::ZERO;
    let mut told = false;
    loop {
        let r = tokio::select! {
            r = subscription(&camera, &onvif, &publisher, &mut told) => r,
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = r {
            if !told {
                warn!(%camera, error = %e, "ONVIF events: cannot subscribe; trying again with a backoff");
                told = true;
            } else {
                debug!(%camera, error = %e, "ONVIF events");
            }
        }
        backoff = next_backoff(backoff, Duration::from_secs(1), Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One subscription's life: subscribe, then pull and renew until something fails.
async fn subscription(
    camera: &str,
    onvif: &Onvif,
    publisher: &Publisher,
    told: &mut bool,
) -> Result<(), crate::onvif::client::OnvifError> {
    let sub = onvif.subscribe_events(TERMINATION_S).await?;
    info!(%camera, subscription = %sub, "ONVIF events subscribed");
    *told = false;
    let mut renew_at = tokio::time::Instant::now() + RENEW_EVERY;
    let result = async {
        loop {
            for n in onvif.pull_events(&sub, PULL_WAIT_S).await? {
                let e = publisher.publish(to_event(camera, &n, now_unix_us()));
                debug!(%camera, kind = %e.kind, "ONVIF event");
            }
            if tokio::time::Instant::now() >= renew_at {
                onvif.renew_events(&sub, TERMINATION_S).await?;
                renew_at = tokio::time::Instant::now() + RENEW_EVERY;
            }
        }
    }
    .await;
    // Best effort: the camera ends it anyway when it is not renewed.
    let _ = onvif.unsubscribe_events(&sub).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(op: &str, data: &[(&str, &str)]) -> Notification {
        Notification {
            topic: "tns1:RuleEngine/CellMotionDetector/Motion".into(),
            utc_time: "2026-12-07T10:00:00.500Z".into(),
            operation: op.into(),
            source: vec![("Rule".into(), "MyMotion".into())],
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn properties_become_starts_ends_and_pulses() {
        let e = to_event("cam1", &n("Changed", &[("IsMotion", "true")]), 7);
        assert_eq!(e.kind, "onvif/tns1:RuleEngine/CellMotionDetector/Motion");
        assert_eq!(e.state, pb::EventState::Start as i32);
        assert_eq!(e.detail, "Rule=MyMotion, IsMotion=true");
        assert_eq!(e.unix_us, 1_796_637_600_500_000);
        let end = to_event("cam1", &n("Changed", &[("IsMotion", "false")]), 7);
        assert_eq!(end.state, pb::EventState::End as i32);
        let init = to_event("cam1", &n("Initialized", &[("IsMotion", "false")]), 7);
        assert_eq!(init.state, pb::EventState::Pulse as i32);
        let plain = to_event("cam1", &n("", &[("Count", "3")]), 7);
        assert_eq!(plain.state, pb::EventState::Pulse as i32);
        let mut bad_time = n("Changed", &[]);
        bad_time.utc_time = "yesterday".into();
        assert_eq!(to_event("cam1", &bad_time, 7).unix_us, 7);
        let mut long = n("Changed", &[]);
        long.topic = "é".repeat(200);
        let e = to_event("cam1", &long, 7);
        assert!(e.kind.len() <= MAX_KIND);
        // What the camera sends passes the checks every receiver makes.
        let key = libp2p::identity::Keypair::generate_ed25519();
        assert!(super::super::open(&super::super::sign(&e, &key)).is_ok());
    }
}
