//! The patched upstream crates in vendor/ are the ones Cargo builds.
//!
//! The workspace's `[patch.crates-io]` points four crates at vendor/. If Cargo.lock ever moves
//! past a vendored version (a `cargo update`, a libp2p bump), Cargo only warns that the patch
//! is unused, builds the published crate, and the camesh change silently reverts. Here that is
//! a failure naming the crate and what to do: every patched crate in the dependency graph comes
//! from its vendor/ folder, Cargo records no `[[patch.unused]]`, and every patch is recorded in
//! vendor/patches (scripts/vendor.sh re-applies those; vendor/README.md).
//!
//! Data flow: the workspace files and `cargo metadata --offline` (IO, nothing is built) feed
//! [`problems`], a pure judgement that returns one sentence per problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One `[patch.<registry>]` entry with a `path`.
#[derive(Debug, Clone, PartialEq)]
struct Patch {
    /// The crate name (the key of the entry, or its `package`).
    name: String,
    /// The folder as written in Cargo.toml, relative to the workspace root.
    path: PathBuf,
    /// The `[package] version` of that folder's Cargo.toml.
    version: String,
}

/// What the judgement reads: the workspace's patches and the patch files recorded for them.
#[derive(Debug)]
struct Workspace {
    patches: Vec<Patch>,
    /// File names in vendor/patches, e.g. `libp2p-quic-0.14.0.patch`.
    recorded: Vec<String>,
}

/// One sentence per problem (empty: every patch is in use and recorded).
///
/// `metadata` is `cargo metadata --format-version 1` output, `lock` the Cargo.lock text Cargo
/// resolved with, `stderr` what `cargo metadata` printed (Cargo's own "not used" warning).
fn problems(ws: &Workspace, metadata: &Value, lock: &str, stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let root = Path::new(metadata["workspace_root"].as_str().unwrap_or_default());
    let packages = metadata["packages"].as_array().map(Vec::as_slice).unwrap_or_default();

    for patch in &ws.patches {
        let dir = root.join(&patch.path);
        let shown = patch.path.display();
        let named: Vec<&Value> = packages.iter().filter(|p| p["name"] == patch.name.as_str()).collect();
        if named.is_empty() {
            out.push(format!(
                "[patch] {} = {shown} ({}): no crate named {} is in the dependency graph any more, so the \
                 patch does nothing. Drop it (vendor/README.md, \"Dropping a patch\").",
                patch.name, patch.version, patch.name
            ));
        }
        for package in named {
            let version = package["version"].as_str().unwrap_or("?");
            let from_vendor = package["source"].is_null()
                && package["manifest_path"]
                    .as_str()
                    .is_some_and(|m| Path::new(m).parent() == Some(dir.as_path()));
            if !from_vendor {
                let source = package["source"].as_str().unwrap_or("another path");
                out.push(format!(
                    "{} {version} is built from {source}, not from {shown} ({}): Cargo does not use the \
                     patch there and the camesh change is silently gone. Move the patch to {version} \
                     (scripts/vendor.sh --to {version} {}, vendor/README.md) or undo the update that \
                     moved {} past {}.",
                    patch.name, patch.version, patch.name, patch.name, patch.version
                ));
            }
        }
        let file = format!("{}-{}.patch", patch.name, patch.version);
        if patch.path.starts_with("vendor") && !ws.recorded.contains(&file) {
            out.push(format!(
                "{shown} ({} {}) has no vendor/patches/{file}: nobody can re-vendor it. Record it with \
                 scripts/vendor.sh --diff {}.",
                patch.name, patch.version, patch.name
            ));
        }
    }

    for file in &ws.recorded {
        let patched = ws
            .patches
            .iter()
            .any(|p| format!("{}-{}.patch", p.name, p.version) == *file);
        if !patched {
            out.push(format!(
                "vendor/patches/{file} matches no [patch] entry of a vendored crate with that version: \
                 add the entry or delete the file (vendor/README.md)."
            ));
        }
    }

    for (name, version) in unused_in_lock(lock) {
        out.push(format!(
            "Cargo.lock lists {name} {version} under [[patch.unused]]: Cargo builds the published crate, \
             not the vendored one. Move the patch to the version in use (scripts/vendor.sh --to VERSION \
             {name}) or drop it (vendor/README.md)."
        ));
    }

    for line in stderr.lines().filter(|l| l.contains("was not used in the crate graph")) {
        out.push(format!("cargo: {}", line.trim()));
    }
    out
}

/// `(name, version)` of each `[[patch.unused]]` entry of a Cargo.lock.
fn unused_in_lock(lock: &str) -> Vec<(String, String)> {
    let Ok(lock) = lock.parse::<toml::Table>() else {
        return vec![("Cargo.lock".into(), "(unreadable TOML)".into())];
    };
    let unused = lock
        .get("patch")
        .and_then(|p| p.get("unused"))
        .and_then(|u| u.as_array());
    unused
        .into_iter()
        .flatten()
        .map(|entry| {
            let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            (field("name"), field("version"))
        })
        .collect()
}

