//! Fleet administration: `mesh fleet init|admit|admin|invite|join|revoke|state|encrypt|
//! decrypt` (root commands: they load the fleet root key), and `mesh grant`, `mesh revoke`, `mesh audit`
//! (day-to-day: signed with this node's own key and its admin certificate, `admin.cert`;
//! they never open the root key).
//!
//! The fleet root key (`fleet.key`) stays in the admin's data directory and is used only
//! to create the fleet, its admins and members (`admit`, `invite`), and root revocations.
//! It can be kept sealed with a passphrase (`init --encrypt`, `encrypt`, `decrypt`),
//! taken from `CAMESH_FLEET_PASSPHRASE` or asked on the terminal, and is refused when its
//! group or others may read it.
//! Everything signed goes into the fleet-state log, which members reconcile when they
//! meet, so it reaches nodes that were offline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use camesh_node::auth::admin::AdminRequest;
use camesh_node::auth::cert::CertRequest;
use camesh_node::auth::fleet::{FleetFile, FleetRoot, FLEET_FILE, ROOT_KEY_FILE};
use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::trust::ADMIN_CERT_FILE;
use camesh_node::auth::{self, signed, Rights, Trust};
use camesh_node::{NodeHandle, PeerId};
use camesh_proto::pb::MemberRole;

/// Text prefix of a grant (then base58 of the signed bytes).
pub const GRANT_PREFIX: &str = "camesh-grant:";

#[derive(clap::Subcommand, Debug)]
pub enum FleetCmd {
    /// Create a fleet: its root key (kept here, never on cameras or NVRs) and id.
    Init {
        /// Fleet id (a-z, 0-9, '-', '_').
        #[arg(long)]
        id: String,
        /// Seal the root key with a passphrase (CAMESH_FLEET_PASSPHRASE, or asked).
        #[arg(long)]
        encrypt: bool,
    },
    /// Seal fleet.key with a passphrase (CAMESH_FLEET_PASSPHRASE, or asked twice).
    Encrypt,
    /// Store fleet.key plain again (asks its passphrase).
    Decrypt,
    /// Sign a membership certificate for a node (offline); copy the file to the node's
    /// data directory as membership.cert.
    Admit {
        peer: PeerId,
        #[arg(long, value_parser = parse_role)]
        role: MemberRole,
        #[arg(long, default_value = "")]
        name: String,
        /// How long the certificate is valid (renewed while an admin node is reachable).
        #[arg(long, default_value = "30d", value_parser = crate::parse_duration)]
        valid: Duration,
        /// Camera ids the node may serve (bound to its key).
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
        #[arg(long, short, default_value = "membership.cert")]
        output: PathBuf,
    },
    /// Print a one-time invite and wait, as the online admin node, until it is redeemed.
    /// Printed three ways: the text (`camesh-node join`, `mesh fleet join`, or pasted into
    /// the web app), a link to the web app with the invite in its fragment (browsers never
    /// send a fragment to the server), and that link as a QR code for a phone. While it
    /// waits this node listens on WebRTC-direct too, and the invite lists those addresses,
    /// so a browser can redeem it.
    Invite {
        #[arg(long, value_parser = parse_role)]
        role: MemberRole,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "1h", value_parser = crate::parse_duration)]
        expires: Duration,
        #[arg(long, default_value = "30d", value_parser = crate::parse_duration)]
        valid: Duration,
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
        /// Only this node may redeem it (its peer id, as `camesh-node init` prints it).
        #[arg(long = "for")]
        holder: Option<PeerId>,
        /// Where the web app is served (any static origin, e.g. a node's gateway started
        /// with --web-app): the link is this URL with `#<invite>` appended.
        #[arg(long, env = "CAMESH_WEB_URL", default_value = "http://127.0.0.1:8090/app/")]
        web_url: String,
        /// Do not print the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Join a fleet with an invite (this laptop becomes a member).
    Join { invite: String },
    /// Certify a scoped admin (root key): it may grant within its cameras/tags and
    /// rights, and revoke or admit if allowed, without the root key. Writes its admin
    /// certificate (install it as <the admin's data dir>/admin.cert) and records it in the
    /// fleet-state log.
    Admin {
        /// The admin's peer id.
        peer: PeerId,
        #[arg(long, default_value = "")]
        name: String,
        /// Cameras it administers ('*' for all).
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
        /// Camera tags it administers.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Rights it may grant (live, playback, export, lock, ptz, talk, record, forward, delegate).
        #[arg(long, value_parser = |s: &str| Rights::parse(s), default_value = "live,playback")]
        rights: Rights,
        /// It may revoke peers and grants (fleet-wide).
        #[arg(long)]
        may_revoke: bool,
        /// It may admit members (redeem invites, renew certificates).
        #[arg(long)]
        may_admit: bool,
        #[arg(long, default_value = "90d", value_parser = crate::parse_duration)]
        valid: Duration,
        #[arg(long, short, default_value = "admin.cert")]
        output: PathBuf,
    },
    /// Revoke with the root key (e.g. an admin whose laptop was lost); `mesh revoke` is
    /// the day-to-day form, signed by an admin.
    Revoke {
        /// Peer id, or a grant/admin certificate serial (16 hex digits).
        target: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print the fleet-state log held in this data directory.
    State,
}

