//! Built to crash: the fuzz script must report it and fail (tests/tests/fuzz_script.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'!') {
        panic!("the self-test target crashed, as it should");
    }
});
