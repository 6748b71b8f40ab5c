//! Recorder tests for a camera clock that steps back (#16 item 5).

use super::tests::{cfg, play, played_frames, record, CAM};
use super::*;
use crate::record::playback::PlaybackItem;
use crate::record::testutil::{Feed, GOP2S};

/// A camera whose clock steps back 5 s mid-GOP (#16 item 5): nothing is lost or
/// overwritten, segment keys keep the recording order, each segment runs forward in time,
/// and playback over the whole range returns every frame in the camera's sequence order.
#[test]
fn a_camera_clock_stepping_back_keeps_every_frame_in_sequence_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..310);
    // Frame 310 is a P-frame 10.3 s in; the clock now reads 5 s earlier, so the next
    // frames' capture times repeat 5.3 s to 10.3 s.
    let mut back = Feed::new(GOP2S);
    back.t0 = feed.t0 - 5_000_000;
    assert!(back.capture(310) < feed.capture(309));
    record(&rec, &back, 310..540);
    rec.close().expect("close");

    let rec = Recorder::open(dir.path(), cfg()).expect("reopen");
    let segs = rec.index().camera_segments(CAM).expect("segments");
    assert_eq!(segs.iter().map(|s| s.frames).sum::<u64>(), 540, "{segs:#?}");
    let keys: Vec<i64> = segs.iter().map(|s| s.start_us).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    // The step starts a segment, keyed after the one before although its footage is older.
    let step = segs
        .iter()
        .position(|s| s.first_us == Some(back.capture(310)))
        .expect("a segment starts at the step");
    assert!(segs[step].start_us > segs[step - 1].start_us);
    assert!(segs[step].first_us < segs[step - 1].last_us);
    let played = played_frames(rec.index(), CAM);
    let seqs: Vec<u64> = played.iter().map(|f| f.sequence).collect();
    assert_eq!(
        seqs,
        (0..540).collect::<Vec<u64>>(),
        "every frame once, in sequence order"
    );
    // A time inside the overlap plays the footage first recorded at that time.
    let t = feed.capture(180);
    let first = play(rec.index(), CAM, t, t + 1_000_000)
        .into_iter()
        .find_map(|i| match i {
            PlaybackItem::Frame(f) => Some(f.sequence),
            _ => None,
        });
    assert_eq!(first, Some(180), "the keyframe at 6 s, before the step");
}