pub fn parse_role(s: &str) -> Result<MemberRole, String> {
    match s {
        "camera" => Ok(MemberRole::Camera),
        "nvr" => Ok(MemberRole::Nvr),
        "viewer" => Ok(MemberRole::Viewer),
        "admin" => Ok(MemberRole::Admin),
        _ => Err(format!("unknown role {s:?} (camera, nvr, viewer, admin)")),
    }
}

/// The fleet this data directory belongs to (`fleet.toml`).
pub fn fleet_file(dir: &Path) -> Option<FleetFile> {
    let text = std::fs::read_to_string(dir.join(FLEET_FILE)).ok()?;
    toml::from_str(&text).ok()
}

pub fn write_fleet_file(dir: &Path, ff: &FleetFile) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(FLEET_FILE), toml::to_string(ff)?).context("writing fleet.toml")
}

/// The environment variable a sealed fleet.key's passphrase may come from.
pub const PASSPHRASE_ENV: &str = "CAMESH_FLEET_PASSPHRASE";

/// The passphrase of a sealed fleet.key: the environment, else the terminal.
fn passphrase() -> Result<String, String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Ok(p);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(format!("set {PASSPHRASE_ENV}, or run in a terminal to be asked"));
    }
    rpassword::prompt_password("fleet.key passphrase: ").map_err(|e| format!("reading the passphrase: {e}"))
}

/// A new passphrase: the environment, else asked twice on the terminal.
fn new_passphrase() -> Result<String> {
    let p = match std::env::var(PASSPHRASE_ENV) {
        Ok(p) => p,
        Err(_) => {
            let p = passphrase().map_err(|e| anyhow!("{e}"))?;
            let again = rpassword::prompt_password("again: ").context("reading the passphrase")?;
            if p != again {
                bail!("the passphrases differ; nothing changed");
            }
            p
        }
    };
    if p.chars().count() < 8 {
        bail!("the passphrase is shorter than 8 characters; nothing changed");
    }
    Ok(p)
}

/// The fleet root key of this data directory (root commands only).
pub fn root(dir: &Path) -> Result<FleetRoot> {
    FleetRoot::load(dir, &passphrase).map_err(|e| anyhow!("{e}"))
}

/// `mesh fleet encrypt`: seals fleet.key with a passphrase.
pub fn encrypt(dir: &Path) -> Result<()> {
    if FleetRoot::is_sealed(dir).map_err(|e| anyhow!("{e}"))? {
        bail!("{} is sealed already", dir.join(ROOT_KEY_FILE).display());
    }
    let f = root(dir)?;
    let p = new_passphrase()?;
    f.write_key(dir, Some(&p)).map_err(|e| anyhow!("{e}"))?;
    println!(
        "{}: sealed with a passphrase (root commands ask for it, or read {PASSPHRASE_ENV})",
        dir.join(ROOT_KEY_FILE).display()
    );
    Ok(())
}

