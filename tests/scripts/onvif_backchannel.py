#!/usr/bin/python3
"""A camera with an ONVIF audio backchannel ("talkback") for camesh's tests.

GStreamer's RTSP server (RTSPOnvifServer / RTSPOnvifMediaFactory through python3-gi, so
run it with /usr/bin/python3) serves one mount, /cam, on 127.0.0.1:
- a live H.264 video track (videotestsrc is-live ! x264enc tune=zerolatency), sent to
  the client as usual (SDP a=recvonly);
- when the DESCRIBE carries `Require: www.onvif.org/ver20/backchannel`, a second track,
  audio the client sends to the camera (SDP a=sendonly): RTP PCMU/8000, payload 0
  (--codec pcma: PCMA/8000, payload 8). Without the Require header there is no such track.
What the client sends on the backchannel is decoded and appended to OUT_WAV (16-bit
mono 8 kHz PCM WAV). The file is created, with a valid empty header, before "port N" is
printed, and its header is rewritten after every decoded packet, so it is a valid WAV
at any moment: after a TEARDOWN, a dropped connection, SIGTERM or even SIGKILL. Several
sessions in one run are appended to the same file.

Every RTSP request is logged to stderr as one line, e.g.
  RTSP DESCRIBE rtsp://127.0.0.1:N/cam cseq=2 require=www.onvif.org/ver20/backchannel
  RTSP SETUP rtsp://127.0.0.1:N/cam/stream=1 cseq=4 require=... transport=RTP/AVP/TCP;...
(require=- when the header is absent), followed by the backchannel's events:
  BACKCHANNEL first-audio / BACKCHANNEL session-end samples=N wall=SECONDS /
  SESSION expired count=N / CLIENT closed
(wall: seconds between the first and last decoded packet: about samples/8000 - 0.2 (the
jitter buffer) for a client that paces its RTP in real time, ~0 for one that bursts; the
WAV records both alike).
With --log FILE the same events are also appended to FILE as JSON lines, e.g.
  {"method": "DESCRIBE", "uri": "...", "cseq": "2", "require": "www.onvif.org/...", ...}
  {"event": "backchannel-end", "samples": 24000, "wall_seconds": 2.8}

Like a camera, it lets a client SETUP any subset of the tracks (just the backchannel is
fine) and expires sessions nobody keeps alive (RTSP session timeout 60 s, or
--session-timeout; gst-rtsp-server removes them a few seconds after that). Doc:
docs/onvif-backchannel.md.

It runs until SIGTERM/SIGINT or, when stdin is a pipe, until stdin closes.

Usage: onvif_backchannel.py OUT_WAV [PORT] [--codec pcmu|pcma] [--log FILE]
                            [--session-timeout SECONDS]
Prints "port N" once listening (PORT 0 or absent: a free port).

Self-check, no Rust involved: onvif_backchannel.py --selftest [gst|raw|both] [--trace]
starts this server in a child process, sends 3 s of a 1 kHz sine to the backchannel, stops
the server and measures the recorded WAV (decoded by ffmpeg; dominant frequency by a
pure-Python Goertzel scan, cross-checked by counting zero crossings). It prints the
frequency and sample count per client and exits non-zero unless each is 1000 +- 20 Hz.
  gst: GStreamer's rtspsrc backchannel=onvif with its push-backchannel-sample signal;
  raw: a hand-written RTSP/TCP client (DESCRIBE, SETUP x2, PLAY, interleaved RTP,
       TEARDOWN), the template for camesh's own; --trace prints its RTSP exchange.
"""

import argparse
import array
import json
import math
import os
import queue
import random
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

