"""Face-detection training data: the JSON-lines label files of :mod:`.detdata`, detection
augmentation (random square crops that keep faces, scale, flip with the landmark swap,
photometric) and the anchor-free targets (one point per cell per stride).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_edge.edge.detection.ours import FLIP_ORDER, priors
from fer_edge.edge.errors import FerEdgeError

ROW = 15  # x0 y0 x1 y1, 10 landmark values, has_lm


@dataclass
class DetSample:
    image: Path
    faces: np.ndarray  # [N, 15]


def load_labels(path: str | Path) -> list[DetSample]:
    """Read a label file (one JSON object per line: ``image`` relative to the file's folder,
    ``faces`` rows of 15 numbers); any problem is one error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FerEdgeError(f"{path}: label file not found")
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FerEdgeError(f"{path}: cannot read the label file ({e})") from None
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            faces = np.asarray(row["faces"], np.float32).reshape(-1, ROW)
            img = path.parent / row["image"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise FerEdgeError(f"{path}:{i}: not a face label row ({type(e).__name__}: {e}); "
                               "expected {\"image\": ..., \"faces\": [[15 numbers], ...]}") \
                from None
        out.append(DetSample(img, faces))
    if not out:
        raise FerEdgeError(f"{path}: no labelled images")
    return out


def read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None:
        why = "missing" if not path.exists() else "not a readable image"
        raise FerEdgeError(f"{path}: {why}")
    return img


def hflip(img: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the image and its faces; the left and right eye and mouth corner swap, so each
    landmark keeps its meaning (left eye = the one on the image's left)."""
    w = img.shape[1]
    f = faces.copy()
    f[:, 0], f[:, 2] = w - faces[:, 2], w - faces[:, 0]
    lm = faces[:, 4:14].reshape(-1, 5, 2)[:, list(FLIP_ORDER)].copy()
    lm[..., 0] = w - lm[..., 0]
    f[:, 4:14] = np.where(faces[:, 14:15] > 0, lm.reshape(-1, 10), 0)
    return img[:, ::-1].copy(), f


def random_crop(img: np.ndarray, faces: np.ndarray, size: int, rng: np.random.Generator,
                scales: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
                ) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop of a random fraction of the shorter side (padded with grey where
    it leaves the image), resized to ``size``. Faces whose centre falls outside are dropped;
    kept faces are clipped. Up to 10 tries to keep at least one face."""
    h, w = img.shape[:2]
    for _ in range(10):
        side = int(min(h, w) * rng.choice(scales)) if rng.random() < 0.8 \
            else int(max(h, w) * rng.uniform(1.0, 1.5))  # sometimes zoom out: small faces
        side = max(side, 16)
        x0 = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
        y0 = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
        cx, cy = (faces[:, 0] + faces[:, 2]) / 2, (faces[:, 1] + faces[:, 3]) / 2
        inside = (cx > x0) & (cx < x0 + side) & (cy > y0) & (cy < y0 + side)
        if inside.any() or len(faces) == 0:
            break
    s = size / side
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114))
    f = faces[inside].copy()
    f[:, [0, 2, 4, 6, 8, 10, 12]] = (f[:, [0, 2, 4, 6, 8, 10, 12]] - x0) * s
    f[:, [1, 3, 5, 7, 9, 11, 13]] = (f[:, [1, 3, 5, 7, 9, 11, 13]] - y0) * s
    f[:, 0:4] = np.clip(f[:, 0:4], 0, size)
    f[:, 4:14] *= f[:, 14:15] > 0
    return out, f


def negative_crop(img: np.ndarray, faces: np.ndarray, size: int, rng: np.random.Generator,
                  tries: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """A hard negative: a random square crop (0.15-0.6 of the shorter side) that touches no
    labelled face box, resized to ``size``; None when ``tries`` draws all hit a face. Scenes
    without faces (bodies, hands, clothes, furniture) are what the detector mistakes for
    faces in movie frames."""
    h, w = img.shape[:2]
    for _ in range(tries):
        side = max(16, int(min(h, w) * rng.uniform(0.15, 0.6)))
        x0 = int(rng.integers(0, max(0, w - side) + 1))
        y0 = int(rng.integers(0, max(0, h - side) + 1))
        hit = ((faces[:, 0] < x0 + side) & (faces[:, 2] > x0) & (faces[:, 1] < y0 + side)
               & (faces[:, 3] > y0))
        if not hit.any():
            crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size),
                              interpolation=cv2.INTER_LINEAR)
            return crop, np.zeros((0, ROW), np.float32)
    return None


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-32, 32)  # contrast, brightness
    if rng.random() < 0.5:  # colour balance
        x *= rng.uniform(0.85, 1.15, size=3)[None, None]
    if rng.random() < 0.15:  # grey frames (IR and old cameras)
        x[:] = x.mean(2, keepdims=True)
    x = np.clip(x, 0, 255)
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    return x


def augment(img: np.ndarray, faces: np.ndarray, size: int, rng: np.random.Generator,
            negatives: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Training form of one image; with probability ``negatives`` a crop without faces."""
    neg = negative_crop(img, faces, size, rng) if rng.random() < negatives else None
    img, faces = neg if neg is not None else random_crop(img, faces, size, rng)
    if rng.random() < 0.5:
        img, faces = hflip(img, faces)
    return photometric(img, rng), faces


def letterbox_faces(img: np.ndarray, faces: np.ndarray, size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation form: scale the longer side to ``size``, pad right/bottom to a square."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 114, np.uint8)
    out[:small.shape[0], :small.shape[1]] = small
    f = faces.copy()
    f[:, :14] *= s
    return out.astype(np.float32), f


def build_targets(faces: np.ndarray, size: int, min_face: float = 6.0,
                  radius: float = 1.5) -> dict[str, np.ndarray]:
    """Anchor-free targets for one ``size`` x ``size`` image. Each face goes to one stride by
    its size (longer side < 48 px: 8, < 112: 16, else 32); the cells of that stride whose
    centre lies within ``radius`` strides of the face centre and inside the box are positive
    (at least the nearest cell). A cell claimed by two faces takes the smaller. Faces under
    ``min_face`` px are not learnt; cells inside them are ignored by the score loss."""
    pri = priors(size, size)
    n = len(pri)
    cls = np.zeros(n, np.float32)
    weight = np.ones(n, np.float32)
    box = np.zeros((n, 4), np.float32)
    lm = np.zeros((n, 10), np.float32)
    has_lm = np.zeros(n, np.float32)
    area = np.full(n, np.inf, np.float32)
    px, py, ps = pri[:, 0], pri[:, 1], pri[:, 2]
    for f in faces:
        x0, y0, x1, y1 = f[:4]
        bw, bh = x1 - x0, y1 - y0
        inside = (px > x0) & (px < x1) & (py > y0) & (py < y1)
        if max(bw, bh) < min_face:
            weight[inside & (cls == 0)] = 0.0
            continue
        big = max(bw, bh)
        s = 8 if big < 48 else 16 if big < 112 else 32
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        on = ps == s
        near = on & inside & (np.abs(px - cx) <= radius * s) & (np.abs(py - cy) <= radius * s)
        if not near.any():
            d = np.where(on, (px - cx) ** 2 + (py - cy) ** 2, np.inf)
            near = np.zeros(n, bool)
            near[int(d.argmin())] = True
        a = bw * bh
        take = near & (a < area)
        area[take] = a
        cls[take], weight[take] = 1.0, 1.0
        box[take] = [x0, y0, x1, y1]
        lm[take] = f[4:14]
        has_lm[take] = f[14]
        # the other strides' cells at the centre are neither pushed up nor down
        ctr = ~on & (np.abs(px - cx) < ps / 2 + 1) & (np.abs(py - cy) < ps / 2 + 1) & (cls == 0)
        weight[ctr] = 0.0
    return {"cls": cls, "weight": weight, "box": box, "lm": lm, "has_lm": has_lm}
