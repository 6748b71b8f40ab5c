//! Recorder tests: rolling, crash recovery (in-process and with SIGKILL), index rebuild,
//! quota and evidence locks, full disk, queue overflow, keys in every segment.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::record::playback::{frames, PlaybackItem};
use crate::record::segment::FrameRecord;
use crate::record::testutil::{xor, Feed, GOP2S};

pub(super) const CAM: &str = "cam-1";

pub(super) fn cfg() -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(4),
        fsync_interval: Duration::from_millis(50),
        retention_interval: Duration::from_secs(3600),
        ..RecorderConfig::default()
    }
}

/// Every item of a playback; panics on an error item.
pub(crate) fn play(index: &Index, camera: &str, from: i64, to: i64) -> Vec<PlaybackItem> {
    frames(index, camera, from, to)
        .expect("playback")
        .map(|r| r.expect("playback item"))
        .collect()
}

pub(crate) fn played_frames(index: &Index, camera: &str) -> Vec<FrameRecord> {
    play(index, camera, i64::MIN, i64::MAX)
        .into_iter()
        .filter_map(|i| match i {
            PlaybackItem::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

pub(super) fn record(rec: &Recorder, feed: &Feed, range: std::ops::Range<u64>) {
    for i in range {
        // A full queue is not expected here: give the writer a moment and retry once.
        if rec.write(CAM, &feed.frame(i)).is_err() {
            panic!("frame {i} was not queued: {:?}", rec.stats());
        }
        if i % 200 == 199 {
            rec.flush().expect("flush");
        }
    }
}

#[test]
fn records_rolls_at_keyframes_and_plays_back_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    assert!(rec.recovery().check.is_some(), "a new folder is checked (and empty)");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..540);
    rec.flush().expect("flush");
    let stats = rec.stats();
    assert_eq!(stats.frames_written, 540);
    assert_eq!(stats.frames_dropped + stats.frames_lost, 0);
    assert!(stats.syncs >= 1);
    rec.close().expect("close");

    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    assert!(rec.recovery().open.was_clean);
    assert!(rec.recovery().check.is_none(), "clean: no check");
    let segs = rec.index().camera_segments(CAM).expect("segments");
    // 18 s of video in 4 s segments cut at 2 s keyframes.
    assert_eq!(segs.len(), 5, "{segs:#?}");
    assert!(segs.iter().all(|s| s.sealed));
    assert_eq!(segs.iter().map(|s| s.frames).sum::<u64>(), 540);
    for s in &segs {
        // Every segment starts on a keyframe and knows its codec.
        let kfs = rec.index().keyframes(CAM, s.start_us).expect("kfs");
        assert_eq!(Some(kfs[0].capture_us), s.first_us, "{s:?}");
        let header = crate::record::segment::SegmentReader::open(&rec.index().segment_path(s)).expect("open");
        assert_eq!(header.header().codec.as_ref(), Some(&feed.clip.params));
    }
    let items = play(rec.index(), CAM, i64::MIN, i64::MAX);
    assert_eq!(items[0], PlaybackItem::Codec(feed.clip.params.clone()));
    let got = played_frames(rec.index(), CAM);
    let want: Vec<_> = (0..540).map(|i| FrameRecord::from_media(&feed.frame(i))).collect();
    assert_eq!(got, want);
}

#[test]
fn crash_with_a_torn_tail_recovers_and_recording_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    record(&rec, &feed, 0..300);
    rec.flush().expect("flush");
    let last = rec
        .index()
        .camera_segments(CAM)
        .expect("segments")
        .pop()
        .expect("a segment");
    let path = rec.index().segment_path(&last);
    rec.crash();

    // Tear the tail: cut the open segment in the middle of a record.
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len - 777).expect("truncate");
    drop(f);

    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    let check = rec.recovery().check.clone().expect("checked after a crash");
    assert!(!rec.recovery().open.was_clean);
    assert_eq!(check.sealed.len(), 1, "{check:?}");
    assert!(check.sealed[0].1 > 0, "torn bytes dropped");
    assert!(check.corrupt.is_empty() && check.quarantined.is_empty());

    let got = played_frames(rec.index(), CAM);
    let kept = got.len() as u64;
    assert!(kept > 250 && kept < 300, "kept {kept}");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &FrameRecord::from_media(&feed.frame(i as u64)), "frame {i}");
    }
    // Recording resumes (at the next keyframe, frame 300).
    record(&rec, &feed, 300..420);
    rec.close().expect("close");
    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    let got = played_frames(rec.index(), CAM);
    let seqs: Vec<u64> = got.iter().map(|f| f.sequence).collect();
    let want: Vec<u64> = (0..kept).chain(300..420).collect();
    assert_eq!(seqs, want);
}

