//! Golden vectors for the web app's ports of the node's pure code (web/src): a sealed
//! frame and its key, a camera-signed keyframe, fleet proofs, MemberHello messages, an
//! invite and camera events, all made here by the node's own code and written to
//! web/test/vectors.json.
//! The web unit tests (`scripts/web.sh --check`) open, verify and compute the same bytes.
//!
//! The file is checked in; this test fails when it differs from what the node's code
//! makes now, so a change on either side is caught. `CAMESH_BLESS=1` rewrites it.

use camesh_node::auth::invite;
use camesh_node::auth::media_key::MediaKey;
use camesh_node::auth::proof::{self, Side};
use camesh_node::auth::signed::{self, Kind};
use camesh_node::stream::fresh::{signed_bytes, FrameSigner};
use camesh_proto::pb;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::multihash::Multihash;
use libp2p::Multiaddr;
use prost::Message;
use serde_json::{json, Value};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fixed Ed25519 key (vectors must not change from run to run).
fn fixed_key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("32-byte seed")
}

fn header_json(h: &pb::FrameHeader) -> Value {
    // 64-bit numbers as decimal strings: JSON numbers lose precision past 2^53.
    json!({
        "sequence": h.sequence.to_string(),
        "pts_90k": h.pts_90k.to_string(),
        "dts_90k": h.dts_90k.to_string(),
        "capture_unix_us": h.capture_unix_us.to_string(),
        "keyframe": h.keyframe,
        "key_epoch": h.key_epoch.to_string(),
        "skipped_before": h.skipped_before,
        "camera_signature_hex": hex(&h.camera_signature),
    })
}

/// A sealed frame: key, header (and its protobuf), plaintext, sealed payload.
fn frame(name: &str, key: &MediaKey, h: &pb::FrameHeader, plaintext: &[u8]) -> Value {
    let sealed = key.seal(h, plaintext);
    assert_eq!(key.open(h, &sealed).expect("opens"), plaintext);
    json!({
        "name": name,
        "key_hex": hex(key.bytes()),
        "epoch": key.epoch.to_string(),
        "header": header_json(h),
        "header_pb_hex": hex(&h.encode_to_vec()),
        "plaintext_hex": hex(plaintext),
        "sealed_hex": hex(&sealed),
    })
}

fn frames() -> (Value, Value) {
    let key = MediaKey::from_bytes(3, &(0..32).map(|i| i * 7 + 1).collect::<Vec<u8>>()).expect("key");
    let kf = pb::FrameHeader {
        sequence: 1_234_567,
        pts_90k: 90_000 * 3_600,
        dts_90k: 90_000 * 3_600 - 3_000,
        capture_unix_us: 1_765_000_000_123_456,
        keyframe: true,
        key_epoch: 3,
        skipped_before: 2,
        ..Default::default()
    };
    // Past 2^63 and a negative capture time: every 64-bit field's encoding matters.
    let odd = pb::FrameHeader {
        sequence: u64::MAX - 5,
        pts_90k: 1 << 63,
        dts_90k: (1 << 53) + 1,
        capture_unix_us: -1_000_001,
        keyframe: false,
        key_epoch: 3,
        ..Default::default()
    };
    let nal: Vec<u8> = [0, 0, 0, 1, 0x65]
        .into_iter()
        .chain((0..300u32).map(|i| (i * 31 % 251) as u8))
        .collect();
    let f1 = frame("keyframe", &key, &kf, &nal);
    let f2 = frame("64-bit edges", &key, &odd, b"delta");
    let f3 = frame(
        "empty payload",
        &key,
        &pb::FrameHeader {
            key_epoch: 3,
            ..Default::default()
        },
        b"",
    );

    // The keyframe again, signed by its camera's node.
    let signer = fixed_key(0x42);
    let camera = "depot-7/cam-2";
    let sealed = key.seal(&kf, &nal);
    let mut signed_h = kf.clone();
    signed_h.camera_signature = FrameSigner::new(signer.clone()).sign(camera, &kf, &sealed).into();
    let ed = signer.public().try_into_ed25519().expect("ed25519");
    let keyframe = json!({
        "camera": camera,
        "signer_peer_id": signer.public().to_peer_id().to_base58(),
        "signer_public_hex": hex(&ed.to_bytes()),
        "header": header_json(&signed_h),
        "header_pb_hex": hex(&signed_h.encode_to_vec()),
        "sealed_hex": hex(&sealed),
        "signed_bytes_hex": hex(&signed_bytes(camera, &kf, &sealed)),
    });
    (json!([f1, f2, f3]), keyframe)
}

