//! Camera events in the web page (#17, item 4): headless Chromium runs the page as a
//! fleet member over WebRTC-direct; a camera node with `[camera.motion]` plays a clip
//! whose box moves 2 s of every 6; the page's tile shows a motion badge while motion goes
//! on and hides it when it ends, every event checked against the camera's signature and
//! certificate; a camera without events leaves the badge off and the video untouched.

use std::time::Duration;

use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{now_s, Rights};
use camesh_node::config::{MotionSection, Role};
use camesh_tests::web::*;
use camesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_motion_badges_from_signed_events() {
    init_tracing();
    let test = "the_page_shows_motion_badges_from_signed_events";
    let Some(chromium) = web_test_ready(test, || Ok(())) else {
        return;
    };
    let name = "t-web-events";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let mut moving = camera("moving", "cam-640x360-30fps-gop2s.h264");
    moving.source = box_clip(dir.path(), "moving.h264", MOVING_BOX);
    moving.motion = Some(MotionSection::default());
    let plain = camera("plain", "cam-640x360-30fps-gop2s.h264");
    let mut c = loopback_config(Role::Camera, name);
    c.node.webrtc = Some(true);
    c.cameras = vec![moving, plain];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let cam_addr = cam
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("the camera listens on WebRTC-direct");

    // The page joins with an invite link, then gets a live grant for both cameras.
    let JoinedPage {
        site,
        mut reports,
        profile,
        peer: page_peer,
        inviting: _inviting,
    } = join_page(chromium, &admin, dir.path().join("profile")).await;
    let now = now_s();
    let g = f.grant(&GrantRequest {
        holder: page_peer,
        cameras: vec!["moving".into(), "plain".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });

    // Motion: the badge comes on, says "motion", and goes off when the motion ends.
    drain_reports(&mut reports);
    let url = format!(
        "{site}index.html?report#{}&peer={cam_addr}&watch=moving",
        grant_text(&g)
    );
    let page = open_page(chromium, &url, &profile);
    let on = wait_report(&mut reports, "motion badge on", Duration::from_secs(60), |v| {
        let e = &v["grid"]["tiles"]["moving"]["events"];
        e["badge"] == true && e["active"].as_array().is_some_and(|a| a.iter().any(|k| k == "motion"))
    })
    .await;
    let e = &on["grid"]["tiles"]["moving"]["events"];
    println!("badge on: {e}");
    assert_eq!(e["badgeText"], "motion", "{e}");
    assert_eq!(e["rejected"], 0, "{e}");
    let off = wait_report(&mut reports, "motion badge off", Duration::from_secs(30), |v| {
        // Off after an end, once the video has played a while (a page that joins just
        // before a motion ends sees the end 1-2 s in).
        let t = &v["grid"]["tiles"]["moving"];
        let e = &t["events"];
        e["badge"] == false && e["last"]["state"] == "end" && t["decoded"].as_u64().is_some_and(|n| n >= 60)
    })
    .await;
    let t = &off["grid"]["tiles"]["moving"];
    println!("badge off: {}", t["events"]);
    assert_eq!(t["events"]["rejected"], 0, "{t}");
    assert!(t["decoded"].as_u64().unwrap_or(0) >= 60, "the video played on: {t}");
    assert_eq!(t["decodeErrors"], 0, "{t}");
    close_page(page).await;

    // A camera without motion detection: no badge, the stream refused plainly, the
    // video as before.
    drain_reports(&mut reports);
    let url = format!("{site}index.html?report#{}&peer={cam_addr}&watch=plain", grant_text(&g));
    let page = open_page(chromium, &url, &profile);
    let plain = wait_report(&mut reports, "no events", Duration::from_secs(60), |v| {
        let t = &v["grid"]["tiles"]["plain"];
        t["events"]["state"] == "refused" && t["decoded"].as_u64().is_some_and(|n| n >= 60)
    })
    .await;
    let t = &plain["grid"]["tiles"]["plain"];
    println!("no events: {}", t["events"]);
    assert_eq!(t["events"]["badge"], false, "{t}");
    assert_eq!(t["decodeErrors"], 0, "{t}");
    close_page(page).await;
    cam.shutdown();
}
