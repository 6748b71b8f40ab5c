//! What a hostile peer sends around forwarding: key requests to a camera
//! (`/camesh/key/1`), key responses to a viewer, and accepts naming an origin peer.
#![no_main]

use std::sync::{Arc, OnceLock};

use camesh_node::auth::media_key::MediaKey;
use camesh_node::auth::Trust;
use camesh_node::media::CodecParams;
use camesh_node::reach;
use camesh_node::stream::keys;
use camesh_node::stream::hub::{Hub, Hubs};
use camesh_proto::framing::decode_message;
use camesh_proto::pb;
use libfuzzer_sys::fuzz_target;
use libp2p::identity::Keypair;
use libp2p::PeerId;

struct World {
    hubs: Hubs,
    trust: Trust,
    peer: PeerId,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let root = Keypair::ed25519_from_bytes([7u8; 32]).expect("valid seed");
        let me = PeerId::random();
        let hubs = Hubs::default();
        let hub = Arc::new(Hub::new("cam1", "Cam 1", vec!["lobby".into()], 1 << 16));
        hub.set_params(CodecParams::default());
        hubs.insert(hub);
        World {
            hubs,
            trust: Trust::ephemeral("f", root.public(), me),
            peer: PeerId::random(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let body = bytes::Bytes::copy_from_slice(data);
    if let Ok(req) = decode_message::<pb::KeyRequest>("key request", body.clone()) {
        // Without a valid grant chain from the root this must always be refused.
        assert!(keys::answer(&w.hubs, &w.trust, &w.peer, &req).is_err());
    }
    if let Ok(resp) = decode_message::<pb::KeyResponse>("key response", body.clone()) {
        let _ = MediaKey::from_bytes(resp.epoch, &resp.key);
    }
    if let Ok(accept) = decode_message::<pb::StreamAccept>("stream accept", body) {
        let _ = reach::origin_of(&accept, w.peer);
    }
});
