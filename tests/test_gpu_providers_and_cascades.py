"""onnxruntime GPU provider options and fallback naming (edge.ort_providers), checked with
real onnxruntime sessions where this CPU-only machine allows; the Haar cascade lookup for
OpenCV builds without cv2.data (opencv-python 5, JetPack 7.2) with real OpenCV."""

from __future__ import annotations

import logging
import os
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.edge.bundle import default_bundle_path, sha256_file
from fer_edge.edge.detection import opencv as detect
from fer_edge.edge.detection.choose import make_detector, source_detector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference import ort_providers
from fer_edge.edge.inference.backend import OrtBackend

TRT, CUDA, CPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.fixture
def bundle(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


@pytest.fixture(autouse=True)
def user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "fer-edge"


@pytest.mark.parametrize(("file", "fp16", "int8"), [("model.fp16.onnx", True, False),
                                                    ("model.int8.onnx", True, True),
                                                    ("model.onnx", False, False)])
def test_tensorrt_ep_gets_precision_caches_and_profile(bundle, file, fp16, int8):
    sha = sha256_file(bundle / file)
    provs = ort_providers.with_options([TRT, CUDA], bundle / file, (1, 48, 48), "pixels",
                                       max_batch=16, sha256=sha)
    (trt, o), (cuda, _), cpu = provs
    assert (trt, cuda, cpu) == (TRT, CUDA, CPU)
    assert (o["trt_fp16_enable"], o["trt_int8_enable"]) == (fp16, int8)
    version = ort_providers.tensorrt_library_version()
    cache = bundle / "cache" / "ort-tensorrt" / f"{sha[:16]}-trt{version}"
    assert cache.is_dir() and o["trt_engine_cache_enable"] and o["trt_timing_cache_enable"]
    assert o["trt_engine_cache_path"] == o["trt_timing_cache_path"] == str(cache)
    assert o["trt_profile_min_shapes"] == "pixels:1x1x48x48"
    assert o["trt_profile_opt_shapes"] == "pixels:8x1x48x48"
    assert o["trt_profile_max_shapes"] == "pixels:16x1x48x48"


def test_engine_cache_is_keyed_by_weights_and_tensorrt_version(bundle, user_cache):
    """onnxruntime's own engine key ignores the weights: new weights, new folder."""
    model = bundle / "model.fp16.onnx"
    a = ort_providers.cache_dir(model, "a" * 64, "10.3.0")
    assert a != ort_providers.cache_dir(model, "b" * 64, "10.3.0")
    assert a != ort_providers.cache_dir(model, "a" * 64, "10.13.2")
    assert a == bundle / "cache" / "ort-tensorrt" / f"{'a' * 16}-trt10.3.0"
    bundle.chmod(0o555)
    try:
        if os.access(bundle, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        ro = ort_providers.cache_dir(model, "a" * 64, "10.3.0")
        assert ro == user_cache / "ort-tensorrt" / f"{'a' * 16}-trt10.3.0"
    finally:
        bundle.chmod(0o755)


def test_profile_names_the_models_real_input(tmp_path):
    import onnxruntime as ort

    from fer_edge.edge.inference.backend import _input_name

    model = _renamed_input(tmp_path, "pixels")
    assert _input_name(ort, model) == "pixels"
    assert _input_name(ort, default_bundle_path() / "model.onnx") == "input"


def _renamed_input(tmp_path, name: str) -> Path:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(default_bundle_path() / "model.onnx"))
    old = m.graph.input[0].name
    m.graph.input[0].name = name
    for node in m.graph.node:
        node.input[:] = [name if i == old else i for i in node.input]
    out = tmp_path / "renamed.onnx"
    onnx.save(m, str(out))
    return out


def test_nodes_per_provider_are_counted_from_a_profiled_run(bundle, user_cache):
    import onnx

    be = OrtBackend(bundle / "model.int8.onnx", providers=["cpu"], input_chw=(1, 48, 48),
                    count_nodes=True)
    nodes = len(onnx.load(str(bundle / "model.int8.onnx")).graph.node)
    assert set(be.placement) == {CPU} and 0 < be.placement[CPU] <= nodes
    assert not list((user_cache / "ort-profiles").iterdir()), "the profile is removed"
    assert OrtBackend(bundle / "model.onnx", providers=["cpu"]).placement == {}


def test_batches_above_the_profile_are_chunked(bundle):
    be = OrtBackend(bundle / "model.onnx", providers=["cpu"], input_chw=(1, 48, 48))
    x = np.random.default_rng(0).random((19, 1, 48, 48), np.float32)
    whole = be(x)
    be.max_batch = 8  # as with the TensorRT provider's profile of 1..8 faces
    runs: list[int] = []
    real = be.session.run
    be.session.run = lambda out, feed: runs.append(len(feed[be.input_name])) or real(out, feed)
    np.testing.assert_allclose(be(x), whole, rtol=1e-5, atol=1e-6)
    assert runs == [8, 8, 3]


def test_cpu_only_request_is_passed_through_and_named(bundle):
    assert ort_providers.with_options(["CPUExecutionProvider"], bundle / "model.onnx",
                                      (1, 48, 48)) == [CPU]
    be = OrtBackend(bundle / "model.onnx", providers=["cpu"], input_chw=(1, 48, 48))
    assert be.name == "ort:CPUExecutionProvider"
    assert be(np.zeros((2, 1, 48, 48), np.float32)).shape == (2, 7)
    assert not (bundle / "cache").exists(), "no cache folder for a CPU session"


def test_fallback_is_reported_in_the_name(caplog):
    with caplog.at_level(logging.WARNING):
        name = ort_providers.backend_name([TRT, CUDA, CPU], [CUDA, CPU])
    assert name == f"ort:{CUDA} (fallback from {TRT})"
    assert "could not start TensorrtExecutionProvider" in caplog.text
    assert ort_providers.backend_name([TRT, CUDA, CPU], [TRT, CUDA, CPU]) == f"ort:{TRT}"


def test_int8_on_cpu_means_the_asymmetric_model():
    models = {"int8": {}, "int8_cpu": {}}
    assert ort_providers.model_key(models, "int8", ["cpu"]) == "int8_cpu"
    assert ort_providers.model_key(models, "int8", ["tensorrt", "cuda"]) == "int8"
    assert ort_providers.model_key({"int8": {}}, "int8", ["cpu"]) == "int8"
    assert ort_providers.model_key(models, "fp16", None) == "fp16"


def test_unavailable_provider_is_one_clear_error(bundle):
    import onnxruntime as ort

    if TRT in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    with pytest.raises(FerEdgeError, match="TensorrtExecutionProvider.* not available in this"):
        OrtBackend(bundle / "model.fp16.onnx", providers=["tensorrt", "cuda"])


def _no_cv2_data(monkeypatch, dirs):
    monkeypatch.setattr(cv2, "data", types.SimpleNamespace(haarcascades=""), raising=False)
    monkeypatch.setattr(detect, "SYSTEM_CASCADE_DIRS", tuple(str(d) for d in dirs))


def test_cascade_found_in_a_system_opencv_folder(monkeypatch, tmp_path):
    real = Path(cv2.data.haarcascades) / detect.HAAR_CASCADE
    system = tmp_path / "usr" / "share" / "opencv4" / "haarcascades"
    system.mkdir(parents=True)
    shutil.copy(real, system)
    _no_cv2_data(monkeypatch, [tmp_path / "missing", system])
    assert detect.find_cascade() == system / detect.HAAR_CASCADE
    det = detect.HaarDetector()
    assert not det.cascade.empty()
    assert det(np.full((240, 320, 3), 128, np.uint8)) == []


def test_no_cascade_anywhere_is_one_line_saying_what_to_do(monkeypatch, tmp_path):
    _no_cv2_data(monkeypatch, [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FerEdgeError) as e:
        make_detector("haar")
    msg = str(e.value)
    assert "\n" not in msg and "haarcascade_frontalface_default.xml" in msg
    assert "opencv-python<5" in msg and "--detector yunet --detector-model" in msg


def test_opencv_without_cascade_classifier_is_one_line(monkeypatch):
    """opencv-python 5 (no contrib) has no CascadeClassifier at all."""
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(FerEdgeError, match=r"no CascadeClassifier.*opencv-python<5.*yunet"):
        detect.HaarDetector(cascade="/any/file.xml")


def test_profile_boxes_merge_with_frontal_by_nms():
    frontal = [(100, 100, 80, 80)]
    profile = [(105, 102, 78, 78), (300, 50, 60, 60), (302, 52, 60, 60)]
    assert detect._merge(frontal, profile) == [(100, 100, 80, 80), (300, 50, 60, 60)]


def test_stills_get_the_profile_cascade_and_video_does_not(video):
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    still, live = source_detector(True), source_detector(False)
    assert (still.max_width, live.max_width) == (640, 320)
    assert still.profile is not None and live.profile is None
    # the one frontal face is found once: profile boxes on it are suppressed
    boxes = [d.box for d in still(frame)]
    assert len(boxes) == 1
    frontal = source_detector(True, profile=False)(frame)
    assert detect._merge([d.box for d in frontal], boxes) == [d.box for d in frontal]
    with pytest.raises(FerEdgeError, match="--profile"):
        source_detector(True, "yunet", "x.onnx", profile=True)
    with pytest.raises(FerEdgeError, match="--detect-width 30"):
        source_detector(False, width=30)
