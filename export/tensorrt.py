"""Build serialized TensorRT engines from the bundle's ONNX models (TensorRT 10 Python API).

FP16 from the FP32 ONNX; INT8 from the QDQ ONNX by explicit quantisation (TensorRT 10
deprecated the implicit-calibration path). One optimisation profile covers the batch range,
and a timing cache next to the engines makes rebuilds fast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.preprocess import InputSpec
from fer_edge.edge.trt_backend import tensorrt_unavailable_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    file: str
    precision: str
    tensorrt: str
    gpu: str
    batch: tuple[int, int, int]


def gpu_name() -> str:
    import pycuda.driver as cuda

    cuda.init()
    return cuda.Device(0).name()


def build_engine(onnx_path: Path, engine_path: Path, precision: str, spec: InputSpec,
                 batch: tuple[int, int, int] = (1, 8, 32), workspace_gb: float = 1.0,
                 timing_cache: Path | None = None) -> EngineInfo:
    """Parse ``onnx_path`` and write a serialized engine to ``engine_path`` (atomically)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise FerEdgeError(f"--trt: cannot build a TensorRT engine here: {reason}")
    import tensorrt as trt

    from fer_edge.edge.fileio import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FerEdgeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        # The Q/DQ nodes carry the scales; FP16 lets layers left unquantised run fast too.
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        raise FerEdgeError(f"unknown TensorRT precision {precision!r}; choose fp16 or int8")
    inp = network.get_input(0)
    shape = lambda n: (n, spec.channels, spec.height, spec.width)  # noqa: E731
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, shape(batch[0]), shape(batch[1]), shape(batch[2]))
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info("building TensorRT %s engine from %s (batch %s)...", precision, onnx_path.name,
             batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FerEdgeError(f"{onnx_path}: TensorRT failed to build a {precision} engine")
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return EngineInfo(engine_path.name, precision, trt.__version__, gpu_name(), batch)
