//! Viewers: camesh nodes in the harness process that subscribe to the serving node and
//! record every frame they receive.

use std::sync::{Arc, Mutex};

use camesh_node::auth::Rights;
use camesh_node::clock::now_unix_us;
use camesh_node::stream::client::Subscription;
use camesh_node::{Multiaddr, Node, NodeHandle, PeerId, Role};
use camesh_proto::{pb, MediaFrame};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::Window;

/// A viewer node and the folder holding its identity.
#[derive(Debug)]
pub struct Viewer {
    pub node: NodeHandle,
    _dir: tempfile::TempDir,
}

impl Viewer {
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(Rights::LIVE).await
    }

    /// A node holding `rights` on every camera (`Rights::FORWARD`: a forwarder that never
    /// gets keys).
    pub async fn spawn_with(rights: Rights) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let f = crate::fleet();
        f.enroll_dir(
            dir.path(),
            camesh_proto::pb::MemberRole::Viewer,
            "bench-viewer",
            &[],
            crate::CERT_VALID_S,
        )?;
        f.grant_dir(dir.path(), &["*".to_string()], rights, crate::CERT_VALID_S)?;
        let node = Node::spawn(crate::loopback_config(Role::Viewer, &f.root_text()), dir.path()).await?;
        Ok(Viewer { node, _dir: dir })
    }

    /// Subscribes through forwarder `via` (which must already forward `camera`).
    pub async fn subscribe_via(&self, via: PeerId, camera: &str) -> anyhow::Result<Subscription> {
        Ok(self.node.subscribe_via(camera, via, live_request(camera)).await?)
    }

    /// Connects to the serving node; returns its peer id.
    pub async fn connect(&self, addrs: &[Multiaddr]) -> anyhow::Result<PeerId> {
        let mut last = None;
        for a in addrs {
            match self.node.connect(a.clone()).await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no address"), anyhow::Error::from))
    }

    pub async fn subscribe(&self, peer: PeerId, camera: &str) -> anyhow::Result<Subscription> {
        Ok(self
            .node
            .subscribe_camera(camera, Some(peer), live_request(camera))
            .await?)
    }

    /// [`Self::subscribe`], retried twice after a failure (setting up hundreds of streams
    /// at once on a loaded machine can hit a timeout; the measurement is what follows).
    pub async fn subscribe_retry(&self, peer: PeerId, camera: &str) -> anyhow::Result<Subscription> {
        let mut attempt = 0;
        loop {
            match self.subscribe(peer, camera).await {
                Ok(s) => return Ok(s),
                Err(e) if attempt >= 2 => return Err(e.context(format!("subscribing to {camera}"))),
                Err(e) => {
                    tracing::warn!(camera, error = %e, "subscribe failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

pub fn live_request(camera: &str) -> pb::StreamRequest {
    pb::StreamRequest {
        audio: false,
        camera_id: camera.to_string(),
        profile: pb::Profile::Main as i32,
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        grant: Default::default(),
        max_frame_bytes: 0,
        user_agent: "camesh-bench".into(),
    }
}

/// Frames received by many streams, gathered per measuring window.
#[derive(Debug, Default)]
pub struct Collector {
    window: Mutex<Window>,
}

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One received frame; `first` is the first of its stream (its skip count is the
    /// join, not a loss), `gap` says its sequence number did not follow the previous one.
    pub fn record(&self, frame: &MediaFrame, now_us: i64, first: bool, gap: bool) {
        let lat = now_us - frame.header.capture_unix_us;
        let mut w = self.lock();
        w.frames += 1;
        w.bytes += frame.payload.len() as u64;
        w.lat_us.push(lat);
        w.by_seq.push((frame.header.sequence, lat));
        if frame.header.keyframe {
            w.key_lat_us.push(lat);
        }
        if frame.header.skipped_before > 0 && !first {
            w.skips += 1;
            w.skipped_frames += u64::from(frame.header.skipped_before);
        }
        if gap {
            w.seq_gaps += 1;
        }
    }

    pub fn error(&self) {
        self.lock().errors += 1;
    }

    /// Everything since the last call; starts a new window.
    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.lock())
    }
}

/// How a reader takes frames off its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// As a player does: decrypt and authenticate every frame.
    Decrypt,
    /// Sealed, as a forwarder does (the throughput runs: the viewers share the machine
    /// with the serving node, and their decryption is not the serving node's work).
    Sealed,
}

/// Reads a subscription into `col` until `cancel` or the stream ends.
pub fn spawn_reader(
    mut sub: Subscription,
    col: Arc<Collector>,
    open: Open,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_seq: Option<u64> = None;
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                f = async {
                    match open {
                        Open::Decrypt => sub.next_frame().await,
                        Open::Sealed => loop {
                            match sub.next_sealed().await {
                                // Key updates carry no media.
                                Ok(Some(f)) if !f.header.new_key.is_empty() => continue,
                                other => break other,
                            }
                        },
                    }
                } => f,
            };
            match next {
                Ok(Some(frame)) => {
                    let now = now_unix_us();
                    let seq = frame.header.sequence;
                    let gap = last_seq.is_some_and(|l| seq != l + 1);
                    let first = last_seq.is_none();
                    last_seq = Some(seq);
                    col.record(&frame, now, first, gap);
                }
                Ok(None) | Err(_) => {
                    if !cancel.is_cancelled() {
                        col.error();
                    }
                    return;
                }
            }
        }
    })
}