#[test]
fn deleting_the_index_rebuilds_it_and_playback_is_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..400);
    rec.write_gap(CAM, feed.capture(400), feed.capture(460), "camera offline")
        .expect("gap");
    record(&rec, &feed, 460..540);
    rec.lock_range(CAM, feed.capture(10), feed.capture(20), "incident")
        .expect("lock");
    rec.close().expect("close");

    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    let dump = rec.index().dump().expect("dump");
    let items = play(rec.index(), CAM, feed.capture(100), feed.capture(500));
    let cov = crate::record::coverage(rec.index(), CAM, feed.capture(0), feed.capture(539)).expect("coverage");
    let locks = rec.index().locks().expect("locks");
    rec.close().expect("close");

    std::fs::remove_dir_all(dir.path().join(crate::record::INDEX_DIR)).expect("rm index");
    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    let check = rec.recovery().check.clone().expect("rebuilt");
    assert_eq!(check.scanned, dump.segments.len());
    assert_eq!(rec.index().dump().expect("dump"), dump);
    assert_eq!(play(rec.index(), CAM, feed.capture(100), feed.capture(500)), items);
    assert_eq!(
        crate::record::coverage(rec.index(), CAM, feed.capture(0), feed.capture(539)).expect("coverage"),
        cov
    );
    assert_eq!(rec.index().locks().expect("locks"), locks);
}

/// `n` segments of 2 s (one GOP each).
fn short_segments() -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(2),
        ..cfg()
    }
}

#[test]
fn quota_deletes_oldest_unlocked_keeps_locked_and_the_newest_keeps_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let mut config = short_segments();
    // About three 2 s segments of this clip (~86 KB each).
    config.quota_bytes = Some(280_000);
    let rec = Recorder::open(dir.path(), config).expect("open");
    // Evidence in the second segment (frames 60..120).
    let lock = rec
        .lock_range(CAM, feed.capture(70), feed.capture(80), "incident 7")
        .expect("lock");
    let mut deleted = Vec::new();
    for chunk in 0..10u64 {
        record(&rec, &feed, chunk * 60..(chunk + 1) * 60);
        rec.flush().expect("flush");
        deleted.extend(rec.run_retention().expect("retention").deleted);
    }
    rec.flush().expect("flush");
    let segs = rec.index().camera_segments(CAM).expect("segments");
    let firsts: Vec<i64> = segs.iter().filter_map(|s| s.first_us).collect();
    // The locked segment stays; the first one (unlocked, oldest) went first.
    assert!(firsts.contains(&feed.capture(60)), "locked segment kept: {firsts:?}");
    assert!(!firsts.contains(&feed.capture(0)), "oldest deleted: {firsts:?}");
    assert_eq!(
        deleted[0],
        "cam-1/".to_owned() + &format!("{:020}.cseg", feed.capture(0))
    );
    // The newest video is all there.
    assert!(firsts.contains(&feed.capture(540)), "newest kept: {firsts:?}");
    let total: u64 = segs.iter().map(|s| s.bytes).sum();
    assert!(total <= 280_000, "within quota: {total}");
    let got = played_frames(rec.index(), CAM);
    assert_eq!(got.last().map(|f| f.sequence), Some(599));

    // A quota below the locked evidence: everything else goes, recording goes on.
    drop(rec);
    let config = RecorderConfig {
        quota_bytes: Some(1),
        ..short_segments()
    };
    let rec = Recorder::open(dir.path(), config).expect("reopen");
    record(&rec, &feed, 600..690);
    rec.flush().expect("flush");
    let report = rec.run_retention().expect("retention");
    assert!(report.exceeded_by_locked, "{report:?}");
    assert!(report.over_quota_by > 0);
    assert!(rec.stats().quota_exceeded_by_locked > 0);
    let segs = rec.index().camera_segments(CAM).expect("segments");
    assert_eq!(segs.len(), 2, "the locked one and the open one: {segs:#?}");
    assert_eq!(segs[0].first_us, Some(feed.capture(60)));
    record(&rec, &feed, 690..720);
    rec.flush().expect("flush");
    let got = played_frames(rec.index(), CAM);
    assert_eq!(got.last().map(|f| f.sequence), Some(719));
    assert_eq!(rec.stats().frames_lost, 0);
    assert!(rec.unlock(lock.id).expect("unlock"));
}

