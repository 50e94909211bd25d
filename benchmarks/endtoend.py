"""End-to-end accuracy on labelled, uncropped images: detect -> crop -> classify, scored.

Two label formats, both what users have for their own photos:

- a folder of class folders (searched recursively; one main face per image): the main
  detection is that image's prediction (``main_face``: the largest, or the largest weighted by
  the detector's score); an image where no face is found counts as wrong;
- a CSV ``image,x1,y1,x2,y2,label`` (several faces per image, paths relative to the CSV): a
  detection matches a labelled box at IoU >= 0.3 (greedy, best first); an unmatched labelled
  box is a miss, an unmatched detection a false detection.

Frames go through the same :class:`~fer_edge.edge.pipeline.Pipeline` as ``fer-edge run`` on a
folder (tracks reset between images), so the numbers are the ones a user of the live loop gets.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_edge.edge.bundle import load_bundle
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.images import IMAGE_SUFFIXES
from fer_edge.edge.labels import canonical_label
from fer_edge.edge.metrics import classification_report
from fer_edge.edge.photos.workers import StillsRecipe, predict_stills
from fer_edge.edge.pipeline import Pipeline
from fer_edge.edge.tracker import iou

log = logging.getLogger("fer_edge.bench")
MATCH_IOU = 0.3
# Which detection is "the" face of a photo with one label: the largest box, or the box with
# the largest area x score ** SCORE_POWER (Haar's score is always 1, so there the two agree).
# The power was measured on sfew_frames (docs/detector.md: 0, 1, 2, 4, 8 ... 64): our
# detector's false detections are often large with a score close to the face's, so only a
# strong weight on the score picks the face; 32 means a box 1.16x surer wins over one 100x
# larger.
MAIN_FACE_RULES = ("largest", "score")
SCORE_POWER = 32


@dataclass(frozen=True)
class LabelledFace:
    path: str
    label: str
    box: tuple[float, float, float, float] | None = None  # x, y, w, h; None: the main face


def read_labelled_images(source: str | os.PathLike, labels: tuple[str, ...]
                         ) -> list[LabelledFace]:
    """The labelled faces of a class-folder tree or an ``image,x1,y1,x2,y2,label`` CSV."""
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        return _read_box_csv(src, labels)
    if not src.is_dir():
        raise FerEdgeError(f"{src}: expected a folder of class folders or a .csv of "
                           "image,x1,y1,x2,y2,label")
    faces = []
    for cls in sorted(d for d in src.iterdir() if d.is_dir()):
        name = canonical_label(cls.name)
        if name is None or name not in labels:
            log.warning("%s: folder %r is not one of the model's labels; skipped", src, cls.name)
            continue
        faces += [LabelledFace(str(f), name) for f in sorted(cls.rglob("*"))
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not faces:
        raise FerEdgeError(f"{src}: no images in class folders ({', '.join(labels)})")
    return faces


def _read_box_csv(path: Path, labels: tuple[str, ...]) -> list[LabelledFace]:
    faces = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as e:
        raise FerEdgeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    header = bool(rows) and [c.strip().lower() for c in rows[0]][:6] == [
        "image", "x1", "y1", "x2", "y2", "label"]
    for n, row in enumerate(rows, start=1):  # n: the line number a user sees in an editor
        if (header and n == 1) or not row or not "".join(row).strip():
            continue
        if len(row) != 6:
            raise FerEdgeError(f"{path}, row {n}: {len(row)} fields, expected "
                               "image,x1,y1,x2,y2,label")
        try:
            x1, y1, x2, y2 = (float(v) for v in row[1:5])
        except ValueError:
            raise FerEdgeError(f"{path}, row {n}: box {row[1:5]} is not numeric") from None
        name = canonical_label(row[5].strip())
        if name is None or name not in labels:
            raise FerEdgeError(f"{path}, row {n}: label {row[5]!r} is not one of "
                               f"{', '.join(labels)}")
        if x2 <= x1 or y2 <= y1:
            raise FerEdgeError(f"{path}, row {n}: empty box {row[1:5]} (needs x2>x1, y2>y1)")
        faces.append(LabelledFace(str((path.parent / row[0]).resolve()), name,
                                  (x1, y1, x2 - x1, y2 - y1)))
    if not faces:
        raise FerEdgeError(f"{path}: no labelled faces")
    return faces


# (x, y, w, h), label[, the detector's score (1.0 when absent)]
Detections = list[tuple]


def evaluate_end_to_end(pipe: Pipeline | None, faces: list[LabelledFace], progress=None,
                        main_face: str = "score", recipe: StillsRecipe | None = None,
                        workers: int = 1) -> dict:
    """Run every image once through ``pipe`` (or, with ``workers`` > 1, through Pipelines
    built from ``recipe`` in that many processes); returns detection recall, end-to-end
    accuracy, accuracy on found faces, per-class recall, confusion, false detections and speed
    (``images_per_s``: per worker, from the Pipeline's own time; ``wall_images_per_s``: the
    whole pass, reading included)."""
    t0 = time.perf_counter()
    labels = pipe.labels if pipe is not None else load_bundle(recipe.bundle).labels
    r = score_end_to_end(faces, labels, pipeline_predictions(pipe, faces, progress, recipe,
                                                             workers), main_face)
    wall = time.perf_counter() - t0
    return {**r, "workers": workers, "main_face": main_face,
            "wall_images_per_s": r["images"] / wall if wall > 0 else 0.0}


def main_detection(dets: Detections, rule: str = "largest") -> tuple:
    """The detection taken as the photo's one labelled face under ``rule``
    (:data:`MAIN_FACE_RULES`)."""
    if rule == "score":
        return max(dets, key=lambda d: d[0][2] * d[0][3] * (d[2] if len(d) > 2 else 1.0)
                   ** SCORE_POWER)
    if rule != "largest":
        raise FerEdgeError(f"--main-face {rule!r}: choose {' or '.join(MAIN_FACE_RULES)}")
    return max(dets, key=lambda d: d[0][2] * d[0][3])


def pipeline_predictions(pipe: Pipeline | None, faces: list[LabelledFace], progress=None,
                         recipe: StillsRecipe | None = None, workers: int = 1):
    """``(path, [(box, label, detector score)] or why it is unreadable, seconds)`` per image, in
    order (:func:`fer_edge.edge.photos.workers.predict_stills`)."""
    paths = dict.fromkeys(f.path for f in faces)
    for path, r, seconds in predict_stills(recipe or StillsRecipe(), paths, workers, pipe):
        if isinstance(r, str):
            yield path, r, seconds
            continue
        if progress is not None:
            progress.update(1)
        yield path, [(tuple(d.box), d.label, 1.0 if d.det_score is None else d.det_score)
                     for d in r.faces], seconds


def score_end_to_end(faces: list[LabelledFace], labels: tuple[str, ...], predictions,
                     main_face: str = "score") -> dict:
    """Score ``predictions`` — ``(path, detections or an error string, seconds)`` per image, from
    our pipeline or a peer package's — against the labelled faces, the same way for both.
    ``main_face``: how a photo with one label picks its face (:func:`main_detection`)."""
    miss = len(labels)  # an extra "no face" column in the confusion
    by_image: dict[str, list[LabelledFace]] = {}
    for f in faces:
        by_image.setdefault(f.path, []).append(f)
    y_true, y_pred, false_dets, unreadable, seconds = [], [], 0, [], 0.0
    for path, dets, secs in predictions:
        want = by_image[path]
        if isinstance(dets, str):
            unreadable.append(dets)
            y_true += [labels.index(f.label) for f in want]
            y_pred += [miss] * len(want)
            continue
        seconds += secs
        if want[0].box is None:  # one main face: the largest detection
            y_true.append(labels.index(want[0].label))
            if dets:
                main = main_detection(dets, main_face)
                y_pred.append(labels.index(main[1]))
                false_dets += len(dets) - 1
            else:
                y_pred.append(miss)
        else:
            pairs = sorted(((iou(d[0], f.box), di, fi) for di, d in enumerate(dets)
                            for fi, f in enumerate(want)), reverse=True)
            got: dict[int, int] = {}
            used: set[int] = set()
            for score, di, fi in pairs:
                if score < MATCH_IOU:
                    break
                if di not in used and fi not in got:
                    got[fi] = di
                    used.add(di)
            for fi, f in enumerate(want):
                y_true.append(labels.index(f.label))
                y_pred.append(labels.index(dets[got[fi]][1]) if fi in got else miss)
            false_dets += len(dets) - len(used)
    if unreadable:
        log.warning("%d unreadable image(s) counted as misses: %s", len(unreadable),
                    "; ".join(unreadable[:5]))
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    found = yp != miss
    rep = classification_report(yt, yp, (*labels, "no face"))
    on_found = classification_report(yt[found], yp[found], labels) if found.any() else None
    per_class = {k: v["recall"] for k, v in rep["per_class"].items() if k != "no face"}
    return {"faces": int(len(yt)), "images": len(by_image),
            "detection_recall": float(found.mean()) if len(yt) else 0.0,
            "accuracy": float((yt == yp).mean()) if len(yt) else 0.0,
            "accuracy_found": on_found["accuracy"] if on_found else 0.0,
            "macro_f1_found": on_found["macro_f1"] if on_found else 0.0,
            "per_class_recall": per_class, "confusion": rep["confusion"],
            "confusion_labels": [*labels, "no face"],
            "false_detections_per_image": false_dets / max(1, len(by_image)),
            "unreadable": len(unreadable),
            "images_per_s": len(by_image) / seconds if seconds else 0.0}
