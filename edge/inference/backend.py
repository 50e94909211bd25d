"""Classifier backends behind one small interface: ``logits = backend(batch)``.

:class:`OrtBackend` runs an ONNX model with onnxruntime (CPU; CUDA and TensorRT execution
providers when the installed onnxruntime has them, configured by :mod:`.ort_providers`).
:class:`TensorRTBackend` runs a serialized TensorRT engine (optional: TensorRT >= 10 and
cuda-bindings or pycuda).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from ..bundle import Bundle, sha256_file
from ..data import Split
from ..errors import FerEdgeError
from ..metrics import classification_report
from . import ort_providers
from .tensorrt.runtime import first_line

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


class OrtBackend:
    """An onnxruntime session; ``threads`` sets intra-op threads (None: onnxruntime's default).
    ``spin=False`` stops idle pool threads busy-waiting: needed when several sessions share
    the cores (a benchmark interleaving models), where spinning pools starve each other.

    With a GPU provider asked for, onnxruntime's fallbacks are off (an EP failure is an error,
    never a silent switch to CPU with a print to stdout), ``--providers`` without cpu also
    forbids CPU nodes (``session.disable_cpu_ep_fallback``), and one profiled run counts the
    nodes each provider takes (``placement``; ``count_nodes`` forces it on or off)."""

    def __init__(self, model: str | os.PathLike, threads: int | None = None,
                 providers: list[str] | None = None, spin: bool = True,
                 input_chw: tuple[int, int, int] | None = None,
                 max_batch: int = ort_providers.DEFAULT_MAX_BATCH, sha256: str | None = None,
                 count_nodes: bool | None = None):
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
        gpu = [p for p in wanted if p in (ort_providers.TRT_EP, ort_providers.CUDA_EP)]
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if gpu and ort_providers.CPU_EP not in wanted:
            # GPU only, as asked: a node the GPU providers cannot take fails the start
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The TensorRT provider's profile is for 1..max_batch faces: larger batches are
        # chunked here, since onnxruntime fails (and used to fall back to CPU) beyond it.
        self.max_batch = max_batch if ort_providers.TRT_EP in wanted else None
        count_nodes = bool(gpu) if count_nodes is None else count_nodes
        if count_nodes:
            so.enable_profiling = True  # one run, to count the nodes each provider takes
            so.profile_file_prefix = str(ort_providers.profile_prefix())
        try:
            opts = ort_providers.with_options(
                wanted, path, input_chw, _input_name(ort, path) if self.max_batch else "input",
                max_batch=max_batch,  # the TensorRT engine cache's key: the weights
                sha256=sha256 or (sha256_file(path) if self.max_batch else ""))
            with contextlib.redirect_stdout(sys.stderr):  # onnxruntime print()s EP errors
                self.session = ort.InferenceSession(str(path), so, providers=opts,
                                                    enable_fallback=0 if gpu else 1)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            hint = (f"; {' and '.join(gpu)} cannot run it as asked (try --providers "
                    f"{','.join(p.split('Exec')[0].lower() for p in gpu)},cpu or cuda)"
                    if gpu else "")
            raise FerEdgeError(f"{path}: onnxruntime cannot load it "
                               f"({first_line(e)}){hint}") from None
        if gpu:
            self.session.disable_fallback()  # an EP failure in run() raises, never re-routes
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise FerEdgeError(f"{path}: expected a model with one input and an output, got "
                               f"{len(inputs)} input(s) and {len(outputs)} output(s)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        # As the graph declares it; a symbolic dimension (the batch) is None.
        self.input_shape = _dims(inputs[0].shape)
        self.name = ort_providers.backend_name(wanted, self.session.get_providers())
        self.path = path
        self.placement: dict[str, int] = {}
        if count_nodes:
            self.placement = self._placement(input_chw)

    def _placement(self, input_chw: tuple[int, int, int] | None) -> dict[str, int]:
        """One profiled run: the nodes each provider ran (logged; a warning when any ran
        outside the first provider asked for)."""
        import numpy as np

        shape = [1, *(input_chw or [d or 1 for d in (self.input_shape or (1,))[1:]])]
        try:
            self.session.run(None, {self.input_name: np.zeros(shape, np.float32)})
        except Exception as e:
            raise FerEdgeError(f"{self.path}: onnxruntime cannot run it ({first_line(e)})") \
                from None
        profile = Path(self.session.end_profiling())
        try:
            placement = ort_providers.node_placement(profile)
        finally:
            profile.unlink(missing_ok=True)
        log.info("%s: nodes per execution provider: %s", self.path.name, placement)
        first = self.session.get_providers()[0]
        others = {p: n for p, n in placement.items() if p != first}
        if others:
            log.warning("%s: %s ran %d node(s); %s", self.path.name, first,
                        placement.get(first, 0),
                        ", ".join(f"{p} {n}" for p, n in sorted(others.items())))
        return placement

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch
        if not step or len(batch) <= step:
            return self._run(batch)
        return np.concatenate([self._run(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as e:
            if type(e).__name__ != "EPFail":
                raise
            raise FerEdgeError(f"{self.path}: {self.name} failed on a batch of {len(batch)} "
                               f"({first_line(e)})") from None


def _input_name(ort, path: Path) -> str:
    """The model's real input name, read before the TensorRT provider's options (its profile
    names the input) are built: a CPU session without graph optimisation."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        inputs = ort.InferenceSession(str(path), so, providers=[ort_providers.CPU_EP]).get_inputs()
    except Exception as e:
        raise FerEdgeError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from None
    return inputs[0].name if inputs else "input"


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
                 spin: bool = True, max_batch: int | None = None) -> Backend:
    """The classifier for ``precision`` of ``bundle`` on ``backend`` (ort | tensorrt),
    checked against the bundle's labels and input (:func:`check_fits`): every reader of a
    bundle (fer-edge, fer-bench, the Pipeline API, the exporter's own check) opens it here.
    ``max_batch``: the most faces one call carries (max faces x streams sharing it); it sizes
    onnxruntime's TensorRT profile (default 8)."""
    if backend == "ort":
        if precision.startswith("trt"):
            raise FerEdgeError(f"precision {precision!r} is a TensorRT engine: use "
                               "--backend tensorrt")
        key = ort_providers.model_key(bundle.models, precision, providers)
        chw = (bundle.input.channels, bundle.input.height, bundle.input.width)
        classifier: Backend = OrtBackend(
            bundle.model_path(key), threads, providers, spin, input_chw=chw,
            max_batch=max_batch or ort_providers.DEFAULT_MAX_BATCH,
            sha256=bundle.models[key].get("sha256"))
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
