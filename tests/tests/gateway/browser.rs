//! A real browser: headless Chromium opens the gateway's page, which plays the camera
//! through Media Source Extensions and reports how far its video element got to a tiny
//! HTTP server of the test's.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use camesh_tests::*;

use super::{fleet_with_gateway, GOP2};

/// A tiny HTTP server collecting the page's reports (`GET /report?...`).
async fn report_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_owned();
                let _ = tx.try_send(line);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (addr, rx)
}

fn query_of(line: &str) -> std::collections::HashMap<String, String> {
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_plays_the_live_page() {
    init_tracing();
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI: scripts/setup.sh installs it"
        );
        eprintln!("SKIPPED headless_chromium_plays_the_live_page: no chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (cam, viewer, gw) = fleet_with_gateway(dir.path(), "t-gw-chromium", &[("cam1", GOP2)]).await;
    let (report_addr, mut reports) = report_server().await;
    let url = format!("{}?report=http://{report_addr}/report", gw.url());
    let profile = dir.path().join("chromium-profile");
    let log = std::fs::File::create(dir.path().join("chromium.log")).expect("log");
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
        ])
        // Chromium's singleton and PulseAudio's runtime folders beside the profile, not in /tmp.
        .envs(camesh_tests::web::chromium_env(&profile))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");

    // The video element must decode frames with its clock advancing and no media error.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut first: Option<(f64, u64)> = None;
    let mut last = None;
    let verdict = loop {
        let line = match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(l)) => l,
            _ => break Err(format!("no passing report within 60 s; last: {last:?}")),
        };
        let q = query_of(&line);
        if q.get("cam").map(String::as_str) != Some("cam1") {
            continue;
        }
        let t: f64 = q.get("t").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let frames: u64 = q.get("frames").and_then(|v| v.parse().ok()).unwrap_or(0);
        let err = q.get("err").cloned().unwrap_or_default();
        assert!(
            err.is_empty(),
            "the video element reports a media error: {err} ({line})"
        );
        last = Some(q.clone());
        if frames > 0 && first.is_none() {
            first = Some((t, frames));
        }
        if let Some((t0, f0)) = first {
            if t >= t0 + 2.0 && frames >= f0 + 45 {
                break Ok(q);
            }
        }
    };
    let _ = child.kill().await;
    let q = verdict.unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default();
        panic!(
            "{e}\nchromium log (tail):\n{}",
            log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(
        (q.get("w").map(String::as_str), q.get("h").map(String::as_str)),
        (Some("640"), Some("360")),
        "{q:?}"
    );
    gw.shutdown();
    viewer.shutdown();
    cam.shutdown();
}
