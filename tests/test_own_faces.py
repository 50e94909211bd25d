"""Issue 25: train on your own faces. A class-folder set without a split gets a disjoint,
stratified, seed-fixed, recorded split; validating on training images is refused; an 8-class
label set (CK+'s contempt kept) trains, exports and runs through fer-edge run and fer-bench;
``fer-edge crop`` writes the pixels the live loop classifies."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import check_cli
from conftest import write_faces

from fer_edge.edge.data import auto_split, dataset_labels, load_split, read_unsplit, resolve_labels
from fer_edge.edge.data.splits import parse_fractions
from fer_edge.edge.errors import FerEdgeError

FOLDERS = {"anger": 10, "contempt": 10, "disgust": 10, "fear": 10, "happiness": 10,
           "sadness": 10, "surprise": 10, "neutral": 10}
EIGHT = ("angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@pytest.fixture(scope="module")
def ck8(tmp_path_factory) -> Path:
    """CK+-style class folders, no split, 81 images: one exact duplicate under another name."""
    root = tmp_path_factory.mktemp("ck8") / "faces"
    write_faces(root, FOLDERS)
    shutil.copy(root / "happiness" / "003.jpg", root / "happiness" / "copy_of_003.jpg")
    return root


def _parts(root: Path, **kw) -> dict[str, list[str]]:
    return {p: load_split(root, p, EIGHT, cache=False, **kw).paths for p in ("train", "val",
                                                                              "test")}


def test_labels_auto_folds_synonyms_and_keeps_contempt(ck8, tmp_path):
    assert dataset_labels(ck8) == EIGHT == resolve_labels("auto", ck8)
    assert resolve_labels("Anger, happiness,contempt", ck8) == ("angry", "happy", "contempt")
    for bad in ("happy", "happy,joy"):  # one class; two names of one class
        with pytest.raises(FerEdgeError, match="--labels"):
            resolve_labels(bad, ck8)
    write_faces(tmp_path / "train", {"sad": 1, "anger": 1})  # Kaggle layout: its train/
    write_faces(tmp_path / "test", {"sad": 1, "happy": 1})
    assert dataset_labels(tmp_path) == ("angry", "sad")


def test_split_is_disjoint_stratified_deterministic_and_keeps_duplicates_together(ck8):
    parts = _parts(ck8)
    every = sorted(str(p) for p in ck8.rglob("*.jpg"))
    assert sorted(sum(parts.values(), [])) == every  # each image in exactly one part
    assert [len(parts[p]) for p in ("train", "val", "test")] == [65, 8, 8]
    for p in ("val", "test"):  # stratified: every class once in val and in test
        assert sorted(Path(f).parent.name for f in parts[p]) == sorted(FOLDERS)
    dup = {p for p, files in parts.items() for f in files if f.endswith("003.jpg")
           and "happiness" in f}
    assert len(dup) == 1, "an exact duplicate landed on both sides"
    assert _parts(ck8) == parts  # deterministic
    assert _parts(ck8, seed=1) != parts  # and the seed is what decides
    other = _parts(ck8, fractions=(0.6, 0.2, 0.2))
    assert [len(other[p]) for p in ("train", "val", "test")] == [49, 16, 16]


def test_split_group_keeps_a_person_on_one_side(tmp_path):
    """--split-group '^S[0-9]+': CK+ names its files by subject; a subject is never on both
    sides, whatever their expression."""
    rng = np.random.default_rng(0)
    for c in ("anger", "happy", "sad"):
        (tmp_path / c).mkdir()
        for subject in range(12):
            for frame in range(3):
                cv2.imwrite(str(tmp_path / c / f"S{subject:03d}_{c}_{frame}.png"),
                            rng.integers(0, 256, (48, 48), dtype=np.uint8))
    kw = {"fractions": (0.6, 0.2, 0.2), "group": "^S[0-9]+"}
    parts = {p: {Path(f).name[:4] for f in load_split(tmp_path, p, cache=False, **kw).paths}
             for p in ("train", "val", "test")}
    assert all(parts.values())
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"]
                or parts["val"] & parts["test"])
    assert parts["train"] | parts["val"] | parts["test"] == {f"S{i:03d}" for i in range(12)}
    with pytest.raises(FerEdgeError, match="--split-group"):
        load_split(tmp_path, "train", cache=False, group="S(")


def test_split_is_recorded(ck8):
    record = auto_split(read_unsplit(ck8, EIGHT, cache=False))[1]
    assert record["seed"] == 0 and record["fractions"] == [0.8, 0.1, 0.1]
    assert record["counts"] == {"train": 65, "val": 8, "test": 8}
    assert record["duplicate_images"] == 2
    for part, files in record["files"].items():
        assert files == sorted(str(Path(f).relative_to(ck8)) for f in _parts(ck8)[part])
        assert record["sha256"][part] == hashlib.sha256("\n".join(files).encode()).hexdigest()
    assert record["per_class"]["test"]["contempt"] == 1


def test_csv_without_usage_is_split(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))}" for i in range(70)]
    p = tmp_path / "mine.csv"
    p.write_text("emotion,pixels\n" + "\n".join(rows) + "\n")
    parts = {k: load_split(p, k, cache=False) for k in ("train", "val", "test")}
    assert [len(s) for s in parts.values()] == [56, 7, 7]
    seen = [bytes(im.tobytes()) for s in parts.values() for im in s.images]
    assert len(set(seen)) == 70  # disjoint


@pytest.mark.parametrize("text", ["0.8,0.1", "a,b,c", "0.5,0.5,0.5", "nan,0.5,0.5",
                                  "0.9,0,0.1", "-0.1,0.6,0.5"])
def test_bad_split_fractions_are_refused(text):
    with pytest.raises(FerEdgeError, match="--split"):
        parse_fractions(text)


# ------------------------------------------------------------------ fer-train, export, run

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
TINY = ["--arch", "fercnn_s", "--epochs", "1", "--batch-size", "16", "--threads", "1",
        "--no-augment"]


def test_validating_on_training_images_is_refused(ck8, tmp_path):
    kaggle = tmp_path / "kaggle"
    write_faces(kaggle / "train", dict.fromkeys(EIGHT[:3], 3))
    write_faces(kaggle / "test", dict.fromkeys(EIGHT[:3], 2), seed=1)
    usage = tmp_path / "u.csv"
    rng = np.random.default_rng(0)
    usage.write_text("emotion,pixels,Usage\n" + "\n".join(
        f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},Training"
        for i in range(20)) + "\n")
    rows = [
        ([ck8, "--labels", "auto", "--val-split", "train"], ["--val-split train", "no split"]),
        ([kaggle, "--val-split", "train"], ["also training images"]),
        ([usage, "--val-split", "train"], ["same images"]),
        ([ck8, "--labels", "auto", "--extra-data", ck8], ["also training images"]),
        ([ck8, "--split", "0.8,0.2"], ["--split", "three fractions"]),
    ]
    for n, (args, words) in enumerate(rows):
        check_cli("fer-train", ["--data", *args, *TINY, "--out", tmp_path / f"r{n}"], 1, words,
                  absent=[tmp_path / f"r{n}"])


@pytest.fixture(scope="module")
def eight(ck8, tmp_path_factory) -> dict[str, Path]:
    """--labels auto on the 8-class folder: trained, then exported to an INT8 bundle."""
    base = tmp_path_factory.mktemp("eight")
    r = check_cli("fer-train", ["--data", ck8, "--labels", "auto", *TINY, "--out",
                                base / "run"], 0, ["65 train / 8 val / 8 test", "test acc"])
    assert "no train/test split, made one" in r.stderr
    check_cli("fer-export", [base / "run" / "best.pt", "--out", base / "bundle", "--int8",
                             "--calib-data", ck8, "--calib-images", "32", "--val-data", ck8,
                             "--max-drop", "100", "--no-sensitivity"], 0, [])
    return {"run": base / "run", "bundle": base / "bundle", "base": base}


def test_eight_class_run_records_split_and_test(eight):
    m = json.loads((eight["run"] / "metrics.json").read_text())
    assert tuple(m["labels"]) == EIGHT
    assert m["split"]["counts"] == {"train": 65, "val": 8, "test": 8}
    assert m["val_images"] == 8 and m["test_images"] == 8
    assert set(m["test_report"]["per_class"]) == set(EIGHT)
    assert not set(m["split"]["files"]["train"]) & set(m["split"]["files"]["val"])
    b = json.loads((eight["bundle"] / "bundle.json").read_text())
    assert tuple(b["labels"]) == EIGHT


def test_eight_class_bundle_runs_in_the_loop_and_report(eight):
    from matplotlib import cbook

    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    out = eight["base"] / "loop"
    check_cli("fer-edge", ["run", "--model", eight["bundle"], "--source", photo, "--report",
                           out, "--no-display", "-q"], 0, [],
              exist=[out / "summary.csv", out / "summary.md", out / "frames.csv"])
    (row,) = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    (face,) = row["faces"]
    assert tuple(face["probs"]) == EIGHT and face["label"] in EIGHT
    assert abs(sum(face["probs"].values()) - 1) < 1e-3
    assert face["label"] in (out / "summary.csv").read_text()


def test_eight_class_bundle_in_fer_bench(eight, ck8):
    out = eight["base"] / "bench"
    check_cli("fer-bench", ["--model", eight["bundle"], "--data", ck8, "--split", "test",
                            "--warmup-s", "0.01", "--min-runs", "3", "--min-seconds", "0.01",
                            "--batch-sizes", "1", "--threads", "1", "--out", out], 0, [])
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    assert all(r["images"] == 8 for r in rows)  # the test part fer-train held out


# ------------------------------------------------------------------ fer-edge crop

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from matplotlib import cbook

    img = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    root = tmp_path_factory.mktemp("photos") / "photos"
    (root / "happy").mkdir(parents=True)
    (root / "sad").mkdir()
    cv2.imwrite(str(root / "happy" / "portrait.jpg"), img)
    cv2.imwrite(str(root / "happy" / "mirrored.png"), img[:, ::-1])
    cv2.imwrite(str(root / "sad" / "two.png"), np.hstack([img, img]))
    cv2.imwrite(str(root / "sad" / "wall.png"), np.full((300, 300, 3), 120, np.uint8))
    (root / "sad" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_crop_writes_the_loops_pixels(photos, tmp_path):
    from fer_edge.edge.bundle import load_bundle
    from fer_edge.edge.detection.choose import source_detector
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.preprocess import preprocess

    out = tmp_path / "faces"
    check_cli("fer-edge", ["crop", "--source", photos, "--out", out], 0,
              ["3 face crops", "1 without a face", "1 with several", "1 unreadable"])
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["happy/mirrored.png", "happy/portrait.png", "sad/two.png"]
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {r["file"]: r for r in csv.DictReader(fh)}
    assert skipped["sad/wall.png"]["reason"] == "no face"
    assert skipped["sad/broken.jpg"]["reason"] == "unreadable"
    assert skipped["sad/two.png"]["reason"] == "several faces"
    assert skipped["sad/two.png"]["faces"] == "2"

    bundle = load_bundle(None)
    pipe = Pipeline(bundle, "fp32", detector=source_detector(True))  # what fer-edge run uses
    for rel in ("happy/portrait.jpg", "happy/mirrored.png"):
        pending = pipe.begin(cv2.imread(str(photos / rel)))
        (k,) = range(len(pending.due))  # one face
        crop = cv2.imread(str(out / Path(rel).with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        assert crop.shape == (bundle.input.height, bundle.input.width)
        np.testing.assert_array_equal(preprocess([crop], bundle.input), pending.x[k:k + 1])
        pipe.reset()
    # the crops are a training set: the class-folder layout fer-train reads
    s = load_split(out, "all", ("happy", "sad"), cache=False)
    assert sorted(s.label_names[y] for y in s.labels) == ["happy", "happy", "sad"]


def test_crop_all_faces_and_refusals(photos, tmp_path):
    out = tmp_path / "faces"
    check_cli("fer-edge", ["crop", "--source", photos, "--out", out, "--all-faces"], 0, [])
    assert sorted(p.name for p in (out / "sad").glob("*.png")) == ["two_face1.png",
                                                                   "two_face2.png"]
    check_cli("fer-edge", ["crop", "--source", photos, "--out", out], 1,
              ["--out", "already holds files", "--exist-ok"])
    check_cli("fer-edge", ["crop", "--source", photos, "--out", photos / "faces"], 1,
              ["inside --source"])
    check_cli("fer-edge", ["crop", "--source", tmp_path / "nothing", "--out", out], 1,
              ["--source", "nothing"])


def test_eight_class_bundle_in_the_live_view(eight):
    """The live view's state carries the bundle's own eight labels (Pipeline on a real
    photo, the real HTTP server)."""
    import urllib.request

    from matplotlib import cbook

    from fer_edge.edge.detection.choose import source_detector
    from fer_edge.edge.outputs.live_view import LiveView
    from fer_edge.edge.pipeline import Pipeline

    pipe = Pipeline(str(eight["bundle"]), "int8", detector=source_detector(True))
    result = pipe(cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    view = LiveView(labels=pipe.labels)
    try:
        view.write(result, None)
        with urllib.request.urlopen(view.url + "state.json", timeout=5) as r:
            state = json.loads(r.read())
    finally:
        view.close(linger=0)
    (face,) = state["faces"]
    assert tuple(face["probs"]) == EIGHT and face["label"] in EIGHT
