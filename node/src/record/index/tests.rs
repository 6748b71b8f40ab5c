//! Index tests: key order, check and rebuild against the files, evidence locks.

use super::*;
use crate::record::segment::{FrameRecord, Record, SegmentHeader, SegmentWriter, VERSION};
use crate::record::LOCKS_FILE;
use bytes::Bytes;

fn write_segment(index: &Index, camera: &str, start_us: i64, frames: u64, seal: bool) -> SegmentSummary {
    let h = SegmentHeader {
        version: VERSION,
        camera: camera.into(),
        start_us,
        created_us: start_us,
        codec: None,
        audio: None,
    };
    let mut w = SegmentWriter::create(index.segments_dir(), &h).expect("create");
    for i in 0..frames {
        w.append(&Record::Frame(FrameRecord {
            sequence: i,
            pts_90k: i * 3000,
            dts_90k: i * 3000,
            capture_unix_us: start_us + i as i64 * 100_000,
            keyframe: i % 5 == 0,
            key_epoch: 0,
            skipped_before: 0,
            payload: Bytes::from(vec![i as u8; 50]),
        }))
        .expect("append");
    }
    if seal {
        w.seal().expect("seal")
    } else {
        w.sync().expect("sync");
        w.summary().clone()
    }
}

fn open(dir: &Path) -> (Index, OpenReport) {
    Index::open(dir).expect("open index")
}

#[test]
fn keys_sort_by_camera_then_time_including_negative_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, report) = open(dir.path());
    assert!(!report.was_clean);
    for (cam, t) in [("b", 5), ("a", 10), ("a", -10), ("a", 0), ("ab", -1)] {
        let s = SegmentSummary {
            first_us: Some(t),
            last_us: Some(t + 4),
            sealed: true,
            ..SegmentSummary::new(
                &SegmentHeader {
                    version: VERSION,
                    camera: cam.into(),
                    start_us: t,
                    created_us: 0,
                    codec: None,
                    audio: None,
                },
                format!("{cam}/{t}.cseg"),
                0,
            )
        };
        index.put_segment(&s).expect("put");
    }
    let order: Vec<_> = index
        .all_segments()
        .expect("all")
        .into_iter()
        .map(|s| (s.camera, s.start_us))
        .collect();
    assert_eq!(
        order,
        vec![
            ("a".into(), -10),
            ("a".into(), 0),
            ("a".into(), 10),
            ("b".into(), 5),
            ("ab".into(), -1)
        ]
    );
    assert_eq!(index.cameras().expect("cameras"), vec!["a", "ab", "b"]);
    let between: Vec<_> = index
        .segments_between("a", 2, 11)
        .expect("between")
        .iter()
        .map(|s| s.start_us)
        .collect();
    // 0 runs to 4, so it covers 2; 10 starts inside.
    assert_eq!(between, vec![0, 10]);
    let between: Vec<_> = index
        .segments_between("a", 5, 9)
        .expect("between")
        .iter()
        .map(|s| s.start_us)
        .collect();
    assert!(between.is_empty(), "0..4 ends before 5: {between:?}");
    let before: Vec<_> = index
        .segments_before("a", 10, 5)
        .expect("before")
        .iter()
        .map(|s| s.start_us)
        .collect();
    assert_eq!(before, vec![10, 0, -10]);
    assert!(index.segments_between("a", 5, 1).is_err());
    assert!(index.segment("../x", 0).is_err());
}

