"""Rotations, corruptions, unfamiliar inputs, referral, the chapter's reading."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from utils import data, explain, posteriors
from utils.chapters import robustness
from utils.data import phantom, sources
from utils.evaluation import conformal, metrics
from utils.run import BatchPredictor

from .test_posteriors import FakeMember


def P(probs, samples=None):
    """One method's predictive on a batch, as `BatchPredictor` gives it (member 0's, or its samples')."""
    return posteriors.Predictions("m", np.asarray(probs)[None], member_samples=[] if samples is None else [samples])


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """Three untrained members (tests/test_posteriors.FakeMember) and their posteriors, as `Run.posteriors`
    holds them (`posteriors.Posteriors`, the package's own)."""
    folder = tmp_path_factory.mktemp("predictions")
    members = [FakeMember(folder, index=m, seed=m) for m in range(3)]
    return posteriors.Posteriors(lambda m: members[m], len(members))


@pytest.fixture(scope="module")
def predictor(fake_run):
    return BatchPredictor(fake_run, posteriors.labels(robustness=True), n_samples=20, seed=0)


def test_rotation_by_zero_is_the_identity_on_every_prediction(predictor):
    x = torch.randn(5, 1, 32, 32)
    assert robustness.rotate(x, 0) is x and robustness.rotate(x, 360) is x
    a, b = predictor(x), predictor(robustness.rotate(x, 0))
    for name in a:
        np.testing.assert_array_equal(a[name].probs, b[name].probs)
    assert list(a) == posteriors.labels(robustness=True)
    assert {"MAP", "temperature scaling", "Laplace, kron", "Laplace, kron, layer-wise prior", "deep ensemble"} == set(a)


def test_rotation_is_counter_clockwise_and_invertible_inside():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 0, 4] = 1.0  # top centre
    r = robustness.rotate(x, 90)
    assert r[0, 0, 4, 0] > 0.9  # moved to the left centre
    torch.testing.assert_close(robustness.rotate(r, -90)[..., 2:7, 2:7], x[..., 2:7, 2:7], atol=1e-5, rtol=0)


def test_ood_auroc_of_the_true_label_is_one_and_of_a_constant_one_half():
    assert robustness.ood_auroc(np.zeros(10), np.ones(7)) == 1.0
    assert robustness.ood_auroc(np.full(10, 0.3), np.full(7, 0.3)) == 0.5


