from __future__ import annotations

import numpy as np
import pytest

from utils import calibration, ensembles, metrics


def _preds(seed=0, n=240, c=4, m=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    mk = lambda s: dict(probs=metrics.softmax(rng.normal(0, s, (m, n, c)) + 2 * np.eye(c)[y]))
    return {"MAP": mk(1.0), "Laplace, kron": mk(1.0)}, y, np.repeat(np.arange(n // 3), 3)


def test_interval_table_estimates_deltas_and_reference():
    preds, y, groups = _preds()
    tab = calibration.interval_table(preds, y, groups, n_boot=300).set_index("method")
    mp = preds["MAP"]["probs"]
    for c in ("accuracy", "nll", "ece"):
        assert tab.loc["MAP", c] == pytest.approx(np.mean([getattr(metrics, c)(q, y) for q in mp]))
        assert tab.loc["MAP", f"{c}_low"] <= tab.loc["MAP", c] <= tab.loc["MAP", f"{c}_high"]
    ens = tab.loc["deep ensemble, k=3"]
    assert ens.nll == pytest.approx(metrics.nll(mp.mean(0), y))
    # the ensemble's delta is against the MAP members as single models, paired
    assert ens.delta_nll == pytest.approx(metrics.nll(mp.mean(0), y) - tab.loc["MAP", "nll"])
    assert np.isnan(tab.loc["MAP"].get("delta_nll", np.nan))
    # a perfectly calibrated predictor's expected ECE is positive on a finite test set
    assert 0 < tab.loc["MAP", "ece_reference_low"] < tab.loc["MAP", "ece_reference"] < tab.loc["MAP", "ece_reference_high"]
    shown = calibration.format_interval_table(tab.reset_index())
    assert shown.loc[0, "Δ nll vs MAP"] == "–" and "[" in shown.loc[1, "Δ nll vs MAP"]


def test_verdict_needs_an_interval_that_excludes_zero():
    assert calibration.verdict(-0.01, -0.02, 0.001, lower_is_better=True) == "no difference shown"
    assert calibration.verdict(-0.01, -0.02, -0.001, lower_is_better=True) == "better"
    assert calibration.verdict(0.01, 0.001, 0.02, lower_is_better=False) == "better"
    assert calibration.verdict(0.01, 0.001, 0.02, lower_is_better=True) == "worse"
    preds, y, groups = _preds()
    preds["Laplace, kron"] = dict(probs=preds["MAP"]["probs"].copy())  # the same predictions: no difference
    v = calibration.verdicts(calibration.interval_table(preds, y, groups, n_boot=200))
    assert (v.loc["Laplace, kron"] == "no difference shown").all()
