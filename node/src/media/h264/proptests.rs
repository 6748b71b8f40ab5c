//! Property tests: framing round trips, and no parser panics on arbitrary bytes.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// A NAL unit as an encoder would write it: a valid header byte, then a payload that
/// contains no start-code prefix (emulation prevention applied) and does not end in 0.
fn nal_strategy() -> impl Strategy<Value = Vec<u8>> {
    (0u8..0x80, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(header, payload)| {
        let mut nal = vec![header];
        let mut zeros = usize::from(header == 0);
        for b in payload {
            if zeros >= 2 && b <= 3 {
                nal.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            nal.push(b);
        }
        if nal.last() == Some(&0) {
            nal.push(0x80); // rbsp_stop_one_bit
        }
        nal
    })
}

proptest! {
    #[test]
    fn annexb_to_avcc_roundtrip(
        nals in prop::collection::vec(nal_strategy(), 0..16),
        four_byte in prop::collection::vec(any::<bool>(), 16),
        leading_zeros in 0usize..4,
        trailing_zeros in 0usize..4,
    ) {
        let mut stream = vec![0u8; leading_zeros];
        for (i, nal) in nals.iter().enumerate() {
            if four_byte[i] {
                stream.push(0);
            }
            stream.extend_from_slice(&[0, 0, 1]);
            stream.extend_from_slice(nal);
        }
        stream.extend(std::iter::repeat_n(0, trailing_zeros));

        let split: Vec<&[u8]> = split_annexb(&stream).collect();
        prop_assert_eq!(&split, &nals.iter().map(Vec::as_slice).collect::<Vec<_>>());

        let avcc = to_avcc(&split);
        let back: Vec<&[u8]> = avcc_nals(&avcc)
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, split);
    }

    #[test]
    fn split_annexb_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        for nal in split_annexb(&data) {
            prop_assert!(!nal.is_empty());
            prop_assert!(nal.last() != Some(&0));
        }
    }

    #[test]
    fn avcc_walk_never_panics(data in prop::collection::vec(any::<u8>(), 0..512), size in 0usize..6) {
        let total: usize = avcc_nals(&data).filter_map(Result::ok).map(|n| n.len() + 4).sum();
        prop_assert!(total <= data.len());
        let errors = avcc_nals_with_length_size(&data, size).filter(Result::is_err).count();
        prop_assert!(errors <= 1, "the iterator stops after its first error");
    }

    #[test]
    fn parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = nal_type(&data);
        let _ = first_mb_in_slice(&data);
        let _ = parse_avc_config(&data);
        let mut sps = data.clone();
        if let Some(h) = sps.first_mut() {
            *h = 0x67;
        }
        if let Ok(info) = parse_sps(&sps) {
            prop_assert!(info.width >= 1 && info.width <= 16_384);
            prop_assert!(info.height >= 1 && info.height <= 16_384);
        }
        let _ = parse_sps(&data);
    }

    #[test]
    fn assembler_never_panics_and_keeps_every_valid_nal(
        nals in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..64),
    ) {
        let mut asm = AccessUnitAssembler::new();
        let mut out = Vec::new();
        for n in &nals {
            out.extend(asm.push(Bytes::copy_from_slice(n)));
        }
        out.extend(asm.finish());
        let kept: usize = out.iter().map(|au| au.nals.len()).sum();
        let valid = nals.iter().filter(|n| nal_type(n).is_some()).count();
        prop_assert_eq!(kept, valid);
        prop_assert_eq!(asm.dropped() as usize, nals.len() - valid);
        for au in &out {
            prop_assert!(!au.nals.is_empty());
            prop_assert_eq!(
                au.idr,
                au.nals.iter().any(|n| nal_type(n) == Some(NalType::IDR))
            );
        }
    }
}
