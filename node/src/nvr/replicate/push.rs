//! The sender's side of `/camesh/replicate/1` (IO): one task per `[[nvr.replicate]]`
//! rule. While the rule's link policy allows, it connects to the shore and, camera by
//! camera, offers its coverage, learns what the shore holds, and sends what
//! [`plan::next_chunk`] picks, paced by the rule's token bucket, until nothing is missing;
//! then it looks again a second later (new footage, a link back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::plan::{self, Span, TokenBucket};
use super::{from_ranges, to_ranges, REPLICATE_PROTOCOL};
use crate::auth::{signed, Rights};
use crate::backoff::next_backoff;
use crate::config::nvr::parse_range;
use crate::config::ReplicateRule;
use crate::nvr::serve::codec_config;
use crate::nvr::{attestations, NvrState};
use crate::reach::Reach;
use crate::record::{frames, PlaybackItem};
use crate::stream::io::{write_message, FramedRead};

/// Longest chunk, in capture time: the unit the shore acknowledges (what a broken link
/// can cost is at most one chunk in flight).
const CHUNK_US: i64 = 10_000_000;
/// Coverage holes shorter than this hold no frame (frames are closer together).
const JOIN_US: i64 = 250_000;
/// How far before a chunk its frames are read from (longer than a GOP).
const LOOKBACK_US: i64 = 12_000_000;
/// Footage this close to the newest recorded frame may not be readable yet.
const LIVE_EDGE_US: i64 = 5_000_000;
/// The token bucket's burst, in milliseconds of the rate.
const BURST_MS: u64 = 250;
/// How often a rule looks for new footage or a link when nothing was missing.
const IDLE: Duration = Duration::from_secs(1);
/// How long one dial to the shore may take before the next round dials afresh.
const REDIAL: Duration = Duration::from_secs(1);
/// After a dial that did not reach the shore in time, the next round starts after this.
const REDIAL_AFTER: Duration = Duration::from_millis(250);
const NOT_REACHED: &str = "shore not reached within";
/// How long the shore may take to put a chunk on disk.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// What one session sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub frames: u64,
    pub bytes: u64,
    /// The capture time of the last frame sent.
    pub last_us: Option<i64>,
}

