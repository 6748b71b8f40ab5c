//! Segment format tests: roundtrip, torn tails at every offset, garbage never panics.

use std::fs::OpenOptions;
use std::io::Write;

use super::*;
use crate::record::testutil::{Feed, GOP2S};
use proptest::prelude::*;

fn header(codec: Option<CodecParams>) -> SegmentHeader {
    SegmentHeader {
        version: VERSION,
        camera: "cam-1".into(),
        start_us: 1_000_000,
        created_us: 1_000_123,
        codec,
        audio: None,
    }
}

fn small_frame(seq: u64, len: usize, key: bool) -> Record {
    Record::Frame(FrameRecord {
        sequence: seq,
        pts_90k: seq * 3000,
        dts_90k: seq * 3000,
        capture_unix_us: 1_000_000 + seq as i64 * 33_333,
        keyframe: key,
        key_epoch: 3,
        skipped_before: (seq % 3) as u32,
        payload: Bytes::from((0..len).map(|i| (i as u8) ^ (seq as u8)).collect::<Vec<_>>()),
    })
}

fn codec() -> CodecParams {
    CodecParams {
        sps: Bytes::from_static(&[0x67, 0x4d, 0x00, 0x1e, 0xab]),
        pps: Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
        width: 640,
        height: 360,
        profile_idc: 77,
        level_idc: 30,
        fps_num: 30,
        fps_den: 1,
    }
}

/// A small segment with every record kind, written and sealed; returns the records.
fn write_small(root: &Path) -> (PathBuf, Vec<Record>) {
    let mut w = SegmentWriter::create(root, &header(Some(codec()))).expect("create");
    let mut recs = vec![Record::Key {
        epoch: 3,
        key: Bytes::from_static(b"0123456789abcdef0123456789abcdef"),
    }];
    for i in 0..8u64 {
        recs.push(small_frame(i, (i as usize * 37) % 200, i % 4 == 0));
    }
    recs.push(Record::Gap {
        from_us: 5,
        to_us: 9,
        reason: "camera offline".into(),
    });
    recs.push(Record::Codec(CodecParams {
        width: 1280,
        height: 720,
        ..codec()
    }));
    recs.push(small_frame(8, 0, true));
    for r in &recs {
        w.append(r).expect("append");
    }
    let path = w.path().to_owned();
    w.seal().expect("seal");
    recs.push(Record::Seal);
    (path, recs)
}

fn read_all(path: &Path) -> (Vec<Record>, Option<SegmentError>) {
    let mut r = SegmentReader::open(path).expect("header");
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some((_, rec, _))) => out.push(rec),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[test]
fn roundtrip_all_record_kinds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, recs) = write_small(dir.path());
    assert_eq!(path.parent().expect("dir"), dir.path().join("cam-1"));
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some(SEGMENT_EXT));
    let r = SegmentReader::open(&path).expect("open");
    assert_eq!(r.header(), &header(Some(codec())));
    let (got, err) = read_all(&path);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, recs);

    let scan = scan_segment(&path, "cam-1/x.cseg".into()).expect("scan");
    assert!(scan.stop.is_none());
    assert!(scan.summary.sealed);
    assert_eq!(scan.summary.frames, 9);
    assert_eq!(scan.summary.keyframes, 3);
    assert_eq!(
        scan.summary.keys,
        vec![KeyRef {
            epoch: 3,
            offset: r.data_start()
        }]
    );
    assert_eq!(scan.summary.gaps.len(), 1);
    assert_eq!(scan.summary.codec_changes, 1);
    assert_eq!(scan.valid_len(), scan.file_len);
    assert_eq!(scan.keyframes.len(), 3);
    // Every keyframe offset points at a keyframe record.
    let mut r = SegmentReader::open(&path).expect("open");
    for kf in &scan.keyframes {
        r.seek(kf.offset).expect("seek");
        let (_, rec, _) = r.next_record().expect("read").expect("record");
        assert!(matches!(rec, Record::Frame(f) if f.keyframe && f.capture_unix_us == kf.capture_us));
    }
    // No leftover temp file.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("cam-1"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn fixture_frames_roundtrip_byte_for_byte() {
    let feed = Feed::new(GOP2S);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = SegmentWriter::create(
        dir.path(),
        &SegmentHeader {
            codec: Some(feed.clip.params.clone()),
            audio: None,
            ..header(None)
        },
    )
    .expect("create");
    let frames: Vec<_> = (0..feed.len()).map(|i| feed.frame(i)).collect();
    for f in &frames {
        w.append(&Record::Frame(FrameRecord::from_media(f))).expect("append");
    }
    w.sync().expect("sync");
    assert_eq!(w.bytes_since_sync(), 0);
    let path = w.path().to_owned();
    drop(w);
    let (got, err) = read_all(&path);
    assert!(err.is_none());
    let back: Vec<MediaFrame> = got
        .into_iter()
        .map(|r| match r {
            Record::Frame(f) => f.to_media(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(back, frames);
}

#[test]
fn names_never_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SegmentWriter::create(dir.path(), &header(None)).expect("a");
    let b = SegmentWriter::create(dir.path(), &header(None)).expect("b");
    assert_ne!(a.path(), b.path());
    assert!(b.path().to_string_lossy().ends_with("-1.cseg"));
}

#[test]
fn bad_camera_ids_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["", "../etc", "a/b", "a.b", &"x".repeat(65)] {
        let h = SegmentHeader {
            camera: bad.to_owned(),
            ..header(None)
        };
        assert!(matches!(
            SegmentWriter::create(dir.path(), &h),
            Err(SegmentError::InvalidCamera(_))
        ));
    }
}

