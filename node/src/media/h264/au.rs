//! Access-unit assembly (H.264 7.4.1.2.3): grouping NAL units in decode order into the
//! coded pictures they belong to.

use bytes::Bytes;

use super::bits::{nal_to_rbsp, BitReader};
use super::{nal_type, NalType};

/// An access unit cut out of a NAL unit stream by [`AccessUnitAssembler`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssembledAu {
    /// The NAL units, in decode order, without start codes or length prefixes.
    pub nals: Vec<Bytes>,
    /// Contains an IDR slice: a decoder can start here (given SPS and PPS).
    pub idr: bool,
    /// Contains at least one slice. Only [`AccessUnitAssembler::finish`] can return an
    /// access unit without one (trailing SEI or parameter sets at the end of a stream).
    pub has_slice: bool,
}

/// Groups NAL units (fed in decode order) into access units.
///
/// A new access unit starts, once the current one holds a slice, at:
/// - an access unit delimiter, SPS, PPS, SEI, or NAL types 14..=18;
/// - a slice whose first_mb_in_slice is 0 (the first slice of the next picture);
/// - the NAL unit after end-of-sequence / end-of-stream.
///
/// NAL units with no bytes or with the forbidden_zero_bit set are dropped (and counted).
/// An access unit is also cut after [`MAX_NALS_PER_AU`](Self::MAX_NALS_PER_AU) NAL units,
/// so a stream that never signals a boundary cannot grow one without bound.
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    current: AssembledAu,
    /// The last NAL unit ended the sequence or stream: the next one starts a new AU.
    ended: bool,
    dropped: u64,
}

impl AccessUnitAssembler {
    /// More NAL units than any real picture has (H.264 allows at most a few hundred
    /// slices per picture at the highest levels).
    pub const MAX_NALS_PER_AU: usize = 1024;

    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one NAL unit; returns the previous access unit when this one starts a new
    /// one.
    pub fn push(&mut self, nal: Bytes) -> Option<AssembledAu> {
        let Some(ty) = nal_type(&nal) else {
            self.dropped += 1;
            return None;
        };
        let starts_new = self.current.has_slice
            && (self.ended || matches!(ty.0, 6..=9 | 14..=18) || (ty.is_vcl() && first_mb_in_slice(&nal) == Some(0)));
        let full = self.current.nals.len() >= Self::MAX_NALS_PER_AU;
        let done = if starts_new || full {
            self.ended = false;
            Some(std::mem::take(&mut self.current))
        } else {
            None
        };
        if ty.is_vcl() {
            self.current.has_slice = true;
            self.current.idr |= ty == NalType::IDR;
        }
        if ty == NalType::END_OF_SEQUENCE || ty == NalType::END_OF_STREAM {
            self.ended = true;
        }
        self.current.nals.push(nal);
        done
    }

    /// Ends the stream: returns the access unit in progress, if any NAL units are left.
    pub fn finish(&mut self) -> Option<AssembledAu> {
        self.ended = false;
        if self.current.nals.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.current))
    }

    /// How many NAL units were dropped as invalid (empty or forbidden_zero_bit set).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// first_mb_in_slice of a slice NAL unit (the first ue(v) of the slice header); `None` if
