"""Split-conformal prediction sets for classification over a posterior's predictive probabilities: marginal and
Mondrian (per class, per known attribute of the image) thresholds from crepes, the coverage they imply, and RAPS's
parameters tuned apart from the calibration split.

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
  k_reg-th out of the set unless the calibration split needs them; with lam = 0 it is APS exactly. Its sets are
  top-k sets too, and never longer than k_reg + qhat / lam. `tune_raps` chooses k_reg and lam as the paper does
  (k_reg: the rank at which the top-k accuracy reaches 1 - alpha; lam: the smallest mean set size over
  `RAPS_LAMBDAS`) on a split apart from the calibration split (the report: the val split tunes, the cal split
  calibrates), so that the calibration images stay exchangeable with the test images. `RAPS_K_REG` = 1 and
  `RAPS_LAMBDA` = 0.1 remain the fixed defaults of the functions below (and of notebook 06's sets under shift).

Where the library does it and where this module does: the thresholds come from crepes (Bostrom, `crepes
.ConformalClassifier`, pinned in requirements.txt): fitted on the calibration scores (with Mondrian `bins` where
asked), its non-smoothed p-value of a score s is p(s) = (1 + #{i : s_i >= s}) / (n + 1) over the calibration scores
of s's bin, and y enters the set iff p(s(x, y)) > alpha. p(s) falls as s grows, so that set is {y : s(x, y) <= qhat}
with qhat the largest calibration score whose p-value exceeds alpha (inf when even p = 1 / (n + 1) does): the
ceil((n + 1)(1 - alpha))-th smallest score, the split-conformal quantile rule. crepes computes p-values one test
score at a time in Python, so the module asks it for the n calibration scores' p-values, takes qhat, and compares
the test scores with it (the sets are crepes' own, `tests/test_conformal.py` checks it, marginal and Mondrian).
Mondrian by class follows crepes' `WrapClassifier(class_cond=True)`: bins are the calibration labels, and for a
candidate label y the threshold is that of the calibration images labelled y. (crepes' own `predict_set` includes
p >= alpha, one calibration score more than the quantile rule when (n + 1) alpha is a whole number.) The score
functions stay here: crepes takes scores, not score functions, and the APS / RAPS randomisation must come from the
module's seeded streams (`numpy.random.default_rng([seed, stream])`, calibration and test streams independent, so a
calibration image and a test image never share U); the tests check them against MAPIE 1.6's scores.

Guarantee (Vovk et al. 2005; Lei et al. 2018; Angelopoulos & Bates 2021): if the calibration images and a test
image are exchangeable, then marginally over both 1 - alpha <= P(Y_test in C(X_test)) = k / (n + 1) <= 1 - alpha +
1 / (n + 1), k = ceil((n + 1)(1 - alpha)), the upper bound (and the equality) holding when the scores have no ties
(LAC on probabilities without ties, APS and RAPS always thanks to U). Mondrian sets give the same within each bin
(label-conditional coverage for bins by class, coverage per body part for bins by part), with that bin's n.

How far a test split's coverage may fall from 1 - alpha (Vovk 2012; Angelopoulos & Bates 2021, section 3): given the
calibration set, coverage is a random C ~ Beta(k, n + 1 - k) (exchangeable, continuous scores: n = 519 puts its SD
near 0.01), and the number of n_test exchangeable test images covered is BetaBinomial(n_test, k, n + 1 - k).
`coverage_band` gives its central 95 % range and `coverage_table` reads each row's coverage against it ("inside the
band the guarantee implies" or outside it), never against the line at 1 - alpha. For Mondrian rows the band uses
that bin's calibration count; a row made of several bins (the overall row of Mondrian sets) sums independent
beta-binomials. Ties (LAC on saturated probabilities) can only raise coverage, so a coverage above the band is no
evidence against the guarantee. The band assumes images exchangeable one by one; MURA's studies hold 1-4 views of
one patient's body part, which are not, so it is too narrow by the design effect (1 + (m - 1) ICC for studies of
m views). `one_per_study` draws one image per calibration study (seeded): then calibration studies and a test
image drawn from a test study are exchangeable, at the price of a smaller n.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from utils.evaluation import evidence

_quiet = warnings.catch_warnings()  # crepes' import calls warnings.simplefilter("always", UserWarning) for the whole
_quiet.__enter__()  # process: keep the caller's warning filters as they were
import crepes  # noqa: E402

_quiet.__exit__(None, None, None)

SCORES = ("lac", "aps", "raps")
RANDOMISED = ("aps", "raps")  # the scores that draw one U per image
RAPS_K_REG, RAPS_LAMBDA = 1, 0.1  # fixed RAPS defaults (module docstring; `tune_raps` chooses them per split)
RAPS_LAMBDAS = (0.001, 0.01, 0.1, 0.2, 0.5)  # the lam grid of Angelopoulos et al. 2021's code
MONDRIAN = (None, "class", "bins")
_CAL_STREAM, TEST_STREAM, _STUDY_STREAM, _TUNE_STREAM = 0, 1, 2, 3


def _probs(probs) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities N x C, got shape {p.shape}")
    return p


def _check_alpha(alpha: float):
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


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


def _key(v):
    return v.item() if isinstance(v, np.generic) else v


def bin_thresholds(scores, alpha: float, bins=None) -> dict:
    """{bin: qhat}: per Mondrian bin (bins=None: one bin, key None), the largest calibration score whose crepes
    p-value (non-smoothed, within its bin) exceeds alpha, inf when a score above them all would still (module
    docstring); {y : s(x, y) <= qhat} is then the set of labels whose p-value exceeds alpha."""
    _check_alpha(alpha)
    s = np.asarray(scores, np.float64).ravel()
    b = np.zeros(len(s), int) if bins is None else np.asarray(bins).ravel()
    if b.shape != s.shape:
        raise ValueError(f"expected {len(s)} bins, got shape {b.shape}")
    out = {}
    if len(s):
        cc = crepes.ConformalClassifier().fit(s, bins=None if bins is None else b)
        p = cc.predict_p(s, bins=None if bins is None else b, smoothing=False)
    for v in np.unique(b):
        m = b == v
        n = int(m.sum())
        # p (n + 1) = 1 + #{s_j >= s} counts scores; s is in the set iff that count exceeds (n + 1) alpha, computed as
        # (n + 1) - (n + 1)(1 - alpha) rounded like the quantile rule's ceil((n + 1)(1 - alpha)) (float noise)
        bar = n + 1 - round((n + 1) * (1 - alpha), 9)
        inside = np.rint(p[m] * (n + 1)) > bar
        out[None if bins is None else _key(v)] = float("inf") if 1 > bar else float(s[m][inside].max())
    if not len(s) and bins is None:
        out[None] = float("inf")
    return out


def conformal_quantile(scores, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of n scores (inf when that exceeds n), from crepes' p-values
    (`bin_thresholds` with one bin)."""
    return bin_thresholds(scores, alpha)[None]


