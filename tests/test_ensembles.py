from __future__ import annotations

import numpy as np
import pytest

from utils import ensembles, metrics


def _members(m=5, n=300, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return metrics.softmax(rng.normal(0, 2, (m, n, c))), rng.integers(0, c, n)


def test_ensemble_of_one_member_is_the_member():
    mp, y = _members()
    np.testing.assert_array_equal(ensembles.ensemble_probs(mp, [2]), mp[2])
    curve = ensembles.size_curve(mp[:1], y)
    assert curve.accuracy.iloc[0] == metrics.accuracy(mp[0], y)


def test_ensemble_is_the_mean_of_probabilities():
    mp, _ = _members()
    np.testing.assert_allclose(ensembles.ensemble_probs(mp, [0, 3]), (mp[0] + mp[3]) / 2)


@pytest.mark.parametrize("m,k,how,count", [(5, 1, "disjoint", 5), (5, 2, "disjoint", 2), (5, 3, "all subsets", 10),
                                           (15, 10, "random subsets", 20), (5, 5, "all members", 1)])
def test_member_subsets(m, k, how, count):
    subsets, drawn = ensembles.member_subsets(m, k, seed=0)
    assert drawn.startswith(how) and len(subsets) == count == len(set(subsets))
    assert all(len(s) == k and len(set(s)) == k for s in subsets)
    if how == "disjoint":
        flat = [i for s in subsets for i in s]
        assert len(flat) == len(set(flat))


def test_size_curve_standard_error_only_over_disjoint_subsets():
    mp, y = _members()
    curve = ensembles.size_curve(mp, y).set_index("k")
    single = [metrics.nll(p, y) for p in mp]
    assert curve.loc[1, "nll"] == pytest.approx(np.mean(single))
    assert curve.loc[1, "se_nll"] == pytest.approx(np.std(single, ddof=1) / np.sqrt(5))
    assert np.isnan(curve.loc[3, "se_nll"]) and curve.loc[3, "sd_nll"] > 0
    assert np.isnan(curve.loc[5, "se_nll"]) and np.isnan(curve.loc[5, "sd_nll"])


def test_diversity_of_identical_and_opposite_members():
    p = np.eye(3)[[0, 1, 2, 0]][None].repeat(3, 0).astype(float)
    y = np.array([0, 1, 1, 0])
    p[2] = np.eye(3)[[1, 1, 2, 2]]
    div = ensembles.diversity(p, y)
    d = div["disagreement"].to_numpy()
    assert d[0, 1] == 0 and d[0, 2] == 0.5 and np.allclose(d, d.T)
    assert div["error_correlation"].iat[0, 1] == pytest.approx(1.0)
