#!/usr/bin/env bash
# Every check, as CI runs it: format, lints, then all tests (unit, property, multi-node
# over QUIC on 127.0.0.1, real ffprobe; network-namespace tests when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The CLI tests run the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace
