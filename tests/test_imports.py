"""The edge runtime must run where torch and timm do not exist, and CLIs must start fast."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import fer_edge.edge


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print(' '.join(sorted(m for m in sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_edge_never_imports_torch_or_timm():
    mods = [m.name for m in pkgutil.walk_packages(fer_edge.edge.__path__, "fer_edge.edge.")]
    assert "fer_edge.edge.data" in mods and "fer_edge.edge.preprocess" in mods
    loaded = _loaded_after("\n".join(f"import {m}" for m in mods))
    assert not {"torch", "timm", "torchvision", "matplotlib", "paho", "selenium"} & loaded


def test_cli_modules_import_no_heavy_libraries():
    loaded = _loaded_after("import fer_edge.train.cli, fer_edge.export.cli, "
                           "fer_edge.edge.cli, fer_edge.benchmarks.cli, "
                           "fer_edge.train.detector.cli")
    assert not {"torch", "timm", "onnx", "onnxruntime", "matplotlib"} & loaded


def test_every_command_has_help():
    for mod in ("fer_edge.train.cli", "fer_edge.export.cli", "fer_edge.edge.cli",
                "fer_edge.benchmarks.cli", "fer_edge.train.detector.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "Usage" in r.stdout, (mod, r.stderr)