#[test]
fn a_full_disk_frees_the_oldest_and_keeps_recording_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let config = RecorderConfig {
        simulated_capacity: Some(400_000),
        disk_full_headroom: 0,
        ..short_segments()
    };
    let rec = Recorder::open(dir.path(), config).expect("open");
    record(&rec, &feed, 0..900);
    rec.flush().expect("flush");
    let stats = rec.stats();
    assert!(stats.disk_full_events > 0, "{stats:?}");
    assert_eq!(stats.frames_lost, 0, "{stats:?}");
    assert!(stats.segments_deleted > 0);
    // Seal records (9 bytes) are written past the check; nothing else.
    assert!(stats.recorded_bytes <= 400_000 + 64, "{stats:?}");
    let got = played_frames(rec.index(), CAM);
    assert_eq!(got.last().map(|f| f.sequence), Some(899));
    // What is left is the newest video, without holes.
    let seqs: Vec<u64> = got.iter().map(|f| f.sequence).collect();
    assert_eq!(seqs, (seqs[0]..900).collect::<Vec<_>>());

    // Everything locked: a full disk cannot be helped; frames are lost, counted, and
    // recording picks up as soon as a lock is lifted.
    let lock = rec.lock_range(CAM, i64::MIN, i64::MAX, "everything").expect("lock");
    record(&rec, &feed, 900..1200);
    rec.flush().expect("flush");
    let lost = rec.stats().frames_lost;
    assert!(lost > 0, "{:?}", rec.stats());
    assert!(
        rec.stats().quota_exceeded_by_locked > 0,
        "the disk is full of locked evidence"
    );
    assert!(rec.stats().last_error.is_some());
    rec.unlock(lock.id).expect("unlock");
    record(&rec, &feed, 1200..1320);
    rec.flush().expect("flush");
    assert_eq!(rec.stats().frames_lost, lost);
    let got = played_frames(rec.index(), CAM);
    assert_eq!(got.last().map(|f| f.sequence), Some(1319));
}

