//! ONVIF, the camera side's standard (#17): SOAP envelopes and answers (pure), an HTTP
//! client for a device's services, and WS-Discovery of devices on the LAN.
//!
//! - [`soap`] (pure): envelopes with WS-Security digests; what is read from answers.
//! - [`events`] (pure): PullPoint subscription requests and the notifications read back.
//! - [`client`] (IO): posts them to a device (PTZ, media profiles, stream URIs, events).
//! - [`discovery`]: WS-Discovery probes and matches (pure) and the UDP multicast round.

pub mod client;
pub mod discovery;
pub mod events;
pub mod soap;
