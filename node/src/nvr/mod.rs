//! The `nvr` role: records the fleet's cameras and serves the recordings over the mesh.
//!
//! ```text
//! camera ──/camesh/media/1──► recording task (one per camera) ──► record::Recorder ──► segments + index
//!                              (sealed frames, keys wrapped by keystore)
//! mesh play/recordings/export/lock ──/camesh/nvr/1──► serve ──► record::{playback, export, manifest}
//! ```
//!
//! - [`select`] (pure): which cameras `[[nvr.record]]` names (by id, `*` or tag) and each
//!   one's retention (age, share of the quota).
//! - [`recording`]: one task per camera; subscribes like any viewer with a grant that
//!   carries the `record` right, records continuously, records gaps and resubscribes.
//! - [`keystore`]: the NVR's storage key (`[nvr] storage_key`: best kept off the
//!   recordings' disk); frames stay encrypted at rest, media keys are stored wrapped
//!   under it.
//! - [`replicate`]: store-and-forward to a shore NVR (`[[nvr.replicate]]`, vehicle
//!   pushes over `/camesh/replicate/1`) and accepting it on the shore.
//! - [`serve`]: `/camesh/nvr/1`, checked against grants (`playback` to play and list,
//!   `export` to export and lock); [`client`]: the asking side, for `mesh`.
//!
//! Proof that an export is untampered has two layers. (1) The export manifest
//! ([`export`]): per-segment SHA-256 hashes and the MP4's, signed with the NVR's node key,
//! carrying the NVR's membership certificate: the NVR's custody. (2) Camera-signed GOP
//! digests ([`crate::attest`], fetched by [`attestations`] while recording): the camera
//! node signs a hash chain of every GOP it publishes (sealed frames, header included),
//! and the export carries those covering it with the camera's certificate. The NVR holds
//! the media keys, so only (2) shows the frames are what the camera sent: `mesh verify`
//! recomputes every GOP from the exported segments and fails on any difference.
//!
//! The recorder's writer is a thread (file IO, fsync); the tasks here only move frames
//! into its bounded queue (never blocking) and read files in `spawn_blocking`.

pub mod attestations;
pub mod client;
pub mod events;
pub mod export;
pub mod feed;
pub mod keystore;
pub mod recording;
pub mod replicate;
pub mod select;
pub mod serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::NvrSection;
use crate::reach::Reach;
use crate::record::recorder::CameraPolicy;
use crate::record::{RecordError, Recorder};
use crate::stream::fanout::QueueLimits;
use crate::stream::hub::{Hub, Hubs};
use keystore::{KeyStore, KeyStoreError};
use recording::CameraCounters;

/// The NVR protocol.
pub const NVR_PROTOCOL: &str = "/camesh/nvr/1";
/// How often tag and `*` rules look for new cameras.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NvrError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot serve {NVR_PROTOCOL}: {0}")]
    Protocol(String),
    #[error("the recorder could not be opened: {0}")]
    Join(String),
}

/// What the NVR shares between its tasks.
#[derive(Debug)]
pub struct NvrState {
    pub recorder: Arc<Recorder>,
    pub keys: KeyStore,
    /// Where the storage key is (a path or `$VAR`), and whether on the recordings' disk.
    pub key_place: String,
    pub key_beside_recordings: bool,
    pub(crate) signer: Keypair,
    /// This node's membership certificate (hex), put into export manifests.
    pub(crate) cert_hex: String,
    pub section: NvrSection,
    pub folder: PathBuf,
    pub cameras: Mutex<HashMap<String, Arc<CameraCounters>>>,
    /// Exports running now (bounded per NVR and per peer).
    pub exports: export::ExportSlots,
    /// Recorders replicating to this NVR and what they offered.
    pub replicas: replicate::Sources,
    /// This node's own cameras, when it is a camera node recording itself.
    pub(crate) own: Option<OwnCameras>,
    /// The events of the recorded cameras ([`events`]), served by the node once
    /// [`Nvr::events`] is handed to it.
    pub events: Arc<crate::events::serve::Recorded>,
}

