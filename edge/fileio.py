"""Atomic file writes: the one way every stage writes a file that someone will read later.

Data goes to a temporary file in the target's folder and is renamed into place, so a reader
never sees half a file (Ctrl-C, a full disk). The result gets the mode an ordinary ``open``
would have given it, not ``tempfile``'s private 0600, so files installed for other users
(the shipped bundle) stay readable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .errors import FerEdgeError


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file or folder made by ``tempfile`` (0600/0700) the mode ``open``/``mkdir``
    would have given it under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it there."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def check_writable_dir(path: str | os.PathLike) -> None:
    """Refuse, before any long work, an output folder that cannot be written: an existing
    file in its place or on its path, a read-only or full disk. Probes by writing (and
    removing) a small temporary file in the folder, or in its nearest existing parent when
    it does not exist yet; creates nothing that stays."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        what = "exists and is not a folder" if probe == path else f"{probe} is a file"
        raise FerEdgeError(f"{path}: {what}; choose another output folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-test.")
        try:
            os.write(fd, bytes(4096))
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise FerEdgeError(f"{path}: cannot write there ({e.strerror or e})") from None
