//! Talkback over the mesh (#17, item 2): the real `mesh talk`, a real camera node over
//! QUIC on 127.0.0.1, and as the camera GStreamer's ONVIF RTSP server with a backchannel
//! that records what it receives (tests/scripts/onvif_backchannel.py). A 1 kHz tone goes
//! in; the recording's dominant frequency must be 1 kHz. Refused without the `talk` right
//! (checked by the camera's node, not only by `mesh`), one talker at a time, audited.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use camesh_node::auth::{signed, Rights};
use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use camesh_tests::cli::{mesh_command, mesh_folder};
use camesh_tests::*;

const FLEET: &str = "t-talk";

/// The camera: GStreamer's ONVIF RTSP server recording its backchannel to a WAV.
struct Camera {
    child: Child,
    port: u16,
    wav: PathBuf,
    log: PathBuf,
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn onvif_camera(dir: &Path) -> Camera {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onvif_backchannel.py");
    let (wav, log) = (dir.join("speaker.wav"), dir.join("backchannel.jsonl"));
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&wav)
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/python3 runs (scripts/setup.sh installs python3-gi)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the camera prints its port, got {line:?}"));
    Camera { child, port, wav, log }
}

/// The recording as 16-bit samples (the WAV's data after its 44-byte header).
fn recorded(wav: &Path) -> Vec<i16> {
    let bytes = std::fs::read(wav).unwrap_or_default();
    bytes
        .get(44..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The strongest frequency of `s` (8 kHz) between 100 and 3900 Hz, by a DFT scan of its
/// middle second in 5 Hz steps.
fn dominant_hz(s: &[i16]) -> f64 {
    let n = s.len().min(8000);
    let start = (s.len() - n) / 2;
    let x: Vec<f64> = s[start..start + n].iter().map(|&v| f64::from(v)).collect();
    let power = |f: f64| {
        let w = 2.0 * std::f64::consts::PI * f / 8000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (i, v) in x.iter().enumerate() {
            re += v * (w * i as f64).cos();
            im += v * (w * i as f64).sin();
        }
        re * re + im * im
    };
    (20..=780)
        .map(|k| f64::from(k) * 5.0)
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))
        .unwrap_or(0.0)
}

fn mesh_talk(data: &Path, boot: &[camesh_node::Multiaddr], args: &[&str]) -> (bool, String) {
    let out = mesh_command(data, FLEET, boot)
        .args(["--log", "warn", "talk", "cam1"])
        .args(args)
        .output()
        .expect("mesh runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn audit(cam_dir: &Path) -> String {
    let a = std::fs::read_to_string(cam_dir.join("audit.log")).unwrap_or_default();
    let r = std::fs::read_to_string(cam_dir.join("audit-refusals.log")).unwrap_or_default();
    format!("{a}{r}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tone_through_mesh_talk_reaches_the_cameras_speaker() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let cam_dev = onvif_camera(dir.path());
    let tone = dir.path().join("tone.wav");
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=44100:duration=3",
        ])
        .arg(&tone)
        .status()
        .expect("ffmpeg");
    assert!(st.success());

    let mut c = loopback_config(camesh_node::config::Role::Camera, FLEET);
    let mut cam1 = camera("cam1", "cam-640x360-30fps-gop2s.h264");
    cam1.talkback = Some(format!("rtsp://127.0.0.1:{}/cam", cam_dev.port));
    c.cameras = vec![cam1];
    let cam_dir = dir.path().join("cam");
    let cam = spawn_node(c, &cam_dir).await;
    let boot = cam.dial_addrs().await.expect("addrs");

    // The tone, from a file: 3 s = 150 frames of 20 ms, paced in real time.
    let operator = dir.path().join("operator");
    mesh_folder(
        &operator,
        FLEET,
        "operator",
        &["cam1"],
        Rights::LIVE.union(Rights::TALK),
    );
    let (ok, err) = mesh_talk(&operator, &boot, &["--file", tone.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    assert!(err.contains("150 frames sent") && err.contains("150 played"), "{err}");
    let got = wait_until(Duration::from_secs(10), || recorded(&cam_dev.wav).len() >= 23_000).await;
    let samples = recorded(&cam_dev.wav);
    assert!(got, "{} samples recorded", samples.len());
    // 24000 samples sent; the camera's jitter buffer may keep the last few ms.
    assert!((23_000..=24_800).contains(&samples.len()), "{} samples", samples.len());
    let hz = dominant_hz(&samples);
    assert!((980.0..=1020.0).contains(&hz), "the camera heard {hz} Hz, not 1 kHz");
    let log = std::fs::read_to_string(&cam_dev.log).unwrap_or_default();
    assert!(log.contains("www.onvif.org/ver20/backchannel"), "{log}");
    let a = audit(&cam_dir);
    assert!(a.contains("\"talk\"") && a.contains("ended: 150 frames"), "{a}");

    // Without the talk right: refused by the camera's node itself (the grant shown holds
    // live only), audited, and nothing reaches the camera.
    let viewer = viewer_node(&dir.path().join("viewer"), FLEET, boot.clone()).await;
    let live = viewer
        .trust()
        .grant_for("cam1", Rights::LIVE)
        .expect("viewers get live");
    let before = recorded(&cam_dev.wav).len();
    let mut stream = viewer
        .reach()
        .control()
        .open_stream(
            cam.peer_id(),
            libp2p::StreamProtocol::new(camesh_node::talk::TALK_PROTOCOL),
        )
        .await
        .expect("stream");
    let codec = LengthCodec::new(1 << 16);
    let req = pb::TalkRequest {
        camera_id: "cam1".into(),
        grant: signed::encode(&live),
        user_agent: "test".into(),
    };
    camesh_node::stream::io::write_message(&mut stream, &codec, &req)
        .await
        .expect("sent");
    let mut rd = camesh_node::stream::io::FramedRead::new(stream, codec);
    let body = rd.next().await.expect("answer").expect("an answer");
    let acc: pb::TalkAccept = decode_message("accept", body).expect("decodes");
    assert!(acc.error.contains("talk"), "refused for the right reason: {acc:?}");
    assert!(audit(&cam_dir).contains("refused-talk"));
    // And `mesh` without the right says what to ask for.
    let watcher = dir.path().join("watcher");
    mesh_folder(&watcher, FLEET, "watcher", &["cam1"], Rights::LIVE);
    let (ok, err) = mesh_talk(&watcher, &boot, &["--file", tone.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("--rights talk"), "{err}");
    assert_eq!(
        recorded(&cam_dev.wav).len(),
        before,
        "refused talkers reached the speaker"
    );

    // One talker at a time: a second talker is refused while the first talks (from an
    // ffmpeg input device, as a microphone is read).
    let mut first = mesh_command(&operator, FLEET, &boot)
        .args([
            "--log",
            "warn",
            "talk",
            "cam1",
            "--input-format",
            "lavfi",
            "--device",
            "sine=frequency=1000:duration=6",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh runs");
    let talking = wait_until(Duration::from_secs(20), || recorded(&cam_dev.wav).len() > before + 4000).await;
    assert!(talking, "the first talker did not start");
    let second = dir.path().join("second");
    mesh_folder(&second, FLEET, "second", &["cam1"], Rights::LIVE.union(Rights::TALK));
    let (ok, err) = mesh_talk(&second, &boot, &["--file", tone.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("one talker at a time"), "{err}");
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .expect("join")
        .expect("waits");
    assert!(status.success());
    // After the first is done, the camera is free again.
    let (ok, err) = mesh_talk(&second, &boot, &["--file", tone.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    viewer.shutdown();
    cam.shutdown();
}
