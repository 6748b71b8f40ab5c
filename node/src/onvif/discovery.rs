//! WS-Discovery of ONVIF devices on the LAN (`mesh cameras --onvif`): a Probe for
//! `NetworkVideoTransmitter` sent to 239.255.255.250:3702 from every IPv4 interface, and
//! the ProbeMatches that answer it. The messages are pure ([`probe_message`],
//! [`parse_matches`]); [`probe`] does the one round of UDP.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::RngCore;
use xml::reader::{EventReader, XmlEvent};

/// WS-Discovery's multicast group and port.
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
/// The largest datagram read (a ProbeMatch is a few KB).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Devices kept from one round at most.
const MAX_DEVICES: usize = 256;

/// One device that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Its endpoint reference (`urn:uuid:...`).
    pub endpoint: String,
    /// Its device service addresses (`http://.../onvif/device_service`).
    pub xaddrs: Vec<String>,
    pub scopes: Vec<String>,
    pub types: String,
}

impl Found {
    /// The `onvif://www.onvif.org/<kind>/<value>` scope's value, percent-decoded.
    pub fn scope(&self, kind: &str) -> Option<String> {
        let prefix = format!("onvif://www.onvif.org/{kind}/");
        self.scopes
            .iter()
            .find_map(|s| s.strip_prefix(&prefix))
            .map(percent_decode)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(Ok(v))) = (b[i], hex.map(|h| u8::from_str_radix(h, 16))) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh `uuid:` message id (random, version-4 layout).
pub fn message_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The Probe for video transmitters, with message id `id`.
pub fn probe_message(id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:w=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" \
         xmlns:d=\"http://schemas.xmlsoap.org/ws/2005/04/discovery\" \
         xmlns:dn=\"http://www.onvif.org/ver10/network/wsdl\">\
         <e:Header><w:MessageID>{id}</w:MessageID>\
         <w:To e:mustUnderstand=\"true\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To>\
         <w:Action e:mustUnderstand=\"true\">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action>\
         </e:Header><e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>"
    )
}

/// The matches in one ProbeMatches datagram that answers message `id`; anything else
/// (another client's probe, a Hello, garbage) gives none.
pub fn parse_matches(xml: &[u8], id: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut relates = None;
    let mut cur: Option<Found> = None;
    for ev in EventReader::new(xml) {
        let Ok(ev) = ev else { return vec![] };
        match ev {
            XmlEvent::StartElement { name, .. } => {
                if path.len() > 32 {
                    return vec![];
                }
                if name.local_name == "ProbeMatch" {
                    cur = Some(Found::default());
                }
                path.push(name.local_name);
                text.clear();
            }
            XmlEvent::Characters(t) if text.len() + t.len() <= 8192 => text.push_str(&t),
            XmlEvent::EndElement { .. } => {
                let local = path.pop().unwrap_or_default();
                let t = text.trim();
                match (local.as_str(), cur.as_mut()) {
                    ("RelatesTo", _) => relates = Some(t.to_owned()),
                    ("Address", Some(f)) => f.endpoint = t.to_owned(),
                    ("XAddrs", Some(f)) => f.xaddrs = t.split_whitespace().take(8).map(str::to_owned).collect(),
                    ("Scopes", Some(f)) => f.scopes = t.split_whitespace().take(32).map(str::to_owned).collect(),
                    ("Types", Some(f)) => f.types = t.to_owned(),
                    ("ProbeMatch", Some(_)) => out.extend(cur.take()),
                    _ => {}
                }
                text.clear();
            }
            _ => {}
        }
    }
    if relates.as_deref() != Some(id) {
        return vec![];
    }
    out.retain(|f| !f.xaddrs.is_empty());
    out
}

/// One round: probes from every IPv4 interface that is up (loopback included only when
/// nothing else is), and collects answers for `wait`. Devices are merged by endpoint.
pub async fn probe(wait: Duration) -> std::io::Result<Vec<Found>> {
    let id = message_id();
    let msg = probe_message(&id);
    let mut ifaces: Vec<Ipv4Addr> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter_map(|i| match i.ip() {
            std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect();
    if ifaces.is_empty() {
        ifaces.push(Ipv4Addr::LOCALHOST);
    }
    let mut sockets = Vec::new();
    let mut last_err = None;
    for ip in ifaces {
        match socket_on(ip) {
            Ok(s) => match s.send_to(msg.as_bytes(), SocketAddr::V4(GROUP)).await {
                Ok(_) => sockets.push(s),
                Err(e) => last_err = Some(e),
            },
            Err(e) => last_err = Some(e),
        }
    }
    if sockets.is_empty() {
        return Err(last_err.unwrap_or_else(|| std::io::Error::other("no IPv4 interface to probe from")));
    }
    let mut found: HashMap<String, Found> = HashMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for s in &sockets {
        loop {
            let n = match tokio::time::timeout_at(deadline, s.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => n,
                Ok(Err(_)) => continue,
                Err(_) => break,
            };
            for f in parse_matches(&buf[..n], &id) {
                if found.len() < MAX_DEVICES || found.contains_key(&f.endpoint) {
                    found.insert(f.endpoint.clone(), f);
                }
            }
        }
    }
    let mut v: Vec<Found> = found.into_values().collect();
    v.sort_by(|a, b| a.xaddrs.cmp(&b.xaddrs));
    Ok(v)
}

/// A UDP socket on `ip` whose multicast goes out of that interface.
fn socket_on(ip: Ipv4Addr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_multicast_if_v4(&ip)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATCH: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<SOAP-ENV:Header><wsa:MessageID>uuid:1</wsa:MessageID><wsa:RelatesTo>RELATES</wsa:RelatesTo></SOAP-ENV:Header>
<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>
<wsa:EndpointReference><wsa:Address>urn:uuid:cafe</wsa:Address></wsa:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/Door%20Cam onvif://www.onvif.org/hardware/X1</d:Scopes>
<d:XAddrs>http://10.0.0.5/onvif/device_service http://[fe80::1]/onvif/device_service</d:XAddrs>
<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn matches_for_our_probe_are_read_others_ignored() {
        let id = message_id();
        assert!(id.starts_with("uuid:") && id.len() == 41, "{id}");
        assert!(probe_message(&id).contains(&format!("<w:MessageID>{id}</w:MessageID>")));
        let m = MATCH.replace("RELATES", &id);
        let f = parse_matches(m.as_bytes(), &id);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].endpoint, "urn:uuid:cafe");
        assert_eq!(f[0].xaddrs[0], "http://10.0.0.5/onvif/device_service");
        assert_eq!(f[0].scope("name").as_deref(), Some("Door Cam"));
        assert_eq!(f[0].scope("hardware").as_deref(), Some("X1"));
        assert!(
            parse_matches(m.as_bytes(), "uuid:other").is_empty(),
            "an answer to someone else's probe"
        );
        assert!(parse_matches(b"\x00garbage<", &id).is_empty());
        assert!(parse_matches(&b"<a>".repeat(100), &id).is_empty());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
