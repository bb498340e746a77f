"""Deep ensembles: the mean of member probabilities, scored over member subsets, and member diversity."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from . import metrics

SCORES = ("accuracy", "macro_f1", "nll", "brier", "ece")


def ensemble_probs(member_probs: np.ndarray, members=None) -> np.ndarray:
    """Predictive of an ensemble: the mean of its members' probabilities (member_probs: M x N x C)."""
    mp = np.asarray(member_probs)
    return mp[list(members)].mean(0) if members is not None else mp.mean(0)


def member_subsets(m: int, k: int, seed: int = 0, n_random: int = 20) -> tuple[list[tuple[int, ...]], str]:
    """Subsets of k of m members to score an ensemble of size k over, and how they were drawn.

    Disjoint subsets (from one seeded permutation) where at least two fit, so their
    scores are independent and a standard error is honest; otherwise every subset
    when there are few, else `n_random` distinct random ones (overlapping: their
    spread is reported, not a standard error); k = m is the one full ensemble.
    """
    rng = np.random.default_rng(seed)
    if k == m:
        return [tuple(range(m))], "all members"
    if m // k >= 2:
        perm = rng.permutation(m)
        return [tuple(sorted(perm[i * k:(i + 1) * k])) for i in range(m // k)], "disjoint"
    combos = list(itertools.combinations(range(m), k))
    if len(combos) <= n_random:
        return combos, "all subsets (overlapping)"
    pick = rng.choice(len(combos), n_random, replace=False)
    return [combos[i] for i in sorted(pick)], "random subsets (overlapping)"


def size_curve(member_probs: np.ndarray, labels: np.ndarray, sizes=None, seed: int = 0) -> pd.DataFrame:
    """Scores of ensembles of each size k: mean over member subsets, with the standard error over
    disjoint subsets (column `se_*`) or the standard deviation over overlapping ones (`sd_*`)."""
    m = len(member_probs)
    rows = []
    for k in sizes or range(1, m + 1):
        subsets, how = member_subsets(m, k, seed)
        scores = pd.DataFrame([metrics.summary(ensemble_probs(member_probs, s), labels) for s in subsets])
        row = dict(k=k, subsets=len(subsets), drawn=how)
        for c in SCORES:
            row[c] = scores[c].mean()
            spread = scores[c].std(ddof=1) if len(scores) > 1 else np.nan
            row[f"se_{c}"] = spread / np.sqrt(len(scores)) if how == "disjoint" else np.nan
            row[f"sd_{c}"] = spread if how != "disjoint" else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def diversity(member_probs: np.ndarray, labels: np.ndarray) -> dict[str, pd.DataFrame]:
    """Pairwise disagreement (share of images whose predicted class differs) and the correlation of the
    members' error indicators (1 where a member is wrong)."""
    pred = np.asarray(member_probs).argmax(-1)
    wrong = (pred != np.asarray(labels)[None]).astype(float)
    m = len(pred)
    names = [f"m{i}" for i in range(m)]
    dis = np.array([[(pred[i] != pred[j]).mean() for j in range(m)] for i in range(m)])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(wrong) if m > 1 else np.ones((1, 1))
    return dict(disagreement=pd.DataFrame(dis, names, names), error_correlation=pd.DataFrame(corr, names, names))


def off_diagonal_mean(df: pd.DataFrame) -> float:
    a = df.to_numpy()
    return float(a[~np.eye(len(a), dtype=bool)].mean()) if len(a) > 1 else float("nan")
