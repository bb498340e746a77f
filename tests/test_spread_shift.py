"""Explanation spread against entropy and mutual information for unfamiliar and shifted images (issue 23):
the scores per image, the paired AUROC differences, the partial association with errors, the Reading."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from utils.chapters import spread_shift as ss
from utils.evaluation import evidence, metrics
from utils.explain import methods
from utils.explain.scores import explanation_spread, spread_column
from utils.models.networks import build_model


@pytest.fixture(scope="module")
def members():
    out = []
    for seed in range(3):
        torch.manual_seed(seed)
        out.append(build_model("small", 4).eval())
    return out


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(11)
    return torch.randn(10, 1, 32, 32)


def test_the_spread_is_notebook_05s_ensemble_spread_and_the_entropies_the_members_mean(members, images):
    fr = ss.member_scores(members, images, batch=4)
    ref = explanation_spread(members, {"deep ensemble": None}, [(xi, 0) for xi in images], batch=3)
    np.testing.assert_allclose(fr[ss.SPREAD], ref[spread_column("deep ensemble")], rtol=1e-5)
    np.testing.assert_allclose(fr["spread_std"], ref[spread_column("deep ensemble", "std")], rtol=1e-5)
    np.testing.assert_array_equal(fr.predicted, ref.class_ensemble)
    _, probs = methods.forward_members(members, images)
    p = probs.double().numpy()
    np.testing.assert_allclose(fr[ss.ENTROPY], metrics.entropy(p.mean(0)), rtol=1e-6)
    np.testing.assert_allclose(fr[ss.MI], metrics.mutual_information(p), rtol=1e-5, atol=1e-9)
    assert (fr[ss.SPREAD] > 0).all()


def test_map_spread_is_spread_scores():
    from utils.explain.scores import spread_scores

    maps = torch.randn(4, 6, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    rel, std = ss.map_spread(maps)
    ref = spread_scores(maps)
    np.testing.assert_allclose(rel, ref["relative"], rtol=1e-5)
    np.testing.assert_allclose(std, ref["std"], rtol=1e-5)
    assert (ss.map_spread(maps[:1])[0] == 0).all() and (ss.map_spread(maps[:1])[1] == 0).all()


def test_identical_members_have_no_spread_and_no_mutual_information(members, images):
    fr = ss.member_scores([members[0]] * 3, images)
    np.testing.assert_allclose(fr[ss.SPREAD], 0.0, atol=1e-7)
    np.testing.assert_allclose(fr[ss.MI], 0.0, atol=1e-7)


def test_shifted_inputs_are_notebook_06s_rotation_and_noise(images):
    from utils.chapters import robustness

    out = ss.shifted_inputs(images, seed=3)
    assert list(out) == ["rotated 45°", "noise, severity 2"]
    torch.testing.assert_close(out["rotated 45°"], robustness.rotate(images, 45))
    torch.testing.assert_close(out["noise, severity 2"], robustness.corrupt(images, "noise", 2, 3))


def _frames(n=40, seed=0):
    rng = np.random.default_rng(seed)
    clean = pd.DataFrame({k: rng.random(n) for k in ss.SCORES})
    other = pd.DataFrame({k: rng.random(n) + 0.3 for k in ss.SCORES})
    return clean, other, np.repeat(np.arange(n // 2), 2)


def test_a_perfect_score_has_auroc_one_and_a_score_against_itself_a_zero_difference():
    clean, other, g = _frames()
    clean[ss.SPREAD], other[ss.SPREAD] = np.linspace(0, 1, 40), np.linspace(2, 3, 40)  # separates perfectly
    other[ss.MI], clean[ss.MI] = other[ss.ENTROPY], clean[ss.ENTROPY]  # MI a copy of the entropy
    for same in (True, False):
        t = ss.detection_rows(clean, other, g, g, same, n_boot=300).set_index("score")
        assert (t.loc[ss.SPREAD, ["auroc", "low", "high"]] == 1.0).all()
        assert (t.loc[ss.ENTROPY, ["delta_vs_mi", "delta_vs_mi_low", "delta_vs_mi_high"]] == 0.0).all()
        assert (t.loc[ss.MI, ["delta_vs_entropy", "delta_vs_entropy_low", "delta_vs_entropy_high"]] == 0.0).all()
        assert np.isnan(t.loc[ss.ENTROPY, "delta_vs_entropy"]) and np.isnan(t.loc[ss.MI, "delta_vs_mi"])
        assert t.loc[ss.SPREAD, "delta_vs_entropy"] == pytest.approx(1 - t.loc[ss.ENTROPY, "auroc"])


@pytest.mark.parametrize("same", [True, False])
def test_detection_rows_give_the_numbers_of_evidence_flag_auroc_and_paired_auroc_delta(same):
    clean, other, g = _frames(seed=1)
    g_other = g if same else g + 100  # a shifted copy keeps its studies; unfamiliar studies are others
    t = ss.detection_rows(clean, other, g, g_other, same, n_boot=400, seed=5).set_index("score")
    groups = np.r_[g.astype(str), g_other.astype(str) if same else np.char.add("other/", g_other.astype(str))]
    is_out = np.r_[np.zeros(40), np.ones(40)]
    s = {k: np.r_[clean[k], other[k]] for k in ss.SCORES}
    for k in ss.SCORES:
        d = evidence.flag_auroc(s[k], is_out, groups, 400, 5)
        got = (t.loc[k, "auroc"], t.loc[k, "low"], t.loc[k, "high"])
        assert got == pytest.approx((d["estimate"], d["low"], d["high"]))
    for ref, key in ((ss.ENTROPY, "delta_vs_entropy"), (ss.MI, "delta_vs_mi")):
        dd = evidence.paired_auroc_delta(s[ss.SPREAD], s[ref], is_out, groups, 400, 5)
        r = t.loc[ss.SPREAD]
        assert (r[key], r[f"{key}_low"], r[f"{key}_high"]) == pytest.approx((dd["delta"], dd["low"], dd["high"]))


def test_the_same_studies_are_resampled_together_for_a_shifted_copy():
    """A shifted copy paired with its clean image: the interval is narrower than if they were other studies."""
    rng = np.random.default_rng(2)
    n = 200
    base = rng.normal(size=n)
    clean = pd.DataFrame({k: base + 0.3 * rng.normal(size=n) for k in ss.SCORES})
    other = pd.DataFrame({k: base + 0.5 + 0.3 * rng.normal(size=n) for k in ss.SCORES})
    g = np.arange(n)
    paired = ss.detection_rows(clean, other, g, g, True, n_boot=500).set_index("score")
    apart = ss.detection_rows(clean, other, g, g, False, n_boot=500).set_index("score")
    assert paired.auroc.equals(apart.auroc)
    assert (paired.high - paired.low).loc[ss.SPREAD] != (apart.high - apart.low).loc[ss.SPREAD]


def test_logistic_fits_match_scikit_learn_and_a_weight_of_two_is_a_duplicated_row():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = (rng.random(300) < 1 / (1 + np.exp(-(-1 + X @ [1.0, -0.5])))).astype(int)
    b = ss.logistic_fits(X, y, np.ones((1, 300)))[0]
    sk = LogisticRegression(C=1e12, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(b, np.r_[sk.intercept_, sk.coef_[0]], atol=1e-5)
    w = rng.integers(0, 3, 300).astype(float)
    rep = np.repeat(np.arange(300), w.astype(int))
    dup = ss.logistic_fits(X[rep], y[rep], np.ones((1, len(rep))))[0]
    np.testing.assert_allclose(ss.logistic_fits(X, y, w[None])[0], dup, atol=1e-8)
    sep = ss.logistic_fits(X[:, :1], (X[:, 0] > 0).astype(int), np.ones((1, 300)))  # perfect separation: no MLE
    assert np.isnan(sep).all()


def test_partial_association_recovers_a_known_coefficient_and_its_absence():
    rng = np.random.default_rng(1)
    n = 6000
    h = rng.gamma(2.0, 0.3, n)
    spread = 0.8 * h + 0.3 * rng.normal(size=n)  # spread tied to the entropy, as for a GAP network
    zh, zs = ss.standardised(h), ss.standardised(spread)
    groups = np.repeat(np.arange(n // 3), 3)
    for beta in (0.6, 0.0):
        wrong = rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 1.0 * zh + beta * zs)))
        a = ss.partial_association(wrong, h, spread, groups, n_boot=300, seed=0)
        assert a[ss.SPREAD]["low"] < beta < a[ss.SPREAD]["high"]
        assert a[ss.SPREAD]["delta"] == pytest.approx(beta, abs=0.15)
        assert a[ss.ENTROPY]["delta"] == pytest.approx(1.0, abs=0.15)
        assert a["errors"] == int(wrong.sum()) and a["n"] == n
    assert a[ss.SPREAD]["low"] < 0 < a[ss.SPREAD]["high"]  # beta = 0: no association called


def _table(spread_delta):
    rows = []
    for k, auc in zip(ss.SCORES, (0.7, 0.7 - spread_delta[0], 0.72)):
        rows.append(dict(condition="unfamiliar body parts", score=k, auroc=auc, low=auc - 0.05, high=auc + 0.05,
                         n_clean=100, n_other=50))
    t = pd.DataFrame(rows)
    lo, hi = spread_delta[1:]
    t.loc[0, ["delta_vs_entropy", "delta_vs_entropy_low", "delta_vs_entropy_high"]] = spread_delta
    t.loc[0, ["delta_vs_mi", "delta_vs_mi_low", "delta_vs_mi_high"]] = (-0.02, lo - 0.02, hi - 0.02)
    return t


def test_the_reading_words_a_null_as_no_difference_shown_with_its_interval():
    assoc = dict(errors=9, n=100, **{ss.SPREAD: dict(delta=0.1, low=-0.3, high=0.5),
                                     ss.ENTROPY: dict(delta=1.5, low=1.0, high=2.0)})
    text = ss.reading(dict(table=_table((0.01, -0.02, 0.04)), partial_association=assoc,
                           correlations={ss.ENTROPY: 0.8, ss.MI: 0.7}), 5)
    assert "spread − entropy +0.010 [-0.020, +0.040] (no difference shown)" in text
    assert "+0.10 [-0.30, +0.50]" in text and "no association shown given the entropy" in text
    assert "does not help" not in text and "doesn't help" not in text
    better = ss.reading(dict(table=_table((0.05, 0.02, 0.08)),
                             partial_association=dict(assoc, **{ss.SPREAD: dict(delta=0.4, low=0.1, high=0.7)})), 5)
    assert "tells them apart better than the entropy" in better and "more often wrong" in better
    shown = ss.shown_table(_table((0.01, -0.02, 0.04)))
    assert shown.loc[0, "spread − entropy"] == "+0.010 [-0.020, +0.040]"
    assert shown.loc[0, "AUROC by explanation spread"] == "0.700 [0.650, 0.750]"


def test_the_section_runs_end_to_end_on_tiny_members_and_its_results_are_plain(members, images):
    import json

    y = np.arange(10) % 4
    sec = ss.section(members, images, y, np.repeat(np.arange(5), 2), images.flip(-1)[:6], np.arange(6), n_boot=50,
                     n_shifted=8)
    t = sec["table"]
    assert list(dict.fromkeys(t.condition)) == ["unfamiliar body parts", "rotated 45°", "noise, severity 2"]
    assert len(t) == 9 and set(sec["correlations"]) == {ss.ENTROPY, ss.MI}
    counts = t[t.condition == "unfamiliar body parts"][["n_clean", "n_other"]].drop_duplicates()
    assert counts.values.tolist() == [[10, 6]]
    assert (t[t.condition != "unfamiliar body parts"][["n_clean", "n_other"]] == 8).all().all()  # each against its own
    wrong = ss.member_scores(members, images).predicted.to_numpy() != y
    assert sec["partial_association"]["errors"] == int(wrong.sum())
    assert "Reading" in ss.reading(sec, 3)
    json.loads(json.dumps(ss.results(sec), default=float))  # JSON-able (write_results rounds and maps NaN to null)
