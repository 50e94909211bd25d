"""Native TensorRT engines (TensorRT 10.x and 11.x Python API) on a :mod:`.cuda_layer`.

Optional: TensorRT's Python bindings (JetPack's ``python3-libnvinfer`` on a Jetson, the
``[tensorrt-cu12]``/``[tensorrt-cu13]`` extra on an x86 GPU host) and a CUDA layer
(:mod:`.cuda`). Engines are built on the device that runs them (``fer-edge build-engine``,
:mod:`.build`); the
bundle records the TensorRT version and GPU each was built for, checked before deserialising.

The runtime allocates its device and pinned host buffers once, for the profile's maximum
batch; pads a batch below the profile minimum and chunks one above the maximum; holds a lock
around the execution context (one Pipeline can be shared by threads); and treats every False
returned by TensorRT as an error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ...errors import FerEdgeError
from .cuda import CudaLayer, open_cuda

if TYPE_CHECKING:  # the tensorrt-stubs package; the real module is imported where used
    import tensorrt

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_TENSORRT = (10, 0)
TOO_OLD = ("TensorRT {v} is too old: fer-edge needs TensorRT >= 10 (JetPack >= 6.1 on a "
           "Jetson; JetPack 5.x and 6.0 ship TensorRT 8.x and cannot run fer-edge engines)")


def tensorrt_version(trt: ModuleType) -> tuple[int, ...]:
    parts = []
    for p in str(trt.__version__).split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, >= 10; FerEdgeError saying what to install otherwise."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    # only type stubs (tensorrt-stubs installs a bare tensorrt/ folder) import as an empty
    # namespace package
    if trt is None or not hasattr(trt, "__version__"):
        raise FerEdgeError("the tensorrt Python package is not importable: on a Jetson use "
                           "JetPack's (python3-libnvinfer, in a venv made with "
                           "--system-site-packages); on an x86 GPU host pip install "
                           "'fer-edge[tensorrt-cu12]' (driver r525+) or "
                           "'fer-edge[tensorrt-cu13]' (driver r580+)") from None
    if tensorrt_version(trt)[:2] < MIN_TENSORRT:
        raise FerEdgeError(TOO_OLD.format(v=trt.__version__))
    return trt


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (TensorRT's can run to many), or its type."""
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def create_with_logger(factory: Callable[[tensorrt.ILogger], T], logger: tensorrt.ILogger,
                       what: str) -> T:
    """``trt.Builder(logger)`` / ``trt.Runtime(logger)``: they never return None; when the
    native factory fails (no usable GPU, a driver too old for this TensorRT's CUDA) pybind11
    raises ``TypeError: ... factory function returned nullptr``."""
    try:
        obj = factory(logger)
    except (TypeError, RuntimeError) as e:
        raise FerEdgeError(f"TensorRT could not create a {what} ({first_line(e)}): no usable "
                           "GPU, or a driver too old for this TensorRT's CUDA (TensorRT for "
                           "CUDA 13 needs driver r580+; use the tensorrt-cu12 extra with an "
                           "older driver)") from None
    if obj is None:  # not the real bindings' behaviour; kept for any wrapper that does it
        raise FerEdgeError(f"TensorRT could not create a {what}")
    return obj


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT >= 10, a CUDA Python layer and a CUDA device are all usable."""
    try:
        import_tensorrt()
        open_cuda()
    except FerEdgeError as e:
        return str(e)
    return None


def engine_mismatch(record: dict, trt_version: str, gpu: str, cc: str) -> str | None:
    """Why an engine recorded as ``record`` (bundle.json) cannot run here, or None. TensorRT
    engines are specific to the TensorRT version and the GPU (compute capability)."""
    built = record.get("tensorrt")
    if built is None or record.get("compute_capability") is None:
        return "bundle.json does not record the TensorRT version and GPU it was built for"
    if str(built).split(".")[:3] != str(trt_version).split(".")[:3]:
        return f"built with TensorRT {built}, this machine has TensorRT {trt_version}"
    if str(record["compute_capability"]) != cc:
        return (f"built for {record.get('gpu')} (compute capability "
                f"{record['compute_capability']}), this machine has {gpu} ({cc})")
    if record.get("gpu") and record["gpu"] != gpu:
        log.warning("engine built on %s, running on %s (same compute capability %s)",
                    record["gpu"], gpu, cc)
    return None


def _check(ok: object, what: str) -> None:
    if ok is False or ok is None:
        raise FerEdgeError(f"TensorRT {what} failed")


class TensorRTBackend:
    """A deserialized engine with one FP32 input and one FP32 output; any batch size.

    ``record`` is the engine's bundle.json entry (checked against this machine's TensorRT and
    GPU first); ``cuda`` the CUDA layer (default: :func:`open_cuda`)."""

    def __init__(self, engine_path: str | os.PathLike, record: dict | None = None,
                 cuda: CudaLayer | None = None):
        import_tensorrt()
        import tensorrt as trt  # typed by the tensorrt-stubs package in CI

        self.cuda = cuda or open_cuda()
        path = Path(engine_path)
        gpu, cc = self.cuda.device()
        if record is not None:
            why = engine_mismatch(record, trt.__version__, gpu, cc)
            if why:
                precision = record.get("precision") or "fp16|int8"
                raise FerEdgeError(f"{path}: {why}; rebuild it here with: fer-edge "
                                   f"build-engine {path.parent} --precision {precision} "
                                   "--force")
        if not path.is_file():
            raise FerEdgeError(f"{path}: TensorRT engine not found")
        self._lock = threading.Lock()
        with self.cuda.scope():
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = create_with_logger(trt.Runtime, self.logger, "runtime")
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise FerEdgeError(f"{path}: TensorRT could not deserialize the engine (corrupt,"
                                   " or built by another TensorRT version or for another GPU)")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise FerEdgeError(f"{path}: TensorRT could not create an execution context "
                                   "(out of GPU memory?)")
            self._bind(path)

    def _bind(self, path: Path) -> None:
        import tensorrt as trt

        e = self.engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        ins = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise FerEdgeError(f"{path}: expected one input and one output, got {ins} / {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        for n in (self.input_name, self.output_name):
            if trt.nptype(e.get_tensor_dtype(n)) != np.float32:
                raise FerEdgeError(f"{path}: tensor {n!r} is not FP32 (fer-edge engines keep "
                                   "FP32 input and output)")
        lo, _, hi = e.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.item_shape = tuple(int(hi[i]) for i in range(1, len(hi)))
        out_shape = tuple(int(d) for d in e.get_tensor_shape(self.output_name))
        if len(out_shape) != 2 or out_shape[1] < 1:
            raise FerEdgeError(f"{path}: output shape {out_shape} is not [batch, classes]")
        self.classes = out_shape[1]
        in_bytes = self.max_batch * int(np.prod(self.item_shape)) * 4
        out_bytes = self.max_batch * self.classes * 4
        # Allocated once, for the profile maximum: the hot loop never allocates.
        self.d_in, self.d_out = self.cuda.malloc(in_bytes), self.cuda.malloc(out_bytes)
        self.h_in = self.cuda.host_empty(in_bytes).view(np.float32).reshape(
            (self.max_batch, *self.item_shape))
        self.h_out = self.cuda.host_empty(out_bytes).view(np.float32).reshape(
            (self.max_batch, self.classes))
        self.stream = self.cuda.stream()
        _check(self.context.set_tensor_address(self.input_name, self.d_in),
               f"set_tensor_address({self.input_name!r})")
        _check(self.context.set_tensor_address(self.output_name, self.d_out),
               f"set_tensor_address({self.output_name!r})")
        self.name = f"tensorrt ({self.cuda.name})"
        self._shape: tuple[int, ...] | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.item_shape:
            want = ", ".join(map(str, self.item_shape))
            raise FerEdgeError(f"TensorRT engine expects [N, {want}] faces, got {list(x.shape)}")
        out = np.empty((len(x), self.classes), np.float32)
        with self._lock, self.cuda.scope():
            for i in range(0, len(x), self.max_batch):  # chunks within the profile
                n = min(self.max_batch, len(x) - i)
                out[i:i + n] = self._run(x[i:i + n])
        return out

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        rows = max(n, self.min_batch)  # padded up to the profile minimum
        self.h_in[:n] = chunk
        if rows > n:
            self.h_in[n:rows] = 0.0
        shape = (rows, *self.item_shape)
        if shape != self._shape:
            if not self.context.set_input_shape(self.input_name, shape):
                raise FerEdgeError(f"TensorRT rejected input shape {list(shape)} (profile "
                                   f"batch {self.min_batch}..{self.max_batch})")
            self._shape = shape
        self.cuda.htod(self.d_in, self.h_in[:rows], self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise FerEdgeError("TensorRT execute_async_v3 failed")
        self.cuda.dtoh(self.h_out[:rows], self.d_out, self.stream)
        self.cuda.sync(self.stream)
        return self.h_out[:n].copy()
