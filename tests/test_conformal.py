"""Split-conformal sets: finite-sample coverage on exchangeable synthetic data, nesting, set sizes, tables; the
thresholds against crepes (marginal and Mondrian), the beta-binomial band, one image per study, RAPS tuning."""
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
    n_cal, n_test, reps = 100, 400, 500  # 4 standard errors (~0.006) inside 1/(n+1) ~ 0.01
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


# --------------------------------------------------------------------------- crepes, Mondrian sets


def _crepes_p(s_cal, s_test, bins_cal=None, bins_test=None):
    import crepes

    return crepes.ConformalClassifier().fit(s_cal, bins=bins_cal).predict_p(s_test, bins=bins_test, smoothing=False)


@pytest.mark.parametrize("n_cal", [300, 199])  # (n + 1) alpha = 30.1 and 20 at alpha = 0.1: p > alpha, not >=
def test_thresholds_are_crepes_p_values_compared_with_alpha(n_cal):
    """Marginal, by class (crepes' WrapClassifier(class_cond=True): calibration bins are the labels, and column y is
    read with every test image in bin y) and by an attribute: our sets are exactly {y : crepes' non-smoothed p-value
    > alpha}."""
    rng = np.random.default_rng(21)
    p, y = _draw(rng, n_cal + 400, c=4)
    part = rng.choice(np.array(["elbow", "hand", "wrist"]), n_cal + 400)
    pc, yc, pt = p[:n_cal], y[:n_cal], p[n_cal:]
    for score in ("lac", "raps"):
        s_cal = conformal.label_scores(pc, yc, score, seed=2)
        u = conformal.uniforms(400, 2, conformal.TEST_STREAM) if score in conformal.RANDOMISED else None
        s_test = conformal.all_scores(pt, score, u)
        for alpha in (0.1, 0.05):
            sets, qhat = conformal.split_conformal(pc, yc, pt, alpha, score, seed=2)
            np.testing.assert_array_equal(sets, _crepes_p(s_cal, s_test) > alpha)
            sets, qhat = conformal.split_conformal(pc, yc, pt, alpha, score, seed=2, mondrian="class")
            assert set(qhat) == {0, 1, 2, 3}
            ref = np.column_stack([_crepes_p(s_cal, s_test, yc, np.full(400, j))[:, j] for j in range(4)])
            np.testing.assert_array_equal(sets, ref > alpha)
            sets, qhat = conformal.split_conformal(pc, yc, pt, alpha, score, seed=2, mondrian="bins",
                                                   bins_cal=part[:n_cal], bins_test=part[n_cal:])
            assert set(qhat) == {"elbow", "hand", "wrist"}
            np.testing.assert_array_equal(sets, _crepes_p(s_cal, s_test, part[:n_cal], part[n_cal:]) > alpha)
            assert 0 < sets.sum(1).mean() < 4


def test_mondrian_thresholds_by_hand():
    """Four calibration images of class 0 and three of class 1 (LAC, alpha = 0.25): class 0's threshold is the
    ceil(5 * 0.75) = 4th smallest of its scores, class 1's the ceil(4 * 0.75) = 3rd of its; the marginal one the
    ceil(8 * 0.75) = 6th of all seven."""
    p1 = np.array([0.1, 0.2, 0.3, 0.4, 0.95, 0.6, 0.7])  # p of class 1
    probs = np.column_stack([1 - p1, p1])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    # LAC scores 1 - p_y: class 0 -> 0.1, 0.2, 0.3, 0.4; class 1 -> 0.05, 0.4, 0.3
    assert conformal.calibrate(probs, y, 0.25, "lac", mondrian="class") == pytest.approx({0: 0.4, 1: 0.4})
    assert conformal.calibrate(probs, y, 0.25) == pytest.approx(0.4)
    q = conformal.calibrate(probs, y, 0.4, "lac", mondrian="class")  # ceil(5 * 0.6) = 3rd; ceil(4 * 0.6) = 3rd
    assert q == pytest.approx({0: 0.3, 1: 0.4})
    test = np.array([[0.65, 0.35], [0.75, 0.25], [0.5, 0.5]])  # LAC scores (0.35, 0.65), (0.25, 0.75), (0.5, 0.5)
    np.testing.assert_array_equal(conformal.predict_sets(test, q, mondrian="class"),
                                  [[False, False], [True, False], [False, False]])
    # a class without calibration images gets every set (crepes: p = 1); by bins likewise for an unseen bin
    q3 = conformal.calibrate(np.column_stack([probs, np.zeros(7)]), y, 0.4, mondrian="class")
    assert conformal.predict_sets(np.array([[0.3, 0.3, 0.4]]), q3, mondrian="class")[0, 2]
    qb = conformal.calibrate(probs, y, 0.4, mondrian="bins", bins=np.array(list("aaabbbb")))
    assert qb == pytest.approx({"a": 0.3, "b": 0.4})  # a: 0.1, 0.2, 0.3 -> 3rd; b: 0.4, 0.05, 0.4, 0.3 -> ceil(3) = 3rd
    np.testing.assert_array_equal(conformal.predict_sets(test, qb, mondrian="bins", bins=["b", "a", "z"]),
                                  [[True, False], [True, False], [True, True]])
    with pytest.raises(ValueError, match="mondrian"):
        conformal.calibrate(probs, y, 0.4, mondrian="part")
    with pytest.raises(ValueError, match="bin"):
        conformal.calibrate(probs, y, 0.4, mondrian="bins")
    with pytest.raises(ValueError, match="dict"):
        conformal.predict_sets(test, 0.4, mondrian="class")


