//! camesh-node: everything a camesh node does.
//!
//! A node is a camera, an NVR or a viewer in a fleet. It runs one libp2p Swarm (QUIC
//! first, TCP + Noise + Yamux fallback; identify, ping, mDNS, a fleet-private Kademlia,
//! gossipsub) owned by one task ([`net`]); everything else talks to that task through a
//! cloneable handle with bounded channels.
//!
//! The data flow of one live frame:
//!
//! ```text
//! file / RTSP ──► media::source ──► AccessUnit ──► stream::hub::Hub ──► GOP cache
//!                                                   │ (one Bytes, shared)
//!                                                   ├─► subscriber queue ─► session task ─► QUIC stream ─► viewer
//!                                                   └─► subscriber queue ─► session task ─► ...
//! ```
//!
//! Media bytes never pass through the Swarm task: libp2p-stream hands each
//! `/camesh/media/1` stream to its own task. Decisions live in pure code that tests
//! drive without sockets: the framing codec (`camesh_proto::framing`), H.264 parsing
//! ([`media::h264`]), the fan-out queues ([`stream::fanout`]) and the directory
//! ([`discovery`]).
//!
//! Modules: [`config`] (TOML, validated), [`identity`] (the node key), [`node`] (start a
//! node, the handle), [`net`], [`discovery`], [`media`], [`stream`], [`relay`] (forwarding
//! and path choice), [`gateway`] (local HTTP: live fMP4, snapshots, the browser page,
//! Prometheus metrics).

pub mod addr;
pub mod attest;
pub mod auth;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod gateway;
pub mod identity;
pub mod ids;
pub mod media;
pub mod member;
pub mod net;
pub mod node;
pub mod nvr;
pub mod reach;
pub mod record;
pub mod relay;
pub mod stream;
pub mod watch;

pub use config::{Config, Role};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Node, NodeHandle};
