//! ONVIF SOAP, pure: the request envelopes a camera node sends for PTZ (device
//! capabilities, media profiles, ContinuousMove, Stop, AbsoluteMove, RelativeMove,
//! GotoPreset, GotoHomePosition, GetPresets) with a WS-Security UsernameToken
//! (PasswordDigest = Base64(SHA-1(nonce + created + password))), and the few things read
//! back from answers (service addresses, profile tokens, presets, SOAP faults). No IO:
//! [`super::client`] posts these.

use base64::Engine;
use sha1::{Digest, Sha1};
use xml::reader::{EventReader, XmlEvent};

pub const DEVICE_NS: &str = "http://www.onvif.org/ver10/device/wsdl";
pub const MEDIA_NS: &str = "http://www.onvif.org/ver10/media/wsdl";
pub const PTZ_NS: &str = "http://www.onvif.org/ver20/ptz/wsdl";
const SCHEMA_NS: &str = "http://www.onvif.org/ver10/schema";
const WSSE_NS: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSU_NS: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const DIGEST_TYPE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_TYPE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// The longest answer read from a camera (a profile list with many profiles is tens of KB).
pub const MAX_ANSWER: usize = 1 << 20;

/// WS-Security credentials for one request: the digest is made from a fresh nonce and
/// the creation time.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub nonce: [u8; 16],
    /// RFC 3339 UTC, e.g. `2026-12-07T02:40:00Z`.
    pub created: String,
}

/// Base64(SHA-1(nonce + created + password)).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// XML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A SOAP 1.2 envelope around `body`, with a UsernameToken when `creds` are given.
pub fn envelope(body: &str, creds: Option<&Credentials<'_>>) -> String {
    let header = creds.map_or(String::new(), |c| {
        let b64 = base64::engine::general_purpose::STANDARD;
        format!(
            "<s:Header><Security s:mustUnderstand=\"1\" xmlns=\"{WSSE_NS}\"><UsernameToken>\
             <Username>{}</Username><Password Type=\"{DIGEST_TYPE}\">{}</Password>\
             <Nonce EncodingType=\"{BASE64_TYPE}\">{}</Nonce>\
             <Created xmlns=\"{WSU_NS}\">{}</Created></UsernameToken></Security></s:Header>",
            esc(c.user),
            password_digest(&c.nonce, &c.created, c.password),
            b64.encode(c.nonce),
            esc(&c.created)
        )
    });
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{header}<s:Body>{body}</s:Body></s:Envelope>"
    )
}

/// One PTZ operation, as sent to the camera.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    ContinuousMove { pan: f32, tilt: f32, zoom: f32 },
    Stop,
    AbsoluteMove { pan: f32, tilt: f32, zoom: f32 },
    RelativeMove { pan: f32, tilt: f32, zoom: f32 },
    GotoPreset(String),
    GotoHome,
    GetPresets,
}

impl Op {
    /// The operation's name (SOAP action's last part, and what the audit log says).
    pub fn name(&self) -> &'static str {
        match self {
            Op::ContinuousMove { .. } => "ContinuousMove",
            Op::Stop => "Stop",
            Op::AbsoluteMove { .. } => "AbsoluteMove",
            Op::RelativeMove { .. } => "RelativeMove",
            Op::GotoPreset(_) => "GotoPreset",
            Op::GotoHome => "GotoHomePosition",
            Op::GetPresets => "GetPresets",
        }
    }

    /// The Body's content for profile `profile`.
    pub fn body(&self, profile: &str) -> String {
        let token = format!("<ProfileToken>{}</ProfileToken>", esc(profile));
        let vector = |pan: f32, tilt: f32, zoom: f32| {
            format!(
                "<PanTilt x=\"{pan}\" y=\"{tilt}\" xmlns=\"{SCHEMA_NS}\"/><Zoom x=\"{zoom}\" xmlns=\"{SCHEMA_NS}\"/>"
            )
        };
        let inner = match self {
            Op::ContinuousMove { pan, tilt, zoom } => {
                format!("{token}<Velocity>{}</Velocity>", vector(*pan, *tilt, *zoom))
            }
            Op::Stop => format!("{token}<PanTilt>true</PanTilt><Zoom>true</Zoom>"),
            Op::AbsoluteMove { pan, tilt, zoom } => {
                format!("{token}<Position>{}</Position>", vector(*pan, *tilt, *zoom))
            }
            Op::RelativeMove { pan, tilt, zoom } => {
                format!("{token}<Translation>{}</Translation>", vector(*pan, *tilt, *zoom))
            }
            Op::GotoPreset(p) => format!("{token}<PresetToken>{}</PresetToken>", esc(p)),
            Op::GotoHome | Op::GetPresets => token,
        };
        format!("<{name} xmlns=\"{PTZ_NS}\">{inner}</{name}>", name = self.name())
    }
}

