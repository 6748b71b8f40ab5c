#!/usr/bin/python3
"""A real RTSP server for camesh's tests: GStreamer's RTSP server through python3-gi.

Serves each --mount on 127.0.0.1, prints "READY <port>" on stdout once it listens, and
runs until it is sent SIGTERM/SIGINT or its stdin closes (so it never outlives the test
that started it).

Mount kinds (PATH=KIND[:OPTIONS], options comma-separated key=value):
  file:<path.mp4>[,params=sdp]
                         an MP4 file through qtdemux (paced by the server, ends at EOS);
                         each client gets its own pipeline from the start of the file;
                         params=sdp sends SPS/PPS only in the SDP
  live:WxH[,fps=30][,gop=30][,bframes=0][,params=inband|sdp][,audio=aac|pcma|pcmu]
                         a live x264 encoder (videotestsrc is-live), shared by all
                         clients; params=sdp sends SPS/PPS only in the SDP; audio= adds
                         a live 1 kHz tone as a second track (AAC 48 kHz mono, or G.711
                         at 8 kHz)
  h265:WxH               a live x265 encoder (camesh must refuse it clearly)
  audio                  a live audio-only stream (PCMA)

Credentials: --user U --password P requires HTTP Basic auth on every mount.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def opts(text):
    out = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        out[k] = v
    return out


def size(text):
    w, _, h = text.partition("x")
    return int(w), int(h)


def launch_line(kind, arg):
    if kind == "file":
        path, _, rest = arg.partition(",")
        interval = 0 if opts(rest).get("params") == "sdp" else -1
        return (
            f'( filesrc location="{path}" ! qtdemux ! h264parse ! '
            f"rtph264pay name=pay0 pt=96 config-interval={interval} )",
            False,
        )
    if kind == "live":
        dims, _, rest = arg.partition(",")
        w, h = size(dims)
        o = opts(rest)
        fps = int(o.get("fps", "30"))
        gop = int(o.get("gop", "30"))
        bframes = int(o.get("bframes", "0"))
        params = o.get("params", "inband")
        tune = "" if bframes else "tune=zerolatency"
        # avc caps keep SPS/PPS out of band (codec_data -> SDP sprop-parameter-sets).
        fmt = "avc" if params == "sdp" else "byte-stream"
        interval = 0 if params == "sdp" else -1
        audio = {
            "": "",
            "aac": "audiotestsrc is-live=true freq=1000 ! audio/x-raw,rate=48000,channels=1 ! "
            "audioconvert ! voaacenc ! aacparse ! rtpmp4gpay name=pay1 pt=97",
            "pcma": "audiotestsrc is-live=true freq=1000 ! audio/x-raw,rate=8000,channels=1 ! "
            "alawenc ! rtppcmapay name=pay1 pt=8",
            "pcmu": "audiotestsrc is-live=true freq=1000 ! audio/x-raw,rate=8000,channels=1 ! "
            "mulawenc ! rtppcmupay name=pay1 pt=0",
        }[o.get("audio", "")]
        return (
            f"( videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={w},height={h},framerate={fps}/1 ! "
            f"x264enc {tune} speed-preset=ultrafast threads=1 bitrate=600 "
            f"key-int-max={gop} bframes={bframes} ! "
            f"video/x-h264,stream-format={fmt},profile=main ! h264parse ! "
            f"rtph264pay name=pay0 pt=96 config-interval={interval} {audio} )",
            True,
        )
    if kind == "h265":
        w, h = size(arg)
        return (
            f"( videotestsrc is-live=true ! video/x-raw,width={w},height={h},framerate=15/1 ! "
            "x265enc speed-preset=ultrafast tune=zerolatency ! h265parse ! "
            "rtph265pay name=pay0 pt=96 config-interval=-1 )",
            True,
        )
    if kind == "audio":
        return (
            "( audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! alawenc ! "
            "rtppcmapay name=pay0 pt=8 )",
            True,
        )
    raise SystemExit(f"unknown mount kind {kind!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--mount", action="append", default=[])
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    perms = None
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", "media.factory.access", True)
        perms.add_permission_for_role("user", "media.factory.construct", True)

    for m in args.mount:
        path, _, spec = m.partition("=")
        kind, _, arg = spec.partition(":")
        line, shared = launch_line(kind, arg)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(line)
        factory.set_shared(shared)
        if perms is not None:
            factory.set_permissions(perms)
        mounts.add_factory(path, factory)

    if server.attach(None) == 0:
        print("ERROR cannot listen", flush=True)
        sys.exit(1)
    print(f"READY {server.get_bound_port()}", flush=True)

    loop = GLib.MainLoop()

    def quit_(*_):
        loop.quit()
        return False

    signal.signal(signal.SIGTERM, lambda *_: GLib.idle_add(quit_))
    signal.signal(signal.SIGINT, lambda *_: GLib.idle_add(quit_))
    # Stdin closing means the test that started us is gone.
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_HUP | GLib.IO_IN | GLib.IO_ERR, lambda *_: quit_())
    loop.run()


if __name__ == "__main__":
    main()