def _hard_class(rng, n, c=3):
    """Labels drawn from the true conditional q; the model's p is sharp and right about classes 0 and 1 and
    blurred about class 2, so marginal sets meet 1 - alpha on average by over-covering 0 and 1 and under-covering 2."""
    q = metrics.softmax(rng.normal(0, 2.5, (n, c)))
    y = (np.cumsum(q, 1) < rng.uniform(size=(n, 1))).sum(1).clip(max=c - 1)
    p = q.copy()
    p[:, 2] *= 0.35
    return p / p.sum(1, keepdims=True), y


def test_label_conditional_sets_cover_each_class_where_marginal_sets_do_not():
    n_cal, n_test, reps, alpha = 300, 600, 200, 0.1
    rng = np.random.default_rng(22)
    marg, cond = [], []
    for r in range(reps):
        p, y = _hard_class(rng, n_cal + n_test)
        yt = y[n_cal:]
        for out, mondrian in ((marg, None), (cond, "class")):
            sets, _ = conformal.split_conformal(p[:n_cal], y[:n_cal], p[n_cal:], alpha, mondrian=mondrian)
            hit = sets[np.arange(n_test), yt]
            out.append([hit[yt == j].mean() for j in range(3)])
    marg, cond = np.array(marg).mean(0), np.array(cond).mean(0)
    assert marg[2] < 1 - alpha - 0.03 and marg[:2].min() > 1 - alpha  # marginal: class 2 under-covered
    # label-conditional: each class >= 1 - alpha (averaged over 200 calibrations: SE below 0.002)
    assert (cond > 1 - alpha - 0.006).all() and (cond < 1 - alpha + 0.03).all()


# --------------------------------------------------------------------------- the band the guarantee implies


def test_band_is_the_beta_binomial_of_the_issue_and_sums_mondrian_bins():
    from scipy import stats

    k = math.ceil(520 * 0.95)
    np.testing.assert_allclose(conformal.covered_pmf(519, 824, 0.05), stats.betabinom.pmf(np.arange(825), 824, k,
                                                                                             520 - k), atol=1e-15)
    lo, hi = conformal.coverage_band(519, 824, 0.05)
    assert (round(lo, 3), round(hi, 3)) == (0.924, 0.972)
    lo, hi = conformal.coverage_band(519, 824, 0.1)
    assert (round(lo, 3), round(hi, 3)) == (0.865, 0.931)
    assert conformal.covered_range(519, 824, 0.1) == tuple(
        int(stats.betabinom.ppf(q, 824, math.ceil(520 * 0.9), 520 - math.ceil(520 * 0.9))) for q in (0.025, 0.975))
    # two bins: the convolution of the two counts; a bin too small for alpha covers every image
    both = conformal.covered_pmf([30, 50], [40, 60], 0.1)
    np.testing.assert_allclose(both, np.convolve(conformal.covered_pmf(30, 40, 0.1), conformal.covered_pmf(50, 60, 0.1)))
    assert conformal.covered_range(5, 7, 0.1) == (7, 7)  # ceil(6 * 0.9) = 6 > 5: full sets


