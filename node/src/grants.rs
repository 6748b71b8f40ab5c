//! `/camesh/grant/1`: an admin hands a signed grant to its holder over the mesh (IO).
//!
//! The sender (`mesh grant ... --send`, [`send`]) opens a stream to the holder and writes
//! the grant (`Signed`, length-delimited); the holder answers one `ControlError` whose
//! `reason` is empty when the grant was installed, and says why not otherwise. The holder
//! serves only verified fleet members ([`Trust::wait_member`]), reads one bounded request
//! within the request timeout, takes at most [`PUSHES_PER_WINDOW`] pushes per peer per
//! [`WINDOW`], and installs only a grant that verifies for itself
//! ([`Trust::add_grant`]: signed through the fleet root, bound to this node's peer id,
//! current); it is stored in the data folder, so it survives a restart, and the trust
//! store ticks, so a waiting NVR starts recording at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::IncomingStreams;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::grant::GrantInfo;
use crate::auth::{Trust, MAX_SIGNED_BYTES};
use crate::config::Limits;
use crate::reach::Reach;
use crate::stream::accept;
use crate::stream::io::{read_request, write_message, FramedRead, IoError};

const GRANT_PROTOCOL: &str = "/camesh/grant/1";
/// A grant push is one grant: twice the largest signed object, with room for framing.
const MAX_MSG: usize = 2 * MAX_SIGNED_BYTES;
/// Pushes one peer may make per [`WINDOW`]: an admin handing out a handful of grants at
/// once, not a peer making this node verify signatures without end.
pub const PUSHES_PER_WINDOW: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Peers whose windows are remembered at once (bounded against churn).
const MAX_TRACKED: usize = 1024;
/// Pushes open at once from one peer.
const STREAMS_PER_PEER: usize = 2;
const STREAMS_TOTAL: usize = 64;

pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(GRANT_PROTOCOL)
}

/// Why a push failed, for the sender.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("{peer} could not be reached: {reason}")]
    Unreachable { peer: PeerId, reason: String },
    #[error("{peer} refused the grant: {reason}")]
    Refused { peer: PeerId, reason: String },
}

/// Pushes per peer in the current window (pure: the time is given).
#[derive(Debug, Default)]
pub struct RateBound {
    windows: HashMap<PeerId, (Instant, u32)>,
}

impl RateBound {
    /// Whether `peer` may push once more at `now` (and counts it).
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.windows.len() >= MAX_TRACKED && !self.windows.contains_key(&peer) {
            self.windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if self.windows.len() >= MAX_TRACKED {
                return false;
            }
        }
        let (start, n) = self.windows.entry(peer).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        *n <= PUSHES_PER_WINDOW
    }
}

/// Serves grant pushes until `shutdown` on the bounded accept loop.
pub fn serve(incoming: IncomingStreams, trust: Arc<Trust>, limits: Limits, shutdown: CancellationToken) {
    let bounds = accept::Bounds {
        per_peer: STREAMS_PER_PEER,
        total: STREAMS_TOTAL,
    };
    let rate = Arc::new(Mutex::new(RateBound::default()));
    accept::serve(GRANT_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        let (trust, limits, rate) = (trust.clone(), limits.clone(), rate.clone());
        async move { session(peer, stream, &trust, &limits, &rate).await }
    });
}

/// The holder's answer to one pushed grant (the bytes as read).
fn answer(trust: &Trust, peer: PeerId, body: bytes::Bytes) -> Result<GrantInfo, String> {
    let g = decode_message::<pb::Signed>("grant", body).map_err(|e| e.to_string())?;
    trust.add_grant(g, true).map_err(|e| e.to_string()).inspect(|info| {
        let serial = format!("{:016x}", info.chain[0]);
        info!(%peer, serial = %serial, rights = %info.rights, cameras = %info.cameras.join(","), "grant received and installed");
        trust.audit.record(
            "grant-received",
            &peer.to_string(),
            &info.cameras.join(","),
            &format!("{} serial {serial}", info.rights),
        );
    })
}

async fn session(
    peer: PeerId,
    mut stream: Stream,
    trust: &Trust,
    limits: &Limits,
    rate: &Mutex<RateBound>,
) -> Result<(), IoError> {
    let codec = LengthCodec::new(MAX_MSG);
    let timeout = Duration::from_secs(limits.request_timeout_s);
    let result = if trust.wait_member(&peer, trust.grace()).await.is_none() {
        Err("not a fleet member".to_owned())
    } else if !rate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(peer, Instant::now())
    {
        Err(format!(
            "too many grant pushes (at most {PUSHES_PER_WINDOW} per {}s)",
            WINDOW.as_secs()
        ))
    } else {
        let Some(body) = read_request(&mut stream, codec, timeout).await? else {
            return Ok(());
        };
        answer(trust, peer, body).map(|_| ())
    };
    if let Err(reason) = &result {
        warn!(%peer, reason = %reason, "grant push refused");
        trust.audit.record("refused-grant", &peer.to_string(), "", reason);
    }
    let reason = result.err().unwrap_or_default();
    write_message(&mut stream, &codec, &pb::ControlError { reason }).await?;
    let _ = stream.close().await;
    Ok(())
}

/// Connects to `holder` (as a member) and hands it `grant`; Ok when it installed it.
pub async fn send(reach: &Reach, holder: PeerId, grant: &pb::Signed) -> Result<(), PushError> {
    let unreachable = |reason: String| PushError::Unreachable { peer: holder, reason };
    reach
        .connect_member(holder, Vec::new())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let timeout = Duration::from_secs(reach.limits().request_timeout_s);
    let mut s = tokio::time::timeout(timeout, reach.control().open_stream(holder, protocol()))
        .await
        .map_err(|_| unreachable("no grant stream within the request timeout".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let codec = LengthCodec::new(MAX_MSG);
    write_message(&mut s, &codec, grant)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut r = FramedRead::new(&mut s, codec);
    let answer = match tokio::time::timeout(timeout, r.next()).await {
        Ok(Ok(Some(body))) => decode_message::<pb::ControlError>("grant answer", body).map_err(|e| e.to_string()),
        Ok(Ok(None)) => Err("the stream closed without an answer".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within the request timeout".to_owned()),
    }
    .map_err(unreachable)?;
    if answer.reason.is_empty() {
        Ok(())
    } else {
        Err(PushError::Refused {
            peer: holder,
            reason: answer.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_bounded_per_peer_and_window() {
        let mut r = RateBound::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        for _ in 0..PUSHES_PER_WINDOW {
            assert!(r.allow(a, t0));
        }
        assert!(!r.allow(a, t0 + Duration::from_secs(1)), "the window is used up");
        assert!(r.allow(b, t0), "another peer has its own window");
        assert!(r.allow(a, t0 + WINDOW), "a new window");
    }

    #[test]
    fn the_tracked_peers_are_bounded() {
        let mut r = RateBound::default();
        let t0 = Instant::now();
        for _ in 0..MAX_TRACKED {
            assert!(r.allow(PeerId::random(), t0));
        }
        assert!(!r.allow(PeerId::random(), t0), "full, and every window still open");
        assert!(r.allow(PeerId::random(), t0 + WINDOW), "old windows make room");
        assert!(r.windows.len() <= MAX_TRACKED);
    }
}
