"""Split-conformal prediction sets for classification over a posterior's predictive probabilities.

A score function s(x, y) says how badly label y fits image x given its probabilities p(x):

* ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): s = 1 - p_y. Its sets are
  {y : p_y >= 1 - qhat}; among sets with the guaranteed coverage they are the smallest on average when
  p is the true conditional distribution.
* ``"aps"`` (adaptive prediction sets, Romano, Sesia & Candes 2020, randomised): with the classes sorted
  by decreasing p (ties by class index), s = (mass of the classes ranked above y) + U * p_y, with one
  U ~ Uniform(0, 1) per image from a seeded numpy Generator. Its sets are the top-k classes with k
  adaptive to the image, and may be empty (the randomised version is exact, not conservative).

`calibrate` takes the calibration split's scores s_i = s(x_i, y_i) (the validation split) and returns
qhat, the k-th smallest of them with k = ceil((n + 1)(1 - alpha)) (qhat = inf when k > n: then every
set is the full label set); `predict_sets` returns C(x) = {y : s(x, y) <= qhat}.

Guarantee (Vovk et al. 2005; Lei et al. 2018; Angelopoulos & Bates 2021): if the calibration images and
a test image are exchangeable (e.g. i.i.d. from the same distribution), then marginally over both

    1 - alpha  <=  P(Y_test in C(X_test))  =  k / (n + 1)  <=  1 - alpha + 1 / (n + 1),

the upper bound (and the equality) holding when the scores have no ties (continuous scores: LAC on
probabilities without ties, APS always thanks to U). The guarantee is marginal: it says nothing about
coverage within one class or one body part, which `coverage_table` therefore reports separately.

The randomisation streams of calibration and prediction are independent even under the same seed
(`numpy.random.default_rng([seed, stream])`), so that a calibration image and a test image never share U.
"""
from __future__ import annotations

import math

import numpy as np

SCORES = ("lac", "aps")
_CAL_STREAM, _TEST_STREAM = 0, 1


def _probs(probs) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities N x C, got shape {p.shape}")
    return p


def _uniforms(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), stream]).uniform(size=n)


def all_scores(probs, score: str = "lac", u=None) -> np.ndarray:
    """Conformity score s(x, y) of every image (row) and every label (column), N x C.

    `u` (N,) holds the APS randomisation, one uniform per image (None: 1, the non-randomised APS);
    ignored for LAC.
    """
    p = _probs(probs)
    if score == "lac":
        return 1.0 - p
    if score == "aps":
        n, c = p.shape
        order = np.argsort(-p, axis=1, kind="stable")  # decreasing p, ties by class index
        ps = np.take_along_axis(p, order, 1)
        above = np.cumsum(ps, 1) - ps  # mass of the classes ranked strictly above
        uu = np.ones(n) if u is None else np.asarray(u, np.float64).reshape(n)
        s_sorted = above + uu[:, None] * ps
        out = np.empty_like(p)
        np.put_along_axis(out, order, s_sorted, 1)
        return out
    raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")


def label_scores(probs, labels, score: str = "lac", seed: int = 0) -> np.ndarray:
    """s(x_i, y_i) of each calibration image (APS: randomised with the calibration stream of `seed`)."""
    p = _probs(probs)
    y = np.asarray(labels).astype(int)
    if y.shape != (len(p),):
        raise ValueError(f"expected {len(p)} labels, got shape {y.shape}")
    u = _uniforms(len(p), seed, _CAL_STREAM) if score == "aps" else None
    return all_scores(p, score, u)[np.arange(len(p)), y]


def conformal_quantile(scores, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of n scores (inf when that exceeds n)."""
    s = np.sort(np.asarray(scores, np.float64).ravel())
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = len(s)
    # round away float noise in (n + 1)(1 - alpha) before the ceiling (e.g. 1000.0000000001)
    k = math.ceil(round((n + 1) * (1 - alpha), 9))
    return float(s[k - 1]) if k <= n else float("inf")


def calibrate(probs_cal, y_cal, alpha: float, score: str = "lac", seed: int = 0) -> float:
    """Split-conformal threshold qhat from the calibration (validation) split.

    Parameters
    ----------
    probs_cal : (n, C) predictive probabilities of the calibration images.
    y_cal : (n,) their labels.
    alpha : miscoverage level in (0, 1), e.g. 0.1 for 90 % sets.
    score : "lac" or "aps".
    seed : seed of the APS randomisation (calibration stream).

    Returns
    -------
    qhat, the ceil((n + 1)(1 - alpha))-th smallest calibration score (inf if that exceeds n). With
    exchangeable calibration and test images, sets {y : s(x, y) <= qhat} cover the true label with
    probability >= 1 - alpha, and <= 1 - alpha + 1/(n + 1) when the scores have no ties.
    """
    return conformal_quantile(label_scores(probs_cal, y_cal, score, seed), alpha)


def predict_sets(probs, qhat: float, score: str = "lac", seed: int = 0) -> np.ndarray:
    """Boolean N x C prediction sets {y : s(x, y) <= qhat} (APS: randomised with the test stream of `seed`;
    a fixed seed gives sets nested in qhat, i.e. in alpha)."""
    p = _probs(probs)
    u = _uniforms(len(p), seed, _TEST_STREAM) if score == "aps" else None
    return all_scores(p, score, u) <= qhat


def split_conformal(probs_cal, y_cal, probs_test, alpha: float, score: str = "lac",
                    seed: int = 0) -> tuple[np.ndarray, float]:
    """`calibrate` on the calibration split, then `predict_sets` on the test images: (sets, qhat)."""
    qhat = calibrate(probs_cal, y_cal, alpha, score, seed)
    return predict_sets(probs_test, qhat, score, seed), qhat


def coverage_table(sets, y, groups=None, by=None, class_names=None, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95, intervals: str = "every"):
    """Empirical coverage and mean set size, overall, per true class and per level of other groupings.

    Parameters
    ----------
    sets : (N, C) boolean prediction sets.
    y : (N,) true labels.
    groups : (N,) study id per image for the cluster bootstrap (None: every image its own study).
    by : None, an (N,) array (e.g. body part; rows "by=<level>") or a dict {name: (N,) array}
        (rows "<name>=<level>").
    class_names : optional names of the C classes for the per-class rows.
    n_boot, seed, level : study bootstrap of `utils.evidence.mean_interval`.
    intervals : "every" subset gets its bootstrap interval, or only the "overall" row (the others as point
        values, their bounds NaN: a report with many methods, scores and alphas cannot bootstrap them all).

    Returns
    -------
    pandas DataFrame, one row per subset ("all", "class=<c>", "<name>=<level>") with columns subset, n,
    coverage, coverage_low, coverage_high, size, size_low, size_high, empty (share of empty sets).
    Coverage per class is class-conditional coverage, which split conformal does not guarantee.
    """
    import pandas as pd

    from utils import evidence

    if intervals not in ("every", "overall"):
        raise ValueError(f"intervals must be 'every' or 'overall', got {intervals!r}")
    S = np.asarray(sets, bool)
    y = np.asarray(y).astype(int)
    if S.ndim != 2 or y.shape != (len(S),):
        raise ValueError(f"expected sets N x C and labels N, got {S.shape} and {y.shape}")
    n = len(y)
    g = np.arange(n) if groups is None else np.asarray(groups)
    hit = S[np.arange(n), y].astype(np.float64)
    size = S.sum(1).astype(np.float64)

    subsets = [("all", np.ones(n, bool))]
    names = class_names if class_names is not None else range(S.shape[1])
    subsets += [(f"class={name}", y == c) for c, name in enumerate(names)]
    if by is not None:
        by = by if isinstance(by, dict) else {"by": by}
        for key, values in by.items():
            values = np.asarray(values)
            subsets += [(f"{key}={v}", values == v) for v in np.unique(values)]

    rows = []
    for name, m in subsets:
        if not m.any():
            rows.append(dict(subset=name, n=0))
            continue
        if intervals == "every" or name == "all":
            cov = evidence.mean_interval(hit[m], g[m], n_boot, seed, level)
            sz = evidence.mean_interval(size[m], g[m], n_boot, seed, level)
        else:
            cov, sz = ({"estimate": float(v[m].mean()), "low": np.nan, "high": np.nan} for v in (hit, size))
        rows.append(dict(subset=name, n=int(m.sum()), coverage=cov["estimate"], coverage_low=cov["low"],
                         coverage_high=cov["high"], size=sz["estimate"], size_low=sz["low"],
                         size_high=sz["high"], empty=float((size[m] == 0).mean())))
    return pd.DataFrame(rows, columns=["subset", "n", "coverage", "coverage_low", "coverage_high", "size",
                                       "size_low", "size_high", "empty"])
