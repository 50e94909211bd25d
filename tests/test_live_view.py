"""`fer-edge run --serve`: the live view in a real headless Chromium (Debian's chromium and
chromium-driver), on the shared video. A screenshot is kept as a test artefact."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from procs import ARTIFACTS, RunProc, need_module, need_program

RUN = ["--no-display", "-q"]

# draw the stream's current frame on a canvas and sum a grid of pixels: changes when the frame does
FRAME_SUM = """
const img = document.getElementById('view');
if (!img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = 160; c.height = 120;
const g = c.getContext('2d'); g.drawImage(img, 0, 0, 160, 120);
const d = g.getImageData(0, 0, 160, 120).data; let s = 0;
for (let i = 0; i < d.length; i += 4) s += d[i] * (1 + (i % 7)) + d[i + 1] + d[i + 2];
return s;
"""


@pytest.fixture
def browser():
    need_module("selenium")
    chromium = need_program("chromium", "chromium")
    driver_path = need_program("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look anything up
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,760", "--disable-extensions"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_script_timeout(10)
    yield driver
    driver.quit()


def get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(fn, timeout: float, what: str, proc: RunProc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" +
                         (f"; fer-edge stderr:\n{proc.stderr}" if proc else ""))


def read_mjpeg_parts(url: str, n: int, out: list) -> None:
    """A second viewer: read ``n`` JPEG parts from the MJPEG stream."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(out) < n:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                size = int(line.split(b":")[1])
                r.readline()
                jpeg = r.read(size)
                assert jpeg[:2] == b"\xff\xd8", "not a JPEG part"
                out.append(jpeg)


def test_live_view_in_chromium(browser, video, tmp_path):
    run = RunProc("--source", str(video), "--serve", "127.0.0.1:0", "--loop", "18", *RUN)
    try:
        url = run.url()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        browser.get(url)
        wait_for(lambda: browser.execute_script("return window.ferUpdates") > 3, 15,
                 "live JSON in the page", run)
        sums = [wait_for(lambda: browser.execute_script(FRAME_SUM), 15, "a frame", run)]
        # the image changes (the stream is live, not one picture)
        for _ in range(40):
            time.sleep(0.15)
            sums.append(browser.execute_script(FRAME_SUM))
            if len(set(sums)) >= 3:
                break
        assert len(set(sums)) >= 3, f"the image did not change: {sums}"

        # a second viewer at once, reading raw MJPEG parts; /health counts both
        parts: list[bytes] = []
        second = threading.Thread(target=read_mjpeg_parts, args=(url + "stream.mjpg", 15, parts))
        second.start()
        viewers = wait_for(lambda: json.loads(get(url + "health")[1])["viewers"] >= 2, 10,
                           "two viewers in /health", run)
        second.join(20)
        assert viewers and len(parts) == 15 and len(set(parts)) > 1

        # a viewer that stalls: connects to the stream and never reads
        h1 = json.loads(get(url + "health")[1])
        stalled = socket.create_connection(run_host_port(url))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        time.sleep(2.0)  # long enough to fill its socket buffers
        h2 = json.loads(get(url + "health")[1])
        time.sleep(1.0)
        h3 = json.loads(get(url + "health")[1])
        print(f"\nFPS before the stalled viewer {h1['fps']}, with it {h3['fps']}; frames "
              f"{h1['frames']} -> {h2['frames']} -> {h3['frames']}")
        assert h3["frames"] - h2["frames"] >= 10, "the loop stalled behind a stalled viewer"
        assert h3["fps"] > 0.25 * h1["fps"], (h1, h3)
        assert {"fps", "uptime_s", "frames"} <= set(h3) and h3["uptime_s"] > 0

        assert run.wait(90) == 0, run.stderr
        stalled.close()
        # the page holds the last state, the run's end is shown, and the face ends angry
        wait_for(lambda: browser.execute_script("return window.ferEnded"), 10, "the end event")
        state = browser.execute_script("return window.ferState")
        assert state["faces"] and state["faces"][0]["label"] == "angry", state
        labels = browser.execute_script(
            "return [...document.querySelectorAll('.face')].map(e => e.dataset.label)")
        assert labels == ["angry"]
        shot = tmp_path / "live_view.png"
        assert browser.save_screenshot(str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "live_view.png")
        print(f"screenshot: {shot} (copy: {ARTIFACTS / 'live_view.png'})")
        import cv2

        img = cv2.imread(str(shot))
        assert img is not None and img.shape[1] >= 1000 and img.std() > 10
    finally:
        run.stop()


def run_host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


def test_token_is_required_on_every_request(video):
    run = RunProc("--source", str(video), "--serve", "127.0.0.1:0", "--loop", "60", *RUN,
                  env={"FER_EDGE_SERVE_TOKEN": "s3cret"})
    try:
        url = run.url()
        assert "token required" in run.stderr
        for path in ("", "health", "state.json", "stream.mjpg", "events"):
            assert get(url + path)[0] == 401, path
            assert get(url + path + "?token=wrong")[0] == 401, path
            assert get(url + path, {"Authorization": "Bearer wrong"})[0] == 401, path
        assert get(url + "?token=s3cret")[0] == 200
        code, body = get(url + "health", {"Authorization": "Bearer s3cret"})
        assert code == 200 and json.loads(body)["status"] == "ok"
        assert get(url + "nothing?token=s3cret")[0] == 404
    finally:
        run.stop()


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "256.1.1.1:0"])
def test_bad_serve_address_is_one_line(bad, video):
    run = RunProc("--source", str(video), "--serve", bad, *RUN)
    assert run.wait(60) == 1
    errors = [ln for ln in run.lines if ln.startswith("error:")]
    assert len(errors) == 1 and "--serve" in errors[0] and "Traceback" not in run.stderr


