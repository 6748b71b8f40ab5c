//! camesh-node: everything a camesh node does.
//!
//! A node is a camera, an NVR or a viewer in a fleet. One task owns the libp2p Swarm
//! ([`net`]); every other part is a thin tokio task around pure code, and reaches what it
//! needs through the narrowest handle that serves it, never through the whole node.
//!
//! The data flow of one live frame, from a camera to a viewer:
//!
//! ```text
//! file / RTSP ─► media::source ─► AccessUnit ─► stream::hub ─► sealed once, GOP cache (stream::fanout)
//!   ├─► subscriber queue ─► media session (stream::server) ─► QUIC stream ─► reach ─► watch ─► viewer
//!   ├─► subscriber queue ─► ... ─► relay::forward (ciphertext only) ─► its own hub ─► more viewers
//!   └─► subscriber queue ─► ... ─► nvr recording ─► record (segments, index)
//! ```
//!
//! Media bytes never pass through the Swarm task: libp2p-stream hands each stream of
//! every protocol to one bounded accept loop ([`stream::accept`]) and a task of its own.
//!
//! The layers, lowest first (a module imports only from its own layer or below; the
//! test `tests/tests/layout.rs` holds the code to this):
//!
//! | layer | modules | what they own |
//! | --- | --- | --- |
//! | leaves | [`addr`], [`ids`], [`clock`], [`backoff`], [`logs`] | address/URL and id checks, clocks, retry pacing, log output |
//! | settings | [`config`], [`identity`] | the TOML config, validated; the node's ed25519 key |
//! | media | [`media`], [`onvif`] | H.264 parsing (pure), sources: files and RTSP through ffmpeg; ONVIF SOAP, client and WS-Discovery |
//! | security | [`auth`] | certificates, grants, revocations, media keys, audit |
//! | storage | [`record`] | segment files, their index, retention, playback, export |
//! | discovery | [`discovery`] | the directory of cameras; judging gossip; what to announce and provide |
//! | swarm | [`net`] | the one task that owns the Swarm; the pure punch schedule; one record of each peer's path |
//! | media protocol | [`stream`] | hubs and fan-out (pure), the media/info/key servers and client, camera tasks, the accept loop |
//! | seams | [`reach`], [`member`], [`grants`], [`fleetsync`], [`attest`] | reaching a camera (connect, prove membership, resolve, subscribe); membership and admin protocols; grants handed to their holders; fleet-state reconciliation; camera-signed GOP digests |
//! | users of a camera | [`watch`], [`relay`], [`ptz`], [`events`], [`talk`] | one viewer (a pure state machine and its IO loop); forwarding for peers with a worse path; PTZ over the mesh into ONVIF calls; camera-signed events (motion, ONVIF); talkback into the camera's RTSP backchannel |
//! | roles | [`nvr`], [`gateway`] | recording and serving recordings; local HTTP for players and metrics |
//! | facade | [`node`] | `Node::spawn` wires the parts; `NodeHandle` for binaries and tests |
//!
//! Decisions live in pure code that tests drive with events and time, without sockets:
//! the framing codec (`camesh_proto::framing`), H.264 parsing ([`media::h264`]), the
//! fan-out ([`stream::fanout`]), the directory and gossip judge ([`discovery`]), the punch
//! schedule ([`net::punch`]), the watch state machine, path choice and splice
//! ([`watch::machine`], [`watch::path`], [`watch::splice`]), grant checks ([`auth`]) and
//! retention ([`record::retention`]).

pub mod addr;
pub mod attest;
pub mod auth;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod events;
pub mod fleetsync;
pub mod gateway;
pub mod grants;
pub mod identity;
pub mod ids;
pub mod logs;
pub mod media;
pub mod member;
pub mod net;
pub mod node;
pub mod nvr;
pub mod onvif;
pub mod ptz;
pub mod reach;
pub mod record;
pub mod relay;
pub mod stream;
pub mod talk;
pub mod watch;

pub use config::{Config, Role};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Node, NodeHandle};
