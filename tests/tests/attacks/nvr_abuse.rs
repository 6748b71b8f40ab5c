//! Hostile members against an NVR (issue #14 items 5, 7 and 9), with the real
//! `camesh-node` daemon recording a camera:
//!
//! - exports leave no plaintext on the NVR's disk, during or after (every file under its
//!   data folder is searched for the camera's IDR slices and for an MP4 `ftyp` box; the
//!   same search finds them in the exported MP4, so it can see them);
//! - exports are bounded: a second export of one peer, a third on the NVR, and a range
//!   longer than `[nvr] export_max_range_s` are refused with the reason and a
//!   `refused-nvr` audit entry, while a legitimate export succeeds beside the held ones
//!   and recording carries on;
//! - a stolen disk: the recordings copied without the key source do not decrypt;
//! - `mesh verify` refuses a manifest re-signed by the NVR with an asserted time before
//!   the footage or in the future.
//!
//! Hostile members hold exports open by not reading them with a small receive window
//! (`limits.stream_window_bytes`): the NVR's export then waits on flow control, which
//! makes "an export is running" a state, not a race.

use std::path::{Path, PathBuf};
use std::time::Duration;

use camesh_node::auth::{signed, Rights};
use camesh_node::clock::now_unix_us;
use camesh_node::config::Role;
use camesh_node::nvr::client::{self, NvrClientError};
use camesh_node::nvr::keystore::KeyStore;
use camesh_node::record::manifest::Manifest;
use camesh_node::record::segment::{Record, SegmentReader};
use camesh_node::stream::io::{write_message, FramedRead};
use camesh_node::{NodeHandle, PeerId};
use camesh_proto::{framing::decode_message, pb, LengthCodec};
use camesh_tests::cli::{mesh_folder, run_mesh};
use camesh_tests::nvr::{log_text, nvr_folder, start_nvr};
use camesh_tests::*;

const FLEET: &str = "t-attack-nvr";
const CAM: &str = "cam1";
const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(30);

