//! Which cipher suite two camesh nodes' QUIC connections negotiate.
//!
//! libp2p-quic builds its TLS configs with libp2p-tls, which upstream offers
//! ChaCha20-Poly1305 first; camesh patches it (vendor/libp2p-tls) to offer AES-GCM first,
//! because AES-GCM with AES-NI costs a third of the CPU per video byte. This runs the
//! TLS 1.3 handshake of those exact configs in memory and checks the outcome, so a
//! dependency update that drops the patch fails here instead of silently costing CPU.

use libp2p::identity::Keypair;
use rustls::{CipherSuite, ClientConnection, ServerConnection};
use std::sync::Arc;

fn handshake() -> CipherSuite {
    let client_key = Keypair::generate_ed25519();
    let server_key = Keypair::generate_ed25519();
    let client_cfg =
        libp2p::tls::make_client_config(&client_key, Some(server_key.public().to_peer_id())).expect("client config");
    let server_cfg = libp2p::tls::make_server_config(&server_key).expect("server config");
    let name = "l".try_into().expect("server name");
    let mut client = ClientConnection::new(Arc::new(client_cfg), name).expect("client");
    let mut server = ServerConnection::new(Arc::new(server_cfg)).expect("server");
    // A TLS 1.3 handshake with client certificates takes a handful of flights; 20 bounds it.
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client writes");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server reads");
        }
        server.process_new_packets().expect("server accepts the handshake");
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server writes");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client reads");
        }
        client.process_new_packets().expect("client accepts the handshake");
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(
        !client.is_handshaking() && !server.is_handshaking(),
        "handshake did not finish"
    );
    let c = client.negotiated_cipher_suite().expect("client suite").suite();
    let s = server.negotiated_cipher_suite().expect("server suite").suite();
    assert_eq!(c, s);
    c
}

#[test]
fn camesh_nodes_negotiate_aes_gcm() {
    let suite = handshake();
    assert!(
        matches!(
            suite,
            CipherSuite::TLS13_AES_128_GCM_SHA256 | CipherSuite::TLS13_AES_256_GCM_SHA384
        ),
        "negotiated {suite:?}; the vendor/libp2p-tls patch (AES-GCM first) is not in effect"
    );
}
