//! NAL unit framing: Annex B byte streams (start codes) and AVCC (length prefixes), and
//! the avcC decoder configuration record that MP4/MKV keep SPS and PPS in.

use bytes::{BufMut, Bytes, BytesMut};

use super::H264Error;

/// Splits an Annex B byte stream into NAL units (without start codes).
///
/// NAL units sit between 3-byte (`00 00 01`) or 4-byte (`00 00 00 01`) start codes.
/// Bytes before the first start code are ignored (leading zeros or garbage); trailing zero
/// bytes of each NAL unit (the extra zero of a 4-byte start code, `trailing_zero_8bits`)
/// are trimmed; empty NAL units are skipped. Data with no start code yields nothing.
pub fn split_annexb(data: &[u8]) -> AnnexBIter<'_> {
    let pos = match find_start_code(data, 0) {
        Some(i) => i + 3,
        None => data.len(),
    };
    AnnexBIter { data, pos }
}

/// Iterator over the NAL units of an Annex B byte stream; see [`split_annexb`].
#[derive(Clone, Debug)]
pub struct AnnexBIter<'a> {
    data: &'a [u8],
    /// Where the next NAL unit starts (just after a start code); `data.len()` when done.
    pos: usize,
}

impl<'a> Iterator for AnnexBIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let data = self.data;
        while self.pos < data.len() {
            let start = self.pos;
            let end = match find_start_code(data, start) {
                Some(i) => {
                    self.pos = i + 3;
                    i
                }
                None => {
                    self.pos = data.len();
                    data.len()
                }
            };
            let nal = trim_trailing_zeros(&data[start..end]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    }
}

/// Index of the first `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 2 < data.len() {
        match data[i + 2] {
            // No start code can begin at i, i+1 or i+2.
            b if b > 1 => i += 3,
            // A start code may begin at i+1.
            0 => i += 1,
            // data[i+2] == 1
            _ => {
                if data[i] == 0 && data[i + 1] == 0 {
                    return Some(i);
                }
                i += 3;
            }
        }
    }
    None
}

fn trim_trailing_zeros(mut nal: &[u8]) -> &[u8] {
    while let [rest @ .., 0] = nal {
        nal = rest;
    }
    nal
}

/// Walks AVCC data: NAL units each preceded by a 4-byte big-endian length.
///
/// A length prefix cut off at the end, a length running past the end, or a zero length is
/// an error; the iterator yields that error once and then stops.
pub fn avcc_nals(data: &[u8]) -> AvccIter<'_> {
    AvccIter {
        data,
        pos: 0,
        length_size: 4,
        failed: false,
    }
}

/// Like [`avcc_nals`] for the 1-, 2- or 4-byte lengths an avcC record may declare
/// ([`AvcConfig::length_size`]). An unsupported size yields one error.
pub fn avcc_nals_with_length_size(data: &[u8], length_size: usize) -> AvccIter<'_> {
    AvccIter {
        data,
        pos: 0,
        length_size,
        failed: false,
    }
}

/// Iterator over the NAL units of AVCC data; see [`avcc_nals`].
#[derive(Clone, Debug)]
pub struct AvccIter<'a> {
    data: &'a [u8],
    pos: usize,
    length_size: usize,
    failed: bool,
}

impl<'a> AvccIter<'a> {
    fn fail(&mut self, e: H264Error) -> Option<Result<&'a [u8], H264Error>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for AvccIter<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        if !(1..=4).contains(&self.length_size) {
            return self.fail(H264Error::AvccLengthSize(self.length_size));
        }
        let offset = self.pos;
        let rest = &self.data[offset..];
        let Some((prefix, body)) = rest.split_at_checked(self.length_size) else {
            return self.fail(H264Error::AvccTruncatedLength {
                offset,
                remaining: rest.len(),
                length_size: self.length_size,
            });
        };
        let len = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len == 0 {
            return self.fail(H264Error::AvccEmptyNal { offset });
        }
        let Some(nal) = body.get(..len) else {
            return self.fail(H264Error::AvccLengthOverrun {
                offset,
                len,
                remaining: body.len(),
            });
        };
        self.pos = offset + self.length_size + len;
        Some(Ok(nal))
    }
}

