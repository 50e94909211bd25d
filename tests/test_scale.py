"""Training at scale: torchrun/DDP on CPU (gloo), distillation, ensembles in one ONNX graph."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("onnx", reason="the [export] extra is not installed")

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.data import load_split
from fer_edge.edge.inference.backend import OrtBackend
from fer_edge.edge.preprocess import preprocess
from fer_edge.train.checkpoint import build_from_checkpoint, load_checkpoint
from fer_edge.train.engine import Distiller

# No augmentation and no dropout: the only randomness left is the (shared) sample order, so a
# 2-process run must track the single-process run of the same global batch.
COMMON = ["--arch", "fercnn_s", "--limit", "512", "--val-limit", "256", "--no-augment",
          "--drop", "0", "--batch-size", "32", "--optimizer", "adamw", "--lr", "0.003",
          "--warmup-epochs", "0", "--threads", "1", "--seed", "3", "--epochs", "2"]


def _history(out) -> list[float]:
    return [h["train_loss"] for h in json.loads((out / "metrics.json").read_text())["history"]]


@pytest.fixture(scope="module")
def runs(fer2013, tmp_path_factory):
    base = tmp_path_factory.mktemp("scale")
    single = run_cli("fer_edge.train.cli", "--data", str(fer2013), *COMMON,
                     "--out", str(base / "single"))
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "-m", "fer_edge.train.cli", "--data", str(fer2013), *COMMON,
                          "--stop-after", "1", "--out", str(base / "ddp")],
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # ... and the 2-process checkpoint resumes in 1 process (any world size).
    resumed = run_cli("fer_edge.train.cli", "--data", str(fer2013), *COMMON, "--resume",
                      str(base / "ddp" / "last.pt"), "--out", str(base / "ddp"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return base


def test_ddp_matches_single_process(runs):
    one, two = _history(runs / "single"), _history(runs / "ddp")
    assert len(one) == len(two) == 2
    # Per-rank BatchNorm statistics (SyncBN needs GPUs) are the only difference.
    np.testing.assert_allclose(two, one, atol=0.05)
    assert load_checkpoint(runs / "ddp" / "best.pt")["world_size"] in (1, 2)


def test_distillation_loss_pulls_student_to_teacher():
    d = Distiller(torch.nn.Identity(), alpha=1.0, temperature=2.0)
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    same = d.loss(teacher.clone(), teacher, torch.tensor(5.0))
    assert float(same) == pytest.approx(0.0, abs=1e-6)  # alpha 1: only the KD term, zero
    student = torch.zeros(1, 3, requires_grad=True)
    d.loss(student, teacher, torch.tensor(0.0)).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # descent raises the teacher's top class


def test_distillation_end_to_end(runs, fer2013, tmp_path):
    r = run_cli("fer_edge.train.cli", "--data", str(fer2013), *COMMON, "--epochs", "1",
                "--teacher", str(runs / "single" / "best.pt"), "--kd-alpha", "0.7",
                "--out", str(tmp_path / "kd"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "teacher outputs cached" in r.stderr
    cfg = load_checkpoint(tmp_path / "kd" / "best.pt")["config"]
    assert cfg["teacher"].endswith("best.pt") and cfg["kd_alpha"] == 0.7


def test_ensemble_with_flip_is_one_graph(runs, fer2013, tmp_path):
    a, b = runs / "single" / "best.pt", runs / "ddp" / "best.pt"
    r = run_cli("fer_edge.export.cli", str(a), str(b), "--tta-flip", "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr[-2000:]
    bundle = load_bundle(tmp_path / "e")
    assert bundle.arch == "ensemble(fercnn_s+fercnn_s)" and len(bundle.meta["members"]) == 2
    x = preprocess(load_split(fer2013, "test").images[:32], bundle.input)
    got = np.exp(OrtBackend(bundle.model_path("fp32"))(x))
    t = torch.from_numpy(x)
    with torch.no_grad():
        ps = [m(v).softmax(1) for m in (build_from_checkpoint(load_checkpoint(a)),
                                        build_from_checkpoint(load_checkpoint(b)))
              for v in (t, t.flip(3))]
    np.testing.assert_allclose(got, torch.stack(ps).mean(0).numpy(), atol=1e-4)
