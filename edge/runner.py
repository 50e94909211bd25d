"""Drive Pipelines over FrameSources into sinks, with timing and a clean stop.

Threads: each source is decoded ahead on its own reader thread (:mod:`.readahead`); the loop
runs in the caller's thread. One tick takes the frames that are ready (one per stream),
detects and tracks in each stream's own Pipeline, classifies every stream's due faces in one
batched call per classifier, then writes each stream's results. A stream whose source fails
mid-run is reported and dropped while the others continue; with one stream the error is
raised, as it always was.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import FerEdgeError
from .inputs.readahead import ReadAhead
from .inputs.sources import FrameSource
from .outputs.framerate import FrameRate
from .outputs.sinks import FrameSink, JsonlSink, VideoSink, Window, annotate, tile
from .pipeline import STAGES, PendingFrame, Pipeline, classify_pending, split_probs
from .results import FrameResult

log = logging.getLogger(__name__)


class StageTimes:
    """One stage's times over a run in bounded memory: the exact mean, and p50/p90 over a
    uniform sample of at most ``keep`` frames (reservoir sampling), so that a run of days
    (or of four streams) does not grow with every frame."""

    def __init__(self, keep: int = 4096, seed: int = 0):
        self.n, self.total, self.keep = 0, 0.0, keep
        self._buf = np.empty(keep)
        self._rng = random.Random(seed)

    def add(self, ms: float) -> None:
        if self.n < self.keep:
            self._buf[self.n] = ms
        else:
            j = self._rng.randrange(self.n + 1)
            if j < self.keep:
                self._buf[j] = ms
        self.n += 1
        self.total += ms

    def __len__(self) -> int:
        return self.n

    def stats(self) -> dict[str, float]:
        a = self._buf[:min(self.n, self.keep)]
        return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                "mean": self.total / self.n}


@dataclass
class RunSummary:
    name: str = ""  # the stream (its source), in a run of several
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    dropped: int = 0
    corrupt: int = 0
    skipped: list[str] = field(default_factory=list)  # names of unreadable files
    faces_over_limit: int = 0  # faces found but not classified (beyond max_faces)
    seconds: float = 0.0
    stopped_by: str | None = None  # "signal", "user" or None (source ended / max frames)
    stage_ms: dict[str, StageTimes] = field(default_factory=lambda: {s: StageTimes()
                                                                        for s in STAGES})
    last_labels: list[str] = field(default_factory=list)  # label of the largest face per frame
    classified: int = 0  # faces classified (the others carried their probabilities over)
    failed: str | None = None  # the error that ended this stream early (others continued)
    # the stream's meter: the FPS its frames, /health and the MQTT heartbeat carried
    rate: FrameRate | None = None

    @property
    def fps(self) -> float:
        """The stream's mean frame rate: the same meter as every live FPS figure, over the
        whole run (its frames over the run's seconds)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {s: v.stats() for s, v in self.stage_ms.items() if len(v)}

    def text(self) -> str:
        lines = [f"frames {self.frames}  with faces {self.frames_with_faces}  faces {self.faces}"
                 f" (classified {self.classified})  dropped {self.dropped}  corrupt "
                 f"{self.corrupt}  {self.fps:.1f} FPS over {self.seconds:.2f}s"]
        if self.failed:
            lines.append(f"failed: {self.failed}")
        if self.skipped:
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            lines.append(f"skipped {len(self.skipped)} unreadable file(s): "
                         f"{', '.join(self.skipped[:5])}{more}")
        if self.faces_over_limit:
            lines.append(f"{self.faces_over_limit} face(s) not classified: more faces in a frame "
                         "than --max-faces")
        pct = self.percentiles()
        if pct:
            lines.append("stage ms  " + "  ".join(f"{s} p50 {v['p50']:.3f} p90 {v['p90']:.3f}"
                                                  for s, v in pct.items()))
        return "\n".join(lines)


class _Interrupted(Exception):
    pass


@dataclass
class Stream:
    """One source and its own Pipeline (tracker, smoothing) in a run of several.
    ``independent_frames``: the frames are unrelated stills (tracks reset per frame)."""
    source: FrameSource
    pipe: Pipeline
    name: str = ""
    independent_frames: bool = False


def run(source: FrameSource, pipe: Pipeline, jsonl: JsonlSink | None = None,
        video: VideoSink | None = None, window: Window | None = None,
        max_frames: int | None = None, independent_frames: bool = False,
        progress=None, sinks: Sequence[FrameSink] = ()) -> RunSummary:
    """Process frames until the source ends, ``max_frames``, q/Esc, Ctrl-C or SIGTERM.

    Sinks are always closed, so the video file is finalised and every JSON line is whole;
    a sink that fails to close (a video that could not be written completely) raises
    :class:`FerEdgeError` unless another error is already on its way out. The source's own
    error (a camera that died) is raised. ``sinks`` are extra outputs (live view, MQTT
    events) fed every frame, with the annotated frame when they ask for it.
    """
    return run_streams([Stream(source, pipe, str(source.spec.target), independent_frames)],
                       jsonl, video, window, max_frames, progress, sinks=sinks)[0]


def run_streams(streams: list[Stream], jsonl: JsonlSink | None = None,
                video: VideoSink | None = None, window: Window | None = None,
                max_frames: int | None = None, progress=None,
                max_seconds: float | None = None,
                sinks: Sequence[FrameSink] = ()) -> list[RunSummary]:
    """:func:`run` for several streams in one loop; returns one summary per stream.

    ``max_frames`` counts per stream; ``max_seconds`` ends the run after that long. JSONL
    rows carry the stream's index (``"stream"``); the window and the video show the streams
    tiled. A stream whose source fails mid-run is warned about and dropped (its summary says
    ``failed``) while the others continue; with a single stream the error is raised.
    """
    if not streams:
        raise FerEdgeError("no source to run")
    summaries = [RunSummary(name=s.name or str(s.source.spec.target)) for s in streams]
    ready = threading.Event()
    readers: list[ReadAhead | None] = [None] * len(streams)
    latest: list[np.ndarray | None] = [None] * len(streams)  # last annotated frame per stream

    # A signal stops the loop at once, except while the outputs are being written: there it
    # is noted and acted on after the tick, so the video and the JSONL agree frame by frame.
    state = {"writing": False, "stop": False}

    def on_term(signum, frame):
        state["stop"] = True
        if not state["writing"]:
            raise _Interrupted

    # Signal handlers can only be set from the main thread (the CLI); elsewhere Ctrl-C stays
    # the caller's business.
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_term) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    t_start = time.perf_counter()
    for summary in summaries:  # one meter per stream, started with the run
        summary.rate = FrameRate()
    stopped_by: str | None = None
    try:
        for i, s in enumerate(streams):
            readers[i] = ReadAhead(s.source, ready=ready, name=f"fer-edge-decode-{i}")
        active = list(range(len(streams)))
        while active:
            if max_seconds is not None and time.perf_counter() - t_start >= max_seconds:
                break
            t0 = time.perf_counter()
            got = _next_tick(streams, readers, summaries, active, ready)
            wait_ms = (time.perf_counter() - t0) * 1e3
            if not got:
                continue
            pending: list[PendingFrame] = []
            for i, frame, _ in got:
                s = streams[i]
                if s.independent_frames:
                    s.pipe.reset()
                pending.append(s.pipe.begin(frame.image, frame.index, frame.timestamp,
                                            frame.path))
            results = _classify(pending)
            extra_img = any(sink.wants_image() for sink in sinks)
            state["writing"] = True  # from here on the tick is counted and written whole
            for (i, frame, decode_ms), r in zip(got, results, strict=True):
                r.stream = i
                r.fps = summaries[i].rate.tick()
                r.timings["decode"], r.timings["wait"] = decode_ms, wait_ms
                count_result(summaries[i], r)
                if jsonl:
                    jsonl.write(r)
                if video or window or extra_img:
                    latest[i] = annotate(frame.image.copy(), r, r.fps)
                if max_frames is not None and summaries[i].frames >= max_frames:
                    active.remove(i)
            img = tile(latest) if video or window or extra_img else None
            for r in results:
                for sink in sinks:
                    sink.write(r, img if extra_img else None)
            if video or window:
                if video:
                    video.write(img)
                if window and not window.show(img):
                    stopped_by = "user"
                    break
            state["writing"] = False
            if state["stop"]:
                raise _Interrupted
            if progress is not None:
                progress.update(len(got))
    except (_Interrupted, KeyboardInterrupt):
        stopped_by = "signal"
    finally:
        state["writing"] = True  # a signal now only marks the summary
        seconds = time.perf_counter() - t_start
        for s, h in old.items():
            signal.signal(s, h)
        failing = sys.exc_info()[1] is not None
        close_error = None
        for sink in (jsonl, video, window, *sinks):
            if sink is not None:
                try:
                    sink.close()
                except FerEdgeError as e:
                    close_error = close_error or e
        for s, reader, summary in zip(streams, readers, summaries, strict=True):
            if reader is not None:
                reader.close()
            else:
                s.source.close()
            summary.seconds = seconds
            summary.dropped = s.source.dropped + (reader.dropped if reader else 0)
            summary.corrupt = s.source.corrupt
            summary.skipped = list(s.source.bad)
            summary.stopped_by = "signal" if state["stop"] else stopped_by
        if close_error is not None:
            if failing:
                log.error("%s", close_error)
            else:
                raise close_error
    return summaries


