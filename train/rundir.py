"""The run folder (``fer-train --out``): chosen, checked before training, never clobbered.

Like ultralytics, the default folder ``runs/train`` becomes ``runs/train2``, ``runs/train3``
... when it already holds something; a folder named explicitly that holds a run is refused
unless ``exist_ok``. Before any data is read the folder is created and a probe file is
written to it, so a read-only or full disk, or a path that is a file, fails at once with one
line. A folder this run created is removed again when the run fails before writing into it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import check_not_inputs, check_writable_dir, folder_lock

DEFAULT_OUT = "runs/train"
RUN_FILES = ("best.pt", "last.pt", "metrics.json", "train.log")
PROBE_BYTES = 256 * 1024  # a full disk fails here, not after the first epoch


def check_run_inputs(out: Path, inputs: list[str | None]) -> None:
    """Refuse an ``--out`` whose run files (best.pt, last.pt, ...) are one of ``inputs``
    (the data, a teacher or --init checkpoint; never the --resume checkpoint, which a resumed
    run rightly replaces)."""
    check_not_inputs([("--out", out / n) for n in (*RUN_FILES, "curves.png", "confusion.png")],
                     inputs)


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


@contextlib.contextmanager
def run_folder(folder: Path, create: bool = True, exist_ok: bool = True) -> Iterator[Path]:
    """Lock ``folder`` for this run (a second run into it is refused with one line), create
    it (and missing parents) and probe it; if the body fails, remove the folders created here
    that are still empty, so a failed run leaves nothing behind. ``exist_ok`` False: a run
    that finished there since :func:`choose_out` looked is not overwritten either.
    ``create`` False (a torchrun rank other than 0): only yield the folder."""
    if not create:
        yield folder
        return
    with folder_lock(folder, "--out"):
        if not exist_ok and folder.is_dir() and holds_run(folder):
            raise FerEdgeError(f"--out {folder}: another run wrote there meanwhile; choose "
                               "another folder, or pass --exist-ok to overwrite it")
        with _made_folder(folder) as made_here:
            yield made_here


@contextlib.contextmanager
def _made_folder(folder: Path) -> Iterator[Path]:
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
        check_writable_dir(folder, PROBE_BYTES, option="--out")
        yield folder
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(made: list[Path]) -> None:
    for d in made:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds when empty
