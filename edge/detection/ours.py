"""Our own face detector with five landmarks (``--detector ours``): an ONNX model run by
onnxruntime, decoded and suppressed in numpy (no torch at run time).

The network (``fer_edge.train.detector.model``) is anchor-free: one point per cell of the
stride 8, 16 and 32 feature maps. Its single output ``pred`` is ``[1, N, 15]``, the cells of
stride 8, then 16, then 32, each row-major: the face score (a probability), the distances
from the cell centre to the box's left, top, right and bottom edges, and the five landmarks
(left eye, right eye, nose tip, left and right mouth corner; left = image left) as x, y
offsets from the cell centre, all in input pixels. The input ``image`` is ``[1, 3, H, W]``
BGR in 0..255 (the model normalises), H and W multiples of 32: a frame is scaled to
``max_width`` and padded right and bottom.

The detector bundle is a folder with ``detector.json`` (what :func:`load_detector_bundle`
checks: format, strides, model files with their sha256) and ``detector_fp32.onnx``,
``detector_int8.onnx``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..bundle import sha256_file
from ..errors import FerEdgeError
from .common import Detection, ScaledDetector, to_detections

STRIDES = (8, 16, 32)
ALIGN = 32  # input sides are multiples of the largest stride
DETECTOR_FORMAT = "fer-edge-face-detector"
DETECTOR_JSON = "detector.json"
# Left/right swap of the landmarks under a horizontal flip: eyes and mouth corners trade places.
FLIP_ORDER = (1, 0, 2, 4, 3)


def priors(height: int, width: int, strides: tuple[int, ...] = STRIDES) -> np.ndarray:
    """Cell centres ``[N, 3]`` (x, y, stride) in the order of the model's output rows."""
    out = []
    for s in strides:
        gh, gw = -(-height // s), -(-width // s)
        ys, xs = np.mgrid[0:gh, 0:gw]
        out.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s,
                             np.full(gh * gw, s)], 1))
    return np.concatenate(out).astype(np.float32)


def decode(pred: np.ndarray, pri: np.ndarray, score_threshold: float = 0.5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``pred`` ``[N, 15]`` above ``score_threshold`` -> (boxes xyxy [M, 4], scores
    [M], landmarks [M, 5, 2]) in input pixels."""
    if pred.shape[0] != pri.shape[0] or pred.shape[-1] != 15:
        raise FerEdgeError(f"face detector output has shape {pred.shape}, expected "
                           f"[{pri.shape[0]}, 15] for this input size")
    keep = pred[:, 0] >= score_threshold
    p, c = pred[keep], pri[keep]
    cx, cy = c[:, 0:1], c[:, 1:2]
    boxes = np.concatenate([cx - p[:, 1:2], cy - p[:, 2:3], cx + p[:, 3:4], cy + p[:, 4:5]], 1)
    lms = p[:, 5:15].reshape(-1, 5, 2) + c[:, None, :2]
    return boxes, p[:, 0].copy(), lms


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.4,
        top_k: int = 750) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (OpenCV's NMSBoxes), best first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores)[:top_k]
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            for b in boxes[order]]
    idx = cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores[order]], 0.0, iou_threshold)
    return order[np.asarray(idx, np.int64).reshape(-1)]


def letterbox(frame: np.ndarray, max_width: int | None) -> tuple[np.ndarray, float]:
    """BGR frame -> ``[1, 3, H, W]`` float32 (scaled so the width is at most ``max_width``,
    padded right/bottom to multiples of 32) and the scale applied."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h, w = frame.shape[:2]
    s = min(1.0, max_width / w) if max_width else 1.0
    if s < 1.0:
        frame = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)
    h2, w2 = frame.shape[:2]
    H, W = -(-h2 // ALIGN) * ALIGN, -(-w2 // ALIGN) * ALIGN
    x = np.zeros((1, 3, H, W), np.float32)
    x[0, :, :h2, :w2] = frame.transpose(2, 0, 1)
    return x, s


def load_detector_bundle(path: str | os.PathLike, precision: str = "int8",
                         verify: bool = True) -> tuple[Path, dict[str, Any]]:
    """The model file of ``precision`` in a detector bundle folder (checked) and its meta."""
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        return p, {}
    if p.is_file() and p.name == DETECTOR_JSON:
        p = p.parent
    meta_file = p / DETECTOR_JSON
    if not meta_file.is_file():
        raise FerEdgeError(f"{p}: not a face-detector bundle (no {DETECTOR_JSON}) nor an "
                           ".onnx file (--detector-model)")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FerEdgeError(f"{meta_file}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != DETECTOR_FORMAT:
        raise FerEdgeError(f"{meta_file}: not a {DETECTOR_FORMAT} file")
    models = meta.get("models")
    if not isinstance(models, dict) or precision not in models:
        have = ", ".join(models) if isinstance(models, dict) else "none"
        raise FerEdgeError(f"{meta_file}: no {precision!r} model (it has {have})")
    entry = models[precision]
    f = p / str(entry.get("file", ""))
    if Path(str(entry.get("file", ""))).name != entry.get("file") or not f.is_file():
        raise FerEdgeError(f"{f}: model file named in {DETECTOR_JSON} is missing")
    if verify and sha256_file(f) != entry.get("sha256"):
        raise FerEdgeError(f"{f}: sha256 does not match {DETECTOR_JSON} (corrupt, truncated "
                           "or modified file)")
    return f, meta


class OurDetector(ScaledDetector):
    """``--detector ours``: the fer-edge face detector (boxes, scores, five landmarks)."""

    name = "ours"

    def __init__(self, model: str | os.PathLike, max_width: int | None = 320,
                 score_threshold: float | None = None, nms_threshold: float = 0.4,
                 precision: str = "int8", threads: int = 1, providers: list | None = None):
        import onnxruntime as ort

        path, meta = load_detector_bundle(model, precision)
        self.meta = meta
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FerEdgeError(f"{path}: onnxruntime cannot load it as a face detector "
                               f"({msg[:160]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise FerEdgeError(f"{path}: not a fer-edge face detector (expects one "
                               "[1, 3, H, W] input)")
        self.input_name = inputs[0].name
        self.strides = tuple(meta.get("strides", STRIDES))
        self.max_width, self.nms_threshold = max_width, nms_threshold
        self.score_threshold = score_threshold if score_threshold is not None \
            else float(meta.get("score_threshold", 0.5))
        self._priors: dict[tuple[int, int], np.ndarray] = {}
        try:
            self.detect_raw(np.zeros((64, 64, 3), np.uint8), 64)  # a wrong ONNX fails here
        except FerEdgeError:
            raise
        except Exception as e:
            raise FerEdgeError(f"{path}: not a fer-edge face detector ({str(e)[:160]})") \
                from None

    def detect_raw(self, frame: np.ndarray, max_width: int | None,
                   score_threshold: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes xyxy, scores, landmarks [M, 5, 2]) in frame pixels, after NMS."""
        x, s = letterbox(frame, max_width)
        key = x.shape[2:]
        if key not in self._priors:
            self._priors[key] = priors(key[0], key[1], self.strides)
        pred = self.session.run(None, {self.input_name: x})[0][0]
        thr = self.score_threshold if score_threshold is None else score_threshold
        boxes, scores, lms = decode(pred, self._priors[key], thr)
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep] / s, scores[keep], lms[keep] / s

    def _detect(self, small: np.ndarray, min_size: int | None,
                max_size: int | None) -> list[Detection]:
        boxes, scores, lms = self.detect_raw(small, None)
        return to_detections(boxes, scores, lms, min_size, max_size)
