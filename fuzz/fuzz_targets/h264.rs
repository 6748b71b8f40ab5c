//! H.264 parsing of whatever a camera, a file or a peer's frame payload contains.
#![no_main]

use bytes::Bytes;
use camesh_node::media::h264;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut asm = h264::AccessUnitAssembler::new();
    for nal in h264::split_annexb(data).take(4096) {
        let _ = h264::nal_type(nal);
        let _ = h264::parse_sps(nal);
        let _ = h264::first_mb_in_slice(nal);
        let _ = asm.push(Bytes::copy_from_slice(nal));
    }
    let _ = asm.finish();
    for nal in h264::avcc_nals(data).take(4096) {
        if nal.is_err() {
            break;
        }
    }
    let _ = h264::parse_avc_config(data);
});
