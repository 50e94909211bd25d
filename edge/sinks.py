"""Outputs of the loop: annotated frames, a video file, JSON Lines, an on-screen window."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from .errors import FerEdgeError
from .pipeline import FrameResult

COLORS = {"angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160),
          "happy": (40, 200, 240), "sad": (200, 120, 40), "surprise": (240, 200, 40),
          "neutral": (180, 180, 180)}


def annotate(frame: np.ndarray, result: FrameResult, fps: float | None = None) -> np.ndarray:
    out = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    for f in result.faces:
        x, y, w, h = f.box
        color = COLORS.get(f.label, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        text = f"#{f.track_id} {f.label} {f.score:.2f}"
        cv2.putText(out, text, (x, max(14, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, color, 2,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(out, f"{fps:.0f} FPS", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 2, cv2.LINE_AA)
    return out


class JsonlSink:
    """One JSON object per frame, flushed line by line (``-`` = stdout)."""

    def __init__(self, path: str, labels: tuple[str, ...]):
        self.labels = labels
        self.fh: IO[str] = sys.stdout if path == "-" else open(path, "w")  # noqa: SIM115

    def write(self, r: FrameResult) -> None:
        rec = {"frame": r.index, "timestamp": round(r.timestamp, 6), "detected": r.detected,
               "faces": [f.to_dict(self.labels) for f in r.faces],
               "timings_ms": {k: round(v, 3) for k, v in r.timings.items()}}
        if r.path is not None:
            rec["path"] = r.path
        self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not sys.stdout:
            self.fh.close()


class VideoSink:
    """Annotated video; opened at the first frame's size. mp4v for .mp4, MJPG otherwise."""

    def __init__(self, path: str, fps: float | None):
        self.path, self.fps = Path(path), fps or 30.0
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            fourcc = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise FerEdgeError(f"{self.path}: OpenCV cannot write a {fourcc} video here")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


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
