//! The web app (web/dist, built by scripts/web.sh) in real headless Chromium: served by a
//! tiny static server on 127.0.0.1, the page makes its Ed25519 identity, starts its
//! libp2p node and shows its peer id; a reload with the same browser profile shows the
//! same peer id (the key lives in IndexedDB), and another profile gets another one.
//! With the link `mesh fleet invite --role viewer` prints, the page redeems the invite
//! with that admin node over WebRTC-direct and holds a viewer certificate; a node's
//! gateway serves the same files under /app/.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use camesh_tests::web::*;
use camesh_tests::*;
use libp2p::PeerId;
use tokio::io::AsyncReadExt;

/// What one page load showed: the DOM after the page settled, and Chromium's log.
struct Load {
    dom: String,
    log: String,
}

async fn load(chromium: &str, url: &str, profile: &Path) -> Load {
    let child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            // Lets the page's promises (key generation, IndexedDB, libp2p start) settle
            // before the DOM is dumped; virtual time, so no wall-clock wait.
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        // Chromium's singleton and PulseAudio's runtime folders beside the profile, not in /tmp.
        .envs(camesh_tests::web::chromium_env(profile))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("chromium dumps the page within 120 s")
        .expect("chromium ran");
    Load {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Loads the page until it has settled (its status is no longer "busy"), at most
/// [`LOADS`] times. `--dump-dom` dumps when the page's virtual time budget runs out, and
/// virtual time does not wait for work off the main thread (key generation, IndexedDB),
/// so a load may be dumped before the page finished; each load is a full page load with
/// the same profile, which is what a reload is.
async fn settled(chromium: &str, url: &str, profile: &Path) -> Load {
    let mut last = None;
    for _ in 0..LOADS {
        let l = load(chromium, url, profile).await;
        if element(&l.dom, "status").is_some_and(|(state, _)| state.as_deref() != Some("busy")) {
            return l;
        }
        last = Some(l);
    }
    let l = last.expect("LOADS > 0");
    panic!(
        "the page did not settle in {LOADS} loads; status {:?}, peer id {:?}",
        element(&l.dom, "status"),
        element(&l.dom, "peer-id")
    )
}

const LOADS: usize = 8;

/// The text of the element with `id`, and its `data-state` if any.
fn element(dom: &str, id: &str) -> Option<(Option<String>, String)> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..start].rfind('<')?;
    let tag_end = start + dom[start..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let state = tag
        .split_once("data-state=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(s, _)| s.to_owned());
    let rest = &dom[tag_end + 1..];
    let text = &rest[..rest.find('<').unwrap_or(rest.len())];
    Some((state, text.trim().to_owned()))
}

fn peer_id_of(l: &Load) -> PeerId {
    let show = |what: &str| -> String {
        let csp: Vec<&str> = l
            .log
            .lines()
            .filter(|x| x.contains("CONSOLE") || x.contains("Refused"))
            .take(20)
            .collect();
        format!(
            "{what}\nstatus: {:?}\nconsole:\n{}",
            element(&l.dom, "status"),
            csp.join("\n")
        )
    };
    let (state, text) = element(&l.dom, "peer-id").unwrap_or_else(|| panic!("{}", show("the page has no #peer-id")));
    assert_eq!(state.as_deref(), Some("ready"), "{}", show("no identity"));
    let peer: PeerId = text
        .parse()
        .unwrap_or_else(|e| panic!("{}", show(&format!("{text:?} is not a peer id: {e}"))));
    // Ed25519 peer ids inline their key: 12D3KooW...
    assert!(text.starts_with("12D3KooW"), "{text}");
    let (_, storage) = element(&l.dom, "key-storage").expect("#key-storage");
    assert!(
        storage.contains("non-extractable"),
        "Chromium has WebCrypto Ed25519: {storage}"
    );
    let (_, node) = element(&l.dom, "node").expect("#node");
    assert!(
        node.starts_with("libp2p started"),
        "{}",
        show(&format!("libp2p: {node}"))
    );
    assert_eq!(
        element(&l.dom, "status").and_then(|s| s.0).as_deref(),
        Some("ready"),
        "{}",
        show("status")
    );
    assert!(
        !l.log.contains("Content Security Policy") && !l.log.contains("Refused to"),
        "{}",
        show("the page broke its own CSP")
    );
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_makes_and_keeps_the_page_identity() {
    init_tracing();
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b));
    let built = dist().join("index.html").exists() && dist().join("app.js").exists();
    let available = match (chromium, built) {
        (None, _) => Err("no chromium (scripts/setup.sh installs it)".to_owned()),
        (_, false) => Err(format!("{} is not built: run scripts/web.sh", dist().display())),
        (Some(_), true) => Ok(()),
    };
    if !can_run("headless_chromium_makes_and_keeps_the_page_identity", available) {
        return;
    }
    let chromium = chromium.expect("checked above");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("{}index.html", static_server(dist()).await);

    let profile = dir.path().join("profile-a");
    let first = peer_id_of(&settled(chromium, &url, &profile).await);
    for _ in 0..2 {
        let again = peer_id_of(&settled(chromium, &url, &profile).await);
        assert_eq!(first, again, "a reload keeps the identity (IndexedDB)");
    }
    let other = peer_id_of(&settled(chromium, &url, &dir.path().join("profile-b")).await);
    assert_ne!(first, other, "another browser profile makes its own key");
}

/// Chromium and the built app, or why this test cannot run here.
fn web_ready(test: &str) -> Option<&'static str> {
    web_test_ready(test, || Ok(()))
}

