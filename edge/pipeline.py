"""The edge loop as an object: ``Pipeline(frame) -> FrameResult``.

detect (every K-th frame, on a downscaled copy) -> track (IoU; boxes carried between
detections) -> crop (bundle's margin, square) -> preprocess -> classify all faces in one batch
-> per-track EMA smoothing. The CLI is a thin layer over this class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .backends import Backend, open_backend
from .bundle import Bundle, load_bundle
from .detect import HaarDetector, YuNetDetector, detect_near, make_detector
from .metrics import softmax
from .preprocess import crop_box, preprocess
from .tracker import IouTracker

STAGES = ("decode", "detect", "crop", "classify", "track")


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]
    track_id: int
    label: str
    score: float
    probs: np.ndarray  # smoothed when smoothing is on
    raw_probs: np.ndarray

    def to_dict(self, labels: tuple[str, ...]) -> dict:
        return {"box": list(self.box), "track_id": self.track_id, "label": self.label,
                "score": round(self.score, 4),
                "probs": {k: round(float(p), 4) for k, p in zip(labels, self.probs, strict=True)}}


@dataclass
class FrameResult:
    index: int
    timestamp: float
    faces: list[FaceResult]
    detected: bool  # the detector ran on this frame
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    path: str | None = None


class Pipeline:
    """Embed the loop: ``for frame in frames: result = pipe(frame)``."""

    def __init__(self, bundle: Bundle | str | None = None, precision: str = "int8",
                 backend: str = "ort", threads: int | None = None,
                 providers: list[str] | None = None,
                 detector: HaarDetector | YuNetDetector | None = None, detect_every: int = 3,
                 full_detect_every: int = 30, max_faces: int = 8, smooth: float | None = 0.3,
                 classifier: Backend | None = None):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.classifier = classifier or open_backend(self.bundle, precision, backend, threads,
                                                     providers)
        self.detector = detector or make_detector("haar")
        self.detect_every = max(1, detect_every)
        self.full_detect_every = max(1, full_detect_every)
        self.max_faces = max_faces
        self.smooth = smooth
        self.labels = self.bundle.labels
        self.reset()

    def reset(self) -> None:
        """Forget tracks (between unrelated images)."""
        self.tracker = IouTracker(alpha=self.smooth if self.smooth else 1.0, max_missed=3)
        self._n = 0

    def __call__(self, image: np.ndarray, index: int | None = None,
                 timestamp: float | None = None, path: str | None = None) -> FrameResult:
        t0 = time.perf_counter()
        timings = {}
        live = self.tracker.live()
        full = self._n % self.full_detect_every == 0 or not live
        detected = full or self._n % self.detect_every == 0
        if full:  # whole frame: finds new faces
            dets = sorted(self.detector(image), key=lambda d: d.box[2] * d.box[3],
                          reverse=True)[:self.max_faces]
        elif detected:  # re-detect known faces near their last box
            dets = [d for d in (detect_near(self.detector, image, t.box) for t in live) if d]
        t1 = time.perf_counter()
        if detected:
            self.tracker.update([d.box for d in dets])
        tracks = self.tracker.live()
        t_track = time.perf_counter() - t1
        timings["detect"] = (t1 - t0) * 1e3
        faces: list[FaceResult] = []
        if tracks:
            t2 = time.perf_counter()
            crop = self.bundle.crop
            x = preprocess([crop_box(image, t.box, crop.margin, crop.square) for t in tracks],
                           self.bundle.input)
            t3 = time.perf_counter()
            probs = softmax(self.classifier(x).astype(np.float32))
            t4 = time.perf_counter()
            for t, p in zip(tracks, probs, strict=True):
                sp = self.tracker.smooth(t, p)  # alpha 1.0 when smoothing is off
                k = int(np.argmax(sp))
                faces.append(FaceResult(tuple(int(round(v)) for v in t.box), t.id,
                                        self.labels[k], float(sp[k]), sp, p))
            t_track += time.perf_counter() - t4
            timings["crop"], timings["classify"] = (t3 - t2) * 1e3, (t4 - t3) * 1e3
        else:
            timings["crop"] = timings["classify"] = 0.0
        timings["track"] = t_track * 1e3
        self._n += 1
        return FrameResult(self._n - 1 if index is None else index,
                           time.time() if timestamp is None else timestamp, faces, detected,
                           timings, path)
