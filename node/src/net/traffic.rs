//! Bytes on this node's libp2p streams, by protocol family: how much gossip, DHT, ping,
//! identify, fleet-state and membership traffic the node carries (read through
//! [`super::NetHandle::traffic`]; the scale bench reports it per node per minute).
//!
//! The QUIC transport's connections are wrapped ([`Counted`]) when the Swarm is built;
//! each stream they open or accept is wrapped too and learns its protocol from the
//! multistream-select proposal that starts every libp2p stream (the dialer writes it,
//! the listener reads it), parsed by the pure [`sniff`]. Until then its bytes wait in the
//! stream; a stream that never names a protocol counts as [`Family::Other`].
//!
//! What is counted: stream payload after QUIC decryption, both directions, including
//! the multistream-select negotiation. Not counted: QUIC packet headers,
//! acknowledgements, handshakes, and connections over other transports (TCP, relay
//! circuits, WebRTC-direct). One relaxed atomic add per read or write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

/// What a stream carries, by the protocol it negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gossipsub (`/meshsub/…`): announcements, fleet-state entries, mesh upkeep.
    Gossip,
    /// Kademlia (`…/kad/…`): provider records and lookups.
    Dht,
    Ping,
    /// identify and identify push.
    Identify,
    /// `/camesh/fleet-state/1` reconciliation.
    FleetState,
    /// `/camesh/member/1` and `/camesh/admin/1`.
    Membership,
    /// Everything else: media, info, keys, relay, AutoNAT, DCUtR, unnamed streams.
    Other,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Gossip,
        Family::Dht,
        Family::Ping,
        Family::Identify,
        Family::FleetState,
        Family::Membership,
        Family::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Gossip => "gossip",
            Family::Dht => "dht",
            Family::Ping => "ping",
            Family::Identify => "identify",
            Family::FleetState => "fleet-state",
            Family::Membership => "membership",
            Family::Other => "other",
        }
    }

    /// The family of a protocol name.
    pub fn of(protocol: &str) -> Family {
        if protocol.starts_with("/meshsub/") || protocol.starts_with("/floodsub/") {
            Family::Gossip
        } else if protocol.contains("/kad/") {
            Family::Dht
        } else if protocol.starts_with("/ipfs/ping/") {
            Family::Ping
        } else if protocol.starts_with("/ipfs/id/") {
            Family::Identify
        } else if protocol.starts_with("/camesh/fleet-state/") {
            Family::FleetState
        } else if protocol.starts_with("/camesh/member/") || protocol.starts_with("/camesh/admin/") {
            Family::Membership
        } else {
            Family::Other
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one node (shared by all its connections).
#[derive(Debug, Default)]
pub struct Traffic {
    /// `[family][0 = in, 1 = out]`
    bytes: [[AtomicU64; 2]; Family::ALL.len()],
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// `[family][0 = in, 1 = out]`, indexed as [`Family::ALL`].
    pub bytes: [[u64; 2]; Family::ALL.len()],
}

impl TrafficSnapshot {
    /// Bytes in plus out of one family.
    pub fn total(&self, f: Family) -> u64 {
        let [i, o] = self.bytes[f.index()];
        i + o
    }

    /// Bytes in plus out of every family.
    pub fn all(&self) -> u64 {
        Family::ALL.iter().map(|f| self.total(*f)).sum()
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &TrafficSnapshot) -> TrafficSnapshot {
        let mut out = TrafficSnapshot::default();
        for (o, (a, b)) in out.bytes.iter_mut().zip(self.bytes.iter().zip(earlier.bytes.iter())) {
            *o = [a[0].saturating_sub(b[0]), a[1].saturating_sub(b[1])];
        }
        out
    }
}

impl Traffic {
    fn add(&self, f: Family, inbound: bool, n: u64) {
        if n > 0 {
            self.bytes[f.index()][usize::from(!inbound)].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        let mut s = TrafficSnapshot::default();
        for (o, c) in s.bytes.iter_mut().zip(self.bytes.iter()) {
            *o = [c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)];
        }
        s
    }
}

/// The header every multistream-select 1.0 negotiation starts with.
const MULTISTREAM: &[u8] = b"/multistream/1.0.0\n";
/// Bytes looked at before a stream is given up on as [`Family::Other`]: the header and
/// one protocol name (libp2p caps names at 140 bytes) with their length prefixes.
const MAX_SNIFF: usize = 192;

/// The protocol a stream's first bytes propose (pure): `Some(Ok(name))` once the
/// multistream header and the first proposal are in `buf`, `Some(Err(()))` if they are
/// not what multistream-select sends, `None` while more bytes are needed.
pub fn sniff(buf: &[u8]) -> Option<Result<&str, ()>> {
    let (header, rest) = message(buf)?;
    if header != Ok(MULTISTREAM) {
        return Some(Err(()));
    }
    let (proposal, _) = message(rest)?;
    Some(
        proposal
            .ok()
            .and_then(|p| p.strip_suffix(b"\n"))
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or(()),
    )
}

/// One length-prefixed message (unsigned varint length, at most two bytes here) and
/// the bytes after it; `None` when incomplete.
#[allow(clippy::type_complexity)]
fn message(buf: &[u8]) -> Option<(Result<&[u8], ()>, &[u8])> {
    let (&b0, rest) = buf.split_first()?;
    let (len, rest) = if b0 & 0x80 == 0 {
        (usize::from(b0), rest)
    } else {
        let (&b1, rest) = rest.split_first()?;
        if b1 & 0x80 != 0 {
            return Some((Err(()), rest));
        }
        (usize::from(b0 & 0x7f) | (usize::from(b1) << 7), rest)
    };
    if len > MAX_SNIFF {
        return Some((Err(()), rest));
    }
    if rest.len() < len {
        return None;
    }
    Some((Ok(&rest[..len]), &rest[len..]))
}

/// A connection whose streams are counted into `traffic`.
#[derive(Debug)]
pub struct Counted<M> {
    inner: M,
    traffic: Arc<Traffic>,
}

impl<M> Counted<M> {
    pub fn new(inner: M, traffic: Arc<Traffic>) -> Self {
        Self { inner, traffic }
    }
}

impl<M: StreamMuxer + Unpin> StreamMuxer for Counted<M>
where
    M::Substream: Unpin,
{
    type Substream = CountedStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let traffic = self.traffic.clone();
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|s| CountedStream::new(s, traffic, false))
    }

    fn poll_outbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let traffic = self.traffic.clone();
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|s| CountedStream::new(s, traffic, true))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// One counted stream.
#[derive(Debug)]
pub struct CountedStream<S> {
    inner: S,
    traffic: Arc<Traffic>,
    /// We opened it: the proposal is in what we write; else in what we read.
    outbound: bool,
    family: Option<Family>,
    /// The first bytes of the proposing side, until the family is known.
    head: Vec<u8>,
    /// Bytes (in, out) moved before the family was known.
    waiting: [u64; 2],
}

