"""fer-train end to end on a few hundred real FER2013 faces, on the CPU."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")

from fer_edge.edge.errors import FerEdgeError
from fer_edge.train.checkpoint import load_checkpoint, save_checkpoint

# Validation on 400 PublicTest faces (validating on training faces is refused), no augmentation.
ARGS = ["fer_edge.train.cli", "--arch", "fercnn_s", "--limit", "400", "--val-split", "test",
        "--val-limit", "400", "--no-augment",
        "--batch-size", "32", "--optimizer", "adamw", "--lr", "0.003", "--warmup-epochs", "0",
        "--threads", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def runs(fer2013, tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    one = run_cli(*ARGS, "--data", str(fer2013), "--epochs", "2", "--stop-after", "1",
                  "--out", str(base / "r"))
    assert one.returncode == 0, one.stderr[-2000:]
    resumed = run_cli(*ARGS, "--data", str(fer2013), "--epochs", "2", "--out", str(base / "r"),
                      "--resume", str(base / "r" / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run_cli(*ARGS, "--data", str(fer2013), "--epochs", "2", "--out",
                       str(base / "s"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    return base


def test_outputs_exist_and_beat_chance(runs):
    out = runs / "r"
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["val_report"]["accuracy"] > 1 / 7 + 0.05
    assert set(m["val_report"]["per_class"]) == set(m["labels"])
    assert "--resume" in m["command"]


def test_resume_continues_exactly(runs):
    a = load_checkpoint(runs / "r" / "last.pt")
    b = load_checkpoint(runs / "s" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=1e-4, atol=1e-5, msg=k)


def test_best_checkpoint_is_weights_only_and_loads(runs):
    best = load_checkpoint(runs / "r" / "best.pt")
    assert "optimizer" not in best and best["arch"] == "fercnn_s"
    assert best["labels"][0] == "angry" and best["input"]["height"] == 48


def test_bad_checkpoints_are_refused(tmp_path, runs):
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((runs / "r" / "best.pt").read_bytes()[:5000])
    with pytest.raises(FerEdgeError, match="trunc.pt"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(FerEdgeError, match="not a fer-edge checkpoint"):
        load_checkpoint(other)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "fer-edge-checkpoint", "x": Evil()}, evil)
    with pytest.raises(FerEdgeError, match="evil.pt"):
        load_checkpoint(evil)
    save_checkpoint({"arch": "fercnn_s"}, tmp_path / "partial.pt")
    with pytest.raises(FerEdgeError, match="lacks"):
        load_checkpoint(tmp_path / "partial.pt")


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("fer_edge.train.cli", "--data", str(tmp_path / "missing"), "--epochs", "1")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and "missing" in r.stderr
    assert "Traceback" not in r.stderr


def test_ctrl_c_leaves_a_resumable_checkpoint(fer2013, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "int"
    log = open(tmp_path / "stderr.txt", "w")  # a file, not a pipe: progress bars fill pipes
    p = subprocess.Popen([sys.executable, "-m", *ARGS[:1], "--data", str(fer2013), *ARGS[1:],
                          "--limit", "1500", "--epochs", "50", "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=log,
                         # a shell's background job inherits SIGINT ignored; a user's Ctrl-C
                         # reaches a foreground process, so restore the default here
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "train.log").exists():
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    log.close()
    err = (tmp_path / "stderr.txt").read_text()
    assert p.returncode == 130, err[-2000:]
    assert "continue with --resume" in err
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] >= 1 and "optimizer" in ck
    assert not list(out.glob("*.tmp"))


def test_fit_epochs_to_time():
    from fer_edge.train.trainer import fit_epochs_to_time

    assert fit_epochs_to_time(1, 10.0, 60.0, 100) == 6  # 5 more epochs of 10 s fit
    assert fit_epochs_to_time(2, 20.0, 60.0, 3) == 3  # never beyond --epochs
    assert fit_epochs_to_time(4, 70.0, 60.0, 100) == 4  # over time: stop now, not later


class FakeClock:
    """A clock that moves ``step`` seconds each time it is read: the training loop reads it
    once at the start and once per epoch, so epoch k ends at k * step seconds, however fast
    the machine is."""

    def __init__(self, step: float):
        self.t, self.step = 1000.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_time_limit_fits_the_schedule(fer2013, tmp_path, monkeypatch):
    """--time-limit: the run stops early, and on a finished schedule (learning rate 0). The
    clock is fake (5 s per epoch), so the result does not depend on the machine's speed:
    a 0.3 min (18 s) budget fits 3 epochs of 500, and the cosine is re-fitted to end there."""
    from fer_edge.train import trainer
    from fer_edge.train.augment import AugmentConfig

    monkeypatch.setattr(trainer, "now", FakeClock(5.0))
    cfg = trainer.TrainConfig(
        data=str(fer2013), arch="fercnn_s", limit=400, val_split="test", val_limit=400,
        augment=AugmentConfig(False, 0, 0, 0, 0, 0), batch_size=32, optimizer="adamw",
        lr=0.003, warmup_epochs=0, threads=2, seed=1, epochs=500, time_limit=0.3,
        eval_flip=False, out=str(tmp_path / "t"))
    m = trainer.fit(cfg)
    h = m["history"]
    assert len(h) == 3 and m["config"]["planned_epochs"] == 3
    assert [row["time_s"] for row in h] == [5.0, 10.0, 15.0]
    assert h[0]["lr"] > 0.5 * 0.003  # epoch 1 still ran on the 500-epoch cosine
    assert h[-1]["lr"] < 0.05 * 0.003  # the re-fitted cosine ran (nearly) to its end
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["history"] == h
