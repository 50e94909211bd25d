"""Issue 21: crops framed from five landmarks (and rotated so the eyes are level), recorded in
bundle.json ``crop``, in the one shared ``preprocess.crop_box`` path; the score threshold for
stills; the score-weighted choice of a photo's main face."""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import run_cli

from fer_edge.benchmarks.endtoend import main_detection
from fer_edge.edge.bundle import default_bundle_path, load_bundle
from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
from fer_edge.edge.detection.framing import _eye_cascade, eye_pair
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.pipeline import Pipeline
from fer_edge.edge.preprocess import FER2013_EYES, CropSpec, crop_box, landmark_square

LANDMARKS = CropSpec(0.075, True, FER2013_EYES[0], FER2013_EYES[1], align=False)
ALIGNED = dataclasses.replace(LANDMARKS, align=True)


def dots(shape, points) -> np.ndarray:
    img = np.zeros(shape, np.uint8)
    for x, y in points:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, 255, -1)
    return img


def blobs(img: np.ndarray) -> np.ndarray:
    """Centroids of the bright blobs, left to right."""
    _, _, _, cents = cv2.connectedComponentsWithStats((img > 127).astype(np.uint8))
    return cents[1:][np.argsort(cents[1:, 0])]


def face_points(cx=200.0, cy=150.0, eye=60.0, angle=0.0):
    """Five landmarks of a frontal face turned by ``angle`` degrees in the image."""
    pts = np.array([[-eye / 2, 0], [eye / 2, 0], [0, 0.5 * eye], [-0.4 * eye, eye * 1.15],
                    [0.4 * eye, eye * 1.15]])
    t = np.radians(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return pts @ rot.T + [cx, cy]


def test_aligned_crop_puts_level_eyes_where_fer2013_has_them():
    lms = face_points(angle=25.0)
    img = dots((400, 400), lms[:2])
    crop = crop_box(img, (0, 0, 1, 1), landmarks=lms, spec=ALIGNED)
    side = crop.shape[0]
    (lx, ly), (rx, ry) = blobs(crop)
    assert crop.shape[0] == crop.shape[1]
    assert abs(ly - ry) < 1.5  # level after the rotation
    assert (rx - lx) / side == pytest.approx(FER2013_EYES[0], abs=0.01)
    assert (ly + ry) / 2 / side == pytest.approx(FER2013_EYES[1], abs=0.01)
    assert (lx + rx) / 2 / side == pytest.approx(0.5, abs=0.01)
    # without align the same face keeps its tilt (the eyes are not level)
    tilted = blobs(crop_box(img, (0, 0, 1, 1), landmarks=lms, spec=LANDMARKS))
    assert abs(tilted[0, 1] - tilted[1, 1]) > 10


def test_turned_face_keeps_its_size_from_the_mouth():
    """Yaw shrinks the eye distance; the eye-to-mouth height keeps the crop the face's size."""
    front = face_points()
    turned = front.copy()
    turned[:, 0] = 200 + (turned[:, 0] - 200) * 0.4
    a, b = landmark_square(front, LANDMARKS), landmark_square(turned, LANDMARKS)
    assert b[2] == pytest.approx(a[2], rel=0.15)


def test_without_landmark_keys_or_landmarks_the_box_framing_is_unchanged():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400, 3), np.uint8)
    box = (150, 90, 80, 96)
    old = crop_box(img, box, 0.075, True)
    old_bundle = CropSpec.from_dict({"margin": 0.075, "square": True})
    assert old_bundle.eye_distance is None and not old_bundle.align
    lms = face_points()
    assert np.array_equal(crop_box(img, box, landmarks=lms, spec=old_bundle), old)
    assert np.array_equal(crop_box(img, box, spec=ALIGNED), old)  # Haar: no landmarks
    bad = lms.copy()
    bad[0, 0] = np.nan
    assert np.array_equal(crop_box(img, box, landmarks=bad, spec=ALIGNED), old)


def test_crop_block_round_trips_and_bad_values_are_refused(tmp_path):
    assert CropSpec.from_dict(ALIGNED.to_dict()) == ALIGNED
    shipped = default_bundle_path()
    for crop, words in (({"margin": 0.075, "landmarks": {"eye_distance": float("nan"),
                                                          "eye_y": 0.38}}, "crop.landmarks"),
                        ({"margin": 0.075, "landmarks": {"eye_distance": 0.37}},
                         "crop.landmarks"),
                        ({"margin": 0.075, "align": "yes"}, "crop.align"),
                        ({"margin": "wide"}, "crop.margin")):
        b = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        b.mkdir()
        meta = json.loads((shipped / "bundle.json").read_text())
        meta["crop"] = crop
        meta["models"] = {"int8_cpu": meta["models"]["int8_cpu"]}
        shutil.copy(shipped / meta["models"]["int8_cpu"]["file"], b)
        (b / "bundle.json").write_text(json.dumps(meta))
        with pytest.raises(FerEdgeError) as e:
            load_bundle(b)
        assert str(b / "bundle.json") in str(e.value) and words in str(e.value)


