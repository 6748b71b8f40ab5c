//! The peer the `peers` and `camera` sections measure camesh against: GStreamer's RTSP
//! server (Debian's gst-rtsp-server through python3-gi, `benches/scripts/rtsp_peer.py`)
//! in a child process, fed a frames file the harness writes; cheap RTSP-over-TCP readers
//! in the harness; and CPU/RSS of any process from `/proc/<pid>`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use camesh_node::media::CodecParams;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Writes the frames file `rtsp_peer.py` serves: a header line with the size and
/// parameter sets, then `[u32 len][u8 key][AVCC access unit]` per frame.
pub fn write_frames<'a>(
    path: &Path,
    params: &CodecParams,
    frames: impl Iterator<Item = (bool, &'a Bytes)>,
) -> anyhow::Result<()> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "CAMESH-FRAMES {} {} {} {}",
        params.width,
        params.height,
        hex(&params.sps),
        hex(&params.pps)
    )?;
    for (key, data) in frames {
        f.write_all(&u32::try_from(data.len())?.to_be_bytes())?;
        f.write_all(&[u8::from(key)])?;
        f.write_all(data)?;
    }
    f.flush()?;
    Ok(())
}

/// The script beside the harness's sources.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rtsp_peer.py")
}

/// GStreamer's RTSP server serving one shared live mount (killed when dropped).
#[derive(Debug)]
pub struct GstPeer {
    child: Child,
    pub pid: u32,
    pub url: String,
}

impl GstPeer {
    pub async fn start(frames: &Path) -> anyhow::Result<Self> {
        // Debian's python3 has gi; a python3 earlier on PATH (pyenv) may not.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script())
            .arg(frames)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting GStreamer's RTSP server (/usr/bin/python3 with python3-gi)")?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        let mut out = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .context("GStreamer's RTSP server did not start within 20 s")??
            .ok_or_else(|| anyhow!("GStreamer's RTSP server exited"))?;
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow!("GStreamer's RTSP server said {line:?}"))?;
        Ok(GstPeer {
            child,
            pid,
            url: format!("rtsp://127.0.0.1:{port}/cam"),
        })
    }

    pub async fn quit(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// CPU seconds process `pid`'s live threads have run, to the nanosecond: the sum of
/// `/proc/<pid>/task/*/schedstat` (time on the CPU). `/proc/<pid>/stat` counts in 10 ms
/// ticks, too coarse for a few ms per second over a 6 s window; threads that exited are
/// not in the sum (both servers keep their threads).
pub fn pid_cpu_s(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ns as f64 / 1e9
}

/// CPU seconds of process `pid`'s live threads by thread name (`comm`: tokio's workers,
/// camesh's `rtsp-source` ingest thread, ...), from `/proc/<pid>/task/*/{comm,schedstat}`.
pub fn pid_cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(0);
        *out.entry(comm.trim().to_string()).or_default() += ns as f64 / 1e9;
    }
    out
}

/// Context switches of process `pid`'s live threads so far (voluntary + involuntary, from
/// `/proc/<pid>/task/*/status`): how often its threads slept and were woken.
pub fn pid_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The child process of this one whose command line holds `arg` (the `serve-node` child).
pub fn child_with_arg(arg: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == me && cmd.split(|b| *b == 0).any(|a| a == arg.as_bytes())).then_some(pid)
    })
}

/// A `/proc/<pid>/status` value (`VmRSS:`, `VmHWM:` in kB; `Threads:`).
pub fn pid_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An RTSP client that has done DESCRIBE, SETUP (RTP/AVP/TCP interleaved) and PLAY.
#[derive(Debug)]
pub struct RtspReader {
    conn: BufReader<TcpStream>,
    session: String,
    url: String,
}

