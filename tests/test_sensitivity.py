"""The INT8 sensitivity pass (export/sensitivity.py) on a tiny depthwise/SiLU/SE network that
post-training quantisation breaks: trained here for a few seconds on crafted images, then given
EfficientNet's failure mode (one projection channel with a huge range, compensated in the next
conv so FP32 is unchanged). PTQ collapses it; fer-export's pass keeps a few tensors in FP32 and
the INT8 model holds --max-drop."""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
onnx = pytest.importorskip("onnx", reason="the [export] extra is not installed")

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.data import FER2013_LABELS, load_split
from fer_edge.edge.inference.backend import OrtBackend, evaluate
from fer_edge.edge.preprocess import InputSpec, preprocess
from fer_edge.export.sensitivity import channel_sqnr, search
from fer_edge.train.checkpoint import save_checkpoint
from fer_edge.train.models import create_model

OUTLIER = 1000.0  # the range of the broken channel, relative to the others


def _write_blobs(root, per_class: dict[str, int], seed: int) -> None:
    """Seven classes: a bright disc at one of seven places on a circle, on noise."""
    rng = np.random.default_rng(seed)
    for k, label in enumerate(FER2013_LABELS):
        for split, n in per_class.items():
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, (48, 48), dtype=np.uint8)
                a = 2 * math.pi * k / 7 + rng.normal(0, 0.1)
                c = (int(24 + 13 * math.cos(a)), int(24 + 13 * math.sin(a)))
                cv2.circle(img, c, int(rng.integers(5, 8)), int(rng.integers(170, 255)), -1)
                cv2.imwrite(str(d / f"{i:03d}.png"), img)


