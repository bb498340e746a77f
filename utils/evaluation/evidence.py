"""Intervals for the report's findings: a paired cluster bootstrap over test studies.

Images of one study (1-4 views of one patient's examination) are not independent, so the
unit of resampling is the study. A replicate draws the test set's S studies with replacement
(S draws); every image gets its study's draw count as a weight, and the replicate's metric is
the *weighted* metric of all images (a weight of 2 is the same as the image appearing twice).
`study_weights` returns these weights as one B x N matrix, and every metric here is
vectorised over its rows, so

* a replicate is *paired* across methods for free: two methods scored with the same weight
  matrix (same groups, same seed) see the very same resampled test sets, and the replicate
  value of a difference is the difference of the replicate values;
* error bars that also carry the spread over training runs (`member_interval`) draw the
  members with replacement in each replicate as well, with one set of study weights shared by
  all drawn members of that replicate (a two-stage bootstrap).

A single score's interval is the percentile interval of the replicates re-centred on the estimate
(`percentile_interval`: the bootstrap's median bias removed, which matters for the ECE; `INTERVAL_RULE`); a paired
difference's is the hull of that and the plain percentile interval (`DELTA_RULE`), not clipped. The estimate is
the metric on the full data (all weights 1). With unit weights the weighted metrics equal those of
`utils.metrics` (accuracy, NLL, Brier, 15-bin right-closed top-label ECE, AUROC); "ece_debiased" is Kumar et
al. (2019)'s debiased ECE on the same bins.

`null_simulation` measures the rules' false-verdict rate (a paired difference called where two methods are
equally good) and coverage (a single score's interval holding its known population value) on synthetic studies
of 1-4 images whose labels are drawn from known probabilities; `python -m utils.evaluation.simulation` prints the
table (`DELTA_RULE` gives the numbers behind the choice of rule).

`ece_reference` gives the ECE that a perfectly calibrated predictor with the same predictive
probabilities would show on this many images (ECE is biased upwards on finite data), and
`cv_logistic_score` combines several error-flagging scores by logistic regression with
out-of-fold predictions, folds split by study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from utils.evaluation.metrics import EPS, bin_index

METRICS = ("accuracy", "error", "nll", "brier", "ece", "ece_debiased", "auroc", "kappa")


# ----------------------------------------------------------------------------------------------
# resampling weights


def group_codes(groups, n: int | None = None) -> tuple[np.ndarray, int]:
    """Integer study codes 0..S-1 per image (None: each image its own study)."""
    if groups is None:
        if n is None:
            raise ValueError("groups=None needs the number of images")
        return np.arange(n), n
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    inv = inv.ravel()
    return inv, int(inv.max()) + 1 if len(inv) else 0


def study_weights(groups, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Per-image weights of `n_boot` cluster-bootstrap replicates over studies.

    Parameters
    ----------
    groups : (N,) study id per image (any sortable hashable: str, int).
    n_boot, seed : number of replicates and the seed of a numpy Generator.

    Returns
    -------
    (n_boot, N) float array, read-only: row r holds, for each image, how often its study was drawn in
    replicate r (S draws with replacement from the S studies; multinomial counts). The last few are kept
    (`_WEIGHTS_KEPT`): a report draws the same test studies' replicates for hundreds of intervals.
    """
    inv, s = group_codes(groups)
    key = (inv.tobytes(), s, int(n_boot), int(seed)) if isinstance(seed, (int, np.integer)) else None
    if key in _WEIGHTS:
        _WEIGHTS[key] = _WEIGHTS.pop(key)  # most recently used last
        return _WEIGHTS[key]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, s, size=(n_boot, s))
    counts = np.bincount((draws + np.arange(n_boot)[:, None] * s).ravel(), minlength=n_boot * s)
    W = counts.reshape(n_boot, s)[:, inv].astype(np.float64)
    W.flags.writeable = False
    if key is None:  # a Generator or a SeedSequence as the seed: not kept
        return W
    _WEIGHTS[key] = W
    while len(_WEIGHTS) > _WEIGHTS_KEPT:
        _WEIGHTS.pop(next(iter(_WEIGHTS)))
    return W


