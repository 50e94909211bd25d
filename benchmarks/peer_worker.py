"""Run a peer FER package (``fer``, ``facex``) on images or a video, in the peer's own Python.

A standalone script, not part of ``fer_edge``: the peers pin stacks of their own (TensorFlow,
opencv-contrib) that do not belong in fer-edge's environment, so ``fer-bench --peers`` starts
this file with the peer's interpreter (``--peer-python``). It only calls the peer's public API
and prints what the peer predicted; fer-bench scores the predictions with the same code as its
own (``benchmarks/endtoend.py``).

Input (stdin, JSON): ``{"peer": "fer", "task": "images"|"crops"|"video", "paths": [...],
"threads": 1, "loops": 1}``. Output (stdout, JSON): ``{"peer", "version", "predictions":
[[path, [[[x, y, w, h], label], ...] or "error text", seconds], ...]}``, for ``video``
``{"frames", "seconds", "labels"}`` (the label of the largest face per frame). Progress goes to
stderr as ``@progress N`` lines.
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


def _label(name: str) -> str:
    name = str(name).lower()
    return CANONICAL.get(name, name)


def main() -> None:
    job = json.load(sys.stdin)
    threads = int(job.get("threads", 1))
    if hasattr(os, "sched_setaffinity"):  # the peer's threads on as many cores as ours
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
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
        fn = both if job["task"] == "images" else crop
        preds = []
        for n, path in enumerate(job["paths"], start=1):
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                preds.append([path, f"{path}: the peer's reader cannot decode it", 0.0])
                continue
            t0 = time.perf_counter()
            dets = fn(img)
            secs = time.perf_counter() - t0
            preds.append([path, [[[float(v) for v in box], _label(lab)] for box, lab in dets],
                          secs])
            if n % 50 == 0:
                print(f"@progress {n}", file=sys.stderr, flush=True)
        out["predictions"] = preds
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