/// `mesh fleet decrypt`: stores fleet.key plain again.
pub fn decrypt(dir: &Path) -> Result<()> {
    if !FleetRoot::is_sealed(dir).map_err(|e| anyhow!("{e}"))? {
        bail!("{} is not sealed", dir.join(ROOT_KEY_FILE).display());
    }
    let f = root(dir)?;
    f.write_key(dir, None).map_err(|e| anyhow!("{e}"))?;
    println!("{}: stored plain (mode 0600)", dir.join(ROOT_KEY_FILE).display());
    Ok(())
}

/// This data directory's security state, without a running node (its identity, admin
/// certificate and fleet-state log; never the root key).
pub fn local_trust(dir: &Path, fleet_id: &str, root_text: &str) -> Result<Trust> {
    let key = camesh_node::identity::load_or_create(dir)?;
    let root = auth::fleet::root_from_text(root_text).map_err(|e| anyhow!("{e}"))?;
    let trust = Trust::load(dir, fleet_id, root, key.public().to_peer_id());
    if let Some(Err(e)) = trust.load_admin(&key) {
        eprintln!("warning: {}: {e}", dir.join(ADMIN_CERT_FILE).display());
    }
    Ok(trust)
}

/// [`local_trust`] for the fleet named in `<dir>/fleet.toml`.
pub fn dir_trust(dir: &Path) -> Result<Trust> {
    let ff = fleet_file(dir).ok_or_else(|| {
        anyhow!(
            "no fleet in {}: run `mesh fleet init --id <fleet>` (admin) or `mesh fleet join <invite>`",
            dir.display()
        )
    })?;
    local_trust(dir, &ff.fleet_id, &ff.root)
}

#[allow(clippy::too_many_arguments)]
pub fn admin(
    dir: &Path,
    peer: PeerId,
    name: &str,
    cameras: Vec<String>,
    tags: Vec<String>,
    rights: Rights,
    may_revoke: bool,
    may_admit: bool,
    valid: Duration,
    out: &Path,
) -> Result<()> {
    if cameras.is_empty() && tags.is_empty() {
        bail!("say which cameras the admin administers: --cameras c1,c2 (or '*') and/or --tag T");
    }
    let f = root(dir)?;
    let trust = local_trust(dir, &f.fleet_id, &f.root_text())?;
    trust.set_root_key(f.key.clone()).map_err(|e| anyhow!("{e}"))?;
    let req = AdminRequest {
        admin: peer,
        name: name.to_owned(),
        cameras: cameras.clone(),
        tags,
        rights,
        may_revoke,
        may_admit,
        valid_s: secs(valid),
    };
    let cert = trust.certify_admin(&req).map_err(|e| anyhow!("{e}"))?;
    std::fs::write(out, signed::encode(&cert)).with_context(|| format!("writing {}", out.display()))?;
    trust.audit.record(
        "admin-certified",
        &peer.to_string(),
        &cameras.join(","),
        &format!("{name}: grants {rights}, revoke {may_revoke}, admit {may_admit}"),
    );
    println!(
        "wrote {} for admin {peer} ({name}): grants {rights} on {}{}{}, valid {}",
        out.display(),
        cameras.join(","),
        if may_revoke { ", may revoke" } else { "" },
        if may_admit { ", may admit" } else { "" },
        humantime::format_duration(valid)
    );
    println!("install it as <the admin's data dir>/admin.cert; the admin also needs a membership certificate (`mesh fleet admit {peer} --role admin`)");
    println!("the fleet learns of it when this data dir next meets a member (any `mesh` command with --bootstrap)");
    Ok(())
}

