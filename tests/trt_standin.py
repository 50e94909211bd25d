"""Small stand-ins for the ``tensorrt`` Python bindings (10.x and 11.x shapes) and a NumPy
stand-in for the CUDA layer, for API-surface contract tests of edge.trt_build and
edge.trt_backend on machines without a GPU.

They are NOT a substitute for a real run on TensorRT: they model only the calls, attribute
names, enum values and failure conventions of TensorRT 10.3, 10.13 and 11.x as their sources
show them (NVIDIA/TensorRT python/src/infer/pyCore.cpp, include/NvInfer.h): most calls return
None / False / -1 on failure, but ``Builder(logger)`` and ``Runtime(logger)`` raise
``TypeError`` (pybind11's "factory function returned nullptr") and
``IOptimizationProfile.set_shape`` raises ``RuntimeError``. Every use is recorded so the tests
can check what the code touched. The "parser" reads the real ONNX file with onnx and types the
layers as a strongly typed TensorRT network would: INT8 from QuantizeLinear outputs (with an
INT8 zero-point), HALF from Cast(to=FLOAT16) outputs, FLOAT otherwise; weight dtypes alone
make no INT8/HALF layer.
"""

from __future__ import annotations

import contextlib
import json
import types

import numpy as np


class Strict(types.SimpleNamespace):
    """A namespace that records every attribute read in ``touched`` (AttributeError for a
    missing one, as the real bindings raise for removed names)."""

    def __init__(self, label: str, touched: list, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_touched", touched)

    def __getattribute__(self, name):
        if not name.startswith("_"):
            object.__getattribute__(self, "_touched").append(
                f"{object.__getattribute__(self, '_label')}.{name}")
        return object.__getattribute__(self, name)


class FakeCuda:
    """The CudaLayer interface on NumPy arrays; counts allocations and scope entries."""

    name = "fake-cuda"

    def __init__(self, gpu: str = "Orin (fake)", cc: str = "8.7"):
        self.gpu, self.cc = gpu, cc
        self.mem: dict[int, np.ndarray] = {}
        self.mallocs = self.host_allocs = self.scopes = 0
        self._next = 0x1000

    def device(self):
        return self.gpu, self.cc

    @contextlib.contextmanager
    def scope(self):
        self.scopes += 1
        yield

    def malloc(self, nbytes):
        self.mallocs += 1
        ptr, self._next = self._next, self._next + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def host_empty(self, nbytes):
        self.host_allocs += 1
        return np.zeros(nbytes, np.uint8)

    def stream(self):
        return 7

    def htod(self, dst, src, stream):
        assert stream == 7
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        self.mem[dst][:raw.size] = raw

    def dtoh(self, dst, src, stream):
        assert stream == 7 and dst.flags.c_contiguous
        flat = dst.view(np.uint8).reshape(-1)
        flat[:] = self.mem[src][:flat.size]

    def sync(self, stream):
        assert stream == 7


def reference(x: np.ndarray, classes: int = 7) -> np.ndarray:
    """What the fake engine computes per face: its pixel sum times (class index + 1)."""
    sums = x.reshape(len(x), int(np.prod(x.shape[1:]))).sum(1, dtype=np.float64)
    return sums[:, None].astype(np.float32) * np.arange(1, classes + 1, dtype=np.float32)


def network_flags(version: str) -> dict[str, int]:
    """NetworkDefinitionCreationFlag members and values per TensorRT version (NvInfer.h):
    10.3: EXPLICIT_BATCH 0, STRONGLY_TYPED 1; 10.13 adds PREFER_JIT_PYTHON_PLUGINS 2 and
    PREFER_AOT_PYTHON_PLUGINS 3; 11.x drops EXPLICIT_BATCH and renumbers: STRONGLY_TYPED 0
    (deprecated, ignored: every 11.x network is strongly typed), PREFER_JIT 1, PREFER_AOT 2."""
    major, minor = (int(p) for p in version.split(".")[:2])
    if major >= 11:
        return {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                "PREFER_AOT_PYTHON_PLUGINS": 2}
    flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    if minor >= 13:
        flags |= {"PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3}
    return flags


def onnx_layer_types(data: bytes) -> set[str]:
    """The TensorRT data types a strongly typed parse of this ONNX produces, as layer output
    types: INT8 for each QuantizeLinear with an INT8 zero-point, HALF for each
    Cast(to=FLOAT16), FLOAT for the rest."""
    import onnx

    g = onnx.load_from_string(data).graph
    inits = {i.name: i.data_type for i in g.initializer}
    kinds = {"FLOAT"}
    for node in g.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 \
                and inits.get(node.input[2]) == onnx.TensorProto.INT8:
            kinds.add("INT8")
        if node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16
                                          for a in node.attribute):
            kinds.add("HALF")
    return kinds


NULLPTR = "pybind11::init(): factory function returned nullptr"


def make_trt(version: str = "10.3.0", fp16_flag: bool = True, cuda: FakeCuda | None = None,
             fail: str | None = None, classes: int = 7, typed_flag: bool = True):
    """A stand-in ``tensorrt`` module. ``fp16_flag``: BuilderFlag.FP16/INT8 exist (10.x);
    ``typed_flag=False`` drops NetworkDefinitionCreationFlag.STRONGLY_TYPED (robustness only:
    10.3, 10.13, 11.0 and 11.4 all export it); ``fail`` names one call that fails the way the
    real one does (returns None / False / -1, or raises where the real binding raises);
    ``fail="foreign_cache"`` makes ``create_timing_cache`` raise on a non-empty blob and
    ``"null_cache"`` return None for it."""
    touched: list[str] = []
    calls: list[tuple] = []
    dt = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT8="INT8", INT32="INT32")
    mod = Strict("tensorrt", touched, __version__=version)
    flags = {"DEBUG": 1, "REFIT": 2}
    if fp16_flag:
        flags |= {"FP16": 3, "INT8": 4, "OBEY_PRECISION_CONSTRAINTS": 5}
    net_flags = network_flags(version)
    if not typed_flag:
        del net_flags["STRONGLY_TYPED"]

    def failing(name, ok, bad):
        calls.append((name,))
        return bad if fail == name else ok

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Layer:
        def __init__(self, dtype):
            self.num_outputs = 1
            self._t = types.SimpleNamespace(dtype=dtype)

        def get_output(self, i):
            return self._t

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.layers: list = []
            self.num_inputs = self.num_outputs = 0

        def get_input(self, i):
            return types.SimpleNamespace(name=self.input_name)

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse(self, data: bytes):
            import onnx

            if fail == "parse":
                self.num_errors = 1
                calls.append(("parse",))
                return False
            g = onnx.load_from_string(data).graph
            self.network.num_inputs, self.network.num_outputs = len(g.input), len(g.output)
            self.network.input_name = g.input[0].name
            self.network.layers = [Layer(getattr(dt, k)) for k in sorted(onnx_layer_types(data))]
            calls.append(("parse",))
            return True

        def get_error(self, i):
            return "In node 3 (Conv): unsupported zero-point (stand-in)"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            lo, opt, hi = (tuple(Dims(d)) for d in (lo, opt, hi))
            calls.append(("set_shape", name, lo, opt, hi))
            if fail == "set_shape" or not all(a <= b <= c for a, b, c in zip(lo, opt, hi,
                                                                              strict=True)):
                # pyCore.cpp: a shape TensorRT rejects raises; set_shape itself returns None
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[name] = (lo, opt, hi)

        def get_shape(self, name):
            return [Dims(s) for s in self.shapes.get(name, [(0,), (0,), (0,)])]

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return failing("serialize", b"CACHE" + bytes(self.blob[:0]), None)

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, p):
            self.profile = p
            return failing("add_optimization_profile", 0, -1)

        def create_timing_cache(self, blob):
            if blob and fail == "foreign_cache":
                raise RuntimeError("Serialization assertion failed: timing cache version")
            if blob and fail == "null_cache":
                return None
            return failing("create_timing_cache", Cache(bytes(blob)), None)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", bytes(cache.blob), ignore_mismatch))
            if fail == "set_timing_cache" or (fail == "cache_mismatch" and cache.blob):
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Dims(tuple):
        """trt.Dims: built from a list (or tuple); indexable, with a length."""

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))
            if fail == "Builder":
                raise TypeError(NULLPTR)

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return failing("create_network", Network(flags), None)

        def create_builder_config(self):
            return failing("create_builder_config", Config(), None)

        def create_optimization_profile(self):
            return failing("create_optimization_profile", Profile(), None)

        def build_serialized_network(self, network, config):
            name = network.input_name
            lo, opt, hi = config.profile.shapes[name]
            blob = json.dumps({"input": name, "min": lo, "max": hi}).encode()
            return failing("build_serialized_network", b"FAKEENGINE" + blob, None)

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.shape = engine, {}, None

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return failing("set_tensor_address", True, False)

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", tuple(shape)))
            lo, hi = self.engine.info["min"][0], self.engine.info["max"][0]
            if fail == "set_input_shape" or not lo <= shape[0] <= hi:
                return False
            self.shape = tuple(shape)
            return True

        def execute_async_v3(self, stream):
            calls.append(("execute", self.shape[0]))
            if fail == "execute_async_v3":
                return False
            n, item = self.shape[0], int(np.prod(self.shape[1:]))
            x = cuda.mem[self.addr["input"]][:n * item * 4].view(np.float32).reshape(n, item)
            y = reference(x, classes)
            cuda.mem[self.addr["logits"]][:y.nbytes] = y.view(np.uint8).ravel()
            return True

    class Engine:
        def __init__(self, info):
            self.info = info
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return mod.TensorIOMode.INPUT if name == "input" else mod.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return dt.FLOAT

        def get_tensor_profile_shape(self, name, profile):
            return [tuple(self.info["min"]), tuple(self.info["min"]), tuple(self.info["max"])]

        def get_tensor_shape(self, name):
            return (-1, classes) if name == "logits" else (-1, *self.info["max"][1:])

        def create_execution_context(self):
            return failing("create_execution_context", Context(self), None)

    class Runtime:
        def __init__(self, logger):
            if fail == "Runtime":
                raise TypeError(NULLPTR)

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize",))
            if fail == "deserialize" or not data.startswith(b"FAKEENGINE"):
                return None
            return Engine(json.loads(data[len(b"FAKEENGINE"):]))

    mod.Logger, mod.Builder, mod.OnnxParser, mod.Runtime = Logger, Builder, Parser, Runtime
    mod.DataType, mod.Dims = dt, Dims
    mod.BuilderFlag = Strict("BuilderFlag", touched, **flags)
    mod.NetworkDefinitionCreationFlag = Strict("NetworkDefinitionCreationFlag", touched,
                                               **net_flags)
    mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    mod.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    mod.nptype = lambda t: {dt.FLOAT: np.float32, dt.HALF: np.float16, dt.INT8: np.int8}[t]
    object.__setattr__(mod, "_calls", calls)
    object.__setattr__(mod, "_touched_list", touched)
    return mod
