"""Frame sources: camera index or device, video file, image, folder of images, stream URL,
GStreamer pipeline. ``parse_source`` is pure (table-tested); ``open_source`` opens it.

Live sources (cameras, streams) are read on their own thread that keeps only the newest frame
and counts the ones it dropped; files are read in order, every frame. A live source that stops
delivering is retried with backoff, then given up with an error.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FerEdgeError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.I)


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
    if s.isdigit():
        return SourceSpec("camera", int(s))
    if re.fullmatch(r"/dev/video\d+", s):
        return SourceSpec("camera", s)
    if s.lower().startswith("csi://"):
        return SourceSpec("gstreamer", jetson_csi_pipeline(int(s[6:] or 0)))
    if URL_RE.match(s):
        return SourceSpec("url", s)
    if "!" in s and "appsink" in s:
        return SourceSpec("gstreamer", s)
    p = Path(s)
    if p.is_dir():
        return SourceSpec("folder", s)
    if p.suffix.lower() in IMAGE_EXTS:
        return SourceSpec("image", s)
    return SourceSpec("video", s)


class FrameSource:
    """Iterate frames; ``dropped`` and ``corrupt`` count what was lost."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.dropped = 0
        self.corrupt = 0
        self.fps: float | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageFiles(FrameSource):
    """One image or a folder of images in name order; unreadable files are counted and
    skipped (a single unreadable image is an error)."""

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        p = Path(str(spec.target))
        if spec.kind == "image":
            if not p.is_file():
                raise FerEdgeError(f"{p}: image not found")
            self.files = [p]
        else:
            self.files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not self.files:
                raise FerEdgeError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) in this folder")

    def __iter__(self) -> Iterator[Frame]:
        for i, f in enumerate(self.files):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                if self.spec.kind == "image":
                    raise FerEdgeError(f"{f}: unreadable or corrupt image")
                log.warning("%s: unreadable image, skipped", f)
                self.corrupt += 1
                continue
            yield Frame(i, img, float(i), str(f))


def _open_capture(target: str | int, kind: str) -> cv2.VideoCapture:
    api = cv2.CAP_GSTREAMER if kind == "gstreamer" else cv2.CAP_ANY
    cap = cv2.VideoCapture(target, api)
    return cap


class VideoFile(FrameSource):
    """Every frame of a file, in order; a frame that fails to decode mid-file is counted."""

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        if not Path(str(spec.target)).is_file():
            raise FerEdgeError(f"{spec.target}: no such video file")
        self.cap = _open_capture(spec.target, spec.kind)
        if not self.cap.isOpened():
            raise FerEdgeError(f"{spec.target}: OpenCV cannot open this video (backend "
                               f"{self.cap.getBackendName() if self.cap else '?'}; codec?)")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or None
        self.length = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        misses = 0
        while True:
            ok, img = self.cap.read()
            if not ok or img is None:
                # Past the end -> done. Inside the file -> a corrupt frame: skip it.
                pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
                if self.length and pos < self.length - 1 and misses < 25:
                    misses += 1
                    self.corrupt += 1
                    self.cap.grab()
                    continue
                return
            misses = 0
            ts = (i / self.fps) if self.fps else float(i)
            yield Frame(i, img, ts)
            i += 1

    def close(self) -> None:
        self.cap.release()


class LiveCapture(FrameSource):
    """Camera or stream on a reader thread that keeps only the newest frame."""

    def __init__(self, spec: SourceSpec, max_retries: int = 5, read_timeout: float = 2.0):
        super().__init__(spec)
        self.max_retries, self.read_timeout = max_retries, read_timeout
        self.cap = self._open()
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
        tried = [f"{target!r} ({'GStreamer' if self.spec.kind == 'gstreamer' else 'any API'})"]
        cap = _open_capture(target, self.spec.kind)
        if not cap.isOpened() and self.spec.kind == "camera" and isinstance(target, int):
            cap = cv2.VideoCapture(f"/dev/video{target}")
            tried.append(f"/dev/video{target}")
        if not cap.isOpened():
            raise FerEdgeError(f"cannot open {self.spec.kind} source: tried {', '.join(tried)}"
                               "; check the index/URL and that no other program holds it")
        return cap

    def _reader(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, img = self.cap.read()
            if not ok or img is None:
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
                self.cap = _open_capture(self.spec.target, self.spec.kind)
                continue
            failures = 0
            with self._cond:
                if self._latest is not None:
                    self.dropped += 1  # the consumer never saw the previous frame
                self._latest = (img, time.time())
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._latest is not None or self._failed or self._stop.is_set(),
                    timeout=self.read_timeout * (self.max_retries + 1) * 4)
                if self._stop.is_set():
                    return
                if self._latest is None:
                    raise FerEdgeError(self._failed or f"{self.spec.target}: no frame within "
                                       "the timeout")
                img, ts = self._latest
                self._latest = None
            yield Frame(i, img, ts)
            i += 1

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self.cap.release()


def open_source(spec: str | int | SourceSpec, **live_kw) -> FrameSource:
    spec = spec if isinstance(spec, SourceSpec) else parse_source(spec)
    if spec.kind in ("image", "folder"):
        return ImageFiles(spec)
    if spec.kind == "video":
        return VideoFile(spec)
    return LiveCapture(spec, **live_kw)


class LoopedVideo(FrameSource):
    """Replay a video file ``times`` times (frame indices keep counting)."""

    def __init__(self, inner: VideoFile, times: int):
        super().__init__(inner.spec)
        self.inner, self.times = inner, times
        self.fps, self.length = inner.fps, inner.length

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        for rep in range(self.times):
            if rep:
                self.inner.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for f in self.inner:
                yield Frame(n, f.image, f.timestamp, f.path)
                n += 1
        self.corrupt = self.inner.corrupt

    def close(self) -> None:
        self.inner.close()
