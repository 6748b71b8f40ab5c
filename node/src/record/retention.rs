//! Retention policy (pure): which segments to delete, given their times and sizes, the
//! evidence locks, the clock, a maximum age and a disk quota.
//!
//! Rules, in order:
//! 1. Never delete a segment that is still being written (the newest video of a camera),
//!    nor one whose time span overlaps an evidence lock of its camera.
//! 2. Delete every other segment that ended before `now - max_age` (the camera's own
//!    maximum age when its policy sets one).
//! 3. For each camera with its own quota, while its recordings exceed it, delete its
//!    oldest remaining deletable segment.
//! 4. Then, while the recordings exceed the quota (less `must_free`, what a full disk
//!    needs), delete the oldest remaining deletable segment, across all cameras.
//! 5. If everything deletable is gone and the quota is still exceeded, say by how much
//!    and whether locked evidence is the reason. Recording of the newest video goes on
//!    regardless: the plan never asks to stop it.

use std::time::Duration;

/// One segment as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub camera: String,
    /// The segment's index key.
    pub start_us: i64,
    /// The time span of its content (first to last frame or gap marker).
    pub from_us: i64,
    pub to_us: i64,
    pub bytes: u64,
    /// Still being written: never deleted.
    pub open: bool,
}

/// A time range of a camera that must be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedRange {
    pub camera: String,
    pub from_us: i64,
    pub to_us: i64,
}

impl From<&super::index::EvidenceLock> for LockedRange {
    fn from(l: &super::index::EvidenceLock) -> Self {
        LockedRange {
            camera: l.camera.clone(),
            from_us: l.from_us,
            to_us: l.to_us,
        }
    }
}

/// How long and how much to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Delete segments whose content ended longer ago than this.
    pub max_age: Option<Duration>,
    /// Keep the recordings at or below this many bytes.
    pub quota_bytes: Option<u64>,
    /// Per-camera overrides: a camera's own maximum age, and its own quota (a share of
    /// the disk). Cameras not listed follow the shared values.
    pub cameras: Vec<CameraPolicy>,
}

/// One camera's own retention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CameraPolicy {
    pub camera: String,
    pub max_age: Option<Duration>,
    pub quota_bytes: Option<u64>,
}

impl Policy {
    fn camera(&self, camera: &str) -> Option<&CameraPolicy> {
        self.cameras.iter().find(|c| c.camera == camera)
    }
}

fn cutoff(now_us: i64, max_age: Duration) -> i64 {
    now_us.saturating_sub(i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX))
}

/// Why a segment goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Age,
    Quota,
    /// Freed because the disk is full (`must_free`).
    DiskFull,
}

/// One deletion: an index into the input slice and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub index: usize,
    pub reason: Reason,
}

/// What to delete and what is left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Oldest first.
    pub delete: Vec<Deletion>,
    pub freed_bytes: u64,
    /// Bytes left after the deletions.
    pub kept_bytes: u64,
    /// Bytes kept because they overlap an evidence lock.
    pub locked_bytes: u64,
    /// After deleting everything deletable, the recordings still exceed the target by
    /// this much (0: the target is met).
    pub over_target_by: u64,
    /// `over_target_by > 0` and locked segments are among what could not be deleted:
    /// "quota exceeded by locked evidence".
    pub exceeded_by_locked: bool,
}

fn overlaps(s: &SegmentInfo, l: &LockedRange) -> bool {
    s.camera == l.camera && s.from_us <= l.to_us && l.from_us <= s.to_us
}

/// Whether a segment overlaps any lock of its camera.
pub fn is_locked(s: &SegmentInfo, locks: &[LockedRange]) -> bool {
    locks.iter().any(|l| overlaps(s, l))
}