def test_about_95_percent_of_exchangeable_experiments_fall_in_the_band():
    """1000 calibrations on exchangeable data (LAC on continuous probabilities): the share of experiments whose
    coverage lies inside the band is the band's own probability (>= 0.95, a little more: counts are discrete),
    within 3.9 binomial standard errors (a false alarm about 1e-4)."""
    n_cal, n_test, reps, alpha = 100, 200, 1000, 0.1
    rng = np.random.default_rng(23)
    lo, hi = conformal.covered_range(n_cal, n_test, alpha)
    p_in = conformal.covered_pmf(n_cal, n_test, alpha)[lo:hi + 1].sum()
    inside = 0
    for r in range(reps):
        p, y = _draw(rng, n_cal + n_test, c=4)
        sets, _ = conformal.split_conformal(p[:n_cal], y[:n_cal], p[n_cal:], alpha)
        inside += lo <= sets[np.arange(n_test), y[n_cal:]].sum() <= hi
    assert 0.95 <= p_in < 0.97
    assert abs(inside / reps - p_in) < 3.9 * math.sqrt(p_in * (1 - p_in) / reps)


def _studies(rng, n_studies, views=4, c=4):
    """Studies of `views` images that share one label and, up to a little noise, one predictive: images of one
    study are not exchangeable one by one, studies are."""
    logits = np.repeat(rng.normal(0, 2, (n_studies, c)), views, 0) + rng.normal(0, 0.05, (n_studies * views, c))
    q = metrics.softmax(np.repeat(logits[::views], views, 0))
    y = (np.cumsum(q, 1) < np.repeat(rng.uniform(size=(n_studies, 1)), views, 0)).sum(1).clip(max=c - 1)
    return metrics.softmax(logits), y, np.repeat(np.arange(n_studies), views)