#[test]
fn queue_overflow_drops_until_a_keyframe_and_marks_the_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let config = RecorderConfig {
        queue_frames: 2,
        ..cfg()
    };
    let rec = Recorder::open(dir.path(), config).expect("open");
    let mut ok = 0u64;
    let mut dropped = 0u64;
    for i in 0..1080 {
        match rec.write(CAM, &feed.frame(i)) {
            Ok(()) => ok += 1,
            Err(WriteError::QueueFull | WriteError::AwaitingKeyframe) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    rec.flush().expect("flush");
    let stats = rec.stats();
    assert_eq!(stats.frames_written, ok);
    assert_eq!(stats.frames_dropped, dropped);
    let got = played_frames(rec.index(), CAM);
    assert_eq!(got.len() as u64, ok, "nothing recorded is undecodable");
    for w in got.windows(2) {
        if w[1].sequence != w[0].sequence + 1 {
            assert!(w[1].keyframe, "after a drop, recording resumes on a keyframe");
        }
    }
    let gaps = play(rec.index(), CAM, i64::MIN, i64::MAX)
        .into_iter()
        .filter(|i| matches!(i, PlaybackItem::Gap { .. }))
        .count();
    assert_eq!(gaps > 0, dropped > 0);
    // Bad input is refused, not recorded.
    assert_eq!(
        rec.write("no/slash", &feed.frame(0)),
        Err(WriteError::InvalidCamera("no/slash".into()))
    );
    let mut empty = feed.frame(0);
    empty.payload = Bytes::new();
    assert_eq!(rec.write(CAM, &empty), Err(WriteError::NotMedia));
}

#[test]
fn every_segment_carries_the_keys_its_frames_need() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut feed = Feed::new(GOP2S);
    let key1 = Bytes::from_static(b"key-of-epoch-1-32-bytes-long....");
    let key2 = Bytes::from_static(b"key-of-epoch-2-32-bytes-long....");
    let rec = Recorder::open(dir.path(), short_segments()).expect("open");
    rec.write_key(CAM, 1, key1.clone()).expect("key");
    feed.epoch = 1;
    feed.key = Some(key1.clone());
    record(&rec, &feed, 0..200);
    rec.write_key(CAM, 2, key2.clone()).expect("key");
    feed.epoch = 2;
    feed.key = Some(key2.clone());
    record(&rec, &feed, 200..400);
    rec.close().expect("close");

    let rec = Recorder::open(dir.path(), short_segments()).expect("reopen");
    for s in rec.index().camera_segments(CAM).expect("segments") {
        assert!(!s.keys.is_empty(), "segment {} has no key", s.file);
    }
    // Playback from the middle of a later segment still gets the key first, and it
    // decrypts every frame.
    let items = play(rec.index(), CAM, feed.capture(250), feed.capture(300));
    let first_frame = items
        .iter()
        .position(|i| matches!(i, PlaybackItem::Frame(_)))
        .expect("frames");
    assert!(items[..first_frame]
        .iter()
        .any(|i| matches!(i, PlaybackItem::Key { epoch: 2, .. })));
    let mut keys = std::collections::HashMap::new();
    let mut n = 0;
    for item in items {
        match item {
            PlaybackItem::Key { epoch, key } => {
                keys.insert(epoch, key);
            }
            PlaybackItem::Frame(f) => {
                let key = keys.get(&f.key_epoch).expect("key before frame");
                assert_eq!(xor(&f.payload, key), feed.plain(f.sequence));
                n += 1;
            }
            _ => {}
        }
    }
    // From the keyframe at 240 through 300.
    assert_eq!(n, 61);
}

#[test]
fn config_is_validated() {
    let bad = RecorderConfig {
        fsync_interval: Duration::ZERO,
        ..RecorderConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Recorder::open(dir.path(), bad),
        Err(RecordError::InvalidConfig(_))
    ));
    RecorderConfig::default().validate().expect("defaults are valid");
}

// ---------------------------------------------------------------------------------------
// SIGKILL at random moments, with real processes: this test binary runs itself as the
// recorder (the ignored test `crash_child` below) and kills it.

const CHILD_DIR: &str = "CAMESH_RECORD_CRASH_DIR";
const CHILD_RUN: &str = "CAMESH_RECORD_CRASH_RUN";
const FSYNC_MS: u64 = 100;
/// Sequence numbers of run `r` start at `r * RUN_SEQ`.
const RUN_SEQ: u64 = 1_000_000;

fn crash_config() -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(1),
        fsync_interval: Duration::from_millis(FSYNC_MS),
        ..RecorderConfig::default()
    }
}