def _next_tick(streams: list[Stream], readers: list, summaries: list[RunSummary],
               active: list[int], ready: threading.Event) -> list[tuple[int, object, float]]:
    """The frames ready now, one per active stream (waiting briefly when none is); streams
    that ended leave ``active``, and one that failed is warned about (or, alone, raised)."""
    ready.clear()
    got = []
    for i in list(active):
        try:
            item = readers[i].poll()
        except (FerEdgeError, RuntimeError, OSError) as e:  # a source's own failure
            if not isinstance(e, FerEdgeError):
                e = FerEdgeError(f"{summaries[i].name}: {type(e).__name__}: {e}")
            if len(streams) == 1:
                raise e from None
            summaries[i].failed = str(e)
            active.remove(i)
            log.warning("stream %d (%s) failed: %s; the other streams continue", i,
                        summaries[i].name, e)
            continue
        if item is not None:
            got.append((i, *item))
        elif readers[i].ended:
            active.remove(i)
    if not got and active:
        ready.wait(0.1)
    return got


def _classify(pending: list[PendingFrame]) -> list[FrameResult]:
    """One classifier call per classifier (streams opened with the same classifier share
    it), then each frame finished with its own rows."""
    groups: dict[int, list[PendingFrame]] = {}
    for p in pending:
        groups.setdefault(id(p.pipe.classifier), []).append(p)
    for group in groups.values():
        probs = classify_pending(group, group[0].pipe.classifier)
        for p, rows in zip(group, split_probs(group, probs), strict=True):
            p.pipe.finish(p, rows)
    return [p.result for p in pending]


