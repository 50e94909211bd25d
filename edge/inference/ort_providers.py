"""onnxruntime's GPU execution providers with real options, and what actually runs.

The TensorRT provider gets the bundle's precision (``trt_fp16_enable``/``trt_int8_enable`` for
the fp16 and int8 models), an optimisation profile for 1..``max_batch`` faces on the model's
real input name (``max_batch`` = max faces x the streams sharing the classifier; the backend
chunks anything larger, since onnxruntime does not widen an explicit profile), and its engine
and timing caches in a folder keyed by the model's sha256 and the TensorRT version
(onnxruntime's own engine key ignores the weights, so new weights under the same names would
reuse an old engine); the CUDA provider comes after it and the CPU provider last.
:func:`backend_name` compares what was asked with ``session.get_providers()`` and names (and
logs) what actually runs; :func:`node_placement` counts the nodes each provider ran.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections import Counter
from pathlib import Path

from ..inputs.files import user_cache_dir

log = logging.getLogger(__name__)

TRT_EP, CUDA_EP, CPU_EP = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                           "CPUExecutionProvider")
DEFAULT_MAX_BATCH = 8


def tensorrt_library_version() -> str:
    """The TensorRT onnxruntime's provider will load: the Python module's version, else
    libnvinfer's own ``getInferLibVersion()`` (e.g. 100300), else "unknown"."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except (ImportError, AttributeError):
        pass
    for soname in ("libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so"):
        try:
            return str(ctypes.CDLL(soname).getInferLibVersion())
        except (OSError, AttributeError):
            continue
    return "unknown"


def cache_dir(model: Path, sha256: str, trt_version: str | None = None) -> Path:
    """``<bundle>/cache/ort-tensorrt/<sha256[:16]>-trt<version>`` when the bundle folder is
    writable, else the same under the user's cache (``$XDG_CACHE_HOME``/~/.cache/fer-edge)."""
    key = f"{sha256[:16]}-trt{trt_version or tensorrt_library_version()}"
    if os.access(model.parent, os.W_OK):
        return model.parent / "cache" / "ort-tensorrt" / key
    return user_cache_dir("ort-tensorrt", key)


def profile_prefix() -> Path:
    """Where the one profiled run's JSON goes (removed once read)."""
    folder = user_cache_dir("ort-profiles")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"placement-{os.getpid()}"


def model_precision(model: Path) -> str:
    """fp16 / int8 / fp32 from the bundle's file names (model.fp16.onnx, model.int8*.onnx)."""
    name = model.name
    return "fp16" if ".fp16." in name else "int8" if ".int8" in name else "fp32"


def tensorrt_options(model: Path, input_chw: tuple[int, int, int] | None,
                     input_name: str, sha256: str, max_batch: int = DEFAULT_MAX_BATCH) -> dict:
    precision = model_precision(model)
    cache = cache_dir(model, sha256)
    cache.mkdir(parents=True, exist_ok=True)
    opts = {"trt_fp16_enable": precision in ("fp16", "int8"),
            "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    if input_chw is not None:
        dims = "x".join(str(d) for d in input_chw)
        opt = min(max_batch, DEFAULT_MAX_BATCH)
        opts |= {"trt_profile_min_shapes": f"{input_name}:1x{dims}",
                 "trt_profile_opt_shapes": f"{input_name}:{opt}x{dims}",
                 "trt_profile_max_shapes": f"{input_name}:{max_batch}x{dims}"}
    return opts


def with_options(providers: list[str], model: Path, input_chw: tuple[int, int, int] | None,
                 input_name: str = "input", max_batch: int = DEFAULT_MAX_BATCH,
                 sha256: str = "") -> list:
    """onnxruntime's ``providers=`` argument: (name, options) for the GPU providers, in
    order, with CPU last so anything the GPU cannot run still runs."""
    out: list = []
    for p in providers:
        if p == TRT_EP:
            out.append((p, tensorrt_options(model, input_chw, input_name, sha256, max_batch)))
        elif p == CUDA_EP:
            out.append((p, {"device_id": 0}))
        else:
            out.append(p)
    if out and CPU_EP not in providers and any(p in (TRT_EP, CUDA_EP) for p in providers):
        out.append(CPU_EP)
    return out


def backend_name(requested: list[str], active: list[str]) -> str:
    """``ort:<provider that runs>``; a fallback (the first provider asked for is not active)
    is logged and shown in the name."""
    name = f"ort:{active[0] if active else CPU_EP}"
    if requested and active and requested[0] != active[0]:
        log.warning("onnxruntime could not start %s and fell back to %s", requested[0],
                    active[0])
        name += f" (fallback from {requested[0]})"
    return name


def node_placement(profile_json: str | os.PathLike) -> dict[str, int]:
    """From an onnxruntime profile (``SessionOptions.enable_profiling``): how many graph nodes
    each execution provider ran (a TensorRT-fused subgraph counts as one node)."""
    events = json.loads(Path(profile_json).read_text())
    seen = {(e["name"], e["args"]["provider"]) for e in events
            if e.get("cat") == "Node" and "provider" in e.get("args", {})}
    return dict(Counter(provider for _, provider in seen))


def model_key(models: dict, precision: str, providers: list[str] | None) -> str:
    """The bundle model to run: ``int8`` on CPU-only onnxruntime means the asymmetric
    ``int8_cpu`` model when the bundle has one (faster there; GPU providers take the
    symmetric ``int8``)."""
    cpu_only = all(p in ("cpu", CPU_EP) for p in (providers or ["cpu"]))
    return "int8_cpu" if precision == "int8" and cpu_only and "int8_cpu" in models \
        else precision
