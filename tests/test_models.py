"""The networks' shared interface: features -> global average pool -> fc."""
from __future__ import annotations

import pytest
import torch

from utils.models.networks import ARCHS, build_model, count_parameters


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("hw", [(64, 64), (64, 48)])
def test_interface_and_shapes(arch, hw):
    torch.manual_seed(0)
    m = build_model(arch, 7, dropout=0.2).eval()
    x = torch.randn(3, 1, *hw)
    fmap = m.features(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (3, m.num_features)
    phi = m.pool(fmap)
    torch.testing.assert_close(phi, fmap.mean((-2, -1)))
    torch.testing.assert_close(m(x), m.fc(phi))  # dropout is inactive in eval mode
    assert m(x).shape == (3, 7) and m.fc.in_features == m.num_features
    assert list(m.children())[-1] is m.fc  # the last module is the head (laplace-torch's last layer)


def test_head_sizes_match_the_course_reports():
    assert count_parameters(build_model("small", 7).fc) == 903
    assert count_parameters(build_model("large", 7).fc) == 3591
    assert build_model("resnet18", 7).num_features == 512


def test_small_downsamples_a_64px_image_to_8x8_maps():
    assert build_model("small", 7).features(torch.zeros(1, 1, 64, 64)).shape[-2:] == (8, 8)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    m = build_model("small", 3)
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 3, (16,))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    first = None
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vit'; known: small, large, resnet18"):
        build_model("vit", 7)


def test_local_torchvision_weights_load_with_the_stem_summed(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    tv = resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    m = build_model("resnet18", 7, weights=tmp_path / "r18.pth")
    torch.testing.assert_close(m.features[0].weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(m.features[7][1].conv2.weight, tv.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="does not fit architecture 'small'"):
        build_model("small", 7, weights=tmp_path / "r18.pth")
