//! RTSP sources: an IP camera's `rtsp://` stream in, `AccessUnit`s out, without decoding.
//!
//! One connection is one [`RtspSource::run`]: ffmpeg (`ffmpeg-next`) opens the URL over
//! TCP (interleaved) or UDP, with the credentials the URL carries, and its RTP
//! depacketizer and H.264 parser hand over whole access units. A dedicated OS thread runs
//! that blocking loop and feeds the caller's bounded channel (a full channel slows the
//! reads, and TCP pushes back to the camera). The thread:
//!
//! - takes SPS/PPS from the SDP (`sprop-parameter-sets`, ffmpeg's extradata) and from the
//!   stream, whichever comes, and puts them in front of every IDR (see
//!   [`super::normalize::LiveNormalizer`], the pure half of this source);
//!   it starts at the first IDR, drops access unit delimiters and passes every other NAL
//!   unit through byte for byte;
//! - keeps the camera's presentation times (RTP carries only those) and derives decode
//!   times for B-frame streams from the reorder depth the SPS or ffmpeg reports (see
//!   [`super::normalize::LiveTimestamps`]), so `pts != dts` where the encoder reordered;
//!   timestamps are anchored to a process-wide clock, so a reconnection continues the
//!   timeline after the gap instead of starting again at 0;
//! - passes the camera's audio (AAC, G.711, Opus) through beside the video, on the
//!   video's timeline (`SourceEvent::Audio`); refuses H.265 and audio-only streams with
//!   a message that says what to change;
//! - notices a stalled camera (no video for [`RtspOptions::stall_timeout`]) through
//!   ffmpeg's interrupt callback, which is also how cancellation reaches a blocked read.
//!
//! A connection that ends or fails sends one [`SourceEvent::Failed`] (or `Ended`) and
//! returns; the node's camera task reconnects with backoff and reports the gap (see
//! `node::run_camera`). Passwords in URLs are never logged: every message shows the URL
//! through [`crate::addr::redact`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::clip::fps_plausible;
use super::normalize::{LiveNormalizer, MAX_AU_BYTES, MAX_REORDER};
use super::parts::{audio_track, describe_streams, extradata, ticks_90k, MAX_AUDIO_BYTES};
use super::{SourceError, SourceEvent};
use crate::addr::{check_url, redact};
use crate::clock::process_ms;
use crate::config::RtspTransport;
use crate::media::h264::{avcc_nals_with_length_size, split_annexb};
use crate::media::init_ffmpeg;
use crate::media::AudioUnit;

/// How an RTSP source connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspOptions {
    pub transport: RtspTransport,
    /// Limit for connecting, the RTSP handshake and the first probe of the stream.
    pub connect_timeout: Duration,
    /// No video for this long ends the connection (the camera stalled or the network
    /// dropped); the caller reconnects.
    pub stall_timeout: Duration,
    /// The camera this source feeds, named in libav's log messages (empty: none).
    pub camera: String,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            transport: RtspTransport::Tcp,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(5),
            camera: String::new(),
        }
    }
}

/// Why an RTSP connection failed or ended. Every message names the (redacted) URL and,
/// where it can, what to change.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error(
        "{url}: the camera refused the user name or password (401 Unauthorized): check the credentials in the URL"
    )]
    Unauthorized { url: String },
    #[error("{url}: the camera refuses this stream (403 Forbidden): check the user's rights on the camera")]
    Forbidden { url: String },
    #[error("{url}: the camera has no such stream (404 Not Found): check the path in the URL")]
    NotFound { url: String },
    #[error("{url}: connection refused: is the camera's RTSP server running, and is the port right?")]
    Refused { url: String },
    #[error("{url}: no answer within {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    #[error("{url}: cannot open the stream: {source}")]
    Open {
        url: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{url}: the camera offers no video stream (it has: {streams}); camesh needs H.264 video")]
    NoVideo { url: String, streams: String },
    #[error("{url}: the camera sends {codec} video, not H.264; camesh carries H.264 only: set this stream of the camera to H.264")]
    NotH264 { url: String, codec: String },
    #[error("{url}: no video for {after:?}: the camera stalled or the network dropped")]
    Stalled { url: String, after: Duration },
    #[error("{url}: the camera ended the stream")]
    Ended { url: String },
    #[error("{url}: reading the stream failed: {source}")]
    Read {
        url: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    #[error("{url}: {reason}")]
    BadStream { url: String, reason: String },
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0}")]
    Init(String),
}

/// One connection to an RTSP camera; see [`RtspSource::run`].
#[derive(Clone)]
pub struct RtspSource {
    url: String,
    opts: RtspOptions,
}

impl std::fmt::Debug for RtspSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSource")
            .field("url", &redact(&self.url))
            .field("opts", &self.opts)
            .finish()
    }
}

impl RtspSource {
    pub fn new(url: impl Into<String>, opts: RtspOptions) -> Self {
        RtspSource { url: url.into(), opts }
    }

