"""Measurements: accuracy per model, interleaved latency, throughput, pipeline FPS."""

from __future__ import annotations

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
    from fer_edge.edge.sources import VideoFile, parse_source

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
                 threads: int | None = None, loops: int = 10) -> dict:
    """The edge loop on ``video``: default settings, or the naive loop (Haar on every full
    frame, FP32) for comparison."""
    from fer_edge.edge.detect import make_detector
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.runner import run
    from fer_edge.edge.sources import LoopedVideo

    if naive:
        pipe = Pipeline(bundle, "fp32", threads=threads, detector=make_detector("haar",
                        max_width=None), detect_every=1, full_detect_every=1)
    else:
        pipe = Pipeline(bundle, precision, threads=threads)
    s = run(LoopedVideo(open_video(video), loops), pipe)
    if s.stopped_by == "signal":  # run() stops on Ctrl-C/SIGTERM: a partial loop is no result
        raise KeyboardInterrupt
    return {"config": "naive (Haar full frame every frame, fp32)" if naive else
            f"default ({precision}, detect every 3, ROI re-detect, 320 px)",
            "precision": "fp32" if naive else precision, "frames": s.frames, "loops": loops,
            "frames_with_faces": s.frames_with_faces, "fps": s.fps, "seconds": s.seconds,
            "stage_ms": s.percentiles(), "last_labels": s.last_labels}
