"""Label distributions from annotators' votes: FER+ ``votes.csv`` for the FER2013 images.

FER+ (Microsoft, MIT licence) gives each FER2013 image the votes of ten annotators over
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown and NF
(not a face). Read as its README says for a model with our labels:

- a row whose largest count is NF (ties included) is not a face: dropped;
- ``unknown`` votes, and ``contempt`` votes when the label set has no ``contempt`` class, are
  left out and the rest renormalised to a distribution over the labels;
- a row with no vote left for any label is dropped.

Rows are matched to a split's images by the image's last three path parts
(``train/angry/Training_10118481.jpg``), the ``file`` column's form.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from ..errors import FerEdgeError

# FER+ column -> our label name
FERPLUS_LABELS = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
                  "sadness": "sad", "anger": "angry", "disgust": "disgust", "fear": "fear",
                  "contempt": "contempt"}
VOTE_COLUMNS = (*FERPLUS_LABELS, "unknown", "NF")


@dataclass(frozen=True)
class VoteTable:
    """``counts[row]`` holds the votes in :data:`VOTE_COLUMNS` order for ``rows[key]``."""

    path: Path
    rows: dict[str, int]
    counts: np.ndarray  # float32 [R, len(VOTE_COLUMNS)]


@dataclass(frozen=True)
class Votes:
    """The distribution over a split's labels for the images in ``index`` (rows of the split
    that kept a distribution), and how many were dropped and why."""

    index: np.ndarray  # int64 [K], sorted
    dist: np.ndarray  # float32 [K, C], rows sum to 1
    not_a_face: int
    no_vote: int
    missing: int

    def majority_correct(self, predicted: np.ndarray) -> np.ndarray:
        """Per kept image: the predicted class holds the largest vote share (ties count
        for every tied class). ``predicted``: class indices for the kept images."""
        top = self.dist.max(1, keepdims=True)
        return self.dist[np.arange(len(predicted)), predicted] >= top[:, 0] - 1e-6


def image_key(path: str | PurePath) -> str:
    """The vote file's key for an image path: its last three parts, '/'-joined."""
    return "/".join(PurePath(path).parts[-3:])


def read_votes(path: str | Path) -> VoteTable:
    """Read a FER+-style vote file (``file`` plus the :data:`VOTE_COLUMNS` counts). Every
    problem is a FerEdgeError naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise FerEdgeError(f"{p}: no such vote file (--soft-labels)")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ("file", *VOTE_COLUMNS) if c not in header]
            if missing:
                raise FerEdgeError(f"{p}: not a FER+ vote file: no column(s) "
                                   f"{', '.join(missing)} in the header (expected file,"
                                   f"{','.join(VOTE_COLUMNS)})")
            cols = [header.index(c) for c in VOTE_COLUMNS]
            fcol = header.index("file")
            rows: dict[str, int] = {}
            counts: list[list[float]] = []
            for line, rec in enumerate(reader, start=2):
                if not rec or not "".join(rec).strip():
                    continue
                if len(rec) != len(header):
                    raise FerEdgeError(f"{p}:{line}: {len(rec)} fields, the header has "
                                       f"{len(header)}")
                try:
                    row = [float(rec[c]) for c in cols]
                except ValueError:
                    raise FerEdgeError(f"{p}:{line}: a vote count is not a number") from None
                if not all(math.isfinite(v) and v >= 0 for v in row):
                    raise FerEdgeError(f"{p}:{line}: vote counts must be finite and >= 0")
                key = image_key(rec[fcol].strip())
                if key in rows:
                    raise FerEdgeError(f"{p}:{line}: {rec[fcol].strip()} appears twice")
                rows[key] = len(counts)
                counts.append(row)
    except UnicodeDecodeError:
        raise FerEdgeError(f"{p}: not a text CSV file") from None
    except OSError as e:
        raise FerEdgeError(f"{p}: cannot read: {e.strerror or e}") from None
    if not counts:
        raise FerEdgeError(f"{p}: holds no vote rows")
    return VoteTable(p, rows, np.asarray(counts, np.float32))


def vote_distribution(paths: list[str], labels: tuple[str, ...], table: VoteTable,
                      source: str = "") -> Votes:
    """The vote distribution over ``labels`` for each image of ``paths`` (a split's
    ``paths``), dropping not-a-face rows, rows without a vote for any label and images the
    table does not hold."""
    where = source or "the data"
    if not paths:
        raise FerEdgeError(f"--soft-labels {table.path}: {where} was not read from image files, "
                           "so its images cannot be matched to the votes (use the folder "
                           "layout)")
    ours = {FERPLUS_LABELS[c]: i for i, c in enumerate(VOTE_COLUMNS) if c in FERPLUS_LABELS}
    unknown = [name for name in labels if name not in ours]
    if unknown:
        raise FerEdgeError(f"--soft-labels {table.path}: the votes have no class "
                           f"{', '.join(unknown)} (they cover {', '.join(ours)})")
    rows = np.array([table.rows.get(image_key(p), -1) for p in paths], np.int64)
    found = np.flatnonzero(rows >= 0)
    if len(found) == 0:
        raise FerEdgeError(f"--soft-labels {table.path}: none of the {len(paths)} images of "
                           f"{where} is in the vote file (matched by their last three path "
                           "parts, e.g. train/angry/Training_1.jpg)")
    counts = table.counts[rows[found]]
    nf = counts[:, VOTE_COLUMNS.index("NF")]
    face = nf < np.delete(counts, VOTE_COLUMNS.index("NF"), axis=1).max(1)
    v = counts[:, [ours[name] for name in labels]]
    total = v.sum(1)
    keep = face & (total > 0)
    dist = (v[keep] / total[keep, None]).astype(np.float32)
    return Votes(found[keep], dist, not_a_face=int((~face).sum()),
                 no_vote=int((face & (total <= 0)).sum()), missing=len(paths) - len(found))
