//! Video players on `live.mp4` and `snapshot.jpg`: ffprobe reads both at the camera's
//! size and ffmpeg decodes every frame (B-frames included); VLC plays the endless stream.

use std::process::{Command, Stdio};
use std::time::Duration;

use camesh_tests::ffmpeg::{ffmpeg_decode, ffprobe_json};
use camesh_tests::http::{get, get_for};
use camesh_tests::*;

use super::{fleet_with_gateway, BFRAMES, GOP2, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_reads_live_mp4_and_snapshot_jpg_at_the_cameras_size() {
    init_tracing();
    assert!(have("ffprobe"), "ffprobe is needed (scripts/setup.sh installs ffmpeg)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-probe", &[("cam1", GOP2), ("bf", BFRAMES)]).await;
    let addr = gw.local_addr();

    for id in ["cam1", "bf"] {
        // A few seconds of the endless live stream, into a file.
        let r = get_for(addr, &format!("/cam/{id}/live.mp4"), Duration::from_secs(4), 32 << 20)
            .await
            .expect("live.mp4");
        assert_eq!(r.status, 200, "{}", r.text());
        let ctype = r.header("content-type").unwrap_or("");
        assert!(ctype.starts_with("video/mp4; codecs=\"avc1."), "{ctype}");
        let file = dir.path().join(format!("{id}.mp4"));
        std::fs::write(&file, &r.body).expect("write");
        let json = ffprobe_json(
            &file,
            &[
                "-count_frames",
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames:format=format_name",
            ],
        );
        let s = &json["streams"][0];
        assert_eq!(s["codec_name"], "h264", "{id}: {json}");
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(640), Some(360)),
            "{id}"
        );
        let frames: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
        // Behaviour, not rate: a shared 2-core machine may deliver fewer than 4 s' worth.
        // More than one GOP (the clips' GOPs are 30-60 frames) proves a continuing stream.
        assert!(frames > 30, "{id}: only {frames} frames of live.mp4");
        assert!(json["format"]["format_name"].as_str().unwrap_or("").contains("mp4"));
        // Every frame decodes, without a single decoder complaint (B-frames included).
        let dec = ffmpeg_decode(&file);
        assert!(dec.status.success());
        assert_eq!(
            String::from_utf8_lossy(&dec.stderr),
            "",
            "{id}: decoding live.mp4 reported errors"
        );
        // Presentation order differs from decode order in the B-frame camera.
        let pk = ffprobe_json(&file, &["-show_entries", "packet=pts,dts"]);
        let reordered = pk["packets"]
            .as_array()
            .expect("packets")
            .iter()
            .filter(|p| p["pts"] != p["dts"])
            .count();
        if id == "bf" {
            assert!(reordered > 10, "B-frames keep their composition offsets ({reordered})");
        }

        let r = get(addr, &format!("/cam/{id}/snapshot.jpg"), T)
            .await
            .expect("snapshot");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        let jpg = dir.path().join(format!("{id}.jpg"));
        std::fs::write(&jpg, &r.body).expect("write");
        let json = ffprobe_json(&jpg, &["-show_entries", "stream=codec_name,width,height"]);
        let s = &json["streams"][0];
        assert_eq!(s["codec_name"], "mjpeg", "{json}");
        assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)));
    }

    // Bad requests are answered, not crashed on.
    for (path, status) in [
        ("/cam/nope/live.mp4", 404),
        ("/cam/nope/snapshot.jpg", 404),
        ("/cam/NOT%20AN%20ID/live.mp4", 404),
        ("/cam/cam1/live.mp4?profile=huge", 400),
        ("/nothing/here", 404),
        ("/cam/cam1", 404),
    ] {
        let r = get(addr, path, T).await.expect(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    let page = get(addr, "/", T).await.expect("page");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("MediaSource"));
    let api = get(addr, "/api/cameras", T).await.expect("api");
    assert_eq!(api.camera_ids(), ["bf", "cam1"]);
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

/// VLC (Debian's vlc-bin, the player integrators open streams in) plays
/// `/cam/<id>/live.mp4`: it reads the endless fragmented MP4 over HTTP, decodes the
/// H.264 and re-encodes what it decoded into a file, which ffprobe then counts. VLC
/// refuses to run as root, so as root it runs as `nobody` (setpriv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlc_plays_live_mp4() {
    init_tracing();
    assert!(
        have("cvlc"),
        "cvlc is needed (scripts/setup.sh installs vlc-bin and vlc-plugin-base)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-vlc", &[("cam1", GOP2)]).await;
    let url = format!("http://{}/cam/cam1/live.mp4", gw.local_addr());

    // A folder the unprivileged player can write: its HOME (VLC's config) and the output.
    let out_dir = dir.path().join("vlc");
    std::fs::create_dir(&out_dir).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = out_dir.join("decoded.ts");
    // Decode (transcode needs decoded pictures) and write MPEG-2 video in a TS file.
    let sout = format!(
        "#transcode{{vcodec=mp2v,vb=1000}}:std{{access=file,mux=ts,dst={}}}",
        out.display()
    );
    let is_root = effective_uid() == 0;
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    cmd.env("HOME", &out_dir)
        .args(["-I", "dummy", "--no-audio", "--run-time=6", "--sout"])
        .arg(&sout)
        .arg(&url)
        .arg("vlc://quit")
        .stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || cmd.output());
    let res = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("VLC exits within 60 s")
        .expect("join")
        .expect("cvlc runs");
    let log = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(out.exists(), "VLC wrote nothing; its log:\n{log}");
    let json = ffprobe_json(
        &out,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ],
    );
    let s = &json["streams"][0];
    assert_eq!(s["codec_name"], "mpeg2video", "{json}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360)),
        "{json}"
    );
    let frames: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    // Behaviour, not rate: more than one 2 s GOP of pictures went through VLC's decoder.
    assert!(frames > 60, "VLC decoded only {frames} frames; its log:\n{log}");
    eprintln!("VLC decoded {frames} frames of {url} in 6 s");
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}

/// The effective user id, from /proc (no libc call needed).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}
