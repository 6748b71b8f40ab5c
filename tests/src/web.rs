//! Driving the web app (web/dist) in real headless Chromium: a tiny static server on
//! 127.0.0.1 that also takes the page's JSON reports, a page per Chromium process, the
//! viewer invite a `mesh fleet invite` prints, and the grant text the page takes. Shared by
//! tests/tests/web_page.rs and the bench's browser section.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::{bin, can_run, have};

pub fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Serves the files of `root` (flat: names of letters, digits, '.', '-', '_') on
/// 127.0.0.1; anything else is 404. Returns the base URL.
pub async fn static_server(root: PathBuf) -> String {
    static_server_with_reports(root).await.0
}

/// [`static_server`], and the bodies of `POST /report` (the page's `?report` hook: its
/// state as JSON after each change), in order.
pub async fn static_server_with_reports(root: PathBuf) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_with_reports(listener, root)
}

/// [`static_server_with_reports`] on 127.0.0.1 inside network namespace `ns`: only a
/// browser in that namespace reaches it (as a page on the loopback address, a secure
/// context: WebCrypto, WebCodecs).
pub fn static_server_in(ns: &str, root: PathBuf) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let std = crate::netns::bind_tcp_in(ns, ([127, 0, 0, 1], 0).into()).expect("bind in the namespace");
    serve_with_reports(tokio::net::TcpListener::from_std(std).expect("tokio listener"), root)
}

fn serve_with_reports(
    listener: tokio::net::TcpListener,
    root: PathBuf,
) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let (reports, rx) = tokio::sync::mpsc::channel::<String>(256);
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            let reports = reports.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16 << 10 {
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_owned();
                if line.starts_with("POST /report ") {
                    let head_end = got
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(got.len(), |p| p + 4);
                    let len = String::from_utf8_lossy(&got[..head_end])
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0)
                        .min(1 << 20);
                    let mut body = got[head_end..].to_vec();
                    while body.len() < len {
                        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    let _ = reports.try_send(String::from_utf8_lossy(&body).into_owned());
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                    return;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/");
                let name = match path.trim_start_matches('/') {
                    "" => "index.html",
                    n => n,
                };
                let safe =
                    name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !name.starts_with('.');
                let body = if safe {
                    std::fs::read(root.join(name)).ok()
                } else {
                    None
                };
                let head = match &body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                        content_type(name),
                        b.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                };
                let _ = s.write_all(head.as_bytes()).await;
                if let Some(b) = body {
                    let _ = s.write_all(&b).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/"), rx)
}

pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
}

/// Chromium, when a web test can run: Chromium installed, `web/dist` built, and `more`
/// (e.g. the NAT lab) available; otherwise `can_run` says why the test is skipped.
pub fn web_test_ready(test: &str, more: impl FnOnce() -> Result<(), String>) -> Option<&'static str> {
    let chromium = chromium();
    let built = dist().join("index.html").exists() && dist().join("app.js").exists();
    let available = match (chromium, built) {
        (None, _) => Err("no chromium (scripts/setup.sh installs it)".to_owned()),
        (_, false) => Err(format!("{} is not built: run scripts/web.sh", dist().display())),
        (Some(_), true) => more(),
    };
    if can_run(test, available) {
        chromium
    } else {
        None
    }
}

/// Headless Chromium showing `url` with `profile`, until the child is dropped.
pub fn open_page(chromium: &str, url: &str, profile: &Path) -> tokio::process::Child {
    open_page_in(None, chromium, url, profile)
}

/// [`open_page`] with more Chromium switches (e.g. `--autoplay-policy=no-user-gesture-required`).
pub fn open_page_with(chromium: &str, url: &str, profile: &Path, switches: &[&str]) -> tokio::process::Child {
    spawn_page(None, chromium, url, profile, switches)
}

/// [`open_page`] with Chromium inside network namespace `ns` (`ip netns exec`, which
/// execs it: the child is Chromium itself).
pub fn open_page_in(ns: Option<&str>, chromium: &str, url: &str, profile: &Path) -> tokio::process::Child {
    spawn_page(ns, chromium, url, profile, &[])
}

/// Environment for a Chromium using `profile`: its singleton socket folder (TMPDIR) and
/// PulseAudio's runtime folder (XDG_RUNTIME_DIR) beside the profile, in the test's
/// temporary directory, not in /tmp where nothing removes them.
pub fn chromium_env(profile: &Path) -> [(&'static str, std::path::PathBuf); 2] {
    let tmp = profile.parent().unwrap_or(profile).join("chromium-tmp");
    std::fs::create_dir_all(&tmp).expect("chromium's temporary folder");
    [("TMPDIR", tmp.clone()), ("XDG_RUNTIME_DIR", tmp)]
}

fn spawn_page(ns: Option<&str>, chromium: &str, url: &str, profile: &Path, switches: &[&str]) -> tokio::process::Child {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, chromium]);
            c
        }
        None => tokio::process::Command::new(chromium),
    };
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=390,844",
    ])
    .args(switches)
    .envs(chromium_env(profile))
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("chromium starts")
}

