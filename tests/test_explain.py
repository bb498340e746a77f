"""Explanations: exact identities, vectorised against naive, aggregation and scores on hand-made inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from utils import data, explain
from utils.models import build_model


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = build_model("small", 4).eval()
    with torch.no_grad():  # random BN statistics make the maps less trivial
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("hw", [(32, 32), (48, 32)])
def test_cam_averages_to_the_logit_minus_the_bias(net, hw):
    x = torch.randn(3, 1, *hw)
    target = torch.tensor([0, 2, 3])
    raw = explain.CAM(net, center=False).raw(x, target)  # before upsampling
    with torch.no_grad():
        logits = net(x)
    expect = logits.gather(1, target[:, None]).squeeze(1) - net.fc.bias[target]
    torch.testing.assert_close(raw.mean((-2, -1)), expect, rtol=1e-5, atol=1e-5)
    assert explain.CAM(net)(x, target).shape == (3, *hw)  # upsampled to the input, non-square too


def test_centred_cam_explains_the_logit_against_the_mean_logit(net):
    x = torch.randn(2, 1, 32, 32)
    raw = explain.CAM(net, center=True).raw(x, torch.tensor([1, 1]))
    with torch.no_grad():
        logits = net(x)
    expect = (logits[:, 1] - net.fc.bias[1]) - (logits - net.fc.bias).mean(1)
    torch.testing.assert_close(raw.mean((-2, -1)), expect, rtol=1e-5, atol=1e-5)


def test_gradcam_at_the_last_conv_is_relu_cam_over_hw(net):
    x = torch.randn(2, 1, 32, 40)
    target = torch.tensor([1, 3])
    gc = explain.GradCAM(net).raw(x, target)
    cam = explain.CAM(net, center=False).raw(x, target)
    h, w = cam.shape[-2:]
    torch.testing.assert_close(gc, torch.relu(cam) / (h * w), rtol=1e-4, atol=1e-6)


def test_vectorised_cams_equal_single_cams(net):
    torch.manual_seed(1)
    x = torch.randn(3, 1, 32, 32)
    W = net.fc.weight.detach() + 0.3 * torch.randn(7, *net.fc.weight.shape)
    target = torch.tensor([0, 1, 2])
    fast = explain.laplace_cams(net, x, W, target)
    slow = explain.laplace_cams_loop(net, x, W, target)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert fast.shape == (7, 3, 32, 32)


def test_gradient_samples_equal_autograd_per_sample(net):
    torch.manual_seed(2)
    x = torch.randn(2, 1, 24, 32)
    W = torch.randn(3, *net.fc.weight.shape)
    target = torch.tensor([1, 0])
    fast = explain.gradient_samples(net, x, W, target, center=False)
    for s in range(3):
        xs = x.clone().requires_grad_(True)
        f = (net.embed(xs) * W[s][target]).sum()
        (g,) = torch.autograd.grad(f, xs)
        torch.testing.assert_close(fast[s], g.abs().sum(1), rtol=1e-4, atol=1e-6)


def test_captum_gradient_matches_autograd(net):
    x = torch.randn(2, 1, 32, 32)
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xs)[:, 2].sum(), xs)
    torch.testing.assert_close(explain.Gradient(net)(x, 2), g.abs().sum(1))
    assert explain.SmoothGrad(net, n=4)(x, 2).shape == (2, 32, 32)
    assert explain.IntegratedGradients(net, steps=8)(x, 2).shape == (2, 32, 32)


def test_aggregation_semantics():
    maps = torch.tensor([[[1.0, 4.0]], [[3.0, 0.0]], [[2.0, 2.0]]])  # 3 samples of a 1 x 2 map
    agg = explain.aggregate(maps)
    torch.testing.assert_close(agg["mean"], torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(agg["intersection"], torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(agg["union"], torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(agg["std"], torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(agg["cv"], torch.tensor([[0.5, 1.0]]), rtol=1e-2, atol=0)
    n = explain.normalize(torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]))
    torch.testing.assert_close(n, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_pointing_game_relevance_mass_and_iou_by_hand():
    maps = torch.tensor([[[0.0, 1.0], [3.0, 0.0]], [[5.0, 1.0], [-2.0, 0.0]]])
    masks = torch.tensor([[[0, 0], [1, 0]], [[0, 1], [1, 1]]], dtype=torch.bool)
    torch.testing.assert_close(explain.pointing_game(maps, masks), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(explain.relevance_mass(maps, masks), torch.tensor([0.75, 1 / 6]))
    torch.testing.assert_close(explain.topk_iou(maps, masks, share=0.25), torch.tensor([1.0, 0.0]))


class QuadrantNet(nn.Module):
    """Class 1's logit is 8 x the mean of the top-left quadrant: the oracle explanation is that quadrant."""

    def forward(self, x):
        s = x[..., :8, :8].mean((-3, -2, -1))
        return torch.stack([torch.zeros_like(s), 8 * s], 1)


def test_deletion_auc_of_an_oracle_beats_a_random_map():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16) * 2
    oracle = torch.zeros(6, 16, 16)
    oracle[:, :8, :8] = x[:, 0, :8, :8]
    rnd = torch.rand(6, 16, 16)
    a = explain.deletion_insertion(QuadrantNet(), x, oracle, 1)
    b = explain.deletion_insertion(QuadrantNet(), x, rnd, 1)
    assert a["deletion_auc"].mean() < b["deletion_auc"].mean() - 0.05
    assert a["insertion_auc"].mean() > b["insertion_auc"].mean() + 0.05
    np.testing.assert_allclose(a["deletion"][:, 0], a["insertion"][:, -1])  # nothing removed = all revealed


def test_randomising_the_model_decorrelates_its_cams(net):
    x = torch.randn(4, 1, 32, 32)
    out = explain.randomisation_check(net, x, 1)
    assert out[0]["randomised"] == "head" and out[-1]["randomised"].startswith("features[0")
    assert out[-1]["spearman"] < 0.5


def test_masks_are_letterboxed_like_their_images(small_phantom):
    idx = data.load_index(small_phantom)
    p = idx.path.iloc[0]
    img = data.letterbox(data.read_image(p), 40)
    bones, lesion = data.masks_for([p], 40)
    assert bones.shape == (1, 40, 40) and lesion.dtype == np.uint8
    assert (img[bones[0]] > 0).all()  # the mask lies on the image, not on the padding
