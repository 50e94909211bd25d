"""Drive a Pipeline over a FrameSource into sinks, with timing and a clean stop."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import FerEdgeError
from .pipeline import STAGES, FrameResult, Pipeline
from .sinks import FrameSink, JsonlSink, VideoSink, Window, annotate
from .sources import FrameSource

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    dropped: int = 0
    corrupt: int = 0
    skipped: list[str] = field(default_factory=list)  # names of unreadable files
    faces_over_limit: int = 0  # faces found but not classified (beyond max_faces)
    seconds: float = 0.0
    stopped_by: str | None = None  # "signal", "user" or None (source ended / max frames)
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    last_labels: list[str] = field(default_factory=list)  # label of the largest face per frame

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        out = {}
        for s, v in self.stage_ms.items():
            if v:
                a = np.asarray(v)
                out[s] = {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90))}
        return out

    def text(self) -> str:
        lines = [f"frames {self.frames}  with faces {self.frames_with_faces}  faces {self.faces}"
                 f"  dropped {self.dropped}  corrupt {self.corrupt}  "
                 f"{self.fps:.1f} FPS over {self.seconds:.2f}s"]
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


def run(source: FrameSource, pipe: Pipeline, jsonl: JsonlSink | None = None,
        video: VideoSink | None = None, window: Window | None = None,
        max_frames: int | None = None, independent_frames: bool = False,
        progress=None, sinks: Sequence[FrameSink] = ()) -> RunSummary:
    """Process frames until the source ends, ``max_frames``, q/Esc, Ctrl-C or SIGTERM.

    Sinks are always closed, so the video file is finalised and every JSON line is whole;
    a sink that fails to close (a video that could not be written completely) raises
    :class:`FerEdgeError` unless another error is already on its way out. ``sinks`` are
    extra outputs (live view, MQTT events) fed every frame, with the annotated frame when
    they ask for it.
    """
    summary = RunSummary()

    # A signal stops the loop at once, except while the outputs are being written: there it
    # is noted and acted on after the frame, so the video and the JSONL agree frame by frame.
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
    fps_ema: float | None = None
    try:
        it = iter(source)
        while max_frames is None or summary.frames < max_frames:
            t0 = time.perf_counter()
            frame = next(it, None)
            if frame is None:
                break
            decode_ms = (time.perf_counter() - t0) * 1e3
            if independent_frames:
                pipe.reset()
            r: FrameResult = pipe(frame.image, frame.index, frame.timestamp, frame.path)
            state["writing"] = True  # from here on the frame is counted and written whole
            r.timings["decode"] = decode_ms
            for s in STAGES:
                summary.stage_ms[s].append(r.timings.get(s, 0.0))
            summary.frames += 1
            summary.faces += len(r.faces)
            summary.faces_over_limit += r.faces_over_limit
            if r.faces:
                summary.frames_with_faces += 1
                biggest = max(r.faces, key=lambda f: f.box[2] * f.box[3])
                summary.last_labels = (summary.last_labels + [biggest.label])[-20:]
            if jsonl:
                jsonl.write(r)
            extra_img = any(s.wants_image() for s in sinks)
            img = None
            if video or window or extra_img:
                dt = time.perf_counter() - t0
                fps_ema = 1 / dt if fps_ema is None else 0.9 * fps_ema + 0.1 / max(dt, 1e-6)
                img = annotate(frame.image.copy(), r, fps_ema)
                if video:
                    video.write(img)
            for s in sinks:
                s.write(r, img if extra_img else None)
            if window and not window.show(img):
                summary.stopped_by = "user"
                break
            state["writing"] = False
            if state["stop"]:
                raise _Interrupted
            if progress is not None:
                progress.update(1)
    except (_Interrupted, KeyboardInterrupt):
        summary.stopped_by = "signal"
    finally:
        state["writing"] = True  # a signal now only marks the summary
        summary.seconds = time.perf_counter() - t_start
        summary.dropped, summary.corrupt = source.dropped, source.corrupt
        summary.skipped = list(source.bad)
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
        source.close()
        if state["stop"]:
            summary.stopped_by = "signal"
        if close_error is not None:
            if failing:
                log.error("%s", close_error)
            else:
                raise close_error
    return summary
