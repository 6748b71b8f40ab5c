//! The fuzz targets' committed seed corpus (fuzz/seeds/<target>/<name>): valid inputs of
//! every kind each target decodes, signed with the fuzz targets' test root key (ed25519
//! seed [7; 32]) at fixed times, so fuzzing starts past the signature checks and the
//! framing. Generated here; this test fails when a committed seed is missing or is no
//! longer a valid input of its kind (a signed object that verifies, a message that
//! decodes). Regenerate with `CAMESH_WRITE_SEEDS=1 cargo test -p camesh-tests --test fuzz_seeds`.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use camesh_node::auth::cert::{self, CertRequest};
use camesh_node::auth::grant::{self, GrantRequest};
use camesh_node::auth::{fleetlog, revocation, signed, Rights};
use camesh_proto::{pb, LengthCodec};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use prost::Message;

const T: i64 = 1_000_000;

fn root() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).expect("valid seed")
}

fn peer(i: u8) -> PeerId {
    Keypair::ed25519_from_bytes([i; 32])
        .expect("seed")
        .public()
        .to_peer_id()
}

fn framed<M: Message>(msgs: &[M]) -> Vec<u8> {
    let codec = LengthCodec::new(1 << 16);
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode_message(m, &mut buf).expect("fits");
    }
    buf.to_vec()
}

fn range(from: i64, to: i64) -> pb::ReplicaRange {
    pb::ReplicaRange {
        from_unix_us: from,
        to_unix_us: to,
    }
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let root = root();
    let holder = root.public().to_peer_id();
    let c = cert::issue(
        &root,
        "f",
        &CertRequest {
            peer: holder,
            role: pb::MemberRole::Viewer,
            name: "seed".into(),
            valid_s: 3600,
            cameras: vec!["cam1".into()],
        },
        T,
    );
    let g = grant::issue(
        &root,
        "f",
        &GrantRequest {
            holder,
            cameras: vec!["cam1".into()],
            tags: vec!["lobby".into()],
            rights: Rights::LIVE.union(Rights::DELEGATE),
            not_before_unix_s: T - 60,
            not_after_unix_s: T + 3600,
        },
        None,
    );
    let revocation_body = revocation::body("f", &[peer(1)], &[42], "seed", T);
    let e1 = fleetlog::issue(
        &root,
        None,
        "f",
        1,
        None,
        pb::fleet_entry_body::Entry::Revocation(revocation_body.clone()),
        T,
    );
    let entry_body = pb::FleetEntryBody {
        fleet_id: "f".into(),
        seq: 3,
        entry: Some(pb::fleet_entry_body::Entry::Revocation(revocation_body)),
        ..Default::default()
    };
    let mut statefile = Vec::new();
    let e1_bytes = signed::encode(&e1);
    statefile.extend_from_slice(&(e1_bytes.len() as u32).to_be_bytes());
    statefile.extend_from_slice(&e1_bytes);
    let sync = pb::FleetSync {
        summary: Some(pb::FleetSummary::default()),
        entries: vec![e1.clone()],
        unix_ms: T * 1000,
        more: false,
        error: String::new(),
    };
    let request = pb::StreamRequest {
        audio: false,
        camera_id: "cam1".into(),
        mode: Some(pb::stream_request::Mode::Live(pb::Live {})),
        grant: signed::encode(&g),
        ..Default::default()
    };
    let hello = pb::MemberHello {
        cert: Some(c.clone()),
        ..Default::default()
    };
    let key = pb::KeyRequest {
        camera_id: "cam1".into(),
        grant: Some(g.clone()),
        epoch: 1,
        profile: pb::Profile::Main as i32,
    };
    let nvr = pb::NvrRequest {
        camera_id: "cam1".into(),
        from_unix_us: T * 1_000_000,
        to_unix_us: (T + 60) * 1_000_000,
        grant: signed::encode(&g),
        request: Some(pb::nvr_request::Request::Recordings(pb::NvrRecordings {})),
    };
    let clip = std::fs::read(camesh_tests::fixture("cam-640x360-30fps-gop2s.h264")).expect("clip");
    vec![
        ("auth", "cert", signed::encode(&c).to_vec()),
        ("auth", "grant", signed::encode(&g).to_vec()),
        ("auth", "cert-body", c.body.to_vec()),
        ("auth", "grant-body", g.body.to_vec()),
        ("fleetstate", "entry", e1_bytes.to_vec()),
        ("fleetstate", "statefile", statefile),
        ("fleetstate", "sync", sync.encode_to_vec()),
        ("fleetstate", "entry-body", entry_body.encode_to_vec()),
        (
            "framing",
            "request-and-hello",
            framed(&[request]).into_iter().chain(framed(&[hello])).collect(),
        ),
        ("relay", "key-request", key.encode_to_vec()),
        ("nvr", "request", framed(&[nvr])),
        (
            "replicate",
            "offer-and-have",
            framed(&[pb::ReplicaOffer {
                camera_id: "cam1".into(),
                grant: signed::encode(&g),
                recorded: vec![range(T, 3 * T), range(5 * T, 9 * T)],
                locks: vec![pb::NvrLocked {
                    id: 1,
                    from_unix_us: 6 * T,
                    to_unix_us: 7 * T,
                    reason: "incident".into(),
                }],
            }])
            .into_iter()
            .chain(framed(&[pb::ReplicaHave {
                recorded: vec![range(2 * T, 6 * T)],
                attested: vec![range(2 * T, 4 * T)],
                reject: None,
            }]))
            .collect(),
        ),
        ("h264", "clip-start", clip[..clip.len().min(4096)].to_vec()),
        // What a camera answers: ONVIF SOAP, PullPoint notifications, the SDP and RTSP
        // of talkback, a Digest challenge (written by hand from real answers).
        (
            "onvif",
            "pull-messages.xml",
            include_bytes!("../../fuzz/seeds/onvif/pull-messages.xml").to_vec(),
        ),
        (
            "onvif",
            "subscription.xml",
            include_bytes!("../../fuzz/seeds/onvif/subscription.xml").to_vec(),
        ),
        (
            "onvif",
            "capabilities.xml",
            include_bytes!("../../fuzz/seeds/onvif/capabilities.xml").to_vec(),
        ),
        (
            "onvif",
            "describe.sdp",
            include_bytes!("../../fuzz/seeds/onvif/describe.sdp").to_vec(),
        ),
        (
            "onvif",
            "describe-answer.rtsp",
            include_bytes!("../../fuzz/seeds/onvif/describe-answer.rtsp").to_vec(),
        ),
        (
            "onvif",
            "challenge.txt",
            include_bytes!("../../fuzz/seeds/onvif/challenge.txt").to_vec(),
        ),
    ]
}

