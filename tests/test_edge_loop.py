"""The loop at the machine's limit (issue 16): per-track classification interval, decode
ahead, several streams in one process. Real videos (the shared one and ones written here),
real OpenCV detection and real onnxruntime sessions of the shipped bundle."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, run_cli
from procs import signal_after_lines

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.detection.choose import source_detector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import open_backend
from fer_edge.edge.inputs.readahead import ReadAhead
from fer_edge.edge.inputs.sources import (
    LiveCapture,
    LoopedVideo,
    SourceSpec,
    VideoFile,
    open_source,
)
from fer_edge.edge.outputs.sinks import JsonlSink
from fer_edge.edge.pipeline import Pipeline
from fer_edge.edge.runner import Stream, run, run_streams

RUN = ("fer_edge.edge.cli", "run")
SFEW = SHARED_DATA / "realworld" / "sfew_frames"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture(scope="module")
def classifier(bundle):
    return open_backend(bundle, "int8", "ort", 1)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _video_frames(video: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def _labels(pipe: Pipeline, frames) -> tuple[list[str | None], int]:
    labels, classified = [], 0
    for f in frames:
        r = pipe(f)
        big = max(r.faces, key=lambda x: x.box[2] * x.box[3]) if r.faces else None
        labels.append(big.label if big else None)
        classified += sum(x.classified for x in r.faces)
    return labels, classified


# --- 1. per-track classification interval ---------------------------------------------------

def test_interval_agrees_with_every_frame_classification(video, bundle, classifier):
    frames = _video_frames(video)
    every, n_every = _labels(Pipeline(bundle, classifier=classifier, classify_every=1), frames)
    dflt, n_dflt = _labels(Pipeline(bundle, classifier=classifier), frames)  # the defaults
    agree = np.mean([a == b for a, b in zip(every, dflt, strict=True)])
    assert n_every == len(frames) and n_dflt < 0.6 * n_every, (n_every, n_dflt)
    assert agree >= 0.98, agree
    assert dflt[-20:] == ["angry"] * 20
    # A long interval with no other trigger is what the defaults avoid: it lags the change.
    lazy, _ = _labels(Pipeline(bundle, classifier=classifier, classify_every=30,
                               reclassify_score=0.0), frames)
    assert np.mean([a == b for a, b in zip(every, lazy, strict=True)]) < 0.98


def test_moved_box_is_reclassified(video, bundle, classifier):
    """A face whose box jumps (IoU with its box at the last classification below the
    threshold) is classified at once, not K frames later."""
    frame = _video_frames(video)[0]
    pipe = Pipeline(bundle, classifier=classifier, classify_every=100, reclassify_score=0.0,
                    detect_every=1, full_detect_every=1)
    assert pipe(frame).faces[0].classified
    assert not pipe(frame).faces[0].classified  # same box: carried over
    shifted = np.roll(frame, 80, axis=1)  # the face 80 px to the right: IoU ~0.6
    r = pipe(shifted)
    assert r.faces[0].track_id == 1 and r.faces[0].classified


def test_stills_are_unchanged(bundle, classifier, tmp_path):
    if not SFEW.is_dir():
        pytest.skip(f"{SFEW} not found")
    files = sorted(p for p in SFEW.rglob("*.*") if p.is_file())[::50][:12]
    for i, f in enumerate(files):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"{i:02d}{f.suffix}").symlink_to(f)
    rows = {}
    for every in (1, None):
        kw = {} if every is None else {"classify_every": every}
        pipe = Pipeline(bundle, classifier=classifier, **kw,
                        detector=source_detector(True))
        out = tmp_path / f"{every}.jsonl"
        run(open_source(str(tmp_path / "imgs")), pipe, JsonlSink(str(out), bundle.labels),
            independent_frames=True)
        rows[every] = _jsonl(out)
    faces = [f for r in rows[None] for f in r["faces"]]
    assert len(faces) >= 5 and all(f["classified"] for f in faces)
    assert [r["faces"] for r in rows[1]] == [r["faces"] for r in rows[None]]


# --- 2. decode ahead --------------------------------------------------------------------------

def _numbered_video(path: Path, n: int) -> Path:
    """A video whose frame i is a flat grey of level 3 * i: order and loss are visible."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 64))
    for i in range(n):
        w.write(np.full((64, 96, 3), 3 * i, np.uint8))
    w.release()
    return path


