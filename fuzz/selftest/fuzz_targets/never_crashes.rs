//! The positive control: the fuzz script must run it to its time limit and succeed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data.iter().fold(0u8, |a, b| a.wrapping_add(*b));
});
