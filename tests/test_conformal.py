"""Split-conformal sets: finite-sample coverage on exchangeable synthetic data, nesting, set sizes, tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from utils.evaluation import conformal, metrics


def _draw(rng, n, c=5, scale=2.0):
    """A softmax classifier's probabilities and labels drawn from them (so the probabilities are the true
    conditional distribution): i.i.d., hence exchangeable, images."""
    p = metrics.softmax(rng.normal(0, scale, (n, c)))
    u = rng.uniform(size=(n, 1))
    y = (np.cumsum(p, 1) < u).sum(1).clip(max=c - 1)
    return p, y


@pytest.mark.parametrize("alpha", [0.1, 0.05])
@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_coverage_within_finite_sample_bound(score, alpha):
    n_cal, n_test, reps = 100, 400, 1000  # 4 standard errors (~0.004) well inside 1/(n+1) ~ 0.01
    rng = np.random.default_rng(123)
    cov, size = [], []
    for r in range(reps):
        p, y = _draw(rng, n_cal + n_test)
        sets, qhat = conformal.split_conformal(p[:n_cal], y[:n_cal], p[n_cal:], alpha, score, seed=r)
        cov.append(sets[np.arange(n_test), y[n_cal:]].mean())
        size.append(sets.sum(1).mean())
    cov = np.array(cov)
    se = cov.std(ddof=1) / np.sqrt(reps)
    lo, hi = 1 - alpha, 1 - alpha + 1 / (n_cal + 1)
    assert lo - 4 * se <= cov.mean() <= hi + 4 * se
    # continuous scores: the expected coverage is exactly k / (n + 1)
    k = math.ceil((n_cal + 1) * (1 - alpha))
    assert cov.mean() == pytest.approx(k / (n_cal + 1), abs=4 * se)
    assert 1 <= np.mean(size) < 5


def test_lac_sets_smallest_on_average():
    rng = np.random.default_rng(7)
    sizes = {"lac": [], "aps": []}
    for r in range(30):
        p, y = _draw(rng, 1500)
        for score in sizes:
            sets, _ = conformal.split_conformal(p[:500], y[:500], p[500:], 0.1, score, seed=r)
            sizes[score].append(sets.sum(1).mean())
    assert np.mean(sizes["lac"]) < np.mean(sizes["aps"])


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_sets_nested_in_alpha(score):
    rng = np.random.default_rng(1)
    p, y = _draw(rng, 1200, c=6)
    prev = None
    for alpha in (0.3, 0.2, 0.1, 0.05, 0.01):
        sets, _ = conformal.split_conformal(p[:600], y[:600], p[600:], alpha, score, seed=3)
        if prev is not None:
            assert np.all(sets | ~prev), "a smaller alpha must give supersets"
        prev = sets


def test_quantile_by_hand_and_full_set_when_n_small():
    s = np.arange(1, 11) / 10.0  # 10 scores 0.1 .. 1.0
    # ceil(11 * 0.9) = 10 -> the largest; ceil(11 * 0.8) = 9 -> 0.9; ceil(11 * 0.5) = 6 -> 0.6
    assert conformal.conformal_quantile(s, 0.1) == 1.0
    assert conformal.conformal_quantile(s, 0.2) == 0.9
    assert conformal.conformal_quantile(s, 0.5) == 0.6
    assert conformal.conformal_quantile(s, 0.05) == np.inf  # ceil(11 * 0.95) = 11 > 10
    p = np.array([[0.7, 0.2, 0.1]])
    assert conformal.predict_sets(p, np.inf, "lac").all()
    assert conformal.predict_sets(p, np.inf, "aps").all()
    assert conformal.predict_sets(p, np.inf, "raps").all()


def test_scores_by_hand():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_allclose(conformal.all_scores(p, "lac"), 1 - p)
    # APS without randomisation (u = 1): cumulative mass of the sorted classes up to and including y
    np.testing.assert_allclose(conformal.all_scores(p, "aps"), [[1.0, 0.5, 0.8], [0.6, 1.0, 0.9]])
    u = np.array([0.5, 0.0])
    np.testing.assert_allclose(conformal.all_scores(p, "aps", u), [[0.9, 0.25, 0.65], [0.0, 0.9, 0.6]])
    # LAC sets at qhat = 0.65: labels with p >= 0.35
    np.testing.assert_array_equal(conformal.predict_sets(p, 0.65, "lac"), [[False, True, False],
                                                                           [True, False, False]])


@pytest.mark.parametrize("score", ["aps", "raps"])
def test_aps_sets_are_top_k(score):
    rng = np.random.default_rng(4)
    p, _ = _draw(rng, 400, c=7)
    sets = conformal.predict_sets(p, 0.8, score, seed=0)
    rank = np.argsort(np.argsort(-p, 1, kind="stable"), 1)  # 0 for the most probable class
    k = sets.sum(1)
    np.testing.assert_array_equal(sets, rank < k[:, None])


def _long_tail(rng, n, c=20):
    """A model that spreads mass over a long tail of small probabilities while the labels come from a sharper
    distribution concentrated on a few classes (the regime RAPS was designed for); i.i.d. images."""
    logits = rng.normal(0, 1, (n, c))
    logits[:, :3] += rng.normal(2, 1.5, (n, 3))
    q = metrics.softmax(3 * logits)  # the true conditional distribution
    y = (np.cumsum(q, 1) < rng.uniform(size=(n, 1))).sum(1).clip(max=c - 1)
    return metrics.softmax(logits), y


def test_raps_scores_by_hand_and_defaults():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    # ranks: row 0 -> (3, 1, 2), row 1 -> (1, 3, 2); penalty 0.1 * max(0, rank - 1) on top of the APS scores
    aps = conformal.all_scores(p, "aps")
    np.testing.assert_allclose(conformal.all_scores(p, "raps"), aps + 0.1 * np.array([[2, 0, 1], [0, 2, 1]]))
    np.testing.assert_allclose(conformal.all_scores(p, "raps", lam=0.5, k_reg=2), aps + 0.5 * np.array([[1, 0, 0],
                                                                                                       [0, 1, 0]]))
    u = np.array([0.5, 0.0])  # randomised like APS: U scales p_y only, never the penalty
    np.testing.assert_allclose(conformal.all_scores(p, "raps", u),
                               [[0.9 + 0.2, 0.25, 0.65 + 0.1], [0.0, 0.9 + 0.2, 0.6 + 0.1]])
    assert (conformal.RAPS_K_REG, conformal.RAPS_LAMBDA) == (1, 0.1)
    # the calibration score of a label is its column of all_scores under the calibration stream
    rng = np.random.default_rng(8)
    q, y = _draw(rng, 50, c=4)
    u_cal = np.random.default_rng([3, 0]).uniform(size=50)
    np.testing.assert_array_equal(conformal.label_scores(q, y, "raps", seed=3),
                                  conformal.all_scores(q, "raps", u_cal)[np.arange(50), y])


def test_raps_with_zero_penalty_is_aps_exactly():
    rng = np.random.default_rng(9)
    p, y = _draw(rng, 900, c=7)
    for alpha in (0.1, 0.05):
        for k_reg in (0, 1, 3):
            raps, q_raps = conformal.split_conformal(p[:400], y[:400], p[400:], alpha, "raps", seed=2, lam=0.0,
                                                     k_reg=k_reg)
            aps, q_aps = conformal.split_conformal(p[:400], y[:400], p[400:], alpha, "aps", seed=2)
            assert q_raps == q_aps
            np.testing.assert_array_equal(raps, aps)
    np.testing.assert_array_equal(conformal.all_scores(p, "raps", lam=0.0), conformal.all_scores(p, "aps"))


def test_raps_sets_inside_aps_sets_at_one_threshold_and_bounded_in_size():
    """Exact properties: the penalty is >= 0, so at one qhat (and one seed, the same U) a RAPS set lies inside the
    APS set; every score at rank r is >= lam (r - k_reg), so no set is longer than k_reg + qhat / lam."""
    rng = np.random.default_rng(10)
    p, _ = _long_tail(rng, 600)
    for qhat in (0.5, 0.9, 1.2):
        raps = conformal.predict_sets(p, qhat, "raps", seed=1)
        aps = conformal.predict_sets(p, qhat, "aps", seed=1)
        assert np.all(aps | ~raps)
        assert raps.sum(1).max() <= conformal.RAPS_K_REG + math.floor(qhat / conformal.RAPS_LAMBDA)
        small = conformal.predict_sets(p, qhat, "raps", seed=1, lam=0.3, k_reg=2)
        assert small.sum(1).max() <= 2 + math.floor(qhat / 0.3)


def test_raps_sets_smaller_than_aps_on_a_long_tail():
    """On calibrated-looking probabilities with a long tail of small ones (labels concentrated on a few classes),
    APS has to walk into the tail to reach 1 - alpha of mass; RAPS does not (its motivating case, Angelopoulos
    et al. 2021, Table 1). Both keep their coverage (test_coverage_within_finite_sample_bound)."""
    rng = np.random.default_rng(11)
    sizes, cover = {"aps": [], "raps": []}, {"aps": [], "raps": []}
    for r in range(30):
        p, y = _long_tail(rng, 1500)
        for score in sizes:
            sets, _ = conformal.split_conformal(p[:500], y[:500], p[500:], 0.1, score, seed=r)
            sizes[score].append(sets.sum(1).mean())
            cover[score].append(sets[np.arange(1000), y[500:]].mean())
    assert np.mean(sizes["raps"]) < np.mean(sizes["aps"]) - 0.25
    for score in cover:
        assert abs(np.mean(cover[score]) - 0.9) < 0.01


def test_aps_and_raps_scores_match_mapie():
    """MAPIE (a test dependency, requirements.txt; it replaces TorchCP, whose install pulls transformers and
    torch-geometric) as a reference for the scores: its APS label scores, randomised (MAPIE's cumsum - U p_y is
    ours with 1 - U), and its RAPS regularisation lam * max(0, rank - k_reg) on the non-randomised APS score for
    every label, over probabilities without ties (so the two sort orders agree)."""
    from mapie.conformity_scores import APSConformityScore, RAPSConformityScore

    rng = np.random.default_rng(12)
    p, y = _draw(rng, 300, c=7)
    classes = np.arange(7)
    aps = APSConformityScore()
    aps.classes, aps.random_state = classes, 7
    got = aps.get_conformity_scores(y, p, y_enc=y).ravel()
    u = np.random.RandomState(7).uniform(size=300)  # MAPIE's draw (check_random_state(7).uniform)
    np.testing.assert_allclose(conformal.all_scores(p, "aps", 1 - u)[np.arange(300), y], got, atol=1e-12)
    for lam, k_reg in ((0.1, 1), (0.05, 2), (0.0, 0), (0.3, 3)):
        ref = np.empty_like(p)
        for j in classes:  # the score of label j for every image: MAPIE scores "true" labels
            cumsum, rank = APSConformityScore.get_true_label_cumsum_proba(np.full(300, j), p, classes)
            ref[:, j] = RAPSConformityScore._regularize_conformity_score(np.array([k_reg]), lam, cumsum, rank)[:, 0, 0]
        np.testing.assert_allclose(conformal.all_scores(p, "raps", lam=lam, k_reg=k_reg), ref, atol=1e-12)


def test_lac_sets_match_mapie():
    """MAPIE's split-conformal classifier with the LAC score, on a pre-fitted 'classifier' that returns the given
    probabilities, gives the same sets."""
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Given(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict_proba(self, X):
            return np.asarray(X)

        def predict(self, X):
            return np.asarray(X).argmax(1)

    rng = np.random.default_rng(5)
    p, y = _draw(rng, 1300, c=4)
    for alpha in (0.1, 0.05, 0.2):
        sets, _ = conformal.split_conformal(p[:300], y[:300], p[300:], alpha, "lac")
        mapie = SplitConformalClassifier(Given().fit(p[:300], y[:300]), confidence_level=1 - alpha,
                                         conformity_score="lac", prefit=True).conformalize(p[:300], y[:300])
        ref = mapie.predict_set(p[300:])[1][:, :, 0]
        np.testing.assert_array_equal(sets, ref)


def test_lac_equals_p_value_rule():
    """Independent check of LAC: y is in the set iff its conformal p-value
    (1 + #{i : s_i >= s(x, y)}) / (n + 1) exceeds alpha (the rule of crepes / Vovk et al.)."""
    rng = np.random.default_rng(5)
    p, y = _draw(rng, 700, c=4)
    alpha = 0.1
    sets, _ = conformal.split_conformal(p[:300], y[:300], p[300:], alpha, "lac")
    s_cal = 1 - p[np.arange(300), y[:300]]
    s_test = 1 - p[300:]
    pval = (1 + (s_cal[None, None, :] >= s_test[:, :, None]).sum(-1)) / 301
    np.testing.assert_array_equal(sets, pval > alpha)


def test_coverage_table_groups_and_intervals():
    rng = np.random.default_rng(2)
    p, y = _draw(rng, 1000, c=3)
    sets, _ = conformal.split_conformal(p[:400], y[:400], p[400:], 0.1, "lac")
    yt = y[400:]
    part = np.where(np.arange(600) % 3 == 0, "elbow", "wrist")
    study = np.arange(600) // 2
    tab = conformal.coverage_table(sets, yt, groups=study, by={"part": part}, class_names=["a", "b", "c"],
                                   n_boot=200)
    assert list(tab["subset"]) == ["all", "class=a", "class=b", "class=c", "part=elbow", "part=wrist"]
    hit = sets[np.arange(600), yt]
    row = tab.set_index("subset")
    assert row.loc["all", "coverage"] == pytest.approx(hit.mean())
    assert row.loc["all", "size"] == pytest.approx(sets.sum(1).mean())
    assert row.loc["class=b", "coverage"] == pytest.approx(hit[yt == 1].mean())
    assert row.loc["part=elbow", "n"] == 200
    assert row.loc["part=elbow", "coverage"] == pytest.approx(hit[part == "elbow"].mean())
    assert (tab["coverage_low"] <= tab["coverage"]).all() and (tab["coverage"] <= tab["coverage_high"]).all()
    assert (tab["size_low"] <= tab["size"]).all() and (tab["size"] <= tab["size_high"]).all()
    # a plain array for `by`
    assert "by=elbow" in set(conformal.coverage_table(sets, yt, by=part, n_boot=50)["subset"])


def test_bad_inputs():
    with pytest.raises(ValueError):
        conformal.calibrate(np.full((3, 2), 0.5), [0, 1, 0], 0.1, "nope")
    with pytest.raises(ValueError, match="lam"):
        conformal.calibrate(np.full((3, 2), 0.5), [0, 1, 0], 0.1, "raps", lam=-0.1)
    with pytest.raises(ValueError, match="k_reg"):
        conformal.predict_sets(np.full((3, 2), 0.5), 0.5, "raps", k_reg=1.5)
    with pytest.raises(ValueError):
        conformal.conformal_quantile([0.1, 0.2], 1.5)


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_sets_match_crepes(score):
    """crepes (a test dependency, requirements.txt) as a reference for the set rule: its non-smoothed conformal
    classifier, given our calibration label scores and every test label's score (APS, RAPS: randomised with the
    calibration and test streams the module draws), includes a label iff its conformal p-value exceeds alpha; that
    must be our set {y : s(x, y) <= qhat} (the scores have no ties: continuous probabilities, U)."""
    import crepes

    rng = np.random.default_rng(5)
    p, y = _draw(rng, 1300, c=4)
    s_cal = conformal.label_scores(p[:300], y[:300], score, seed=4)
    u = conformal.uniforms(1000, 4, conformal.TEST_STREAM) if score in conformal.RANDOMISED else None
    s_test = conformal.all_scores(p[300:], score, u)
    cc = crepes.ConformalClassifier().fit(s_cal)
    for alpha in (0.1, 0.05, 0.2):
        sets, _ = conformal.split_conformal(p[:300], y[:300], p[300:], alpha, score, seed=4)
        ref = cc.predict_set(s_test, confidence=1 - alpha, smoothing=False).astype(bool)
        np.testing.assert_array_equal(sets, ref)
        assert 0 < sets.sum(1).mean() < 4  # neither empty nor full: a check with something to compare


def test_coverage_table_can_bootstrap_the_overall_row_only():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    sets = rng.random((90, 3)) < 0.6
    every = conformal.coverage_table(sets, y, np.arange(90), by=np.repeat(["a", "b"], 45), n_boot=200)
    overall = conformal.coverage_table(sets, y, np.arange(90), by=np.repeat(["a", "b"], 45), n_boot=200,
                                       intervals="overall")
    pd.testing.assert_frame_equal(every[["subset", "n", "coverage", "size", "empty"]],
                                  overall[["subset", "n", "coverage", "size", "empty"]])
    pd.testing.assert_series_equal(every.iloc[0], overall.iloc[0])  # the overall row is the same, interval included
    assert overall.iloc[1:].coverage_low.isna().all() and every.iloc[1:].coverage_low.notna().all()
    with pytest.raises(ValueError, match="intervals must be"):
        conformal.coverage_table(sets, y, intervals="some")