def _cal_bins(mondrian, y, bins, n: int):
    if mondrian not in MONDRIAN:
        raise ValueError(f"mondrian must be one of {MONDRIAN}, got {mondrian!r}")
    if mondrian == "class":
        return np.asarray(y).astype(int)
    if mondrian == "bins":
        if bins is None or np.shape(bins) != (n,):
            raise ValueError(f"mondrian='bins' needs one bin per image ({n}), got {None if bins is None else np.shape(bins)}")
        return np.asarray(bins)
    return None


def calibrate(probs_cal, y_cal, alpha: float, score: str = "lac", seed: int = 0, *, mondrian: str | None = None,
              bins=None, lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG) -> float | dict:
    """Split-conformal threshold from the calibration split.

    Parameters
    ----------
    probs_cal : (n, C) predictive probabilities of the calibration images.
    y_cal : (n,) their labels.
    alpha : miscoverage level in (0, 1), e.g. 0.1 for 90 % sets.
    score : "lac", "aps" or "raps".
    seed : seed of the APS / RAPS randomisation (calibration stream).
    mondrian : None (one threshold), "class" (one per label: the calibration images labelled y calibrate label y's
        threshold) or "bins" (one per level of `bins`, an (n,) attribute of each calibration image known at test
        time too, e.g. the body part).
    lam, k_reg : the RAPS penalty lam * max(0, rank - k_reg) (`tune_raps` chooses them; the defaults are fixed).

    Returns
    -------
    qhat (mondrian None): the ceil((n + 1)(1 - alpha))-th smallest calibration score (inf if that exceeds n), from
    crepes' p-values; else {bin: qhat} with that bin's n. With exchangeable calibration and test images, sets
    {y : s(x, y) <= qhat} cover the true label with probability >= 1 - alpha (within each bin for Mondrian sets),
    and <= 1 - alpha + 1/(n + 1) when the scores have no ties.
    """
    s = label_scores(probs_cal, y_cal, score, seed, lam=lam, k_reg=k_reg)
    b = _cal_bins(mondrian, y_cal, bins, len(s))
    return conformal_quantile(s, alpha) if b is None else bin_thresholds(s, alpha, b)


