"""fer-bench on the shipped bundle and a few dozen real faces written as a CK+ style folder."""

from __future__ import annotations

import csv
import json

import cv2
import pytest
from conftest import run_cli

from fer_edge.edge.data import load_split

FAST = ["--warmup-s", "0.05", "--min-runs", "10", "--min-seconds", "0.05", "--batch-sizes",
        "1,4", "--threads", "1"]


@pytest.fixture(scope="module")
def ck_folder(fer2013, tmp_path_factory):
    """40 PublicTest faces saved under synonym folder names (anger, happiness, ...)."""
    root = tmp_path_factory.mktemp("ck")
    s = load_split(fer2013, "test")
    names = {"angry": "anger", "happy": "happiness", "surprise": "surprised", "sad": "sadness"}
    for label, folder in names.items():
        idx = [i for i, y in enumerate(s.labels) if s.label_names[y] == label][:10]
        (root / folder).mkdir()
        for i in idx:
            cv2.imwrite(str(root / folder / f"{i}.png"), s.images[i])
    return root


@pytest.fixture(scope="module")
def bench(ck_folder, video, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = run_cli("fer_edge.benchmarks.cli", "--data", str(ck_folder), "--video", str(video),
                "--video-loops", "1", "--video-streams", "1", "--split", "all", "--out", str(out),
                *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_results_json_keys_and_types(bench):
    out, _ = bench
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "fer-bench/1" and res["interrupted"] is False
    env = res["environment"]
    assert isinstance(env["cores"], int) and env["onnxruntime"] and "vnni" in env
    rows = res["results"]
    assert {(r["precision"], r["threads"]) for r in rows} == {("fp32", 1), ("int8", 1)}
    for r in rows:
        assert r["images"] == 40 and 0 <= r["accuracy"] <= 1 and isinstance(r["macro_f1"], float)
        lat = r["latency_ms"]["batch1"]
        assert lat["runs"] >= 10 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["throughput_ips"]["4"] > 0 and r["file_bytes"] > 0
        assert len(r["confusion"]) == len(r["labels"])
    int8 = next(r for r in rows if r["precision"] == "int8")
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    assert int8["drop_points"] == pytest.approx(100 * (fp32["accuracy"] - int8["accuracy"]))
    (default, naive) = res["pipeline"]
    assert default["frames"] == naive["frames"] == 71 and default["fps"] > 0
    assert set(default["stage_ms"]) == {"decode", "wait", "detect", "crop", "classify",
                                        "track"}
    assert res["peak_rss_mb"] > 0


def test_csv_report_and_plots(bench):
    out, r = bench
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {row["precision"] for row in rows} == {"fp32", "int8"}
    md = (out / "report.md").read_text()
    assert "| model | precision |" in md and "Pipeline on" in md and md in r.stdout
    assert "`fer`'s own loop was not measured" in md
    for name in ("accuracy_vs_latency.png", "accuracy.png", "latency.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    assert len(list(out.glob("confusion_*.png"))) == 2


def test_regression_gate(bench, ck_folder, tmp_path):
    out, _ = bench
    res = json.loads((out / "results.json").read_text())
    for r in res["results"]:
        r["accuracy"] += 0.2  # the "earlier" run was far more accurate
        r["latency_ms"]["batch1"]["p50"] /= 10  # ... and 10x faster
    doctored = tmp_path / "old.json"
    doctored.write_text(json.dumps(res))
    r = run_cli("fer_edge.benchmarks.cli", "--data", str(ck_folder), "--split", "all", "--out",
                str(tmp_path / "new"), "--compare-to", str(doctored), *FAST)
    assert r.returncode == 1
    assert "REGRESSION" in r.stderr and "accuracy fell" in r.stderr and "latency rose" in r.stderr
    same = run_cli("fer_edge.benchmarks.cli", "--data", str(ck_folder), "--split", "all",
                   "--out",
                   str(tmp_path / "same"), "--compare-to", str(out / "results.json"),
                   "--max-latency-rise", "100", *FAST)
    assert same.returncode == 0, same.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/data"], "no such file or directory"),
    (["--model", "/nonexistent/bundle"], "bundle folder not found"),
    (["--compare-to", "/nonexistent/results.json"], "results file not found"),
])
def test_bad_arguments(args, message, tmp_path):
    r = run_cli("fer_edge.benchmarks.cli", *args, "--out", str(tmp_path), *FAST)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
