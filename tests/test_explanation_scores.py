"""Scores of explanations: against masks and without them on hand-made inputs, baselines, the randomisation
check, spread over samples and the test set; nothing explained may depend on the true label."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from utils import data, explain, posteriors
from utils.chapters import explanations
from utils.data import sources
from utils.evaluation import evidence
from utils.explain import scores as explanation_scores
from utils.models.networks import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny tensors


# --------------------------------------------------------------------------- scores against masks and without


def test_pointing_game_relevance_mass_and_iou_by_hand():
    maps = torch.tensor([[[0.0, 1.0], [3.0, 0.0]], [[5.0, 1.0], [-2.0, 0.0]]])
    masks = torch.tensor([[[0, 0], [1, 0]], [[0, 1], [1, 1]]], dtype=torch.bool)
    torch.testing.assert_close(explanation_scores.pointing_game(maps, masks), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(explanation_scores.relevance_mass(maps, masks), torch.tensor([0.75, 1 / 6]))
    torch.testing.assert_close(explanation_scores.topk_iou(maps, masks, share=0.25), torch.tensor([1.0, 0.0]))


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
    a = explanation_scores.deletion_insertion(QuadrantNet(), x, oracle, 1)
    b = explanation_scores.deletion_insertion(QuadrantNet(), x, rnd, 1)
    assert a["deletion_auc"].mean() < b["deletion_auc"].mean() - 0.05
    assert a["insertion_auc"].mean() > b["insertion_auc"].mean() + 0.05
    np.testing.assert_allclose(a["deletion"][:, 0], a["insertion"][:, -1])  # nothing removed = all revealed


def test_masks_are_letterboxed_like_their_images(small_phantom):
    idx = sources.load_index(small_phantom)
    p = idx.path.iloc[0]
    img = data.letterbox(data.read_image(p), 40)
    bones, lesion = data.masks_for([p], 40)
    assert bones.shape == (1, 40, 40) and lesion.dtype == np.uint8
    assert (img[bones[0]] > 0).all()  # the mask lies on the image, not on the padding


# --------------------------------------------------------------------------- spread over samples


def test_spread_scores_by_hand():
    maps = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[3.0, 1.0]], [[2.0, 2.0]]]])  # S=2, B=2, 1 x 2
    sc = explanation_scores.spread_scores(maps)
    s = np.sqrt(2.0)  # std of (1, 3) with ddof 1
    np.testing.assert_allclose(sc["std"], [s, 0.0], rtol=1e-6)
    np.testing.assert_allclose(sc["relative"], [s / 2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(explanation_scores.spread_scores(maps * -5)["relative"], sc["relative"], rtol=1e-6)


# --------------------------------------------------------------------------- baselines


def test_centre_prior_is_a_centred_gaussian_of_the_image_size():
    m = explanation_scores.centre_prior(2, 61, 31, sigma_frac=0.2)
    assert m.shape == (2, 61, 31) and torch.equal(m[0], m[1])
    assert m[0, 30, 15] == 1.0 and m[0].argmax() == 30 * 31 + 15
    torch.testing.assert_close(m[0, 30 + 12, 15], torch.tensor(np.exp(-0.5 * (12 / 12.2) ** 2), dtype=torch.float32))
    torch.testing.assert_close(m[0], m[0].flip(0).flip(1))


def test_class_mask_prior_is_the_training_mean_bone_mask_of_the_target_class():
    bones = np.zeros((4, 2, 2), np.uint8)
    bones[0, 0, 0] = bones[1, 0, 0] = bones[1, 1, 1] = bones[2, 0, 1] = 1
    mean = explanation_scores.mean_class_masks(bones, np.array([0, 0, 2, 2]), 3)
    torch.testing.assert_close(mean, torch.tensor([[[1.0, 0], [0, 0.5]], [[0, 0], [0, 0]], [[0, 0.5], [0, 0]]]))
    prior = explanation_scores.class_mask_prior(mean, torch.tensor([2, 0]))
    torch.testing.assert_close(prior, mean[[2, 0]])
    assert explanation_scores.class_mask_prior(mean, torch.tensor([0]), (4, 4)).shape == (1, 4, 4)


def test_intensity_and_edge_maps_are_the_image_and_its_sobel_edges():
    from skimage.filters import sobel

    torch.manual_seed(5)
    img = torch.rand(3, 1, 20, 24)
    x = data.standardize(img)
    torch.testing.assert_close(explanation_scores.intensity_map(x), img[:, 0])
    edges = explanation_scores.edge_map(x)
    for b in range(3):
        np.testing.assert_allclose(edges[b].numpy(), sobel(img[b, 0].numpy().astype(np.float64)), atol=1e-5)
    maps = explanation_scores.baseline_maps(x, torch.tensor([0, 1, 0]), torch.rand(2, 20, 24), seed=1)
    assert list(maps) == list(explanation_scores.BASELINES) and all(m.shape == (3, 20, 24) for m in maps.values())
    assert "class-mask prior" not in explanation_scores.baseline_maps(x)  # needs the training masks and a class
    torch.testing.assert_close(maps["random (reference)"], explanation_scores.random_map(3, 20, 24, seed=1))


# --------------------------------------------------------------------------- randomisation check


def test_map_similarity_is_scipy_spearman_and_ssim_and_ignores_the_sign(net):
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    torch.manual_seed(6)
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    b[0] = a[0] ** 2 + 0.1 * b[0]  # correlated
    b[1, :8] = 0.5  # ties
    sim = explanation_scores.map_similarity(a, b)
    for i in range(3):
        assert sim["spearman"][i] == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-9)
        an, bn = (explain.normalize(m[i]).double().numpy() for m in (a, b))
        assert sim["ssim"][i] == pytest.approx(structural_similarity(an, bn, data_range=1.0), abs=1e-9)
    neg = explanation_scores.map_similarity(a, -a)
    np.testing.assert_allclose(neg["spearman"], -1.0)
    np.testing.assert_allclose(neg["spearman_abs"], 1.0)  # a sign-flipped map is NOT a randomised one
    const = explanation_scores.map_similarity(a[:1], torch.zeros(1, 16, 16))
    assert const["spearman_abs"][0] == 0.0


def test_randomisation_stages_go_from_the_head_down_with_batch_norm_in_its_block(net):
    stages = explanation_scores.randomisation_stages(net)
    assert stages[0] == ("fc", [net.fc])
    assert [n for n, _ in stages[1:]] == ["features.14", "features.11", "features.7", "features.3", "features.0"]
    assert all(isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.BatchNorm2d) for _, m in stages[1:])


def test_randomisation_check_frame_cascading_and_independent(net):
    x = torch.randn(3, 1, 32, 32)
    df = explanation_scores.randomisation_check(net, x, n_seeds=5, seed=0)
    assert set(df["mode"]) == {"cascading", "independent"} and set(df.seed) == set(range(5))
    assert len(df) == 2 * 5 * len(explanation_scores.randomisation_stages(net))
    for col in ("stage", "step", "spearman_abs", "spearman_abs_se", "ssim", "ssim_se", "spearman", "n"):
        assert col in df
    first = df[df.step == 0].set_index(["seed", "mode"]).spearman.unstack()
    np.testing.assert_allclose(first.cascading, first.independent)  # the same re-initialised head
    assert (df.spearman_abs >= df.spearman.abs() - 1e-12).all()
    summary = explanation_scores.randomisation_summary(df)
    assert len(summary) == 2 * len(explanation_scores.randomisation_stages(net)) and "ssim_sd_seeds" in summary
    # seeded; net untouched
    again = explanation_scores.randomisation_check(net, x, n_seeds=1, seed=0, modes=("independent",))
    np.testing.assert_allclose(again.spearman.to_numpy(), df[(df.seed == 0) & (df["mode"] == "independent")].spearman)
    # a CAM depends on the weights: full cascading randomisation kills it
    assert explanation_scores.randomisation_passes(df)


def test_randomisation_check_fails_explainers_that_ignore_the_weights(net):
    x = torch.randn(3, 1, 32, 32)
    df = explanation_scores.randomisation_check(net, x, explainer=lambda m, xx, t: explanation_scores.intensity_map(xx),
                                                n_seeds=5, modes=("cascading",))
    np.testing.assert_allclose(df.spearman_abs, 1.0)
    np.testing.assert_allclose(df.ssim, 1.0)
    assert not explanation_scores.randomisation_passes(df)

    calls = []

    def flipping(m, xx, t):  # the original map, negated after the first call: rho = -1, not randomised
        calls.append(1)
        return explain.CAM(net)(xx, t) * (1 if len(calls) == 1 else -1)

    df = explanation_scores.randomisation_check(net, x, explainer=flipping, n_seeds=5, modes=("cascading",))
    np.testing.assert_allclose(df.spearman, -1.0, atol=1e-9)
    np.testing.assert_allclose(df.spearman_abs, 1.0, atol=1e-9)
    assert not explanation_scores.randomisation_passes(df, metrics=("spearman_abs",))


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
    per = explanation_scores.score_test_set(models, W, _ds(x, y), **kw)
    assert list(per.columns) == ["i", "method", "metric", "value", "target"] and set(per.target) == {"predicted"}
    assert set(explanation_scores.BASELINES) <= set(per.method) and "MAP CAM (member 0)" in set(per.method)
    assert not any("spread" in m for m in per.method)
    cam = per[per.method == "MAP CAM (member 0)"]
    assert sorted(cam[cam.metric == "mass"].i) == list(range(10))
    # deletion curves on a seeded random sample, not the first images (an index sorted by body part)
    assert sorted(cam[cam.metric == "deletion_auc"].i) == list(explanation_scores.deletion_sample(10, 5, seed=0))
    assert sorted(cam[cam.metric == "deletion_auc"].i) != list(range(5))
    prior = per[(per.method == "class-mask prior") & (per.metric == "mass")]
    np.testing.assert_allclose(prior.value, 1.0)  # it explains member 0's predicted class

    shuffled = explanation_scores.score_test_set(models, W, _ds(x, (y + 1) % 4), **kw)  # labels play no part
    pd.testing.assert_frame_equal(per, shuffled)

    table = explanation_scores.summarise(per)
    assert list(table.method) == list(dict.fromkeys(per.method))
    for k in explanation_scores.METRICS:
        assert k in table and k + "_se" in table
    row = table.set_index("method").loc["centre prior"]
    sel = per[(per.method == "centre prior") & (per.metric == "iou")].value
    assert row.iou == pytest.approx(sel.mean()) and row.iou_se == pytest.approx(sel.std() / np.sqrt(10))

    true = explanation_scores.score_test_set(models, W, _ds(x, y), masks=(bones, None), n_deletion=0, batch=4)
    assert set(true.target) == {"predicted"}
    true = explanation_scores.score_test_set(models, W, _ds(x, y), masks=(bones, None), n_deletion=0, batch=4,
                                             target="true")
    assert set(true.target) == {"true"} and all(m.endswith(" [true class]") for m in true.method)


def test_deletion_with_shared_ends_equals_deletion_alone(tiny_set):
    models, _, x, y = tiny_set
    maps = torch.rand(10, 32, 32)
    a = explanation_scores.deletion_insertion(models[0], x, maps, y, steps=5)
    b = explanation_scores.deletion_insertion(models[0], x, maps, y, steps=5,
                                              ends=explanation_scores.curve_ends(models[0], x, y))
    np.testing.assert_allclose(a["deletion"], b["deletion"])
    with torch.no_grad():
        p = torch.softmax(models[0](x), 1).gather(1, y[:, None])[:, 0].numpy()
    np.testing.assert_allclose(a["deletion"][:, 0], p, rtol=1e-5)


def test_explanation_spread_per_image_for_ensemble_laplace_and_dropout(tiny_set):
    models, W, x, y = tiny_set
    col = explanation_scores.spread_column
    heads = {"ens": None, "lap": W, "drop": posteriors.mc_dropout_heads(models[0].fc.weight.detach(), 0.2, 8, seed=0)}
    fr = explanation_scores.explanation_spread(models, heads, _ds(x, y), batch=4)
    assert len(fr) == 10 and list(fr.i) == list(range(10))
    for c in (col("ens"), col("lap"), col("drop"), col("ens", "std"), "class_ensemble", "class_member0",
              "p_max_ensemble", "y"):
        assert c in fr
    assert (fr[[col("ens"), col("lap"), col("drop")]] > 0).all().all()
    _, probs = explain.forward_members(models, x)
    p0, pe = explain.predicted_classes(probs)
    np.testing.assert_array_equal(fr.class_member0, p0.numpy())
    np.testing.assert_array_equal(fr.class_ensemble, pe.numpy())
    # the members' maps explain the ensemble's class, the head samples member 0's: by hand for one image
    fmaps, _ = explain.forward_members(models, x[:1])
    maps = explain.upsample(explain.cam_samples(fmaps[0], W, p0[:1]), x.shape[-2:])
    assert fr[col("lap")][0] == pytest.approx(float(explanation_scores.spread_scores(maps)["relative"][0]), rel=1e-5)
    shuffled = explanation_scores.explanation_spread(models, heads, _ds(x, (y + 1) % 4), batch=4)
    pd.testing.assert_frame_equal(fr.drop(columns="y"), shuffled.drop(columns="y"))
    same = explanation_scores.explanation_spread([models[0]] * 2, {"ens": None, "lap": W[:1]}, _ds(x, y), batch=4)
    np.testing.assert_allclose(same[col("ens")], 0.0)  # identical members, one head sample: no spread
    np.testing.assert_allclose(same[col("lap")], 0.0)


def test_interval_table_pairs_each_map_with_the_reference_by_study():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 60
    base = rng.random(n)
    per_image = pd.concat([pd.DataFrame(dict(i=np.arange(n), method=m, metric="mass", value=v, target="predicted"))
                           for m, v in (("centre prior", base), ("CAM", base + 0.1), ("same", base))])
    tab = explanation_scores.interval_table(per_image, np.repeat(np.arange(20), 3), n_boot=200).set_index("method")
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
    ref = explanation_scores.strongest_baselines(per_image)
    assert ref == {"mass": "image intensity", "deletion_auc": "centre prior"}
    tab = explanation_scores.interval_table(per_image, np.arange(6), reference=ref,
                                            n_boot=50).set_index(["method", "metric"])
    assert tab.loc[("CAM", "mass"), "delta"] == pytest.approx(-0.05)
    assert tab.loc[("CAM", "deletion_auc"), "reference"] == "centre prior"


# --------------------------------------------------------------------------- notebook 05's steps


def test_example_images_are_normal_images_of_different_body_parts():
    class Fake:
        index = pd.DataFrame(dict(rel_path=[f"r{i}" for i in range(12)], label=[0, 1] * 6,
                                  body_part=np.repeat(["ELBOW", "HAND", "WRIST", "FOREARM", "HUMERUS", "FINGER"], 2)))
        targets = np.arange(12) % 5

        def __getitem__(self, i):
            return torch.full((1, 4, 4), float(i)), int(self.targets[i])

    rows, x, y = explanations.example_images(Fake(), n=5, seed=0)
    assert len(rows) == 5 and x.shape == (5, 1, 4, 4)
    assert (Fake.index.label.iloc[rows] == 0).all() and Fake.index.body_part.iloc[rows].nunique() == 5
    assert x[:, 0, 0, 0].tolist() == [float(r) for r in rows] and y.tolist() == Fake.targets[rows].tolist()
    assert explanations.example_images(Fake(), n=5, seed=0)[0] == rows  # seeded


def test_laplace_identity_holds_to_rounding_on_a_tiny_random_model(net):
    torch.manual_seed(8)
    x = torch.randn(3, 1, 32, 32)
    w = net.fc.weight.detach()
    target = torch.tensor([0, 1, 3])
    W = w + 0.3 * torch.randn(6, *w.shape)
    ident = explanations.laplace_identity(net, x, W, target)
    assert set(ident) == {"mean_cam_minus_cam_of_mean_head", "cam_of_mean_head_minus_map_cam",
                          "per_pixel_spread_over_map", "images"} and ident["images"] == 3
    assert "on these 3 example images" in explanations.identity_line(ident, 6)  # not the test split's number
    assert ident["mean_cam_minus_cam_of_mean_head"] < 1e-5  # an identity: float32 rounding only
    assert ident["cam_of_mean_head_minus_map_cam"] > 1e-3  # 6 samples: their mean head is not the MAP head
    assert ident["per_pixel_spread_over_map"] > 0
    E = W - w
    anti = explanations.laplace_identity(net, x, torch.cat([w + E, w - E]), target)
    assert anti["cam_of_mean_head_minus_map_cam"] < 1e-5  # antithetic draws: the MAP CAM exactly
    point = explanations.laplace_identity(net, x, w.expand(4, *w.shape), target)
    assert point["per_pixel_spread_over_map"] == pytest.approx(0.0, abs=1e-6)
    assert "2.0e-07" in explanations.identity_line(dict(ident, mean_cam_minus_cam_of_mean_head=2e-7), 6)


def test_randomisation_floor_is_the_cams_similarity_to_the_centre_prior_and_the_image(net):
    torch.manual_seed(9)
    x = torch.randn(4, 1, 32, 32)
    floor = explanations.randomisation_floor(net, x)
    with torch.no_grad():
        cam = explain.CAM(net)(x, net(x).argmax(1))
    expect = explanation_scores.map_similarity(cam, explanation_scores.intensity_map(x))["spearman_abs"].mean()
    assert list(floor) == ["centre prior", "image intensity"]
    assert floor["image intensity"] == pytest.approx(expect) and 0 <= floor["centre prior"] <= 1
    assert "0.50" in explanations.floor_line({"centre prior": 0.5, "image intensity": 0.25})


def _interval_rows():
    return pd.DataFrame([
        dict(method="centre prior", metric="pointing", mean=0.5, low=0.4, high=0.6),
        dict(method="MAP CAM (member 0)", metric="pointing", mean=0.8, low=0.7, high=0.9, reference="centre prior",
             delta=0.3, delta_low=0.2, delta_high=0.4),
        dict(method="MAP CAM (member 0)", metric="mass", mean=0.3, low=0.2, high=0.4, reference="image intensity",
             delta=-0.1, delta_low=-0.2, delta_high=-0.05),
        dict(method="ensemble CAM, mean", metric="pointing", mean=0.52, low=0.4, high=0.6, reference="centre prior",
             delta=0.02, delta_low=-0.05, delta_high=0.09),
        dict(method="ensemble CAM, mean", metric="mass", mean=0.35, low=0.25, high=0.45, reference="image intensity",
             delta=0.0, delta_low=-0.1, delta_high=0.1),
        dict(method="MAP CAM (member 0)", metric="deletion_auc", mean=0.2, low=0.15, high=0.25,
             reference="centre prior", delta=-0.1, delta_low=-0.15, delta_high=-0.05),  # lower is better
        dict(method="MAP CAM (member 0)", metric="insertion_auc", mean=0.6, low=0.5, high=0.7,
             reference="centre prior", delta=-0.05, delta_low=-0.1, delta_high=0.01),
        dict(method="ensemble CAM, mean", metric="deletion_auc", mean=0.25, low=0.2, high=0.3),
    ])


def test_versus_baseline_says_better_worse_or_not_different():
    t = _interval_rows()
    vs = explanations.versus_baseline
    assert vs(t, "MAP CAM (member 0)", "pointing") == \
        "0.800 [0.700, 0.900], better than the centre prior (+0.300 [+0.200, +0.400])"
    assert "worse than the image intensity (-0.100" in vs(t, "MAP CAM (member 0)", "mass")
    assert "no difference shown from the centre prior" in vs(t, "ensemble CAM, mean", "pointing")
    assert "better than the centre prior (-0.100" in vs(t, "MAP CAM (member 0)", "deletion_auc")  # lower is better
    assert vs(t, "ensemble CAM, mean", "deletion_auc") == "0.25"  # no paired difference
    assert vs(t, "centre prior", "pointing") == "0.50"


def test_shown_tables_pivot_the_intervals_and_the_differences():
    scores, deltas = explanations.shown_tables(_interval_rows())
    assert list(scores.index) == ["centre prior", "MAP CAM (member 0)", "ensemble CAM, mean"]
    assert scores.loc["MAP CAM (member 0)", "pointing"] == "0.800 [0.700, 0.900]"
    assert deltas.loc["MAP CAM (member 0)", "mass"] == "-0.100 [-0.200, -0.050]"
    assert deltas.loc["centre prior", "pointing"] == "–"


def _predictors(rng, n=80, c=3):
    y = rng.integers(0, c, n)
    probs = rng.dirichlet(np.ones(c), n)
    samples = rng.dirichlet(np.ones(c), (4, n))
    return y, probs, samples


def test_flagging_tables_give_a_row_per_score_per_predictor():
    rng = np.random.default_rng(0)
    y, probs, samples = _predictors(rng)
    groups = np.arange(len(y)) // 2
    preds = {"deep ensemble": (samples.mean(0), samples, rng.random(len(y))),
             "Laplace, kron": (probs, samples, rng.random(len(y)))}
    t = explanations.flagging_tables(preds, y, groups, n_boot=50, seed=0)
    scores = ["1 - max p", "entropy", "mutual information", "explanation spread", explanations.COMBINED]
    assert len(t) == 2 * len(scores)
    assert t.groupby("predictor", sort=False).score.apply(list).to_dict() == {k: scores for k in preds}
    assert t.set_index(["predictor", "score"]).loc[("Laplace, kron", "entropy"), "delta"] != \
        t.set_index(["predictor", "score"]).loc[("Laplace, kron", "entropy"), "delta"]  # the reference: NaN
    assert (t[t.predictor == "Laplace, kron"].errors == int((probs.argmax(1) != y).sum())).all()


def test_flagging_inputs_take_member_0_of_single_model_methods():
    rng = np.random.default_rng(1)
    member = rng.dirichlet(np.ones(3), (5, 10))
    col = explanation_scores.spread_column
    spread = pd.DataFrame({col(k): rng.random(10) for k in ("deep ensemble", "MC dropout")})
    predictions = {"deep ensemble": posteriors.Predictions("deep ensemble", member, combination=True),
                   "MC dropout": posteriors.Predictions("MC dropout", member,
                                                        member_samples=[member[m:m + 2] for m in range(5)])}
    inp = explanations.flagging_inputs(predictions, spread)
    np.testing.assert_array_equal(inp["deep ensemble"][0], member.mean(0))
    np.testing.assert_array_equal(inp["deep ensemble"][1], member)
    np.testing.assert_array_equal(inp["deep ensemble"][2], spread[col("deep ensemble")])
    np.testing.assert_array_equal(inp["MC dropout"][0], member[0])
    np.testing.assert_array_equal(inp["MC dropout"][1], member[0:2])
    np.testing.assert_array_equal(inp["MC dropout"][2], spread[col("MC dropout")])


def _flags():
    rows = []
    for pred, errors, spread_delta in (("deep ensemble", 57, (-0.05, -0.08, -0.02)),
                                       ("Laplace, kron", 60, (0.01, -0.02, 0.04))):
        for score, auroc, d in (("entropy", 0.92, None), ("explanation spread", 0.88, spread_delta),
                                (explanations.COMBINED, 0.93, (0.004, -0.001, 0.009))):
            row = dict(predictor=pred, score=score, auroc=auroc, low=auroc - 0.03, high=auroc + 0.02, errors=errors)
            if d is not None:
                row.update(delta=d[0], delta_low=d[1], delta_high=d[2])
            rows.append(row)
    return pd.DataFrame(rows)


def test_flag_line_names_members_and_chooses_the_words():
    flags = _flags()
    ens = explanations.flag_line(flags, "deep ensemble", members=5)
    assert ens.startswith("deep ensemble (5 members, 57 errors): spread 0.880 [0.850, 0.900], worse than the "
                          "entropy's 0.920")
    assert "combined − entropy +0.0040 [-0.0010, +0.0090]" in ens
    lap = explanations.flag_line(flags, "Laplace, kron", members=5)
    assert lap.startswith("Laplace, kron (member 0, 60 errors)") and "not shown to differ from" in lap


def test_reading_states_the_numbers_and_the_right_words():
    rng = np.random.default_rng(2)
    rand = pd.DataFrame([dict(mode=mode, step=j, stage=s, seed=k, spearman_abs=abs(r), spearman=r, ssim=r / 2,
                              spearman_abs_se=0.01, ssim_se=0.01, spearman_se=0.01, n=64)
                         for mode in ("cascading", "independent")
                         for j, s in enumerate(("fc", "features.3", "features.0"))
                         for k in range(5) for r in [(-0.6 if j == 0 else 0.3 - 0.1 * j) + 0.01 * rng.random()]])
    text = explanations.reading(
        "phantom", _interval_rows(), _flags(),
        dict(mean_cam_minus_cam_of_mean_head=1e-7, cam_of_mean_head_minus_map_cam=0.02, per_pixel_spread_over_map=0.2),
        dict(estimate=0.23, low=0.22, high=0.24), rand, {"centre prior": 0.75, "image intensity": 0.48}, members=5)
    assert "data: phantom" in text
    assert "pointing game is 0.800 [0.700, 0.900], better than the centre prior" in text
    assert "mass 0.350 [0.250, 0.450], no difference shown from the image intensity" in text
    assert "Deletion (lower is better): MAP CAM 0.200 [0.150, 0.250], better than" in text
    assert "insertion: 0.600 [0.500, 0.700], no difference shown from" in text
    assert "1e-07 apart" in text and "0.23 [0.22, 0.24]" in text
    assert "(64 test images drawn at random, 5 seeds)" in text and "negative for every seed" in text
    assert "centred Gaussian is 0.75" in text and "intensity\n  0.48" in text
    assert "  - deep ensemble (5 members, 57 errors)" in text and "  - Laplace, kron (member 0, 60 errors)" in text
    # head alone 0.6 > floor 0.48? no: the floor is the higher of the two, 0.75: the map depends on the class weights
    assert "already brings the map to or below the similarity of maps blind" in text and "at or below that floor" in text
    low_floor = explanations.reading(
        "phantom", _interval_rows(), _flags(), dict(mean_cam_minus_cam_of_mean_head=1e-7,
        cam_of_mean_head_minus_map_cam=0.02, per_pixel_spread_over_map=0.2), dict(estimate=0.23, low=0.22, high=0.24),
        rand, {"centre prior": 0.1, "image intensity": 0.05}, members=5)
    assert "layout comes mostly from the features" in low_floor and "part of the layout survives" in low_floor
    no_masks = _interval_rows()
    no_masks = no_masks[~no_masks.metric.isin(["pointing", "mass"])]
    assert "bone masks" not in explanations.reading(
        "mura", no_masks, _flags(), dict(mean_cam_minus_cam_of_mean_head=0.0), dict(estimate=0, low=0, high=0),
        rand, {"centre prior": 0.7, "image intensity": 0.4}, members=5)


def test_the_abnormality_task_scores_maps_against_the_findings_of_images_that_show_one(tiny_set):
    models, W, x, y = tiny_set
    lesion = np.zeros((10, 32, 32), np.uint8)
    lesion[[1, 4, 7], 10:14, 10:14] = 2  # hardware in three images; the rest show no finding
    bones = np.ones((10, 32, 32), bool)
    assert explanation_scores.region_masks((bones, lesion), "bodypart")[0] is bones
    region, flags = explanation_scores.region_masks((bones, lesion), "abnormality")
    assert region.sum() == 3 * 16 and flags is lesion and explanation_scores.region_masks(None, "abnormality") is None
    per = explanation_scores.score_test_set(models, W, _ds(x, y), masks=(region, flags), n_deletion=0, batch=4)
    cam = per[(per.method == "MAP CAM (member 0)") & (per.metric == "mass")]
    assert sorted(cam.i) == [1, 4, 7]  # an image without a finding in view has nothing to point at


def test_the_abnormality_task_explains_the_abnormal_class_whatever_the_prediction(tiny_set):
    models, W, x, y = tiny_set
    assert explanations.scored_class("bodypart", ["a", "b"]) == "predicted"
    assert explanations.scored_class("abnormality", ["normal", "abnormal"]) == 1
    _, probs = explain.forward_members(models, x)
    t0, te = explain.explained_classes(2, probs, y)
    assert t0.tolist() == [2] * len(x) and te.tolist() == [2] * len(x)
    per = explanation_scores.score_test_set(models, W, _ds(x, y), masks=(np.ones((10, 32, 32), bool), None),
                                            n_deletion=0, batch=4, target=2)
    assert "MAP CAM (member 0)" in set(per.method) and (per.target == 2).all()


def test_the_scores_caption_and_reading_name_the_task_s_masks_and_class():
    body, abn = explanations.scores_caption("bodypart", 120), explanations.scores_caption("abnormality", 40)
    assert "bone masks" in body and "predicted class" in body and "over 120 test images" in body
    assert "bone" not in abn and "findings" not in abn.split("Against")[0] and "abnormal class" in abn
    assert "fracture, hardware, cast" in abn and "over 40 test images" in abn
    assert evidence.fmt_signed(-0.001) == "0.00" and evidence.fmt_signed(-0.012) == "-0.01"
    assert evidence.fmt_signed(0.2) == "+0.20" and evidence.fmt_signed(-0.04, 1) == "0.0"
