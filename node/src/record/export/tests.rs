//! Export tests: a chosen minute to MP4 checked with ffprobe, B-frames, decryption, the
//! signed manifest and tampering.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::identity::Keypair;

use super::*;
use crate::record::manifest::{verify, Manifest, VerifyError};
use crate::record::testutil::{run, xor, Feed, BFRAMES, GOP2S};
use crate::record::{Recorder, RecorderConfig};

const CAM: &str = "cam-1";

fn cfg() -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(20),
        fsync_interval: Duration::from_millis(50),
        retention_interval: Duration::from_secs(3600),
        ..RecorderConfig::default()
    }
}

fn record(rec: &Recorder, feed: &Feed, range: std::ops::Range<u64>) {
    for i in range {
        rec.write(CAM, &feed.frame(i)).expect("queued");
        if i % 500 == 499 {
            rec.flush().expect("flush");
        }
    }
    rec.flush().expect("flush");
}

/// ffprobe's view of the video stream: (frames decoded, duration s, codec, width, height).
fn probe(path: &Path) -> (u64, f64, String, u64, u64) {
    let (out, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,duration",
            "-of",
            "json",
            path.to_str().expect("utf-8 path"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("ffprobe json");
    let s = &v["streams"][0];
    let num = |k: &str| s[k].as_str().and_then(|x| x.parse::<f64>().ok()).unwrap_or(-1.0);
    (
        num("nb_read_frames") as u64,
        num("duration"),
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

/// Decodes the whole file; ffmpeg must report no error.
fn decodes_cleanly(path: &Path) {
    let (_, stderr) = run(
        "ffmpeg",
        &["-v", "error", "-i", path.to_str().expect("utf-8"), "-f", "null", "-"],
    );
    assert!(stderr.trim().is_empty(), "decode errors: {stderr}");
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let cam = dir.join(crate::record::SEGMENTS_DIR).join(CAM);
    let mut v: Vec<PathBuf> = std::fs::read_dir(cam)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn timeline_rebases_and_survives_a_source_restart() {
    let mut t = TimestampRebaser::default();
    assert_eq!(t.map(90_000, 90_000), (0, 0));
    assert_eq!(t.map(93_000, 93_000), (3000, 3000));
    // The source restarted at 0: continue one frame later.
    assert_eq!(t.map(0, 0), (6000, 6000));
    assert_eq!(t.map(3000, 3000), (9000, 9000));
    assert_eq!(t.last_delta(), 3000);
    // B-frames: pts ahead of dts is kept.
    let mut t = TimestampRebaser::default();
    assert_eq!(t.map(6000, 0), (6000, 0));
    assert_eq!(t.map(3000, 3000), (3000, 3000));
}

#[test]
fn export_a_chosen_minute_to_mp4_with_a_signed_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut feed = Feed::new(GOP2S);
    // Frames are stored as ciphertext; the key is recorded with them.
    let key = Bytes::from_static(b"a-32-byte-media-key-for-epoch-5!");
    feed.epoch = 5;
    feed.key = Some(key.clone());
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    rec.write_key(CAM, 5, key.clone()).expect("key");
    // 90 s of video.
    record(&rec, &feed, 0..2700);
    let stored = crate::record::recorder::tests::played_frames(rec.index(), CAM);
    assert_ne!(stored[1].payload, feed.plain(1), "stored encrypted");

    // The minute from 15 s to 75 s: starts at the keyframe at 14 s (frame 420) and ends
    // with the frame captured at 75 s (frame 2250).
    let out = dir.path().join("incident.mp4");
    let mut progress = Vec::new();
    let summary = export_mp4(
        rec.index(),
        CAM,
        feed.capture(450),
        feed.capture(2250),
        &mut std::fs::File::create(&out).expect("create"),
        |f, k| -> Result<Bytes, String> { Ok(xor(&f.payload, k.ok_or("no key")?)) },
        |p| progress.push(p.fraction()),
    )
    .expect("export");
    assert_eq!(summary.frames, 2250 - 420 + 1);
    assert_eq!(summary.keyframes, (2250 - 420) / 60 + 1);
    assert_eq!(summary.first_capture_us, feed.capture(420));
    assert_eq!(summary.last_capture_us, feed.capture(2250));
    assert_eq!(summary.duration_90k, 1831 * 3000);
    assert_eq!((summary.width, summary.height), (640, 360));
    assert!(summary.segments.len() >= 4, "{} segments", summary.segments.len());
    assert!(progress.len() > 10 && progress.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(progress.last(), Some(&1.0));
    assert_eq!(summary.bytes, std::fs::metadata(&out).expect("written").len());

    let (frames, duration, codec, w, h) = probe(&out);
    assert_eq!(frames, 1831);
    assert!((duration - 1831.0 / 30.0).abs() < 0.05, "duration {duration}");
    assert_eq!((codec.as_str(), w, h), ("h264", 640, 360));
    decodes_cleanly(&out);

    // The manifest: signed segment hashes, and the MP4's.
    let camera_key = Keypair::generate_ed25519();
    let manifest = Manifest::build(
        rec.index().segments_dir(),
        CAM,
        feed.capture(450),
        feed.capture(2250),
        &summary.segments,
        Some(crate::record::manifest::FileHash::of_file(&out).expect("hashed")),
        &camera_key,
    )
    .expect("manifest");
    let manifest = Manifest::from_json(manifest.to_json().as_bytes()).expect("roundtrip");
    let files = segment_files(dir.path());
    let report = verify(&manifest, &files, Some(&out), Some(&camera_key.public())).expect("verifies");
    assert_eq!(report.segments, summary.segments.len());
    assert!(report.export_checked);
    rec.close().expect("close");

    // One changed byte in a segment fails verification.
    let victim = dir
        .path()
        .join(crate::record::SEGMENTS_DIR)
        .join(&summary.segments[1].file);
    let mut bytes = std::fs::read(&victim).expect("read");
    let original = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("tamper");
    let err = verify(&manifest, &files, Some(&out), None).expect_err("tampered segment");
    assert!(
        matches!(err, VerifyError::SegmentMismatch { ref file, .. } if *file == summary.segments[1].file),
        "{err}"
    );
    std::fs::write(&victim, &original).expect("restore");
    verify(&manifest, &files, Some(&out), None).expect("restored");

    // So does a changed MP4, a missing segment, or an edited manifest.
    let mut mp4 = std::fs::read(&out).expect("read");
    let n = mp4.len() - 100;
    mp4[n] ^= 0x80;
    let tampered = dir.path().join("tampered.mp4");
    std::fs::write(&tampered, &mp4).expect("write");
    assert!(matches!(
        verify(&manifest, &files, Some(&tampered), None),
        Err(VerifyError::ExportMismatch { .. })
    ));
    assert!(matches!(
        verify(&manifest, &files[1..], None, None),
        Err(VerifyError::MissingSegment { .. })
    ));
    let mut edited = manifest.clone();
    edited.body.segments[0].sha256 = "00".repeat(32);
    assert!(matches!(
        verify(&edited, &files, None, None),
        Err(VerifyError::BadSignature)
    ));
}

#[test]
fn b_frames_keep_their_order_and_timing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(BFRAMES);
    assert!(
        feed.clip.frames.iter().any(|f| f.pts_90k != f.dts_90k),
        "fixture has B-frames"
    );
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..feed.len());
    let out = dir.path().join("b.mp4");
    let summary = export_mp4(
        rec.index(),
        CAM,
        i64::MIN,
        i64::MAX,
        &mut std::fs::File::create(&out).expect("create"),
        |f, _| -> Result<Bytes, String> { Ok(f.payload.clone()) },
        |_| {},
    )
    .expect("export");
    assert_eq!(summary.frames, feed.len());
    let (frames, duration, ..) = probe(&out);
    assert_eq!(frames, feed.len());
    assert!((duration - feed.len() as f64 / 30.0).abs() < 0.1, "duration {duration}");
    decodes_cleanly(&out);
}

#[test]
fn failures_stop_the_output_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    record(&rec, &feed, 0..90);
    let mut out = Vec::new();
    let err = export_mp4(
        rec.index(),
        CAM,
        i64::MIN,
        i64::MAX,
        &mut out,
        |f, _| -> Result<Bytes, String> {
            if f.sequence < 40 {
                Ok(f.payload.clone())
            } else {
                Err("authentication tag mismatch".into())
            }
        },
        |_| {},
    )
    .expect_err("decrypt fails");
    assert!(matches!(err, ExportError::Decrypt { sequence: 40, .. }), "{err}");
    // What was written stops before the frame that failed (39 frames, the last held for
    // its duration).
    assert!(!out.is_empty() && out.windows(4).filter(|w| w == b"moof").count() <= 39);
    let mut out = Vec::new();
    let err = export_mp4(
        rec.index(),
        CAM,
        feed.capture(1000),
        feed.capture(2000),
        &mut out,
        |f, _| -> Result<Bytes, String> { Ok(f.payload.clone()) },
        |_| {},
    )
    .expect_err("nothing there");
    assert!(matches!(err, ExportError::NothingRecorded { .. }), "{err}");
    assert!(out.is_empty());
}
