//! Evidence locks: time ranges of a camera that retention must never delete. They
//! cannot be derived from video, so `locks.json` is the truth (written atomically: temp
//! file, fsync, rename, fsync of the folder) and the `locks` sled tree a mirror; a lost or
//! rebuilt index never loses a lock. Lock changes are serialised with retention's plan.

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};

use super::{check_camera, Index, IndexError, OpenReport};
use crate::clock::now_unix_us;
use crate::record::LOCKS_FILE;

/// Largest `locks.json` read (a lock is ~150 bytes: this is ~100k locks).
const MAX_LOCKS_FILE: u64 = 16 << 20;

/// A time range of one camera that retention must never delete (evidence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLock {
    pub id: u64,
    pub camera: String,
    pub from_us: i64,
    pub to_us: i64,
    /// Why (an incident number, who asked): for the audit trail.
    pub reason: String,
    pub created_us: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocksFile {
    version: u32,
    locks: Vec<EvidenceLock>,
}

impl Index {
    fn locks_path(&self) -> PathBuf {
        self.root.join(LOCKS_FILE)
    }

    fn sled_locks(&self) -> Result<Vec<EvidenceLock>, IndexError> {
        self.locks
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(self.db_err("read locks"))?;
                serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt {
                    key: format!("lock {k:02x?}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// `locks.json` is the truth; sled mirrors it. A missing file is (re)written from
    /// sled; an unreadable one is kept aside and sled's copy used.
    pub(super) fn load_locks(&self, report: &mut OpenReport) -> Result<(), IndexError> {
        let path = self.locks_path();
        let from_file = match read_bounded(&path) {
            Ok(Some(bytes)) => match serde_json::from_slice::<LocksFile>(&bytes) {
                Ok(f) => Some(f.locks),
                Err(e) => {
                    let aside = path.with_extension(format!("json.bad-{}", now_unix_us()));
                    let _ = std::fs::rename(&path, &aside);
                    report.warnings.push(format!(
                        "evidence locks file {} is unreadable ({e}); kept as {} and the index's copy used",
                        path.display(),
                        aside.display()
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => return Err(e),
        };
        match from_file {
            Some(locks) => self.mirror_locks(&locks),
            None => {
                let locks = self.sled_locks()?;
                write_locks_file(&path, &locks)
            }
        }
    }

    fn mirror_locks(&self, locks: &[EvidenceLock]) -> Result<(), IndexError> {
        self.locks.clear().map_err(self.db_err("clear locks"))?;
        for l in locks {
            let v = serde_json::to_vec(l).map_err(|e| IndexError::Corrupt {
                key: format!("lock {}", l.id),
                reason: e.to_string(),
            })?;
            self.locks
                .insert(l.id.to_be_bytes(), v)
                .map_err(self.db_err("write a lock"))?;
        }
        Ok(())
    }

    /// The evidence locks.
    pub fn locks(&self) -> Result<Vec<EvidenceLock>, IndexError> {
        let _g = self.guard();
        self.sled_locks()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.locks_guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The locks, held so none is added or removed until the guard drops (retention
    /// plans and deletes under it).
    pub fn locks_for_retention(&self) -> Result<(MutexGuard<'_, ()>, Vec<EvidenceLock>), IndexError> {
        let g = self.guard();
        Ok((g, self.sled_locks()?))
    }

    /// Locks `[from_us, to_us]` of a camera against retention. Durable when this returns.
    pub fn add_lock(&self, camera: &str, from_us: i64, to_us: i64, reason: &str) -> Result<EvidenceLock, IndexError> {
        check_camera(camera)?;
        if from_us > to_us {
            return Err(IndexError::InvalidRange { from_us, to_us });
        }
        let _g = self.guard();
        let mut locks = self.sled_locks()?;
        let lock = EvidenceLock {
            id: locks.iter().map(|l| l.id).max().unwrap_or(0) + 1,
            camera: camera.to_owned(),
            from_us,
            to_us,
            reason: reason.to_owned(),
            created_us: now_unix_us(),
        };
        locks.push(lock.clone());
        write_locks_file(&self.locks_path(), &locks)?;
        self.mirror_locks(&locks)?;
        self.flush()?;
        Ok(lock)
    }

    /// Removes a lock; `false` if there was none with that id.
    pub fn remove_lock(&self, id: u64) -> Result<bool, IndexError> {
        let _g = self.guard();
        let mut locks = self.sled_locks()?;
        let before = locks.len();
        locks.retain(|l| l.id != id);
        if locks.len() == before {
            return Ok(false);
        }
        write_locks_file(&self.locks_path(), &locks)?;
        self.mirror_locks(&locks)?;
        self.flush()?;
        Ok(true)
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, IndexError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IndexError::Io {
                path: path.to_owned(),
                op: "open",
                source,
            })
        }
    };
    let mut buf = Vec::new();
    file.take(MAX_LOCKS_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| IndexError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        })?;
    if buf.len() as u64 > MAX_LOCKS_FILE {
        return Err(IndexError::Locks {
            path: path.to_owned(),
            reason: format!("larger than {MAX_LOCKS_FILE} bytes"),
        });
    }
    Ok(Some(buf))
}

/// Writes `locks.json` atomically: a temp file, fsync, rename, fsync of the folder.
fn write_locks_file(path: &Path, locks: &[EvidenceLock]) -> Result<(), IndexError> {
    use std::io::Write;
    let body = serde_json::to_vec_pretty(&LocksFile {
        version: 1,
        locks: locks.to_vec(),
    })
    .map_err(|e| IndexError::Locks {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let io = |op: &'static str| {
        let path = tmp.clone();
        move |source| IndexError::Io { path, op, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("create"))?;
    f.write_all(&body).map_err(io("write"))?;
    f.sync_all().map_err(io("fsync"))?;
    std::fs::rename(&tmp, path).map_err(io("rename"))?;
    if let Some(dir) = path.parent() {
        crate::record::segment::sync_dir(dir)?;
    }
    Ok(())
}
