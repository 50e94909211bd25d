"""onnxruntime's GPU execution providers with real options, and what actually runs.

The TensorRT provider gets the bundle's precision (``trt_fp16_enable``/``trt_int8_enable`` for
the fp16 and int8 models), an optimisation profile for 1..``max_batch`` faces (so a changing
face count never rebuilds an engine mid-stream), and its engine and timing caches in a cache
folder next to the model (built once, reused at every start); the CUDA provider comes after it
and the CPU provider last. onnxruntime silently falls back to the next provider when one fails
to start: :func:`backend_name` compares what was asked with ``session.get_providers()`` and
names (and logs) what actually runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TRT_EP, CUDA_EP, CPU_EP = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                           "CPUExecutionProvider")
DEFAULT_MAX_BATCH = 8


def cache_dir(model: Path) -> Path:
    """``<bundle>/cache/ort-tensorrt`` when the bundle folder is writable, else a per-model
    folder under the user's cache (``$XDG_CACHE_HOME``/~/.cache/fer-edge)."""
    here = model.parent / "cache" / "ort-tensorrt"
    if os.access(model.parent, os.W_OK):
        return here
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(str(model.resolve()).encode()).hexdigest()[:12]
    return base / "fer-edge" / f"ort-tensorrt-{tag}"


def model_precision(model: Path) -> str:
    """fp16 / int8 / fp32 from the bundle's file names (model.fp16.onnx, model.int8*.onnx)."""
    name = model.name
    return "fp16" if ".fp16." in name else "int8" if ".int8" in name else "fp32"


def tensorrt_options(model: Path, input_chw: tuple[int, int, int] | None,
                     input_name: str = "input", max_batch: int = DEFAULT_MAX_BATCH) -> dict:
    precision = model_precision(model)
    cache = cache_dir(model)
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
                 input_name: str = "input", max_batch: int = DEFAULT_MAX_BATCH) -> list:
    """onnxruntime's ``providers=`` argument: (name, options) for the GPU providers, in
    order, with CPU last so anything the GPU cannot run still runs."""
    out: list = []
    for p in providers:
        if p == TRT_EP:
            out.append((p, tensorrt_options(model, input_chw, input_name, max_batch)))
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


def model_key(models: dict, precision: str, providers: list[str] | None) -> str:
    """The bundle model to run: ``int8`` on CPU-only onnxruntime means the asymmetric
    ``int8_cpu`` model when the bundle has one (faster there; GPU providers take the
    symmetric ``int8``)."""
    cpu_only = all(p in ("cpu", CPU_EP) for p in (providers or ["cpu"]))
    return "int8_cpu" if precision == "int8" and cpu_only and "int8_cpu" in models \
        else precision
