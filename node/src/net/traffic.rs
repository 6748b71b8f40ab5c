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
//!
//! Each counted connection also stamps when it last read stream bytes ([`Heard`]):
//! the liveness check takes any bytes received as proof of life, stamped where they are
//! read (the connection's task), not when the swarm task gets round to a pong. The swarm
//! task claims a connection's stamp by its peer and endpoint when libp2p reports it
//! established ([`Traffic::claim`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::ConnectedPoint;
use libp2p::PeerId;

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
#[derive(Debug)]
pub struct Traffic {
    /// `[family][0 = in, 1 = out]`
    bytes: [[AtomicU64; 2]; Family::ALL.len()],
    /// What [`Heard`] stamps count from.
    epoch: Instant,
    /// Stamps of connections not yet claimed by the swarm task (bounded: an entry whose
    /// connection is gone is dropped at the next registration).
    unclaimed: Mutex<Vec<(PeerId, ConnectedPoint, Arc<AtomicU64>)>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            bytes: Default::default(),
            epoch: Instant::now(),
            unclaimed: Mutex::new(Vec::new()),
        }
    }
}

/// When one connection last read stream bytes (shared with the connection's streams).
#[derive(Debug, Clone)]
pub struct Heard {
    /// Microseconds since `epoch` plus one; 0: nothing read yet.
    at: Arc<AtomicU64>,
    epoch: Instant,
}

impl Heard {
    fn new(epoch: Instant) -> Self {
        Self {
            at: Arc::new(AtomicU64::new(0)),
            epoch,
        }
    }

    /// Bytes were read now.
    fn stamp(&self) {
        let us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.at.store(us + 1, Ordering::Relaxed);
    }

    /// When bytes were last read, if ever.
    pub fn last(&self) -> Option<Instant> {
        match self.at.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us - 1)),
        }
    }
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

    /// A new connection to `peer` at `endpoint`: its stamp, held until claimed.
    fn register(&self, peer: PeerId, endpoint: ConnectedPoint) -> Heard {
        let heard = Heard::new(self.epoch);
        let mut u = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        // Connections dropped before libp2p reported them (refused by a limit).
        u.retain(|(_, _, at)| Arc::strong_count(at) > 1);
        u.push((peer, endpoint, heard.at.clone()));
        heard
    }

    /// The stamp of the connection to `peer` at `endpoint` that libp2p reports
    /// established (`None` for transports that are not counted).
    pub fn claim(&self, peer: &PeerId, endpoint: &ConnectedPoint) -> Option<Heard> {
        let mut u = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        let i = u.iter().position(|(p, e, _)| p == peer && e == endpoint)?;
        let (_, _, at) = u.swap_remove(i);
        Some(Heard { at, epoch: self.epoch })
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
    heard: Heard,
}

impl<M> Counted<M> {
    /// `inner`, a connection to `peer` at `endpoint`, counted into `traffic`.
    pub fn new(inner: M, traffic: Arc<Traffic>, peer: PeerId, endpoint: ConnectedPoint) -> Self {
        let heard = traffic.register(peer, endpoint);
        Self { inner, traffic, heard }
    }
}

impl<M: StreamMuxer + Unpin> StreamMuxer for Counted<M>
where
    M::Substream: Unpin,
{
    type Substream = CountedStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let (traffic, heard) = (self.traffic.clone(), self.heard.clone());
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|s| CountedStream::new(s, traffic, heard, false))
    }

    fn poll_outbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let (traffic, heard) = (self.traffic.clone(), self.heard.clone());
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|s| CountedStream::new(s, traffic, heard, true))
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
    heard: Heard,
    /// We opened it: the proposal is in what we write; else in what we read.
    outbound: bool,
    family: Option<Family>,
    /// The first bytes of the proposing side, until the family is known.
    head: Vec<u8>,
    /// Bytes (in, out) moved before the family was known.
    waiting: [u64; 2],
}

impl<S> CountedStream<S> {
    fn new(inner: S, traffic: Arc<Traffic>, heard: Heard, outbound: bool) -> Self {
        Self {
            inner,
            traffic,
            heard,
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
        if n > 0 {
            self.heard.stamp();
        }
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
        let heard = Heard::new(t.epoch);
        let mut s = CountedStream::new((), t.clone(), heard.clone(), true);
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
        let mut u = CountedStream::new((), t.clone(), heard, false);
        u.count(true, b"\x03ab");
        drop(u);
        assert_eq!(t.snapshot().total(Family::Other), 3);
        let later = t.snapshot();
        assert_eq!(later.since(&snap).total(Family::Other), 3);
        assert_eq!(later.since(&snap).total(Family::Dht), 0);
    }

    #[test]
    fn a_connections_stamp_is_claimed_once_by_its_peer_and_endpoint() {
        let t = Traffic::default();
        let peer = PeerId::random();
        let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().expect("addr");
        let dialer = ConnectedPoint::Dialer {
            address: addr.clone(),
            role_override: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let listener = ConnectedPoint::Listener {
            local_addr: addr.clone(),
            send_back_addr: addr,
        };
        let heard = t.register(peer, dialer.clone());
        assert!(t.claim(&peer, &listener).is_none(), "another endpoint");
        assert!(t.claim(&PeerId::random(), &dialer).is_none(), "another peer");
        let claimed = t.claim(&peer, &dialer).expect("claimed");
        assert!(t.claim(&peer, &dialer).is_none(), "claimed once");
        assert_eq!(claimed.last(), None, "nothing read yet");
        heard.stamp();
        let at = claimed.last().expect("stamped");
        assert!(at <= Instant::now() && at >= t.epoch);
        // A connection dropped before it was claimed leaves nothing behind.
        drop(t.register(peer, listener.clone()));
        let _kept = t.register(PeerId::random(), listener);
        assert_eq!(t.unclaimed.lock().expect("lock").len(), 1);
    }
}
