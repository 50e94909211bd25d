"""Live view for headless devices: ``fer-edge run --serve HOST:PORT``.

A standard-library HTTP server on a daemon thread serves

- ``/``             a page (stock browser, no plugin) with the stream and the current faces,
- ``/stream.mjpg``  the annotated frames as MJPEG (``multipart/x-mixed-replace``),
- ``/events``       the current faces, labels and probabilities as Server-Sent Events,
- ``/state.json``   the same, for polling,
- ``/health``       FPS, uptime, frames, viewers.

The loop never waits for a viewer: it only replaces one "latest frame" slot and wakes the
viewer threads. Each viewer sends the newest frame when it is ready for one, so a slow viewer
skips frames (nothing queues) and a stalled one only blocks its own thread, until its socket
times out. JPEG encoding happens on the viewer threads, once per frame, and only while
someone watches (otherwise the loop does not even draw the frame).

With a token (``--serve-token`` or ``FER_EDGE_SERVE_TOKEN``) every request must carry it, as
``?token=...`` or ``Authorization: Bearer ...``; otherwise 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..errors import FerEdgeError, redact, register
from ..results import FrameResult
from .events import SCHEMA
from .sinks import LoopRates

log = logging.getLogger(__name__)

TOKEN_ENV = "FER_EDGE_SERVE_TOKEN"
SOCKET_TIMEOUT_S = 10.0  # a viewer that reads nothing for this long is dropped
JPEG_QUALITY = 80
KEEP_STATES = 64  # states kept by frame, for viewers whose stream is a few frames behind


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (127.0.0.1) or ``PORT``; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else ""
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 0 <= p <= 65535:
        raise FerEdgeError(f"--serve {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 "
                           "(port 0: any free port)")
    return host or "127.0.0.1", p


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fer-edge live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee;display:flex;
flex-wrap:wrap;gap:16px;padding:16px}
#view{max-width:100%;border:1px solid #444;background:#000}
#side{min-width:260px;flex:1} table{border-collapse:collapse;width:100%}
td,th{padding:2px 6px;text-align:left;font-variant-numeric:tabular-nums}
.bar{background:#4a8;height:10px} #status{color:#aaa;margin-bottom:8px}
h2{margin:4px 0 8px 0;font-size:18px}
</style></head><body>
<img id="view" alt="live stream">
<div id="side"><h2>fer-edge live</h2><div id="status">connecting…</div>
<div id="faces"></div></div>
<script>
// q carries ?token=... to the stream and the events; v pairs them: the events then send the
// state of the frame this page's stream has just been sent, so panel and picture agree.
const v = Math.random().toString(36).slice(2, 10);
const q = (location.search ? location.search + '&' : '?') + 'v=' + v;
document.getElementById('view').src = 'stream.mjpg' + q;
window.ferState = null; window.ferUpdates = 0; window.ferEnded = false;
function show(s) {
  window.ferState = s; window.ferUpdates++;
  document.getElementById('status').textContent = (window.ferEnded ? 'ended · ' : '') +
    'frame ' + s.frame + ' · ' + s.fps.toFixed(1) + ' FPS · ' + s.faces.length + ' face(s)';
  // Built with the DOM and textContent, never innerHTML: a label is text, whatever it holds.
  const el = (tag, cls, text) => { const e = document.createElement(tag);
    if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
  const faces = [];
  for (const f of s.faces) {
    const head = el('h2', 'face', '#' + f.track_id + ' ' + f.label + ' ' + f.score.toFixed(2));
    head.dataset.label = f.label;
    const table = el('table');
    for (const [k, v] of Object.entries(f.probs)) {
      const row = el('tr'), bar = el('div', 'bar'), cell = el('td');
      bar.style.width = (100 * v).toFixed(0) + '%'; cell.style.width = '60%';
      cell.append(bar); row.append(el('td', '', k), el('td', '', v.toFixed(2)), cell);
      table.append(row);
    }
    faces.push(head, table);
  }
  document.getElementById('faces').replaceChildren(...faces);
}
const es = new EventSource('events' + q);
es.onmessage = e => show(JSON.parse(e.data));
es.addEventListener('end', e => { window.ferEnded = true; es.close();
  if (window.ferState) show(window.ferState); });
es.onerror = () => { if (!window.ferEnded)
  document.getElementById('status').textContent = 'disconnected, retrying…'; };
</script></body></html>
"""


