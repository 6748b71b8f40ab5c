//! Snapshots: `GET /cam/<id>/snapshot.jpg`, and the keyframe decoded with ffmpeg
//! (`ffmpeg-next`) and encoded as JPEG: blocking, so the handler runs it off the async
//! runtime. Bounded: one access unit in, one picture out, two decodes at a time.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{tap_error, tap_for, text, ProfileQuery, Shared};
use crate::media::h264::{avcc_nals, nal_type, NalType};
use crate::media::CodecParams;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("ffmpeg could not be initialised: {0}")]
    Init(String),
    #[error("ffmpeg has no {0}")]
    NoCodec(&'static str),
    #[error("decoding the keyframe failed: {0}")]
    Decode(ffmpeg_next::Error),
    #[error("the keyframe decoded to no picture")]
    NoPicture,
    #[error("scaling the picture failed: {0}")]
    Scale(ffmpeg_next::Error),
    #[error("encoding the JPEG failed: {0}")]
    Encode(ffmpeg_next::Error),
}

/// Decodes `keyframe` (AVCC; SPS/PPS from `params` are put in front) to a JPEG of the
/// picture's full size.
pub fn keyframe_to_jpeg(params: &CodecParams, keyframe: &[u8]) -> Result<Bytes, SnapshotError> {
    use ffmpeg_next::codec::{self, Id};
    use ffmpeg_next::format::Pixel;
    use ffmpeg_next::software::scaling;

    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    // libav's messages (swscale's notes on JPEG's full-range formats) go to `tracing`
    // at debug level (media::avlog).
    INIT.get_or_init(crate::media::init_ffmpeg)
        .clone()
        .map_err(SnapshotError::Init)?;
    // Annex B: parameter sets, then the picture's NAL units.
    let mut annexb = Vec::with_capacity(keyframe.len() + 256);
    let mut has_params = false;
    for nal in avcc_nals(keyframe).flatten() {
        has_params |= matches!(nal_type(nal), Some(NalType::SPS));
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(nal);
    }
    if !has_params {
        let mut front = Vec::with_capacity(annexb.len() + params.sps.len() + params.pps.len() + 8);
        for p in [&params.sps, &params.pps] {
            front.extend_from_slice(&[0, 0, 0, 1]);
            front.extend_from_slice(p);
        }
        front.extend_from_slice(&annexb);
        annexb = front;
    }

    let h264 = codec::decoder::find(Id::H264).ok_or(SnapshotError::NoCodec("H.264 decoder"))?;
    let mut decoder = codec::Context::new_with_codec(h264)
        .decoder()
        .video()
        .map_err(SnapshotError::Decode)?;
    decoder
        .send_packet(&ffmpeg_next::Packet::copy(&annexb))
        .map_err(SnapshotError::Decode)?;
    decoder.send_eof().map_err(SnapshotError::Decode)?;
    let mut picture = ffmpeg_next::frame::Video::empty();
    let got = decoder.receive_frame(&mut picture).is_ok();
    if !got || picture.width() == 0 || picture.height() == 0 {
        return Err(SnapshotError::NoPicture);
    }
    let (w, h) = (picture.width(), picture.height());

    let mut scaler = scaling::Context::get(picture.format(), w, h, Pixel::YUVJ420P, w, h, scaling::Flags::BILINEAR)
        .map_err(SnapshotError::Scale)?;
    let mut yuv = ffmpeg_next::frame::Video::empty();
    scaler.run(&picture, &mut yuv).map_err(SnapshotError::Scale)?;
    yuv.set_pts(Some(0));

    let mjpeg = codec::encoder::find(Id::MJPEG).ok_or(SnapshotError::NoCodec("JPEG encoder"))?;
    let mut enc = codec::Context::new_with_codec(mjpeg)
        .encoder()
        .video()
        .map_err(SnapshotError::Encode)?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base((1, 25));
    enc.set_qmin(2);
    enc.set_qmax(4);
    let mut enc = enc.open_as(mjpeg).map_err(SnapshotError::Encode)?;
    enc.send_frame(&yuv).map_err(SnapshotError::Encode)?;
    enc.send_eof().map_err(SnapshotError::Encode)?;
    let mut packet = ffmpeg_next::Packet::empty();
    enc.receive_packet(&mut packet).map_err(SnapshotError::Encode)?;
    let data = packet.data().ok_or(SnapshotError::NoPicture)?;
    Ok(Bytes::copy_from_slice(data))
}

/// `GET /cam/<id>/snapshot.jpg[?profile=sub]`: the tap's latest keyframe as JPEG, made
/// once per keyframe, with at most two decodes at a time.
pub(super) async fn snapshot_jpg(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Response {
    let tap = match tap_for(&s, &id, &q).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (params, key) = match tap.keyframe(s.opts.start_timeout).await {
        Ok(k) => k,
        Err(e) => return tap_error(e),
    };
    let jpeg = match tap.cached_snapshot(key.sequence) {
        Some(j) => j,
        None => {
            let Ok(_permit) = s.snapshots.acquire().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            };
            let data = key.data.clone();
            let p = params.clone();
            match tokio::task::spawn_blocking(move || keyframe_to_jpeg(&p, &data)).await {
                Ok(Ok(j)) => {
                    tap.store_snapshot(key.sequence, j.clone());
                    j
                }
                Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, format!("camera {id}: {e}")),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot task failed: {e}")),
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response()
}