def _add_outlier_channel(model, scale: float) -> None:
    """Scale one output channel of the last block's projection by ``scale`` and the head
    conv's matching input weights by 1/scale: the same function in FP32, one activation
    tensor whose range is ``scale`` times its other channels' (EfficientNet's hard case)."""
    bn = model.blocks[-1].proj[1]
    head = model.head[0]
    with torch.no_grad():
        bn.weight[0] *= scale
        bn.bias[0] *= scale
        head.weight[:, 0] /= scale


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    _write_blobs(root, {"train": 40, "test": 30}, seed=0)
    spec = InputSpec()
    train = load_split(root, "train", cache=False)
    x = torch.from_numpy(preprocess(train.images, spec))
    y = torch.from_numpy(np.asarray(train.labels, np.int64))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = create_model("mbnet_tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    try:
        for _ in range(25):  # a few seconds on one thread
            for idx in torch.randperm(len(x)).split(40):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    test = load_split(root, "test", cache=False)
    xt = torch.from_numpy(preprocess(test.images, spec))
    with torch.no_grad():
        before = model(xt)
        _add_outlier_channel(model, OUTLIER)
        after = model(xt)
    acc = (after.argmax(1).numpy() == np.asarray(test.labels)).mean()
    assert acc > 0.7, f"the tiny network did not learn the crafted classes ({acc:.2f})"
    assert (before.argmax(1) == after.argmax(1)).all(), "the outlier changed FP32 results"
    ckpt = root / "mbnet_tiny.pt"
    save_checkpoint({"arch": "mbnet_tiny", "labels": list(FER2013_LABELS),
                     "input": spec.to_dict(), "model": model.state_dict()}, ckpt)
    return root, ckpt


def _export(broken, out, *extra):
    root, ckpt = broken
    return run_cli("fer_edge.export.cli", str(ckpt), "--out", str(out), "--int8",
                   "--int8-scheme", "symmetric", "--calib-data", str(root), "--calib-images",
                   "70", "--val-data", str(root), "--max-drop", "1", *extra)


def test_ptq_alone_breaks_the_tiny_network(broken, tmp_path):
    r = _export(broken, tmp_path / "b", "--no-sensitivity", "--force", "--per-tensor",
                "--no-latency-check")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert meta["metrics"]["int8"]["drop_points"] > 20
    assert meta["models"]["int8"]["calibration"]["per_channel"] is False
    assert meta["models"]["int8"]["calibration"]["fp32_nodes"] == []
    assert "sensitivity" not in meta["models"]["int8"] and "latency" not in meta


def _dequantized_inputs(model, node_name: str) -> list[str]:
    """The inputs of ``node_name`` that come out of a DequantizeLinear."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [i for i in node.input if i in dq]


def _quantized_tensors(model) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_sensitivity_pass_keeps_the_outlier_tensor_in_fp32(broken, tmp_path):
    root, _ = broken
    r = _export(broken, tmp_path / "b")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"; int8 keeps [1-4] node\(s\) in FP32; int8 batch-1 latency x", r.stdout)
    b = load_bundle(tmp_path / "b")
    entry, metric = b.models["int8"], b.metrics["int8"]
    sens = entry["sensitivity"]
    assert sens["holds"] and sens["drop_before"] > 20 and metric["drop_points"] <= 1
    assert metric["drop_points"] == sens["drop_after"]
    # The fewest: the projection's output (the outlier tensor) is what is kept in FP32.
    fp32 = onnx.load(str(b.model_path("fp32")))
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    head = convs[-1]
    proj = next(n for n in fp32.graph.node if head.input[0] in n.output)
    assert sens["fp32_tensors"][0]["tensor"] == head.input[0]
    assert len(sens["fp32_tensors"]) <= 2
    nodes = entry["calibration"]["fp32_nodes"]
    assert {proj.name, head.name} <= set(nodes) and len(nodes) <= 4
    # ... and really is FP32 in the written model, while the rest stays INT8.
    int8 = onnx.load(str(b.model_path("int8")))
    assert head.input[0] not in _quantized_tensors(int8)
    assert _dequantized_inputs(int8, head.name) == []
    assert proj.input[1] not in _dequantized_inputs(int8, proj.name)  # FP32 weights
    assert len(_dequantized_inputs(int8, convs[0].name)) == 2  # the stem: input and weight
    # The recorded accuracy is the written model's.
    test = load_split(root, "test", cache=False)
    rep = evaluate(OrtBackend(b.model_path("int8")), test, preprocess(test.images, b.input))
    assert rep["accuracy"] == metric["accuracy"]
    lat = b.meta["latency"]
    assert lat["batch"] == 1 and set(lat["p50_ms"]) == {"fp32", "int8"}
    assert lat["int8_no_slower"]["int8"] == (lat["ratio_vs_fp32"]["int8"] <= lat["tolerance"])


def test_channel_sqnr_sees_crushed_channels_the_tensor_wide_sqnr_hides():
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 5, 5)).astype(np.float32)
    x[:, 0] *= 1000  # one huge channel sets the scale ...
    step = np.abs(x).max() / 127
    q = np.round(x / step) * step  # ... and the other seven round to (almost) zero
    assert compute_signal_to_quantization_noice_ratio([x.ravel()], [q.ravel()]) > 35
    assert channel_sqnr([x.ravel()], [q.ravel()], channels=8, batch=4) < 10
    fine = np.round(x / 1e-3) * 1e-3
    assert channel_sqnr([x.ravel()], [fine.ravel()], channels=8, batch=4) > 35


@pytest.mark.parametrize(("needed", "n"), [(1, 10), (5, 16), (16, 16), (3, 3), (7, 32)])
def test_search_finds_the_fewest_tensors_in_few_trials(needed, n):
    calls = []

    def trial(k):
        calls.append(k)
        return 0.5 if k >= needed else 5.0

    res = search(n, trial, max_drop=1.0)
    assert res.holds and res.k == needed and res.drop == 0.5
    assert len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(n)) + 2


def test_search_without_a_solution_gives_up_after_one_trial():
    calls = []
    res = search(16, lambda k: calls.append(k) or 3.0, max_drop=1.0)
    assert not res.holds and res.k == 16 and res.drop == 3.0 and calls == [16]


def test_int8_ops_conv_dense_leaves_elementwise_and_depthwise_in_fp32(tmp_path):
    from fer_edge.export.onnx_export import export_onnx
    from fer_edge.export.quantize import depthwise_convs, quantize_int8

    spec = InputSpec()
    export_onnx(create_model("mbnet_tiny").eval(), spec, tmp_path / "m.onnx")
    calib = np.random.default_rng(0).random((16, 1, 48, 48), np.float32)
    dw = depthwise_convs(tmp_path / "m.onnx")
    assert len(dw) == 3  # one per MBConv block
    runs = {}
    for ops in ("all", "conv-dense"):
        rec = quantize_int8(tmp_path / "m.onnx", tmp_path / f"{ops}.onnx", calib, "minmax",
                            ops=ops)
        assert rec["ops"] == ops and rec["fp32_nodes"] == []
        runs[ops] = onnx.load(str(tmp_path / f"{ops}.onnx"))
    assert all(_dequantized_inputs(runs["all"], n) for n in dw)
    assert not any(_dequantized_inputs(runs["conv-dense"], n) for n in dw)
    # SiLU's and SE's Mul/Add are no longer quantised: far fewer Q/DQ pairs.
    assert len(_quantized_tensors(runs["conv-dense"])) < 0.6 * len(_quantized_tensors(runs["all"]))
    dense = [n.name for n in runs["conv-dense"].graph.node if n.op_type == "Conv"
             and n.name not in dw]
    assert all(len(_dequantized_inputs(runs["conv-dense"], n)) == 2 for n in dense)
