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

The same measure calibrates the framing from five landmarks (``estimate_landmark_framing``,
bundle.json ``crop.landmarks``): FER2013's eye distance and eye height, and on real faces the
cascade's eyes in crops framed from a detector's landmarks, so the crop puts the eyes where
FER2013 has them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data import load_split
from ..errors import FerEdgeError
from ..inputs.sources import open_source, parse_source
from ..preprocess import CropSpec, crop_box, to_gray
from .common import Detection, Detector
from .opencv import HaarDetector

SIDE = 192


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


def live_eye_pairs(sources: Iterable[str], detector: Detector,
                   crop: Callable[[np.ndarray, Detection], np.ndarray | None],
                   eye: cv2.CascadeClassifier, progress: bool = False) -> tuple[int, np.ndarray]:
    """(faces found, [M, 2] eye distance and height in the crops ``crop`` makes of the largest
    detection per frame) over video/image/folder ``sources`` with real faces."""
    specs = [parse_source(src) for src in sources]
    live = [str(sp.target) for sp in specs if sp.live]
    if live:
        raise FerEdgeError(f"{', '.join(live)}: calibration needs files (video, image or "
                           "folder), not a live camera or stream")
    opened = []  # every source is opened before the slow part: a bad file fails at once
    pairs, faces = [], 0
    try:
        for spec in specs:
            opened.append(open_source(spec))
        for frames in opened:
            for f in tqdm(frames, desc=Path(str(frames.spec.target)).name,
                          total=frames.length or None, unit="frame", file=sys.stderr,
                          disable=not progress, dynamic_ncols=True):
                found = detector(f.image)
                if not found:
                    continue
                faces += 1
                gray = crop(f.image, max(found, key=lambda d: d.box[2] * d.box[3]))
                if gray is not None and gray.size and (
                        r := eye_pair(cv2.resize(to_gray(gray), (SIDE, SIDE)), eye)):
                    pairs.append(r)
    finally:
        for frames in opened:
            frames.close()
    return faces, np.asarray(pairs, np.float64).reshape(-1, 2)


def _box_crop(image: np.ndarray, d: Detection) -> np.ndarray:
    x, y, w, h = (int(v) for v in d.box)
    return image[max(0, y):y + h, max(0, x):x + w]


def estimate_crop_margin(data: str, sources: Iterable[str], split: str = "train",
                         images: int = 3000, seed: int = 0, progress: bool = False) -> dict:
    """``data``: FER2013; ``sources``: videos/images/folders with real faces at camera
    resolution (the shared face video, the demo portrait). ``progress``: bars on stderr."""
    eye = _eye_cascade()
    faces, live = live_eye_pairs(sources, HaarDetector(max_width=None), _box_crop, eye,
                                 progress)  # the sources are checked before FER2013 is read
    n_fer, fer_pairs = fer2013_eyes(data, split, images, seed, progress, eye)
    if len(fer_pairs) < 20 or len(live) < 5:
        raise FerEdgeError(f"too few eye pairs found (FER2013 {len(fer_pairs)}, live faces "
                           f"{len(live)}) to estimate the margin")
    fer, box = float(np.median(fer_pairs[:, 0])), float(np.median(live[:, 0]))
    return {"fer_images": n_fer, "fer_eye_pairs": len(fer_pairs), "r_fer": fer,
            "r_fer_iqr": [float(v) for v in np.percentile(fer_pairs[:, 0], [25, 75])],
            "live_faces": faces, "live_eye_pairs": len(live), "r_box": box,
            "margin": (box / fer - 1.0) / 2.0}


def estimate_landmark_framing(data: str, sources: Iterable[str], detector: Detector,
                              split: str = "train", images: int = 3000, seed: int = 0,
                              progress: bool = False) -> dict:
    """The five-landmark framing (bundle.json ``crop.landmarks``) that shows real faces like
    FER2013's: FER2013's median eye distance and eye height (eye cascade), then the same
    measure on crops that ``detector``'s landmarks frame (aligned) on real faces at camera
    resolution, and the framing corrected so the two agree (a detector's eye points need not
    be where the cascade puts the eyes)."""
    sources = list(sources)
    for src in sources:  # a bad source fails before FER2013 is read
        open_source(parse_source(src)).close()
    eye = _eye_cascade()
    n_fer, fer = fer2013_eyes(data, split, images, seed, progress, eye)
    if len(fer) < 20:
        raise FerEdgeError(f"too few eye pairs found in FER2013 ({len(fer)} of {n_fer} faces) "
                           "to measure its framing")
    r_fer, y_fer = (float(v) for v in np.median(fer, axis=0))
    probe = CropSpec(eye_distance=r_fer, eye_y=y_fer, align=True)
    faces, live = live_eye_pairs(
        sources, detector, lambda img, d: None if d.landmarks is None else
        crop_box(img, d.box, landmarks=d.landmarks, spec=probe), eye, progress)
    if len(live) < 5:
        raise FerEdgeError(f"too few eye pairs found in the landmark crops ({len(live)} of "
                           f"{faces} faces; does the detector give landmarks?)")
    m_d, m_y = (float(v) for v in np.median(live, axis=0))
    e = r_fer * r_fer / m_d  # the crop side scales the measured distance
    y = y_fer - (m_y - y_fer) * e / r_fer  # the cascade's eye sits (m_y - y_fer) lower
    return {"fer_images": n_fer, "fer_eye_pairs": len(fer), "r_fer": r_fer, "y_fer": y_fer,
            "live_faces": faces, "live_eye_pairs": len(live), "live_r": m_d, "live_y": m_y,
            "eye_distance": round(e, 4), "eye_y": round(y, 4)}
