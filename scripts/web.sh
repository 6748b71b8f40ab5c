#!/usr/bin/env bash
# Builds the web app (web/dist: index.html, app.js, style, manifest) reproducibly from
# web/package-lock.json: `npm ci` (install scripts off: nothing is compiled or fetched at
# install time), protobuf codecs generated from proto/proto/camesh.proto and device.proto,
# a type check, and one esbuild bundle.
#
#   scripts/web.sh          build web/dist
#   scripts/web.sh --check  build, run the web unit tests (the ports checked against
#                           web/test/vectors.json), and check the bundle: built twice to
#                           the same bytes, no eval, every file the page loads present
set -euo pipefail
cd "$(dirname "$0")/../web"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: scripts/web.sh [--check]" >&2; exit 2 ;;
esac
command -v npm >/dev/null || { echo "web: npm is missing (scripts/setup.sh installs it)" >&2; exit 1; }

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
npm run --silent build
if ! $check; then
  exit 0
fi

npm test
again=$(mktemp -d)
trap 'rm -rf "$again"' EXIT
node tools/build.mjs "$again" >/dev/null
if ! diff -r dist "$again" >/dev/null; then
  echo "web: two builds from the same sources differ" >&2; exit 1
fi
for f in index.html app.js style.css manifest.json icon.svg sw.js; do
  [ -s "dist/$f" ] || { echo "web: dist/$f is missing" >&2; exit 1; }
done
# Strict CSP (script-src 'self', no 'unsafe-eval'): the bundle must not need eval.
if grep -qE '(^|[^A-Za-z0-9_$.])(eval\(|new Function\()' dist/app.js; then
  echo "web: dist/app.js uses eval or new Function, which the page's CSP forbids" >&2; exit 1
fi
grep -q "script-src 'self'" dist/index.html || { echo "web: index.html lost its CSP" >&2; exit 1; }
if grep -qiE '<script[^>]*>[^<]' dist/index.html; then
  echo "web: index.html has an inline script" >&2; exit 1
fi
echo "web: ok, dist/app.js $(wc -c <dist/app.js) bytes ($(gzip -9c dist/app.js | wc -c) gzipped)"