fn proofs() -> Value {
    let root = fixed_key(0x01).public();
    let dialer = fixed_key(0x02).public().to_peer_id();
    let listener = fixed_key(0x03).public().to_peer_id();
    let d = proof::prove(&root, Side::Dialer, &dialer, &listener);
    let l = proof::prove(&root, Side::Listener, &listener, &dialer);
    assert!(proof::check(&root, Side::Dialer, &dialer, &listener, &d));
    json!({
        "root_protobuf_hex": hex(&root.encode_protobuf()),
        "dialer_peer_id": dialer.to_base58(),
        "dialer_peer_hex": hex(&dialer.to_bytes()),
        "listener_peer_id": listener.to_base58(),
        "listener_peer_hex": hex(&listener.to_bytes()),
        "dialer_proof_hex": hex(&d),
        "listener_proof_hex": hex(&l),
    })
}

fn member_hellos() -> Value {
    let root = fixed_key(0x01);
    let dialer = fixed_key(0x02).public().to_peer_id();
    let listener = fixed_key(0x03).public().to_peer_id();
    let proof_hello = pb::MemberHello {
        proof: proof::prove(&root.public(), Side::Dialer, &dialer, &listener)
            .to_vec()
            .into(),
        ..Default::default()
    };
    let cert = signed::sign(
        Kind::Cert,
        &pb::MembershipCert {
            fleet_id: "depot".into(),
            peer_id: dialer.to_bytes().into(),
            role: pb::MemberRole::Viewer as i32,
            name: "dispatch browser".into(),
            not_before_unix_s: 1_765_000_000,
            not_after_unix_s: 1_765_086_400,
            serial: 9,
            ..Default::default()
        },
        &root,
    );
    let cert_hello = pb::MemberHello {
        cert: Some(cert.clone()),
        ..Default::default()
    };
    let error_hello = pb::MemberHello {
        error: "certificate expired".into(),
        ..Default::default()
    };
    let mut framed = bytes::BytesMut::new();
    camesh_proto::framing::LengthCodec::new(1 << 15)
        .encode_message(&proof_hello, &mut framed)
        .expect("small message");
    json!({
        "root_protobuf_hex": hex(&root.public().encode_protobuf()),
        "dialer_peer_hex": hex(&dialer.to_bytes()),
        "listener_peer_hex": hex(&listener.to_bytes()),
        "proof_hello_hex": hex(&proof_hello.encode_to_vec()),
        "proof_hello_framed_hex": hex(&framed),
        "cert_signed_hex": hex(&signed::encode(&cert)),
        "cert_hello_hex": hex(&cert_hello.encode_to_vec()),
        "error_hello_hex": hex(&error_hello.encode_to_vec()),
    })
}

