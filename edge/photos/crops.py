"""``fer-edge crop``: a folder of photos in, face crops out, framed exactly as the live loop
frames them.

Every photo goes through :meth:`Pipeline.begin` (the loop's detector, the largest faces
first, ``max_faces``) and :meth:`Pipeline.face_crops` (the bundle's framing), then to the
grayscale size the model reads (``preprocess.fit_gray``), and is written as a lossless PNG
under the same relative folder: a folder of class folders of photos becomes the class-folder
layout ``fer-train`` reads, and a crop's pixels are the pixels the loop classifies for that
face. Photos without a face, with several faces, or unreadable are listed in ``skipped.csv``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import FerEdgeError
from ..inputs.files import atomic_write_bytes, atomic_write_text, check_writable_dir, writing
from ..inputs.images import IMAGE_SUFFIXES, BadImage, read_image
from ..pipeline import Pipeline, as_frame
from ..preprocess import fit_gray

log = logging.getLogger(__name__)

SKIPPED_CSV = "skipped.csv"


@dataclass
class CropSummary:
    photos: int = 0
    crops: int = 0
    no_face: int = 0
    several: int = 0
    unreadable: int = 0

    def text(self, out: Path) -> str:
        return (f"{self.photos} photos: {self.crops} face crops written to {out}; "
                f"{self.no_face} without a face, {self.several} with several faces, "
                f"{self.unreadable} unreadable (listed in {out / SKIPPED_CSV})")


def _photos(source: Path) -> list[Path]:
    try:
        files = sorted(f for f in source.rglob("*") if f.is_file()
                       and f.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise FerEdgeError(f"--source {source}: cannot list this folder "
                           f"({e.strerror or e})") from None
    if not files:
        raise FerEdgeError(f"--source {source}: no images ({', '.join(IMAGE_SUFFIXES)}) in "
                           "this folder")
    return files


def check_folders(source: Path, out: Path, exist_ok: bool) -> None:
    """Refuse a missing source, an --out inside it (the crops would be read as photos) or
    one holding files already (unless ``exist_ok``), and an --out that cannot be written."""
    if not source.is_dir():
        raise FerEdgeError(f"--source {source}: not a folder of photos")
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise FerEdgeError(f"--out {out}: lies inside --source {source}; the crops would be "
                           "read as photos")
    if out.exists() and not out.is_dir():
        raise FerEdgeError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not exist_ok:
        raise FerEdgeError(f"--out {out}: already holds files; pass --exist-ok to write crops "
                           "into it (crops of the same name are replaced)")
    check_writable_dir(out, option="--out")


def crop_photos(source: str | Path, out: str | Path, pipe: Pipeline, all_faces: bool = False,
                size: int | None = None, exist_ok: bool = False) -> CropSummary:
    """Write the face crops of every photo under ``source`` to ``out`` (same sub-folders),
    ``size`` x ``size`` grayscale PNG [the bundle's input size]: the largest face of each photo,
    or every face (``all_faces``, up to the pipeline's ``max_faces``)."""
    source, out = Path(source), Path(out)
    check_folders(source, out, exist_ok)
    photos = _photos(source)
    height = width = size or pipe.bundle.input.height
    if size is None:
        width = pipe.bundle.input.width
    summary, skipped = CropSummary(), []
    taken: set[Path] = set()
    from tqdm import tqdm

    for photo in tqdm(photos, desc="crop", unit="photo", leave=False,
                      disable=len(photos) < 50):
        summary.photos += 1
        rel = photo.relative_to(source)
        try:
            image = as_frame(read_image(photo))
        except BadImage as e:
            summary.unreadable += 1
            skipped.append((str(rel), "unreadable", 0, str(e)))
            continue
        pipe.reset()  # every photo on its own: all its faces are new
        pending = pipe.begin(image, path=str(photo))
        due = sorted(pending.due, key=lambda t: t.box[2] * t.box[3], reverse=True)
        found = len(due) + pending.result.faces_over_limit
        if not due:
            summary.no_face += 1
            skipped.append((str(rel), "no face", 0, ""))
            continue
        if found > 1:
            summary.several += 1
            skipped.append((str(rel), "several faces", found,
                            f"all {len(due)} written" if all_faces else "the largest written"))
        chosen = due if all_faces else due[:1]
        crops = pipe.face_crops(image, [t.box for t in chosen], [t.landmarks for t in chosen])
        for k, crop in enumerate(crops):
            name = rel.stem + (f"_face{k + 1}" if all_faces and len(crops) > 1 else "")
            dst = out / rel.parent / f"{name}.png"
            if dst in taken:  # photo.jpg and photo.png side by side
                dst = dst.with_name(f"{name}_{rel.suffix.lstrip('.').lower()}.png")
            taken.add(dst)
            face = fit_gray(crop, height, width)
            ok, buf = cv2.imencode(".png", face)
            if not ok:
                raise FerEdgeError(f"{dst}: OpenCV could not encode the crop as PNG")
            with writing(dst, "write the crop", option="--out"):
                dst.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dst, np.asarray(buf).tobytes())
            summary.crops += 1
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["file", "reason", "faces", "detail"])
    w.writerows(skipped)
    with writing(out / SKIPPED_CSV, option="--out"):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / SKIPPED_CSV, text.getvalue())
    if not summary.crops:
        raise FerEdgeError(f"--source {source}: no face found in any of the {summary.photos} "
                           f"photos (see {out / SKIPPED_CSV})")
    return summary
