//! Enforcing fleet membership on live connections (IO), and the admin protocol.
//!
//! `/camesh/member/1`: right after a connection is up, the dialing side proves it knows
//! the fleet ([`crate::auth::proof`]: an HMAC over both peer ids keyed by the fleet
//! root's public key), the listener proves back only to a dialer whose proof checked,
//! the dialer sends its certificate only to a listener whose proof checked, and the
//! listener answers with its own only once the dialer's verified (otherwise with why
//! not). Neither side shows its certificate (name, role, cameras) to a stranger, whoever
//! dialed. Each verifies the other's against the fleet root and the authenticated peer
//! id ([`Trust::admit`]); each tells the swarm task once it has verified the other
//! ([`NetHandle::verified`]), which opens Kademlia, gossipsub and identify to it. A peer that
//! has not proven membership within the grace period (`limits.membership_grace_ms`,
//! 1 s by default; [`Trust::grace`]) is disconnected (and audited); until then no
//! camesh protocol serves it (servers wait for [`Trust::wait_member`]), Kademlia does not
//! route to it and gossipsub drops its messages.
//!
//! `/camesh/admin/1`: invite redemption and certificate renewal (answered by admin nodes:
//! an admin certificate that may admit, or the root key in `mesh fleet invite`) and
//! fleet-state entry pushes (applied by every node).

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::proof::Side;
use crate::auth::{self, AuthError, Trust, MAX_SIGNED_BYTES};
use crate::net::{NetEvent, NetHandle};
use crate::stream::accept;
use crate::stream::io::{write_message, FramedRead, IoError};

const MAX_MSG: usize = 2 * MAX_SIGNED_BYTES;
/// How long the dialing side waits for the other's answer (the other side enforces
/// its grace period on us; this only bounds our own wait).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Certificate exchanges one peer may have open at once: one per connection it dialed
/// (a relayed one, a direct one, hole-punch probes), with room to spare: a dropped
/// exchange would cost a member its connection.
const MEMBER_STREAMS_PER_PEER: usize = accept::CONTROL_STREAMS_PER_PEER;
/// Exchanges (and admin requests) open at once from all peers together.
const MEMBER_STREAMS_TOTAL: usize = 1024;

const MEMBER_PROTOCOL: &str = "/camesh/member/1";
const ADMIN_PROTOCOL: &str = "/camesh/admin/1";

pub fn member_protocol() -> StreamProtocol {
    StreamProtocol::new(MEMBER_PROTOCOL)
}

pub fn admin_protocol() -> StreamProtocol {
    StreamProtocol::new(ADMIN_PROTOCOL)
}

async fn read_one<M: prost::Message + Default>(
    what: &'static str,
    stream: &mut Stream,
    limit: Duration,
) -> Result<M, Unproven> {
    let mut r = FramedRead::new(stream, LengthCodec::new(MAX_MSG));
    match tokio::time::timeout(limit, r.next()).await {
        Ok(Ok(Some(body))) => decode_message(what, body).map_err(|e| Unproven::Refused(e.to_string())),
        // The stream or the connection ended mid-exchange: the peer went away (a `mesh`
        // command that finished), which says nothing about its membership.
        Ok(Ok(None)) => Err(Unproven::Gone(format!("no {what}: stream closed"))),
        Ok(Err(e @ IoError::Io(_))) => Err(Unproven::Gone(e.to_string())),
        Ok(Err(e)) => Err(Unproven::Refused(e.to_string())),
        Err(_) => Err(Unproven::Refused(format!("no {what} within {limit:?}"))),
    }
}

fn hello(trust: &Trust) -> pb::MemberHello {
    pb::MemberHello {
        cert: trust.own_cert(),
        ..Default::default()
    }
}

fn proof(trust: &Trust, side: Side, peer: &PeerId) -> pb::MemberHello {
    pb::MemberHello {
        proof: trust.prove(side, peer).to_vec().into(),
        ..Default::default()
    }
}

fn check_hello(trust: &Trust, peer: PeerId, h: pb::MemberHello) -> Result<(), AuthError> {
    let cert = h
        .cert
        .ok_or_else(|| AuthError::Refused("presented no membership certificate".into()))?;
    trust.admit(peer, &cert).map(|_| ())
}

