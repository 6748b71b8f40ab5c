//! `mesh play | recordings | export | verify | lock`: recordings on an NVR over the mesh,
//! and offline verification of an export against its signed manifest.
//!
//! Times are RFC 3339 (`2026-11-23T17:00:00Z`, or `2026-11-23 17:00:00` in UTC), Unix
//! seconds (`1700000000.5`), `now`, or relative to now (`-5m`, `90s ago`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camesh_node::clock::now_unix_us;
use camesh_node::nvr::client::{self, NvrClientError};
use camesh_node::record::manifest::{self, Manifest};
use camesh_node::{NodeHandle, PeerId};

/// Parses a time (see the module docs) to microseconds since the Unix epoch.
pub fn parse_time(s: &str, now_us: i64) -> Result<i64, String> {
    let s = s.trim();
    let dur_us = |d: &str| crate::parse_duration(d.trim()).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    if s == "now" {
        return Ok(now_us);
    }
    if let Some(rel) = s.strip_prefix('-') {
        return Ok(now_us.saturating_sub(dur_us(rel)?));
    }
    if let Some(rel) = s.strip_suffix("ago") {
        return Ok(now_us.saturating_sub(dur_us(rel)?));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if (0.0..1e11).contains(&secs) {
            return Ok((secs * 1e6).round() as i64);
        }
        return Err(format!("{s:?}: not a plausible Unix time in seconds"));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: {e} (use RFC 3339, Unix seconds, `now` or `-5m`)"))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .map_err(|_| format!("{s:?} is before 1970"))
        })
}

pub fn fmt_time(us: i64) -> String {
    camesh_node::clock::rfc3339_ms(us)
}

fn time_arg(s: &str) -> Result<i64, String> {
    parse_time(s, now_unix_us())
}

#[derive(clap::Args, Debug)]
pub struct RangeArgs {
    /// Camera id.
    camera: String,
    /// Start of the range (RFC 3339, Unix seconds, `now`, `-5m`).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    from: i64,
    /// End of the range (default: now).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    to: Option<i64>,
    /// The NVR to ask (default: the NVR members among connected peers).
    #[arg(long)]
    nvr: Option<PeerId>,
}

#[derive(clap::Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Output file (H.264 Annex B), or - for stdout.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RecordingsArgs {
    /// Camera id.
    camera: String,
    /// Start of the listing (default: 24 hours ago).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    from: Option<i64>,
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    to: Option<i64>,
    #[arg(long)]
    nvr: Option<PeerId>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// The MP4 to write; the manifest and the source segments go next to it
    /// (`<name>.manifest.json`, `<name>.segments/`).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UnlockArgs {
    /// Camera id.
    camera: String,
    /// The lock's number, as `mesh lock` and `mesh recordings` print it.
    #[arg(long)]
    id: u64,
    /// Why (kept in the NVR's audit log).
    #[arg(long)]
    reason: String,
    /// The NVR to ask (default: the NVR members among connected peers).
    #[arg(long)]
    nvr: Option<PeerId>,
}

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Why (incident number, who asked): kept with the lock.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The export's manifest (`<name>.manifest.json`).
    manifest: PathBuf,
    /// Folder of the segment files (default: `<name>.segments` next to the manifest).
    #[arg(long)]
    segments: Option<PathBuf>,
    /// The exported MP4 (default: the manifest's file name next to it, if present).
    #[arg(long)]
    export: Option<PathBuf>,
    /// The camera's signed GOP digests (default: `<name>.attest` next to the manifest).
    #[arg(long)]
    attest: Option<PathBuf>,
    /// Accept an export without camera signatures (no .attest): the NVR's word alone.
    #[arg(long)]
    allow_unattested: bool,
    /// Accept a manifest whose NVR certificate cannot be checked (no fleet root here):
    /// its own embedded key is then all that vouches for it.
    #[arg(long)]
    allow_unknown_signer: bool,
}

