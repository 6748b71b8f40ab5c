//! The one accept loop every protocol a node serves runs on (media, info, keys,
//! membership, admin, attestations, NVR).
//!
//! libp2p-stream hands inbound streams of a protocol to one [`IncomingStreams`]; [`serve`]
//! takes each, gives it a slot (bounded per peer and in total, per protocol, before the
//! handler reads a byte: a peer cannot open streams without limit however cheap its
//! requests are), and runs the handler in its own task until it ends or the node shuts
//! down. A stream beyond the bounds is dropped at once (the opener sees it reset) and
//! counted. Media bytes never pass through this loop: it only hands streams out.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Limits;

/// Short request/answer protocols (info, keys, membership, admin): streams one peer may
/// have open at once. A well-behaved peer has one or two.
pub const CONTROL_STREAMS_PER_PEER: usize = 16;
/// Long-lived protocols (media, attestations, NVR playback) get the configured stream
/// bounds plus this many streams still waiting for their request to be answered, so a
/// refusal past the configured bound is the protocol's own readable reject.
pub const PENDING_STREAMS: usize = 8;

/// How many streams of one protocol may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub per_peer: usize,
    pub total: usize,
}

impl Bounds {
    /// For request/answer protocols.
    pub fn control(limits: &Limits) -> Self {
        Self {
            per_peer: CONTROL_STREAMS_PER_PEER,
            total: limits.max_streams_total,
        }
    }

    /// For protocols whose streams carry video or digests for as long as they are open.
    pub fn streams(limits: &Limits) -> Self {
        Self {
            per_peer: limits.max_streams_per_peer.saturating_add(PENDING_STREAMS),
            total: limits.max_streams_total.saturating_add(PENDING_STREAMS),
        }
    }
}

/// Counts open streams per peer and in total; a [`Slot`] is released on drop.
#[derive(Debug, Default)]
pub struct Slots {
    per_peer: Mutex<HashMap<PeerId, usize>>,
    refused: AtomicU64,
}

/// One open stream's place in its [`Slots`].
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    peer: PeerId,
}

impl Slots {
    /// Takes a slot for `peer` if both bounds allow it.
    pub fn try_take(self: &Arc<Self>, peer: PeerId, per_peer: usize, total: usize) -> Option<Slot> {
        let mut map = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let sum: usize = map.values().sum();
        let mine = map.entry(peer).or_default();
        if *mine >= per_peer || sum >= total {
            if *mine == 0 {
                map.remove(&peer);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *mine += 1;
        Some(Slot {
            slots: self.clone(),
            peer,
        })
    }

    /// Streams open now.
    pub fn total(&self) -> usize {
        self.per_peer.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// Streams refused for want of a slot since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// Serves `protocol`'s inbound streams until `shutdown`: each stream within `bounds` runs
/// `handler(peer, stream, token)` in its own task, others are dropped. `token` is
/// cancelled at shutdown, and every task still running then is aborted. Returns the
/// loop's slots (for counting); the loop itself is spawned.
///
/// The handler's future is polled alone, never inside a `select!` with the shutdown
/// token: a media session wakes once per frame, and a wrapper would poll the token (a
/// lock) on every one of those wake-ups.
pub fn serve<H, Fut, E>(
    protocol: &'static str,
    mut incoming: IncomingStreams,
    bounds: Bounds,
    shutdown: CancellationToken,
    handler: H,
) -> Arc<Slots>
where
    H: Fn(PeerId, Stream, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    let slots = Arc::new(Slots::default());
    let counted = slots.clone();
    tokio::spawn(async move {
        // Dropped (aborting every session still running) when the loop ends.
        let mut sessions = JoinSet::new();
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => return },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                _ = shutdown.cancelled() => return,
            };
            let Some(slot) = slots.try_take(peer, bounds.per_peer, bounds.total) else {
                let refused = slots.refused();
                // Said once, then now and then while a peer keeps trying.
                if refused == 1 || refused.is_multiple_of(1000) {
                    warn!(%peer, protocol, refused, per_peer = bounds.per_peer, total = bounds.total, "too many open streams: stream dropped");
                } else {
                    debug!(%peer, protocol, "too many open streams: stream dropped");
                }
                drop(stream);
                continue;
            };
            let session = handler(peer, stream, shutdown.child_token());
            sessions.spawn(async move {
                let _slot = slot;
                if let Err(e) = session.await {
                    debug!(%peer, protocol, error = %e, "stream ended with an error");
                }
            });
        }
    });
    counted
}

/// Accepts `protocol` on `control` and serves it on [`serve`] with the bounds of a
/// control protocol ([`Bounds::control`]): the one way every request/answer protocol of
/// a node (PTZ, events, talkback, ...) is started. `Err` when the protocol is already
/// being accepted.
pub fn serve_control<H, Fut, E>(
    control: &mut libp2p_stream::Control,
    protocol: &'static str,
    limits: &Limits,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), String>
where
    H: Fn(PeerId, Stream, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    let incoming = control
        .accept(libp2p::StreamProtocol::new(protocol))
        .map_err(|e| e.to_string())?;
    serve(protocol, incoming, Bounds::control(limits), shutdown, handler);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_peer_and_in_total_and_released_on_drop() {
        let slots = Arc::new(Slots::default());
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let a1 = slots.try_take(a, 2, 3).expect("first of a");
        let a2 = slots.try_take(a, 2, 3).expect("second of a");
        assert!(slots.try_take(a, 2, 3).is_none(), "a is at its bound");
        let b1 = slots.try_take(b, 2, 3).expect("first of b");
        assert!(slots.try_take(c, 2, 3).is_none(), "the total is reached");
        assert_eq!((slots.total(), slots.refused()), (3, 2));
        drop(a1);
        assert!(slots.try_take(c, 2, 3).is_some(), "a's released slot is free again");
        drop((a2, b1));
        assert_eq!(slots.total(), 0);
        // A refused peer leaves no entry behind (no growth from peers that never got in).
        assert_eq!(slots.per_peer.lock().map(|m| m.len()).unwrap_or(usize::MAX), 0);
    }

    #[test]
    fn bounds_leave_room_for_the_protocols_own_readable_refusal() {
        let limits = Limits::default();
        let s = Bounds::streams(&limits);
        assert!(s.per_peer > limits.max_streams_per_peer);
        assert!(s.total > limits.max_streams_total);
        assert_eq!(Bounds::control(&limits).per_peer, CONTROL_STREAMS_PER_PEER);
    }
}
