//! Grants reaching their holders and the root key kept out of day-to-day use, as a user
//! meets them: `mesh grant --send` to a running viewer that then watches, `mesh
//! grant-install` in a camera's data folder that has only its config.toml, a sealed
//! fleet.key (passphrase from CAMESH_FLEET_PASSPHRASE; a wrong one and a file open to
//! others refused in one line), and `mesh cameras` / `mesh watch` in an admin's folder
//! whose fleet.key cannot be opened at all (a FIFO: opening it would hang).
//!
//! Waits are bounded; nothing here asserts on wall time.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{invite::bs58_encode, keyfile, now_s, signed, Rights};
use camesh_node::config::Role;
use camesh_node::grants::PushError;
use camesh_node::{Node, PeerId};
use camesh_proto::pb::MemberRole;
use camesh_tests::cli::run_mesh;
use camesh_tests::*;

const CLIP: &str = "cam-640x360-30fps-gop2s.h264";
const T: Duration = Duration::from_secs(30);

fn grant_text(fleet_name: &str, holder: PeerId, camera: &str) -> String {
    let g = fleet(fleet_name).grant(&GrantRequest {
        holder,
        cameras: vec![camera.into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now_s() - 60,
        not_after_unix_s: now_s() + 3600,
    });
    format!("camesh-grant:{}", bs58_encode(&signed::encode(&g)))
}

/// `mesh --data-dir <dir> <args>` with nothing from the environment (no fleet flags, no
/// passphrase unless given), stdin closed (no terminal to ask on).
fn mesh(dir: &Path, passphrase: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("mesh"));
    for v in [
        "CAMESH_FLEET",
        "CAMESH_FLEET_ROOT",
        "CAMESH_FLEET_PASSPHRASE",
        "CAMESH_BOOTSTRAP",
    ] {
        cmd.env_remove(v);
    }
    if let Some(p) = passphrase {
        cmd.env("CAMESH_FLEET_PASSPHRASE", p);
    }
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mesh runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An admin's data folder for test fleet `fleet_name`: the root key (fleet.key,
/// fleet.toml), an admin certificate and a membership certificate.
fn admin_folder(dir: &Path, fleet_name: &str) {
    let f = fleet(fleet_name);
    f.save(dir).expect("root key saved");
    // Longer than any grant the tests ask for (`--until 1h`).
    f.admin_dir(dir, "admin", 7200).expect("admin certificate");
    f.enroll_dir(dir, MemberRole::Admin, "admin", &[], 3600)
        .expect("enrolled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_sent_over_the_mesh_lets_a_running_viewer_watch() {
    init_tracing();
    const FLEET: &str = "t-grant-send";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), FLEET, vec![camera("cam1", CLIP)], vec![]).await;
    let cam_addrs = cam.dial_addrs().await.expect("addrs");
    // A viewer that is a member but holds no grant.
    let vdir = dir.path().join("viewer");
    fleet(FLEET)
        .enroll_dir(&vdir, MemberRole::Viewer, "viewer", &[], 3600)
        .expect("enrolled");
    let mut c = loopback_config(Role::Viewer, FLEET);
    c.node.bootstrap = cam_addrs.clone();
    let viewer = Node::spawn(c, &vdir).await.expect("viewer");
    viewer.connect(cam_addrs[0].clone()).await.expect("viewer connects");
    assert!(viewer.trust().grant_for("cam1", Rights::LIVE).is_none());
    let refused = viewer.subscribe_camera("cam1", Some(cam.peer_id()), live("cam1")).await;
    assert!(refused.is_err(), "no grant, no video");

    // `mesh grant --send` from the admin's folder, dialing the viewer.
    let admin = dir.path().join("admin");
    admin_folder(&admin, FLEET);
    let vpeer = viewer.peer_id().to_string();
    let vaddr = viewer.dial_addrs().await.expect("addrs").remove(0);
    let args = [
        "grant",
        &vpeer,
        "--cameras",
        "cam1",
        "--rights",
        "live",
        "--until",
        "1h",
        "--send",
    ];
    let out = run_mesh(&admin, FLEET, std::slice::from_ref(&vaddr), &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mesh grant --send: {}", stderr(&out));
    assert!(stdout.contains(&format!("delivered to {vpeer}")), "{stdout}");

    // The viewer holds it (and stored it), and watches with it.
    let g = viewer.trust().grant_for("cam1", Rights::LIVE).expect("installed");
    let stored = std::fs::read_dir(vdir.join("grants")).expect("grants folder").count();
    assert_eq!(stored, 1, "kept for the next start");
    let req = viewer.reach().with_grant("cam1", Rights::LIVE, live("cam1"));
    assert_eq!(req.grant, signed::encode(&g));
    let mut sub = viewer
        .subscribe_camera("cam1", Some(cam.peer_id()), req)
        .await
        .expect("watches with the grant it was sent");
    let f = next_frame(&mut sub, T).await;
    assert!(!f.payload.is_empty());

    // A grant for someone else is refused by the receiver, with its reason.
    let other = fleet(FLEET).grant(&GrantRequest {
        holder: PeerId::random(),
        cameras: vec!["cam1".into()],
        tags: vec![],
        rights: Rights::LIVE,
        not_before_unix_s: now_s() - 60,
        not_after_unix_s: now_s() + 3600,
    });
    match cam.send_grant(viewer.peer_id(), &other).await {
        Err(PushError::Refused { reason, .. }) => assert!(reason.contains("belongs to"), "{reason}"),
        other => panic!("a grant for another peer was not refused: {other:?}"),
    }
    viewer.shutdown();
    cam.shutdown();
}

#[test]
fn grant_install_works_in_a_camera_folder_with_only_its_config() {
    const FLEET: &str = "t-grant-install";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = dir.path().join("cam");
    // What `camesh-node init --role camera` and `mesh fleet admit` leave: config.toml,
    // identity.key, membership.cert; no fleet.toml.
    let peer = fleet(FLEET)
        .enroll_dir(&cam, MemberRole::Camera, "cam", &["cam1".into()], 3600)
        .expect("enrolled");
    let mut c = loopback_config(Role::Camera, FLEET);
    c.cameras = vec![camera("cam1", CLIP)];
    std::fs::write(cam.join("config.toml"), c.to_toml()).expect("config written");
    assert!(!cam.join("fleet.toml").exists());

    let out = mesh(&cam, None, &["grant-install", &grant_text(FLEET, peer, "cam2")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<_> = std::fs::read_dir(cam.join("grants"))
        .expect("grants folder")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let g = signed::decode("grant", &std::fs::read(files[0].path()).expect("read")).expect("a grant");
    let info = camesh_node::auth::grant::verify(&g, &fleet(FLEET).key.public(), FLEET, &peer, now_s()).expect("valid");
    assert_eq!(info.cameras, vec!["cam2".to_owned()]);

    // A grant for another peer is refused before anything is written.
    let out = mesh(
        &cam,
        None,
        &["grant-install", &grant_text(FLEET, PeerId::random(), "cam2")],
    );
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("belongs to"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(std::fs::read_dir(cam.join("grants")).expect("folder").count(), 1);

    // A folder with no fleet anywhere: one line naming all three places.
    let bare = dir.path().join("bare");
    camesh_node::identity::load_or_create(&bare).expect("identity");
    let out = mesh(&bare, None, &["grant-install", &grant_text(FLEET, peer, "cam2")]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("fleet.toml") && err.contains("config.toml") && err.contains("--fleet"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_sealed_root_key_round_trips_and_wrong_passphrases_and_open_modes_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    const PASS: &str = "a long fleet passphrase";
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin");
    let out = mesh(&admin, Some(PASS), &["fleet", "init", "--id", "acme", "--encrypt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key_path = admin.join("fleet.key");
    assert!(keyfile::is_sealed(&std::fs::read(&key_path).expect("read")));
    let mode = std::fs::metadata(&key_path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let node = camesh_node::identity::load_or_create(&dir.path().join("node")).expect("key");
    let peer = node.public().to_peer_id().to_string();
    let cert = dir.path().join("node.cert");
    let admit = [
        "fleet",
        "admit",
        &peer,
        "--role",
        "camera",
        "-o",
        cert.to_str().expect("utf-8"),
    ];
    // The right passphrase opens it; a wrong one, or none (no terminal), is one clear line.
    let out = mesh(&admin, Some(PASS), &admit);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = mesh(&admin, Some("not the passphrase"), &admit);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("wrong passphrase"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = mesh(&admin, None, &admit);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("CAMESH_FLEET_PASSPHRASE"),
        "{err}"
    );
    // Day-to-day commands sign with the admin certificate: no passphrase needed.
    let out = mesh(&admin, None, &["grant", &peer, "--cameras", "cam1", "--rights", "live"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // decrypt, then encrypt again.
    let out = mesh(&admin, Some(PASS), &["fleet", "decrypt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!keyfile::is_sealed(&std::fs::read(&key_path).expect("read")));
    assert!(mesh(&admin, None, &admit).status.success(), "plain again");
    let out = mesh(&admin, Some("short"), &["fleet", "encrypt"]);
    assert!(
        !out.status.success() && stderr(&out).contains("shorter than 8"),
        "{}",
        stderr(&out)
    );
    let out = mesh(&admin, Some(PASS), &["fleet", "encrypt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(keyfile::is_sealed(&std::fs::read(&key_path).expect("read")));
    assert!(mesh(&admin, Some(PASS), &admit).status.success());

    // A key file its group or others may read is refused, naming the fix.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = mesh(&admin, Some(PASS), &admit);
    let err = stderr(&out);
    let want = format!(
        "fleet.key is readable by others (mode 0644): chmod 600 {}",
        key_path.display()
    );
    assert!(!out.status.success() && err.contains(&want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Runs `cmd` to its end within `limit`; None (after killing it) if it hung.
fn bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_and_listing_cameras_never_open_the_root_key() {
    init_tracing();
    assert!(have("mkfifo"), "mkfifo (coreutils) is needed");
    const FLEET: &str = "t-rootkey-fifo";
    let dir = tempfile::tempdir().expect("tempdir");
    let cam = camera_node(&dir.path().join("cam"), FLEET, vec![camera("cam1", CLIP)], vec![]).await;
    let cam_addr = cam.dial_addrs().await.expect("addrs").remove(0);
    let admin = dir.path().join("admin");
    admin_folder(&admin, FLEET);
    // fleet.key becomes a FIFO: any open() of it blocks until a writer comes (none will).
    let key_path = admin.join("fleet.key");
    std::fs::remove_file(&key_path).expect("removed");
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&key_path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());

    let limit = Duration::from_secs(60);
    let command = |args: &[&str]| {
        let mut cmd = camesh_tests::cli::mesh_command(&admin, FLEET, std::slice::from_ref(&cam_addr));
        cmd.args(args);
        cmd
    };
    let cameras = command(&["cameras", "--timeout", "3s"]);
    let out = tokio::task::spawn_blocking(move || bounded(cameras, limit))
        .await
        .expect("join")
        .expect("mesh cameras ended: it never opened fleet.key");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cam1"));

    let clip = dir.path().join("clip.h264");
    let watch = command(&[
        "watch",
        "cam1",
        "--frames",
        "30",
        "--quiet",
        "-o",
        clip.to_str().expect("utf-8"),
    ]);
    let out = tokio::task::spawn_blocking(move || bounded(watch, limit))
        .await
        .expect("join")
        .expect("mesh watch ended: it never opened fleet.key");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::metadata(&clip).expect("clip written").len() > 0);

    // A root command stops at the check (a stat), without opening the FIFO.
    let admit = command(&["fleet", "admit", &PeerId::random().to_string(), "--role", "viewer"]);
    let out = tokio::task::spawn_blocking(move || bounded(admit, limit))
        .await
        .expect("join")
        .expect("a root command refuses at once");
    assert!(
        !out.status.success() && stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    cam.shutdown();
}
