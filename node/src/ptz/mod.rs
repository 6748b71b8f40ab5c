//! PTZ over the mesh (#17): `/camesh/ptz/1`, gated by the `ptz` right, turned by the
//! camera's node into ONVIF PTZ calls ([`crate::onvif`]).
//!
//! - [`rate`] (pure): the bounded rate of requests per viewer.
//! - [`serve`] (IO): the camera node's side: membership, grant, rate, audit, call.
//! - [`client`] (IO): the asking side, for `mesh ptz`.

pub mod client;
pub mod rate;
pub mod serve;

pub const PTZ_PROTOCOL: &str = "/camesh/ptz/1";
