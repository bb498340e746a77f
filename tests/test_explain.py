"""Explanations: exact identities, vectorised against naive, aggregation, baselines, the randomisation check,
spread over samples and scores on hand-made inputs; nothing explained may depend on the true label."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from utils import data, explain
from utils.models import build_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: on a busy 2-core machine, intra-op threads only wait for each other (a test
    took 32 s with 2 threads and 0.7 s with one). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def test_masks_are_letterboxed_like_their_images(small_phantom):
    idx = data.load_index(small_phantom)
    p = idx.path.iloc[0]
    img = data.letterbox(data.read_image(p), 40)
    bones, lesion = data.masks_for([p], 40)
    assert bones.shape == (1, 40, 40) and lesion.dtype == np.uint8
    assert (img[bones[0]] > 0).all()  # the mask lies on the image, not on the padding


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
    assert explain.spread_scores(samples)["relative"].min() > 0.1  # what the posterior does change: the spread


def test_mc_dropout_heads_are_dropout_on_the_pooled_features(net):
    W = net.fc.weight.detach()
    p = 0.25
    Ws = explain.mc_dropout_heads(W, p, 6, seed=1)
    assert Ws.shape == (6, *W.shape)
    torch.testing.assert_close(Ws, explain.mc_dropout_heads(W, p, 6, seed=1))  # seeded
    assert not torch.equal(Ws, explain.mc_dropout_heads(W, p, 6, seed=2))
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
        explain.mc_dropout_heads(W, 1.0, 2)


def test_spread_scores_by_hand():
    maps = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[3.0, 1.0]], [[2.0, 2.0]]]])  # S=2, B=2, 1 x 2
    sc = explain.spread_scores(maps)
    s = np.sqrt(2.0)  # std of (1, 3) with ddof 1
    np.testing.assert_allclose(sc["std"], [s, 0.0], rtol=1e-6)
    np.testing.assert_allclose(sc["relative"], [s / 2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(explain.spread_scores(maps * -5)["relative"], sc["relative"], rtol=1e-6)


# --------------------------------------------------------------------------- baselines


def test_centre_prior_is_a_centred_gaussian_of_the_image_size():
    m = explain.centre_prior(2, 61, 31, sigma_frac=0.2)
    assert m.shape == (2, 61, 31) and torch.equal(m[0], m[1])
    assert m[0, 30, 15] == 1.0 and m[0].argmax() == 30 * 31 + 15
    torch.testing.assert_close(m[0, 30 + 12, 15], torch.tensor(np.exp(-0.5 * (12 / 12.2) ** 2), dtype=torch.float32))
    torch.testing.assert_close(m[0], m[0].flip(0).flip(1))


def test_class_mask_prior_is_the_training_mean_bone_mask_of_the_target_class():
    bones = np.zeros((4, 2, 2), np.uint8)
    bones[0, 0, 0] = bones[1, 0, 0] = bones[1, 1, 1] = bones[2, 0, 1] = 1
    mean = explain.mean_class_masks(bones, np.array([0, 0, 2, 2]), 3)
    torch.testing.assert_close(mean, torch.tensor([[[1.0, 0], [0, 0.5]], [[0, 0], [0, 0]], [[0, 0.5], [0, 0]]]))
    prior = explain.class_mask_prior(mean, torch.tensor([2, 0]))
    torch.testing.assert_close(prior, mean[[2, 0]])
    assert explain.class_mask_prior(mean, torch.tensor([0]), (4, 4)).shape == (1, 4, 4)


def test_intensity_and_edge_maps_are_the_image_and_its_sobel_edges():
    from skimage.filters import sobel

    torch.manual_seed(5)
    img = torch.rand(3, 1, 20, 24)
    x = data.standardize(img)
    torch.testing.assert_close(explain.intensity_map(x), img[:, 0])
    edges = explain.edge_map(x)
    for b in range(3):
        np.testing.assert_allclose(edges[b].numpy(), sobel(img[b, 0].numpy().astype(np.float64)), atol=1e-5)
    maps = explain.baseline_maps(x, torch.tensor([0, 1, 0]), torch.rand(2, 20, 24), seed=1)
    assert list(maps) == list(explain.BASELINES) and all(m.shape == (3, 20, 24) for m in maps.values())
    assert "class-mask prior" not in explain.baseline_maps(x)  # needs the training masks and a class
    torch.testing.assert_close(maps["random (reference)"], explain.random_map(3, 20, 24, seed=1))


# --------------------------------------------------------------------------- randomisation check


def test_map_similarity_is_scipy_spearman_and_ssim_and_ignores_the_sign(net):
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    torch.manual_seed(6)
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    b[0] = a[0] ** 2 + 0.1 * b[0]  # correlated
    b[1, :8] = 0.5  # ties
    sim = explain.map_similarity(a, b)
    for i in range(3):
        assert sim["spearman"][i] == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-9)
        an, bn = (explain.normalize(m[i]).double().numpy() for m in (a, b))
        assert sim["ssim"][i] == pytest.approx(structural_similarity(an, bn, data_range=1.0), abs=1e-9)
    neg = explain.map_similarity(a, -a)
    np.testing.assert_allclose(neg["spearman"], -1.0)
    np.testing.assert_allclose(neg["spearman_abs"], 1.0)  # a sign-flipped map is NOT a randomised one
    const = explain.map_similarity(a[:1], torch.zeros(1, 16, 16))
    assert const["spearman_abs"][0] == 0.0


def test_randomisation_stages_go_from_the_head_down_with_batch_norm_in_its_block(net):
    stages = explain.randomisation_stages(net)
    assert stages[0] == ("fc", [net.fc])
    assert [n for n, _ in stages[1:]] == ["features.14", "features.11", "features.7", "features.3", "features.0"]
    assert all(isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.BatchNorm2d) for _, m in stages[1:])


def test_randomisation_check_frame_cascading_and_independent(net):
    x = torch.randn(3, 1, 32, 32)
    df = explain.randomisation_check(net, x, n_seeds=5, seed=0)
    assert set(df["mode"]) == {"cascading", "independent"} and set(df.seed) == set(range(5))
    assert len(df) == 2 * 5 * len(explain.randomisation_stages(net))
    for col in ("stage", "step", "spearman_abs", "spearman_abs_se", "ssim", "ssim_se", "spearman", "n"):
        assert col in df
    first = df[df.step == 0].set_index(["seed", "mode"]).spearman.unstack()
    np.testing.assert_allclose(first.cascading, first.independent)  # the same re-initialised head
    assert (df.spearman_abs >= df.spearman.abs() - 1e-12).all()
    summary = explain.randomisation_summary(df)
    assert len(summary) == 2 * len(explain.randomisation_stages(net)) and "ssim_sd_seeds" in summary
    again = explain.randomisation_check(net, x, n_seeds=1, seed=0, modes=("independent",))  # seeded; net untouched
    np.testing.assert_allclose(again.spearman.to_numpy(), df[(df.seed == 0) & (df["mode"] == "independent")].spearman)
    assert explain.randomisation_passes(df)  # a CAM depends on the weights: full cascading randomisation kills it


def test_randomisation_check_fails_explainers_that_ignore_the_weights(net):
    x = torch.randn(3, 1, 32, 32)
    df = explain.randomisation_check(net, x, explainer=lambda m, xx, t: explain.intensity_map(xx), n_seeds=5,
                                     modes=("cascading",))
    np.testing.assert_allclose(df.spearman_abs, 1.0)
    np.testing.assert_allclose(df.ssim, 1.0)
    assert not explain.randomisation_passes(df)

    calls = []

    def flipping(m, xx, t):  # the original map, negated after the first call: rho = -1, not randomised
        calls.append(1)
        return explain.CAM(net)(xx, t) * (1 if len(calls) == 1 else -1)

    df = explain.randomisation_check(net, x, explainer=flipping, n_seeds=5, modes=("cascading",))
    np.testing.assert_allclose(df.spearman, -1.0, atol=1e-9)
    np.testing.assert_allclose(df.spearman_abs, 1.0, atol=1e-9)
    assert not explain.randomisation_passes(df, metrics=("spearman_abs",))


# --------------------------------------------------------------------------- the test set, without labels


@pytest.fixture(scope="module")
def tiny_set(net):
    torch.manual_seed(7)
    other = build_model("small", 4).eval()
    x = torch.randn(10, 1, 32, 32)
    y = torch.randint(0, 4, (10,))
    W = net.fc.weight.detach() + 0.2 * torch.randn(5, *net.fc.weight.shape)
    return [net, other], W, x, y


def _ds(x, y):
    return [(xi, int(yi)) for xi, yi in zip(x, y)]


def test_score_test_set_scores_every_map_and_baseline_per_image_without_the_labels(tiny_set):
    models, W, x, y = tiny_set
    fmaps, probs = explain.forward_members(models, x)
    pred0, _ = explain.predicted_classes(probs)
    mean_masks = torch.zeros(4, 32, 32)
    for c in range(4):
        mean_masks[c, 8 * c:8 * c + 8] = 1.0
    bones = mean_masks[pred0].numpy().astype(bool)  # each image's bones are where its predicted class's are
    kw = dict(masks=(bones, None), n_deletion=5, steps=2, batch=4, mean_masks=mean_masks)
    per = explain.score_test_set(models, W, _ds(x, y), **kw)
    assert list(per.columns) == ["i", "method", "metric", "value", "target"] and set(per.target) == {"predicted"}
    assert set(explain.BASELINES) <= set(per.method) and "MAP CAM (member 0)" in set(per.method)
    assert not any("spread" in m for m in per.method)
    cam = per[per.method == "MAP CAM (member 0)"]
    assert sorted(cam[cam.metric == "mass"].i) == list(range(10))
    # deletion curves on a seeded random sample, not the first images (an index sorted by body part)
    assert sorted(cam[cam.metric == "deletion_auc"].i) == list(explain.deletion_sample(10, 5, seed=0))
    assert sorted(cam[cam.metric == "deletion_auc"].i) != list(range(5))
    prior = per[(per.method == "class-mask prior") & (per.metric == "mass")]
    np.testing.assert_allclose(prior.value, 1.0)  # it explains member 0's predicted class

    shuffled = explain.score_test_set(models, W, _ds(x, (y + 1) % 4), **kw)  # labels play no part
    pd.testing.assert_frame_equal(per, shuffled)

    table = explain.summarise(per)
    assert list(table.method) == list(dict.fromkeys(per.method))
    for k in explain.METRICS:
        assert k in table and k + "_se" in table
    row = table.set_index("method").loc["centre prior"]
    sel = per[(per.method == "centre prior") & (per.metric == "iou")].value
    assert row.iou == pytest.approx(sel.mean()) and row.iou_se == pytest.approx(sel.std() / np.sqrt(10))

    true = explain.score_test_set(models, W, _ds(x, y), masks=(bones, None), n_deletion=0, batch=4)
    assert set(true.target) == {"predicted"}
    true = explain.score_test_set(models, W, _ds(x, y), masks=(bones, None), n_deletion=0, batch=4, target="true")
    assert set(true.target) == {"true"} and all(m.endswith(" [true class]") for m in true.method)


def test_deletion_with_shared_ends_equals_deletion_alone(tiny_set):
    models, _, x, y = tiny_set
    maps = torch.rand(10, 32, 32)
    a = explain.deletion_insertion(models[0], x, maps, y, steps=5)
    b = explain.deletion_insertion(models[0], x, maps, y, steps=5, ends=explain.curve_ends(models[0], x, y))
    np.testing.assert_allclose(a["deletion"], b["deletion"])
    with torch.no_grad():
        p = torch.softmax(models[0](x), 1).gather(1, y[:, None])[:, 0].numpy()
    np.testing.assert_allclose(a["deletion"][:, 0], p, rtol=1e-5)


def test_explanation_spread_per_image_for_ensemble_laplace_and_dropout(tiny_set):
    models, W, x, y = tiny_set
    fr = explain.explanation_spread(models, W, _ds(x, y), p=0.2, n_dropout=8, batch=4)
    assert len(fr) == 10 and list(fr.i) == list(range(10))
    for c in ("spread_ensemble", "spread_laplace", "spread_dropout", "std_ensemble", "class_ensemble",
              "class_member0", "p_max_ensemble", "y"):
        assert c in fr
    assert (fr[["spread_ensemble", "spread_laplace", "spread_dropout"]] > 0).all().all()
    _, probs = explain.forward_members(models, x)
    p0, pe = explain.predicted_classes(probs)
    np.testing.assert_array_equal(fr.class_member0, p0.numpy())
    np.testing.assert_array_equal(fr.class_ensemble, pe.numpy())
    shuffled = explain.explanation_spread(models, W, _ds(x, (y + 1) % 4), p=0.2, n_dropout=8, batch=4)
    pd.testing.assert_frame_equal(fr.drop(columns="y"), shuffled.drop(columns="y"))
    same = explain.explanation_spread([models[0]] * 2, W[:1], _ds(x, y), p=0.2, n_dropout=8, batch=4)
    np.testing.assert_allclose(same.spread_ensemble, 0.0)  # identical members, one head sample: no spread
    np.testing.assert_allclose(same.spread_laplace, 0.0)
    with pytest.raises(ValueError, match="no dropout"):
        explain.explanation_spread(models, W, _ds(x, y))


def test_interval_table_pairs_each_map_with_the_reference_by_study():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 60
    base = rng.random(n)
    per_image = pd.concat([pd.DataFrame(dict(i=np.arange(n), method=m, metric="mass", value=v, target="predicted"))
                           for m, v in (("centre prior", base), ("CAM", base + 0.1), ("same", base))])
    tab = explain.interval_table(per_image, np.repeat(np.arange(20), 3), n_boot=200).set_index("method")
    assert tab.loc["CAM", "delta"] == pytest.approx(0.1) and tab.loc["CAM", "delta_low"] == pytest.approx(0.1)
    assert tab.loc["same", "delta"] == 0 and tab.loc["same", "delta_high"] == 0
    assert tab.loc["centre prior", "mean"] == pytest.approx(base.mean())
    assert np.isnan(tab.loc["centre prior"].get("delta", np.nan))


def test_strongest_baseline_is_chosen_per_metric_and_used_as_reference():
    import pandas as pd

    rows = []
    for m, mass, dele in (("centre prior", 0.3, 0.2), ("image intensity", 0.4, 0.3), ("CAM", 0.35, 0.1)):
        rows += [dict(i=i, method=m, metric="mass", value=mass, target="predicted") for i in range(6)]
        rows += [dict(i=i, method=m, metric="deletion_auc", value=dele, target="predicted") for i in range(6)]
    per_image = pd.DataFrame(rows)
    ref = explain.strongest_baselines(per_image)
    assert ref == {"mass": "image intensity", "deletion_auc": "centre prior"}
    tab = explain.interval_table(per_image, np.arange(6), reference=ref, n_boot=50).set_index(["method", "metric"])
    assert tab.loc[("CAM", "mass"), "delta"] == pytest.approx(-0.05)
    assert tab.loc[("CAM", "deletion_auc"), "reference"] == "centre prior"
