//! Real-time pacing: a loaded clip played as a live camera, its audio (if any) beside
//! its pictures, each frame sent when the clock reaches its time.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Clip, SourceEvent, MAX_LAG};
use crate::media::{AccessUnit, AudioUnit, CLOCK_HZ};

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
    if let Some(a) = &clip.audio {
        if !send(SourceEvent::AudioParams(a.params.clone())).await {
            return;
        }
    }
    let no_audio = Vec::new();
    let audio = clip.audio.as_ref().map_or(&no_audio, |a| &a.units);
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
    // A pass's audio after its last picture (up to a frame's reordering) is sent beside
    // the next pass's first pictures, with its own pass's offset.
    let mut carry: Option<(std::iter::Peekable<std::slice::Iter<'_, AudioUnit>>, u64)> = None;
    loop {
        let mut sound = audio.iter().peekable();
        for frame in &clip.frames {
            let dts = frame.dts_90k.saturating_add(offset);
            // The audio due before this picture, each at its own time.
            if let Some((rest, at)) = carry.as_mut() {
                if !send_audio(rest, dts, *at, anchor, &tx, &cancel).await {
                    return;
                }
            }
            if !send_audio(&mut sound, dts, offset, anchor, &tx, &cancel).await {
                return;
            }
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
        if let Some((mut rest, at)) = carry.take() {
            if !send_audio(&mut rest, u64::MAX, at, anchor, &tx, &cancel).await {
                return;
            }
        }
        if !looping {
            // The rest of the audio, after the last picture.
            if !send_audio(&mut sound, u64::MAX, offset, anchor, &tx, &cancel).await {
                return;
            }
            let _ = send(SourceEvent::Ended {
                reason: "reached the end of the file".into(),
            })
            .await;
            return;
        }
        carry = Some((sound, offset));
        offset = offset.saturating_add(period);
    }
}

/// Sends the audio units before `until` (90 kHz, this pass's time) when the clock
/// reaches each; false when cancelled or the receiver is gone.
async fn send_audio(
    sound: &mut std::iter::Peekable<std::slice::Iter<'_, AudioUnit>>,
    until: u64,
    offset: u64,
    anchor: Instant,
    tx: &mpsc::Sender<SourceEvent>,
    cancel: &CancellationToken,
) -> bool {
    while let Some(u) = sound.next_if(|u| u.pts_90k.saturating_add(offset) < until) {
        let pts = u.pts_90k.saturating_add(offset);
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(anchor + ticks_to_duration(pts)) => {}
        }
        let unit = AudioUnit {
            data: u.data.clone(),
            pts_90k: pts,
        };
        let sent = tokio::select! {
            _ = cancel.cancelled() => false,
            r = tx.send(SourceEvent::Audio(unit)) => r.is_ok(),
        };
        if !sent {
            return false;
        }
    }
    true
}

fn ticks_to_duration(ticks_90k: u64) -> Duration {
    let nanos = u128::from(ticks_90k) * 1_000_000_000 / u128::from(CLOCK_HZ);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
