//! Bit-level reading of NAL unit payloads: emulation-prevention removal and a bounded
//! Exp-Golomb bit reader. Running out of bits is an error, never a panic.

use super::H264Error;

/// Removes emulation-prevention bytes: every `03` that follows `00 00` is dropped, giving
/// the raw byte sequence payload (RBSP) that the syntax is defined on.
pub fn nal_to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits MSB-first from an RBSP. Every read names the syntax element it is for, so
/// an error says where the data ended or went wrong.
#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Bits not yet read.
    pub fn remaining(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// One bit, as a flag.
    pub fn flag(&mut self, field: &'static str) -> Result<bool, H264Error> {
        let byte = self.data.get(self.pos / 8).ok_or(H264Error::OutOfBits { field })?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// `n` bits as an unsigned value: u(n). `n` above 32 is an error.
    pub fn bits(&mut self, n: u32, field: &'static str) -> Result<u32, H264Error> {
        if n > 32 {
            return Err(H264Error::OutOfRange {
                field,
                value: i64::from(n),
                min: 0,
                max: 32,
            });
        }
        if n as usize > self.remaining() {
            return Err(H264Error::OutOfBits { field });
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.flag(field)?);
        }
        // n <= 32, so v fits.
        Ok(v as u32)
    }

    /// Skips `n` bits.
    pub fn skip(&mut self, n: usize, field: &'static str) -> Result<(), H264Error> {
        if n > self.remaining() {
            return Err(H264Error::OutOfBits { field });
        }
        self.pos += n;
        Ok(())
    }

    /// An unsigned Exp-Golomb value: ue(v), at most 2^32 - 2.
    pub fn ue(&mut self, field: &'static str) -> Result<u32, H264Error> {
        let mut leading_zeros = 0u32;
        while !self.flag(field)? {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(H264Error::ExpGolombTooLong { field });
            }
        }
        let suffix = self.bits(leading_zeros, field)?;
        // (1 << 31) - 1 + (2^31 - 1) = 2^32 - 2: fits in u32 without overflow.
        Ok(((1u64 << leading_zeros) - 1 + u64::from(suffix)) as u32)
    }

    /// A signed Exp-Golomb value: se(v).
    pub fn se(&mut self, field: &'static str) -> Result<i32, H264Error> {
        let k = i64::from(self.ue(field)?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        // |v| <= 2^31 - 1, which fits in i32.
        Ok(v as i32)
    }

    /// ue(v) that must be at most `max`.
    pub fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, H264Error> {
        let v = self.ue(field)?;
        if v > max {
            return Err(H264Error::OutOfRange {
                field,
                value: i64::from(v),
                min: 0,
                max: i64::from(max),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbsp_removes_emulation_prevention() {
        assert_eq!(nal_to_rbsp(&[0, 0, 3, 1]), vec![0, 0, 1]);
        assert_eq!(nal_to_rbsp(&[0, 0, 3, 0, 0, 3]), vec![0, 0, 0, 0]);
        assert_eq!(nal_to_rbsp(&[0, 3, 0, 0, 3]), vec![0, 3, 0, 0]);
        assert_eq!(nal_to_rbsp(&[1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn exp_golomb_values() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue: 0, 1, 2, 3, 4
        // bits: 1010 0110 0100 0010 1000 0000
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue("a"), Ok(0));
        assert_eq!(r.ue("b"), Ok(1));
        assert_eq!(r.ue("c"), Ok(2));
        assert_eq!(r.ue("d"), Ok(3));
        assert_eq!(r.ue("e"), Ok(4));
        let data = [0b0100_1100, 0b1000_0000];
        let mut r = BitReader::new(&data);
        // 010 -> 1 -> +1 ; 011 -> 2 -> -1 ; 00100 -> 3 -> +2
        assert_eq!(r.se("a"), Ok(1));
        assert_eq!(r.se("b"), Ok(-1));
        assert_eq!(r.se("c"), Ok(2));
    }

    #[test]
    fn running_out_of_bits_is_an_error() {
        let mut r = BitReader::new(&[0b0000_0001]);
        assert_eq!(r.ue("x"), Err(H264Error::OutOfBits { field: "x" }));
        let mut r = BitReader::new(&[]);
        assert!(r.flag("x").is_err());
        assert!(r.bits(1, "x").is_err());
        let mut r = BitReader::new(&[0xff]);
        assert!(r.bits(9, "x").is_err());
        assert!(matches!(r.bits(33, "x"), Err(H264Error::OutOfRange { .. })));
        assert_eq!(r.bits(8, "x"), Ok(0xff));
        assert!(r.skip(1, "x").is_err());
    }

    #[test]
    fn long_exp_golomb_is_rejected() {
        let data = [0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            BitReader::new(&data).ue("x"),
            Err(H264Error::ExpGolombTooLong { field: "x" })
        );
        // 31 zeros, a one, 31 ones: the largest value, 2^32 - 2.
        let data = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(BitReader::new(&data).ue("x"), Ok(u32::MAX - 1));
        assert!(BitReader::new(&[0b0100_0000]).ue_max("x", 0).is_err());
    }
}
