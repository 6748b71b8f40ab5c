//! Getting video out: `mesh export` writes a standard MP4 with a signed manifest that
//! `mesh verify` checks (and a tampered or re-signed export fails), and `mesh play` from
//! the middle of a GOP starts on the keyframe before it.

use std::path::PathBuf;

use camesh_node::record::manifest::Manifest;
use camesh_node::record::segment::{encode_record, scan_segment, Record, SegmentReader};
use camesh_tests::cli::run_mesh;
use camesh_tests::*;

use super::{ffprobe_frames, mesh_range, play_all, recorded, t_before, Played, CAM};

/// `mesh verify` is strict unless told otherwise: no fleet root, missing camera
/// signatures, or an NVR this data directory knows is revoked each fail with the reason;
/// the `--allow-*` flags accept the first two with a warning.
async fn strict_verify(manifest: &std::path::Path, fleet_name: &str, nvr: camesh_node::PeerId) {
    let m = manifest.to_str().expect("utf-8");
    let verify = |data: PathBuf, with_root: bool, extra: Vec<&'static str>| {
        let mut cmd = if with_root {
            camesh_tests::cli::mesh_command(&data, fleet_name, &[])
        } else {
            let mut c = std::process::Command::new(bin("mesh"));
            c.env_remove("CAMESH_FLEET")
                .env_remove("CAMESH_FLEET_ROOT")
                .arg("--data-dir")
                .arg(&data);
            c
        };
        cmd.args(["verify", m]).args(extra);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
                .await
                .expect("join");
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ok, err) = verify(tmp.path().join("bare"), false, vec![]).await;
    assert!(!ok && err.contains("no fleet root"), "without a fleet root: {err}");
    let (ok, err) = verify(tmp.path().join("bare"), false, vec!["--allow-unknown-signer"]).await;
    assert!(
        ok && err.contains("NOT checked"),
        "accepted when asked, with a warning: {err}"
    );

    let attest = manifest.with_file_name("incident.attest");
    let aside = manifest.with_file_name("incident.attest.aside");
    std::fs::rename(&attest, &aside).expect("attest moved");
    let (ok, err) = verify(tmp.path().join("a"), true, vec![]).await;
    assert!(!ok && err.contains("no camera signatures"), "without .attest: {err}");
    let (ok, err) = verify(tmp.path().join("a"), true, vec!["--allow-unattested"]).await;
    assert!(
        ok && err.contains("NVR's word alone"),
        "accepted when asked, with a warning: {err}"
    );
    std::fs::rename(&aside, &attest).expect("attest back");

    // An auditor whose fleet-state log holds the NVR's revocation.
    let auditor = tmp.path().join("auditor");
    std::fs::create_dir_all(&auditor).expect("dir");
    let t = camesh_node::auth::Trust::load(
        &auditor,
        fleet_name,
        fleet(fleet_name).key.public(),
        camesh_node::PeerId::random(),
    );
    t.apply_entry(&fleet(fleet_name).revoke(&[nvr], &[], "stolen NVR"))
        .expect("stored");
    drop(t);
    let (ok, err) = verify(auditor, true, vec![]).await;
    assert!(!ok && err.contains("has been revoked"), "a revoked NVR's export: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_a_standard_mp4_and_a_tampered_segment_fails_verify() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-export";
    let (dir, cam, nvr_dir, nvr, v, first) = recorded(FLEET).await;
    // A chosen range (scaled down from a minute): 3.5 s starting mid-recording.
    let (from, to) = (first + 2_500_000, first + 6_000_000);
    let frames = play_all(&v, nvr.peer, t_before(from), to).await;
    let kf = frames
        .iter()
        .filter(|f| f.keyframe && f.capture <= from)
        .map(|f| f.capture)
        .max()
        .expect("a keyframe before the range");
    let expected = frames.iter().filter(|f| f.capture >= kf && f.capture <= to).count();
    assert!(expected >= 90, "{expected} frames in the range");

    let mesh_dir = dir.path().join("mesh");
    let mp4 = dir.path().join("incident.mp4");
    let exported = mesh_range(&mesh_dir, FLEET, &nvr.addr, "export", (from, to), &mp4).await;
    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(exported.status.success(), "mesh export: {stderr}");
    assert!(stderr.contains("exporting:"), "progress is shown: {stderr}");
    let json = ffprobe_frames(
        &mp4,
        "stream=codec_name,width,height,nb_read_frames,duration,avg_frame_rate",
    );
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(
        s["nb_read_frames"].as_str(),
        Some(expected.to_string().as_str()),
        "{json}"
    );
    let duration: f64 = s["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    let want = expected as f64 / 30.0;
    assert!(
        (duration - want).abs() < 0.5 / 30.0,
        "duration {duration} s, expected {want} s"
    );
    eprintln!("export: {expected} frames, {duration} s, ffprobe agrees");

    // The signed manifest checks out (signature, NVR certificate, segments, MP4)...
    let manifest = dir.path().join("incident.manifest.json");
    let ok = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        stdout.starts_with("OK:") && stdout.contains("and the MP4") && stdout.contains("fleet root"),
        "{stdout}"
    );
    assert!(stdout.contains("camera-signed: "), "{stdout}");
    let attested: u64 = stdout
        .split("camera-signed: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("attested frame count");
    assert!(attested >= 60, "at least a GOP is camera-signed: {stdout}");
    eprintln!("verify: {}", stdout.trim());
    strict_verify(&dir.path().join("incident.manifest.json"), FLEET, nvr.peer).await;

    // A dishonest NVR: one frame changed (record checksum fixed) and the manifest re-signed
    // with the NVR's own key. The NVR's signature checks out; the camera's does not.
    let segs = dir.path().join("incident.segments").join(CAM);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&segs)
        .expect("segments exported")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let victim = files[files.len() / 2].clone();
    let mut reader = SegmentReader::open(&victim).expect("segment opens");
    let mut frames_in = Vec::new();
    while let Some((offset, rec, _)) = reader.next_record().expect("valid records") {
        if let Record::Frame(f) = rec {
            frames_in.push((offset, f));
        }
    }
    let (offset, mut f) = frames_in[frames_in.len() / 2].clone();
    let mut payload = f.payload.to_vec();
    let mid = payload.len() / 2;
    payload[mid] ^= 0x01;
    f.payload = payload.into();
    let mut rec = Vec::new();
    encode_record(&Record::Frame(f), &mut rec).expect("encodes");
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = usize::try_from(offset).expect("offset");
    bytes[at..at + rec.len()].copy_from_slice(&rec);
    std::fs::write(&victim, &bytes).expect("tamper");
    let original = Manifest::from_json(&std::fs::read(&manifest).expect("manifest")).expect("parses");
    let summaries: Vec<_> = original
        .body
        .segments
        .iter()
        .map(|h| {
            let path = dir.path().join("incident.segments").join(&h.file);
            scan_segment(&path, h.file.clone()).expect("scans").summary
        })
        .collect();
    let nvr_key = camesh_node::identity::load_or_create(&nvr_dir).expect("the NVR's key");
    let mut forged = Manifest::build(
        &dir.path().join("incident.segments"),
        CAM,
        original.body.from_us,
        original.body.to_us,
        &summaries,
        Some(camesh_node::record::manifest::FileHash::of_file(&mp4).expect("hashed")),
        &nvr_key,
    )
    .expect("re-signed");
    forged.signer_cert = original.signer_cert.clone();
    std::fs::write(&manifest, forged.to_json()).expect("forged manifest");
    let bad = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a re-signed tampered export passed verify");
    assert!(err.contains("do not match the camera-signed digest"), "{err}");

    // ...and one changed byte in another source segment fails the manifest itself.
    let victim = files[0].clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("tamper");
    let bad = run_mesh(&mesh_dir, FLEET, &[], &["verify", manifest.to_str().expect("utf-8")]).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a tampered segment passed verify");
    assert!(err.contains("does not match the manifest"), "{err}");

    // A range with no footage is a clear error, not an empty file.
    let out = dir.path().join("none.mp4");
    let none = mesh_range(
        &mesh_dir,
        FLEET,
        &nvr.addr,
        "export",
        (first - 3_600_000_000, first - 3_000_000_000),
        &out,
    )
    .await;
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && err.contains("no footage"), "{err}");
    assert!(!dir.path().join("none.mp4").exists());
    drop(nvr);
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_from_the_middle_of_a_gop_starts_on_the_keyframe_before_it() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (apt-get install ffmpeg)");
    const FLEET: &str = "t-nvr-seek";
    let (dir, cam, _nvr_dir, nvr, v, first) = recorded(FLEET).await;
    let frames = play_all(&v, nvr.peer, first, first + 7_000_000).await;
    // A keyframe with a whole GOP after it, and a moment half-way to the next keyframe.
    let keys: Vec<&Played> = frames.iter().filter(|f| f.keyframe).collect();
    assert!(keys.len() >= 3, "{} keyframes", keys.len());
    let (kf, next) = (keys[1], keys[2]);
    let from = kf.capture + (next.capture - kf.capture) / 2;
    let in_gop = frames
        .iter()
        .filter(|f| f.capture >= kf.capture && f.capture < next.capture)
        .count();
    assert!(in_gop > 2 && !frames.iter().any(|f| f.capture == from && f.keyframe));

    let out = dir.path().join("seek.h264");
    let mesh_dir = dir.path().join("mesh");
    let to = next.capture + 500_000;
    let played = mesh_range(&mesh_dir, FLEET, &nvr.addr, "play", (from, to), &out).await;
    let stderr = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success(), "mesh play: {stderr}");
    let summary = stderr.lines().find(|l| l.starts_with("play-summary")).expect("summary");
    assert!(summary.contains("first_keyframe=true"), "{summary}");
    assert!(
        summary.contains(&format!("first_us={} ", kf.capture)),
        "starts at the keyframe before: {summary}"
    );
    let expected = frames
        .iter()
        .filter(|f| f.capture >= kf.capture && f.capture <= to)
        .count();
    assert!(
        summary.contains(&format!("frames={expected} ")),
        "{summary} (expected {expected})"
    );
    // ffprobe decodes it from the first frame, which is an I-frame.
    let json = ffprobe_frames(&out, "frame=pict_type,key_frame");
    let first_frame = &json["frames"][0];
    assert_eq!(first_frame["key_frame"].as_u64(), Some(1), "{first_frame}");
    assert_eq!(first_frame["pict_type"], "I");
    assert_eq!(json["frames"].as_array().map(Vec::len), Some(expected));
    drop(nvr);
    cam.shutdown();
}