    /// The URL with its password hidden.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Connects and streams until the connection ends, `tx` closes or `cancel` fires:
    /// [`SourceEvent::Params`] (again whenever the SPS/PPS change), then one
    /// [`SourceEvent::Frame`] per access unit as it arrives. A connection that cannot be
    /// made or breaks ends with one [`SourceEvent::Failed`]; the camera ending the stream
    /// with [`SourceEvent::Ended`]. Cancelling returns within about a second (ffmpeg polls
    /// its interrupt callback while it waits on the network).
    pub async fn run(self, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, mut done_rx) = oneshot::channel::<()>();
        let url = self.url.clone();
        let thread_stop = stop.clone();
        let thread_tx = tx.clone();
        let spawned = std::thread::Builder::new().name("rtsp-source".into()).spawn(move || {
            let _camera = crate::media::avlog::camera_scope(&self.opts.camera);
            let result = session(&self.url, &self.opts, &thread_tx, &thread_stop);
            let event = match result {
                Ok(()) => None,
                Err(e @ RtspError::Ended { .. }) => Some(SourceEvent::Ended { reason: e.to_string() }),
                Err(e) => Some(SourceEvent::Failed { error: e.to_string() }),
            };
            if let Some(ev) = event {
                if !thread_stop.load(Ordering::Relaxed) {
                    let _ = thread_tx.blocking_send(ev);
                }
            }
            let _ = done_tx.send(());
        });
        if let Err(e) = spawned {
            let error = format!("{}: cannot start the RTSP reader thread: {e}", redact(&url));
            let _ = tx.send(SourceEvent::Failed { error }).await;
            return;
        }
        drop(tx);
        tokio::select! {
            _ = cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                // ffmpeg notices the interrupt within ~100 ms of network polling.
                let _ = tokio::time::timeout(Duration::from_secs(3), &mut done_rx).await;
            }
            _ = &mut done_rx => {}
        }
    }
}

/// The reorder depth (`has_b_frames`) ffmpeg found for a stream.
#[allow(unsafe_code)]
fn video_delay(params: &ffmpeg_next::codec::Parameters) -> usize {
    // SAFETY: `params` wraps the AVCodecParameters of a stream of an input context that
    // `params` keeps alive; reading a plain int field has no other precondition.
    let delay = unsafe { (*params.as_ptr()).video_delay };
    usize::try_from(delay).unwrap_or(0).min(MAX_REORDER)
}

