//! The ONVIF audio backchannel, pure (docs/onvif-backchannel.md has the exchange as a
//! real camera server makes it): which track of a DESCRIBE answer takes audio (the
//! `sendonly` audio section, G.711), the URLs to SETUP and PLAY, the interleaved channel
//! a SETUP answer assigns, the RTP packets that carry 20 ms of audio, and the answer to a
//! camera's RTSP Basic or Digest challenge (RFC 2617, MD5). No IO: [`super::rtsp`] does it.

use md5::{Digest, Md5};

/// The header that asks a camera for its backchannel.
pub const REQUIRE: &str = "www.onvif.org/ver20/backchannel";

/// G.711 as the backchannel takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    pub fn from_name(s: &str) -> Option<Codec> {
        match s.to_ascii_uppercase().as_str() {
            "PCMU" => Some(Codec::Pcmu),
            "PCMA" => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// The backchannel track of a camera's session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Where to SETUP it.
    pub control: String,
    /// Where to PLAY the session (the aggregate URL).
    pub aggregate: String,
    pub payload_type: u8,
    pub codec: Codec,
    pub clock_rate: u32,
}

/// Resolves an SDP `a=control` value against the base URL (RFC 2326 C.1.1).
fn resolve(base: &str, control: &str) -> String {
    if control.starts_with("rtsp://") || control.starts_with("rtsps://") {
        return control.to_owned();
    }
    if control == "*" || control.is_empty() {
        return base.to_owned();
    }
    if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

/// Finds the backchannel in a DESCRIBE answer's SDP; `base` is its Content-Base (else the
/// request URL). `Err` says why there is none, for people.
pub fn find_track(sdp_text: &str, base: &str) -> Result<Track, String> {
    if sdp_text.len() > 64 << 10 {
        return Err("session description larger than 64 KiB".into());
    }
    let mut cursor = std::io::Cursor::new(sdp_text.as_bytes());
    let sd =
        sdp::SessionDescription::unmarshal(&mut cursor).map_err(|e| format!("unreadable session description: {e}"))?;
    let session_control = sd
        .attributes
        .iter()
        .find(|a| a.key == "control")
        .and_then(|a| a.value.clone());
    let aggregate = resolve(base, session_control.as_deref().unwrap_or("*"));
    for m in sd.media_descriptions.iter().take(32) {
        let has = |k: &str| m.attributes.iter().any(|a| a.key == k);
        if m.media_name.media != "audio" || !has("sendonly") {
            continue;
        }
        let control = m
            .attributes
            .iter()
            .find(|a| a.key == "control")
            .and_then(|a| a.value.clone())
            .unwrap_or_default();
        for fmt in &m.media_name.formats {
            let Ok(pt) = fmt.parse::<u8>() else { continue };
            let rtpmap = m
                .attributes
                .iter()
                .filter(|a| a.key == "rtpmap")
                .filter_map(|a| a.value.as_deref())
                .find(|v| v.split_whitespace().next() == Some(fmt));
            // Static payload types need no rtpmap: 0 is PCMU/8000, 8 is PCMA/8000.
            let (name, rate) = match rtpmap.and_then(|v| v.split_whitespace().nth(1)) {
                Some(enc) => {
                    let mut p = enc.split('/');
                    let name = p.next().unwrap_or("").to_owned();
                    let rate = p.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                    (name, rate)
                }
                None if pt == 0 => ("PCMU".to_owned(), 8000),
                None if pt == 8 => ("PCMA".to_owned(), 8000),
                None => continue,
            };
            if let Some(codec) = Codec::from_name(&name).filter(|_| rate == 8000) {
                return Ok(Track {
                    control: resolve(base, &control),
                    aggregate,
                    payload_type: pt,
                    codec,
                    clock_rate: rate,
                });
            }
        }
        return Err(format!(
            "the camera's backchannel takes {:?}, not G.711 (PCMU/PCMA at 8 kHz)",
            m.media_name.formats
        ));
    }
    Err("the camera offers no audio backchannel (no sendonly audio track)".into())
}

/// The RTP channel of a SETUP answer's `Transport: ...;interleaved=a-b`.
pub fn interleaved_channel(transport: &str) -> Option<u8> {
    transport
        .split(';')
        .find_map(|p| p.trim().strip_prefix("interleaved="))
        .and_then(|c| c.split('-').next())
        .and_then(|c| c.trim().parse().ok())
}

/// The session id of a `Session: id;timeout=60`, and the timeout when given.
pub fn session(header: &str) -> (String, Option<u64>) {
    let mut parts = header.split(';');
    let id = parts.next().unwrap_or("").trim().to_owned();
    let timeout = parts.find_map(|p| p.trim().strip_prefix("timeout=").and_then(|t| t.trim().parse().ok()));
    (id, timeout)
}

/// RTP packets of one stream: version 2, a fixed payload type and SSRC, sequence +1 and
/// timestamp + samples per packet.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub payload_type: u8,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    first: bool,
}

impl Rtp {
    pub fn new(payload_type: u8, ssrc: u32, sequence: u16, timestamp: u32) -> Self {
        Rtp {
            payload_type: payload_type & 0x7f,
            ssrc,
            sequence,
            timestamp,
            first: true,
        }
    }

    /// The next packet for `payload` holding `samples` samples.
    pub fn packet(&mut self, payload: &[u8], samples: u32) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        // The marker starts a talk spurt.
        p.push(self.payload_type | if self.first { 0x80 } else { 0 });
        p.extend_from_slice(&self.sequence.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        p
    }
}

