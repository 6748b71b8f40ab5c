//! RTSP sources: an IP camera's `rtsp://` stream in, [`AccessUnit`]s out, without decoding.
//!
//! One connection is one [`RtspSource::run`]: ffmpeg (`ffmpeg-next`) opens the URL over
//! TCP (interleaved) or UDP, with the credentials the URL carries, and its RTP
//! depacketizer and H.264 parser hand over whole access units. A dedicated OS thread runs
//! that blocking loop and feeds the caller's bounded channel (a full channel slows the
//! reads, and TCP pushes back to the camera). The thread:
//!
//! - takes SPS/PPS from the SDP (`sprop-parameter-sets`, ffmpeg's extradata) and from the
//!   stream, whichever comes, and puts them in front of every IDR (see [`LiveNormalizer`]);
//!   it starts at the first IDR, drops access unit delimiters and passes every other NAL
//!   unit through byte for byte;
//! - keeps the camera's presentation times (RTP carries only those) and derives decode
//!   times for B-frame streams from the reorder depth the SPS or ffmpeg reports (see
//!   [`Timeline`]), so `pts != dts` where the encoder reordered; timestamps are anchored
//!   to a process-wide clock, so a reconnection continues the timeline after the gap
//!   instead of starting again at 0;
//! - refuses H.265 and audio-only streams with a message that says what to change;
//! - notices a stalled camera (no video for [`RtspOptions::stall_timeout`]) through
//!   ffmpeg's interrupt callback, which is also how cancellation reaches a blocked read.
//!
//! A connection that ends or fails sends one [`SourceEvent::Failed`] (or `Ended`) and
//! returns; the node's camera task reconnects with backoff and reports the gap (see
//! `node::run_camera`). Passwords in URLs are never logged: every message shows the URL
//! through [`redact`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::clip::fps_plausible;
use super::container::{extradata, init_ffmpeg};
use super::parts::{describe_streams, reduce, AuParts};
use super::SourceEvent;
use crate::config::RtspTransport;
use crate::media::h264::{
    avcc_nals_with_length_size, nal_type, parse_avc_config, parse_sps, split_annexb, to_avcc, NalType,
};
use crate::media::{AccessUnit, CodecParams, CLOCK_HZ};

/// Largest access unit accepted from a camera; bigger ones are dropped (and counted).
pub const MAX_AU_BYTES: usize = 16 << 20;

/// Deepest B-frame reordering believed (H.264 allows at most 16 frames in the DPB).
const MAX_REORDER: usize = 16;

/// How an RTSP source connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspOptions {
    pub transport: RtspTransport,
    /// Limit for connecting, the RTSP handshake and the first probe of the stream.
    pub connect_timeout: Duration,
    /// No video for this long ends the connection (the camera stalled or the network
    /// dropped); the caller reconnects.
    pub stall_timeout: Duration,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            transport: RtspTransport::Tcp,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// The URL in a camera's `source`, if it is an `rtsp://` or `rtsps://` URL rather than a
/// file path.
pub fn source_url(source: &std::path::Path) -> Option<&str> {
    let s = source.to_str()?;
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    (lower.starts_with("rtsp://") || lower.starts_with("rtsps://")).then_some(s)
}

