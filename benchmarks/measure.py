"""Measurements: accuracy per model, interleaved latency, throughput, pipeline FPS."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 1.0
    min_runs: int = 200
    min_seconds: float = 2.0


def interleaved_latency(fns: dict[str, Callable[[], object]], timing: Timing,
                        on_round: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Warm every candidate up for ``warmup_s``, then call them round-robin until each has
    ``min_runs`` samples and ``min_seconds`` have passed: machine noise hits all alike.
    Returns per-candidate latencies in milliseconds."""
    for fn in fns.values():
        end = time.perf_counter() + timing.warmup_s
        while time.perf_counter() < end:
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    runs = 0
    while runs < timing.min_runs or time.perf_counter() - start < timing.min_seconds:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[k].append((time.perf_counter() - t) * 1e3)
        runs += 1
        if on_round is not None:
            on_round()
    return {k: np.asarray(v) for k, v in samples.items()}


def summarize(ms: np.ndarray) -> dict:
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "runs": int(len(ms))}


def open_video(video: str):
    """The benchmark video as a frame source, refused with one line if it cannot be opened
    or has no decodable frame (checked before any measurement, not after them)."""
    import cv2

    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.inputs.sources import VideoFile, parse_source

    try:
        return VideoFile(parse_source(video))
    except cv2.error:  # OpenCV failing while describing a file no backend could parse
        raise FerEdgeError(f"{video}: OpenCV cannot open this video (not a video, or a "
                           "codec this OpenCV lacks)") from None


def check_video(video: str) -> None:
    """Refuse a --video that cannot be opened or decoded, before the latency runs."""
    from fer_edge.edge.errors import FerEdgeError

    src = open_video(video)
    try:
        if next(iter(src), None) is None:
            raise FerEdgeError(f"{video}: no frame could be decoded from this video")
    finally:
        src.close()


def pipeline_fps(bundle, precision: str, video: str, naive: bool = False,
                 threads: int | None = None, loops: int = 10, streams: int = 1) -> dict:
    """The edge loop on ``video``: default settings, or the naive loop (Haar on every full
    frame, FP32, every face classified on every frame) for comparison. ``streams`` copies of
    the video run at once in one loop (one batched classifier call per tick); FPS is per
    stream. The load average when it ended is recorded: the numbers depend on it."""
    from fer_edge.edge.detection.choose import make_detector
    from fer_edge.edge.inputs.sources import LoopedVideo
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.runner import Stream, run_streams

    pipes: list = []
    for _ in range(streams):
        shared = pipes[0].classifier if pipes else None
        if naive:
            pipes.append(Pipeline(bundle, "fp32", threads=threads, classifier=shared,
                                  detector=make_detector("haar", max_width=None),
                                  detect_every=1, full_detect_every=1, classify_every=1))
        else:
            pipes.append(Pipeline(bundle, precision, threads=threads, classifier=shared))
    sums = run_streams([Stream(LoopedVideo(open_video(video), loops), p, f"copy {i}")
                        for i, p in enumerate(pipes)])
    if any(s.stopped_by == "signal" for s in sums):  # a partial loop is no result
        raise KeyboardInterrupt
    s = sums[0]
    p0 = pipes[0]
    return {"config": "naive (Haar full frame every frame, fp32, classify every frame)" if naive
            else f"default ({precision}, detect every {p0.detect_every}, ROI re-detect, "
                 f"320 px, classify every {p0.classify_every} or when moved/unsure)",
            "precision": "fp32" if naive else precision, "streams": streams,
            "frames": s.frames, "loops": loops, "frames_with_faces": s.frames_with_faces,
            "classified": s.classified, "fps": s.fps, "fps_per_stream": [x.fps for x in sums],
            "seconds": s.seconds, "stage_ms": s.percentiles(), "last_labels": s.last_labels,
            "ends": [x.last_labels[-1] if x.last_labels else None for x in sums],
            "load_avg": os.getloadavg()[0]}


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        from .environment import peak_rss_mb

        return peak_rss_mb()


def soak(bundle, precision: str, video: str, streams: int, seconds: float,
         threads: int | None = None, every_s: float | None = None) -> dict:
    """``streams`` copies of ``video``, looped, in one loop for ``seconds``: RSS sampled every
    ``every_s`` seconds (default: a twentieth of the run, at most 10 s). ``drift_pct``: the
    last sample against the one after the first sample period (start-up excluded)."""
    from fer_edge.edge.inputs.sources import LoopedVideo
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.runner import Stream, run_streams

    samples: list[tuple[float, float]] = []
    every_s = every_s or min(10.0, seconds / 20)
    t0 = time.perf_counter()

    class Sampler:  # the loop's progress hook: called once per tick
        def update(self, n: int) -> None:
            t = time.perf_counter() - t0
            if not samples or t - samples[-1][0] >= every_s:
                samples.append((round(t, 1), round(rss_mb(), 1)))

    pipes: list = []
    for _ in range(streams):
        pipes.append(Pipeline(bundle, precision, threads=threads,
                              classifier=pipes[0].classifier if pipes else None))
    sums = run_streams([Stream(LoopedVideo(open_video(video), 10**9), p, f"copy {i}")
                        for i, p in enumerate(pipes)], progress=Sampler(), max_seconds=seconds)
    if any(s.stopped_by == "signal" for s in sums):
        raise KeyboardInterrupt
    # Samples come from inside the loop (after the run the frames are freed); the first is
    # taken at start-up, the drift counts from the second.
    base = samples[1][1] if len(samples) > 2 else samples[0][1]
    return {"streams": streams, "seconds": sums[0].seconds, "rss_mb": samples,
            "drift_pct": 100 * (samples[-1][1] - base) / base,
            "fps_per_stream": [x.fps for x in sums], "load_avg": os.getloadavg()[0]}
