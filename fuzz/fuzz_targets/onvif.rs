//! What an ONVIF camera (or anything answering on the LAN) sends a camera node or `mesh`:
//! SOAP answers (capabilities, profiles, presets, stream URIs, faults), PullPoint
//! subscription answers and notifications, WS-Discovery matches; and the mapping of a
//! notification to a camera event that the node signs.
#![no_main]

use camesh_node::events::pullpoint::to_event;
use camesh_node::onvif::{discovery, events, soap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = soap::parse_answer(data);
    let _ = events::parse_subscription(data);
    if let Ok(ns) = events::parse_notifications(data) {
        assert!(ns.len() <= events::MAX_MESSAGES);
        for n in &ns {
            let e = to_event("cam1", n, 0);
            assert!(e.kind.len() <= camesh_node::events::MAX_KIND);
            assert!(e.detail.len() <= camesh_node::events::MAX_DETAIL);
        }
    }
    let _ = discovery::parse_matches(data, "uuid:x");
});
