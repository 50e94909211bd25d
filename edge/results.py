"""What the loop gives for a frame: ``FrameResult`` with one ``FaceResult`` per face. The
outputs read these; they never need the classifier that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]
    track_id: int
    label: str
    score: float
    probs: np.ndarray  # smoothed when smoothing is on
    raw_probs: np.ndarray  # the classifier's output at the track's last classification
    classified: bool = True  # classified on this frame (else its probabilities carried over)
    # five (x, y) points from the detector's last detection of this face (Detection.landmarks)
    landmarks: tuple[tuple[float, float], ...] | None = None
    det_score: float | None = None  # the detector's score at its last detection (Haar: 1.0)

    def to_dict(self, labels: tuple[str, ...]) -> dict:
        d = {"box": list(self.box), "track_id": self.track_id, "label": self.label,
             "score": round(self.score, 4), "classified": self.classified,
             "probs": {k: round(float(p), 4) for k, p in zip(labels, self.probs, strict=True)}}
        if self.det_score is not None:
            d["det_score"] = round(float(self.det_score), 4)
        if self.landmarks is not None:
            d["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in self.landmarks]
        return d


@dataclass
class FrameResult:
    index: int
    timestamp: float
    faces: list[FaceResult]
    detected: bool  # the detector ran on this frame
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage
    path: str | None = None
    faces_over_limit: int = 0  # faces found but not classified (beyond max_faces)
    stream: int = 0  # the stream's index in a run of several sources
    fps: float | None = None  # the stream's frame rate at this frame (framerate.FrameRate)
