"""The calibration comparison (notebook 04): every method's saved test predictions, one table, the plots."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import bayes, ensembles, metrics
from .config import get_profile

# method label -> how a member's predictions are obtained
SINGLE_METHODS = {
    "MAP": ("baseline", "map"),
    "temperature scaling": ("baseline", "temperature"),
    "MC dropout": ("baseline", "mc_dropout"),
    "Laplace, diag": ("laplace", "diag"),
    "Laplace, kron": ("laplace", "kron"),
    "Laplace, full": ("laplace", "full"),
}
COLUMNS = ("accuracy", "macro_f1", "nll", "brier", "ece")


def member_predictions(profile, cache, paths, device=None, parts=None, subset: str = "test",
                       prior: str = "marglik") -> dict[str, dict]:
    """{method: dict(probs=M x N x C, samples=list of S x N x C or None, info=[per-member dicts])}."""
    profile = get_profile(profile)
    out = {}
    for label, (kind, arg) in SINGLE_METHODS.items():
        if arg == "mc_dropout" and profile.dropout == 0:
            continue
        runs = [bayes.baseline_member(profile, m, cache, arg, paths, device, parts, subset=subset)
                if kind == "baseline" else
                bayes.laplace_member(profile, m, cache, arg, prior, paths, device, parts, subset=subset)
                for m in range(profile.members)]
        out[label] = dict(probs=np.stack([r["probs"] for r in runs]),
                          samples=[r.get("samples") for r in runs],
                          info=[{k: v for k, v in r.items() if k not in ("probs", "samples")} for r in runs])
    return out


def table(preds: dict[str, dict], labels: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Scores of every method: single-model methods as mean and standard error over members; deep
    ensembles and the mixture of Laplace approximations (kron) for each size k over member subsets
    (standard error over disjoint subsets where two or more fit, else the spread or a single value)."""
    rows = []
    for label, p in preds.items():
        scores = pd.DataFrame([metrics.summary(q, labels) for q in p["probs"]])
        row = dict(method=label, members=1, over=f"{len(scores)} members")
        for c in COLUMNS:
            row[c], row[f"{c}_se"] = scores[c].mean(), scores[c].sem(ddof=1) if len(scores) > 1 else np.nan
        rows.append(row)
    for label, base in (("deep ensemble", "MAP"), ("mixture of Laplace (kron)", "Laplace, kron")):
        if base not in preds:
            continue
        curve = ensembles.size_curve(preds[base]["probs"], labels, seed=seed)
        for r in curve.itertuples():
            if r.k == 1:
                continue
            row = dict(method=f"{label}, k={r.k}", members=r.k, over=f"{r.subsets} {r.drawn}")
            for c in COLUMNS:
                row[c] = getattr(r, c)
                se, sd = getattr(r, f"se_{c}"), getattr(r, f"sd_{c}")
                row[f"{c}_se"] = se
                row[f"{c}_sd"] = sd
            rows.append(row)
    return pd.DataFrame(rows)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """mean ± error as strings: ± SE where it is a standard error, ± (sd) where it is a spread."""
    out = df[["method", "over"]].copy()
    for c in COLUMNS:
        pct = c in ("accuracy", "ece")
        scale, fmt = (100, "{:.2f}") if pct else (1, "{:.4f}")
        cells = []
        for _, r in df.iterrows():
            v = fmt.format(r[c] * scale)
            se, sd = r.get(f"{c}_se"), r.get(f"{c}_sd")
            if pd.notna(se):
                v += f" ± {fmt.format(se * scale)}"
            elif pd.notna(sd):
                v += f" (sd {fmt.format(sd * scale)})"
            cells.append(v)
        out[f"{c} (%)" if pct else c] = cells
    return out


def plot_reliability(ax, probs, labels, title: str, n_bins: int = 15, hist_ax=None, legend: bool = False):
    """Reliability diagram (accuracy against confidence per bin; the gap to the bin's mean confidence in red
    where overconfident, green where underconfident) with the ECE in the title;
    the confidence histogram on `hist_ax` if given."""
    r = metrics.reliability(probs, labels, n_bins)
    centres = (r["edges"][:-1] + r["edges"][1:]) / 2
    ok = r["count"] > 0
    w = 1 / n_bins
    acc, conf = r["accuracy"][ok], r["confidence"][ok]
    ax.bar(centres[ok], acc, width=w, color="tab:blue", edgecolor="white")
    over = conf > acc
    for mask, colour in ((over, "tab:red"), (~over, "tab:green")):
        ax.bar(centres[ok][mask], np.abs(conf - acc)[mask], bottom=np.minimum(acc, conf)[mask], width=w,
               color=colour, alpha=0.45, edgecolor="none")
    if legend:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="tab:blue", label="accuracy"),
                           Patch(color="tab:red", alpha=0.45, label="overconfident gap"),
                           Patch(color="tab:green", alpha=0.45, label="underconfident gap")],
                  fontsize=7, loc="upper left")
    ax.plot([0, 1], [0, 1], color="0.3", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{title}\nECE {metrics.ece(probs, labels, n_bins):.1%}")
    if hist_ax is not None:
        hist_ax.bar(centres, r["count"] / r["count"].sum(), width=w, color="0.5", edgecolor="white")
        hist_ax.set(xlim=(0, 1), xlabel="confidence", ylabel="share of images", yscale="log")
