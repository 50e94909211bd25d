"""Issue 22: ``fer-average-checkpoints`` (WiSE-FT / model soups): the weighted average of
classifier checkpoints of one network, exported like any checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.labels import FER2013_LABELS
from fer_edge.edge.preprocess import InputSpec
from fer_edge.train.average import average_checkpoints, parse_weights
from fer_edge.train.checkpoint import load_checkpoint, save_checkpoint
from fer_edge.train.models import create_model


def write(path, seed: int, arch: str = "fercnn_s", labels=FER2013_LABELS) -> dict:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(labels))
    for m in model.modules():  # distinct batch-norm statistics too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    state = model.state_dict()
    save_checkpoint({"arch": arch, "labels": list(labels), "input": InputSpec().to_dict(),
                     "model": state, "epoch": seed, "best": 0.5 + seed / 100}, path)
    return state


def test_weighted_average_of_every_float_tensor(tmp_path):
    a, b = write(tmp_path / "a.pt", 1), write(tmp_path / "b.pt", 2)
    avg = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], [0.25, 0.75])
    for k, v in a.items():
        if torch.is_floating_point(v):
            torch.testing.assert_close(avg["model"][k], 0.25 * v + 0.75 * b[k])
        else:  # batch-norm counters: the first checkpoint's
            assert torch.equal(avg["model"][k], v)
    assert [x["weight"] for x in avg["average"]] == [0.25, 0.75]
    assert parse_weights("1,3", 2) == [0.25, 0.75] and parse_weights(None, 4) == [0.25] * 4


@pytest.mark.parametrize("text", ["0.5", "a,b", "nan,1", "-1,2", "0,0"])
def test_bad_weights_are_one_clear_error(text):
    with pytest.raises(FerEdgeError, match="--weights"):
        parse_weights(text, 2)


def test_other_networks_labels_or_nan_are_refused(tmp_path):
    write(tmp_path / "a.pt", 1)
    write(tmp_path / "m.pt", 2, arch="fercnn_m")
    write(tmp_path / "six.pt", 3, labels=FER2013_LABELS[:6])
    for other, what in (("m.pt", "arch"), ("six.pt", "labels")):
        with pytest.raises(FerEdgeError, match=f"{other}: its {what} differs"):
            average_checkpoints([tmp_path / "a.pt", tmp_path / other], [0.5, 0.5])
    ck = load_checkpoint(tmp_path / "a.pt")
    k = next(k for k, v in ck["model"].items() if torch.is_floating_point(v))
    ck["model"][k][0] = float("nan")
    save_checkpoint(ck, tmp_path / "nan.pt")
    with pytest.raises(FerEdgeError, match="not finite"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "nan.pt"], [0.5, 0.5])


def average_cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", "from fer_edge.train.cli import average_main; "
                           "average_main()", *args], capture_output=True, text=True,
                          timeout=600)


def test_command_writes_an_exportable_checkpoint_and_keeps_files(tmp_path):
    write(tmp_path / "a.pt", 1)
    write(tmp_path / "b.pt", 2)
    out = tmp_path / "avg.pt"
    r = average_cli(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--weights", "0.5,0.5",
                    "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    before = out.read_bytes()
    for args in (["--out", str(out)], ["--out", str(tmp_path / "a.pt"), "--force"]):
        r = average_cli(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before
    r = run_cli("fer_edge.export.cli", str(out), "--out", str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert [a["weight"] for a in meta["training"]["average"]] == [0.5, 0.5]
    b = load_bundle(tmp_path / "bundle")
    assert b.labels == tuple(FER2013_LABELS)
