//! The baseline: plain quinn on the same machine, same crypto provider (rustls with
//! aws-lc-rs) as libp2p-quic, no libp2p.
//!
//! `camesh-bench serve-quinn` runs the sending side in its own process (so its CPU time
//! is its own) with two endpoints: rustls's default cipher suite order (AES-256-GCM
//! first) and upstream libp2p-tls's order (ChaCha20-Poly1305 first). rustls servers
//! follow the client's preference, so a client offering only AES-128-GCM (what camesh
//! negotiates: vendor/libp2p-tls offers it first) gets it on the default endpoint. A client opens a
//! bidirectional stream and writes a 16-byte request: `B` pushes bytes as fast as quinn
//! takes them for N seconds on one unidirectional stream; `P` sends synthetic frames
//! paced at 30 fps, each `[u32 len][i64 send time µs][payload]`; `H` does nothing (the
//! client times the handshake).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, BytesMut};
use camesh_node::clock::now_unix_us;
use rand::Rng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::procstat;
use crate::stats::Window;
use crate::synth::{self, SynthSpec};

/// Which TLS 1.3 cipher suite order both sides use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Suite {
    /// rustls + aws-lc-rs defaults: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305.
    RustlsDefault,
    /// upstream libp2p-tls's order: ChaCha20-Poly1305, AES-256-GCM, AES-128-GCM (quinn
    /// needs AES-128-GCM present for its initial packets).
    Libp2pOrder,
    /// What camesh's own QUIC connections negotiate (its patched libp2p-tls offers
    /// AES-128-GCM first, and both ends are camesh): AES-128-GCM only, so no other suite
    /// can be picked.
    Camesh,
}

impl Suite {
    pub fn label(self) -> &'static str {
        match self {
            Suite::RustlsDefault => "AES-256-GCM (rustls default)",
            Suite::Libp2pOrder => "ChaCha20-Poly1305 (upstream libp2p-tls order)",
            Suite::Camesh => "AES-128-GCM only (what camesh negotiates)",
        }
    }

    fn provider(self) -> rustls::crypto::CryptoProvider {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        match self {
            Suite::RustlsDefault => {}
            Suite::Libp2pOrder => {
                p.cipher_suites = vec![
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_AES_128_GCM_SHA256,
                ];
            }
            Suite::Camesh => {
                p.cipher_suites = vec![cs::TLS13_AES_128_GCM_SHA256];
            }
        }
        p
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    cert_hex: String,
    default_addr: SocketAddr,
    libp2p_addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcStats {
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(Into::into))
        .collect()
}

/// Socket buffers the baseline gets: what camesh's QUIC transport asks for
/// (vendor/libp2p-quic: 4 MiB each way), so a kernel-default buffer does not drop
/// datagrams the other side would have kept.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A UDP socket on 127.0.0.1 with [`SOCKET_BUFFER_BYTES`] each way (the kernel may cap it
/// at net.core.rmem_max / wmem_max, as it does for camesh).
fn udp_socket() -> anyhow::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>()?.into())?;
    Ok(s.into())
}

fn endpoint(server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        udp_socket()?,
        Arc::new(quinn::TokioRuntime),
    )?)
}

fn server_endpoint(
    suite: Suite,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = rustls::ServerConfig::builder_with_provider(Arc::new(suite.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    endpoint(Some(config))
}

/// The sending process: runs until stdin closes or says `quit`.
pub async fn serve() -> anyhow::Result<()> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = ck.cert.der().clone();
    let key: PrivateKeyDer<'static> = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()).into();
    let default = server_endpoint(Suite::RustlsDefault, cert.clone(), key.clone_key())?;
    let libp2p = server_endpoint(Suite::Libp2pOrder, cert.clone(), key)?;
    let ready = Ready {
        cert_hex: hex(&cert),
        default_addr: default.local_addr()?,
        libp2p_addr: libp2p.local_addr()?,
    };
    let mut out = tokio::io::stdout();
    out.write_all(format!("{}\n", serde_json::to_string(&ready)?).as_bytes())
        .await?;
    out.flush().await?;
    for ep in [default.clone(), libp2p.clone()] {
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    if let Err(e) = handle(incoming).await {
                        tracing::debug!(error = %e, "quinn baseline connection ended");
                    }
                });
            }
        });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "stats" => {
                let st = ProcStats {
                    cpu_s: procstat::cpu_seconds(),
                    rss_bytes: procstat::rss_bytes(),
                };
                out.write_all(format!("{}\n", serde_json::to_string(&st)?).as_bytes())
                    .await?;
                out.flush().await?;
            }
            "quit" => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    default.close(0u32.into(), b"bye");
    libp2p.close(0u32.into(), b"bye");
    Ok(())
}

