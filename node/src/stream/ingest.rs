//! Camera tasks (IO): each configured camera's source (a file, or an `rtsp://` URL)
//! feeding its [`Hub`], restarted with backoff when it ends or fails, with the gap
//! counted; and the key rotation every revocation triggers on every camera.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::fresh::FrameSigner;
use super::hub::{Hub, Hubs};
use crate::auth::Trust;
use crate::backoff::next_backoff;
use crate::config::{CameraConfig, Config};
use crate::media::source::{FileSource, RtspOptions, RtspSource, SourceEvent, SourceOptions};

/// Creates the hubs of every configured camera (and its sub stream) in `hubs` and starts
/// their sources; they run until `shutdown`.
pub fn start_cameras(config: &Config, hubs: &Hubs, signer: &FrameSigner, shutdown: &CancellationToken) {
    for cam in &config.cameras {
        let name = if cam.name.is_empty() {
            cam.id.clone()
        } else {
            cam.name.clone()
        };
        let hub = Arc::new(
            Hub::new(
                cam.id.clone(),
                name.clone(),
                cam.tags.clone(),
                config.limits.gop_cache_bytes,
            )
            .with_signer(signer.clone()),
        );
        hubs.insert(hub.clone());
        tokio::spawn(run_camera(hub, cam.clone(), cam.source.clone(), shutdown.child_token()));
        if let Some(sub_source) = &cam.sub_source {
            // The sub stream: its own hub under the same camera id, picked by profile.
            let sub = Arc::new(
                Hub::new(
                    cam.id.clone(),
                    format!("{name} (sub)"),
                    cam.tags.clone(),
                    config.limits.gop_cache_bytes,
                )
                .with_signer(signer.clone()),
            );
            hubs.insert_sub(sub.clone());
            tokio::spawn(run_camera(sub, cam.clone(), sub_source.clone(), shutdown.child_token()));
        }
    }
}

/// Changes every camera's media key on every revocation and every `every`: whoever was
/// revoked, or whose grant expired, keeps at most the keys of frames it was allowed to
/// see (keys are only served against a valid grant).
pub async fn rotate_keys(trust: Arc<Trust>, hubs: Arc<Hubs>, every: Duration, shutdown: CancellationToken) {
    let mut rx = trust.subscribe();
    let mut known = trust.revocation_count();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            r = rx.changed() => {
                if r.is_err() { return }
                let n = trust.revocation_count();
                if n == known { continue }
                known = n;
                format!("after a revocation ({n} revoked)")
            }
            _ = tick.tick() => format!("every {} s", every.as_secs()),
            _ = shutdown.cancelled() => return,
        };
        for hub in hubs.all().into_iter().chain(hubs.subs()) {
            let k = hub.rotate_key();
            trust
                .audit
                .record("key-rotated", "", &hub.id, &format!("key epoch {k} {why}"));
        }
    }
}

/// Runs a camera's source (`source`: a file, or an `rtsp://` URL) forever: restarts it
/// with backoff when it ends or fails, and reports the gap when video is back.
async fn run_camera(hub: Arc<Hub>, cam: CameraConfig, source: std::path::PathBuf, shutdown: CancellationToken) {
    let mut backoff = Duration::ZERO;
    let rtsp_url = crate::addr::source_url(&source).map(str::to_owned);
    // A camera that drops is retried often (a refused connection costs nothing); a file
    // that cannot be played is not going to change soon.
    let max_backoff = if rtsp_url.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(30)
    };
    let mut down_since: Option<std::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        let (tx, mut rx) = mpsc::channel(32);
        let token = shutdown.child_token();
        let task = match &rtsp_url {
            Some(url) => {
                let opts = RtspOptions {
                    transport: cam.rtsp_transport,
                    camera: hub.id.clone(),
                    ..RtspOptions::default()
                };
                tokio::spawn(RtspSource::new(url.clone(), opts).run(tx, token.clone()))
            }
            None => {
                let file = FileSource::new(
                    source.clone(),
                    SourceOptions {
                        looping: cam.looping,
                        ..SourceOptions::default()
                    },
                );
                tokio::spawn(file.run(tx, token.clone()))
            }
        };
        let mut failure = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                SourceEvent::Params(p) => {
                    if let Some(since) = down_since.take() {
                        let gap = since.elapsed();
                        hub.counters.source_gaps.fetch_add(1, Ordering::Relaxed);
                        hub.counters
                            .last_gap_ms
                            .store(u64::try_from(gap.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
                        info!(camera = %hub.id, gap_ms = gap.as_millis() as u64, width = p.width, height = p.height, "source back after a gap");
                    } else {
                        info!(camera = %hub.id, width = p.width, height = p.height, "source started");
                    }
                    backoff = Duration::ZERO;
                    failures = 0;
                    hub.set_params(p);
                }
                SourceEvent::Frame(au) => hub.publish(au),
                SourceEvent::AudioParams(a) => {
                    info!(camera = %hub.id, codec = a.codec.name(), rate = a.sample_rate, channels = a.channels, "audio");
                    hub.set_audio(Some(a));
                }
                SourceEvent::Audio(unit) => hub.publish_audio(unit),
                SourceEvent::Ended { reason } => failure = Some(format!("ended: {reason}")),
                SourceEvent::Failed { error } => failure = Some(error),
            }
        }
        token.cancel();
        let _ = task.await;
        let why = failure.unwrap_or_else(|| "stopped".into());
        hub.set_offline(&why);
        if shutdown.is_cancelled() {
            return;
        }
        down_since.get_or_insert_with(std::time::Instant::now);
        backoff = next_backoff(backoff, Duration::from_millis(500), max_backoff);
        failures += 1;
        // Say it when it happens, then now and then while it lasts.
        if failures == 1 || failures.is_multiple_of(30) {
            warn!(camera = %hub.id, error = %why, retry_s = backoff.as_secs_f32(), failures, "camera source stopped; retrying");
        } else {
            tracing::debug!(camera = %hub.id, error = %why, retry_s = backoff.as_secs_f32(), "camera source still down");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
