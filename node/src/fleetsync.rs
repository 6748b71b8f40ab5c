//! Reconciling the fleet-state log between members (IO): `/camesh/fleet-state/1`.
//!
//! Gossip spreads a new entry fast to whoever is online; this protocol makes sure every
//! member ends with every entry, however long it was offline, by transitivity: an entry
//! reaches every node that meets any member who has it.
//!
//! One exchange (a "round"), on a stream the initiator opens:
//! 1. initiator → `FleetSync { summary, unix_ms }`: the head of each of its chains;
//! 2. responder → `FleetSync { summary, entries, unix_ms, more }`: its own summary and the
//!    entries the initiator lacks (root chain first, in order, within [`BUDGET`] bytes);
//! 3. initiator → `FleetSync { entries }`: the entries the responder lacks.
//!
//! Each side verifies every entry against the fleet root and stores it (fsynced) before
//! use ([`Trust::apply_entry`]); an entry it refuses is logged with the reason and ends the
//! round. Rounds repeat while either side had more, at most [`MAX_ROUNDS`] times.
//!
//! When: as soon as a peer is verified as a member, whenever this node's log grows (so a
//! new entry travels on at once), when gossip shows a peer has entries we lack, and every
//! [`PERIOD`] with every connected member. Bounded: one task owns the schedule, at most
//! [`MAX_CONCURRENT`] exchanges run at once, one per peer; a responder answers at most
//! [`MAX_PER_MINUTE`] exchanges per peer per minute and messages are at most [`MAX_MSG`].
//!
//! Each exchange also reports, per peer, how far its log is from ours and how far its
//! clock is from ours (`mesh peers`); a clock further off than the allowed skew is
//! audited.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{self, Trust};
use crate::net::{NetEvent, NetHandle};
use crate::stream::accept;
use crate::stream::io::{write_message, FramedRead};

const PROTOCOL: &str = "/camesh/fleet-state/1";
/// Bytes of entries per message.
pub const BUDGET: usize = 256 << 10;
/// Largest message: the entries plus a summary of every issuer.
pub const MAX_MSG: usize = BUDGET + auth::fleetlog::MAX_ENTRY_BYTES + (auth::fleetlog::MAX_ISSUERS * 96);
/// Rounds in one exchange.
pub const MAX_ROUNDS: usize = 64;
/// Exchanges running at once (initiated by this node).
pub const MAX_CONCURRENT: usize = 8;
/// Exchanges one peer may start with us per minute.
pub const MAX_PER_MINUTE: u32 = 60;
/// How often every connected member is reconciled with, new entries or not.
pub const PERIOD: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

/// What the last exchange with a peer showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    /// Entries we have that the peer lacked after the exchange (0 when in step).
    pub they_lack: u64,
    /// Entries the peer has that we could not take.
    pub we_lack: u64,
    /// Most entries one exchange had to send the peer since this node met it (how far
    /// behind it was).
    pub sent: u64,
    /// Most entries one exchange took from the peer (how far ahead it was).
    pub took: u64,
    /// The peer's clock minus ours, in ms (half the round trip corrected).
    pub clock_offset_ms: i64,
    pub at: Instant,
}

impl PeerState {
    /// The peer's fleet state against ours, for `mesh peers`: "in step", "behind N"
    /// (entries we have that it lacks), "ahead N" (entries it has that we could not take).
    /// "(was behind 2)" when an exchange since we met had to send it entries.
    pub fn lag_text(&self) -> String {
        let now = match (self.they_lack, self.we_lack) {
            (0, 0) => "in step".into(),
            (n, 0) => format!("behind {n}"),
            (0, n) => format!("ahead {n}"),
            (b, a) => format!("behind {b}, ahead {a}"),
        };
        match (self.sent, self.took) {
            (0, 0) => now,
            (s, 0) => format!("{now} (was behind {s})"),
            (0, t) => format!("{now} (was ahead {t})"),
            (s, t) => format!("{now} (was behind {s}, ahead {t})"),
        }
    }

