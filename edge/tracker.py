"""IoU tracker with per-track exponential smoothing of class probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]
    probs: np.ndarray | None = None  # smoothed probabilities
    missed: int = 0  # consecutive detections without a match
    raw: np.ndarray | None = None  # the classifier's output at the last classification
    classified_box: tuple[float, float, float, float] | None = None  # box at that time
    since_classified: int = 0  # frames since then
    landmarks: tuple[tuple[float, float], ...] | None = None  # from the last detection
    det_score: float | None = None  # the detector's score at the last detection


class IouTracker:
    """Greedy IoU matching of detections to tracks; a track unmatched for ``max_missed``
    detection rounds expires. ``alpha`` is the EMA weight of the newest probabilities
    (1.0 = no smoothing)."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, alpha: float = 0.3):
        self.iou_threshold, self.max_missed, self.alpha = iou_threshold, max_missed, alpha
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: list[tuple[float, float, float, float]]) -> list[Track]:
        """Match this round's detections; returns the track of each box, in order."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks)
                        for bi, b in enumerate(boxes)), reverse=True)
        matched_t: set[int] = set()
        out: list[Track | None] = [None] * len(boxes)
        for score, ti, bi in pairs:
            if score < self.iou_threshold:
                break
            if ti in matched_t or out[bi] is not None:
                continue
            t = self.tracks[ti]
            t.box, t.missed = boxes[bi], 0
            matched_t.add(ti)
            out[bi] = t
        for ti, t in enumerate(self.tracks):
            if ti not in matched_t:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for bi, b in enumerate(boxes):
            if out[bi] is None:
                t = Track(self._next, b)
                self._next += 1
                self.tracks.append(t)
                out[bi] = t
        return out  # type: ignore[return-value]

    def live(self, grace: int = 1) -> list[Track]:
        """Tracks to report and carry between detections: seen in the latest detection round,
        or missed in at most ``grace`` rounds (one missed detection does not blink a face)."""
        return [t for t in self.tracks if t.missed <= grace]

    def smooth(self, track: Track, probs: np.ndarray, frames: int = 1) -> np.ndarray:
        """Fold the newest probabilities into the track's EMA. ``frames``: how many frames
        they stand for (the frames since the track was last classified), so the smoothing's
        time constant in frames is the same whether a track is classified every frame or
        every K frames: the weight is ``1 - (1 - alpha) ** frames``."""
        track.raw = probs
        track.classified_box, track.since_classified = track.box, 0
        if track.probs is None or self.alpha >= 1.0:
            track.probs = probs.copy()
        else:
            w = 1.0 - (1.0 - self.alpha) ** max(1, frames)
            track.probs = w * probs + (1.0 - w) * track.probs
        return track.probs

    @staticmethod
    def needs_classifying(track: Track, every: int, min_iou: float, min_score: float) -> bool:
        """A track is classified when it is new, every ``every`` frames, when its box has
        moved or changed size (IoU with the box at its last classification below
        ``min_iou``), or when its smoothed top score is below ``min_score``; otherwise its
        smoothed probabilities carry over."""
        return (track.probs is None or track.since_classified >= every
                or iou(track.box, track.classified_box or track.box) < min_iou
                or float(track.probs.max()) < min_score)
