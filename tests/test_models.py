from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")

from fer_edge.edge.errors import FerEdgeError
from fer_edge.train.models import create_model, list_models

ARCHS = [*list_models(), "resnet18", "resnet50", "vgg16", "efficientnet_b0",
         "tf_efficientnetv2_b0"]


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_and_trains_one_step(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7, in_chans=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert model(x).shape == (4, 7)
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_small_input_stems_keep_spatial_resolution():
    feats = create_model("resnet18").forward_features(torch.zeros(1, 1, 48, 48))
    assert feats.shape[-1] >= 6  # an ImageNet stem would leave 2x2


def test_unknown_arch_lists_choices():
    with pytest.raises(FerEdgeError, match="fercnn_m"):
        create_model("no_such_net")
