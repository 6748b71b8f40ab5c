//! Picking up what was installed into a running node's data folder: grants
//! (`<dir>/grants/*.grant`, written by `mesh grant-install`, an admin's provisioning or
//! the grant protocol) and a renewed membership certificate (`<dir>/membership.cert`).
//!
//! [`Trust::reload_from_disk`] is called at load and then every few seconds by the node
//! (`crate::node`). Each file is remembered by (name, modification time, length), so an
//! unchanged file is not read or verified again; a changed one is. A grant is added when
//! it verifies for this node and is not held already (by serial); a certificate replaces
//! the one held when it verifies and lasts longer. When anything was added the trust
//! store ticks, so the tasks waiting on [`Trust::subscribe`] (the NVR's recording loop,
//! open streams) look again at once. A grant whose file is deleted is dropped (unless
//! another file holds it): deleting the file is how an operator takes a grant off a
//! running node. A certificate whose file vanishes is kept until it expires.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use camesh_proto::pb;

use super::super::{cert, signed, CERT_FILE, GRANTS_DIR};
use super::{Trust, MAX_OWN_GRANTS};

/// What a file looked like when it was last read: modification time and length (and
/// inode: a file renamed into place is new even within one tick of the file clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

/// A file as last read, and the grant serial it gave this node (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    stamp: Stamp,
    serial: Option<u64>,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        m.is_file().then(|| Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            ino: m.ino(),
        })
    }
}