def threshold_matrix(qhat, shape: tuple, mondrian: str | None = None, bins=None) -> np.ndarray:
    """The threshold each entry of an N x C score matrix is compared with: qhat everywhere (mondrian None), qhat[y]
    in column y ("class"), qhat[bins[i]] in row i ("bins"); a bin without calibration images gets inf, as crepes
    gives it (p = 1: every label is in the set)."""
    n, c = shape
    if mondrian is None:
        if isinstance(qhat, dict):
            raise ValueError("a dict of thresholds needs mondrian='class' or 'bins'")
        return np.full(shape, float(qhat))
    if not isinstance(qhat, dict):
        raise ValueError(f"mondrian={mondrian!r} needs a dict of thresholds, one per bin (`calibrate`)")
    if mondrian == "class":
        return np.broadcast_to(np.array([qhat.get(j, np.inf) for j in range(c)], np.float64), shape)
    b = _cal_bins(mondrian, None, bins, n)
    return np.broadcast_to(np.array([qhat.get(_key(v), np.inf) for v in b], np.float64)[:, None], shape)


def predict_sets(probs, qhat, score: str = "lac", seed: int = 0, *, mondrian: str | None = None, bins=None,
                 lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG) -> np.ndarray:
    """Boolean N x C prediction sets {y : s(x, y) <= qhat} (APS, RAPS: randomised with the test stream of
    `seed`; a fixed seed gives sets nested in qhat, i.e. in alpha). `qhat`, `mondrian`: what `calibrate` returned
    and was given; `bins`: the (N,) bins of the test images for mondrian="bins"."""
    p = _probs(probs)
    u = uniforms(len(p), seed, TEST_STREAM) if score in RANDOMISED else None
    s = all_scores(p, score, u, lam=lam, k_reg=k_reg)
    return s <= threshold_matrix(qhat, s.shape, mondrian, bins)


def split_conformal(probs_cal, y_cal, probs_test, alpha: float, score: str = "lac", seed: int = 0, *,
                    mondrian: str | None = None, bins_cal=None, bins_test=None, lam: float = RAPS_LAMBDA,
                    k_reg: int = RAPS_K_REG) -> tuple[np.ndarray, float | dict]:
    """`calibrate` on the calibration split, then `predict_sets` on the test images: (sets, qhat), qhat a dict
    {bin: qhat} for Mondrian sets (`bins_cal`, `bins_test`: the attribute's bins for mondrian="bins")."""
    qhat = calibrate(probs_cal, y_cal, alpha, score, seed, mondrian=mondrian, bins=bins_cal, lam=lam, k_reg=k_reg)
    return predict_sets(probs_test, qhat, score, seed, mondrian=mondrian, bins=bins_test, lam=lam, k_reg=k_reg), qhat


def one_per_study(groups, seed: int = 0) -> np.ndarray:
    """Sorted indices of one image drawn uniformly from each study (`groups`: the study id of each image), seeded:
    the calibration variant whose exchangeability holds at study level (module docstring)."""
    g = np.asarray(groups)
    perm = np.random.default_rng([int(seed), _STUDY_STREAM]).permutation(len(g))
    _, first = np.unique(g[perm], return_index=True)
    return np.sort(perm[first])