/// Answers certificate exchanges opened by peers that dialed us (on the bounded accept
/// loop: a peer that has proven nothing yet gets a few streams, not a task per stream).
pub fn serve_member(incoming: IncomingStreams, trust: Arc<Trust>, net: NetHandle, shutdown: CancellationToken) {
    let bounds = accept::Bounds {
        per_peer: MEMBER_STREAMS_PER_PEER,
        total: MEMBER_STREAMS_TOTAL,
    };
    accept::serve(MEMBER_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        answer_member(trust.clone(), net.clone(), peer, stream)
    });
}

async fn answer_member(trust: Arc<Trust>, net: NetHandle, peer: PeerId, mut stream: Stream) -> Result<(), String> {
    let codec = LengthCodec::new(MAX_MSG);
    // 1. The dialer's fleet proof. A stranger (no proof) gets an empty answer and learns
    // nothing; like a certless peer it has the grace period (the timer audits and drops it).
    let first = read_one::<pb::MemberHello>("member proof", &mut stream, trust.grace()).await;
    if trust.peer_revoked(&peer) || !first.is_ok_and(|h| trust.check_proof(Side::Dialer, &peer, &h.proof)) {
        debug!(%peer, "no fleet proof: answered with nothing");
        let _ = write_message(&mut stream, &codec, &pb::MemberHello::default()).await;
        let _ = stream.close().await;
        trust.mark_unproven(peer);
        return Ok(());
    }
    // 2. Ours, then 3. its certificate.
    write_message(&mut stream, &codec, &proof(&trust, Side::Listener, &peer))
        .await
        .map_err(|e| e.to_string())?;
    let mut certless = false;
    let result = match read_one::<pb::MemberHello>("member hello", &mut stream, trust.grace()).await {
        Ok(h) => {
            certless = h.cert.is_none();
            check_hello(&trust, peer, h).map_err(|e| Unproven::Refused(e.to_string()))
        }
        Err(e) => Err(e),
    };
    // 4. This node's certificate only to a proven member; anyone else is told why not.
    let answer = match &result {
        Ok(()) => hello(&trust),
        Err(Unproven::Gone(e) | Unproven::Refused(e)) => pb::MemberHello {
            error: e.clone(),
            ..Default::default()
        },
    };
    let _ = write_message(&mut stream, &codec, &answer).await;
    let _ = stream.close().await;
    match result {
        Ok(()) => net.verified(peer).await,
        // It went away mid-exchange (a `mesh` command that finished): the grace timer
        // drops the connection if it is somehow still there.
        Err(Unproven::Gone(e)) => {
            debug!(%peer, error = %e, "the peer went away before proving fleet membership");
            trust.mark_unproven(peer);
        }
        // A node without a certificate may be here to redeem an invite (`/camesh/admin/1`):
        // it gets the grace period like any unproven peer (and is admitted at once if it
        // redeems), rather than losing the connection mid-redemption. Nothing is served
        // to it meanwhile.
        Err(Unproven::Refused(e)) if certless => {
            debug!(%peer, error = %e, "no certificate presented; the grace period decides");
            trust.mark_unproven(peer);
        }
        Err(Unproven::Refused(e)) => {
            warn!(%peer, error = %e, "not a fleet member; disconnecting");
            net.disconnect(peer).await;
        }
    }
    Ok(())
}

/// The dialer's side of the exchange on a connection to `peer`: our proof, theirs, our
/// certificate (only to a peer whose proof checked), theirs (or why ours was refused).
/// Why a membership exchange did not prove the peer a member.
#[derive(Debug)]
enum Unproven {
    /// The connection went away before a stream opened (a short-lived `mesh` command
    /// that exited): nothing to warn about.
    Gone(String),
    /// The peer answered, and not as a member; or timed out.
    Refused(String),
}

impl From<String> for Unproven {
    fn from(s: String) -> Self {
        Unproven::Refused(s)
    }
}

impl From<Unproven> for String {
    fn from(u: Unproven) -> Self {
        match u {
            Unproven::Gone(s) | Unproven::Refused(s) => s,
        }
    }
}

impl From<&str> for Unproven {
    fn from(s: &str) -> Self {
        Unproven::Refused(s.to_owned())
    }
}

