"""The edge loop as an object: ``Pipeline(frame) -> FrameResult``.

detect (every K-th frame, on a downscaled copy) -> track (IoU; boxes carried between
detections) -> crop (bundle's margin, square) -> preprocess -> classify the tracks that are due
(new, every N frames, moved, or unsure) in one batch -> per-track EMA smoothing; the others
carry their smoothed probabilities over. ``begin``/``finish`` split a frame around the
classifier call so several streams share one batch. The CLI is a thin layer over this class.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from .bundle import Bundle, load_bundle
from .detection.choose import DEFAULT_DETECTOR, bundle_detector_model, make_detector
from .detection.common import Detector, detect_near
from .errors import FerEdgeError
from .inference.backend import Backend, open_backend
from .metrics import softmax
from .preprocess import crop_box, preprocess
from .results import FaceResult, FrameResult
from .tracker import IouTracker, Track

log = logging.getLogger(__name__)

STAGES = ("decode", "wait", "detect", "crop", "classify", "track")
# Per-track classification interval (see IouTracker.needs_classifying); measured on the
# shared video against classifying every face on every frame: docs/architecture.md.
CLASSIFY_EVERY = 3
RECLASSIFY_IOU = 0.7
RECLASSIFY_SCORE = 0.4
ACCEPTED = ("a numpy array of shape (H, W) or (H, W, 1) grayscale, (H, W, 3) BGR or "
            "(H, W, 4) BGRA; dtype uint8, uint16 or float")


class BadFrame(FerEdgeError, ValueError):
    """A frame given to :class:`Pipeline` that it cannot use; says what was expected."""


def as_frame(image: object) -> np.ndarray:
    """Check a frame given to the Pipeline API and convert it to uint8 BGR or grayscale.

    Accepted: (H, W), (H, W, 1), (H, W, 3) BGR, (H, W, 4) BGRA arrays, any strides.
    - uint8 as is; uint16 as the full 16-bit range (``>> 8``; shift 10/12-bit camera
      data up first); other integer types when every value is within 0..255.
    - float (16/32/64): values in [0, 1] (when the maximum is <= 1) are scaled by 255,
      values in [0, 255] are rounded; NaN, inf and values outside both ranges are refused.
    - bool, complex, object arrays, empty arrays and other shapes are refused.
    Raises :class:`BadFrame` (a FerEdgeError and a ValueError) saying what was expected.
    """
    if not isinstance(image, np.ndarray):
        raise BadFrame(f"frame must be {ACCEPTED}; got {type(image).__name__}")
    shape = image.shape
    if image.ndim not in (2, 3) or (image.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise BadFrame(f"frame has shape {shape}; expected {ACCEPTED}")
    if image.size == 0:
        raise BadFrame(f"frame is empty (shape {shape}); expected {ACCEPTED}")
    kind = image.dtype.kind
    if kind == "u" and image.dtype.itemsize == 1:
        out = image
    elif image.dtype == np.uint16:
        out = (image >> 8).astype(np.uint8)
    elif kind in "ui":
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise BadFrame(f"{image.dtype} frame has values {lo}..{hi}; integer frames other "
                           "than uint16 must lie within 0..255")
        out = image.astype(np.uint8)
    elif kind == "f":
        if not np.isfinite(image).all():
            raise BadFrame(f"{image.dtype} frame contains NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 255:
            raise BadFrame(f"{image.dtype} frame has values {lo:g}..{hi:g}; float frames must "
                           "lie within [0, 1] or [0, 255]")
        scaled = image * 255.0 if hi <= 1.0 else image
        out = np.rint(scaled).astype(np.uint8)
    else:
        raise BadFrame(f"frame dtype {image.dtype} is not supported; expected {ACCEPTED}")
    if out.ndim == 3 and out.shape[2] == 1:
        out = out[:, :, 0]
    elif out.ndim == 3 and out.shape[2] == 4:
        out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(out)


def _whole_positive(value: object) -> bool:
    """A whole number >= 1 (an int or numpy integer; not a bool, a float or a string)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


