"""What every face detector shares: the ``Detection`` it returns, the ``Detector`` call
signature, detection on a downscaled copy of the frame (:func:`downscale_frame`, and
:func:`detect_scaled`: very wide or tall frames in tiles; boxes come back in full-frame
coordinates), the re-detection of a tracked face near its last box (:func:`detect_near`), and
:class:`ScaledDetector`, the call every detector family shares (and its thread safety).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..tracker import iou


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels
    score: float = 1.0
    # five (x, y) points in frame pixels: left eye, right eye, nose tip, left and right mouth
    # corner (left = image left); None for detectors without landmarks (Haar)
    landmarks: tuple[tuple[float, float], ...] | None = None


def to_detections(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray,
                  min_size: int | None = None, max_size: int | None = None) -> list[Detection]:
    """Boxes xyxy [M, 4], scores [M] and landmarks [M, 5, 2] in frame pixels -> Detections,
    keeping the faces whose longer side is within ``min_size``..``max_size``."""
    out = []
    for b, sc, lm in zip(boxes, scores, landmarks, strict=True):
        w, h = float(b[2] - b[0]), float(b[3] - b[1])
        if (min_size and max(w, h) < min_size) or (max_size and max(w, h) > max_size):
            continue
        out.append(Detection((float(b[0]), float(b[1]), w, h), float(sc),
                             tuple((float(px), float(py)) for px, py in lm)))
    return out


# Every detector: frame -> list[Detection] (HaarDetector, YuNetDetector,
# ours.OurDetector).
Detector = Callable[..., list[Detection]]


def downscale_frame(frame: np.ndarray, max_width: int | None) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    if not max_width or w <= max_width:
        return frame, 1.0
    s = max_width / w
    return cv2.resize(frame, (max_width, max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


# A frame more than this many times wider than tall (or taller than wide) is searched in
# overlapping square tiles, each downscaled to the detect width: downscaling a 10,000 px
# panorama whole to 640 px shrinks its faces 15x, below any detector's smallest face.
MAX_ASPECT = 2.0
TILE_OVERLAP = 0.25  # a face narrower than a quarter of the tile is whole in some tile


def tile_regions(h: int, w: int, max_aspect: float = MAX_ASPECT,
                 overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) regions covering an ``h`` x ``w`` frame: the frame itself, or for a
    very wide or tall one, overlapping squares of its short side along the long side."""
    side, long = min(h, w), max(h, w)
    if long <= max_aspect * side:
        return [(0, 0, w, h)]
    step = max(1, int(side * (1 - overlap)))
    starts = list(range(0, long - side + 1, step))
    if starts[-1] != long - side:
        starts.append(long - side)
    return [(a, 0, a + side, h) if w > h else (0, a, w, a + side) for a in starts]


def _shift(d: Detection, x0: int, y0: int, s: float) -> Detection:
    """A detection on a tile downscaled by ``s`` whose corner is (x0, y0), in frame pixels."""
    x, y, w, h = d.box
    lms = None if d.landmarks is None else tuple((x0 + px / s, y0 + py / s)
                                                 for px, py in d.landmarks)
    return Detection((x0 + x / s, y0 + y / s, w / s, h / s), d.score, lms)


