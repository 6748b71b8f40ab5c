#!/usr/bin/env python3
"""A small ONVIF device for the PTZ and events tests: device, media, PTZ and event
services on 127.0.0.1.

It checks what a real camera checks and records every call:
- the SOAP 1.2 envelope parses, and its Body names one known operation;
- the WS-Security UsernameToken: user, PasswordDigest = Base64(SHA-1(nonce + created +
  password)), a Created time within 5 minutes, and a nonce not seen before (replay);
- the ProfileToken of PTZ calls is the one GetProfiles handed out, speeds and positions
  are numbers in [-1, 1].
A call that fails a check gets a SOAP fault (HTTP 400, or 401 for bad credentials) and is
recorded with its error. Each call is one JSON line in the log file:
{"op": "ContinuousMove", "pan": 0.3, "tilt": 0.0, "zoom": 0.0, "ok": true, "t": 1712.3}

Events: CreatePullPointSubscription hands out /onvif/subscription?id=N; PullMessages
waits up to its Timeout for notifications; Renew and Unsubscribe are honoured. A test
makes the camera "see" something with a plain `GET /trigger?topic=T&name=N&value=V`
(no SOAP, no credentials: the test's hand, not a camera API), which queues one
notification (PropertyOperation Changed, data item N=V) for every live subscription.

It also answers GetStreamUri (rtsp://<host>:554/<profile>), and with a fourth argument
HOST it listens on HOST (default 127.0.0.1) and answers WS-Discovery Probes for
NetworkVideoTransmitter on 239.255.255.250:3702 (joined on HOST's interface) with a
ProbeMatch naming its device service.

Usage: onvif_ptz.py USER PASSWORD LOG_FILE [HOST]. Prints "port N" once listening.
"""

import base64
import datetime
import hashlib
import http.server
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

USER, PASSWORD, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
HOST = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
PROFILE = "profile_main"
PRESETS = [("1", "Door"), ("2", "Till")]
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tt": "http://www.onvif.org/ver10/schema",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
}
SERVICES = {
    "/onvif/device_service": {"GetCapabilities"},
    "/onvif/media": {"GetProfiles", "GetStreamUri"},
    "/onvif/ptz": {
        "ContinuousMove", "Stop", "AbsoluteMove", "RelativeMove",
        "GotoPreset", "GotoHomePosition", "GetPresets",
    },
    "/onvif/events": {"CreatePullPointSubscription"},
    "/onvif/subscription": {"PullMessages", "Renew", "Unsubscribe"},
}
# Live subscriptions: id -> {"queue": [...], "until": time}
subscriptions = {}
next_sub = [1]
news = threading.Condition()
seen_nonces = set()
lock = threading.Lock()


