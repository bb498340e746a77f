from __future__ import annotations

import numpy as np
import pytest

from utils import calibration, ensembles, metrics


def test_table_rows_are_means_over_members_and_subsets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    mp = metrics.softmax(rng.normal(0, 2, (4, 200, 3)))
    la = metrics.softmax(rng.normal(0, 1, (4, 200, 3)))
    tab = calibration.table({"MAP": dict(probs=mp), "Laplace, kron": dict(probs=la)}, y).set_index("method")
    eces = [metrics.ece(p, y) for p in mp]
    assert tab.loc["MAP", "ece"] == pytest.approx(np.mean(eces))
    assert tab.loc["MAP", "ece_se"] == pytest.approx(np.std(eces, ddof=1) / 2)
    full = tab.loc["deep ensemble, k=4"]
    assert full.nll == pytest.approx(metrics.nll(ensembles.ensemble_probs(mp), y)) and np.isnan(full.nll_se)
    assert tab.loc["mixture of Laplace (kron), k=4", "nll"] == pytest.approx(metrics.nll(la.mean(0), y))
    assert "deep ensemble, k=1" not in tab.index  # that is the MAP row
    shown = calibration.format_table(tab.reset_index())
    assert shown.loc[0, "ece (%)"].startswith(f"{100 * np.mean(eces):.2f} ± ")
