"""Atomic file writes: the one way every stage writes a file that someone will read later.

Data goes to a temporary file in the target's folder and is renamed into place, so a reader
never sees half a file (Ctrl-C, a full disk). The result gets the mode an ordinary ``open``
would have given it, not ``tempfile``'s private 0600, so files installed for other users
(the shipped bundle) stay readable.

Also here, the other guards every command's outputs share:

- temporaries carry their writer's pid in their name (:func:`temp_prefix`); the next writer to
  the same place removes those of processes that are gone (:func:`sweep_stale`), so a
  ``kill -9`` does not leave a 20 MB ``.partial`` video or a hidden export folder forever;
- :func:`folder_lock`: one run at a time writes into an output folder (``fcntl.flock``);
- :func:`check_not_inputs`: an output is never one of the command's input files (compared
  as files, device and inode, so a symlink or hard link is caught too);
- :func:`check_regular_file`: an output that exists is a regular file, not a FIFO or
  device that would block or swallow the run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import FerEdgeError


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file or folder made by ``tempfile`` (0600/0700) the mode ``open``/``mkdir``
    would have given it under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


_TEMP = re.compile(r"^\.?(?P<name>.+)\.pid(?P<pid>\d+)\.[^/]*$")


def temp_prefix(name: str, hidden: bool = False) -> str:
    """The name prefix of a temporary that will become ``name``: it carries this process's
    pid, so :func:`sweep_stale` can tell a dead writer's leftovers from a live one's."""
    return f"{'.' if hidden else ''}{name}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def sweep_stale(folder: str | os.PathLike, name: str) -> list[Path]:
    """Remove the temporaries (files or folders named by :func:`temp_prefix`) that writers of
    ``name`` in ``folder`` left behind when they were killed: those whose pid is no longer
    running. Returns what was removed; what cannot be removed is left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP.match(e.name)
        if not m or m["name"] != name or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it there
    (removing what killed writers of ``path`` left behind)."""
    path = Path(path)
    sweep_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
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
        sweep_stale(probe, "write-test")
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=temp_prefix("write-test", hidden=True),
                                   suffix=".tmp")
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
    for n in outputs:
        check_regular_file(path / n, option)
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


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def check_regular_file(path: str | os.PathLike, option: str | None = None) -> None:
    """Refuse a path (an output, or a file read whole) that exists and is not a regular file:
    a FIFO waits forever for the other side, a device swallows or never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing (or unreadable: the write itself will name the problem)
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        name = f"{option} {path}" if option else str(path)
        raise FerEdgeError(f"{name}: is {kind}, not a regular file; give a file name")


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _files_under(folder: str) -> Iterator[str]:
    for root, _, names in os.walk(folder):
        for n in names:
            yield os.path.join(root, n)


def check_not_inputs(outputs: Iterable[tuple[str | None, str | os.PathLike]],
                     inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that is one of the inputs: the same file (device and inode, so a
    symlink or a hard link to an input is caught as well as the same path), or a file inside
    an input folder (a folder of images, a dataset). ``outputs`` are (option, path) pairs;
    inputs that are not local files or folders (URLs, cameras, None) are ignored."""
    existing = [(opt, out, fid) for opt, out in outputs if (fid := _file_id(out)) is not None]
    if not existing:
        return  # an output that does not exist yet cannot be an input
    for inp in inputs:
        if inp is None or not os.path.exists(inp):
            continue
        if os.path.isdir(inp):
            real = os.path.realpath(inp)
            near = [o for o in existing if os.stat(o[1]).st_nlink > 1
                    or os.path.realpath(o[1]).startswith(real + os.sep)]
            ids = {_file_id(f) for f in _files_under(inp)} if near else set()
        else:
            ids = {_file_id(inp)}
        for opt, out, fid in existing:
            if fid in ids:
                raise FerEdgeError(f"{opt + ' ' if opt else ''}{out}: is the same file as the "
                                   f"input {inp}; writing it would overwrite that source file. "
                                   "Choose another output")


_HELD: set[str] = set()  # lock files this process holds (a nested lock of the same folder)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, option: str = "--out") -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``.NAME.lock`` beside ``folder`` while the body
    runs, so two runs never write into one output folder: the second is refused at once with
    one line naming the folder and the first run's pid. The lock sits beside the folder, not
    in it, because the folder may not exist yet and a bundle folder is replaced by a rename;
    it is removed at the end (with the parent folders made for it, if still empty), and the
    kernel releases it if the process is killed."""
    folder = Path(os.path.abspath(folder))
    lock = folder.parent / f".{folder.name or 'root'}.lock"
    key = str(lock)
    if key in _HELD:
        yield
        return
    made = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]
    above = next(p for p in (folder.parent, *folder.parent.parents) if p.exists())
    if not above.is_dir():
        raise FerEdgeError(f"{option} {folder}: {above} is a file, not a folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e, "lock it", option=option) from None
    try:
        with _flock(lock, folder, option):
            yield
    finally:
        for d in made:  # deepest first; only empty ones go
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def _flock(lock: Path, folder: Path, option: str) -> Iterator[None]:
    key = str(lock)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(folder, e, "lock it", option=option) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise write_error(folder, e, "lock it", option=option) from None
            raise FerEdgeError(f"{option} {folder}: another run (pid {holder}) is writing "
                               "there; wait for it to end, or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this lock file meanwhile: take a fresh one
    try:
        with contextlib.suppress(OSError):  # the pid is for the message only (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