class Refused(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


def local(tag):
    return tag.rsplit("}", 1)[-1]


def check_security(env):
    token = env.find("s:Header/wsse:Security/wsse:UsernameToken", NS)
    if token is None:
        raise Refused(401, "no UsernameToken")
    user = token.findtext("wsse:Username", namespaces=NS)
    digest = token.findtext("wsse:Password", namespaces=NS)
    nonce = token.findtext("wsse:Nonce", namespaces=NS)
    created = token.findtext("wsu:Created", namespaces=NS)
    if None in (user, digest, nonce, created):
        raise Refused(401, "incomplete UsernameToken")
    ptype = token.find("wsse:Password", NS).get("Type", "")
    if not ptype.endswith("#PasswordDigest"):
        raise Refused(401, "password is not a digest")
    raw = base64.b64decode(nonce)
    want = base64.b64encode(hashlib.sha1(raw + created.encode() + PASSWORD.encode()).digest()).decode()
    if user != USER or digest != want:
        raise Refused(401, "Sender not authorized")
    when = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
        raise Refused(401, "Created is too far from now")
    with lock:
        if nonce in seen_nonces:
            raise Refused(401, "nonce replayed")
        seen_nonces.add(nonce)


def unit(el, attr):
    v = float(el.get(attr))
    if not -1.0 <= v <= 1.0:
        raise Refused(400, f"{attr}={v} out of range")
    return v


def vector(op_el, child):
    v = op_el.find(f"tptz:{child}", NS)
    if v is None:
        raise Refused(400, f"no {child}")
    pt = v.find("tt:PanTilt", NS)
    zm = v.find("tt:Zoom", NS)
    if pt is None or zm is None:
        raise Refused(400, f"{child} lacks PanTilt or Zoom")
    return {"pan": unit(pt, "x"), "tilt": unit(pt, "y"), "zoom": unit(zm, "x")}


def seconds(text, default):
    """PT<n>S, as ONVIF durations come here."""
    try:
        return float(text.strip().removeprefix("PT").removesuffix("S"))
    except (AttributeError, ValueError):
        return default


def events_op(op, op_el, query, rec):
    host = "http://%s:%d" % (HOST, PORT)
    if op == "CreatePullPointSubscription":
        ttl = seconds(op_el.findtext("tev:InitialTerminationTime", namespaces=NS), 60)
        with news:
            sid = next_sub[0]
            next_sub[0] += 1
            subscriptions[sid] = {"queue": [], "until": time.time() + ttl}
        rec["subscription"] = sid
        return (
            '<tev:CreatePullPointSubscriptionResponse xmlns:wsa5="http://www.w3.org/2005/08/addressing">'
            f"<tev:SubscriptionReference><wsa5:Address>{host}/onvif/subscription?id={sid}</wsa5:Address>"
            "</tev:SubscriptionReference></tev:CreatePullPointSubscriptionResponse>"
        )
    try:
        sid = int(query.get("id", ["0"])[0])
    except ValueError:
        sid = 0
    with news:
        sub = subscriptions.get(sid)
        if sub is None or sub["until"] < time.time():
            subscriptions.pop(sid, None)
            raise Refused(400, "no such subscription (expired?)")
    rec["subscription"] = sid
    if op == "Renew":
        ttl = seconds(op_el.findtext("wsnt:TerminationTime", namespaces=NS), 60)
        with news:
            sub["until"] = time.time() + ttl
        return "<wsnt:RenewResponse/>"
    if op == "Unsubscribe":
        with news:
            subscriptions.pop(sid, None)
        return "<wsnt:UnsubscribeResponse/>"
    wait = min(seconds(op_el.findtext("tev:Timeout", namespaces=NS), 1), 10)
    limit = int(op_el.findtext("tev:MessageLimit", namespaces=NS) or "10")
    deadline = time.time() + wait
    with news:
        while not sub["queue"] and time.time() < deadline:
            news.wait(deadline - time.time())
        msgs, sub["queue"] = sub["queue"][:limit], sub["queue"][limit:]
    rec["messages"] = len(msgs)
    body = "".join(
        "<wsnt:NotificationMessage>"
        f'<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{m["topic"]}</wsnt:Topic>'
        f'<wsnt:Message><tt:Message UtcTime="{m["time"]}" PropertyOperation="Changed">'
        '<tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="vsc1"/></tt:Source>'
        f'<tt:Data><tt:SimpleItem Name="{m["name"]}" Value="{m["value"]}"/></tt:Data>'
        "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
        for m in msgs
    )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"<tev:PullMessagesResponse><tev:CurrentTime>{now}</tev:CurrentTime>"
        f"<tev:TerminationTime>{now}</tev:TerminationTime>{body}</tev:PullMessagesResponse>"
    )


def trigger(query):
    now = datetime.datetime.now(datetime.timezone.utc)
    m = {
        "topic": query.get("topic", ["tns1:VideoSource/MotionAlarm"])[0],
        "name": query.get("name", ["State"])[0],
        "value": query.get("value", ["true"])[0],
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000),
    }
    with news:
        for sub in subscriptions.values():
            sub["queue"].append(m)
        n = len(subscriptions)
        news.notify_all()
    log({"op": "trigger", "ok": True, "subscriptions": n, **m})
    return n