/// Checks that `url` is a usable `rtsp://[user[:password]@]host[:port][/path]` URL.
pub fn check_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{}: {why}", redact(url)));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("not a URL");
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "rtsp" | "rtsps") {
        return bad("the scheme must be rtsp:// or rtsps://");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("URLs cannot contain spaces or control characters");
    }
    if url.len() > 2048 {
        return bad("longer than 2048 characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return bad("an IPv6 address needs its closing ']'"),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

/// The URL with its password (if any) replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
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

/// Milliseconds since a process-wide start, for the interrupt deadline.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// 90 kHz ticks since a process-wide start, plus one second of headroom: the anchor of a
/// new connection's timeline (so B-frame decode times before the first frame stay
/// positive and reconnections continue the timeline).
fn anchor_90k() -> u64 {
    CLOCK_HZ + clock_ms().saturating_mul(CLOCK_HZ) / 1000
}

fn set_ffmpeg_log_level() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // ffmpeg's RTP/H.264 warnings (lost packets, probing) would flood a daemon's stderr;
        // camesh reports what matters itself.
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
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
    init_ffmpeg().map_err(|e| RtspError::Init(e.to_string()))?;
    set_ffmpeg_log_level();

    let deadline = Arc::new(AtomicU64::new(clock_ms() + millis(opts.connect_timeout)));
    let interrupt = {
        let stop = stop.clone();
        let deadline = deadline.clone();
        move || stop.load(Ordering::Relaxed) || clock_ms() > deadline.load(Ordering::Relaxed)
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
    let rate = rates
        .into_iter()
        .filter_map(|r| Some((u32::try_from(r.0).ok()?, u32::try_from(r.1).ok()?)))
        .find(|&(n, d)| fps_plausible(n, d));
    let mut norm = LiveNormalizer::new(delay, rate);
    let avcc_length = norm.seed_from_extradata(&extra);
    tracing::info!(url = %shown, transport = opts.transport.as_str(), reorder = delay, "RTSP stream opened");

    let to_90k = |ts: i64| -> Option<i64> {
        let (num, den) = (i128::from(time_base.0), i128::from(time_base.1));
        if den <= 0 || num <= 0 {
            return None;
        }
        let scaled = i128::from(ts) * i128::from(CLOCK_HZ) * num;
        i64::try_from((2 * scaled + den).div_euclid(2 * den)).ok()
    };
    let mut packet = ffmpeg_next::Packet::empty();
    let mut bad_packets = 0u64;
    loop {
        deadline.store(clock_ms() + millis(opts.stall_timeout), Ordering::Relaxed);
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

/// Turns a live stream's access units into what a hub publishes: starts at the first
/// IDR, keeps SPS/PPS in front of every IDR (from the stream, or from the SDP when the
/// camera sends them only there), drops access unit delimiters, passes every other NAL
/// unit through unchanged, and stamps pts/dts (see [`Timeline`]). Pure: no IO.
#[derive(Debug)]
pub struct LiveNormalizer {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    params: Option<CodecParams>,
    rate: Option<(u32, u32)>,
    delay: usize,
    timeline: Option<Timeline>,
    /// Access units dropped before the first decodable IDR.
    pub skipped_before_idr: u64,
    /// Access units dropped for being larger than [`MAX_AU_BYTES`].
    pub oversized: u64,
}

impl LiveNormalizer {
    /// `delay`: the stream's reorder depth in frames (0 without B-frames); `rate`: its
    /// frame rate when the transport states one.
    pub fn new(delay: usize, rate: Option<(u32, u32)>) -> Self {
        LiveNormalizer {
            sps: None,
            pps: None,
            params: None,
            rate,
            delay: delay.min(MAX_REORDER),
            timeline: None,
            skipped_before_idr: 0,
            oversized: 0,
        }
    }

    /// Takes SPS/PPS from the stream's configuration (Annex B from an SDP, or an avcC
    /// record). Returns the NAL length size when the packets are AVCC (avcC present).
    pub fn seed_from_extradata(&mut self, extra: &[u8]) -> Option<usize> {
        if extra.first() == Some(&1) {
            if let Ok(config) = parse_avc_config(extra) {
                self.sps = config.sps.first().map(|s| Bytes::copy_from_slice(s));
                self.pps = config.pps.first().map(|p| Bytes::copy_from_slice(p));
                return Some(config.length_size);
            }
            return None;
        }
        for nal in split_annexb(extra) {
            match nal_type(nal) {
                Some(NalType::SPS) if self.sps.is_none() => self.sps = Some(Bytes::copy_from_slice(nal)),
                Some(NalType::PPS) if self.pps.is_none() => self.pps = Some(Bytes::copy_from_slice(nal)),
                _ => {}
            }
        }
        None
    }

    /// The codec parameters announced last.
    pub fn params(&self) -> Option<&CodecParams> {
        self.params.as_ref()
    }

    /// One access unit's NAL units (without start codes) and its presentation time
    /// (90 kHz, the transport's clock; `None` when unknown). Returns the events to send:
    /// `Params` first whenever the parameter sets change at an IDR, then the `Frame`.
    pub fn push(&mut self, nals: Vec<Bytes>, pts: Option<i64>) -> Result<Vec<SourceEvent>, String> {
        let parts = AuParts::sort(nals, &mut self.sps, &mut self.pps);
        let idr = parts.idr;
        let mut events = Vec::new();
        if !parts.has_slice {
            return Ok(events);
        }
        if self.timeline.is_none() && !idr {
            self.skipped_before_idr += 1;
            return Ok(events);
        }
        let nals = if idr {
            let (Some(sps), Some(pps)) = (self.sps.clone(), self.pps.clone()) else {
                self.skipped_before_idr += 1;
                return Ok(events);
            };
            let nals = parts.keyframe_nals(&sps, &pps);
            let changed = self.params.as_ref().is_none_or(|p| p.sps != sps || p.pps != pps);
            if changed {
                let params = self.codec_params(sps, pps)?;
                let frame_90k = frame_duration_90k(params.fps_num, params.fps_den);
                if let Some(t) = &mut self.timeline {
                    t.frame_90k = frame_90k;
                } else {
                    self.timeline = Some(Timeline::new(pts.unwrap_or(0), anchor_90k(), self.delay, frame_90k));
                }
                self.params = Some(params.clone());
                events.push(SourceEvent::Params(params));
            }
            nals
        } else {
            parts.nals()
        };
        let data = to_avcc(&nals);
        let Some(timeline) = &mut self.timeline else {
            return Ok(events);
        };
        let (pts_90k, dts_90k) = timeline.stamp(pts);
        events.push(SourceEvent::Frame(AccessUnit {
            data,
            pts_90k,
            dts_90k,
            keyframe: idr,
        }));
        Ok(events)
    }

    fn codec_params(&self, sps: Bytes, pps: Bytes) -> Result<CodecParams, String> {
        let info = parse_sps(&sps).map_err(|e| format!("the camera's SPS cannot be parsed: {e}"))?;
        let (fps_num, fps_den) = info
            .fps()
            .filter(|&(n, d)| fps_plausible(n, d))
            .or(self.rate)
            .map(|(n, d)| reduce(n, d))
            .unwrap_or((0, 0));
        Ok(CodecParams {
            sps,
            pps,
            width: info.width,
            height: info.height,
            profile_idc: info.profile_idc,
            level_idc: info.level_idc,
            fps_num,
            fps_den,
        })
    }
}

fn frame_duration_90k(num: u32, den: u32) -> i64 {
    if num == 0 || den == 0 {
        return 3000;
    }
    let d = (CLOCK_HZ * u64::from(den) + u64::from(num) / 2) / u64::from(num);
    i64::try_from(d.clamp(1, CLOCK_HZ)).unwrap_or(3000)
}

/// Timestamps of a live stream whose transport carries presentation times only (RTP).
///
/// pts: the camera's, relative to the first IDR, plus an anchor. dts: with a reorder
/// depth of `delay` frames, frame `n` decodes at the `n - delay`-th smallest pts seen so
/// far (the first `delay` frames one frame duration apart before the first pts) — the
/// decode times an encoder with that depth used, without waiting for later frames. Decode
/// times always increase and never pass the presentation time; if the stream reorders
/// deeper than announced, the depth grows. A jump in the camera's clock (more than 30 s
/// ahead or 5 s back) continues the timeline one frame later instead of jumping.
#[derive(Debug)]
pub struct Timeline {
    origin: i64,
    anchor: i64,
    delay: usize,
    frame_90k: i64,
    pending: BinaryHeap<Reverse<i64>>,
    frames: i64,
    last_dts: Option<i64>,
    max_pts: i64,
}

impl Timeline {
    pub fn new(origin_pts: i64, anchor: u64, delay: usize, frame_90k: i64) -> Self {
        Timeline {
            origin: origin_pts,
            anchor: i64::try_from(anchor).unwrap_or(i64::MAX / 4),
            delay: delay.min(MAX_REORDER),
            frame_90k: frame_90k.max(1),
            pending: BinaryHeap::new(),
            frames: 0,
            last_dts: None,
            max_pts: 0,
        }
    }

    /// (pts, dts) in 90 kHz for the next access unit in decode order.
    pub fn stamp(&mut self, raw_pts: Option<i64>) -> (u64, u64) {
        let f = self.frame_90k;
        let mut pts = match raw_pts {
            Some(p) => p.saturating_sub(self.origin),
            None if self.frames == 0 => 0,
            None => self.max_pts + f,
        };
        if self.frames > 0 && (pts > self.max_pts + 30 * CLOCK_HZ as i64 || pts < self.max_pts - 5 * CLOCK_HZ as i64) {
            tracing::debug!(
                jump = pts - self.max_pts,
                "camera clock jumped; continuing the timeline"
            );
            let continue_at = self.max_pts + f;
            self.origin = self.origin.saturating_add(pts - continue_at);
            pts = continue_at;
            self.pending.clear();
        }
        self.pending.push(Reverse(pts));
        let mut dts = if self.pending.len() > self.delay {
            self.pending.pop().map_or(pts, |Reverse(p)| p)
        } else {
            (self.frames - self.delay as i64) * f
        };
        if let Some(last) = self.last_dts {
            dts = dts.max(last + 1);
        }
        if dts > pts {
            // Reordered deeper than announced: grow the depth for the frames to come.
            if self.delay < MAX_REORDER {
                self.delay += 1;
            }
            pts = dts;
        }
        self.last_dts = Some(dts);
        self.max_pts = self.max_pts.max(pts);
        self.frames += 1;
        let out = |t: i64| u64::try_from(self.anchor.saturating_add(t)).unwrap_or(0);
        (out(pts), out(dts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_checked_and_redacted() {
        use std::path::Path;
        assert_eq!(source_url(Path::new("rtsp://cam/x")), Some("rtsp://cam/x"));
        assert_eq!(source_url(Path::new("RTSP://cam/x")), Some("RTSP://cam/x"));
        assert_eq!(source_url(Path::new("/var/clip.mp4")), None);
        assert_eq!(source_url(Path::new("rtsp")), None);
        assert!(check_url("rtsp://user:pw@192.168.1.20:554/stream1").is_ok());
        assert!(check_url("rtsp://[::1]:8554/x").is_ok());
        assert!(check_url("rtsp://cam").is_ok());
        for bad in [
            "rtsp://",
            "rtsp://:554/x",
            "rtsp://cam:99999/x",
            "http://cam/x",
            "rtsp://c am/x",
            "rtsp://[::1/x",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redact("rtsp://admin:s3cret@cam:554/a?b"),
            "rtsp://admin:***@cam:554/a?b"
        );
        assert_eq!(redact("rtsp://admin@cam/a"), "rtsp://admin@cam/a");
        assert_eq!(redact("rtsp://cam/a@b"), "rtsp://cam/a@b");
        let e = check_url("rtsp://u:pw@cam:0/").unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }

    fn stamp_all(delay: usize, pts: &[i64]) -> Vec<(i64, i64)> {
        let mut t = Timeline::new(pts[0], 90_000, delay, 3000);
        pts.iter()
            .map(|&p| {
                let (a, b) = t.stamp(Some(p));
                (a as i64 - 90_000, b as i64 - 90_000)
            })
            .collect()
    }

    #[test]
    fn b_frame_decode_times_precede_presentation_and_increase() {
        // I P B B P B B in decode order (x264 bframes=2), pts from 1000.
        let pts = [1000, 10000, 4000, 7000, 19000, 13000, 16000, 28000, 22000, 25000];
        let got = stamp_all(2, &pts);
        let dts: Vec<i64> = got.iter().map(|x| x.1).collect();
        assert_eq!(dts, vec![-6000, -3000, 0, 3000, 6000, 9000, 12000, 15000, 18000, 21000]);
        for (i, (p, d)) in got.iter().enumerate() {
            assert_eq!(*p, pts[i] - 1000, "pts kept");
            assert!(d <= p, "dts {d} after pts {p}");
            // no later frame is presented before this one decodes
            assert!(got[i..].iter().all(|(lp, _)| lp >= d));
        }
    }

    #[test]
    fn no_reordering_gives_equal_timestamps_and_depth_grows_when_needed() {
        let got = stamp_all(0, &[0, 3000, 6000, 9000]);
        assert!(got.iter().all(|(p, d)| p == d));
        // Announced no B-frames, but they come: dts never passes pts, and keeps rising.
        let got = stamp_all(0, &[0, 9000, 3000, 6000, 18000, 12000, 15000, 27000, 21000, 24000]);
        let mut last = i64::MIN;
        for (p, d) in got {
            assert!(d <= p && d > last, "{p} {d}");
            last = d;
        }
    }

    #[test]
    fn clock_jumps_continue_the_timeline() {
        let got = stamp_all(0, &[0, 3000, 6000, 900_000_000, 900_003_000, 100]);
        let p: Vec<i64> = got.iter().map(|x| x.0).collect();
        assert_eq!(&p[..5], &[0, 3000, 6000, 9000, 12000]);
        assert!(p[5] > p[4]);
    }

    fn sps_640x360() -> Bytes {
        // From fixtures/cam-640x360-30fps-gop2s.h264.
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/cam-640x360-30fps-gop2s.h264"
        ))
        .expect("fixture");
        let sps = split_annexb(&file)
            .find(|n| nal_type(n) == Some(NalType::SPS))
            .expect("sps");
        Bytes::copy_from_slice(sps)
    }

    #[test]
    fn normalizer_starts_at_an_idr_and_uses_sdp_parameter_sets() {
        let sps = sps_640x360();
        let pps = Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]);
        let mut sdp = vec![0, 0, 0, 1];
        sdp.extend_from_slice(&sps);
        sdp.extend_from_slice(&[0, 0, 0, 1]);
        sdp.extend_from_slice(&pps);
        let mut n = LiveNormalizer::new(0, Some((30, 1)));
        assert_eq!(n.seed_from_extradata(&sdp), None);
        let p_slice = Bytes::from_static(&[0x41, 0x9a, 0x00]);
        let idr = Bytes::from_static(&[0x65, 0x88, 0x80]);
        let aud = Bytes::from_static(&[0x09, 0xf0]);
        assert!(
            n.push(vec![p_slice.clone()], Some(0)).expect("ok").is_empty(),
            "no IDR yet"
        );
        let ev = n.push(vec![aud.clone(), idr.clone()], Some(3000)).expect("ok");
        let [SourceEvent::Params(p), SourceEvent::Frame(f)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!((p.width, p.height), (640, 360));
        assert!(f.keyframe);
        let nals: Vec<&[u8]> = crate::media::h264::avcc_nals(&f.data)
            .map(|n| n.expect("avcc"))
            .collect();
        assert_eq!(
            nals,
            vec![&sps[..], &pps[..], &idr[..]],
            "SPS, PPS from the SDP, then the IDR; no AUD"
        );
        let ev = n.push(vec![p_slice.clone()], Some(6000)).expect("ok");
        let [SourceEvent::Frame(f2)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert!(!f2.keyframe);
        assert_eq!(f2.pts_90k - f.pts_90k, 3000);
        assert_eq!(n.skipped_before_idr, 1);
        // The same parameter sets in-band at the next IDR: no new Params.
        let ev = n
            .push(vec![sps.clone(), pps.clone(), idr.clone()], Some(9000))
            .expect("ok");
        assert!(matches!(&ev[..], [SourceEvent::Frame(_)]), "{ev:?}");
    }

    #[test]
    fn normalizer_never_panics_on_garbage() {
        let mut n = LiveNormalizer::new(3, None);
        for seed in 0u8..=255 {
            let junk: Vec<Bytes> = (0..4)
                .map(|k| Bytes::from(vec![seed.wrapping_mul(k + 1) | 0x05, seed, k, 0xff]))
                .collect();
            let _ = n.push(junk, Some(i64::from(seed) * 1000));
        }
        n.seed_from_extradata(&[1, 2, 3]);
        n.seed_from_extradata(&[]);
    }
}
