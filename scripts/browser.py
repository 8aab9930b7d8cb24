#!/usr/bin/env python3
"""Drive headless Chromium through the Chrome DevTools Protocol (stdlib only).

Usage: python3 scripts/browser.py <plan.json>      ("-" reads the plan from stdin)

Plan:
  {"chromium": "chromium", "timeoutSeconds": 180,
   "viewport": {"width": 390, "height": 844, "scale": 2, "mobile": true},
   "steps": [
     {"navigate": "http://127.0.0.1:8080/queue/b1#consumer=c1"},
     {"reload": true},
     {"waitFor": "document.body.dataset.ready === '1'", "timeoutSeconds": 60},
     {"eval": "document.querySelector('#state').textContent"},
     {"click": "#reserve"},
     {"screenshot": "/tmp/shot.png"},
     {"sleep": 1.5}
   ]}

Prints one JSON object on stdout:
  {"ok": true, "results": [...], "consoleErrors": [...]}
  {"ok": false, "error": "...", "step": n, "results": [...], "consoleErrors": [...]}  (exit 1)
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request


class StepError(Exception):
    pass


class Deadline(Exception):
    pass


STATE = {
    "results": [],
    "step": None,
    "consoleErrors": [],
    "proc": None,
    "tmp": None,
    "deadline": None,
}
OUTPUT_LOCK = threading.Lock()
FINISHED = False


def remaining():
    left = STATE["deadline"] - time.monotonic()
    if left <= 0:
        raise Deadline("overall timeout exceeded")
    return left


# ---------------------------------------------------------------- WebSocket

class WebSocket:
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise StepError("unsupported websocket url: " + url)
        host = u.hostname or "127.0.0.1"
        port = u.port or 80
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        self.sock = socket.create_connection((host, port), timeout=min(30, remaining()))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16))
        req = (
            "GET %s HTTP/1.1\r\n"
            "Host: %s:%d\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key.decode())
        )
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill(time.monotonic() + 30)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise StepError("websocket handshake failed: " + lines[0])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        expect = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expect:
            raise StepError("websocket handshake: bad Sec-WebSocket-Accept")
        self.fragments = None
        self.frag_opcode = None

    def _fill(self, until):
        left = min(until - time.monotonic(), remaining())
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise StepError("browser connection closed")
        self.buf += chunk

    def _read(self, n, until):
        while len(self.buf) < n:
            self._fill(until)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def send_frame(self, opcode, payload):
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack("!H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", n)
        mask = os.urandom(4)
        header += mask
        if n:
            reps = (mask * (n // 4 + 1))[:n]
            masked = (int.from_bytes(payload, "big") ^ int.from_bytes(reps, "big")).to_bytes(n, "big")
        else:
            masked = b""
        self.sock.settimeout(min(30, remaining()))
        self.sock.sendall(bytes(header) + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode("utf-8"))

    def recv_message(self, until):
        """Return the next complete text/binary message, or raise socket.timeout."""
        while True:
            # Only consume a frame once its header is available; partial
            # data stays in the buffer if a timeout interrupts us.
            b0, b1 = self._peek_header(until)
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            n = b1 & 0x7F
            hlen = 2
            if n == 126:
                hlen = 4
            elif n == 127:
                hlen = 10
            if masked:
                hlen += 4
            while len(self.buf) < hlen:
                self._fill(until)
            if n == 126:
                n = struct.unpack("!H", bytes(self.buf[2:4]))[0]
            elif n == 127:
                n = struct.unpack("!Q", bytes(self.buf[2:10]))[0]
            while len(self.buf) < hlen + n:
                self._fill(max(until, time.monotonic() + 30))
            mask = bytes(self.buf[hlen - 4:hlen]) if masked else None
            payload = bytes(self.buf[hlen:hlen + n])
            del self.buf[:hlen + n]
            if mask and n:
                reps = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(reps, "big")).to_bytes(n, "big")
            if opcode == 0x9:  # ping
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:  # close
                try:
                    self.send_frame(0x8, payload[:2])
                except OSError:
                    pass
                raise StepError("browser closed the websocket")
            if opcode in (0x1, 0x2):
                if fin:
                    return payload
                self.fragments = [payload]
                self.frag_opcode = opcode
                continue
            if opcode == 0x0:
                if self.fragments is None:
                    raise StepError("websocket: unexpected continuation frame")
                self.fragments.append(payload)
                if fin:
                    data = b"".join(self.fragments)
                    self.fragments = None
                    return data
                continue
            raise StepError("websocket: unknown opcode %d" % opcode)

    def _peek_header(self, until):
        while len(self.buf) < 2:
            self._fill(until)
        return self.buf[0], self.buf[1]

    def close(self):
        try:
            self.send_frame(0x8, struct.pack("!H", 1000))
        except Exception:
            pass
        try:
            self.sock.close()
        except Exception:
            pass


# ---------------------------------------------------------------- CDP

class CDP:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []
        self.replies = {}

    def _handle(self, raw):
        msg = json.loads(raw.decode("utf-8"))
        if "id" in msg:
            self.replies[msg["id"]] = msg
            return
        method = msg.get("method", "")
        params = msg.get("params", {})
        record_console(method, params)
        if method == "Inspector.targetCrashed":
            raise StepError("page crashed")
        self.events.append(msg)

    def pump(self, until):
        """Read messages until `until` (monotonic) passes."""
        while True:
            if time.monotonic() >= until:
                return
            try:
                raw = self.ws.recv_message(until)
            except socket.timeout:
                continue  # re-checks both `until` and the overall deadline
            self._handle(raw)

    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        mid = self.next_id
        self.ws.send_text(json.dumps({"id": mid, "method": method, "params": params or {}}))
        until = time.monotonic() + timeout
        while mid not in self.replies:
            if time.monotonic() >= until:
                raise StepError("timed out waiting for reply to " + method)
            try:
                raw = self.ws.recv_message(until)
            except socket.timeout:
                continue
            self._handle(raw)
        msg = self.replies.pop(mid)
        if "error" in msg:
            raise StepError("%s failed: %s" % (method, msg["error"].get("message", msg["error"])))
        return msg.get("result", {})

    def wait_event(self, name, timeout=60):
        until = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == name:
                    del self.events[i]
                    return ev.get("params", {})
            if time.monotonic() >= until:
                raise StepError("timed out waiting for " + name)
            try:
                raw = self.ws.recv_message(until)
            except socket.timeout:
                continue
            self._handle(raw)

    def drop_events(self, name):
        self.events = [e for e in self.events if e.get("method") != name]


def remote_value(obj):
    if not isinstance(obj, dict):
        return obj
    if "value" in obj:
        return obj["value"]
    if obj.get("type") == "undefined":
        return None
    if "unserializableValue" in obj:
        return obj["unserializableValue"]
    return obj.get("description")


def record_console(method, params):
    errs = STATE["consoleErrors"]
    if method == "Runtime.exceptionThrown":
        d = params.get("exceptionDetails", {})
        exc = d.get("exception") or {}
        text = exc.get("description") or d.get("text") or "exception"
        where = d.get("url", "")
        if where:
            text += " (%s:%s)" % (where, d.get("lineNumber", 0) + 1)
        errs.append("exception: " + text)
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        parts = []
        for a in params.get("args", []):
            v = remote_value(a)
            parts.append(v if isinstance(v, str) else json.dumps(v))
        errs.append("console.%s: %s" % (params.get("type"), " ".join(parts)))
    elif method == "Log.entryAdded":
        e = params.get("entry", {})
        if e.get("level") == "error":
            text = "log/%s: %s" % (e.get("source", "other"), e.get("text", ""))
            if e.get("url"):
                text += " (%s)" % e["url"]
            errs.append(text)


def evaluate(cdp, expr, timeout=60):
    res = cdp.call("Runtime.evaluate", {
        "expression": expr,
        "returnByValue": True,
        "awaitPromise": True,
        "userGesture": True,
    }, timeout=timeout)
    if "exceptionDetails" in res:
        d = res["exceptionDetails"]
        exc = d.get("exception") or {}
        raise StepError("evaluation threw: " + str(exc.get("description") or d.get("text")))
    return remote_value(res.get("result", {}))


# ---------------------------------------------------------------- browser

def http_json(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=min(10, remaining())) as r:
        return json.loads(r.read().decode("utf-8"))


def find_chromium(name):
    for cand in [name, "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]:
        if cand and (os.path.sep in cand and os.path.exists(cand) or shutil.which(cand)):
            return cand
    raise StepError("chromium not found: " + str(name))


def launch(plan):
    exe = find_chromium(plan.get("chromium") or "chromium")
    tmp = tempfile.mkdtemp(prefix="browser-py-")
    STATE["tmp"] = tmp
    profile = os.path.join(tmp, "profile")
    os.mkdir(profile)
    log = open(os.path.join(tmp, "chromium.log"), "wb")
    args = [
        exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
        "--user-data-dir=" + profile, "about:blank",
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    STATE["proc"] = proc
    port_file = os.path.join(profile, "DevToolsActivePort")
    until = time.monotonic() + 30
    port = None
    while time.monotonic() < until:
        remaining()
        if proc.poll() is not None:
            break
        try:
            with open(port_file) as f:
                first = f.readline().strip()
            if first.isdigit():
                port = int(first)
                break
        except OSError:
            pass
        time.sleep(0.05)
    if port is None:
        log.flush()
        try:
            with open(os.path.join(tmp, "chromium.log"), "rb") as f:
                tail = f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            tail = ""
        raise StepError("chromium did not start (no DevToolsActivePort): " + tail)
    base = "http://127.0.0.1:%d" % port
    ws_url = None
    until = time.monotonic() + 15
    while ws_url is None and time.monotonic() < until:
        try:
            for t in http_json(base + "/json/list"):
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    ws_url = t["webSocketDebuggerUrl"]
                    break
            if ws_url is None:
                t = http_json(base + "/json/new?about:blank", method="PUT")
                ws_url = t.get("webSocketDebuggerUrl")
        except Exception:
            time.sleep(0.2)
    if not ws_url:
        raise StepError("no page target found")
    return CDP(WebSocket(ws_url))


def cleanup():
    proc = STATE.get("proc")
    if proc is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError, OSError):
                pass
            try:
                proc.wait(timeout=3)
                if sig == signal.SIGTERM:
                    # make sure stragglers in the group are gone too
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                break
            except subprocess.TimeoutExpired:
                continue
        STATE["proc"] = None
    tmp = STATE.get("tmp")
    if tmp:
        for _ in range(5):
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(tmp):
                break
            time.sleep(0.2)
        STATE["tmp"] = None


def finish(out, code):
    global FINISHED
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
    with OUTPUT_LOCK:
        if FINISHED:
            while True:  # another thread is reporting and will exit the process
                time.sleep(1)
        FINISHED = True
        try:
            cleanup()
        except Exception:
            pass
        out["consoleErrors"] = list(STATE["consoleErrors"])
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    os._exit(code)


def fail(message):
    out = {"ok": False, "error": message, "step": STATE["step"], "results": list(STATE["results"])}
    finish(out, 1)


def watchdog(seconds):
    time.sleep(seconds + 5)  # the main thread normally notices first
    fail("overall timeout of %ss exceeded" % seconds)


# ---------------------------------------------------------------- steps

def run_step(cdp, step):
    timeout = float(step.get("timeoutSeconds", 60))
    if "navigate" in step:
        cdp.drop_events("Page.loadEventFired")
        res = cdp.call("Page.navigate", {"url": step["navigate"]}, timeout=timeout)
        if res.get("errorText"):
            raise StepError("navigation failed: " + res["errorText"])
        if res.get("loaderId"):  # absent for same-document (fragment) navigations
            cdp.wait_event("Page.loadEventFired", timeout=timeout)
        return None
    if "reload" in step:
        cdp.drop_events("Page.loadEventFired")
        cdp.call("Page.reload", {"ignoreCache": True}, timeout=timeout)
        cdp.wait_event("Page.loadEventFired", timeout=timeout)
        return None
    if "waitFor" in step:
        expr = step["waitFor"]
        until = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = evaluate(cdp, expr, timeout=max(1.0, min(10.0, until - time.monotonic())))
                if last:
                    return None
            except StepError as e:
                last = "error: " + str(e)
            if time.monotonic() >= until:
                try:
                    text = evaluate(cdp, "document.body ? document.body.innerText : ''", timeout=5)
                except StepError as e:
                    text = "<unavailable: %s>" % e
                raise StepError("waitFor timed out after %ss: %s; last value: %s; page text: %s"
                                % (timeout, expr, json.dumps(last), text))
            cdp.pump(time.monotonic() + 0.1)
    if "eval" in step:
        return evaluate(cdp, step["eval"], timeout=timeout)
    if "click" in step:
        sel = json.dumps(step["click"])
        ok = evaluate(cdp, "(() => { const e = document.querySelector(%s); "
                           "if (!e) return false; e.click(); return true; })()" % sel, timeout=timeout)
        if not ok:
            raise StepError("click: no element matches " + step["click"])
        return None
    if "screenshot" in step:
        path = step["screenshot"]
        res = cdp.call("Page.captureScreenshot", {"format": "png"}, timeout=timeout)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(res["data"]))
        return None
    if "sleep" in step:
        cdp.pump(time.monotonic() + float(step["sleep"]))
        return None
    raise StepError("unknown step: " + json.dumps(step))


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: browser.py <plan.json>\n")
        sys.stdout.write(json.dumps({"ok": False, "error": "usage: browser.py <plan.json>",
                                     "step": None, "results": [], "consoleErrors": []}) + "\n")
        sys.exit(1)
    STATE["deadline"] = time.monotonic() + 180
    try:
        if sys.argv[1] == "-":
            plan = json.load(sys.stdin)
        else:
            with open(sys.argv[1]) as f:
                plan = json.load(f)
    except Exception as e:
        fail("cannot read plan: %s" % e)
    total = float(plan.get("timeoutSeconds", 180))
    STATE["deadline"] = time.monotonic() + total
    threading.Thread(target=watchdog, args=(total,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: fail("terminated"))
    signal.signal(signal.SIGINT, lambda *_: fail("interrupted"))
    try:
        cdp = launch(plan)
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        vp = plan.get("viewport")
        if vp:
            cdp.call("Emulation.setDeviceMetricsOverride", {
                "width": int(vp.get("width", 390)),
                "height": int(vp.get("height", 844)),
                "deviceScaleFactor": float(vp.get("scale", 1)),
                "mobile": bool(vp.get("mobile", False)),
            })
            if vp.get("mobile"):
                try:
                    cdp.call("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
                except StepError:
                    pass
        for i, step in enumerate(plan.get("steps", [])):
            STATE["step"] = i
            STATE["results"].append(run_step(cdp, step))
        STATE["step"] = None
        # collect late console errors
        try:
            cdp.pump(time.monotonic() + 0.2)
        except Exception:
            pass
        cdp.ws.close()
    except Deadline:
        fail("overall timeout of %ss exceeded" % total)
    except StepError as e:
        fail(str(e))
    except Exception as e:
        fail("%s: %s" % (type(e).__name__, e))
    finish({"ok": True, "results": list(STATE["results"])}, 0)


if __name__ == "__main__":
    main()