/// Plans deletions (pure). `must_free` asks for that many bytes below what is recorded
/// now (a full disk), on top of the quota.
pub fn plan(segments: &[SegmentInfo], locks: &[LockedRange], now_us: i64, policy: &Policy, must_free: u64) -> Plan {
    let total: u64 = segments.iter().map(|s| s.bytes).fold(0, u64::saturating_add);
    let locked: Vec<bool> = segments.iter().map(|s| is_locked(s, locks)).collect();
    let locked_bytes = segments
        .iter()
        .zip(&locked)
        .filter(|(_, l)| **l)
        .map(|(s, _)| s.bytes)
        .fold(0, u64::saturating_add);

    // Deletable segments, oldest first (ties broken so the order is total).
    let mut order: Vec<usize> = (0..segments.len())
        .filter(|&i| !segments[i].open && !locked[i])
        .collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&segments[a], &segments[b]);
        (x.from_us, x.to_us, &x.camera, x.start_us, a).cmp(&(y.from_us, y.to_us, &y.camera, y.start_us, b))
    });

    let mut deleted = vec![false; segments.len()];
    let mut delete = Vec::new();
    let mut kept = total;

    for &i in &order {
        let s = &segments[i];
        let max_age = policy.camera(&s.camera).and_then(|c| c.max_age).or(policy.max_age);
        if max_age.is_some_and(|a| s.to_us < cutoff(now_us, a)) {
            deleted[i] = true;
            kept -= s.bytes;
            delete.push(Deletion {
                index: i,
                reason: Reason::Age,
            });
        }
    }

    for cam in &policy.cameras {
        let Some(quota) = cam.quota_bytes else { continue };
        let mut cam_kept: u64 = (0..segments.len())
            .filter(|&i| segments[i].camera == cam.camera && !deleted[i])
            .map(|i| segments[i].bytes)
            .fold(0, u64::saturating_add);
        for &i in order.iter().filter(|&&i| segments[i].camera == cam.camera) {
            if cam_kept <= quota {
                break;
            }
            if deleted[i] {
                continue;
            }
            deleted[i] = true;
            kept -= segments[i].bytes;
            cam_kept -= segments[i].bytes;
            delete.push(Deletion {
                index: i,
                reason: Reason::Quota,
            });
        }
    }

    let quota = policy.quota_bytes.unwrap_or(u64::MAX);
    let disk_target = if must_free > 0 {
        total.saturating_sub(must_free)
    } else {
        u64::MAX
    };
    let target = quota.min(disk_target);
    for &i in &order {
        if kept <= target {
            break;
        }
        if deleted[i] {
            continue;
        }
        deleted[i] = true;
        kept -= segments[i].bytes;
        let reason = if kept.saturating_add(segments[i].bytes) > quota {
            Reason::Quota
        } else {
            Reason::DiskFull
        };
        delete.push(Deletion { index: i, reason });
    }
    // Age deletions were pushed in age order, quota ones after: keep "oldest first".
    delete.sort_by_key(|d| order.iter().position(|&i| i == d.index));

    let over_target_by = kept.saturating_sub(target);
    Plan {
        freed_bytes: total - kept,
        kept_bytes: kept,
        locked_bytes,
        over_target_by,
        exceeded_by_locked: over_target_by > 0 && locked_bytes > 0,
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(camera: &str, from: i64, to: i64, bytes: u64) -> SegmentInfo {
        SegmentInfo {
            camera: camera.into(),
            start_us: from,
            from_us: from,
            to_us: to,
            bytes,
            open: false,
        }
    }

    fn deleted(p: &Plan) -> Vec<usize> {
        p.delete.iter().map(|d| d.index).collect()
    }

    #[test]
    fn quota_deletes_oldest_first_across_cameras() {
        let segs = vec![
            seg("a", 300, 399, 10),
            seg("b", 100, 199, 10),
            seg("a", 0, 99, 10),
            seg("b", 400, 499, 10),
        ];
        let p = plan(
            &segs,
            &[],
            1000,
            &Policy {
                quota_bytes: Some(25),
                ..Default::default()
            },
            0,
        );
        assert_eq!(deleted(&p), vec![2, 1]);
        assert_eq!(p.kept_bytes, 20);
        assert_eq!(p.over_target_by, 0);
    }

    #[test]
    fn locked_and_open_stay_and_the_excess_is_reported() {
        let mut segs = vec![seg("a", 0, 99, 10), seg("a", 100, 199, 10), seg("a", 200, 299, 10)];
        segs[2].open = true;
        let locks = [LockedRange {
            camera: "a".into(),
            from_us: 50,
            to_us: 60,
        }];
        let p = plan(
            &segs,
            &locks,
            1000,
            &Policy {
                quota_bytes: Some(5),
                ..Default::default()
            },
            0,
        );
        assert_eq!(deleted(&p), vec![1]);
        assert_eq!(p.over_target_by, 15);
        assert!(p.exceeded_by_locked);
        assert_eq!(p.locked_bytes, 10);
    }

    #[test]
    fn a_lock_on_another_camera_does_not_protect() {
        let segs = vec![seg("a", 0, 99, 10)];
        let locks = [LockedRange {
            camera: "b".into(),
            from_us: 0,
            to_us: 99,
        }];
        let p = plan(
            &segs,
            &locks,
            1000,
            &Policy {
                quota_bytes: Some(0),
                ..Default::default()
            },
            0,
        );
        assert_eq!(deleted(&p), vec![0]);
    }

    #[test]
    fn age_and_disk_full() {
        let segs = vec![seg("a", 0, 99, 10), seg("a", 100, 199, 10), seg("a", 200, 299, 10)];
        let policy = Policy {
            max_age: Some(Duration::from_micros(850)),
            ..Default::default()
        };
        let p = plan(&segs, &[], 1000, &policy, 0);
        assert_eq!(
            p.delete,
            vec![Deletion {
                index: 0,
                reason: Reason::Age
            }]
        );
        let p = plan(&segs, &[], 1000, &policy, 15);
        assert_eq!(
            p.delete,
            vec![
                Deletion {
                    index: 0,
                    reason: Reason::Age
                },
                Deletion {
                    index: 1,
                    reason: Reason::DiskFull
                }
            ]
        );
        assert!(!p.exceeded_by_locked);
    }

    #[test]
    fn a_camera_quota_and_age_apply_to_that_camera_only() {
        let segs = vec![
            seg("a", 0, 99, 10),
            seg("b", 50, 149, 10),
            seg("a", 100, 199, 10),
            seg("b", 150, 249, 10),
            seg("a", 200, 299, 10),
        ];
        let policy = Policy {
            quota_bytes: Some(100),
            cameras: vec![
                CameraPolicy {
                    camera: "a".into(),
                    quota_bytes: Some(15),
                    max_age: None,
                },
                CameraPolicy {
                    camera: "b".into(),
                    quota_bytes: None,
                    max_age: Some(Duration::from_micros(800)),
                },
            ],
            ..Default::default()
        };
        let p = plan(&segs, &[], 1000, &policy, 0);
        // b's first segment is too old for b (ended at 149 < 1000 - 800); a keeps its
        // newest 10 bytes of its 15-byte share.
        assert_eq!(deleted(&p), vec![0, 1, 2]);
        assert_eq!(p.kept_bytes, 20);
        // A lock protects inside a camera quota too.
        let locks = [LockedRange {
            camera: "a".into(),
            from_us: 0,
            to_us: 10,
        }];
        let p = plan(&segs, &locks, 1000, &policy, 0);
        // (Not the segment being written, in real life: that one is `open`.)
        assert_eq!(deleted(&p), vec![1, 2, 4]);
    }

    fn arb_segments() -> impl Strategy<Value = Vec<SegmentInfo>> {
        proptest::collection::vec(
            (
                0u8..3,
                0i64..10_000,
                0i64..500,
                0u64..1000,
                proptest::bool::weighted(0.1),
            ),
            0..40,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(c, from, len, bytes, open)| SegmentInfo {
                    camera: format!("cam{c}"),
                    start_us: from,
                    from_us: from,
                    to_us: from + len,
                    bytes,
                    open,
                })
                .collect()
        })
    }

    fn arb_locks() -> impl Strategy<Value = Vec<LockedRange>> {
        proptest::collection::vec((0u8..3, 0i64..10_000, 0i64..800), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(c, from, len)| LockedRange {
                    camera: format!("cam{c}"),
                    from_us: from,
                    to_us: from + len,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn retention_properties(
            segs in arb_segments(),
            locks in arb_locks(),
            quota in proptest::option::of(0u64..20_000),
            max_age in proptest::option::of(0u64..12_000),
            must_free in prop_oneof![Just(0u64), 0u64..5_000],
            now in 0i64..20_000,
        ) {
            let policy = Policy { max_age: max_age.map(Duration::from_micros), quota_bytes: quota, cameras: Vec::new() };
            let p = plan(&segs, &locks, now, &policy, must_free);
            let total: u64 = segs.iter().map(|s| s.bytes).sum();
            let del: Vec<usize> = deleted(&p);
            let mut uniq = del.clone();
            uniq.sort_unstable();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), del.len(), "each segment deleted once");

            // 1. Never an open or locked segment.
            for &i in &del {
                prop_assert!(!segs[i].open, "deleted an open segment");
                prop_assert!(!is_locked(&segs[i], &locks), "deleted a locked segment");
            }
            // Byte accounting.
            let freed: u64 = del.iter().map(|&i| segs[i].bytes).sum();
            prop_assert_eq!(p.freed_bytes, freed);
            prop_assert_eq!(p.kept_bytes, total - freed);

            // 2. Everything past the age limit goes.
            let deletable = |i: usize| !segs[i].open && !is_locked(&segs[i], &locks);
            if let Some(a) = max_age {
                for (i, s) in segs.iter().enumerate() {
                    if deletable(i) && s.to_us < now - a as i64 {
                        prop_assert!(del.contains(&i), "expired segment {} kept", i);
                    }
                }
            }
            // 3. Oldest first: a segment deleted for space is never newer than a deletable
            //    segment that is kept.
            let key = |i: usize| (segs[i].from_us, segs[i].to_us, segs[i].camera.clone(), segs[i].start_us, i);
            for d in p.delete.iter().filter(|d| d.reason != Reason::Age) {
                for k in (0..segs.len()).filter(|&k| deletable(k) && !del.contains(&k)) {
                    prop_assert!(key(d.index) < key(k), "deleted {} before older {}", d.index, k);
                }
            }
            // The deletion list itself is oldest first.
            for w in del.windows(2) {
                prop_assert!(key(w[0]) < key(w[1]));
            }
            // 4. The target is met unless nothing deletable is left; and no more is deleted
            //    for space than needed.
            let target = quota.unwrap_or(u64::MAX).min(if must_free > 0 { total.saturating_sub(must_free) } else { u64::MAX });
            let all_deletable_gone = (0..segs.len()).filter(|&i| deletable(i)).all(|i| del.contains(&i));
            if p.kept_bytes > target {
                prop_assert!(all_deletable_gone);
                prop_assert_eq!(p.over_target_by, p.kept_bytes - target);
            } else {
                prop_assert_eq!(p.over_target_by, 0);
            }
            if let Some(last) = p.delete.iter().rev().find(|d| d.reason != Reason::Age) {
                prop_assert!(p.kept_bytes + segs[last.index].bytes > target, "deleted more than needed");
            }
            if p.exceeded_by_locked {
                prop_assert!(p.locked_bytes > 0 && p.over_target_by > 0);
            }
        }
    }
}
