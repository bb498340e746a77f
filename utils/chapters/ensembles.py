"""Deep ensembles: the mean of member probabilities, scored over member subsets, and member diversity."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from utils.evaluation import metrics

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


def member_table(metas: list[dict]) -> pd.DataFrame:
    """One row per trained member: seed, epochs run, the kept epoch, its validation NLL, seconds and device."""
    return pd.DataFrame([dict(member=m["member"], seed=m["seed"], epochs=m["epochs_run"], best_epoch=m["best_epoch"],
                              val_nll=m["best_val_nll"], train_s=m["train_seconds"], device=m["device"])
                         for m in metas]).set_index("member")


def subset_sd(curve: pd.DataFrame, c: str) -> pd.Series:
    """The standard deviation of score `c` over the k-member subsets of each row of a `size_curve`: its `sd_*`
    where the subsets overlap, and `se_* x sqrt(subsets)` (the SD the standard error was made from) where they
    are disjoint; NaN where there is one subset (k = M, the full ensemble)."""
    sd = curve[f"se_{c}"] * np.sqrt(curve["subsets"].astype(float))
    return sd.fillna(curve[f"sd_{c}"]).where(curve["subsets"] > 1)


MIN_SPAN = {"accuracy": 0.03, "nll": 0.03, "ece": 0.02}  # the y-axis spans at least this much of each metric


def plot_size_curve(curve: pd.DataFrame):
    """Accuracy, NLL and ECE against ensemble size k: the mean over the k-member subsets, with one kind of
    error bar at every k, the standard deviation of the score over those subsets (`subset_sd`); where there is
    one subset (k = M, the full ensemble) the point has no bar, and the legend says so."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    for ax, c, label in zip(axes, ["accuracy", "nll", "ece"], ["accuracy (%)", "NLL (nats per image)", "ECE (%)"]):
        scale = 100 if c in ("accuracy", "ece") else 1
        sd = subset_sd(curve, c) * scale
        many = sd.notna().to_numpy()
        ax.plot(curve.k, curve[c] * scale, "-", color="tab:blue")
        ax.errorbar(curve.k[many], curve[c][many] * scale, yerr=sd[many], fmt="o", color="tab:blue", capsize=3,
                    label="mean over the k-member subsets, bar: SD over the k-member subsets")
        if (~many).any():
            ks = ", ".join(f"{k:g}" for k in curve.k[~many])
            ax.plot(curve.k[~many], curve[c][~many] * scale, "D", color="tab:blue", mfc="white",
                    label=f"k = {ks}: one subset (the full ensemble), no bar")
        ax.set(xlabel="ensemble size k", ylabel=label,
               title=f"{label.split(' (')[0]} against ensemble size\n(bars: SD over the k-member subsets)")
        lo, hi = ax.get_ylim()  # at least MIN_SPAN of the metric, so that a small change does not fill the panel
        if hi - lo < MIN_SPAN[c] * scale:
            mid = (lo + hi) / 2
            ax.set_ylim(mid - MIN_SPAN[c] * scale / 2, mid + MIN_SPAN[c] * scale / 2)
        ax.title.set_fontsize(10)
        ax.set_xticks(curve.k)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: not labels[i].startswith("mean"))  # the bars' entry first
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower center", ncol=2, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_diversity(div: dict[str, pd.DataFrame]):
    """Heat maps of the pairwise disagreement and error correlation of `diversity`."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, df), fmt in zip(axes, div.items(), ["{:.1%}", "{:.2f}"]):
        im = ax.imshow(df.to_numpy(), cmap="viridis")
        for i in range(len(df)):
            for j in range(len(df)):
                ax.text(j, i, fmt.format(df.iat[i, j]), ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(df)), df.columns)
        ax.set_yticks(range(len(df)), df.index)
        ax.set_title(name.replace("_", " ") + f" (off-diagonal mean {off_diagonal_mean(df):.3g})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _said(g: dict, scale: float = 100, unit: str = " points") -> str:
    return f"{scale * g['delta']:+.2f} [{scale * g['low']:+.2f}, {scale * g['high']:+.2f}]{unit}"


def reading(gain: dict, full: pd.Series, single: pd.DataFrame, div: dict[str, pd.DataFrame], source: str,
            members: int) -> str:
    """The chapter's conclusion in Markdown: the full ensemble against one member, paired over members and studies
    (`gain`: metric -> dict(delta, low, high) of `evidence.paired_member_delta`), and the members' diversity."""
    e = gain["ece"]
    ece_words = "raises" if e["low"] > 0 else "lowers" if e["high"] < 0 else "does not measurably change"
    return (
        f"**Reading** (data: {source}; 95 % intervals, paired over members and test studies). The full "
        f"ensemble of {members} members reaches {full.accuracy:.1%} test accuracy and NLL {full.nll:.3f}, against "
        f"{single.accuracy.mean():.1%} and {single.nll.mean():.3f} for one member on average: a difference of "
        f"{_said(gain['accuracy'])} in accuracy and {_said(gain['nll'], 1, ' nats')} in NLL. Members disagree on "
        f"{off_diagonal_mean(div['disagreement']):.1%} of the test images, and their errors are correlated "
        f"({off_diagonal_mean(div['error_correlation']):.2f}), which bounds the gain. Ensembling "
        f"{ece_words} the ECE ({single.ece.mean():.1%} for one member, {full.ece:.1%} for all; {_said(gain['ece'])}). "
        "The error bars of the size curve above are over member subsets only; notebook 04 adds the test-set noise.")