/// Appends one NAL unit to `dst` as AVCC: a 4-byte big-endian length, then the bytes.
///
/// # Panics
/// If `nal` is 4 GiB or larger, which no H.264 NAL unit is: sources refuse files over
/// 512 MiB and the stream protocol caps frames far lower.
pub fn append_avcc(dst: &mut BytesMut, nal: &[u8]) {
    let len = u32::try_from(nal.len()).expect("a NAL unit is smaller than 4 GiB: every input is capped far below that");
    dst.reserve(4 + nal.len());
    dst.put_u32(len);
    dst.put_slice(nal);
}

/// Joins NAL units (without start codes) into one AVCC buffer.
///
/// # Panics
/// As [`append_avcc`]: only for a NAL unit of 4 GiB or more.
pub fn to_avcc<T: AsRef<[u8]>>(nals: &[T]) -> Bytes {
    let total = nals.iter().map(|n| 4 + n.as_ref().len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for nal in nals {
        append_avcc(&mut out, nal.as_ref());
    }
    out.freeze()
}

/// The parts of an avcC record (ISO/IEC 14496-15 AVCDecoderConfigurationRecord) that
/// camesh uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcConfig<'a> {
    pub profile_idc: u8,
    pub profile_compatibility: u8,
    pub level_idc: u8,
    /// Size in bytes of the NAL length prefixes in the samples: 1, 2 or 4.
    pub length_size: usize,
    /// The SPS NAL units, in record order.
    pub sps: Vec<&'a [u8]>,
    /// The PPS NAL units, in record order.
    pub pps: Vec<&'a [u8]>,
}

/// Parses an avcC record (the "extradata" of H.264 in MP4, MKV, FLV).
pub fn parse_avc_config(data: &[u8]) -> Result<AvcConfig<'_>, H264Error> {
    let bad = H264Error::BadAvcConfig;
    let [version, profile_idc, profile_compatibility, level_idc, length_byte, sps_count, rest @ ..] = data else {
        return Err(bad("shorter than its 6-byte header"));
    };
    if *version != 1 {
        return Err(bad("configurationVersion is not 1"));
    }
    let length_size = usize::from(length_byte & 0x03) + 1;
    if length_size == 3 {
        return Err(bad("NAL length size of 3 bytes is not allowed"));
    }
    let mut rest = rest;
    let sps = read_param_sets(&mut rest, usize::from(sps_count & 0x1f), "SPS")?;
    let Some((&pps_count, mut rest)) = rest.split_first() else {
        return Err(bad("ends before the PPS count"));
    };
    let pps = read_param_sets(&mut rest, usize::from(pps_count), "PPS")?;
    Ok(AvcConfig {
        profile_idc: *profile_idc,
        profile_compatibility: *profile_compatibility,
        level_idc: *level_idc,
        length_size,
        sps,
        pps,
    })
}

