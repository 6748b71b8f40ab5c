#!/usr/bin/env bash
# The main job: a demo fleet on 127.0.0.1 from the built-in clips. Extra arguments go
# to `mesh demo` (e.g. --duration 30s --cameras 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p mesh-cli --bin mesh
exec target/release/mesh demo "$@"