/// One interleaved frame: `$`, channel, 16-bit length, data.
pub fn interleaved(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + data.len());
    f.push(b'$');
    f.push(channel);
    f.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    f.extend_from_slice(&data[..data.len().min(usize::from(u16::MAX))]);
    f
}

fn hex_md5(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Authorization` header answering `challenge` (a `WWW-Authenticate` value) for
/// `method` on `uri` (`cnonce`: a fresh client nonce, used when the camera asks for
/// `qop=auth`); `None` for a scheme this does not speak.
pub fn authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    let (scheme, params) = challenge.trim().split_once(' ').unwrap_or((challenge.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        return Some(format!("Basic {b}"));
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let param = |name: &str| {
        params.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let realm = param("realm")?;
    let nonce = param("nonce")?;
    let ha1 = hex_md5(&format!("{user}:{realm}:{password}"));
    let ha2 = hex_md5(&format!("{method}:{uri}"));
    let opaque = param("opaque").map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default();
    let qop_auth = param("qop").is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"));
    if qop_auth {
        let response = hex_md5(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        return Some(format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\"{opaque}"
        ));
    }
    let response = hex_md5(&format!("{ha1}:{nonce}:{ha2}"));
    Some(format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"{opaque}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDP a GStreamer ONVIF server answered (docs/onvif-backchannel.md).
    const SDP: &str = "v=0\r\no=- 5083635547909072983 1 IN IP4 127.0.0.1\r\ns=Session streamed with GStreamer\r\ni=rtsp-server\r\nt=0 0\r\na=tool:GStreamer\r\na=type:broadcast\r\na=control:*\r\na=range:npt=now-\r\nm=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:307\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\na=recvonly\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\na=control:stream=1\r\na=x-onvif-track:AUDIO001\r\na=sendonly\r\n";

    #[test]
    fn the_sendonly_audio_track_is_the_backchannel() {
        let t = find_track(SDP, "rtsp://127.0.0.1:41641/cam/").expect("track");
        assert_eq!(t.control, "rtsp://127.0.0.1:41641/cam/stream=1");
        assert_eq!(t.aggregate, "rtsp://127.0.0.1:41641/cam/");
        assert_eq!((t.payload_type, t.codec, t.clock_rate), (0, Codec::Pcmu, 8000));
        let pcma = SDP
            .replace("RTP/AVP 0", "RTP/AVP 8")
            .replace("rtpmap:0 PCMU", "rtpmap:8 PCMA");
        assert_eq!(find_track(&pcma, "rtsp://h/cam").expect("track").codec, Codec::Pcma);
        let no_back = SDP.replace("a=sendonly", "a=recvonly");
        assert!(find_track(&no_back, "rtsp://h/cam")
            .unwrap_err()
            .contains("no audio backchannel"));
        let aac = SDP
            .replace("RTP/AVP 0", "RTP/AVP 97")
            .replace("rtpmap:0 PCMU/8000", "rtpmap:97 MPEG4-GENERIC/16000");
        assert!(find_track(&aac, "rtsp://h/cam").unwrap_err().contains("not G.711"));
        assert!(find_track("garbage", "rtsp://h/cam").is_err());
    }

    #[test]
    fn transport_session_and_rtp() {
        assert_eq!(
            interleaved_channel("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=AF"),
            Some(2)
        );
        assert_eq!(interleaved_channel("RTP/AVP;unicast;client_port=5000-5001"), None);
        assert_eq!(session("LMgZ;timeout=60"), ("LMgZ".into(), Some(60)));
        assert_eq!(session("abc"), ("abc".into(), None));
        let mut rtp = Rtp::new(0, 0xff3c_c88d, 0x4a62, 0xb0ce_3d4a);
        let p = rtp.packet(&[0x7f; 160], 160);
        assert_eq!(
            &p[..12],
            &[0x80, 0x80, 0x4a, 0x62, 0xb0, 0xce, 0x3d, 0x4a, 0xff, 0x3c, 0xc8, 0x8d]
        );
        let q = rtp.packet(&[0x7f; 160], 160);
        assert_eq!(&q[..4], &[0x80, 0x00, 0x4a, 0x63]);
        assert_eq!(u32::from_be_bytes([q[4], q[5], q[6], q[7]]), 0xb0ce_3d4a + 160);
        assert_eq!(&interleaved(2, &p)[..4], &[b'$', 2, 0, 172]);
    }

    #[test]
    fn digest_matches_rfc_2617() {
        // RFC 2617 3.5's example: qop=auth, nc 00000001, cnonce 0a4f113b.
        let challenge = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let a = authorization(
            challenge,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        )
        .expect("digest");
        assert!(a.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{a}");
        assert!(a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""), "{a}");
        // Without qop (RFC 2069, what many cameras ask): MD5(HA1:nonce:HA2).
        let old = authorization(
            "Digest realm=\"r\", nonce=\"n\"",
            "u",
            "p",
            "DESCRIBE",
            "rtsp://h/",
            "c",
        )
        .expect("digest");
        let want = hex_md5(&format!("{}:n:{}", hex_md5("u:r:p"), hex_md5("DESCRIBE:rtsp://h/")));
        assert!(old.contains(&format!("response=\"{want}\"")), "{old}");
        assert_eq!(
            authorization("Basic realm=\"cam\"", "admin", "pw", "DESCRIBE", "rtsp://h/", "c").as_deref(),
            Some("Basic YWRtaW46cHc=")
        );
        assert_eq!(authorization("Bearer x", "a", "b", "GET", "/", "c"), None);
    }
}
