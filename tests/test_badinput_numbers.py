"""Numbers that are not numbers (issue 23, items 8 and 9): every float option of every
command refuses NaN and infinity, every integer option is bounded, and the CLIs say so in one
line before any work."""

from __future__ import annotations

import click
import pytest
from badinput import MODULES, check_cli
from conftest import run_cli

from fer_edge.benchmarks.cli import main as fer_bench
from fer_edge.edge.cli import main as fer_edge
from fer_edge.edge.cliutil import Finite
from fer_edge.export.cli import main as fer_export
from fer_edge.train.cli import main as fer_train
from fer_edge.train.detector.cli import main as fer_train_detector


def _commands() -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in (("fer-train", fer_train), ("fer-train-detector", fer_train_detector),
                      ("fer-export", fer_export), ("fer-bench", fer_bench), ("fer-edge", fer_edge)):
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


OPTIONS = [(f"{name} {p.opts[0]}", p) for name, cmd in _commands() for p in cmd.params
           if isinstance(p, click.Option) and not p.is_flag]
FLOATS = [(n, p) for n, p in OPTIONS if isinstance(p.type, click.types.FloatParamType)]
INTS = [(n, p) for n, p in OPTIONS if isinstance(p.type, click.types.IntParamType)]


def test_the_commands_have_float_and_int_options():
    assert len(FLOATS) >= 30 and len(INTS) >= 35  # the walk above found the options


@pytest.mark.parametrize("param", [p for _, p in FLOATS], ids=[n for n, _ in FLOATS])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_every_float_option_refuses_non_finite(param, value):
    assert isinstance(param.type, Finite)
    with pytest.raises(click.BadParameter, match="finite"):
        param.type.convert(value, param, None)


@pytest.mark.parametrize("param", [p for _, p in INTS], ids=[n for n, _ in INTS])
def test_every_int_option_is_bounded_below(param):
    assert isinstance(param.type, click.IntRange) and param.type.min is not None
    with pytest.raises(click.BadParameter):
        param.type.convert(str(param.type.min - 1), param, None)


@pytest.mark.parametrize("command, args, option", [
    ("fer-train", ["--data", "x", "--lr", "nan"], "--lr"),
    ("fer-train", ["--data", "x", "--label-smoothing", "nan"], "--label-smoothing"),
    ("fer-train", ["--data", "x", "--time-limit", "inf"], "--time-limit"),
    ("fer-train", ["--data", "x", "--seed", "-1"], "--seed"),
    ("fer-train", ["--data", "x", "--drop", "nan"], "--drop"),
    ("fer-export", ["x.pt", "--out", "b", "--max-drop", "nan"], "--max-drop"),
    ("fer-export", ["x.pt", "--out", "b", "--crop-margin", "nan"], "--crop-margin"),
    ("fer-export", ["x.pt", "--out", "b", "--det-threshold", "nan"], "--det-threshold"),
    ("fer-bench", ["--max-acc-drop", "nan"], "--max-acc-drop"),
    ("fer-bench", ["--min-seconds", "inf"], "--min-seconds"),
    ("fer-bench", ["--soak-seconds", "inf"], "--soak-seconds"),
    ("fer-edge", ["run", "--demo", "--mqtt-heartbeat", "nan"], "--mqtt-heartbeat"),
    ("fer-edge", ["run", "--demo", "--scale-factor", "nan"], "--scale-factor"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("--") else None)
def test_cli_refuses_nan_and_inf_in_one_line(command, args, option, tmp_path):
    r = run_cli(MODULES[command], *args, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert option in r.stderr, r.stderr
    assert "not a finite number" in r.stderr or "not in the range" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("sizes, words", [("100000", ["--batch-sizes", "100000", "at most"]),
                                          ("1,8,0", ["--batch-sizes", ">= 1"])])
def test_bench_batch_sizes_are_bounded(sizes, words, tmp_path):
    check_cli("fer-bench", ["--batch-sizes", sizes, "--out", tmp_path / "b"], 1, words,
              absent=[tmp_path / "b"], timeout=120)


def test_bench_batch_that_cannot_fit_in_memory_is_refused():
    from fer_edge.benchmarks.harness import check_batch_memory
    from fer_edge.edge.bundle import load_bundle
    from fer_edge.edge.errors import FerEdgeError

    bundle = load_bundle()
    check_batch_memory(32, [bundle])  # the usual sizes fit
    with pytest.raises(FerEdgeError, match="--batch-sizes 10000000: .* GB is free"):
        check_batch_memory(10_000_000, [bundle])
