//! `GET /cam/<id>/live.mp4[?profile=sub]`: a camera live as fragmented MP4, for VLC,
//! ffplay, ffprobe and browsers.
//!
//! Each response joins the camera's tap: the init segment, then the cached GOP (so it
//! starts at once, on a keyframe), then fragments as frames arrive ([`fmp4::Muxer`]). A
//! client that falls behind the tap's broadcast skips to the next keyframe; new codec
//! parameters or a stopped tap end the response (players reconnect).
//!
//! The camera's audio is a second track: by default (`?audio=auto`) when browsers can
//! play it from MP4 (AAC, Opus); `?audio=on` adds G.711 too (VLC, ffmpeg), `off` none.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::broadcast;

use super::tap::{ClientGuard, Tap, TapError, TapFrame, TapMsg};
use super::{tap_error, tap_for, text, ProfileQuery, Shared};
use crate::media::fmp4::{self, Muxer, Push, Sample};

/// State of one live.mp4 response body.
struct LiveBody {
    tap: Arc<Tap>,
    _guard: ClientGuard,
    init: Option<Bytes>,
    backlog: VecDeque<Arc<TapFrame>>,
    rx: broadcast::Receiver<TapMsg>,
    mux: Muxer,
    generation: u64,
    need_key: bool,
    done: bool,
}

impl LiveBody {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(init) = self.init.take() {
                return Some(init);
            }
            if self.done {
                return None;
            }
            let frame = match self.backlog.pop_front() {
                Some(f) => f,
                None => {
                    let tap = self.tap.clone();
                    let msg = tokio::select! {
                        m = self.rx.recv() => m,
                        _ = tap.stopped() => Err(broadcast::error::RecvError::Closed),
                    };
                    match msg {
                        Ok(TapMsg::Frame(f)) => f,
                        Ok(TapMsg::NewParams(g)) => {
                            if g != self.generation {
                                // A new resolution or codec: this stream ends, players reconnect.
                                self.done = true;
                                if let Some(last) = self.mux.flush() {
                                    return Some(last);
                                }
                            }
                            continue;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.tap.counters.consumer_skips.fetch_add(1, Ordering::Relaxed);
                            self.need_key = true;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.done = true;
                            if let Some(last) = self.mux.flush() {
                                return Some(last);
                            }
                            continue;
                        }
                    }
                }
            };
            if crate::media::is_audio(frame.sequence) {
                if self.need_key {
                    continue;
                }
                if let Push::Fragment(b) = self.mux.push_audio(frame.data.clone(), frame.pts_90k) {
                    self.tap
                        .counters
                        .http_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return Some(b);
                }
                continue;
            }
            if self.need_key {
                if !frame.keyframe {
                    continue;
                }
                self.need_key = false;
            }
            let push = self.mux.push(Sample {
                data: frame.data.clone(),
                pts_90k: frame.pts_90k,
                dts_90k: frame.dts_90k,
                keyframe: frame.keyframe,
            });
            match push {
                Push::Nothing => {}
                Push::Fragment(b) => {
                    self.tap
                        .counters
                        .http_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return Some(b);
                }
                Push::Reinit { last } => {
                    self.done = true;
                    if let Some(l) = last {
                        return Some(l);
                    }
                }
            }
        }
    }
}

pub(super) async fn live_mp4(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Response {
    let tap = match tap_for(&s, &id, &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(guard) = tap.client_guard(s.opts.max_clients_per_camera) else {
        return tap_error(TapError::TooManyClients {
            camera: id,
            max: s.opts.max_clients_per_camera,
        });
    };
    let joined = match tap.join(s.opts.start_timeout).await {
        Ok(j) => j,
        Err(e) => return tap_error(e),
    };
    let audio = match q.audio.as_deref() {
        None | Some("auto") => joined.audio.filter(|a| fmp4::audio::codec_string(a).is_some()),
        Some("on") => joined.audio,
        Some("off") => None,
        Some(other) => {
            let other: String = other.chars().take(16).collect();
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown audio {other:?}: use auto, on or off"),
            );
        }
    };
    let mime = fmp4::mime_type_with(&joined.params, audio.as_ref());
    let mux = match Muxer::new(&joined.params) {
        Ok(m) => m.with_audio(audio),
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
    };
    let init = match mux.init_segment() {
        Ok(i) => i,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
    };
    let body = LiveBody {
        tap: tap.clone(),
        _guard: guard,
        init: Some(init),
        backlog: joined.gop.into_iter().collect(),
        rx: joined.rx,
        mux,
        generation: joined.generation,
        need_key: false,
        done: false,
    };
    let stream = futures::stream::unfold(body, |mut b| async move {
        let chunk = b.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), b))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("video/mp4")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}