def test_all_interfaces_warns(video):
    run = RunProc("--source", str(video), "--serve", "0.0.0.0:0", "--max-frames", "5", *RUN)
    assert run.wait(60) == 0, run.stderr
    assert "open to every network" in run.stderr and "--serve-token" in run.stderr


XSS = "<img src=x onerror=ferXss=1>"  # printable, 28 characters: a valid label, as text


def test_label_is_text_and_no_script_runs(browser, video, tmp_path):
    """Issue 23 item 5: a shared bundle whose label is HTML reaches the page as text; no
    injected script runs; the page is served with a Content-Security-Policy that allows its
    own script only."""
    from fer_edge.edge.bundle import default_bundle_path

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["labels"][0] == "angry"  # the video's face ends angry: its label is the attack
    meta["labels"][0] = XSS
    (bundle / "bundle.json").write_text(json.dumps(meta))
    run = RunProc("--source", str(video), "--model", str(bundle), "--serve", "127.0.0.1:0",
                  "--loop", "4", *RUN)
    try:
        url = run.url()
        with urllib.request.urlopen(url, timeout=5) as r:
            csp = r.headers["Content-Security-Policy"]
        assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp, csp
        assert "default-src 'none'" in csp
        browser.get(url)
        assert run.wait(90) == 0, run.stderr
        wait_for(lambda: browser.execute_script("return window.ferEnded"), 15, "the end event")
    finally:
        run.stop()
    state = browser.execute_script("return window.ferState")
    assert state["faces"][0]["label"] == XSS, state
    heads = browser.execute_script(
        "return [...document.querySelectorAll('.face')].map(e => [e.textContent, "
        "e.dataset.label, e.children.length])")
    assert heads and heads[0][1] == XSS and XSS in heads[0][0] and heads[0][2] == 0, heads
    assert XSS in browser.execute_script("return document.getElementById('faces').innerText")
    assert browser.execute_script("return document.querySelectorAll('#faces img').length") == 0
    assert browser.execute_script("return typeof window.ferXss") == "undefined", "script ran"
    # the policy is what the browser enforces: an inline script added now does not run
    browser.execute_script("const s = document.createElement('script'); "
                           "s.textContent = 'window.ferInline = 1'; document.body.append(s);")
    assert browser.execute_script("return typeof window.ferInline") == "undefined"

