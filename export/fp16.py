"""The FP16 ONNX model: an FP16 network body behind an FP32 graph input and output.

TensorRT 11 is strongly typed only (and TensorRT 10 builds our engines strongly typed too): an
engine's precision is the ONNX graph's, so an FP16 engine needs an FP16 graph. The body (every
member network) runs in FP16; the graph input and output stay FP32 so every runtime feeds and
reads the same tensors as the FP32 model, and the flip/ensemble probability averaging (softmax,
mean, log) stays FP32, where FP16 would lose the small probabilities.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import OrtBackend, predict_logits
from fer_edge.edge.preprocess import InputSpec

from .onnx_export import Ensemble, FlipAverage, export_onnx

FP16_FILE = "model.fp16.onnx"
MIN_ARGMAX_AGREEMENT = 0.99


class HalfBody(nn.Module):
    """``model`` converted to FP16, with casts at its boundaries: FP32 in, FP32 logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = fold_batchnorm(copy.deepcopy(model).eval()).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Conv+BatchNorm folded in FP32 before halving (torch.fx); the model unchanged when it
    cannot be traced (TensorRT folds BatchNormalization itself)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:  # an untraceable forward: keep the BatchNorm layers
        return model


def fp16_model(members: list[nn.Module], tta_flip: bool) -> nn.Module:
    """The same composition as the FP32 export (ensemble, flip averaging) around FP16 bodies."""
    bodies = [HalfBody(m) for m in members]
    model = bodies[0] if len(bodies) == 1 else Ensemble(bodies)
    return (FlipAverage(model) if tta_flip else model).eval()


def export_fp16(members: list[nn.Module], tta_flip: bool, spec: InputSpec, fp32: Path,
                out: Path, check: np.ndarray, opset: int = 18) -> dict:
    """Write ``out`` and compare it with the FP32 model ``fp32`` on onnxruntime-CPU over
    ``check``; refuses (FerEdgeError) below 99 % argmax agreement. Returns the bundle record."""
    export_onnx(fp16_model(members, tta_flip), spec, out, opset, simplify=False)
    check_io_fp32(out)
    ref = predict_logits(OrtBackend(fp32), check)
    got = predict_logits(OrtBackend(out), check)
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(diff) or agree < MIN_ARGMAX_AGREEMENT:
        out.unlink(missing_ok=True)
        raise FerEdgeError(f"{out}: FP16 model agrees with FP32 on {100 * agree:.2f} % of "
                           f"{len(check)} faces (< {100 * MIN_ARGMAX_AGREEMENT:.0f} %); "
                           "not written")
    return {"file": out.name, "body": "fp16", "io": "fp32",
            "argmax_agreement_vs_fp32": agree, "max_abs_diff_vs_fp32": diff,
            "checked_on": int(len(check))}


def check_io_fp32(path: Path) -> None:
    """The graph's inputs and outputs are FP32 (the runtimes feed FP32 faces)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for v in (*graph.input, *graph.output):
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise FerEdgeError(f"{path}: graph {v.name!r} is not FP32")
