"""Batch augmentation on tensors that :func:`fer_edge.edge.preprocess.preprocess` produced.

One affine warp per batch (rotation, scale, shift, horizontal flip) through ``grid_sample``,
then brightness/contrast jitter and random erasing: cheap enough on two CPU cores to keep the
convolutions, not the augmentation, as the bottleneck.

The camera-condition augmentations (off by default; ``REALWORLD`` turns them on) reproduce
what a face found by a detector in a real photo or video looks like next to a FER2013 crop:
a small face upsampled (down-then-up sampling), defocus or motion (Gaussian blur), JPEG
artefacts, and exposure (gamma). They act on the [0, 1] image before normalisation is undone,
so they need the input spec's scale, mean and std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
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
    lowres: float = 0.0  # probability of down-then-up sampling to 12..36 px (small faces)
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.3..1.5 px
    jpeg: float = 0.0  # probability of JPEG re-encoding at quality 15..75
    gamma: float = 0.0  # exposure: gamma in [1/(1+g), 1+g]

    @property
    def enabled(self) -> bool:
        return bool(self.flip or self.rotate or self.scale or self.translate or self.jitter
                    or self.erase or self.camera)

    @property
    def camera(self) -> bool:
        return bool(self.lowres or self.blur or self.jpeg or self.gamma)


# `fer-train --augment-preset realworld`: detector framing (scale +-15 %, shift +-10 %,
# rotation +-15 deg) and camera conditions, for faces found in real photos and videos.
REALWORLD = AugmentConfig(rotate=15.0, scale=0.15, translate=0.1, jitter=0.3, erase=0.3,
                          lowres=0.3, blur=0.25, jpeg=0.3, gamma=0.4)
PRESETS = {"default": AugmentConfig(), "realworld": REALWORLD}


def preset(name: str, **overrides) -> AugmentConfig:
    """A named augmentation preset with explicitly given fields replaced."""
    return replace(PRESETS[name], **overrides)


def camera_conditions(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
                      ) -> torch.Tensor:
    """Low resolution, blur, JPEG and gamma on a batch of [0, 1] images [N, C, H, W]."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]

    def pick(p: float) -> torch.Tensor:
        return torch.nonzero(torch.rand(n, generator=gen) < p).flatten()

    for i in pick(cfg.lowres).tolist():
        side = int(torch.randint(12, 37, (1,), generator=gen))
        small = F.interpolate(x[i:i + 1], size=(side, side * w // h), mode="area")
        x[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    for i in pick(cfg.blur).tolist():
        sigma = 0.3 + 1.2 * float(torch.rand(1, generator=gen))
        r = max(1, int(math.ceil(2 * sigma)))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).to(x.device)
        c = x.shape[1]
        img = F.pad(x[i:i + 1], (r, r, r, r), mode="replicate")
        img = F.conv2d(img, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x[i:i + 1] = F.conv2d(img, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    for i in pick(cfg.jpeg).tolist():
        q = int(torch.randint(15, 76, (1,), generator=gen))
        img = (x[i].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        for ch in range(img.shape[0]):
            ok, buf = cv2.imencode(".jpg", img[ch], [cv2.IMWRITE_JPEG_QUALITY, q])
            img[ch] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        x[i] = torch.from_numpy(img.astype(np.float32) / 255.0).to(x.device)
    if cfg.gamma:
        g = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log1p(cfg.gamma))
        x = x.clamp(0, 1) ** g.view(n, 1, 1, 1).to(x.device)
    return x


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
            spec=None) -> torch.Tensor:
    """Augment a float batch [N, C, H, W]; randomness comes only from ``gen``. ``spec`` (the
    InputSpec that made ``x``) is needed for the camera-condition augmentations."""
    if not cfg.enabled:
        return x
    n, dev = x.shape[0], x.device
    if cfg.camera and spec is not None:
        mean = torch.tensor(spec.mean, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
        unit = (x * std + mean) / spec.scale / 255.0  # back to [0, 1] pixels
        x = (camera_conditions(unit.clone(), cfg, gen) * 255.0 * spec.scale - mean) / std

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
