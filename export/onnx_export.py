"""PyTorch -> ONNX (FP32, dynamic batch) and the check that onnxruntime agrees with PyTorch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_edge.edge.backends import OrtBackend, predict_logits
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.preprocess import InputSpec

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class Ensemble(nn.Module):
    """Several members in ONE graph: their probabilities averaged, log-probabilities out, so
    the edge runtime and INT8 quantisation see a single model."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([m(x).softmax(-1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(1e-12))


class FlipAverage(nn.Module):
    """Horizontal-flip test-time averaging inside the graph: one batch of 2N through the
    network, probabilities averaged, log-probabilities out (valid logits for softmax/argmax)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(torch.cat([x, x.flip(3)], 0))
        p = logits.softmax(-1).reshape(2, x.shape[0], -1).mean(0)
        return torch.log(p.clamp_min(1e-12))


def export_onnx(model: nn.Module, spec: InputSpec, path: Path, opset: int = 18) -> None:
    """Export with a dynamic batch axis and named input/output, then simplify with
    onnxruntime's ``quant_pre_process`` (shape inference, constant folding, BN folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    example = (torch.zeros(2, spec.channels, spec.height, spec.width),)
    raw = path.with_name(path.stem + ".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, str(raw), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              external_data=False, verbose=False)
        except Exception as e:  # an op the dynamo exporter cannot trace: the TorchScript one
            log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter",
                        str(e).splitlines()[0][:200])
            torch.onnx.export(model, example, str(raw), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    try:
        quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    finally:
        raw.unlink(missing_ok=True)


@torch.no_grad()
def verify_onnx(model: nn.Module, onnx_path: Path, x: np.ndarray, atol: float = 1e-3) -> float:
    """Max |logit difference| between PyTorch and onnxruntime on ``x``; raises above ``atol``."""
    ref = model.eval().cpu()(torch.from_numpy(x)).numpy()
    got = predict_logits(OrtBackend(onnx_path), x)
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(diff) or diff > atol:
        raise FerEdgeError(f"{onnx_path}: onnxruntime logits differ from PyTorch by {diff:.2e} "
                           f"(> {atol:.0e}) on {len(x)} faces")
    return diff
