"""The INT8 and FP16 ONNX artifacts against the rules TensorRT's ONNX parser imposes
(onnx-tensorrt docs/operators.md, TensorRT "Working with Quantized Types"), on the shipped
bundle and on a freshly exported one: symmetric Q/DQ (every zero-point an INT8 0), no
DequantizeLinear fed by INT32, per-channel weights on axis 0 in [-127, 127], finite positive
scales, only default-domain ops, an opset TensorRT 10.3 parses, a symbolic batch, one FP32
input and output; the FP16 model keeps FP32 I/O and agrees with FP32 on FER2013 PublicTest.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, run_cli

onnx = pytest.importorskip("onnx", reason="the [export] extra is not installed")
from onnx import TensorProto, numpy_helper

from fer_edge.edge.bundle import default_bundle_path, load_bundle
from fer_edge.edge.data import load_split
from fer_edge.edge.inference.backend import OrtBackend, open_backend, predict_logits
from fer_edge.edge.preprocess import preprocess

MAX_OPSET_TRT_10_3 = 20  # onnx-tensorrt release/10.3: opsets 9..20
QDQ = ("QuantizeLinear", "DequantizeLinear")


def io_checks(model) -> None:
    g = model.graph
    assert len(g.input) == 1 and len(g.output) == 1
    for v in (g.input[0], g.output[0]):
        t = v.type.tensor_type
        assert t.elem_type == TensorProto.FLOAT, v.name
        assert t.shape.dim[0].dim_param and not t.shape.dim[0].dim_value, "symbolic batch"
    assert all(n.domain in ("", "ai.onnx") for n in g.node), \
        {n.op_type for n in g.node if n.domain not in ("", "ai.onnx")}
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert default and default[0] <= MAX_OPSET_TRT_10_3


def tensorrt_int8_checks(path) -> None:
    model = onnx.load(str(path))
    io_checks(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    qdq = [n for n in g.node if n.op_type in QDQ]
    assert qdq, "no Q/DQ nodes"
    weights = 0
    for n in qdq:
        assert len(n.input) == 3, f"{n.name}: zero-point missing (defaults to UINT8)"
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8, f"{n.name}: zero-point not INT8"
        assert not numpy_helper.to_array(zp).any(), f"{n.name}: non-zero zero-point"
        scale = numpy_helper.to_array(inits[n.input[1]])
        assert np.isfinite(scale).all() and (scale > 0).all(), f"{n.name}: bad scale"
        src = inits.get(n.input[0])
        if n.op_type == "DequantizeLinear" and src is not None:
            assert src.data_type != TensorProto.INT32, f"{n.name}: fed by INT32 (bias)"
            assert src.data_type == TensorProto.INT8
            w = numpy_helper.to_array(src)
            assert w.min() >= -127 and w.max() <= 127, f"{n.name}: weight -128"
            for op, slot in consumers.get(n.output[0], []):
                if op.op_type in ("Conv", "Gemm") and slot == 1:
                    axis = {a.name: a.i for a in n.attribute}.get("axis", 1)
                    assert axis == 0 and scale.shape == (w.shape[0],), \
                        f"{n.name}: weights not per-channel on axis 0"
                    weights += 1
    assert weights >= 2, "weight DQs feeding Conv/Gemm not found"
    fp32 = onnx.load(str(path.with_name("model.onnx")))
    relus = sum(n.op_type == "Relu" for n in fp32.graph.node)
    assert sum(n.op_type == "Relu" for n in g.node) == relus, "Relus folded away"


def fp16_checks(path) -> None:
    model = onnx.load(str(path))
    io_checks(model)
    kinds = {i.data_type for i in model.graph.initializer}
    assert TensorProto.FLOAT16 in kinds, "no FP16 weights: not an FP16 body"
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.value_info, *inferred.output)}
    for n in model.graph.node:  # the probability averaging stays FP32
        if n.op_type in ("Softmax", "Log"):
            assert types.get(n.output[0]) == TensorProto.FLOAT, n.op_type


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, fer2013):
    """A real (trained, tracked) checkpoint exported now with --int8 --tta-flip."""
    ckpt = REPO / "checkpoints" / "fercnn_m" / "best.pt"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} not in this checkout")
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("fresh") / "b"
    r = run_cli("fer_edge.export.cli", str(ckpt), "--out", str(out), "--int8", "--tta-flip",
                "--calib-data", str(fer2013), "--calib-images", "64",
                "--calib-method", "minmax")
    assert r.returncode == 0, r.stderr[-3000:]
    return load_bundle(out)


@pytest.fixture(scope="module")
def shipped():
    return load_bundle(default_bundle_path())


@pytest.mark.parametrize("which", ["shipped", pytest.param("fresh", marks=pytest.mark.slow)])
def test_int8_model_follows_tensorrt_rules(request, which):
    b = request.getfixturevalue(which)
    cal = b.models["int8"]["calibration"]
    assert cal["symmetric"] is True and cal["bias"] == "fp32"
    tensorrt_int8_checks(b.model_path("int8"))


@pytest.mark.parametrize("which", ["shipped", pytest.param("fresh", marks=pytest.mark.slow)])
def test_fp16_model_has_fp32_io_and_fp16_body(request, which):
    b = request.getfixturevalue(which)
    fp16_checks(b.model_path("fp16"))
    assert b.models["fp16"]["argmax_agreement_vs_fp32"] >= 0.99


def test_checks_catch_the_old_asymmetric_scheme(shipped):
    """The CPU model is onnxruntime's default (asymmetric) scheme: the checks must reject it,
    else they prove nothing about the TensorRT one."""
    with pytest.raises(AssertionError, match="zero-point|INT32|Relu"):
        tensorrt_int8_checks(shipped.model_path("int8_cpu"))


@pytest.mark.slow  # 2 x 3589 faces with flip averaging through onnxruntime-CPU (~40 s)
def test_shipped_fp16_agrees_with_fp32_on_publictest(shipped, fer2013):
    split = load_split(fer2013, "test", shipped.labels, size=shipped.input.height)
    x = preprocess(split.images, shipped.input)
    ref = predict_logits(OrtBackend(shipped.model_path("fp32")), x)
    got = predict_logits(OrtBackend(shipped.model_path("fp16")), x)
    assert len(x) == 3589
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.99
    assert np.abs(ref - got).max() < 0.05


def test_shipped_int8_variants_are_recorded_and_cpu_picks_the_asymmetric(shipped):
    assert shipped.models["int8"]["file"] == "model.int8.onnx"
    assert shipped.models["int8_cpu"]["file"] == "model.int8.cpu.onnx"
    assert shipped.models["int8_cpu"]["calibration"]["symmetric"] is False
    assert "TensorRT" in shipped.models["int8"]["use"]
    for key in ("int8", "int8_cpu"):
        assert shipped.metrics[key]["drop_points"] <= 0.3
    be = open_backend(shipped, "int8", "ort", threads=1)
    assert be.path.name == "model.int8.cpu.onnx" and be.name == "ort:CPUExecutionProvider"
