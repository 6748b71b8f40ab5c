//! Tests of the file sources against the committed fixtures (fixtures/README.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::media::h264::{avcc_nals, nal_type, split_annexb, NalType};

const GOP2S: &str = "cam-640x360-30fps-gop2s.h264";
const GOP1S_720P: &str = "cam-1280x720-30fps-gop1s.h264";
const GOP10S: &str = "cam-640x360-30fps-gop10s.h264";
const GOP2S_MP4: &str = "cam-640x360-30fps-gop2s.mp4";
const BFRAMES_MP4: &str = "cam-640x360-bframes.mp4";

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures")).join(name)
}

fn load(name: &str) -> Clip {
    load_clip(fixture(name), &SourceOptions::default()).unwrap_or_else(|e| panic!("fixture {name} loads: {e}"))
}

fn nals(au: &AccessUnit) -> Vec<&[u8]> {
    avcc_nals(&au.data)
        .collect::<Result<_, _>>()
        .expect("source output is valid AVCC")
}

fn types(au: &AccessUnit) -> Vec<u8> {
    nals(au)
        .iter()
        .map(|n| nal_type(n).expect("valid NAL header").0)
        .collect()
}

fn keyframe_indices(clip: &Clip) -> Vec<usize> {
    (0..clip.frames.len()).filter(|&i| clip.frames[i].keyframe).collect()
}

/// Every keyframe starts with SPS then PPS and holds an IDR; no other frame has an IDR.
fn assert_keyframes_self_contained(clip: &Clip) {
    for (i, f) in clip.frames.iter().enumerate() {
        let t = types(f);
        if f.keyframe {
            assert_eq!(&t[..2], &[7, 8], "keyframe {i} starts with SPS, PPS: {t:?}");
            assert!(t.contains(&5), "keyframe {i} has an IDR slice: {t:?}");
        } else {
            assert!(!t.contains(&5), "frame {i} is not a keyframe but has IDR: {t:?}");
            assert!(t.contains(&1), "frame {i} has a slice: {t:?}");
        }
    }
    assert!(clip.frames[0].keyframe, "a clip starts on a keyframe");
}

fn write_temp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    (dir, path)
}

fn load_err(path: &Path) -> SourceError {
    match load_clip(path, &SourceOptions::default()) {
        Ok(clip) => panic!("{} should not load, got {} frames", path.display(), clip.frames.len()),
        Err(e) => e,
    }
}

#[test]
fn annexb_fixtures_have_the_documented_shape() {
    // (file, width, height, level, frames, GOP)
    let table = [
        (GOP2S, 640, 360, 30, 180, 60),
        (GOP1S_720P, 1280, 720, 31, 120, 30),
        (GOP10S, 640, 360, 30, 600, 300),
    ];
    for (name, width, height, level, frames, gop) in table {
        let clip = load(name);
        let p = &clip.params;
        assert_eq!((p.width, p.height), (width, height), "{name}");
        assert_eq!(p.profile_idc, 77, "{name}: main profile");
        assert_eq!(p.level_idc, level, "{name}");
        assert_eq!((p.fps_num, p.fps_den), (30, 1), "{name}: fps from the SPS VUI");
        assert_eq!(nal_type(&p.sps), Some(NalType::SPS));
        assert_eq!(nal_type(&p.pps), Some(NalType::PPS));
        assert_eq!(clip.frame_duration_90k, 3000);
        assert_eq!(clip.frames.len(), frames, "{name}");
        assert_eq!(
            keyframe_indices(&clip),
            (0..frames).step_by(gop).collect::<Vec<_>>(),
            "{name}: keyframe every {gop} frames"
        );
        assert_keyframes_self_contained(&clip);
        for (n, f) in clip.frames.iter().enumerate() {
            assert_eq!((f.pts_90k, f.dts_90k), (n as u64 * 3000, n as u64 * 3000));
        }
        assert_eq!(nals(&clip.frames[0])[0], &p.sps[..]);
        assert_eq!(nals(&clip.frames[0])[1], &p.pps[..]);
        assert_eq!(clip.loop_period_90k(), frames as u64 * 3000);
    }
}

