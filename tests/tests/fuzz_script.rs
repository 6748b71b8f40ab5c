//! scripts/fuzz.sh itself: a target built to crash makes it fail and name the target and
//! its artifact; a target that never crashes runs to its time limit and passes (the
//! positive control). Both are in fuzz/selftest, a cargo-fuzz project of their own, so
//! this builds in seconds rather than the real targets' minutes.

use std::path::Path;
use std::process::Command;

fn fuzz(target: &str) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/fuzz.sh"))
        .current_dir(&root)
        .env("FUZZ_DIR", "fuzz/selftest")
        .env("FUZZ_TARGETS", target)
        .env("FUZZ_SECONDS", "3")
        .output()
        .expect("fuzz.sh runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_fuzz_script_fails_on_a_crash_and_passes_a_clean_target() {
    let (ok, err) = fuzz("crashes");
    assert!(!ok, "a crashing target passed: {err}");
    assert!(
        err.contains("fuzz: crashes found a crash") && err.contains("artifacts/crashes"),
        "the failure names the target and its artifact: {err}"
    );
    let (ok, err) = fuzz("never_crashes");
    assert!(ok, "the clean control failed: {err}");
    assert!(err.contains("without a crash"), "{err}");
}
