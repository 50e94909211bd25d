"""fer-export end to end: a tiny freshly trained checkpoint -> FP32 + INT8 bundle, read back
by the edge reader and run with real onnxruntime sessions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, run_cli

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("onnx", reason="the [export] extra is not installed")

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.data import load_split
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import OrtBackend, predict_logits
from fer_edge.edge.inference.tensorrt.runtime import tensorrt_unavailable_reason
from fer_edge.edge.preprocess import InputSpec, preprocess
from fer_edge.train.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from fer_edge.train.models import create_model


@pytest.fixture(scope="module")
def trained(fer2013, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    r = run_cli("fer_edge.train.cli", "--data", str(fer2013), "--arch", "fercnn_s", "--limit",
                "3000", "--val-limit", "300", "--epochs", "1", "--optimizer", "adamw", "--lr",
                "0.003", "--warmup-epochs", "0", "--threads", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "best.pt"


@pytest.fixture(scope="module")
def bundle_dir(trained, fer2013, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    r = run_cli("fer_edge.export.cli", str(trained), "--out", str(out), "--int8",
                "--calib-data", str(fer2013), "--calib-images", "256", "--val-data",
                str(fer2013), "--max-drop", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_bundle_reads_back_and_records_metrics(bundle_dir):
    b = load_bundle(bundle_dir)
    assert set(b.models) == {"fp32", "fp16", "int8", "int8_cpu"}
    assert b.models["int8"]["calibration"]["symmetric"] is True
    assert b.models["int8_cpu"]["calibration"]["symmetric"] is False
    assert b.models["int8"]["calibration"]["images"] == 256
    assert b.metrics["fp32"]["split"] == "test" and 0 < b.metrics["fp32"]["accuracy"] <= 1
    assert abs(b.metrics["int8"]["drop_points"] - 100 * (
        b.metrics["fp32"]["accuracy"] - b.metrics["int8"]["accuracy"])) < 1e-9
    assert b.model_path("int8").stat().st_size < b.model_path("fp32").stat().st_size / 3
    assert not list(bundle_dir.parent.glob(".b.*")), "temporary folder left behind"


def test_bundle_files_get_ordinary_permissions(bundle_dir):
    """Not tempfile's private 0600/0700: an installed bundle must be readable by every user."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert bundle_dir.stat().st_mode & 0o777 == 0o777 & ~mask
    for f in bundle_dir.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f.name


