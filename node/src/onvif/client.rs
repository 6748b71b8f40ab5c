//! An ONVIF client (IO): posts the envelopes [`super::soap`] makes to the
//! camera over HTTP/1.1, with a fresh WS-Security nonce per call. The PTZ service address
//! and the media profile token are found once (device GetCapabilities, media
//! GetProfiles) and kept. Every answer is bounded ([`MAX_ANSWER`]) and every call has a
//! deadline. The camera node uses it for PTZ; `mesh cameras --onvif` for the media
//! profiles and stream URIs of devices it discovered.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::sync::Mutex;
use tracing::debug;

use super::events::{self, Notification};
use super::soap::{self, Answer, Credentials, Op, MAX_ANSWER};
use crate::clock::{now_unix_us, rfc3339_s};
use crate::config::OnvifConfig;

/// A camera's ONVIF call took longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    #[error("ONVIF address {0:?} is not an http:// URL")]
    BadUrl(String),
    #[error("cannot reach the camera's ONVIF service at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the camera answered HTTP {status} to {op}{}", fault.as_ref().map(|f| format!(": {f}")).unwrap_or_default())]
    Http {
        op: &'static str,
        status: u16,
        fault: Option<String>,
    },
    #[error("the camera refused {op}: {fault}")]
    Fault { op: &'static str, fault: String },
    #[error("the camera's answer to {op} is unreadable: {reason}")]
    BadAnswer { op: &'static str, reason: String },
    #[error("the camera has no media profile for PTZ")]
    NoProfile,
}

/// Where PTZ calls go, once found.
#[derive(Debug, Clone)]
struct Target {
    ptz_url: String,
    profile: String,
}

/// Where a device's services are.
#[derive(Debug)]
struct Services {
    media: String,
    ptz: String,
    events: String,
}

/// One camera's ONVIF service.
#[derive(Debug)]
pub struct Onvif {
    cfg: OnvifConfig,
    target: Mutex<Option<Target>>,
}

impl Onvif {
    pub fn new(cfg: OnvifConfig) -> Self {
        Self {
            cfg,
            target: Mutex::new(None),
        }
    }

    /// Carries out `op` on the camera.
    pub async fn call(&self, op: &Op) -> Result<Answer, OnvifError> {
        let target = self.target().await?;
        let body = op.body(&target.profile);
        self.post(&target.ptz_url, soap::PTZ_NS, op.name(), &body).await
    }

    /// The device's media profiles, each with its RTSP URI (`None` where GetStreamUri
    /// failed).
    pub async fn media_profiles(&self) -> Result<Vec<(soap::ProfileInfo, Option<String>)>, OnvifError> {
        let media_url = self.services().await?.media;
        let profiles = self
            .post(&media_url, soap::MEDIA_NS, "GetProfiles", &soap::get_profiles())
            .await?
            .profile_info;
        let mut out = Vec::with_capacity(profiles.len());
        for p in profiles {
            let uri = self
                .post(
                    &media_url,
                    soap::MEDIA_NS,
                    "GetStreamUri",
                    &soap::get_stream_uri(&p.token),
                )
                .await
                .ok()
                .and_then(|a| a.uri);
            out.push((p, uri));
        }
        Ok(out)
    }

    /// Starts a PullPoint subscription on the camera's event service lasting `seconds`
    /// unless renewed; its address.
    pub async fn subscribe_events(&self, seconds: u32) -> Result<String, OnvifError> {
        let url = self.services().await?.events;
        let op = "CreatePullPointSubscription";
        let raw = self
            .post_raw(&url, events::EVENTS_NS, op, &events::create_pull_point(seconds))
            .await?;
        events::parse_subscription(&raw).map_err(|reason| OnvifError::BadAnswer { op, reason })
    }

    /// Waits up to `timeout_s` (keep it under the call deadline of 5 s) for the
    /// subscription's next notifications.
    pub async fn pull_events(&self, subscription: &str, timeout_s: u32) -> Result<Vec<Notification>, OnvifError> {
        let op = "PullMessages";
        let body = events::pull_messages(timeout_s, events::MAX_MESSAGES as u32);
        let raw = self.post_raw(subscription, events::EVENTS_NS, op, &body).await?;
        events::parse_notifications(&raw).map_err(|reason| OnvifError::BadAnswer { op, reason })
    }

    /// Extends the subscription by `seconds`.
    pub async fn renew_events(&self, subscription: &str, seconds: u32) -> Result<(), OnvifError> {
        self.post_raw(subscription, events::WSN_NS, "Renew", &events::renew(seconds))
            .await
            .map(|_| ())
    }

    /// Ends the subscription.
    pub async fn unsubscribe_events(&self, subscription: &str) -> Result<(), OnvifError> {
        self.post_raw(subscription, events::WSN_NS, "Unsubscribe", &events::unsubscribe())
            .await
            .map(|_| ())
    }

    /// The media, PTZ and event service addresses (device GetCapabilities; the device
    /// service's own address where one is not given).
    async fn services(&self) -> Result<Services, OnvifError> {
        let caps = self
            .post(
                &self.cfg.url,
                soap::DEVICE_NS,
                "GetCapabilities",
                &soap::get_capabilities(),
            )
            .await?;
        let or_device = |x: Option<String>| x.unwrap_or_else(|| self.cfg.url.clone());
        Ok(Services {
            media: or_device(caps.media_xaddr),
            ptz: or_device(caps.ptz_xaddr),
            events: or_device(caps.events_xaddr),
        })
    }

    async fn target(&self) -> Result<Target, OnvifError> {
        let mut t = self.target.lock().await;
        if let Some(t) = t.as_ref() {
            return Ok(t.clone());
        }
        let Services {
            media: media_url,
            ptz: ptz_url,
            ..
        } = self.services().await?;
        let profile = if self.cfg.profile.is_empty() {
            let profiles = self
                .post(&media_url, soap::MEDIA_NS, "GetProfiles", &soap::get_profiles())
                .await?;
            profiles.profiles.into_iter().next().ok_or(OnvifError::NoProfile)?
        } else {
            self.cfg.profile.clone()
        };
        debug!(%ptz_url, %profile, "ONVIF PTZ service found");
        let found = Target { ptz_url, profile };
        *t = Some(found.clone());
        Ok(found)
    }

    fn credentials(&self) -> Option<Credentials<'_>> {
        if self.cfg.user.is_empty() {
            return None;
        }
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        Some(Credentials {
            user: &self.cfg.user,
            password: &self.cfg.password,
            nonce,
            created: rfc3339_s(now_unix_us() / 1_000_000),
        })
    }

    /// Posts and returns the answer's bytes once it is known not to be a fault.
    async fn post_raw(&self, url: &str, ns: &str, op: &'static str, body: &str) -> Result<Bytes, OnvifError> {
        let xml = soap::envelope(body, self.credentials().as_ref());
        let action = format!("{ns}/{op}");
        let (status, answer) = tokio::time::timeout(CALL_TIMEOUT, post_xml(url, &action, xml))
            .await
            .map_err(|_| OnvifError::Unreachable {
                url: url.to_owned(),
                reason: format!("no answer within {CALL_TIMEOUT:?}"),
            })??;
        let fault = soap::parse_answer(&answer).ok().and_then(|a| a.fault);
        match (status, fault) {
            (200..=299, None) => Ok(answer),
            (200..=299, Some(fault)) => Err(OnvifError::Fault { op, fault }),
            (status, fault) => Err(OnvifError::Http { op, status, fault }),
        }
    }

    async fn post(&self, url: &str, ns: &str, op: &'static str, body: &str) -> Result<Answer, OnvifError> {
        let xml = soap::envelope(body, self.credentials().as_ref());
        let action = format!("{ns}/{op}");
        let fut = post_xml(url, &action, xml);
        let (status, answer) =
            tokio::time::timeout(CALL_TIMEOUT, fut)
                .await
                .map_err(|_| OnvifError::Unreachable {
                    url: url.to_owned(),
                    reason: format!("no answer within {CALL_TIMEOUT:?}"),
                })??;
        let parsed = soap::parse_answer(&answer);
        match (status, parsed) {
            (200..=299, Ok(a)) => match a.fault {
                Some(fault) => Err(OnvifError::Fault { op, fault }),
                None => Ok(a),
            },
            (200..=299, Err(reason)) => Err(OnvifError::BadAnswer { op, reason }),
            (status, a) => Err(OnvifError::Http {
                op,
                status,
                fault: a.ok().and_then(|a| a.fault),
            }),
        }
    }
}

/// POSTs `xml` to `url`; the status and the (bounded) body.
async fn post_xml(url: &str, action: &str, xml: String) -> Result<(u16, Bytes), OnvifError> {
    let unreachable = |reason: String| OnvifError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let uri: hyper::Uri = url.parse().map_err(|_| OnvifError::BadUrl(url.to_owned()))?;
    if uri.scheme_str() != Some("http") {
        return Err(OnvifError::BadUrl(url.to_owned()));
    }
    let host = uri.host().ok_or_else(|| OnvifError::BadUrl(url.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = hyper::Request::post(path)
        .header(HOST, authority)
        .header(
            CONTENT_TYPE,
            format!("application/soap+xml; charset=utf-8; action=\"{action}\""),
        )
        .body(Full::new(Bytes::from(xml)))
        .map_err(|e| unreachable(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    conn.abort();
    result
}
