"""Frame sources: camera index or device, video file, image, folder of images, stream URL,
GStreamer pipeline. ``parse_source`` is pure (table-tested); ``open_source`` opens it.

Live sources (cameras, streams) are read on their own thread that keeps only the newest frame
and counts the ones it dropped; files are read in order, every frame. A URL whose stream
reports a frame count (a video file served over http) is read like a file and ends at its
end. A live source that stops delivering is reconnected with backoff; the reconnect budget is
spent by failures and refilled only after the stream has run without one for a while, so a
source that keeps failing gives up with an error.

Every source raises :class:`FerEdgeError` naming the file or URL when it cannot be opened or
when it yields no frame at all; unreadable images in a folder and undecodable frames in a
video are skipped, counted in ``corrupt`` and named in ``bad``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import FerEdgeError
from .images import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES, BadImage, read_image

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.I)
VIDEO_SUFFIXES = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ts", ".3gp")
OPEN_TIMEOUT_MS = 10_000  # streams: how long opening or one read may block
MAX_CONSECUTIVE_FAILURES = 5  # failed reads at one position before a file counts as ended


def quiet_opencv(verbose: bool = False) -> None:
    """Silence OpenCV's and FFmpeg's own log lines (``[ WARN:0@...]``, ``[mjpeg @ 0x..]``):
    the sources report what went wrong themselves, once, naming the file."""
    if verbose:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at first use
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | video | image | folder | url | gstreamer
    target: str | int

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "url", "gstreamer")


@dataclass
class Frame:
    index: int
    image: np.ndarray
    timestamp: float  # seconds: position in a file, wall clock for live sources
    path: str | None = None  # the file, for image and folder sources


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720,
                        fps: int = 30) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc) into BGR for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), "
            f"width={width}, height={height}, framerate={fps}/1 ! nvvidconv ! "
            "video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink "
            "drop=true max-buffers=1")


def parse_source(spec: str | int) -> SourceSpec:
    """'0' or 0 -> camera 0; '/dev/video2' -> camera; 'csi://0' -> Jetson CSI pipeline;
    'rtsp://...' -> url; '... ! appsink' -> gstreamer; a folder, an image or a video path."""
    s = str(spec).strip()
    if not s:
        raise FerEdgeError("empty source: give a camera index, a file, a folder or a URL")
    if s.isdigit():
        return SourceSpec("camera", int(s))
    if re.fullmatch(r"/dev/video\d+", s):
        return SourceSpec("camera", s)
    if s.lower().startswith("csi://"):
        sensor = s[6:] or "0"
        if not sensor.isdigit():
            raise FerEdgeError(f"{s}: expected csi://N with N the CSI sensor id (0, 1, ...)")
        return SourceSpec("gstreamer", jetson_csi_pipeline(int(sensor)))
    if URL_RE.match(s):
        return SourceSpec("url", s)
    if "!" in s:
        if "appsink" not in s:
            raise FerEdgeError(f"{s!r}: looks like a GStreamer pipeline but does not end in "
                               "appsink (OpenCV reads frames from an appsink)")
        return SourceSpec("gstreamer", s)
    p = Path(s)
    if p.is_dir():
        return SourceSpec("folder", s)
    if p.suffix.lower() in IMAGE_SUFFIXES + UNSUPPORTED_SUFFIXES:
        return SourceSpec("image", s)
    return SourceSpec("video", s)


class FrameSource:
    """Iterate frames; ``dropped`` and ``corrupt`` count what was lost, ``bad`` names the
    files skipped. ``newest_only``: a live source, where a late frame is worth less than the
    next one (a file, even behind a URL, keeps every frame)."""

    newest_only = False

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.dropped = 0
        self.corrupt = 0
        self.bad: list[str] = []
        self.fps: float | None = None
        self.length = 0  # frames, when known (files)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make an iteration blocked in this source return soon (another thread's)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageFiles(FrameSource):
    """One image or a folder of images (searched recursively, in path order), each read with
    :func:`read_image`.
    In a folder, unreadable files (corrupt, truncated, empty, unsupported format) are logged,
    counted and skipped; a single unreadable image, or a folder where no image can be read,
    is an error."""

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        p = Path(str(spec.target))
        if spec.kind == "image":
            if not p.is_file():
                raise FerEdgeError(f"{p}: image not found")
            self.files = [p]
        else:
            try:
                # Recursive, in path order: a tree of class folders is scored by path.
                entries = sorted(f for f in p.rglob("*") if f.is_file())
            except OSError as e:
                raise FerEdgeError(f"{p}: cannot list this folder ({e.strerror or e})") from None
            self.files = [f for f in entries
                          if f.suffix.lower() in IMAGE_SUFFIXES + UNSUPPORTED_SUFFIXES]
            if not self.files:
                videos = [f.name for f in entries if f.suffix.lower() in VIDEO_SUFFIXES]
                hint = (f"; it holds video files ({', '.join(videos[:3])}): give one of them "
                        "as --source") if videos else ""
                raise FerEdgeError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this "
                                   f"folder{hint}")
        self.length = len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        read = 0
        for i, f in enumerate(self.files):
            try:
                img = read_image(f)
            except BadImage as e:
                if self.spec.kind == "image":
                    raise
                log.warning("%s; skipped", e)
                self.corrupt += 1
                self.bad.append(f.name)
                continue
            read += 1
            yield Frame(i, img, float(i), str(f))
        if not read:
            raise FerEdgeError(f"{self.spec.target}: none of the {len(self.files)} images could "
                               "be read (see the warnings above)")


def _has_gstreamer() -> bool:
    m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(m) and m.group(1) != "NO"


def _open_capture(target: str | int, kind: str) -> cv2.VideoCapture:
    """A VideoCapture that may not be open; OpenCV's own exceptions become 'not open'."""
    api = cv2.CAP_GSTREAMER if kind == "gstreamer" else cv2.CAP_ANY
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS] if kind == "url" else []
    try:
        return cv2.VideoCapture(target, api, params)
    except cv2.error:
        return cv2.VideoCapture()


