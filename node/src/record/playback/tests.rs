//! Playback tests: the keyframe before the requested time, holes, torn tails while
//! recording, coverage.

use std::time::Duration;

use super::*;
use crate::record::recorder::tests::play;
use crate::record::segment::{GapRef, SegmentHeader, SegmentWriter, VERSION};
use crate::record::testutil::{Feed, GOP2S};
use crate::record::{Recorder, RecorderConfig};
use proptest::prelude::*;

const CAM: &str = "cam-1";

fn cfg() -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(4),
        fsync_interval: Duration::from_millis(50),
        retention_interval: Duration::from_secs(3600),
        ..RecorderConfig::default()
    }
}

fn frame_seqs(items: &[PlaybackItem]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|i| match i {
            PlaybackItem::Frame(f) => Some(f.sequence),
            _ => None,
        })
        .collect()
}

fn record(rec: &Recorder, feed: &Feed, range: std::ops::Range<u64>) {
    for i in range {
        rec.write(CAM, &feed.frame(i)).expect("queued");
    }
    rec.flush().expect("flush");
}

#[test]
fn playback_from_mid_gop_starts_on_the_keyframe_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    record(&rec, &feed, 0..540);
    // Keyframes every 60 frames; segments start at 0, 120, 240, 360, 480.
    for (from, first) in [
        (75, 60),
        (60, 60),
        (61, 60),
        (119, 60),
        (120, 120),
        (121, 120),
        (239, 180),
        (300, 300),
        (539, 480),
    ] {
        let items = play(rec.index(), CAM, feed.capture(from), feed.capture(from + 30));
        assert_eq!(
            items.first(),
            Some(&PlaybackItem::Codec(feed.clip.params.clone())),
            "from {from}"
        );
        let seqs = frame_seqs(&items);
        assert_eq!(seqs.first(), Some(&first), "from frame {from}");
        let want: Vec<u64> = (first..=(from + 30).min(539)).collect();
        assert_eq!(seqs, want, "from frame {from}");
        let PlaybackItem::Frame(f) = &items[1] else {
            panic!("a frame after the codec")
        };
        assert!(f.keyframe);
    }
    // Before the recording: from its first keyframe. After it: nothing.
    let seqs = frame_seqs(&play(rec.index(), CAM, feed.capture(0) - 10_000_000, feed.capture(10)));
    assert_eq!(seqs, (0..=10).collect::<Vec<_>>());
    assert!(frame_seqs(&play(rec.index(), CAM, feed.capture(600), feed.capture(700))).is_empty());
    assert!(frame_seqs(&play(rec.index(), "other", i64::MIN, i64::MAX)).is_empty());
}

#[test]
fn a_hole_in_the_recording_is_a_gap_and_playback_resumes_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    record(&rec, &feed, 0..120);
    // The camera was away from frame 120 to 300 (6 s); the node says so.
    rec.write_gap(CAM, feed.capture(120), feed.capture(300), "camera offline")
        .expect("gap");
    record(&rec, &feed, 300..420);
    // Asked from inside the hole: the next recorded keyframe, not one before the hole.
    let seqs = frame_seqs(&play(rec.index(), CAM, feed.capture(200), feed.capture(330)));
    assert_eq!(seqs, (300..=330).collect::<Vec<_>>());
    let cov = coverage(rec.index(), CAM, feed.capture(0), feed.capture(419)).expect("coverage");
    assert_eq!(
        cov,
        vec![
            Coverage::Recorded {
                from_us: feed.capture(0),
                to_us: feed.capture(119)
            },
            Coverage::Gap {
                from_us: feed.capture(119),
                to_us: feed.capture(300),
                reason: Some("camera offline".into())
            },
            Coverage::Recorded {
                from_us: feed.capture(300),
                to_us: feed.capture(419)
            },
        ]
    );
    // The gap marker is part of a playback across it.
    let items = play(rec.index(), CAM, feed.capture(100), feed.capture(310));
    assert!(items
        .iter()
        .any(|i| matches!(i, PlaybackItem::Gap { reason, .. } if reason == "camera offline")));
    // A hole without a marker is a gap without a reason.
    record(&rec, &feed, 600..660);
    let cov = coverage(rec.index(), CAM, feed.capture(400), feed.capture(700)).expect("coverage");
    assert_eq!(cov.len(), 4, "{cov:?}");
    assert_eq!(
        cov[1],
        Coverage::Gap {
            from_us: feed.capture(419),
            to_us: feed.capture(600),
            reason: None
        }
    );
    assert_eq!(cov[3].range(), (feed.capture(659), feed.capture(700)));
}

#[test]
fn the_torn_tail_of_a_segment_being_written_is_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, _) = Index::open(dir.path()).expect("index");
    let feed = Feed::new(GOP2S);
    let h = SegmentHeader {
        version: VERSION,
        camera: CAM.into(),
        start_us: feed.capture(0),
        created_us: 0,
        codec: None,
        audio: None,
    };
    let mut w = SegmentWriter::create(index.segments_dir(), &h).expect("create");
    for i in 0..90 {
        let a = w
            .append(&Record::Frame(FrameRecord::from_media(&feed.frame(i))))
            .expect("append");
        if let Some(kf) = a.keyframe {
            index.add_keyframe(CAM, h.start_us, kf).expect("kf");
        }
    }
    index.put_segment(w.summary()).expect("put");
    // Half a record: what a reader sees while the writer is mid-append.
    let path = w.path().to_owned();
    drop(w);
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
    std::io::Write::write_all(&mut f, &[0, 0, 0x10, 0, 1, 0, 0]).expect("write");
    drop(f);
    let seqs = frame_seqs(&play(&index, CAM, feed.capture(70), i64::MAX));
    assert_eq!(seqs, (60..90).collect::<Vec<_>>());
}

