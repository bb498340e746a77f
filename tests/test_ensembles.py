from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.chapters import ensembles
from utils.evaluation import metrics


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


def test_reading_states_the_direction_only_where_the_interval_excludes_zero():
    mp, y = _members()
    curve = ensembles.size_curve(mp, y)
    single = pd.DataFrame([metrics.summary(p, y) for p in mp])
    div = ensembles.diversity(mp, y)
    gain = dict(accuracy=dict(delta=0.01, low=0.002, high=0.02), nll=dict(delta=-0.05, low=-0.08, high=-0.01),
                ece=dict(delta=-0.01, low=-0.02, high=0.001))
    text = ensembles.reading(gain, curve.iloc[-1], single, div, "phantom", 5)
    assert "does not measurably change the ECE" in text and "+1.00 [+0.20, +2.00] points" in text
    assert "-0.05 [-0.08, -0.01] nats" in text and "ensemble of 5 members" in text
    gain["ece"] = dict(delta=-0.01, low=-0.02, high=-0.001)
    assert "lowers the ECE" in ensembles.reading(gain, curve.iloc[-1], single, div, "phantom", 5)
    gain["ece"] = dict(delta=0.01, low=0.001, high=0.02)
    assert "raises the ECE" in ensembles.reading(gain, curve.iloc[-1], single, div, "phantom", 5)


def test_member_table_has_a_row_per_member():
    metas = [dict(member=m, seed=m, epochs_run=3, best_epoch=2, best_val_nll=0.5, train_seconds=1.0, device="cpu")
             for m in range(3)]
    t = ensembles.member_table(metas)
    assert list(t.index) == [0, 1, 2] and t.val_nll.tolist() == [0.5] * 3


def test_size_curve_figure_has_one_kind_of_bar_the_sd_over_subsets_and_none_at_the_full_ensemble():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    mp, y = _members()
    curve = ensembles.size_curve(mp, y)
    fig = ensembles.plot_size_curve(curve)
    fig.canvas.draw()
    nll_ax = fig.axes[1]
    bars = [c for c in nll_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    half = {round(float(s[0, 0])): (s[1, 1] - s[0, 1]) / 2 for s in segments}
    assert set(half) == {1, 2, 3, 4}  # a bar wherever there is more than one subset, none at k = M = 5
    single = [metrics.nll(p, y) for p in mp]
    assert half[1] == pytest.approx(np.std(single, ddof=1))  # SD over the subsets, not the SE of the old figure
    sd = ensembles.subset_sd(curve, "nll")
    for k in (2, 3, 4):
        assert half[k] == pytest.approx(sd[curve.k == k].item())
    words = " ".join([t.get_text() for t in fig.legends[0].get_texts()] + [a.get_title() for a in fig.axes])
    assert "SD over the k-member subsets" in words and "no bar" in words and "standard error" not in words
    plt.close(fig)


def test_size_curve_figure_y_labels_clear_the_panel_to_their_left():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nan = np.nan
    curve = pd.DataFrame(dict(  # the scale of the report's curve, whose NLL label ran into the accuracy panel
        k=[1, 2, 3, 4, 5], subsets=[5, 2, 10, 5, 1], accuracy=[0.8862, 0.8926, 0.8911, 0.8935, 0.892],
        nll=[0.3435, 0.3254, 0.3239, 0.3216, 0.3201], ece=[0.0345, 0.0492, 0.0504, 0.0509, 0.0542],
        se_accuracy=[0.001, 0.003, nan, nan, nan], sd_accuracy=[nan, nan, 0.0047, 0.0036, nan],
        se_nll=[0.0059, 0.0011, nan, nan, nan], sd_nll=[nan, nan, 0.004, 0.0026, nan],
        se_ece=[0.0015, 0.0005, nan, nan, nan], sd_ece=[nan, nan, 0.0047, 0.0031, nan]))
    fig = ensembles.plot_size_curve(curve)
    fig.canvas.draw()
    for left, ax in zip(fig.axes[:2], fig.axes[1:3]):
        assert not ax.yaxis.label.get_window_extent().overlaps(left.get_window_extent())
    plt.close(fig)


def test_size_curve_axes_span_at_least_a_few_points_so_a_small_change_does_not_fill_the_panel():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mp, y = _members()
    fig = ensembles.plot_size_curve(ensembles.size_curve(mp, y))
    for ax, c in zip(fig.axes[:3], ("accuracy", "nll", "ece")):
        lo, hi = ax.get_ylim()
        scale = 1 if c == "nll" else 100
        assert hi - lo >= ensembles.MIN_SPAN[c] * scale - 1e-9
    plt.close(fig)
