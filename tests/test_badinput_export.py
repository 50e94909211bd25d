"""fer-export given bad input (issue 10, items 1, 2, 6, 7, 11 and the rest of its class): one
error line naming the file or option, exit 1, nothing half-written, nothing destroyed.

Rows run the real command on files crafted here and the repository's fercnn_s checkpoint.
Refusals about --out come before any export work: those rows pass a checkpoint that is a text
file, and the error must still be about --out.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badinput import check_cli, tmpfs
from conftest import REPO, run_cli, write_faces

pytest.importorskip("torch", reason="the [export] extra is not installed")
pytest.importorskip("onnx", reason="the [export] extra is not installed")

from fer_edge.edge.bundle import default_bundle_path, load_bundle  # noqa: E402

CKPT = REPO / "checkpoints" / "fercnn_s" / "best.pt"


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """The crafted inputs, shared by the rows (each row writes only under its own --out)."""
    root = tmp_path_factory.mktemp("export_bad")
    (root / "text.pt").write_text("this is not a checkpoint\n")
    (root / "truncated.pt").write_bytes(CKPT.read_bytes()[:100_000])
    (root / "empty.pt").write_bytes(b"")
    shutil.copytree(default_bundle_path(), root / "bundle")
    (root / "notbundle").mkdir()
    (root / "notbundle" / "keep.txt").write_text("mine\n")
    (root / "afile").write_text("mine\n")
    write_faces(root / "catsdogs", {"cat": 3, "dog": 3})  # none of the checkpoint's labels
    write_faces(root / "faces", {"happy": 6, "sad": 6, "neutral": 6})
    return root


def fill(args: list[str], d: Path) -> list[str]:
    return [a.format(d=d, ckpt=CKPT) for a in args]


ROWS = [  # id, args, exit code, words in the error line, must exist, must not exist
    ("text-checkpoint", ["{d}/text.pt", "--out", "{d}/o"], 1,
     ["text.pt", "checkpoint"], [], ["o"]),
    ("truncated-checkpoint", ["{d}/truncated.pt", "--out", "{d}/o"], 1,
     ["truncated.pt", "checkpoint"], [], ["o"]),
    ("empty-checkpoint", ["{d}/empty.pt", "--out", "{d}/o"], 1,
     ["empty.pt", "checkpoint"], [], ["o"]),
    ("missing-checkpoint", ["{d}/nothing.pt", "--out", "{d}/o"], 1,
     ["nothing.pt", "not found"], [], ["o"]),
    ("folder-as-checkpoint", ["{d}/notbundle", "--out", "{d}/o"], 1,
     ["notbundle", "not found"], [], ["o"]),
    ("int8-without-calib-data", ["{ckpt}", "--out", "{d}/o", "--int8"], 1,
     ["--calib-data"], [], ["o"]),
    ("calib-data-missing", ["{ckpt}", "--out", "{d}/o", "--int8", "--calib-data",
                            "{d}/nothing"], 1, ["nothing", "no such file"], [], ["o"]),
    ("calib-data-is-a-text-file", ["{ckpt}", "--out", "{d}/o", "--int8", "--calib-data",
                                   "{d}/text.pt"], 1, ["text.pt"], [], ["o"]),
    ("val-data-other-labels", ["{ckpt}", "--out", "{d}/o", "--val-data", "{d}/catsdogs"], 1,
     ["catsdogs"], [], ["o"]),
    ("auto-without-val-data", ["{ckpt}", "--out", "{d}/o", "--int8", "--calib-data",
                               "{d}/faces", "--calib-split", "train", "--calib-method",
                               "auto"], 1, ["--val-data"], [], ["o"]),
    ("opset-unknown-to-onnx", ["{ckpt}", "--out", "{d}/o", "--opset", "99"], 1,
     ["--opset 99"], [], ["o"]),
    ("opset-the-exporter-cannot-write", ["{ckpt}", "--out", "{d}/o", "--opset", "13"], 1,
     ["--opset 13", "opset 18"], [], ["o"]),
    ("trt-batch-malformed", ["{ckpt}", "--out", "{d}/o", "--trt", "fp16", "--trt-batch",
                             "8,1"], 1, ["--trt-batch"], [], ["o"]),
    # item 2 + 11: an existing bundle is refused before any work (the text checkpoint would
    # fail otherwise), and it is left as it was
    ("out-is-a-bundle", ["{d}/text.pt", "--out", "{d}/bundle"], 1,
     ["bundle", "--exist-ok"], ["bundle/bundle.json", "bundle/model.onnx"], []),
    ("out-is-not-a-bundle", ["{d}/text.pt", "--out", "{d}/notbundle", "--exist-ok"], 1,
     ["notbundle", "not a bundle"], ["notbundle/keep.txt"], []),
    ("out-is-a-file", ["{d}/text.pt", "--out", "{d}/afile", "--exist-ok"], 1,
     ["afile", "not a folder"], ["afile"], []),
    ("out-under-a-file", ["{d}/text.pt", "--out", "{d}/afile/b"], 1,
     ["afile", "is a file"], ["afile"], []),
]


@pytest.mark.parametrize("args, code, words, exist, absent",
                         [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_export_bad_input(d, args, code, words, exist, absent):
    check_cli("fer-export", fill(args, d), code, words, exist=[d / p for p in exist],
              absent=[d / p for p in absent])
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_exist_ok_replaces_a_bundle_and_only_then(d, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(d / "bundle", out)
    before = load_bundle(out).name
    r = check_cli("fer-export", [CKPT, "--out", out, "--exist-ok", "--name", "replaced"], 0,
                  ["wrote bundle"])
    assert load_bundle(out).name == "replaced" != before, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"], "old or temporary folder left"


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "full"])
def test_out_on_a_read_only_or_full_disk(d, tmp_path, readonly):
    """Read-only: refused before the work. Full (1 MB, the model is bigger): fails while
    writing model.onnx; either way one line naming --out, and nothing left on the disk."""
    with tmpfs(tmp_path / "mnt", "1m", readonly=readonly) as mnt:
        check_cli("fer-export", [CKPT, "--out", mnt / "b"], 1,
                  [str(mnt / "b"), "read-only" if readonly else "no space left"])
        assert list(mnt.iterdir()) == []


def test_sigterm_cleans_up_like_ctrl_c(d, tmp_path):
    """kill during an export: exit 130 and no hidden temporary folder with model.onnx."""
    out = tmp_path / "b"
    p = subprocess.Popen(
        [sys.executable, "-m", "fer_edge.export.cli", str(CKPT), "--out", str(out), "--int8",
         "--calib-data", str(d / "faces"), "--calib-split", "train", "--calib-method", "auto",
         "--val-data", str(d / "faces"), "--val-split", "train", "--max-drop", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".b.*/model.onnx")) and p.poll() is None:
        assert time.monotonic() < deadline, "model.onnx never appeared"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == [], "temporary folder left behind"


def test_crop_margin_outside_0_1_is_refused_before_any_work(tmp_path):
    r = run_cli("fer_edge.export.cli", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o"),
                "--crop-margin", "-0.5")
    assert r.returncode == 2 and "--crop-margin" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_opset_above_20_warns_that_jetpack_6_tensorrt_documents_9_to_20(d):
    r = check_cli("fer-export", fill(["{ckpt}", "--out", "{d}/o", "--opset", "99"], d), 1,
                  ["--opset 99"])
    assert "--opset 99: TensorRT 10.3 (JetPack 6) documents ONNX opsets 9-20" in r.stderr
    r = check_cli("fer-export", fill(["{ckpt}", "--out", "{d}/o", "--opset", "13"], d), 1,
                  ["--opset 13"])
    assert "TensorRT 10.3" not in r.stderr
