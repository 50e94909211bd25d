from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FER_EDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
FER2013 = SHARED_DATA / "fer2013"
VIDEO = SHARED_DATA / "video" / "neutral_to_angry.avi"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Dataset caches of the tests' own small files go to a temp dir; the shared FER2013
    cache is reused across tests through one session-wide folder."""
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def fer2013() -> Path:
    if not (FER2013 / "train").is_dir():
        pytest.skip(f"FER2013 not found at {FER2013} (set FER_EDGE_SHARED_DATA)")
    return FER2013


@pytest.fixture(scope="session")
def video() -> Path:
    if not VIDEO.is_file():
        pytest.skip(f"shared video not found at {VIDEO}")
    return VIDEO


def write_faces(root: Path, classes: dict[str, int], size: int = 48, color: bool = False,
                seed: int = 0) -> None:
    """Write ``n`` random images per class folder (JPEG; colour and odd sizes when asked)."""
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size, 3) if color else (size, size)
            cv2.imwrite(str(d / f"{i:03d}.jpg"), rng.integers(0, 256, shape, dtype=np.uint8))


def run_cli(*args: str, timeout: float = 600, **kw):
    import subprocess

    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