fn read_param_sets<'a>(rest: &mut &'a [u8], count: usize, what: &'static str) -> Result<Vec<&'a [u8]>, H264Error> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let [hi, lo, tail @ ..] = *rest else {
            return Err(H264Error::BadAvcConfig(if what == "SPS" {
                "ends inside an SPS length"
            } else {
                "ends inside a PPS length"
            }));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (nal, tail) = tail
            .split_at_checked(len)
            .ok_or(H264Error::BadAvcConfig(if what == "SPS" {
                "an SPS runs past the end"
            } else {
                "a PPS runs past the end"
            }))?;
        if !nal.is_empty() {
            out.push(nal);
        }
        *rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8]) -> Vec<&[u8]> {
        split_annexb(data).collect()
    }

    #[test]
    fn annexb_three_and_four_byte_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        assert_eq!(split(&data), vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
    }

    #[test]
    fn annexb_leading_garbage_trailing_zeros_and_empty_nals() {
        let data = [
            0xff, 0, 0, 0, 0, 0, 1, 0x67, 9, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0x41, 7, 0, 0,
        ];
        assert_eq!(split(&data), vec![&[0x67, 9][..], &[0x41, 7][..]]);
    }

    #[test]
    fn annexb_without_start_code_is_empty() {
        assert!(split(&[]).is_empty());
        assert!(split(&[0x67, 1, 2, 3]).is_empty());
        assert!(split(&[0, 0]).is_empty());
        assert!(split(&[0, 0, 1]).is_empty());
        assert!(split(&[0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn annexb_keeps_emulation_prevention() {
        let data = [0, 0, 1, 0x67, 0, 0, 3, 1, 5];
        assert_eq!(split(&data), vec![&[0x67, 0, 0, 3, 1, 5][..]]);
    }

    #[test]
    fn avcc_walk_and_errors() {
        let data = to_avcc(&[&[0x67u8, 1][..], &[0x65, 2, 3][..]]);
        assert_eq!(&data[..], &[0, 0, 0, 2, 0x67, 1, 0, 0, 0, 3, 0x65, 2, 3]);
        let nals: Result<Vec<_>, _> = avcc_nals(&data).collect();
        assert_eq!(nals, Ok(vec![&[0x67, 1][..], &[0x65, 2, 3][..]]));

        let overrun = [0, 0, 0, 9, 0x65, 1];
        let got: Vec<_> = avcc_nals(&overrun).collect();
        assert_eq!(
            got,
            vec![Err(H264Error::AvccLengthOverrun {
                offset: 0,
                len: 9,
                remaining: 2
            })]
        );
        let truncated = [0, 0, 0, 1, 0x65, 0, 0];
        let got: Vec<_> = avcc_nals(&truncated).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(H264Error::AvccTruncatedLength { offset: 5, .. })));
        let zero = [0, 0, 0, 0, 0x65];
        assert_eq!(
            avcc_nals(&zero).next(),
            Some(Err(H264Error::AvccEmptyNal { offset: 0 }))
        );
        let huge = [0xff, 0xff, 0xff, 0xff, 0x65];
        assert!(matches!(
            avcc_nals(&huge).next(),
            Some(Err(H264Error::AvccLengthOverrun { .. }))
        ));
        assert_eq!(avcc_nals(&[]).count(), 0);
    }

    #[test]
    fn avcc_other_length_sizes() {
        let data = [0, 2, 0x67, 1, 0, 1, 0x68];
        let nals: Result<Vec<_>, _> = avcc_nals_with_length_size(&data, 2).collect();
        assert_eq!(nals, Ok(vec![&[0x67, 1][..], &[0x68][..]]));
        let one = [1, 0x65];
        assert_eq!(avcc_nals_with_length_size(&one, 1).next(), Some(Ok(&[0x65][..])));
        assert_eq!(
            avcc_nals_with_length_size(&one, 5).next(),
            Some(Err(H264Error::AvccLengthSize(5)))
        );
    }

    #[test]
    fn avc_config_record() {
        let rec = [
            1, 0x4d, 0x40, 0x1e, 0xff, 0xe1, 0, 3, 0x67, 0x4d, 0x40, 1, 0, 2, 0x68, 0xef,
        ];
        let cfg = parse_avc_config(&rec).expect("valid record");
        assert_eq!(cfg.profile_idc, 0x4d);
        assert_eq!(cfg.level_idc, 0x1e);
        assert_eq!(cfg.length_size, 4);
        assert_eq!(cfg.sps, vec![&[0x67, 0x4d, 0x40][..]]);
        assert_eq!(cfg.pps, vec![&[0x68, 0xef][..]]);

        assert!(parse_avc_config(&rec[..5]).is_err());
        assert!(parse_avc_config(&rec[..9]).is_err());
        assert!(parse_avc_config(&rec[..11]).is_err());
        assert!(parse_avc_config(&rec[..15]).is_err());
        let mut v2 = rec;
        v2[0] = 2;
        assert!(parse_avc_config(&v2).is_err());
        let mut three = rec;
        three[4] = 0xfe;
        assert!(parse_avc_config(&three).is_err());
    }
}