/// A camera node's own cameras, for an NVR on the same node: recorded from their hubs,
/// their events indexed from the node's bus.
#[derive(Debug, Clone)]
pub struct OwnCameras {
    pub hubs: Arc<Hubs>,
    pub events: Arc<crate::events::bus::EventBus>,
}

/// A running NVR (dropping it does not stop it; call [`Nvr::stop`]).
#[derive(Debug, Clone)]
pub struct Nvr {
    pub state: Arc<NvrState>,
    cancel: CancellationToken,
}

impl Nvr {
    /// Opens the recordings (recovering from an unclean shutdown), starts recording the
    /// configured cameras and serves `/camesh/nvr/1`.
    pub async fn start(node: &Reach, section: NvrSection, data_dir: &Path) -> Result<Nvr, NvrError> {
        Self::start_with(node, section, data_dir, None).await
    }

    /// Like [`Nvr::start`], on a node that serves cameras itself (`own`: its hubs): those
    /// the rules name are recorded straight from their hubs, with no grant and no network.
    pub async fn start_with(
        node: &Reach,
        section: NvrSection,
        data_dir: &Path,
        own: Option<OwnCameras>,
    ) -> Result<Nvr, NvrError> {
        let folder = if section.recordings_dir.as_os_str().is_empty() {
            data_dir.join("recordings")
        } else {
            section.recordings_dir.clone()
        };
        let config = select::recorder_config(&section);
        let open_in = folder.clone();
        let recorder = tokio::task::spawn_blocking(move || Recorder::open(&open_in, config))
            .await
            .map_err(|e| NvrError::Join(e.to_string()))??;
        export::remove_leftovers(&folder);
        let key = KeyStore::open(&section.storage_key, data_dir, &folder)?;
        let events_in = folder.clone();
        let recorded = tokio::task::spawn_blocking(move || events::load(&events_in))
            .await
            .map_err(|e| NvrError::Join(e.to_string()))?;
        if key.beside_recordings {
            warn!(key = %key.place, recordings = %folder.display(), "the NVR storage key is on the same filesystem as the recordings: whoever takes that disk can play every recording; put the key elsewhere with [nvr] storage_key (file:<path on another device>, env:<VAR> or credential:<name>)");
        }
        if let Some(check) = &recorder.recovery().check {
            info!(folder = %folder.display(), files = check.files, clean = check.is_clean(), "recordings checked after an unclean shutdown");
        }
        let state = Arc::new(NvrState {
            recorder: Arc::new(recorder),
            keys: key.store,
            key_place: key.place,
            key_beside_recordings: key.beside_recordings,
            signer: crate::identity::load_or_create(data_dir)?,
            cert_hex: node
                .trust()
                .own_cert()
                .map(|c| crate::record::manifest::cert_hex(&c))
                .unwrap_or_default(),
            replicas: replicate::Sources::open(&folder),
            section,
            folder,
            cameras: Mutex::new(HashMap::new()),
            exports: export::ExportSlots::default(),
            own,
            events: Arc::new(recorded),
        });
        let cancel = CancellationToken::new();
        let incoming = node
            .control()
            .accept(libp2p::StreamProtocol::new(NVR_PROTOCOL))
            .map_err(|e| NvrError::Protocol(e.to_string()))?;
        serve::run(node.clone(), state.clone(), incoming, cancel.child_token());
        let replicas = node
            .control()
            .accept(libp2p::StreamProtocol::new(replicate::REPLICATE_PROTOCOL))
            .map_err(|e| NvrError::Protocol(e.to_string()))?;
        replicate::accept::run(node.clone(), state.clone(), replicas, cancel.child_token());
        for rule in &state.section.replicates {
            tokio::spawn(replicate::push::run(
                node.clone(),
                state.clone(),
                rule.clone(),
                cancel.child_token(),
            ));
        }
        tokio::spawn(supervise(node.clone(), state.clone(), cancel.child_token()));
        info!(folder = %state.folder.display(), rules = state.section.records.len(), "NVR started");
        Ok(Nvr { state, cancel })
    }

