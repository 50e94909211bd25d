"""The face detector network: a depthwise-separable backbone, a small top-down neck and one
anchor-free head per stride (8, 16, 32): 56 k parameters at width 1, 118 k at 1.5.

Input ``[B, 3, H, W]`` BGR 0..255 (normalised inside), H and W multiples of 32. Output
``[B, N, 15]`` in the layout :mod:`fer_edge.edge.detection.ours` decodes: score probability,
left/top/right/bottom distances and five landmark offsets in input pixels. ``raw=True``
returns the training form instead: score logits, log-distances / stride, offsets / stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fer_edge.edge.detection.ours import STRIDES

N_OUT = 15


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def dw_sep(cin: int, cout: int, s: int = 1) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1))


class FaceDetNet(nn.Module):
    def __init__(self, width: float = 1.0, neck: int = 48):
        super().__init__()
        c = [max(8, int(round(v * width / 8)) * 8) for v in (16, 24, 32, 64, 96)]
        neck = max(16, int(round(neck * width / 8)) * 8)
        self.stem = nn.Sequential(conv_bn(3, c[0], 3, 2), dw_sep(c[0], c[1], 2),
                                  dw_sep(c[1], c[1]))                       # stride 4
        self.s8 = nn.Sequential(dw_sep(c[1], c[2], 2), dw_sep(c[2], c[2]), dw_sep(c[2], c[2]))
        self.s16 = nn.Sequential(dw_sep(c[2], c[3], 2), dw_sep(c[3], c[3]), dw_sep(c[3], c[3]))
        self.s32 = nn.Sequential(dw_sep(c[3], c[4], 2), dw_sep(c[4], c[4]))
        self.lat = nn.ModuleList([conv_bn(ch, neck, 1) for ch in c[2:]])
        self.heads = nn.ModuleList([nn.Sequential(dw_sep(neck, neck), nn.Conv2d(neck, N_OUT, 1))
                                    for _ in STRIDES])
        for h in self.heads:  # start with a low face prior (focal-loss init)
            nn.init.constant_(h[-1].bias[:1], -4.6)
            nn.init.zeros_(h[-1].bias[1:])

    def forward(self, x: torch.Tensor, raw: bool = False) -> torch.Tensor:
        x = (x - 127.5) / 128.0
        f8 = self.s8(self.stem(x))
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p32 = self.lat[2](f32)
        p16 = self.lat[1](f16) + F.interpolate(p32, scale_factor=2.0, mode="nearest")
        p8 = self.lat[0](f8) + F.interpolate(p16, scale_factor=2.0, mode="nearest")
        outs = []
        for p, head, s in zip((p8, p16, p32), self.heads, STRIDES, strict=True):
            o = head(p).flatten(2).transpose(1, 2)  # [B, h*w, 15]
            if not raw:
                o = torch.cat([o[..., :1].sigmoid(), o[..., 1:5].clamp(-6, 6).exp() * s,
                               o[..., 5:] * s], -1)
            outs.append(o)
        return torch.cat(outs, 1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
