"""Batch augmentation on tensors that :func:`fer_edge.edge.preprocess.preprocess` produced.

One affine warp per batch (rotation, scale, shift, horizontal flip) through ``grid_sample``,
then brightness/contrast jitter and random erasing: cheap enough on two CPU cores to keep the
convolutions, not the augmentation, as the bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate: float = 10.0  # degrees, +-
    scale: float = 0.1  # relative, +-
    translate: float = 0.1  # fraction of the image, +-
    jitter: float = 0.2  # brightness/contrast, relative
    erase: float = 0.25  # probability of one random erased rectangle per image

    @property
    def enabled(self) -> bool:
        return bool(self.flip or self.rotate or self.scale or self.translate or self.jitter
                    or self.erase)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch [N, C, H, W]; randomness comes only from ``gen``."""
    if not cfg.enabled:
        return x
    n, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen).mul(hi - lo).add(lo).to(dev)

    if cfg.flip or cfg.rotate or cfg.scale or cfg.translate:
        ang = u(-cfg.rotate, cfg.rotate) * (math.pi / 180.0)
        s = 1.0 / u(1.0 - cfg.scale, 1.0 + cfg.scale)
        fl = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n, device=dev)
        cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
        theta = torch.stack([
            torch.stack([cos * fl, -sin, u(-cfg.translate, cfg.translate) * 2], 1),
            torch.stack([sin * fl, cos, u(-cfg.translate, cfg.translate) * 2], 1),
        ], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.jitter:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        c = u(1 - cfg.jitter, 1 + cfg.jitter).view(n, 1, 1, 1)
        b = u(-cfg.jitter, cfg.jitter).view(n, 1, 1, 1) * x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean + b
    if cfg.erase:
        h, w = x.shape[-2:]
        eh = (u(0.1, 0.4) * h).long()
        ew = (u(0.1, 0.4) * w).long()
        y0 = (u(0, 1) * (h - eh)).long()
        x0 = (u(0, 1) * (w - ew)).long()
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = (ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) \
            & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1))
        box &= (u(0, 1) < cfg.erase).view(n, 1, 1)
        x = x.masked_fill(box.unsqueeze(1), 0.0) + box.unsqueeze(1) * x.mean(
            dim=(1, 2, 3), keepdim=True)
    return x
