"""Find the crop margin that frames live detections like the training images.

FER2013 faces are tight 48x48 crops. Upscale each one, pad it onto a larger canvas, run the
same Haar detector the live loop uses, and compare the detected box with the known extent of
the face image: ``margin = (image_side / box_side - 1) / 2`` makes ``crop_box`` cut out what
the training image showed.
"""

from __future__ import annotations

import cv2
import numpy as np

from .data import load_split
from .detect import HaarDetector


def estimate_crop_margin(data: str, split: str = "train", images: int = 2000,
                         upscale: int = 4, seed: int = 0) -> dict:
    s = load_split(data, split)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(s), size=min(images, len(s)), replace=False)
    det = HaarDetector(max_width=None, min_size=upscale * 16)
    side = 48 * upscale
    ratios, offsets = [], []
    for i in idx:
        face = cv2.resize(s.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(face, side, side, side, side, cv2.BORDER_CONSTANT,
                                    value=int(np.median(face)))
        found = det(canvas)
        if not found:
            continue
        x, y, w, h = max(found, key=lambda d: d.box[2] * d.box[3]).box
        ratios.append(w / side)
        offsets.append(((x + w / 2 - 1.5 * side) / side, (y + h / 2 - 1.5 * side) / side))
    if not ratios:
        raise RuntimeError("the detector found no face in any upscaled training image")
    r = np.asarray(ratios)
    med = float(np.median(r))
    off = np.median(np.asarray(offsets), axis=0)
    return {"images": int(len(idx)), "detected": int(len(r)), "ratio_median": med,
            "ratio_p25": float(np.percentile(r, 25)), "ratio_p75": float(np.percentile(r, 75)),
            "center_offset": [float(off[0]), float(off[1])],
            "margin": (1.0 / med - 1.0) / 2.0}
