"""Metrics against hand-computed values and independent implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.evaluation import metrics


def _random(n=2000, c=7, seed=0):
    rng = np.random.default_rng(seed)
    p = metrics.softmax(rng.normal(0, 2, (n, c)))
    return p, rng.integers(0, c, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_equals_torchmetrics(seed):
    from torchmetrics.functional.classification import multiclass_calibration_error

    p, y = _random(seed=seed)
    ref = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=7, n_bins=15, norm="l1")
    assert metrics.ece(p, y) == pytest.approx(float(ref), abs=1e-6)


def test_ece_of_calibrated_predictions_tends_to_zero():
    rng = np.random.default_rng(0)
    errs = []
    for n in (500, 5000, 50000):
        p = metrics.softmax(rng.normal(0, 2, (n, 4)))
        y = np.array([rng.choice(4, p=pi) for pi in p])  # labels drawn from the predictions: calibrated
        errs.append(metrics.ece(p, y))
    assert errs[2] < errs[0] and errs[2] < 0.01


def test_nll_brier_accuracy_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([0, 1])
    assert metrics.nll(p, y) == pytest.approx(-(np.log(0.7) + np.log(0.3)) / 2)
    assert metrics.brier(p, y) == pytest.approx(((0.09 + 0.04 + 0.01) + (0.01 + 0.49 + 0.36)) / 2)
    assert metrics.accuracy(p, y) == 0.5


def test_macro_f1_counts_absent_classes_as_zero():
    p = np.eye(3)[[0, 0, 1]]
    assert metrics.macro_f1(p, np.array([0, 0, 1])) == pytest.approx(2 / 3)  # class 2 never occurs


def test_ece_by_hand_on_two_bins():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 0.5, gap 0.4; bin of 0.6: accuracy 1.0, gap 0.4
    assert metrics.ece(p, y, n_bins=10) == pytest.approx(0.4)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected probs N x C"):
        metrics.nll(np.ones(3), np.zeros(3))


def test_reliability_bins_reconstruct_the_ece():
    p, y = _random(seed=4)
    r = metrics.reliability(p, y)
    ok = r["count"] > 0
    recon = (r["count"][ok] * np.abs(r["accuracy"][ok] - r["confidence"][ok])).sum() / len(y)
    assert recon == pytest.approx(metrics.ece(p, y))
    assert metrics.mce(p, y) >= metrics.ece(p, y)


def test_classwise_ece_by_hand():
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    # class 0, 2 bins: p0 in (0.5, 1]: {0.8 (hit), 0.6 (miss)} -> |1 - 1.4| = 0.4; p0 in [0, 0.5]: {0.3 (miss)} -> 0.3
    # class 1: {0.2 (miss), 0.4 (hit)} -> |1 - 0.6| = 0.4; {0.7 (hit)} -> 0.3
    np.testing.assert_allclose(metrics.classwise_ece(p, y, n_bins=2), [0.7 / 3, 0.7 / 3])


def test_entropy_and_mutual_information():
    assert metrics.entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(np.log(2))
    agree = np.array([[[0.9, 0.1]], [[0.9, 0.1]]])
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert metrics.mutual_information(agree)[0] == pytest.approx(0, abs=1e-9)
    assert metrics.mutual_information(disagree)[0] == pytest.approx(np.log(2))


def test_selective_prediction_refers_the_uncertain_first():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.55, 0.45]])
    y = np.array([0, 1, 0, 0])  # the wrong one (0.6) is the second least confident
    s = metrics.selective(p, y)
    np.testing.assert_allclose(s["accuracy"], [1, 1, 2 / 3, 3 / 4])
    assert s["aurc"] == pytest.approx(np.mean([0, 0, 1 / 3, 1 / 4]))


def test_binary_metrics_match_scikit_learn():
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1)
    p = np.stack([1 - p1, p1], 1)
    assert metrics.binary_auroc(p, y) == pytest.approx(roc_auc_score(y, p1))
    assert metrics.cohen_kappa(p, y) == pytest.approx(cohen_kappa_score(y, (p1 > 0.5).astype(int)))


def test_study_level_is_the_mean_of_a_studys_images():
    p = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    sp, sy, ids = metrics.study_level(p, np.array([1, 1, 0]), ["a", "a", "b"])
    np.testing.assert_allclose(sp, [[0.4, 0.6], [0.9, 0.1]])
    assert sy.tolist() == [1, 0] and ids.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="different labels"):
        metrics.study_level(p, np.array([1, 0, 0]), ["a", "a", "b"])


# --------------------------------------------------------------------------- bins at their exact edges


def _at_edges(n_bins=15, seed=0):
    """Rows whose top confidence is exactly k/n (a Python float, k = 1..n), the rest spread evenly over n other
    classes (so that 1/n is the top); about half of them right. Returns probabilities, labels and k per row."""
    classes = n_bins + 1
    rng = np.random.default_rng(seed)
    ks = np.repeat(np.arange(1, n_bins + 1), rng.integers(2, 6, n_bins))
    conf = ks / n_bins
    p = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, 1)
    p[:, 0] = conf
    y = np.where(rng.random(len(ks)) < 0.5, 0, 1 + rng.integers(0, classes - 1, len(ks)))
    return p, y, ks


def test_an_exact_edge_k_over_n_lies_in_the_bin_below_it():
    """Right-closed bins (k/n, (k+1)/n]: k/n belongs to bin k - 1, and 1 to the last bin."""
    for n_bins in (15, 25, 10):
        p, y, ks = _at_edges(n_bins)
        r = metrics.reliability(p, y, n_bins)
        np.testing.assert_array_equal(r["count"], np.bincount(ks - 1, minlength=n_bins))
        right = (p.argmax(1) == y).astype(float)
        by_hand = sum(abs(right[ks == k].sum() - (ks == k).sum() * k / n_bins) for k in range(1, n_bins + 1))
        assert metrics.ece(p, y, n_bins) == pytest.approx(by_hand / len(y), abs=1e-12)
    # 0.56 = 14/25 in float64 times 25 rounds up to 14.000000000000002: a ceil-based binning put it one bin high
    assert metrics.reliability(np.array([[0.56, 0.44]]), np.array([0]), 25)["count"][13] == 1


def test_ece_at_exact_edges_against_torchmetrics():
    """torchmetrics 1.9 bins float32 confidences left-closed, [k/n, (k+1)/n), against float32 linspace edges, and
    gives a confidence of exactly 1 a bin of its own. Pushed 1e-6 off an edge (far more than float32 rounding,
    4e-8 at 1) a confidence is binned alike by both, and the two agree to float32 precision; exactly on the
    edges they need not, and at 1 they differ as documented in metrics.ece."""
    from torchmetrics.functional.classification import multiclass_calibration_error as tm_ece

    def ref(p, y):
        return float(tm_ece(torch.tensor(p), torch.tensor(y), num_classes=p.shape[1], n_bins=15, norm="l1"))

    p, y, ks = _at_edges()
    below = p.copy()
    below[:, 0] -= 1e-6  # the bin below the edge in both definitions: ours holds the edge itself
    assert metrics.ece(p, y) == pytest.approx(ref(below, y), abs=3e-6)
    above = p[ks < 15].copy()
    above[:, 0] += 1e-6  # the bin above the edge in both definitions
    assert metrics.ece(above, y[ks < 15]) == pytest.approx(ref(above, y[ks < 15]), abs=3e-6)
    # confidence exactly 1 (common for a saturated float32 softmax): one bin with 0.95 here, a 16th in torchmetrics
    q, t = np.array([[1.0, 0.0], [0.95, 0.05]]), np.array([1, 0])
    assert metrics.ece(q, t) == pytest.approx(abs(0.5 - 0.975))
    assert ref(q, t) == pytest.approx((abs(0 - 1.0) + abs(1 - 0.95)) / 2)


# ----------------------------------------------------------------------------------------------
# adaptive ECE, AURC, AUGRC


def test_adaptive_ece_equals_ece_when_bins_coincide():
    """Confidences spread so that every equal-width bin (k/15, (k+1)/15] holds exactly m images: the
    equal-mass bins are the same bins, so the two ECEs agree."""
    rng = np.random.default_rng(0)
    m, nb, c = 4, 15, 200
    conf = np.concatenate([(k + (np.arange(m) + 0.5) / m) / nb for k in range(nb)])  # all >= 1/c
    p = np.tile(((1 - conf) / (c - 1))[:, None], (1, c))
    top = rng.integers(0, c, len(conf))
    p[np.arange(len(conf)), top] = conf
    y = np.where(rng.uniform(size=len(conf)) < conf, top, (top + 1) % c)
    assert (p.argmax(1) == top).all()
    assert metrics.adaptive_ece(p, y, nb) == pytest.approx(metrics.ece(p, y, nb), abs=1e-12)


def test_adaptive_ece_by_hand_and_loop():
    # 6 images, 3 equal-mass bins of 2 after sorting by confidence
    conf = np.array([0.95, 0.55, 0.7, 0.6, 0.9, 0.8])
    correct = np.array([1, 0, 1, 1, 0, 1])
    p = np.stack([conf, 1 - conf], 1)
    y = np.where(correct == 1, 0, 1)
    # sorted: (0.55,0) (0.6,1) | (0.7,1) (0.8,1) | (0.9,0) (0.95,1)
    hand = (abs(1 - 1.15) + abs(2 - 1.5) + abs(1 - 1.85)) / 6
    assert metrics.adaptive_ece(p, y, 3) == pytest.approx(hand)

    # against an independent loop on random data, N not a multiple of the number of bins
    rng = np.random.default_rng(3)
    p = metrics.softmax(rng.normal(0, 2, (1003, 5)))
    y = rng.integers(0, 5, 1003)
    cf, ok = p.max(1), (p.argmax(1) == y)
    idx = sorted(range(1003), key=lambda i: cf[i])
    sizes = [1003 // 15 + (1 if b < 1003 % 15 else 0) for b in range(15)]
    total, start = 0.0, 0
    for s in sizes:
        b = idx[start:start + s]
        start += s
        total += s / 1003 * abs(np.mean(ok[b]) - np.mean(cf[b]))
    assert metrics.adaptive_ece(p, y) == pytest.approx(total, abs=1e-12)


def test_aurc_is_selective_aurc():
    p, y = _random(seed=4)
    score = np.random.default_rng(4).uniform(size=len(y))
    assert metrics.aurc(p, y) == metrics.selective(p, y)["aurc"]
    assert metrics.aurc(p, y, score) == metrics.selective(p, y, score)["aurc"]


def _augrc_reference(wrong, conf):
    """Direct integration, written independently: for each distinct confidence threshold t (accept
    conf >= t), the point (coverage, P(accepted and wrong)); trapezoids between consecutive points from (0, 0)."""
    n = len(wrong)
    pts = [(0.0, 0.0)] + [((conf >= t).sum() / n, (wrong & (conf >= t)).sum() / n)
                          for t in sorted(set(conf.tolist()), reverse=True)]
    return sum((c1 - c0) * (r0 + r1) / 2 for (c0, r0), (c1, r1) in zip(pts[:-1], pts[1:]))


@pytest.mark.parametrize("seed", [0, 1])
def test_augrc_matches_direct_integration_and_auroc_identity(seed):
    from sklearn.metrics import roc_auc_score

    p, y = _random(n=600, c=4, seed=seed)
    p = np.round(p, 2)  # ties in confidence (rows need not sum to 1 exactly here)
    conf, wrong = p.max(1), p.argmax(1) != y
    val = metrics.augrc(p, y)
    assert val == pytest.approx(_augrc_reference(wrong, conf), abs=1e-12)
    # Traub et al. (2024): AUGRC = (1 - AUROC) acc (1 - acc) + (1 - acc)^2 / 2
    acc = 1 - wrong.mean()
    auroc = roc_auc_score(~wrong, conf)
    assert val == pytest.approx((1 - auroc) * acc * (1 - acc) + (1 - acc) ** 2 / 2, abs=1e-12)


def test_augrc_extremes_and_custom_score():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # the only error is the least confident
    assert metrics.augrc(p, y) == pytest.approx(0.25 ** 2 / 2)
    # a score that refers the error last: the error is accepted first
    score = np.array([1.0, 2.0, 3.0, 0.0])
    assert metrics.augrc(p, y, score) == pytest.approx(0.75 * 0.25 + 0.25 ** 2 / 2)


def test_a_study_of_equal_probabilities_keeps_them_exactly():
    """pandas' mean of three copies of 0.8132702392002724 is not that float; tied studies must stay tied, or a
    constant predictor's study AUROC moves with the number of views (it read 0.47 instead of 0.50 on one part)."""
    import pandas as pd

    v = 0.8132702392002724
    assert pd.Series([v, v, v]).groupby([0, 0, 0]).mean().iloc[0] != v  # the float fact the fix is for
    p = np.array([[1 - v, v]] * 3 + [[1 - v, v]] * 2 + [[0.5, 0.5], [0.7, 0.3]])
    sp, sy, _ = metrics.study_level(p, [1, 1, 1, 0, 0, 1, 1], ["a", "a", "a", "b", "b", "c", "c"])
    assert sp[0, 1] == v and sp[1, 1] == v and sp[2, 1] == pytest.approx(0.4)
