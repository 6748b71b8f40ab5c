#!/usr/bin/env python3
"""Screenshots a page in headless Chromium once a condition holds in it.

    page_shot.py CHROMIUM PROFILE URL CONDITION OUT.png [WIDTH HEIGHT TIMEOUT_S]

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: commands
on fd 3, answers on fd 4, each a JSON text ended by a NUL byte), with the standard
library only: a phone-sized viewport (touch, mobile), the URL, CONDITION (a JavaScript
expression) polled every 250 ms, then a PNG of the viewport. Prints the page's
`window.camesh` as JSON on stdout. Exits 1 if the condition did not hold in time.
"""
import base64
import json
import os
import subprocess
import sys
import time


def main():
    chromium, profile, url, cond, out = sys.argv[1:6]
    width, height = int(sys.argv[6]) if len(sys.argv) > 6 else 390, int(sys.argv[7]) if len(sys.argv) > 7 else 844
    timeout = float(sys.argv[8]) if len(sys.argv) > 8 else 60.0
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def fds():
        # Out of the way first (either may be 3 or 4 already), then into place,
        # inheritable (os.pipe's are close-on-exec).
        a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
        a, b = os.dup2(a, 100), os.dup2(b, 101)
        os.dup2(100, 3, inheritable=True)
        os.dup2(101, 4, inheritable=True)

    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
        close_fds=False, preexec_fn=fds,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(None if os.environ.get("PAGE_SHOT_DEBUG") else subprocess.DEVNULL))
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    w = os.fdopen(to_chrome_w, "wb", buffering=0)
    r = os.fdopen(from_chrome_r, "rb", buffering=0)
    buf = b""
    next_id = [0]

    def call(method, params=None, session=None):
        nonlocal buf
        next_id[0] += 1
        msg = {"id": next_id[0], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        w.write(json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in buf:
                chunk = r.read(1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                buf += chunk
            one, buf = buf.split(b"\0", 1)
            m = json.loads(one)
            if m.get("id") == next_id[0]:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    ok = False
    state = None
    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Emulation.setDeviceMetricsOverride",
             {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}, s)
        call("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5}, s)
        call("Page.enable", {}, s)
        call("Page.navigate", {"url": url}, s)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = call("Runtime.evaluate", {"expression": f"Boolean({cond})", "returnByValue": True}, s)
            if v.get("result", {}).get("value") is True:
                ok = True
                break
            time.sleep(0.25)
        got = call("Runtime.evaluate", {"expression": "JSON.stringify(window.camesh ?? null)", "returnByValue": True}, s)
        state = got.get("result", {}).get("value")
        if ok:
            time.sleep(0.3)
            png = call("Page.captureScreenshot", {"format": "png"}, s)["data"]
            with open(out, "wb") as f:
                f.write(base64.b64decode(png))
        try:
            call("Browser.close")
        except RuntimeError:
            pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(state if state is not None else "null")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
