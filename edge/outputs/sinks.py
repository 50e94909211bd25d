"""Outputs of the loop: annotated frames, a video file, JSON Lines, an on-screen window.

Both file sinks open their file when they are made, before the loop starts, so a missing
folder or a read-only disk is one error naming the path before any frame is processed; an
``OSError`` while writing (a full disk) becomes a :class:`FerEdgeError` naming the path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np

from ..errors import FerEdgeError
from ..inputs.files import check_regular_file, sweep_stale, temp_prefix, umask_mode, write_error
from ..results import FrameResult
from .events import SCHEMA

log = logging.getLogger(__name__)

VIDEO_FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v",
                ".mkv": "MJPG"}
MIN_FREE_BYTES = 1 << 20  # stop writing a video when the disk has less than this left


def check_output(path: str | os.PathLike, option: str) -> Path:
    """``path`` can be a file that the run writes: not a folder, its folder exists."""
    p = Path(path)
    if not str(path).strip():
        raise FerEdgeError(f"{option}: empty path")
    if p.is_dir():
        raise FerEdgeError(f"{option} {p}: is a folder; give a file name")
    if not p.parent.is_dir():
        raise FerEdgeError(f"{option} {p}: folder {p.parent} does not exist")
    check_regular_file(p, option)
    return p


COLORS = {"angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160),
          "happy": (40, 200, 240), "sad": (200, 120, 40), "surprise": (240, 200, 40),
          "neutral": (180, 180, 180)}


def put_label(img: np.ndarray, text: str, org: tuple[int, int], fill: tuple[int, int, int],
              scale: float = 0.55) -> None:
    """``text`` on a filled box of colour ``fill`` whose bottom-left corner is ``org``, in
    black or white, whichever contrasts with ``fill``: readable on any frame (white text on
    a light wall, or dark text on a dark one, is not)."""
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x = min(max(0, org[0]), max(0, img.shape[1] - tw - 4))
    y = min(max(th + base + 4, org[1]), img.shape[0])
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), fill, cv2.FILLED)
    b, g, r = fill
    ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 2, y - base - 2), font, scale, ink, thick, cv2.LINE_AA)


def annotate(frame: np.ndarray, result: FrameResult, fps: float | None = None) -> np.ndarray:
    """Boxes and labels of ``result`` drawn on ``frame`` (in place when it is BGR); ``fps``
    (the stream's frame rate) in the top-left corner. Every text sits on a filled box."""
    out = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    for f in result.faces:
        x, y, w, h = f.box
        color = COLORS.get(f.label, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        put_label(out, f"#{f.track_id} {f.label} {f.score:.2f}", (x - 1, y - 1), color)
    if fps is not None:
        put_label(out, f"{fps:.0f} FPS", (0, 24), (0, 0, 0), 0.6)
    return out


class FrameSink(Protocol):
    """An extra output the runner feeds after every frame (``runner.run(..., sinks=[...])``):
    the live view (``serve``), MQTT events (``mqtt_events``). ``wants_image`` says whether it
    needs the annotated frame now (drawing costs time: nobody watching, nothing drawn);
    ``write`` must return at once (no network wait); ``close`` ends it (bounded time)."""

    def wants_image(self) -> bool: ...

    def write(self, result: FrameResult, image: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


class LoopRates:
    """What a sink reports of the loop's pace (``/health``, the MQTT heartbeat): the frame
    rate of each stream as the runner measured it (``FrameResult.fps``, one meter for every
    output), their sum, the frames seen and the time since the sink started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frames = 0
        self.per_stream: dict[int, float] = {}

    def update(self, result: FrameResult) -> None:
        self.frames += 1
        if result.fps is not None:
            self.per_stream[result.stream] = result.fps

    @property
    def fps(self) -> float:
        """Frames per second over every stream (one stream: its frame rate)."""
        return sum(self.per_stream.values())

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def to_dict(self) -> dict:
        d = {"fps": round(self.fps, 2), "frames": self.frames, "uptime_s": round(self.uptime, 3)}
        if len(self.per_stream) > 1:
            d["stream_fps"] = {str(k): round(v, 2) for k, v in sorted(self.per_stream.items())}
        return d


def tile(frames: list[np.ndarray | None], cell_width: int = 640) -> np.ndarray:
    """Several streams' frames in one image: a grid of cells at most ``cell_width`` wide, of
    the first frame's aspect; a stream without a frame yet (None) is a black cell. One frame
    is returned as it is."""
    if len(frames) == 1 and frames[0] is not None:
        return frames[0]
    h0, w0 = next(f for f in frames if f is not None).shape[:2]
    w = min(cell_width, w0)
    h = max(1, round(h0 * w / w0))
    cols = int(np.ceil(np.sqrt(len(frames))))
    rows = int(np.ceil(len(frames) / cols))
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, f in enumerate(frames):
        if f is None:
            continue
        f = f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = cv2.resize(f, (w, h),
                                                               interpolation=cv2.INTER_AREA)
    return out


class JsonlSink:
    """One JSON object per frame, flushed line by line (``-`` = stdout), so another program
    can follow the file while the loop runs.

    The file is opened here (a bad path fails before the loop) without truncating it: an
    earlier file of that name is replaced only when the first record is written, and a file
    this sink created is removed again if no record was ever written (a run that failed)."""

    def __init__(self, path: str, labels: tuple[str, ...], root: str | None = None):
        self.labels, self.root = labels, root  # root: a folder source, for "relpath"
        self.path = Path(path)
        self.records = 0
        self._broken = False
        if path == "-":
            self.fh: IO[str] = sys.stdout
            return
        check_output(path, "--jsonl")
        self._existed = self.path.exists()
        try:
            self.fh = open(path, "a")  # noqa: SIM115
        except OSError as e:
            raise write_error(self.path, e, option="--jsonl") from None

    def write(self, r: FrameResult) -> None:
        rec = {"schema": SCHEMA, "stream": r.stream, "frame": r.index,
               "timestamp": round(r.timestamp, 6), "detected": r.detected,
               "faces": [f.to_dict(self.labels) for f in r.faces],
               "timings_ms": {k: round(v, 3) for k, v in r.timings.items()}}
        if r.path is not None:
            rec["path"] = r.path
            if self.root is not None:  # e.g. "angry/img01.jpg": the class folder scores it
                rec["relpath"] = Path(os.path.relpath(r.path, self.root)).as_posix()
        try:
            if not self.records and self.fh is not sys.stdout:
                self.fh.seek(0)
                self.fh.truncate()
            self.fh.write(json.dumps(rec) + "\n")
            self.fh.flush()
        except OSError as e:
            self._broken = True  # reported here; close() stays quiet about it
            raise write_error(self.path, e, option="--jsonl") from None
        self.records += 1

    def close(self) -> None:
        if self.fh is sys.stdout:
            return
        try:
            self.fh.close()
        except OSError as e:
            if not self._broken:
                raise write_error(self.path, e, option="--jsonl") from None
        finally:
            if not self.records and not self._existed:
                self.path.unlink(missing_ok=True)


class VideoSink:
    """Annotated video (mp4v for .mp4/.m4v/.mov, MJPG for .avi/.mkv) at the first frame's
    size (later frames of another size are resized to it).

    OpenCV's writer reports no error when the disk fills up, so the video is written to a
    temporary name beside ``path`` (created here: an unwritable folder fails before the
    loop), the free space is watched while writing, and at close the file is read back: only
    a file that holds every frame written is renamed to ``path``; otherwise it is removed
    and :class:`FerEdgeError` says why.
    """

    def __init__(self, path: str, fps: float | None):
        self.path, self.fps = check_output(path, "--save-video"), fps or 30.0
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FOURCC:
            raise FerEdgeError(f"--save-video {self.path}: unsupported extension "
                               f"{suffix or '(none)'}; use {', '.join(VIDEO_FOURCC)}")
        self.fourcc = VIDEO_FOURCC[suffix]
        try:
            sweep_stale(self.path.parent, self.path.name)  # a killed run's .partial video
            fd, tmp = tempfile.mkstemp(dir=self.path.parent,
                                       prefix=temp_prefix(self.path.name, hidden=True),
                                       suffix=f".partial{suffix}")
            os.close(fd)
        except OSError as e:
            raise write_error(self.path, e, option="--save-video") from None
        self.tmp = Path(tmp)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._warned_size = False

    def _fail(self, why: str) -> FerEdgeError:
        self.discard()
        return FerEdgeError(f"--save-video {self.path}: {why}; nothing was saved")

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc),
                                          self.fps, self.size)
            if not self.writer.isOpened():
                raise self._fail(f"OpenCV cannot write a {self.fourcc} video here")
        elif (w, h) != self.size:
            if not self._warned_size:
                self._warned_size = True
                log.warning("--save-video: frames of other sizes than the first (%dx%d) are "
                            "resized to it", *self.size)
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.frames += 1
        if self.frames % 16 == 1:
            free = shutil.disk_usage(self.tmp.parent).free
            if free < MIN_FREE_BYTES:
                raise self._fail(f"disk full ({free} bytes left in {self.tmp.parent})")

    def discard(self) -> None:
        """Drop the partial file (an error elsewhere ended the run)."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Finalise the video, check it holds every frame, and rename it into place."""
        if not self.tmp.exists():
            return  # already discarded
        if self.writer is None:  # no frame arrived: leave nothing behind
            self.discard()
            return
        self.writer.release()
        self.writer = None
        cap = cv2.VideoCapture(str(self.tmp))
        got = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if got != self.frames:
            free = shutil.disk_usage(self.tmp.parent).free
            raise self._fail(f"the written file holds {got} of {self.frames} frames (disk "
                             f"full or write error; {free} bytes free)")
        try:
            umask_mode(self.tmp)
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise write_error(self.path, e, option="--save-video") from None


def display_available() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False
    info = cv2.getBuildInformation()
    return not ("GUI:" in info and "NONE" in info.split("GUI:")[1].splitlines()[0])


class Window:
    """cv2.imshow window; ``show`` returns False when the user pressed q or Esc."""

    def __init__(self, title: str = "fer-edge"):
        self.title = title

    def show(self, frame: np.ndarray) -> bool:
        cv2.imshow(self.title, frame)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyAllWindows()
