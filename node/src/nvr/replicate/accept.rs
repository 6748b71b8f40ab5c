//! The shore's side of `/camesh/replicate/1` (IO): checks the sender (a fleet member
//! with a `record` grant on the camera, or the camera's own node), says what it holds, then stores each chunk:
//! frames it lacks (opened with their media key first: a frame that does not open ends
//! the session), keys wrapped under its storage key, gap markers, and the camera's
//! signed digests; each chunk's end is answered once the chunk is on disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec, MediaFrame};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::plan::{self, Arriving, Span};
use super::{from_ranges, held, to_ranges, SourceCoverage, REPLICATE_PROTOCOL};
use crate::auth::{self, media_key::MediaKey, Rights};
use crate::clock::now_unix_us;
use crate::nvr::{attestations, NvrState};
use crate::reach::Reach;
use crate::record::segment::valid_camera_id;
use crate::stream::accept;
use crate::stream::io::{write_message, FramedRead, IoError};
use crate::stream::server::codec_params;

/// Media keys a session keeps (epochs of the footage being sent).
const MAX_KEYS: usize = 64;
/// Frames queued to the recorder between flushes (keeps its bounded queue from filling).
const FLUSH_EVERY: u64 = 32;
/// How long the shore waits for the next item.
const IDLE: Duration = Duration::from_secs(60);

/// Serves `/camesh/replicate/1` on the node's bounded accept loop.
pub(crate) fn run(node: Reach, state: Arc<NvrState>, incoming: IncomingStreams, cancel: CancellationToken) {
    let bounds = accept::Bounds::streams(node.limits());
    accept::serve(REPLICATE_PROTOCOL, incoming, bounds, cancel, move |peer, stream, _| {
        let (node, state) = (node.clone(), state.clone());
        async move { session(&node, &state, peer, stream).await }
    });
}

fn refuse(reason: &str) -> pb::ReplicaHave {
    pb::ReplicaHave {
        reject: Some(pb::StreamReject {
            code: pb::RejectCode::RejectNotAuthorized as i32,
            reason: reason.to_owned(),
        }),
        ..Default::default()
    }
}