/// Membership certificates an admin signed (its own certificate, signed by the root,
/// embedded): one the node accepts, and two it refuses (a validity beyond the admin's;
/// an admin that may not admit). Fixed serials and times, so the bytes are stable.
fn admin_certs() -> Value {
    use camesh_node::auth::cert;
    use camesh_node::auth::Rights;
    let root = fixed_key(0x01);
    let admin = fixed_key(0x05);
    let page = fixed_key(0x02).public().to_peer_id();
    let now = 1_765_010_000i64;
    let admin_cert = |may_admit: bool| {
        signed::sign(
            Kind::Admin,
            &pb::AdminCertBody {
                fleet_id: "depot".into(),
                admin: admin.public().to_peer_id().to_bytes().into(),
                name: "depot-laptop".into(),
                cameras: vec!["*".into()],
                tags: vec![],
                rights: Rights::ALL.0,
                may_revoke: true,
                may_admit,
                not_before_unix_s: 1_765_000_000,
                not_after_unix_s: 1_765_500_000,
                serial: 3,
            },
            &root,
        )
    };
    let member = |ac: pb::Signed, not_after: i64| {
        signed::sign(
            Kind::Cert,
            &pb::MembershipCert {
                fleet_id: "depot".into(),
                peer_id: page.to_bytes().into(),
                role: pb::MemberRole::Viewer as i32,
                name: "dispatch browser".into(),
                not_before_unix_s: 1_765_000_000,
                not_after_unix_s: not_after,
                serial: 10,
                cameras: vec![],
                admin: Some(ac),
            },
            &admin,
        )
    };
    let ok = member(admin_cert(true), 1_765_086_400);
    let too_long = member(admin_cert(true), 1_765_600_000);
    let may_not_admit = member(admin_cert(false), 1_765_086_400);
    let verify = |c: &pb::Signed| cert::verify(c, &root.public(), "depot", &page, now);
    assert!(verify(&ok).is_ok());
    assert!(verify(&too_long).is_err());
    assert!(verify(&may_not_admit).is_err());
    json!({
        "root_protobuf_hex": hex(&root.public().encode_protobuf()),
        "page_peer_hex": hex(&page.to_bytes()),
        "admin_peer_id": admin.public().to_peer_id().to_base58(),
        "now_unix_s": now.to_string(),
        "ok_hex": hex(&signed::encode(&ok)),
        "too_long_hex": hex(&signed::encode(&too_long)),
        "may_not_admit_hex": hex(&signed::encode(&may_not_admit)),
    })
}

/// Grants as the node makes them (root-signed, admin-signed within or outside its scope,
/// delegated within or beyond the parent), each with the node's own `grant::verify`
/// verdict for the page, so the page's port decides the same.
fn grants() -> Value {
    use camesh_node::auth::{grant, Rights};
    let root = fixed_key(0x01);
    let admin = fixed_key(0x05);
    let page = fixed_key(0x02).public().to_peer_id();
    let other = fixed_key(0x03).public().to_peer_id();
    let now = 1_765_010_000i64;
    let body = |holder: libp2p::PeerId, cameras: &[&str], rights: Rights, serial: u64| pb::GrantBody {
        fleet_id: "depot".into(),
        holder: holder.to_bytes().into(),
        cameras: cameras.iter().map(|c| c.to_string()).collect(),
        tags: vec![],
        rights: rights.0,
        not_before_unix_s: 1_765_000_000,
        not_after_unix_s: 1_765_086_400,
        serial,
        parent: None,
        admin: None,
    };
    let admin_cert = signed::sign(
        Kind::Admin,
        &pb::AdminCertBody {
            fleet_id: "depot".into(),
            admin: admin.public().to_peer_id().to_bytes().into(),
            name: "depot-laptop".into(),
            cameras: vec!["cam1".into(), "cam2".into()],
            tags: vec![],
            rights: Rights::LIVE.union(Rights::PLAYBACK).0,
            may_revoke: false,
            may_admit: false,
            not_before_unix_s: 1_765_000_000,
            not_after_unix_s: 1_765_500_000,
            serial: 3,
        },
        &root,
    );
    let by_admin = |cameras: &[&str], serial: u64| {
        let mut b = body(page, cameras, Rights::LIVE, serial);
        b.admin = Some(admin_cert.clone());
        signed::sign(Kind::Grant, &b, &admin)
    };
    let delegated = |parent_rights: Rights, rights: Rights, serial: u64| {
        let parent = signed::sign(
            Kind::Grant,
            &body(admin.public().to_peer_id(), &["*"], parent_rights, serial),
            &root,
        );
        let mut b = body(page, &["cam1"], rights, serial + 1);
        b.parent = Some(parent);
        signed::sign(Kind::Grant, &b, &admin)
    };
    let cases = [
        (
            "root",
            signed::sign(Kind::Grant, &body(page, &["cam1"], Rights::LIVE, 20), &root),
        ),
        (
            "other_holder",
            signed::sign(Kind::Grant, &body(other, &["cam1"], Rights::LIVE, 21), &root),
        ),
        ("admin", by_admin(&["cam1"], 22)),
        ("admin_outside", by_admin(&["cam9"], 23)),
        (
            "delegated",
            delegated(Rights::LIVE.union(Rights::DELEGATE), Rights::LIVE, 24),
        ),
        (
            "delegated_wider",
            delegated(Rights::LIVE.union(Rights::DELEGATE), Rights::PLAYBACK, 26),
        ),
        ("delegated_no_right", delegated(Rights::LIVE, Rights::LIVE, 28)),
    ];
    let mut out = serde_json::Map::new();
    for (name, g) in cases {
        let verdict = grant::verify(&g, &root.public(), "depot", &page, now);
        out.insert(
            name.into(),
            json!({
                "hex": hex(&signed::encode(&g)),
                "ok": verdict.is_ok(),
                "error": verdict.err().map(|e| e.to_string()),
            }),
        );
    }
    json!({
        "root_protobuf_hex": hex(&root.public().encode_protobuf()),
        "page_peer_hex": hex(&page.to_bytes()),
        "now_unix_s": now.to_string(),
        "cases": out,
    })
}