    /// The peer's clock against ours ("+1.2s"), flagged when beyond the allowed skew.
    pub fn clock_text(&self, skew_s: u64) -> String {
        // Rounded to 0.1 s, without a "-0.0".
        let s = (self.clock_offset_ms as f64 / 100.0).round() / 10.0 + 0.0;
        let far = self.clock_offset_ms.unsigned_abs() > skew_s.saturating_mul(1000);
        format!("{s:+.1}s{}", if far { " (beyond skew!)" } else { "" })
    }
}

/// Per-peer results of the last exchanges, for `mesh peers` (bounded).
#[derive(Debug, Clone, Default)]
pub struct SyncTable {
    peers: Arc<Mutex<HashMap<PeerId, PeerState>>>,
}

const MAX_TABLE: usize = 4096;

impl SyncTable {
    pub fn get(&self, peer: &PeerId) -> Option<PeerState> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).get(peer).copied()
    }

    /// Records an exchange's result, keeping the most it ever sent or took (exchanges
    /// started by both sides at once carry the same entries).
    fn put(&self, peer: PeerId, mut s: PeerState) {
        let mut m = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = m.get(&peer) {
            s.sent = s.sent.max(old.sent);
            s.took = s.took.max(old.took);
        }
        if m.len() >= MAX_TABLE && !m.contains_key(&peer) {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.at).map(|(p, _)| *p) {
                m.remove(&oldest);
            }
        }
        m.insert(peer, s);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn read(stream: &mut Stream) -> Result<pb::FleetSync, String> {
    let mut r = FramedRead::new(stream, LengthCodec::new(MAX_MSG));
    match tokio::time::timeout(IO_TIMEOUT, r.next()).await {
        Ok(Ok(Some(body))) => decode_message("fleet sync", body).map_err(|e| e.to_string()),
        Ok(Ok(None)) => Err("stream closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {IO_TIMEOUT:?}")),
    }
}

