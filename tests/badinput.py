"""The bad-input suite's one assertion: a command given bad input fails with one clear line.

Every ``tests/test_badinput_*.py`` file is a table of rows (the command's arguments, the exit
code, the words the message must contain, files that must and must not exist afterwards) run
through :func:`check_cli`, so a row reads like the issue that asked for it.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from conftest import run_cli

MODULES = {"fer-train": "fer_edge.train.cli", "fer-export": "fer_edge.export.cli",
           "fer-edge": "fer_edge.edge.cli", "fer-bench": "fer_edge.benchmarks.cli",
           "fer-train-detector": "fer_edge.train.detector.cli"}


def check_cli(command: str, args: Sequence[str], code: int, words: Iterable[str],
              exist: Iterable[Path] = (), absent: Iterable[Path] = (), timeout: float = 300,
              **kw):
    """Run ``command`` (e.g. ``fer-export``) with ``args``; assert the exit ``code``, that
    stderr has no traceback and its ``error:`` line contains every word of ``words``
    (case-insensitive), and which files exist afterwards. Returns the CompletedProcess."""
    r = run_cli(MODULES[command], *map(str, args), timeout=timeout, **kw)
    err = r.stderr
    assert r.returncode == code, f"exit {r.returncode}, expected {code}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if code != 0 and code != 130:
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, f"expected one 'error:' line\n{err[-3000:]}"
        for w in words:
            assert w.lower() in errors[0].lower(), f"{w!r} not in {errors[0]!r}"
    else:
        for w in words:
            assert w.lower() in (err + r.stdout).lower(), f"{w!r} not in output\n{err[-3000:]}"
    for p in exist:
        assert Path(p).exists(), f"{p} should exist"
    for p in absent:
        assert not Path(p).exists(), f"{p} should not exist"
    return r


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", readonly: bool = False, full: bool = False):
    """A small tmpfs mounted at ``path`` (a full or read-only disk for real), unmounted on
    exit; skips the test with the reason where mounting is not allowed (not root, a
    container without CAP_SYS_ADMIN)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or 'mount failed'}")
    try:
        if full:  # fill it to the last byte
            with open(path / "filler", "wb", buffering=0) as fh:
                with contextlib.suppress(OSError):
                    while fh.write(bytes(4096)):
                        pass
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