def test_temperature_and_ensemble_predictions(predictor, fake_run):
    x = torch.randn(4, 1, 32, 32)
    p = predictor(x)
    with torch.no_grad():
        logits = predictor.models[0](x)
        member = torch.stack([torch.softmax(m(x), 1) for m in predictor.models])
    t = fake_run("temperature scaling").temperature
    np.testing.assert_allclose(p["MAP"].probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(p["temperature scaling"].probs, torch.softmax(logits / t, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(p["deep ensemble"].probs, member.mean(0).numpy(), atol=1e-6)
    assert p["deep ensemble"].samples.shape == (3, 4, 3)
    for name in ("Laplace, kron", "Laplace, kron, layer-wise prior"):
        assert p[name].samples.shape == (20, 4, 3)
    assert p["MAP"].samples is None and p["temperature scaling"].samples is None
    u = robustness.uncertainty(p["deep ensemble"])
    assert (u["mutual information"] >= -1e-9).all() and (u["entropy"] >= u["mutual information"] - 1e-9).all()


def test_batched_predictions_are_the_batches_concatenated(predictor):
    x = torch.randn(7, 1, 16, 16)
    whole, parts = predictor(x), predictor.batched(x, batch=3)
    for name in whole:
        np.testing.assert_allclose(parts[name].probs, whole[name].probs, atol=1e-6)
        assert (parts[name].samples is None) == (whole[name].samples is None)
        if whole[name].samples is not None:
            assert parts[name].samples.shape == whole[name].samples.shape
    np.testing.assert_allclose(parts["deep ensemble"].samples, whole["deep ensemble"].samples, atol=1e-6)


def test_sweeps_score_every_method_at_every_angle_and_corruption(predictor):
    x, y = torch.randn(6, 1, 16, 16), np.array([0, 1, 2, 0, 1, 2])
    keep = {}
    sweep = robustness.rotation_sweep(predictor, x, y, [0, 90], keep=keep)
    labels = posteriors.labels(robustness=True)
    assert len(sweep) == 2 * len(labels) and list(sweep.method[:len(labels)]) == labels
    assert {"accuracy", "ece", "nll", "brier", "entropy"} <= set(sweep.columns)
    pd.testing.assert_frame_equal(sweep, robustness.rotation_sweep(predictor, x, y, [0, 90]))  # keep changes nothing
    corr = robustness.corruption_sweep(predictor, x, y, seed=0, keep=keep)
    assert len(corr) == len(robustness.CORRUPTIONS) * 3 * len(labels)
    # the kept probabilities are the ones scored, keyed as conformal_under_shift's conditions
    assert list(keep)[:2] == [("rotation", 0), ("rotation", 90)] and ("blank", 3) in keep
    assert len(keep) == 2 + len(robustness.CORRUPTIONS) * 3
    again = predictor.batched(robustness.rotate(x, 90))
    for name in labels:
        assert keep[("rotation", 90)][name].samples is None or keep[("rotation", 90)][name].combination
        np.testing.assert_array_equal(keep[("rotation", 90)][name].probs, again[name].probs)
    np.testing.assert_array_equal(keep[("noise", 2)]["MAP"].probs,
                                  predictor.batched(robustness.corrupt(x, "noise", 2, 0))["MAP"].probs)
    by = corr.set_index(["corruption", "severity", "method"])
    assert np.isnan(by.loc[("noise", 1, "MAP"), "AUROC by mutual information"])
    assert 0 <= by.loc[("noise", 1, "deep ensemble"), "AUROC by mutual information"] <= 1


def test_corruptions():
    x = data.standardize(torch.rand(3, 1, 32, 32))
    x01 = x * data.PIXEL_STD + data.PIXEL_MEAN
    inv = robustness.corrupt(x, "contrast inversion", 3) * data.PIXEL_STD + data.PIXEL_MEAN
    torch.testing.assert_close(inv, 1 - x01, atol=1e-5, rtol=0)
    blank = robustness.corrupt(x, "blank", 2) * data.PIXEL_STD + data.PIXEL_MEAN
    torch.testing.assert_close(blank, torch.full_like(x, 0.5), atol=1e-6, rtol=0)
    dark = [float(robustness.corrupt(x, "low exposure", s).mean()) for s in (1, 2, 3)]
    assert dark[0] > dark[1] > dark[2]
    for kind in robustness.CORRUPTIONS:
        assert robustness.corrupt(x, kind, 1).shape == x.shape
    with pytest.raises(ValueError, match="unknown corruption"):
        robustness.corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        robustness.corrupt(x, "noise", 4)


def test_unfamiliar_parts_keep_the_layout_and_never_enter_the_training_index(tmp_path, small_phantom):
    root = phantom.ensure(tmp_path, 0, 6, seed=1, max_side=96, ood=True, workers=1, progress=False)
    with pytest.raises(data.DataError, match="unknown study type"):
        sources.load_index(root)  # the default loader refuses them
    idx = sources.load_index(root, extra_parts=phantom.OOD_PARTS)
    assert set(idx.body_part) <= set(phantom.OOD_PARTS) and set(idx.split) == {"valid"}
    assert (idx.label == 0).all() and idx.study.str.endswith("_negative").all()
    assert set(sources.load_index(small_phantom).body_part) <= set(phantom.PARTS)


def test_abnormality_labels_match_the_study_folders(small_phantom):
    idx, classes = data.task_targets(sources.load_index(small_phantom), "abnormality")
    assert classes == ["normal", "abnormal"]
    assert (idx.target == idx.study.str.endswith("_positive")).all() and idx.target.nunique() == 2


def test_rotation_resamples_as_the_training_augmentation():
    """Bilinear, black outside the frame: the same image as data.BatchAugment with only its rotation drawn."""
    x = data.standardize(torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(0)))
    for angle in (10.0, -30.0, 45.0):
        aug = data.BatchAugment(degrees=abs(angle), translate=0.0, scale=(1.0, 1.0), jitter=0.0, flip=False)
        u = torch.zeros(3, 7)
        u[:, 0] = float(np.sign(angle))
        torch.testing.assert_close(robustness.rotate(x, angle), aug(x, u=u), atol=1e-5, rtol=0)
    r = robustness.rotate(x, 45)
    torch.testing.assert_close(r[..., 0, 0], torch.full((3, 1), explain.BLACK), atol=1e-6, rtol=0)  # a corner
    assert not np.isin(r[..., 6:18, 6:18].numpy(), x.numpy()).all()  # interpolated values, not copied pixels


def test_bilinear_rotation_is_closer_to_the_rotated_smooth_image_than_nearest():
    h = 48
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(h) - (h - 1) / 2, indexing="ij")

    def image(xc, yc):  # a smooth pattern, in pixel coordinates about the centre
        return torch.sin(xc / 4.0) * torch.cos(yc / 5.0) + 0.3 * torch.sin((xc + yc) / 7.0)

    a = np.deg2rad(12.0)
    # counter-clockwise as displayed (y down): the output at (x, y) shows the input at R(a) (x, y) in these axes
    truth = image(np.cos(a) * xx - np.sin(a) * yy, np.sin(a) * xx + np.cos(a) * yy)
    inside = (xx ** 2 + yy ** 2) <= (h / 2 - 3) ** 2
    x = image(xx, yy)[None, None]
    bilinear = robustness.rotate(x, 12.0)[0, 0]
    nearest = TF.rotate(x, 12.0, interpolation=TF.InterpolationMode.NEAREST, fill=explain.BLACK)[0, 0]
    err_b, err_n = (bilinear - truth)[inside].abs().mean(), (nearest - truth)[inside].abs().mean()
    assert err_b < 0.5 * err_n, (err_b, err_n)
    assert robustness.rotate(x, 0) is x


def test_ood_intervals_agree_with_the_point_auroc_and_pair_against_map_entropy():
    rng = np.random.default_rng(0)
    p_in = metrics.softmax(rng.normal(0, 3, (120, 4)))
    p_out = metrics.softmax(rng.normal(0, 1, (60, 4)))
    pin = {"MAP": P(p_in), "other": P(p_in, np.stack([p_in, p_in]))}
    pout = {"MAP": P(p_out), "other": P(p_out, np.stack([p_out, p_out]))}
    g_in, g_out = np.repeat(np.arange(40), 3), np.repeat(np.arange(30), 2)  # the same ids in both: kept apart
    tab = robustness.ood_intervals(pin, pout, g_in, g_out, n_boot=300).set_index(["method", "score"])
    want = robustness.ood_auroc(metrics.entropy(p_in), metrics.entropy(p_out))
    assert tab.loc[("MAP", "entropy"), "auroc"] == pytest.approx(want)
    assert tab.loc[("MAP", "entropy"), "low"] <= want <= tab.loc[("MAP", "entropy"), "high"]
    same = tab.loc[("other", "entropy")]  # identical scores: a paired difference of exactly zero
    assert same.delta_vs_map_entropy == 0 and same.delta_low == 0 and same.delta_high == 0
    assert ("other", "mutual information") in tab.index


def test_paired_vs_reference_is_zero_against_itself_and_matches_the_metric():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    a = metrics.softmax(rng.normal(0, 2, (90, 3)))
    pred = {"MAP": P(a), "copy": P(a.copy()), "other": P(metrics.softmax(rng.normal(0, 1, (90, 3))))}
    tab = robustness.paired_vs(pred, y, np.repeat(np.arange(30), 3), n_boot=200).set_index("method")
    assert tab.loc["MAP", "ece"] == pytest.approx(metrics.ece(a, y))
    assert tab.loc["copy", "delta_nll"] == 0 and tab.loc["copy", "delta_nll_low"] == 0
    assert tab.loc["other", "delta_nll"] == pytest.approx(metrics.nll(pred["other"].probs, y) - metrics.nll(a, y))


def test_ood_table_is_the_point_auroc_by_each_score():
    rng = np.random.default_rng(3)
    p_in, p_out = metrics.softmax(rng.normal(0, 3, (50, 3))), metrics.softmax(rng.normal(0, 1, (40, 3)))
    tab = robustness.ood_table({"MAP": P(p_in)}, {"MAP": P(p_out)}).set_index("method")
    assert tab.loc["MAP", "AUROC by entropy"] == pytest.approx(
        robustness.ood_auroc(metrics.entropy(p_in), metrics.entropy(p_out)))


def test_small_tables_of_the_notebook():
    ood = pd.DataFrame(dict(body_part=["KNEE", "KNEE", "FOOT"], study_id=[1, 1, 2]))
    assert robustness.unfamiliar_note(ood, 3) == "unfamiliar parts: 3 images (knee 2, foot 1)"
    pred = {"MAP": P(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]))}
    said = robustness.predicted_classes(pred, ["a", "b"])
    assert said.loc["a", "MAP"] == 0.75 and said.loc["b", "MAP"] == 0.25
    x = torch.randn(2, 1, 8, 8)
    mx, my = robustness.mixed_test_set(x, np.array([0, 1]))
    assert mx.shape == (6, 1, 8, 8) and list(my) == [0, 1, 0, 1, 0, 1]
    torch.testing.assert_close(mx[:2], x)


