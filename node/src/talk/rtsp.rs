//! The camera side of talkback (IO): one RTSP/TCP connection to the camera that asks for
//! the ONVIF backchannel (DESCRIBE with `Require`), SETUPs only the backchannel track
//! with interleaved transport, PLAYs, and then sends RTP on that connection, 20 ms per
//! packet, as the viewer's frames arrive. A task reads the connection: answers go to the
//! request that waits for them, and what the camera sends (RTCP, any video) is dropped.
//! GET_PARAMETER keeps the session alive; TEARDOWN ends it half a second after the last
//! packet (a camera buffers a little before its speaker). Every read is bounded.

use std::time::Duration;

use rtsp_types::{headers, Message, Method, Request, Response, StatusCode, Url, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::backchannel::{self, Codec, Rtp, Track, REQUIRE};

/// An RTSP answer larger than this (headers and SDP) is refused.
const MAX_MESSAGE: usize = 256 << 10;
/// How long the camera has for each answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the camera gets to play what it has buffered before TEARDOWN.
const DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum BackchannelError {
    #[error("talkback URL {0:?} is not an rtsp:// URL with a host")]
    BadUrl(String),
    #[error("cannot reach the camera at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the camera answered {method} with {status}{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Status {
        method: &'static str,
        status: u16,
        reason: String,
    },
    #[error("the camera has no talkback: {0}")]
    NoBackchannel(String),
    #[error("the camera closed the connection")]
    Closed,
    #[error("no answer from the camera within {0:?}")]
    Timeout(Duration),
    #[error("the camera's answer is not RTSP: {0}")]
    Protocol(String),
}

/// An open backchannel to one camera.
#[derive(Debug)]
pub struct Backchannel {
    writer: OwnedWriteHalf,
    answers: mpsc::Receiver<Response<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
    cseq: u32,
    user: String,
    password: String,
    challenge: Option<String>,
    agent: String,
    session: String,
    track: Track,
    channel: u8,
    rtp: Rtp,
    keepalive: Duration,
    last_request: Instant,
}

