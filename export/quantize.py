"""INT8 post-training quantisation with ``onnxruntime.quantization.quantize_static``.

QDQ format, per-channel S8S8 weights and activations, calibrated on real training faces that
went through the shared preprocessing function. Our options become onnxruntime's arguments in
exactly one place, :func:`quantize_int8`.

The default scheme is the one TensorRT's explicit quantisation accepts (onnxruntime runs it
too): symmetric activations (every Q/DQ zero-point 0; onnxruntime's default is asymmetric,
which also folds the Relus into the zero-points), biases left in FP32 (TensorRT's
DequantizeLinear takes INT8, not the INT32 biases onnxruntime writes by default), weights
per-channel on the output-channel axis 0 in [-127, 127]. ``symmetric=False`` gives
onnxruntime's default scheme, faster on onnxruntime-CPU (the bundle's ``int8_cpu`` model).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from fer_edge.edge.data import Split
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.preprocess import InputSpec, preprocess

log = logging.getLogger(__name__)

CALIB_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}
# The ops worth running in INT8. The flip-averaging tail (Softmax, ReduceMean, Log) and any
# other op stays FP32: it is tiny, and quantising probabilities costs accuracy.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "Add", "Mul", "Relu", "Clip", "Concat", "Flatten", "Reshape", "Transpose",
                 "Slice", "Resize"]
# --int8-ops: what runs in INT8. "all" suits plain CNNs (onnxruntime fuses Conv-Relu-MaxPool
# chains); in depthwise/SiLU/SE networks every quantised Mul/Add of SiLU and SE costs a
# DequantizeLinear/QuantizeLinear pair and onnxruntime-CPU's INT8 depthwise conv is slow, so
# "conv" (convolutions and matrix products only) and "conv-dense" (no depthwise conv either)
# trade INT8 coverage for speed (docs/quantization.md has the measurements).
INT8_OPS = {"all": QUANTIZED_OPS, "conv": ["Conv", "Gemm", "MatMul"],
            "conv-dense": ["Conv", "Gemm", "MatMul"]}


def depthwise_convs(model_path: Path) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes: left in FP32 by ``--int8-ops conv-dense``."""
    import onnx

    return [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def equal_batch(n: int, most: int = 32) -> int:
    """The largest batch size <= ``most`` that divides ``n``: onnxruntime's histogram
    calibrators (entropy, percentile) stack every batch's outputs into one array, so a short
    last batch makes them fail ("inhomogeneous shape")."""
    return max(b for b in range(1, max(1, min(most, n)) + 1) if n % b == 0)


class FaceCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed faces to the calibrator in equal batches of at most ``batch``, so
    every sample size works with every calibration method (see :func:`equal_batch`)."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32):
        self.x, self.input_name, self.batch = x, input_name, equal_batch(len(x), batch)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.x):
            return None
        chunk = self.x[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {self.input_name: chunk}

    def rewind(self) -> None:
        self.pos = 0


def calibration_faces(split: Split, n: int, spec: InputSpec, seed: int = 0) -> np.ndarray:
    """A class-stratified, seed-fixed sample of ``n`` faces, preprocessed."""
    return preprocess(split.stratified(n, seed).images[:n], spec)


def quantize_int8(fp32: Path, out: Path, calib: np.ndarray, method: str = "percentile",
                  input_name: str = "input", percentile: float = 99.999,
                  symmetric: bool = True, per_channel: bool = True,
                  nodes_to_exclude: list[str] | None = None,
                  ops: str | list[str] = "all") -> dict:
    """Write the QDQ INT8 model; returns the calibration record for bundle.json.
    ``symmetric=False`` is onnxruntime's default scheme (asymmetric activations, INT32
    biases, Relus folded into zero-points): faster on onnxruntime-CPU, rejected by TensorRT.
    ``per_channel=False``: one weight scale per tensor. ``nodes_to_exclude``: nodes left in
    FP32 (what the sensitivity pass chose, export/sensitivity.py). ``ops``: a key of
    :data:`INT8_OPS`, which operators run in INT8, or the list of operator types."""
    if method not in CALIB_METHODS:
        raise FerEdgeError(f"unknown calibration method {method!r}; choose "
                           f"{', '.join(CALIB_METHODS)}")
    if isinstance(ops, str) and ops not in INT8_OPS:
        raise FerEdgeError(f"unknown --int8-ops {ops!r}; choose {', '.join(INT8_OPS)}")
    op_types = INT8_OPS[ops] if isinstance(ops, str) else list(ops)
    dense = depthwise_convs(fp32) if ops == "conv-dense" else []
    # ActivationSymmetric: zero-points 0 (TensorRT is symmetric-only) and the Relus kept.
    # QuantizeBias=False: FP32 biases (no DequantizeLinear fed by INT32).
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True,
             "QuantizeBias": not symmetric}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    try:
        quantize_static(
            str(fp32), str(out), FaceCalibrationReader(calib, input_name),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            nodes_to_exclude=[*dense, *(nodes_to_exclude or [])],
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CALIB_METHODS[method], op_types_to_quantize=op_types,
            extra_options=extra,
        )
    except Exception as e:
        out.unlink(missing_ok=True)
        raise FerEdgeError(f"{fp32}: INT8 quantisation ({method} calibration, {len(calib)} "
                           f"faces) failed: {e}") from None
    record = {"method": method, "images": int(len(calib)), "format": "QDQ",
              "per_channel": per_channel, "activations": "S8", "weights": "S8",
              "symmetric": symmetric, "bias": "fp32" if symmetric else "int32",
              "ops": ops, "fp32_nodes": list(nodes_to_exclude or [])}
    if dense:
        record["fp32_depthwise"] = len(dense)
    if method == "percentile":
        record["percentile"] = percentile
    return record
