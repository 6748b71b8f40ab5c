//! What a viewer gets is what the camera sent: the NAL units ffmpeg's own RTSP client
//! reads directly from the server, access unit by access unit, with the parameter sets
//! of the stream or its SDP and the camera's presentation times (B-frames included).

use std::path::Path;
use std::process::Command;

use camesh_node::config::RtspTransport;
use camesh_node::media::h264::{self, nal_type, NalType};
use camesh_node::stream::client::Subscription;
use camesh_node::NodeHandle;
use camesh_proto::{pb, MediaFrame};
use camesh_tests::rtsp_server::{rtsp_server_or_skip, Mount, RtspServer};
use camesh_tests::*;

use super::{avcc, is_param_set, live_request, mesh, rtsp_camera, BFRAMES_MP4, GOP2_MP4, T};

/// The NAL units that carry the picture (and its SEI): what must be identical. SPS/PPS
/// are compared separately (a source may add them in front of an IDR), AUDs are dropped.
fn picture_nals(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    nals.iter()
        .filter(|n| !is_param_set(n) && nal_type(n) != Some(NalType::AUD))
        .cloned()
        .collect()
}

/// One packet as ffmpeg's own RTSP client (ffprobe) reads it.
#[derive(Debug, Clone)]
struct DirectAu {
    pts: Option<i64>,
    nals: Vec<Vec<u8>>,
}

/// What ffprobe reads directly from `url`: the packets (NAL units and pts, 90 kHz) and
/// the SPS/PPS of the stream's configuration (the SDP). `seconds`: read at most this
/// long (file mounts end by themselves).
fn ffprobe_direct(url: &str, transport: &str, seconds: u32) -> (Vec<DirectAu>, Vec<Vec<u8>>) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", transport, "-select_streams", "v:0"])
        .args(["-read_intervals", &format!("%+{seconds}")])
        .args(["-show_packets", "-show_streams", "-show_data"])
        .args(["-show_entries", "packet=pts,flags,data:stream=extradata,time_base"])
        .args(["-of", "json"])
        .arg(url)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let stream = &json["streams"][0];
    assert_eq!(stream["time_base"], "1/90000", "RTSP video runs on the RTP clock");
    let extradata = hexdump(stream["extradata"].as_str().unwrap_or(""));
    let params: Vec<Vec<u8>> = h264::split_annexb(&extradata).map(<[u8]>::to_vec).collect();
    let packets = json["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            let data = hexdump(p["data"].as_str().expect("packet data"));
            DirectAu {
                pts: p["pts"].as_i64(),
                nals: h264::split_annexb(&data).map(<[u8]>::to_vec).collect(),
            }
        })
        .collect();
    (packets, params)
}

/// Bytes of ffprobe's `-show_data` hexdump ("00000000: 0000 0001 6764 ...  ascii").
fn hexdump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        // 8 groups of up to 4 hex digits, then two spaces and the ASCII column.
        let hex_part = rest.get(..40.min(rest.len())).unwrap_or(rest);
        let hex_part = hex_part.split("  ").next().unwrap_or("");
        let digits: String = hex_part.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        for i in (0..digits.len() / 2 * 2).step_by(2) {
            out.push(u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"));
        }
    }
    out
}

