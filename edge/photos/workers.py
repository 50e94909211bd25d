"""Folders of photos on every core: ``workers`` processes, each with its own Pipeline on a
single-thread onnxruntime session; results come back in input order.

Photos are independent (tracks reset per photo), so they spread over processes with nothing
to share; each worker reads, detects, crops and classifies its photo, the parent writes the
results in the order of the input. ``fer-edge run --source FOLDER`` and ``fer-bench
--realworld`` both use :func:`predict_stills`. Ctrl-C or SIGTERM stops the workers (they ignore
SIGINT themselves, so the parent decides) and the parent keeps what it already wrote.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from ..bundle import load_bundle
from ..detection.choose import source_detector
from ..errors import FerEdgeError
from ..inputs.images import BadImage, read_image
from ..inputs.sources import ImageFiles
from ..outputs.sinks import FrameSink
from ..pipeline import Pipeline
from ..results import FrameResult
from ..runner import RunSummary, count_result

log = logging.getLogger(__name__)

# (path, the FrameResult or the reason the file could not be read, seconds in the Pipeline)
Prediction = tuple[str, FrameResult | str, float]


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class StillsRecipe:
    """How a worker builds its Pipeline (sent to the worker processes, so plain values):
    ``source_detector(True, **detector)`` and ``Pipeline(load_bundle(bundle), threads=1,
    **pipeline)``."""

    bundle: str | None = None
    detector: dict = field(default_factory=dict)
    pipeline: dict = field(default_factory=dict)

    def build(self) -> Pipeline:
        return Pipeline(load_bundle(self.bundle), threads=1,
                        detector=source_detector(True, **self.detector), **self.pipeline)


def check_workers(workers: int | None) -> int:
    """``--workers``: None is every core; otherwise a whole number >= 1."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FerEdgeError(f"--workers {workers!r}: a whole number >= 1")
    return workers


def predict_one(pipe: Pipeline, path: str) -> Prediction:
    """One photo through ``pipe`` (tracks reset first): its result, or why it is unreadable."""
    t0 = time.perf_counter()
    try:
        img = read_image(path)
    except BadImage as e:
        return path, str(e), 0.0
    pipe.reset()
    t1 = time.perf_counter()
    r = pipe(img, path=path)
    r.timings["decode"], r.timings["wait"] = (t1 - t0) * 1e3, 0.0
    return path, r, time.perf_counter() - t1


_WORKER_PIPE: Pipeline | None = None


def _init_worker(recipe: StillsRecipe) -> None:
    global _WORKER_PIPE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _WORKER_PIPE = recipe.build()


def _worker_predict(path: str) -> Prediction:
    assert _WORKER_PIPE is not None
    return predict_one(_WORKER_PIPE, path)


def predict_stills(recipe: StillsRecipe, paths: Iterable[str], workers: int = 1,
                   pipe: Pipeline | None = None) -> Iterator[Prediction]:
    """Every photo of ``paths``, in input order. ``workers`` 1 runs here, on ``pipe`` (or one
    built from ``recipe``); more start that many processes, each building its own Pipeline
    from ``recipe`` (a bad recipe fails in the parent first, with its one error line)."""
    paths = [str(p) for p in paths]
    if workers <= 1 or len(paths) <= 1:
        pipe = pipe or recipe.build()
        for p in paths:
            yield predict_one(pipe, p)
        return
    if pipe is None:
        recipe.build()  # a bad bundle or detector is one error here, not one per worker
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding ORT sessions
    ex = ProcessPoolExecutor(min(workers, len(paths)), ctx, _init_worker, (recipe,))
    try:
        # chunks of a few photos: less traffic, and still an even spread over the workers
        yield from ex.map(_worker_predict, paths, chunksize=max(1, min(8, len(paths) //
                                                                         (4 * workers))))
    except BrokenProcessPool:
        raise FerEdgeError(f"a --workers process stopped unexpectedly (out of memory, or "
                           f"killed); run again with fewer workers than {workers}") from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def run_stills(recipe: StillsRecipe, source: ImageFiles, workers: int,
               jsonl: FrameSink | None = None, max_frames: int | None = None,
               progress=None) -> RunSummary:
    """``fer-edge run --source FOLDER --workers N``: every photo of ``source`` through
    ``workers`` processes, the JSONL rows written here in the folder's order. Ctrl-C or
    SIGTERM stops the workers and closes the JSONL with every row written so far whole."""
    summary = RunSummary(name=str(source.spec.target))
    main = threading.current_thread() is threading.main_thread()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term) if main else None
    t0 = time.perf_counter()
    try:
        for i, (path, r, _) in enumerate(predict_stills(recipe, source.files, workers)):
            if isinstance(r, str):
                log.warning("%s; skipped", r)
                summary.corrupt += 1
                summary.skipped.append(os.path.basename(path))
                continue
            r.index, r.timestamp = i, float(i)
            count_result(summary, r)
            if jsonl is not None:
                jsonl.write(r)
            if progress is not None:
                progress.update(1)
            if max_frames is not None and summary.frames >= max_frames:
                break
        if not summary.frames and summary.corrupt == len(source.files):
            raise FerEdgeError(f"{source.spec.target}: none of the {len(source.files)} images "
                               "could be read (see the warnings above)")
    except KeyboardInterrupt:
        summary.stopped_by = "signal"
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        summary.seconds = time.perf_counter() - t0
        if jsonl is not None:
            jsonl.close()
        source.close()
    return summary
