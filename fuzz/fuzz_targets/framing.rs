//! Everything a peer can send on a camesh stream: the length-delimited framing, media
//! frames, and every protobuf message a node decodes from the network.
#![no_main]

use bytes::BytesMut;
use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec, MediaFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = LengthCodec::new(1 << 16);
    let mut buf = BytesMut::from(data);
    let mut n = 0;
    while let Ok(Some(body)) = codec.decode(&mut buf) {
        n += 1;
        if n > 64 {
            break;
        }
        let _ = MediaFrame::decode(body.clone());
        let _ = decode_message::<pb::StreamRequest>("x", body.clone());
        let _ = decode_message::<pb::StreamResponse>("x", body.clone());
        let _ = decode_message::<pb::ControlRequest>("x", body.clone());
        let _ = decode_message::<pb::ControlResponse>("x", body.clone());
        let _ = decode_message::<pb::CameraAnnouncement>("x", body.clone());
        let _ = decode_message::<pb::MemberHello>("x", body.clone());
        let _ = decode_message::<pb::AdminRequest>("x", body.clone());
        let _ = decode_message::<pb::PtzRequest>("x", body.clone());
        let _ = decode_message::<pb::PtzResponse>("x", body.clone());
        let _ = decode_message::<pb::EventsRequest>("x", body.clone());
        let _ = decode_message::<pb::EventItem>("x", body.clone());
        let _ = decode_message::<pb::TalkRequest>("x", body.clone());
        let _ = decode_message::<pb::TalkAccept>("x", body.clone());
        let _ = decode_message::<pb::TalkFrame>("x", body.clone());
        let _ = decode_message::<pb::TalkDone>("x", body.clone());
        // An NVR's event file: length-prefixed items up to a torn tail.
        let _ = camesh_node::nvr::events::read_items(&body);
    }
});