/// `mesh fleet init` in a fresh admin folder, then `mesh fleet invite --role viewer`
/// waiting as the admin node on 127.0.0.1 (QUIC and WebRTC-direct): the child and the
/// invite and link lines it printed.
async fn admin_inviting(admin: &Path, fleet_id: &str) -> (tokio::process::Child, String, String) {
    let (ok, _, err) = cli::mesh_in(admin, &["fleet", "init", "--id", fleet_id]);
    assert!(ok, "mesh fleet init: {err}");
    invite_from(admin).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_redeems_a_viewer_invite_from_its_link() {
    init_tracing();
    let Some(chromium) = web_ready("page_redeems_a_viewer_invite_from_its_link") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut inviting, invite, link) = admin_inviting(&dir.path().join("admin"), "t-web-join").await;
    // The link is the web app's URL with the invite as its fragment (never sent to a server).
    let (base, fragment) = link.split_once('#').expect("a fragment");
    assert_eq!(base, "http://127.0.0.1:9/app/");
    assert_eq!(fragment, invite);
    let (info, _) = camesh_node::auth::invite::parse(&invite, camesh_node::auth::now_s()).expect("invite parses");
    assert!(
        info.admin_addrs.iter().any(camesh_node::addr::is_webrtc_direct),
        "the invite lists the admin node's WebRTC-direct addresses: {:?}",
        info.admin_addrs
    );

    let (site, mut reports) = static_server_with_reports(dist()).await;
    let url = format!("{site}index.html?report#{fragment}");
    let clicked = std::time::Instant::now();
    let _page = open_page(chromium, &url, &dir.path().join("profile"));
    let joined = wait_report(&mut reports, "joining", Duration::from_secs(60), |v| {
        v.get("member").is_some_and(|m| !m.is_null())
    })
    .await;
    println!(
        "page joined in {:?} from load (redeem {} ms): {joined}",
        clicked.elapsed(),
        joined["redeemMs"]
    );
    assert_eq!(joined["member"]["role"], "viewer");
    assert_eq!(joined["member"]["name"], "phone");
    assert_eq!(joined["member"]["fleet"], "t-web-join");
    let page_peer = joined["peerId"].as_str().expect("peer id").to_owned();

    // The admin node's command ends by itself, naming the page's peer id.
    let out = tokio::time::timeout(Duration::from_secs(20), async {
        let status = inviting.wait().await.expect("wait");
        let mut err = String::new();
        if let Some(mut e) = inviting.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        (status, err)
    })
    .await
    .expect("mesh fleet invite ends once redeemed");
    assert!(out.0.success(), "mesh fleet invite: {}", out.1);
    assert!(
        out.1.contains(&format!("redeemed by {page_peer}")),
        "redeemed by the page: {}",
        out.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_the_web_app() {
    init_tracing();
    if !dist().join("app.js").exists() {
        let _ = can_run(
            "gateway_serves_the_web_app",
            Err(format!("{} is not built: run scripts/web.sh", dist().display())),
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("viewer");
    cli::mesh_folder(&data, "t-web-gw", "depot-pc", &["*"], camesh_node::auth::Rights::LIVE);
    let mut cmd = cli::mesh_command(&data, "t-web-gw", &[]);
    cmd.args(["view", "--port", "0", "--duration", "60s", "--web-app"])
        .arg(dist());
    let (_view, addr) = cli::spawn_mesh_view(cmd).await;
    let limit = Duration::from_secs(10);
    let index = http::get(addr, "/app/", limit).await.expect("GET /app/");
    assert_eq!(index.status, 200, "{}", index.text());
    assert_eq!(
        index.body,
        std::fs::read(dist().join("index.html")).expect("index.html")
    );
    let csp = index.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    let app = http::get(addr, "/app/app.js", limit).await.expect("GET /app/app.js");
    assert_eq!(app.status, 200);
    assert!(app
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/javascript")));
    assert_eq!(app.body, std::fs::read(dist().join("app.js")).expect("app.js"));
    for bad in [
        "/app/..%2fCargo.toml",
        "/app/.hidden",
        "/app/nothing.js",
        "/app/x/app.js",
    ] {
        let r = http::get(addr, bad, limit).await.expect("GET");
        assert_eq!(r.status, 404, "{bad}: {}", r.text());
    }
    let root = http::get(addr, "/app", limit).await.expect("GET /app");
    assert_eq!(root.status, 308);
}

/// Where a test writes its screenshots: the test output folder (target/tmp/web-shots).
fn shot_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-shots");
    std::fs::create_dir_all(&dir).expect("shots folder");
    dir.join(name)
}

/// Loads `url` in headless Chromium at 390x844 (mobile, touch) with `profile`, waits
/// until `cond` (JavaScript) holds, writes a PNG of the viewport to `out` and returns
/// the page's `window.camesh` (tests/tools/page_shot.py: the DevTools protocol on a pipe).
async fn page_shot(chromium: &str, profile: &Path, url: &str, cond: &str, out: &Path) -> serde_json::Value {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/page_shot.py");
    let run = tokio::process::Command::new("python3")
        .arg(tool)
        .arg(chromium)
        .arg(profile)
        .arg(url)
        .arg(cond)
        .arg(out)
        .args(["390", "844", "60"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("page_shot ends")
        .expect("python3 runs");
    let state: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    assert!(
        o.status.success(),
        "{cond} did not hold: {state}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let png = std::fs::read(out).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_watches_a_camera_with_its_grant_and_is_refused_without() {
    use camesh_node::auth::grant::GrantRequest;
    use camesh_node::auth::{now_s, Rights};
    use camesh_node::config::Role;
    use camesh_proto::pb::MemberRole;
    init_tracing();
    let test = "page_watches_a_camera_with_its_grant_and_is_refused_without";
    let Some(chromium) = web_ready(test) else {
        return;
    };
    let name = "t-web-watch";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let mut c = loopback_config(Role::Camera, name);
    c.node.webrtc = Some(true);
    c.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let cam_addr = cam
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("the camera listens on WebRTC-direct");

    // 1. The page joins with the link of `mesh fleet invite --role viewer`.
    let JoinedPage {
        site,
        mut reports,
        profile,
        peer: page_peer,
        inviting: _inviting,
    } = join_page(chromium, &admin, dir.path().join("profile")).await;

    // 2. A member without a grant for cam1 is refused with a readable message.
    let url = format!("{site}index.html?report#peer={cam_addr}&watch=cam1");
    let page = open_page(chromium, &url, &profile);
    let refused = wait_report(&mut reports, "refusal", Duration::from_secs(60), |v| {
        v["grid"]["tiles"]["cam1"]["refusal"].is_string()
    })
    .await;
    let why = refused["grid"]["tiles"]["cam1"]["refusal"].as_str().expect("text");
    println!("refused without a grant: {why}");
    assert!(why.contains("no grant presented for camera cam1"), "{why}");
    assert_eq!(refused["grid"]["tiles"]["cam1"]["decoded"], 0);
    close_page(page).await;

    // 3. With a grant (pasted, as text from `mesh grant`) it watches: frames decoded
    // by WebCodecs at the camera's size, none failed, none rejected.
    let now = now_s();
    let g = f.grant(&GrantRequest {
        holder: page_peer,
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });
    let url = format!("{site}index.html?report#{}&watch=cam1", grant_text(&g));
    let page = open_page(chromium, &url, &profile);
    let playing = wait_report(&mut reports, "watching", Duration::from_secs(60), |v| {
        v["grid"]["tiles"]["cam1"]["decoded"].as_u64().is_some_and(|n| n >= 150)
    })
    .await;
    let t = &playing["grid"]["tiles"]["cam1"];
    let lat = tile_latencies(t);
    println!(
        "page watched cam1 over {} (streams reopened: {}): {} decoded, {} received, first frame {} ms after the watch began (dial, membership, stream, keyframe, decode), capture-to-drawn (frames captured after the first was drawn) p50 {:.1} ms p99 {:.1} ms over {} frames",
        t["path"],
        t["reopened"],
        t["decoded"],
        t["received"],
        t["firstFrameMs"],
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    assert_eq!(t["decodeErrors"], 0, "{t}");
    assert_eq!(t["rejected"], 0, "{t}");
    assert_eq!(
        (t["width"].as_u64(), t["height"].as_u64()),
        (Some(640), Some(360)),
        "{t}"
    );
    assert!(t["refusal"].is_null(), "{t}");
    close_page(page).await;

    // The MSE fallback (what a browser without WebCodecs plays through; `?mse` forces it
    // here): the same opened frames as fragmented MP4 into a MediaSource and a <video>.
    let page = open_page(chromium, &format!("{site}index.html?report&mse#watch=cam1"), &profile);
    let mse = wait_report(&mut reports, "watching through MSE", Duration::from_secs(60), |v| {
        let t = &v["grid"]["tiles"]["cam1"];
        t["decoded"].as_u64().is_some_and(|n| n >= 90)
            || t["endedUnixMs"].is_i64()
            || t["decodeErrors"].as_u64() > Some(0)
    })
    .await;
    let t = &mse["grid"]["tiles"]["cam1"];
    let lat = tile_latencies(t);
    println!(
        "page watched cam1 through MSE: {} frames presented, {} received, decode errors {}, {}x{}, first frame {} ms, capture-to-presented p50 {:.1} ms p99 {:.1} ms over {} frames",
        t["decoded"],
        t["received"],
        t["decodeErrors"],
        t["width"],
        t["height"],
        t["firstFrameMs"],
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    assert_eq!(t["player"], "mse", "{t}");
    assert!(t["decoded"].as_u64().is_some_and(|n| n >= 90), "{t}");
    assert_eq!(t["decodeErrors"], 0, "{t}");
    assert_eq!(t["rejected"], 0, "{t}");
    assert_eq!(
        (t["width"].as_u64(), t["height"].as_u64()),
        (Some(640), Some(360)),
        "{t}"
    );
    close_page(page).await;

    // A phone-sized (390x844) screenshot of the grid playing, into the test output.
    let shot = shot_path("grid-390x844.png");
    let state = page_shot(
        chromium,
        &profile,
        &format!("{site}index.html#watch=cam1"),
        "window.camesh?.grid?.tiles?.cam1?.decoded > 30",
        &shot,
    )
    .await;
    println!(
        "grid screenshot: {} ({} frames decoded when taken)",
        shot.display(),
        state["grid"]["tiles"]["cam1"]["decoded"]
    );
    assert_eq!(state["grid"]["tiles"]["cam1"]["decodeErrors"], 0);

    // A fleet member certified for another camera serves one it calls "cam1": with the
    // page's valid grant for cam1 it would stream, but the page checks the certificate
    // of the node that seals the frames, as a node does, and refuses.
    let imp_dir = dir.path().join("impostor");
    f.enroll_dir(&imp_dir, MemberRole::Camera, "impostor", &["side-door".into()], 3600)
        .expect("enroll");
    let mut ic = loopback_config(Role::Camera, name);
    ic.node.webrtc = Some(true);
    ic.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    let impostor = camesh_node::Node::spawn(ic, &imp_dir).await.expect("impostor starts");
    let imp_addr = impostor
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("WebRTC-direct");
    let url = format!(
        "{site}index.html?report#peer={imp_addr}&watch=cam1&via={}",
        impostor.peer_id()
    );
    let page = open_page(chromium, &url, &profile);
    let refused = wait_report(&mut reports, "impostor refused", Duration::from_secs(60), |v| {
        v["grid"]["tiles"]["cam1"]["refusal"].is_string()
    })
    .await;
    let t = &refused["grid"]["tiles"]["cam1"];
    println!("page pointed at an impostor: {}", t["refusal"]);
    assert!(
        t["refusal"]
            .as_str()
            .is_some_and(|r| r.contains("holds no certificate for camera cam1")),
        "{t}"
    );
    assert_eq!(t["decoded"], 0, "{t}");
    close_page(page).await;

    // 4. The admin revokes the page: the camera cuts its stream (printed: the issue's
    // bound is 2 s; asserted only generously, as timing on a shared machine varies) ...
    drain_reports(&mut reports);
    let page = open_page(chromium, &format!("{site}index.html?report#watch=cam1"), &profile);
    wait_report(&mut reports, "watching again", Duration::from_secs(60), |v| {
        v["grid"]["tiles"]["cam1"]["decoded"].as_u64().is_some_and(|n| n >= 30)
    })
    .await;
    let r = f.revoke(&[page_peer], &[], "lost phone");
    let revoked_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    cam.trust().apply_entry(&r).expect("the camera takes the revocation");
    let cut = wait_report(&mut reports, "cut off", Duration::from_secs(30), |v| {
        v["grid"]["tiles"]["cam1"]["endedUnixMs"].is_i64()
    })
    .await;
    let t = &cut["grid"]["tiles"]["cam1"];
    // The last frame the page drew, counted from the revocation (a frame already on its
    // way may still be drawn just after it; none after the cut).
    let after_ms = (t["lastDrawnUnixMs"].as_i64().expect("frames were drawn") - revoked_ms).max(0);
    println!(
        "revoked page: last frame drawn {after_ms} ms after the revocation; the tile gave up {} ms after it ({} frames decoded in all, reopened {}, state {}, refusal {})",
        t["endedUnixMs"].as_i64().unwrap_or(0) - revoked_ms,
        t["decoded"],
        t["reopened"],
        t["state"],
        t["refusal"]
    );
    assert!(after_ms < 5_000, "cut off after {after_ms} ms");
    close_page(page).await;

    // ... and what it kept (certificate, grant, peer) no longer opens anything.
    drain_reports(&mut reports);
    let page = open_page(chromium, &format!("{site}index.html?report#watch=cam1"), &profile);
    let refused = wait_report(&mut reports, "revoked page refused", Duration::from_secs(60), |v| {
        v["grid"]["tiles"]["cam1"]["refusal"].is_string()
            || v["grid"]["errors"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    println!(
        "revoked page reloaded: errors {}, tile {}",
        refused["grid"]["errors"], refused["grid"]["tiles"]
    );
    assert!(
        refused["grid"]["tiles"]["cam1"]["decoded"].as_u64().unwrap_or(0) == 0,
        "{refused}"
    );
    close_page(page).await;
    // The impostor stays up to here: the page keeps its address, and a peer that no
    // longer answers would only add a join timeout to each later step.
    impostor.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_rejects_a_tampered_frame_from_a_forwarder() {
    use camesh_node::auth::grant::GrantRequest;
    use camesh_node::auth::{now_s, signed, Rights};
    use camesh_node::config::Role;
    use camesh_node::stream::client;
    use camesh_node::stream::hub::Hub;
    use camesh_proto::pb::{self, MemberRole};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    init_tracing();
    let test = "page_rejects_a_tampered_frame_from_a_forwarder";
    let Some(chromium) = web_ready(test) else {
        return;
    };
    let name = "t-web-tamper";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let webrtc_addr = |addrs: Vec<camesh_node::Multiaddr>| {
        addrs
            .into_iter()
            .find(camesh_node::addr::is_webrtc_direct)
            .expect("a WebRTC-direct address")
    };
    let mut c = loopback_config(Role::Camera, name);
    c.node.webrtc = Some(true);
    c.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let cam_addrs = cam.dial_addrs().await.expect("addrs");

    // A forwarder (a member holding `forward`) that re-serves cam1 as sealed frames, and
    // changes one byte of one frame's ciphertext on the way.
    let fwd_dir = dir.path().join("fwd");
    f.enroll_dir(&fwd_dir, MemberRole::Nvr, "forwarder", &[], 3600)
        .expect("enroll");
    f.grant_dir(&fwd_dir, &["cam1".into()], Rights::FORWARD, 3600)
        .expect("grant");
    let mut fc = loopback_config(Role::Nvr, name);
    fc.node.webrtc = Some(true);
    fc.node.bootstrap = cam_addrs.clone();
    let fwd = camesh_node::Node::spawn(fc, &fwd_dir).await.expect("forwarder starts");
    // Subscribe once the two have proved membership to each other (on a loaded machine
    // the bootstrap dial may still be under way).
    let met = wait_until(Duration::from_secs(30), || fwd.trust().member(&cam.peer_id()).is_some()).await;
    assert!(met, "the forwarder met the camera");
    let mut req = live("cam1");
    req.grant = signed::encode(&fwd.trust().grant_for("cam1", Rights::FORWARD).expect("grant"));
    let mut upstream = client::subscribe(&mut fwd.stream_control(), cam.peer_id(), req, &fwd.config().limits)
        .await
        .expect("the forwarder takes the camera's stream");
    let hub = Arc::new(Hub::forwarded("cam1", "cam1", vec![], cam.peer_id(), 1 << 22));
    hub.set_params(camesh_node::stream::server::codec_params(
        upstream.accept.codec.as_ref().expect("codec"),
    ));
    fwd.hubs().insert_forwarded(pb::Profile::Main, hub.clone());
    // Frames passed on; the 45th after the page's first is sent with one byte flipped.
    let passed = Arc::new(AtomicU64::new(0));
    let tamper_at = Arc::new(AtomicU64::new(u64::MAX));
    let tampered_seq = Arc::new(AtomicU64::new(u64::MAX));
    let (h, n, at, seq) = (hub.clone(), passed.clone(), tamper_at.clone(), tampered_seq.clone());
    let pump = tokio::spawn(async move {
        while let Ok(Some(mut fr)) = upstream.next_sealed().await {
            if !fr.header.new_key.is_empty() {
                continue;
            }
            let i = n.fetch_add(1, Ordering::Relaxed);
            if i == at.load(Ordering::Relaxed) && !fr.payload.is_empty() {
                let mut p = fr.payload.to_vec();
                let mid = p.len() / 2;
                p[mid] ^= 0x01;
                fr.payload = p.into();
                fr.wire = None;
                seq.store(fr.header.sequence, Ordering::Relaxed);
            }
            h.publish_sealed(fr);
        }
    });

    // The page joins, then watches cam1 through the forwarder (keys from the camera).
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
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });
    let fwd_addr = webrtc_addr(fwd.dial_addrs().await.expect("addrs"));
    let url = format!(
        "{site}index.html?report#{}&peer={}&peer={}&watch=cam1&via={}",
        grant_text(&g),
        fwd_addr,
        webrtc_addr(cam_addrs),
        fwd.peer_id()
    );
    let page = open_page(chromium, &url, &profile);
    let playing = wait_report(
        &mut reports,
        "watching via the forwarder",
        Duration::from_secs(60),
        |v| v["grid"]["tiles"]["cam1"]["decoded"].as_u64().is_some_and(|n| n >= 10),
    )
    .await;
    println!("through the forwarder: {}", playing["grid"]["tiles"]["cam1"]["path"]);
    tamper_at.store(passed.load(Ordering::Relaxed) + 15, Ordering::Relaxed);
    let after = wait_report(&mut reports, "after the tampered frame", Duration::from_secs(60), |v| {
        let t = &v["grid"]["tiles"]["cam1"];
        t["rejected"].as_u64().is_some_and(|r| r >= 1) && t["decoded"].as_u64().is_some_and(|d| d >= 120)
    })
    .await;
    let t = &after["grid"]["tiles"]["cam1"];
    println!(
        "tampered frame #{}: page rejected {} frame(s) ({}), decoded {} in all, decode errors {}",
        tampered_seq.load(Ordering::Relaxed),
        t["rejected"],
        t["rejectReasons"],
        t["decoded"],
        t["decodeErrors"]
    );
    let reasons = t["rejectReasons"].to_string();
    assert!(reasons.contains("failed authentication"), "{reasons}");
    assert_eq!(t["decodeErrors"], 0, "{t}");
    assert!(t["path"].as_str().is_some_and(|p| p.starts_with("forwarded by")), "{t}");
    close_page(page).await;
    pump.abort();
    fwd.shutdown();
    cam.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_a_recording_from_the_time_it_seeks_to() {
    use camesh_node::auth::grant::GrantRequest;
    use camesh_node::auth::{now_s, Rights};
    use camesh_node::config::{RecordRule, Role};
    init_tracing();
    let test = "page_plays_a_recording_from_the_time_it_seeks_to";
    let Some(chromium) = web_ready(test) else {
        return;
    };
    let name = "t-web-nvr";
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fleet(name);
    let admin = dir.path().join("admin");
    f.save(&admin).expect("admin folder");
    let mut c = loopback_config(Role::Camera, name);
    c.cameras = vec![camera("cam1", "cam-640x360-30fps-gop2s.h264")];
    let cam = spawn_node(c, &dir.path().join("cam")).await;
    let nvr_dir = dir.path().join("nvr");
    f.grant_dir(&nvr_dir, &["cam1".into()], Rights::LIVE.union(Rights::RECORD), 3600)
        .expect("grant");
    let mut nc = loopback_config(Role::Nvr, name);
    nc.node.webrtc = Some(true);
    nc.node.bootstrap = cam.dial_addrs().await.expect("addrs");
    nc.nvr.records = vec![RecordRule {
        camera: "cam1".into(),
        ..RecordRule::default()
    }];
    let nvr = spawn_node(nc.clone(), &nvr_dir).await;
    let recorder = camesh_node::nvr::Nvr::start(nvr.reach(), nc.nvr.clone(), &nvr_dir)
        .await
        .expect("NVR starts");
    let recording_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let nvr_addr = nvr
        .dial_addrs()
        .await
        .expect("addrs")
        .into_iter()
        .find(camesh_node::addr::is_webrtc_direct)
        .expect("the NVR listens on WebRTC-direct");

    // The page joins while the NVR records.
    let JoinedPage {
        site,
        reports: _reports,
        profile,
        peer: page_peer,
        inviting: _inviting,
    } = join_page(chromium, &admin, dir.path().join("profile")).await;
    // At least 8 s recorded: the seek lands 5 s in, two GOPs after the start.
    let recorded = wait_until(Duration::from_secs(60), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64 - recording_from > 8_000)
            .unwrap_or(false)
    })
    .await;
    assert!(recorded);
    let now = now_s();
    let g = f.grant(&GrantRequest {
        holder: page_peer,
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE.union(Rights::PLAYBACK),
        not_before_unix_s: now - 60,
        not_after_unix_s: now + 3600,
    });
    let seek_ms = recording_from + 5_000;
    let shot = shot_path("playback-390x844.png");
    let url = format!(
        "{site}index.html#{}&peer={nvr_addr}&play=cam1&nvr={}&at={seek_ms}",
        grant_text(&g),
        nvr.peer_id()
    );
    let state = page_shot(
        chromium,
        &profile,
        &url,
        "window.camesh?.grid?.playback?.decoded > 20",
        &shot,
    )
    .await;
    let p = &state["grid"]["playback"];
    let first_us = p["firstCaptureUnixUs"].as_i64().expect("a first frame");
    let off_ms = first_us / 1000 - seek_ms;
    let spans = state["grid"]["coverage"].as_array().map(Vec::len).unwrap_or(0);
    println!(
        "playback: seek to {seek_ms}, first frame drawn was captured {off_ms} ms from it ({} frames decoded, {} decode errors, first frame {} ms after asking, {spans} coverage span(s)); screenshot {}",
        p["decoded"],
        p["decodeErrors"],
        p["firstFrameMs"],
        shot.display()
    );
    assert!(spans >= 1, "a coverage timeline: {state}");
    // The NVR starts at the keyframe before the time asked for: within one GOP (2 s).
    assert!(
        (-2_100..=100).contains(&off_ms),
        "first frame {off_ms} ms from the seek"
    );
    assert_eq!(p["decodeErrors"], 0, "{p}");
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(640), Some(360)),
        "{p}"
    );
    drop(recorder);
    nvr.shutdown();
    cam.shutdown();
}
