//! Talkback over the mesh (#17): `/camesh/talk/1`, gated by the `talk` right. A viewer
//! sends audio (G.711, 20 ms frames, in real time); the camera's node plays it into the
//! camera through the camera's RTSP ONVIF backchannel.
//!
//! ```text
//! mesh talk ─ media::audio_in (file / mic, 8 kHz) ─ media::g711 ─ /camesh/talk/1 ─► serve ─► rtsp (RTP on the RTSP connection) ─► camera speaker
//! ```
//!
//! - [`backchannel`] (pure): the SDP track, transport, RTP packets, Digest answers.
//! - [`rtsp`] (IO): one backchannel session to the camera.
//! - [`serve`] (IO): the camera node's side: membership, grant, one talker per camera,
//!   audit, and the frames into the backchannel.
//! - [`client`] (IO): the talking side, for `mesh talk`.

pub mod backchannel;
pub mod client;
pub mod rtsp;
pub mod serve;

pub const TALK_PROTOCOL: &str = "/camesh/talk/1";
/// Largest frame accepted (G.711 at 8 kHz is 160 bytes per 20 ms; room for 100 ms).
pub const MAX_FRAME: usize = 800;
/// Longest talk; a talker that goes on is cut off here.
pub const MAX_TALK: std::time::Duration = std::time::Duration::from_secs(600);