def _csp_hash(tag: str) -> str:
    body = PAGE.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


# The page's own script and style (by hash) and nothing else: no inline script from anywhere
# else (an injected <img onerror>, <script>), no other origin, no plugins, no framing.
CSP = (f"default-src 'none'; script-src {_csp_hash('script')}; style-src {_csp_hash('style')}; "
       "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
VIEWER_ID = re.compile(r"[A-Za-z0-9]{1,16}")


class _Hub:
    """The one place the loop and the viewer threads meet: the latest frame, the recent
    states by frame, and which frame each paired viewer's stream was sent last."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seq = 0
        self.image: np.ndarray | None = None
        self.image_seq = 0  # the publish the image belongs to
        self.jpeg: tuple[int, bytes] | None = None  # (image_seq, encoded) cache
        self.state: dict = {"schema": SCHEMA, "frame": None, "timestamp": None, "fps": 0.0,
                            "faces": []}
        self.states: dict[int, dict] = {}  # seq -> state, the last KEEP_STATES
        self.shown: dict[str, int] = {}  # viewer id -> seq of the frame its stream got last
        self.closed = False
        self.streams = 0  # MJPEG viewers connected now
        self.listeners = 0  # event-stream pages connected now

    def publish(self, image: np.ndarray | None, state: dict) -> None:
        with self.cond:
            self.seq += 1
            if image is not None:
                self.image, self.image_seq = image, self.seq
            self.state = self.states[self.seq] = state
            while len(self.states) > KEEP_STATES:
                del self.states[next(iter(self.states))]
            self.cond.notify_all()

    def wait(self, seen: int, timeout: float = 1.0) -> int:
        """Wait until something newer than ``seen`` exists (or the end); the newest seq."""
        with self.cond:
            self.cond.wait_for(lambda: self.seq != seen or self.closed, timeout)
            return self.seq

    def state_for(self, viewer: str | None) -> tuple[int, dict | None]:
        """(seq, state) a page should show: without a viewer id, the newest; with one, the
        state of the frame that viewer's stream was sent last (None while its stream has no
        frame: the panel waits for the picture); at the end, the last state. Call under
        ``cond``."""
        if viewer is None or self.closed:
            return self.seq, self.state
        if viewer not in self.shown:
            return -1, None
        seq = self.shown[viewer]
        return seq, self.states.get(seq, self.state)

    def mark_shown(self, viewer: str | None, seq: int) -> None:
        if viewer is not None:
            with self.cond:
                self.shown[viewer] = seq
                self.cond.notify_all()

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        with self.cond:
            seq, image, cached = self.image_seq, self.image, self.jpeg
        if image is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        out = (seq, buf.tobytes())
        with self.cond:
            self.jpeg = out
        return out


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S  # socket timeout: a stalled viewer's write fails eventually
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args) -> None:  # quiet unless -v; never the token
        log.debug("serve: %s %s", self.address_string(), redact(fmt % args))

    def _authorised(self, query: dict) -> bool:
        token = self.server.token
        if not token:
            return True
        given = (query.get("token") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = given or auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        if not self._authorised(parse_qs(url.query)):
            self._send(401, b"401: token required (?token=... or Authorization: Bearer)\n",
                       "text/plain; charset=utf-8")
            return
        hub = self.server.hub
        route = url.path
        viewer = (parse_qs(url.query).get("v") or [None])[0]
        viewer = viewer if viewer and VIEWER_ID.fullmatch(viewer) else None
        try:
            if route in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif route == "/health":
                self._send(200, json.dumps(self.server.health()).encode(), "application/json")
            elif route == "/state.json":
                with hub.cond:
                    state = hub.state
                self._send(200, json.dumps(state).encode(), "application/json")
            elif route == "/stream.mjpg":
                self._stream(viewer)
            elif route == "/events":
                self._events(viewer)
            else:
                self._send(404, b"404: try / /stream.mjpg /events /state.json /health\n",
                           "text/plain; charset=utf-8")
        except (ConnectionError, TimeoutError, OSError):
            pass  # the viewer went away: only its thread notices

    def _stream(self, viewer: str | None) -> None:
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with hub.cond:
            hub.streams += 1
        try:
            sent = -1
            while not hub.closed:
                hub.wait(sent)
                got = hub.latest_jpeg()
                if got is None or got[0] == sent:
                    continue
                sent, jpeg = got
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
                hub.mark_shown(viewer, sent)  # its page's panel now shows this frame's state
        finally:
            with hub.cond:
                hub.streams -= 1
                if viewer is not None:
                    hub.shown.pop(viewer, None)

    def _events(self, viewer: str | None) -> None:
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with hub.cond:
            hub.listeners += 1
        try:
            seen = -1
            while True:
                with hub.cond:
                    hub.cond.wait_for(lambda s=seen: hub.state_for(viewer)[0] != s or hub.closed,
                                      1.0)
                    (seq, state), closed = hub.state_for(viewer), hub.closed
                if seq != seen:
                    seen = seq
                    if state is not None:  # None: this viewer's stream has no frame yet
                        self.wfile.write(b"data: " + json.dumps(state).encode() + b"\n\n")
                if closed:  # the last state went out above; tell the page the run ended
                    self.wfile.write(b"event: end\ndata: {}\n\n")
                    self.wfile.flush()
                    return
                self.wfile.flush()
        finally:
            with hub.cond:
                hub.listeners -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], token: str | None, rates: LoopRates):
        self.hub, self.token, self.rates = _Hub(), token, rates
        self.address_family = _family(addr[0])
        super().__init__(addr, _Handler)

    def health(self) -> dict:
        return {"status": "ok" if not self.hub.closed else "ended", **self.rates.to_dict(),
                "viewers": self.hub.streams}


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address or a name that only resolves to one, else IPv4."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return socket.AF_INET  # bind() says what is wrong with it
    families = {i[0] for i in infos}
    return socket.AF_INET if socket.AF_INET in families else socket.AF_INET6


class LiveView:
    """A :class:`~fer_edge.edge.outputs.sinks.FrameSink` serving the loop over HTTP (see the module
    docstring). ``url`` is where it listens (the real port when 0 was asked for)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 labels: tuple[str, ...] = ()):
        self.labels, self.rates = labels, LoopRates()
        register(token)  # the request log (-v) and every other line show *** instead
        try:
            self.server = _Server((host, port), token or None, self.rates)
        except (OSError, OverflowError) as e:
            raise FerEdgeError(f"--serve {host}:{port}: cannot listen there "
                               f"({e.strerror or e})") from None
        h, p = self.server.server_address[:2]
        shown = f"[{h}]" if ":" in str(h) else h
        self.url = f"http://{shown}:{p}/"
        # decided by the address actually bound, not by how it was spelled (0, 0:PORT, [::],
        # a name that resolves to 0.0.0.0)
        self.all_interfaces = ipaddress.ip_address(str(h).split("%")[0]).is_unspecified
        self.thread = threading.Thread(target=self.server.serve_forever, name="fer-edge-serve",
                                       kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def wants_image(self) -> bool:
        return self.server.hub.streams > 0

    def write(self, result: FrameResult, image: np.ndarray | None) -> None:
        self.rates.update(result)
        state = {"schema": SCHEMA, "stream": result.stream, "frame": result.index,
                 "timestamp": round(result.timestamp, 6), "fps": round(self.rates.fps, 2),
                 "faces": [f.to_dict(self.labels) for f in result.faces]}
        self.server.hub.publish(image, state)

    def close(self, linger: float = 1.0) -> None:
        """Send the last state and an end event to every page, then stop listening."""
        hub = self.server.hub
        with hub.cond:
            hub.closed = True
            hub.cond.notify_all()
        deadline = time.monotonic() + linger  # pages get their last state and the end
        while hub.listeners and time.monotonic() < deadline:
            time.sleep(0.02)
        self.server.shutdown()
        self.server.server_close()
