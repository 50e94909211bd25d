"""The run folder (``fer-train --out``): chosen, checked before training, never clobbered.

Like ultralytics, the default folder ``runs/train`` becomes ``runs/train2``, ``runs/train3``
... when it already holds something; a folder named explicitly that holds a run is refused
unless ``exist_ok``. Before any data is read the folder is created and a probe file is
written to it, so a read-only or full disk, or a path that is a file, fails at once with one
line. A folder this run created is removed again when the run fails before writing into it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError

DEFAULT_OUT = "runs/train"
RUN_FILES = ("best.pt", "last.pt", "metrics.json", "train.log")
PROBE_BYTES = 256 * 1024  # a full disk fails here, not after the first epoch


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` has outputs of a training run that writing into it would replace."""
    return any((folder / name).exists() for name in RUN_FILES)


def increment_path(path: Path) -> Path:
    """``path`` if it is free (missing or an empty folder), else ``path2``, ``path3``, ..."""
    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    if free(path):
        return path
    n = 2
    while not free(path.with_name(f"{path.name}{n}")):
        n += 1
    return path.with_name(f"{path.name}{n}")


def choose_out(out: str | None, exist_ok: bool, resume: str | None = None) -> Path:
    """The folder a run writes to. ``out`` None: the resumed run's folder, else the next free
    ``runs/train``, ``runs/train2``, ... An explicit ``out`` holding another run is refused
    unless ``exist_ok``."""
    if out is None:
        if resume:
            return Path(resume).parent
        return Path(DEFAULT_OUT) if exist_ok else increment_path(Path(DEFAULT_OUT))
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FerEdgeError(f"--out {path}: is a file, not a folder")
    same_as_resumed = resume is not None and _same(path, Path(resume).parent)
    if not exist_ok and not same_as_resumed and path.is_dir() and holds_run(path):
        present = ", ".join(n for n in RUN_FILES if (path / n).exists())
        raise FerEdgeError(f"--out {path}: already holds a run ({present}); choose another "
                           "folder, or pass --exist-ok to overwrite it")
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def write_error(path: str | os.PathLike, e: OSError, what: str = "write",
                note: str = "") -> FerEdgeError:
    """One line for a failed write: the file, the reason, and for a full disk what is free."""
    reason = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(Path(path).parent).free
            reason += f" ({free / 1e6:.1f} MB free)"
    return FerEdgeError(f"{path}: cannot {what} ({reason}){note}")


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "write", note: str = "") -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a FerEdgeError naming it."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e, what, note) from None


def _probe(folder: Path) -> None:
    """Write and delete a file in ``folder``: fails for read-only, full or foreign folders."""
    fd, tmp = -1, None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fer-train-probe.", suffix=".tmp")
        block = memoryview(b"\0" * PROBE_BYTES)
        while block:  # a nearly full disk first gives a short write, then ENOSPC
            block = block[os.write(fd, block):]
        os.fsync(fd)
    except OSError as e:
        raise FerEdgeError(f"--out {folder}: cannot write there ({e.strerror or e}"
                           + (", disk full" if e.errno == errno.ENOSPC else "") + ")") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def run_folder(folder: Path, create: bool = True) -> Iterator[Path]:
    """Create ``folder`` (and missing parents) and probe it; if the body fails, remove the
    folders created here that are still empty, so a failed run leaves nothing behind.
    ``create`` False (a torchrun rank other than 0): only yield the folder."""
    if not create:
        yield folder
        return
    made: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise FerEdgeError(f"--out {folder}: {p} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(made)
        raise FerEdgeError(f"--out {folder}: cannot create it ({e.strerror or e})") from None
    try:
        _probe(folder)
        yield folder
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(made: list[Path]) -> None:
    for d in made:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds when empty