/// Camera events (`/camesh/events/1`) as the camera's node signs them
/// (`events::sign`), the camera's membership certificate, the items and the request on
/// the wire, and cases the page must decide as the node's events client does: the event
/// opens (`events::open`: signature of kind "event", a sane body), is of the tile's
/// camera, its signer is the peer the page talks to, and that peer's certificate
/// (checked for it) names the camera. Each case carries the node's verdict.
fn events() -> Value {
    use camesh_node::auth::cert;
    use camesh_node::events;
    let root = fixed_key(0x01);
    let camera = fixed_key(0x06);
    let stranger = fixed_key(0x07);
    let now = 1_765_010_000i64;
    // `cert::issue` draws a random serial; vectors must not change from run to run, so
    // the certificate is the same body with a fixed one.
    let cert_of = |peer: libp2p::PeerId, cameras: &[&str], serial: u64| {
        signed::sign(
            Kind::Cert,
            &pb::MembershipCert {
                fleet_id: "depot".into(),
                peer_id: peer.to_bytes().into(),
                role: pb::MemberRole::Camera as i32,
                name: "gate camera".into(),
                not_before_unix_s: 1_765_000_000,
                not_after_unix_s: 1_765_086_400,
                serial,
                cameras: cameras.iter().map(|c| c.to_string()).collect(),
                admin: None,
            },
            &root,
        )
    };
    let cam_peer = camera.public().to_peer_id();
    let stranger_peer = stranger.public().to_peer_id();
    let cert_cam1 = cert_of(cam_peer, &["cam1"], 30);
    let cert_cam2 = cert_of(cam_peer, &["cam2"], 31);
    let cert_stranger = cert_of(stranger_peer, &["cam9"], 32);
    let motion = pb::CameraEvent {
        camera_id: "cam1".into(),
        sequence: 5,
        run: 77,
        unix_us: 1_765_010_000_250_000,
        pts_90k: 90_000 * 12,
        kind: events::MOTION.into(),
        state: pb::EventState::Start as i32,
        area: 0.25,
        detail: String::new(),
    };
    let onvif = pb::CameraEvent {
        sequence: 6,
        unix_us: 1_765_010_003_000_000,
        pts_90k: 0,
        kind: "onvif/tns1:RuleEngine/CellMotionDetector/Motion".into(),
        state: pb::EventState::End as i32,
        area: 0.0,
        detail: "IsMotion=false".into(),
        ..motion.clone()
    };
    let ok = events::sign(&motion, &camera);
    let mut tampered = ok.clone();
    let mut body = tampered.body.to_vec();
    body[1] ^= 1;
    tampered.body = body.into();
    let area = pb::CameraEvent {
        area: 1.5,
        ..motion.clone()
    };
    let cam2 = pb::CameraEvent {
        camera_id: "cam2".into(),
        ..motion.clone()
    };
    // (name, signed event, certificate of the peer the page talks to, that peer)
    let cases = [
        ("motion_start", ok.clone(), &cert_cam1, cam_peer),
        ("onvif_end", events::sign(&onvif, &camera), &cert_cam1, cam_peer),
        ("tampered_body", tampered, &cert_cam1, cam_peer),
        (
            "grant_signature",
            signed::sign(Kind::Grant, &motion, &camera),
            &cert_cam1,
            cam_peer,
        ),
        (
            "signer_not_the_peer",
            events::sign(&motion, &stranger),
            &cert_cam1,
            cam_peer,
        ),
        (
            "peer_not_the_certificates",
            events::sign(&motion, &stranger),
            &cert_cam1,
            stranger_peer,
        ),
        ("certificate_of_another_camera", ok.clone(), &cert_cam2, cam_peer),
        (
            "stranger_certificate_without_camera",
            events::sign(&motion, &stranger),
            &cert_stranger,
            stranger_peer,
        ),
        (
            "event_of_another_camera",
            events::sign(&cam2, &camera),
            &cert_cam1,
            cam_peer,
        ),
        ("area_out_of_range", events::sign(&area, &camera), &cert_cam1, cam_peer),
    ];
    // What the node's events client decides for a stream from `from` (client.rs
    // `Events::check`, the direct case: the answering camera node itself).
    let decide = |s: &pb::Signed, c: &pb::Signed, from: &libp2p::PeerId| -> Result<pb::CameraEvent, String> {
        let (signer, e) = events::open(s).map_err(|e| e.to_string())?;
        if e.camera_id != "cam1" {
            return Err(format!("an event of camera {:?}", e.camera_id));
        }
        if &signer != from {
            return Err(format!("signer {signer} is not {from}"));
        }
        let info = cert::verify(c, &root.public(), "depot", from, now).map_err(|e| e.to_string())?;
        if !info.may_serve("cam1") {
            return Err("the certificate does not name this camera".into());
        }
        Ok(e)
    };
    let mut out = serde_json::Map::new();
    for (name, s, c, from) in cases {
        let verdict = decide(&s, c, &from);
        out.insert(
            name.into(),
            json!({
                "signed_hex": hex(&signed::encode(&s)),
                "cert_hex": hex(&signed::encode(c)),
                "from_peer_hex": hex(&from.to_bytes()),
                "ok": verdict.is_ok(),
                "error": verdict.as_ref().err(),
                "kind": verdict.as_ref().ok().map(|e| e.kind.clone()),
                "state": verdict.as_ref().ok().map(|e| events::state_word(e.state)),
                "unix_us": verdict.as_ref().ok().map(|e| e.unix_us.to_string()),
            }),
        );
    }
    let item = |i: pb::event_item::Item| hex(&pb::EventItem { item: Some(i) }.encode_to_vec());
    let grant = signed::sign(
        Kind::Grant,
        &pb::GrantBody {
            fleet_id: "depot".into(),
            holder: fixed_key(0x02).public().to_peer_id().to_bytes().into(),
            cameras: vec!["cam1".into()],
            rights: camesh_node::auth::Rights::LIVE.0,
            not_before_unix_s: 1_765_000_000,
            not_after_unix_s: 1_765_086_400,
            serial: 40,
            ..Default::default()
        },
        &root,
    );
    let request = pb::EventsRequest {
        camera_id: "cam1".into(),
        grant: signed::encode(&grant),
        from_unix_us: 1_765_009_940_000_000,
        to_unix_us: 0,
        follow: true,
        kinds: vec![],
        max_events: 0,
        user_agent: "camesh-web/0.1".into(),
    };
    json!({
        "root_protobuf_hex": hex(&root.public().encode_protobuf()),
        "now_unix_s": now.to_string(),
        "camera": "cam1",
        "camera_peer_id": cam_peer.to_base58(),
        "motion_body_hex": hex(&motion.encode_to_vec()),
        "onvif_body_hex": hex(&onvif.encode_to_vec()),
        "request_hex": hex(&request.encode_to_vec()),
        "grant_hex": hex(&signed::encode(&grant)),
        "items": {
            "camera_cert": item(pb::event_item::Item::CameraCert(cert_cam1.clone())),
            "event": item(pb::event_item::Item::Event(ok)),
            "done": item(pb::event_item::Item::Done(pb::EventsDone { sent: 3, more: true })),
            "refused": item(pb::event_item::Item::Refused("this node has no events of camera \"cam1\"".into())),
        },
        "cases": out,
    })
}

