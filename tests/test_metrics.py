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
