//! Addresses and URLs as a config or a command line writes them: a peer address that
//! ends in `/p2p/<peer id>`, and a camera's `rtsp://` URL (recognised, checked, and shown
//! without its password).
//!
//! Pure text and multiaddr helpers that import nothing of this crate, so that `config`
//! validates with them and the parts that dial or pull (net, media) parse with the same
//! code.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Splits `/.../p2p/<id>` into the peer id and the address before it.
pub fn split_p2p(mut addr: Multiaddr) -> (Option<PeerId>, Multiaddr) {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (Some(peer), addr)
        }
        _ => (None, addr),
    }
}

/// Whether `addr` is a WebRTC-direct listen address: `/ip4|ip6/<ip>/udp/<port>/webrtc-direct`
/// and nothing after it (the certificate hash is the node's to add).
pub fn webrtc_listen_addr(addr: &Multiaddr) -> bool {
    let parts: Vec<Protocol> = addr.iter().collect();
    matches!(
        parts.as_slice(),
        [
            Protocol::Ip4(_) | Protocol::Ip6(_),
            Protocol::Udp(_),
            Protocol::WebRTCDirect
        ]
    )
}

/// The WebRTC-direct listen address beside a QUIC one: same IP, a port the system picks
/// (the QUIC socket holds the QUIC port). `None` for anything but `/ip4|ip6/../udp/../quic-v1`.
pub fn webrtc_beside_quic(quic: &Multiaddr) -> Option<Multiaddr> {
    let parts: Vec<Protocol> = quic.iter().collect();
    match parts.as_slice() {
        [ip @ (Protocol::Ip4(_) | Protocol::Ip6(_)), Protocol::Udp(_), Protocol::QuicV1] => Some(
            Multiaddr::empty()
                .with(ip.clone())
                .with(Protocol::Udp(0))
                .with(Protocol::WebRTCDirect),
        ),
        _ => None,
    }
}

/// Whether `addr` goes over WebRTC-direct (a listen address or one to dial, with or
/// without `/certhash` and `/p2p`).
pub fn is_webrtc_direct(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::WebRTCDirect)
}

/// The URL in a camera's `source`, if it is an `rtsp://` or `rtsps://` URL rather than a
/// file path.
pub fn source_url(source: &std::path::Path) -> Option<&str> {
    let s = source.to_str()?;
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    (lower.starts_with("rtsp://") || lower.starts_with("rtsps://")).then_some(s)
}

/// Checks that `url` is a usable `rtsp://[user[:password]@]host[:port][/path]` URL.
pub fn check_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{}: {why}", redact(url)));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("not a URL");
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "rtsp" | "rtsps") {
        return bad("the scheme must be rtsp:// or rtsps://");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("URLs cannot contain spaces or control characters");
    }
    if url.len() > 2048 {
        return bad("longer than 2048 characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return bad("an IPv6 address needs its closing ']'"),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

/// Query parameters whose values are secrets (Dahua/Hikvision-style `?user=..&password=..`,
/// tokens): their values are redacted like a password in the authority.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "auth",
    "key",
    "secret",
    "signature",
];

/// The URL with its password (if any, in the authority or a query parameter such as
/// `password=`) replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{}", redact_query(tail))
}

/// `path?a=1&password=x#f` with secret parameter values replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !v.is_empty() && SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => p.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_suffix_is_split_off() {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}")
            .parse()
            .expect("addr");
        let (got, rest) = split_p2p(addr);
        assert_eq!(got, Some(peer));
        assert_eq!(rest.to_string(), "/ip4/127.0.0.1/udp/4001/quic-v1");
        let plain: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        assert_eq!(split_p2p(plain.clone()), (None, plain));
    }

    #[test]
    fn webrtc_direct_listens_beside_quic_on_a_port_of_its_own() {
        let a = |s: &str| -> Multiaddr { s.parse().expect("addr") };
        assert_eq!(
            webrtc_beside_quic(&a("/ip4/0.0.0.0/udp/4001/quic-v1")),
            Some(a("/ip4/0.0.0.0/udp/0/webrtc-direct"))
        );
        assert_eq!(
            webrtc_beside_quic(&a("/ip6/::1/udp/0/quic-v1")),
            Some(a("/ip6/::1/udp/0/webrtc-direct"))
        );
        assert_eq!(webrtc_beside_quic(&a("/ip4/0.0.0.0/tcp/4001")), None);
        assert_eq!(webrtc_beside_quic(&a("/dns4/x.example/udp/1/quic-v1")), None);
        assert!(webrtc_listen_addr(&a("/ip4/127.0.0.1/udp/9090/webrtc-direct")));
        assert!(!webrtc_listen_addr(&a("/ip4/127.0.0.1/udp/9090/quic-v1")));
        assert!(!webrtc_listen_addr(&a(
            "/ip4/127.0.0.1/udp/9090/webrtc-direct/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        )));
        assert!(is_webrtc_direct(&a(
            "/ip4/127.0.0.1/udp/9090/webrtc-direct/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        )));
        assert!(!is_webrtc_direct(&a("/ip4/127.0.0.1/udp/9090/quic-v1")));
    }

    #[test]
    fn urls_are_recognised_checked_and_redacted() {
        use std::path::Path;
        assert_eq!(source_url(Path::new("rtsp://cam/x")), Some("rtsp://cam/x"));
        assert_eq!(source_url(Path::new("RTSP://cam/x")), Some("RTSP://cam/x"));
        assert_eq!(source_url(Path::new("/var/clip.mp4")), None);
        assert_eq!(source_url(Path::new("rtsp")), None);
        assert!(check_url("rtsp://user:pw@192.168.1.20:554/stream1").is_ok());
        assert!(check_url("rtsp://[::1]:8554/x").is_ok());
        assert!(check_url("rtsp://cam").is_ok());
        for bad in [
            "rtsp://",
            "rtsp://:554/x",
            "rtsp://cam:99999/x",
            "http://cam/x",
            "rtsp://c am/x",
            "rtsp://[::1/x",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redact("rtsp://admin:s3cret@cam:554/a?b"),
            "rtsp://admin:***@cam:554/a?b"
        );
        assert_eq!(redact("rtsp://admin@cam/a"), "rtsp://admin@cam/a");
        assert_eq!(redact("rtsp://cam/a@b"), "rtsp://cam/a@b");
        assert_eq!(
            redact("rtsp://cam:554/cam/realmonitor?channel=1&user=admin&password=s3cret&subtype=0"),
            "rtsp://cam:554/cam/realmonitor?channel=1&user=admin&password=***&subtype=0"
        );
        assert_eq!(
            redact("rtsp://u:p@cam/x?PWD=a&token=b#t=1"),
            "rtsp://u:***@cam/x?PWD=***&token=***#t=1"
        );
        assert_eq!(redact("rtsp://cam/x?password="), "rtsp://cam/x?password=");
        let e = check_url("rtsp://u:pw@cam:0/").unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }
}
