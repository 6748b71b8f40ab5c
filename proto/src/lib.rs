//! camesh wire formats.
//!
//! Owns two things:
//! - the protobuf schemas in `proto/camesh.proto`, compiled at build time by protox and
//!   prost-build (no `protoc` needed) into [`pb`];
//! - the framing codec ([`framing`]): every message on a camesh stream is an unsigned
//!   varint length followed by that many bytes, with a maximum the reader sets. A media
//!   frame's body is itself a varint-length [`pb::FrameHeader`] followed by the payload
//!   ([`framing::MediaFrame`]).
//!
//! Everything here is pure: decoders take bytes and return values or errors; partial
//! input returns `Ok(None)`; oversize or garbage input is an error, never a panic.

pub mod framing;

/// Generated protobuf types (package `camesh.v1`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/camesh.v1.rs"));
}

pub use framing::{FramingError, LengthCodec, MediaFrame};

/// The libp2p protocol name of the media protocol.
pub const MEDIA_PROTOCOL: &str = "/camesh/media/1";
/// The libp2p protocol name of the control (request/response) protocol.
pub const INFO_PROTOCOL: &str = "/camesh/info/1";
/// The libp2p protocol name of media key requests (viewer → camera, one per stream).
pub const KEY_PROTOCOL: &str = "/camesh/key/1";