def test_referral_table_reads_the_curve_at_all_and_at_80_percent():
    labels = np.array([0] * 10)
    probs = np.tile([0.9, 0.1], (10, 1))
    probs[[8, 9]] = [0.45, 0.55]  # the two least certain images are also the two wrong ones
    curves = robustness.referral_curves({"m": P(probs)}, labels)
    row = robustness.referral_table(curves)["m"]
    assert row["all"] == pytest.approx(0.8) and row["keep80"] == pytest.approx(1.0)
    assert row["aurc"] == pytest.approx(curves["m"]["aurc"])


def test_verdict_reads_the_interval_of_a_difference():
    assert robustness.verdict(0.01, 0.05) == "better" and robustness.verdict(-0.05, -0.01) == "worse"
    assert robustness.verdict(0.01, 0.05, higher_is_better=False) == "worse"
    assert robustness.verdict(-0.05, -0.01, higher_is_better=False) == "better"
    assert robustness.verdict(-0.01, 0.02) == "no difference shown" and robustness.verdict(0, 0) == "no difference shown"


def _reading_tables(layerwise: bool):
    methods = ["MAP", "temperature scaling", "Laplace, kron"] + (["Laplace, kron, layer-wise prior"] if layerwise
                                                                  else []) + ["deep ensemble"]
    at90 = []
    for m in methods:
        row = dict(method=m, accuracy=0.5, accuracy_low=0.45, accuracy_high=0.55, ece=0.2, ece_low=0.15,
                   ece_high=0.25, nll=1.5, nll_low=1.4, nll_high=1.6)
        if m != "MAP":
            row.update(delta_accuracy=0.0, delta_accuracy_low=-0.01, delta_accuracy_high=0.01,
                       delta_ece=-0.05, delta_ece_low=-0.08, delta_ece_high=-0.02,  # lower ECE: better
                       delta_nll=0.1, delta_nll_low=0.05, delta_nll_high=0.15)  # higher NLL: worse
        at90.append(row)
    ood = [dict(method="MAP", score="entropy", auroc=0.8057, low=0.7727, high=0.8359, delta_vs_map_entropy=0.0,
                delta_low=0.0, delta_high=0.0)]
    for m in methods[1:]:
        for s in ("entropy",) + (("mutual information",) if m != "temperature scaling" else ()):
            ood.append(dict(method=m, score=s, auroc=0.85, low=0.8, high=0.9, delta_vs_map_entropy=0.05,
                            delta_low=0.02, delta_high=0.08))
    abn = pd.DataFrame([{"method": m, "study AUROC": 0.66199, "AUROC low": 0.60128, "AUROC high": 0.71747,
                         "study kappa": 0.10698, "kappa low": 0.0264, "kappa high": 0.1871} for m in methods])
    return pd.DataFrame(at90), pd.DataFrame(ood), abn


