//! Relaying at the application level: forwarding.
//!
//! - [`forward`] (IO): re-serving another node's camera, ciphertext only.
//!
//! Choosing among routes (direct, relayed, through a forwarder) and splicing them is the
//! viewer's, in [`crate::watch`]; reaching a camera through a forwarder is
//! [`crate::reach`]'s.
//!
//! Circuit relay v2 (libp2p) is the other kind of relaying; it lives in [`crate::net`].

pub mod forward;
