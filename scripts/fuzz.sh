#!/usr/bin/env bash
# A short fuzz run of every decoder of peer input: every target in fuzz/fuzz_targets
# (framing and protobuf messages, certificates/grants/revocations/invites, H.264 parsing,
# forwarding/key messages, NVR requests/manifests/attestations), as `cargo fuzz list`
# names them, so a new target is run without editing this script.
# FUZZ_SECONDS per target (default 20). cargo-fuzz needs nightly features; on the
# stable toolchain RUSTC_BOOTSTRAP=1 enables them for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "fuzz: no targets found" >&2; exit 1; }
for target in $targets; do
  echo "fuzz: $target for ${seconds}s" >&2
  mkdir -p "corpus/$target"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 2>&1 \
    | grep -E "^Done [0-9]+ runs|==[0-9]+==ERROR|SUMMARY|panicked" || true
  # cargo fuzz exits non-zero on a crash; PIPESTATUS keeps that visible.
  status=${PIPESTATUS[0]}
  if [ "$status" != 0 ]; then
    echo "fuzz: $target found a crash (artifacts in fuzz/artifacts/$target)" >&2
    exit "$status"
  fi
done
echo "fuzz: all targets ran ${seconds}s without a crash" >&2
