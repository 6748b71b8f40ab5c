//! The serving node in its own process.
//!
//! `camesh-bench serve-node` starts one camera node (QUIC on 127.0.0.1) and synthetic
//! cameras on request; its CPU seconds and RSS are then the serving node's alone. The
//! harness drives it with one JSON command per line on stdin and reads one JSON reply per
//! line on stdout ([`ServerProc`]).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use camesh_node::{Multiaddr, Node, PeerId, Role};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use crate::procstat;
use crate::synth::{self, PacerCounters, SynthSpec};

/// Options of the serving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOpts {
    /// 0 turns the GOP cache off.
    pub gop_cache_bytes: usize,
    /// Camera ids its membership certificate binds (viewers refuse any other).
    pub cameras: Vec<String>,
}

impl ServeOpts {
    pub fn new(cameras: &[&str]) -> Self {
        Self {
            gop_cache_bytes: camesh_node::config::Limits::default().gop_cache_bytes,
            cameras: cameras.iter().map(|c| c.to_string()).collect(),
        }
    }

    pub fn with_ids(cameras: Vec<String>) -> Self {
        Self {
            gop_cache_bytes: camesh_node::config::Limits::default().gop_cache_bytes,
            cameras,
        }
    }
}

/// Arguments of the `serve-node` child.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub dir: std::path::PathBuf,
    pub fleet_root: String,
    pub gop_cache_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Cmd {
    /// Start synthetic cameras with these ids.
    Add {
        ids: Vec<String>,
        spec: SynthSpec,
    },
    /// Stop the pacers of these cameras (their subscribers stay, idle).
    Stop {
        ids: Vec<String>,
    },
    Stats,
    Quit,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    peer: String,
    addrs: Vec<String>,
}

/// What the serving process reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ServerStats {
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub published: u64,
    pub published_bytes: u64,
    pub source_skipped: u64,
    pub late_5ms: u64,
    pub max_late_us: u64,
    pub streams_served: u64,
    /// Frames and payload bytes the node's sessions wrote to their streams.
    pub sent_frames: u64,
    pub sent_bytes: u64,
    /// Skips of subscriber queues (overflow → next keyframe), summed over subscribers.
    pub queue_skips: u64,
}

/// The child's side: runs until stdin closes or `quit`.
pub async fn serve(args: ChildArgs) -> anyhow::Result<()> {
    let mut config = crate::loopback_config(Role::Camera, &args.fleet_root);
    config.limits.gop_cache_bytes = args.gop_cache_bytes;
    // One viewer node carries many streams in the throughput runs; the section says so
    // beside its figure (throughput.rs, RAISED). Everything else is what a user gets.
    config.limits.max_streams_per_peer = 1024;
    config.limits.max_streams_total = 65536;
    let node = Node::spawn(config, &args.dir).await?;
    let addrs = node.dial_addrs().await?;
    let mut out = tokio::io::stdout();
    let ready = Ready {
        peer: node.peer_id().to_string(),
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
    };
    write_line(&mut out, &ready).await?;

    let counters = Arc::new(PacerCounters::default());
    let mut cams: HashMap<String, CancellationToken> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let cmd: Cmd = serde_json::from_str(&line).with_context(|| format!("bad command {line:?}"))?;
        match cmd {
            Cmd::Add { ids, spec } => {
                let mut rng = rand::thread_rng();
                for id in &ids {
                    let hub = node.add_hub(id, id);
                    let token = CancellationToken::new();
                    // Cameras are not synchronised: a random phase within the frame period
                    // and a random position in the GOP, so IDRs do not all line up.
                    let phase = Duration::from_nanos(rng.gen_range(0..spec.frame_period().as_nanos() as u64));
                    let gop_offset = rng.gen_range(0..u64::from(spec.gop_frames));
                    tokio::spawn(synth::run_camera(
                        hub,
                        spec,
                        phase,
                        gop_offset,
                        counters.clone(),
                        token.clone(),
                    ));
                    cams.insert(id.clone(), token);
                }
                // Wait until every new hub is live (set_params ran), so subscribers can join.
                for id in &ids {
                    while !node.hubs().get(id).is_some_and(|h| h.is_live()) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                write_line(&mut out, &serde_json::json!({ "ok": ids.len() })).await?;
            }
            Cmd::Stop { ids } => {
                for id in &ids {
                    if let Some(t) = cams.remove(id) {
                        t.cancel();
                    }
                }
                write_line(&mut out, &serde_json::json!({ "ok": ids.len() })).await?;
            }
            Cmd::Stats => {
                let (mut sent_frames, mut sent_bytes, mut queue_skips) = (0, 0, 0);
                for hub in node.hubs().all() {
                    for sub in hub.subscribers() {
                        sent_frames += sub.sent_frames.load(Ordering::Relaxed);
                        sent_bytes += sub.sent_bytes.load(Ordering::Relaxed);
                        queue_skips += sub.stats().skips;
                    }
                }
                let st = ServerStats {
                    cpu_s: procstat::cpu_seconds(),
                    rss_bytes: procstat::rss_bytes(),
                    threads: procstat::threads(),
                    published: counters.published.load(Ordering::Relaxed),
                    published_bytes: counters.bytes.load(Ordering::Relaxed),
                    source_skipped: counters.skipped.load(Ordering::Relaxed),
                    late_5ms: counters.late_5ms.load(Ordering::Relaxed),
                    max_late_us: counters.max_late_us.swap(0, Ordering::Relaxed),
                    streams_served: node.streams_served() as u64,
                    sent_frames,
                    sent_bytes,
                    queue_skips,
                };
                write_line(&mut out, &st).await?;
            }
            Cmd::Quit => break,
        }
    }
    for t in cams.values() {
        t.cancel();
    }
    node.shutdown();
    Ok(())
}