async fn request(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    url: &str,
    cseq: u32,
    extra: &str,
) -> anyhow::Result<(Vec<(String, String)>, String)> {
    let req = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: camesh-bench\r\n{extra}\r\n");
    conn.get_mut().write_all(req.as_bytes()).await?;
    // Interleaved data may come before the answer (a PLAY on shared media that is
    // already running): skip `$` frames.
    loop {
        let first = conn.fill_buf().await?.first().copied();
        match first {
            None => bail!("{method}: connection closed"),
            Some(b'$') => {
                let mut head = [0u8; 4];
                conn.read_exact(&mut head).await?;
                let mut skip = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
                conn.read_exact(&mut skip).await?;
            }
            Some(_) => break,
        }
    }
    let status = line(conn).await?;
    if !status.starts_with("RTSP/1.0 200") {
        bail!("{method}: {}", status.trim());
    }
    let mut headers = Vec::new();
    loop {
        let l = line(conn).await?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok((headers, String::from_utf8_lossy(&body).into_owned()))
}

/// One line of an RTSP answer (bytes that are not UTF-8 are replaced, not an error).
async fn line(conn: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut l = Vec::new();
    if conn.read_until(b'\n', &mut l).await? == 0 {
        bail!("connection closed");
    }
    Ok(String::from_utf8_lossy(&l).into_owned())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl RtspReader {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let host = url
            .strip_prefix("rtsp://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| anyhow!("bad url {url}"))?;
        let mut conn = BufReader::new(TcpStream::connect(host).await?);
        let (h, sdp) = request(&mut conn, "DESCRIBE", url, 1, "Accept: application/sdp\r\n").await?;
        let base = header(&h, "content-base").unwrap_or(url).to_string();
        // The first media's control attribute (GStreamer: `stream=0`, relative to the base).
        let control = sdp
            .lines()
            .skip_while(|l| !l.starts_with("m="))
            .find_map(|l| l.trim().strip_prefix("a=control:"))
            .ok_or_else(|| anyhow!("no a=control in the SDP"))?;
        let track = if control.starts_with("rtsp://") {
            control.to_string()
        } else if base.ends_with('/') {
            format!("{base}{control}")
        } else {
            format!("{base}/{control}")
        };
        let (h, _) = request(
            &mut conn,
            "SETUP",
            &track,
            2,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        )
        .await?;
        let session = header(&h, "session")
            .and_then(|s| s.split(';').next())
            .ok_or_else(|| anyhow!("SETUP gave no session"))?
            .to_string();
        request(
            &mut conn,
            "PLAY",
            &base,
            3,
            &format!("Session: {session}\r\nRange: npt=0-\r\n"),
        )
        .await?;
        Ok(RtspReader {
            conn,
            session,
            url: base,
        })
    }

    /// Reads interleaved data until `cancel` (RTP payload bytes of channel 0 into
    /// `bytes`), with a GET_PARAMETER keep-alive every 20 s; answers in between are read
    /// and dropped.
    pub fn spawn(mut self, bytes: Arc<AtomicU64>, cancel: CancellationToken) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(async move {
            let mut keepalive = tokio::time::interval(Duration::from_secs(20));
            keepalive.tick().await;
            let mut cseq = 4u32;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let mut first = [0u8; 1];
                tokio::select! {
                    _ = cancel.cancelled() => {
                        let req = format!("TEARDOWN {} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {}\r\n\r\n", self.url, self.session);
                        let _ = self.conn.get_mut().write_all(req.as_bytes()).await;
                        return Ok(());
                    }
                    _ = keepalive.tick() => {
                        let req = format!("GET_PARAMETER {} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {}\r\n\r\n", self.url, self.session);
                        cseq += 1;
                        self.conn.get_mut().write_all(req.as_bytes()).await?;
                        continue;
                    }
                    r = self.conn.read_exact(&mut first) => { r?; }
                }
                if first[0] == b'$' {
                    let mut head = [0u8; 3];
                    self.conn.read_exact(&mut head).await?;
                    let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
                    self.conn.read_exact(&mut buf[..len]).await?;
                    if head[0] == 0 {
                        bytes.fetch_add(len.saturating_sub(12) as u64, Ordering::Relaxed);
                    }
                } else {
                    // An RTSP answer (to a keep-alive): headers, then a body if any.
                    let mut len = 0usize;
                    loop {
                        let l = line(&mut self.conn).await?;
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if l.trim().is_empty() {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    self.conn.read_exact(&mut body).await?;
                }
            }
        })
    }
}
