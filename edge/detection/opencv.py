"""OpenCV's face detectors: the Haar cascade (the default, no download; with the profile
cascade on the image and its mirror for stills) and YuNet (``cv2.FaceDetectorYN``) when a
model file is given.

The cascade file comes from opencv-python 4.x's ``cv2.data.haarcascades``, else from the
system's OpenCV data folders (JetPack's and distributions' OpenCV; opencv-python 5 ships no
cascade files): :func:`find_cascade`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import FerEdgeError
from ..preprocess import to_gray
from ..tracker import iou
from .common import Detection, ScaledDetector

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"  # faces turned left; the mirror finds right
# Where OpenCV's own installs (apt's libopencv, JetPack's, a source build) put the cascades.
SYSTEM_CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                       "/usr/local/share/opencv4/haarcascades",
                       "/usr/local/share/opencv/haarcascades",
                       "/usr/share/opencv5/haarcascades", "/usr/local/share/opencv5/haarcascades")


def cascade_dirs() -> list[Path]:
    """Folders searched for the cascade, in order: cv2.data.haarcascades (opencv-python 4.x),
    then the system OpenCV data folders."""
    dirs = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        dirs.append(Path(data.haarcascades))
    return dirs + [Path(d) for d in SYSTEM_CASCADE_DIRS]


def _require_cascade_classifier() -> None:
    if not hasattr(cv2, "CascadeClassifier"):
        raise FerEdgeError(f"OpenCV {cv2.__version__} has no CascadeClassifier (opencv-python "
                           "5 dropped it): install 'opencv-python<5' or "
                           "opencv-contrib-python, or use --detector yunet --detector-model FILE")


def find_cascade(name: str = HAAR_CASCADE) -> Path:
    """The first ``name`` found in :func:`cascade_dirs`; FerEdgeError saying what to do if none."""
    _require_cascade_classifier()
    for d in cascade_dirs():
        if (d / name).is_file():
            return d / name
    raise FerEdgeError(f"no {name} found (OpenCV {cv2.__version__} ships none; looked in "
                       f"{', '.join(str(d) for d in cascade_dirs())}): install "
                       "'opencv-python<5' or your system's OpenCV data (apt install "
                       "opencv-data), or use --detector yunet --detector-model FILE")


def _load_cascade(path: str) -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(path)
    if c.empty():
        raise FerEdgeError(f"{path}: cannot load the Haar cascade")
    return c


def _merge(kept: list, extra: list, max_iou: float = 0.3) -> list:
    """``kept`` plus the boxes of ``extra`` that overlap none already taken (greedy NMS that
    prefers the earlier list)."""
    out = list(kept)
    for b in extra:
        if all(iou(tuple(b), tuple(k)) < max_iou for k in out):
            out.append(b)
    return out


class HaarDetector(ScaledDetector):
    """OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``, found by
    :func:`find_cascade` unless ``cascade`` names a file); with ``profile`` also OpenCV's
    profile cascade on the image and its mirror, merged with the frontal boxes by NMS."""

    name = "haar"

    def __init__(self, max_width: int | None = 320, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24, cascade: str | None = None,
                 profile: bool = False):
        _require_cascade_classifier()
        path = cascade or str(find_cascade())
        self.cascade = _load_cascade(path)
        self.profile = _load_cascade(str(find_cascade(PROFILE_CASCADE))) if profile else None
        self.max_width, self.scale_factor = max_width, scale_factor
        self.min_neighbors, self.min_size = min_neighbors, min_size
        self._call_lock = threading.Lock()

    def _detect(self, small: np.ndarray, min_size: int | None,
                max_size: int | None) -> list[Detection]:
        gray = cv2.equalizeHist(to_gray(small))
        lo = min_size or self.min_size
        kw = dict(scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                  minSize=(lo, lo), maxSize=(max_size, max_size) if max_size else None)
        boxes = list(self.cascade.detectMultiScale(gray, **kw))
        if self.profile is not None:
            w = gray.shape[1]
            left = list(self.profile.detectMultiScale(gray, **kw))
            right = [(w - x - bw, y, bw, bh) for x, y, bw, bh
                     in self.profile.detectMultiScale(cv2.flip(gray, 1), **kw)]
            boxes = _merge(boxes, left + right)
        return [Detection(tuple(float(v) for v in b)) for b in boxes]


class YuNetDetector(ScaledDetector):
    """OpenCV's DNN face detector; ``model`` is a face_detection_yunet_*.onnx file."""

    name = "yunet"

    def __init__(self, model: str, max_width: int | None = 320, score_threshold: float = 0.7,
                 nms_threshold: float = 0.3):
        if not Path(model).is_file():
            raise FerEdgeError(f"{model}: YuNet model file not found (--detector-model)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FerEdgeError(f"OpenCV {cv2.__version__} has no FaceDetectorYN (needs >= 4.5.4)")
        try:
            self.net = cv2.FaceDetectorYN.create(model, "", (320, 240), score_threshold,
                                                 nms_threshold)
            self.net.detect(np.zeros((240, 320, 3), np.uint8))  # a wrong ONNX fails here
        except cv2.error as e:
            why = next((ln.strip("> ").strip() for ln in str(e.err).splitlines()
                        if ln.strip("> ").strip()), "unknown error")
            raise FerEdgeError(f"{model}: OpenCV cannot load it as a YuNet face detector "
                               f"(--detector-model): {why[:160]}") from None
        self.max_width = max_width
        self._size: tuple[int, int] | None = None
        self._call_lock = threading.Lock()

    def _detect(self, small: np.ndarray, min_size: int | None = None,
                max_size: int | None = None) -> list[Detection]:  # YuNet: no size bounds
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self.net.setInputSize(size)
            self._size = size
        _, faces = self.net.detect(small)
        if faces is None:
            return []
        return [Detection(tuple(float(v) for v in f[:4]), float(f[-1]),
                          tuple((float(f[4 + 2 * i]), float(f[5 + 2 * i])) for i in range(5)))
                for f in faces]
