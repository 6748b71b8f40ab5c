#!/usr/bin/python3
"""GStreamer's RTSP server as camesh-bench's peer (sections `peers` and `camera`).

Serves one shared, live mount (default /cam) on 127.0.0.1: the access units of a frames
file pushed through appsrc in a loop at --fps, timestamped on the pipeline clock (so the
media's sinks pace them), packetised by rtph264pay (SPS/PPS before every IDR), and sent to
every RTSP client by the same media pipeline (shared media: one appsrc, one payloader, one
sink whose buffers go to each client's transport; RTP over TCP interleaved for TCP clients).

The frames file, written by the harness: a header line
  `CAMESH-FRAMES <width> <height> <sps hex> <pps hex>\n`
then records `[u32 big-endian length][u8 keyframe][AVCC access unit]`. Nothing is encoded
here: the server's CPU is GStreamer's RTSP serving, not an encoder's.

Prints "READY <port>" once it listens; runs until SIGTERM/SIGINT or stdin closes.
Run with /usr/bin/python3 (the python3-gi of Debian).
"""

import argparse
import signal
import struct
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def read_frames(path):
    with open(path, "rb") as f:
        header = f.readline().decode().split()
        if len(header) != 5 or header[0] != "CAMESH-FRAMES":
            raise SystemExit(f"{path}: not a frames file")
        width, height = int(header[1]), int(header[2])
        sps, pps = bytes.fromhex(header[3]), bytes.fromhex(header[4])
        frames = []
        while True:
            head = f.read(5)
            if len(head) < 5:
                break
            n, key = struct.unpack(">IB", head)
            frames.append((bool(key), f.read(n)))
    return width, height, sps, pps, frames


def avcc_record(sps, pps):
    """The avcC box body (ISO 14496-15) for the caps' codec_data: 4-byte NAL lengths."""
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + struct.pack(">H", len(sps))
        + sps
        + bytes([1])
        + struct.pack(">H", len(pps))
        + pps
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mount", default="/cam")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("frames")
    args = ap.parse_args()

    width, height, sps, pps, frames = read_frames(args.frames)
    if not frames:
        raise SystemExit("no frames")
    period = 1_000_000_000 // args.fps

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    caps = (
        "video/x-h264,stream-format=(string)avc,alignment=(string)au,"
        f"width=(int){width},height=(int){height},framerate=(fraction){args.fps}/1,"
        f"codec_data=(buffer){avcc_record(sps, pps).hex()}"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( appsrc name=src is-live=true format=time caps="{caps}" '
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)

    def configure(_factory, media):
        src = media.get_element().get_by_name("src")
        state = {"n": 0, "base": None}

        def need_data(src, _length):
            if state["base"] is None:
                clock = src.get_clock()
                state["base"] = clock.get_time() - src.get_base_time() if clock else 0
            n = state["n"]
            key, data = frames[n % len(frames)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = state["base"] + n * 1_000_000_000 // args.fps
            buf.dts = buf.pts
            buf.duration = period
            state["n"] = n + 1
            src.emit("push-buffer", buf)

        src.connect("need-data", need_data)

    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(args.mount, factory)

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
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_HUP | GLib.IO_IN | GLib.IO_ERR, lambda *_: quit_())
    loop.run()


if __name__ == "__main__":
    main()
