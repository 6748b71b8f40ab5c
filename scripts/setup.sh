#!/usr/bin/env bash
# Installs the system packages camesh needs to build and test, on Debian/Ubuntu.
# Idempotent: installs only what is missing. Needs root (or sudo) the first time.
set -euo pipefail

packages=(
  # ffmpeg-next builds against these (bindgen needs clang)
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev
  libavdevice-dev libswresample-dev pkg-config clang libclang-dev
  # ffmpeg/ffprobe: fixtures and real-client tests; iproute2, nftables: network-namespace tests (NAT lab)
  ffmpeg iproute2 nftables
  # RTSP ingest tests: GStreamer's RTSP server through python3-gi (tests/scripts/rtsp_server.py)
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  # gateway tests: headless Chromium plays the live page (MSE)
  chromium
  # gateway tests: VLC plays /cam/<id>/live.mp4 (runs as nobody: VLC refuses root)
  vlc-bin vlc-plugin-base
  # NVR tests: a camera daemon whose clock steps back (libfaketime, LD_PRELOAD)
  faketime
)
# The web app (scripts/web.sh): node and npm, from Debian unless already on PATH (a
# newer node that bundles npm counts).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup: need root to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