async fn session(node: &Reach, state: &Arc<NvrState>, peer: PeerId, stream: Stream) -> Result<(), IoError> {
    let limits = node.limits().clone();
    let control = LengthCodec::new(limits.max_control_bytes);
    let trust = node.trust();
    let (read, mut write) = stream.split();
    let Some(cert) = trust.wait_member(&peer, trust.grace()).await else {
        trust
            .audit
            .record("refused-replica", &peer.to_string(), "", "not a fleet member");
        return write_message(&mut write, &control, &refuse("not a member of this fleet")).await;
    };
    let mut reader = FramedRead::new(read, control);
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let Some(body) = tokio::time::timeout(timeout, reader.next()).await.unwrap_or(Ok(None))? else {
        return Ok(());
    };
    let offer: pb::ReplicaOffer = match decode_message("replica offer", body) {
        Ok(o) => o,
        Err(e) => return write_message(&mut write, &control, &refuse(&e.to_string())).await,
    };
    let camera = offer.camera_id.clone();
    if !valid_camera_id(&camera) {
        let shown: String = camera.chars().take(64).collect();
        return write_message(&mut write, &control, &refuse(&format!("invalid camera id {shown:?}"))).await;
    }
    let tags = node
        .directory()
        .lookup(&camera)
        .first()
        .map(|e| e.announcement.tags.clone())
        .unwrap_or_default();
    // The camera's own node (its certificate names the camera: a body-worn camera that
    // recorded itself) sends with no grant; anyone else shows one with `record`.
    let own_footage = offer.grant.is_empty() && cert.may_serve(&camera);
    let grant = if own_footage {
        Ok(())
    } else {
        auth::signed::decode("grant", &offer.grant)
            .and_then(|g| trust.check_grant(&peer, &g, &camera, &tags, Rights::RECORD))
            .map(|_| ())
    };
    if let Err(e) = grant {
        trust
            .audit
            .record("refused-replica", &peer.to_string(), &camera, &e.to_string());
        info!(%peer, %camera, error = %e, "replication refused");
        let why = format!("replicating camera {camera} needs a grant with the record right: {e}");
        return write_message(&mut write, &control, &refuse(&why)).await;
    }
    let (index, folder, cam) = (state.recorder.index().clone(), state.folder.clone(), camera.clone());
    let (mut have, attested) = tokio::task::spawn_blocking(move || {
        let attested: Vec<Span> = attestations::digest_ranges(&folder, &cam)
            .into_iter()
            .map(|(a, b)| Span::new(a, b))
            .collect();
        (held(&index, &cam), plan::merge(&attested, 1))
    })
    .await
    .unwrap_or_default();
    let source = SourceCoverage {
        peer: peer.to_string(),
        name: cert.name.chars().take(64).collect(),
        offered_us: now_unix_us(),
        recorded: from_ranges(&offer.recorded).iter().map(|s| (s.from, s.to)).collect(),
        locks: offer
            .locks
            .iter()
            .take(super::MAX_RANGES)
            .map(|l| (l.id, l.from_unix_us, l.to_unix_us, l.reason.chars().take(200).collect()))
            .collect(),
    };
    let (st, cam, who) = (state.clone(), camera.clone(), cert.name.clone());
    let _ = tokio::task::spawn_blocking(move || {
        keep_locks(&st, &cam, &who, &source.locks);
        st.replicas.offered(&cam, source);
    })
    .await;
    trust
        .audit
        .record("replica", &peer.to_string(), &camera, "replication session");
    let answer = pb::ReplicaHave {
        recorded: to_ranges(&have),
        attested: to_ranges(&attested),
        reject: None,
    };
    write_message(&mut write, &control, &answer).await?;
    reader.set_max(limits.max_frame_bytes + (64 << 10));
    let mut keys: HashMap<u64, MediaKey> = HashMap::new();
    let mut run: Option<Span> = state.replicas.run(&camera);
    // Where the footage shore holds contiguously ends (the last frame written, or the
    // end of the last chunk written whole), the chunk being received, whether it starts
    // there, and whether a frame of it was written yet.
    let mut cover_to: Option<i64> = run.map(|r| r.to);
    let mut chunk: Option<(i64, i64)> = None;
    let (mut chunk_continues, mut first_in_chunk) = (true, false);
    let (mut stored, mut dups, mut queued) = (0u64, 0u64, 0u64);
    let (mut total_stored, mut total_dups) = (0u64, 0u64);
    let mut chunk_span: Option<Span> = None;
    let rec = state.recorder.clone();
    let flush = |rec: Arc<crate::record::Recorder>| async move {
        tokio::task::spawn_blocking(move || rec.flush())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let result: Result<(), String> = loop {
        let body = match tokio::time::timeout(IDLE, reader.next()).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e.to_string()),
            Err(_) => break Err("no item for 60 s".into()),
        };
        let item: pb::ReplicaItem = match decode_message("replica item", body) {
            Ok(i) => i,
            Err(e) => break Err(e.to_string()),
        };
        match item.item {
            Some(pb::replica_item::Item::Chunk(c)) => {
                if chunk != Some((c.from_unix_us, c.to_unix_us)) {
                    chunk = Some((c.from_unix_us, c.to_unix_us));
                    chunk_continues = cover_to.is_some_and(|e| c.from_unix_us <= e.saturating_add(1));
                    first_in_chunk = true;
                }
                if let Some(codec) = &c.codec {
                    if let Err(e) = rec.set_codec(&camera, &codec_params(codec)) {
                        break Err(format!("codec not recorded: {e}"));
                    }
                }
                if let Some(audio) = c.audio.as_ref().and_then(crate::stream::codecs::audio_params) {
                    if let Err(e) = rec.set_audio(&camera, Some(&audio)) {
                        break Err(format!("audio track not recorded: {e}"));
                    }
                }
            }
            Some(pb::replica_item::Item::Key(k)) => {
                let key = match MediaKey::from_bytes(k.epoch, &k.key) {
                    Ok(key) => key,
                    Err(e) => break Err(e.to_string()),
                };
                if keys.len() >= MAX_KEYS && !keys.contains_key(&k.epoch) {
                    keys.clear();
                }
                keys.insert(k.epoch, key);
                let wrapped = state.keys.wrap(&camera, k.epoch, &k.key);
                if let Err(e) = rec.write_key(&camera, k.epoch, wrapped) {
                    break Err(format!("media key not recorded: {e}"));
                }
            }
            Some(pb::replica_item::Item::Frame(f)) => {
                let header = f.header.unwrap_or_default();
                let t = header.capture_unix_us;
                let mut held_now = have.clone();
                held_now.extend(run);
                let continues = !first_in_chunk || chunk_continues;
                let what = plan::arriving(t, run.map(|r| r.to), &held_now, continues);
                if what == Arriving::Duplicate {
                    dups += 1;
                    continue;
                }
                let Some(key) = keys.get(&header.key_epoch) else {
                    break Err(format!(
                        "frame at {t} of key epoch {} came without its key",
                        header.key_epoch
                    ));
                };
                if let Err(e) = key.open(&header, &f.payload) {
                    break Err(format!("corrupt frame at {t}: {e}"));
                }
                if what == Arriving::NewSegment {
                    if let Some(r) = run.take() {
                        have = plan::merge(&[have.as_slice(), &[r]].concat(), 1);
                    }
                    if let Err(e) = rec.new_segment(&camera, t) {
                        break Err(format!("cannot start a segment: {e}"));
                    }
                }
                if queued >= FLUSH_EVERY {
                    queued = 0;
                    if let Err(e) = flush(rec.clone()).await {
                        break Err(format!("recorder: {e}"));
                    }
                }
                let frame = MediaFrame::new(header, f.payload);
                if let Err(e) = rec.write(&camera, &frame) {
                    break Err(format!("frame not stored: {e}"));
                }
                queued += 1;
                stored += 1;
                first_in_chunk = false;
                run = Some(run.map_or(Span::new(t, t), |r| Span::new(r.from, t)));
                chunk_span = Some(chunk_span.map_or(Span::new(t, t), |c| Span::new(c.from.min(t), c.to.max(t))));
            }
            Some(pb::replica_item::Item::Gap(g)) => {
                let reason: String = g.reason.chars().take(200).collect();
                if let Err(e) = rec.write_gap(&camera, g.from_unix_us, g.to_unix_us, &reason) {
                    debug!(%camera, error = %e, "replicated gap marker not recorded");
                }
            }
            Some(pb::replica_item::Item::Attest(bytes)) => {
                let (folder, cam) = (state.folder.clone(), camera.clone());
                let r = tokio::task::spawn_blocking(move || attestations::append_replica(&folder, &cam, &bytes))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                match r {
                    Ok(n) => debug!(%camera, digests = n, "replicated attestations stored"),
                    Err(e) => break Err(format!("attestations: {e}")),
                }
            }
            Some(pb::replica_item::Item::End(_)) => {
                queued = 0;
                let ack = match flush(rec.clone()).await {
                    Ok(()) => pb::ReplicaAck {
                        stored,
                        duplicates: dups,
                        first_unix_us: chunk_span.map_or(0, |c| c.from),
                        last_unix_us: chunk_span.map_or(0, |c| c.to),
                        error: String::new(),
                    },
                    Err(e) => break Err(format!("recorder: {e}")),
                };
                // The chunk's frames are all on shore now: footage is contiguous up to
                // its end (the vehicle sent everything it holds in it).
                if let (Some((from, to)), Some(r)) = (chunk, run) {
                    if r.to >= from {
                        cover_to = Some(to.max(r.to));
                    }
                }
                total_stored += stored;
                total_dups += dups;
                (stored, dups, chunk_span) = (0, 0, None);
                if let Err(e) = write_message(&mut write, &control, &ack).await {
                    break Err(e.to_string());
                }
            }
            None => {}
        }
    };
    state.replicas.set_run(&camera, if result.is_ok() { run } else { None });
    match &result {
        Ok(()) => {
            info!(%peer, %camera, stored = total_stored + stored, duplicates = total_dups + dups, "replication session ended")
        }
        Err(e) => {
            warn!(%peer, %camera, error = %e, "replication session ended with an error");
            let ack = pb::ReplicaAck {
                error: e.chars().take(300).collect(),
                ..Default::default()
            };
            let _ = write_message(&mut write, &control, &ack).await;
        }
    }
    let _ = write.close().await;
    Ok(())
}

/// The source's evidence locks become this NVR's too (retention here never deletes
/// them), each once (blocking).
fn keep_locks(state: &NvrState, camera: &str, source: &str, locks: &[(u64, i64, i64, String)]) {
    let rec = &state.recorder;
    let held = rec.locks().unwrap_or_default();
    let mut count = held.len();
    for (_, from, to, reason) in locks {
        if held
            .iter()
            .any(|l| l.camera == camera && l.from_us == *from && l.to_us == *to)
        {
            continue;
        }
        if crate::nvr::serve::lock_allowed(count, *from, *to).is_err() {
            continue;
        }
        let why = format!("replicated from {source}: {reason}");
        match rec.lock_range(camera, *from, *to, &why) {
            Ok(_) => count += 1,
            Err(e) => warn!(%camera, error = %e, "replicated evidence lock not kept"),
        }
    }
}