def test_file_frames_are_all_delivered_in_order(tmp_path):
    path = _numbered_video(tmp_path / "n.avi", 80)
    cap = cv2.VideoCapture(str(path))
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    reader = ReadAhead(LoopedVideo(VideoFile(SourceSpec("video", str(path))), 2), depth=2)
    levels = []
    while not reader.ended:
        got = reader.get(timeout=1.0)
        if got is not None:
            levels.append(int(round(float(got[0].image.mean()) / 3)))
            time.sleep(0.002 if len(levels) % 7 else 0.05)  # a slow consumer: queue full
    reader.close()
    assert expected == 80 and levels == list(range(80)) * 2 and reader.dropped == 0


def test_live_source_keeps_only_the_newest_frame(video):
    """A stream faster than its consumer: frames are dropped (and counted), never queued up;
    its end (no reconnect allowed) is raised after the frames before it."""
    from fer_edge.edge.errors import FerEdgeError

    src = LiveCapture(SourceSpec("url", str(video)), max_retries=0, read_timeout=0.5)
    reader = ReadAhead(src)
    stamps = []
    with pytest.raises(FerEdgeError, match="no frames after 0 reconnect"):
        while not reader.ended:
            got = reader.get(timeout=1.0)
            if got is not None:
                stamps.append(got[0].timestamp)
                time.sleep(0.05)
    reader.close()
    assert stamps == sorted(stamps) and 1 <= len(stamps) < 71
    assert len(stamps) + src.dropped + reader.dropped <= 71 and src.dropped + reader.dropped > 0


def test_run_counts_every_file_frame_and_reports_queue_wait(video, bundle, classifier,
                                                            tmp_path):
    out = tmp_path / "o.jsonl"
    s = run(VideoFile(SourceSpec("video", str(video))), Pipeline(bundle, classifier=classifier),
            JsonlSink(str(out), bundle.labels))
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    rows = _jsonl(out)
    assert s.frames == n == len(rows) and [r["frame"] for r in rows] == list(range(n))
    assert s.dropped == 0 and set(s.percentiles()) >= {"decode", "wait", "detect", "classify"}


def test_close_does_not_wait_for_the_source_to_end(video):
    reader = ReadAhead(LoopedVideo(VideoFile(SourceSpec("video", str(video))), 10_000))
    assert reader.get(timeout=5.0) is not None
    t = time.perf_counter()
    reader.close()
    assert time.perf_counter() - t < 2.0 and not reader._thread.is_alive()


# --- 3. several streams -------------------------------------------------------------------------

class CountingClassifier:
    """The real onnxruntime session, counting its calls and batch sizes."""

    def __init__(self, inner):
        self.inner, self.name, self.batches = inner, inner.name, []

    def __call__(self, x):
        self.batches.append(len(x))
        return self.inner(x)


def test_streams_share_one_batch_and_a_dead_stream_does_not_stop_the_others(
        video, bundle, classifier, tmp_path):
    counting = CountingClassifier(classifier)
    good = LoopedVideo(VideoFile(SourceSpec("video", str(video))), 3)
    # A live stream that runs dry after its frames and may not reconnect: it dies mid-run.
    dying = LiveCapture(SourceSpec("url", str(video)), max_retries=0, read_timeout=0.5)
    other = VideoFile(SourceSpec("video", str(video)))
    out = tmp_path / "m.jsonl"
    sums = run_streams([Stream(good, Pipeline(bundle, classifier=counting), "good"),
                        Stream(dying, Pipeline(bundle, classifier=counting), "dying"),
                        Stream(other, Pipeline(bundle, classifier=counting), "other")],
                       JsonlSink(str(out), bundle.labels))
    assert sums[0].frames == 213 and sums[0].failed is None
    assert sums[0].last_labels == ["angry"] * 20
    assert "no frames after 0 reconnect attempts" in sums[1].failed and sums[1].frames >= 1
    rows = _jsonl(out)
    assert {r["stream"] for r in rows} == {0, 1, 2} and sums[2].frames == 71
    assert [r["frame"] for r in rows if r["stream"] == 0] == list(range(213))
    assert max(counting.batches) >= 2  # the streams' due faces in one call
    assert len(counting.batches) < sum(s.classified for s in sums)