/// Prints the fleet-state log of this data directory.
pub fn state(dir: &Path) -> Result<()> {
    let trust = dir_trust(dir)?;
    let entries = trust.fleet_entries();
    if entries.is_empty() {
        println!("(the fleet-state log in {} is empty)", dir.display());
        return Ok(());
    }
    for line in auth::fleetlog::describe(&entries) {
        println!("{line}");
    }
    Ok(())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub fn init(dir: &Path, id: &str, encrypt: bool) -> Result<()> {
    if !camesh_node::ids::valid_id(id) {
        bail!("--id {id:?}: use 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    if dir.join(ROOT_KEY_FILE).exists() {
        bail!(
            "a fleet already exists in {} (delete it first to start over)",
            dir.display()
        );
    }
    // Asked first: a refused passphrase leaves nothing behind.
    let pass = if encrypt { Some(new_passphrase()?) } else { None };
    let f = FleetRoot::create(dir, id).map_err(|e| anyhow!("{e}"))?;
    if let Some(p) = &pass {
        f.write_key(dir, Some(p)).map_err(|e| anyhow!("{e}"))?;
    }
    let me = camesh_node::identity::load_or_create(dir)?.public().to_peer_id();
    f.enroll_dir(dir, MemberRole::Admin, "admin", &[], 365 * 86_400)
        .map_err(|e| anyhow!("{e}"))?;
    // This laptop administers the fleet day to day with an admin certificate, so the
    // root key is needed only for `mesh fleet` commands.
    let trust = local_trust(dir, &f.fleet_id, &f.root_text())?;
    trust.set_root_key(f.key.clone()).map_err(|e| anyhow!("{e}"))?;
    let cert = trust
        .certify_admin(&AdminRequest::full(me, "admin", 365 * 86_400))
        .map_err(|e| anyhow!("{e}"))?;
    std::fs::write(dir.join(ADMIN_CERT_FILE), signed::encode(&cert)).context("writing admin.cert")?;
    println!("fleet:      {id}");
    println!("fleet root: {}", f.root_text());
    println!("admin peer: {me}");
    println!(
        "root key:   {} ({}keep it here; never copy it to cameras or NVRs; only `mesh fleet` commands use it)",
        dir.join(ROOT_KEY_FILE).display(),
        if pass.is_some() {
            "sealed with your passphrase; "
        } else {
            ""
        }
    );
    println!(
        "admin:      {} (every right on every camera, may revoke and admit: `mesh grant` and `mesh revoke` sign with it)",
        dir.join(ADMIN_CERT_FILE).display()
    );
    println!(
        "\nnext: camesh-node init --role camera --fleet {id} --fleet-root {}",
        f.root_text()
    );
    Ok(())
}

pub fn admit(
    dir: &Path,
    peer: PeerId,
    role: MemberRole,
    name: &str,
    valid: Duration,
    cameras: Vec<String>,
    out: &Path,
) -> Result<()> {
    let f = root(dir)?;
    let c = f.admit(&CertRequest {
        peer,
        role,
        name: name.to_owned(),
        valid_s: secs(valid),
        cameras,
    });
    std::fs::write(out, signed::encode(&c)).with_context(|| format!("writing {}", out.display()))?;
    let audit = auth::audit::Audit::open(dir);
    audit.record(
        "admitted",
        &peer.to_string(),
        "",
        &format!("{role:?} {name} (offline certificate)"),
    );
    println!(
        "wrote {} for {peer} ({role:?}, valid {})",
        out.display(),
        humantime::format_duration(valid)
    );
    println!("install it as <the node's data dir>/membership.cert");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub async fn invite(
    node: &NodeHandle,
    dir: &Path,
    role: MemberRole,
    name: &str,
    expires: Duration,
    valid: Duration,
    cameras: Vec<String>,
    holder: Option<PeerId>,
    web_url: &str,
    qr: bool,
) -> Result<()> {
    let f = root(dir)?;
    node.trust().set_root_key(f.key.clone()).map_err(|e| anyhow!("{e}"))?;
    let addrs = node.dial_addrs().await?;
    let plain: Vec<_> = addrs.into_iter().map(|a| camesh_node::addr::split_p2p(a).1).collect();
    let text = auth::invite::issue(
        &f.key,
        &f.fleet_id,
        role,
        name,
        auth::now_s() + secs(expires),
        node.peer_id(),
        &plain,
        &cameras,
        secs(valid),
        holder,
    );
    node.trust().audit.record(
        "invite-issued",
        "",
        "",
        &format!("{role:?} {name}, expires in {}", humantime::format_duration(expires)),
    );
    // Written without println!: a reader that takes the first line and closes the pipe
    // (`mesh fleet invite | head -1`, a script) must not end this admin node, which has
    // to stay up until the invite is redeemed.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let link = invite_link(web_url, &text);
    let _ = writeln!(out, "link: {link}");
    if qr {
        match qr_text(&link) {
            Ok(q) => {
                let _ = writeln!(out, "{q}");
            }
            Err(e) => eprintln!("mesh: no QR code: {e}"),
        }
    }
    let _ = out.flush();
    drop(out);
    eprintln!("waiting for the invite to be redeemed (this laptop is the admin node until then; Ctrl-C stops)");
    let mut changes = node.trust().subscribe();
    let deadline = tokio::time::Instant::now() + expires;
    let before = node.trust().audit.tail(10_000).len();
    let mut events = node.net().subscribe();
    loop {
        tokio::select! {
            _ = changes.changed() => {
                let redeemed = node.trust().audit.tail(10_000).into_iter().skip(before).find(|e| e.event == "invite-redeemed");
                if let Some(e) = redeemed {
                    eprintln!("redeemed by {} ({})", e.peer, e.detail);
                    // The redemption is recorded before its answer is written: stay until
                    // the new member hangs up holding its certificate (at most 2 s).
                    if let Ok(peer) = e.peer.parse::<PeerId>() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            loop {
                                match events.recv().await {
                                    Ok(camesh_node::net::NetEvent::Disconnected(p)) if p == peer => break,
                                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                                    _ => {}
                                }
                            }
                        })
                        .await;
                    }
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("the invite expired unused"),
            _ = tokio::signal::ctrl_c() => bail!("stopped; the invite can no longer be redeemed while no admin node is online"),
        }
    }
}

/// The web app's URL with the invite as its fragment (`#camesh-invite:...`): a browser
/// never sends the fragment to the server, so the origin serving the page never sees it.
pub fn invite_link(web_url: &str, invite: &str) -> String {
    let base = web_url.split('#').next().unwrap_or(web_url);
    format!("{base}#{invite}")
}

/// `text` as a QR code drawn with Unicode half blocks (two modules a character cell),
/// with the quiet zone; low error correction keeps a long invite scannable.
pub fn qr_text(text: &str) -> Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| anyhow!("{e} ({} bytes)", text.len()))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

/// Parses a grant given as text (`camesh-grant:...`) or as a file holding it or its bytes.
pub fn read_grant(s: &str) -> Result<camesh_proto::pb::Signed> {
    let text = if Path::new(s).is_file() {
        let bytes = std::fs::read(s)?;
        match std::str::from_utf8(&bytes) {
            Ok(t) if t.trim().starts_with(GRANT_PREFIX) => t.trim().to_owned(),
            _ => return signed::decode("grant", &bytes).map_err(|e| anyhow!("{s}: {e}")),
        }
    } else {
        s.trim().to_owned()
    };
    let b58 = text
        .strip_prefix(GRANT_PREFIX)
        .ok_or_else(|| anyhow!("not a grant: expected a file or text starting with {GRANT_PREFIX}"))?;
    let bytes = bs58_decode(b58)?;
    signed::decode("grant", &bytes).map_err(|e| anyhow!("{e}"))
}

fn bs58_decode(s: &str) -> Result<Vec<u8>> {
    camesh_node::auth::invite::bs58_decode(s).map_err(|e| anyhow!("{e}"))
}

#[allow(clippy::too_many_arguments)]
pub fn grant(
    dir: &Path,
    holder: PeerId,
    cameras: Vec<String>,
    tags: Vec<String>,
    rights: Rights,
    until: Duration,
    out: Option<&Path>,
) -> Result<camesh_proto::pb::Signed> {
    if cameras.is_empty() && tags.is_empty() {
        bail!("say which cameras: --cameras c1,c2 (or '*') and/or --tag T");
    }
    if rights.0 == 0 {
        bail!("say which rights: --rights live,playback,...");
    }
    let trust = dir_trust(dir)?;
    let now = auth::now_s();
    let req = GrantRequest {
        holder,
        cameras: cameras.clone(),
        tags,
        rights,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + secs(until),
    };
    // As an admin (admin.cert), else delegating a held grant with the delegate right.
    let g = if trust.admin_info().is_some() {
        trust.issue_grant(&req)
    } else {
        let key = camesh_node::identity::load_or_create(dir).map_err(|e| anyhow!("{e}"))?;
        trust.delegate_grant(&key, &req)
    }
    .map_err(|e| anyhow!("{e}"))?;
    let text = format!(
        "{GRANT_PREFIX}{}",
        camesh_node::auth::invite::bs58_encode(&signed::encode(&g))
    );
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    let info = auth::grant::verify(&g, &trust.root, &trust.fleet_id, &holder, now).map_err(|e| anyhow!("{e}"))?;
    trust.audit.record(
        "grant-issued",
        &holder.to_string(),
        &cameras.join(","),
        &format!(
            "{rights} until +{}, serial {:016x}",
            humantime::format_duration(until),
            info.chain[0]
        ),
    );
    println!("{text}");
    eprintln!(
        "grant {:016x}: {rights} on {} for {holder}, valid {}; the holder installs it with `mesh grant-install <text>` (or send it: --send)",
        info.chain[0],
        cameras.join(","),
        humantime::format_duration(until)
    );
    Ok(g)
}

/// `mesh grant ... --send`: hands the grant to its holder over the mesh.
pub async fn send_grant(node: &NodeHandle, holder: PeerId, g: &camesh_proto::pb::Signed) -> Result<()> {
    node.send_grant(holder, g).await.map_err(|e| anyhow!("{e}"))?;
    println!("delivered to {holder}: verified and installed there");
    Ok(())
}

/// Revokes a peer or a serial and spreads it: signed as this node's admin, or with the
/// root key (`root`: `mesh fleet revoke`).
pub async fn revoke(node: &NodeHandle, dir: &Path, target: &str, reason: &str, root_key: bool) -> Result<()> {
    let (peers, grants): (Vec<PeerId>, Vec<u64>) = match target.parse::<PeerId>() {
        Ok(p) => (vec![p], vec![]),
        Err(_) => match u64::from_str_radix(target.trim_start_matches("0x"), 16) {
            Ok(g) => (vec![], vec![g]),
            Err(_) => bail!("{target:?} is neither a peer id nor a serial (16 hex digits)"),
        },
    };
    if root_key {
        node.trust().set_root_key(root(dir)?.key).map_err(|e| anyhow!("{e}"))?;
    }
    let r = node
        .trust()
        .revoke(&peers, &grants, reason)
        .map_err(|e| anyhow!("{e}"))?;
    // Give bootstrap connections a moment to come up and verify.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = node.push_revocation(r).await.map_err(|e| anyhow!(e))?;
    println!("revoked {target}; pushed to {sent} connected peer(s) and gossiped");
    if sent == 0 {
        eprintln!(
            "note: no peer was reachable now; it is in this data dir's fleet-state log and reaches the fleet when this node next meets any member (or run again with --bootstrap)"
        );
    } else {
        eprintln!("members that are offline get it from any member they meet");
    }
    Ok(())
}

pub fn audit(dir: &Path, n: usize) -> Result<()> {
    let entries = auth::audit::Audit::open(dir).tail(n);
    if entries.is_empty() {
        println!("(no audit entries in {})", dir.join("audit.log").display());
    }
    for e in entries {
        println!(
            "{} {:<18} {:<54} {:<12} {}",
            camesh_node::clock::rfc3339_s(e.unix_s),
            e.event,
            e.peer,
            e.camera,
            e.detail
        );
    }
    Ok(())
}