/// Receives `count` frames and splits them into runs without a timeline break (a file
/// mount ends and the camera reconnects: the camera's next connection starts over).
async fn runs_of_frames(sub: &mut Subscription, count: usize) -> Vec<Vec<MediaFrame>> {
    let mut runs: Vec<Vec<MediaFrame>> = vec![Vec::new()];
    let mut last_dts: Option<u64> = None;
    for _ in 0..count {
        let f = next_frame(sub, T).await;
        if let Some(prev) = last_dts {
            assert!(
                f.header.dts_90k > prev,
                "decode times increase across reconnections too"
            );
            if f.header.dts_90k - prev > 45_000 {
                runs.push(Vec::new());
            }
        }
        last_dts = Some(f.header.dts_90k);
        runs.last_mut().expect("a run").push(f);
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Checks that `run` (mesh frames) is a contiguous, byte-identical run of `direct`
/// (matching picture NAL units access unit by access unit) and returns where it starts.
fn find_in_direct(run: &[MediaFrame], direct: &[DirectAu]) -> usize {
    let mesh: Vec<Vec<Vec<u8>>> = run.iter().map(|f| picture_nals(&avcc(&f.payload))).collect();
    let direct_pics: Vec<Vec<Vec<u8>>> = direct.iter().map(|a| picture_nals(&a.nals)).collect();
    let start = (0..direct_pics.len())
        .find(|&j| direct_pics[j] == mesh[0])
        .unwrap_or_else(|| {
            panic!(
                "the mesh's first access unit is not among the {} ffmpeg read",
                direct.len()
            )
        });
    let n = mesh.len().min(direct_pics.len() - start);
    assert!(n >= 30, "only {n} access units overlap; the test needs a longer run");
    for i in 0..n {
        assert_eq!(
            mesh[i],
            direct_pics[start + i],
            "access unit {i} of the run differs from what ffmpeg read directly"
        );
    }
    start
}

/// What ffprobe read directly from the server, when its thread ends.
type Direct = tokio::task::JoinHandle<(Vec<DirectAu>, Vec<Vec<u8>>)>;

/// Starts ffprobe reading the RTSP file mount at `url` directly (TCP, at most 10 s), then
/// a camera node on it (over TCP) and a viewer subscribed to its main profile.
async fn subscribed_beside_ffprobe(
    dir: &Path,
    fleet: &str,
    url: &str,
) -> (NodeHandle, NodeHandle, Subscription, Direct) {
    let direct_url = url.to_owned();
    let direct = tokio::task::spawn_blocking(move || ffprobe_direct(&direct_url, "tcp", 10));
    let (cam, viewer) = mesh(dir, fleet, vec![rtsp_camera("cam1", url, RtspTransport::Tcp)]).await;
    let sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), live_request("cam1", pb::Profile::Main))
        .await
        .expect("subscribed");
    (cam, viewer, sub, direct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_reaches_a_viewer_with_the_nal_units_ffmpeg_reads_directly() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp NAL identity") {
        return;
    }
    let server = RtspServer::start(&[Mount::file("/cam", &fixture(GOP2_MP4))]);
    let dir = tempfile::tempdir().expect("tempdir");
    // ffmpeg's own RTSP client, directly from the server (the whole 6 s file).
    let (cam, viewer, mut sub, direct) =
        subscribed_beside_ffprobe(dir.path(), "t-rtsp-nals", &server.url("/cam")).await;
    let codec = sub.accept.codec.clone().expect("codec config");
    assert_eq!((codec.width, codec.height), (640, 360));
    let runs = runs_of_frames(&mut sub, 150).await;
    let (direct, sdp_params) = direct.await.expect("ffprobe thread");
    assert!(
        direct.len() >= 170,
        "ffmpeg read {} access units of the 180",
        direct.len()
    );

    let longest = runs.iter().map(Vec::len).max().unwrap_or(0);
    let mut matched = 0;
    for run in runs.iter().filter(|r| r.len() >= 30) {
        assert!(run[0].header.keyframe, "every run starts on a keyframe");
        find_in_direct(run, &direct);
        matched += 1;
    }
    assert!(matched >= 1, "no run of 30+ frames (longest {longest})");
    // Parameter sets: what the viewer gets in front of each IDR is what the camera sent.
    let direct_params: Vec<Vec<u8>> = direct
        .iter()
        .flat_map(|a| a.nals.iter().filter(|n| is_param_set(n)).cloned())
        .chain(sdp_params)
        .collect();
    for f in runs.iter().flatten().filter(|f| f.header.keyframe) {
        let nals = avcc(&f.payload);
        assert_eq!(nal_type(&nals[0]), Some(NalType::SPS));
        for p in nals.iter().filter(|n| is_param_set(n)) {
            assert!(direct_params.contains(p), "a parameter set ffmpeg never saw");
        }
    }
    viewer.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_and_sdp_only_parameter_sets_are_carried_with_their_timestamps() {
    init_tracing();
    if !rtsp_server_or_skip("rtsp B-frames") {
        return;
    }
    let server = RtspServer::start(&[Mount::file_sdp_params("/bf", &fixture(BFRAMES_MP4))]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, mut sub, direct) = subscribed_beside_ffprobe(dir.path(), "t-rtsp-bf", &server.url("/bf")).await;
    let runs = runs_of_frames(&mut sub, 110).await;
    let (direct, sdp_params) = direct.await.expect("ffprobe thread");
    assert!(
        direct.len() >= 110,
        "ffmpeg read {} access units of the 120",
        direct.len()
    );
    assert!(
        direct.iter().all(|a| !a.nals.iter().any(|n| is_param_set(n))),
        "the server must send SPS/PPS only in the SDP for this test"
    );
    assert_eq!(sdp_params.len(), 2, "SPS and PPS in the SDP");

    let run = runs.iter().max_by_key(|r| r.len()).expect("a run");
    let start = find_in_direct(run, &direct);
    // SPS/PPS from the SDP in front of every IDR.
    for f in run.iter().filter(|f| f.header.keyframe) {
        let nals = avcc(&f.payload);
        assert_eq!(
            &nals[..2],
            &sdp_params[..],
            "keyframes carry the SDP's SPS and PPS in front"
        );
    }
    // Presentation times as the camera sent them; decode times before them, increasing.
    let reference = (0..run.len())
        .find(|&i| direct[start + i].pts.is_some())
        .expect("ffmpeg knows some pts");
    let (mesh_ref, direct_ref) = (
        run[reference].header.pts_90k as i64,
        direct[start + reference].pts.expect("pts"),
    );
    let mut reordered = 0;
    for (i, f) in run.iter().enumerate() {
        let h = &f.header;
        assert!(
            h.dts_90k <= h.pts_90k,
            "frame {i}: dts {} after pts {}",
            h.dts_90k,
            h.pts_90k
        );
        if i > 0 {
            assert!(
                h.dts_90k > run[i - 1].header.dts_90k,
                "frame {i}: dts does not increase"
            );
        }
        assert!(
            run[i..].iter().all(|later| later.header.pts_90k >= h.dts_90k),
            "frame {i} decodes after a later frame is shown"
        );
        if let Some(p) = direct.get(start + i).and_then(|a| a.pts) {
            assert_eq!(
                h.pts_90k as i64 - mesh_ref,
                p - direct_ref,
                "frame {i}: pts differs from the camera's"
            );
        }
        if h.pts_90k != h.dts_90k {
            reordered += 1;
        }
    }
    assert!(
        reordered > run.len() / 2,
        "B-frame stream: pts and dts differ ({reordered} of {})",
        run.len()
    );
    viewer.shutdown();
    cam.shutdown();
}
