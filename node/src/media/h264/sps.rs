//! Sequence parameter set (SPS, H.264 7.3.2.1.1): the fields a viewer needs before the
//! first frame — profile, level, picture size after cropping, frame rate.

use super::bits::{nal_to_rbsp, BitReader};
use super::{nal_type, H264Error, NalType};

/// Largest picture edge accepted, in pixels (H.264 level 6.2 allows 8192 wide; 16384
/// leaves room for odd encoders while rejecting nonsense).
const MAX_EDGE_PX: u64 = 16_384;

/// What [`parse_sps`] reads from an SPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    /// constraint_set0_flag..constraint_set5_flag in bits 7..2, then 2 reserved bits: the
    /// byte that sits between profile_idc and level_idc.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub sps_id: u32,
    /// 0 = monochrome, 1 = 4:2:0, 2 = 4:2:2, 3 = 4:4:4.
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub max_num_ref_frames: u32,
    /// `false` when the stream may contain field (interlaced) pictures.
    pub frame_mbs_only: bool,
    /// Picture width in pixels, after frame cropping.
    pub width: u32,
    /// Picture height in pixels (a whole frame, both fields), after frame cropping.
    pub height: u32,
    /// VUI timing, when the SPS carries it.
    pub timing: Option<VuiTiming>,
}

/// VUI timing_info: the stream's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VuiTiming {
    pub num_units_in_tick: u32,
    pub time_scale: u32,
    pub fixed_frame_rate: bool,
}

impl VuiTiming {
    /// Frames per second as a reduced fraction `(num, den)`: time_scale / (2 ×
    /// num_units_in_tick), since one tick is a field. `None` when either value is 0.
    pub fn fps(&self) -> Option<(u32, u32)> {
        let num = u64::from(self.time_scale);
        let den = 2 * u64::from(self.num_units_in_tick);
        if num == 0 || den == 0 {
            return None;
        }
        let g = gcd(num, den);
        Some((u32::try_from(num / g).ok()?, u32::try_from(den / g).ok()?))
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl SpsInfo {
    /// Frame rate from the VUI timing, as a reduced fraction.
    pub fn fps(&self) -> Option<(u32, u32)> {
        self.timing.and_then(|t| t.fps())
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists.
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Parses an SPS NAL unit (header byte included, no start code or length prefix).
///
/// Emulation-prevention bytes are removed first. Every field up to the frame cropping is
/// required; the VUI is read leniently (a VUI that ends early just leaves `timing` empty,
/// as real cameras ship such SPSs and a decoder does not need it).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H264Error> {
    let ty = nal_type(nal).ok_or(H264Error::InvalidNal(if nal.is_empty() {
        "empty NAL unit"
    } else {
        "forbidden_zero_bit is set"
    }))?;
    if ty != NalType::SPS {
        return Err(H264Error::NotSps(ty.0));
    }
    // nal_type() returned Some, so `nal` has its header byte.
    let rbsp = nal_to_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.bits(8, "profile_idc")? as u8;
    let constraint_flags = r.bits(8, "constraint_set flags")? as u8;
    let level_idc = r.bits(8, "level_idc")? as u8;
    let sps_id = r.ue_max("seq_parameter_set_id", 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8;
    let mut bit_depth_chroma = 8;
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag("separate_colour_plane_flag")?;
        }
        bit_depth_luma = 8 + r.ue_max("bit_depth_luma_minus8", 6)? as u8;
        bit_depth_chroma = 8 + r.ue_max("bit_depth_chroma_minus8", 6)? as u8;
        r.flag("qpprime_y_zero_transform_bypass_flag")?;
        if r.flag("seq_scaling_matrix_present_flag")? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag("seq_scaling_list_present_flag")? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    r.ue_max("log2_max_frame_num_minus4", 12)?;
    match r.ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            r.flag("delta_pic_order_always_zero_flag")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
            for _ in 0..cycle {
                r.se("offset_for_ref_frame")?;
            }
        }
        _ => {}
    }
    let max_num_ref_frames = r.ue_max("max_num_ref_frames", 16)?;
    r.flag("gaps_in_frame_num_value_allowed_flag")?;
    let width_mbs = u64::from(r.ue_max("pic_width_in_mbs_minus1", 1023)?) + 1;
    let height_map_units = u64::from(r.ue_max("pic_height_in_map_units_minus1", 1023)?) + 1;
    let frame_mbs_only = r.flag("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.flag("mb_adaptive_frame_field_flag")?;
    }
    r.flag("direct_8x8_inference_flag")?;
    let mut crop = [0u64; 4]; // left, right, top, bottom
    if r.flag("frame_cropping_flag")? {
        for (c, field) in crop.iter_mut().zip([
            "frame_crop_left_offset",
            "frame_crop_right_offset",
            "frame_crop_top_offset",
            "frame_crop_bottom_offset",
        ]) {
            *c = u64::from(r.ue_max(field, 8191)?);
        }
    }

    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let width_px = width_mbs * 16;
    let height_px = field_factor * height_map_units * 16;
    check_edge("picture width", width_px)?;
    check_edge("picture height", height_px)?;

    // 7.4.2.1.1: crop units depend on ChromaArrayType and frame_mbs_only_flag.
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let (sub_width_c, sub_height_c) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_unit_x, crop_unit_y) = if chroma_array_type == 0 {
        (1, field_factor)
    } else {
        (sub_width_c, sub_height_c * field_factor)
    };
    let crop_x = crop_unit_x * (crop[0] + crop[1]);
    let crop_y = crop_unit_y * (crop[2] + crop[3]);
    if crop_x >= width_px {
        return Err(cropped_away("frame cropping (left + right)", crop_x, width_px));
    }
    if crop_y >= height_px {
        return Err(cropped_away("frame cropping (top + bottom)", crop_y, height_px));
    }