// ---- IO: the workspace on disk and cargo ----

/// The workspace root (tests/ is one of its members).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent: the workspace root")
        .to_path_buf()
}

/// The `[patch.*]` entries with a path, from `root`/Cargo.toml.
fn read_workspace(root: &Path) -> Workspace {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("read the workspace Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("the workspace Cargo.toml is TOML");
    let mut patches = Vec::new();
    let registries = manifest.get("patch").and_then(|p| p.as_table());
    for (_registry, entries) in registries.into_iter().flatten() {
        for (key, entry) in entries.as_table().into_iter().flatten() {
            let Some(path) = entry.get("path").and_then(|p| p.as_str()) else {
                continue;
            };
            let name = entry.get("package").and_then(|p| p.as_str()).unwrap_or(key).to_string();
            let vendored = std::fs::read_to_string(root.join(path).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("[patch] {key} = {path}: cannot read its Cargo.toml: {e}"));
            let vendored: toml::Table = vendored.parse().expect("a vendored Cargo.toml is TOML");
            let version = vendored["package"]["version"].as_str().unwrap_or("?").to_string();
            patches.push(Patch {
                name,
                path: PathBuf::from(path),
                version,
            });
        }
    }
    let mut recorded: Vec<String> = std::fs::read_dir(root.join("vendor/patches"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".patch"))
        .collect();
    recorded.sort();
    Workspace { patches, recorded }
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().expect("run rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text.lines().find_map(|l| l.strip_prefix("host: "));
    host.expect("rustc -vV names the host").trim().to_string()
}

/// `cargo metadata --offline` of the workspace at `root`: (JSON, stderr). `locked`: refuse to
/// touch Cargo.lock (the real workspace); without it Cargo rewrites the lock (a scratch copy).
///
/// Filtered to the host platform: a full graph would need the sources of every platform's
/// crates (Windows and others), which a Linux build never downloads, and `--offline` cannot.
/// Cargo.lock's `[[patch.unused]]` does not depend on the platform.
fn metadata(root: &Path, locked: bool) -> (Value, String) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--offline", "--filter-platform"])
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .current_dir(root);
    if locked {
        cmd.arg("--locked");
    }
    let out = cmd.output().expect("run cargo metadata");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "cargo metadata failed in {}:\n{stderr}",
        root.display()
    );
    let json = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    (json, stderr)
}

fn check(root: &Path, locked: bool) -> Vec<String> {
    let ws = read_workspace(root);
    let (json, stderr) = metadata(root, locked);
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("cargo metadata leaves a Cargo.lock");
    problems(&ws, &json, &lock, &stderr)
}

/// Copies what Cargo reads of a workspace (everything but build output, git and fixtures).
fn copy_workspace(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's folder");
    for entry in std::fs::read_dir(from).expect("read a workspace folder") {
        let entry = entry.expect("a readable folder entry");
        let name = entry.file_name();
        if [".git", "target", "fixtures"].iter().any(|skip| name == *skip) {
            continue;
        }
        let file_type = entry.file_type().expect("a folder entry has a type");
        if file_type.is_dir() {
            copy_workspace(&entry.path(), &to.join(&name));
        } else if file_type.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy a workspace file");
        }
    }
}

#[test]
fn every_patched_crate_is_built_from_vendor() {
    let root = workspace_root();
    let ws = read_workspace(&root);
    assert!(
        !ws.patches.is_empty(),
        "the workspace Cargo.toml has no [patch] entries: if every patch was dropped, drop this test too"
    );
    let problems = check(&root, true);
    assert!(
        problems.is_empty(),
        "the vendored crates are not what Cargo builds:\n- {}",
        problems.join("\n- ")
    );
}

/// Removes dependency `name` from the workspace at `root` (its `[workspace.dependencies]` and
/// every member's dependency tables); returns how many entries went.
fn drop_dependency(root: &Path, name: &str) -> usize {
    let edit = |manifest_path: &Path, tables: &[&[&str]]| -> usize {
        let mut manifest: toml::Table = std::fs::read_to_string(manifest_path)
            .expect("read a Cargo.toml of the copy")
            .parse()
            .expect("a Cargo.toml is TOML");
        let mut removed = 0;
        for path in tables {
            let mut table = Some(&mut manifest);
            for key in *path {
                table = table.and_then(|t| t.get_mut(*key)).and_then(|v| v.as_table_mut());
            }
            removed += table.and_then(|t| t.remove(name)).is_some() as usize;
        }
        std::fs::write(
            manifest_path,
            toml::to_string(&manifest).expect("a TOML table serializes"),
        )
        .expect("write a Cargo.toml of the copy");
        removed
    };
    let mut removed = edit(&root.join("Cargo.toml"), &[&["workspace", "dependencies"]]);
    for member in read_workspace_members(root) {
        removed += edit(
            &root.join(member).join("Cargo.toml"),
            &[&["dependencies"], &["dev-dependencies"], &["build-dependencies"]],
        );
    }
    removed
}