class VideoFile(FrameSource):
    """Every frame of a file (or of a finite video behind a URL), in order. Frames that fail
    to decode are counted in ``corrupt``: the frames the container holds that were not
    decoded (a truncated file, a damaged frame). Iterating again starts again at the first
    frame (a file read to its end is not a corrupt one)."""

    def __init__(self, spec: SourceSpec, cap: cv2.VideoCapture | None = None):
        super().__init__(spec)
        target = str(spec.target)
        if cap is None:
            p = Path(target)
            if p.is_dir():
                raise FerEdgeError(f"{p}: is a folder, not a video file")
            if not p.is_file():
                raise FerEdgeError(f"{p}: no such video file")
            if p.stat().st_size == 0:
                raise FerEdgeError(f"{p}: empty file (0 bytes), not a video")
            cap = _open_capture(target, spec.kind)
            if not cap.isOpened():
                raise FerEdgeError(f"{p}: OpenCV cannot open this as a video (not a video "
                                   "file, corrupt, or a codec this OpenCV build lacks)")
        self.cap = cap
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or None
        self.length = max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.passes = 0  # times iterated

    def __iter__(self) -> Iterator[Frame]:
        decoded = failures = 0
        self.passes += 1
        if self.passes > 1:  # read before: back to the first frame
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        while True:
            ok, img = self.cap.read()
            if ok and img is not None:
                failures = 0
                ts = (decoded / self.fps) if self.fps else float(decoded)
                yield Frame(decoded, img, ts)
                decoded += 1
                continue
            # Past the end -> done. Inside the file -> a frame that did not decode: try the
            # next one, and stop when the position no longer moves (truncated file).
            pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
            failures += 1
            if not self.length or pos >= self.length or failures >= MAX_CONSECUTIVE_FAILURES:
                break
        if not decoded and self.passes > 1:
            raise FerEdgeError(f"{self.spec.target}: already read to its end, and this source "
                               "cannot go back to its first frame; open it again")
        missing = max(0, self.length - decoded)
        self.corrupt += missing
        if missing and decoded:
            log.warning("%s: %d of %d frames could not be decoded (truncated or corrupt file)",
                        self.spec.target, missing, self.length)
        if not decoded:
            raise FerEdgeError(f"{self.spec.target}: no frame could be decoded (corrupt file "
                               "or a codec this OpenCV build lacks)")

    def close(self) -> None:
        self.cap.release()