def test_reading_states_the_numbers_and_the_verdicts():
    at90, ood, _ = _reading_tables(layerwise=False)
    text = " ".join(robustness.reading("phantom", at90, ood).split())
    assert "(data: phantom;" in text
    assert "accuracy 50.0 [45.0, 55.0] %" in text and "ECE 20.0 [15.0, 25.0] %" in text
    assert "accuracy differs by 0.0 [-1.0, 1.0] points (no difference shown)" in text
    assert "ECE by -5.0 [-8.0, -2.0] points (better)" in text
    assert "NLL by 0.100 [0.050, 0.150] nats (worse)" in text
    assert "AUROC 0.81 [0.77, 0.84]" in text and "+0.050 [+0.020, +0.080] (better)" in text
    assert "layer-wise" not in text and "abnormal" not in text


def test_reading_adds_the_layerwise_prior_where_the_tables_hold_it():
    at90, ood, _ = _reading_tables(layerwise=True)
    text = " ".join(robustness.reading("phantom", at90, ood).split())
    assert "With the layer-wise prior, the Laplace predictive's ECE differs by -5.0 [-8.0, -2.0] points (better)" in text
    assert "with the layer-wise prior, its entropy +0.050 [+0.020, +0.080] (better)" in text


# --------------------------------------------------------------------------- conformal sets under shift