async fn handle(incoming: quinn::Incoming) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let (_ctl_send, mut ctl_recv) = conn.accept_bi().await?;
    let mut req = [0u8; 16];
    ctl_recv.read_exact(&mut req).await?;
    let secs = u32::from_be_bytes([req[1], req[2], req[3], req[4]]);
    let run_for = Duration::from_secs(u64::from(secs));
    match req[0] {
        b'B' => {
            let mut s = conn.open_uni().await?;
            let chunk = synth::random_bytes(1 << 20);
            let end = Instant::now() + run_for;
            while Instant::now() < end {
                s.write_chunk(chunk.clone()).await?;
            }
            s.finish()?;
        }
        b'P' | b'M' => {
            let gop_s = u32::from_be_bytes([req[5], req[6], req[7], req[8]]);
            let kbps = u32::from_be_bytes([req[9], req[10], req[11], req[12]]);
            let spec = SynthSpec::cctv(gop_s, u64::from(kbps) * 1000);
            let streams = if req[0] == b'M' {
                u16::from_be_bytes([req[13], req[14]])
            } else {
                1
            };
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..streams {
                let s = conn.open_uni().await?;
                // Like the synthetic cameras: unsynchronised phases and GOPs.
                let (phase, offset) = if i == 0 && req[0] == b'P' {
                    (Duration::ZERO, 0)
                } else {
                    let mut rng = rand::thread_rng();
                    (
                        spec.frame_period().mul_f64(rng.gen_range(0.0..1.0)),
                        rng.gen_range(0..u64::from(spec.gop_frames)),
                    )
                };
                tasks.spawn(send_paced(s, spec, run_for, phase, offset));
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
        }
        b'H' => {}
        m => bail!("unknown mode {m}"),
    }
    conn.closed().await;
    Ok(())
}

/// Sends synthetic frames `[u32 len][i64 µs][payload]` at 30 fps for `run_for`.
async fn send_paced(
    mut s: quinn::SendStream,
    spec: SynthSpec,
    run_for: Duration,
    phase: Duration,
    gop_offset: u64,
) -> anyhow::Result<()> {
    let pool = synth::gop_pool(&spec);
    let start = tokio::time::Instant::now() + phase;
    let period = spec.frame_period();
    let mut n = 0u32;
    while start.elapsed() < run_for {
        tokio::time::sleep_until(start + period * n).await;
        let payload = pool[(u64::from(n) + gop_offset) as usize % pool.len()].clone();
        let mut head = BytesMut::with_capacity(12);
        head.put_u32(payload.len() as u32);
        head.put_i64(now_unix_us());
        s.write_all_chunks(&mut [head.freeze(), payload]).await?;
        n += 1;
    }
    s.finish()?;
    Ok(())
}

/// Reads `[u32 len][i64 µs][payload]` frames into `w` (after `from`) until the stream ends.
async fn read_paced(
    mut recv: quinn::RecvStream,
    w: Arc<std::sync::Mutex<Window>>,
    from: Instant,
    until: Instant,
) -> anyhow::Result<()> {
    let mut head = [0u8; 12];
    let mut buf = vec![0u8; 1 << 18];
    loop {
        match recv.read_exact(&mut head).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let sent = i64::from_be_bytes(head[4..12].try_into()?);
        if len > buf.len() {
            buf.resize(len, 0);
        }
        recv.read_exact(&mut buf[..len]).await?;
        let lat = now_unix_us() - sent;
        let now = Instant::now();
        if now >= from && now < until {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            w.frames += 1;
            w.bytes += len as u64;
            w.lat_us.push(lat);
            if buf.get(4).is_some_and(|b| b & 0x1f == 7) {
                w.key_lat_us.push(lat);
            }
        }
    }
}

/// Result of [`QuinnProc::paced_many`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct PacedMany {
    pub streams: usize,
    pub connections: usize,
    pub window_s: f64,
    pub gbit_s: f64,
    pub sender_cpu_s: f64,
    pub sender_cpu_s_per_gbit: f64,
    pub latency: crate::stats::Latency,
    /// RSS of the sending process before the connections and at the end of the window.
    pub sender_rss_before: u64,
    pub sender_rss_during: u64,
}