/// `GetCapabilities` of the device service.
pub fn get_capabilities() -> String {
    format!("<GetCapabilities xmlns=\"{DEVICE_NS}\"><Category>All</Category></GetCapabilities>")
}

/// `GetProfiles` of the media service.
pub fn get_profiles() -> String {
    format!("<GetProfiles xmlns=\"{MEDIA_NS}\"/>")
}

/// `GetStreamUri` of the media service: the RTSP URI of `profile`.
pub fn get_stream_uri(profile: &str) -> String {
    format!(
        "<GetStreamUri xmlns=\"{MEDIA_NS}\"><StreamSetup><Stream xmlns=\"{SCHEMA_NS}\">RTP-Unicast</Stream>\
         <Transport xmlns=\"{SCHEMA_NS}\"><Protocol>RTSP</Protocol></Transport></StreamSetup>\
         <ProfileToken>{}</ProfileToken></GetStreamUri>",
        esc(profile)
    )
}

/// A media profile as GetProfiles describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProfileInfo {
    pub token: String,
    pub name: String,
    /// The video encoder's resolution, when given.
    pub width: u32,
    pub height: u32,
}

/// What is read from an answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    /// The SOAP fault's reason text, when the answer is a fault.
    pub fault: Option<String>,
    /// `XAddr` of the Media and PTZ capabilities (GetCapabilities).
    pub media_xaddr: Option<String>,
    pub ptz_xaddr: Option<String>,
    /// `XAddr` of the Events capability (GetCapabilities).
    pub events_xaddr: Option<String>,
    /// Profile tokens (GetProfiles), in order.
    pub profiles: Vec<String>,
    /// (token, name) of each preset (GetPresets).
    pub presets: Vec<(String, String)>,
    /// Each profile's name and resolution (GetProfiles), in order.
    pub profile_info: Vec<ProfileInfo>,
    /// The media URI (GetStreamUri).
    pub uri: Option<String>,
}