def _exchangeable(rng, n, c=4, scale=2.5):
    p = metrics.softmax(rng.normal(0, scale, (n, c)))
    y = (np.cumsum(p, 1) < rng.uniform(size=(n, 1))).sum(1).clip(max=c - 1)
    return p, y


@pytest.fixture(scope="module")
def shift_case():
    """Validation and test images drawn alike (exchangeable), a single-model method stored per member (member 0 is
    the one used) and an ensemble, a 'rotated' condition whose probabilities point at the wrong class (the classes
    rolled by one), so its labels no longer fit the clean threshold, and a 'noise' one with flat probabilities."""
    rng = np.random.default_rng(0)
    p, y = _exchangeable(rng, 1400, c=8, scale=6)
    pv, yv, pt, yt = p[:600], y[:600], p[600:], y[600:]
    noise = metrics.softmax(rng.normal(0, 1, (2, 600, 8)))
    val = {"MAP": posteriors.Predictions("MAP", np.stack([pv, *noise])), "deep ensemble": P(pv)}
    test = {"MAP": P(pt), "deep ensemble": P(pt)}
    rolled = {k: P(np.roll(pt, 1, axis=1)) for k in test}
    flat = {k: P(np.full_like(pt, 1 / 8)) for k in test}
    shifted = {("clean", 0): test, ("rotation", 0): test, ("rotation", 90): rolled, ("noise", 3): flat}
    groups = np.repeat(np.arange(400), 2)
    tab = robustness.conformal_under_shift(val, yv, shifted, yt, groups, 0.1, n_boot=300, seed=4)
    return SimpleNamespace(pv=pv, yv=yv, pt=pt, yt=yt, rolled=rolled, groups=groups, tab=tab)


