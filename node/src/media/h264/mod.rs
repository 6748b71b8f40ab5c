//! Pure H.264 parsing: everything camesh needs to know about an H.264 elementary stream,
//! with no IO. The framing iterators borrow the caller's buffer and copy nothing.
//!
//! This module owns:
//! - framing: Annex B start codes ([`split_annexb`]) and AVCC length prefixes
//!   ([`avcc_nals`], [`append_avcc`], [`to_avcc`]), plus the avcC configuration record
//!   that containers keep SPS/PPS in ([`parse_avc_config`]);
//! - NAL unit types ([`NalType`], [`nal_type`]);
//! - the sequence parameter set fields a viewer needs ([`parse_sps`] → [`SpsInfo`]):
//!   profile, level, picture size after cropping, frame rate from the VUI;
//! - access-unit boundaries ([`AccessUnitAssembler`]): which NAL units form one picture.
//!
//! Everything here reads untrusted bytes (files, cameras, peers). No function panics on
//! any input: malformed data is an [`H264Error`] or, for the framing iterators, simply
//! yields no NAL unit. Every bit read is bounds-checked and every size has a sane limit.

mod au;
mod bits;
mod framing;
mod sps;

#[cfg(test)]
mod proptests;

pub use au::{first_mb_in_slice, AccessUnitAssembler, AssembledAu};
pub use bits::{nal_to_rbsp, BitReader};
pub use framing::{
    append_avcc, avcc_nals, avcc_nals_with_length_size, parse_avc_config, split_annexb, to_avcc, AnnexBIter, AvcConfig,
    AvccIter,
};
pub use sps::{parse_sps, SpsInfo, VuiTiming};