# --------------------------------------------------------------------------- RAPS's parameters


def raps_k_reg(probs, y, alpha: float) -> int:
    """The smallest k whose top-k accuracy on (probs, y) reaches 1 - alpha (ranks as `all_scores` orders them),
    Angelopoulos et al. 2021's k_reg."""
    _check_alpha(alpha)
    p = _probs(probs)
    y = np.asarray(y).astype(int)
    rank = np.argsort(np.argsort(-p, 1, kind="stable"), 1)[np.arange(len(p)), y] + 1
    need = math.ceil(round(len(y) * (1 - alpha), 9))
    return int(np.sort(rank)[need - 1]) if need else 0


def tune_raps(probs, y, alpha: float, seed: int = 0, *, groups=None, lambdas=RAPS_LAMBDAS) -> dict:
    """RAPS's k_reg and lam chosen on a tuning split kept apart from the calibration split (Angelopoulos et al.
    2021, section 2.3): k_reg = `raps_k_reg` on the whole tuning split; lam: the value of `lambdas` whose sets are
    the smallest on average (the first on a tie), each calibrated on a seeded half of the tuning split (by study
    when `groups` is given) and measured on the other half. With two classes and k_reg = 2 no rank is penalised,
    every lam gives the APS sets and the smallest is kept.

    Returns dict(k_reg, lam, sizes={lam: mean set size}, n (tuning images))."""
    p, y = _probs(probs), np.asarray(y).astype(int)
    k_reg = raps_k_reg(p, y, alpha)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    studies = np.unique(g)
    first = np.random.default_rng([int(seed), _TUNE_STREAM]).permutation(len(studies))[: len(studies) // 2]
    a = np.isin(g, studies[first])
    sizes = {}
    for lam in lambdas:
        sets, _ = split_conformal(p[a], y[a], p[~a], alpha, "raps", seed, lam=lam, k_reg=k_reg)
        sizes[float(lam)] = float(sets.sum(1).mean())
    best = min(sizes, key=lambda v: (sizes[v], v))
    return dict(k_reg=k_reg, lam=best, sizes=sizes, n=len(y))


# --------------------------------------------------------------------------- coverage and the band it may fall in


def covered_pmf(n_cal, n_test, alpha: float) -> np.ndarray:
    """P(j of the test images covered), j = 0 .. sum(n_test), for split-conformal sets calibrated on n_cal
    exchangeable images with continuous scores: BetaBinomial(n_test, k, n_cal + 1 - k), k = ceil((n_cal + 1)(1 -
    alpha)) (a point mass at n_test when k > n_cal: full sets). Sequences n_cal, n_test (one entry per Mondrian bin)
    give the sum of the bins' independent counts."""
    _check_alpha(alpha)
    pmf = np.ones(1)
    for nc, nt in zip(np.atleast_1d(n_cal).astype(int), np.atleast_1d(n_test).astype(int)):
        k = math.ceil(round((nc + 1) * (1 - alpha), 9))
        if k > nc:
            one = np.zeros(nt + 1)
            one[nt] = 1.0
        else:
            one = stats.betabinom.pmf(np.arange(nt + 1), nt, k, nc + 1 - k)
        pmf = np.convolve(pmf, one)
    return pmf


def covered_range(n_cal, n_test, alpha: float, level: float = 0.95) -> tuple[int, int]:
    """The central `level` range [lo, hi] of the number of covered test images (`covered_pmf`): its
    (1 - level) / 2 and (1 + level) / 2 quantiles (the smallest j whose cumulative probability reaches each)."""
    cdf = np.cumsum(covered_pmf(n_cal, n_test, alpha))
    lo, hi = ((cdf >= q - 1e-12).argmax() for q in ((1 - level) / 2, (1 + level) / 2))
    return int(lo), int(hi)


def coverage_band(n_cal, n_test, alpha: float, level: float = 0.95) -> tuple[float, float]:
    """`covered_range` as shares of the sum(n_test) test images: the range of empirical coverage the guarantee
    implies, e.g. about [0.924, 0.972] for n_cal = 519, n_test = 824, alpha = 0.05 (module docstring)."""
    lo, hi = covered_range(n_cal, n_test, alpha, level)
    total = int(np.sum(n_test))
    return lo / total, hi / total


def _band_rows(m: np.ndarray, test_bins: np.ndarray, n_cal: dict) -> tuple[list, list] | None:
    """(n_cal per bin, n_test per bin) of the bins row mask `m` is the union of; None when it cuts a bin."""
    cal, test = [], []
    for v in np.unique(test_bins):
        inside = m[test_bins == v]
        if inside.all():
            cal.append(n_cal.get(_key(v), 0))
            test.append(int(inside.sum()))
        elif inside.any():
            return None
    return cal, test


def coverage_table(sets, y, groups=None, by=None, class_names=None, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95, intervals: str = "every", *, alpha: float | None = None, n_cal=None,
                   mondrian: str | None = None, bins=None):
    """Empirical coverage and mean set size, overall, per true class and per level of other groupings, each
    coverage read against the band the guarantee implies.

    Parameters
    ----------
    sets : (N, C) boolean prediction sets.
    y : (N,) true labels.
    groups : (N,) study id per image for the cluster bootstrap (None: every image its own study).
    by : None, an (N,) array (e.g. body part; rows "by=<level>") or a dict {name: (N,) array}
        (rows "<name>=<level>").
    class_names : optional names of the C classes for the per-class rows.
    n_boot, seed, level : study bootstrap of `utils.evidence.mean_interval`; `level` also the band's.
    intervals : "every" subset gets its bootstrap interval, or only the "overall" row (the others as point
        values, their bounds NaN: a report with many methods, scores and alphas cannot bootstrap them all).
    alpha, n_cal, mondrian, bins : how the sets were calibrated, for the band (None: no band): alpha; n_cal the
        number of calibration images (mondrian None) or {bin: number} (mondrian "class": bins are the labels;
        "bins": `bins` holds the (N,) bin of each test image). A row gets a band where it is a union of whole bins:
        the overall row, and under Mondrian sets each bin's row; a row that cuts a bin (a class under marginal
        sets) has no guarantee, hence no band.

    Returns
    -------
    pandas DataFrame, one row per subset ("all", "class=<c>", "<name>=<level>") with columns subset, n,
    coverage, coverage_low, coverage_high, size, size_low, size_high, empty (share of empty sets), n_cal (the
    calibration images behind the row's band), band_low, band_high (`coverage_band` at `level`) and in_band
    (whether the coverage lies inside the band; None without a band). The band assumes exchangeable images:
    images of one study are not, so it is too narrow by the design effect (module docstring).
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
    if alpha is not None:
        if n_cal is None:
            raise ValueError("the band needs n_cal, the calibration images (per bin for Mondrian sets)")
        test_bins = np.zeros(n, int) if mondrian is None else y if mondrian == "class" else _cal_bins(mondrian, None,
                                                                                                      bins, n)
        cal_counts = {0: int(n_cal)} if mondrian is None else {_key(k): int(v) for k, v in dict(n_cal).items()}

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
        row = dict(subset=name, n=int(m.sum()), coverage=cov["estimate"], coverage_low=cov["low"],
                   coverage_high=cov["high"], size=sz["estimate"], size_low=sz["low"], size_high=sz["high"],
                   empty=float((size[m] == 0).mean()), in_band=None)
        parts = _band_rows(m, test_bins, cal_counts) if alpha is not None else None
        if parts is not None:
            lo, hi = covered_range(*parts, alpha, level)
            row.update(n_cal=int(sum(parts[0])), band_low=lo / row["n"], band_high=hi / row["n"],
                       in_band=bool(lo <= int(hit[m].sum()) <= hi))
        rows.append(row)
    return pd.DataFrame(rows, columns=["subset", "n", "coverage", "coverage_low", "coverage_high", "size",
                                       "size_low", "size_high", "empty", "n_cal", "band_low", "band_high", "in_band"])
