"""Split-conformal prediction sets for classification over a posterior's predictive probabilities.

A score function s(x, y) says how badly label y fits image x given its probabilities p(x):

* ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): s = 1 - p_y. Its sets are
  {y : p_y >= 1 - qhat}; among sets with the guaranteed coverage they are the smallest on average when
  p is the true conditional distribution.
* ``"aps"`` (adaptive prediction sets, Romano, Sesia & Candes 2020, randomised): with the classes sorted
  by decreasing p (ties by class index), s = (mass of the classes ranked above y) + U * p_y, with one
  U ~ Uniform(0, 1) per image from a seeded numpy Generator. Its sets are the top-k classes with k
  adaptive to the image, and may be empty (the randomised version is exact, not conservative).
* ``"raps"`` (regularised APS, Angelopoulos, Bates, Malik & Jordan 2021, "Uncertainty sets for image classifiers
  using conformal prediction"): the APS score, randomised with the same U, plus lam * max(0, o(y) - k_reg), where
  o(y) is the rank of y (1 for the most probable class) in the same order. The penalty keeps the classes past the
  k_reg-th out of the set unless the calibration split needs them, so sets stop growing into a tail of small,
  noisy probabilities; with lam = 0 it is APS exactly. Its sets are top-k sets too, and never longer than
  k_reg + qhat / lam. The paper tunes k_reg (the rank at which the top-k accuracy reaches 1 - alpha) and lam (the
  smallest sets) on a held-out part of the calibration split; here they are fixed, documented defaults chosen for
  few classes (`RAPS_K_REG` = 1, `RAPS_LAMBDA` = 0.1: the top class is never penalised, each further rank costs
  0.1 of probability mass; with 2 classes only the second class is), so that all of the validation split
  calibrates and no tuning split is carved from it. Coverage holds for any fixed (k_reg, lam).

`calibrate` takes the calibration split's scores s_i = s(x_i, y_i) (the validation split) and returns
qhat, the k-th smallest of them with k = ceil((n + 1)(1 - alpha)) (qhat = inf when k > n: then every
set is the full label set); `predict_sets` returns C(x) = {y : s(x, y) <= qhat}.

Guarantee (Vovk et al. 2005; Lei et al. 2018; Angelopoulos & Bates 2021): if the calibration images and
a test image are exchangeable (e.g. i.i.d. from the same distribution), then marginally over both

    1 - alpha  <=  P(Y_test in C(X_test))  =  k / (n + 1)  <=  1 - alpha + 1 / (n + 1),

the upper bound (and the equality) holding when the scores have no ties (continuous scores: LAC on
probabilities without ties, APS and RAPS always thanks to U). The guarantee is marginal: it says nothing about
coverage within one class or one body part, which `coverage_table` therefore reports separately.

The randomisation streams of calibration and prediction are independent even under the same seed
(`numpy.random.default_rng([seed, stream])`), so that a calibration image and a test image never share U.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.evaluation import evidence

SCORES = ("lac", "aps", "raps")
RANDOMISED = ("aps", "raps")  # the scores that draw one U per image
RAPS_K_REG, RAPS_LAMBDA = 1, 0.1  # fixed RAPS regularisation (module docstring: not tuned)
_CAL_STREAM, TEST_STREAM = 0, 1


def _probs(probs) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities N x C, got shape {p.shape}")
    return p


def uniforms(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), stream]).uniform(size=n)


def _check_raps(lam: float, k_reg: int):
    if not lam >= 0:
        raise ValueError(f"the RAPS penalty lam must be >= 0, got {lam}")
    if int(k_reg) != k_reg or k_reg < 0:
        raise ValueError(f"the RAPS k_reg must be an integer >= 0, got {k_reg}")


def all_scores(probs, score: str = "lac", u=None, *, lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG
               ) -> np.ndarray:
    """Conformity score s(x, y) of every image (row) and every label (column), N x C.

    `u` (N,) holds the APS / RAPS randomisation, one uniform per image (None: 1, the non-randomised score);
    ignored for LAC. `lam`, `k_reg`: the RAPS penalty lam * max(0, rank - k_reg) (rank 1 for the most probable
    class); ignored for LAC and APS.
    """
    p = _probs(probs)
    if score == "lac":
        return 1.0 - p
    if score in RANDOMISED:
        n, c = p.shape
        order = np.argsort(-p, axis=1, kind="stable")  # decreasing p, ties by class index
        ps = np.take_along_axis(p, order, 1)
        above = np.cumsum(ps, 1) - ps  # mass of the classes ranked strictly above
        uu = np.ones(n) if u is None else np.asarray(u, np.float64).reshape(n)
        s_sorted = above + uu[:, None] * ps
        if score == "raps":
            _check_raps(lam, k_reg)
            s_sorted = s_sorted + lam * np.maximum(0, np.arange(1, c + 1) - int(k_reg))
        out = np.empty_like(p)
        np.put_along_axis(out, order, s_sorted, 1)
        return out
    raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")


def label_scores(probs, labels, score: str = "lac", seed: int = 0, *, lam: float = RAPS_LAMBDA,
                 k_reg: int = RAPS_K_REG) -> np.ndarray:
    """s(x_i, y_i) of each calibration image (APS, RAPS: randomised with the calibration stream of `seed`)."""
    p = _probs(probs)
    y = np.asarray(labels).astype(int)
    if y.shape != (len(p),):
        raise ValueError(f"expected {len(p)} labels, got shape {y.shape}")
    u = uniforms(len(p), seed, _CAL_STREAM) if score in RANDOMISED else None
    return all_scores(p, score, u, lam=lam, k_reg=k_reg)[np.arange(len(p)), y]


def conformal_quantile(scores, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of n scores (inf when that exceeds n)."""
    s = np.sort(np.asarray(scores, np.float64).ravel())
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = len(s)
    # round away float noise in (n + 1)(1 - alpha) before the ceiling (e.g. 1000.0000000001)
    k = math.ceil(round((n + 1) * (1 - alpha), 9))
    return float(s[k - 1]) if k <= n else float("inf")


