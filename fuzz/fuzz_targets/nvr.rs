//! What an NVR, its clients and camera nodes decode from a peer: `/camesh/nvr/1`
//! requests, answers and export items; `/camesh/attest/1` requests and items (signed GOP
//! digests); export attestation files and manifests (JSON) with their signer
//! certificate; stored media keys.
#![no_main]

use bytes::BytesMut;
use camesh_node::attest;
use camesh_node::nvr::keystore::KeyStore;
use camesh_node::record::manifest::{self, Manifest};
use camesh_proto::framing::decode_message;
use camesh_proto::{pb, LengthCodec};
use libfuzzer_sys::fuzz_target;
use libp2p::identity::Keypair;

fuzz_target!(|data: &[u8]| {
    let codec = LengthCodec::new(1 << 18);
    let mut buf = BytesMut::from(data);
    let mut n = 0;
    while let Ok(Some(body)) = codec.decode(&mut buf) {
        n += 1;
        if n > 64 {
            break;
        }
        let _ = decode_message::<pb::NvrRequest>("x", body.clone());
        let _ = decode_message::<pb::NvrResponse>("x", body.clone());
        let _ = decode_message::<pb::NvrExportItem>("x", body.clone());
        let _ = decode_message::<pb::AttestRequest>("x", body.clone());
        if let Ok(pb::AttestItem {
            item: Some(pb::attest_item::Item::Gop(s)),
        }) = decode_message::<pb::AttestItem>("x", body)
        {
            let _ = attest::open(&s);
        }
    }
    if let Ok(m) = Manifest::from_json(data) {
        let root = Keypair::ed25519_from_bytes([7u8; 32]).expect("valid seed").public();
        let _ = manifest::verify_signer_cert(&m, &root, "f");
        let _ = manifest::verify(&m, &[], None, None);
    }
    if attest::verify::read_items(data).is_ok() {
        let _ = attest::verify::verify_export(data, "cam1", &[], None, 0);
    }
    let store = KeyStore::from_bytes(&[9u8; 32]);
    let _ = store.unwrap("cam1", 1, data);
});