def test_conformal_under_shift_clean_rows_are_coverage_tables_overall_row(shift_case):
    c, tab = shift_case, shift_case.tab
    assert len(tab) == 2 * 2 * 4  # methods x scores (LAC, RAPS) x conditions
    assert list(tab.columns) == ["method", "score", "alpha", "shift", "level", "qhat", "n", "coverage",
                                 "coverage_low", "coverage_high", "band_low", "band_high", "size", "size_low",
                                 "size_high", "empty"]
    # the band exchangeable images would give, from the calibration split's size (not the line at 1 - alpha)
    assert (tab.band_low.unique(), tab.band_high.unique()) == tuple(
        [v] for v in conformal.coverage_band(len(c.yv), len(c.yt), 0.1))
    by = tab.set_index(["method", "score", "shift", "level"])
    for method in ("MAP", "deep ensemble"):
        for score in ("lac", "raps"):
            sets, qhat = conformal.split_conformal(c.pv, c.yv, c.pt, 0.1, score, seed=4)
            want = conformal.coverage_table(sets, c.yt, c.groups, n_boot=300, seed=4, intervals="overall").iloc[0]
            for cond in (("clean", 0), ("rotation", 0)):  # angle 0 is the clean test set
                got = by.loc[(method, score, *cond)]
                assert got.qhat == qhat and got.n == len(c.yt)
                for col in ("coverage", "coverage_low", "coverage_high", "size", "size_low", "size_high", "empty"):
                    assert got[col] == pytest.approx(want[col], rel=1e-12, abs=1e-12), col
            # exchangeable: the clean coverage is near the target
            assert abs(by.loc[(method, score, "clean", 0), "coverage"] - 0.9) < 0.04


def test_conformal_under_shift_keeps_the_clean_calibration_threshold(shift_case):
    """The threshold comes from the clean calibration split (member 0's probabilities for a single-model method)
    and is kept under shift: the shifted coverage collapses, where a threshold recalibrated on the shifted
    images (which a deployed model does not have) would restore about 1 - alpha."""
    c, tab = shift_case, shift_case.tab
    for (method, score), g in tab.groupby(["method", "score"]):
        assert g.qhat.nunique() == 1
        assert g.qhat.iloc[0] == conformal.calibrate(c.pv, c.yv, 0.1, score, seed=4)
        shifted = g[g["shift"] == "rotation"].iloc[-1]
        assert shifted.level == 90
        sets = conformal.predict_sets(c.rolled[method].probs, g.qhat.iloc[0], score, seed=4)
        assert shifted.coverage == pytest.approx(sets[np.arange(len(c.yt)), c.yt].mean())
        assert shifted.coverage_high < 0.6
        half = len(c.yt) // 2  # recalibrating on half of the shifted images covers the other half
        re_sets, _ = conformal.split_conformal(c.rolled[method].probs[:half], c.yt[:half],
                                               c.rolled[method].probs[half:], 0.1, score, seed=4)
        recal = re_sets[np.arange(len(c.yt) - half), c.yt[half:]].mean()
        assert recal > 0.85 and recal - shifted.coverage > 0.3


