"""API-surface contract tests of the TensorRT engine builder (edge.trt_build) and runtime
(edge.trt_backend) against stand-in ``tensorrt`` modules shaped like the 10.x and 11.x
bindings (with and without BuilderFlag.FP16/INT8) and a NumPy stand-in for the CUDA layer.

These are NOT a substitute for a real run on a GPU with TensorRT: they check that the code
touches no attribute TensorRT 11 removed, checks every return value, builds strongly typed
networks from the real FP16/INT8 ONNX artifacts, allocates its buffers once, pads batches up to
the profile minimum and chunks them above the maximum, and treats a False set_input_shape as
an error. The build-engine command's own errors are checked with the real (absent) TensorRT.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading

import numpy as np
import pytest
from conftest import run_cli
from trt_standin import FakeCuda, make_trt, network_flags, onnx_layer_types, reference

from fer_edge.edge.bundle import default_bundle_path, load_bundle
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import open_backend
from fer_edge.edge.inference.tensorrt import build as trt_build
from fer_edge.edge.inference.tensorrt import runtime as trt_backend
from fer_edge.edge.inference.tensorrt.build import add_engine, build_engine, parse_batch
from fer_edge.edge.inference.tensorrt.runtime import TensorRTBackend

pytest.importorskip("onnx", reason="the stand-in parser reads the ONNX with onnx")

REMOVED_IN_11 = ("BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
                 "NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
VERSIONS = [("10.3.0.30", True), ("10.13.2", True), ("11.4.1", False)]


@pytest.fixture
def shipped(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def install(monkeypatch, **kw):
    cuda = kw.pop("cuda", None) or FakeCuda()
    trt = make_trt(cuda=cuda, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "open_cuda", lambda: cuda)
    monkeypatch.setattr(trt_build, "open_cuda", lambda: cuda)
    return trt, cuda


def touched(trt) -> list[str]:
    return list(trt._touched_list)


@pytest.mark.parametrize(("version", "fp16_flag"), VERSIONS)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_is_strongly_typed_and_touches_no_removed_api(monkeypatch, shipped, version,
                                                            fp16_flag, precision):
    trt, cuda = install(monkeypatch, version=version, fp16_flag=fp16_flag)
    record = add_engine(load_bundle(shipped), precision, (1, 4, 16), cuda=cuda)
    calls = trt._calls
    typed = network_flags(version)["STRONGLY_TYPED"]  # 1 in 10.x, 0 in 11.x
    assert typed == (0 if version.startswith("11.") else 1)
    assert ("create_network", 1 << typed) in calls
    assert not [c for c in calls if c[0] == "set_flag"], "no precision builder flags"
    assert not [t for t in touched(trt) if t.startswith("tensorrt.BuilderFlag")]
    assert not [t for t in touched(trt) if any(t.endswith(r) for r in REMOVED_IN_11)]
    assert ("set_shape", "input", (1, 1, 48, 48), (4, 1, 48, 48), (16, 1, 48, 48)) in calls
    b = load_bundle(shipped)  # sha256 of the engine recorded and verified
    rec = b.models[f"trt_{precision}"]
    assert rec == record
    assert rec["tensorrt"] == version and rec["gpu"] == cuda.gpu
    assert rec["compute_capability"] == "8.7" and rec["batch"] == {"min": 1, "opt": 4, "max": 16}
    assert rec["source"] == ("model.fp16.onnx" if precision == "fp16" else "model.int8.onnx")
    short = ".".join(version.split(".")[:3])
    assert (shipped / "cache" / f"tensorrt-{short}-sm87.timing").read_bytes() == b"CACHE"
    assert [p.name for p in (shipped / "cache").iterdir()] == [f"tensorrt-{short}-sm87.timing"]


@pytest.mark.parametrize(("version", "flags"), [("11.4.1", 0), ("10.3.0", None)])
def test_without_a_strongly_typed_flag(monkeypatch, shipped, tmp_path, version, flags):
    """Robustness, not a real surface: 10.3, 10.13, 11.0 and 11.4 all export STRONGLY_TYPED.
    Were an 11.x to drop it, its networks are strongly typed anyway; a 10.x cannot be."""
    trt, _ = install(monkeypatch, version=version, typed_flag=False)
    engine = tmp_path / "m.engine"
    if flags is None:
        with pytest.raises(FerEdgeError, match="no strongly typed networks"):
            build_engine(shipped / "model.fp16.onnx", engine, "fp16", (1, 48, 48))
        return
    build_engine(shipped / "model.fp16.onnx", engine, "fp16", (1, 48, 48))
    assert ("create_network", 0) in trt._calls and engine.is_file()


def _tiny(tmp_path, kind: str):
    """A 1x48x48 -> 7 graph: 'qdq' = ModelOpt-style FP16 weights with an INT8 Q/DQ on the
    activation; 'cast' = FP32 weights behind a Cast to FP16; 'int8_weights' = INT8 weights
    through DequantizeLinear, no Q."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("input", T.FLOAT, ["N", 1, 48, 48])
    y = helper.make_tensor_value_info("logits", T.FLOAT, ["N", 7])
    f16 = numpy_helper.from_array(np.ones((7, 48 * 48), np.float16), "w")
    shape = numpy_helper.from_array(np.array([-1, 48 * 48], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"])]
    inits = [shape]
    if kind == "qdq":
        inits += [f16, numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "zp")]
        nodes += [helper.make_node("QuantizeLinear", ["flat", "s", "zp"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
                  helper.make_node("Cast", ["dq"], ["h"], to=T.FLOAT16),
                  helper.make_node("Gemm", ["h", "w"], ["o"], transB=1),
                  helper.make_node("Cast", ["o"], ["logits"], to=T.FLOAT)]
    elif kind == "cast":
        inits += [numpy_helper.from_array(np.ones((7, 48 * 48), np.float32), "w")]
        nodes += [helper.make_node("Gemm", ["flat", "w"], ["o"], transB=1),
                  helper.make_node("Cast", ["o"], ["h"], to=T.FLOAT16),
                  helper.make_node("Cast", ["h"], ["logits"], to=T.FLOAT)]
    else:
        inits += [numpy_helper.from_array(np.ones((7, 48 * 48), np.int8), "wq"),
                  numpy_helper.from_array(np.array(0.02, np.float32), "s")]
        nodes += [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),
                  helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, path)
    return path


def test_stand_in_types_layers_from_q_nodes_and_casts_not_weights(monkeypatch, tmp_path):
    """INT8 comes from QuantizeLinear (FP16 weights + Q, as ModelOpt writes it, is INT8),
    HALF from Cast(to=FLOAT16); INT8 or FP16 weights alone type no such layer."""
    assert onnx_layer_types(_tiny(tmp_path, "qdq").read_bytes()) == {"FLOAT", "INT8", "HALF"}
    assert onnx_layer_types(_tiny(tmp_path, "cast").read_bytes()) == {"FLOAT", "HALF"}
    assert onnx_layer_types(_tiny(tmp_path, "int8_weights").read_bytes()) == {"FLOAT"}
    shipped = default_bundle_path()
    assert onnx_layer_types((shipped / "model.int8.onnx").read_bytes()) == {"FLOAT", "INT8"}
    assert onnx_layer_types((shipped / "model.fp16.onnx").read_bytes()) == {"FLOAT", "HALF"}
    install(monkeypatch, version="11.4.1", fp16_flag=False)
    build_engine(_tiny(tmp_path, "qdq"), tmp_path / "q.engine", "int8", (1, 48, 48))
    assert (tmp_path / "q.engine").is_file()


def test_fp32_graph_is_refused_as_fp16_engine(monkeypatch, shipped, tmp_path):
    """Strongly typed: an FP32 ONNX would silently give an FP32 'fp16' engine."""
    install(monkeypatch, version="11.4.1", fp16_flag=False)
    with pytest.raises(FerEdgeError, match="no HALF tensors"):
        build_engine(shipped / "model.onnx", tmp_path / "e.engine", "fp16", (1, 48, 48))
    assert not (tmp_path / "e.engine").exists()


@pytest.mark.parametrize("fail", ["Builder", "parse", "create_network", "create_builder_config",
                                  "create_optimization_profile", "set_shape",
                                  "add_optimization_profile", "create_timing_cache",
                                  "set_timing_cache", "build_serialized_network", "serialize"])
def test_every_builder_return_value_is_checked(monkeypatch, shipped, tmp_path, fail):
    """Failure values are checked, and the calls that raise instead (Builder(): TypeError
    'returned nullptr' on a driver/CUDA mismatch; set_shape: RuntimeError) are caught."""
    install(monkeypatch, version="10.3.0", fail=fail)
    engine = tmp_path / "m.engine"
    with pytest.raises(FerEdgeError) as e:
        build_engine(shipped / "model.int8.onnx", engine, "int8", (1, 48, 48),
                     cache_dir=tmp_path)
    assert "\n" not in str(e.value)
    if fail == "parse":
        assert "cannot parse" in str(e.value) and "zero-point" in str(e.value)
    if fail == "Builder":
        assert "could not create a builder (pybind11" in str(e.value)
        assert "driver" in str(e.value) and "tensorrt-cu12" in str(e.value)
    if fail == "set_shape":
        assert "rejected profile shapes" in str(e.value) and "inconsistent" in str(e.value)
    if fail != "serialize":
        assert not engine.exists()


@pytest.mark.parametrize(("fail", "sets"), [("cache_mismatch", [b"OLD", b""]),
                                            ("foreign_cache", [b""]), ("null_cache", [b""])])
def test_timing_cache_from_another_tensorrt_or_device_is_replaced(monkeypatch, shipped, tmp_path,
                                                                  caplog, fail, sets):
    """Refused by set_timing_cache (another GPU), raising or None from create_timing_cache
    (another TensorRT): a warning and a fresh cache, never a stopped build."""
    trt, _ = install(monkeypatch, version="10.3.0", fail=fail)
    cache = tmp_path / "tensorrt-10.3.0-sm87.timing"
    cache.write_bytes(b"OLD")
    build_engine(shipped / "model.fp16.onnx", tmp_path / "m.engine", "fp16", (1, 48, 48),
                 cache_dir=tmp_path)
    assert [c[1] for c in trt._calls if c[0] == "set_timing_cache"] == sets
    assert cache.read_bytes() == b"CACHE" and "starting a new one" in caplog.text


@pytest.mark.parametrize("version", ["8.6.2", "8.5.2.2"])
def test_tensorrt_8_is_refused_with_jetpack_hint(monkeypatch, shipped, version):
    install(monkeypatch, version=version)
    with pytest.raises(FerEdgeError, match=r"too old.*>= 10 .*JetPack >= 6\.1"):
        add_engine(load_bundle(shipped), "fp16")


def test_asymmetric_or_missing_sources_are_refused(monkeypatch, shipped):
    install(monkeypatch)
    meta = json.loads((shipped / "bundle.json").read_text())
    meta["models"]["int8"]["calibration"].pop("symmetric")
    del meta["models"]["fp16"]
    (shipped / "bundle.json").write_text(json.dumps(meta))
    b = load_bundle(shipped)
    with pytest.raises(FerEdgeError, match="asymmetric.*re-export"):
        add_engine(b, "int8")
    with pytest.raises(FerEdgeError, match=r"no fp16 model \(model\.fp16\.onnx\)"):
        add_engine(b, "fp16")


def _engine(monkeypatch, shipped, batch=(4, 8, 8), **kw):
    trt, cuda = install(monkeypatch, **kw)
    add_engine(load_bundle(shipped), "int8", batch, cuda=cuda)
    return trt, cuda, load_bundle(shipped)


def test_runtime_pads_chunks_and_allocates_once(monkeypatch, shipped):
    trt, cuda, b = _engine(monkeypatch, shipped, version="11.4.1", fp16_flag=False)
    start = len(trt._calls)
    be = open_backend(b, "int8", "tensorrt")  # check_fits runs one blank face (-> 4)
    assert be.name == "tensorrt (fake-cuda)" and (be.min_batch, be.max_batch) == (4, 8)
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 8, 9, 19, 0, 2):
        x = rng.random((n, 1, 48, 48), np.float32)
        y = be(x)
        assert y.shape == (n, 7)
        np.testing.assert_allclose(y, reference(x), rtol=1e-5)
    assert (cuda.mallocs, cuda.host_allocs) == (2, 2), "buffers allocated once"
    runs = [c[1] for c in trt._calls[start:] if c[0] == "execute"]
    # the check's 1 -> 4; then 1,3 -> padded to 4; 9 -> 8+1(->4); 19 -> 8+8+3(->4); 0 -> nothing
    assert runs == [4, 4, 4, 4, 8, 8, 4, 8, 8, 4, 4]
    shapes = [c[1][0] for c in trt._calls[start:] if c[0] == "set_input_shape"]
    assert shapes == [4, 8, 4, 8, 4], "shape set only when it changes"
    assert not [t for t in touched(trt) if any(t.endswith(r) for r in REMOVED_IN_11)]


def test_runtime_is_usable_from_other_threads(monkeypatch, shipped):
    _, cuda, b = _engine(monkeypatch, shipped)
    be = open_backend(b, "int8", "tensorrt")
    errors: list = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            x = rng.random((int(rng.integers(1, 12)), 1, 48, 48), np.float32)
            if not np.allclose(be(x), reference(x), rtol=1e-5):
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and cuda.scopes > 80


@pytest.mark.parametrize(("fail", "match"), [
    ("Runtime", r"could not create a runtime \(pybind11.*returned nullptr\).*driver"),
    ("set_input_shape", "rejected input shape"), ("execute_async_v3", "execute_async_v3"),
    ("deserialize", "could not deserialize"), ("create_execution_context", "execution context"),
    ("set_tensor_address", "set_tensor_address")])
def test_runtime_checks_every_return_value(monkeypatch, shipped, fail, match):
    _engine(monkeypatch, shipped)
    trt, cuda = install(monkeypatch, fail=fail)
    with pytest.raises(FerEdgeError, match=match):
        be = open_backend(load_bundle(shipped), "int8", "tensorrt")
        be(np.zeros((2, 1, 48, 48), np.float32))


@pytest.mark.parametrize(("version", "cc", "match"), [
    ("10.3.1", "8.7", r"built with TensorRT 10\.3\.0, this machine has TensorRT 10\.3\.1"),
    ("10.3.0", "8.9", r"compute capability 8\.7\), this machine has .*\(8\.9\)")])
def test_engine_for_another_tensorrt_or_gpu_is_refused_before_loading(monkeypatch, shipped,
                                                                      version, cc, match):
    _engine(monkeypatch, shipped, version="10.3.0")
    trt, _ = install(monkeypatch, version=version, cuda=FakeCuda(cc=cc))
    with pytest.raises(FerEdgeError, match=match + r".*: fer-edge build-engine \S+ --precision "
                       r"int8 --force$") as e:
        open_backend(load_bundle(shipped), "int8", "tensorrt")
    assert f"build-engine {shipped} " in str(e.value)
    assert ("deserialize",) not in trt._calls


def test_wrong_input_shape_is_one_clear_error(monkeypatch, shipped):
    _, _, b = _engine(monkeypatch, shipped)
    be = TensorRTBackend(b.model_path("trt_int8"), b.models["trt_int8"])
    with pytest.raises(FerEdgeError, match=r"expects \[N, 1, 48, 48\] faces, got \[2, 3, 48, 48\]"):
        be(np.zeros((2, 3, 48, 48), np.float32))


@pytest.mark.parametrize("text", ["1,8", "0,1,2", "8,4,16", "a,b,c", ""])
def test_bad_batch_is_refused(text):
    with pytest.raises(FerEdgeError, match="--batch"):
        parse_batch(text)


def test_build_engine_cli_without_tensorrt_is_one_line(shipped):
    r = run_cli("fer_edge.edge.cli", "build-engine", str(shipped), "--precision", "fp16")
    if r.returncode == 0:
        pytest.skip("TensorRT is installed here")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tensorrt" in lines[0]
    assert "trt_fp16" not in load_bundle(shipped).models
    r = run_cli("fer_edge.edge.cli", "build-engine", str(shipped), "--precision", "fp16",
                "--batch", "4,2,8")
    assert r.returncode == 1 and r.stderr.strip() == (
        "error: --batch '4,2,8': expected min,opt,max like 1,8,32 (1 <= min <= opt <= max)")


def _libcudart_or_skip():
    from fer_edge.edge.inference.tensorrt.cuda import load_libcudart

    try:
        return load_libcudart()
    except ImportError:
        pytest.skip("no libcudart on this machine")


@pytest.mark.parametrize("jetson", [True, False])
def test_cuda_layer_order_and_real_libcudart_errors(jetson):
    """The ctypes layer calls the real libcudart: without a usable GPU, CUDA's own message in
    one FerEdgeError. On a Jetson it goes first (no wheel needed); elsewhere cuda-bindings."""
    from fer_edge.edge.inference.tensorrt.cuda import CudaRuntime, open_cuda

    _libcudart_or_skip()
    try:
        layer = open_cuda(jetson=jetson)
    except FerEdgeError as e:
        msg = str(e)
    else:
        pytest.skip(f"CUDA is usable here ({layer.name})")
    assert "\n" not in msg and msg.startswith("CUDA cudaGetDeviceCount failed: ")
    try:
        import cuda.bindings.runtime  # noqa: F401
        bindings = True
    except ImportError:
        bindings = False
    assert ("(cudaError " in msg) == (jetson or not bindings), msg
    with pytest.raises(FerEdgeError, match=r"CUDA cudaGetDeviceCount failed: .+\(cudaError \d+, "
                                           r"libcudart\)"):
        CudaRuntime()


def test_no_cuda_layer_at_all_says_what_to_install(monkeypatch):
    from fer_edge.edge.inference.tensorrt import cuda

    monkeypatch.setattr(cuda, "LIBCUDART", ("/nonexistent/libcudart.so.12",))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    for jetson in (True, False):
        with pytest.raises(FerEdgeError, match=r"no CUDA Python layer: on a Jetson, JetPack's "
                                               r"CUDA runtime .*tensorrt-cu12"):
            cuda.open_cuda(jetson=jetson)
    with pytest.raises(ImportError, match="no CUDA runtime library"):
        cuda.CudaRuntime(library="/nonexistent/libcudart.so.12")


def test_export_trt_keeps_the_timing_cache_out_of_the_bundle(monkeypatch, shipped, tmp_path):
    """fer-export --trt: the bundle is copied to other machines, its timing cache is not."""
    pytest.importorskip("torch")
    from fer_edge.export.exporter import ExportOptions, _add_engines

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    install(monkeypatch, version="10.3.0")
    b = load_bundle(shipped)
    meta = dict(b.meta)
    _add_engines(shipped, meta, ExportOptions(out=shipped, trt=("int8",)), b.input)
    assert "trt_int8" in meta["models"] and (shipped / "model.int8.engine").is_file()
    assert not (shipped / "cache").exists()
    assert (tmp_path / "xdg" / "fer-edge" / "tensorrt" / "tensorrt-10.3.0-sm87.timing").is_file()