/// Offsets where records end (the valid lengths a truncation can fall back to).
fn record_ends(path: &Path) -> (u64, Vec<u64>) {
    let mut r = SegmentReader::open(path).expect("open");
    let start = r.data_start();
    let mut ends = vec![start];
    while let Some((off, _, len)) = r.next_record().expect("valid") {
        ends.push(off + len);
    }
    (start, ends)
}

#[test]
fn torn_tail_at_every_offset_is_detected_and_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, recs) = write_small(dir.path());
    let full = std::fs::read(&path).expect("read");
    let (data_start, ends) = record_ends(&path);
    let cut_path = dir.path().join("cam-1").join("cut.cseg");
    for cut in 0..=full.len() as u64 {
        std::fs::write(&cut_path, &full[..cut as usize]).expect("write");
        if cut < data_start {
            // A header cut short: an error, never a panic.
            let err = SegmentReader::open(&cut_path).expect_err("torn header");
            assert!(matches!(err, SegmentError::TruncatedHeader { .. }), "cut {cut}: {err}");
            continue;
        }
        let scan = scan_segment(&cut_path, "cam-1/cut.cseg".into()).expect("scan");
        let valid = *ends.iter().rev().find(|&&e| e <= cut).expect("data start is an end");
        let complete = ends.iter().filter(|&&e| e <= cut).count() as u64 - 1;
        assert_eq!(scan.valid_len(), valid, "cut {cut}");
        assert_eq!(scan.summary.records, complete, "cut {cut}");
        assert_eq!(scan.stop.is_some(), valid != cut, "cut {cut}");
        if let Some(stop) = &scan.stop {
            assert!(stop.truncated, "cut {cut}: a cut is a truncation: {stop:?}");
            assert_eq!(stop.offset, valid);
        }
        let (scan2, recovery) = recover_segment(&cut_path, "cam-1/cut.cseg".into()).expect("recover");
        let (got, err) = read_all(&cut_path);
        assert!(err.is_none(), "cut {cut}: {err:?}");
        if cut == full.len() as u64 {
            assert_eq!(recovery, Recovery::Intact);
            assert_eq!(got, recs);
        } else {
            assert_eq!(recovery, Recovery::Sealed { dropped: cut - valid }, "cut {cut}");
            // The valid prefix, then a seal.
            assert_eq!(got.len() as u64, complete + 1);
            assert_eq!(&got[..complete as usize], &recs[..complete as usize]);
            assert_eq!(got.last(), Some(&Record::Seal));
            assert!(scan2.summary.sealed);
        }
        // Recovering again changes nothing.
        let len = std::fs::metadata(&cut_path).expect("meta").len();
        let (_, again) = recover_segment(&cut_path, "cam-1/cut.cseg".into()).expect("recover");
        assert_eq!(again, Recovery::Intact);
        assert_eq!(std::fs::metadata(&cut_path).expect("meta").len(), len);
    }
}

#[test]
fn damage_inside_a_sealed_segment_is_reported_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_small(dir.path());
    let (_, ends) = record_ends(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = (ends[3] + 20) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let (scan, recovery) = recover_segment(&path, "cam-1/x.cseg".into()).expect("recover");
    assert_eq!(
        recovery,
        Recovery::Corrupt {
            offset: ends[3],
            reason: "checksum mismatch".into()
        }
    );
    assert_eq!(scan.summary.corrupt_at, Some(ends[3]));
    assert_eq!(scan.summary.records, 3);
    // Not a byte changed: it may be evidence.
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

#[test]
fn a_huge_length_is_corrupt_without_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = SegmentWriter::create(dir.path(), &header(None)).expect("create");
    w.append(&small_frame(0, 10, true)).expect("append");
    let path = w.path().to_owned();
    drop(w);
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    // Claims 4 GiB; there are 100 bytes.
    f.write_all(&[0xff, 0xff, 0xff, 0xff, 1]).expect("write");
    f.write_all(&[0u8; 100]).expect("write");
    drop(f);
    let scan = scan_segment(&path, "cam-1/x.cseg".into()).expect("scan");
    assert_eq!(scan.summary.records, 1);
    let stop = scan.stop.expect("stop");
    assert!(!stop.truncated);
    assert!(stop.reason.contains("over the maximum"), "{}", stop.reason);
}