class FailingVideo(VideoFile):
    """A real video file whose reading fails with ``error`` after ``after`` frames (a network
    share that goes away: EIO; a decoder library's RuntimeError)."""

    def __init__(self, spec: SourceSpec, after: int, error: Exception):
        super().__init__(spec)
        self.after, self.error = after, error

    def __iter__(self):
        for i, frame in enumerate(super().__iter__()):
            if i == self.after:
                raise self.error
            yield frame


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"),
                                   RuntimeError("decoder gave up")], ids=["oserror", "runtime"])
def test_a_source_failing_with_an_os_or_runtime_error_ends_alone(video, bundle, classifier,
                                                                 error):
    spec = SourceSpec("video", str(video))
    sums = run_streams([Stream(FailingVideo(spec, 5, error), Pipeline(bundle,
                                                                      classifier=classifier),
                               "failing"),
                        Stream(VideoFile(spec), Pipeline(bundle, classifier=classifier),
                               "other")])
    assert str(error) in sums[0].failed and sums[0].frames == 5
    assert sums[1].failed is None and sums[1].frames == 71
    with pytest.raises(FerEdgeError, match="failing: .*" + str(error).split(" ")[-1]):
        run_streams([Stream(FailingVideo(spec, 5, error), Pipeline(bundle,
                                                                   classifier=classifier),
                            "failing")])


def test_cli_several_sources(video, tmp_path):
    out = tmp_path / "m.jsonl"
    r = run_cli(*RUN, "--source", str(video), "--source", str(video), "--jsonl", str(out),
                "--save-video", str(tmp_path / "m.avi"), "--no-display", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _jsonl(out)
    assert [sum(x["stream"] == s for x in rows) for s in (0, 1)] == [71, 71]
    assert "stream 1 (" in r.stderr and "all 2 streams" in r.stderr
    cap = cv2.VideoCapture(str(tmp_path / "m.avi"))  # the streams tiled side by side
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 640
    cap.release()
    bad = run_cli(*RUN, "--source", str(video), "--source", str(tmp_path / "missing.avi"),
                  "--no-display", "-q")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == \
        f"error: {tmp_path / 'missing.avi'}: no such video file"


def test_sigterm_stops_several_streams_cleanly(video, tmp_path):
    jl = tmp_path / "o.jsonl"
    code, err = signal_after_lines([*RUN, "--source", str(video), "--source", str(video),
                                    "--loop", "200", "--jsonl", str(jl), "-q", "--no-display"],
                                   jl, 20, signal.SIGTERM, wait=60, timeout=30)
    assert code == 130, err
    rows = _jsonl(jl)  # every line whole
    assert len(rows) >= 20 and {r["stream"] for r in rows} == {0, 1}


def test_stage_times_stay_bounded_over_a_long_run():
    """A summary's stage times take the same memory after 100,000 frames as after 4,096:
    exact mean, percentiles from a uniform sample (the soak's RSS stays flat)."""
    from fer_edge.edge.runner import StageTimes

    st = StageTimes(keep=4096)
    vals = np.random.default_rng(0).exponential(2.0, 100_000)
    for v in vals:
        st.add(float(v))
    s = st.stats()
    assert len(st) == 100_000 and st._buf.size == 4096
    assert s["mean"] == pytest.approx(vals.mean())
    assert s["p50"] == pytest.approx(np.percentile(vals, 50), rel=0.08)
    assert s["p90"] == pytest.approx(np.percentile(vals, 90), rel=0.08)