def test_conformal_under_shift_summary_reading_and_figure(shift_case):
    import matplotlib

    matplotlib.use("Agg")
    tab = shift_case.tab
    t = robustness.conformal_shift_table(tab).set_index(["method", "score"])
    assert t.loc[("MAP", "LAC"), "target"] == "0.90"
    assert "rotated 90°: coverage" in t.columns and t.loc[("MAP", "RAPS"), "worst corruption"] == "noise, severity 3"
    r = tab[(tab.method == "MAP") & (tab.score == "lac") & (tab["shift"] == "rotation") & (tab.level == 90)].iloc[0]
    want = f"{r.coverage:.3f} [{r.coverage_low:.3f}, {r.coverage_high:.3f}]"
    assert t.loc[("MAP", "LAC"), "rotated 90°: coverage"] == want
    text = " ".join(robustness.conformal_shift_reading(tab).split())
    assert "**LAC**" in text and "**RAPS**" in text and "Rotated by 90 degrees" in text
    assert f"MAP {want} ({r['size']:.2f})" in text
    w = tab[(tab.method == "MAP") & (tab.score == "lac") & (tab["shift"] == "noise")].iloc[0]
    assert w["empty"] == 1 and w.coverage == 0  # flat probabilities: no class reaches the LAC threshold
    assert f"MAP 0.000 [0.000, 0.000] (0.00; 100 % empty; noise, severity 3)" in text
    assert "In 4 of 4 shifted method-condition pairs coverage lies below the band" in text  # angle 0 not counted
    lo, hi = conformal.coverage_band(len(shift_case.yv), len(shift_case.yt), 0.1)
    assert f"would cover between {lo:.3f} and {hi:.3f}" in text
    res = robustness.conformal_shift_results(tab, 300)
    assert res["alpha"] == 0.1 and res["scores"] == ["lac", "raps"] and len(res["rows"]) == len(tab)
    assert {"method", "score", "shift", "level", "coverage", "coverage_low", "size", "qhat"} <= set(res["rows"][0])
    fig = robustness.conformal_shift_figure(tab)
    assert len(fig.axes) == 2 * 2  # (rotation, noise) x (coverage, size)
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------- the chapter's figures

METHODS = ["MAP", "temperature scaling", "Laplace, kron", "deep ensemble"]


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _every_point_inside(fig):
    """Every finite point of every line (curves, markers, error-bar caps) lies within its axes' y-limits."""
    for ax in fig.axes:
        lo, hi = sorted(ax.get_ylim())
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), float)
            y = y[np.isfinite(y)]
            if line.get_transform() == ax.transData and len(y):  # not the axhline/axvline kind
                assert lo <= y.min() and y.max() <= hi, (ax.get_title(), line.get_label(), lo, hi, y.min(), y.max())


def test_rotation_figure_legend_covers_no_panel(plt):
    angles = np.arange(-180, 181, 30)
    sweep = pd.DataFrame([dict(method=m, angle=a, accuracy=0.65 + 0.24 * np.exp(-(a / 40) ** 2), ece=0.05,
                               nll=1 - 0.6 * np.exp(-(a / 40) ** 2), entropy=0.7) for m in METHODS for a in angles])
    fig = robustness.rotation_figure(sweep)
    fig.canvas.draw()
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    box = fig.legends[0].get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == METHODS
    _every_point_inside(fig)


def test_corruption_figure_shows_every_curve_whole(plt):
    kinds = ["noise", "low exposure", "blank"]
    corr = pd.DataFrame([dict(corruption=k, method=m, severity=s, accuracy=0.57 + 0.004 * i * s,
                              **{"AUROC by entropy": (0.12 if k == "blank" and s == 1 else 0.2 if k == "low exposure"
                                                      else 0.6) + 0.05 * i})
                         for k in kinds for i, m in enumerate(METHODS) for s in (1, 2, 3)])
    fig = robustness.corruption_figure(corr)
    fig.canvas.draw()
    _every_point_inside(fig)  # the fixed AUROC axis (0.3 to 1.02) cut the curves below 0.3 off
    lo, hi = fig.axes[len(kinds)].get_ylim()  # a margin, not a wide fixed range
    assert 0.05 < lo < 0.12 and 0.35 < hi < 0.8
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    box = fig.legends[0].get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_stability_figure_shows_every_correlation_and_error_bar(plt):
    angles = np.arange(-180, 181, 30)
    stab = pd.DataFrame([dict(method=m, angle=a, correlation=0.8 * np.cos(np.radians(a)), se=0.05)
                         for m in METHODS[:2] for a in angles])
    fig = robustness.stability_figure(stab)
    fig.canvas.draw()
    _every_point_inside(fig)  # the fixed axis (-0.2 to 1.02) cut the anti-correlated angles off