BACKCHANNEL_TAG = "www.onvif.org/ver20/backchannel"
RATE = 8000
CODECS = {
    # name: (payload type, encoding-name, depayloader, decoder, encoder, payloader)
    "pcmu": (0, "PCMU", "rtppcmudepay", "mulawdec", "mulawenc", "rtppcmupay"),
    "pcma": (8, "PCMA", "rtppcmadepay", "alawdec", "alawenc", "rtppcmapay"),
}
VIDEO_LAUNCH = (
    "( videotestsrc is-live=true pattern=ball ! "
    "video/x-raw,width=320,height=240,framerate=15/1 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast threads=1 bitrate=300 key-int-max=15 ! "
    "video/x-h264,profile=constrained-baseline ! h264parse ! "
    "rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def backchannel_launch(codec):
    pt, name, depay, dec, _, _ = CODECS[codec]
    # The element named depay_backchannel is where the server feeds the received RTP; its
    # caps become the SDP of the sendonly track. The sink must be async=false: an async sink
    # that never prerolls keeps the media pipeline from reaching PLAYING, and then the
    # received RTP just queues up in the server's appsrc and nothing is decoded.
    return (
        f'( capsfilter caps="application/x-rtp, media=audio, payload={pt}, '
        f'clock-rate={RATE}, encoding-name={name}" name=depay_backchannel ! '
        f"{depay} ! {dec} ! audioconvert ! audioresample ! "
        f"audio/x-raw,format=S16LE,rate={RATE},channels=1 ! "
        "appsink name=backchannel_sink sync=false async=false emit-signals=true )"
    )


# --------------------------------------------------------------------------- server


class WavOut:
    """Appends S16LE mono 8 kHz PCM to a WAV whose header is valid after every write."""

    def __init__(self, path):
        self.lock = threading.Lock()
        # Unbuffered: each write reaches the file at once, so readers see a valid file.
        self.raw = open(path, "wb", buffering=0)
        self.wav = wave.open(self.raw, "wb")
        self.wav.setnchannels(1)
        self.wav.setsampwidth(2)
        self.wav.setframerate(RATE)
        self.wav.writeframes(b"")  # header for 0 frames
        self.closed = False

    def write(self, data):
        with self.lock:
            if not self.closed:
                # wave rewrites the RIFF and data sizes after each writeframes().
                self.wav.writeframes(data)

    def close(self):
        with self.lock:
            if not self.closed:
                self.closed = True
                self.wav.close()
                self.raw.close()


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", buffering=1) if path else None

    def __call__(self, text, record):
        with self.lock:
            print(text, file=sys.stderr, flush=True)
            if self.file:
                record["t"] = round(time.time(), 3)
                self.file.write(json.dumps(record) + "\n")


def header(msg, field):
    res, value = msg.get_header(field, 0)
    return value if res == GstRtsp.RTSPResult.OK else None


def drop_unlinked(media):
    """Lets a client SETUP only some tracks (e.g. just the backchannel).

    gst-rtsp-server links a track's RTP output only when that track is SETUP; the first
    packet of a track nobody set up then fails with not-linked, which stops its source
    and errors the whole media (whether it happens is a race). Cameras just don't send
    such tracks: drop their packets at rtpbin instead.
    """
    pipeline = media.get_element().get_parent()
    for rtpbin in pipeline.children if pipeline else []:
        factory = rtpbin.get_factory()
        if factory is None or factory.get_name() != "rtpbin":
            continue

        def probe(pad, _info):
            return Gst.PadProbeReturn.OK if pad.is_linked() else Gst.PadProbeReturn.DROP

        def watch(_element, pad):
            if pad.get_name().startswith("send_rtp_src"):
                pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, probe)

        for pad in rtpbin.srcpads:
            watch(rtpbin, pad)
        rtpbin.connect("pad-added", watch)