#[test]
fn damage_in_a_sealed_segment_is_reported_and_playback_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    record(&rec, &feed, 0..300);
    let segs = rec.index().camera_segments(CAM).expect("segments");
    let first = rec.index().segment_path(&segs[0]);
    let mut bytes = std::fs::read(&first).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let results: Vec<_> = frames(rec.index(), CAM, i64::MIN, i64::MAX)
        .expect("playback")
        .collect();
    let errors = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(errors, 1);
    let seqs: Vec<u64> = results
        .iter()
        .filter_map(|r| match r {
            Ok(PlaybackItem::Frame(f)) => Some(f.sequence),
            _ => None,
        })
        .collect();
    // The second segment (from frame 120) plays in full.
    assert!(seqs.ends_with(&(120..300).collect::<Vec<_>>()));
    assert!(seqs.len() < 300);
}

fn summary(first: i64, last: i64, gaps: Vec<GapRef>) -> SegmentSummary {
    let h = SegmentHeader {
        version: VERSION,
        camera: CAM.into(),
        start_us: first,
        created_us: first,
        codec: None,
        audio: None,
    };
    SegmentSummary {
        first_us: Some(first),
        last_us: Some(last),
        gaps,
        ..SegmentSummary::new(&h, String::new(), 0)
    }
}

proptest! {
    /// Coverage tiles the asked range exactly, alternates recorded and gap stretches, and
    /// every recorded stretch lies inside what the segments hold.
    #[test]
    fn coverage_tiles_the_range(
        spans in proptest::collection::vec((0i64..10_000, 0i64..2_000), 0..8),
        gaps in proptest::collection::vec((0i64..12_000, 0i64..1_000), 0..3),
        from in 0i64..12_000,
        len in 0i64..12_000,
        join in 0i64..500,
    ) {
        let mut segs: Vec<SegmentSummary> = spans.iter().map(|&(a, l)| summary(a, a + l, vec![])).collect();
        if let Some(s) = segs.first_mut() {
            s.gaps = gaps.iter().map(|&(a, l)| GapRef { from_us: a, to_us: a + l, reason: "x".into() }).collect();
        }
        let to = from + len;
        let cov = coverage_of(&segs, from, to, join);
        prop_assert!(!cov.is_empty());
        prop_assert_eq!(cov[0].range().0, from);
        prop_assert_eq!(cov[cov.len() - 1].range().1, to);
        for w in cov.windows(2) {
            prop_assert_eq!(w[0].range().1, w[1].range().0, "contiguous: {:?}", cov);
            let both_recorded = matches!(w[0], Coverage::Recorded { .. }) && matches!(w[1], Coverage::Recorded { .. });
            prop_assert!(!both_recorded, "adjacent recorded stretches are merged: {:?}", cov);
        }
        for c in &cov {
            let (a, b) = c.range();
            prop_assert!(a <= b);
            if let Coverage::Recorded { .. } = c {
                // Inside the union of spans (joined within `join`).
                let inside = |t: i64| spans.iter().any(|&(s, l)| s - join <= t && t <= s + l + join);
                prop_assert!(inside(a) && inside(b), "{:?} outside {:?}", c, spans);
            }
        }
    }
}

/// Audio frames recorded between video frames: they come after the keyframe playback
/// starts on (never before it), they do not break the video's continuity, and the
/// segment header's audio track comes before the first frame.
#[test]
fn audio_frames_follow_the_video_they_were_recorded_beside() {
    use crate::media::{AudioCodec, AudioParams, AUDIO_SEQUENCE_BIT};
    let dir = tempfile::tempdir().expect("tempdir");
    let feed = Feed::new(GOP2S);
    let rec = Recorder::open(dir.path(), cfg()).expect("open");
    let audio = AudioParams {
        codec: AudioCodec::Pcma,
        sample_rate: 8000,
        channels: 1,
        extradata: bytes::Bytes::new(),
    };
    rec.set_codec(CAM, &feed.clip.params).expect("codec");
    rec.set_audio(CAM, Some(&audio)).expect("audio");
    for i in 0..180u64 {
        rec.write(CAM, &feed.frame(i)).expect("queued");
        // One audio frame after each video frame, on its own numbering.
        let mut a = feed.frame(i);
        a.header.sequence = AUDIO_SEQUENCE_BIT | i;
        a.header.keyframe = false;
        a.payload = bytes::Bytes::from(vec![0xd5; 160]);
        rec.write(CAM, &a).expect("queued");
    }
    rec.flush().expect("flush");
    // From mid-GOP (frame 75): the keyframe at 60 first, then video and audio alternate.
    let items = play(rec.index(), CAM, feed.capture(75), feed.capture(100));
    let first_frame = items
        .iter()
        .position(|i| matches!(i, PlaybackItem::Frame(_)))
        .expect("frames");
    assert!(
        items[..first_frame].contains(&PlaybackItem::Audio(audio.clone())),
        "the audio track is described before the frames: {:?}",
        &items[..first_frame]
    );
    let seqs = frame_seqs(&items);
    assert_eq!(seqs[0], 60, "starts on the keyframe");
    let video: Vec<u64> = seqs.iter().copied().filter(|s| !crate::media::is_audio(*s)).collect();
    let sound: Vec<u64> = seqs
        .iter()
        .filter(|s| crate::media::is_audio(**s))
        .map(|s| s & !AUDIO_SEQUENCE_BIT)
        .collect();
    assert_eq!(video, (60..=100).collect::<Vec<_>>(), "video is continuous");
    assert_eq!(sound, (60..=100).collect::<Vec<_>>(), "audio from the keyframe on");
}
