//! Enforcing fleet membership on live connections (IO), and the admin protocol.
//!
//! `/camesh/member/1`: right after a connection is up, the dialing side sends its
//! certificate and the listening side answers with its own; each verifies the other's
//! against the fleet root and the authenticated peer id ([`Trust::admit`]). A peer that
//! has not proven membership within the grace period (`limits.membership_grace_ms`,
//! 1 s by default; [`Trust::grace`]) is disconnected (and audited); until then no
//! camesh protocol serves it (servers wait for [`Trust::wait_member`]), Kademlia does not
//! route to it and gossipsub drops its messages.
//!
//! `/camesh/admin/1`: invite redemption and certificate renewal (answered by nodes that
//! hold the fleet root key) and revocation pushes (applied by every node).

use std::sync::Arc;
use std::time::Duration;

use camesh_proto::{framing::decode_message, pb, LengthCodec};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{NetEvent, NetHandle};
use crate::auth::{AuthError, Trust, MAX_SIGNED_BYTES};
use crate::stream::io::{write_message, FramedRead};

const MAX_MSG: usize = 2 * MAX_SIGNED_BYTES;
/// How long the dialing side waits for the other's answer (the other side enforces
/// its grace period on us; this only bounds our own wait).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn member_protocol() -> StreamProtocol {
    StreamProtocol::new("/camesh/member/1")
}

pub fn admin_protocol() -> StreamProtocol {
    StreamProtocol::new("/camesh/admin/1")
}

async fn read_one<M: prost::Message + Default>(
    what: &'static str,
    stream: &mut Stream,
    limit: Duration,
) -> Result<M, String> {
    let mut r = FramedRead::new(stream, LengthCodec::new(MAX_MSG));
    match tokio::time::timeout(limit, r.next()).await {
        Ok(Ok(Some(body))) => decode_message(what, body).map_err(|e| e.to_string()),
        Ok(Ok(None)) => Err(format!("no {what}: stream closed")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no {what} within {limit:?}")),
    }
}

fn hello(trust: &Trust) -> pb::MemberHello {
    pb::MemberHello { cert: trust.own_cert() }
}

fn check_hello(trust: &Trust, peer: PeerId, h: pb::MemberHello) -> Result<(), AuthError> {
    let cert = h
        .cert
        .ok_or_else(|| AuthError::Refused("presented no membership certificate".into()))?;
    trust.admit(peer, &cert).map(|_| ())
}

/// Answers certificate exchanges opened by peers that dialed us.
pub async fn serve_member(
    mut incoming: IncomingStreams,
    trust: Arc<Trust>,
    net: NetHandle,
    shutdown: CancellationToken,
) {
    loop {
        let (peer, mut stream) = tokio::select! {
            s = incoming.next() => match s { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        let trust = trust.clone();
        let net = net.clone();
        tokio::spawn(async move {
            let result = match read_one::<pb::MemberHello>("member hello", &mut stream, trust.grace()).await {
                Ok(h) => check_hello(&trust, peer, h).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            // Answer either way: a refused peer learns why before it is dropped.
            let _ = write_message(&mut stream, &LengthCodec::new(MAX_MSG), &hello(&trust)).await;
            let _ = stream.close().await;
            match result {
                Ok(()) => net.verified(peer).await,
                Err(e) => {
                    warn!(%peer, error = %e, "not a fleet member; disconnecting");
                    net.disconnect(peer).await;
                }
            }
        });
    }
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
        warn!("this node has no membership certificate: peers will refuse it (see `camesh-node join`)");
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
                    let result = async {
                        let mut s =
                            tokio::time::timeout(EXCHANGE_TIMEOUT, control.open_stream(peer, member_protocol()))
                                .await
                                .map_err(|_| "no member stream within the grace period".to_string())?
                                .map_err(|e| e.to_string())?;
                        write_message(&mut s, &LengthCodec::new(MAX_MSG), &hello(&trust))
                            .await
                            .map_err(|e| e.to_string())?;
                        let h = read_one::<pb::MemberHello>("member hello", &mut s, EXCHANGE_TIMEOUT).await?;
                        check_hello(&trust, peer, h).map_err(|e| e.to_string())
                    }
                    .await;
                    match result {
                        Ok(()) => net.verified(peer).await,
                        Err(e) => {
                            warn!(%peer, error = %e, "peer did not prove fleet membership; disconnecting");
                            net.disconnect(peer).await;
                        }
                    }
                });
            }
            Ok(NetEvent::Connected { peer, dialer: false }) => {
                let (trust, net) = (trust.clone(), net.clone());
                tokio::spawn(async move {
                    if trust.wait_member(&peer, trust.grace()).await.is_none() {
                        trust.audit.record(
                            "refused-connection",
                            &peer.to_string(),
                            "",
                            "no valid certificate within 1 s",
                        );
                        info!(%peer, "no membership proof within the grace period; disconnecting");
                        net.disconnect(peer).await;
                    }
                });
            }
            Ok(NetEvent::Disconnected(peer)) => trust.forget(&peer),
            Ok(NetEvent::DirectPath { .. }) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => debug!(n, "membership task lagged"),
            Err(_) => return,
        }
    }
}

/// Serves `/camesh/admin/1`.
pub async fn serve_admin(
    mut incoming: IncomingStreams,
    trust: Arc<Trust>,
    net: NetHandle,
    shutdown: CancellationToken,
) {
    loop {
        let (peer, mut stream) = tokio::select! {
            s = incoming.next() => match s { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        let (trust, net) = (trust.clone(), net.clone());
        tokio::spawn(async move {
            let req = match read_one::<pb::AdminRequest>("admin request", &mut stream, Duration::from_secs(5)).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(%peer, error = %e, "bad admin request");
                    return;
                }
            };
            let answer = match req.request {
                Some(pb::admin_request::Request::RedeemToken(_)) => match req.invite {
                    Some(inv) => trust.redeem_invite(&inv, peer).and_then(|c| {
                        // The new member is admitted at once, so the grace timer keeps it.
                        trust.admit(peer, &c)?;
                        Ok(c)
                    }),
                    None => Err(AuthError::Refused("no invite".into())),
                },
                Some(pb::admin_request::Request::Renew(_)) => trust.renew(peer),
                Some(pb::admin_request::Request::Revocation(r)) => match trust.member(&peer) {
                    Some(_) => trust.apply_revocation(&r).map(|new| {
                        if new {
                            net.publish_revocation(r.clone());
                        }
                        pb::Signed::default()
                    }),
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
        });
    }
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