#[test]
fn mp4_gives_the_same_access_units_as_annexb() {
    let annexb = load(GOP2S);
    let mp4 = load(GOP2S_MP4);
    assert_eq!(mp4.params, annexb.params);
    assert_eq!(mp4.frame_duration_90k, annexb.frame_duration_90k);
    assert_eq!(mp4.frames.len(), annexb.frames.len());
    for (i, (a, m)) in annexb.frames.iter().zip(&mp4.frames).enumerate() {
        assert_eq!(nals(a), nals(m), "access unit {i}");
        assert_eq!(a, m, "access unit {i}: bytes, timestamps and keyframe flag");
    }
}

#[test]
fn bframes_mp4_keeps_pts_and_dts_apart() {
    let clip = load(BFRAMES_MP4);
    assert_eq!((clip.params.width, clip.params.height), (640, 360));
    assert_eq!((clip.params.fps_num, clip.params.fps_den), (30, 1));
    assert_eq!(clip.frames.len(), 120);
    assert_eq!(keyframe_indices(&clip), vec![0, 60]);
    // SPS/PPS live only in avcC in this file: the source put them in front of each IDR.
    assert_keyframes_self_contained(&clip);

    let dts: Vec<u64> = clip.frames.iter().map(|f| f.dts_90k).collect();
    assert!(dts.windows(2).all(|w| w[0] < w[1]), "dts strictly increases");
    assert!(
        clip.frames.iter().any(|f| f.pts_90k != f.dts_90k),
        "B-frames reorder: pts and dts differ"
    );
    assert!(clip.frames.iter().all(|f| f.pts_90k >= f.dts_90k));
    let mut pts: Vec<u64> = clip.frames.iter().map(|f| f.pts_90k).collect();
    assert_ne!(pts, dts, "presentation order differs from decode order");
    pts.sort_unstable();
    let first = pts[0];
    let expected: Vec<u64> = (0..120).map(|n| first + n * 3000).collect();
    assert_eq!(pts, expected, "one picture every 1/30 s in presentation order");
    assert_eq!(dts[0], 0, "timestamps are shifted to start at 0");
    // Next loop starts after both the dts and the pts ranges.
    assert_eq!(clip.loop_period_90k(), 120 * 3000);
}

#[test]
fn missing_file_is_a_clear_error() {
    let e = load_err(Path::new("/nonexistent/camesh/clip.h264"));
    assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
    assert_eq!(e.to_string(), "/nonexistent/camesh/clip.h264: file not found");
    let e = load_err(Path::new("/nonexistent/camesh/clip.mp4"));
    assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
}

#[test]
fn directory_is_not_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = load_err(dir.path());
    assert!(matches!(e, SourceError::NotAFile { .. }), "{e:?}");
}

#[test]
fn zero_length_file_is_a_clear_error() {
    for name in ["empty.h264", "empty.mp4"] {
        let (_dir, path) = write_temp(name, &[]);
        let e = load_err(&path);
        assert!(matches!(e, SourceError::Empty { .. }), "{name}: {e:?}");
        assert!(e.to_string().ends_with(&format!("{name}: file is empty")), "{e}");
    }
}