async fn exchange(trust: &Trust, control: &mut Control, peer: PeerId) -> Result<(), Unproven> {
    let codec = LengthCodec::new(MAX_MSG);
    let mut s = tokio::time::timeout(EXCHANGE_TIMEOUT, control.open_stream(peer, member_protocol()))
        .await
        .map_err(|_| "no member stream within the grace period".to_string())?
        .map_err(|e| Unproven::Gone(e.to_string()))?;
    write_message(&mut s, &codec, &proof(trust, Side::Dialer, &peer))
        .await
        .map_err(|e| e.to_string())?;
    let theirs = read_one::<pb::MemberHello>("member proof", &mut s, EXCHANGE_TIMEOUT).await?;
    if trust.peer_revoked(&peer) {
        let _ = s.close().await;
        return Err("the peer is revoked: our certificate was not shown".into());
    }
    if !trust.check_proof(Side::Listener, &peer, &theirs.proof) {
        let _ = s.close().await;
        return Err("the peer did not prove it belongs to this fleet: our certificate was not shown".into());
    }
    write_message(&mut s, &codec, &hello(trust))
        .await
        .map_err(|e| e.to_string())?;
    let h = read_one::<pb::MemberHello>("member hello", &mut s, EXCHANGE_TIMEOUT).await?;
    if !h.error.is_empty() {
        return Err(format!("the peer refused our certificate: {}", one_line(&h.error)).into());
    }
    check_hello(trust, peer, h).map_err(|e| Unproven::Refused(e.to_string()))
}

/// `s` on one line, at most 200 characters (peer-supplied text in logs).
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// Starts exchanges on connections we dialed, and drops peers that never prove
/// membership on connections they dialed.
pub async fn run_initiator(
    trust: Arc<Trust>,
    net: NetHandle,
    mut events: tokio::sync::broadcast::Receiver<NetEvent>,
    control: Control,
    shutdown: CancellationToken,
) {
    if trust.own_cert().is_none() {
        // Info, not a warning: every `mesh fleet join` starts this way on purpose; a daemon
        // (info by default) still says it at its start.
        info!("this node has no membership certificate yet: members refuse it until it joins (`camesh-node join`, `mesh fleet join`) or gets a membership.cert");
    }
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.cancelled() => return,
        };
        match ev {
            Ok(NetEvent::Connected { peer, dialer: true }) => {
                let (trust, net, mut control) = (trust.clone(), net.clone(), control.clone());
                tokio::spawn(async move {
                    // Whether this node had a certificate to show when the exchange began
                    // (a joining node gets one halfway through some exchanges).
                    let uncertified = trust.own_cert().is_none();
                    let result = exchange(&trust, &mut control, peer).await;
                    match result {
                        Ok(()) => net.verified(peer).await,
                        // Not a member yet (joining with an invite): a member answers an
                        // uncertified node without its certificate; keep the connection for
                        // the redemption (nothing is served to an unverified peer).
                        Err(e) if uncertified || trust.own_cert().is_none() => {
                            debug!(%peer, error = ?e, "membership not proven either way: this node has no certificate yet")
                        }
                        Err(Unproven::Gone(e)) => {
                            debug!(%peer, error = %e, "the peer went away before proving fleet membership");
                            net.disconnect(peer).await;
                        }
                        Err(Unproven::Refused(e)) => {
                            warn!(%peer, error = %e, "peer did not prove fleet membership; disconnecting");
                            net.disconnect(peer).await;
                        }
                    }
                });
            }
            Ok(NetEvent::Connected { peer, dialer: false }) => {
                tokio::spawn(enforce_grace(trust.clone(), net.clone(), peer));
            }
            Ok(NetEvent::Disconnected(peer)) => trust.forget(&peer),
            Ok(NetEvent::DirectPath { .. }) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                // Events were lost (a burst of connections): fail closed. Every connected
                // peer not yet verified gets the grace period from now, as if it had just
                // connected, so a lost `Connected` never lets a non-member stay.
                warn!(n, "membership events lost; re-checking every connected peer");
                let (trust, net) = (trust.clone(), net.clone());
                tokio::spawn(async move {
                    let Ok(peers) = net.peers().await else { return };
                    for p in peers.into_iter().filter(|p| p.connected) {
                        if trust.member(&p.peer).is_none() {
                            tokio::spawn(enforce_grace(trust.clone(), net.clone(), p.peer));
                        }
                    }
                });
            }
            Err(_) => return,
        }
    }
}

