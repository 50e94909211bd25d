"""Detection and framing choices for stills, end to end on a labelled photo folder.

    python tools/realworld_sweep.py ../shared/data/realworld/sfew_frames [--model BUNDLE]
    python tools/realworld_sweep.py ../shared/data/realworld/sfew_frames --detector ours \\
        --framings box,landmarks,aligned --thresholds 0.35,0.5 --main-face largest,score

Prints one row per choice: face found, end-to-end accuracy, accuracy on found faces, false
detections per image (the numbers in docs/realworld.md and docs/detector.md). Uses the same
Pipeline and scorer as ``fer-bench --realworld``; only the detector, its score threshold, the
crop framing and the choice of the main face vary. Each detector pass is scored for every
--main-face rule (the rule only picks among the same detections).
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import time

from fer_edge.benchmarks.endtoend import (
    MAIN_FACE_RULES,
    pipeline_predictions,
    read_labelled_images,
    score_end_to_end,
)
from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
from fer_edge.edge.pipeline import Pipeline
from fer_edge.edge.preprocess import LANDMARK_FRAMING

FRAMINGS = ("bundle", "box", "landmarks", "aligned")


def framed(crop, framing: str, margin: float):
    """The bundle's CropSpec with ``framing``: its own, box only, landmarks, landmarks+align
    (its calibrated landmarks, or the shipped calibration for a bundle without them)."""
    if framing == "bundle":
        return dataclasses.replace(crop, margin=margin)
    own = (crop.eye_distance, crop.eye_y) if crop.eye_distance else LANDMARK_FRAMING
    lm = own if framing in ("landmarks", "aligned") else (None, crop.eye_y)
    return dataclasses.replace(crop, margin=margin, eye_distance=lm[0], eye_y=lm[1],
                               align=framing == "aligned")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--model", default=None)
    ap.add_argument("--detector", default="haar", choices=("haar", "ours", "centerface"))
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--margins", default="", help="extra box margins to try (comma list)")
    ap.add_argument("--profile", action="store_true", help="haar: also the profile cascade")
    ap.add_argument("--framings", default="bundle", help="comma list of " + ",".join(FRAMINGS))
    ap.add_argument("--thresholds", default="", help="ours: score thresholds (comma list)")
    ap.add_argument("--main-face", default="largest", help="comma list of "
                    + ",".join(MAIN_FACE_RULES))
    ap.add_argument("--dump", default=None, help="pickle every choice's per-image detections "
                    "(box, label, score) here, to score other rules offline")
    a = ap.parse_args()
    dumped = {}
    bundle = load_bundle(a.model)
    faces = read_labelled_images(a.folder, bundle.labels)
    model = bundle_detector_model(bundle, a.detector, None)
    thresholds = [float(t) for t in a.thresholds.split(",") if t] or [None]
    choices = [(f, bundle.crop.margin, a.profile, t) for f in a.framings.split(",")
               for t in thresholds]
    choices += [("box", float(m), a.profile, None) for m in a.margins.split(",") if m]
    print("| detector | width | framing | margin | threshold | main face | found | e2e | "
          "on found | false det/img | photos/s |")
    for framing, margin, profile, thr in choices:
        b = dataclasses.replace(bundle, crop=framed(bundle.crop, framing, margin))
        det = source_detector(True, a.detector, model, width=a.width,
                              profile=profile if a.detector == "haar" else None,
                              score_threshold=thr)
        pipe = Pipeline(b, "int8", threads=1, detector=det)
        t = time.time()
        preds = list(pipeline_predictions(pipe, faces))
        secs = time.time() - t
        dumped[(framing, margin, thr)] = preds
        for rule in a.main_face.split(","):
            r = score_end_to_end(faces, bundle.labels, preds, rule)
            print(f"| {a.detector} | {a.width} | {framing} | {margin:.3f} | "
                  f"{getattr(det, 'score_threshold', '-')} | {rule} | "
                  f"{100 * r['detection_recall']:.1f} | {100 * r['accuracy']:.1f} | "
                  f"{100 * r['accuracy_found']:.1f} | {r['false_detections_per_image']:.2f} | "
                  f"{r['images'] / secs:.1f} |", flush=True)
    if a.dump:
        with open(a.dump, "wb") as fh:
            pickle.dump({"faces": faces, "labels": bundle.labels, "runs": dumped}, fh)


if __name__ == "__main__":
    main()