    let timing = if r.flag("vui_parameters_present_flag").unwrap_or(false) {
        read_vui_timing(&mut r).ok().flatten()
    } else {
        None
    };

    Ok(SpsInfo {
        profile_idc,
        constraint_flags,
        level_idc,
        sps_id,
        chroma_format_idc,
        separate_colour_plane,
        bit_depth_luma,
        bit_depth_chroma,
        max_num_ref_frames,
        frame_mbs_only,
        // Both are below MAX_EDGE_PX after the checks above, so they fit in u32.
        width: (width_px - crop_x) as u32,
        height: (height_px - crop_y) as u32,
        timing,
    })
}

fn check_edge(field: &'static str, px: u64) -> Result<(), H264Error> {
    if px > MAX_EDGE_PX {
        return Err(H264Error::OutOfRange {
            field,
            value: px as i64,
            min: 16,
            max: MAX_EDGE_PX as i64,
        });
    }
    Ok(())
}

fn cropped_away(field: &'static str, crop: u64, size: u64) -> H264Error {
    H264Error::OutOfRange {
        field,
        value: crop as i64,
        min: 0,
        max: size as i64 - 1,
    }
}

/// Skips scaling_list() (7.3.2.1.1.1): only its length matters here.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se("delta_scale")?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange {
                    field: "delta_scale",
                    value: i64::from(delta),
                    min: -128,
                    max: 127,
                });
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Reads vui_parameters() (E.1.1) up to and including timing_info.
fn read_vui_timing(r: &mut BitReader<'_>) -> Result<Option<VuiTiming>, H264Error> {
    if r.flag("aspect_ratio_info_present_flag")? {
        let idc = r.bits(8, "aspect_ratio_idc")?;
        if idc == 255 {
            r.skip(32, "sar_width/sar_height")?;
        }
    }
    if r.flag("overscan_info_present_flag")? {
        r.flag("overscan_appropriate_flag")?;
    }
    if r.flag("video_signal_type_present_flag")? {
        r.skip(4, "video_format/video_full_range_flag")?;
        if r.flag("colour_description_present_flag")? {
            r.skip(24, "colour_primaries/transfer/matrix")?;
        }
    }
    if r.flag("chroma_loc_info_present_flag")? {
        r.ue("chroma_sample_loc_type_top_field")?;
        r.ue("chroma_sample_loc_type_bottom_field")?;
    }
    if !r.flag("timing_info_present_flag")? {
        return Ok(None);
    }
    Ok(Some(VuiTiming {
        num_units_in_tick: r.bits(32, "num_units_in_tick")?,
        time_scale: r.bits(32, "time_scale")?,
        fixed_frame_rate: r.flag("fixed_frame_rate_flag")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    /// The SPS x264 wrote into fixtures/cam-640x360-30fps-gop2s.h264 (with emulation
    /// prevention bytes).
    const SPS_640X360: &str = "674d401eda0280bfe5c044000003000400000300f23c58ba80";
    /// The SPS of fixtures/cam-1280x720-30fps-gop1s.h264.
    const SPS_1280X720: &str = "674d401fda014016ec0440000003004000000f23c60ca8";

    #[test]
    fn fixture_sps_640x360() {
        let sps = parse_sps(&hex(SPS_640X360)).expect("fixture SPS parses");
        assert_eq!(sps.profile_idc, 77, "main profile");
        assert_eq!(sps.level_idc, 30);
        assert_eq!(sps.constraint_flags, 0x40);
        assert_eq!(sps.sps_id, 0);
        assert_eq!((sps.width, sps.height), (640, 360));
        assert!(sps.frame_mbs_only);
        assert_eq!(sps.chroma_format_idc, 1);
        assert_eq!(sps.fps(), Some((30, 1)));
    }

    #[test]
    fn fixture_sps_1280x720() {
        let sps = parse_sps(&hex(SPS_1280X720)).expect("fixture SPS parses");
        assert_eq!(sps.profile_idc, 77);
        assert_eq!(sps.level_idc, 31);
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.fps(), Some((30, 1)));
    }

    /// A real SPS and what it must parse to.
    struct Case {
        hex: &'static str,
        profile: u8,
        chroma: u32,
        bit_depth: u8,
        frame_mbs_only: bool,
        size: (u32, u32),
        fps: (u32, u32),
    }

    /// Real SPSs from x264 (via ffmpeg) covering the branches of the parser.
    const REAL_SPS: &[Case] = &[
        // High, 1920x1080 (1088 coded, cropped).
        Case {
            hex: "67640028acd940780227e5c044000003000400000300c83c60c658",
            profile: 100,
            chroma: 1,
            bit_depth: 8,
            frame_mbs_only: true,
            size: (1920, 1080),
            fps: (25, 1),
        },
        // High, interlaced (field coding, mb-adaptive), 1920x1080.
        Case {
            hex: "67640028acd94078044fde0220000003002000000643e2c5b2c0",
            profile: 100,
            chroma: 1,
            bit_depth: 8,
            frame_mbs_only: false,
            size: (1920, 1080),
            fps: (25, 1),
        },
        // High 4:2:2 10-bit, 1280x720.
        Case {
            hex: "677a001fb6cd9405005bb011000003000100000300320f183196",
            profile: 122,
            chroma: 2,
            bit_depth: 10,
            frame_mbs_only: true,
            size: (1280, 720),
            fps: (25, 1),
        },
        // High 4:4:4 Predictive, 642x362 (cropping in 1x1 chroma units).
        Case {
            hex: "67f4001e919b281485fc7cf808800000030080000019078b16cb",
            profile: 244,
            chroma: 3,
            bit_depth: 8,
            frame_mbs_only: true,
            size: (642, 362),
            fps: (25, 1),
        },
        // High with the JVT scaling matrices (cqm=jvt).
        Case {
            hex: "6764001eacd940a02ff97011000003000100000300320f162d96",
            profile: 100,
            chroma: 1,
            bit_depth: 8,
            frame_mbs_only: true,
            size: (640, 360),
            fps: (25, 1),
        },
        // Constrained Baseline, CIF, NTSC rate.
        Case {
            hex: "6742c00dd9016096c04400000fa40003a9803c50a920",
            profile: 66,
            chroma: 1,
            bit_depth: 8,
            frame_mbs_only: true,
            size: (352, 288),
            fps: (30000, 1001),
        },
    ];

    #[test]
    fn real_sps_variants() {
        for c in REAL_SPS {
            let h = c.hex;
            let sps = parse_sps(&hex(h)).unwrap_or_else(|e| panic!("{h}: {e}"));
            assert_eq!(sps.profile_idc, c.profile, "{h}");
            assert_eq!(sps.chroma_format_idc, c.chroma, "{h}");
            assert_eq!(sps.bit_depth_luma, c.bit_depth, "{h}");
            assert_eq!(sps.frame_mbs_only, c.frame_mbs_only, "{h}");
            assert_eq!((sps.width, sps.height), c.size, "{h}");
            assert_eq!(sps.fps(), Some(c.fps), "{h}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = hex(SPS_1280X720);
        for len in 0..full.len() {
            // Cutting inside the VUI is tolerated (timing becomes None); before it, error.
            let _ = parse_sps(&full[..len]);
        }
        assert!(parse_sps(&full[..5]).is_err());
        assert!(matches!(parse_sps(&full[..4]), Err(H264Error::OutOfBits { .. })));
    }

    #[test]
    fn wrong_nal_types_are_rejected() {
        assert_eq!(parse_sps(&[0x68, 0xef]), Err(H264Error::NotSps(8)));
        assert!(matches!(parse_sps(&[]), Err(H264Error::InvalidNal(_))));
        assert!(matches!(parse_sps(&[0xe7, 0x42]), Err(H264Error::InvalidNal(_))));
    }

    #[test]
    fn absurd_sizes_are_rejected() {
        // Baseline, sps_id 0, log2_max_frame_num 0, poc type 2, 1 ref frame, no gaps,
        // then a width of 5001 macroblocks (80 016 px, past the 16 384 px limit).
        let mut w = BitWriter::default();
        w.bits(66, 8);
        w.bits(0, 8);
        w.bits(30, 8);
        w.ue(0); // sps id
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(2); // poc type
        w.ue(1); // max_num_ref_frames
        w.bit(false); // gaps
        w.ue(5000); // pic_width_in_mbs_minus1: 80 000 px
        w.ue(10);
        w.bit(true);
        w.bit(true);
        w.bit(false);
        w.bit(false);
        w.bit(true); // stop bit
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        assert!(matches!(
            parse_sps(&nal),
            Err(H264Error::OutOfRange {
                field: "pic_width_in_mbs_minus1",
                ..
            })
        ));
    }

    #[test]
    fn synthetic_interlaced_422_with_crop_and_scaling_lists() {
        // High 4:2:2 profile (122), chroma_format_idc 2, a scaling list, field coding,
        // 1920x1080i: 120 mbs wide, 34 map units (68 mb rows = 1088), crop bottom 4
        // (unit = SubHeightC(1) * 2 = 2 rows → 8 rows).
        let mut w = BitWriter::default();
        w.bits(122, 8);
        w.bits(0, 8);
        w.bits(40, 8);
        w.ue(3); // sps id
        w.ue(2); // chroma_format_idc 4:2:2
        w.ue(2); // bit_depth_luma_minus8 (10 bit)
        w.ue(2); // bit_depth_chroma_minus8
        w.bit(false); // qpprime
        w.bit(true); // seq_scaling_matrix_present_flag
        w.bit(true); // list 0 present
        for _ in 0..16 {
            w.se(1); // delta_scale
        }
        for _ in 1..8 {
            w.bit(false);
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // poc type 1
        w.bit(false);
        w.se(-2);
        w.se(3);
        w.ue(2);
        w.se(4);
        w.se(-4);
        w.ue(4); // max_num_ref_frames
        w.bit(false); // gaps
        w.ue(119); // width mbs - 1
        w.ue(33); // height map units - 1
        w.bit(false); // frame_mbs_only_flag = 0
        w.bit(true); // mb_adaptive_frame_field_flag
        w.bit(true); // direct_8x8
        w.bit(true); // frame_cropping_flag
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4);
        w.bit(true); // vui present
        w.bit(true); // aspect_ratio_info_present
        w.bits(255, 8);
        w.bits(4, 16);
        w.bits(3, 16);
        w.bit(false); // overscan
        w.bit(true); // video_signal_type
        w.bits(5, 3);
        w.bit(false);
        w.bit(true);
        w.bits(1, 8);
        w.bits(1, 8);
        w.bits(1, 8);
        w.bit(true); // chroma loc
        w.ue(0);
        w.ue(0);
        w.bit(true); // timing
        w.bits(1001, 32);
        w.bits(60000, 32);
        w.bit(true);
        w.bit(true); // stop bit
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        let sps = parse_sps(&nal).expect("synthetic SPS parses");
        assert_eq!(sps.profile_idc, 122);
        assert_eq!(sps.sps_id, 3);
        assert_eq!(sps.chroma_format_idc, 2);
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert!(!sps.frame_mbs_only);
        assert_eq!(sps.max_num_ref_frames, 4);
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.fps(), Some((30000, 1001)));
    }

    #[test]
    fn separate_colour_plane_crops_in_luma_units() {
        // High 4:4:4 (244), separate planes: ChromaArrayType 0, crop unit 1x1.
        let mut w = BitWriter::default();
        w.bits(244, 8);
        w.bits(0, 8);
        w.bits(30, 8);
        w.ue(0);
        w.ue(3); // chroma 4:4:4
        w.bit(true); // separate_colour_plane_flag
        w.ue(0);
        w.ue(0);
        w.bit(false);
        w.bit(false); // no scaling matrix
        w.ue(0);
        w.ue(2); // poc type 2
        w.ue(1);
        w.bit(false);
        w.ue(39); // 640
        w.ue(22); // 368
        w.bit(true);
        w.bit(true);
        w.bit(true); // cropping
        w.ue(1);
        w.ue(1);
        w.ue(0);
        w.ue(8);
        w.bit(false); // no VUI
        w.bit(true);
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        let sps = parse_sps(&nal).expect("synthetic SPS parses");
        assert!(sps.separate_colour_plane);
        assert_eq!((sps.width, sps.height), (638, 360));
        assert_eq!(sps.timing, None);
    }

    #[test]
    fn crop_larger_than_picture_is_an_error() {
        let mut w = BitWriter::default();
        w.bits(66, 8);
        w.bits(0, 8);
        w.bits(30, 8);
        w.ue(0);
        w.ue(0);
        w.ue(2);
        w.ue(1);
        w.bit(false);
        w.ue(0); // 16 px wide
        w.ue(0); // 16 px high
        w.bit(true);
        w.bit(true);
        w.bit(true); // cropping
        w.ue(4); // 8 px
        w.ue(4); // 8 px -> 16 >= 16
        w.ue(0);
        w.ue(0);
        w.bit(false);
        w.bit(true);
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        assert!(matches!(parse_sps(&nal), Err(H264Error::OutOfRange { .. })));
    }

    #[test]
    fn fps_fraction() {
        let t = VuiTiming {
            num_units_in_tick: 1001,
            time_scale: 60000,
            fixed_frame_rate: true,
        };
        assert_eq!(t.fps(), Some((30000, 1001)));
        let t = VuiTiming {
            num_units_in_tick: 0,
            time_scale: 60000,
            fixed_frame_rate: true,
        };
        assert_eq!(t.fps(), None);
        let t = VuiTiming {
            num_units_in_tick: u32::MAX,
            time_scale: 1,
            fixed_frame_rate: true,
        };
        assert_eq!(t.fps(), None, "2 * u32::MAX does not fit a u32 denominator");
    }

    /// Writes test bitstreams (Exp-Golomb included), with emulation prevention.
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn bit(&mut self, b: bool) {
            self.bits.push(b);
        }
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = u64::from(v) + 1;
            let len = 64 - x.leading_zeros();
            for _ in 1..len {
                self.bits.push(false);
            }
            for i in (0..len).rev() {
                self.bits.push((x >> i) & 1 == 1);
            }
        }
        fn se(&mut self, v: i32) {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u32);
        }
        fn finish(self) -> Vec<u8> {
            let mut raw = Vec::new();
            for chunk in self.bits.chunks(8) {
                let mut b = 0u8;
                for (i, &bit) in chunk.iter().enumerate() {
                    if bit {
                        b |= 0x80 >> i;
                    }
                }
                raw.push(b);
            }
            let mut out = Vec::new();
            let mut zeros = 0;
            for b in raw {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }
}