def serve(args):
    Gst.init(None)
    out = WavOut(args.out_wav)
    log = Log(args.log)

    server = GstRtspServer.RTSPOnvifServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPOnvifMediaFactory()
    factory.set_launch(VIDEO_LAUNCH)
    factory.set_backchannel_launch(backchannel_launch(args.codec))
    factory.set_backchannel_bandwidth(64)  # kbit/s, becomes b=AS:64 in the SDP
    factory.set_shared(False)  # the backchannel belongs to one client: one pipeline each
    factory.set_media_gtype(GstRtspServer.RTSPOnvifMedia.__gtype__)

    def media_configure(_factory, media):
        sink = media.get_element().get_by_name("backchannel_sink")
        if sink is None:
            return  # DESCRIBE without the Require header: video only
        count = {"samples": 0, "first": 0.0, "last": 0.0}

        def new_sample(appsink):
            sample = appsink.emit("pull-sample")
            if sample is None:
                return Gst.FlowReturn.EOS
            buf = sample.get_buffer()
            data = buf.extract_dup(0, buf.get_size())
            now = time.monotonic()
            if count["samples"] == 0:
                count["first"] = now
                log("BACKCHANNEL first-audio", {"event": "backchannel-first-audio"})
            count["samples"] += len(data) // 2
            count["last"] = now
            out.write(data)
            return Gst.FlowReturn.OK

        def unprepared(_media):
            # wall: seconds between the first and the last decoded packet, to tell a client
            # that paces its RTP in real time (wall ~ samples / 8000 - 0.2) from one that bursts.
            n, wall = count["samples"], round(count["last"] - count["first"], 2)
            log(f"BACKCHANNEL session-end samples={n} wall={wall}",
                {"event": "backchannel-end", "samples": n, "wall_seconds": wall})

        sink.connect("new-sample", new_sample)
        media.connect("unprepared", unprepared)

    factory.connect("media-configure", media_configure)
    factory.connect("media-configure", lambda _f, media: media.connect("prepared", drop_unlinked))
    server.get_mount_points().add_factory(args.mount, factory)

    def pre_request(_client, ctx):
        msg = ctx.request
        _, method, uri, _ = msg.parse_request()
        name = GstRtsp.rtsp_method_as_text(method)
        rec = {
            "method": name,
            "uri": uri,
            "cseq": header(msg, GstRtsp.RTSPHeaderField.CSEQ),
            "require": header(msg, GstRtsp.RTSPHeaderField.REQUIRE),
            "session": header(msg, GstRtsp.RTSPHeaderField.SESSION),
            "transport": header(msg, GstRtsp.RTSPHeaderField.TRANSPORT),
        }
        text = f"RTSP {name} {uri} cseq={rec['cseq']} require={rec['require'] or '-'}"
        if rec["session"]:
            text += f" session={rec['session']}"
        if rec["transport"]:
            text += f" transport={rec['transport']}"
        log(text, rec)
        return GstRtsp.RTSPStatusCode.OK

    def client_connected(_server, client):
        for m in ("options", "describe", "setup", "play", "pause", "teardown",
                  "get-parameter", "set-parameter", "announce", "record"):
            client.connect(f"pre-{m}-request", pre_request)
        if args.session_timeout:
            client.connect("new-session", lambda _c, s: s.set_timeout(args.session_timeout))
        client.connect("closed", lambda _c: log("CLIENT closed", {"event": "closed"}))

    server.connect("client-connected", client_connected)

    if server.attach(None) == 0:
        print("ERROR cannot listen", flush=True)
        sys.exit(1)
    print(f"port {server.get_bound_port()}", flush=True)

    # Expire sessions nobody keeps alive, as cameras do (gst-rtsp-server itself only
    # removes expired sessions when asked to).
    pool = server.get_session_pool()

    def cleanup():
        n = pool.cleanup()
        if n:
            log(f"SESSION expired count={n}", {"event": "session-expired", "count": n})
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(1, cleanup)

    loop = GLib.MainLoop()

    def quit_(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_)
    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        # A pipe on stdin closing means the test that started us is gone.
        GLib.io_add_watch(0, GLib.IO_HUP | GLib.IO_ERR, quit_)
    loop.run()
    out.close()  # the header is already right; this only closes the file
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown while GStreamer's streaming threads may still run.
    os._exit(0)