/// `[workspace] members` of the workspace at `root`.
fn read_workspace_members(root: &Path) -> Vec<String> {
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("read the workspace Cargo.toml")
        .parse()
        .expect("the workspace Cargo.toml is TOML");
    let members = manifest["workspace"]["members"].as_array().cloned().unwrap_or_default();
    members.iter().filter_map(|m| m.as_str().map(String::from)).collect()
}

/// The check fails when a dependency change leaves a patch unused: in a scratch copy of the
/// workspace nothing depends on libp2p-stream any more but its `[patch]` entry stays, and
/// Cargo (offline: a smaller graph needs nothing new) records the patch as unused.
#[test]
fn a_patch_the_dependency_graph_no_longer_uses_fails_the_check() {
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let copy = scratch.path().join("workspace");
    copy_workspace(&workspace_root(), &copy);
    assert!(
        drop_dependency(&copy, "libp2p-stream") > 0,
        "the workspace depends on libp2p-stream"
    );

    let problems = check(&copy, false);
    let about = |name: &str| problems.iter().filter(|p| p.contains(name)).count();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("[patch] libp2p-stream = vendor/libp2p-stream (0.5.0-alpha): no crate")),
        "the patch nothing uses is named: {problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("Cargo.lock lists libp2p-stream 0.5.0-alpha under [[patch.unused]]")),
        "Cargo.lock's record of the unused patch is reported: {problems:#?}"
    );
    for used in ["libp2p-quic", "libp2p-tls", "libp2p-relay"] {
        assert_eq!(about(used), 0, "{used} is still patched and in use: {problems:#?}");
    }
}

/// What Cargo resolves after an update moves libp2p-quic past the vendored version: the
/// published crate from crates.io, and the vendored one recorded as unused (the shape cargo
/// metadata, Cargo.lock and cargo's warning had when a scratch copy's vendored libp2p-quic was
/// set below libp2p's requirement; not a test of its own because offline, the published crate
/// is only there once something downloaded it).
#[test]
fn a_crate_built_from_crates_io_instead_of_vendor_is_named_with_the_way_out() {
    let ws = Workspace {
        patches: vec![
            Patch {
                name: "libp2p-quic".into(),
                path: "vendor/libp2p-quic".into(),
                version: "0.14.0".into(),
            },
            Patch {
                name: "libp2p-tls".into(),
                path: "vendor/libp2p-tls".into(),
                version: "0.7.0".into(),
            },
        ],
        recorded: vec!["libp2p-quic-0.14.0.patch".into(), "libp2p-tls-0.7.0.patch".into()],
    };
    let metadata = serde_json::json!({
        "workspace_root": "/src/camesh",
        "packages": [
            {
                "name": "libp2p-quic",
                "version": "0.14.1",
                "source": "registry+https://github.com/rust-lang/crates.io-index",
                "manifest_path": "/home/ci/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/libp2p-quic-0.14.1/Cargo.toml"
            },
            {
                "name": "libp2p-tls",
                "version": "0.7.0",
                "source": null,
                "manifest_path": "/src/camesh/vendor/libp2p-tls/Cargo.toml"
            }
        ]
    });
    let lock = "version = 4\n\n[[patch.unused]]\nname = \"libp2p-quic\"\nversion = \"0.14.0\"\n";
    // As cargo 1.95 prints it.
    let stderr =
        "warning: patch `libp2p-quic v0.14.0 (/src/camesh/vendor/libp2p-quic)` was not used in the crate graph\n\
                  help: Check that the patched package version and available features are compatible\n";

    let problems = problems(&ws, &metadata, lock, stderr);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0]
            .starts_with("libp2p-quic 0.14.1 is built from registry+https://github.com/rust-lang/crates.io-index")
            && problems[0].contains("scripts/vendor.sh --to 0.14.1 libp2p-quic"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("Cargo.lock lists libp2p-quic 0.14.0 under [[patch.unused]]"),
        "{problems:#?}"
    );
    assert!(problems[2].contains("libp2p-quic v0.14.0"), "{problems:#?}");
}

#[test]
fn a_patch_without_its_recorded_file_or_a_file_without_its_patch_is_reported() {
    let ws = Workspace {
        patches: vec![Patch {
            name: "libp2p-relay".into(),
            path: "vendor/libp2p-relay".into(),
            version: "0.22.0".into(),
        }],
        recorded: vec!["libp2p-relay-0.21.0.patch".into()],
    };
    let metadata = serde_json::json!({
        "workspace_root": "/src/camesh",
        "packages": [{
            "name": "libp2p-relay",
            "version": "0.22.0",
            "source": null,
            "manifest_path": "/src/camesh/vendor/libp2p-relay/Cargo.toml"
        }]
    });
    let problems = problems(&ws, &metadata, "version = 4\n", "");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("has no vendor/patches/libp2p-relay-0.22.0.patch"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("vendor/patches/libp2p-relay-0.21.0.patch matches no [patch] entry"),
        "{problems:#?}"
    );
}