/// Disconnects `peer` unless it proves membership within the grace period (audited with
/// the reason).
async fn enforce_grace(trust: Arc<Trust>, net: NetHandle, peer: PeerId) {
    if trust.wait_grace(&peer, trust.grace()).await.is_none() {
        let why = if trust.peer_revoked(&peer) {
            "revoked".to_owned()
        } else {
            format!("no valid certificate within {:?}", trust.grace())
        };
        trust.audit.record("refused-connection", &peer.to_string(), "", &why);
        info!(%peer, "no membership proof within the grace period; disconnecting");
        net.disconnect(peer).await;
    }
}

/// Serves `/camesh/admin/1` on the bounded accept loop.
pub fn serve_admin(incoming: IncomingStreams, trust: Arc<Trust>, net: NetHandle, shutdown: CancellationToken) {
    let bounds = accept::Bounds {
        per_peer: accept::CONTROL_STREAMS_PER_PEER,
        total: MEMBER_STREAMS_TOTAL,
    };
    accept::serve(ADMIN_PROTOCOL, incoming, bounds, shutdown, move |peer, stream, _| {
        answer_admin(trust.clone(), net.clone(), peer, stream)
    });
}

async fn answer_admin(trust: Arc<Trust>, net: NetHandle, peer: PeerId, mut stream: Stream) -> Result<(), String> {
    // A non-member may only redeem an invite, so only a node that admits members reads
    // its request, and only within the grace period; anywhere else it is refused before
    // a byte is read or buffered.
    let limit = if trust.member(&peer).is_some() {
        Duration::from_secs(5)
    } else if trust.may_admit() {
        trust.grace()
    } else {
        let resp = pb::AdminResponse {
            cert: None,
            error: "not a member of this fleet".into(),
        };
        let _ = write_message(&mut stream, &LengthCodec::new(MAX_MSG), &resp).await;
        let _ = stream.close().await;
        return Ok(());
    };
    let req = read_one::<pb::AdminRequest>("admin request", &mut stream, limit).await?;
    let mut admitted = false;
    let answer = match req.request {
        Some(pb::admin_request::Request::RedeemToken(_)) => match req.invite {
            Some(inv) => trust.redeem_invite(&inv, peer).and_then(|c| {
                // The new member is admitted at once, so the grace timer keeps it.
                trust.admit(peer, &c)?;
                admitted = true;
                Ok(c)
            }),
            None => Err(AuthError::Refused("no invite".into())),
        },
        Some(pb::admin_request::Request::Renew(_)) => trust.renew(peer),
        Some(pb::admin_request::Request::Revocation(r)) => match trust.member(&peer) {
            Some(_) => match trust.apply_entry(&r) {
                Ok(_) => {
                    net.publish_revocation(r.clone());
                    Ok(pb::Signed::default())
                }
                Err(e) if e.is_benign() => Ok(pb::Signed::default()),
                Err(e) => Err(AuthError::Refused(e.to_string())),
            },
            None => Err(AuthError::Refused("only fleet members may push revocations".into())),
        },
        None => Err(AuthError::Refused("empty admin request".into())),
    };
    let resp = match answer {
        Ok(c) if !c.body.is_empty() => pb::AdminResponse {
            cert: Some(c),
            error: String::new(),
        },
        Ok(_) => pb::AdminResponse::default(),
        Err(e) => pb::AdminResponse {
            cert: None,
            error: e.to_string(),
        },
    };
    let _ = write_message(&mut stream, &LengthCodec::new(MAX_MSG), &resp).await;
    let _ = stream.close().await;
    if admitted {
        net.verified(peer).await;
    }
    Ok(())
}

/// Sends one admin request and returns the answer.
pub async fn admin_request(
    control: &mut Control,
    peer: PeerId,
    req: pb::AdminRequest,
) -> Result<pb::AdminResponse, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), control.open_stream(peer, admin_protocol()))
        .await
        .map_err(|_| format!("{peer} did not accept an admin stream"))?
        .map_err(|e| format!("{peer}: {e}"))?;
    write_message(&mut s, &LengthCodec::new(MAX_MSG), &req)
        .await
        .map_err(|e| e.to_string())?;
    let resp: pb::AdminResponse = read_one("admin response", &mut s, Duration::from_secs(5)).await?;
    if !resp.error.is_empty() {
        return Err(resp.error);
    }
    Ok(resp)
}

