//! A minimal HTTP/1.1 client for tests (GET only, on 127.0.0.1): whole responses, or an
//! endless stream read for a bounded time. Handles `Content-Length`, chunked transfer
//! encoding and read-to-close. Every call is bounded in time and bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was cut off by the time or size limit (a stream).
    pub truncated: bool,
}

impl Response {
    /// The camera ids of an `/api/cameras` answer, in its order.
    pub fn camera_ids(&self) -> Vec<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).expect("json");
        json["cameras"]
            .as_array()
            .expect("cameras")
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GETs `path` and reads the whole response (at most 64 MiB, within `limit`).
pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> std::io::Result<Response> {
    get_with(addr, path, &[], limit).await
}

/// [`get`] with extra request headers (`Authorization`, `Sec-Fetch-Site`...).
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    limit: Duration,
) -> std::io::Result<Response> {
    let r = read(addr, path, headers, limit, 64 << 20).await?;
    if r.truncated {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("GET {path}: incomplete after {limit:?}"),
        ));
    }
    Ok(r)
}

/// GETs `path` and reads for `duration` (or until `max_bytes`), then hangs up: for
/// endless streams like live video. The body holds what arrived, de-chunked.
pub async fn get_for(addr: SocketAddr, path: &str, duration: Duration, max_bytes: usize) -> std::io::Result<Response> {
    read(addr, path, &[], duration, max_bytes).await
}

/// [`get_for`] with extra request headers.
pub async fn get_for_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    duration: Duration,
    max_bytes: usize,
) -> std::io::Result<Response> {
    read(addr, path, headers, duration, max_bytes).await
}

async fn read(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    limit: Duration,
    max_bytes: usize,
) -> std::io::Result<Response> {
    let deadline = Instant::now() + limit;
    let timed_out = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("GET {path}: no answer in {limit:?}"),
        )
    };
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: camesh-tests\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Headers.
    let header_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i;
        }
        if raw.len() > 64 << 10 {
            return Err(std::io::Error::other("headers larger than 64 KiB"));
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .map_err(|_| timed_out())??;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "GET {path}: connection closed before the headers"
            )));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut rest = raw[header_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok());
    let mut truncated = false;
    loop {
        let have = if chunked { dechunk(&rest).0.len() } else { rest.len() };
        let done = if chunked {
            dechunk(&rest).1
        } else {
            length.is_some_and(|l| rest.len() >= l)
        };
        if done {
            break;
        }
        if have >= max_bytes {
            truncated = true;
            break;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                truncated = true;
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => rest.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
    let body = if chunked {
        dechunk(&rest).0
    } else {
        if let Some(l) = length {
            rest.truncate(l);
        }
        rest
    };
    Ok(Response {
        status,
        headers,
        body,
        truncated,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The complete chunks of a chunked body, and whether the last chunk was seen.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let start = eol + 2;
        if data.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}
