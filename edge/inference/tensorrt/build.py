"""Compile a bundle's ONNX model into a TensorRT engine on the device that will run it.

No torch, no onnx: TensorRT's bindings and a :mod:`.cuda` layer only, so it runs on a Jetson
(``fer-edge build-engine``) as well as on an x86 host (``fer-export --trt``).

One build path for TensorRT 10.x and 11.x: a strongly typed network
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11 has no other kind), whose
precision is the ONNX graph's own: FP16 engines come from ``model.fp16.onnx`` (FP16 body),
INT8 engines from the symmetric QDQ ``model.int8.onnx``. No ``BuilderFlag.FP16``/``INT8``
(removed in 11.x) is touched. Every builder, parser, profile and timing-cache result is
checked (the calls that raise rather than return a failure value, ``Builder()`` and
``set_shape``, are caught), and the built network must actually contain tensors of the
requested precision. The timing cache is named by TensorRT version and compute capability
(``tensorrt-10.3.0-sm87.timing``); one that cannot be read or is from another TensorRT/GPU is
replaced by a fresh one with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the tensorrt-stubs package; the real module is imported where used
    import tensorrt

from ...bundle import Bundle, write_bundle_json
from ...errors import FerEdgeError
from ...inputs.files import atomic_write_bytes
from .cuda import CudaLayer, open_cuda
from .runtime import create_with_logger, first_line, import_tensorrt, tensorrt_version

log = logging.getLogger(__name__)

# precision -> (the bundle model it is built from, the TensorRT data type it must contain)
SOURCES = {"fp16": ("fp16", "HALF"), "int8": ("int8", "INT8")}
DEFAULT_BATCH = (1, 8, 32)


@dataclass(frozen=True)
class EngineInfo:
    file: str
    precision: str
    tensorrt: str
    gpu: str
    compute_capability: str
    batch: tuple[int, int, int]

    def record(self, source: str, source_sha256: str) -> dict:
        return {"file": self.file, "source": source, "source_sha256": source_sha256,
                "precision": self.precision, "tensorrt": self.tensorrt, "gpu": self.gpu,
                "compute_capability": self.compute_capability,
                "batch": dict(zip(("min", "opt", "max"), self.batch, strict=True))}


def parse_batch(text: str) -> tuple[int, int, int]:
    """'min,opt,max' -> a checked triple (1 <= min <= opt <= max)."""
    try:
        batch = tuple(int(b) for b in text.split(","))
    except ValueError:
        batch = ()
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise FerEdgeError(f"--batch {text!r}: expected min,opt,max like 1,8,32 "
                           "(1 <= min <= opt <= max)")
    return batch  # type: ignore[return-value]


def _parse(network: tensorrt.INetworkDefinition, onnx_path: Path,
           logger: tensorrt.ILogger) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if parser is None:
        raise FerEdgeError("TensorRT could not create an ONNX parser")
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FerEdgeError(f"{onnx_path}: TensorRT cannot parse it: {errors or 'no detail'}")


def _network_has(network: tensorrt.INetworkDefinition, dtype_name: str) -> bool:
    import tensorrt as trt

    want = getattr(trt.DataType, dtype_name)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == want:
                return True
    return False


def timing_cache_name(trt_version: str, cc: str) -> str:
    """``tensorrt-<major.minor.patch>-sm<cc>.timing``: a timing cache is only valid for the
    TensorRT and the GPU that wrote it."""
    version = ".".join(str(trt_version).split(".")[:3])
    return f"tensorrt-{version}-sm{cc.replace('.', '')}.timing"


def _read_cache(config: tensorrt.IBuilderConfig,
                path: Path | None) -> tensorrt.ITimingCache | None:
    """The timing cache stored at ``path``, or None (with a warning) when there is none or it
    cannot be used: unreadable, foreign (TensorRT raises or returns None for a blob from
    another version) or refused by ``set_timing_cache`` (another GPU)."""
    if path is None or not path.is_file():
        return None
    try:
        blob = path.read_bytes()
        if not blob:
            return None
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        log.warning("%s: cannot use this timing cache (%s); starting a new one", path,
                    first_line(e))
        return None
    log.warning("%s: timing cache is from another TensorRT/GPU; starting a new one", path)
    return None


def _timing_cache(config: tensorrt.IBuilderConfig, path: Path | None) -> None:
    if _read_cache(config, path) is not None:
        return
    try:
        cache: tensorrt.ITimingCache | None = config.create_timing_cache(b"")
    except (RuntimeError, TypeError):
        cache = None
    if cache is None:
        raise FerEdgeError("TensorRT could not create a timing cache")
    if not config.set_timing_cache(cache, False):
        raise FerEdgeError("TensorRT refused a new, empty timing cache")


def _set_profile(profile: tensorrt.IOptimizationProfile, name: str,
                 shapes: list[tuple[int, ...]]) -> None:
    """``set_shape`` returns None and raises RuntimeError on shapes it rejects; what it kept
    is read back."""
    import tensorrt as trt

    lo, opt, hi = (trt.Dims(list(s)) for s in shapes)
    try:
        profile.set_shape(name, lo, opt, hi)
    except (RuntimeError, TypeError) as e:
        raise FerEdgeError(f"TensorRT rejected profile shapes {shapes} for {name!r} "
                           f"({first_line(e)})") from None
    got = [tuple(int(s[i]) for i in range(len(s))) for s in profile.get_shape(name)]
    if got != shapes:
        raise FerEdgeError(f"TensorRT kept profile shapes {got}, not {shapes}, for {name!r}")


def build_engine(onnx_path: Path, engine_path: Path, precision: str,
                 input_chw: tuple[int, int, int], batch: tuple[int, int, int] = DEFAULT_BATCH,
                 cache_dir: Path | None = None, workspace_mb: int = 1024,
                 cuda: CudaLayer | None = None) -> EngineInfo:
    """Parse ``onnx_path`` into a strongly typed network, build, write ``engine_path``
    atomically (and, given ``cache_dir``, the timing cache :func:`timing_cache_name` there)."""
    if precision not in SOURCES:
        raise FerEdgeError(f"unknown TensorRT precision {precision!r}; choose "
                           f"{' or '.join(SOURCES)}")
    import_tensorrt()
    import tensorrt as trt  # typed by the tensorrt-stubs package in CI

    cuda = cuda or open_cuda()
    gpu, cc = cuda.device()
    timing_cache = None if cache_dir is None else cache_dir / timing_cache_name(
        trt.__version__, cc)
    with cuda.scope():
        logger = trt.Logger(trt.Logger.WARNING)
        builder = create_with_logger(trt.Builder, logger, "builder")
        typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if typed is None and tensorrt_version(trt)[0] < 11:
            raise FerEdgeError(f"TensorRT {trt.__version__} has no strongly typed networks")
        # 11.x: every network is strongly typed, whether or not the flag is still exported
        network = builder.create_network(0 if typed is None else 1 << int(typed))
        if network is None:
            raise FerEdgeError("TensorRT could not create a network")
        _parse(network, onnx_path, logger)
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise FerEdgeError(f"{onnx_path}: expected one input and one output, got "
                               f"{network.num_inputs} / {network.num_outputs}")
        if not _network_has(network, SOURCES[precision][1]):
            raise FerEdgeError(f"{onnx_path}: has no {SOURCES[precision][1]} tensors, so a "
                               f"strongly typed {precision} engine would not be {precision}")
        config = builder.create_builder_config()
        if config is None:
            raise FerEdgeError("TensorRT could not create a builder config")
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        name = network.get_input(0).name
        shapes: list[tuple[int, ...]] = [(b, *input_chw) for b in batch]
        profile = builder.create_optimization_profile()
        if profile is None:
            raise FerEdgeError("TensorRT could not create an optimization profile")
        _set_profile(profile, name, shapes)
        if config.add_optimization_profile(profile) < 0:
            raise FerEdgeError(f"TensorRT rejected the optimization profile {shapes}")
        _timing_cache(config, timing_cache)
        log.info("building TensorRT %s %s engine from %s on %s (batch %s)...",
                 trt.__version__, precision, onnx_path.name, gpu, batch)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise FerEdgeError(f"{onnx_path}: TensorRT failed to build a {precision} engine "
                               "(its log above says why)")
        atomic_write_bytes(engine_path, bytes(serialized))
        if timing_cache is not None:
            cache = config.get_timing_cache()
            blob = cache.serialize() if cache is not None else None
            if blob is None:
                raise FerEdgeError("TensorRT could not serialize the timing cache")
            atomic_write_bytes(timing_cache, bytes(blob))
    return EngineInfo(engine_path.name, precision, str(trt.__version__), gpu, cc, batch)


def source_problem(bundle: Bundle, precision: str) -> str | None:
    """Why ``bundle`` has no ONNX model TensorRT can build a ``precision`` engine from."""
    key = SOURCES[precision][0]
    if key not in bundle.models:
        return (f"no {key} model (model.{key}.onnx) in this bundle: re-export it with this "
                "fer-edge version" + (" and --int8" if key == "int8" else ""))
    calib = bundle.models[key].get("calibration", {})
    if key == "int8" and not calib.get("symmetric"):
        return ("its INT8 model is asymmetric (exported by an older fer-edge); TensorRT takes "
                "only symmetric Q/DQ: re-export it with fer-export --int8")
    return None


def add_engine(bundle: Bundle, precision: str, batch: tuple[int, int, int] = DEFAULT_BATCH,
               force: bool = False, cuda: CudaLayer | None = None,
               cache_dir: Path | None = None) -> dict:
    """Build ``model.<precision>.engine`` into the bundle folder and record it in bundle.json
    as ``trt_<precision>``; returns the record. The timing cache goes to ``cache_dir``
    (default ``<bundle>/cache``; ``fer-export --trt`` keeps it out of the bundle it ships)."""
    if precision not in SOURCES:
        raise FerEdgeError(f"unknown TensorRT precision {precision!r}; choose "
                           f"{' or '.join(SOURCES)}")
    import_tensorrt()  # fail first, before touching the bundle folder
    why = source_problem(bundle, precision)
    if why:
        raise FerEdgeError(f"{bundle.path}: cannot build a {precision} engine: {why}")
    engine = bundle.path / f"model.{precision}.engine"
    if engine.exists() and not force:
        raise FerEdgeError(f"{engine}: exists; add --force to rebuild it")
    key = SOURCES[precision][0]
    src = bundle.model_path(key)
    cache = cache_dir or bundle.path / "cache"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FerEdgeError(f"{cache}: cannot create the timing-cache folder ({e.strerror}); "
                           "copy the bundle somewhere writable first") from None
    info = build_engine(src, engine, precision, (bundle.input.channels, bundle.input.height,
                                                 bundle.input.width), batch,
                        cache_dir=cache, cuda=cuda)
    meta = dict(bundle.meta)
    meta["models"] = {**bundle.models,
                      f"trt_{precision}": info.record(src.name, bundle.models[key]["sha256"])}
    write_bundle_json(bundle.path, meta)
    return meta["models"][f"trt_{precision}"]