/// Cuts revoked peers: whenever this node learns a revocation (from an admin, gossip or
/// a reconciliation), every connected peer it now revokes is audited and disconnected.
/// Its media streams, NVR sessions, relay reservations and circuits end with the
/// connection; a redial fails the membership exchange ([`Trust::admit`] checks
/// revocations) and is disconnected after the grace period.
pub async fn cut_revoked(trust: Arc<Trust>, net: NetHandle, shutdown: CancellationToken) {
    let mut changes = trust.subscribe();
    let mut known = trust.revocation_count();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        let n = trust.revocation_count();
        if n == known {
            continue;
        }
        known = n;
        let Ok(peers) = net.peers().await else { return };
        for p in peers.into_iter().filter(|p| p.connected) {
            if trust.peer_revoked(&p.peer) {
                warn!(peer = %p.peer, "revoked peer cut: disconnecting");
                trust
                    .audit
                    .record("cut", &p.peer.to_string(), "", "revoked: connection closed");
                net.disconnect(p.peer).await;
            }
        }
    }
}

/// Keeps this node's certificate current: in the second half of its validity, asks a
/// connected admin member for a fresh one. Checks on a period scaled to the lifetime.
pub async fn renew_certificate(trust: Arc<Trust>, mut control: libp2p_stream::Control, shutdown: CancellationToken) {
    loop {
        let wait = match trust.own_cert_info() {
            Some(c) => {
                let lifetime = (c.not_after_unix_s - c.not_before_unix_s).max(1);
                let left = c.not_after_unix_s - auth::now_s();
                if left < lifetime / 2 {
                    for admin in trust.admins() {
                        match renew_from(&trust, &mut control, admin).await {
                            Ok(until) => {
                                info!(admin = %admin, until, "membership certificate renewed");
                                trust.audit.record("certificate-renewed", &admin.to_string(), "", "");
                                break;
                            }
                            Err(e) => warn!(admin = %admin, error = %e, "certificate renewal failed"),
                        }
                    }
                }
                Duration::from_secs(u64::try_from(lifetime / 20).unwrap_or(60).clamp(1, 600))
            }
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn renew_from(trust: &Trust, control: &mut libp2p_stream::Control, admin: PeerId) -> Result<i64, String> {
    let req = pb::AdminRequest {
        request: Some(pb::admin_request::Request::Renew(pb::Renew {})),
        invite: None,
    };
    let resp = admin_request(control, admin, req).await?;
    let cert = resp.cert.ok_or("no certificate in the answer")?;
    let info = trust
        .install_cert_bytes(&auth::signed::encode(&cert))
        .map_err(|e| e.to_string())?;
    Ok(info.not_after_unix_s)
}

/// Applies a fleet-state entry here (unless it already is), gossips it, and sends it to
/// every connected peer; returns how many took it. Peers that miss it get it when they
/// next reconcile with any member that has it (`crate::fleetsync`).
pub async fn push_revocation(
    trust: &Trust,
    net: &NetHandle,
    control: &Control,
    r: pb::Signed,
) -> Result<usize, String> {
    match trust.apply_entry(&r) {
        Ok(_) => {}
        Err(auth::fleetlog::LogError::Duplicate { .. }) => {}
        Err(e) => return Err(e.to_string()),
    }
    net.publish_revocation(r.clone());
    let mut sent = 0;
    for p in net
        .peers()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|p| p.connected)
    {
        let mut control = control.clone();
        let req = pb::AdminRequest {
            request: Some(pb::admin_request::Request::Revocation(r.clone())),
            invite: None,
        };
        match admin_request(&mut control, p.peer, req).await {
            Ok(_) => sent += 1,
            Err(e) => debug!(peer = %p.peer, error = %e, "revocation not pushed"),
        }
    }
    Ok(sent)
}

/// Redeems an invite with its admin node and installs the certificate it issues.
pub async fn redeem_invite(
    trust: &Trust,
    net: &NetHandle,
    control: &Control,
    text: &str,
) -> Result<auth::CertInfo, String> {
    let (info, signed) = auth::invite::parse(text, auth::now_s()).map_err(|e| e.to_string())?;
    let peer = net
        .connect(Some(info.admin_peer), info.admin_addrs.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut control = control.clone();
    let req = pb::AdminRequest {
        request: Some(pb::admin_request::Request::RedeemToken(info.token.clone().into())),
        invite: Some(signed),
    };
    let resp = admin_request(&mut control, peer, req).await?;
    let cert = resp.cert.ok_or("the admin node sent no certificate")?;
    trust
        .install_cert_bytes(&auth::signed::encode(&cert))
        .map_err(|e| e.to_string())
}
