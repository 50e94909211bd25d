"""Helpers for the end-to-end tests of the live outputs: a `fer-edge run` in the background
whose stderr is collected, a free port, and the external programs the tests need."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # git-ignored; CI can keep it


def need_program(name: str, package: str) -> str:
    """The path of ``name``; missing: a failure in CI (``CI`` set), a skip elsewhere."""
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path:
        return path
    msg = f"{name} not found: apt-get install {package} (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def need_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        msg = f"python module {name} missing: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunProc:
    """``python -m fer_edge.edge.cli run ARGS`` with stderr read on a thread."""

    def __init__(self, *args: str, env: dict | None = None):
        self.p = subprocess.Popen([sys.executable, "-m", "fer_edge.edge.cli", "run", *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def url(self, timeout: float = 30) -> str:
        """The live view's URL, from its one 'serving http://...' line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                m = re.search(r"serving (http://\S+/)", line)
                if m:
                    return m.group(1)
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no 'serving http://...' line; stderr:\n{self.stderr}")

    def wait(self, timeout: float = 60) -> int:
        rc = self.p.wait(timeout)
        self._t.join(5)
        return rc

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def signal_after_lines(module_args: list[str], jsonl: Path, lines: int, sig: int,
                       wait: float = 120, timeout: float = 60) -> tuple[int, str]:
    """Start ``python -m *module_args``; once ``jsonl`` holds ``lines`` lines (or after
    ``wait`` seconds) send it ``sig``; returns its exit code and stderr."""
    p = subprocess.Popen([sys.executable, "-m", *module_args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + wait
    while time.time() < deadline and (not jsonl.exists()
                                      or jsonl.read_text().count("\n") < lines):
        time.sleep(0.1)
    p.send_signal(sig)
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err
