//! The hub of one camera: where its access units become frames and fan out.
//!
//! The camera's source task calls [`Hub::publish`] for each access unit. Under one short
//! lock the hub numbers the frame, updates the GOP cache and pushes a clone (shared
//! payload `Bytes`) into every subscriber's bounded queue, then wakes the subscribers'
//! tasks. A subscriber that is slow loses frames (its queue skips to the next keyframe);
//! it never makes the hub wait. [`Hubs`] is the node's registry of its cameras.
//!
//! A forwarded hub ([`Hub::forwarded`]) holds another node's camera on a forwarder: it is
//! fed frames that are already sealed ([`Hub::publish_sealed`]), keeps their sequence
//! numbers and never holds a media key, so it can serve ciphertext only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use camesh_proto::{pb, MediaFrame};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::Notify;

use super::fanout::{GopCache, Push, QueueLimits, QueueStats, SubscriberQueue};
use super::fresh::FrameSigner;
pub use super::hubs::Hubs;
use crate::auth::media_key::MediaKey;
use crate::clock::now_unix_us;
use crate::media::{is_audio, AccessUnit, AudioParams, AudioUnit, CodecParams, AUDIO_SEQUENCE_BIT};

/// Counters of a hub (read by `mesh demo`, metrics, benches).
#[derive(Debug, Default)]
pub struct HubCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub keyframes_in: AtomicU64,
    /// Times the source came back after an interruption, and the last gap without video.
    pub source_gaps: AtomicU64,
    pub last_gap_ms: AtomicU64,
}

#[derive(Debug)]
struct HubState {
    params: Option<CodecParams>,
    gop: GopCache,
    subs: Vec<Arc<Subscriber>>,
    next_seq: u64,
    /// The camera's audio, when its source has some; audio frames are numbered apart
    /// ([`AUDIO_SEQUENCE_BIT`]) and reach only subscribers that asked for audio.
    audio: Option<AudioParams>,
    next_audio_seq: u64,
    /// The key frames are sealed with now, and the one before it (cached frames of the
    /// previous epoch may still be sent to newcomers right after a rotation).
    key: MediaKey,
    previous_key: Option<MediaKey>,
    live: bool,
    /// Why the source is not live, for refusals.
    last_error: Option<String>,
}

#[derive(Debug)]
pub struct Hub {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    state: Mutex<HubState>,
    pub counters: HubCounters,
    next_sub_id: AtomicU64,
    /// For a forwarded hub: the camera's node, where viewers get the keys.
    pub origin: Option<PeerId>,
    /// For a forwarded hub: the key epoch of the last frame seen.
    forwarded_epoch: AtomicU64,
    /// Signs keyframes for [`super::fresh`] (the camera node's key); `None` on forwarded
    /// hubs (they pass the camera's signature on) and in tests of the hub alone.
    signer: Option<FrameSigner>,
}

/// A hub's first key epoch: random (below 2^62, never 0), so epochs are unique across
/// camera restarts. They used to start at 1 in every process, so after a restart an NVR
/// held two different keys under one epoch and exports across the restart failed. Not
/// time-based: a camera without a clock battery boots at the same wrong time every day.
fn first_epoch() -> u64 {
    (rand::random::<u64>() >> 2).max(1)
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("camera {camera} has no video: {reason}")]
    NotLive { camera: String, reason: String },
}