async fn pick_nvr(node: &NodeHandle, nvr: Option<PeerId>) -> Result<PeerId> {
    if let Some(p) = nvr {
        return Ok(p);
    }
    client::find_nvrs(node.reach(), Duration::from_secs(5))
        .await
        .into_iter()
        .next()
        .ok_or_else(|| NvrClientError::NoNvr.into())
}

pub async fn play(node: &NodeHandle, args: &PlayArgs) -> Result<()> {
    let r = &args.range;
    let peer = pick_nvr(node, r.nvr).await?;
    let mut pb = client::play(node.reach(), peer, &r.camera, r.from, r.to.unwrap_or(0)).await?;
    let mut out: Box<dyn Write + Send> = if args.output.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?,
        ))
    };
    let mut annexb = Vec::with_capacity(256 << 10);
    if let Some(c) = &pb.accept.codec {
        for ps in [&c.sps, &c.pps] {
            if !ps.is_empty() {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(ps);
            }
        }
    }
    let (mut frames, mut keyframes) = (0u64, 0u64);
    let (mut first, mut first_key, mut last) = (None, false, 0i64);
    while let Some(f) = pb.next_frame().await? {
        if first.is_none() {
            first = Some(f.header.capture_unix_us);
            first_key = f.header.keyframe;
        }
        last = f.header.capture_unix_us;
        frames += 1;
        keyframes += u64::from(f.header.keyframe);
        for nal in camesh_node::media::h264::avcc_nals(&f.payload) {
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(nal.context("a recorded frame is not valid AVCC")?);
        }
        match out.write_all(&annexb) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("writing video"),
        }
        annexb.clear();
    }
    out.flush().ok();
    let Some(first) = first else {
        bail!("the NVR sent no frames for {} from {}", r.camera, fmt_time(r.from));
    };
    eprintln!(
        "played {frames} frames ({keyframes} keyframes) of {} from {} to {}; first frame {} (requested {})",
        r.camera,
        fmt_time(first),
        fmt_time(last),
        if first_key {
            "is a keyframe"
        } else {
            "is NOT a keyframe"
        },
        fmt_time(r.from),
    );
    eprintln!(
        "play-summary frames={frames} keyframes={keyframes} first_us={first} first_keyframe={first_key} last_us={last}"
    );
    Ok(())
}

pub async fn recordings(node: &NodeHandle, args: &RecordingsArgs) -> Result<()> {
    let peer = pick_nvr(node, args.nvr).await?;
    let now = now_unix_us();
    let from = args.from.unwrap_or(now - 86_400_000_000);
    let cov = client::recordings(node.reach(), peer, &args.camera, from, args.to.unwrap_or(0)).await?;
    if args.json {
        for s in &cov.spans {
            println!(
                "{}",
                serde_json::json!({"camera": args.camera, "from_us": s.from_unix_us, "to_us": s.to_unix_us,
                    "recorded": s.recorded, "reason": s.reason})
            );
        }
        for l in &cov.locks {
            println!(
                "{}",
                serde_json::json!({"camera": args.camera, "lock": l.id, "from_us": l.from_unix_us,
                    "to_us": l.to_unix_us, "reason": l.reason})
            );
        }
        for src in &cov.sources {
            let spans = |v: &[camesh_proto::pb::NvrSpan]| -> Vec<[i64; 2]> {
                v.iter().map(|s| [s.from_unix_us, s.to_unix_us]).collect()
            };
            println!(
                "{}",
                serde_json::json!({"camera": args.camera, "source": src.peer_id, "name": src.name,
                    "offered_us": src.offered_unix_us, "source_recorded": spans(&src.spans),
                    "missing": spans(&src.missing),
                    "source_locks": src.locks.iter().map(|l| [l.from_unix_us, l.to_unix_us]).collect::<Vec<_>>()})
            );
        }
        return Ok(());
    }
    println!(
        "{}: {} segments, {:.1} MB on NVR {peer}",
        args.camera,
        cov.segments,
        cov.bytes as f64 / 1e6
    );
    println!("{:<9} {:<24} {:<24} {:>9}  NOTE", "", "FROM", "TO", "SECONDS");
    for s in &cov.spans {
        println!(
            "{:<9} {:<24} {:<24} {:>9.1}  {}",
            if s.recorded { "recorded" } else { "gap" },
            fmt_time(s.from_unix_us),
            fmt_time(s.to_unix_us),
            (s.to_unix_us - s.from_unix_us) as f64 / 1e6,
            s.reason
        );
    }
    for l in &cov.locks {
        println!(
            "locked #{} {} .. {} {}",
            l.id,
            fmt_time(l.from_unix_us),
            fmt_time(l.to_unix_us),
            l.reason
        );
    }
    for src in &cov.sources {
        let secs = |v: &[camesh_proto::pb::NvrSpan]| -> f64 {
            v.iter().map(|s| (s.to_unix_us - s.from_unix_us) as f64 / 1e6).sum()
        };
        let name = if src.name.is_empty() { "" } else { " " };
        println!(
            "replicated from {}{name}{} (coverage as of {}): it holds {:.1} s in {} spans; {:.1} s not here yet",
            src.name,
            src.peer_id,
            fmt_time(src.offered_unix_us),
            secs(&src.spans),
            src.spans.len(),
            secs(&src.missing)
        );
        for m in &src.missing {
            println!(
                "{:<9} {:<24} {:<24} {:>9.1}  on {} only",
                "missing",
                fmt_time(m.from_unix_us),
                fmt_time(m.to_unix_us),
                (m.to_unix_us - m.from_unix_us) as f64 / 1e6,
                if src.name.is_empty() { &src.peer_id } else { &src.name }
            );
        }
    }
    Ok(())
}