async fn write_line<T: Serialize>(out: &mut tokio::io::Stdout, v: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string(v)?;
    s.push('\n');
    out.write_all(s.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// The harness's handle on a serving process (killed when dropped).
#[derive(Debug)]
pub struct ServerProc {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl ServerProc {
    pub async fn start(opts: ServeOpts) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        crate::fleet().enroll_dir(
            dir.path(),
            camesh_proto::pb::MemberRole::Camera,
            "bench-camera",
            &opts.cameras,
            crate::CERT_VALID_S,
        )?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("serve-node")
            .arg("--dir")
            .arg(dir.path())
            .arg("--fleet-root")
            .arg(crate::fleet().root_text())
            .arg("--gop-cache-bytes")
            .arg(opts.gop_cache_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the serving node process")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
        let mut me = ServerProc {
            peer: PeerId::random(),
            addrs: Vec::new(),
            child,
            stdin,
            stdout,
            _dir: dir,
        };
        let ready: Ready = me.read().await?;
        me.peer = ready.peer.parse()?;
        me.addrs = ready.addrs.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
        if me.addrs.is_empty() {
            bail!("serving node has no address");
        }
        Ok(me)
    }

    async fn read<T: for<'de> Deserialize<'de>>(&mut self) -> anyhow::Result<T> {
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .context("serving node did not answer within 60 s")??
            .ok_or_else(|| anyhow!("serving node exited"))?;
        serde_json::from_str(&line).with_context(|| format!("bad answer {line:?}"))
    }

    async fn send(&mut self, cmd: &Cmd) -> anyhow::Result<()> {
        let mut s = serde_json::to_string(cmd)?;
        s.push('\n');
        self.stdin.write_all(s.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Starts synthetic cameras; returns once they are live.
    pub async fn add(&mut self, ids: &[String], spec: SynthSpec) -> anyhow::Result<()> {
        self.send(&Cmd::Add {
            ids: ids.to_vec(),
            spec,
        })
        .await?;
        let _: serde_json::Value = self.read().await?;
        Ok(())
    }

    pub async fn stop(&mut self, ids: &[String]) -> anyhow::Result<()> {
        self.send(&Cmd::Stop { ids: ids.to_vec() }).await?;
        let _: serde_json::Value = self.read().await?;
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the serving process: SIGSTOP makes a
    /// camera that is silent without closing anything (a stalled uplink).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("the serving process has exited"))?;
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    pub async fn stats(&mut self) -> anyhow::Result<ServerStats> {
        self.send(&Cmd::Stats).await?;
        self.read().await
    }

    pub async fn quit(mut self) -> anyhow::Result<()> {
        let _ = self.send(&Cmd::Quit).await;
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}
