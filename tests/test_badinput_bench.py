"""fer-bench given bad input, and bundles that do not fit their model (issue 10, items 6, 7,
11 and the rest of its class): one error line naming the file or option, exit 1, and every
refusal BEFORE the measurements.

The refusal rows run with a 600 s warm-up: an error that came only after the latency runs
would time the test out. The bundles are the shipped one, copied and tampered with through
the bundle writer itself (so their sha256 are right and only the mismatch is wrong).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from badinput import check_cli, tmpfs

from fer_edge.edge.bundle import default_bundle_path, load_bundle, write_bundle_json
from fer_edge.edge.data import load_split
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import open_backend

FAST = ["--warmup-s", "0.01", "--min-runs", "3", "--min-seconds", "0.01", "--batch-sizes", "1",
        "--threads", "1"]
SLOW = ["--warmup-s", "600", "--batch-sizes", "1", "--threads", "1"]  # never reached


def tampered(root: Path, name: str, change) -> Path:
    d = root / name
    shutil.copytree(default_bundle_path(), d)
    meta = json.loads((d / "bundle.json").read_text())
    change(meta)
    write_bundle_json(d, meta)
    return d


@pytest.fixture(scope="module")
def d(fer2013, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_bad")
    s = load_split(fer2013, "test")
    for c, name in enumerate(s.label_names):  # 5 real faces per class
        (root / "faces" / name).mkdir(parents=True)
        for i in [i for i, y in enumerate(s.labels) if y == c][:5]:
            cv2.imwrite(str(root / "faces" / name / f"{i}.png"), s.images[i])
    tampered(root, "labels6", lambda m: m.update(labels=m["labels"][:6]))
    tampered(root, "labels8", lambda m: m.update(labels=[*m["labels"], "contempt"]))
    tampered(root, "input64", lambda m: m["input"].update(height=64, width=64))
    tampered(root, "rgb", lambda m: m["input"].update(channels=3, mean=[0.0] * 3, std=[1.0] * 3))
    (root / "notbundle").mkdir()
    (root / "afile").write_text("mine\n")
    tampered(root, "labelstring", lambda m: m.update(labels="angry"))
    tampered(root, "height0", lambda m: m["input"].update(height=0))
    tampered(root, "cropnumber", lambda m: m.update(crop=3))
    tampered(root, "escape", lambda m: m["models"]["fp32"].update(file="../afile"))
    (root / "random.avi").write_bytes(os.urandom(100_000))
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.avi").write_text("not a video\n")
    (root / "broken.json").write_text("{")
    (root / "latin1.json").write_bytes(b"\xff\xfe{}")
    (root / "norows.json").write_text('{"schema": "fer-bench/1"}')
    (root / "badrow.json").write_text('{"results": [{"model": "m"}]}')
    (root / "badacc.json").write_text(json.dumps({"results": [
        {"model": "m", "precision": "fp32", "backend": "ort", "threads": 1,
         "accuracy": "high"}]}))
    return root


ROWS = [  # id, args, exit code, words in the error line
    # item 6: bundles that do not fit their model
    ("6-labels-for-7-outputs", ["--model", "{d}/labels6"], 1,
     ["labels6", "model.onnx", "7 scores", "6 labels"]),
    ("8-labels-for-7-outputs", ["--model", "{d}/labels8"], 1,
     ["labels8", "7 scores", "8 labels"]),
    ("onnx-48-bundle-64", ["--model", "{d}/input64"], 1, ["input64", "1x48x48", "1x64x64"]),
    ("onnx-grey-bundle-rgb", ["--model", "{d}/rgb"], 1, ["rgb", "1x48x48", "3x48x48"]),
    ("labels-a-string", ["--model", "{d}/labelstring"], 1, ["labelstring", "'labels'"]),
    ("input-height-0", ["--model", "{d}/height0"], 1, ["height0", "height"]),
    ("crop-a-number", ["--model", "{d}/cropnumber"], 1, ["cropnumber", "'crop'"]),
    ("model-file-outside-the-bundle", ["--model", "{d}/escape"], 1,
     ["escape", "../afile", "inside the bundle"]),
    ("model-not-a-bundle", ["--model", "{d}/notbundle"], 1, ["notbundle", "not a model bundle"]),
    ("model-missing", ["--model", "{d}/nothing"], 1, ["nothing", "not found"]),
    # item 11: options
    ("batch-size-0", ["--batch-sizes", "0"], 1, ["--batch-sizes", "0"]),
    ("batch-size-negative", ["--batch-sizes", "1,-4"], 1, ["--batch-sizes", "1,-4"]),
    ("threads-not-a-number", ["--threads", "a"], 1, ["--threads", "'a'"]),
    ("threads-0", ["--threads", "0"], 1, ["--threads"]),
    ("precision-unknown", ["--precision", "fp64"], 1, ["--precision", "fp64"]),
    ("backend-unknown", ["--backend", "bogus"], 1, ["--backend", "bogus"]),
    # item 11: --compare-to is read before the run
    ("compare-to-missing", ["--compare-to", "{d}/nothing.json"], 1, ["nothing.json"]),
    ("compare-to-broken-json", ["--compare-to", "{d}/broken.json"], 1,
     ["broken.json", "not valid JSON"]),
    ("compare-to-latin1", ["--compare-to", "{d}/latin1.json"], 1, ["latin1.json"]),
    ("compare-to-no-results", ["--compare-to", "{d}/norows.json"], 1, ["norows.json"]),
    ("compare-to-row-without-keys", ["--compare-to", "{d}/badrow.json"], 1, ["badrow.json"]),
    ("compare-to-text-accuracy", ["--compare-to", "{d}/badacc.json"], 1, ["badacc.json"]),
    ("compare-to-a-folder", ["--compare-to", "{d}"], 1, ["is a directory"]),
    # item 7: --out is probed before the run
    ("out-is-a-file", ["--out", "{d}/afile"], 1, ["afile", "not a folder"]),
    ("out-under-a-file", ["--out", "{d}/afile/bench"], 1, ["afile", "is a file"]),
    # data and video, before the latency runs (item 4 for fer-bench)
    ("data-missing", ["--data", "{d}/nothing"], 1, ["nothing"]),
    ("data-is-a-text-file", ["--data", "{d}/afile"], 1, ["afile"]),
    ("video-random-bytes", ["--video", "{d}/random.avi"], 1, ["random.avi", "cannot open"]),
    ("video-zero-bytes", ["--video", "{d}/empty.mp4"], 1, ["empty.mp4"]),
    ("video-text", ["--video", "{d}/text.avi"], 1, ["text.avi"]),
    ("video-missing", ["--video", "{d}/nothing.avi"], 1, ["nothing.avi"]),
]


def fill(args: list[str], d: Path) -> list[str]:
    return [a.format(d=d) for a in args]


@pytest.mark.parametrize("args, code, words", [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_bench_bad_input_refused_before_measuring(d, tmp_path, args, code, words):
    out = tmp_path / "bench"
    args = fill(args, d)
    if "--out" not in args:
        args += ["--out", str(out)]
    check_cli("fer-bench", ["--data", d / "faces", *SLOW, *args], code, words, timeout=120,
              absent=[out])


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "full"])
def test_out_on_a_read_only_or_full_disk(d, tmp_path, readonly):
    with tmpfs(tmp_path / "mnt", "64k", readonly=readonly, full=not readonly) as mnt:
        check_cli("fer-bench", ["--data", d / "faces", *SLOW, "--out", mnt / "bench"], 1,
                  [str(mnt / "bench"), "read-only" if readonly else "no space left"],
                  timeout=120, absent=[mnt / "bench"])


def test_reports_on_a_disk_that_fills_up_meanwhile(d, tmp_path):
    """The probe passed, then the disk filled: one FerEdgeError naming --out."""
    from fer_edge.benchmarks.environment import environment
    from fer_edge.benchmarks.report import write_all

    results = {"command": "fer-bench", "environment": environment(), "results": [],
               "settings": {"data": None, "split": "test"}, "pipeline": [], "peak_rss_mb": 1.0}
    with tmpfs(tmp_path / "mnt", "64k", full=True) as mnt:
        with pytest.raises(FerEdgeError, match=f"{mnt / 'bench'}: cannot write .*No space"):
            write_all(results, mnt / "bench", {})


def test_limit_above_the_dataset_uses_all_with_a_warning(d, tmp_path):
    check_cli("fer-bench", ["--data", d / "faces", "--split", "all", "--limit", "100000",
                            "--precision", "fp32", *FAST, "--out", tmp_path / "b"], 0,
              ["--limit 100000", "using all"],
              exist=[tmp_path / "b" / "results.json"])
    (row,) = json.loads((tmp_path / "b" / "results.json").read_text())["results"]
    assert row["images"] == 35


def test_without_matplotlib_reports_are_written_and_plots_skipped(d, tmp_path):
    """The base install (a Jetson) has no matplotlib: no plots, a warning naming [bench]."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "b"
    check_cli("fer-bench", ["--data", d / "faces", *FAST, "--out", out], 0,
              ["matplotlib", "fer-edge[bench]"], env=env,
              exist=[out / "results.json", out / "results.csv", out / "report.md"],
              absent=[out / "accuracy_vs_latency.png", out / "latency.png"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopped_early_keeps_the_accuracy_measured(d, tmp_path, sig):
    """Stopped during the latency runs: exit 130, results.json holds the accuracy rows."""
    out, log = tmp_path / "b", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "fer_edge.benchmarks.cli", "--data", str(d / "faces"),
             "--split", "all", *SLOW, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while "latency batch" not in log.read_text() and p.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        p.send_signal(sig)
        p.wait(timeout=60)
    text = log.read_text()
    assert p.returncode == 130 and "Traceback" not in text, text[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["interrupted"] is True
    assert {r["precision"] for r in res["results"]} == {"fp32", "int8"}
    assert all(r["images"] == 35 and 0 <= r["accuracy"] <= 1 and "latency_ms" not in r
               for r in res["results"])


@pytest.mark.parametrize("name, words", [
    ("labels6", "7 scores per face but"), ("labels8", "8 labels"), ("input64", "1x64x64")])
def test_every_reader_checks_the_bundle_against_its_model(d, name, words):
    """fer-edge run and the Python API open models where fer-bench does: the same refusal."""
    from fer_edge.edge.pipeline import Pipeline

    bundle = load_bundle(d / name)
    for precision in ("fp32", "int8"):
        with pytest.raises(FerEdgeError, match=words):
            open_backend(bundle, precision)
    with pytest.raises(FerEdgeError, match=words):
        Pipeline(d / name)
    check_cli("fer-edge", ["run", "--source", d / "faces" / "happy", "--model", d / name], 1,
              [name, words])


def test_earlier_report_is_kept_unless_exist_ok(d, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}')
    check_cli("fer-bench", ["--data", d / "faces", *FAST, "--out", out], 1,
              ["--out", "results.json", "--exist-ok"])
    assert (out / "results.json").read_text() == '{"earlier": true}'
    check_cli("fer-bench", ["--data", d / "faces", *FAST, "--out", out, "--exist-ok"], 0, [])
    new = json.loads((out / "results.json").read_text())
    assert "earlier" not in new and new["schema"] == "fer-bench/1"
