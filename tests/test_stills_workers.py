"""Issue 21: folders of photos over ``--workers`` processes (each its own single-thread
Pipeline), results in input order, a clean stop on SIGTERM; real OpenCV, real onnxruntime,
real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli
from procs import signal_after_lines

from fer_edge.benchmarks.endtoend import evaluate_end_to_end, read_labelled_images
from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.photos.workers import StillsRecipe, check_workers, predict_stills
from fer_edge.edge.pipeline import Pipeline


@pytest.fixture(scope="module")
def folder(video, tmp_path_factory) -> Path:
    """Class folders of frames of the shared video (a face each, changing expression), a blank
    image and a truncated file."""
    root = tmp_path_factory.mktemp("stills")
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(71)]
    cap.release()
    for i, f in enumerate(frames[::10]):
        d = root / ("angry" if i >= 4 else "neutral")
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / f"f{i:02d}.jpg"), f)
    cv2.imwrite(str(root / "neutral" / "blank.png"), np.full((120, 160, 3), 90, np.uint8))
    data = (root / "angry" / "f05.jpg").read_bytes()
    (root / "angry" / "cut.jpg").write_bytes(data[:len(data) // 2])
    return root


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_workers_give_the_rows_of_one_in_input_order(folder, tmp_path):
    outs = {}
    for n in ("1", "2"):
        outs[n] = tmp_path / f"w{n}.jsonl"
        r = run_cli("fer_edge.edge.cli", "run", "--source", str(folder), "--detector", "ours",
                    "--workers", n, "--jsonl", str(outs[n]), "--quiet", "--no-display",
                    timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "cut.jpg" in r.stderr  # the truncated file is named and skipped
    one, two = rows(outs["1"]), rows(outs["2"])
    want = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != "cut.jpg")
    assert [r["relpath"] for r in two] == want == [r["relpath"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert [(f["box"], f["label"], f["landmarks"]) for f in a["faces"]] == \
            [(f["box"], f["label"], f["landmarks"]) for f in b["faces"]]
    assert sum(bool(r["faces"]) for r in two) == 8  # every frame's face, none in the blank


def test_benchmark_scores_are_the_same_with_workers(folder):
    bundle = load_bundle()
    faces = read_labelled_images(folder, bundle.labels)
    det = {"name": "ours", "model": bundle_detector_model(bundle, "ours", None)}
    pipe = Pipeline(bundle, "int8", threads=1, detector=source_detector(True, **det))
    one = evaluate_end_to_end(pipe, faces, main_face="score")
    two = evaluate_end_to_end(None, faces, main_face="score",
                              recipe=StillsRecipe(str(bundle.path), det, {"precision": "int8"}),
                              workers=2)
    for k in ("images", "faces", "detection_recall", "accuracy", "accuracy_found",
              "false_detections_per_image", "confusion", "unreadable"):
        assert one[k] == two[k], k
    assert two["workers"] == 2 and two["wall_images_per_s"] > 0


def test_a_bad_recipe_is_one_error_before_any_worker_starts(folder):
    recipe = StillsRecipe(None, {"name": "ours", "model": str(folder)})
    with pytest.raises(FerEdgeError, match="not a face-detector bundle"):
        list(predict_stills(recipe, [str(folder / "neutral" / "f00.jpg")] * 3, workers=2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(FerEdgeError, match="--workers"):
            check_workers(bad)
    assert check_workers(None) == len(os.sched_getaffinity(0))


def test_workers_refused_where_frames_are_shown(folder, tmp_path):
    r = run_cli("fer_edge.edge.cli", "run", "--source", str(folder), "--workers", "2",
                "--save-video", str(tmp_path / "o.avi"), "--no-display", timeout=120)
    assert r.returncode == 1 and "--workers 2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.avi").exists()


def test_sigterm_stops_the_workers_and_keeps_whole_rows(folder, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    src = folder / "angry" / "f05.jpg"
    for i in range(400):  # hard links: a long folder without copying
        os.link(src, big / f"{i:04d}.jpg")
    out = tmp_path / "o.jsonl"
    code, err = signal_after_lines(
        ["fer_edge.edge.cli", "run", "--source", str(big), "--detector", "ours", "--workers",
         "2", "--jsonl", str(out), "--quiet", "--no-display"], out, 1, signal.SIGTERM)
    assert code == 130, err[-2000:]
    assert "stopped by signal" in err and "Traceback" not in err
    got = rows(out)  # every line whole JSON, the first ones of the folder, in order
    assert 1 <= len(got) < 400
    assert [r["relpath"] for r in got] == [f"{i:04d}.jpg" for i in range(len(got))]
