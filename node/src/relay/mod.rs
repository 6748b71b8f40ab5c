//! Relaying at the application level: forwarding, and reaching a camera through a
//! forwarder. (Choosing among routes and splicing them is the viewer's: [`crate::watch`].)
//!
//! - [`forward`] (IO): re-serving another node's camera, ciphertext only.
//! - [`keys`] (IO): `/camesh/key/1`, media keys from the camera for viewers behind a
//!   forwarder.
//! - [`route`] (IO): opening a stream on a route, and measuring the candidates.
//!
//! Circuit relay v2 (libp2p) is the other kind of relaying; it lives in [`crate::net`].

pub mod forward;
pub mod keys;
pub mod route;
