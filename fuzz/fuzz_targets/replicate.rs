//! What a shore NVR decodes from a replicating peer on `/camesh/replicate/1` (offers,
//! items: chunks, keys, frames, gaps, attestation batches) and what the sender decodes
//! from the shore (what it holds, acks); the peer's ranges then drive the pure plan.
#![no_main]

use bytes::BytesMut;
use camesh_node::config::ReplicateOrder;
use camesh_node::nvr::replicate::{self, plan};
use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = LengthCodec::new(1 << 18);
    let mut buf = BytesMut::from(data);
    let mut n = 0;
    let mut ranges = Vec::new();
    while let Ok(Some(body)) = codec.decode(&mut buf) {
        n += 1;
        if n > 64 {
            break;
        }
        if let Ok(o) = decode_message::<pb::ReplicaOffer>("x", body.clone()) {
            ranges.extend(replicate::from_ranges(&o.recorded));
        }
        if let Ok(h) = decode_message::<pb::ReplicaHave>("x", body.clone()) {
            let have = replicate::from_ranges(&h.recorded);
            let missing = plan::subtract(&ranges, &have);
            let _ = plan::next_chunk(&missing, &have, &ranges, ReplicateOrder::Newest, 10_000_000);
            let _ = plan::next_chunk(&missing, &[], &[], ReplicateOrder::Oldest, 1);
            if let Some(s) = missing.first() {
                // Both ways: a chunk that continues the last one, and one after a hole.
                let _ = plan::arriving(s.from, Some(s.to), &have, true);
                let _ = plan::arriving(s.from, Some(s.to), &have, false);
            }
        }
        let _ = decode_message::<pb::ReplicaAck>("x", body.clone());
        if let Ok(pb::ReplicaItem {
            item: Some(pb::replica_item::Item::Attest(b)),
        }) = decode_message::<pb::ReplicaItem>("x", body)
        {
            let _ = camesh_node::attest::verify::read_items(&b);
        }
    }
});