impl<S> CountedStream<S> {
    fn new(inner: S, traffic: Arc<Traffic>, outbound: bool) -> Self {
        Self {
            inner,
            traffic,
            outbound,
            family: None,
            head: Vec::new(),
            waiting: [0, 0],
        }
    }

    fn count(&mut self, inbound: bool, bytes: &[u8]) {
        let n = bytes.len() as u64;
        if let Some(f) = self.family {
            self.traffic.add(f, inbound, n);
            return;
        }
        self.waiting[usize::from(!inbound)] += n;
        if inbound != self.outbound {
            let room = MAX_SNIFF.saturating_sub(self.head.len());
            self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            let found = match sniff(&self.head) {
                Some(Ok(p)) => Some(Family::of(p)),
                Some(Err(())) => Some(Family::Other),
                None if self.head.len() >= MAX_SNIFF => Some(Family::Other),
                None => None,
            };
            if let Some(f) = found {
                self.settle(f);
            }
        }
    }

    fn settle(&mut self, f: Family) {
        self.family = Some(f);
        self.head = Vec::new();
        self.traffic.add(f, true, self.waiting[0]);
        self.traffic.add(f, false, self.waiting[1]);
        self.waiting = [0, 0];
    }
}

impl<S> Drop for CountedStream<S> {
    fn drop(&mut self) {
        if self.family.is_none() {
            self.settle(Family::Other);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.count(true, &buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.count(false, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Vec<u8> {
        let mut v = vec![u8::try_from(s.len()).expect("short")];
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn the_first_proposal_names_the_stream() {
        let mut b = msg("/multistream/1.0.0\n");
        assert_eq!(sniff(&b), None, "header alone");
        b.extend(msg("/meshsub/1.2.0\n"));
        assert_eq!(sniff(&b), Some(Ok("/meshsub/1.2.0")));
        for cut in 0..b.len() {
            assert_eq!(sniff(&b[..cut]), None, "incomplete at {cut}");
        }
        assert_eq!(sniff(b"\x05hello"), Some(Err(())), "not multistream");
        assert_eq!(sniff(&[0xff, 0xff, 0x01]), Some(Err(())), "long varint");
    }

    #[test]
    fn families_by_protocol_name() {
        assert_eq!(Family::of("/meshsub/1.1.0"), Family::Gossip);
        assert_eq!(Family::of("/camesh/fleet1/kad/1.0.0"), Family::Dht);
        assert_eq!(Family::of("/ipfs/ping/1.0.0"), Family::Ping);
        assert_eq!(Family::of("/ipfs/id/push/1.0.0"), Family::Identify);
        assert_eq!(Family::of("/camesh/fleet-state/1"), Family::FleetState);
        assert_eq!(Family::of("/camesh/member/1"), Family::Membership);
        assert_eq!(Family::of("/camesh/media/1"), Family::Other);
    }

    #[test]
    fn bytes_before_and_after_the_proposal_count_for_its_family() {
        let t = Arc::new(Traffic::default());
        // We opened a stream and write the proposal in two pieces, then read an answer.
        let mut s = CountedStream::new((), t.clone(), true);
        let mut hello = msg("/multistream/1.0.0\n");
        hello.extend(msg("/camesh/x/kad/1.0.0\n"));
        let (a, b) = hello.split_at(7);
        s.count(false, a);
        s.count(true, b"\x13/multistream/1.0.0\n");
        assert_eq!(t.snapshot().all(), 0, "family not known yet");
        s.count(false, b);
        s.count(true, b"answer");
        let snap = t.snapshot();
        assert_eq!(snap.bytes[Family::Dht.index()], [20 + 6, hello.len() as u64]);
        assert_eq!(snap.all(), snap.total(Family::Dht));
        // A stream that never names its protocol counts as other when dropped.
        let mut u = CountedStream::new((), t.clone(), false);
        u.count(true, b"\x03ab");
        drop(u);
        assert_eq!(t.snapshot().total(Family::Other), 3);
        let later = t.snapshot();
        assert_eq!(later.since(&snap).total(Family::Other), 3);
        assert_eq!(later.since(&snap).total(Family::Dht), 0);
    }
}
