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

from ..bundle import Bundle
from ..data import Split
from ..errors import FerEdgeError
from ..metrics import classification_report
from . import ort_providers

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
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise FerEdgeError(f"{path}: expected a model with one input and an output, got "
                               f"{len(inputs)} input(s) and {len(outputs)} output(s)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        # As the graph declares it; a symbolic dimension (the batch) is None.
        self.input_shape = _dims(inputs[0].shape)
        self.name = ort_providers.backend_name(wanted, self.session.get_providers())
        self.path = path

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def _dims(shape) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def check_fits(bundle: Bundle, precision: str, backend: Backend) -> None:
    """Refuse a model that does not fit its bundle.json: the input shape (channels, height,
    width; the batch may be anything) and the number of scores out against the labels.
    Checks the declared graph shapes where the backend has them, then runs one blank face
    through it, so no mismatch ends in an IndexError, a zip() error or a silently wrong
    label later."""
    path, meta = bundle.model_path(precision), bundle.path / "bundle.json"
    spec = bundle.input
    want = (spec.channels, spec.height, spec.width)
    said = f"{meta} says {want[0]}x{want[1]}x{want[2]} (channels x height x width)"
    declared = getattr(backend, "input_shape", None)
    if declared is not None:
        if len(declared) != 4:
            raise FerEdgeError(f"{path}: takes a {len(declared)}-D input, not [batch, "
                               f"channels, height, width]; {said}")
        if any(d is not None and d != w for d, w in zip(declared[1:], want, strict=True)):
            got = "x".join("?" if d is None else str(d) for d in declared[1:])
            raise FerEdgeError(f"{path}: takes input {got} but {said}")
    try:
        y = np.asarray(backend(np.zeros((1, *want), np.float32)))
    except Exception as e:  # the runtime's own error types
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise FerEdgeError(f"{path}: does not run on the input {said} ({first})") from None
    n = len(bundle.labels)
    if y.ndim != 2 or y.shape != (1, n):
        got = f"{y.shape[1]} scores per face" if y.ndim == 2 else f"shape {list(y.shape)}"
        raise FerEdgeError(f"{path}: outputs {got} but {meta} lists {n} labels "
                           f"({', '.join(bundle.labels)})")


def open_backend(bundle: Bundle, precision: str = "int8", backend: str = "ort",
                 threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True) -> Backend:
    """The classifier for ``precision`` of ``bundle`` on ``backend`` (ort | tensorrt),
    checked against the bundle's labels and input (:func:`check_fits`): every reader of a
    bundle (fer-edge, fer-bench, the Pipeline API, the exporter's own check) opens it here."""
    if backend == "ort":
        if precision.startswith("trt"):
            raise FerEdgeError(f"precision {precision!r} is a TensorRT engine: use "
                               "--backend tensorrt")
        key = ort_providers.model_key(bundle.models, precision, providers)
        chw = (bundle.input.channels, bundle.input.height, bundle.input.width)
        classifier: Backend = OrtBackend(bundle.model_path(key), threads, providers, spin,
                                         input_chw=chw)
    elif backend == "tensorrt":
        from .tensorrt.runtime import TensorRTBackend

        key = precision if precision.startswith("trt") else f"trt_{precision}"
        classifier = TensorRTBackend(bundle.model_path(key), record=bundle.models[key])
    else:
        raise FerEdgeError(f"unknown backend {backend!r}; choose ort or tensorrt")
    check_fits(bundle, key, classifier)
    return classifier


def predict_logits(backend: Backend, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``x`` [N, C, H, W] through ``backend`` in batches."""
    outs = [backend(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def evaluate(backend: Backend, split: Split, x: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class report and confusion of ``backend`` on ``split``, whose
    images ``x`` are already preprocessed for it (the exporter's gate and fer-bench)."""
    logits = predict_logits(backend, x)
    return classification_report(split.labels, logits.argmax(1), split.label_names)
