"""Detection and framing choices for stills, end to end on a labelled photo folder.

    python tools/realworld_sweep.py ../shared/data/realworld/sfew_frames [--model BUNDLE]

Prints one row per choice: face found, end-to-end accuracy, accuracy on found faces, false
detections per image (the numbers in docs/realworld.md). Uses the same Pipeline and scorer as
``fer-bench --realworld``; only the detector and the crop margin vary.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from fer_edge.benchmarks.endtoend import evaluate_end_to_end, read_labelled_images
from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.detection.choose import source_detector
from fer_edge.edge.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--model", default=None)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--margins", default="")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    bundle = load_bundle(a.model)
    faces = read_labelled_images(a.folder, bundle.labels)
    choices = [("frontal", a.width, bundle.crop.margin, False)]
    if a.profile:  # the stills default
        choices.append(("frontal+profile", a.width, bundle.crop.margin, True))
    choices += [("frontal", a.width, float(m), False) for m in a.margins.split(",") if m]
    print("| detector | width | margin | found | e2e | on found | false det/img | s |")
    for name, width, margin, profile in choices:
        b = dataclasses.replace(bundle, crop=dataclasses.replace(bundle.crop, margin=margin))
        det = source_detector(True, width=width, profile=profile)
        pipe = Pipeline(b, "int8", threads=1, detector=det)
        t = time.time()
        r = evaluate_end_to_end(pipe, faces)
        print(f"| {name} | {width} | {margin:.3f} | {100 * r['detection_recall']:.1f} | "
              f"{100 * r['accuracy']:.1f} | {100 * r['accuracy_found']:.1f} | "
              f"{r['false_detections_per_image']:.2f} | {time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