pub async fn export(node: &NodeHandle, args: &ExportArgs) -> Result<()> {
    let r = &args.range;
    let peer = pick_nvr(node, r.nvr).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_permille = None;
    let files = client::export(
        node.reach(),
        peer,
        &r.camera,
        r.from,
        r.to.unwrap_or(0),
        &args.output,
        |p| {
            // Every 5%, on one line on a terminal.
            let step = p.permille / 50;
            if last_permille == Some(step) {
                return;
            }
            last_permille = Some(step);
            let line = format!(
                "exporting: {:>5.1}% ({} frames)",
                f64::from(p.permille) / 10.0,
                p.frames
            );
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        },
    )
    .await?;
    if tty {
        eprintln!();
    }
    let d = &files.done;
    println!(
        "exported {} frames ({} keyframes, {}x{}, {:.3} s) of {} from {} to {}",
        d.frames,
        d.keyframes,
        d.width,
        d.height,
        d.duration_90k as f64 / 90_000.0,
        r.camera,
        fmt_time(d.first_capture_unix_us),
        fmt_time(d.last_capture_unix_us)
    );
    println!("video:    {} ({} bytes)", files.mp4.display(), d.mp4_bytes);
    if d.audio_frames > 0 {
        println!("audio:    {} frames, in the same file", d.audio_frames);
    }
    println!("manifest: {} (signed by NVR {peer})", files.manifest.display());
    println!("segments: {} ({} files)", files.segments.display(), d.segments);
    match &files.attest {
        Some(a) => println!("camera signatures: {}", a.display()),
        None => println!("camera signatures: none (the NVR has no GOP digests from the camera for this range)"),
    }
    Ok(())
}

pub async fn lock(node: &NodeHandle, args: &LockArgs) -> Result<()> {
    let r = &args.range;
    let peer = pick_nvr(node, r.nvr).await?;
    let to = r.to.unwrap_or_else(now_unix_us);
    let l = client::lock(node.reach(), peer, &r.camera, r.from, to, &args.reason).await?;
    println!(
        "locked #{} {} {} .. {} on NVR {peer}: retention will not delete it",
        l.id,
        r.camera,
        fmt_time(l.from_unix_us),
        fmt_time(l.to_unix_us)
    );
    Ok(())
}