def _same_face(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Boxes from two overlapping tiles that are one face: they overlap, or one holds most
    of the other (a face cut by a tile's edge)."""
    if iou(a, b) > 0.3:
        return True
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy > 0.6 * min(a[2] * a[3], b[2] * b[3])


def detect_scaled(frame: np.ndarray, max_width: int | None,
                  detect: Callable[[np.ndarray], list[Detection]]) -> list[Detection]:
    """``detect`` (a detection in the pixels of the image it is given) on ``frame``
    downscaled to ``max_width``, with boxes in frame pixels. A very wide or tall frame
    (:data:`MAX_ASPECT`) is searched in overlapping square tiles (:func:`tile_regions`), each
    downscaled to ``max_width``, and a face seen in two tiles is kept once (the higher score,
    then the larger box)."""
    h, w = frame.shape[:2]
    regions = tile_regions(h, w) if max_width else [(0, 0, w, h)]
    found: list[Detection] = []
    for x0, y0, x1, y1 in regions:
        small, s = downscale_frame(frame[y0:y1, x0:x1], max_width)
        found += [_shift(d, x0, y0, s) for d in detect(small)]
    if len(regions) == 1:
        return found
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: (-d.score, -d.box[2] * d.box[3])):
        if not any(_same_face(d.box, k.box) for k in kept):
            kept.append(d)
    return kept


class ScaledDetector:
    """The call every detector family shares: ``detector(frame, min_size, max_size,
    downscale)`` runs :meth:`_detect` on the frame downscaled to ``max_width`` (in tiles when
    very wide or tall: :func:`detect_scaled`) and returns boxes in frame pixels.

    ``_call_lock``: OpenCV's cascade keeps scratch data in the object, and YuNet its input
    size, so two threads in one such detector raise ``cv2.error`` or return wrong boxes; those
    detectors set a ``threading.Lock`` here in ``__init__`` and each call runs under it, so one
    detector can serve several Pipelines and threads. onnxruntime sessions need none."""

    max_width: int | None = None
    _call_lock: contextlib.AbstractContextManager = contextlib.nullcontext()

    def __call__(self, frame: np.ndarray, min_size: int | None = None,
                 max_size: int | None = None, downscale: bool = True) -> list[Detection]:
        with self._call_lock:
            return detect_scaled(frame, self.max_width if downscale else None,
                                 lambda small: self._detect(small, min_size, max_size))

    def _detect(self, small: np.ndarray, min_size: int | None,
                max_size: int | None) -> list[Detection]:
        """Detections in the pixels of ``small`` (already downscaled)."""
        raise NotImplementedError


def detect_near(detector: Detector, frame: np.ndarray,
                box: tuple[float, float, float, float], face_px: int = 64) -> Detection | None:
    """Re-detect a tracked face in a window around its last box, rescaled so the face is
    about ``face_px`` wide and searched only between 0.6x and 1.6x that size: a fraction of
    a full-frame detection's cost (the DeepStream-style tracker re-detect)."""
    x, y, w, h = box
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, int(x - w / 2)), max(0, int(y - h / 2))
    x1, y1 = min(fw, int(x + w * 1.5)), min(fh, int(y + h * 1.5))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    s = face_px / max(w, 1.0)
    roi = frame[y0:y1, x0:x1]
    roi = cv2.resize(roi, (max(1, round(roi.shape[1] * s)), max(1, round(roi.shape[0] * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    found = detector(roi, min_size=int(face_px * 0.6), max_size=int(face_px * 1.6),
                     downscale=False)
    if not found:
        return None
    cx, cy = face_px / 2 + (x - x0) * s, face_px / 2 + (y - y0) * s  # where the box was
    best = min(found, key=lambda d: (d.box[0] + d.box[2] / 2 - cx) ** 2
               + (d.box[1] + d.box[3] / 2 - cy) ** 2)
    bx, by, bw, bh = best.box
    lms = None if best.landmarks is None else \
        tuple((x0 + px / s, y0 + py / s) for px, py in best.landmarks)
    return Detection((x0 + bx / s, y0 + by / s, bw / s, bh / s), best.score, lms)


# Detection settings by the kind of source (docs/realworld.md has the tables and the
# commands). Video and live sources keep the fast path (320 px, frontal cascade, ROI
# re-detection). Stills (photos, folders) detect at 640 px, where Haar finds a face in 83.5 %
# of sfew_frames against 71.6 % at 320, and add the profile cascade on the image and its
# mirror: 88.9 % found, +2.2 points end to end, 0.38 false detections per image (0.31 without).
VIDEO_DETECT_WIDTH, STILLS_DETECT_WIDTH = 320, 640