#[test]
fn headers_reject_garbage() {
    let p = Path::new("x.cseg");
    assert!(matches!(
        decode_header(b"", p),
        Err(SegmentError::TruncatedHeader { .. })
    ));
    assert!(matches!(
        decode_header(b"NOTASEGM\0\0\0\0", p),
        Err(SegmentError::BadMagic { .. })
    ));
    let mut good = encode_header(&header(Some(codec()))).expect("encode");
    assert_eq!(decode_header(&good, p).expect("decode").0, header(Some(codec())));
    let last = good.len() - 1;
    good[last] ^= 1;
    assert!(matches!(decode_header(&good, p), Err(SegmentError::BadHeader { .. })));
    let mut huge = MAGIC.to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_header(&huge, p), Err(SegmentError::BadHeader { .. })));
    // Version 2 with a valid checksum.
    let mut body = 2u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 17]);
    let mut v2 = MAGIC.to_vec();
    v2.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v2.extend_from_slice(&body);
    v2.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    assert!(matches!(
        decode_header(&v2, p),
        Err(SegmentError::UnsupportedVersion { version: 2, .. })
    ));
}

#[test]
fn headers_keep_the_audio_track_and_read_old_ones_without() {
    use crate::media::{AudioCodec, AudioParams};
    let p = Path::new("x.cseg");
    let with = SegmentHeader {
        audio: Some(AudioParams {
            codec: AudioCodec::Aac,
            sample_rate: 48_000,
            channels: 2,
            extradata: Bytes::from_static(&[0x11, 0x90]),
        }),
        ..header(Some(codec()))
    };
    let enc = encode_header(&with).expect("encode");
    assert_eq!(decode_header(&enc, p).expect("decode").0, with);
    // A header without audio is byte for byte what the format wrote before audio.
    let without = encode_header(&header(Some(codec()))).expect("encode");
    assert_eq!(without.len() + 1 + 1 + 4 + 1 + 2 + 2, enc.len());
    // Every cut of the audio part is refused, never misread.
    let body_len = u32::from_be_bytes(enc[8..12].try_into().expect("4")) as usize;
    for cut in 1..(enc.len() - without.len()) {
        let body = &enc[12..12 + body_len - cut];
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&(body.len() as u32).to_be_bytes());
        h.extend_from_slice(body);
        h.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        assert!(decode_header(&h, p).is_err(), "cut {cut}");
    }
}

#[test]
fn oversized_records_are_refused_when_writing() {
    let mut out = Vec::new();
    let big = Record::Key {
        epoch: 1,
        key: Bytes::from(vec![0u8; MAX_KEY_LEN + 1]),
    };
    assert!(matches!(
        encode_record(&big, &mut out),
        Err(SegmentError::TooLarge { .. })
    ));
    assert!(out.is_empty());
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), 0usize..300, any::<bool>()).prop_map(|(s, l, k)| small_frame(s % 1000, l, k)),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(epoch, key)| Record::Key { epoch, key: key.into() }),
        (any::<i64>(), any::<i64>(), "[a-z ]{0,40}").prop_map(|(from_us, to_us, reason)| Record::Gap {
            from_us,
            to_us,
            reason
        }),
        Just(Record::Codec(codec())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any record list roundtrips, and a cut anywhere keeps exactly the whole records.
    #[test]
    fn any_records_roundtrip_and_any_cut_keeps_whole_records(
        recs in proptest::collection::vec(arb_record(), 0..12),
        cut_frac in 0.0f64..=1.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::create(dir.path(), &header(None)).expect("create");
        for r in &recs {
            w.append(r).expect("append");
        }
        let path = w.path().to_owned();
        drop(w);
        let (got, err) = read_all(&path);
        prop_assert!(err.is_none());
        prop_assert_eq!(&got, &recs);

        let full = std::fs::read(&path).expect("read");
        let (start, ends) = record_ends(&path);
        let cut = start + ((full.len() as u64 - start) as f64 * cut_frac) as u64;
        std::fs::write(&path, &full[..cut as usize]).expect("write");
        let scan = scan_segment(&path, "cam-1/x.cseg".into()).expect("scan");
        let valid = *ends.iter().rev().find(|&&e| e <= cut).expect("start");
        prop_assert_eq!(scan.valid_len(), valid);
        let (got, _) = read_all(&path);
        prop_assert_eq!(&got[..], &recs[..got.len()]);
    }

    /// Random bytes after a valid header, or random damage anywhere: no panic, and every
    /// record read before the damage is one that was written.
    #[test]
    fn garbage_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..4),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, recs) = write_small(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        for (i, x) in &flips {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(mut r) = SegmentReader::open(&path) {
            let mut n = 0;
            while let Ok(Some((_, rec, _))) = r.next_record() {
                if flips.is_empty() && n < recs.len() {
                    prop_assert_eq!(&rec, &recs[n]);
                }
                n += 1;
                prop_assert!(n <= recs.len() + tail.len());
            }
        }
        let _ = scan_segment(&path, "cam-1/x.cseg".into());
        let _ = recover_segment(&path, "cam-1/x.cseg".into());
        let _ = decode_record(&Bytes::from(tail));
    }
}
