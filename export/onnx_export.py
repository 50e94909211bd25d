"""PyTorch -> ONNX (FP32, dynamic batch) and the check that onnxruntime agrees with PyTorch."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import OrtBackend, predict_logits
from fer_edge.edge.preprocess import InputSpec

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def log_mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """[K, N, C] logits of K views or members -> log of their mean probabilities, [N, C]: valid
    logits for softmax/argmax downstream."""
    return torch.log(logits.softmax(-1).mean(0).clamp_min(1e-12))


class Ensemble(nn.Module):
    """Several members in ONE graph: their probabilities averaged, log-probabilities out, so
    the edge runtime and INT8 quantisation see a single model."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_mean_probs(torch.stack([m(x) for m in self.members]))


class FlipAverage(nn.Module):
    """Horizontal-flip test-time averaging inside the graph: one batch of 2N through the
    network, probabilities averaged, log-probabilities out (valid logits for softmax/argmax)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(torch.cat([x, x.flip(3)], 0))
        return log_mean_probs(logits.reshape(2, x.shape[0], -1))


def export_onnx(model: nn.Module, spec: InputSpec, path: Path, opset: int = 18,
                simplify: bool = True) -> None:
    """Export with a dynamic batch axis and named input/output, then simplify with
    onnxruntime's ``quant_pre_process`` (shape inference, constant folding, BN folding).
    ``simplify=False`` keeps the exporter's graph: onnxruntime's CPU optimiser would turn an FP16
    graph back into FP32 (it casts around ops that have no FP16 CPU kernel)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    example = (torch.zeros(2, spec.channels, spec.height, spec.width),)
    raw = path.with_name(path.stem + ".raw.onnx")
    # onnxscript logs a failed opset conversion as a warning with a traceback and goes on
    # with the old opset: silenced here, reported as one error by the check below.
    converter_log = logging.getLogger("onnxscript.version_converter")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)
    try:
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
                                  dynamic_axes={INPUT_NAME: {0: "batch"},
                                                OUTPUT_NAME: {0: "batch"}})
    finally:
        converter_log.setLevel(level)
    try:
        if simplify:
            quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
        else:
            os.replace(raw, path)
    finally:
        raw.unlink(missing_ok=True)
    got = graph_opset(path)
    if got != opset:  # the exporter falls back silently when it cannot convert
        raise FerEdgeError(f"--opset {opset}: the ONNX exporter wrote opset {got} instead; "
                           f"choose an opset it supports (e.g. {got})")


def check_opset(opset: int) -> None:
    """Refuse an opset newer than the installed onnx knows, before any export work."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise FerEdgeError(f"--opset {opset}: the installed onnx supports opsets up to {newest}")


def graph_opset(path: Path) -> int:
    """The default-domain opset an ONNX file declares (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def count_macs(path: Path) -> int:
    """Multiply-accumulates of one image through the graph's Conv, Gemm and MatMul nodes
    (shapes from ONNX shape inference with the batch fixed to 1)."""
    import onnx

    model = onnx.load(str(path))
    for t in (*model.graph.input, *model.graph.output):
        dims = t.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or not all(out):
            continue
        if node.op_type == "Conv":
            w = inits.get(node.input[1]) or shapes.get(node.input[1])
            if w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or inits.get(node.input[0])
            if a:
                macs += int(np.prod(out)) * int(a[-1])
    return macs


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
