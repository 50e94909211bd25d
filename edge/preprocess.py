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
# FER2013's framing seen from five landmarks: eye distance and eye-centre height as fractions of
# the image side (medians over 1,852 of 3,000 training faces), measured with `fer-edge
# calibrate-margin --data ../shared/data/fer2013 --landmarks` (bundle.json crop.landmarks).
FER2013_EYES = (0.3759, 0.3828)
# The landmark framing that shows real faces like that, with our detector's five landmarks on
# the shared video and the demo portrait: `fer-edge calibrate-margin --data
# ../shared/data/fer2013 --source ../shared/data/video/neutral_to_angry.avi --demo
# --landmarks` (the cascade finds the eyes 0.423 apart at 0.405 height in crops framed with
# FER2013_EYES, so the crop grows): the export default and the shipped bundle's crop.landmarks.
LANDMARK_FRAMING = (0.3345, 0.3631)


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


# Eye distance / (eye centre to mouth centre) in the five-point face template of ArcFace
# (insightface's 112x112 reference: eyes 35.2 px apart, mouth 40.7 px below them). A face turned
# sideways keeps its eye-to-mouth height while its eye distance shrinks, so the face's size is
# the larger of the eye distance and this share of the eye-to-mouth height.
EYE_TO_MOUTH = 35.24 / 40.68


@dataclass(frozen=True)
class CropSpec:
    """How a detection becomes a crop (bundle.json ``crop``).

    Without landmarks (or with ``eye_distance`` None): the box grows by ``margin`` on each side
    and becomes a square (``square``). With a detector's five landmarks and ``eye_distance`` set,
    the square comes from the landmarks instead, so every detector frames a face the same way:
    its side makes the face's size (:func:`landmark_square`) ``eye_distance`` of it and puts the
    eye centre at ``eye_y`` of its height, both measured on FER2013 (``fer-edge
    calibrate-margin --landmarks``). ``align``: with landmarks, the crop is rotated so the eyes
    are level. Bundles without these keys keep the box framing and no rotation.
    """

    margin: float = 0.0
    square: bool = True
    eye_distance: float | None = None  # eye distance / crop side (FER2013); None: box framing
    eye_y: float = 0.4  # eye centre's height / crop side (FER2013)
    align: bool = False  # rotate landmark crops so the eyes are level
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = {"margin": self.margin, "square": self.square, **self.extra}
        if self.eye_distance is not None:
            d["landmarks"] = {"eye_distance": self.eye_distance, "eye_y": self.eye_y}
        if self.align:
            d["align"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CropSpec:
        """bundle.json's ``crop``; raises FerEdgeError naming the key that is wrong."""
        if not isinstance(d, dict):
            raise FerEdgeError("'crop' must be an object")
        margin = d.get("margin", 0.0)
        if not _finite(margin) or not 0 <= margin <= 1:
            raise FerEdgeError(f"crop.margin {margin!r}: a number in 0..1")
        lm = d.get("landmarks")
        eye_distance, eye_y = None, 0.4
        if lm is not None:
            if not isinstance(lm, dict) or not all(
                    _finite(lm.get(k)) and 0 < lm[k] < 1 for k in ("eye_distance", "eye_y")):
                raise FerEdgeError(f"crop.landmarks {lm!r}: needs eye_distance and eye_y, "
                                   "numbers between 0 and 1")
            eye_distance, eye_y = float(lm["eye_distance"]), float(lm["eye_y"])
        align = d.get("align", False)
        if not isinstance(align, bool):
            raise FerEdgeError(f"crop.align {align!r}: true or false")
        return cls(float(margin), bool(d.get("square", True)), eye_distance, eye_y, align,
                   {k: v for k, v in d.items()
                    if k not in ("margin", "square", "landmarks", "align")})


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


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
    frame: np.ndarray, box: Sequence[float], margin: float = 0.0, square: bool = True, *,
    landmarks: Sequence[Sequence[float]] | None = None, spec: CropSpec | None = None,
) -> np.ndarray:
    """Cut the face in ``box`` (x, y, w, h) out of ``frame``, framed like the training images.

    The one framing path of the loop, fer-bench and ``fer-edge crop``. With ``spec`` (the
    bundle's :class:`CropSpec`; it replaces ``margin`` and ``square``) and the detector's five
    ``landmarks``, the square comes from the landmarks and, with ``spec.align``, is rotated so
    the eyes are level (:func:`landmark_square`). Otherwise the box grows by ``margin`` of its
    size on each side and, with ``square``, becomes a square around the same centre (side = the
    longer edge). Parts outside the frame are filled by replicating the border, so a face at the
    edge keeps its framing.
    """
    if spec is not None:
        margin, square = spec.margin, spec.square
        sq = landmark_square(landmarks, spec) if landmarks is not None else None
        if sq is not None:
            cx, cy, side, angle = sq
            if spec.align and abs(angle) > 0.5:
                return _rotated_crop(frame, cx, cy, side, angle)
            box, margin, square = (cx - side / 2, cy - side / 2, side, side), 0.0, True
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


def landmark_square(landmarks: Sequence[Sequence[float]] | None, spec: CropSpec
                    ) -> tuple[float, float, float, float] | None:
    """The crop square (centre x, centre y, side, angle in degrees) that five landmarks (left
    eye, right eye, nose, left and right mouth corner) give under ``spec``; None when ``spec``
    has no landmark framing or the points are unusable (then the box framing applies).

    The face's size is the larger of the eye distance and ``EYE_TO_MOUTH`` times the eye centre
    to mouth centre distance; the side makes it ``spec.eye_distance`` of the crop. The eye
    centre sits at the horizontal middle and at ``spec.eye_y`` of the height, measured along the
    face's own vertical when ``spec.align`` (``angle``: the eye line's slope; 0 without align).
    """
    if spec.eye_distance is None or landmarks is None:
        return None
    p = np.asarray(landmarks, np.float64)
    if p.shape != (5, 2) or not np.isfinite(p).all():
        return None
    eye, mouth = (p[0] + p[1]) / 2.0, (p[3] + p[4]) / 2.0
    dx, dy = p[1] - p[0]
    size = max(float(np.hypot(dx, dy)), EYE_TO_MOUTH * float(np.linalg.norm(mouth - eye)))
    if size < 1.0:
        return None
    side = size / spec.eye_distance
    angle = float(np.degrees(np.arctan2(dy, dx))) if spec.align and dx > 0 else 0.0
    t = np.radians(angle)
    down = np.array([-np.sin(t), np.cos(t)])  # the face's vertical, towards the chin
    cx, cy = eye + down * (0.5 - spec.eye_y) * side
    return float(cx), float(cy), float(side), angle


def _rotated_crop(frame: np.ndarray, cx: float, cy: float, side: float,
                  angle: float) -> np.ndarray:
    """The ``side`` square around (cx, cy), turned by ``angle`` degrees so its content is level
    (OpenCV's rotation; the border replicated where it leaves the frame)."""
    fh, fw = frame.shape[:2]
    if not (-side / 2 < cx < fw + side / 2 and -side / 2 < cy < fh + side / 2):
        raise FerEdgeError(f"face at ({cx:.0f}, {cy:.0f}) lies outside the {fw}x{fh} frame")
    n = max(1, int(round(side)))
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (n / 2.0 - cx, n / 2.0 - cy)
    return cv2.warpAffine(frame, m, (n, n), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


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