/// One blocking connection. `Ok(())` when stopped by `stop` or a closed `tx`.
fn session(
    url: &str,
    opts: &RtspOptions,
    tx: &mpsc::Sender<SourceEvent>,
    stop: &Arc<AtomicBool>,
) -> Result<(), RtspError> {
    use ffmpeg_next::codec::Id;
    use ffmpeg_next::media::Type;

    let shown = redact(url);
    check_url(url).map_err(|reason| RtspError::BadUrl {
        url: shown.clone(),
        reason,
    })?;
    // ffmpeg's RTP/H.264 warnings (lost packets, probing) go to `tracing` at debug level
    // with this camera's id (media::avlog); camesh reports what matters itself.
    init_ffmpeg().map_err(|e| RtspError::Init(SourceError::FfmpegInit(e).to_string()))?;

    let deadline = Arc::new(AtomicU64::new(process_ms() + millis(opts.connect_timeout)));
    let interrupt = {
        let stop = stop.clone();
        let deadline = deadline.clone();
        move || stop.load(Ordering::Relaxed) || process_ms() > deadline.load(Ordering::Relaxed)
    };
    let mut dict = ffmpeg_next::Dictionary::new();
    dict.set("rtsp_transport", opts.transport.as_str());
    // Socket I/O timeout, microseconds.
    dict.set("timeout", &(millis(opts.connect_timeout) * 1000).to_string());
    // Probe briefly: the SDP or the first IDR says everything needed.
    dict.set("analyzeduration", "2000000");
    dict.set("probesize", "2000000");
    dict.set("user_agent", concat!("camesh/", env!("CARGO_PKG_VERSION")));
    let open_failed = |e: ffmpeg_next::Error| {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let url = shown.clone();
        Some(match e {
            ffmpeg_next::Error::HttpUnauthorized => RtspError::Unauthorized { url },
            ffmpeg_next::Error::HttpForbidden => RtspError::Forbidden { url },
            ffmpeg_next::Error::HttpNotFound | ffmpeg_next::Error::StreamNotFound => RtspError::NotFound { url },
            ffmpeg_next::Error::Other { errno } if errno == libc_econnrefused() => RtspError::Refused { url },
            ffmpeg_next::Error::Exit => RtspError::ConnectTimeout {
                url,
                after: opts.connect_timeout,
            },
            ffmpeg_next::Error::Other { errno } if errno == libc_etimedout() => RtspError::ConnectTimeout {
                url,
                after: opts.connect_timeout,
            },
            source => RtspError::Open { url, source },
        })
    };
    let mut input = match ffmpeg_next::format::input_with_interrupt_and_dictionary(url, interrupt, dict) {
        Ok(i) => i,
        Err(e) => return open_failed(e).map_or(Ok(()), Err),
    };

    let (index, time_base, rates, extra, delay) = {
        let Some(stream) = input.streams().best(Type::Video) else {
            let streams = describe_streams(&input);
            return Err(RtspError::NoVideo { url: shown, streams });
        };
        let params = stream.parameters();
        match params.id() {
            Id::H264 => {}
            Id::HEVC => {
                return Err(RtspError::NotH264 {
                    url: shown,
                    codec: "H.265 (HEVC)".into(),
                })
            }
            other => {
                return Err(RtspError::NotH264 {
                    url: shown,
                    codec: other.name().to_string(),
                })
            }
        }
        (
            stream.index(),
            stream.time_base(),
            [stream.avg_frame_rate(), stream.rate()],
            extradata(&params),
            video_delay(&params),
        )
    };
    let audio = audio_track(&input, &shown);
    let rate = rates
        .into_iter()
        .filter_map(|r| Some((u32::try_from(r.0).ok()?, u32::try_from(r.1).ok()?)))
        .find(|&(n, d)| fps_plausible(n, d));
    let mut norm = LiveNormalizer::new(delay, rate);
    let avcc_length = norm.seed_from_extradata(&extra);
    tracing::info!(url = %shown, transport = opts.transport.as_str(), reorder = delay, "RTSP stream opened");
    let audio_index = audio.as_ref().map(|a| a.index);
    let audio_base = audio.as_ref().map(|a| a.time_base);
    if let Some(a) = audio {
        if tx.blocking_send(SourceEvent::AudioParams(a.params)).is_err() {
            return Ok(());
        }
    }
    let mut last_audio: Option<u64> = None;

    let to_90k = |ts: i64| ticks_90k(ts, (time_base.0, time_base.1));
    let mut packet = ffmpeg_next::Packet::empty();
    let mut bad_packets = 0u64;
    loop {
        deadline.store(process_ms() + millis(opts.stall_timeout), Ordering::Relaxed);
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(ffmpeg_next::Error::Eof) => return Err(RtspError::Ended { url: shown }),
            Err(ffmpeg_next::Error::InvalidData) => {
                bad_packets += 1;
                if bad_packets % 100 == 1 {
                    tracing::debug!(url = %shown, bad_packets, "skipping corrupt RTSP data");
                }
                continue;
            }
            Err(ffmpeg_next::Error::Exit) => {
                return Err(RtspError::Stalled {
                    url: shown,
                    after: opts.stall_timeout,
                })
            }
            Err(ffmpeg_next::Error::Other { errno }) if errno == libc_etimedout() => {
                return Err(RtspError::Stalled {
                    url: shown,
                    after: opts.stall_timeout,
                })
            }
            Err(source) => return Err(RtspError::Read { url: shown, source }),
        }
        if Some(packet.stream()) == audio_index {
            // Audio: passed through on the video's timeline (dropped until the first IDR).
            let raw = packet.pts().zip(audio_base).and_then(|(p, b)| ticks_90k(p, b));
            let (Some(data), Some(pts)) = (packet.data(), raw.and_then(|r| norm.audio_pts(r))) else {
                continue;
            };
            if data.is_empty() || data.len() > MAX_AUDIO_BYTES {
                continue;
            }
            // Never backwards: a clock correction waits for the audio to catch up.
            if last_audio.is_some_and(|l| pts <= l) {
                continue;
            }
            last_audio = Some(pts);
            let unit = AudioUnit {
                data: Bytes::copy_from_slice(data),
                pts_90k: pts,
            };
            if stop.load(Ordering::Relaxed) || tx.blocking_send(SourceEvent::Audio(unit)).is_err() {
                return Ok(());
            }
            continue;
        }
        if packet.stream() != index {
            continue;
        }
        let Some(data) = packet.data() else { continue };
        if data.len() > MAX_AU_BYTES {
            norm.oversized += 1;
            tracing::warn!(url = %shown, bytes = data.len(), max = MAX_AU_BYTES, "dropped an oversized access unit");
            continue;
        }
        let nals: Vec<Bytes> = match avcc_length {
            Some(size) => match avcc_nals_with_length_size(data, size)
                .map(|n| n.map(Bytes::copy_from_slice))
                .collect::<Result<_, _>>()
            {
                Ok(n) => n,
                Err(_) => {
                    bad_packets += 1;
                    continue;
                }
            },
            None => split_annexb(data).map(Bytes::copy_from_slice).collect(),
        };
        let pts = packet.pts().and_then(to_90k);
        let events = norm.push(nals, pts).map_err(|reason| RtspError::BadStream {
            url: shown.clone(),
            reason,
        })?;
        for ev in events {
            if stop.load(Ordering::Relaxed) || tx.blocking_send(ev).is_err() {
                return Ok(());
            }
        }
    }
}

/// A timestamp in `time_base` (num, den) as 90 kHz ticks, rounded.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

// errno values ffmpeg reports as AVERROR(errno) (Linux and the BSDs agree on ECONNREFUSED
// only on Linux; elsewhere the generic message is shown, which is still correct).
fn libc_econnrefused() -> i32 {
    if cfg!(target_os = "linux") {
        111
    } else {
        61
    }
}

fn libc_etimedout() -> i32 {
    if cfg!(target_os = "linux") {
        110
    } else {
        60
    }
}