class Pipeline:
    """Embed the loop: ``for frame in frames: result = pipe(frame)``.

    A frame is a numpy array: (H, W) or (H, W, 1) grayscale, (H, W, 3) BGR or (H, W, 4)
    BGRA, uint8 (uint16 and float frames are converted, see :func:`as_frame`). Anything else
    raises :class:`BadFrame`. At most ``max_faces`` faces (the largest) are classified per
    frame; the others are counted in ``FrameResult.faces_over_limit`` and logged once. A
    frame of another size than the previous one starts afresh (as :meth:`reset`).

    A tracked face is classified when it is new, every ``classify_every`` frames, when its
    box overlaps its box at the last classification less than ``reclassify_iou``, or when its
    smoothed top score is below ``reclassify_score``; otherwise its smoothed probabilities
    carry over (``FaceResult.classified`` is False). ``classify_every=1``: every face on
    every frame.

    Threads: a Pipeline can be called from any thread, and from several at once: each call
    holds the Pipeline's lock for its detection, tracking and smoothing, so calls run one
    after another, in the order they took the lock (a tracker follows one sequence of
    frames; give each camera its own Pipeline). Pipelines may share a classifier (an
    onnxruntime session runs concurrent calls) and a detector (each detector serialises its
    own calls: ``detection.common.ScaledDetector``).
    """

    def __init__(self, bundle: Bundle | str | None = None, precision: str = "int8",
                 backend: str = "ort", threads: int | None = None,
                 providers: list[str] | None = None,
                 detector: Detector | None = None, detect_every: int = 3,
                 full_detect_every: int = 30, max_faces: int = 8, smooth: float | None = 0.3,
                 classifier: Backend | None = None, classify_every: int = CLASSIFY_EVERY,
                 reclassify_iou: float = RECLASSIFY_IOU,
                 reclassify_score: float = RECLASSIFY_SCORE, max_batch: int | None = None):
        for name, value in (("max_faces", max_faces), ("detect_every", detect_every),
                            ("full_detect_every", full_detect_every), ("threads", threads),
                            ("classify_every", classify_every)):
            if (value is not None or name != "threads") and not _whole_positive(value):
                raise FerEdgeError(f"{name}={value!r}: must be a whole number >= 1"
                                   + (" (1: every tracked face on every frame)"
                                      if name == "classify_every" else ""))
        for name, value in (("precision", precision), ("backend", backend)):
            if not isinstance(value, str):
                raise FerEdgeError(f"{name}={value!r}: must be a string, such as "
                                   + ("'int8' or 'fp32'" if name == "precision" else "'ort'"))
        if providers is not None and (isinstance(providers, str)
                                      or not all(isinstance(p, str) for p in providers)):
            raise FerEdgeError(f"providers={providers!r}: must be a list of names, such as "
                               "['cpu']")
        if not all(isinstance(v, (int, float)) and 0 <= v <= 1
                   for v in (reclassify_iou, reclassify_score)):
            raise FerEdgeError(f"reclassify_iou={reclassify_iou}, reclassify_score="
                               f"{reclassify_score}: both must be in [0, 1]")
        if smooth is not None and not 0 < smooth <= 1:
            raise FerEdgeError(f"smooth={smooth}: the EMA weight must be in (0, 1], or None")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        # max_batch: the most faces per classifier call (max_faces x the streams sharing it)
        self.classifier = classifier or open_backend(self.bundle, precision, backend, threads,
                                                     providers, max_batch=max_batch or max_faces)
        # the default detector at the video settings (320 px)
        self.detector = detector or make_detector(
            DEFAULT_DETECTOR, bundle_detector_model(self.bundle, DEFAULT_DETECTOR, None))
        self.detect_every = detect_every
        self.full_detect_every = full_detect_every
        self.max_faces = max_faces
        self.smooth = smooth
        self.classify_every, self.reclassify_iou = classify_every, reclassify_iou
        self.reclassify_score = reclassify_score
        self.labels = self.bundle.labels
        self._warned_max_faces = False
        # detection, tracking and smoothing state: one frame at a time (re-entrant: a call
        # holds it across begin and finish)
        self._lock = threading.RLock()
        self.reset()

    def face_crops(self, image: np.ndarray, boxes: list,
                   landmarks: list | None = None) -> list[np.ndarray]:
        """The crops of ``boxes`` (with their detections' five ``landmarks``, when the
        detector gives them) framed as the bundle records (``crop``: margin, or landmark
        framing and eye-level alignment): the one place the loop and ``fer-edge crop``
        (training faces from photos) cut faces out of a frame."""
        lms = landmarks if landmarks is not None else [None] * len(boxes)
        return [crop_box(image, b, landmarks=lm, spec=self.bundle.crop)
                for b, lm in zip(boxes, lms, strict=True)]

    def reset(self) -> None:
        """Forget tracks (between unrelated images)."""
        with self._lock:
            self.tracker = IouTracker(alpha=self.smooth if self.smooth else 1.0, max_missed=3)
            self._n = 0
            self._size: tuple[int, ...] | None = None

    def __call__(self, image: np.ndarray, index: int | None = None,
                 timestamp: float | None = None, path: str | None = None) -> FrameResult:
        with self._lock:  # the whole frame, so no other thread's frame lands in between
            pending = self.begin(image, index, timestamp, path)
            return self.finish(pending, classify_pending([pending], self.classifier))

    def begin(self, image: np.ndarray, index: int | None = None,
              timestamp: float | None = None, path: str | None = None) -> PendingFrame:
        """Detect, track and crop one frame; the crops of the tracks due for classification
        wait in the result for :meth:`finish` (several streams' crops can be classified in
        one batch with :func:`classify_pending`)."""
        image = as_frame(image)
        with self._lock:
            return self._begin(image, index, timestamp, path)

    def _begin(self, image: np.ndarray, index: int | None, timestamp: float | None,
               path: str | None) -> PendingFrame:
        if image.shape[:2] != self._size:  # another camera or image: tracks do not carry over
            self.reset()
            self._size = image.shape[:2]
        t0 = time.perf_counter()
        live = self.tracker.live()
        full = self._n % self.full_detect_every == 0 or not live
        detected = full or self._n % self.detect_every == 0
        over = 0
        if full:  # whole frame: finds new faces
            dets = sorted(self.detector(image), key=lambda d: d.box[2] * d.box[3],
                          reverse=True)
            over = max(0, len(dets) - self.max_faces)
            dets = dets[:self.max_faces]
            if over and not self._warned_max_faces:
                self._warned_max_faces = True
                log.warning("%d faces in one frame: only the %d largest are classified "
                            "(max_faces); the others are counted in the summary",
                            len(dets) + over, self.max_faces)
        elif detected:  # re-detect known faces near their last box
            dets = [d for d in (detect_near(self.detector, image, t.box) for t in live) if d]
        t1 = time.perf_counter()
        if detected:
            for t, d in zip(self.tracker.update([d.box for d in dets]), dets, strict=True):
                t.landmarks, t.det_score = d.landmarks, d.score
        tracks = self.tracker.live()
        for t in tracks:
            t.since_classified += 1
        due = [t for t in tracks if self.tracker.needs_classifying(
            t, self.classify_every, self.reclassify_iou, self.reclassify_score)]
        t2 = time.perf_counter()
        x = None
        if due:
            x = preprocess(self.face_crops(image, [t.box for t in due],
                                           [t.landmarks for t in due]), self.bundle.input)
        t3 = time.perf_counter()
        timings = {"detect": (t1 - t0) * 1e3, "crop": (t3 - t2) * 1e3, "classify": 0.0,
                   "track": (t2 - t1) * 1e3}
        self._n += 1
        return PendingFrame(self, FrameResult(
            self._n - 1 if index is None else index,
            time.time() if timestamp is None else timestamp, [], detected, timings, path, over),
            tracks, due, x)

    def finish(self, pending: PendingFrame, probs: np.ndarray | None) -> FrameResult:
        """Fold the classifier's probabilities for ``pending.due`` into the tracks; tracks not
        due carry their smoothed probabilities over."""
        with self._lock:
            return self._finish(pending, probs)

    def _finish(self, pending: PendingFrame, probs: np.ndarray | None) -> FrameResult:
        t0 = time.perf_counter()
        r = pending.result
        due = {t.id: p for t, p in zip(pending.due, probs if probs is not None else [],
                                       strict=True)}
        for t in pending.tracks:
            if t.id in due:  # alpha 1.0 when smoothing is off
                sp = self.tracker.smooth(t, due[t.id], t.since_classified)
            else:
                sp = t.probs
            k = int(np.argmax(sp))
            r.faces.append(FaceResult(tuple(int(round(v)) for v in t.box), t.id,
                                      self.labels[k], float(sp[k]), sp, t.raw, t.id in due,
                                      t.landmarks, t.det_score))
        r.timings["track"] += (time.perf_counter() - t0) * 1e3
        return r


