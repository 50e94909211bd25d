"""The face detector: data, targets, decoding/NMS, a tiny training run, export to FP32 + INT8
ONNX with the AP gate, and ``--detector ours`` in the edge loop with landmarks in the JSONL.
Images are synthetic 'faces' drawn at known boxes and landmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli

from fer_edge.edge.bundle import default_bundle_path
from fer_edge.edge.detection.choose import make_detector
from fer_edge.edge.detection.metrics import DetectionScorer
from fer_edge.edge.detection.ours import FLIP_ORDER, OurDetector, decode, nms, priors
from fer_edge.edge.errors import FerEdgeError
from fer_edge.train.detector.data import build_targets, hflip, load_labels


def draw_face(img: np.ndarray, x: int, y: int, s: int) -> list[float]:
    """A face-like pattern with its box at (x, y, s, s); returns the 15-value label row."""
    cv2.ellipse(img, (x + s // 2, y + s // 2), (s // 2, s // 2), 0, 0, 360, (120, 160, 210), -1)
    pts = [(x + 0.3 * s, y + 0.38 * s), (x + 0.7 * s, y + 0.38 * s), (x + 0.5 * s, y + 0.55 * s),
           (x + 0.35 * s, y + 0.75 * s), (x + 0.65 * s, y + 0.75 * s)]
    for i, (px, py) in enumerate(pts):
        r = max(1, s // 12) if i < 2 else max(1, s // 20)
        cv2.circle(img, (int(px), int(py)), r, (40, 30, 30), -1)
    cv2.line(img, (int(pts[3][0]), int(pts[3][1])), (int(pts[4][0]), int(pts[4][1])),
             (40, 30, 90), max(1, s // 20))
    return [x, y, x + s, y + s, *[v for p in pts for v in p], 1]


def invoke(module: str, *args: str) -> tuple[int, str]:
    """A real command line, run in this process (torch is imported once for the file):
    (exit code, stderr)."""
    import importlib

    from click.testing import CliRunner

    main = importlib.import_module(module).main
    r = CliRunner().invoke(main, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stderr


def make_set(root: Path, n: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = rng.integers(0, 90, (160, 192, 3)).astype(np.uint8)
        faces = []
        for k in range(2):
            s = int(rng.integers(28, 60))
            x, y = int(rng.integers(0, 192 - s)) if k == 0 else 0, int(rng.integers(0, 160 - s))
            if k == 1:
                x = min(192 - s, faces[0][2] + 4) if faces[0][2] + 4 + s <= 192 else 0
                if x == 0:
                    continue
            faces.append(draw_face(img, x, y, s))
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), img)
        rows.append({"image": f"images/{i}.jpg", "faces": faces})
    for name, part in (("train.jsonl", rows), ("val_wider.jsonl", rows[:4])):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(dataset, run folder, detector bundle): a tiny run and its export, shared."""
    root = tmp_path_factory.mktemp("det")
    data = make_set(root / "data")
    run = root / "run"
    code, err = invoke("fer_edge.train.detector.cli", "--data", str(data), "--img-size", "128",
                       "--epochs", "2", "--samples-per-epoch", "16", "--batch-size", "8",
                       "--threads", "1", "--val-size", "192", "--out", str(run))
    assert code == 0, err[-2000:]
    bundle = root / "detector"
    code, err = invoke("fer_edge.export.cli", str(run / "last.pt"), "--out", str(bundle),
                       "--int8", "--calib-data", str(data), "--calib-images", "8", "--val-data",
                       str(data / "val_wider.jsonl"), "--max-drop", "100")
    assert code == 0, err[-2000:]
    return data, run, bundle


def test_training_run_writes_resumable_outputs(trained):
    data, run, _ = trained
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "detect" and len(m["history"]) == 2
    assert {"val_ap50", "val_recall_at_0.1fppi", "train_lm"} <= set(m["history"][0])
    assert (run / "curves.png").stat().st_size > 1000 and (run / "best.pt").is_file()
    code, err = invoke("fer_edge.train.detector.cli", "--data", str(data), "--resume",
                       str(run / "last.pt"), "--epochs", "3")
    assert code == 0, err[-2000:]
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 3


def test_export_fp32_int8_bundle_runs_in_onnxruntime(trained):
    _, _, bundle = trained
    meta = json.loads((bundle / "detector.json").read_text())
    assert set(meta["models"]) == {"fp32", "int8"}
    assert {"ap50", "recall_at_0.1fppi"} <= set(meta["metrics"]["int8"])
    assert "ap50_drop_points" in meta["metrics"]["int8"]
    img = np.zeros((150, 200, 3), np.uint8)
    draw_face(img, 60, 40, 50)
    for precision in ("fp32", "int8"):
        det = OurDetector(bundle, max_width=200, precision=precision, score_threshold=0.0)
        boxes, scores, lms = det.detect_raw(img, 200, 0.0)
        assert len(boxes) and lms.shape[1:] == (5, 2) and np.isfinite(boxes).all()
        assert (scores >= 0).all() and (scores <= 1).all()


