"""Find the crop margin that frames live detections like the training images.

FER2013 faces are 48x48 crops whose framing we cannot see directly, so we compare a landmark
both sides share: the distance between the eyes, found with OpenCV's eye cascade.

- In upscaled FER2013 faces the eye distance is ``r_fer`` of the image side.
- In real, full-resolution faces the same eye distance is ``r_box`` of the width of the box the
  live detector (Haar) returns.

A crop of side ``box * (1 + 2 * margin)`` shows the eyes at ``r_fer`` of its side when
``margin = (r_box / r_fer - 1) / 2``. (Running the face detector on upscaled, padded FER2013
images instead finds only ~60 % of them, and a detector box on a blurry 4x upscale is not the
box it draws on a sharp camera face, so that shortcut gives a biased, too-small margin.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data import load_split
from ..errors import FerEdgeError
from ..inputs.sources import open_source, parse_source
from ..preprocess import to_gray
from .opencv import HaarDetector

SIDE = 192
# Where the five-landmark framing (preprocess.CropSpec.eye_distance / eye_y) comes from: the same
# FER2013 eye pairs, their distance and their centre's height as fractions of the image side.


def _eye_cascade() -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_eye.xml"))
    if c.empty():
        raise FerEdgeError("cannot load OpenCV's haarcascade_eye.xml")
    return c


def eye_pair(gray: np.ndarray, cascade: cv2.CascadeClassifier) -> tuple[float, float] | None:
    """(distance between the two eye centres, their mean height), as fractions of the image
    width, or None when two level, separated eyes are not found in the upper 60 % of the face."""
    h, w = gray.shape
    eyes = cascade.detectMultiScale(gray[:int(h * 0.6)], 1.1, 5, minSize=(w // 10, w // 10))
    if len(eyes) < 2:
        return None
    (x1, y1, w1, h1), (x2, y2, w2, h2) = sorted(eyes, key=lambda b: -b[2] * b[3])[:2]
    c1 = np.array([x1 + w1 / 2, y1 + h1 / 2])
    c2 = np.array([x2 + w2 / 2, y2 + h2 / 2])
    if abs(c1[1] - c2[1]) > 0.1 * w or abs(c1[0] - c2[0]) < 0.15 * w:
        return None
    return float(np.linalg.norm(c1 - c2) / w), float((c1[1] + c2[1]) / 2 / w)


def eye_distance(gray: np.ndarray, cascade: cv2.CascadeClassifier) -> float | None:
    """Distance between the two eye centres as a fraction of the image width (:func:`eye_pair`)."""
    pair = eye_pair(gray, cascade)
    return None if pair is None else pair[0]


def fer2013_eyes(data: str, split: str = "train", images: int = 3000, seed: int = 0,
                 progress: bool = False, cascade: cv2.CascadeClassifier | None = None
                 ) -> tuple[int, np.ndarray]:
    """(faces looked at, [M, 2] eye distance and eye height of the FER2013 faces where both eyes
    are found), on ``images`` faces of ``split`` upscaled to ``SIDE``."""
    eye = cascade or _eye_cascade()
    s = load_split(data, split)
    idx = np.random.default_rng(seed).choice(len(s), size=min(images, len(s)), replace=False)
    pairs = [r for i in tqdm(idx, desc="FER2013 eyes", unit="face", file=sys.stderr,
                             disable=not progress, dynamic_ncols=True) if (
        r := eye_pair(cv2.resize(s.images[i], (SIDE, SIDE), interpolation=cv2.INTER_CUBIC), eye))]
    return len(idx), np.asarray(pairs, np.float64).reshape(-1, 2)


def estimate_landmark_framing(data: str, split: str = "train", images: int = 3000,
                              seed: int = 0, progress: bool = False) -> dict:
    """The five-landmark framing of FER2013 (bundle.json ``crop.landmarks``): the median eye
    distance and eye height as fractions of the image side."""
    n, pairs = fer2013_eyes(data, split, images, seed, progress)
    if len(pairs) < 20:
        raise FerEdgeError(f"too few eye pairs found in FER2013 ({len(pairs)} of {n} faces) to "
                           "measure its framing")
    return {"fer_images": n, "fer_eye_pairs": len(pairs),
            "eye_distance": round(float(np.median(pairs[:, 0])), 4),
            "eye_y": round(float(np.median(pairs[:, 1])), 4),
            "eye_distance_iqr": [round(float(v), 4) for v in np.percentile(pairs[:, 0], [25, 75])],
            "eye_y_iqr": [round(float(v), 4) for v in np.percentile(pairs[:, 1], [25, 75])]}


def estimate_crop_margin(data: str, sources: Iterable[str], split: str = "train",
                         images: int = 3000, seed: int = 0, progress: bool = False) -> dict:
    """``data``: FER2013; ``sources``: videos/images/folders with real faces at camera
    resolution (the shared face video, the demo portrait). ``progress``: bars on stderr."""
    specs = [parse_source(src) for src in sources]
    live = [str(sp.target) for sp in specs if sp.live]
    if live:
        raise FerEdgeError(f"{', '.join(live)}: calibration needs files (video, image or "
                           "folder), not a live camera or stream")
    opened = []  # every source is opened before the slow part: a bad file fails at once
    try:
        for spec in specs:
            opened.append(open_source(spec))
        eye = _eye_cascade()
        n_fer, fer_pairs = fer2013_eyes(data, split, images, seed, progress, eye)
        r_fer = list(fer_pairs[:, 0])
        bar = {"file": sys.stderr, "disable": not progress, "dynamic_ncols": True}
        det = HaarDetector(max_width=None)
        r_box, faces = [], 0
        for frames in opened:
            for f in tqdm(frames, desc=Path(str(frames.spec.target)).name,
                          total=frames.length or None, unit="frame", **bar):
                found = det(f.image)
                if not found:
                    continue
                faces += 1
                x, y, w, h = (int(v) for v in max(found, key=lambda d: d.box[2]).box)
                gray = to_gray(f.image)[max(0, y):y + h, max(0, x):x + w]
                if gray.size and (r := eye_distance(cv2.resize(gray, (SIDE, SIDE)), eye)):
                    r_box.append(r)
    finally:
        for frames in opened:
            frames.close()
    if len(r_fer) < 20 or len(r_box) < 5:
        raise FerEdgeError(f"too few eye pairs found (FER2013 {len(r_fer)}, live faces "
                           f"{len(r_box)}) to estimate the margin")
    fer, box = float(np.median(r_fer)), float(np.median(r_box))
    return {"fer_images": n_fer, "fer_eye_pairs": len(r_fer), "r_fer": fer,
            "r_fer_iqr": [float(v) for v in np.percentile(r_fer, [25, 75])],
            "live_faces": faces, "live_eye_pairs": len(r_box), "r_box": box,
            "margin": (box / fer - 1.0) / 2.0}