def test_onnx_matches_pytorch_and_int8_agrees(bundle_dir, trained, fer2013):
    b = load_bundle(bundle_dir)
    faces = load_split(fer2013, "test").images[:300]
    x = preprocess(faces, b.input)
    model = build_from_checkpoint(load_checkpoint(trained))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    fp32 = predict_logits(OrtBackend(b.model_path("fp32")), x)
    int8 = predict_logits(OrtBackend(b.model_path("int8")), x)
    np.testing.assert_allclose(fp32, ref, atol=1e-4)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() > 0.9


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_corrupt_missing_and_tampered_bundles(bundle_dir, tmp_path):
    d = _copy(bundle_dir, tmp_path)
    data = bytearray((d / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(FerEdgeError, match=r"model\.int8\.onnx: sha256 does not match"):
        load_bundle(d)
    (d / "model.int8.onnx").unlink()
    with pytest.raises(FerEdgeError, match=r"model\.int8\.onnx: model file .* missing"):
        load_bundle(d)

    d2 = _copy(bundle_dir, tmp_path / "2")
    meta = json.loads((d2 / "bundle.json").read_text())
    meta["models"]["fp32"]["sha256"] = "0" * 64
    (d2 / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(FerEdgeError, match=r"model\.onnx: sha256"):
        load_bundle(d2)
    del meta["labels"]
    (d2 / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(FerEdgeError, match="missing key.*labels"):
        load_bundle(d2)
    (d2 / "bundle.json").write_text("{not json")
    with pytest.raises(FerEdgeError, match="bundle.json: invalid JSON"):
        load_bundle(d2)
    with pytest.raises(FerEdgeError, match="not found"):
        load_bundle(tmp_path / "nothing")


def test_accuracy_gate_refuses_then_force_keeps(trained, fer2013, tmp_path):
    args = [str(trained), "--int8", "--calib-data", str(fer2013), "--calib-images", "64",
            "--calib-method", "minmax", "--val-data", str(fer2013), "--max-drop", "-100"]
    r = run_cli("fer_edge.export.cli", *args, "--out", str(tmp_path / "gated"))
    assert r.returncode == 1 and "exceeds --max-drop" in r.stderr
    assert not (tmp_path / "gated").exists() and not list(tmp_path.glob(".gated*"))
    r = run_cli("fer_edge.export.cli", *args, "--force", "--out", str(tmp_path / "forced"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "int8" in load_bundle(tmp_path / "forced").models


def test_other_input_size_channels_labels_and_normalisation(tmp_path):
    labels = ["happy", "sad", "neutral"]
    spec = InputSpec(height=40, width=40, channels=3, mean=(0.5, 0.4, 0.3), std=(0.25,) * 3)
    model = create_model("fercnn_s", num_classes=3, in_chans=3).eval()
    save_checkpoint({"arch": "fercnn_s", "labels": labels, "input": spec.to_dict(),
                     "model": model.state_dict(), "crop": {"margin": 0.2}}, tmp_path / "c.pt")
    r = run_cli("fer_edge.export.cli", str(tmp_path / "c.pt"), "--out", str(tmp_path / "b"),
                "--tta-flip")
    assert r.returncode == 0, r.stderr[-2000:]
    b = load_bundle(tmp_path / "b")
    assert b.labels == tuple(labels) and b.input == spec and b.crop.margin == 0.2
    faces = [np.random.default_rng(i).integers(0, 255, (90, 70, 3), np.uint8) for i in range(5)]
    x = preprocess(faces, b.input)
    assert x.shape == (5, 3, 40, 40)
    out = OrtBackend(b.model_path("fp32"))(x)
    with torch.no_grad():
        t = torch.from_numpy(x)
        p = (model(t).softmax(1) + model(t.flip(3)).softmax(1)) / 2
    np.testing.assert_allclose(np.exp(out), p.numpy(), atol=1e-4)


def test_trt_without_tensorrt_fails_clearly_but_keeps_onnx(trained, tmp_path):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here; the engine test covers it")
    r = run_cli("fer_edge.export.cli", str(trained), "--out", str(tmp_path / "b"),
                "--trt", "fp16")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: --trt")
    assert "fp32" in load_bundle(tmp_path / "b").models


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=f"TensorRT engine build: {tensorrt_unavailable_reason()}")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_engine_builds_and_matches_onnx(bundle_dir, trained, fer2013, tmp_path,
                                                 precision):
    from fer_edge.edge.inference.tensorrt.runtime import TensorRTBackend

    d = _copy(bundle_dir, tmp_path)
    from fer_edge.export.exporter import _add_engines, ExportOptions  # noqa: I001

    meta = json.loads((d / "bundle.json").read_text())
    b = load_bundle(d)
    _add_engines(d, meta, ExportOptions(out=d, trt=(precision,)), b.input)
    b = load_bundle(d)
    entry = b.models[f"trt_{precision}"]
    assert entry["tensorrt"] and entry["gpu"]
    x = preprocess(load_split(fer2013, "test").images[:64], b.input)
    ref = OrtBackend(b.model_path("fp32"))(x)
    got = TensorRTBackend(b.model_path(f"trt_{precision}"))(x)
    assert (ref.argmax(1) == got.argmax(1)).mean() > 0.9


@pytest.fixture(scope="module")
def faces_100(fer2013, tmp_path_factory):
    """Exactly 100 real FER2013 training faces in class folders (15 of six classes, 10
    disgust): the calibration sample is all of them, and 100 is not a multiple of 32."""
    root = tmp_path_factory.mktemp("faces100")
    for c in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
        (root / c).mkdir()
        for f in sorted((fer2013 / "train" / c).iterdir())[:10 if c == "disgust" else 15]:
            shutil.copy(f, root / c / f.name)
    return root


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_int8_calibration_on_100_faces(faces_100, tmp_path, method):
    """Histogram calibrators stack every calibration batch: a short last batch (100 = 3 x 32
    + 4) made them fail. The reader now feeds equal batches."""
    from fer_edge.export.exporter import ExportOptions, export_bundle
    from fer_edge.export.quantize import FaceCalibrationReader, equal_batch

    assert [equal_batch(n) for n in (100, 512, 97, 5)] == [25, 32, 1, 5]
    reader = FaceCalibrationReader(np.zeros((100, 1, 4, 4), np.float32), "input")
    sizes = [len(b["input"]) for b in iter(reader.get_next, None)]
    assert sizes == [25] * 4

    ckpt = REPO / "checkpoints" / "fercnn_s" / "best.pt"
    meta = export_bundle(str(ckpt), ExportOptions(
        out=tmp_path / "b", int8=True, calib_data=str(faces_100), calib_split="all",
        calib_images=100, calib_method=method, eval_threads=1))
    calibration = meta["models"]["int8"]["calibration"]
    assert calibration["method"] == method and calibration["images"] == 100
    b = load_bundle(tmp_path / "b")
    x = preprocess(load_split(faces_100, "train", b.labels).images, b.input)
    fp32 = predict_logits(OrtBackend(b.model_path("fp32")), x)
    int8 = predict_logits(OrtBackend(b.model_path("int8")), x)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() > 0.8