impl Hub {
    pub fn new(id: impl Into<String>, name: impl Into<String>, tags: Vec<String>, gop_cache_bytes: usize) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            tags,
            state: Mutex::new(HubState {
                params: None,
                gop: GopCache::new(gop_cache_bytes),
                subs: Vec::new(),
                next_seq: 0,
                audio: None,
                next_audio_seq: 0,
                key: MediaKey::generate(first_epoch()),
                previous_key: None,
                live: false,
                last_error: None,
            }),
            counters: HubCounters::default(),
            next_sub_id: AtomicU64::new(1),
            origin: None,
            forwarded_epoch: AtomicU64::new(0),
            signer: None,
        }
    }

    /// Signs every keyframe with the camera node's key (live viewers require it).
    pub fn with_signer(mut self, signer: FrameSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// A hub for camera `id` of node `origin`, fed with sealed frames on a forwarder.
    pub fn forwarded(
        id: impl Into<String>,
        name: impl Into<String>,
        tags: Vec<String>,
        origin: PeerId,
        gop_cache_bytes: usize,
    ) -> Self {
        let mut hub = Self::new(id, name, tags, gop_cache_bytes);
        hub.origin = Some(origin);
        hub
    }

    /// Hands a frame sealed elsewhere to every subscriber as it is (no re-encryption,
    /// same sequence number): the forwarder's path. Key updates never pass here.
    pub fn publish_sealed(&self, mut frame: MediaFrame) {
        debug_assert!(self.origin.is_some(), "sealed frames go to forwarded hubs");
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
        if frame.header.keyframe {
            self.counters.keyframes_in.fetch_add(1, Ordering::Relaxed);
        }
        // Skips upstream are not this hub's subscribers' skips; new_key never travels.
        frame.header.skipped_before = 0;
        frame.header.new_key = Default::default();
        self.forwarded_epoch.store(frame.header.key_epoch, Ordering::Relaxed);
        let mut st = self.lock();
        st.gop.push(&frame);
        st.subs.retain(|s| !s.closed.load(Ordering::Relaxed));
        for sub in &st.subs {
            sub.push(frame.clone());
        }
    }

    /// Ends every current subscription (a forwarder lost its upstream: its viewers should
    /// move to another path at once rather than wait on silence).
    pub fn close_subscribers(&self) {
        let subs = std::mem::take(&mut self.lock().subs);
        for s in subs {
            s.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves consistent data (no multi-step updates
        // span a panic point), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New codec parameters (a source started or its stream changed).
    pub fn set_params(&self, params: CodecParams) {
        let mut st = self.lock();
        if st.params.as_ref() != Some(&params) {
            st.gop.clear();
        }
        st.params = Some(params);
        st.live = true;
        st.last_error = None;
    }

    /// The source stopped: no new subscribers until it is back; current ones wait.
    pub fn set_offline(&self, reason: &str) {
        let mut st = self.lock();
        st.last_error = Some(reason.to_owned());
        st.live = false;
        st.gop.clear();
        st.audio = None;
    }

    /// The camera's audio track (or none).
    pub fn set_audio(&self, audio: Option<AudioParams>) {
        self.lock().audio = audio;
    }

    pub fn audio(&self) -> Option<AudioParams> {
        self.lock().audio.clone()
    }

    /// Seals an audio frame and hands it to the subscribers that asked for audio (and to
    /// the GOP cache, so an audio viewer starts with the GOP's sound too).
    pub fn publish_audio(&self, unit: AudioUnit) {
        let mut st = self.lock();
        if st.audio.is_none() {
            return;
        }
        let header = pb::FrameHeader {
            sequence: AUDIO_SEQUENCE_BIT | (st.next_audio_seq & !AUDIO_SEQUENCE_BIT),
            pts_90k: unit.pts_90k,
            dts_90k: unit.pts_90k,
            capture_unix_us: now_unix_us(),
            keyframe: false,
            key_epoch: st.key.epoch,
            ..Default::default()
        };
        let frame = MediaFrame::new(header.clone(), st.key.seal(&header, &unit.data));
        st.next_audio_seq += 1;
        st.gop.push(&frame);
        st.subs.retain(|s| !s.closed.load(Ordering::Relaxed));
        for sub in st.subs.iter().filter(|s| s.audio) {
            sub.push(frame.clone());
        }
    }

    pub fn params(&self) -> Option<CodecParams> {
        self.lock().params.clone()
    }

    pub fn is_live(&self) -> bool {
        self.lock().live
    }

    /// Turns an access unit into a frame and hands it to every subscriber.
    pub fn publish(&self, au: AccessUnit) {
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(au.data.len() as u64, Ordering::Relaxed);
        if au.keyframe {
            self.counters.keyframes_in.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = self.lock();
        let header = pb::FrameHeader {
            sequence: st.next_seq,
            pts_90k: au.pts_90k,
            dts_90k: au.dts_90k,
            capture_unix_us: now_unix_us(),
            keyframe: au.keyframe,
            key_epoch: st.key.epoch,
            skipped_before: 0,
            new_key: Default::default(),
            camera_signature: Default::default(),
        };
        // Sealed once, here: every hop after this point carries ciphertext only. Laid out
        // behind its wire prefix, so each subscriber's stream gets it in one write.
        let key = &st.key;
        let sealed_len = au.data.len() + crate::auth::media_key::TAG_LEN;
        let frame = match (&self.signer, au.keyframe) {
            // A keyframe is sealed first, then signed (the signature covers its AEAD
            // tag), then laid out: one more copy, once per GOP.
            (Some(signer), true) => {
                let sealed = key.seal(&header, &au.data);
                let mut header = header;
                header.camera_signature = signer.sign(&self.id, &header, &sealed).into();
                match MediaFrame::laid_out(header.clone(), sealed.len(), |buf| buf.extend_from_slice(&sealed)) {
                    Ok(f) => f,
                    Err(_) => MediaFrame::new(header, sealed),
                }
            }
            _ => match MediaFrame::laid_out(header.clone(), sealed_len, |buf| key.seal_into(&header, &au.data, buf)) {
                Ok(f) => f,
                // Only a frame over 4 GiB has no wire prefix; the writers refuse it anyway.
                Err(_) => MediaFrame::new(header.clone(), key.seal(&header, &au.data)),
            },
        };
        st.next_seq += 1;
        st.gop.push(&frame);
        st.subs.retain(|s| !s.closed.load(Ordering::Relaxed));
        for sub in &st.subs {
            sub.push(frame.clone());
        }
    }

    /// Starts a new key epoch (after a revocation): frames from now on are sealed with a
    /// fresh key that only currently authorized subscribers receive.
    pub fn rotate_key(&self) -> u64 {
        let mut st = self.lock();
        let next = MediaKey::generate(st.key.epoch + 1);
        let old = std::mem::replace(&mut st.key, next);
        st.previous_key = Some(old);
        st.key.epoch
    }

    /// The key of `epoch`, if it is the current or the previous one (never on a
    /// forwarded hub: it has no keys).
    pub fn key(&self, epoch: u64) -> Option<MediaKey> {
        if self.origin.is_some() {
            return None;
        }
        let st = self.lock();
        if st.key.epoch == epoch {
            Some(st.key.clone())
        } else {
            st.previous_key.clone().filter(|k| k.epoch == epoch)
        }
    }

    pub fn key_epoch(&self) -> u64 {
        if self.origin.is_some() {
            return self.forwarded_epoch.load(Ordering::Relaxed);
        }
        self.lock().key.epoch
    }

    /// Adds a subscriber whose queue starts with the cached GOP (instant start); video
    /// only.
    pub fn subscribe(
        &self,
        peer: PeerId,
        limits: QueueLimits,
    ) -> Result<(CodecParams, Arc<Subscriber>), SubscribeError> {
        self.subscribe_with(peer, limits, false)
    }

    /// [`Hub::subscribe`], with the camera's audio frames too when `audio`.
    pub fn subscribe_with(
        &self,
        peer: PeerId,
        limits: QueueLimits,
        audio: bool,
    ) -> Result<(CodecParams, Arc<Subscriber>), SubscribeError> {
        let mut st = self.lock();
        let params = match (&st.params, st.live) {
            (Some(p), true) => p.clone(),
            _ => {
                return Err(SubscribeError::NotLive {
                    camera: self.id.clone(),
                    reason: st.last_error.clone().unwrap_or_else(|| "its source is starting".into()),
                })
            }
        };
        let sub = Arc::new(Subscriber {
            id: self.next_sub_id.fetch_add(1, Ordering::Relaxed),
            peer,
            queue: Mutex::new(if audio {
                SubscriberQueue::new(limits, st.gop.frames())
            } else {
                let video: Vec<MediaFrame> = st
                    .gop
                    .frames()
                    .iter()
                    .filter(|f| !is_audio(f.header.sequence))
                    .cloned()
                    .collect();
                SubscriberQueue::new(limits, &video)
            }),
            audio,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            sent_frames: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        });
        // Wake the new subscriber at once if it has a backlog to send.
        sub.notify.notify_one();
        st.subs.push(sub.clone());
        Ok((params, sub))
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock()
            .subs
            .iter()
            .filter(|s| !s.closed.load(Ordering::Relaxed))
            .count()
    }

    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        self.lock().subs.clone()
    }

    /// What gossipsub and `/camesh/info/1` say about this camera.
    pub fn announcement(&self, me: PeerId, addrs: &[Multiaddr]) -> pb::CameraAnnouncement {
        let st = self.lock();
        let p = st.params.clone().unwrap_or_default();
        pb::CameraAnnouncement {
            camera_id: self.id.clone(),
            name: self.name.clone(),
            peer_id: me.to_bytes().into(),
            codec: "h264".into(),
            width: p.width,
            height: p.height,
            fps_num: p.fps_num,
            fps_den: p.fps_den,
            profiles: vec![pb::Profile::Main as i32],
            tags: self.tags.clone(),
            addrs: addrs.iter().map(|a| a.to_vec().into()).collect(),
            announced_unix_us: now_unix_us(),
            live: st.live,
        }
    }
}

/// One viewer of one camera: its queue, and the wake-up for the task that drains it.
#[derive(Debug)]
pub struct Subscriber {
    pub id: u64,
    pub peer: PeerId,
    /// Gets audio frames too.
    pub audio: bool,
    queue: Mutex<SubscriberQueue>,
    notify: Notify,
    closed: AtomicBool,
    pub sent_frames: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl Subscriber {
    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriberQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, frame: MediaFrame) {
        if !self.audio && is_audio(frame.header.sequence) {
            return;
        }
        let outcome = self.lock().push(frame);
        if outcome == Push::Queued {
            self.notify.notify_one();
        } else if outcome == Push::Overflowed {
            tracing::debug!(peer = %self.peer, subscriber = self.id, "subscriber queue overflowed; skipping to next keyframe");
        }
    }

    pub fn try_pop(&self) -> Option<MediaFrame> {
        self.lock().pop()
    }

    /// Waits for the next frame; `None` once closed.
    pub async fn next(&self) -> Option<MediaFrame> {
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(f) = self.try_pop() {
                return Some(f);
            }
            self.notify.notified().await;
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    pub fn stats(&self) -> QueueStats {
        self.lock().stats()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn au(n: u64, key: bool) -> AccessUnit {
        AccessUnit {
            data: Bytes::from(vec![n as u8; 100]),
            pts_90k: n * 3000,
            dts_90k: n * 3000,
            keyframe: key,
        }
    }

    const LIM: QueueLimits = QueueLimits {
        max_frames: 8,
        max_bytes: 1 << 20,
    };

    #[tokio::test]
    async fn late_subscriber_starts_on_cached_keyframe() {
        let hub = Hub::new("cam1", "Cam 1", vec![], 1 << 20);
        assert!(hub.subscribe(PeerId::random(), LIM).is_err(), "no params yet");
        let first_epoch = hub.key_epoch();
        hub.set_params(CodecParams::default());
        for n in 0..25 {
            hub.publish(au(n, n % 10 == 0));
        }
        let (_, sub) = hub.subscribe(PeerId::random(), LIM).expect("live");
        let first = sub.next().await.expect("frame");
        assert!(first.header.keyframe);
        assert_eq!(first.header.pts_90k, 20 * 3000);
        assert_ne!(&first.payload[..], &[20u8; 100][..], "payload is sealed");
        let key = hub.key(first.header.key_epoch).expect("current key");
        assert_eq!(
            &key.open(&first.header, &first.payload).expect("opens")[..],
            &[20u8; 100][..]
        );
        assert_eq!(hub.rotate_key(), first_epoch + 1);
        assert!(hub.key(first_epoch).is_some(), "previous key kept for cached frames");
    }

    #[tokio::test]
    async fn slow_subscriber_does_not_block_others() {
        let hub = Hub::new("cam1", "", vec![], 1 << 20);
        hub.set_params(CodecParams::default());
        let (_, slow) = hub.subscribe(PeerId::random(), LIM).expect("live");
        let (_, fast) = hub.subscribe(PeerId::random(), LIM).expect("live");
        let mut got = 0;
        for n in 0..100 {
            hub.publish(au(n, n % 30 == 0));
            while fast.try_pop().is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 100);
        assert!(slow.stats().skips >= 1);
        assert!(slow.stats().queued_frames <= LIM.max_frames);
    }

    #[tokio::test]
    async fn audio_reaches_only_those_who_asked_numbered_apart() {
        use crate::media::{AudioCodec, AudioParams, AudioUnit};
        let hub = Hub::new("cam1", "", vec![], 1 << 20);
        hub.set_params(CodecParams::default());
        hub.set_audio(Some(AudioParams {
            codec: AudioCodec::Aac,
            sample_rate: 48_000,
            channels: 1,
            extradata: Bytes::from_static(&[0x11, 0x88]),
        }));
        let (_, video) = hub.subscribe(PeerId::random(), LIM).expect("live");
        let (_, both) = hub.subscribe_with(PeerId::random(), LIM, true).expect("live");
        hub.publish(au(0, true));
        for n in 0..3u64 {
            hub.publish_audio(AudioUnit {
                data: Bytes::from(vec![0xa0 + n as u8; 20]),
                pts_90k: n * 1920,
            });
            hub.publish(au(n + 1, false));
        }
        let v: Vec<MediaFrame> = std::iter::from_fn(|| video.try_pop()).collect();
        assert_eq!(
            v.iter().map(|f| f.header.sequence).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        let b: Vec<MediaFrame> = std::iter::from_fn(|| both.try_pop()).collect();
        let audio: Vec<&MediaFrame> = b.iter().filter(|f| is_audio(f.header.sequence)).collect();
        assert_eq!(b.len(), 7);
        assert_eq!(audio.len(), 3);
        assert_eq!(audio[2].header.sequence, AUDIO_SEQUENCE_BIT | 2);
        let key = hub.key(audio[1].header.key_epoch).expect("key");
        assert_eq!(
            &key.open(&audio[1].header, &audio[1].payload).expect("opens")[..],
            &[0xa1; 20][..]
        );
        // A late audio subscriber starts with the GOP's audio; a video one without it.
        let (_, late_video) = hub.subscribe(PeerId::random(), LIM).expect("live");
        let (_, late_both) = hub.subscribe_with(PeerId::random(), LIM, true).expect("live");
        assert_eq!(std::iter::from_fn(|| late_video.try_pop()).count(), 4);
        assert_eq!(std::iter::from_fn(|| late_both.try_pop()).count(), 7);
        hub.set_offline("gone");
        assert!(hub.audio().is_none());
    }
}