def test_export_gate_refuses_int8_over_max_drop(trained, tmp_path):
    data, run, _ = trained
    code, err = invoke("fer_edge.export.cli", str(run / "last.pt"), "--out",
                       str(tmp_path / "b"), "--int8", "--calib-data", str(data),
                       "--calib-images", "8", "--val-data", str(data / "val_wider.jsonl"),
                       "--max-drop", "-1")
    assert code == 1 and "exceeds --max-drop" in err
    assert err.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_loop_with_ours_writes_landmarks(trained, tmp_path):
    data, _, bundle = trained
    from fer_edge.edge.pipeline import Pipeline

    det = make_detector("ours", str(bundle), 320, score_threshold=0.0)
    pipe = Pipeline(None, "int8", threads=1, detector=det, max_faces=2)
    img = cv2.imread(str(data / "images" / "0.jpg"))
    res = pipe(img)
    assert res.faces
    row = res.faces[0].to_dict(pipe.labels)
    assert len(row["landmarks"]) == 5 and all(len(p) == 2 for p in row["landmarks"])
    # the CLI end to end: a folder of images, JSONL out
    out = tmp_path / "o.jsonl"
    r = run_cli("fer_edge.edge.cli", "run", "--source", str(data / "images"), "--detector",
                "ours", "--detector-model", str(bundle), "--jsonl", str(out), "--quiet",
                "--no-display", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 10


def test_decode_and_nms_recover_known_boxes():
    pri = priors(64, 96)
    pred = np.zeros((len(pri), 15), np.float32)
    want = np.array([[10, 12, 40, 44], [50, 8, 90, 60]], np.float32)
    for b in want:  # three neighbouring cells vote for each box, with different scores
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        near = np.argsort((pri[:, 0] - cx) ** 2 + (pri[:, 1] - cy) ** 2 + 1e3 * (pri[:, 2] != 8))
        for rank, i in enumerate(near[:3]):
            px, py = pri[i, :2]
            pred[i, 0] = 0.9 - 0.1 * rank
            pred[i, 1:5] = [px - b[0], py - b[1], b[2] - px, b[3] - py]
            pred[i, 5:15] = np.tile([cx - px, cy - py], 5)
    boxes, scores, lms = decode(pred, pri, 0.5)
    assert len(boxes) == 6
    keep = nms(boxes, scores, 0.4)
    assert len(keep) == 2
    got = boxes[keep][np.argsort(boxes[keep][:, 0])]
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(lms[keep][:, 0], (want[np.argsort(want[:, 0])][:, :2]
                                                + want[:, 2:]) / 2, atol=1e-4)
    with pytest.raises(FerEdgeError, match="expected"):
        decode(pred[:-1], pri)


def test_targets_decode_back_to_the_face():
    row = np.array([draw_face(np.zeros((128, 128, 3), np.uint8), 30, 20, 60)], np.float32)
    t = build_targets(row, 128)
    pos = np.where(t["cls"] > 0)[0]
    pri = priors(128, 128)
    assert len(pos) and set(pri[pos, 2]) == {16}  # a 60 px face goes to stride 16
    pred = np.zeros((len(pri), 15), np.float32)
    px, py = pri[pos, 0:1], pri[pos, 1:2]
    b = t["box"][pos]
    pred[pos, 0] = 1
    pred[pos, 1:5] = np.concatenate([px - b[:, :1], py - b[:, 1:2], b[:, 2:3] - px,
                                     b[:, 3:4] - py], 1)
    pred[pos, 5:15] = (t["lm"][pos].reshape(-1, 5, 2) - pri[pos, None, :2]).reshape(-1, 10)
    boxes, _, lms = decode(pred, pri, 0.5)
    np.testing.assert_allclose(boxes[0], row[0, :4], atol=1e-3)
    np.testing.assert_allclose(lms[0].ravel(), row[0, 4:14], atol=1e-3)
    tiny = build_targets(np.array([[5, 5, 9, 9, *[0] * 10, 0]], np.float32), 128)
    assert tiny["cls"].sum() == 0 and tiny["weight"].min() == 0  # ignored, not negative


def test_flip_swaps_left_and_right_landmarks():
    img = np.zeros((100, 120, 3), np.uint8)
    row = np.array([draw_face(img, 20, 10, 50)], np.float32)
    flipped, f = hflip(img, row)
    lm, lm0 = f[0, 4:14].reshape(5, 2), row[0, 4:14].reshape(5, 2)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left eye/mouth still on the left
    np.testing.assert_allclose(lm[:, 0], 120 - lm0[list(FLIP_ORDER), 0])
    np.testing.assert_allclose(f[0, :4], [120 - 70, 10, 120 - 20, 60])
    # the pixels agree: the flipped image's left-eye landmark sits on a dark eye
    x, y = int(lm[0, 0]), int(lm[0, 1])
    assert flipped[y, x].sum() < 150
    none = np.array([[1, 1, 9, 9, *[0] * 10, 0]], np.float32)
    assert (hflip(img, none)[1][0, 4:14] == 0).all()  # unknown landmarks stay unknown


def test_scorer_ap_recall_and_landmark_error():
    sc = DetectionScorer(min_face=10)
    gt = np.array([[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 84, 84]], np.float32)
    gl = np.full((3, 5, 2), np.nan, np.float32)
    gl[0] = [[5, 5], [15, 5], [10, 10], [6, 15], [14, 15]]
    det = np.array([[0, 0, 20, 20], [100, 100, 120, 120], [80, 80, 84, 84]], np.float32)
    sc.add(gt, det, np.array([0.9, 0.8, 0.7]), gl, np.repeat(gl[:1] + 1, 3, 0))
    r = sc.result(fppi=1.0)
    assert r["faces"] == 2  # the 4 px face is ignored, and so is its detection
    assert r["recall_at_1fppi"] == 0.5 and r["ap50"] == 0.5
    assert r["landmark_nme"] == pytest.approx(np.sqrt(2) / 10, abs=1e-4)
    assert sc.at(0.85) == {"recall": 0.5, "false_per_image": 0.0, "score_threshold": 0.85}


def test_bad_inputs_name_the_file(tmp_path):
    data = make_set(tmp_path / "d", n=3)
    code, err = invoke("fer_edge.train.detector.cli", "--data", str(tmp_path / "nope"),
                       "--out", str(tmp_path / "r"))
    assert code == 1 and f"--data {tmp_path / 'nope'}: not found" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    (data / "images" / "1.jpg").write_bytes(b"not a jpeg")
    code, err = invoke("fer_edge.train.detector.cli", "--data", str(data), "--img-size", "64",
                       "--epochs", "1", "--samples-per-epoch", "4", "--batch-size", "4",
                       "--threads", "1", "--val-size", "64", "--out", str(tmp_path / "r"))
    assert code == 1 and "1.jpg: not a readable image" in err
    assert err.strip().splitlines()[-1].startswith("error:")
    (data / "train.jsonl").write_text('{"image": "images/0.jpg", "faces": [[1, 2]]}\n')
    with pytest.raises(FerEdgeError, match=r"train.jsonl:1: not a face label row"):
        load_labels(data / "train.jsonl")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(FerEdgeError, match="bad.onnx: onnxruntime cannot load"):
        OurDetector(bad)
    with pytest.raises(FerEdgeError, match="no detector.json"):
        OurDetector(tmp_path)
    # a bundle without a "detector" folder and no --detector-model: the shipped detector
    plain = tmp_path / "plain_bundle"
    shutil.copytree(default_bundle_path(), plain, ignore=shutil.ignore_patterns("detector"))
    meta = json.loads((plain / "bundle.json").read_text())
    meta.pop("detector", None)
    (plain / "bundle.json").write_text(json.dumps(meta))
    r = run_cli("fer_edge.edge.cli", "run", "--source", str(data / "images" / "0.jpg"),
                "--model", str(plain), "--detector", "ours", "--no-display", timeout=60)
    assert r.returncode == 0 and "detector ours" in r.stderr, r.stderr[-2000:]


def test_shipped_bundle_carries_our_detector(video, tmp_path):
    """`--detector ours` with no --detector-model runs the shipped bundle's detector folder and
    writes the five landmarks; the face is found on every frame of the shared video."""
    r = run_cli("fer_edge.edge.cli", "run", "--source", str(video), "--detector", "ours",
                "--no-display", "-q", "--jsonl", str(tmp_path / "o.jsonl"), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows and all(len(row["faces"]) == 1 for row in rows)
    assert all(len(row["faces"][0]["landmarks"]) == 5 for row in rows)


def test_sigterm_leaves_a_resumable_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = make_set(tmp_path / "d", n=4)
    run = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "fer_edge.train.detector.cli", "--data",
                          str(data), "--img-size", "64", "--epochs", "500",
                          "--samples-per-epoch", "8", "--batch-size", "4", "--threads", "1",
                          "--val-size", "64", "--out", str(run)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "train.log").is_file():
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert "--resume" in out + err and "Traceback" not in err
    from fer_edge.train.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt")["epoch"] >= 1