_WEIGHTS: dict = {}
_WEIGHTS_KEPT = 4


# ----------------------------------------------------------------------------------------------
# weighted metrics, vectorised over the rows of W


def _as_weights(W, n: int) -> np.ndarray:
    W = np.asarray(W, np.float64)
    if W.ndim == 1:
        W = W[None]
    if W.ndim != 2 or W.shape[1] != n:
        raise ValueError(f"expected weights B x {n}, got {W.shape}")
    return W


def _weighted_mean(q: np.ndarray, W: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (W @ q) / W.sum(1)


def _weighted_ece(conf: np.ndarray, correct: np.ndarray, W: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """sum_k |sum_{i in bin k} w_i (correct_i - conf_i)| / sum_i w_i, for every row of W (B x N);
    W may also be one row per replicate of `correct` (B x N)."""
    onehot = np.zeros((len(conf), n_bins))
    onehot[np.arange(len(conf)), bin_index(conf, n_bins)] = 1.0
    if correct.ndim == 1:  # weights vary, outcomes fixed
        gap = np.abs(W @ (onehot * correct[:, None]) - W @ (onehot * conf[:, None]))
        tot = W.sum(1)
    else:  # outcomes vary (B x N), unit weights
        gap = np.abs(correct @ onehot - (onehot * conf[:, None]).sum(0))
        tot = np.full(len(correct), float(len(conf)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return gap.sum(1) / tot


def _weighted_ece_debiased(conf: np.ndarray, correct: np.ndarray, W: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Kumar, Liang & Ma (2019), "Verified uncertainty calibration" (NeurIPS), their debiased l1 (ECE)
    estimator: ECE_plugin - sum_k (n_k / n) (E|g_k + sigma_k Z| - |g_k|), Z ~ N(0, 1), i.e.
    2 ECE_plugin - E[ECE of bin accuracies redrawn from N(acc_k, acc_k (1 - acc_k) / n_k)], per bin k the
    gap g_k = acc_k - mean confidence_k. Their code (p-lambda/verified_calibration, `calibration.get_ece(...,
    debias=True)` -> `normal_debiased_ce`) estimates the expectation with 1000 Monte-Carlo draws; here it is
    the closed form E|N(g, s^2)| = s sqrt(2/pi) exp(-g^2 / 2s^2) + g (1 - 2 Phi(-g/s)), so the estimate is
    deterministic. Same bins as `_weighted_ece`; weighted counts n_k (a weight of 2 = the image twice); a
    bin whose accuracy is 0 or 1 (e.g. one image) gets no correction. The estimate can be negative.

    It removes most of the plug-in's upward bias where a bin's gap is large against its standard error s,
    but not all of it where the predictor is calibrated: at a true gap of 0 its expectation is
    (2 - sqrt 2) s sqrt(2/pi), 59 % of the plug-in's bias s sqrt(2/pi) (an l1 gap has no unbiased
    estimator); where the gap is about one s it over-corrects a little (tests/test_interval_rule.py).
    Whether a predictor is calibrated is still read against `ece_reference`."""
    onehot = np.zeros((len(conf), n_bins))
    onehot[np.arange(len(conf)), bin_index(conf, n_bins)] = 1.0
    sums = W @ np.hstack([onehot, onehot * correct[:, None], onehot * (correct - conf)[:, None]])
    n_k, s_y, s_gap = sums[:, :n_bins], sums[:, n_bins:2 * n_bins], sums[:, 2 * n_bins:]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n_k > 0, s_y / n_k, 0.0)
        g = np.where(n_k > 0, s_gap / n_k, 0.0)
        sd = np.sqrt(np.clip(acc * (1 - acc), 0, None) / np.where(n_k > 0, n_k, 1.0))
        t = np.where(sd > 0, g / np.where(sd > 0, sd, 1.0), 0.0)
        e_abs = np.where(sd > 0, sd * np.sqrt(2 / np.pi) * np.exp(-t ** 2 / 2) + g * (1 - 2 * ndtr(-t)), np.abs(g))
        return (n_k * (2 * np.abs(g) - e_abs)).sum(1) / W.sum(1)


def _weighted_auroc(score: np.ndarray, positive: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC per row of W: sum_{i pos, j neg} w_i w_j [s_i > s_j] (ties 1/2)
    / (sum_pos w * sum_neg w). NaN for a row in which one class has zero weight."""
    score = np.asarray(score, np.float64).ravel()
    positive = np.asarray(positive).astype(bool).ravel()
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each tied block
    Ws = W[:, order]
    pos = positive[order]
    wpos = np.add.reduceat(Ws * pos, starts, axis=1)  # B x U: positive weight per distinct score
    wneg = np.add.reduceat(Ws * ~pos, starts, axis=1)
    below = np.cumsum(wneg, axis=1) - wneg  # negative weight strictly below each distinct score
    num = (wpos * (below + 0.5 * wneg)).sum(1)
    den = wpos.sum(1) * wneg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_kappa(pred: np.ndarray, labels: np.ndarray, c: int, W: np.ndarray) -> np.ndarray:
    """Cohen's kappa of predicted against true classes under each weight row (scikit-learn's
    `cohen_kappa_score(sample_weight=...)`): (p_o - p_e) / (1 - p_e) from the weighted confusion matrix."""
    cell = np.eye(c * c)[labels * c + pred]  # N x C^2 one-hot of the (true, predicted) cell
    conf = (W @ cell).reshape(len(W), c, c)
    total = conf.sum((1, 2))
    po = np.trace(conf, axis1=1, axis2=2) / total
    pe = (conf.sum(2) * conf.sum(1)).sum(1) / total ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def weighted_metric(name: str, probs, labels, W) -> np.ndarray:
    """A metric under each row of a weight matrix.

    Parameters
    ----------
    name : "accuracy", "error" (1 - accuracy), "nll", "brier", "ece" (15 right-closed bins,
        top label, the plug-in estimate), "ece_debiased" (the same bins, Kumar et al. 2019's debiased
        estimator: `_weighted_ece_debiased`) or "auroc" (binary: `probs` is a score (N,) or N x 2,
        column 1 the score; `labels` 0/1), or "kappa" (Cohen's kappa of the predicted class, MURA's metric).
    probs : (N, C) predictive probabilities.
    labels : (N,) integer labels.
    W : (B, N) or (N,) non-negative weights, e.g. from `study_weights`.

    Returns
    -------
    (B,) metric per row; with unit weights equal to `utils.metrics` on the data.
    """
    labels = np.asarray(labels).astype(int).ravel()
    n = len(labels)
    W = _as_weights(W, n)
    probs = np.asarray(probs, np.float64)
    if name == "auroc":
        score = probs[:, 1] if probs.ndim == 2 else probs
        if len(score) != n:
            raise ValueError(f"score of {len(score)} for {n} labels")
        return _weighted_auroc(score, labels == 1, W)
    if probs.ndim != 2 or len(probs) != n:
        raise ValueError(f"expected probs N x C and labels N, got {probs.shape} and {labels.shape}")
    if name in ("accuracy", "error"):
        correct = (probs.argmax(1) == labels).astype(np.float64)
        acc = _weighted_mean(correct, W)
        return acc if name == "accuracy" else 1.0 - acc
    if name == "nll":
        return _weighted_mean(-np.log(np.clip(probs[np.arange(n), labels], EPS, None)), W)
    if name == "brier":
        onehot = np.eye(probs.shape[1])[labels]
        return _weighted_mean(((probs - onehot) ** 2).sum(1), W)
    if name in ("ece", "ece_debiased"):
        conf = probs.max(1)
        correct = (probs.argmax(1) == labels).astype(np.float64)
        return (_weighted_ece if name == "ece" else _weighted_ece_debiased)(conf, correct, W)
    if name == "kappa":
        return _weighted_kappa(probs.argmax(1), labels, probs.shape[1], W)
    raise ValueError(f"unknown metric {name!r}; one of {METRICS}")


# ----------------------------------------------------------------------------------------------
# intervals


def percentile_interval(reps: np.ndarray, level: float, estimate: float | None = None) -> tuple[float, float]:
    """Percentile interval of the replicates, re-centred on the estimate when it is given.

    A statistic the resampling biases, like the ECE (a replicate repeats studies and so bins fewer distinct
    images, which raises the ECE: on the report's test set nearly every replicate lies above the estimate),
    puts its plain percentile interval beside the estimate rather than around it, and Efron's BC correction
    breaks down when the bias is that strong. The interval here is the replicates' spread around their
    median, placed around the estimate: [q_lo - b, q_hi - b] with b = median - estimate, the bootstrap
    estimate of the bias. For an unbiased statistic b ~ 0 and it is the plain percentile interval.
    """
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    bias = float(np.median(reps) - estimate) if estimate is not None and np.isfinite(estimate) else 0.0
    return float(lo - bias), float(hi - bias)


BOUNDS = {"accuracy": (0.0, 1.0), "error": (0.0, 1.0), "auroc": (0.0, 1.0), "kappa": (-1.0, 1.0),
          "ece": (0.0, 1.0), "ece_debiased": (0.0, 1.0), "nll": (0.0, np.inf), "brier": (0.0, 2.0)}
"""The range each metric can take: a re-centred interval is clipped to it (a negative ECE bound means nothing)."""


def _bca(estimate: float, reps: np.ndarray, level: float, jack: np.ndarray) -> tuple[float, float]:
    """Efron's BCa interval (Efron & Tibshirani 1993, ch. 14.3): percentiles of the replicates at
    Phi(z0 + (z0 + z_a) / (1 - acc (z0 + z_a))). z0 = Phi^-1(share of replicates below the estimate, ties
    counted half), acc = sum d^3 / (6 (sum d^2)^1.5) from the jackknife values over studies (d = mean - value,
    `jack`: the statistic with one study left out, one value per study)."""
    b = len(reps)
    share = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / b
    z0 = float(ndtri(np.clip(share, 0.5 / b, 1 - 0.5 / b)))
    d = np.mean(jack) - np.asarray(jack)
    den = 6 * np.sum(d ** 2) ** 1.5
    acc = float(np.sum(d ** 3) / den) if den > 0 else 0.0
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    lo, hi = np.quantile(reps, ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z))))
    return float(lo), float(hi)


def rule_interval(rule: str, estimate: float, reps: np.ndarray, level: float, jack=None) -> tuple[float, float]:
    """The interval of finite replicates `reps` around `estimate` by one of `RULES`."""
    if rule == "percentile":
        return percentile_interval(reps, level)
    if rule == "recentred":
        return percentile_interval(reps, level, estimate)
    if rule == "hull":
        (rlo, rhi), (plo, phi) = percentile_interval(reps, level, estimate), percentile_interval(reps, level)
        return min(rlo, plo), max(rhi, phi)
    if rule == "bca":
        if jack is None:
            raise ValueError("the BCa rule needs the jackknife values over studies")
        jack = np.asarray(jack, np.float64)
        return _bca(estimate, reps, level, jack[np.isfinite(jack)])
    raise ValueError(f"unknown interval rule {rule!r}; one of {RULES}")


RULES = ("percentile", "recentred", "hull", "bca")
"""Interval rules `null_simulation` compares: the plain percentile interval; the percentile interval re-centred
on the estimate (`percentile_interval`); the hull of the two; Efron's BCa with the acceleration from a jackknife over
studies (`_bca`)."""

INTERVAL_RULE = "recentred"
"""The rule of a single score's interval (`interval`, `member_interval`, `mean_interval`). Its coverage of the
population value, measured by `null_simulation` (1000 simulations of 332 studies, 2000 replicates): accuracy
95.9 %, NLL 94.0 %, Brier 94.1 %, debiased ECE 95.6 %; the plug-in ECE only 87.4 %, as re-centring keeps the
estimate's upward bias (the plain percentile interval, which adds the resampling's bias to it: 70.4 %)."""

DELTA_RULE = "hull"
"""The rule of a paired difference's interval (`paired_delta`, `paired_member_delta`, `paired_auroc_delta`):
the hull of the re-centred and the plain percentile intervals, so that re-centring never creates a verdict the
plain interval does not support (it can for a lumpy statistic: a difference of one image in one member puts
the median of the replicates at zero and the estimate beside it, and the re-centred bound then lands on the
estimate).

Measured by `null_simulation` (1000 simulations of 332 studies, 2000 replicates as in the report; `python -m
utils.evaluation.simulation`): where two methods are equally good the hull and the plain percentile interval call
a difference equally often (within 0.2 points: accuracy 3.3-5.6 %, NLL 6.1-6.5 %, Brier 5.1-5.7 %, ECE and
debiased ECE <= 0.4 %; NLL and Brier 4.6-5.2 % in 2000 further simulations, `--seed 1`), except for the plug-in
ECE of two calibrated predictors of different sharpness, whose biases differ: 10.3 % with the hull, 15.7 % with
the percentile interval (the debiased ECE: 2.0 % and 2.2 %). The hull is kept for that case; BCa does worse
(ECE 6-14 %, NLL 7.4-8.4 %)."""


def interval_summary(estimate: float, reps: np.ndarray, level: float, key: str = "estimate", bounds=None,
             rule: str | None = None, jack=None) -> dict:
    reps = reps[np.isfinite(reps)]
    lo, hi = rule_interval(rule or INTERVAL_RULE, estimate, reps, level, jack) if len(reps) else (np.nan, np.nan)
    if bounds is not None and len(reps):
        lo, hi = float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))
    return {key: float(estimate), "low": lo, "high": hi,
            "se": float(reps.std(ddof=1)) if len(reps) > 1 else 0.0, "n_boot": int(len(reps))}