    /// The recorded cameras' events, for the node to serve
    /// (`NodeHandle::serve_recorded_events`).
    pub fn events(&self) -> Arc<crate::events::serve::Recorded> {
        self.state.events.clone()
    }

    /// Cameras being recorded.
    pub fn cameras(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Stops recording and closes the recorder: segments sealed, the index marked clean
    /// (the next start skips the check an unclean shutdown needs).
    pub async fn stop(self) {
        self.cancel.cancel();
        let rec = self.state.recorder.clone();
        match tokio::task::spawn_blocking(move || rec.close_shared()).await {
            Ok(Ok(())) => info!(folder = %self.state.folder.display(), "recordings closed cleanly"),
            Ok(Err(e)) => warn!(error = %e, "recordings not closed cleanly; they are checked at the next start"),
            Err(e) => warn!(error = %e, "recordings not closed cleanly; they are checked at the next start"),
        }
    }
}

/// `camera`'s hub if this node serves it itself (not a forwarded one).
fn own_hub(state: &NvrState, camera: &str) -> Option<Arc<Hub>> {
    state.own.as_ref()?.hubs.get(camera).filter(|h| h.origin.is_none())
}

/// Starts a recording task for each camera the rules name, now and as cameras appear.
async fn supervise(node: Reach, state: Arc<NvrState>, cancel: CancellationToken) {
    let rules = state.section.records.clone();
    let mut policies: HashMap<String, CameraPolicy> = HashMap::new();
    let start = |camera: &str, tags: &[String], policies: &mut HashMap<String, CameraPolicy>| {
        let Some(rule) = select::rule_for(&rules, camera, tags) else {
            return;
        };
        let mut cams = state.cameras.lock().unwrap_or_else(|p| p.into_inner());
        if cams.contains_key(camera) {
            return;
        }
        let counters = Arc::new(CameraCounters::default());
        cams.insert(camera.to_owned(), counters.clone());
        policies.insert(camera.to_owned(), select::camera_policy(&state.section, rule, camera));
        let limits = node.limits();
        let own = own_hub(&state, camera).map(|hub| recording::Own {
            hub,
            key: state.signer.clone(),
            queue: QueueLimits {
                max_frames: limits.subscriber_queue_frames,
                max_bytes: limits.subscriber_queue_bytes,
            },
        });
        {
            state.events.bus.add_camera(camera);
            let follow = events::Follow {
                node: node.clone(),
                camera: camera.to_owned(),
                recorded: state.events.clone(),
                recorder: state.recorder.clone(),
                folder: state.folder.clone(),
                lock_kinds: state.section.lock_events.clone(),
                margin_us: i64::try_from(state.section.event_margin_s.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
                own_events: own.as_ref().and(state.own.as_ref()).map(|o| o.events.clone()),
            };
            tokio::spawn(events::follow(follow, cancel.child_token()));
        }
        tokio::spawn(recording::run(
            node.clone(),
            state.recorder.clone(),
            state.keys.clone(),
            camera.to_owned(),
            counters,
            state.folder.clone(),
            own,
            cancel.child_token(),
        ));
    };
    for camera in select::named_cameras(&rules) {
        start(&camera, &[], &mut policies);
    }
    // This node's own cameras that a tag or `*` rule names.
    for hub in state.own.as_ref().map(|o| o.hubs.all()).unwrap_or_default() {
        if hub.origin.is_none() {
            start(&hub.id, &hub.tags, &mut policies);
        }
    }
    let set = |p: &HashMap<String, CameraPolicy>| {
        if let Err(e) = state.recorder.set_camera_policies(p.values().cloned().collect()) {
            warn!(error = %e, "retention policies not applied");
        }
    };
    set(&policies);
    if !select::needs_discovery(&rules) {
        return;
    }
    loop {
        let found = tokio::select! {
            f = node.discover_cameras(Duration::from_secs(2)) => f,
            _ = cancel.cancelled() => return,
        };
        let before = policies.len();
        for e in found {
            start(&e.announcement.camera_id, &e.announcement.tags, &mut policies);
        }
        if policies.len() != before {
            set(&policies);
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVER_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}
