"""Classifier backends behind one small interface: ``logits = backend(batch)``.

:class:`OrtBackend` runs an ONNX model with onnxruntime (CPU; CUDA and TensorRT execution
providers when the installed onnxruntime has them, configured by :mod:`.ort_providers`).
:class:`TensorRTBackend` runs a serialized TensorRT engine (optional: TensorRT >= 10 and
cuda-bindings or pycuda).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from . import ort_providers
from .bundle import Bundle
from .data import Split
from .errors import FerEdgeError
from .metrics import classification_report

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


class OrtBackend:
    """An onnxruntime session; ``threads`` sets intra-op threads (None: onnxruntime's default).
    ``spin=False`` stops idle pool threads busy-waiting: needed when several sessions share
    the cores (a benchmark interleaving models), where spinning pools starve each other."""

    def __init__(self, model: str | os.PathLike, threads: int | None = None,
                 providers: list[str] | None = None, spin: bool = True,
                 input_chw: tuple[int, int, int] | None = None,
                 max_batch: int = ort_providers.DEFAULT_MAX_BATCH):
        import onnxruntime as ort

        path = Path(model)
        if not path.is_file():
            raise FerEdgeError(f"{path}: ONNX model not found")
        avail = ort.get_available_providers()
        wanted = [ORT_PROVIDERS.get(p, p) for p in (providers or ["cpu"])]
        bad = [p for p in wanted if p not in avail]
        if bad:
            raise FerEdgeError(f"execution provider(s) {', '.join(bad)} not available in this "
                               f"onnxruntime; available: {', '.join(avail)}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=ort_providers.with_options(
                wanted, path, input_chw, max_batch=max_batch))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise FerEdgeError(f"{path}: onnxruntime cannot load it ({str(e)[:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.name = ort_providers.backend_name(wanted, self.session.get_providers())
        self.path = path

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def open_backend(bundle: Bundle, precision: str = "int8", backend: str = "ort",
                 threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True) -> Backend:
    """The classifier for ``precision`` of ``bundle`` on ``backend`` (ort | tensorrt)."""
    if backend == "ort":
        if precision.startswith("trt"):
            raise FerEdgeError(f"precision {precision!r} is a TensorRT engine: use "
                               "--backend tensorrt")
        precision = ort_providers.model_key(bundle.models, precision, providers)
        chw = (bundle.input.channels, bundle.input.height, bundle.input.width)
        return OrtBackend(bundle.model_path(precision), threads, providers, spin, input_chw=chw)
    if backend == "tensorrt":
        from .trt_backend import TensorRTBackend

        key = precision if precision.startswith("trt") else f"trt_{precision}"
        return TensorRTBackend(bundle.model_path(key), record=bundle.models[key])
    raise FerEdgeError(f"unknown backend {backend!r}; choose ort or tensorrt")


def predict_logits(backend: Backend, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``x`` [N, C, H, W] through ``backend`` in batches."""
    outs = [backend(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def evaluate(backend: Backend, split: Split, x: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class report and confusion of ``backend`` on ``split``, whose
    images ``x`` are already preprocessed for it (the exporter's gate and fer-bench)."""
    logits = predict_logits(backend, x)
    return classification_report(split.labels, logits.argmax(1), split.label_names)
