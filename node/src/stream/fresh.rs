//! Camera-signed freshness of live frames (pure): what stops a forwarder, relay or
//! anyone on the path from passing old ciphertext off as live (the "empty hallway" loop).
//!
//! Per-frame AES-GCM already binds every header field (sequence, capture time, epoch)
//! to the payload, under a key only the camera and granted viewers hold. That stops
//! editing, not replaying: a frame recorded an hour ago still opens while its key epoch
//! lives. So:
//! - the camera node signs every live keyframe with its Ed25519 node key
//!   ([`FrameSigner`]): camera id, sequence, pts, capture time, key epoch and the
//!   payload's AEAD tag (which stands for the payload: changing it breaks the tag);
//! - every live subscriber ([`Freshness`]) requires a valid signature from the camera's
//!   node on each keyframe, refuses a frame captured more than `max_age` ago (or more
//!   than the clock skew in the future), and refuses a sequence that does not grow (a
//!   loop) — unless a newer signed keyframe starts a new sequence (a camera restart).
//!
//! Frames between keyframes are not signed (one signature per GOP keeps the camera's cost
//! flat); they are bound to their keyframe by growing sequence numbers and their own age,
//! both authenticated by the AEAD tag. Playback from an NVR is not live and is not judged
//! here. What remains: a path may delay live video by up to `max_age` (default 70 s:
//! `limits.live_max_age_s` plus `limits.clock_skew_s`), and drop it.

use camesh_proto::pb::FrameHeader;
use camesh_proto::MediaFrame;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

use crate::auth::media_key::TAG_LEN;

const CONTEXT: &[u8] = b"camesh/fresh/1\0";

/// The bytes the camera signs for a keyframe: everything a replay would have to keep.
pub fn signed_bytes(camera: &str, h: &FrameHeader, sealed: &[u8]) -> Vec<u8> {
    let tag = &sealed[sealed.len().saturating_sub(TAG_LEN)..];
    let mut m = Vec::with_capacity(CONTEXT.len() + 2 + camera.len() + 8 * 4 + tag.len());
    m.extend_from_slice(CONTEXT);
    let id = camera.as_bytes();
    // Camera ids are validated short; a longer one is cut (and then never verifies).
    let n = id.len().min(u16::MAX as usize);
    m.extend_from_slice(&(n as u16).to_be_bytes());
    m.extend_from_slice(&id[..n]);
    m.extend_from_slice(&h.sequence.to_be_bytes());
    m.extend_from_slice(&h.pts_90k.to_be_bytes());
    m.extend_from_slice(&h.capture_unix_us.to_be_bytes());
    m.extend_from_slice(&h.key_epoch.to_be_bytes());
    m.extend_from_slice(tag);
    m
}

/// Signs live keyframes with the camera node's key.
#[derive(Clone)]
pub struct FrameSigner(Keypair);

impl std::fmt::Debug for FrameSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FrameSigner")
            .field(&self.0.public().to_peer_id())
            .finish()
    }
}

impl FrameSigner {
    pub fn new(key: Keypair) -> Self {
        Self(key)
    }

    /// The signature for a keyframe (empty if the key cannot sign, which an Ed25519
    /// node key always can).
    pub fn sign(&self, camera: &str, h: &FrameHeader, sealed: &[u8]) -> Vec<u8> {
        self.0.sign(&signed_bytes(camera, h, sealed)).unwrap_or_default()
    }
}

/// Why a live frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("keyframe #{seq} is not signed by the camera's node")]
    Unsigned { seq: u64 },
    #[error("keyframe #{seq} carries a signature that is not the camera node's")]
    BadSignature { seq: u64 },
    #[error("frame #{seq} before any signed keyframe")]
    NoKeyframe { seq: u64 },
    #[error("frame #{seq} was captured {age_ms} ms ago (live allows {max_ms} ms): replayed or held back")]
    TooOld { seq: u64, age_ms: i64, max_ms: i64 },
    #[error("frame #{seq} claims a capture time {ahead_ms} ms in the future")]
    FromTheFuture { seq: u64, ahead_ms: i64 },
    #[error("frame #{seq} after #{last}: the sequence went back (a looped or replayed GOP)")]
    Rewound { seq: u64, last: u64 },
}

/// A live subscription's judge of freshness. One per subscription: while a watch
/// switches paths two feeds overlap on purpose, and the watch's splice drops the
/// duplicates (`watch::live::is_replay`).
#[derive(Debug, Clone)]
pub struct Freshness {
    camera: String,
    /// The camera's node key; `None` when its peer id carries no inline public key (then
    /// every keyframe is refused as unsigned: camesh node ids are Ed25519, always inline).
    origin: Option<PublicKey>,
    max_age_us: i64,
    skew_us: i64,
    /// Sequence and capture time of the last accepted frame.
    last: Option<(u64, i64)>,
    keyframe_seen: bool,
    /// The last audio frame's sequence: audio is numbered apart from video
    /// ([`crate::media::AUDIO_SEQUENCE_BIT`]) and ordered on its own.
    last_audio: Option<u64>,
}