pub async fn unlock(node: &NodeHandle, args: &UnlockArgs) -> Result<()> {
    let peer = pick_nvr(node, args.nvr).await?;
    let l = client::unlock(node.reach(), peer, &args.camera, args.id, &args.reason).await?;
    println!(
        "unlocked #{} {} {} .. {} on NVR {peer} (was: {}); retention may delete it again",
        l.id,
        args.camera,
        fmt_time(l.from_unix_us),
        fmt_time(l.to_unix_us),
        l.reason
    );
    Ok(())
}

fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let read = |d: &Path| std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()));
    for cam in read(dir)? {
        let cam = cam?.path();
        if !cam.is_dir() {
            continue;
        }
        for f in read(&cam)? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "cseg") {
                files.push(f);
            }
        }
    }
    Ok(files)
}

/// Checks an export offline. `fleet` is the fleet id and root key, when known.
pub fn verify(args: &VerifyArgs, dir: &Path, fleet: Option<(String, String)>) -> Result<()> {
    let bytes = std::fs::read(&args.manifest).with_context(|| format!("reading {}", args.manifest.display()))?;
    let m = Manifest::from_json(&bytes)?;
    let stem = args
        .manifest
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".manifest.json").to_owned())
        .unwrap_or_default();
    let segments = args
        .segments
        .clone()
        .unwrap_or_else(|| args.manifest.with_file_name(format!("{stem}.segments")));
    let files = if segments.is_dir() {
        segment_files(&segments)?
    } else {
        Vec::new()
    };
    let export = args.export.clone().or_else(|| {
        let name = &m.body.export.as_ref()?.name;
        let p = args.manifest.with_file_name(name);
        p.exists().then_some(p)
    });
    let report = manifest::verify(&m, &files, export.as_deref(), None)?;
    let root = match &fleet {
        Some((id, root)) => Some((
            camesh_node::auth::fleet::root_from_text(root).map_err(|e| anyhow::anyhow!("{e}"))?,
            id.clone(),
        )),
        None => None,
    };
    // What this data directory's fleet-state log knows: a revoked NVR or camera. Any
    // revocation fails; one dated before the manifest's asserted time says so (that time
    // cannot vouch for it).
    let revoked = revocations(dir, &fleet);
    let created = m.body.created_us;
    if let Some(why) = revoked_reason(&revoked, &report.signer, created) {
        bail!(
            "the NVR that signed this export ({}) has been revoked {why}",
            report.signer
        );
    }
    // The camera's own signatures over the frames.
    let attest = args
        .attest
        .clone()
        .unwrap_or_else(|| args.manifest.with_file_name(format!("{stem}.attest")));
    let camera_line = if attest.exists() {
        let bytes = std::fs::read(&attest).with_context(|| format!("reading {}", attest.display()))?;
        let at_s = m.body.created_us / 1_000_000;
        let r = camesh_node::attest::verify::verify_export(
            &bytes,
            &m.body.camera,
            &files,
            root.as_ref().map(|(k, id)| (k, id.as_str())),
            at_s,
        )?;
        if let Some(why) = revoked_reason(&revoked, &r.camera_peer, created) {
            bail!(
                "the camera node that signed these frames ({}) has been revoked {why}",
                r.camera_peer
            );
        }
        // The NVR's word on when it made the export, against what the camera signed.
        if let Some(span) = r.attested_us {
            let skew = camesh_node::auth::DEFAULT_SKEW_S * 1_000_000;
            camesh_node::attest::verify::check_asserted_time(created, span, now_unix_us(), skew)?;
        }
        if r.gops_verified == 0 {
            bail!(
                "no GOP of the export is covered by a camera signature ({} digests did not cover whole GOPs)",
                r.gops_unattested
            );
        }
        format!(
            "camera-signed: {} of {} frames in {} GOPs match the digests signed by camera node {}{}{}",
            r.frames_verified,
            r.frames_total,
            r.gops_verified,
            r.camera_peer,
            r.camera_name
                .map(|n| format!(" ({n:?}, certificate checked)"))
                .unwrap_or_default(),
            if r.gops_unattested > 0 {
                format!("; {} GOPs not recorded whole are unattested", r.gops_unattested)
            } else {
                String::new()
            }
        )
    } else if args.allow_unattested {
        eprintln!(
            "mesh: warning: no camera signatures ({} missing): the frames rest on the NVR's word alone (--allow-unattested)",
            attest.display()
        );
        "camera-signed: no attestations with this export".into()
    } else {
        bail!(
            "no camera signatures: {} is missing, so only the NVR vouches for the frames (pass --attest FILE, or --allow-unattested to accept that)",
            attest.display()
        );
    };
    // The NVR's certificate, at its asserted time (checked against the camera's above).
    let who = match &root {
        Some((root, id)) => {
            let name = manifest::verify_signer_cert(&m, root, id)?;
            format!("NVR {name:?} of fleet {id} (certificate checked against the fleet root)")
        }
        None if args.allow_unknown_signer => {
            eprintln!("mesh: warning: no fleet root: the NVR's certificate was NOT checked (--allow-unknown-signer)");
            "a key whose certificate was NOT checked (no fleet root)".into()
        }
        None => bail!(
            "no fleet root here, so nothing vouches for the NVR that signed this manifest: run in a data directory with fleet.toml or pass --fleet-root (--allow-unknown-signer accepts the manifest's own key)"
        ),
    };
    println!(
        "OK: {} segments ({} bytes){} match the manifest of {} {} .. {}, signed by {} ({who})",
        report.segments,
        report.bytes,
        if report.export_checked { " and the MP4" } else { "" },
        m.body.camera,
        fmt_time(m.body.from_us),
        fmt_time(m.body.to_us),
        report.signer
    );
    println!("{camera_line}");
    if !report.export_checked {
        eprintln!("mesh: warning: the MP4 was not checked (not found; pass --export FILE)");
    }
    Ok(())
}

