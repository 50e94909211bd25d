"""``fer-average-checkpoints``: the weighted average of classifier checkpoints of one network
(a fine-tuned model and the model it started from: WiSE-FT, Wortsman et al. 2022; or several
fine-tunes of one start: a "model soup").

Fine-tuning on new targets (FER+ votes, real-photo augmentation) moves a model towards what it
is tuned on and away from where it started; the average of the two weights keeps much of both,
because a fine-tune from a checkpoint stays in its basin. The result is an ordinary checkpoint:
``fer-export`` makes it a bundle, and bundle.json's ``training.average`` says what was mixed.

    fer-average-checkpoints checkpoints/fercnn_m_kd/best.pt /work/runs/ferplus/best.pt \
        --weights 0.5,0.5 --out /work/runs/wise/best.pt

The command itself is ``average_main`` in :mod:`.cli` (only CLI modules use the CLI helpers).
"""

from __future__ import annotations

import math
from pathlib import Path

from fer_edge.edge.errors import FerEdgeError

SAME = ("arch", "arch_kwargs", "labels", "input")


def parse_weights(text: str | None, n: int) -> list[float]:
    """``"0.3,0.7"`` -> weights summing to 1 (equal weights when None)."""
    if text is None:
        return [1.0 / n] * n
    try:
        w = [float(v) for v in text.split(",")]
    except ValueError:
        raise FerEdgeError(f"--weights {text!r}: not a comma list of numbers") from None
    if len(w) != n:
        raise FerEdgeError(f"--weights {text!r}: {len(w)} weights for {n} checkpoints")
    if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
        raise FerEdgeError(f"--weights {text!r}: weights must be finite, >= 0, not all 0")
    return [v / sum(w) for v in w]


def average_checkpoints(paths: list[str | Path], weights: list[float], command: str = ""
                        ) -> dict:
    """The checkpoint whose floating-point tensors are the weighted sum of ``paths``' (integer
    buffers such as batch-norm counters come from the first)."""
    import torch

    from .checkpoint import load_checkpoint

    cks = [load_checkpoint(p) for p in paths]
    first = cks[0]
    for p, c in zip(paths[1:], cks[1:], strict=True):
        for k in SAME:
            if c.get(k) != first.get(k):
                raise FerEdgeError(f"{p}: its {k} differs from {paths[0]}'s: only checkpoints "
                                   "of one network with the same labels and input can be "
                                   "averaged")
        if set(c["model"]) != set(first["model"]) or any(
                c["model"][k].shape != v.shape for k, v in first["model"].items()):
            raise FerEdgeError(f"{p}: its tensors differ from {paths[0]}'s")
    model = {}
    for k, v in first["model"].items():
        if torch.is_floating_point(v):
            model[k] = sum(w * c["model"][k].float() for w, c in zip(weights, cks, strict=True)
                           ).to(v.dtype)
            if not torch.isfinite(model[k]).all():
                raise FerEdgeError(f"{k}: the average is not finite (a checkpoint holds NaN "
                                   "or inf)")
        else:
            model[k] = v
    keep = {k: first[k] for k in ("arch", "arch_kwargs", "labels", "input", "targets", "params")
            if k in first}
    return {**keep, "model": model, "epoch": first.get("epoch", 0),
            "config": {**first.get("config", {}), "command": command},
            "average": [{"checkpoint": str(p), "weight": round(w, 6),
                         "epoch": c.get("epoch"), "best": c.get("best")}
                        for p, w, c in zip(paths, weights, cks, strict=True)]}
