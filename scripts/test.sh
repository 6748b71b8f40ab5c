#!/usr/bin/env bash
# Every check, as CI runs it: format, lints, all tests (unit, property, multi-node over
# QUIC on 127.0.0.1, real ffprobe/GStreamer RTSP/Chromium; network-namespace tests when
# run as root), the web app's build and unit tests, then a short fuzz run of every decoder
# of peer input.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase prints how long it took (CI has a time budget; these lines show where it goes).
phase() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name" >&2
  "$@"
  echo "== $name: $((SECONDS - start)) s (total $SECONDS s)" >&2
}
phase setup scripts/setup.sh
# CI builds once from a clean clone: the incremental cache would only cost disk and time.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
phase fmt cargo fmt --all -- --check
phase vendor scripts/vendor.sh --check
phase clippy cargo clippy --workspace --all-targets -- -D warnings
# Web app: npm ci from web/package-lock.json, build web/dist (tests/tests/web_page.rs
# loads it in Chromium), the web unit tests against web/test/vectors.json, bundle checks.
phase web scripts/web.sh --check
# The CLI tests run the real binaries: build them first.
phase build cargo build --workspace --bins
phase tests cargo test --workspace --no-fail-fast
phase fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" scripts/fuzz.sh