impl Freshness {
    /// Judges frames of `camera` served by (or on behalf of) node `origin`: frames older
    /// than `max_age_s + skew_s`, or more than `skew_s` ahead, are refused.
    pub fn new(camera: &str, origin: PeerId, max_age_s: u64, skew_s: u64) -> Self {
        let skew_us = i64::try_from(skew_s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let max_age_us = i64::try_from(max_age_s.saturating_mul(1_000_000))
            .unwrap_or(i64::MAX)
            .saturating_add(skew_us);
        Self {
            camera: camera.to_owned(),
            origin: public_key(&origin),
            max_age_us,
            skew_us,
            last: None,
            keyframe_seen: false,
            last_audio: None,
        }
    }

    /// The camera's node changed (keys come from it: a forwarded stream).
    pub fn set_origin(&mut self, origin: PeerId) {
        let key = public_key(&origin);
        if key != self.origin {
            self.origin = key;
            self.keyframe_seen = false;
        }
    }

    /// Accepts or refuses a sealed live frame at `now_us` (key updates are not frames:
    /// do not pass them).
    pub fn check(&mut self, frame: &MediaFrame, now_us: i64) -> Result<(), Stale> {
        let h = &frame.header;
        let seq = h.sequence;
        let age = now_us.saturating_sub(h.capture_unix_us);
        if age > self.max_age_us {
            return Err(Stale::TooOld {
                seq,
                age_ms: age / 1000,
                max_ms: self.max_age_us / 1000,
            });
        }
        if -age > self.skew_us {
            return Err(Stale::FromTheFuture {
                seq,
                ahead_ms: -age / 1000,
            });
        }
        if crate::media::is_audio(seq) {
            // Audio follows the video it came with: fresh, in order, after a keyframe.
            if !self.keyframe_seen || h.keyframe {
                return Err(Stale::NoKeyframe { seq });
            }
            if let Some(last) = self.last_audio.filter(|l| seq <= *l) {
                return Err(Stale::Rewound { seq, last });
            }
            self.last_audio = Some(seq);
            return Ok(());
        }
        if h.keyframe {
            self.verify_signature(frame)?;
            // A signed keyframe may restart the sequence (a new camera process), but
            // never show something captured before what was already shown.
            if let Some((last, last_capture)) = self.last {
                if seq <= last && h.capture_unix_us <= last_capture {
                    return Err(Stale::Rewound { seq, last });
                }
                if seq <= last {
                    // A new camera process numbers its audio from 0 again too.
                    self.last_audio = None;
                }
            }
            self.keyframe_seen = true;
        } else {
            if !self.keyframe_seen {
                return Err(Stale::NoKeyframe { seq });
            }
            if let Some((last, _)) = self.last {
                if seq <= last {
                    return Err(Stale::Rewound { seq, last });
                }
            }
        }
        self.last = Some((seq, h.capture_unix_us));
        Ok(())
    }

    fn verify_signature(&self, frame: &MediaFrame) -> Result<(), Stale> {
        let h = &frame.header;
        if h.camera_signature.is_empty() {
            return Err(Stale::Unsigned { seq: h.sequence });
        }
        let ok = self
            .origin
            .as_ref()
            .is_some_and(|k| k.verify(&signed_bytes(&self.camera, h, &frame.payload), &h.camera_signature));
        if ok {
            Ok(())
        } else {
            Err(Stale::BadSignature { seq: h.sequence })
        }
    }
}

/// The public key inlined in an Ed25519 peer id.
fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // 0x00: the identity multihash, which holds the protobuf-encoded key itself.
    (mh.code() == 0x00)
        .then(|| PublicKey::try_decode_protobuf(mh.digest()).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const S: i64 = 1_000_000;

    fn frame(signer: Option<&FrameSigner>, seq: u64, capture: i64, keyframe: bool) -> MediaFrame {
        let mut h = FrameHeader {
            sequence: seq,
            pts_90k: (seq & !crate::media::AUDIO_SEQUENCE_BIT) * 3000,
            capture_unix_us: capture,
            keyframe,
            key_epoch: 1,
            ..Default::default()
        };
        let payload = Bytes::from(vec![seq as u8; 40]);
        if let (Some(s), true) = (signer, keyframe) {
            h.camera_signature = s.sign("cam1", &h, &payload).into();
        }
        MediaFrame::new(h, payload)
    }

    fn setup() -> (FrameSigner, Freshness) {
        let key = Keypair::generate_ed25519();
        let origin = key.public().to_peer_id();
        (FrameSigner::new(key), Freshness::new("cam1", origin, 10, 1))
    }

    #[test]
    fn a_live_gop_passes_and_its_replay_is_refused() {
        let (s, mut f) = setup();
        let t = 1_000 * S;
        for i in 0..30 {
            f.check(&frame(Some(&s), i, t + i as i64 * 33_000, i % 10 == 0), t + 2 * S)
                .expect("live");
        }
        // The same GOP again (a loop): the sequence went back.
        assert_eq!(
            f.check(&frame(Some(&s), 10, t + 330_000, true), t + 3 * S),
            Err(Stale::Rewound { seq: 10, last: 29 })
        );
        // A fresh judge (a new viewer) given the old GOP a minute later: too old.
        let (_, mut g) = (0, Freshness::new("cam1", s.0.public().to_peer_id(), 10, 1));
        assert!(matches!(
            g.check(&frame(Some(&s), 0, t, true), t + 60 * S),
            Err(Stale::TooOld { seq: 0, .. })
        ));
    }

    #[test]
    fn keyframes_must_be_signed_by_the_cameras_node_for_this_camera() {
        let (s, mut f) = setup();
        let t = 5_000 * S;
        assert_eq!(f.check(&frame(None, 0, t, true), t), Err(Stale::Unsigned { seq: 0 }));
        let other = FrameSigner::new(Keypair::generate_ed25519());
        assert_eq!(
            f.check(&frame(Some(&other), 0, t, true), t),
            Err(Stale::BadSignature { seq: 0 })
        );
        // Signed for another camera id.
        let mut x = frame(Some(&s), 0, t, true);
        x.header.camera_signature = s.sign("cam2", &x.header, &x.payload).into();
        assert_eq!(f.check(&x, t), Err(Stale::BadSignature { seq: 0 }));
        // A changed capture time (or payload) breaks the signature.
        let mut y = frame(Some(&s), 0, t, true);
        y.header.capture_unix_us += 1;
        assert_eq!(f.check(&y, t), Err(Stale::BadSignature { seq: 0 }));
        // P-frames before a signed keyframe are refused; after one they pass.
        assert_eq!(f.check(&frame(None, 1, t, false), t), Err(Stale::NoKeyframe { seq: 1 }));
        f.check(&frame(Some(&s), 2, t, true), t).expect("signed");
        f.check(&frame(None, 3, t, false), t).expect("bound to the keyframe");
    }

    #[test]
    fn a_restarted_camera_starts_a_new_sequence_with_a_newer_signed_keyframe() {
        let (s, mut f) = setup();
        let t = 9_000 * S;
        f.check(&frame(Some(&s), 500, t, true), t).expect("live");
        f.check(&frame(None, 501, t + 33_000, false), t).expect("live");
        // Restarted: sequence 0, later capture.
        f.check(&frame(Some(&s), 0, t + 5 * S, true), t + 5 * S)
            .expect("new session");
        // But a P-frame may never go back.
        assert!(matches!(
            f.check(&frame(None, 0, t + 5 * S, false), t + 5 * S),
            Err(Stale::Rewound { .. })
        ));
    }

    #[test]
    fn the_future_is_refused_beyond_the_skew() {
        let (s, mut f) = setup();
        let t = 7_000 * S;
        assert!(matches!(
            f.check(&frame(Some(&s), 0, t + 3 * S, true), t),
            Err(Stale::FromTheFuture { .. })
        ));
        f.check(&frame(Some(&s), 0, t + S / 2, true), t).expect("within skew");
    }

    #[test]
    fn a_forwarded_stream_is_judged_against_the_cameras_node() {
        let (s, _) = setup();
        let forwarder = Keypair::generate_ed25519().public().to_peer_id();
        let mut f = Freshness::new("cam1", forwarder, 10, 1);
        let t = 3_000 * S;
        assert_eq!(
            f.check(&frame(Some(&s), 0, t, true), t),
            Err(Stale::BadSignature { seq: 0 })
        );
        f.set_origin(s.0.public().to_peer_id());
        f.check(&frame(Some(&s), 0, t, true), t)
            .expect("the camera's signature");
    }

    #[test]
    fn audio_is_ordered_on_its_own_and_never_disturbs_the_video() {
        use crate::media::AUDIO_SEQUENCE_BIT as A;
        let (s, mut f) = setup();
        let t = 12_000 * S;
        assert!(
            f.check(&frame(None, A, t, false), t).is_err(),
            "no audio before a keyframe"
        );
        f.check(&frame(Some(&s), 0, t, true), t).expect("live");
        f.check(&frame(None, A, t, false), t).expect("audio");
        f.check(&frame(None, 1, t + 33_000, false), t)
            .expect("video after audio");
        f.check(&frame(None, A | 1, t + 40_000, false), t).expect("audio");
        assert!(matches!(
            f.check(&frame(None, A, t, false), t),
            Err(Stale::Rewound { .. })
        ));
        // A restarted camera numbers its audio from 0 again after its new keyframe.
        f.check(&frame(Some(&s), 0, t + 5 * S, true), t + 5 * S)
            .expect("new session");
        f.check(&frame(None, A, t + 5 * S, false), t + 5 * S)
            .expect("audio again");
    }
}
