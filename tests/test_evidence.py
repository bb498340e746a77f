"""Study-bootstrap intervals: weighted metrics against utils.metrics, the study grouping, pairing,
coverage, the calibration reference, AUROC against scikit-learn, and leak-free cross-validation."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from utils.evaluation import evidence as ev
from utils.evaluation import metrics


def _random(n=821, c=5, seed=0):
    rng = np.random.default_rng(seed)
    p = metrics.softmax(rng.normal(0, 2, (n, c)))
    return p, rng.integers(0, c, n)


def _close(a, b):
    return np.isclose(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- weights


def test_study_weights_count_whole_studies():
    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    W = ev.study_weights(groups, n_boot=300, seed=1)
    assert W.shape == (300, 7)
    # images of one study share their weight, and each replicate draws as many studies as there are
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 3] == W[:, 4]).all() and (W[:, 4] == W[:, 5]).all()
    study_counts = W[:, [0, 2, 3, 6]]
    assert (study_counts.sum(1) == 4).all()
    assert study_counts.mean() == pytest.approx(1.0, abs=0.1)


def test_determinism_under_seed():
    p, y = _random(seed=3)
    g = np.arange(len(y)) // 3
    assert np.array_equal(ev.study_weights(g, 50, seed=5), ev.study_weights(g, 50, seed=5))
    assert not np.array_equal(ev.study_weights(g, 50, seed=5), ev.study_weights(g, 50, seed=6))
    assert ev.interval("ece", p, y, g, 300, seed=2) == ev.interval("ece", p, y, g, 300, seed=2)
    assert ev.interval("ece", p, y, g, 300, seed=2) != ev.interval("ece", p, y, g, 300, seed=3)
    m = np.stack([p, _random(seed=4)[0]])
    assert ev.member_interval("nll", m, y, g, 300, seed=2) == ev.member_interval("nll", m, y, g, 300, seed=2)
    ref = ev.ece_reference(p, 200, seed=1)
    assert ref == ev.ece_reference(p, 200, seed=1) and ref != ev.ece_reference(p, 200, seed=2)


# ---------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [0, 1])
def test_unit_weights_reproduce_utils_metrics(seed):
    p, y = _random(n=997, c=7, seed=seed)
    one = np.ones((2, len(y)))
    for name, ref in [("accuracy", metrics.accuracy), ("nll", metrics.nll), ("brier", metrics.brier),
                      ("ece", metrics.ece)]:
        got = ev.weighted_metric(name, p, y, one)
        assert got.shape == (2,)
        assert _close(got, ref(p, y)).all(), name
    assert _close(ev.weighted_metric("error", p, y, one[0]), 1 - metrics.accuracy(p, y)).all()
    pb, yb = _random(n=500, c=2, seed=seed)
    assert _close(ev.weighted_metric("auroc", pb, yb, one[:, :500]), metrics.binary_auroc(pb, yb)).all()


def test_ece_bins_are_right_closed_like_utils_metrics():
    # a right image at confidence exactly k/15 (bin k-1, right-closed) and a wrong one just above
    # (bin k): in separate bins their gaps add up; left-closed bins would let them cancel
    edge = np.array([8, 10, 12, 14]) / 15
    conf = np.r_[edge, edge + 0.01]
    p = np.stack([conf, 1 - conf], 1)
    y = np.r_[np.zeros(4, int), np.ones(4, int)]
    got = ev.weighted_metric("ece", p, y, np.ones(len(y)))[0]
    assert _close(got, metrics.ece(p, y))
    assert _close(got, ((1 - edge) + (edge + 0.01)).sum() / 8)  # = 0.505, by hand


def test_integer_weights_equal_duplicated_data():
    p, y = _random(n=400, c=4, seed=7)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, len(y)).astype(float)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    for name, ref in [("accuracy", metrics.accuracy), ("nll", metrics.nll), ("brier", metrics.brier),
                      ("ece", metrics.ece)]:
        assert _close(ev.weighted_metric(name, p, y, w)[0], ref(p[rep], y[rep])), name


def test_weighted_auroc_equals_sklearn_with_sample_weight():
    rng = np.random.default_rng(0)
    n = 600
    score = np.round(rng.normal(size=n), 1)  # many ties
    y = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(int)
    W = np.vstack([rng.integers(0, 4, n), rng.random(n) * 3, np.ones(n)]).astype(float)
    got = ev.weighted_metric("auroc", score, y, W)
    want = [roc_auc_score(y, score, sample_weight=w) for w in W]
    assert np.allclose(got, want, rtol=0, atol=1e-12)


def test_auroc_replicates_without_both_classes_are_dropped():
    y = np.array([1, 0, 0, 0])
    score = np.array([0.9, 0.1, 0.2, 0.3])
    got = ev.weighted_metric("auroc", score, y, np.array([[0, 1, 1, 1], [1, 1, 0, 0]], float))
    assert np.isnan(got[0]) and got[1] == 1.0
    d = ev.flag_auroc(score, y, None, n_boot=400, seed=0)
    # P(study 0 never drawn in 4 draws) = (3/4)^4 ~ 0.32
    assert 200 < d["n_boot"] < 330 and d["estimate"] == 1.0 and d["low"] == d["high"] == 1.0


def test_flag_auroc_estimate_is_sklearn():
    rng = np.random.default_rng(1)
    n = 821
    is_err = rng.random(n) < 0.2
    score = rng.normal(size=n) + is_err
    g = rng.integers(0, 330, n).astype(str)
    d = ev.flag_auroc(score, is_err, g, n_boot=2000, seed=0)
    assert d["estimate"] == pytest.approx(roc_auc_score(is_err, score), abs=1e-12)
    assert d["low"] < d["estimate"] < d["high"] and d["n_boot"] == 2000
    # paired difference with a noisier version of the same score
    noisy = score + rng.normal(size=n)
    dd = ev.paired_auroc_delta(score, noisy, is_err, g, n_boot=1000, seed=0)
    assert dd["delta"] == pytest.approx(roc_auc_score(is_err, score) - roc_auc_score(is_err, noisy), abs=1e-12)
    assert dd["excludes_zero"] and dd["low"] > 0


def test_ece_interval_is_the_plug_in_ece_with_an_interval_around_it():
    p, y = _random(n=821, c=2, seed=0)
    g = np.arange(821) // 3
    d = ev.interval("ece", p, y, g, n_boot=2000, seed=0)
    assert d["estimate"] == pytest.approx(metrics.ece(p, y), abs=1e-12)
    assert d["low"] < d["estimate"] < d["high"] and d["se"] > 0


# ---------------------------------------------------------------------------------------------- grouping


def test_interval_respects_study_grouping():
    rng = np.random.default_rng(0)
    s, k = 400, 4
    p1 = metrics.softmax(rng.normal(0, 1, (s, 3)))
    y1 = rng.integers(0, 3, s)
    # each study: 4 identical images
    p, y = np.repeat(p1, k, 0), np.repeat(y1, k)
    studies = np.repeat(np.array([f"s{i:04d}" for i in range(s)]), k)
    width = lambda d: d["high"] - d["low"]
    grouped = ev.interval("accuracy", p, y, studies, n_boot=2000, seed=0)
    naive = ev.interval("accuracy", p, y, None, n_boot=2000, seed=0)
    dedup = ev.interval("accuracy", p1, y1, np.arange(s), n_boot=2000, seed=1)
    assert grouped["estimate"] == naive["estimate"] == dedup["estimate"]
    assert 1.7 < width(grouped) / width(naive) < 2.3
    assert abs(width(grouped) / width(dedup) - 1) < 0.15
    assert abs(grouped["se"] / dedup["se"] - 1) < 0.15


# ---------------------------------------------------------------------------------------------- pairing


def test_paired_delta_of_identical_methods_is_exactly_zero():
    p, y = _random(seed=2)
    g = np.arange(len(y)) // 2
    for name in ("accuracy", "nll", "brier", "ece"):
        d = ev.paired_delta(name, p, p.copy(), y, g, n_boot=500, seed=0)
        assert d["delta"] == 0 and d["low"] == 0 and d["high"] == 0 and not d["excludes_zero"]


def test_pairing_narrows_the_interval_of_correlated_methods():
    rng = np.random.default_rng(0)
    n = 821
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1.5, (n, 3)) + 2 * np.eye(3)[y]
    pa = metrics.softmax(logits)
    pb = metrics.softmax(logits / 1.5 + rng.normal(0, 0.2, (n, 3)))  # positively correlated with a
    g = np.arange(n) // 3
    d = ev.paired_delta("nll", pa, pb, y, g, n_boot=1000, seed=0)
    a = ev.interval("nll", pa, y, g, n_boot=1000, seed=0)
    b = ev.interval("nll", pb, y, g, n_boot=1000, seed=1)
    assert d["delta"] == pytest.approx(metrics.nll(pa, y) - metrics.nll(pb, y), abs=1e-12)
    assert d["se"] < 0.5 * np.hypot(a["se"], b["se"])
    assert d["high"] - d["low"] < 0.5 * np.hypot(a["high"] - a["low"], b["high"] - b["low"])
    assert d["low"] <= d["delta"] <= d["high"]


def test_interval_level_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    n, p_true = 4000, 0.7
    y = np.where(rng.random(n) < p_true, 0, 1)
    probs = np.repeat([[0.9, 0.1]], n, 0)
    acc = (y == 0).mean()
    half = np.sqrt(acc * (1 - acc) / n)
    for level, z in ((0.95, 1.959964), (0.8, 1.281552)):
        d = ev.interval("accuracy", probs, y, None, n_boot=2000, seed=0, level=level)
        assert (d["high"] - d["low"]) / (2 * z * half) == pytest.approx(1, abs=0.08)
        assert d["se"] == pytest.approx(half, rel=0.08)


def test_coverage_of_the_percentile_interval():
    rng = np.random.default_rng(0)
    p_true, n, hits, reps = 0.7, 120, 0, 200
    probs = np.array([[0.9, 0.1]])
    for r in range(reps):
        correct = rng.random(n) < p_true
        y = np.where(correct, 0, 1)
        d = ev.interval("accuracy", np.repeat(probs, n, 0), y, None, n_boot=400, seed=r)
        hits += d["low"] <= p_true <= d["high"]
    assert 0.90 <= hits / reps <= 0.985  # 0.96 with these seeds


# ---------------------------------------------------------------------------------------------- members


def test_member_interval():
    rng = np.random.default_rng(0)
    n, m = 600, 5
    y = rng.integers(0, 3, n)
    base = rng.normal(0, 1.5, (n, 3)) + 1.5 * np.eye(3)[y]
    members = np.stack([metrics.softmax(base + rng.normal(0, 1.0, (n, 3))) for _ in range(m)])
    g = np.arange(n) // 2
    d = ev.member_interval("nll", members, y, g, n_boot=1000, seed=0)
    assert d["estimate"] == pytest.approx(np.mean([metrics.nll(q, y) for q in members]), abs=1e-12)
    assert d["low"] < d["estimate"] < d["high"]
    # identical members: exactly the test-set interval of one model
    same = ev.member_interval("nll", np.stack([members[0]] * m), y, g, n_boot=1000, seed=0)
    one = ev.interval("nll", members[0], y, g, n_boot=1000, seed=0)
    assert all(same[k] == pytest.approx(one[k], rel=1e-12) for k in ("estimate", "low", "high", "se"))
    # members that differ a lot in quality: the member draw widens the interval beyond the
    # test-set noise of the same mean-over-members metric
    spread = members.copy()
    spread[0] = metrics.softmax(base * 0.2)
    spread[1] = metrics.softmax(base * 3.0)
    wide = ev.member_interval("nll", spread, y, g, n_boot=1000, seed=0)
    W = ev.study_weights(g, 1000, seed=0)
    studies_only = np.mean([ev.weighted_metric("nll", q, y, W) for q in spread], 0)
    assert wide["se"] > 1.5 * studies_only.std(ddof=1)
    # and it adds roughly the member variance / M to the test-set variance
    member_var = np.var([metrics.nll(q, y) for q in spread], ddof=0) / m
    assert wide["se"] ** 2 == pytest.approx(studies_only.var(ddof=1) + member_var, rel=0.25)


def test_paired_member_delta():
    rng = np.random.default_rng(1)
    n, m = 500, 4
    y = rng.integers(0, 2, n)
    base = rng.normal(0, 1, (n, 2)) + 2 * np.eye(2)[y]
    a = np.stack([metrics.softmax(base + rng.normal(0, 0.5, (n, 2))) for _ in range(m)])
    b = np.stack([metrics.softmax(2 * np.log(q)) for q in a])  # the same members, sharpened
    g = np.arange(n) // 4
    d = ev.paired_member_delta("nll", a, b, y, g, n_boot=800, seed=0)
    want = np.mean([metrics.nll(p, y) for p in a]) - np.mean([metrics.nll(p, y) for p in b])
    assert d["delta"] == pytest.approx(want, abs=1e-12) and d["low"] <= d["delta"] <= d["high"]
    z = ev.paired_member_delta("ece", a, a.copy(), y, g, n_boot=300, seed=0)
    assert z["delta"] == z["low"] == z["high"] == 0
    # a plain N x C array is used for every member, on either side
    ens = a.mean(0)
    d2 = ev.paired_member_delta("brier", a, ens, y, g, n_boot=500, seed=3)
    d3 = ev.paired_member_delta("brier", a, np.stack([ens] * m), y, g, n_boot=500, seed=3)
    assert d2 == d3
    d4 = ev.paired_member_delta("brier", ens, a, y, g, n_boot=500, seed=3)
    assert d4["delta"] == pytest.approx(-d2["delta"]) and d4["low"] == pytest.approx(-d2["high"])
    # both plain arrays: the study-paired delta of two models
    d5 = ev.paired_member_delta("nll", a[0], b[0], y, g, n_boot=500, seed=3)
    d6 = ev.paired_delta("nll", a[0], b[0], y, g, n_boot=500, seed=3)
    assert all(d5[k] == pytest.approx(d6[k], rel=1e-12) for k in ("delta", "low", "high", "se"))


# ---------------------------------------------------------------------------------------------- combined score


def test_cv_folds_never_split_a_study():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 300, 1200).astype(str)
    y = rng.random(1200) < 0.25
    fold = ev.study_folds(y, g, n_splits=5, seed=0)
    assert set(fold) == set(range(5))
    for s in np.unique(g):
        assert len(set(fold[g == s])) == 1


def test_cv_logistic_score_does_not_leak():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    s, k, f = 500, 4, 40
    # 500 studies of 4 identical images; pure-noise features and labels per study
    X = np.repeat(rng.normal(size=(s, f)), k, 0)
    y = np.repeat(rng.random(s) < 0.3, k)
    g = np.repeat(np.arange(s), k)
    oof = ev.cv_logistic_score(X, y, g, n_splits=5, seed=0)
    auc_oof = roc_auc_score(y, oof)
    insample = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y).predict_proba(X)[:, 1]
    assert 0.4 < auc_oof < 0.6
    assert roc_auc_score(y, insample) > auc_oof + 0.05
    # a real signal is found out of fold
    X2 = np.c_[X[:, :3], y + rng.normal(0, 1, len(y))]
    assert roc_auc_score(y, ev.cv_logistic_score(X2, y, g)) > 0.7
    assert np.array_equal(oof, ev.cv_logistic_score(X, y, g, n_splits=5, seed=0))


# ---------------------------------------------------------------------------------------------- calibration reference


def test_ece_reference_of_a_calibrated_predictor():
    rng = np.random.default_rng(0)

    def calibrated(n):
        p = metrics.softmax(rng.normal(0, 1.5, (n, 4)))
        y = (rng.random(n)[:, None] > p.cumsum(1)).sum(1).clip(0, 3)  # y ~ Categorical(p)
        return p, y

    inside, reps = 0, 40
    for r in range(reps):
        p, y = calibrated(821)
        ref = ev.ece_reference(p, n_boot=300, seed=r)
        inside += ref["low"] <= metrics.ece(p, y) <= ref["high"]
    assert inside / reps >= 0.85
    means = [ev.ece_reference(calibrated(n)[0], n_boot=300, seed=0)["mean"] for n in (200, 800, 3200)]
    assert 0 < means[2] < means[1] < means[0]
    # a miscalibrated predictor's ECE lies above the reference
    p, y = calibrated(821)
    sharp = metrics.softmax(3 * np.log(p))
    assert metrics.ece(sharp, y) > ev.ece_reference(sharp, 300)["high"]


def test_ece_reference_samples_labels_by_inverse_cdf():
    # one-hot probabilities: a calibrated predictor is always right, the ECE is exactly 0
    p = np.eye(3)[[0, 1, 2, 1]]
    assert ev.ece_reference(p, 50) == {"mean": 0.0, "low": 0.0, "high": 0.0}
    # uniform probabilities over 2 classes, 1 image: ECE is |1 - 0.5| or |0 - 0.5| = 0.5 always
    assert ev.ece_reference(np.array([[0.5, 0.5]]), 50)["mean"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- formatting


def test_formatting():
    assert ev.fmt_interval({"estimate": 0.02581, "low": 0.0210, "high": 0.03049}, scale=100) == "2.58 [2.10, 3.05]"
    assert ev.fmt_interval({"mean": 0.5, "low": 0.25, "high": 0.75}, digits=1) == "0.5 [0.2, 0.8]"
    assert ev.fmt_delta({"delta": -0.0047, "low": -0.009, "high": -0.0003}, scale=100) == "-0.47 [-0.90, -0.03]"
    # a nonzero value that rounds to zero keeps its sign, so an interval [-0.0001, 0.012] reads as containing 0
    assert ev.fmt_delta({"delta": 0.0, "low": -0.0001, "high": 0.012}, digits=2) == "+0.00 [-0.00, +0.01]"
    assert ev.fmt_delta({"delta": -0.00006, "low": -0.00012, "high": -0.00001}, digits=3) == "-0.000 [-0.000, -0.000]"
    # a value with an optional interval: NaN ends (every replicate failed) or none give the value alone
    assert ev.fmt_estimate(0.5701, [0.511, 0.629]) == "0.57 [0.51, 0.63]"
    assert ev.fmt_estimate(0.5701, [float("nan"), float("nan")]) == ev.fmt_estimate(0.5701) == "0.57"
    assert ev.fmt_estimate(None) == ev.fmt_estimate(float("nan"), [0.1, 0.2]) == "-"


def test_weighted_kappa_matches_scikit_learn_with_sample_weight():
    from sklearn.metrics import cohen_kappa_score

    from utils.evaluation import evidence, metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    probs = metrics.softmax(rng.normal(0, 1, (300, 2)) + 1.5 * np.eye(2)[y])
    w = rng.integers(0, 4, 300).astype(float)
    got = evidence.weighted_metric("kappa", probs, y, w[None])[0]
    assert got == pytest.approx(cohen_kappa_score(y, probs.argmax(1), sample_weight=w), abs=1e-12)
    assert evidence.interval("kappa", probs, y, None, n_boot=200)["estimate"] == pytest.approx(metrics.cohen_kappa(probs, y))


def test_the_ece_interval_surrounds_its_estimate_despite_the_resampling_bias():
    """Resampling studies raises the ECE: nearly every replicate lies above the estimate, so a plain
    percentile interval would sit beside it."""
    from utils.evaluation import evidence, metrics

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 4, (821, 7))
    y = np.array([rng.choice(7, p=p) for p in metrics.softmax(logits)])
    mp = metrics.softmax(logits[None] + rng.normal(0, 0.5, (5, 821, 7)))
    groups = np.repeat(np.arange(330), 3)[:821]
    d = evidence.member_interval("ece", mp, y, groups, n_boot=1000, seed=0)
    plain_percentiles = evidence.percentile_interval
    try:  # the plain percentile interval, as before the fix, misses the estimate
        evidence.percentile_interval = lambda reps, level, estimate=None: plain_percentiles(reps, level)
        plain = evidence.member_interval("ece", mp, y, groups, n_boot=1000, seed=0)
    finally:
        evidence.percentile_interval = plain_percentiles
    assert plain["low"] > plain["estimate"]
    assert d["low"] < d["estimate"] < d["high"]
    assert d["high"] - d["low"] == pytest.approx(2 * 1.96 * d["se"], rel=0.3)


def test_mean_interval_groups_studies_and_skips_nan():
    from utils.evaluation import evidence

    rng = np.random.default_rng(0)
    v = np.repeat(rng.random(100), 4)  # 4 identical images per study
    per_image = evidence.mean_interval(v, None, n_boot=800)
    per_study = evidence.mean_interval(v, np.repeat(np.arange(100), 4), n_boot=800)
    assert per_study["estimate"] == pytest.approx(v.mean())
    assert (per_study["high"] - per_study["low"]) > 1.6 * (per_image["high"] - per_image["low"])
    w = v.copy()
    w[:8] = np.nan
    assert evidence.mean_interval(w, None, n_boot=100)["estimate"] == pytest.approx(v[8:].mean())
    d = evidence.paired_mean_delta(v, v, np.repeat(np.arange(100), 4), n_boot=100)
    assert d["delta"] == 0 and d["low"] == 0 and d["high"] == 0 and not d["excludes_zero"]


def test_mean_intervals_are_mean_interval_per_column():
    from utils.evaluation import evidence

    rng = np.random.default_rng(1)
    V = rng.random((120, 4))
    V[:5, 2] = np.nan
    groups = np.repeat(np.arange(40), 3)
    many = evidence.mean_intervals(V, groups, n_boot=500, seed=3)
    for k in range(4):
        one = evidence.mean_interval(V[:, k], groups, n_boot=500, seed=3)
        assert set(many[k]) == set(one)
        for key in one:
            assert many[k][key] == pytest.approx(one[key], rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="N x K"):
        evidence.mean_intervals(V[:, 0], groups)


def test_flagging_table_reports_auroc_and_paired_difference_from_the_reference():
    from sklearn.metrics import roc_auc_score

    from utils.evaluation import evidence

    rng = np.random.default_rng(1)
    err = rng.random(400) < 0.2
    good = err + rng.normal(0, 0.7, 400)
    noise = rng.normal(0, 1, 400)
    groups = np.repeat(np.arange(200), 2)
    tab = evidence.flagging_table({"good": good, "noise": noise}, err, groups, reference="good",
                                  combine={"both": ["good", "noise"]}, n_boot=300).set_index("score")
    assert tab.loc["good", "auroc"] == pytest.approx(roc_auc_score(err, good))
    assert np.isnan(tab.loc["good"].get("delta", np.nan))
    assert tab.loc["noise", "delta_high"] < 0  # noise is worse than the good score, and the interval shows it
    assert tab.loc["both", "auroc"] > 0.7  # the out-of-fold combination keeps the good score's information


def test_a_lumpy_paired_difference_gets_no_verdict_its_plain_interval_does_not_support():
    # replicates of a difference of one image: mostly exactly 0, the estimate beside them (the case the
    # re-centred interval alone turned into "worse": [-0.17, -0.02] around an estimate of -0.02)
    reps = np.r_[np.zeros(570), np.full(300, -0.0012), np.full(130, -0.0024)]
    d = ev.delta_summary(-0.0012, reps, 0.95)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert d["low"] <= lo and d["high"] >= hi and hi == 0.0
    assert not d["excludes_zero"]
    shifted = ev.delta_summary(0.1, np.random.default_rng(0).normal(0.1, 0.01, 2000), 0.95)
    assert shifted["excludes_zero"] and shifted["low"] > 0.07  # a clear difference keeps its verdict


def test_intervals_stay_inside_the_range_of_their_metric():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    probs = np.c_[1 - y, y].astype(float) * 0.98 + 0.01  # nearly perfect: ECE ~ 0.01, its replicates lower
    d = ev.interval("ece", probs, y, np.arange(60), n_boot=300)
    assert d["low"] >= 0 and d["high"] <= 1
    a = ev.interval("accuracy", probs, y, np.arange(60), n_boot=300)
    assert a["high"] <= 1 and a["estimate"] == 1.0


def test_study_weights_are_kept_read_only_and_equal_a_fresh_draw(monkeypatch):
    evidence = ev
    g = np.repeat(np.arange(30), 3)
    a = evidence.study_weights(g, 50, seed=4)
    assert evidence.study_weights(g, 50, seed=4) is a and not a.flags.writeable
    monkeypatch.setattr(evidence, "_WEIGHTS", {})
    fresh = evidence.study_weights(g, 50, seed=4)
    assert fresh is not a and np.array_equal(fresh, a)
    assert not np.array_equal(evidence.study_weights(g, 50, seed=5), a)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