@dataclass
class PendingFrame:
    """A frame between :meth:`Pipeline.begin` and :meth:`Pipeline.finish`."""
    pipe: Pipeline
    result: FrameResult
    tracks: list[Track]  # every live track (reported)
    due: list[Track]  # the tracks to classify on this frame
    x: np.ndarray | None  # their preprocessed crops


def classify_pending(pending: list[PendingFrame], classifier: Backend) -> np.ndarray | None:
    """One classifier call for the due crops of several frames (one per stream); returns the
    probabilities, in order, and records the batch's time as each frame's classify time.
    Use :func:`split_probs` to hand each frame its rows."""
    xs = [p.x for p in pending if p.x is not None]
    if not xs:
        return None
    t0 = time.perf_counter()
    probs = softmax(classifier(xs[0] if len(xs) == 1 else np.concatenate(xs))
                    .astype(np.float32))
    ms = (time.perf_counter() - t0) * 1e3
    for p in pending:
        if p.x is not None:
            p.result.timings["classify"] = ms
    return probs


def split_probs(pending: list[PendingFrame], probs: np.ndarray | None) -> list[np.ndarray | None]:
    """The rows of a :func:`classify_pending` batch that belong to each frame."""
    out, i = [], 0
    for p in pending:
        n = 0 if p.x is None else len(p.x)
        out.append(probs[i:i + n] if n else None)
        i += n
    return out