/// The recorder process: records frames stamped with the wall clock until killed.
#[test]
#[ignore = "run by sigkill_at_random_moments_loses_nothing_older_than_the_fsync_interval"]
fn crash_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_RUN)) else {
        return;
    };
    let run: u64 = run.parse().expect("run number");
    let mut feed = Feed::new(GOP2S);
    feed.seq_base = run * RUN_SEQ;
    let rec = Recorder::open(&dir, crash_config()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    std::fs::write(Path::new(&dir).join(format!("ready-{run}")), b"").expect("ready");
    for i in 0.. {
        let mut f = feed.frame(i);
        f.header.capture_unix_us = crate::clock::now_unix_us();
        // At this rate the queue does not fill; if it did, the parent sees the hole.
        let _ = rec.write(CAM, &f);
        // ~300 frames per second: ten cameras' worth.
        std::thread::sleep(Duration::from_micros(3300));
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_older_than_the_fsync_interval() {
    use rand::Rng;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::thread_rng();
    let runs = 10u64;
    // Every third run is killed early, at a random moment that may fall in the middle of
    // start-up recovery; the others once they record, at a random moment after that.
    let early = |run: u64| run % 3 == 2;
    let mut killed_at = Vec::new();
    for run in 0..runs {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "record::recorder::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_RUN, run.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the recorder");
        if early(run) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        } else {
            let ready = dir.path().join(format!("ready-{run}"));
            let t = std::time::Instant::now();
            while !ready.exists() {
                assert!(t.elapsed() < Duration::from_secs(120), "child {run} never got ready");
                if let Some(status) = child.try_wait().expect("wait") {
                    panic!("child {run} exited early: {status}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..900)));
        }
        killed_at.push(crate::clock::now_unix_us());
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    let rec = Recorder::open(dir.path(), crash_config()).expect("recover");
    let check = rec.recovery().check.clone().expect("an unclean shutdown is checked");
    assert!(check.corrupt.is_empty(), "{check:?}");
    assert!(check.quarantined.is_empty(), "{check:?}");
    // A second check finds everything consistent.
    let again = rec.index().check().expect("check");
    assert!(again.is_clean(), "{again:?}");

    let feed = Feed::new(GOP2S);
    let got = played_frames(rec.index(), CAM);
    for run in 0..runs {
        let frames: Vec<&FrameRecord> = got.iter().filter(|f| f.sequence / RUN_SEQ == run).collect();
        if early(run) {
            // Killed at a random moment, maybe before it recorded anything: whatever it
            // recorded must be whole.
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(f.sequence, run * RUN_SEQ + i as u64, "run {run}");
                assert_eq!(f.payload, feed.plain(i as u64), "run {run} frame {i}");
            }
            continue;
        }
        assert!(!frames.is_empty(), "run {run}: recording resumed");
        for (i, f) in frames.iter().enumerate() {
            // Contiguous from the first frame, every payload intact.
            assert_eq!(f.sequence, run * RUN_SEQ + i as u64, "run {run}");
            assert_eq!(f.payload, feed.plain(i as u64), "run {run} frame {i}");
        }
        let last = frames.last().map_or(0, |f| f.capture_unix_us);
        // Frames older than the fsync interval are all there. The slack covers a loaded
        // machine (the writer thread may lag the sender by a few scheduling slices).
        let slack_us = 1_500_000;
        let bound = killed_at[run as usize] - (FSYNC_MS as i64 * 1000) - slack_us;
        assert!(
            last >= bound,
            "run {run}: last frame {} µs before the kill",
            killed_at[run as usize] - last
        );
    }
    // What was recovered plays: it exports to an MP4 that decodes frame for frame.
    let out = dir.path().join("all.mp4");
    let summary = crate::record::export::export_mp4(
        rec.index(),
        CAM,
        i64::MIN,
        i64::MAX,
        &mut std::fs::File::create(&out).expect("create"),
        |f, _| -> Result<Bytes, String> { Ok(f.payload.clone()) },
        |_| {},
    )
    .expect("export");
    assert_eq!(summary.frames, got.len() as u64);
    let (stdout, _) = crate::record::testutil::run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            out.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        stdout.trim().parse::<usize>().ok(),
        Some(got.len()),
        "ffprobe: {stdout}"
    );
}

#[test]
fn a_shared_recorder_closes_cleanly_while_others_still_hold_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = std::sync::Arc::new(Recorder::open(dir.path(), cfg()).expect("open"));
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..90);
    let holder = rec.clone();
    rec.close_shared().expect("closed");
    rec.close_shared().expect("closing twice is a no-op");
    // Refused at once, not queued behind the writer's close (where an `Ok` would have lost
    // the frame): the writer thread may still be running when close_shared returns.
    assert_eq!(holder.write(CAM, &feed.frame(90)), Err(WriteError::Closed));
    assert_eq!(holder.set_codec(CAM, &feed.clip.params), Err(WriteError::Closed));
    drop(rec);
    drop(holder);
    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    assert!(rec.recovery().open.was_clean, "marked clean");
    assert!(rec.recovery().check.is_none(), "no check after a clean close");
    assert_eq!(played_frames(rec.index(), CAM).len(), 90);
}