/// Peers revoked in the fleet-state log of data directory `dir` (read-only): when
/// (unix s, the earliest revocation) and why. Empty without a fleet root or a log.
fn revocations(dir: &Path, fleet: &Option<(String, String)>) -> HashMap<PeerId, (i64, String)> {
    use camesh_node::auth::fleetlog::{Effect, FleetLog};
    let mut out: HashMap<PeerId, (i64, String)> = HashMap::new();
    let Some((id, root)) = fleet.as_ref() else { return out };
    let Ok(key) = camesh_node::auth::fleet::root_from_text(root) else {
        return out;
    };
    let Ok(bytes) = std::fs::read(dir.join(camesh_node::auth::statefile::STATE_FILE)) else {
        return out;
    };
    let mut log = FleetLog::new(id, key);
    for e in camesh_node::auth::statefile::parse(&bytes).0 {
        if let Ok(c) = log.apply(&e) {
            if let Effect::Revocation { peers, reason, .. } = c.effect {
                for p in peers {
                    let at = out.get(&p).map_or(c.issued_unix_s, |(t, _)| (*t).min(c.issued_unix_s));
                    out.insert(p, (at, reason.clone()));
                }
            }
        }
    }
    out
}

/// Why `peer` counts as revoked for a manifest asserted made at `created_us`.
fn revoked_reason(revoked: &HashMap<PeerId, (i64, String)>, peer: &PeerId, created_us: i64) -> Option<String> {
    let (at, reason) = revoked.get(peer)?;
    let when = if at.saturating_mul(1_000_000) <= created_us {
        "before the manifest's asserted creation time"
    } else {
        "after the manifest's asserted creation time, so its key may have signed this since"
    };
    Some(format!(
        "(this data directory's fleet-state log: on {}, {when} {}; reason: {reason})",
        camesh_node::clock::rfc3339_s(*at),
        fmt_time(created_us)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let now = 1_700_000_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-5m", now), Ok(now - 300_000_000));
        assert_eq!(parse_time("90s ago", now), Ok(now - 90_000_000));
        assert_eq!(parse_time("1700000000.5", now), Ok(1_700_000_000_500_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000_000));
        assert_eq!(parse_time("2023-11-14 22:13:20", now), Ok(1_700_000_000_000_000));
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(parse_time("-5 parsecs", now).is_err());
        assert_eq!(fmt_time(1_700_000_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