def calibrate(probs_cal, y_cal, alpha: float, score: str = "lac", seed: int = 0, *, lam: float = RAPS_LAMBDA,
              k_reg: int = RAPS_K_REG) -> float:
    """Split-conformal threshold qhat from the calibration (validation) split.

    Parameters
    ----------
    probs_cal : (n, C) predictive probabilities of the calibration images.
    y_cal : (n,) their labels.
    alpha : miscoverage level in (0, 1), e.g. 0.1 for 90 % sets.
    score : "lac", "aps" or "raps".
    seed : seed of the APS / RAPS randomisation (calibration stream).
    lam, k_reg : the RAPS penalty lam * max(0, rank - k_reg) (fixed defaults, see the module docstring).

    Returns
    -------
    qhat, the ceil((n + 1)(1 - alpha))-th smallest calibration score (inf if that exceeds n). With
    exchangeable calibration and test images, sets {y : s(x, y) <= qhat} cover the true label with
    probability >= 1 - alpha, and <= 1 - alpha + 1/(n + 1) when the scores have no ties.
    """
    return conformal_quantile(label_scores(probs_cal, y_cal, score, seed, lam=lam, k_reg=k_reg), alpha)


def predict_sets(probs, qhat: float, score: str = "lac", seed: int = 0, *, lam: float = RAPS_LAMBDA,
                 k_reg: int = RAPS_K_REG) -> np.ndarray:
    """Boolean N x C prediction sets {y : s(x, y) <= qhat} (APS, RAPS: randomised with the test stream of
    `seed`; a fixed seed gives sets nested in qhat, i.e. in alpha)."""
    p = _probs(probs)
    u = uniforms(len(p), seed, TEST_STREAM) if score in RANDOMISED else None
    return all_scores(p, score, u, lam=lam, k_reg=k_reg) <= qhat


def split_conformal(probs_cal, y_cal, probs_test, alpha: float, score: str = "lac",
                    seed: int = 0, *, lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG) -> tuple[np.ndarray, float]:
    """`calibrate` on the calibration split, then `predict_sets` on the test images: (sets, qhat)."""
    qhat = calibrate(probs_cal, y_cal, alpha, score, seed, lam=lam, k_reg=k_reg)
    return predict_sets(probs_test, qhat, score, seed, lam=lam, k_reg=k_reg), qhat


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
