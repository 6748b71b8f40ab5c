//! What an ONVIF camera (or anything answering on the LAN) sends a camera node or `mesh`:
//! SOAP answers (capabilities, profiles, presets, stream URIs, faults), PullPoint
//! subscription answers and notifications, WS-Discovery matches; and the mapping of a
//! notification to a camera event that the node signs; and what a camera answers on the
//! RTSP connection of talkback (messages, interleaved data, the SDP, Transport and
//! Session headers, a Digest challenge).
#![no_main]

use camesh_node::events::pullpoint::to_event;
use camesh_node::onvif::{discovery, events, soap};
use camesh_node::talk::backchannel;
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
    let _ = rtsp_types::Message::<Vec<u8>>::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = backchannel::find_track(text, "rtsp://127.0.0.1/cam/");
        let _ = backchannel::interleaved_channel(text);
        let _ = backchannel::session(text);
        let _ = backchannel::authorization(text, "u", "p", "DESCRIBE", "rtsp://h/", "c");
    }
});