fn invite_vector() -> Value {
    // What `invite::issue` makes, with a fixed token so the text is stable.
    let root = fixed_key(0x01);
    let admin = fixed_key(0x04).public().to_peer_id();
    let holder = fixed_key(0x02).public().to_peer_id();
    let certhash = Multihash::<64>::wrap(0x12, &[0xab; 32]).expect("sha2-256 digest");
    let webrtc: Multiaddr = Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Udp(4002))
        .with(Protocol::WebRTCDirect)
        .with(Protocol::Certhash(certhash));
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("addr");
    let body = pb::InviteBody {
        fleet_id: "depot".into(),
        token: vec![0x5a; 16].into(),
        role: pb::MemberRole::Viewer as i32,
        name: "dispatch browser".into(),
        expires_unix_s: 4_000_000_000,
        admin_peer: admin.to_bytes().into(),
        admin_addrs: vec![quic.to_vec().into(), webrtc.to_vec().into()],
        cameras: vec!["cam-1".into(), "cam-2".into()],
        cert_valid_s: 86_400,
        holder: holder.to_bytes().into(),
    };
    let s = signed::sign(Kind::Invite, &body, &root);
    let text = format!("{}{}", invite::PREFIX, invite::bs58_encode(&signed::encode(&s)));
    let (info, _) = invite::parse(&text, 1_765_000_000).expect("the node reads it");
    assert_eq!(info.holder, Some(holder));
    assert!(invite::parse(&text, 4_000_000_001).is_err(), "expired");
    json!({
        "text": text,
        "fleet_id": info.fleet_id,
        "token_hex": hex(&info.token),
        "role": "MEMBER_ROLE_VIEWER",
        "name": info.name,
        "expires_unix_s": info.expires_unix_s.to_string(),
        "admin_peer_id": info.admin_peer.to_base58(),
        "admin_addrs": info.admin_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "cameras": info.cameras,
        "cert_valid_s": info.cert_valid_s.to_string(),
        "holder_peer_id": holder.to_base58(),
        "root_protobuf_hex": hex(&root.public().encode_protobuf()),
    })
}

fn vectors() -> String {
    let (frames, keyframe) = frames();
    let v = json!({
        "about": "Made by tests/tests/web_vectors.rs from the node's code; checked by web/test. Do not edit: CAMESH_BLESS=1 cargo test -p camesh-tests --test web_vectors rewrites it.",
        "frames": frames,
        "keyframe": keyframe,
        "proof": proofs(),
        "member_hello": member_hellos(),
        "admin_certs": admin_certs(),
        "grants": grants(),
        "events": events(),
        "invite": invite_vector(),
    });
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

#[test]
fn web_vectors_match_the_node() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/test/vectors.json");
    let want = vectors();
    assert_eq!(want, vectors(), "vectors are deterministic");
    if std::env::var_os("CAMESH_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write vectors");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} differs from what the node's code makes now: if the change is intended, rewrite it with \
         CAMESH_BLESS=1 cargo test -p camesh-tests --test web_vectors, and make the web tests pass",
        path.display()
    );
}