#[test]
fn check_indexes_files_seals_torn_ones_and_drops_missing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = open(dir.path());
    let sealed = write_segment(&index, "cam", 1_000_000, 12, true);
    let open_seg = write_segment(&index, "cam", 3_000_000, 7, false);
    // A torn tail on the unsealed one.
    let open_path = index.segment_path(&open_seg);
    let mut f = std::fs::OpenOptions::new().append(true).open(&open_path).expect("open");
    std::io::Write::write_all(&mut f, &[0, 0, 1, 0, 1, 2, 3]).expect("write");
    drop(f);
    // A leftover temp file, a file with a garbage header, and an indexed file that is gone.
    let cam_dir = index.segments_dir().join("cam");
    std::fs::write(cam_dir.join("00000000000000000007.tmp"), b"CAMESEG1").expect("tmp");
    std::fs::write(cam_dir.join("garbage.cseg"), b"not a segment at all").expect("garbage");
    let gone = write_segment(&index, "cam", 9_000_000, 3, true);
    index.put_segment(&gone).expect("put");
    std::fs::remove_file(index.segment_path(&gone)).expect("rm");

    let report = index.check().expect("check");
    assert_eq!(report.files, 3);
    assert_eq!(report.scanned, 3);
    assert_eq!(report.sealed, vec![(open_seg.file.clone(), 7)]);
    assert_eq!(report.removed, vec![gone.file.clone()]);
    assert_eq!(report.removed_tmp, 1);
    assert_eq!(report.quarantined.len(), 1);
    assert!(cam_dir.join("garbage.cseg.bad").exists(), "kept, renamed");
    assert!(report.corrupt.is_empty());

    let segs = index.camera_segments("cam").expect("segments");
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0], sealed);
    assert!(segs[1].sealed);
    assert_eq!(segs[1].frames, 7);
    assert_eq!(
        index.keyframes("cam", 1_000_000).expect("kfs").len(),
        3,
        "frames 0, 5, 10"
    );

    // Everything agrees now: a second check reads nothing.
    let again = index.check().expect("check");
    assert!(again.is_clean(), "{again:?}");
    assert_eq!(again.scanned, 0);

    // Rebuilding from nothing gives the same index.
    let before = index.dump().expect("dump");
    let rebuilt = index.rebuild_from_segments().expect("rebuild");
    assert_eq!(rebuilt.scanned, 2);
    assert_eq!(index.dump().expect("dump"), before);
}

#[test]
fn clean_flag_survives_only_a_clean_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, report) = open(dir.path());
    assert!(!report.was_clean);
    index.mark_clean().expect("clean");
    drop(index);
    let (index, report) = open(dir.path());
    assert!(report.was_clean);
    drop(index);
    let (_, report) = open(dir.path());
    assert!(!report.was_clean, "opened and dropped without mark_clean");
}

#[test]
fn an_index_in_use_is_refused_and_never_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = open(dir.path());
    let lock = index.add_lock("cam", 10, 20, "incident 7").expect("lock");
    // A second opener (another process recording into the same folder) waits for the
    // lock, then is refused: the live index is not taken for broken and rebuilt.
    match Index::open(dir.path()) {
        Err(IndexError::InUse { .. }) => {}
        other => panic!("a second opener got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(index.locks().expect("locks"), vec![lock]);
    let aside = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".broken-"));
    assert!(!aside, "the live index was moved aside");
}

#[test]
fn locks_survive_losing_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = open(dir.path());
    let a = index.add_lock("cam", 10, 20, "incident 42").expect("lock");
    let b = index.add_lock("cam", 30, 40, "incident 43").expect("lock");
    assert_eq!((a.id, b.id), (1, 2));
    assert!(index.add_lock("cam", 5, 1, "backwards").is_err());
    assert!(index.remove_lock(a.id).expect("unlock"));
    assert!(!index.remove_lock(a.id).expect("unlock"));
    drop(index);
    std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).expect("rm index");
    let (index, _) = open(dir.path());
    assert_eq!(index.locks().expect("locks"), vec![b.clone()]);
    drop(index);

    // A damaged locks file: kept aside, the index's copy is used and rewritten.
    std::fs::write(dir.path().join(LOCKS_FILE), b"{ not json").expect("write");
    let (index, report) = open(dir.path());
    assert_eq!(report.warnings.len(), 1, "{report:?}");
    assert_eq!(index.locks().expect("locks"), vec![b]);
    let text = std::fs::read_to_string(dir.path().join(LOCKS_FILE)).expect("read");
    assert!(text.contains("incident 43"));
}

#[test]
fn an_unreadable_database_is_moved_aside_and_recreated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = open(dir.path());
    write_segment(&index, "cam", 1_000_000, 4, true);
    index.check().expect("check");
    drop(index);
    let db = dir.path().join(INDEX_DIR);
    for entry in std::fs::read_dir(&db).expect("ls") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::write(&p, vec![0xa5u8; 4096]).expect("damage");
        }
    }
    let (index, report) = open(dir.path());
    assert!(report.recreated, "{report:?}");
    assert!(!report.warnings.is_empty());
    let report = index.check().expect("check");
    assert_eq!(report.scanned, 1);
    assert_eq!(index.all_segments().expect("all").len(), 1);
}