def handle(path, body):
    path, _, qs = path.partition("?")
    query = urllib.parse.parse_qs(qs)
    env = ET.fromstring(body)
    if env.tag != "{%s}Envelope" % NS["s"]:
        raise Refused(400, "not a SOAP 1.2 envelope")
    check_security(env)
    ops = list(env.find("s:Body", NS))
    if len(ops) != 1:
        raise Refused(400, "Body must hold one operation")
    op_el = ops[0]
    op = local(op_el.tag)
    if op not in SERVICES.get(path, set()):
        raise Refused(400, f"{op} is not an operation of {path}")
    rec = {"op": op}
    if op == "GetCapabilities":
        host = "http://%s:%d" % (HOST, PORT)
        return rec, (
            '<tds:GetCapabilitiesResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
            "<tds:Capabilities>"
            f"<tt:Media><tt:XAddr>{host}/onvif/media</tt:XAddr></tt:Media>"
            f"<tt:PTZ><tt:XAddr>{host}/onvif/ptz</tt:XAddr></tt:PTZ>"
            f"<tt:Events><tt:XAddr>{host}/onvif/events</tt:XAddr></tt:Events>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )
    if op == "GetProfiles":
        return rec, (
            '<trt:GetProfilesResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl">'
            f'<trt:Profiles token="{PROFILE}" fixed="true"><tt:Name>main</tt:Name>'
            "<tt:VideoEncoderConfiguration><tt:Name>enc0</tt:Name><tt:Resolution><tt:Width>1920</tt:Width>"
            "<tt:Height>1080</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
            '<trt:Profiles token="profile_sub"><tt:Name>sub</tt:Name>'
            "<tt:VideoEncoderConfiguration><tt:Name>enc1</tt:Name><tt:Resolution><tt:Width>640</tt:Width>"
            "<tt:Height>360</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
            "</trt:GetProfilesResponse>"
        )
    if op == "GetStreamUri":
        token = op_el.findtext("{http://www.onvif.org/ver10/media/wsdl}ProfileToken")
        if token not in (PROFILE, "profile_sub"):
            raise Refused(400, "unknown ProfileToken")
        rec["profile"] = token
        return rec, (
            '<trt:GetStreamUriResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><trt:MediaUri>'
            f"<tt:Uri>rtsp://{HOST}:554/{token}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "</trt:MediaUri></trt:GetStreamUriResponse>"
        )
    if path in ("/onvif/events", "/onvif/subscription"):
        return rec, events_op(op, op_el, query, rec)
    if op_el.findtext("tptz:ProfileToken", namespaces=NS) != PROFILE:
        raise Refused(400, "unknown ProfileToken")
    if op == "ContinuousMove":
        rec.update(vector(op_el, "Velocity"))
    elif op == "AbsoluteMove":
        rec.update(vector(op_el, "Position"))
    elif op == "RelativeMove":
        rec.update(vector(op_el, "Translation"))
    elif op == "GotoPreset":
        token = op_el.findtext("tptz:PresetToken", namespaces=NS)
        if token not in dict(PRESETS):
            raise Refused(400, f"no preset {token}")
        rec["preset"] = token
    elif op == "Stop":
        rec["pan_tilt"] = op_el.findtext("tptz:PanTilt", namespaces=NS)
        rec["zoom_stop"] = op_el.findtext("tptz:Zoom", namespaces=NS)
    if op == "GetPresets":
        items = "".join(
            f'<tptz:Preset token="{t}"><tt:Name>{n}</tt:Name></tptz:Preset>' for t, n in PRESETS
        )
        return rec, f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>"
    return rec, f"<tptz:{op}Response/>"


def envelope(inner):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:tt="{NS["tt"]}" xmlns:tptz="{NS["tptz"]}" '
        f'xmlns:tev="{NS["tev"]}" xmlns:wsnt="{NS["wsnt"]}">'
        f"<s:Body>{inner}</s:Body></s:Envelope>"
    )


def fault(reason):
    return envelope(
        "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>'
    )


def log(rec):
    rec["t"] = time.time()
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, qs = self.path.partition("?")
        if path != "/trigger":
            self.send_error(404)
            return
        data = b"%d\n" % trigger(urllib.parse.parse_qs(qs))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, 1 << 20))
        try:
            rec, inner = handle(self.path, body)
            rec["ok"] = True
            status, out = 200, envelope(inner)
        except Refused as e:
            rec, status, out = {"op": "?", "ok": False, "error": str(e)}, e.status, fault(str(e))
        except (ET.ParseError, ValueError, TypeError) as e:
            rec, status, out = {"op": "?", "ok": False, "error": f"bad request: {e}"}, 400, fault("bad request")
        log(rec)
        data = out.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def discovery():
    """Answers Probes on the WS-Discovery group, on HOST's interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 3702))
    mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(HOST))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    wsa = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
    while True:
        data, peer = sock.recvfrom(65536)
        try:
            env = ET.fromstring(data)
        except ET.ParseError:
            continue
        msg_id = env.findtext(f"{{{NS['s']}}}Header/{{{wsa}}}MessageID")
        probe = env.find(f"{{{NS['s']}}}Body/{{http://schemas.xmlsoap.org/ws/2005/04/discovery}}Probe")
        if probe is None or not msg_id:
            continue
        log({"op": "Probe", "ok": True, "from": peer[0]})
        reply = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<e:Envelope xmlns:e="{NS["s"]}" xmlns:w="{wsa}" '
            'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
            f"<e:Header><w:MessageID>uuid:5f2a9c1e-0000-4000-8000-000000000001</w:MessageID><w:RelatesTo>{msg_id}</w:RelatesTo>"
            "<w:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</w:To>"
            "<w:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</w:Action></e:Header>"
            "<e:Body><d:ProbeMatches><d:ProbeMatch><w:EndpointReference><w:Address>urn:uuid:0a1b2c3d-0000-4000-8000-00000000cafe</w:Address>"
            "</w:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types>"
            "<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/Door%20Cam "
            "onvif://www.onvif.org/hardware/TestCam-1</d:Scopes>"
            f"<d:XAddrs>http://{HOST}:{PORT}/onvif/device_service</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
            "</d:ProbeMatch></d:ProbeMatches></e:Body></e:Envelope>"
        )
        sock.sendto(reply.encode(), peer)


server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
PORT = server.server_address[1]
if len(sys.argv) > 4:
    threading.Thread(target=discovery, daemon=True).start()
print(f"port {PORT}", flush=True)
server.serve_forever()
