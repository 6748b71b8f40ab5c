//! Real-time pacing: a loaded clip played as a live camera.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Clip, SourceEvent, MAX_LAG};
use crate::media::{AccessUnit, CLOCK_HZ};

/// Plays a loaded clip in real time: sends [`SourceEvent::Params`], then each frame when
/// the clock reaches its dts (relative to when playing started). Looping adds
/// [`Clip::loop_period_90k`] to the timestamps of each new pass, so the receiver sees one
/// continuous stream.
///
/// Backpressure from `tx` is honoured (a send waits); if that makes the source fall more
/// than half a second behind, it re-anchors its clock rather than sending the late frames
/// in a burst. Returns when cancelled, when `tx` is closed, or after sending
/// [`SourceEvent::Ended`] at the end of a non-looping clip.
pub async fn play_clip(clip: Clip, looping: bool, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let send = |event| {
        let tx = &tx;
        let cancel = &cancel;
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                sent = tx.send(event) => sent.is_ok(),
            }
        }
    };
    if !send(SourceEvent::Params(clip.params.clone())).await {
        return;
    }
    if clip.frames.is_empty() {
        let _ = send(SourceEvent::Ended {
            reason: "the clip has no frames".into(),
        })
        .await;
        return;
    }
    let period = clip.loop_period_90k();
    let mut anchor = Instant::now();
    let mut offset = 0u64;
    loop {
        for frame in &clip.frames {
            let dts = frame.dts_90k.saturating_add(offset);
            let mut deadline = anchor + ticks_to_duration(dts);
            let now = Instant::now();
            if now > deadline + MAX_LAG {
                let lag = now - deadline;
                tracing::debug!(?lag, "file source fell behind; re-anchoring its clock");
                anchor += lag;
                deadline = now;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let frame = AccessUnit {
                data: frame.data.clone(),
                pts_90k: frame.pts_90k.saturating_add(offset),
                dts_90k: dts,
                keyframe: frame.keyframe,
            };
            if !send(SourceEvent::Frame(frame)).await {
                return;
            }
        }
        if !looping {
            let _ = send(SourceEvent::Ended {
                reason: "reached the end of the file".into(),
            })
            .await;
            return;
        }
        offset = offset.saturating_add(period);
    }
}

fn ticks_to_duration(ticks_90k: u64) -> Duration {
    let nanos = u128::from(ticks_90k) * 1_000_000_000 / u128::from(CLOCK_HZ);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