/// A request URL and its credentials (percent-decoded), from `url`.
fn split_credentials(url: &str) -> Result<(Url, String, String), BackchannelError> {
    let bad = || BackchannelError::BadUrl(url.split('@').next_back().unwrap_or("").to_owned());
    let mut u = Url::parse(url).map_err(|_| bad())?;
    if u.scheme() != "rtsp" || u.host_str().is_none() {
        return Err(bad());
    }
    let user = percent_decode(u.username());
    let password = percent_decode(u.password().unwrap_or(""));
    let _ = u.set_username("");
    let _ = u.set_password(None);
    Ok((u, user, password))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads messages off the connection: answers to `tx`, interleaved data dropped.
async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<Response<Vec<u8>>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        loop {
            match Message::<Vec<u8>>::parse(&buf) {
                Ok((msg, used)) => {
                    buf.drain(..used);
                    if let Message::Response(r) = msg {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                }
                Err(rtsp_types::ParseError::Incomplete(_)) if buf.len() <= MAX_MESSAGE => break,
                Err(_) => {
                    debug!(
                        bytes = buf.len(),
                        "unreadable or oversized RTSP from the camera; closing"
                    );
                    return;
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Backchannel {
    /// Connects to `url` (`rtsp://[user:password@]host[:port]/path`) and sets the
    /// backchannel up, ready for [`Backchannel::send`].
    pub async fn open(url: &str, agent: &str) -> Result<Backchannel, BackchannelError> {
        let (url, user, password) = split_credentials(url)?;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = url.port().unwrap_or(554);
        let addr = format!("{host}:{port}");
        let tcp = tokio::time::timeout(ANSWER_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| BackchannelError::Timeout(ANSWER_TIMEOUT))?
            .map_err(|e| BackchannelError::Unreachable {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let (rd, writer) = tcp.into_split();
        let (tx, answers) = mpsc::channel(8);
        let reader = tokio::spawn(read_loop(rd, tx));
        let mut b = Backchannel {
            writer,
            answers,
            reader,
            cseq: 0,
            user,
            password,
            challenge: None,
            agent: agent.to_owned(),
            session: String::new(),
            track: Track {
                control: String::new(),
                aggregate: String::new(),
                payload_type: 0,
                codec: Codec::Pcmu,
                clock_rate: 8000,
            },
            channel: 0,
            rtp: Rtp::new(0, rand::random(), rand::random(), rand::random()),
            keepalive: Duration::from_secs(20),
            last_request: Instant::now(),
        };
        let describe = b
            .request(
                Method::Describe,
                url.as_str(),
                &[(headers::ACCEPT, "application/sdp")],
                true,
            )
            .await?;
        let base = describe
            .header(&headers::CONTENT_BASE)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| url.to_string());
        let sdp = String::from_utf8_lossy(describe.body()).into_owned();
        b.track = backchannel::find_track(&sdp, &base).map_err(BackchannelError::NoBackchannel)?;
        b.rtp = Rtp::new(b.track.payload_type, rand::random(), rand::random(), rand::random());
        let control = b.track.control.clone();
        let setup = b
            .request(
                Method::Setup,
                &control,
                &[(headers::TRANSPORT, "RTP/AVP/TCP;unicast;interleaved=0-1")],
                true,
            )
            .await?;
        let (session, timeout) = setup
            .header(&headers::SESSION)
            .map(|v| backchannel::session(v.as_str()))
            .ok_or_else(|| BackchannelError::Protocol("SETUP answer without a Session".into()))?;
        b.session = session;
        if let Some(t) = timeout.filter(|t| *t >= 2) {
            b.keepalive = Duration::from_secs(t / 2);
        }
        b.channel = setup
            .header(&headers::TRANSPORT)
            .and_then(|v| backchannel::interleaved_channel(v.as_str()))
            .unwrap_or(0);
        let aggregate = b.track.aggregate.clone();
        b.request(Method::Play, &aggregate, &[], true).await?;
        debug!(camera = %addr, codec = b.track.codec.name(), channel = b.channel, "backchannel open");
        Ok(b)
    }

    pub fn codec(&self) -> Codec {
        self.track.codec
    }

    /// Sends one request and waits for its answer; a 401 is answered once with the
    /// configured credentials.
    async fn request(
        &mut self,
        method: Method,
        uri: &str,
        extra: &[(headers::HeaderName, &str)],
        require: bool,
    ) -> Result<Response<Vec<u8>>, BackchannelError> {
        let name: &'static str = match method {
            Method::Describe => "DESCRIBE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Teardown => "TEARDOWN",
            _ => "GET_PARAMETER",
        };
        for attempt in 0..2 {
            self.cseq += 1;
            let url = Url::parse(uri).map_err(|_| BackchannelError::BadUrl(uri.to_owned()))?;
            let mut rb = Request::builder(method.clone(), Version::V1_0)
                .request_uri(url)
                .header(headers::CSEQ, self.cseq.to_string())
                .header(headers::USER_AGENT, self.agent.as_str());
            if require {
                rb = rb.header(headers::REQUIRE, REQUIRE);
            }
            if !self.session.is_empty() {
                rb = rb.header(headers::SESSION, self.session.as_str());
            }
            for (k, v) in extra {
                rb = rb.header(k.clone(), *v);
            }
            if let Some(c) = &self.challenge {
                let cnonce = format!("{:016x}", rand::random::<u64>());
                if let Some(a) = backchannel::authorization(c, &self.user, &self.password, name, uri, &cnonce) {
                    rb = rb.header(headers::AUTHORIZATION, a);
                }
            }
            let mut bytes = Vec::new();
            rb.empty()
                .write(&mut bytes)
                .map_err(|e| BackchannelError::Protocol(e.to_string()))?;
            self.write(&bytes).await?;
            self.last_request = Instant::now();
            let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.answers.recv())
                .await
                .map_err(|_| BackchannelError::Timeout(ANSWER_TIMEOUT))?
                .ok_or(BackchannelError::Closed)?;
            let status = answer.status();
            if status == StatusCode::Unauthorized && attempt == 0 && !self.user.is_empty() {
                if let Some(c) = answer.header(&headers::WWW_AUTHENTICATE) {
                    self.challenge = Some(c.as_str().to_owned());
                    continue;
                }
            }
            if status != StatusCode::Ok {
                let code = u16::from(status);
                let reason = match code {
                    401 => "wrong or missing credentials in the talkback URL".to_owned(),
                    551 => "the camera does not support the ONVIF backchannel".to_owned(),
                    _ => String::new(),
                };
                return Err(BackchannelError::Status {
                    method: name,
                    status: code,
                    reason,
                });
            }
            return Ok(answer);
        }
        Err(BackchannelError::Status {
            method: name,
            status: 401,
            reason: "wrong or missing credentials in the talkback URL".into(),
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackchannelError> {
        tokio::time::timeout(ANSWER_TIMEOUT, self.writer.write_all(bytes))
            .await
            .map_err(|_| BackchannelError::Timeout(ANSWER_TIMEOUT))?
            .map_err(|_| BackchannelError::Closed)
    }

    /// Sends one frame of audio (`samples` samples in the track's codec).
    pub async fn send(&mut self, payload: &[u8], samples: u32) -> Result<(), BackchannelError> {
        if self.reader.is_finished() {
            return Err(BackchannelError::Closed);
        }
        let packet = self.rtp.packet(payload, samples);
        let frame = backchannel::interleaved(self.channel, &packet);
        self.write(&frame).await?;
        if self.last_request.elapsed() >= self.keepalive {
            let aggregate = self.track.aggregate.clone();
            // The answer comes back through the reader; a camera that does not know
            // GET_PARAMETER answers 405/501, which still keeps the session.
            let _ = self.request(Method::GetParameter, &aggregate, &[], false).await;
        }
        Ok(())
    }

    /// Lets the camera play what it holds, then tears the session down.
    pub async fn close(mut self) {
        tokio::time::sleep(DRAIN).await;
        let aggregate = self.track.aggregate.clone();
        if let Err(e) = self.request(Method::Teardown, &aggregate, &[], false).await {
            debug!(error = %e, "TEARDOWN");
        }
        let _ = self.writer.shutdown().await;
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        let (u, user, pw) = split_credentials("rtsp://admin:p%40ss@10.0.0.5:8554/onvif1").expect("url");
        assert_eq!((user.as_str(), pw.as_str()), ("admin", "p@ss"));
        assert_eq!(u.as_str(), "rtsp://10.0.0.5:8554/onvif1");
        assert!(split_credentials("http://h/x").is_err());
        assert!(split_credentials("rtsp://").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
