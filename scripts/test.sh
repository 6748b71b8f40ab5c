#!/usr/bin/env bash
# Every check, as CI runs it: format, lints, all tests (unit, property, multi-node over
# QUIC on 127.0.0.1, real ffprobe/GStreamer RTSP/Chromium; network-namespace tests when
# run as root), the web app's build and unit tests, then a short fuzz run of every decoder
# of peer input.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# CI builds once from a clean clone: the incremental cache would only cost disk and time.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --all -- --check
scripts/vendor.sh --check
cargo clippy --workspace --all-targets -- -D warnings
# Web app: npm ci from web/package-lock.json, build web/dist (tests/tests/web_page.rs
# loads it in Chromium), the web unit tests against web/test/vectors.json, bundle checks.
scripts/web.sh --check
# The CLI tests run the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh
