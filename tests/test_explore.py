"""Notebook 00's comparison of the data with MURA's published counts."""
from __future__ import annotations

import pandas as pd
import pytest

from utils.chapters import explore
from utils.data import phantom


def test_mura_comparison_counts_studies_once_and_quotes_murass_table():
    idx = pd.DataFrame(dict(study_id=["a", "a", "b", "c", "d"], body_part=["HAND", "HAND", "HAND", "WRIST", "WRIST"],
                            label=[1, 1, 0, 0, 0], path=list("vwxyz")))
    t = explore.mura_comparison(idx)
    assert t.loc["HAND", "studies here"] == 2 and t.loc["WRIST", "studies here"] == 2  # views are not studies
    assert t.loc["HAND", "abnormal here %"] == 50.0 and t.loc["WRIST", "abnormal here %"] == 0.0
    normal, abnormal = phantom.MURA_STUDIES["WRIST"]
    assert t.loc["WRIST", "abnormal in MURA %"] == pytest.approx(round(100 * abnormal / (normal + abnormal), 1))
    total = sum(sum(v) for v in phantom.MURA_STUDIES.values())
    assert t.loc["HAND", "share in MURA %"] == pytest.approx(round(100 * sum(phantom.MURA_STUDIES["HAND"]) / total, 1))


# --------------------------------------------------------------------------- the shared figures of plots.py


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_prior_search_axes_show_no_impossible_values_and_no_blown_up_change(plt):
    import numpy as np

    from utils.chapters import plots

    grid = np.logspace(-3, 6, 37)
    x = np.log10(grid) - np.log10(26.7)
    lml = -np.where(x > 0, 30 * (10 ** x - 1), 200 * x ** 2)  # an optimum near 26.7, a collapse at large δ
    val_nll = 0.62328 + 2e-5 / (1 + np.exp(-2 * np.log10(grid)))  # the abnormality task's 2e-5 nats change
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True)
    plots.plot_prior_search(top, bottom, grid, lml, val_nll, 26.7, 1.46, 3.16e-4, True, title="kron")
    fig.canvas.draw()
    lo, hi = top.get_ylim()
    assert lo >= 0 and all(t >= 0 for t in top.get_yticks() if lo <= t <= hi)  # nats below the maximum: >= 0
    assert hi >= (lml.max() - lml).max()  # the collapse at large δ is on the axis
    assert top.get_xscale() == bottom.get_xscale() == "log" and top.get_xlim()[0] > 0
    assert not bottom.get_yaxis().get_major_formatter().get_useOffset()
    assert bottom.yaxis.get_offset_text().get_text() == ""
    b_lo, b_hi = bottom.get_ylim()
    assert b_lo <= val_nll.min() and val_nll.max() <= b_hi
    assert (val_nll.max() - val_nll.min()) / (b_hi - b_lo) < 0.01  # a 2e-5 change stays small on the axis
    labels = [ln.get_label() for ln in top.get_lines()]
    assert any(s.startswith("marginal likelihood: δ = 26.7") for s in labels)
    assert any(s.startswith("training prior") for s in labels) and any(s.startswith("grid search") for s in labels)


def test_confusion_counts_contrast_with_their_cells(plt):
    import numpy as np
    from matplotlib.colors import to_rgb

    from utils.chapters import plots

    def luminance(c):
        return float(np.dot(to_rgb(c), [0.2126, 0.7152, 0.0722]))

    # the abnormality task's matrix: nearly everything said normal, so the diagonal is dark, then light
    y = np.r_[np.zeros(469, int), np.ones(354, int)]
    pred = np.r_[np.zeros(467, int), np.ones(2, int), np.zeros(354, int)]
    fig = plots.confusion(y, pred, ["NORMAL", "ABNORMAL"])
    ax = fig.axes[0]
    im = ax.get_images()[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == 4
    for (i, j), t in texts.items():
        cell = im.cmap(im.norm(im.get_array()[i, j]))
        assert abs(luminance(t.get_color()) - luminance(cell)) > 0.45, (i, j, t.get_text())
    # and at every share between, on a 3 x 3 matrix with shares 0.35 to 1
    y = np.repeat(np.arange(3), 20)
    pred = np.r_[np.zeros(20), np.zeros(7), np.ones(13), np.zeros(9), np.full(11, 2)].astype(int)
    fig = plots.confusion(y, pred, ["A", "B", "C"])
    ax = fig.axes[0]
    im = ax.get_images()[0]
    for t in ax.texts:
        j, i = (round(v) for v in t.get_position())
        cell = im.cmap(im.norm(im.get_array()[i, j]))
        assert abs(luminance(t.get_color()) - luminance(cell)) > 0.45, (i, j, t.get_text())


def test_captions_and_reading_are_written_for_the_task_and_from_its_numbers():
    import numpy as np
    import pandas as pd

    from utils.chapters import explore, plots

    idx = pd.DataFrame(dict(study_id=list("aabbccdd"), label=[1, 1, 0, 0, 1, 1, 0, 0],
                            body_part=["WRIST"] * 4 + ["HAND"] * 2 + ["FINGER"] * 2))
    flat = pd.DataFrame(dict(cues=["majority class", "all trivial cues", "CNN probe (pixels)"],
                             accuracy=[0.569, 0.544, 0.575]))
    text = explore.reading(idx, flat, "abnormality")
    assert "56.9%" in text and "57.5%" in text and "Neither the cues nor the probe" in text
    assert "in the image content" not in text and "body part at" not in text
    sharp = flat.assign(accuracy=[0.285, 0.442, 0.865])
    text = explore.reading(idx, sharp, "bodypart")
    assert "The pixels carry far more of the body part" in text and "50% of studies are abnormal" in text
    assert "normal / abnormal" in explore.cue_caption("abnormality") and "body-part" in explore.cue_caption("bodypart")
    y, pred = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 0, 1, 0, 2])
    cap = plots.confusion_caption(y, pred, ["HAND", "FINGER", "WRIST"])
    assert "hand said finger: 2 (67% of hand); finger said hand: 1 (50% of finger)" in cap and "wrist said" not in cap
    probs = np.eye(3)[pred] * 0.9 + 0.1 / 3
    cap = plots.mistakes_caption(probs, y, ["NORMAL", "ABNORMAL", "X"])
    assert "The 3 most confidently" in cap and "true normal, said abnormal (2)" in cap