async fn send(stream: &mut Stream, m: &pb::FleetSync) -> Result<(), String> {
    tokio::time::timeout(IO_TIMEOUT, write_message(stream, &LengthCodec::new(MAX_MSG), m))
        .await
        .map_err(|_| "send timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Applies entries from `peer` in order; stops at the first refusal that is the peer's
/// fault. Returns how many were new.
fn apply_all(trust: &Trust, peer: &PeerId, entries: &[pb::Signed]) -> Result<usize, String> {
    let mut new = 0;
    for e in entries {
        match trust.apply_entry(e) {
            Ok(_) => new += 1,
            Err(auth::fleetlog::LogError::Duplicate { .. }) => {}
            Err(e) => {
                warn!(%peer, error = %e, "fleet-state entry from a member refused");
                trust
                    .audit
                    .record("refused-fleet-state", &peer.to_string(), "", &e.to_string());
                return Err(e.to_string());
            }
        }
    }
    Ok(new)
}

fn note_clock(trust: &Trust, peer: &PeerId, offset_ms: i64) {
    if offset_ms.unsigned_abs() / 1000 > trust.skew_s().unsigned_abs() {
        warn!(%peer, offset_ms, "this peer's clock is further from ours than the allowed skew");
        trust.audit.record(
            "clock-skew",
            &peer.to_string(),
            "",
            &format!("its clock is {:+.1} s from ours", offset_ms as f64 / 1000.0),
        );
    }
}

/// Runs exchanges with `peer` until both logs are in step (or [`MAX_ROUNDS`]).
pub async fn sync_with(control: &mut Control, trust: &Trust, table: &SyncTable, peer: PeerId) -> Result<usize, String> {
    let (mut learned, mut sent) = (0, 0);
    for _ in 0..MAX_ROUNDS {
        let mut s = tokio::time::timeout(IO_TIMEOUT, control.open_stream(peer, protocol()))
            .await
            .map_err(|_| "no fleet-state stream".to_string())?
            .map_err(|e| e.to_string())?;
        let sent_at = (Instant::now(), now_ms());
        let hello = pb::FleetSync {
            summary: Some(trust.fleet_summary()),
            unix_ms: sent_at.1,
            ..Default::default()
        };
        send(&mut s, &hello).await?;
        let answer = read(&mut s).await?;
        if !answer.error.is_empty() {
            return Err(answer.error);
        }
        let rtt = sent_at.0.elapsed();
        let offset = answer.unix_ms - (sent_at.1 + i64::try_from(rtt.as_millis() / 2).unwrap_or(0));
        let theirs = answer.summary.unwrap_or_default();
        let new = apply_all(trust, &peer, &answer.entries)?;
        learned += new;
        let (push, push_more) = trust.fleet_missing_for(&theirs, BUDGET);
        sent += push.len() as u64;
        send(
            &mut s,
            &pb::FleetSync {
                entries: push.clone(),
                unix_ms: now_ms(),
                ..Default::default()
            },
        )
        .await?;
        let _ = s.close().await;
        let lag = trust.fleet_lag(&theirs);
        table.put(
            peer,
            PeerState {
                they_lack: lag.they_lack.saturating_sub(push.len() as u64),
                we_lack: lag.we_lack,
                sent,
                took: learned as u64,
                clock_offset_ms: offset,
                at: Instant::now(),
            },
        );
        note_clock(trust, &peer, offset);
        if !answer.more && !push_more {
            break;
        }
    }
    if learned > 0 {
        info!(%peer, learned, "fleet state: entries learned from a member");
    }
    Ok(learned)
}

/// Answers exchanges opened by members, on the bounded accept loop.
pub fn serve(incoming: IncomingStreams, trust: Arc<Trust>, table: SyncTable, shutdown: CancellationToken) {
    let bounds = accept::Bounds {
        per_peer: 2,
        total: 256,
    };
    let rate: Arc<Mutex<HashMap<PeerId, (Instant, u32)>>> = Arc::default();
    accept::serve(PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        let (trust, table, rate) = (trust.clone(), table.clone(), rate.clone());
        async move {
            let allowed = {
                let mut r = rate.lock().unwrap_or_else(|e| e.into_inner());
                if r.len() >= MAX_TABLE {
                    r.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(60));
                }
                let e = r.entry(peer).or_insert((Instant::now(), 0));
                if e.0.elapsed() >= Duration::from_secs(60) {
                    *e = (Instant::now(), 0);
                }
                e.1 += 1;
                e.1 <= MAX_PER_MINUTE
            };
            if let Err(e) = answer(&trust, &table, peer, stream, allowed).await {
                debug!(%peer, error = %e, "fleet-state exchange ended");
            }
            Ok::<(), String>(())
        }
    });
}

async fn answer(trust: &Trust, table: &SyncTable, peer: PeerId, mut s: Stream, allowed: bool) -> Result<(), String> {
    let refuse = |error: &str| pb::FleetSync {
        error: error.to_owned(),
        ..Default::default()
    };
    if trust.wait_member(&peer, trust.grace()).await.is_none() {
        let _ = send(&mut s, &refuse("not a member of this fleet")).await;
        return Err("not a member".into());
    }
    let hello = read(&mut s).await?;
    if !allowed {
        let _ = send(&mut s, &refuse("too many fleet-state exchanges; try again in a minute")).await;
        return Err("rate limited".into());
    }
    let theirs = hello.summary.unwrap_or_default();
    let (entries, more) = trust.fleet_missing_for(&theirs, BUDGET);
    let sent = entries.len() as u64;
    let reply = pb::FleetSync {
        summary: Some(trust.fleet_summary()),
        entries,
        unix_ms: now_ms(),
        more,
        error: String::new(),
    };
    send(&mut s, &reply).await?;
    let pushed = read(&mut s).await?;
    let result = apply_all(trust, &peer, &pushed.entries);
    let lag = trust.fleet_lag(&theirs);
    let offset = hello.unix_ms - now_ms();
    table.put(
        peer,
        PeerState {
            they_lack: lag.they_lack.saturating_sub(sent),
            we_lack: lag.we_lack.saturating_sub(pushed.entries.len() as u64),
            sent,
            took: pushed.entries.len() as u64,
            clock_offset_ms: offset,
            at: Instant::now(),
        },
    );
    result.map(|_| ())
}