/// The harness's handle on the sending process (killed when dropped).
#[derive(Debug)]
pub struct QuinnProc {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    cert: CertificateDer<'static>,
    default_addr: SocketAddr,
    libp2p_addr: SocketAddr,
}

/// Result of a bulk run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bulk {
    pub bytes: u64,
    pub secs: f64,
    pub gbit_s: f64,
    /// CPU seconds of the sending process during the run.
    pub sender_cpu_s: f64,
    /// CPU seconds of the receiving (harness) process during the run.
    pub receiver_cpu_s: f64,
}

impl Bulk {
    /// Gbit/s per core of the sender: what one core of sending buys.
    pub fn sender_gbit_per_core(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.sender_cpu_s.max(1e-3)
    }
}

impl QuinnProc {
    pub async fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("serve-quinn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the quinn baseline process")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
        let line = stdout
            .next_line()
            .await?
            .ok_or_else(|| anyhow!("quinn baseline exited"))?;
        let ready: Ready = serde_json::from_str(&line)?;
        Ok(QuinnProc {
            child,
            stdin,
            stdout,
            cert: CertificateDer::from(unhex(&ready.cert_hex)?),
            default_addr: ready.default_addr,
            libp2p_addr: ready.libp2p_addr,
        })
    }

    pub async fn stats(&mut self) -> anyhow::Result<ProcStats> {
        self.stdin.write_all(b"stats\n").await?;
        self.stdin.flush().await?;
        let line = self
            .stdout
            .next_line()
            .await?
            .ok_or_else(|| anyhow!("quinn baseline exited"))?;
        Ok(serde_json::from_str(&line)?)
    }

    pub async fn quit(mut self) -> anyhow::Result<()> {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        Ok(())
    }

    fn client(&self, suite: Suite) -> anyhow::Result<(quinn::Endpoint, SocketAddr)> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone())?;
        let crypto = rustls::ClientConfig::builder_with_provider(Arc::new(suite.provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?;
        let mut ep = endpoint(None)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        // The same-load runs open one stream per camera.
        transport.max_concurrent_uni_streams(4096u32.into());
        config.transport_config(Arc::new(transport));
        ep.set_default_client_config(config);
        let addr = match suite {
            // The default endpoint offers every suite and follows the client's order.
            Suite::RustlsDefault | Suite::Camesh => self.default_addr,
            Suite::Libp2pOrder => self.libp2p_addr,
        };
        Ok((ep, addr))
    }

    async fn open(
        &self,
        suite: Suite,
        req: [u8; 16],
    ) -> anyhow::Result<(quinn::Endpoint, quinn::Connection, quinn::SendStream)> {
        let (ep, addr) = self.client(suite)?;
        let conn = ep.connect(addr, "localhost")?.await?;
        let (mut ctl, _) = conn.open_bi().await?;
        ctl.write_all(&req).await?;
        Ok((ep, conn, ctl))
    }

    /// Pushes bytes as fast as quinn goes for `secs` on one stream.
    pub async fn bulk(&mut self, suite: Suite, secs: u32) -> anyhow::Result<Bulk> {
        let mut req = [0u8; 16];
        req[0] = b'B';
        req[1..5].copy_from_slice(&secs.to_be_bytes());
        let before = self.stats().await?;
        let my_cpu = procstat::cpu_seconds();
        let (ep, conn, _ctl) = self.open(suite, req).await?;
        let mut recv = conn.accept_uni().await?;
        let mut bytes = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while let Some(chunk) = recv.read_chunk(1 << 20, true).await? {
            let now = Instant::now();
            if first.is_none() {
                first = Some(now);
            } else {
                bytes += chunk.bytes.len() as u64;
            }
            last = now;
        }
        let receiver_cpu_s = procstat::cpu_seconds() - my_cpu;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        let after = self.stats().await?;
        let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
        Ok(Bulk {
            bytes,
            secs,
            gbit_s: bytes as f64 * 8.0 / 1e9 / secs.max(1e-9),
            sender_cpu_s: after.cpu_s - before.cpu_s,
            receiver_cpu_s,
        })
    }

    /// Paced synthetic frames for `secs`; latencies of frames after `warmup`.
    pub async fn paced(
        &mut self,
        suite: Suite,
        secs: u32,
        warmup: Duration,
        spec: SynthSpec,
    ) -> anyhow::Result<Window> {
        let mut req = [0u8; 16];
        req[0] = b'P';
        req[1..5].copy_from_slice(&secs.to_be_bytes());
        let gop_s = spec.gop_frames / spec.fps.max(1);
        req[5..9].copy_from_slice(&gop_s.to_be_bytes());
        req[9..13].copy_from_slice(&((spec.bitrate() / 1000.0) as u32).to_be_bytes());
        let (ep, conn, _ctl) = self.open(suite, req).await?;
        let mut recv = conn.accept_uni().await?;
        let start = Instant::now();
        let mut w = Window::default();
        let mut head = [0u8; 12];
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match recv.read_exact(&mut head).await {
                Ok(()) => {}
                Err(quinn::ReadExactError::FinishedEarly(_)) => break,
                Err(e) => return Err(e.into()),
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let sent = i64::from_be_bytes(head[4..12].try_into()?);
            if len > buf.len() {
                buf.resize(len, 0);
            }
            recv.read_exact(&mut buf[..len]).await?;
            let lat = now_unix_us() - sent;
            if start.elapsed() >= warmup {
                w.frames += 1;
                w.bytes += len as u64;
                w.lat_us.push(lat);
                // A keyframe starts with its SPS (NAL type 7) in these payloads.
                if buf.get(4).is_some_and(|b| b & 0x1f == 7) {
                    w.key_lat_us.push(lat);
                }
            }
        }
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        Ok(w)
    }

    /// `streams` paced 4 Mbit/s streams spread over `connections` connections: the same
    /// load as the camesh throughput step, on plain quinn. Measures the window after
    /// `warmup`.
    pub async fn paced_many(
        &mut self,
        suite: Suite,
        connections: usize,
        streams: usize,
        spec: SynthSpec,
        warmup: Duration,
        window: Duration,
    ) -> anyhow::Result<PacedMany> {
        let secs = (warmup + window).as_secs() as u32 + 2;
        let before = self.stats().await?;
        let w = Arc::new(std::sync::Mutex::new(Window::default()));
        let from = Instant::now() + warmup;
        let until = from + window;
        let mut conns = Vec::new();
        let mut readers = tokio::task::JoinSet::new();
        for c in 0..connections {
            let n = streams / connections + usize::from(c < streams % connections);
            let mut req = [0u8; 16];
            req[0] = b'M';
            req[1..5].copy_from_slice(&secs.to_be_bytes());
            let gop_s = spec.gop_frames / spec.fps.max(1);
            req[5..9].copy_from_slice(&gop_s.to_be_bytes());
            req[9..13].copy_from_slice(&((spec.bitrate() / 1000.0) as u32).to_be_bytes());
            req[13..15].copy_from_slice(&(n as u16).to_be_bytes());
            let (ep, conn, ctl) = self.open(suite, req).await?;
            for _ in 0..n {
                let recv = conn.accept_uni().await?;
                readers.spawn(read_paced(recv, w.clone(), from, until));
            }
            conns.push((ep, conn, ctl));
        }
        tokio::time::sleep_until(from.into()).await;
        let s0 = self.stats().await?;
        let t0 = Instant::now();
        tokio::time::sleep_until(until.into()).await;
        let s1 = self.stats().await?;
        let window_s = t0.elapsed().as_secs_f64();
        while let Some(r) = readers.join_next().await {
            r??;
        }
        for (ep, conn, _) in conns {
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
        let mut w = std::mem::take(&mut *w.lock().unwrap_or_else(|e| e.into_inner()));
        let gbit = w.bytes as f64 * 8.0 / 1e9;
        let cpu = s1.cpu_s - s0.cpu_s;
        Ok(PacedMany {
            streams,
            connections,
            window_s,
            gbit_s: gbit / window_s,
            sender_cpu_s: cpu,
            sender_cpu_s_per_gbit: cpu / gbit.max(1e-9),
            latency: crate::stats::Latency::from_us(&mut w.lat_us),
            sender_rss_before: before.rss_bytes,
            sender_rss_during: s1.rss_bytes,
        })
    }

    /// Times `n` fresh QUIC handshakes (connect until the connection is established).
    pub async fn handshakes(&mut self, suite: Suite, n: usize) -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (ep, addr) = self.client(suite)?;
            let t = Instant::now();
            let conn = ep.connect(addr, "localhost")?.await?;
            out.push(t.elapsed().as_secs_f64() * 1000.0);
            let (mut ctl, _) = conn.open_bi().await?;
            let mut req = [0u8; 16];
            req[0] = b'H';
            ctl.write_all(&req).await?;
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
        Ok(out)
    }
}
