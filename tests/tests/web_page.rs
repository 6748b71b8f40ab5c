//! The web app (web/dist, built by scripts/web.sh) in real headless Chromium: served by a
//! tiny static server on 127.0.0.1, the page makes its Ed25519 identity, starts its
//! libp2p node and shows its peer id; a reload with the same browser profile shows the
//! same peer id (the key lives in IndexedDB), and another profile gets another one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use camesh_tests::*;
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

fn content_type(name: &str) -> &'static str {
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
async fn static_server(root: PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
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
    format!("http://{addr}/")
}

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