def count_result(summary: RunSummary, r: FrameResult) -> None:
    """Add one frame's result to the run's summary."""
    for s in STAGES:
        summary.stage_ms[s].add(r.timings.get(s, 0.0))
    summary.frames += 1
    summary.faces += len(r.faces)
    summary.classified += sum(f.classified for f in r.faces)
    summary.faces_over_limit += r.faces_over_limit
    if r.faces:
        summary.frames_with_faces += 1
        biggest = max(r.faces, key=lambda f: f.box[2] * f.box[3])
        summary.last_labels = (summary.last_labels + [biggest.label])[-20:]


def streams_text(summaries: list[RunSummary]) -> str:
    """Per-stream summaries, then the total, for a run of several streams."""
    if len(summaries) == 1:
        return summaries[0].text()
    lines = []
    for i, s in enumerate(summaries):
        lines.append(f"stream {i} ({s.name}):")
        lines += ["  " + line for line in s.text().splitlines()]
    frames = sum(s.frames for s in summaries)
    secs = max(s.seconds for s in summaries)
    lines.append(f"all {len(summaries)} streams: {frames} frames, "
                 f"{frames / secs if secs > 0 else 0:.1f} FPS in total, "
                 f"{sum(bool(s.failed) for s in summaries)} failed")
    return "\n".join(lines)
