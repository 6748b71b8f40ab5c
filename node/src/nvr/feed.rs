//! What a recording task reads (IO): a camera's sealed frames and the media keys that
//! open them, from a subscription over the mesh (any NVR recording another node's camera)
//! or straight from this node's own camera hub (a camera node that records itself: a
//! body-worn camera or a drone with no NVR beside it, which replicates when it docks).
//!
//! Both give the same items, so the recorder stores the same thing either way: frames
//! as sealed for every viewer, keys to be wrapped under the storage key. The local feed
//! is a subscriber of the hub with a bounded queue like any viewer's (a slow disk skips
//! to the next keyframe, it never slows the camera), and it signs the camera's GOP
//! digests itself, as the camera's node does for a remote recorder
//! (`/camesh/attest/1`), into the same attestation file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use camesh_proto::{pb, MediaFrame};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::attest::verify::write_item;
use crate::attest::{sign, FrameFields, GopHasher};
use crate::media::{AudioParams, CodecParams};
use crate::stream::client::Subscription;
use crate::stream::fanout::QueueLimits;
use crate::stream::hub::{Hub, Subscriber};

/// Key epochs the local feed remembers having handed over.
const EPOCHS_KEPT: usize = 8;

/// One item for the recorder.
#[derive(Debug)]
pub(crate) enum Item {
    /// The raw media key of an epoch (frames of that epoch follow).
    Key { epoch: u64, key: bytes::Bytes },
    /// A sealed frame, checked: it opens with its epoch's key.
    Frame(MediaFrame),
}

/// Where a recording task's frames come from.
#[derive(Debug)]
pub(crate) enum Feed {
    Remote(Box<Subscription>),
    Local(Box<LocalFeed>),
}

impl Feed {
    /// The next item; `Ok(None)` when the source ended; `Err` says why it broke.
    pub(crate) async fn next(&mut self) -> Result<Option<Item>, String> {
        match self {
            Feed::Remote(sub) => {
                let Some(frame) = sub.next_sealed().await.map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                if sub.learn_key(&frame).map_err(|e| e.to_string())? {
                    return Ok(Some(Item::Key {
                        epoch: frame.header.key_epoch,
                        key: frame.header.new_key,
                    }));
                }
                // Checked before it is stored: a forwarder or relay that alters a frame
                // breaks the stream rather than planting video in the recording.
                sub.open(&frame).map_err(|e| e.to_string())?;
                Ok(Some(Item::Frame(frame)))
            }
            Feed::Local(l) => Ok(l.next().await),
        }
    }

    /// Who sends the frames (this node itself for a local feed).
    pub(crate) fn peer(&self, me: PeerId) -> PeerId {
        match self {
            Feed::Remote(sub) => sub.peer,
            Feed::Local(_) => me,
        }
    }
}

/// A subscriber of this node's own camera hub.
#[derive(Debug)]
pub(crate) struct LocalFeed {
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    /// Epochs whose key went to the recorder (the newest few).
    keyed: VecDeque<u64>,
    pending: Option<MediaFrame>,
}

impl LocalFeed {
    /// Subscribes to `hub` (its queue starts with the cached GOP, as a viewer's does).
    /// The video's parameters and the audio track come with it (audio frames are in the
    /// queue too).
    pub(crate) fn open(
        hub: Arc<Hub>,
        me: PeerId,
        limits: QueueLimits,
    ) -> Result<(CodecParams, Option<AudioParams>, LocalFeed), String> {
        let (params, sub) = hub.subscribe_with(me, limits, true).map_err(|e| e.to_string())?;
        Ok((
            params,
            hub.audio(),
            LocalFeed {
                hub,
                sub,
                keyed: VecDeque::with_capacity(EPOCHS_KEPT),
                pending: None,
            },
        ))
    }

    async fn next(&mut self) -> Option<Item> {
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => self.sub.next().await?,
            };
            let epoch = frame.header.key_epoch;
            if self.keyed.contains(&epoch) {
                return Some(Item::Frame(frame));
            }
            // The hub keeps its current and previous epoch: a frame of an older one (a
            // queue that lagged over two rotations) cannot be stored openable.
            let Some(key) = self.hub.key(epoch) else {
                debug!(camera = %self.hub.id, epoch, "no key for a queued frame's epoch: skipped");
                continue;
            };
            if self.keyed.len() == EPOCHS_KEPT {
                self.keyed.pop_front();
            }
            self.keyed.push_back(epoch);
            self.pending = Some(frame);
            return Some(Item::Key {
                epoch,
                key: bytes::Bytes::copy_from_slice(key.bytes()),
            });
        }
    }
}

impl Drop for LocalFeed {
    fn drop(&mut self) {
        self.sub.close();
    }
}

/// Signs `hub`'s GOP digests with this node's key and appends them, after this node's
/// certificate, to the camera's attestation file in `folder`, until `cancel`.
pub(crate) async fn attest_locally(
    hub: Arc<Hub>,
    key: Keypair,
    cert: Option<pb::Signed>,
    folder: PathBuf,
    limits: QueueLimits,
    cancel: CancellationToken,
) {
    let camera = hub.id.clone();
    tokio::select! {
        r = attest_inner(&hub, &key, cert, &folder, limits) => {
            if let Err(e) = r {
                warn!(%camera, error = %e, "the camera's own GOP digests are not being written");
            }
        }
        _ = cancel.cancelled() => {}
    }
}

async fn attest_inner(
    hub: &Hub,
    key: &Keypair,
    cert: Option<pb::Signed>,
    folder: &Path,
    limits: QueueLimits,
) -> Result<(), String> {
    let Some(cert) = cert else {
        return Err("this node has no membership certificate".into());
    };
    let camera = hub.id.clone();
    let path = super::attestations::attest_file(folder, &camera);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, sub) = hub
        .subscribe(key.public().to_peer_id(), limits)
        .map_err(|e| e.to_string())?;
    let _close = CloseOnDrop(sub.clone());
    let mut buf = Vec::new();
    let item = |i| pb::AttestItem { item: Some(i) };
    write_item(&item(pb::attest_item::Item::Cert(cert)), &mut buf);
    file.write_all(&buf).await.map_err(|e| e.to_string())?;
    let mut hasher = GopHasher::default();
    while let Some(f) = sub.next().await {
        let fields = FrameFields::from(&f.header);
        let Some(d) = hasher.push(&camera, &fields, &f.payload, f.header.skipped_before) else {
            continue;
        };
        let Ok(s) = sign(&d, key) else { continue };
        buf.clear();
        write_item(&item(pb::attest_item::Item::Gop(s)), &mut buf);
        file.write_all(&buf).await.map_err(|e| e.to_string())?;
    }
    let _ = file.flush().await;
    Ok(())
}

struct CloseOnDrop(Arc<Subscriber>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
