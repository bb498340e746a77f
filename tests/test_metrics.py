"""Metrics against hand-computed values and independent implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import metrics


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
