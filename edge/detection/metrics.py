"""Face-detection scores (numpy): AP at IoU 0.5, recall at a fixed number of false
detections per image, and the landmark error normalised by the eye distance.

Ground-truth faces smaller than ``min_face`` pixels (the longer side, in the evaluated image)
are "ignored", as in WIDER FACE's easy/medium protocol: a detection that matches one is
neither a hit nor a false detection, and they do not count towards recall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in ``a`` against every one in ``b``: ``[len(a), len(b)]``."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class DetectionScorer:
    """Accumulate images with :meth:`add`, then :meth:`result`."""
    iou_threshold: float = 0.5
    min_face: float = 16.0
    _scores: list = field(default_factory=list)
    _hits: list = field(default_factory=list)
    _n_gt: int = 0
    _n_images: int = 0
    _nme: list = field(default_factory=list)

    def add(self, gt_boxes: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
            gt_landmarks: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> None:
        """One image: ground truth xyxy ``[G, 4]`` (landmarks ``[G, 5, 2]``, NaN where
        unknown) and detections xyxy ``[D, 4]``, ``scores [D]`` (landmarks ``[D, 5, 2]``)."""
        gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        big = np.maximum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) >= self.min_face
        self._n_gt += int(big.sum())
        self._n_images += 1
        order = np.argsort(-scores)
        ov = iou(boxes[order], gt)
        taken = np.zeros(len(gt), bool)
        for k, d in enumerate(order):
            hit = 0  # 1 hit, 0 false detection, -1 ignored
            if len(gt):
                cand = np.where(~taken & big, ov[k], -1.0)
                j = int(cand.argmax())
                if cand[j] >= self.iou_threshold:
                    taken[j], hit = True, 1
                    if gt_landmarks is not None and landmarks is not None:
                        g = np.asarray(gt_landmarks, np.float32)[j]
                        eye = float(np.linalg.norm(g[0] - g[1]))
                        if not np.isnan(g).any() and eye > 1:
                            err = np.linalg.norm(np.asarray(landmarks)[d] - g, axis=1).mean()
                            self._nme.append(err / eye)
                elif (ov[k][~big] >= self.iou_threshold).any():
                    hit = -1
            if hit >= 0:
                self._scores.append(float(scores[d]))
                self._hits.append(hit)

    def at(self, score_threshold: float) -> dict[str, float]:
        """Recall and false detections per image keeping detections scoring at least
        ``score_threshold`` (a detector's operating point)."""
        s, h = np.asarray(self._scores), np.asarray(self._hits, np.int64)
        keep = s >= score_threshold
        return {"recall": round(float(h[keep].sum()) / max(self._n_gt, 1), 4),
                "false_per_image": round(float((1 - h[keep]).sum()) / max(self._n_images, 1), 4),
                "score_threshold": score_threshold}

    def result(self, fppi: float = 0.1) -> dict[str, float]:
        """ap50; recall (and score threshold) at ``fppi`` false detections per image; the
        best-F1 threshold; mean landmark error / eye distance (nme)."""
        s, h = np.asarray(self._scores), np.asarray(self._hits, np.int64)
        order = np.argsort(-s, kind="stable")
        s, h = s[order], h[order]
        tp, fp = np.cumsum(h), np.cumsum(1 - h)
        n = max(self._n_gt, 1)
        rec = tp / n
        prec = tp / np.maximum(tp + fp, 1)
        # VOC-style AP: area under the precision envelope
        mrec = np.concatenate([[0.0], rec, [rec[-1] if len(rec) else 0.0]])
        mpre = np.concatenate([[1.0], prec, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        ap = float(np.sum((mrec[1:] - mrec[:-1]) * mpre[1:]))
        allowed = fppi * max(self._n_images, 1)
        ok = fp <= allowed
        r_at = float(rec[ok].max()) if ok.any() else 0.0
        thr_at = float(s[ok][-1]) if ok.any() else 1.0
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-9)
        out = {"ap50": round(ap, 4), f"recall_at_{fppi:g}fppi": round(r_at, 4),
               f"score_at_{fppi:g}fppi": round(thr_at, 4), "faces": self._n_gt,
               "images": self._n_images}
        if len(f1):
            b = int(f1.argmax())
            out.update({"best_f1": round(float(f1[b]), 4), "best_f1_score": round(float(s[b]), 4)})
        if self._nme:
            out["landmark_nme"] = round(float(np.mean(self._nme)), 4)
            out["landmark_faces"] = len(self._nme)
        return out


def score_detector(detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                   items: Iterable[tuple[np.ndarray, np.ndarray]], min_face: float = 16.0
                   ) -> DetectionScorer:
    """Run ``detect`` (image -> boxes xyxy, scores, landmarks [D, 5, 2] or None) on every
    (image, faces) of ``items`` (faces: rows x0 y0 x1 y1, ten landmark values, has_lm)."""
    scorer = DetectionScorer(min_face=min_face)
    for img, faces in items:
        boxes, scores, lms = detect(img)
        gl = faces[:, 4:14].reshape(-1, 5, 2).astype(np.float32)
        gl[faces[:, 14] == 0] = np.nan
        scorer.add(faces[:, :4], boxes, scores, gl, lms)
    return scorer