/// Writes a grant into `<dir>/grants/<serial>.grant`, whole or not at all (a temporary
/// file renamed into place, so a running node never reads half a grant).
pub fn store_grant(dir: &Path, g: &pb::Signed, serial: u64) -> std::io::Result<PathBuf> {
    let folder = dir.join(GRANTS_DIR);
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{serial:016x}.grant"));
    let tmp = folder.join(format!(".{serial:016x}.grant.tmp"));
    std::fs::write(&tmp, signed::encode(g))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

impl Trust {
    /// Re-reads the certificate and grants in the data folder; adds grants that are new
    /// and valid, drops those whose files were deleted, installs a certificate that lasts
    /// longer than the one held. Returns how many changes it made (and ticks
    /// [`Trust::subscribe`] if any).
    pub fn reload_from_disk(&self) -> usize {
        self.reload(true)
    }

    /// [`Trust::reload_from_disk`]; `audit`: record installed grants in the audit log
    /// (not when loading what was there at start).
    pub(super) fn reload(&self, audit: bool) -> usize {
        let Some(dir) = self.dir.clone() else { return 0 };
        let mut installed = usize::from(self.reload_cert(&dir));
        installed += self.reload_grants(&dir, audit);
        if installed > 0 {
            self.tick();
        }
        installed
    }

    /// Whether the file at `path` (known as `key`) changed since it was last read; if so
    /// it is remembered as read now.
    fn changed_since_seen(&self, key: &str, path: &Path) -> bool {
        let Some(stamp) = Stamp::of(path) else { return false };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.insert(key.to_owned(), Seen { stamp, serial: None });
        match before {
            Some(b) if b.stamp == stamp => {
                seen.insert(key.to_owned(), b);
                false
            }
            _ => true,
        }
    }

    fn remember_serial(&self, key: &str, serial: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(key) {
            s.serial = Some(serial);
        }
    }

    fn reload_cert(&self, dir: &Path) -> bool {
        let path = dir.join(CERT_FILE);
        if !self.changed_since_seen(CERT_FILE, &path) {
            return false;
        }
        let Ok(bytes) = std::fs::read(&path) else { return false };
        let checked = signed::decode("certificate", &bytes)
            .and_then(|s| cert::verify(&s, &self.root, &self.fleet_id, &self.me, self.at()).map(|info| (s, info)));
        let (s, info) = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "membership certificate in the data folder is not usable");
                return false;
            }
        };
        let mut own = self.own_cert.write().unwrap_or_else(|e| e.into_inner());
        let held = own
            .as_ref()
            .and_then(|c| cert::verify(c, &self.root, &self.fleet_id, &self.me, self.at()).ok());
        if own.as_ref() == Some(&s) || held.is_some_and(|h| h.not_after_unix_s >= info.not_after_unix_s) {
            return false;
        }
        *own = Some(s);
        drop(own);
        tracing::info!(role = ?info.role, expires = info.not_after_unix_s, file = %path.display(), "membership certificate installed");
        true
    }

    fn reload_grants(&self, dir: &Path, audit: bool) -> usize {
        let folder = dir.join(GRANTS_DIR);
        let Ok(rd) = std::fs::read_dir(&folder) else { return 0 };
        let mut names = HashSet::new();
        let mut added = 0;
        for entry in rd.flatten().take(2 * MAX_OWN_GRANTS) {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".grant") {
                continue;
            }
            let key = format!("{GRANTS_DIR}/{name}");
            names.insert(key.clone());
            if !self.changed_since_seen(&key, &path) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(g) = signed::decode("grant", &bytes) else {
                tracing::warn!(file = %path.display(), "not a grant; ignored");
                continue;
            };
            if let Some(serial) = self.held_serial(&g) {
                self.remember_serial(&key, serial);
                continue;
            }
            match self.add_grant(g, false) {
                Ok(info) => {
                    self.remember_serial(&key, info.chain[0]);
                    added += 1;
                    tracing::info!(serial = %format!("{:016x}", info.chain[0]), rights = %info.rights, cameras = %info.cameras.join(","), file = %path.display(), "grant installed");
                    if audit {
                        self.audit.record(
                            "grant-installed",
                            &self.me.to_string(),
                            &info.cameras.join(","),
                            &format!("{} serial {:016x}", info.rights, info.chain[0]),
                        );
                    }
                }
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "grant in the data folder ignored"),
            }
        }
        // Forget files that are gone (bounds the memory; a file put back is read again),
        // and drop the grants only they held.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(String, Option<u64>)> = seen
            .iter()
            .filter(|(k, _)| k.starts_with(GRANTS_DIR) && !names.contains(*k))
            .map(|(k, s)| (k.clone(), s.serial))
            .collect();
        for (k, _) in &gone {
            seen.remove(k);
        }
        let still: HashSet<u64> = seen.values().filter_map(|s| s.serial).collect();
        drop(seen);
        let dropped: Vec<u64> = gone
            .into_iter()
            .filter_map(|(_, s)| s)
            .filter(|s| !still.contains(s))
            .collect();
        if !dropped.is_empty() {
            let mut gs = self.grants.write().unwrap_or_else(|e| e.into_inner());
            gs.retain(|(_, i)| !dropped.contains(&i.chain[0]));
            drop(gs);
            for serial in dropped {
                tracing::info!(serial = %format!("{serial:016x}"), "grant file deleted: grant dropped");
                self.audit.record(
                    "grant-removed",
                    &self.me.to_string(),
                    "",
                    &format!("serial {serial:016x}: file deleted"),
                );
            }
            added += 1;
        }
        added
    }

    /// The serial of this exact signed grant, if it is held already.
    fn held_serial(&self, g: &pb::Signed) -> Option<u64> {
        let gs = self.grants.read().unwrap_or_else(|e| e.into_inner());
        gs.iter().find(|(held, _)| held == g).map(|(_, i)| i.chain[0])
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use libp2p::PeerId;

    use super::super::super::cert::CertRequest;
    use super::super::super::grant::{self, GrantRequest, Rights};
    use super::super::super::now_s;
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        root: Keypair,
        me: PeerId,
    }

    fn fixture() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            root: Keypair::generate_ed25519(),
            me: PeerId::random(),
        }
    }

    impl Fixture {
        fn trust(&self) -> Trust {
            Trust::load(self.dir.path(), "f", self.root.public(), self.me)
        }

        fn grant(&self, holder: PeerId, camera: &str) -> pb::Signed {
            grant::issue(
                &self.root,
                "f",
                &GrantRequest {
                    holder,
                    cameras: vec![camera.into()],
                    tags: vec![],
                    rights: Rights::LIVE.union(Rights::RECORD),
                    not_before_unix_s: now_s() - 60,
                    not_after_unix_s: now_s() + 600,
                },
                None,
            )
        }

        fn write_grant(&self, name: &str, g: &pb::Signed) {
            let folder = self.dir.path().join(GRANTS_DIR);
            std::fs::create_dir_all(&folder).expect("folder");
            rewrite(&folder.join(name), &signed::encode(g));
        }

        fn write_cert(&self, c: &pb::Signed) {
            rewrite(&self.dir.path().join(CERT_FILE), &signed::encode(c));
        }

        fn cert(&self, valid_s: i64) -> pb::Signed {
            cert::issue(
                &self.root,
                "f",
                &CertRequest {
                    peer: self.me,
                    role: pb::MemberRole::Nvr,
                    name: "nvr".into(),
                    valid_s,
                    cameras: vec![],
                },
                now_s(),
            )
        }
    }

    /// Writes `bytes` in place, with a modification time later than any before it (the
    /// file clock ticks coarsely: two writes in a row may otherwise look alike).
    fn rewrite(path: &Path, bytes: &[u8]) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        std::fs::write(path, bytes).expect("written");
        let t = SystemTime::now() + std::time::Duration::from_secs(NEXT.fetch_add(1, Ordering::Relaxed));
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("mtime set");
    }

    #[test]
    fn a_grant_written_after_load_is_picked_up_once_and_ticks() {
        let f = fixture();
        let t = f.trust();
        let mut changes = t.subscribe();
        changes.borrow_and_update();
        assert_eq!(t.reload_from_disk(), 0, "nothing there yet");
        assert!(t.grant_for("cam1", Rights::RECORD).is_none());
        let g = f.grant(f.me, "cam1");
        f.write_grant("a.grant", &g);
        assert_eq!(t.reload_from_disk(), 1);
        assert!(changes.has_changed().expect("sender alive"), "subscribers are told");
        assert_eq!(t.grant_for("cam1", Rights::RECORD), Some(g.clone()));
        changes.borrow_and_update();
        // Unchanged: nothing new, no tick. The same grant under another name: held already.
        assert_eq!(t.reload_from_disk(), 0);
        f.write_grant("copy.grant", &g);
        assert_eq!(t.reload_from_disk(), 0);
        assert!(!changes.has_changed().expect("sender alive"));
        // What the grant protocol stores is not added twice either.
        t.add_grant(g.clone(), true).expect("valid");
        assert_eq!(t.reload_from_disk(), 0);
        assert_eq!(t.grants.read().expect("lock").len(), 1);
    }

    #[test]
    fn a_deleted_grant_file_drops_the_grant_unless_another_file_holds_it() {
        let f = fixture();
        let t = f.trust();
        let g = f.grant(f.me, "cam1");
        f.write_grant("a.grant", &g);
        f.write_grant("b.grant", &g);
        assert_eq!(t.reload_from_disk(), 1);
        let grants = f.dir.path().join(GRANTS_DIR);
        std::fs::remove_file(grants.join("a.grant")).expect("rm");
        assert_eq!(t.reload_from_disk(), 0, "b.grant still holds it");
        assert!(t.grant_for("cam1", Rights::RECORD).is_some());
        let mut changes = t.subscribe();
        changes.borrow_and_update();
        std::fs::remove_file(grants.join("b.grant")).expect("rm");
        assert_eq!(t.reload_from_disk(), 1);
        assert!(t.grant_for("cam1", Rights::RECORD).is_none(), "dropped");
        assert!(changes.has_changed().expect("sender alive"), "subscribers are told");
        assert!(t.audit.tail(10).iter().any(|e| e.event == "grant-removed"));
        // Put back: held again.
        f.write_grant("a.grant", &g);
        assert_eq!(t.reload_from_disk(), 1);
        assert!(t.grant_for("cam1", Rights::RECORD).is_some());
    }

    #[test]
    fn grants_for_others_and_garbage_are_skipped_and_not_read_again_until_they_change() {
        let f = fixture();
        let t = f.trust();
        f.write_grant("other.grant", &f.grant(PeerId::random(), "cam1"));
        rewrite(&f.dir.path().join(GRANTS_DIR).join("junk.grant"), b"not a grant");
        f.write_grant("notes.txt", &f.grant(f.me, "cam9"));
        assert_eq!(t.reload_from_disk(), 0);
        assert!(t.grant_for("cam9", Rights::LIVE).is_none(), "only *.grant files");
        let seen = t.seen.lock().expect("lock").len();
        assert_eq!(seen, 2, "both grant files remembered as read");
        // The bad file is replaced by a good one (another length): read again.
        f.write_grant("junk.grant", &f.grant(f.me, "cam2"));
        assert_eq!(t.reload_from_disk(), 1);
        assert!(t.grant_for("cam2", Rights::LIVE).is_some());
        // A file removed is forgotten.
        std::fs::remove_file(f.dir.path().join(GRANTS_DIR).join("other.grant")).expect("removed");
        t.reload_from_disk();
        assert!(!t.seen.lock().expect("lock").contains_key("grants/other.grant"));
    }

    #[test]
    fn a_longer_certificate_replaces_the_one_held_and_a_shorter_one_does_not() {
        let f = fixture();
        let short = f.cert(600);
        f.write_cert(&short);
        let t = f.trust();
        let first = t.own_cert_info().expect("loaded").not_after_unix_s;
        let long = f.cert(7200);
        f.write_cert(&long);
        assert_eq!(t.reload_from_disk(), 1);
        assert!(t.own_cert_info().expect("installed").not_after_unix_s > first);
        let shorter = f.cert(60);
        f.write_cert(&shorter);
        assert_eq!(t.reload_from_disk(), 0);
        assert_eq!(t.own_cert(), Some(long));
        // A certificate for another peer is refused.
        let stranger = cert::issue(
            &f.root,
            "f",
            &CertRequest {
                peer: PeerId::random(),
                role: pb::MemberRole::Nvr,
                name: "x".into(),
                valid_s: 86_400,
                cameras: vec![],
            },
            now_s(),
        );
        f.write_cert(&stranger);
        assert_eq!(t.reload_from_disk(), 0);
    }

    #[test]
    fn stored_grants_are_whole_files() {
        let f = fixture();
        let g = f.grant(f.me, "cam1");
        let path = store_grant(f.dir.path(), &g, 7).expect("stored");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("0000000000000007.grant")
        );
        assert_eq!(std::fs::read(&path).expect("read"), signed::encode(&g));
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("folder"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
