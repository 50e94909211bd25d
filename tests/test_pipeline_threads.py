"""Issue 23 item 15: the Pipeline API from several threads, with real threads, the shipped
classifier (onnxruntime) and OpenCV's cascade on the shared video.

The audit's two findings were one race: OpenCV's CascadeClassifier keeps scratch data in the
object, so two threads in one detector raise ``cv2.error`` or return other boxes. One
Pipeline from four threads hit it through its own detector; four Pipelines matched serial
calls only when each had its own detector. Each detector now serialises its calls and each
Pipeline holds a lock per frame. The classifier needs none: one onnxruntime session runs
concurrent calls, and each Pipeline classifies its own crops, so the batches are the same
as in serial calls (no batching-order effect)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fer_edge.edge.detection.choose import make_detector
from fer_edge.edge.inputs.sources import SourceSpec, VideoFile
from fer_edge.edge.pipeline import Pipeline


@pytest.fixture(scope="module")
def frames(video) -> list[np.ndarray]:
    src = VideoFile(SourceSpec("video", str(video)))
    try:
        return [f.image for f, _ in zip(src, range(24), strict=False)]
    finally:
        src.close()


def _key(r) -> list:
    return [(f.box, f.track_id, f.label, np.round(f.probs, 6).tolist()) for f in r.faces]


def _threads(target, n: int) -> list:
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            target(k)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    ts = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a thread hung"
    return errors


def test_four_pipelines_sharing_classifier_and_detector_match_serial(frames):
    first = Pipeline()
    detector = make_detector("haar")  # one cascade shared by all four: the race the audit hit
    pipe = Pipeline(first.bundle, classifier=first.classifier, detector=detector)
    serial = [_key(pipe(f)) for f in frames]
    for _ in range(3):  # several rounds: a race shows up in some of them
        pipes = [Pipeline(first.bundle, classifier=first.classifier, detector=detector)
                 for _ in range(4)]
        outs: list[list] = [[] for _ in range(4)]
        errors = _threads(lambda k, o=outs, p=pipes: o[k].extend(_key(p[k](f)) for f in frames),
                          4)
        assert not errors, errors[0]
        for out in outs:
            assert out == serial, "a threaded Pipeline gave other results than serial calls"


def test_one_pipeline_from_four_threads(frames):
    pipe = Pipeline()
    results: list = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for f in frames[k::4]:
            r = pipe(f)
            with lock:
                results.append(r)

    for _ in range(2):
        results.clear()
        pipe.reset()
        errors = _threads(work, 4)
        assert not errors, errors[0]
        assert len(results) == len(frames)
        # the frames went through the tracker one at a time: consecutive frame numbers, and
        # the one face is one track throughout
        assert sorted(r.index for r in results) == list(range(len(frames)))
        assert all(len(r.faces) == 1 for r in results)
        assert {r.faces[0].track_id for r in results} == {1}