/// The schedule: which members to reconcile with, and when (see the module header).
pub async fn run(
    trust: Arc<Trust>,
    net: NetHandle,
    mut events: tokio::sync::broadcast::Receiver<NetEvent>,
    control: Control,
    table: SyncTable,
    shutdown: CancellationToken,
) {
    let mut changes = trust.subscribe();
    let mut known_len = trust.log_len();
    let mut want: HashSet<PeerId> = HashSet::new();
    let mut inflight: HashSet<PeerId> = HashSet::new();
    let mut again: HashSet<PeerId> = HashSet::new();
    let mut tasks: JoinSet<PeerId> = JoinSet::new();
    let mut period = tokio::time::interval(PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev {
                // A peer that dialed us or that we dialed: reconcile once it is verified
                // (the `changes` arm below sees the admission).
                Ok(NetEvent::Connected { peer, .. }) => { want.insert(peer); }
                Ok(NetEvent::Disconnected(peer)) => { want.remove(&peer); again.remove(&peer); }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    want.extend(connected_members(&net, &trust).await);
                }
                Err(_) => return,
            },
            r = changes.changed() => {
                if r.is_err() { return; }
                let len = trust.log_len();
                if len != known_len {
                    known_len = len;
                    want.extend(connected_members(&net, &trust).await);
                }
                want.extend(trust.take_behind());
            }
            _ = period.tick() => want.extend(connected_members(&net, &trust).await),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(peer) = done {
                    inflight.remove(&peer);
                    if again.remove(&peer) { want.insert(peer); }
                }
            }
        }
        // Start what can start: members only, one exchange per peer, a bounded number.
        let ready: Vec<PeerId> = want.iter().filter(|p| trust.member(p).is_some()).copied().collect();
        for peer in ready {
            if inflight.contains(&peer) {
                again.insert(peer);
                want.remove(&peer);
                continue;
            }
            if tasks.len() >= MAX_CONCURRENT {
                break;
            }
            want.remove(&peer);
            inflight.insert(peer);
            let (mut control, trust, table) = (control.clone(), trust.clone(), table.clone());
            tasks.spawn(async move {
                if let Err(e) = sync_with(&mut control, &trust, &table, peer).await {
                    debug!(%peer, error = %e, "fleet-state exchange failed");
                }
                peer
            });
        }
        // Peers that are not (yet) members wait in the list until verified or gone.
        if want.len() > MAX_TABLE {
            want.clear();
        }
    }
}

async fn connected_members(net: &NetHandle, trust: &Trust) -> Vec<PeerId> {
    net.peers()
        .await
        .map(|ps| {
            ps.into_iter()
                .filter(|p| p.connected && trust.member(&p.peer).is_some())
                .map(|p| p.peer)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_clock_read_as_words() {
        let s = |they_lack, we_lack, clock_offset_ms| PeerState {
            they_lack,
            we_lack,
            sent: 0,
            took: 0,
            clock_offset_ms,
            at: Instant::now(),
        };
        assert_eq!(s(0, 0, 0).lag_text(), "in step");
        assert_eq!(s(3, 0, 0).lag_text(), "behind 3");
        assert_eq!(s(0, 2, 0).lag_text(), "ahead 2");
        assert_eq!(s(1, 2, 0).lag_text(), "behind 1, ahead 2");
        let met = PeerState { sent: 3, ..s(0, 0, 0) };
        assert_eq!(met.lag_text(), "in step (was behind 3)");
        assert_eq!(s(0, 0, 1240).clock_text(60), "+1.2s");
        assert_eq!(s(0, 0, -20).clock_text(60), "+0.0s");
        assert_eq!(s(0, 0, -120_000).clock_text(60), "-120.0s (beyond skew!)");
    }
}