# --------------------------------------------------------------------------- self-test


def start_server(wav, codec, log_path, extra=()):
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), wav, "0", "--codec", codec,
         "--log", log_path, *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "port":
        proc.kill()
        raise SystemExit(f"server did not start: {line}")
    return proc, int(line[1])


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def gst_client(url, codec, seconds):
    """rtspsrc backchannel=onvif, feeding a 1 kHz tone through push-backchannel-sample."""
    import ctypes

    Gst.init(None)
    pt, _, _, _, enc, pay = CODECS[codec]
    # In GStreamer 1.22 the push-backchannel-sample handler drops one reference to the
    # sample it is given, which PyGObject still owns (CRITICALs, then nothing is sent).
    # Take the extra reference it consumes (leaks one sample per packet in newer
    # versions that fixed this; harmless here).
    libgst = ctypes.CDLL("libgstreamer-1.0.so.0")
    libgst.gst_mini_object_ref.argtypes = [ctypes.c_void_p]
    libgst.gst_mini_object_ref.restype = ctypes.c_void_p

    def ref(boxed):  # PyGBoxed: PyObject_HEAD, then the C pointer
        libgst.gst_mini_object_ref(ctypes.c_void_p.from_address(id(boxed) + 16).value)

    pipe = Gst.parse_launch(
        f"rtspsrc name=src location={url} backchannel=onvif protocols=tcp latency=200 "
        "src. ! fakesink name=video sync=false async=false signal-handoffs=true"
    )
    src = pipe.get_by_name("src")
    loop = GLib.MainLoop()
    st = {"id": None, "back": None, "pushed": 0, "errors": set(), "done": False}
    npackets = int(seconds * RATE / 160)
    back = Gst.parse_launch(
        f"audiotestsrc is-live=true freq=1000 volume=0.5 samplesperbuffer=160 "
        f"num-buffers={npackets} ! audio/x-raw,format=S16LE,rate={RATE},channels=1 ! "
        f"{enc} ! {pay} pt={pt} ! appsink name=out emit-signals=true sync=false"
    )

    def select_stream(_src, idx, caps):
        if caps.get_structure(0).has_field("a-sendonly"):
            st["id"] = idx
        return True

    def new_sample(appsink):
        sample = appsink.emit("pull-sample")
        ref(sample)
        ret = src.emit("push-backchannel-sample", st["id"], sample)
        st["pushed"] += 1
        if ret != Gst.FlowReturn.OK:
            st["errors"].add(str(ret))
        return Gst.FlowReturn.OK

    back.get_by_name("out").connect("new-sample", new_sample)

    def first_video(*_):
        # Video only flows after PLAY; start talking then.
        if st["back"] is None and st["id"] is not None:
            st["back"] = back
            back.set_state(Gst.State.PLAYING)

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            st["errors"].add(msg.parse_error()[0].message)
            loop.quit()

    def on_back_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:
            # Let the camera's jitter buffer drain before TEARDOWN.
            GLib.timeout_add(700, loop.quit)

    src.connect("select-stream", select_stream)
    pipe.get_by_name("video").connect("handoff", first_video)
    pipe.get_bus().add_signal_watch()
    pipe.get_bus().connect("message", on_message)
    back.get_bus().add_signal_watch()
    back.get_bus().connect("message", on_back_message)
    GLib.timeout_add_seconds(int(seconds) + 15, loop.quit)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    back.set_state(Gst.State.NULL)
    pipe.set_state(Gst.State.NULL)  # sends TEARDOWN
    if st["id"] is None:
        st["errors"].add("no sendonly (backchannel) stream in the SDP")
    return {"packets_sent": st["pushed"], "errors": sorted(st["errors"])}


