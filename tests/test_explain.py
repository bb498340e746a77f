"""Explainers: exact identities, vectorised against naive, aggregation, head samples (Laplace, MC dropout);
their scores are tested in test_explanation_scores.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import explain, posteriors
from utils.explain import scores as explanation_scores
from utils.models.networks import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


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


# --------------------------------------------------------------------------- identities of a head posterior


def test_gradcam_before_its_relu_is_cam_over_hw(net):
    x = torch.randn(2, 1, 32, 40)
    target = torch.tensor([2, 0])
    gc = explain.GradCAM(net, relu=False).raw(x, target)
    cam = explain.CAM(net, center=False).raw(x, target)
    assert (cam < 0).any()  # so the ReLU would matter
    h, w = cam.shape[-2:]
    torch.testing.assert_close(gc, cam / (h * w), rtol=1e-4, atol=1e-6)


def test_mean_cam_over_head_samples_is_the_cam_of_their_mean_weights(net):
    torch.manual_seed(3)
    x = torch.randn(3, 1, 32, 32)
    W = net.fc.weight.detach() + 0.5 * torch.randn(9, *net.fc.weight.shape)
    target = torch.tensor([0, 3, 1])
    for center in (True, False):
        mean_cam = explain.laplace_cams(net, x, W, target, center).mean(0)
        cam_of_mean = explain.laplace_cams(net, x, W.mean(0, keepdim=True), target, center)[0]
        torch.testing.assert_close(mean_cam, cam_of_mean, rtol=0, atol=1e-5)


def test_antithetic_head_samples_average_to_the_map_cam_exactly(net):
    torch.manual_seed(4)
    x = torch.randn(2, 1, 32, 32)
    E = 2.0 * torch.randn(5, *net.fc.weight.shape)
    W = torch.cat([net.fc.weight.detach() + E, net.fc.weight.detach() - E])
    target = torch.tensor([1, 2])
    samples = explain.laplace_cams(net, x, W, target)
    torch.testing.assert_close(samples.mean(0), explain.CAM(net)(x, target), rtol=0, atol=1e-5)
    # what the posterior does change: the spread
    assert explanation_scores.spread_scores(samples)["relative"].min() > 0.1


def test_mc_dropout_heads_are_dropout_on_the_pooled_features(net):
    W = net.fc.weight.detach()
    p = 0.25
    Ws = posteriors.mc_dropout_heads(W, p, 6, seed=1)
    assert Ws.shape == (6, *W.shape)
    torch.testing.assert_close(Ws, posteriors.mc_dropout_heads(W, p, 6, seed=1))  # seeded
    assert not torch.equal(Ws, posteriors.mc_dropout_heads(W, p, 6, seed=2))
    keep = Ws[:, 0] != 0  # S x K masks, shared by the classes
    torch.testing.assert_close(Ws, W * keep[:, None, :] / (1 - p))
    x = torch.randn(2, 1, 32, 32)
    target = torch.tensor([0, 3])
    with torch.no_grad():
        fmap = net.features(x)
        phi = net.pool(fmap)
        cams = explain.cam_samples(fmap, Ws, target, center=False)  # S x B x h x w
        for s in range(6):  # CAM_s = sum_k w_ck m_sk A_k / (1 - p): its mean is the dropout network's logit - b
            logit = net.fc(phi * keep[s] / (1 - p))
            expect = logit.gather(1, target[:, None])[:, 0] - net.fc.bias[target]
            torch.testing.assert_close(cams[s].mean((-2, -1)), expect, rtol=1e-5, atol=1e-5)
    assert explain.dropout_rate(net) == 0.0 and explain.dropout_rate(build_model("small", 4, dropout=0.3)) == 0.3
    with pytest.raises(ValueError, match="dropout rate"):
        posteriors.mc_dropout_heads(W, 1.0, 2)


# --------------------------------------------------------------------------- the chapter's figures (explain_plots)


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.mark.parametrize("arch,blocks", [("small", 5), ("resnet18", 5)])
def test_randomisation_figure_names_stages_readably_and_draws_the_floor(plt, arch, blocks):
    import pandas as pd

    from utils.chapters import explain_plots

    stages = [name for name, _ in explanation_scores.randomisation_stages(build_model(arch, 3))]
    names = explain_plots.stage_names(stages)
    assert names["fc"] == "head (fc)" and len(stages) == 1 + blocks
    assert names[stages[1]] == f"block {blocks} (last conv)" and names[stages[-1]] == "block 1 (first conv)"
    summary = pd.DataFrame([dict(mode=m, step=i, stage=s, spearman_abs=0.5, ssim=0.1, spearman_abs_sd_seeds=0.05,
                                 ssim_sd_seeds=0.05) for m in ("cascading", "independent") for i, s in enumerate(stages)])
    fig = explain_plots.randomisation(summary, floor=0.71)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [names[s] for s in stages] and not any("features." in t for t in ticks)
        floors = [ln for ln in ax.get_lines() if ln.get_label().startswith("floor: maps blind to the network")]
        assert len(floors) == 1 and list(floors[0].get_ydata()) == [0.71, 0.71] and floors[0].get_linestyle() == "--"
    assert any(t.get_text().startswith("floor: maps blind") for t in fig.axes[0].get_legend().get_texts())
    fig = explain_plots.randomisation(summary)  # no floor given: no line
    assert not any(ln.get_label().startswith("floor") for ax in fig.axes for ln in ax.get_lines())


def _one_map_scale(fig, label: str):
    """Every map overlaid (jet) is drawn on one colour scale, 0 to 1, holding values in [0, 1], and the figure
    has one colour bar of that scale, labelled."""
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 1
    bar = bars[0]._colorbar
    assert bar.mappable.get_clim() == (0, 1) and bar.mappable.get_cmap().name == "jet"
    assert bars[0].get_xlabel() == label
    maps = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "jet"]
    assert maps and all(im.get_clim() == (0, 1) for im in maps)
    assert all(0 <= im.get_array().min() and im.get_array().max() <= 1 for im in maps)
    return maps


def test_map_grids_share_one_colour_scale_with_one_colour_bar(plt, net):
    from utils.chapters import explain_plots

    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    member = torch.rand(3, 2, 32, 32) * torch.tensor([1.0, 10.0, 100.0])[:, None, None, None]  # scales differ
    fig = explain_plots.member_cams(x, ["a", "b"], member, member.mean(0))
    assert len(_one_map_scale(fig, "CAM, each map min-max normalised to [0, 1]")) == 2 * 4
    aggs = {"ensemble": explain.aggregate(member)}
    fig = explain_plots.aggregated_cams(x, ["a", "b"], aggs, "aggregates")
    assert len(_one_map_scale(fig, "aggregate map, each map min-max normalised to [0, 1]")) == 2 * 4
    fig = explain_plots.rotated_members([net, net], x, [0, 1], ["elbow", "hand", "wrist", "other"], angle=30)
    assert len(_one_map_scale(fig, "CAM, each map min-max normalised to [0, 1]")) == 2 * 2


def test_the_uncertain_explanations_figure_shows_the_members_cams_of_the_most_disputed_images(plt):
    from utils.chapters import explain_plots

    torch.manual_seed(0)
    models = [build_model("small", 3, dropout=0.0).eval() for _ in range(3)]
    x = torch.randn(10, 1, 32, 32)
    dataset = [(x[i], 0) for i in range(10)]
    spread = np.linspace(0, 1, 10)
    probs = np.full((10, 3), 1 / 3)
    probs[:, 1] += 0.1
    fig = explain_plots.uncertain_explanations(models, dataset, np.zeros(10, int), probs, spread, ["A", "B", "C"], n=4)
    rows = [ax for ax in fig.axes if ax.get_title().startswith("a → b")]
    assert len(rows) == 4 and rows[0].get_title().endswith("spread 1.00")  # the largest spread first
    heads = {ax.get_title() for ax in fig.axes}
    assert {"member 0", "member 1", "member 2", "mean", "std over members"} <= heads
    overlays = [im for ax in fig.axes for im in ax.get_images() if im.get_alpha() == 0.45]
    assert len(overlays) == 4 * 5 and {im.get_clim() for im in overlays} == {(0, 1)}  # CAMs, one colour scale