#[test]
fn garbage_is_a_clear_error() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8 | 0x10).collect();
    let (_dir, path) = write_temp("garbage.h264", &garbage);
    let e = load_err(&path);
    assert!(matches!(e, SourceError::NotAnnexB { .. }), "{e:?}");
    assert!(e.to_string().contains("not an H.264 Annex B stream"), "{e}");

    // A stray start code in garbage: still not video.
    let mut stray = garbage.clone();
    stray.splice(100..100, [0, 0, 1, 0x21, 0x55]);
    let (_dir2, path) = write_temp("stray.h264", &stray);
    let e = load_err(&path);
    assert!(matches!(e, SourceError::NoParameterSets { .. }), "{e:?}");

    let (_dir3, path) = write_temp("garbage.mp4", &garbage);
    let e = load_err(&path);
    assert!(matches!(e, SourceError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage.mp4"), "the error names the file: {e}");
}

#[test]
fn truncated_to_100_bytes_is_a_clear_error() {
    let bytes = std::fs::read(fixture(GOP2S)).expect("fixture");
    let (_dir, path) = write_temp("cut.h264", &bytes[..100]);
    let e = load_err(&path);
    assert!(matches!(e, SourceError::NoKeyframe { .. }), "{e:?}");
    assert!(e.to_string().contains("no IDR frame"), "{e}");

    let bytes = std::fs::read(fixture(GOP2S_MP4)).expect("fixture");
    let (_dir, path) = write_temp("cut.mp4", &bytes[..100]);
    let e = load_err(&path);
    assert!(
        matches!(e, SourceError::Open { .. } | SourceError::NoVideoStream { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cut.mp4"), "{e}");
}

#[test]
fn truncated_file_with_a_complete_idr_plays() {
    let bytes = std::fs::read(fixture(GOP2S)).expect("fixture");
    let (_dir, path) = write_temp("half.h264", &bytes[..bytes.len() / 2]);
    let clip = load_clip(&path, &SourceOptions::default()).expect("half a file still plays");
    assert!(clip.frames.len() > 60 && clip.frames.len() < 180);
    assert_eq!(&keyframe_indices(&clip)[..2], &[0, 60]);
    assert_keyframes_self_contained(&clip);
}

#[test]
fn truncated_mp4_with_a_complete_idr_plays() {
    let bytes = std::fs::read(fixture(GOP2S_MP4)).expect("fixture");
    let (_dir, path) = write_temp("half.mp4", &bytes[..bytes.len() / 2]);
    let clip = load_clip(&path, &SourceOptions::default()).expect("half a file still plays");
    assert!(
        clip.frames.len() > 60 && clip.frames.len() < 180,
        "{} frames",
        clip.frames.len()
    );
    assert_eq!(&keyframe_indices(&clip)[..2], &[0, 60]);
    assert_keyframes_self_contained(&clip);
}

/// The fixture's NAL units, for building variants of it.
fn fixture_nals(name: &str) -> Vec<Bytes> {
    let data = Bytes::from(std::fs::read(fixture(name)).expect("fixture"));
    split_annexb(&data).map(|n| data.slice_ref(n)).collect()
}

fn annexb(nals: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

#[test]
fn stream_without_sps_pps_is_a_clear_error() {
    let nals: Vec<Bytes> = fixture_nals(GOP2S)
        .into_iter()
        .filter(|n| !matches!(nal_type(n), Some(NalType::SPS | NalType::PPS)))
        .collect();
    let (_dir, path) = write_temp("nosps.h264", &annexb(&nals));
    let e = load_err(&path);
    assert!(matches!(e, SourceError::NoParameterSets { .. }), "{e:?}");
    assert!(e.to_string().contains("no SPS/PPS"), "{e}");
}

#[test]
fn unparsable_sps_is_a_clear_error() {
    let nals: Vec<Bytes> = fixture_nals(GOP2S)
        .into_iter()
        .map(|n| {
            if nal_type(&n) == Some(NalType::SPS) {
                Bytes::from_static(&[0x67, 0x4d, 0x40])
            } else {
                n
            }
        })
        .collect();
    let (_dir, path) = write_temp("badsps.h264", &annexb(&nals));
    let e = load_err(&path);
    assert!(matches!(e, SourceError::BadSps { .. }), "{e:?}");
    assert!(e.to_string().contains("SPS cannot be parsed"), "{e}");
}

#[test]
fn missing_in_band_headers_are_inserted_and_auds_dropped() {
    // Keep SPS/PPS only in front of the first IDR, put an AUD before every picture, and
    // start with two stray P slices that cannot be decoded.
    let all = fixture_nals(GOP2S);
    let stray_p = all
        .iter()
        .find(|n| nal_type(n) == Some(NalType::SLICE))
        .expect("fixture has P slices")
        .clone();
    let mut nals = vec![stray_p.clone(), stray_p];
    let mut headers_seen = 0;
    for n in all {
        let ty = nal_type(&n);
        if matches!(ty, Some(NalType::SPS | NalType::PPS)) {
            headers_seen += 1;
            if headers_seen > 2 {
                continue;
            }
        }
        if matches!(ty, Some(NalType::SLICE | NalType::IDR)) {
            nals.push(Bytes::from_static(&[0x09, 0xf0]));
        }
        nals.push(n);
    }
    let (_dir, path) = write_temp("noheaders.h264", &annexb(&nals));
    let clip = load_clip(&path, &SourceOptions::default()).expect("loads");
    let reference = load(GOP2S);
    assert_eq!(clip.frames.len(), 180, "the stray P slices before the IDR are dropped");
    assert_keyframes_self_contained(&clip);
    for (i, (a, b)) in clip.frames.iter().zip(&reference.frames).enumerate() {
        assert!(!types(a).contains(&9), "frame {i}: AUDs are dropped");
        // The first IDR is SPS, PPS, SEI, AUD, IDR in the input and later ones AUD, IDR:
        // with AUDs dropped and headers re-inserted, every access unit matches the original.
        assert_eq!(a, b, "frame {i}");
    }
}

#[test]
fn files_over_the_limit_are_refused_without_reading() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["huge.h264", "huge.mp4"] {
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
        let e = load_err(&path);
        assert!(matches!(e, SourceError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
}

#[test]
fn options_are_validated_and_default_fps_is_used_without_timing() {
    let e = load_clip(
        fixture(GOP2S),
        &SourceOptions {
            looping: true,
            default_fps: 0,
        },
    )
    .expect_err("fps 0 is refused");
    assert!(matches!(e, SourceError::InvalidOptions(_)), "{e:?}");
    assert_eq!(SourceOptions::default().default_fps, 30);
    assert!(SourceOptions::default().looping);
}

/// Runs the ffmpeg CLI for a test input; `None` (test skipped) if it is not installed.
fn ffmpeg(dir: &Path, out: &str, args: &[&str]) -> Option<PathBuf> {
    let path = dir.join(out);
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&path)
        .status();
    match status {
        Ok(s) if s.success() => Some(path),
        Ok(s) => panic!("ffmpeg failed making {out}: {s}"),
        Err(e) => {
            eprintln!("skipping: ffmpeg CLI not available ({e})");
            None
        }
    }
}

#[test]
fn other_codecs_and_containers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lavfi_video = ["-f", "lavfi", "-i", "testsrc2=size=128x72:rate=10:duration=0.5"];

    let Some(hevc) = ffmpeg(
        dir.path(),
        "hevc.mp4",
        &[
            &lavfi_video[..],
            &["-c:v", "libx265", "-x265-params", "log-level=error"][..],
        ]
        .concat(),
    ) else {
        return;
    };
    let e = load_err(&hevc);
    assert!(matches!(e, SourceError::NotH264 { .. }), "{e:?}");
    assert!(e.to_string().contains("hevc"), "names the codec: {e}");

    let audio = ffmpeg(
        dir.path(),
        "audio.m4a",
        &["-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac"],
    )
    .expect("ffmpeg ran once already");
    let e = load_err(&audio);
    assert!(matches!(e, SourceError::NoVideoStream { .. }), "{e:?}");
    assert!(e.to_string().contains("aac"), "names what is there: {e}");

    // MPEG-TS carries Annex B packets and no avcC.
    let ts = ffmpeg(
        dir.path(),
        "clip.ts",
        &["-i", &fixture(GOP2S_MP4).to_string_lossy(), "-c", "copy"],
    )
    .expect("ffmpeg ran once already");
    let clip = load_clip(&ts, &SourceOptions::default()).expect("MPEG-TS loads");
    let reference = load(GOP2S);
    assert_eq!(clip.frames.len(), reference.frames.len());
    assert_eq!(keyframe_indices(&clip), keyframe_indices(&reference));
    assert_keyframes_self_contained(&clip);
    for (i, (a, b)) in clip.frames.iter().zip(&reference.frames).enumerate() {
        assert_eq!(a.data, b.data, "frame {i}");
        assert_eq!(a.dts_90k, b.dts_90k, "frame {i}");
    }
}

// The paced tests run on the real clock: `#[tokio::test(start_paused = true)]` needs
// tokio's `test-util` feature, which node's dev-dependencies do not enable. To stay
// fast they play the fixtures sped up (2 ms per frame) and only assert what real time
// guarantees (a frame is never sent before its time; a stall does not cause a burst).

/// Receives the next event, failing the test instead of hanging.
async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an event within 60 s")
        .expect("source still running")
}

async fn next_frame(rx: &mut mpsc::Receiver<SourceEvent>) -> AccessUnit {
    match next(rx).await {
        SourceEvent::Frame(f) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// 2 ms per frame in 90 kHz ticks.
const FAST_TICKS: u64 = 180;

/// The clip played `3000 / FAST_TICKS` times faster.
fn fast(mut clip: Clip) -> Clip {
    for f in &mut clip.frames {
        f.pts_90k = f.pts_90k * FAST_TICKS / clip.frame_duration_90k;
        f.dts_90k = f.dts_90k * FAST_TICKS / clip.frame_duration_90k;
    }
    clip.frame_duration_90k = FAST_TICKS;
    clip
}

fn ticks(d: u64) -> Duration {
    Duration::from_micros(d * 1_000_000 / 90_000)
}

/// The runner starts its clock after `before`, and never sends a frame ahead of its dts:
/// the one timing property real time guarantees on a busy machine.
fn assert_not_early(before: Instant, f: &AccessUnit) {
    let due = ticks(f.dts_90k);
    assert!(
        before.elapsed() >= due,
        "frame with dts {} arrived after {:?}, before it was due at {due:?}",
        f.dts_90k,
        before.elapsed()
    );
}

#[tokio::test]
async fn file_source_emits_params_then_frames() {
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let source = FileSource::new(fixture(GOP2S_MP4), SourceOptions::default());
    let before = Instant::now();
    let task = tokio::spawn(source.run(tx, cancel.clone()));
    match next(&mut rx).await {
        SourceEvent::Params(p) => assert_eq!((p.width, p.height), (640, 360)),
        other => panic!("expected Params first, got {other:?}"),
    }
    let first = next_frame(&mut rx).await;
    assert!(first.keyframe && first.dts_90k == 0);
    for n in 1..4u64 {
        let f = next_frame(&mut rx).await;
        assert_eq!(f.dts_90k, n * 3000);
        assert_not_early(before, &f);
    }
    cancel.cancel();
    task.await.expect("runner task ends when cancelled");
}

#[tokio::test]
async fn paced_runner_loops_with_continuous_timestamps() {
    let clip = fast(load(GOP1S_720P));
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let before = Instant::now();
    let task = tokio::spawn(play_clip(clip, true, tx, cancel.clone()));
    match next(&mut rx).await {
        SourceEvent::Params(p) => assert_eq!((p.width, p.height), (1280, 720)),
        other => panic!("expected Params first, got {other:?}"),
    }
    let mut frames = Vec::new();
    for _ in 0..(120 + 45) {
        let f = next_frame(&mut rx).await;
        assert_not_early(before, &f);
        frames.push(f);
    }
    for (i, w) in frames.windows(2).enumerate() {
        assert_eq!(w[1].dts_90k, w[0].dts_90k + FAST_TICKS, "frame {i}, across the loop");
        assert_eq!(w[1].pts_90k, w[0].pts_90k + FAST_TICKS, "frame {i}");
    }
    assert!(frames[120].keyframe, "the second loop starts on a keyframe");
    assert_eq!(frames[120].data, frames[0].data);
    cancel.cancel();
    task.await.expect("runner task ends when cancelled");
}

#[tokio::test]
async fn paced_runner_ends_a_non_looping_clip() {
    let clip = fast(load(GOP1S_720P));
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(play_clip(clip, false, tx, CancellationToken::new()));
    assert!(matches!(next(&mut rx).await, SourceEvent::Params(_)));
    for _ in 0..120 {
        next_frame(&mut rx).await;
    }
    match next(&mut rx).await {
        SourceEvent::Ended { reason } => assert!(reason.contains("end of the file")),
        other => panic!("expected Ended, got {other:?}"),
    }
    task.await.expect("runner returns");
    assert!(rx.recv().await.is_none(), "nothing after Ended");
}

#[tokio::test]
async fn slow_receiver_gets_paced_frames_not_a_burst() {
    let clip = fast(load(GOP2S));
    let (tx, mut rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(play_clip(clip, true, tx, cancel.clone()));
    assert!(matches!(next(&mut rx).await, SourceEvent::Params(_)));
    let mut last = next_frame(&mut rx).await;
    for _ in 0..4 {
        last = next_frame(&mut rx).await;
    }
    // Stall past MAX_LAG: the source blocks on the full channel, then re-anchors.
    tokio::time::sleep(MAX_LAG + Duration::from_millis(200)).await;
    let resumed = Instant::now();
    for _ in 0..22 {
        let f = next_frame(&mut rx).await;
        assert_eq!(f.dts_90k, last.dts_90k + FAST_TICKS, "no frame skipped or repeated");
        last = f;
    }
    // One frame waited in the channel and one was late; the other 20 come paced.
    assert!(
        resumed.elapsed() >= ticks(19 * FAST_TICKS),
        "paced after a stall, took {:?}",
        resumed.elapsed()
    );
    cancel.cancel();
    task.await.expect("runner task ends when cancelled");
}

#[tokio::test]
async fn runner_reports_a_file_it_cannot_load() {
    let (tx, mut rx) = mpsc::channel(4);
    let source = FileSource::new("/nonexistent/camesh/cam.h264", SourceOptions::default());
    source.run(tx, CancellationToken::new()).await;
    match next(&mut rx).await {
        SourceEvent::Failed { error } => {
            assert_eq!(error, "/nonexistent/camesh/cam.h264: file not found")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn runner_stops_when_the_receiver_goes_away() {
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(play_clip(fast(load(GOP2S)), true, tx, CancellationToken::new()));
    assert!(matches!(next(&mut rx).await, SourceEvent::Params(_)));
    next_frame(&mut rx).await;
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("runner returns once nobody listens")
        .expect("runner task did not panic");
}

/// A file with AAC beside its H.264: the clip carries the audio (its parameters and every
/// frame within the loop, on the pictures' timeline) and the paced runner sends it
/// beside the pictures, in time order, after `AudioParams`.
#[tokio::test]
async fn a_files_audio_is_loaded_and_played_beside_its_pictures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(path) = ffmpeg(
        dir.path(),
        "av.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=128x72:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:r=48000:duration=2",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-c:a",
            "aac",
            "-shortest",
        ],
    ) else {
        return;
    };
    let clip = load_clip(&path, &SourceOptions::default()).expect("loads");
    let audio = clip.audio.clone().expect("the clip has audio");
    assert_eq!(audio.params.codec, crate::media::AudioCodec::Aac);
    assert_eq!(audio.params.sample_rate, 48_000);
    assert!(!audio.params.extradata.is_empty(), "the AudioSpecificConfig");
    // 2 s of 1024-sample frames at 48 kHz: 93.75.
    assert!(
        (88..=96).contains(&audio.units.len()),
        "{} AAC frames",
        audio.units.len()
    );
    let period = clip.loop_period_90k();
    let start = clip.frames.iter().map(|f| f.pts_90k).min().unwrap_or(0);
    assert!(audio
        .units
        .iter()
        .all(|u| u.pts_90k >= start && u.pts_90k < start + period));
    assert!(audio.units.windows(2).all(|w| w[0].pts_90k < w[1].pts_90k));

    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(play_clip(clip.clone(), false, tx, cancel.clone()));
    assert!(matches!(next(&mut rx).await, SourceEvent::Params(_)));
    assert!(matches!(next(&mut rx).await, SourceEvent::AudioParams(ref a) if *a == audio.params));
    let (mut frames, mut sound, mut last) = (0, 0, 0u64);
    loop {
        let t = match next(&mut rx).await {
            SourceEvent::Frame(f) => {
                frames += 1;
                f.dts_90k
            }
            SourceEvent::Audio(u) => {
                sound += 1;
                u.pts_90k
            }
            SourceEvent::Ended { .. } => break,
            other => panic!("unexpected {other:?}"),
        };
        assert!(
            t + 9000 >= last,
            "in time order (within a frame's reordering): {t} after {last}"
        );
        last = last.max(t);
    }
    assert_eq!((frames, sound), (clip.frames.len(), audio.units.len()));
    cancel.cancel();
    let _ = task.await;

    // Looping, ten times faster: every pass sends all its audio, and the sound goes on
    // increasing across passes (a pass's last audio goes out beside the next pass's first
    // pictures).
    let mut quick = clip.clone();
    for f in &mut quick.frames {
        f.pts_90k /= 10;
        f.dts_90k /= 10;
    }
    quick.frame_duration_90k /= 10;
    if let Some(a) = quick.audio.as_mut() {
        for u in &mut a.units {
            u.pts_90k /= 10;
        }
    }
    let period = quick.loop_period_90k();
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(play_clip(quick, true, tx, cancel.clone()));
    let mut pts = Vec::new();
    while pts.len() < 3 * audio.units.len() {
        if let SourceEvent::Audio(u) = next(&mut rx).await {
            pts.push(u.pts_90k);
        }
    }
    cancel.cancel();
    let _ = task.await;
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "increasing across passes");
    let second = pts
        .iter()
        .filter(|&&t| t >= pts[0] + period && t < pts[0] + 2 * period)
        .count();
    assert_eq!(second, audio.units.len(), "the second pass has all its audio");
}