# G.711 as in the reference g711.c (and Python's old audioop): segment end points.
SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def ulaw(sample):
    """G.711 mu-law byte for one signed 16-bit sample."""
    v = sample >> 2  # 14-bit
    mask = 0xFF
    if v < 0:
        v, mask = -v, 0x7F
    v = min(v, 8159) + 33  # clip, add bias
    seg = next((i for i, end in enumerate(SEG_UEND) if v <= end), 8)
    if seg == 8:
        return 0x7F ^ mask
    return (seg << 4 | (v >> (seg + 1)) & 0x0F) ^ mask


def alaw(sample):
    """G.711 A-law byte for one signed 16-bit sample."""
    v = sample >> 3  # 13-bit
    mask = 0xD5
    if v < 0:
        v, mask = -v - 1, 0x55
    seg = next((i for i, end in enumerate(SEG_AEND) if v <= end), 8)
    if seg == 8:
        return 0x7F ^ mask
    return (seg << 4 | (v >> (1 if seg < 2 else seg)) & 0x0F) ^ mask


class RawRtspClient:
    """RTSP 1.0 over one TCP connection with interleaved RTP, as camesh will do it."""

    def __init__(self, host, port, trace=False):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.settimeout(None)
        self.trace = trace
        self.cseq = 0
        self.session = None
        self.responses = queue.Queue()
        self.received = {}  # interleaved channel -> packets received
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        f = self.sock.makefile("rb")
        try:
            while True:
                first = f.read(1)
                if not first:
                    break
                if first == b"$":  # interleaved frame: $, channel, 16-bit length, packet
                    ch, n = struct.unpack(">BH", f.read(3))
                    f.read(n)
                    self.received[ch] = self.received.get(ch, 0) + 1
                    continue
                lines = [(first + f.readline()).decode().rstrip("\r\n")]
                while lines[-1]:
                    lines.append(f.readline().decode().rstrip("\r\n"))
                heads = {}
                for line in lines[1:-1]:
                    k, _, v = line.partition(":")
                    heads[k.strip().lower()] = v.strip()
                body = f.read(int(heads.get("content-length", "0"))).decode()
                self.responses.put((lines[0], heads, body, lines[:-1]))
        except (OSError, ValueError, struct.error):
            pass
        self.responses.put(None)

    def request(self, method, uri, headers=()):
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.session and not any(k == "Session" for k, _ in headers):
            lines.append(f"Session: {self.session}")
        lines.append("User-Agent: onvif_backchannel.py raw client")
        text = "\r\n".join(lines) + "\r\n\r\n"
        if self.trace:
            print("C->S\n  " + text.rstrip().replace("\r\n", "\n  "), flush=True)
        self.sock.sendall(text.encode())
        resp = self.responses.get(timeout=10)
        if resp is None:
            raise RuntimeError(f"connection closed waiting for the {method} response")
        status, heads, body, raw = resp
        if self.trace:
            print("S->C\n  " + "\n  ".join(raw), flush=True)
            if body:
                print("  \n  " + body.rstrip().replace("\r\n", "\n  "), flush=True)
        if heads.get("cseq") != str(self.cseq):
            raise RuntimeError(f"CSeq mismatch: {heads.get('cseq')} != {self.cseq}")
        if "session" in heads:
            self.session = heads["session"].split(";")[0]
        return int(status.split()[1]), heads, body

    def send_interleaved(self, channel, packet):
        self.sock.sendall(struct.pack(">cBH", b"$", channel, len(packet)) + packet)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def parse_sdp(body, base):
    """Returns (session control, [media dicts]) with absolute control URLs."""

    def absolute(ctl):
        if ctl is None or ctl == "*":
            return base
        if ctl.startswith("rtsp://"):
            return ctl
        return base + ctl if base.endswith("/") else base + "/" + ctl

    session_ctl, medias = None, []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("m="):
            kind, _port, _proto, *fmts = line[2:].split()
            medias.append({"kind": kind, "pts": [int(p) for p in fmts], "control": None,
                           "direction": "sendrecv", "rtpmap": {}})
        elif line.startswith("a="):
            attr, _, value = line[2:].partition(":")
            target = medias[-1] if medias else None
            if attr == "control":
                if target is None:
                    session_ctl = value
                else:
                    target["control"] = value
            elif attr in ("sendonly", "recvonly", "sendrecv", "inactive") and target:
                target["direction"] = attr
            elif attr == "rtpmap" and target:
                pt, _, enc = value.partition(" ")
                target["rtpmap"][int(pt)] = enc
    for m in medias:
        m["control"] = absolute(m["control"])
    return absolute(session_ctl), medias