/// Replicates by `rule` until `cancel`.
pub(crate) async fn run(node: Reach, state: Arc<NvrState>, rule: ReplicateRule, cancel: CancellationToken) {
    let priority: Vec<Span> = rule
        .priority
        .iter()
        .filter_map(|p| parse_range(p).ok())
        .map(|(a, b)| Span::new(a, b))
        .collect();
    let addrs: Vec<Multiaddr> = rule.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let mut pace = Pace {
        bucket: TokenBucket::new(rule.rate_kbps, BURST_MS),
        start: Instant::now(),
        link: None,
    };
    let mut backoff = Duration::ZERO;
    let mut failures = 0u32;
    // Per camera, stretches that hold no playable frame (e.g. P-frames whose keyframe was
    // lost when this NVR was killed): neither offered nor sent again.
    let mut unplayable: HashMap<String, Vec<Span>> = HashMap::new();
    info!(to = %rule.to, rate_kbps = rule.rate_kbps, order = ?rule.order, via = ?rule.via, "replication rule started");
    loop {
        let round = tokio::select! {
            r = round(&node, &state, &rule, &priority, &addrs, &mut pace, &mut unplayable) => r,
            _ = cancel.cancelled() => return,
        };
        let wait = match round {
            Ok(sent) if sent.frames > 0 => {
                failures = 0;
                backoff = Duration::ZERO;
                Duration::ZERO
            }
            Ok(_) => {
                failures = 0;
                IDLE
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(to = %rule.to, error = %e, failures, "replication waits for the shore");
                } else {
                    debug!(to = %rule.to, error = %e, "replication waits for the shore");
                }
                if e.starts_with(NOT_REACHED) {
                    // A link that is down: dial afresh soon (each dial is a few packets).
                    REDIAL_AFTER
                } else {
                    backoff = next_backoff(backoff, Duration::from_millis(250), Duration::from_secs(2));
                    backoff
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

struct Pace {
    bucket: TokenBucket,
    start: Instant,
    /// The node's `[[link]]` budget toward the shore: replication takes only what live
    /// video to that peer leaves (crate::stream::budget).
    link: Option<(Arc<crate::stream::budget::LinkBudgets>, PeerId)>,
}

impl Pace {
    fn wait_for(&mut self, bytes: usize) -> Duration {
        let now = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX);
        Duration::from_micros(self.bucket.take(now, bytes).max(0) as u64)
    }
}

async fn round(
    node: &Reach,
    state: &Arc<NvrState>,
    rule: &ReplicateRule,
    priority: &[Span],
    addrs: &[Multiaddr],
    pace: &mut Pace,
    unplayable: &mut HashMap<String, Vec<Span>>,
) -> Result<Sent, String> {
    let peers = node.peers().await.map_err(|e| e.to_string())?;
    let connected: Vec<(PeerId, String)> = peers
        .iter()
        .filter(|p| p.connected)
        .map(|p| (p.peer, node.trust().member(&p.peer).map(|c| c.name).unwrap_or_default()))
        .collect();
    let named: Vec<(String, String)> = connected.iter().map(|(p, n)| (p.to_string(), n.clone())).collect();
    if !plan::link_allowed(&rule.via, &named) {
        debug!(via = ?rule.via, "no allowed link: replication waits");
        return Ok(Sent::default());
    }
    let shore = match rule.to.parse::<PeerId>() {
        Ok(p) => p,
        Err(_) => connected
            .iter()
            .find(|(_, n)| *n == rule.to)
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("no connected member is named {:?}", rule.to))?,
    };
    // While the link is down every attempt hangs in its handshake's retransmission
    // backoff; give each at most REDIAL and start a fresh one on the next round, so the
    // first dial after the link returns goes out within a round, not at a stale
    // handshake's next retransmission (seconds later).
    match tokio::time::timeout(REDIAL, node.redial_member(shore, addrs.to_vec())).await {
        Ok(r) => {
            r.map_err(|e| e.to_string())?;
        }
        Err(_) => return Err(format!("{NOT_REACHED} {REDIAL:?}")),
    }
    pace.link = node.budgets().cap(&shore).map(|_| (node.budgets().clone(), shore));
    let index = state.recorder.index().clone();
    let cameras = tokio::task::spawn_blocking(move || index.cameras())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut sent = Sent::default();
    for camera in cameras
        .iter()
        .filter(|c| rule.cameras.iter().any(|r| r == "*" || r == *c))
    {
        let skip = unplayable.entry(camera.clone()).or_default();
        let s = session(node, state, (rule, priority), shore, camera, pace, skip).await?;
        sent.frames += s.frames;
        sent.bytes += s.bytes;
    }
    Ok(sent)
}

async fn session(
    node: &Reach,
    state: &Arc<NvrState>,
    (rule, priority): (&ReplicateRule, &[Span]),
    shore: PeerId,
    camera: &str,
    pace: &mut Pace,
    unplayable: &mut Vec<Span>,
) -> Result<Sent, String> {
    // A camera node replicating its own footage needs no grant: its certificate names
    // the camera, and the shore checks that.
    let own = node.trust().own_cert_info().is_some_and(|c| c.may_serve(camera));
    let grant = match node.trust().grant_for(camera, Rights::RECORD) {
        Some(g) => signed::encode(&g),
        None if own => bytes::Bytes::new(),
        None => {
            debug!(%camera, "no record grant for this camera: not replicated");
            return Ok(Sent::default());
        }
    };
    let (index, cam) = (state.recorder.index().clone(), camera.to_owned());
    let (mine, locks) = tokio::task::spawn_blocking(move || {
        let mine = super::held(&index, &cam);
        let locks: Vec<crate::record::EvidenceLock> = index
            .locks()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.camera == cam)
            .collect();
        (mine, locks)
    })
    .await
    .map_err(|e| e.to_string())?;
    let mine = plan::subtract(&mine, unplayable);
    if mine.is_empty() {
        return Ok(Sent::default());
    }
    let limits = node.limits().clone();
    let control = LengthCodec::new(limits.max_control_bytes);
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let mut ctl = node.control();
    let stream = tokio::time::timeout(timeout, ctl.open_stream(shore, StreamProtocol::new(REPLICATE_PROTOCOL)))
        .await
        .map_err(|_| "opening a replication stream timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.split();
    let offer = pb::ReplicaOffer {
        camera_id: camera.to_owned(),
        grant,
        // Offered exactly as the loop below plans: merged over holes shorter than a frame
        // interval only (a playback-style 2 s join offered holes the vehicle has no frame
        // for, which the shore then listed as missing for ever), and without a stretch
        // this NVR cannot play (lost when it was killed).
        recorded: to_ranges(&plan::subtract(&plan::merge(&mine, JOIN_US), unplayable)),
        locks: locks
            .iter()
            .take(super::MAX_RANGES)
            .map(|l| pb::NvrLocked {
                id: l.id,
                from_unix_us: l.from_us,
                to_unix_us: l.to_us,
                reason: l.reason.clone(),
            })
            .collect(),
    };
    write_message(&mut write, &control, &offer)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = FramedRead::new(read, control);
    let body = tokio::time::timeout(timeout, reader.next())
        .await
        .map_err(|_| "the shore did not answer the offer".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("the shore closed the stream")?;
    let have: pb::ReplicaHave = decode_message("replica have", body).map_err(|e| e.to_string())?;
    if let Some(r) = have.reject {
        return Err(format!("the shore refused camera {camera}: {}", r.reason));
    }
    let mut shore_has = from_ranges(&have.recorded);
    let attested: Vec<(i64, i64)> = from_ranges(&have.attested).iter().map(|s| (s.from, s.to)).collect();
    // Digests of footage the shore holds but not their attestations (e.g. the last GOP of
    // a chunk, signed after the chunk went).
    let within: Vec<(i64, i64)> = shore_has.iter().map(|s| (s.from, s.to)).collect();
    let (folder, cam, att) = (state.folder.clone(), camera.to_owned(), attested.clone());
    let batches = tokio::task::spawn_blocking(move || attestations::for_replica(&folder, &cam, &within, &att))
        .await
        .map_err(|e| e.to_string())?;
    for b in batches {
        send(&mut write, &control, pb::replica_item::Item::Attest(b.into())).await?;
    }
    let lock_spans: Vec<Span> = locks.iter().map(|l| Span::new(l.from_us, l.to_us)).collect();
    let mut sent = Sent::default();
    let frame_codec = LengthCodec::new(limits.max_frame_bytes + (64 << 10));
    loop {
        // As in the offer: joining over a stretch this NVR cannot play would ask for it again.
        let offered = plan::subtract(&plan::merge(&mine, JOIN_US), unplayable);
        let missing = plan::subtract(&offered, &plan::merge(&shore_has, JOIN_US));
        let Some((chunk, why)) = plan::next_chunk(&missing, &lock_spans, priority, rule.order, CHUNK_US) else {
            break;
        };
        let started = Instant::now();
        let s = send_chunk(state, camera, chunk, &attested, &mut write, &frame_codec, pace).await?;
        write_message(
            &mut write,
            &control,
            &item(pb::replica_item::Item::End(pb::ReplicaChunkEnd { frames: s.frames })),
        )
        .await
        .map_err(|e| e.to_string())?;
        let body = tokio::time::timeout(ACK_WAIT, reader.next())
            .await
            .map_err(|_| "the shore did not acknowledge a chunk".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("the shore closed the stream")?;
        let ack: pb::ReplicaAck = decode_message("replica ack", body).map_err(|e| e.to_string())?;
        if !ack.error.is_empty() {
            return Err(format!("the shore stopped camera {camera}: {}", ack.error));
        }
        sent.frames += s.frames;
        sent.bytes += s.bytes;
        // What the shore holds now. The newest segment is still being written: its index
        // entry can be ahead of what the file shows, so only what was read counts there;
        // a stretch with no frame far from the live edge is a hole in the recording.
        let newest = mine.last().map_or(i64::MIN, |m| m.to);
        // The live edge exists only while the camera records: once its newest footage is
        // older than the edge (ignition off), a chunk with no frame is just empty.
        let recording = newest >= crate::clock::now_unix_us().saturating_sub(LIVE_EDGE_US);
        let newest = if recording { newest } else { i64::MAX };
        match s.last_us {
            Some(last) if chunk.to >= newest.saturating_sub(LIVE_EDGE_US) => {
                shore_has.push(Span::new(chunk.from, last))
            }
            None if chunk.to >= newest.saturating_sub(LIVE_EDGE_US) => {
                debug!(%camera, "the newest footage is not on disk yet; replication looks again shortly");
                break;
            }
            None => {
                if unplayable.len() < super::MAX_RANGES {
                    unplayable.push(chunk);
                }
                shore_has.push(chunk);
            }
            _ => shore_has.push(chunk),
        }
        info!(%camera, ?why, from = chunk.from, to = chunk.to, frames = s.frames, bytes = s.bytes, stored = ack.stored, duplicates = ack.duplicates, ms = started.elapsed().as_millis() as u64, "replicated chunk");
    }
    let _ = write.close().await;
    Ok(sent)
}

fn item(i: pb::replica_item::Item) -> pb::ReplicaItem {
    pb::ReplicaItem { item: Some(i) }
}

async fn send<W: futures::AsyncWrite + Unpin>(
    write: &mut W,
    codec: &LengthCodec,
    i: pb::replica_item::Item,
) -> Result<(), String> {
    write_message(write, codec, &item(i)).await.map_err(|e| e.to_string())
}

/// Under a `[[link]]` budget, an item goes in slices of at most this many bytes, each
/// paced: a keyframe does not reach the link's queue at once, ahead of live frames.
const SLICE: usize = 8 << 10;

/// [`send`] under the node's link budget toward `peer`, in paced slices.
async fn send_paced<W: futures::AsyncWrite + Unpin>(
    write: &mut W,
    codec: &LengthCodec,
    i: pb::replica_item::Item,
    budgets: &crate::stream::budget::LinkBudgets,
    peer: &PeerId,
) -> Result<(), String> {
    let mut buf = bytes::BytesMut::new();
    codec.encode_message(&item(i), &mut buf).map_err(|e| e.to_string())?;
    for slice in buf.chunks(SLICE) {
        budgets.pace_bulk(peer, slice.len()).await;
        write.write_all(slice).await.map_err(|e| e.to_string())?;
    }
    write.flush().await.map_err(|e| e.to_string())
}

/// Sends one chunk's codec, keys, frames (those inside it), gaps and attestations.
async fn send_chunk<W: futures::AsyncWrite + Unpin>(
    state: &Arc<NvrState>,
    camera: &str,
    chunk: Span,
    attested: &[(i64, i64)],
    write: &mut W,
    codec: &LengthCodec,
    pace: &mut Pace,
) -> Result<Sent, String> {
    let (tx, mut rx) = mpsc::channel::<Result<PlaybackItem, String>>(64);
    let (index, cam) = (state.recorder.index().clone(), camera.to_owned());
    // Read from well before the chunk: playback starts at a keyframe it finds at or before
    // `from` in a segment that reaches it, else at the next keyframe (which would skip the
    // chunk's first P-frames); frames before the chunk are read here and not sent.
    let read_from = chunk.from.saturating_sub(LOOKBACK_US);
    let reader = tokio::task::spawn_blocking(move || match frames(&index, &cam, read_from, chunk.to) {
        Ok(items) => {
            for i in items {
                if tx.blocking_send(i.map_err(|e| e.to_string())).is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e.to_string()));
        }
    });
    let start = pb::ReplicaChunk {
        from_unix_us: chunk.from,
        to_unix_us: chunk.to,
        codec: None,
        audio: None,
    };
    send(write, codec, pb::replica_item::Item::Chunk(start.clone())).await?;
    let mut sent = Sent::default();
    let mut keys: HashMap<u64, ()> = HashMap::new();
    while let Some(i) = rx.recv().await {
        match i {
            Ok(PlaybackItem::Codec(c)) => {
                let c = pb::ReplicaChunk {
                    codec: Some(codec_config(&c)),
                    ..start.clone()
                };
                send(write, codec, pb::replica_item::Item::Chunk(c)).await?;
            }
            Ok(PlaybackItem::Audio(a)) => {
                let c = pb::ReplicaChunk {
                    audio: Some(crate::stream::codecs::audio_config(&a)),
                    ..start.clone()
                };
                send(write, codec, pb::replica_item::Item::Chunk(c)).await?;
            }
            Ok(PlaybackItem::Key { epoch, key }) => match state.keys.unwrap(camera, epoch, &key) {
                Ok(k) => {
                    keys.insert(epoch, ());
                    let k = pb::ReplicaKey {
                        epoch,
                        key: bytes::Bytes::copy_from_slice(k.bytes()),
                    };
                    send(write, codec, pb::replica_item::Item::Key(k)).await?;
                }
                Err(e) => {
                    warn!(%camera, epoch, error = %e, "stored media key does not open; its frames are not replicated")
                }
            },
            Ok(PlaybackItem::Frame(f)) => {
                let t = f.capture_unix_us;
                if !chunk.contains(t) || !keys.contains_key(&f.key_epoch) {
                    continue;
                }
                let len = f.payload.len();
                let wait = pace.wait_for(len + 64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let frame = pb::ReplicaFrame {
                    header: Some(f.header()),
                    payload: f.payload,
                };
                match &pace.link {
                    Some((budgets, peer)) => {
                        send_paced(write, codec, pb::replica_item::Item::Frame(frame), budgets, peer).await?
                    }
                    None => send(write, codec, pb::replica_item::Item::Frame(frame)).await?,
                }
                sent.frames += 1;
                sent.bytes += len as u64;
                sent.last_us = Some(t);
            }
            Ok(PlaybackItem::Gap { from_us, to_us, reason }) => {
                let g = pb::NvrSpan {
                    from_unix_us: from_us,
                    to_unix_us: to_us,
                    recorded: false,
                    reason,
                };
                send(write, codec, pb::replica_item::Item::Gap(g)).await?;
            }
            Err(e) => warn!(%camera, error = %e, "damaged recording skipped in replication"),
        }
    }
    let _ = reader.await;
    let (folder, cam, att) = (state.folder.clone(), camera.to_owned(), attested.to_vec());
    let batches =
        tokio::task::spawn_blocking(move || attestations::for_replica(&folder, &cam, &[(chunk.from, chunk.to)], &att))
            .await
            .map_err(|e| e.to_string())?;
    for b in batches {
        send(write, codec, pb::replica_item::Item::Attest(b.into())).await?;
    }
    write.flush().await.map_err(|e| e.to_string())?;
    Ok(sent)
}