/// The start of every IDR slice of the camera's clip: bytes only plaintext video holds.
fn idr_probes() -> Vec<Vec<u8>> {
    use camesh_node::media::h264::{nal_type, split_annexb, NalType};
    let clip = std::fs::read(fixture(CLIP)).expect("fixture");
    let probes: Vec<Vec<u8>> = split_annexb(&clip)
        .filter(|n| nal_type(n) == Some(NalType::IDR) && n.len() > 64)
        .map(|n| n[..48].to_vec())
        .collect();
    assert!(!probes.is_empty(), "the clip has IDR slices");
    probes
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` holding plaintext video: an IDR slice of the clip, or an MP4 box.
fn plaintext_files(dir: &Path, probes: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else { continue };
            if contains(&bytes, b"ftypisom") || probes.iter().any(|pr| contains(&bytes, pr)) {
                out.push(p);
            }
        }
    }
    out
}

/// A member with `rights` on the camera; a small receive window per stream when `window`
/// is set.
async fn member(dir: &Path, nvr: &camesh_tests::nvr::NvrProc, rights: Rights, window: Option<usize>) -> NodeHandle {
    fleet(FLEET).grant_dir(dir, &[CAM.into()], rights, 3600).expect("grant");
    let mut c = loopback_config(Role::Viewer, FLEET);
    c.node.bootstrap = vec![nvr.addr.clone()];
    if let Some(w) = window {
        // Per stream only: the connection's window stays wide, for the member's other streams.
        c.limits.stream_window_bytes = w;
    }
    let n = spawn_node(c, dir).await;
    n.connect(nvr.addr.clone()).await.expect("connects to the NVR");
    n
}

/// Opens an export and reads only the NVR's first answer, then holds the stream unread.
async fn held_export(node: &NodeHandle, nvr: PeerId, from: i64, to: i64) -> Result<FramedRead<libp2p::Stream>, String> {
    let grant = node.trust().grant_for(CAM, Rights::EXPORT).expect("an export grant");
    let req = pb::NvrRequest {
        camera_id: CAM.into(),
        grant: signed::encode(&grant),
        from_unix_us: from,
        to_unix_us: to,
        request: Some(pb::nvr_request::Request::Export(pb::NvrExport {
            file_name: "held.mp4".into(),
        })),
    };
    let mut control = node.reach().control();
    let proto = libp2p::StreamProtocol::new(camesh_node::nvr::NVR_PROTOCOL);
    let mut stream = tokio::time::timeout(T, control.open_stream(nvr, proto))
        .await
        .expect("in time")
        .expect("stream opens");
    let codec = LengthCodec::new(64 << 10);
    write_message(&mut stream, &codec, &req).await.expect("request sent");
    let mut reader = FramedRead::new(stream, codec);
    let body = tokio::time::timeout(T, reader.next())
        .await
        .expect("an answer in time")
        .expect("readable")
        .expect("an answer");
    let resp: pb::NvrResponse = decode_message("nvr response", body).expect("decodes");
    match resp.result {
        Some(pb::nvr_response::Result::Export(_)) => Ok(reader),
        Some(pb::nvr_response::Result::Reject(r)) => Err(r.reason),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A whole export by the library client; the refusal's reason if refused.
async fn export(node: &NodeHandle, nvr: PeerId, from: i64, to: i64, out: &Path) -> Result<u64, String> {
    match client::export(node.reach(), nvr, CAM, from, to, out, |_| {}).await {
        Ok(f) => Ok(f.done.frames),
        Err(NvrClientError::Rejected { reason, .. }) => Err(reason),
        Err(e) => panic!("export failed otherwise: {e}"),
    }
}

/// Waits until the NVR has recorded a frame captured after `after`.
async fn recorded_after(v: &NodeHandle, nvr: PeerId, after: i64) -> bool {
    for _ in 0..200 {
        if let Ok(c) = client::recordings(v.reach(), nvr, CAM, after, 0).await {
            if c.spans.iter().any(|s| s.recorded && s.to_unix_us > after) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn audit_text(dir: &Path) -> String {
    ["audit.log", "audit-refusals.log"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap_or_default())
        .collect()
}

fn secs(us: i64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_members_get_bounded_plaintext_free_exports_and_a_stolen_disk_stays_dark() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), FLEET, vec![camera(CAM, CLIP)], vec![]).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    // The storage key on "another device": a folder outside the NVR's data folder.
    let key_file = dir.path().join("keydev").join("nvr-storage.key");
    let key_spec = format!("file:{}", key_file.display());
    let nvr_dir = dir.path().join("nvr");
    nvr_folder(&nvr_dir, FLEET, &cam_addr, CAM, |c| {
        c.nvr.fsync_interval_ms = 200;
        c.nvr.segment_duration_s = 3;
        c.nvr.export_max_range_s = 60;
        c.nvr.exports_at_once = 2;
        c.nvr.storage_key = key_spec.clone();
    });
    let t0 = now_unix_us();
    let nvr = start_nvr(&nvr_dir);
    let legit = member(
        &dir.path().join("legit"),
        &nvr,
        Rights::PLAYBACK.union(Rights::EXPORT),
        None,
    )
    .await;
    assert!(recorded_after(&legit, nvr.peer, t0).await, "{}", log_text(&nvr_dir));
    assert!(recorded_after(&legit, nvr.peer, t0 + 6_000_000).await);
    assert!(key_file.exists() && !nvr_dir.join("nvr-storage.key").exists());
    // The test's folders share one filesystem: the NVR says so, once, at start.
    let warned = log_text(&nvr_dir)
        .matches("the NVR storage key is on the same filesystem as the recordings")
        .count();
    assert_eq!(warned, 1, "{}", log_text(&nvr_dir));

    // Positive control, as a user: `mesh export` then `mesh verify`.
    let probes = idr_probes();
    let mesh_dir = dir.path().join("mesh");
    mesh_folder(&mesh_dir, FLEET, "mesh", &[CAM], Rights::PLAYBACK.union(Rights::EXPORT));
    let (from, to) = (t0 + 1_000_000, t0 + 5_000_000);
    let mp4 = dir.path().join("out").join("incident.mp4");
    std::fs::create_dir_all(mp4.parent().expect("parent")).expect("mkdir");
    let args = [
        "export",
        CAM,
        "--from",
        &secs(from),
        "--to",
        &secs(to),
        "-o",
        mp4.to_str().expect("utf-8"),
    ];
    let out = run_mesh(&mesh_dir, FLEET, std::slice::from_ref(&nvr.addr), &args).await;
    assert!(
        out.status.success(),
        "mesh export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read(&mp4).expect("the MP4");
    assert!(contains(&exported, b"ftypisom"), "the export is an MP4");
    assert!(
        probes.iter().any(|p| contains(&exported, p)),
        "the search sees plaintext video where there is some"
    );
    let leaked = plaintext_files(&nvr_dir, &probes);
    assert!(
        leaked.is_empty(),
        "plaintext on the NVR's disk after an export: {leaked:?}"
    );
    assert!(!nvr_dir.join("recordings").join("exports").exists());

    // Item 7: the NVR's asserted time against what the camera signed.
    let manifest = mp4.with_file_name("incident.manifest.json");
    let verify_args = ["verify", manifest.to_str().expect("utf-8")];
    let verify = || run_mesh(&mesh_dir, FLEET, &[], &verify_args);
    let ok = verify().await;
    assert!(ok.status.success(), "verify: {}", String::from_utf8_lossy(&ok.stderr));
    let original = std::fs::read(&manifest).expect("manifest");
    let m = Manifest::from_json(&original).expect("parses");
    let nvr_key = camesh_node::identity::load_or_create(&nvr_dir).expect("the NVR's key");
    for (created, expect) in [
        (t0 - 3_600_000_000, "is before the camera signed the frames it covers"),
        (now_unix_us() + 86_400_000_000, "is in the future"),
    ] {
        let mut body = m.body.clone();
        body.created_us = created;
        let mut forged = Manifest::sign(body, &nvr_key).expect("re-signed by the NVR's own key");
        forged.signer_cert = m.signer_cert.clone();
        std::fs::write(&manifest, forged.to_json()).expect("forged");
        let bad = verify().await;
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && err.contains(expect),
            "asserted {created}: {err}"
        );
        eprintln!("refused: {}", err.trim());
    }
    std::fs::write(&manifest, &original).expect("restored");

    // Item 5: hostile members hold exports open without reading them.
    let a = member(&dir.path().join("a"), &nvr, Rights::EXPORT, Some(16 << 10)).await;
    let b = member(&dir.path().join("b"), &nvr, Rights::EXPORT, Some(16 << 10)).await;
    let (whole_from, whole_to) = (t0, now_unix_us());
    let held_a = held_export(&a, nvr.peer, whole_from, whole_to)
        .await
        .expect("a's first export starts");
    let second = held_export(&a, nvr.peer, whole_from, whole_to)
        .await
        .expect_err("a's second export");
    assert!(second.contains("the most one peer may run at once"), "{second}");
    // The same setup, a legitimate member: one slot is still free.
    let beside = dir.path().join("out").join("beside.mp4");
    let frames = export(&legit, nvr.peer, from, to, &beside)
        .await
        .expect("a legitimate export beside the held one");
    assert!(frames >= 90, "{frames} frames");
    let held_b = held_export(&b, nvr.peer, whole_from, whole_to)
        .await
        .expect("b's export starts");
    let third = export(&legit, nvr.peer, from, to, &beside)
        .await
        .expect_err("a third export on the NVR");
    assert!(third.contains("the most it runs at once"), "{third}");
    let long = export(&legit, nvr.peer, now_unix_us() - 120_000_000, now_unix_us(), &beside)
        .await
        .expect_err("two minutes, over the 60 s limit");
    assert!(long.contains("an export covers at most"), "{long}");
    // Recording carries on while the exports are held, and nothing plaintext is on disk.
    let now = now_unix_us();
    assert!(
        recorded_after(&legit, nvr.peer, now + 1_000_000).await,
        "recording carries on"
    );
    let leaked = plaintext_files(&nvr_dir, &probes);
    assert!(
        leaked.is_empty(),
        "plaintext on the NVR's disk during exports: {leaked:?}"
    );
    let audit = audit_text(&nvr_dir);
    for reason in [
        "export: you already run 1 export(s)",
        "export: this NVR already runs 2 exports",
        "export: an export covers at most",
    ] {
        assert!(audit.contains(reason), "audited: {reason}\n{audit}");
    }
    assert!(audit.contains("nvr-export"), "exports are audited:\n{audit}");
    // Dropped by the hostile members, the slots come back.
    drop((held_a, held_b));
    let mut again = Err(String::new());
    for _ in 0..50 {
        again = export(&legit, nvr.peer, from, to, &beside).await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(again.is_ok(), "slots come back: {again:?}");
    eprintln!(
        "nvr abuse: 3 refusals named and audited, 3 legitimate exports ({frames} frames each), recording carried on"
    );

    // Item 9: a stolen disk. The recordings folder copied without the key source.
    drop(nvr);
    let thief = dir.path().join("thief");
    copy_dir(&nvr_dir.join("recordings"), &thief.join("recordings"));
    let thief_key = KeyStore::load_or_create(&thief).expect("the thief's own key");
    let real = KeyStore::open(&key_spec, &nvr_dir, &nvr_dir.join("recordings")).expect("the key source");
    let segs = thief.join("recordings").join("segments").join(CAM);
    let (mut keys, mut opened, mut frames_seen) = (0, 0, 0);
    for e in std::fs::read_dir(&segs).expect("segments").flatten() {
        let mut reader = SegmentReader::open(&e.path()).expect("segment opens");
        let mut media = std::collections::HashMap::new();
        while let Ok(Some((_, rec, _))) = reader.next_record() {
            match rec {
                Record::Key { epoch, key } => {
                    keys += 1;
                    assert!(
                        thief_key.unwrap(CAM, epoch, &key).is_err(),
                        "a stolen disk opened a key"
                    );
                    media.insert(
                        epoch,
                        real.store.unwrap(CAM, epoch, &key).expect("the real key opens it"),
                    );
                }
                Record::Frame(f) => {
                    frames_seen += 1;
                    if let Some(k) = media.get(&f.key_epoch) {
                        opened += usize::from(k.open(&f.header(), &f.payload).is_ok());
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        keys > 0 && frames_seen > 0 && opened > 0,
        "{keys} keys, {frames_seen} frames, {opened} opened"
    );
    let leaked = plaintext_files(&thief, &probes);
    assert!(leaked.is_empty(), "plaintext in the stolen copy: {leaked:?}");
    eprintln!("stolen disk: {keys} stored keys, none opens without the key source; {frames_seen} frames stay sealed");
    cam.shutdown();
}