def raw_client(url, codec, seconds, trace=False, setup_video=True, drain=0.7):
    """DESCRIBE (Require), SETUP video + backchannel, PLAY, RTP on the channel, TEARDOWN."""
    host, _, rest = url[len("rtsp://"):].partition("/")
    hostname, _, port = host.partition(":")
    c = RawRtspClient(hostname, int(port or 554), trace)
    require = ("Require", BACKCHANNEL_TAG)
    try:
        code, heads, body = c.request("DESCRIBE", url, [("Accept", "application/sdp"), require])
        if code != 200:
            raise RuntimeError(f"DESCRIBE answered {code}")
        base = heads.get("content-base", url + "/")
        aggregate, medias = parse_sdp(body, base)
        back = [m for m in medias if m["direction"] == "sendonly"]
        if not back:
            raise RuntimeError("no sendonly (backchannel) track in the SDP")
        back = back[0]
        channel = 0
        if setup_video:
            for m in medias:
                if m is back:
                    continue
                code, _, _ = c.request("SETUP", m["control"], [
                    ("Transport", f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}")])
                if code != 200:
                    raise RuntimeError(f"SETUP {m['control']} answered {code}")
                channel += 2
        code, heads, _ = c.request("SETUP", back["control"], [
            ("Transport", f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"), require])
        if code != 200:
            raise RuntimeError(f"SETUP backchannel answered {code}")
        # Use the channel the server confirmed.
        tr = heads.get("transport", "")
        if "interleaved=" in tr:
            channel = int(tr.split("interleaved=")[1].split("-")[0].split(";")[0])
        code, _, _ = c.request("PLAY", aggregate, [require])
        if code != 200:
            raise RuntimeError(f"PLAY answered {code}")

        pt = back["pts"][0]
        encode = alaw if CODECS[codec][0] == 8 else ulaw
        if pt != CODECS[codec][0]:
            raise RuntimeError(f"backchannel payload type {pt}, expected {CODECS[codec][0]}")
        seq, ts, ssrc = random.randrange(65536), random.randrange(1 << 32), random.getrandbits(32)
        n = 0
        packets = int(seconds * RATE / 160)
        start = time.monotonic()
        for i in range(packets):
            payload = bytes(
                encode(int(16000 * math.sin(2 * math.pi * 1000 * (n + k) / RATE)))
                for k in range(160))
            rtp = struct.pack(">BBHII", 0x80, (0x80 if i == 0 else 0) | pt, seq, ts, ssrc)
            if trace and i == 0:
                print(f"C->S first RTP, interleaved channel {channel}: "
                      f"{struct.pack('>cBH', b'$', channel, 12 + 160).hex()} {rtp.hex()} "
                      f"+ 160 payload bytes", flush=True)
            c.send_interleaved(channel, rtp + payload)
            seq, ts, n = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, n + 160
            delay = start + (i + 1) * 0.020 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(drain)  # the camera's jitter buffer holds ~200 ms
        code, _, _ = c.request("TEARDOWN", aggregate)
        if trace:
            print(f"interleaved packets received per channel: {dict(sorted(c.received.items()))}")
        return {"packets_sent": packets, "teardown": code, "errors": []}
    finally:
        c.close()


def decode(path):
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-f", "s16le", "-acodec", "pcm_s16le",
         "-ac", "1", "-ar", str(RATE), "-"],
        check=True, capture_output=True).stdout
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def goertzel_power(x, freq):
    w = 2 * math.pi * freq / RATE
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant_frequency(samples):
    """Goertzel power scan: 10 Hz steps over 0.5 s, then 1 Hz steps over 1 s."""
    mid = len(samples) // 2
    coarse = samples[max(0, mid - 2000): mid + 2000]
    best = max(range(50, RATE // 2 - 40, 10), key=lambda f: goertzel_power(coarse, f))
    fine = samples[max(0, mid - 4000): mid + 4000]
    return max(range(best - 10, best + 11), key=lambda f: goertzel_power(fine, f))


def zero_crossing_frequency(samples):
    x = samples[RATE // 4: len(samples) - RATE // 4]  # skip the edges
    ups = [i for i in range(1, len(x)) if x[i - 1] < 0 <= x[i]]
    if len(ups) < 2:
        return 0.0
    return (len(ups) - 1) * RATE / (ups[-1] - ups[0])


def selftest(args):
    modes = ["gst", "raw"] if args.selftest == "both" else [args.selftest]
    ok = True
    seconds = 3.0
    for mode in modes:
        tmp = tempfile.mkdtemp(prefix="onvif_backchannel.")
        wav, log_path = os.path.join(tmp, "talkback.wav"), os.path.join(tmp, "server.log")
        proc, port = start_server(wav, args.codec, log_path)
        url = f"rtsp://127.0.0.1:{port}{args.mount}"
        try:
            if mode == "gst":
                result = gst_client(url, args.codec, seconds)
            else:
                result = raw_client(url, args.codec, seconds, trace=args.trace)
        except Exception as e:  # noqa: BLE001 - report and fail
            result = {"packets_sent": 0, "errors": [repr(e)]}
        time.sleep(0.3)
        stop_server(proc)
        with open(log_path) as f:
            records = [json.loads(line) for line in f]
        negotiated = any(r.get("method") == "DESCRIBE" and r.get("require") == BACKCHANNEL_TAG
                         for r in records)
        methods = [r["method"] for r in records if "method" in r]
        samples = decode(wav)
        freq = dominant_frequency(samples) if len(samples) >= RATE else 0
        zc = zero_crossing_frequency(samples) if len(samples) >= RATE else 0.0
        good = (abs(freq - 1000) <= 20 and negotiated and not result["errors"])
        ok = ok and good
        print(f"{mode}: {'PASS' if good else 'FAIL'} dominant {freq} Hz "
              f"(zero crossings {zc:.1f} Hz), {len(samples)} samples = "
              f"{len(samples) / RATE:.2f} s recorded, {result['packets_sent']} RTP packets "
              f"sent ({result['packets_sent'] * 160} samples), codec {args.codec}, "
              f"requests {' '.join(methods)}, backchannel negotiated: {negotiated}"
              + (f", errors: {result['errors']}" if result["errors"] else ""), flush=True)
        if good:
            for name in (wav, log_path):
                os.unlink(name)
            os.rmdir(tmp)
        else:
            print(f"  kept {wav} and {log_path}", flush=True)
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_wav", nargs="?")
    ap.add_argument("port", nargs="?", type=int, default=0)
    ap.add_argument("--codec", choices=sorted(CODECS), default="pcmu")
    ap.add_argument("--mount", default="/cam")
    ap.add_argument("--log")
    ap.add_argument("--session-timeout", type=int, default=0,
                    help="RTSP session timeout in seconds (default: the server's 60)")
    ap.add_argument("--selftest", nargs="?", const="both", choices=["gst", "raw", "both"])
    ap.add_argument("--trace", action="store_true", help="--selftest raw: print the exchange")
    args = ap.parse_args()
    if args.selftest:
        selftest(args)
    elif not args.out_wav:
        ap.error("OUT_WAV is required (or --selftest)")
    else:
        serve(args)


if __name__ == "__main__":
    main()
