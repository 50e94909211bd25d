"""End-to-end scoring on labelled uncropped images (fer-bench's real-world mode), with real
Haar detection and the shipped model on frames of the shared video written as photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.benchmarks.endtoend import evaluate_end_to_end, read_labelled_images
from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.pipeline import Pipeline


@pytest.fixture(scope="module")
def photos(video, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Class folders (one nested a level deeper) with the video's last frame (angry), a
    blank image (no face) and a truncated file; returns the root and the last frame."""
    root = tmp_path_factory.mktemp("photos")
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(71)]
    cap.release()
    last = frames[-1]
    (root / "angry" / "set1").mkdir(parents=True)
    (root / "happy").mkdir()
    cv2.imwrite(str(root / "angry" / "set1" / "a.jpg"), last)
    cv2.imwrite(str(root / "happy" / "blank.png"), np.full((200, 300, 3), 127, np.uint8))
    data = (root / "angry" / "set1" / "a.jpg").read_bytes()
    (root / "happy" / "cut.jpg").write_bytes(data[:len(data) // 2])
    return root, last


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline(None, threads=1)


def test_folder_mode_scores_main_face_and_counts_misses(photos, pipe):
    root, _ = photos
    faces = read_labelled_images(root, pipe.labels)
    assert sorted(Path(f.path).name for f in faces) == ["a.jpg", "blank.png", "cut.jpg"]
    r = evaluate_end_to_end(pipe, faces)
    assert r["images"] == 3 and r["faces"] == 3
    assert r["detection_recall"] == pytest.approx(1 / 3)  # blank and truncated: no face
    assert r["accuracy_found"] == 1.0  # the angry frame is read as angry
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["unreadable"] == 1
    assert r["per_class_recall"]["angry"] == 1.0 and r["per_class_recall"]["happy"] == 0.0
    assert r["confusion_labels"][-1] == "no face"
    assert np.asarray(r["confusion"])[:, -1].sum() == 2


def test_csv_mode_matches_boxes_by_iou(photos, pipe, tmp_path):
    root, last = photos
    found = pipe(last).faces
    assert len(found) == 1
    x, y, w, h = found[0].box
    csv_file = tmp_path / "labels.csv"
    img = root / "angry" / "set1" / "a.jpg"
    csv_file.write_text("\ufeffimage,x1,y1,x2,y2,label\n"  # a BOM, as Excel writes it
                        f"{img},{x},{y},{x + w},{y + h},anger\n"
                        f"{img},0,0,40,40,happy\n")  # a corner with no face: a miss
    faces = read_labelled_images(csv_file, pipe.labels)
    r = evaluate_end_to_end(pipe, faces)
    assert r["images"] == 1 and r["faces"] == 2
    assert r["detection_recall"] == 0.5 and r["accuracy_found"] == 1.0
    assert r["false_detections_per_image"] == 0.0


@pytest.mark.parametrize("content, words", [
    ("image,x1,y1,x2,y2,label\na.jpg,1,2,3\n", "row 2: 4 fields"),
    ("a.jpg,1,2,x,4,angry\n", "not numeric"),
    ("a.jpg,1,2,3,4,bored\n", "'bored' is not one of"),
    ("a.jpg,5,5,1,1,angry\n", "empty box"),
    ("image,x1,y1,x2,y2,label\n", "no labelled faces"),
])
def test_bad_csv_rows_are_named(tmp_path, content, words):
    f = tmp_path / "l.csv"
    f.write_text(content)
    with pytest.raises(FerEdgeError, match=words):
        read_labelled_images(f, load_bundle().labels)


def test_run_on_class_folders_is_recursive_and_writes_relpath(photos, tmp_path):
    from conftest import run_cli

    root, _ = photos
    out = tmp_path / "out.jsonl"
    r = run_cli("fer_edge.edge.cli", "run", "--source", str(root), "--jsonl", str(out),
                "--no-display", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    rows = {rec["relpath"]: rec for rec in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["angry/set1/a.jpg", "happy/blank.png"]  # cut.jpg: skipped, named
    assert rows["angry/set1/a.jpg"]["faces"][0]["label"] == "angry"
    assert rows["happy/blank.png"]["faces"] == []
    assert "cut.jpg" in r.stderr


def test_fer_bench_realworld_mode(photos, tmp_path):
    import json

    from conftest import run_cli

    root, _ = photos
    out = tmp_path / "bench"
    r = run_cli("fer_edge.benchmarks.cli", "--realworld", str(root), "--precision", "int8",
                "--threads", "1", "--batch-sizes", "1", "--warmup-s", "0", "--min-runs", "5",
                "--min-seconds", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    (e,) = json.loads((out / "results.json").read_text())["endtoend"]
    assert e["precision"] == "int8" and e["faces"] == 3 and e["unreadable"] == 1
    assert e["detection_recall"] == pytest.approx(1 / 3) and e["accuracy_found"] == 1.0
    assert "End to end on labelled photos" in (out / "report.md").read_text()
    bad = run_cli("fer_edge.benchmarks.cli", "--realworld", str(tmp_path / "nope.csv"),
                  "--out", str(tmp_path / "b2"))
    assert bad.returncode == 1 and "nope.csv" in bad.stderr and "Traceback" not in bad.stderr
