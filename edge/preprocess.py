"""The one function that turns a face into the model's input tensor.

Training evaluation, INT8 calibration, the benchmark and the live loop all call
:func:`preprocess`; training augmentation wraps it and never replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .errors import FerEdgeError

# Crop margin that frames OpenCV Haar boxes like FER2013's 48x48 faces, measured with
# `fer-edge calibrate-margin --data ../shared/data/fer2013 --source
# ../shared/data/video/neutral_to_angry.avi --demo` (eye distance 0.376 of a FER2013 image,
# 0.432 of a Haar box): the export default for models trained on FER2013.
FER2013_HAAR_MARGIN = 0.075


@dataclass(frozen=True)
class InputSpec:
    """The model input, as recorded in checkpoints and in bundle.json under ``input``.

    tensor = ((gray_uint8 * scale) - mean) / std, shape [N, channels, height, width].
    """

    height: int = 48
    width: int = 48
    channels: int = 1
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    dtype: str = "float32"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        try:
            spec = cls(
                height=int(d["height"]), width=int(d["width"]), channels=int(d["channels"]),
                scale=float(d["scale"]), mean=tuple(float(m) for m in d["mean"]),
                std=tuple(float(s) for s in d["std"]),
                layout=str(d.get("layout", "NCHW")), dtype=str(d.get("dtype", "float32")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FerEdgeError(f"input spec {d!r} is invalid: {e}") from None
        if spec.layout != "NCHW" or spec.channels not in (1, 3):
            raise FerEdgeError(f"input spec {d!r}: only NCHW with 1 or 3 channels is supported")
        if len(spec.mean) not in (1, spec.channels) or len(spec.std) not in (1, spec.channels):
            raise FerEdgeError(f"input spec {d!r}: mean/std need 1 or {spec.channels} values")
        if min(spec.height, spec.width) < 1 or not all(s > 0 for s in spec.std):
            raise FerEdgeError(f"input spec {d!r}: height and width must be >= 1 and std > 0")
        return spec


@dataclass(frozen=True)
class CropSpec:
    """How a detector box becomes a crop: grown by ``margin`` on each side, squared."""

    margin: float = 0.0
    square: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {"margin": self.margin, "square": self.square, **self.extra}


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or grayscale uint8 image -> 2-D grayscale uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise FerEdgeError(f"cannot convert an image of shape {image.shape} to grayscale")


def fit_gray(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Any image -> grayscale uint8 of exactly (height, width)."""
    gray = to_gray(image)
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    if gray.shape != (height, width):
        shrink = gray.shape[0] > height or gray.shape[1] > width
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (width, height), interpolation=interp)
    return gray


def crop_box(
    frame: np.ndarray, box: Sequence[float], margin: float = 0.0, square: bool = True
) -> np.ndarray:
    """Cut the face in ``box`` (x, y, w, h) out of ``frame``, framed like the training images.

    The box grows by ``margin`` of its size on each side and, with ``square``, becomes a square
    around the same centre (side = the longer edge). Parts outside the frame are filled by
    replicating the border, so a face at the edge keeps its framing.
    """
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2.0, y + h / 2.0
    w, h = w * (1.0 + 2.0 * margin), h * (1.0 + 2.0 * margin)
    if square:
        w = h = max(w, h)
    x0, y0 = int(round(cx - w / 2.0)), int(round(cy - h / 2.0))
    x1, y1 = x0 + max(1, int(round(w))), y0 + max(1, int(round(h)))
    fh, fw = frame.shape[:2]
    pad = (max(0, -y0), max(0, y1 - fh), max(0, -x0), max(0, x1 - fw))
    crop = frame[max(0, y0):min(fh, y1), max(0, x0):min(fw, x1)]
    if crop.size == 0:
        raise FerEdgeError(f"face box {tuple(box)} lies outside the {fw}x{fh} frame")
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    return crop


def preprocess(faces: np.ndarray | Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Face crops -> float32 tensor [N, C, H, W] ready for the model.

    ``faces`` is either a uint8 array [N, H, W] already at the model size (the cached dataset
    arrays) or a sequence of crops of any size and colour (the live loop).
    """
    if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.dtype == np.uint8 \
            and faces.shape[1:] == (spec.height, spec.width):
        gray = faces
    else:
        gray = np.stack([fit_gray(f, spec.height, spec.width) for f in faces]) if len(faces) \
            else np.zeros((0, spec.height, spec.width), np.uint8)
    x = gray.astype(np.float32)[:, None, :, :]
    if spec.channels == 3:
        x = np.repeat(x, 3, axis=1)
    x *= np.float32(spec.scale)
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    if np.any(mean):
        x -= mean
    if np.any(std != 1.0):
        x /= std
    return np.ascontiguousarray(x)