def test_shipped_detector_landmark_crops_match_fer2013_eyes(video):
    """Our detector's landmarks on the shared video, framed by the shipped bundle: OpenCV's eye
    cascade finds the eyes in the crops where FER2013 has them (the calibration's own measure)."""
    bundle = load_bundle()
    assert bundle.crop.eye_distance is not None  # the shipped bundle frames from landmarks
    det = source_detector(False, "ours", bundle_detector_model(bundle, "ours", None))
    cap = cv2.VideoCapture(str(video))
    eye, found = _eye_cascade(), []
    for _ in range(0, 71, 10):
        for _ in range(10):
            ok, frame = cap.read()
        if not ok:
            break
        faces = det(frame)
        assert faces and faces[0].landmarks is not None
        d = max(faces, key=lambda f: f.box[2])
        crop = crop_box(frame, d.box, landmarks=d.landmarks, spec=bundle.crop)
        pair = eye_pair(cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (192, 192)), eye)
        if pair:
            found.append(pair)
    cap.release()
    assert len(found) >= 3
    dist, height = np.median(found, axis=0)
    assert dist == pytest.approx(FER2013_EYES[0], abs=0.06)
    assert height == pytest.approx(FER2013_EYES[1], abs=0.06)


def test_pipeline_classifies_the_landmark_crop(video):
    """The loop's crop is crop_box with the track's landmarks and the bundle's spec: the same
    probabilities as classifying that crop directly."""
    from fer_edge.edge.metrics import softmax
    from fer_edge.edge.preprocess import preprocess

    bundle = load_bundle()
    det = source_detector(True, "ours", bundle_detector_model(bundle, "ours", None))
    pipe = Pipeline(bundle, "int8", threads=1, detector=det, smooth=None, max_faces=1)
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    r = pipe(frame)
    assert r.faces and r.faces[0].landmarks is not None and 0 < r.faces[0].det_score <= 1
    d = max(det(frame), key=lambda f: f.box[2] * f.box[3])
    x = preprocess([crop_box(frame, d.box, landmarks=d.landmarks, spec=bundle.crop)],
                   bundle.input)
    want = softmax(pipe.classifier(x).astype(np.float32))[0]
    np.testing.assert_allclose(r.faces[0].raw_probs, want, atol=1e-5)
    assert "det_score" in r.faces[0].to_dict(pipe.labels)


def test_score_weighted_main_face_prefers_a_sure_face_over_a_big_doubtful_box():
    dets = [((0, 0, 100, 100), "happy", 0.36), ((200, 0, 80, 80), "sad", 0.9)]
    assert main_detection(dets, "largest")[1] == "happy"
    assert main_detection(dets, "score")[1] == "sad"
    assert main_detection([((0, 0, 10, 10), "sad")], "score")[1] == "sad"  # a peer: no score
    with pytest.raises(FerEdgeError, match="--main-face"):
        main_detection(dets, "biggest")


def test_detector_threshold_is_checked_and_reaches_our_detector():
    bundle = load_bundle()
    model = bundle_detector_model(bundle, "ours", None)
    assert source_detector(True, "ours", model, score_threshold=0.6).score_threshold == 0.6
    for bad in (float("nan"), 0.0, 1.5):
        with pytest.raises(FerEdgeError, match="--detector-threshold"):
            source_detector(True, "ours", model, score_threshold=bad)
    with pytest.raises(FerEdgeError, match="haar detector has no score"):
        source_detector(True, "haar", score_threshold=0.5)


def test_cli_refuses_a_bad_detector_threshold():
    r = run_cli("fer_edge.edge.cli", "run", "--demo", "--detector", "haar",
                "--detector-threshold", "0.5", "--no-display", timeout=120)
    assert r.returncode != 0 and "--detector-threshold" in r.stderr
    assert "Traceback" not in r.stderr


def test_calibrate_landmarks_gives_the_shipped_framing(fer2013, video):
    """`fer-edge calibrate-margin --landmarks` on FER2013 and the shared video: the JSON it
    prints is (on fewer FER2013 faces) the crop.landmarks the shipped bundle records."""
    r = run_cli("fer_edge.edge.cli", "calibrate-margin", "--data", str(fer2013), "--source",
                str(video), "--landmarks", "--images", "600", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    shipped = load_bundle().crop
    assert got["eye_distance"] == pytest.approx(shipped.eye_distance, abs=0.03)
    assert got["eye_y"] == pytest.approx(shipped.eye_y, abs=0.03)
    bad = run_cli("fer_edge.edge.cli", "calibrate-margin", "--data", str(fer2013), "--source",
                  str(video.parent / "missing.avi"), "--landmarks", timeout=60)
    assert bad.returncode == 1 and "missing.avi" in bad.stderr
    assert "Traceback" not in bad.stderr