/// it is not a slice or the header is cut short.
pub fn first_mb_in_slice(nal: &[u8]) -> Option<u32> {
    if !nal_type(nal)?.is_vcl() {
        return None;
    }
    // ue(v) of a macroblock address takes at most 2 * 17 + 1 bits; 8 escaped bytes hold
    // at least 5 unescaped ones, which is enough.
    let head = nal.get(1..nal.len().min(9))?;
    let rbsp = nal_to_rbsp(head);
    BitReader::new(&rbsp).ue("first_mb_in_slice").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    const SPS: &[u8] = &[0x67, 0x42];
    const PPS: &[u8] = &[0x68, 0xce];
    const SEI: &[u8] = &[0x06, 0x05];
    const AUD: &[u8] = &[0x09, 0xf0];
    /// IDR, first_mb_in_slice = 0 (ue "1").
    const IDR0: &[u8] = &[0x65, 0x88];
    /// IDR, first_mb_in_slice = 3 (ue "00100").
    const IDR3: &[u8] = &[0x65, 0x20];
    /// Non-IDR slice, first_mb 0.
    const P0: &[u8] = &[0x41, 0x9a];
    /// Non-IDR slice, first_mb 3.
    const P3: &[u8] = &[0x41, 0x20];

    fn run(nals: &[&[u8]]) -> Vec<AssembledAu> {
        let mut asm = AccessUnitAssembler::new();
        let mut out: Vec<_> = nals.iter().filter_map(|n| asm.push(nal(n))).collect();
        out.extend(asm.finish());
        out
    }

    fn shape(aus: &[AssembledAu]) -> Vec<(usize, bool)> {
        aus.iter().map(|a| (a.nals.len(), a.idr)).collect()
    }

    #[test]
    fn first_mb() {
        assert_eq!(first_mb_in_slice(IDR0), Some(0));
        assert_eq!(first_mb_in_slice(IDR3), Some(3));
        assert_eq!(first_mb_in_slice(P3), Some(3));
        assert_eq!(first_mb_in_slice(SPS), None);
        assert_eq!(first_mb_in_slice(&[0x65]), None);
        assert_eq!(first_mb_in_slice(&[0x65, 0]), None);
    }

    #[test]
    fn x264_style_stream() {
        let aus = run(&[SPS, PPS, SEI, IDR0, P0, P0, SPS, PPS, IDR0, P0]);
        assert_eq!(
            shape(&aus),
            vec![(4, true), (1, false), (1, false), (3, true), (1, false)]
        );
        assert_eq!(aus[0].nals[0], nal(SPS));
        assert!(aus.iter().all(|a| a.has_slice));
    }

    #[test]
    fn multi_slice_pictures_stay_together() {
        let aus = run(&[SPS, PPS, IDR0, IDR3, P0, P3, P0]);
        assert_eq!(shape(&aus), vec![(4, true), (2, false), (1, false)]);
    }

    #[test]
    fn access_unit_delimiters_split() {
        let aus = run(&[AUD, SPS, PPS, IDR0, AUD, P3, AUD, P3]);
        assert_eq!(shape(&aus), vec![(4, true), (2, false), (2, false)]);
        assert_eq!(aus[1].nals[0], nal(AUD));
    }

    #[test]
    fn sei_after_slice_starts_next_au() {
        let aus = run(&[IDR0, SEI, P0]);
        assert_eq!(shape(&aus), vec![(1, true), (2, false)]);
    }

    #[test]
    fn end_of_sequence_closes_the_au() {
        let aus = run(&[IDR0, &[0x0a], IDR3]);
        assert_eq!(shape(&aus), vec![(2, true), (1, true)]);
    }

    #[test]
    fn invalid_nals_are_dropped_and_trailing_headers_returned() {
        let mut asm = AccessUnitAssembler::new();
        assert!(asm.push(nal(&[])).is_none());
        assert!(asm.push(nal(&[0xe5, 0x88])).is_none());
        assert_eq!(asm.dropped(), 2);
        assert!(asm.push(nal(IDR0)).is_none());
        assert!(asm.push(nal(SPS)).is_some());
        let tail = asm.finish().expect("trailing SPS");
        assert!(!tail.has_slice);
        assert!(asm.finish().is_none());
    }

    #[test]
    fn runaway_au_is_cut() {
        let mut asm = AccessUnitAssembler::new();
        let mut cut = 0;
        for _ in 0..(AccessUnitAssembler::MAX_NALS_PER_AU * 2 + 1) {
            if let Some(au) = asm.push(nal(P3)) {
                assert_eq!(au.nals.len(), AccessUnitAssembler::MAX_NALS_PER_AU);
                cut += 1;
            }
        }
        assert_eq!(cut, 2);
    }
}
