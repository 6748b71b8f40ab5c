//! Fleet administration from the admin's laptop: `mesh fleet init|admit|invite|join`,
//! `mesh grant`, `mesh revoke`, `mesh audit`.
//!
//! The fleet root key (`fleet.key`) stays in the admin's data directory; these commands
//! sign with it offline (certificates, grants, revocations) or run `mesh` as the online
//! admin node that redeems an invite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use camesh_node::auth::cert::CertRequest;
use camesh_node::auth::fleet::{FleetFile, FleetRoot, FLEET_FILE};
use camesh_node::auth::grant::GrantRequest;
use camesh_node::auth::{self, signed, Rights};
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
    },
    /// Sign a membership certificate for a node (offline); copy the file to the node's
    /// data directory as membership.cert.
    Admit {
        peer: PeerId,
        #[arg(long, value_parser = parse_role)]
        role: MemberRole,
        #[arg(long, default_value = "")]
        name: String,
        /// How long the certificate is valid (renewed while an admin node is reachable).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        valid: Duration,
        /// Camera ids the node may serve (bound to its key).
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
        #[arg(long, short, default_value = "membership.cert")]
        output: PathBuf,
    },
    /// Print a one-time invite and wait, as the online admin node, until it is redeemed.
    Invite {
        #[arg(long, value_parser = parse_role)]
        role: MemberRole,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        expires: Duration,
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        valid: Duration,
        #[arg(long, value_delimiter = ',')]
        cameras: Vec<String>,
    },
    /// Join a fleet with an invite (this laptop becomes a member).
    Join { invite: String },
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

pub fn root(dir: &Path) -> Result<FleetRoot> {
    FleetRoot::load(dir).map_err(|e| anyhow!("{e}"))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub fn init(dir: &Path, id: &str) -> Result<()> {
    if !camesh_node::ids::valid_id(id) {
        bail!("--id {id:?}: use 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    let f = FleetRoot::create(dir, id).map_err(|e| anyhow!("{e}"))?;
    let me = camesh_node::identity::load_or_create(dir)?.public().to_peer_id();
    f.enroll_dir(dir, MemberRole::Admin, "admin", &[], 365 * 86_400)
        .map_err(|e| anyhow!("{e}"))?;
    println!("fleet:      {id}");
    println!("fleet root: {}", f.root_text());
    println!("admin peer: {me}");
    println!(
        "root key:   {} (keep it here; never copy it to cameras or NVRs)",
        dir.join("fleet.key").display()
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

pub async fn invite(
    node: &NodeHandle,
    dir: &Path,
    role: MemberRole,
    name: &str,
    expires: Duration,
    valid: Duration,
    cameras: Vec<String>,
) -> Result<()> {
    let f = root(dir)?;
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
    );
    node.trust().audit.record(
        "invite-issued",
        "",
        "",
        &format!("{role:?} {name}, expires in {}", humantime::format_duration(expires)),
    );
    println!("{text}");
    eprintln!("waiting for the invite to be redeemed (this laptop is the admin node until then; Ctrl-C stops)");
    let mut changes = node.trust().subscribe();
    let deadline = tokio::time::Instant::now() + expires;
    let before = node.trust().audit.tail(10_000).len();
    loop {
        tokio::select! {
            _ = changes.changed() => {
                let redeemed = node.trust().audit.tail(10_000).into_iter().skip(before).find(|e| e.event == "invite-redeemed");
                if let Some(e) = redeemed {
                    eprintln!("redeemed by {} ({})", e.peer, e.detail);
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("the invite expired unused"),
            _ = tokio::signal::ctrl_c() => bail!("stopped; the invite can no longer be redeemed while no admin node is online"),
        }
    }
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
) -> Result<()> {
    if cameras.is_empty() && tags.is_empty() {
        bail!("say which cameras: --cameras c1,c2 (or '*') and/or --tag T");
    }
    if rights.0 == 0 {
        bail!("say which rights: --rights live,playback,...");
    }
    let f = root(dir)?;
    let now = auth::now_s();
    let g = f.grant(&GrantRequest {
        holder,
        cameras: cameras.clone(),
        tags,
        rights,
        not_before_unix_s: now - 60,
        not_after_unix_s: now + secs(until),
    });
    let text = format!(
        "{GRANT_PREFIX}{}",
        camesh_node::auth::invite::bs58_encode(&signed::encode(&g))
    );
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    }
    let info = auth::grant::verify(&g, &f.key.public(), &f.fleet_id, &holder, now).map_err(|e| anyhow!("{e}"))?;
    auth::audit::Audit::open(dir).record(
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
        "grant {:016x}: {rights} on {} for {holder}, valid {}; the holder installs it with `mesh grant-install <text>`",
        info.chain[0],
        cameras.join(","),
        humantime::format_duration(until)
    );
    Ok(())
}

/// The next revocation epoch for this fleet (kept beside the root key; only grows).
pub fn next_epoch(dir: &Path) -> Result<u64> {
    let path = dir.join("revocation-epoch");
    let last: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let next = last.max(auth::now_s().try_into().unwrap_or(0)) + 1;
    std::fs::write(&path, next.to_string()).context("writing revocation-epoch")?;
    Ok(next)
}

pub async fn revoke(node: &NodeHandle, dir: &Path, target: &str, reason: &str) -> Result<()> {
    let f = root(dir)?;
    let (peers, grants): (Vec<PeerId>, Vec<u64>) = match target.parse::<PeerId>() {
        Ok(p) => (vec![p], vec![]),
        Err(_) => match u64::from_str_radix(target.trim_start_matches("0x"), 16) {
            Ok(g) => (vec![], vec![g]),
            Err(_) => bail!("{target:?} is neither a peer id nor a grant serial (16 hex digits)"),
        },
    };
    let r = f.revoke(next_epoch(dir)?, &peers, &grants, reason);
    // Give bootstrap connections a moment to come up and verify.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = node.push_revocation(r).await.map_err(|e| anyhow!(e))?;
    println!("revoked {target}; pushed to {sent} connected peer(s) and gossiped");
    if sent == 0 {
        eprintln!("warning: no peer was reachable; run again with --bootstrap, or it spreads when peers meet");
    }
    Ok(())
}

pub fn audit(dir: &Path, n: usize) -> Result<()> {
    let entries = auth::audit::Audit::open(dir).tail(n);
    if entries.is_empty() {
        println!("(no audit entries in {})", dir.join("audit.log").display());
    }
    for e in entries {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(e.unix_s).unwrap_or(0));
        println!(
            "{} {:<18} {:<54} {:<12} {}",
            humantime::format_rfc3339_seconds(t),
            e.event,
            e.peer,
            e.camera,
            e.detail
        );
    }
    Ok(())
}