/// The page's reports until one satisfies `done` (returned) or one says it failed
/// (`error` set: panics with it), within `limit`.
pub async fn wait_report(
    reports: &mut tokio::sync::mpsc::Receiver<String>,
    what: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(r)) => {
                let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_else(|e| panic!("report {r:?}: {e}"));
                if done(&v) {
                    return v;
                }
                if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                    panic!("{what}: the page failed: {e}\nstate: {v}");
                }
                last = v;
            }
            Ok(None) => panic!("{what}: the report channel closed"),
            Err(_) => panic!("{what}: not within {limit:?}; last report: {last}"),
        }
    }
}

/// A page that joined the fleet with an invite: the site serving `web/dist` (with the
/// page's reports), the browser profile holding its key, its peer id, and the admin's
/// `mesh fleet invite` (kept until the test ends).
#[derive(Debug)]
pub struct JoinedPage {
    pub site: String,
    pub reports: tokio::sync::mpsc::Receiver<String>,
    pub profile: PathBuf,
    pub peer: libp2p::PeerId,
    pub inviting: tokio::process::Child,
}

/// Serves `web/dist`, opens the page with the link of `mesh fleet invite --role viewer`
/// from `admin` in browser profile `profile`, waits until it is a member and closes it.
pub async fn join_page(chromium: &str, admin: &Path, profile: PathBuf) -> JoinedPage {
    let (inviting, _invite, link) = invite_from(admin).await;
    let fragment = link.split_once('#').expect("fragment").1.to_owned();
    let (site, mut reports) = static_server_with_reports(dist()).await;
    let page = open_page(chromium, &format!("{site}index.html?report#{fragment}"), &profile);
    let joined = wait_report(&mut reports, "joining", Duration::from_secs(60), |v| {
        v.get("member").is_some_and(|m| !m.is_null())
    })
    .await;
    let peer = joined["peerId"].as_str().expect("peer id").parse().expect("a peer id");
    close_page(page).await;
    JoinedPage {
        site,
        reports,
        profile,
        peer,
        inviting,
    }
}

/// `mesh fleet invite --role viewer` in the admin folder `admin`.
pub async fn invite_from(admin: &Path) -> (tokio::process::Child, String, String) {
    invite_from_in(None, "127.0.0.1", admin).await
}

/// [`invite_from`] with the admin node inside network namespace `ns`, listening on `ip`
/// there (QUIC, and WebRTC-direct beside it: the addresses the invite lists).
pub async fn invite_from_in(ns: Option<&str>, ip: &str, admin: &Path) -> (tokio::process::Child, String, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin("mesh"));
            c
        }
        None => tokio::process::Command::new(bin("mesh")),
    };
    let mut child = cmd
        .env_remove("CAMESH_FLEET")
        .env_remove("CAMESH_FLEET_ROOT")
        .arg("--data-dir")
        .arg(admin)
        .args(["--no-mdns", "--listen", &format!("/ip4/{ip}/udp/0/quic-v1")])
        .args([
            "fleet",
            "invite",
            "--role",
            "viewer",
            "--name",
            "phone",
            "--expires",
            "2m",
        ])
        .args(["--web-url", "http://127.0.0.1:9/app/"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mesh fleet invite starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut invite, mut link) = (None, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("camesh-invite:") {
                invite = Some(l);
            } else if let Some(u) = l.strip_prefix("link: ") {
                link = Some(u.to_owned());
            }
            if invite.is_some() && link.is_some() {
                break;
            }
        }
    })
    .await
    .expect("mesh fleet invite prints its invite in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, invite.expect("an invite line"), link.expect("a link line"))
}

/// Ends a page as a user closing the browser does (SIGTERM, so IndexedDB is flushed).
/// A tile's capture-to-drawn latencies (ms) from a page report (`tiles[camera]`).
pub fn tile_latencies(tile: &serde_json::Value) -> Vec<f64> {
    tile["latencyMs"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default()
}

/// Drops the reports already received (from pages closed since): the next
/// [`wait_report`] then judges only the page opened after this.
pub fn drain_reports(reports: &mut tokio::sync::mpsc::Receiver<String>) {
    while reports.try_recv().is_ok() {}
}

pub async fn close_page(mut page: tokio::process::Child) {
    if let Some(pid) = page.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), page.wait())
        .await
        .is_err()
    {
        let _ = page.kill().await;
    }
}

pub fn grant_text(g: &camesh_proto::pb::Signed) -> String {
    format!(
        "camesh-grant:{}",
        camesh_node::auth::invite::bs58_encode(&camesh_node::auth::signed::encode(g))
    )
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}