/// Whether `bytes` is still a valid input of the kind seed `target/name` stands for.
fn valid(target: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
    let root = root();
    let holder = root.public().to_peer_id();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let frames = |bytes: &[u8]| {
        let codec = LengthCodec::new(1 << 16);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(body)) = codec.decode(&mut buf) {
            out.push(body);
        }
        out
    };
    match (target, name) {
        ("auth", "cert") => cert::verify(
            &signed::decode("seed", bytes).map_err(|x| e(&x))?,
            &root.public(),
            "f",
            &holder,
            T,
        )
        .map(|_| ())
        .map_err(|x| e(&x)),
        ("auth", "grant") => grant::verify(
            &signed::decode("seed", bytes).map_err(|x| e(&x))?,
            &root.public(),
            "f",
            &holder,
            T,
        )
        .map(|_| ())
        .map_err(|x| e(&x)),
        ("auth", "cert-body") => {
            let s = signed::sign_raw(signed::Kind::Cert, bytes.to_vec(), &root);
            cert::verify(&s, &root.public(), "f", &holder, T)
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        ("auth", "grant-body") => {
            let s = signed::sign_raw(signed::Kind::Grant, bytes.to_vec(), &root);
            grant::verify(&s, &root.public(), "f", &holder, T)
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        ("fleetstate", "entry") => fleetlog::FleetLog::new("f", root.public())
            .apply(&signed::decode("seed", bytes).map_err(|x| e(&x))?)
            .map(|_| ())
            .map_err(|x| e(&x)),
        ("fleetstate", "statefile") => {
            let entries = camesh_node::auth::statefile::parse(bytes).0;
            let mut log = fleetlog::FleetLog::new("f", root.public());
            match entries.as_slice() {
                [one] => log.apply(one).map(|_| ()).map_err(|x| e(&x)),
                _ => Err(format!("{} entries", entries.len())),
            }
        }
        ("fleetstate", "sync") => pb::FleetSync::decode(bytes).map_err(|x| e(&x)).and_then(|m| {
            if m.entries.len() == 1 {
                Ok(())
            } else {
                Err("no entry".into())
            }
        }),
        ("fleetstate", "entry-body") => pb::FleetEntryBody::decode(bytes).map_err(|x| e(&x)).and_then(|b| {
            if b.entry.is_some() {
                Ok(())
            } else {
                Err("no entry".into())
            }
        }),
        ("framing", _) => match frames(bytes).as_slice() {
            [req, hello] => {
                pb::StreamRequest::decode(req.clone()).map_err(|x| e(&x))?;
                pb::MemberHello::decode(hello.clone()).map(|_| ()).map_err(|x| e(&x))
            }
            f => Err(format!("{} frames", f.len())),
        },
        ("relay", _) => pb::KeyRequest::decode(bytes).map(|_| ()).map_err(|x| e(&x)),
        ("replicate", _) => match frames(bytes).as_slice() {
            [offer, have] => {
                pb::ReplicaOffer::decode(offer.clone()).map_err(|x| e(&x))?;
                pb::ReplicaHave::decode(have.clone()).map(|_| ()).map_err(|x| e(&x))
            }
            f => Err(format!("{} frames", f.len())),
        },
        ("nvr", _) => match frames(bytes).as_slice() {
            [req] => pb::NvrRequest::decode(req.clone()).map(|_| ()).map_err(|x| e(&x)),
            f => Err(format!("{} frames", f.len())),
        },
        ("h264", _) => {
            if bytes.starts_with(&[0, 0, 0, 1]) || bytes.starts_with(&[0, 0, 1]) {
                Ok(())
            } else {
                Err("not Annex B".into())
            }
        }
        ("onvif", name) => {
            use camesh_node::onvif::{events, soap};
            use camesh_node::talk::backchannel;
            let text = std::str::from_utf8(bytes).map_err(|x| e(&x))?;
            let ok = match name {
                "pull-messages.xml" => events::parse_notifications(bytes).is_ok_and(|n| !n.is_empty()),
                "subscription.xml" => events::parse_subscription(bytes).is_ok(),
                "capabilities.xml" => soap::parse_answer(bytes).is_ok_and(|a| a.events_xaddr.is_some()),
                "describe.sdp" => backchannel::find_track(text, "rtsp://127.0.0.1/cam/").is_ok(),
                "describe-answer.rtsp" => text.starts_with("RTSP/1.0 200") && text.contains("a=sendonly"),
                "challenge.txt" => backchannel::authorization(text, "u", "p", "DESCRIBE", "rtsp://h/", "c").is_some(),
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err("does not parse as what it stands for".into())
            }
        }
        _ => Err("unknown seed".into()),
    }
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn the_committed_fuzz_seeds_match_the_current_formats() {
    let write = std::env::var_os("CAMESH_WRITE_SEEDS").is_some();
    let targets: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets"))
        .expect("fuzz targets")
        .flatten()
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let all = seeds();
    for t in &targets {
        assert!(
            all.iter().any(|(target, _, _)| target == t),
            "no seed for fuzz target {t}"
        );
    }
    for (target, name, bytes) in all {
        let path = seed_dir().join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("seed written");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = valid(target, name, &committed) {
            panic!(
                "{} is stale ({e}): regenerate with CAMESH_WRITE_SEEDS=1 cargo test -p camesh-tests --test fuzz_seeds",
                path.display()
            );
        }
    }
}
