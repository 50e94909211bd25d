"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors and JSON-like values, so ``torch.load`` never has to
unpickle code: a checkpoint someone hands you cannot run anything.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_bytes, writing

CHECKPOINT_FORMAT = "fer-edge-checkpoint"
REQUIRED = ("arch", "labels", "input", "model")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename into place.

    Serialised in memory first: torch's writer reports a full disk as an obscure
    RuntimeError, a plain write as an OSError, which becomes a FerEdgeError naming the file
    (the file that was there before stays intact)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, **state}, buf)
    with writing(path, "write the checkpoint", "; any earlier file of that name is unchanged"):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getbuffer())


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; any problem is one clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FerEdgeError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, not a torch file at all
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FerEdgeError(f"{path}: not a readable fer-edge checkpoint ({msg[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FerEdgeError(f"{path}: not a fer-edge checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise FerEdgeError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def build_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint"):
    """Recreate the model a checkpoint describes and load its weights (eval mode)."""
    from .models import create_model

    model = create_model(ckpt["arch"], num_classes=len(ckpt["labels"]),
                         in_chans=int(ckpt["input"]["channels"]), **ckpt.get("arch_kwargs", {}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise FerEdgeError(f"{path}: weights do not fit arch {ckpt['arch']!r}: "
                           f"{str(e).splitlines()[0]}") from None
    return model.eval()
