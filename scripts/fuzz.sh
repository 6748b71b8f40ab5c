#!/usr/bin/env bash
# A short fuzz run of every decoder of peer input: every target in fuzz/fuzz_targets
# (framing and protobuf messages, certificates/grants/revocations/invites, fleet state,
# H.264 parsing, forwarding/key messages, NVR requests/manifests/attestations), as
# `cargo fuzz list` names them, so a new target is run without editing this script.
# Targets run optimized with debug assertions and overflow checks (-O -a), from the
# committed seeds in fuzz/seeds/<target> plus a corpus kept in fuzz/corpus/<target>.
# A crash fails the script (exit 1) and names the target and its artifact.
#
# FUZZ_SECONDS per target (default 20); FUZZ_DIR the cargo-fuzz project (default fuzz;
# fuzz/selftest holds the script's own check); FUZZ_TARGETS a space-separated subset.
# cargo-fuzz needs nightly features; on the stable toolchain RUSTC_BOOTSTRAP=1 enables
# them for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
project=${FUZZ_DIR:-fuzz}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$project")}
[ -n "$targets" ] || { echo "fuzz: no targets found in $project" >&2; exit 1; }
for target in $targets; do
  echo "fuzz: $target for ${seconds}s" >&2
  mkdir -p "$project/corpus/$target"
  dirs=("$project/corpus/$target")
  [ -d "$project/seeds/$target" ] && dirs+=("$project/seeds/$target")
  log=$(mktemp)
  # The run's own exit status decides; the log is only summarized.
  set +e
  cargo fuzz run --fuzz-dir "$project" -O -a "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 >"$log" 2>&1
  status=$?
  set -e
  grep -E "^Done [0-9]+ runs|==[0-9]+==ERROR|SUMMARY|panicked|^error" "$log" >&2 || true
  if [ "$status" != 0 ] && grep -q "failed to build fuzz script" "$log"; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "fuzz: $target did not build" >&2
    exit 1
  fi
  if [ "$status" != 0 ]; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "fuzz: $target found a crash (exit $status; artifacts in $project/artifacts/$target)" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "fuzz: all targets ran ${seconds}s without a crash" >&2
