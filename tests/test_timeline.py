"""`fer-edge report` and `fer-edge run --report`: the timeline files from a real run on the
shared video; their contents, not only their existence."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import run_cli
from procs import ARTIFACTS

REPORT = ("fer_edge.edge.cli", "report")
RUN = ("fer_edge.edge.cli", "run", "--no-display", "-q")


@pytest.fixture(scope="module")
def run_jsonl(tmp_path_factory, video):
    jl = tmp_path_factory.mktemp("run") / "run.jsonl"
    r = run_cli(*RUN, "--source", str(video), "--loop", "2", "--jsonl", str(jl))
    assert r.returncode == 0, r.stderr
    return jl


def rows_of(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_report_contents(run_jsonl, tmp_path):
    out = tmp_path / "report"
    r = run_cli(*REPORT, str(run_jsonl), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "track 1:" in r.stderr and "mostly" in r.stderr
    jsonl = [json.loads(line) for line in run_jsonl.read_text().splitlines()]
    assert all(row["schema"] == 1 for row in jsonl)
    faces = [(row, f) for row in jsonl for f in row["faces"]]
    frames = rows_of(out / "frames.csv")
    assert len(frames) == len(faces) == 142
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for fr, (row, f) in zip(frames, faces, strict=True):
        p = np.array([float(fr[k]) for k in labels])
        assert abs(p.sum() - 1) < 2e-3 and fr["label"] == labels[int(p.argmax())]
        assert int(fr["frame"]) == row["frame"] and int(fr["track"]) == f["track_id"]
        assert [int(fr[k]) for k in "xywh"] == f["box"]
        assert abs(float(fr["time"]) - (row["timestamp"] - jsonl[0]["timestamp"])) < 1e-3
    # the looped video's time keeps counting: 142 frames at 30 FPS
    assert float(frames[-1]["time"]) == pytest.approx(141 / 30, abs=0.01)
    assert frames[-1]["label"] == "angry"  # the video ends angry

    summary = rows_of(out / "summary.csv")
    assert len(summary) == 1 and summary[0]["track"] == "1"
    s = summary[0]
    assert s["dominant"] == "angry" and int(s["frames"]) == 142
    shares = {k: float(s[f"share_{k}"]) for k in labels}
    assert abs(sum(shares.values()) - 1) < 1e-3 and shares["angry"] > 0.5
    counted = sum(fr["label"] == "angry" for fr in frames) / len(frames)
    assert shares["angry"] == pytest.approx(counted, abs=1e-4)
    changes = sum(a["label"] != b["label"] for a, b in zip(frames[:-1], frames[1:], strict=True))
    assert int(s["label_changes"]) == changes >= 2
    assert float(s["first_seen_s"]) == 0 and float(s["last_seen_s"]) == pytest.approx(4.7, abs=.01)
    md = (out / "summary.md").read_text()
    assert "**angry**" in md and "| 1 |" in md and "## Label segments" in md

    img = cv2.imread(str(out / "timeline.png"))
    assert img is not None and img.shape[1] == 1400 and 250 <= img.shape[0] <= 600
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a plot, not a blank page
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out / "timeline.png", ARTIFACTS / "timeline.png")
    print(f"\ntimeline: {out / 'timeline.png'} (copy: {ARTIFACTS / 'timeline.png'})")

    # an existing report is refused, then replaced with --exist-ok
    r = run_cli(*REPORT, str(run_jsonl), "--out", str(out))
    assert r.returncode == 1 and "--exist-ok" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_cli(*REPORT, str(run_jsonl), "--out", str(out), "--exist-ok")
    assert r.returncode == 0, r.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_run_with_report(video, tmp_path):
    out = tmp_path / "rep"
    r = run_cli(*RUN, "--source", str(video), "--report", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frames.csv", "run.jsonl", "summary.csv",
                                                      "summary.md", "timeline.png"]
    assert len(rows_of(out / "frames.csv")) == 71
    r = run_cli(*RUN, "--source", str(video), "--report", str(out))
    assert r.returncode == 1 and "already holds a report" in r.stderr
    r = run_cli(*RUN, "--source", str(video), "--report", str(out), "--jsonl", "-")
    assert r.returncode == 1 and "--jsonl -" in r.stderr


GOOD = ('{"schema": 1, "frame": 0, "timestamp": 0.0, "faces": [{"box": [1, 2, 3, 4], '
        '"track_id": 1, "label": "sad", "score": 0.5, "probs": {"sad": 0.5, "angry": 0.5}}]}')


@pytest.mark.parametrize("bad,line,words", [
    ("{not json", 2, "not JSON"),
    ("[1, 2]", 2, "not a JSON object"),
    ('{"frame": 1}', 2, "needs frame, timestamp, faces"),
    ('{"schema": 9, "frame": 1, "timestamp": 1, "faces": []}', 2, "schema 9"),
    (GOOD.replace('"track_id": 1, ', ""), 2, "no track_id"),
    (GOOD.replace("[1, 2, 3, 4]", "[1, 2]"), 2, "box"),
    (GOOD.replace('"sad": 0.5,', '"sad": "x",'), 2, "probs"),
])
def test_bad_jsonl_is_one_line_naming_file_and_line(tmp_path, bad, line, words):
    jl = tmp_path / "bad.jsonl"
    jl.write_text(GOOD + "\n" + bad + "\n" + GOOD + "\n")
    r = run_cli(*REPORT, str(jl), "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert f"{jl} line {line}" in r.stderr and words in r.stderr
    assert not (tmp_path / "out" / "frames.csv").exists()


def test_missing_and_empty_jsonl(tmp_path):
    r = run_cli(*REPORT, str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "nope.jsonl" in r.stderr and "cannot read" in r.stderr
    (tmp_path / "empty.jsonl").write_text("")
    r = run_cli(*REPORT, str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "no rows" in r.stderr
