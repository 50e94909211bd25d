"""Train/val/test splits for a dataset that comes without one (a folder of class folders, a
CSV without ``Usage``), and the check that training never validates on its own images.

:func:`plan_split` is stratified and seed-fixed (the ``splitfolders``/scikit-learn habit),
and keeps exact duplicate images (same decoded pixels: common in scraped sets) together on one
side. :func:`split_record` is what ``metrics.json`` keeps so a later run or ``fer-bench``
reproduces the split (seed, fractions, counts, the file lists and their sha256).
:func:`check_disjoint` refuses training and validation data that share images.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from ..errors import FerEdgeError

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
DEFAULT_SPLIT = "0.8,0.1,0.1"
# Split names a caller may ask a split-less dataset for, and the part each one means.
PART_OF = {"train": "train", "training": "train", "val": "val", "validation": "val",
           "test": "test", "publictest": "test"}


def parse_fractions(text: str, option: str = "--split") -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (train, val, test): three finite numbers >= 0 summing to 1, with
    train and val above 0 (test may be 0: no held-out score)."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise FerEdgeError(f"{option} {text!r}: expected three fractions train,val,test such "
                           "as 0.8,0.1,0.1")
    if abs(sum(values) - 1.0) > 1e-6:
        raise FerEdgeError(f"{option} {text!r}: the fractions add up to {sum(values):g}, not 1")
    if values[0] <= 0 or values[1] <= 0:
        raise FerEdgeError(f"{option} {text!r}: train and val need a fraction above 0")
    return values  # type: ignore[return-value]


def check_group(pattern: str | None, option: str = "--split-group") -> re.Pattern | None:
    """The --split-group regular expression, compiled (one error line when it is not one)."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise FerEdgeError(f"{option} {pattern!r}: not a regular expression ({e})") from None


def duplicate_groups(images: np.ndarray, paths: Sequence[str] = (),
                     group: str | None = None) -> np.ndarray:
    """Group id per image: exact duplicates (identical pixels) share one, and so do files
    whose names share the match of the ``group`` regular expression (a subject id such as
    CK+'s ``S010``), so no person or sequence is on both sides."""
    rx = check_group(group)
    ids: dict[object, int] = {}
    by_pixels: dict[bytes, int] = {}
    out = np.empty(len(images), np.int64)
    for i, im in enumerate(images):
        h = hashlib.sha1(np.ascontiguousarray(im).tobytes()).digest()
        m = rx.search(os.path.basename(paths[i])) if rx is not None and paths else None
        key: object = ("name", m.group(0)) if m else ("pixels", h)
        gid = by_pixels.get(h)
        if gid is None:
            gid = ids.setdefault(key, len(ids))
            by_pixels[h] = gid
        out[i] = gid
    return out


def plan_split(images: np.ndarray, labels: np.ndarray, n_classes: int,
               fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
               paths: Sequence[str] = (), group: str | None = None
               ) -> tuple[dict[str, np.ndarray], int]:
    """Indices of each part (sorted), stratified per class over groups of exact duplicates,
    and the number of images that had a duplicate. A class with at least three groups gets
    at least one in val (and in test when its fraction is above 0)."""
    groups = duplicate_groups(images, paths, group)
    first = {}
    for i, g in enumerate(groups):
        first.setdefault(int(g), i)
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[int]] = {p: [] for p in PARTS}
    for c in range(n_classes):
        gs = np.array([g for g, i in first.items() if labels[i] == c], np.int64)
        if not len(gs):
            continue
        gs = gs[rng.permutation(len(gs))]
        n = len(gs)
        n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
        if n >= 3:
            n_val = max(n_val, 1)
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_val, n_test = min(n_val, n - 1), min(n_test, max(0, n - 1 - n_val))
        bounds = {"val": gs[:n_val], "test": gs[n_val:n_val + n_test],
                  "train": gs[n_val + n_test:]}
        for part, members in bounds.items():
            chosen[part].extend(int(g) for g in members)
    parts = {p: np.flatnonzero(np.isin(groups, np.array(chosen[p], np.int64))) for p in PARTS}
    pixels = duplicate_groups(images)
    counts = np.bincount(pixels)
    return parts, int(counts[counts > 1].sum())


def _files_sha256(files: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def split_record(parts: dict[str, np.ndarray], paths: Sequence[str], labels: np.ndarray,
                 label_names: Sequence[str], root: str, fractions: Sequence[float], seed: int,
                 duplicates: int, group: str | None = None) -> dict:
    """What metrics.json keeps of an automatic split: enough to reproduce and to check it."""
    rel = [os.path.relpath(p, root) if p else "" for p in paths] if paths else []
    record: dict = {"kind": "automatic", "source": root, "seed": seed,
                    "fractions": list(fractions), "group": group,
                    "duplicate_images": duplicates,
                    "counts": {}, "per_class": {}, "sha256": {}, "files": {}}
    for part, idx in parts.items():
        record["counts"][part] = int(len(idx))
        record["per_class"][part] = {n: int(k) for n, k in zip(
            label_names, np.bincount(labels[idx], minlength=len(label_names)), strict=True)}
        if rel:
            files = sorted(rel[i] for i in idx)
            record["files"][part] = files
            record["sha256"][part] = _files_sha256(files)
    return record


def counts_line(record: dict) -> str:
    c = record["counts"]
    return (f"{record['source']}: no train/test split, made one (seed {record['seed']}, "
            f"{'/'.join(f'{f:g}' for f in record['fractions'])}): {c['train']} train / "
            f"{c['val']} val / {c['test']} test images"
            + (f"; {record['duplicate_images']} exact duplicate images kept on one side each"
               if record["duplicate_images"] else ""))


def check_disjoint(train_paths: Sequence[str], val_paths: Sequence[str], what: str) -> None:
    """Refuse training and validation data that share image files (``what`` names them)."""
    if not train_paths or not val_paths:
        return
    seen = {os.path.realpath(p) for p in train_paths if p}
    both = [p for p in val_paths if p and os.path.realpath(p) in seen]
    if both:
        raise FerEdgeError(f"{what}: {len(both)} of the {len(val_paths)} validation images are "
                           f"also training images (e.g. {both[0]}); validating on training "
                           "images measures nothing: use a folder without a split (one is "
                           "made), or separate train/ and test/ folders")


def pixel_overlap(train: np.ndarray, val: np.ndarray) -> int:
    """How many validation images have an exact pixel duplicate among the training images."""
    seen = {hashlib.sha1(np.ascontiguousarray(im).tobytes()).digest() for im in train}
    return sum(hashlib.sha1(np.ascontiguousarray(im).tobytes()).digest() in seen for im in val)