def test_one_image_per_study_restores_the_band_that_views_of_one_study_break():
    rng = np.random.default_rng(24)
    alpha, reps = 0.1, 300
    pick = conformal.one_per_study(np.repeat(np.arange(50), 3), seed=1)
    assert len(pick) == 50 and len(np.unique(pick // 3)) == 50
    np.testing.assert_array_equal(pick, conformal.one_per_study(np.repeat(np.arange(50), 3), seed=1))
    assert not np.array_equal(pick, conformal.one_per_study(np.repeat(np.arange(50), 3), seed=2))
    band_all = conformal.covered_range(400, 600, alpha)  # 100 + 150 studies of 4 views, read as images
    band_one = conformal.covered_range(100, 150, alpha)
    inside_all = inside_one = 0
    for r in range(reps):
        p, y, g = _studies(rng, 250)
        cal, test = g < 100, g >= 100
        sets, _ = conformal.split_conformal(p[cal], y[cal], p[test], alpha)
        inside_all += band_all[0] <= sets[np.arange(600), y[test]].sum() <= band_all[1]
        c1, t1 = np.flatnonzero(cal)[conformal.one_per_study(g[cal], r)], \
            np.flatnonzero(test)[conformal.one_per_study(g[test], r)]
        sets, _ = conformal.split_conformal(p[c1], y[c1], p[t1], alpha)
        inside_one += band_one[0] <= sets[np.arange(150), y[t1]].sum() <= band_one[1]
    assert inside_all / reps < 0.8  # the image band is far too narrow for studies of 4 near-copies
    p_in = conformal.covered_pmf(100, 150, alpha)[band_one[0]:band_one[1] + 1].sum()
    assert abs(inside_one / reps - p_in) < 3.9 * math.sqrt(p_in * (1 - p_in) / reps)


def test_coverage_table_reads_each_row_against_its_band():
    rng = np.random.default_rng(25)
    p, y = _draw(rng, 1000, c=3)
    yc, yt = y[:400], y[400:]
    part = np.where(np.arange(600) % 3 == 0, "elbow", "wrist")
    sets, _ = conformal.split_conformal(p[:400], yc, p[400:], 0.1)
    tab = conformal.coverage_table(sets, yt, by={"part": part}, n_boot=50, alpha=0.1, n_cal=400).set_index("subset")
    lo, hi = conformal.coverage_band(400, 600, 0.1)
    assert tab.loc["all", ["n_cal", "band_low", "band_high"]].tolist() == [400, lo, hi]
    assert tab.loc["all", "in_band"] == (lo <= tab.loc["all", "coverage"] <= hi)
    assert tab.drop("all").band_low.isna().all() and tab.drop("all").in_band.isna().all()  # no guarantee there
    # label-conditional sets: each class row has its own band; the overall row sums the classes' counts
    sets, _ = conformal.split_conformal(p[:400], yc, p[400:], 0.1, mondrian="class")
    n_cal = {j: int((yc == j).sum()) for j in range(3)}
    tab = conformal.coverage_table(sets, yt, by={"part": part}, n_boot=50, alpha=0.1, n_cal=n_cal,
                                   mondrian="class").set_index("subset")
    for j in range(3):
        nt = int((yt == j).sum())
        lo, hi = conformal.covered_range(n_cal[j], nt, 0.1)
        assert tab.loc[f"class={j}", ["n_cal", "band_low", "band_high"]].tolist() == [n_cal[j], lo / nt, hi / nt]
    lo, hi = conformal.covered_range(list(n_cal.values()), [int((yt == j).sum()) for j in range(3)], 0.1)
    assert tab.loc["all", ["n_cal", "band_low", "band_high"]].tolist() == [400, lo / 600, hi / 600]
    assert tab.loc[["part=elbow", "part=wrist"]].band_low.isna().all()
    assert tab.in_band.dropna().all()  # exchangeable data, one draw: every row inside (checked, not by chance)
    # Mondrian by part: the part rows get bands, the class rows do not
    pc = np.where(np.arange(400) % 3 == 0, "elbow", "wrist")
    sets, _ = conformal.split_conformal(p[:400], yc, p[400:], 0.1, mondrian="bins", bins_cal=pc, bins_test=part)
    tab = conformal.coverage_table(sets, yt, by={"part": part}, n_boot=50, alpha=0.1, mondrian="bins", bins=part,
                                   n_cal={"elbow": 134, "wrist": 266}).set_index("subset")
    assert tab.loc["part=elbow", "n_cal"] == 134 and tab.filter(like="class=", axis=0).band_low.isna().all()
    with pytest.raises(ValueError, match="n_cal"):
        conformal.coverage_table(sets, yt, alpha=0.1)


# --------------------------------------------------------------------------- RAPS's parameters


def test_raps_k_reg_is_where_top_k_accuracy_reaches_the_target():
    p = np.array([[0.5, 0.3, 0.2]] * 10)
    y = np.array([0] * 6 + [1] * 3 + [2])  # top-1 accuracy 0.6, top-2 0.9, top-3 1.0
    assert conformal.raps_k_reg(p, y, 0.4) == 1
    assert conformal.raps_k_reg(p, y, 0.1) == 2
    assert conformal.raps_k_reg(p, y, 0.05) == 3


def test_tune_raps_picks_the_smallest_sets_on_the_tuning_split():
    rng = np.random.default_rng(26)
    p, y = _long_tail(rng, 1200)
    t = conformal.tune_raps(p, y, 0.1, seed=3)
    assert t["k_reg"] == conformal.raps_k_reg(p, y, 0.1) and t["n"] == 1200
    assert set(t["sizes"]) == set(conformal.RAPS_LAMBDAS) and t["sizes"][t["lam"]] == min(t["sizes"].values())
    assert t == conformal.tune_raps(p, y, 0.1, seed=3)  # seeded
    # its own halves: calibrate on one, measure on the other (by study when groups are given)
    g = np.arange(1200) // 3
    tg = conformal.tune_raps(p, y, 0.1, seed=3, groups=g, lambdas=(0.0, 0.5))
    assert set(tg["sizes"]) == {0.0, 0.5}
    # two classes, k_reg = 2: nothing is penalised, every lam gives the same sets and the smallest is kept
    p2, y2 = _draw(rng, 400, c=2)
    t2 = conformal.tune_raps(p2, y2, 0.01)
    assert t2["k_reg"] == 2 and t2["lam"] == min(conformal.RAPS_LAMBDAS) and len(set(t2["sizes"].values())) == 1