/// Reads an answer (bounded by [`MAX_ANSWER`] by the caller); a malformed document is an
/// error, never a panic.
pub fn parse_answer(xml: &[u8]) -> Result<Answer, String> {
    let mut a = Answer::default();
    // The element path as local names.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut preset: Option<(String, String)> = None;
    for ev in EventReader::new(xml) {
        match ev.map_err(|e| format!("not XML: {e}"))? {
            XmlEvent::StartElement { name, attributes, .. } => {
                if path.len() > 64 {
                    return Err("XML nested too deep".into());
                }
                let local = name.local_name;
                let token = attributes
                    .iter()
                    .find(|at| at.name.local_name == "token")
                    .map(|at| at.value.clone());
                match local.as_str() {
                    "Profiles" if path.last().is_some_and(|p| p == "GetProfilesResponse") => {
                        if let Some(t) = token {
                            a.profiles.push(t.clone());
                            if a.profile_info.len() < 64 {
                                a.profile_info.push(ProfileInfo {
                                    token: t,
                                    ..Default::default()
                                });
                            }
                        }
                    }
                    "Preset" => preset = Some((token.unwrap_or_default(), String::new())),
                    _ => {}
                }
                path.push(local);
                text.clear();
            }
            XmlEvent::Characters(t) | XmlEvent::CData(t) if text.len() + t.len() <= 4096 => text.push_str(&t),
            XmlEvent::EndElement { .. } => {
                let local = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str).unwrap_or("");
                let in_fault = path.iter().any(|p| p == "Fault");
                match local.as_str() {
                    "XAddr" if parent == "Media" => a.media_xaddr = Some(text.trim().to_owned()),
                    "XAddr" if parent == "PTZ" => a.ptz_xaddr = Some(text.trim().to_owned()),
                    "XAddr" if parent == "Events" => a.events_xaddr = Some(text.trim().to_owned()),
                    "Name" if parent == "Preset" => {
                        if let Some(p) = preset.as_mut() {
                            p.1 = text.trim().to_owned();
                        }
                    }
                    "Preset" => a.presets.extend(preset.take()),
                    "Name" if parent == "Profiles" => {
                        if let Some(p) = a.profile_info.last_mut() {
                            p.name = text.trim().to_owned();
                        }
                    }
                    "Width" | "Height"
                        if parent == "Resolution" && path.iter().any(|p| p == "VideoEncoderConfiguration") =>
                    {
                        if let (Some(p), Ok(v)) = (a.profile_info.last_mut(), text.trim().parse::<u32>()) {
                            if local == "Width" {
                                p.width = v;
                            } else {
                                p.height = v;
                            }
                        }
                    }
                    "Uri" if parent == "MediaUri" => a.uri = Some(text.trim().to_owned()),
                    "Text" if in_fault => a.fault = Some(text.trim().to_owned()),
                    "Fault" if a.fault.is_none() => a.fault = Some("SOAP fault".into()),
                    _ => {}
                }
                text.clear();
            }
            _ => {}
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_matches_the_ws_security_example() {
        // OASIS UsernameToken profile: Base64(SHA-1(nonce + created + password)); the
        // values are the ones ONVIF's programmer's guide works through.
        let nonce = base64::engine::general_purpose::STANDARD
            .decode("LKqI6G/AikKCQrN0zqZFlg==")
            .expect("b64");
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn requests_carry_the_token_and_escape_text() {
        let creds = Credentials {
            user: "ad<min",
            password: "pw",
            nonce: [7; 16],
            created: "2026-12-07T02:40:00Z".into(),
        };
        let xml = envelope(
            &Op::ContinuousMove {
                pan: 0.3,
                tilt: -0.5,
                zoom: 0.0,
            }
            .body("prof&0"),
            Some(&creds),
        );
        assert!(xml.contains("<Username>ad&lt;min</Username>"));
        assert!(xml.contains(&password_digest(&[7; 16], "2026-12-07T02:40:00Z", "pw")));
        assert!(xml.contains("<ProfileToken>prof&amp;0</ProfileToken>"));
        assert!(xml.contains("<PanTilt x=\"0.3\" y=\"-0.5\""));
        assert!(Op::GotoPreset("2".into())
            .body("p")
            .contains("<PresetToken>2</PresetToken>"));
        assert!(Op::Stop
            .body("p")
            .starts_with("<Stop xmlns=\"http://www.onvif.org/ver20/ptz/wsdl\">"));
    }

    #[test]
    fn answers_are_read_and_garbage_is_an_error() {
        let caps = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema"><s:Body><tds:GetCapabilitiesResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><tds:Capabilities><tt:Media><tt:XAddr>http://10.0.0.5/onvif/media</tt:XAddr></tt:Media><tt:PTZ><tt:XAddr> http://10.0.0.5/onvif/ptz </tt:XAddr></tt:PTZ></tds:Capabilities></tds:GetCapabilitiesResponse></s:Body></s:Envelope>"#;
        let a = parse_answer(caps).expect("parse");
        assert_eq!(a.media_xaddr.as_deref(), Some("http://10.0.0.5/onvif/media"));
        assert_eq!(a.ptz_xaddr.as_deref(), Some("http://10.0.0.5/onvif/ptz"));
        let profiles = br#"<Envelope><Body><GetProfilesResponse><Profiles token="main"><Name>m</Name></Profiles><Profiles token="sub"/></GetProfilesResponse></Body></Envelope>"#;
        assert_eq!(parse_answer(profiles).expect("parse").profiles, ["main", "sub"]);
        let profiles = br#"<Envelope><Body><GetProfilesResponse><Profiles token="p0"><Name>Main</Name><VideoEncoderConfiguration><Name>enc</Name><Resolution><Width>1920</Width><Height>1080</Height></Resolution></VideoEncoderConfiguration></Profiles></GetProfilesResponse></Body></Envelope>"#;
        let info = parse_answer(profiles).expect("parse").profile_info;
        assert_eq!(
            info,
            [ProfileInfo {
                token: "p0".into(),
                name: "Main".into(),
                width: 1920,
                height: 1080
            }]
        );
        let uri = br#"<Envelope><Body><GetStreamUriResponse><MediaUri><Uri>rtsp://10.0.0.5:554/main</Uri></MediaUri></GetStreamUriResponse></Body></Envelope>"#;
        assert_eq!(
            parse_answer(uri).expect("parse").uri.as_deref(),
            Some("rtsp://10.0.0.5:554/main")
        );
        let presets = br#"<Envelope><Body><GetPresetsResponse><Preset token="1"><Name>Door</Name></Preset><Preset token="2"><Name>Till</Name></Preset></GetPresetsResponse></Body></Envelope>"#;
        assert_eq!(
            parse_answer(presets).expect("parse").presets,
            [("1".into(), "Door".into()), ("2".into(), "Till".into())]
        );
        let fault = br#"<Envelope><Body><Fault><Code><Value>Sender</Value></Code><Reason><Text xml:lang="en">Sender not authorized</Text></Reason></Fault></Body></Envelope>"#;
        assert_eq!(
            parse_answer(fault).expect("parse").fault.as_deref(),
            Some("Sender not authorized")
        );
        assert!(parse_answer(b"<a><b></a>").is_err());
        assert!(parse_answer(&b"<a>".repeat(100)).is_err());
    }
}
