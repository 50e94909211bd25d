"""Atomic file writes: the one way every stage writes a file that someone will read later.

Data goes to a temporary file in the target's folder and is renamed into place, so a reader
never sees half a file (Ctrl-C, a full disk). The result gets the mode an ordinary ``open``
would have given it, not ``tempfile``'s private 0600, so files installed for other users
(the shipped bundle) stay readable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import FerEdgeError


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


def write_error(path: str | os.PathLike, e: OSError, what: str = "write", note: str = "",
                option: str | None = None) -> FerEdgeError:
    """One line for a failed write: the option and file, the reason, and for a full disk
    what is free."""
    reason = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(Path(path).parent).free
            reason += f" ({free / 1e6:.1f} MB free)"
    return FerEdgeError(f"{option + ' ' if option else ''}{path}: cannot {what} ({reason}){note}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "write", note: str = "",
            option: str | None = None) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a FerEdgeError naming it."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e, what, note, option) from None


def check_writable_dir(path: str | os.PathLike, probe_bytes: int = 4096,
                       option: str | None = None) -> None:
    """Refuse, before any long work, an output folder that cannot be written: an existing
    file in its place or on its path, a read-only or full disk. Probes by writing (and
    removing) ``probe_bytes`` in a temporary file in the folder, or in its nearest existing
    parent when it does not exist yet; creates nothing that stays."""
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        what = "exists and is not a folder" if probe == path else f"{probe} is a file"
        raise FerEdgeError(f"{name}: {what}; choose another output folder")
    fd, tmp = -1, None
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-test.", suffix=".tmp")
        block = memoryview(bytes(probe_bytes))
        while block:  # a nearly full disk first gives a short write, then ENOSPC
            block = block[os.write(fd, block):]
        os.fsync(fd)
    except OSError as e:
        raise FerEdgeError(f"{name}: cannot write there ({e.strerror or e}"
                           + (", disk full" if e.errno == errno.ENOSPC else "") + ")") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def check_output_dir(path: str | os.PathLike, outputs: tuple[str, ...], what: str,
                     exist_ok: bool = False, option: str | None = None) -> None:
    """:func:`check_writable_dir`, and refuse a folder that already holds any of ``outputs``
    (the files of ``what``, an earlier run's) unless ``exist_ok``: nothing is replaced
    without being asked."""
    path = Path(path)
    check_writable_dir(path, option=option)
    there = [n for n in outputs if (path / n).exists()]
    if there and not exist_ok:
        name = f"{option} {path}" if option else str(path)
        raise FerEdgeError(f"{name}: already holds {what} ({', '.join(there)}); choose "
                           "another folder, or pass --exist-ok to replace it")


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/fer-edge/<parts>`` (default ``~/.cache/fer-edge/...``): caches that
    must not live in a bundle (read-only, or about to be shipped)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("fer-edge", *parts)
