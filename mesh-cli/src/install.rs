//! `mesh grant-install <grant>`: puts a grant into any node's data directory (a laptop's,
//! a camera's, an NVR's), without starting a peer.
//!
//! The fleet comes from `<dir>/fleet.toml` (a laptop), else `<dir>/config.toml`
//! (`node.fleet_id`, `node.fleet_root`, as `camesh-node init` writes them), else
//! `--fleet`/`--fleet-root`. The grant is verified for this directory's identity
//! (`identity.key`) before it is written to `<dir>/grants/<serial>.grant`, whole; a node
//! running on the directory picks it up within seconds (`Trust::reload_from_disk`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use camesh_node::auth::{self, fleet::root_from_text, grant, trust::store_grant};
use camesh_node::identity::KEY_FILE;

use crate::fleet::{fleet_file, read_grant};

/// Where the fleet of a data directory was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FleetOf {
    id: String,
    root: String,
    from: &'static str,
}

/// `node.fleet_id` and `node.fleet_root` of `<dir>/config.toml`, if both are set.
fn from_config(dir: &Path) -> Option<FleetOf> {
    let text = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    let node = v.get("node")?;
    let field = |k: &str| {
        node.get(k)
            .and_then(toml::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(FleetOf {
        id: field("fleet_id")?,
        root: field("fleet_root")?,
        from: "config.toml",
    })
}

fn fleet_of(dir: &Path, fleet: Option<&str>, root: Option<&str>) -> Result<FleetOf> {
    if let Some(ff) = fleet_file(dir) {
        return Ok(FleetOf {
            id: ff.fleet_id,
            root: ff.root,
            from: "fleet.toml",
        });
    }
    if let Some(f) = from_config(dir) {
        return Ok(f);
    }
    match (fleet, root) {
        (Some(id), Some(root)) => Ok(FleetOf {
            id: id.to_owned(),
            root: root.to_owned(),
            from: "--fleet/--fleet-root",
        }),
        _ => bail!(
            "no fleet for {}: no fleet.toml, no config.toml with node.fleet_id and node.fleet_root, and no --fleet/--fleet-root",
            dir.display()
        ),
    }
}

/// Verifies `grant` (text or file) for the identity in `dir` and stores it there.
pub fn grant_install(dir: &Path, grant_arg: &str, fleet: Option<&str>, root: Option<&str>) -> Result<()> {
    let f = fleet_of(dir, fleet, root)?;
    let root_key = root_from_text(&f.root).map_err(|e| anyhow!("fleet root from {}: {e}", f.from))?;
    if !dir.join(KEY_FILE).exists() {
        bail!(
            "no node identity in {} ({KEY_FILE}): install the grant in the holder's data directory",
            dir.display()
        );
    }
    let me = camesh_node::identity::load_or_create(dir)?.public().to_peer_id();
    let g = read_grant(grant_arg)?;
    let info = grant::verify(&g, &root_key, &f.id, &me, auth::now_s())
        .map_err(|e| anyhow!("not installed: {e} (this data directory is {me}, fleet {})", f.id))?;
    let path = store_grant(dir, &g, info.chain[0]).with_context(|| format!("writing into {}", dir.display()))?;
    println!(
        "installed grant {:016x}: {} on {} into {}",
        info.chain[0],
        info.rights,
        info.cameras.join(","),
        path.display()
    );
    eprintln!("a node running on this directory picks it up within seconds, without a restart");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_comes_from_fleet_toml_then_config_toml_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = fleet_of(dir.path(), None, None).expect_err("nothing");
        let e = e.to_string();
        assert!(
            e.contains("fleet.toml") && e.contains("config.toml") && e.contains("--fleet"),
            "{e}"
        );
        let flags = fleet_of(dir.path(), Some("a"), Some("R")).expect("flags");
        assert_eq!(flags.from, "--fleet/--fleet-root");
        std::fs::write(
            dir.path().join("config.toml"),
            "[node]\nrole = \"camera\"\nfleet_id = \"bus\"\nfleet_root = \"ROOT\"\n",
        )
        .expect("written");
        let c = fleet_of(dir.path(), Some("a"), Some("R")).expect("config");
        assert_eq!((c.id.as_str(), c.root.as_str(), c.from), ("bus", "ROOT", "config.toml"));
        std::fs::write(dir.path().join("fleet.toml"), "fleet_id = \"lap\"\nroot = \"R2\"\n").expect("written");
        assert_eq!(fleet_of(dir.path(), None, None).expect("fleet.toml").id, "lap");
    }
}