class LiveCapture(FrameSource):
    """Camera or stream on a reader thread that keeps only the newest frame.

    A failed read costs one of ``max_retries`` reconnects (with exponential backoff); the
    budget is refilled only after ``stable_s`` seconds of uninterrupted frames, so a stream
    that delivers a few frames between failures still gives up."""

    newest_only = True

    def __init__(self, spec: SourceSpec, max_retries: int = 5, read_timeout: float = 2.0,
                 stable_s: float = 10.0, cap: cv2.VideoCapture | None = None):
        super().__init__(spec)
        self.max_retries, self.read_timeout, self.stable_s = max_retries, read_timeout, stable_s
        self.reconnects = 0
        self.cap = cap if cap is not None else self._open()
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or None
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float] | None = None
        self._stop = threading.Event()
        self._failed: str | None = None
        self._thread = threading.Thread(target=self._reader, name="fer-edge-capture",
                                        daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture:
        target = self.spec.target
        gst = self.spec.kind == "gstreamer"
        tried = [f"{target!r} ({'GStreamer' if gst else 'any API'})"]
        cap = _open_capture(target, self.spec.kind)
        if not cap.isOpened() and self.spec.kind == "camera" and isinstance(target, int):
            cap = _open_capture(f"/dev/video{target}", "camera")
            tried.append(f"/dev/video{target}")
        if not cap.isOpened():
            why = "; this OpenCV build has no GStreamer support" if gst and not \
                _has_gstreamer() else ""
            raise FerEdgeError(f"cannot open {self.spec.kind} source: tried {', '.join(tried)}"
                               f"{why}; check the index/URL and that no other program holds "
                               "it")
        return cap

    def _reader(self) -> None:
        failures = 0
        good_since: float | None = None  # first frame of the current uninterrupted run
        while not self._stop.is_set():
            ok, img = self.cap.read()
            if ok and img is not None:
                now = time.time()
                good_since = good_since or now
                if failures and now - good_since >= self.stable_s:
                    failures = 0  # a sustained run of frames refills the budget
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1  # the consumer never saw the previous frame
                    self._latest = (img, now)
                    self._cond.notify_all()
                continue
            good_since = None
            failures += 1
            if failures > self.max_retries:
                with self._cond:
                    self._failed = (f"{self.spec.target}: no frames after {self.max_retries} "
                                    "reconnect attempts")
                    self._cond.notify_all()
                return
            wait = min(8.0, 0.25 * 2 ** failures)
            log.warning("%s: no frame; reconnecting in %.1fs (%d/%d)", self.spec.target,
                        wait, failures, self.max_retries)
            self.cap.release()
            if self._stop.wait(wait):
                return
            self.reconnects += 1
            self.cap = _open_capture(self.spec.target, self.spec.kind)

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._latest is not None or self._failed or self._stop.is_set(),
                    timeout=self.read_timeout * (self.max_retries + 1) * 4
                    + OPEN_TIMEOUT_MS / 1e3 * (self.max_retries + 1))
                if self._stop.is_set():
                    return
                if self._latest is None:
                    raise FerEdgeError(self._failed or f"{self.spec.target}: no frame within "
                                       "the timeout")
                img, ts = self._latest
                self._latest = None
            yield Frame(i, img, ts)
            i += 1

    def interrupt(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.interrupt()
        self._thread.join(timeout=2.0)
        self.cap.release()


def open_source(spec: str | int | SourceSpec, **live_kw) -> FrameSource:
    """Open ``spec``; ``live_kw`` (max_retries, read_timeout, stable_s) go to live sources."""
    spec = spec if isinstance(spec, SourceSpec) else parse_source(spec)
    if spec.kind in ("image", "folder"):
        return ImageFiles(spec)
    if spec.kind == "video":
        return VideoFile(spec)
    if spec.kind == "url":
        cap = _open_capture(spec.target, spec.kind)
        if not cap.isOpened():
            raise FerEdgeError(f"{spec.target}: cannot open this stream (unreachable, not "
                               "found, or not a video)")
        if int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) > 0:
            return VideoFile(spec, cap)  # a finite video behind the URL: read it like a file
        return LiveCapture(spec, cap=cap, **live_kw)
    return LiveCapture(spec, **live_kw)


class LoopedVideo(FrameSource):
    """Replay a video file ``times`` times (frame indices and timestamps keep counting)."""

    def __init__(self, inner: VideoFile, times: int):
        super().__init__(inner.spec)
        self.inner, self.times = inner, times
        self.fps, self.length = inner.fps, inner.length

    def __iter__(self) -> Iterator[Frame]:
        n, offset, last = 0, 0.0, 0.0
        for rep in range(self.times):
            if rep:  # timestamps keep counting too, so a timeline of the run is monotonic
                offset = last + 1 / (self.fps or 30.0)
            for f in self.inner:
                last = f.timestamp + offset
                yield Frame(n, f.image, last, f.path)
                n += 1
            self.corrupt = self.inner.corrupt

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()