/// Why a piece of H.264 could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// An AVCC length prefix is cut off at the end of the buffer.
    #[error(
        "AVCC data is truncated: {remaining} byte(s) left at offset {offset}, \
         too few for a {length_size}-byte NAL length prefix"
    )]
    AvccTruncatedLength {
        offset: usize,
        remaining: usize,
        length_size: usize,
    },
    /// An AVCC length prefix claims more bytes than are left.
    #[error("AVCC NAL unit at offset {offset} claims {len} bytes but only {remaining} remain")]
    AvccLengthOverrun {
        offset: usize,
        len: usize,
        remaining: usize,
    },
    /// An AVCC length prefix of zero: a NAL unit has at least its header byte.
    #[error("AVCC NAL unit at offset {offset} has length 0")]
    AvccEmptyNal { offset: usize },
    /// AVCC length prefixes are 1 to 4 bytes (avcC allows 1, 2 and 4).
    #[error("unsupported AVCC NAL length size {0} (must be 1 to 4 bytes)")]
    AvccLengthSize(usize),
    /// The avcC configuration record is malformed.
    #[error("malformed avcC configuration record: {0}")]
    BadAvcConfig(&'static str),
    /// A NAL unit with no bytes, or with the forbidden_zero_bit set.
    #[error("invalid NAL unit: {0}")]
    InvalidNal(&'static str),
    /// [`parse_sps`] was given a NAL unit of another type.
    #[error("expected an SPS (NAL type 7), got NAL type {0}")]
    NotSps(u8),
    /// The bitstream ended in the middle of a syntax element.
    #[error("H.264 data ends early: ran out of bits while reading {field}")]
    OutOfBits { field: &'static str },
    /// An Exp-Golomb code with more than 31 leading zeros cannot be a valid value.
    #[error("invalid Exp-Golomb code in {field}: more than 31 leading zero bits")]
    ExpGolombTooLong { field: &'static str },
    /// A syntax element outside its allowed range.
    #[error("H.264 field {field} = {value} is out of range (allowed {min} to {max})")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
}

/// The `nal_unit_type` of a NAL unit (5 bits, 0..=31).
///
/// A newtype rather than an enum so that every value, including reserved ones, round
/// trips; the constants name the ones camesh acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NalType(pub u8);

impl NalType {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: NalType = NalType(1);
    /// Coded slice data partition A.
    pub const SLICE_DPA: NalType = NalType(2);
    /// Coded slice data partition B.
    pub const SLICE_DPB: NalType = NalType(3);
    /// Coded slice data partition C.
    pub const SLICE_DPC: NalType = NalType(4);
    /// Coded slice of an IDR picture: a decoder can start here.
    pub const IDR: NalType = NalType(5);
    /// Supplemental enhancement information.
    pub const SEI: NalType = NalType(6);
    /// Sequence parameter set.
    pub const SPS: NalType = NalType(7);
    /// Picture parameter set.
    pub const PPS: NalType = NalType(8);
    /// Access unit delimiter.
    pub const AUD: NalType = NalType(9);
    /// End of sequence.
    pub const END_OF_SEQUENCE: NalType = NalType(10);
    /// End of stream.
    pub const END_OF_STREAM: NalType = NalType(11);
    /// Filler data.
    pub const FILLER: NalType = NalType(12);

    /// A coded slice (VCL NAL unit, types 1..=5): picture data.
    pub fn is_vcl(self) -> bool {
        (1..=5).contains(&self.0)
    }
}

impl std::fmt::Display for NalType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            NalType::SLICE => "slice",
            NalType::SLICE_DPA | NalType::SLICE_DPB | NalType::SLICE_DPC => "slice partition",
            NalType::IDR => "IDR slice",
            NalType::SEI => "SEI",
            NalType::SPS => "SPS",
            NalType::PPS => "PPS",
            NalType::AUD => "AUD",
            NalType::END_OF_SEQUENCE => "end of sequence",
            NalType::END_OF_STREAM => "end of stream",
            NalType::FILLER => "filler",
            _ => "other",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// The type of a NAL unit (its first byte, without start code or length prefix).
///
/// `None` for an empty NAL unit or one whose forbidden_zero_bit is set: such bytes are not
/// H.264 and should be dropped.
pub fn nal_type(nal: &[u8]) -> Option<NalType> {
    let header = *nal.first()?;
    if header & 0x80 != 0 {
        return None;
    }
    Some(NalType(header & 0x1f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_type_reads_low_five_bits() {
        assert_eq!(nal_type(&[0x67, 1, 2]), Some(NalType::SPS));
        assert_eq!(nal_type(&[0x68]), Some(NalType::PPS));
        assert_eq!(nal_type(&[0x65]), Some(NalType::IDR));
        assert_eq!(nal_type(&[0x41]), Some(NalType::SLICE));
        assert_eq!(nal_type(&[0x06]), Some(NalType::SEI));
        assert_eq!(nal_type(&[0x09, 0xf0]), Some(NalType::AUD));
        assert_eq!(nal_type(&[0x1f]), Some(NalType(31)));
    }

    #[test]
    fn nal_type_rejects_empty_and_forbidden_bit() {
        assert_eq!(nal_type(&[]), None);
        assert_eq!(nal_type(&[0xe7]), None);
        assert_eq!(nal_type(&[0x80]), None);
    }

    #[test]
    fn vcl_types() {
        assert!(NalType::SLICE.is_vcl());
        assert!(NalType::IDR.is_vcl());
        assert!(!NalType::SPS.is_vcl());
        assert!(!NalType(0).is_vcl());
        assert_eq!(NalType::IDR.to_string(), "IDR slice (5)");
    }

    #[test]
    fn errors_read_well() {
        let e = H264Error::AvccLengthOverrun {
            offset: 4,
            len: 100,
            remaining: 3,
        };
        assert_eq!(
            e.to_string(),
            "AVCC NAL unit at offset 4 claims 100 bytes but only 3 remain"
        );
        let e = H264Error::OutOfBits {
            field: "pic_width_in_mbs_minus1",
        };
        assert!(e.to_string().contains("pic_width_in_mbs_minus1"));
    }
}