def delta_summary(delta: float, reps: np.ndarray, level: float, rule: str | None = None, jack=None) -> dict:
    """A paired difference's interval by `DELTA_RULE` (not clipped), and whether it excludes zero."""
    d = interval_summary(delta, reps, level, key="delta", rule=rule or DELTA_RULE, jack=jack)
    d["excludes_zero"] = bool(d["low"] > 0 or d["high"] < 0)
    return d


def interval(metric: str, probs, labels, groups, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> dict:
    """Metric on the full data with its study-bootstrap interval (`INTERVAL_RULE`: the percentile interval
    re-centred on the estimate, clipped to the metric's range).

    Returns dict(estimate, low, high, se, n_boot); `n_boot` is the number of replicates used
    (for "auroc", replicates in which one class is absent are dropped). groups=None treats
    every image as its own study.
    """
    n = len(np.asarray(labels))
    est = weighted_metric(metric, probs, labels, np.ones((1, n)))[0]
    W = study_weights(group_codes(groups, n)[0], n_boot, seed)
    return interval_summary(est, weighted_metric(metric, probs, labels, W), level, bounds=BOUNDS.get(metric))


def paired_delta(metric: str, probs_a, probs_b, labels, groups, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """metric(a) - metric(b) with a paired interval (both scored on the same resampled studies; `DELTA_RULE`).

    Returns dict(delta, low, high, se, n_boot, excludes_zero).
    """
    n = len(np.asarray(labels))
    one = np.ones((1, n))
    delta = weighted_metric(metric, probs_a, labels, one)[0] - weighted_metric(metric, probs_b, labels, one)[0]
    W = study_weights(group_codes(groups, n)[0], n_boot, seed)
    reps = weighted_metric(metric, probs_a, labels, W) - weighted_metric(metric, probs_b, labels, W)
    return delta_summary(delta, reps, level)


def member_counts(m: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, m) counts of m members drawn with replacement per replicate (a stream of its own,
    so the study weights are those of `study_weights(groups, n_boot, seed)`)."""
    rng = np.random.default_rng([seed, 1])
    draws = rng.integers(0, m, size=(n_boot, m))
    return np.bincount((draws + np.arange(n_boot)[:, None] * m).ravel(), minlength=n_boot * m).reshape(n_boot, m)


def _as_members(x, n: int, metric: str) -> np.ndarray:
    """M x N x C member predictions (for "auroc" also M x N scores); one N x C array (or, for
    "auroc", one score of N or an N x 2 array) becomes a single member."""
    x = np.asarray(x, np.float64)
    single = x.ndim == 2 and x.shape[0] == n and (metric != "auroc" or x.shape[1] == 2)
    return x[None] if single or x.ndim == 1 else x


def member_values(metric: str, member_probs: np.ndarray, labels, W: np.ndarray) -> np.ndarray:
    """(M, B) metric of every member under every row of W."""
    return np.stack([weighted_metric(metric, p, labels, W) for p in member_probs])


def member_interval(metric: str, member_probs, labels, groups, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """Mean over training runs (members) of a metric, with an interval carrying both the spread
    over members and the test-set noise.

    Each replicate draws M members with replacement and the studies with replacement (one set
    of study weights for all members of the replicate); its value is the mean over the drawn
    members. `member_probs` is M x N x C. Returns dict(estimate, low, high, se, n_boot).
    """
    mp = np.asarray(member_probs, np.float64)
    n = len(np.asarray(labels))
    est = member_values(metric, mp, labels, np.ones((1, n)))[:, 0].mean()
    W = study_weights(group_codes(groups, n)[0], n_boot, seed)
    V = member_values(metric, mp, labels, W)  # M x B
    K = member_counts(len(mp), n_boot, seed)  # B x M
    return interval_summary(est, (K * V.T).sum(1) / len(mp), level, bounds=BOUNDS.get(metric))


def paired_member_delta(metric: str, member_probs_a, member_probs_b, labels, groups, n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict:
    """Mean over members of metric(a_m) - metric(b_m), paired over studies *and* members.

    a and b are M x N x C predictions of the same M members (e.g. member m's Laplace and its
    MAP), or either is a plain N x C array (e.g. the ensemble's probabilities), used for every
    member. Each replicate draws the members and the studies with replacement, the same for a
    and b. Returns dict(delta, low, high, se, n_boot, excludes_zero).
    """
    n = len(np.asarray(labels))
    a, b = _as_members(member_probs_a, n, metric), _as_members(member_probs_b, n, metric)
    m = max(len(a), len(b))
    if len(a) not in (1, m) or len(b) not in (1, m):
        raise ValueError(f"a has {len(a)} members and b {len(b)}")
    one = np.ones((1, n))
    delta = member_values(metric, a, labels, one)[:, 0].mean() - member_values(metric, b, labels, one)[:, 0].mean()
    W = study_weights(group_codes(groups, n)[0], n_boot, seed)
    V = np.broadcast_to(member_values(metric, a, labels, W), (m, n_boot)) \
        - np.broadcast_to(member_values(metric, b, labels, W), (m, n_boot))
    K = member_counts(m, n_boot, seed)
    return delta_summary(delta, (K * V.T).sum(1) / m, level)


# ----------------------------------------------------------------------------------------------
# flagging errors


def flag_auroc(score, is_error, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AUROC of `score` (higher = more likely an error) for separating errors from correct
    predictions, with its study-bootstrap interval.

    Replicates in which the resampled set has no error or no correct prediction are dropped;
    `n_boot` in the result is the number of replicates used. Returns dict(estimate, low, high,
    se, n_boot).
    """
    return interval("auroc", np.asarray(score, np.float64), np.asarray(is_error).astype(int), groups,
                    n_boot, seed, level)


def paired_auroc_delta(score_a, score_b, is_error, groups, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """AUROC(score_a) - AUROC(score_b) for flagging the same errors, paired over studies.

    Replicates with one class absent are dropped (`n_boot` = number used). Returns
    dict(delta, low, high, se, n_boot, excludes_zero).
    """
    return paired_delta("auroc", np.asarray(score_a, np.float64), np.asarray(score_b, np.float64),
                        np.asarray(is_error).astype(int), groups, n_boot, seed, level)


def study_folds(is_error, groups, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index per image; all images of a study share a fold (StratifiedGroupKFold, shuffled)."""
    y = np.asarray(is_error).astype(int)
    inv, _ = group_codes(groups, len(y))
    fold = np.full(len(y), -1)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros((len(y), 1)), y, inv)):
        fold[test] = k
    return fold


def cv_logistic_score(features, is_error, groups, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probability of an error from a logistic regression on standardised features.

    Folds are split by study (no study in both the training and the test part of a fold), so
    the combined score is judged on studies its weights never saw. features: N x F (or N).
    Returns (N,) out-of-fold predicted probabilities of error.
    """
    X = np.asarray(features, np.float64)
    X = X[:, None] if X.ndim == 1 else X
    y = np.asarray(is_error).astype(int)
    fold = study_folds(y, groups, n_splits, seed)
    out = np.empty(len(y))
    for k in range(n_splits):
        test = fold == k
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(X[~test], y[~test])
        out[test] = model.predict_proba(X[test])[:, 1]
    return out


# ----------------------------------------------------------------------------------------------
# calibration reference


def ece_reference(probs, n_boot: int = 1000, seed: int = 0, n_bins: int = 15, level: float = 0.95) -> dict:
    """ECE that a perfectly calibrated predictor with exactly these probabilities would show.

    Per replicate, labels are sampled y*_i ~ Categorical(probs[i]) by inverse-CDF sampling with
    one uniform u_i per image, the predicted (top) class first in the CDF: the top label is
    correct iff u_i < max_c probs[i, c], which is all the top-label ECE looks at. Returns
    dict(mean, low, high) of ECE(probs, y*) over the replicates (percentile interval).
    """
    probs = np.asarray(probs, np.float64)
    conf = probs.max(1)
    u = np.random.default_rng(seed).random((n_boot, len(conf)))
    correct = (u < conf).astype(np.float64)
    reps = _weighted_ece(conf, correct, None, n_bins)
    lo, hi = percentile_interval(reps, level)
    return {"mean": float(reps.mean()), "low": lo, "high": hi}


# ----------------------------------------------------------------------------------------------
# formatting


def _num(x: float, digits: int, sign: bool) -> str:
    """`x` at `digits` decimals; with `sign`, a nonzero value that rounds to zero keeps its sign ("-0.000": a
    difference's direction must not flip in print), and an exact zero reads "+0.000"."""
    v = round(float(x), digits) + 0.0  # no "-0.00" from an exact zero
    if sign and v == 0 and float(x) < 0:
        return f"-{0:.{digits}f}"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_interval(d: dict, scale: float = 1.0, digits: int = 2) -> str:
    """'2.58 [2.10, 3.05]' from a dict with estimate (or mean), low and high, times `scale`."""
    est = d["estimate"] if "estimate" in d else d["mean"]
    return f"{_num(est * scale, digits, False)} [{_num(d['low'] * scale, digits, False)}, " \
           f"{_num(d['high'] * scale, digits, False)}]"


def fmt_estimate(value, ci=None, digits: int = 2) -> str:
    """'0.57 [0.50, 0.63]' from a value and its (low, high) interval; the value alone where the interval is missing
    or has a NaN end (every bootstrap replicate failed); '-' where the value is missing or NaN."""
    if value is None or value != value:
        return "-"
    if ci is None or any(v is None or v != v for v in ci):
        return _num(value, digits, False)
    return fmt_interval(dict(estimate=value, low=ci[0], high=ci[1]), digits=digits)


def fmt_signed(x: float, digits: int = 2) -> str:
    """`x` with its sign ('+0.20', '-0.01'), but a value that rounds to zero as plain zero ('0.00', not '-0.00'):
    for a point value read without an interval."""
    return f"{0.0:.{digits}f}" if round(x, digits) == 0 else f"{x:+.{digits}f}"


def fmt_delta(d: dict, scale: float = 1.0, digits: int = 2) -> str:
    """'-0.47 [-0.90, -0.03]' from a dict with delta, low and high (ASCII signs, '+' shown)."""
    return f"{_num(d['delta'] * scale, digits, True)} [{_num(d['low'] * scale, digits, True)}, " \
           f"{_num(d['high'] * scale, digits, True)}]"


# ----------------------------------------------------------------------------------------------
# means of per-image scores, and tables


def mean_interval(values, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean of a per-image score (e.g. an explanation's pointing hit or relevance mass) with its
    study-bootstrap interval; NaN values (a score undefined for that image) are left out of every replicate.
    Returns dict(estimate, low, high, se, n_boot)."""
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    W = study_weights(group_codes(groups, len(v))[0], n_boot, seed) * ok
    est = float(v[ok].mean()) if ok.any() else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (W @ np.where(ok, v, 0.0)) / W.sum(1)
    return interval_summary(est, reps, level)


def mean_intervals(values, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """`mean_interval` of each column of an N x K array of per-image scores, from one set of study weights (the
    replicates `mean_interval` draws with the same groups and seed, so the columns are paired with one another):
    many scores of the same images without drawing the weights K times. One dict per column."""
    V = np.asarray(values, np.float64)
    if V.ndim != 2:
        raise ValueError(f"expected an N x K array of scores, got shape {V.shape}")
    ok = np.isfinite(V)
    W = study_weights(group_codes(groups, len(V))[0], n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (W @ np.where(ok, V, 0.0)) / (W @ ok)
    est = [float(V[ok[:, k], k].mean()) if ok[:, k].any() else np.nan for k in range(V.shape[1])]
    return [interval_summary(est[k], reps[:, k], level) for k in range(V.shape[1])]


def paired_mean_delta(values_a, values_b, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b) of two per-image scores of the same images, paired over studies (images where either
    is NaN are left out). Returns dict(delta, low, high, se, n_boot, excludes_zero)."""
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    d = mean_interval(a - b, groups, n_boot, seed, level)
    return dict(delta=d["estimate"], low=d["low"], high=d["high"], se=d["se"], n_boot=d["n_boot"],
                excludes_zero=bool(d["low"] > 0 or d["high"] < 0))


def flagging_table(scores: dict, is_error, groups, reference: str, combine: dict | None = None,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> "pd.DataFrame":
    """How well each score flags errors: AUROC with its interval, and the paired difference from the
    `reference` score (e.g. the predictive entropy).

    scores : {name: (N,) score, higher = more likely an error}.
    combine : {name: [score names]}: a combined score, the out-of-fold probability of error of a logistic
        regression on those scores (`cv_logistic_score`, folds by study), so the combination is judged on
        images it was not fitted to.
    """
    is_error = np.asarray(is_error).astype(int)
    scores = {k: np.asarray(v, np.float64) for k, v in scores.items()}
    for name, parts in (combine or {}).items():
        scores[name] = cv_logistic_score(np.column_stack([scores[p] for p in parts]), is_error, groups, seed=seed)
    rows = []
    for name, s in scores.items():
        d = flag_auroc(s, is_error, groups, n_boot, seed, level)
        row = dict(score=name, auroc=d["estimate"], low=d["low"], high=d["high"])
        if name != reference:
            dd = paired_auroc_delta(s, scores[reference], is_error, groups, n_boot, seed, level)
            row.update(delta=dd["delta"], delta_low=dd["low"], delta_high=dd["high"])
        rows.append(row)
    return pd.DataFrame(rows)
