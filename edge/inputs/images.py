"""Reading one image file, the one way every stage does it.

OpenCV decodes what it can and stays silent about the rest: a half-truncated JPEG comes back
as a half-grey picture, a PNG whose header claims 100000x100000 pixels raises a ``cv2.error``
that does not name the file. :func:`read_image` checks what OpenCV does not (empty files, a
missing end marker, absurd dimensions, images too small to be a face) and raises one
:class:`FerEdgeError` naming the file and the problem, so the dataset readers, calibration,
the benchmark and the live loop all refuse the same files for the same reasons.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import FerEdgeError

# Formats OpenCV 4 reads (Pillow-style extensions people have in dataset folders).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# Files that look like images but that cv2.imread cannot read: named, never silently ignored.
UNSUPPORTED_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".svg", ".jxl")
MAX_PIXELS = 100_000_000  # 100 MP: larger is a decompression bomb, not a photo


class BadImage(FerEdgeError):
    """An image file that cannot be used; the message names the file."""


def _declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF or BMP header, before any pixel is decoded."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    return None


def _truncated(path: Path, head: bytes, size: int) -> bool:
    """A JPEG without its end-of-image marker or a PNG without IEND was cut short."""
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n":
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 64))
            tail = fh.read()
        if head[:3] == b"\xff\xd8\xff":
            return b"\xff\xd9" not in tail
        return b"IEND" not in tail
    return False


def read_image(path: str | os.PathLike, gray: bool = False, min_side: int = 1) -> np.ndarray:
    """Decode ``path`` as BGR (or grayscale) uint8, or raise :class:`BadImage` saying why."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(32)
    except FileNotFoundError:
        raise BadImage(f"{p}: image not found") from None
    except OSError as e:
        raise BadImage(f"{p}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise BadImage(f"{p}: empty file (0 bytes)")
    if p.suffix.lower() in UNSUPPORTED_SUFFIXES:
        raise BadImage(f"{p}: {p.suffix} images are not supported by OpenCV; convert to "
                       "JPEG or PNG")
    dims = _declared_size(head)
    if dims and dims[0] * dims[1] > MAX_PIXELS:
        raise BadImage(f"{p}: header claims {dims[0]}x{dims[1]} pixels (over "
                       f"{MAX_PIXELS // 1_000_000} MP): corrupt file or decompression bomb")
    if _truncated(p, head, size):
        raise BadImage(f"{p}: truncated image file (no end marker): corrupt or partly copied")
    try:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise BadImage(f"{p}: OpenCV cannot decode it ({str(e).strip().splitlines()[-1]})") \
            from None
    if img is None:
        raise BadImage(f"{p}: unreadable or corrupt image (not a format OpenCV can decode)")
    if min(img.shape[:2]) < min_side:
        raise BadImage(f"{p}: image is {img.shape[1]}x{img.shape[0]} pixels, smaller than "
                       f"{min_side} px: too small to hold a face")
    return img
