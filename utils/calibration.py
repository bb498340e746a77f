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


# --------------------------------------------------------------------------- intervals (notebook 04's table)

INTERVAL_METRICS = ("accuracy", "nll", "brier", "ece")
LOWER_IS_BETTER = {"accuracy": False, "nll": True, "brier": True, "ece": True}


def interval_table(preds: dict[str, dict], labels: np.ndarray, groups: np.ndarray, n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every method's scores with 95 % intervals, and its difference from the MAP network with a paired one.

    Single-model methods (M x N x C probabilities, one set per member): the estimate is the mean over
    members; the interval resamples members *and* test studies (`evidence.member_interval`), so it holds
    both the member-to-member spread and the test-set noise. The deep ensemble and the mixture of Laplace
    approximations of all M members are one predictor each: studies are resampled. Every delta is paired
    (the same resampled studies, and the same members, on both sides): `delta_<metric>` is method - MAP as
    single models, with `delta_<metric>_low/high`; a difference is evidence only where its interval
    excludes zero. `ece_reference*` is the ECE a perfectly calibrated predictor with the same confidences
    shows on this many images (labels drawn from the predicted probabilities): the floor an ECE cannot
    be told apart from. One row per method; `kind` is "single" or "ensemble".
    """
    from . import evidence

    labels, groups = np.asarray(labels), np.asarray(groups)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    rows = []
    entries = [(label, "single", np.asarray(p["probs"])) for label, p in preds.items()]
    m = len(preds["MAP"]["probs"])
    for label, base in ((f"deep ensemble, k={m}", "MAP"), (f"mixture of Laplace (kron), k={m}", "Laplace, kron")):
        if base in preds and m > 1:
            entries.append((label, "ensemble", ensembles.ensemble_probs(preds[base]["probs"])))
    base = np.asarray(preds["MAP"]["probs"])
    for label, kind, probs in entries:
        row = dict(method=label, kind=kind, members=1 if kind == "single" else m)
        for c in INTERVAL_METRICS:
            d = (evidence.member_interval(c, probs, labels, groups, **kw) if kind == "single"
                 else evidence.interval(c, probs, labels, groups, **kw))
            row.update({c: d["estimate"], f"{c}_low": d["low"], f"{c}_high": d["high"]})
            if label != "MAP":
                dd = evidence.paired_member_delta(c, probs, base, labels, groups, **kw)
                row.update({f"delta_{c}": dd["delta"], f"delta_{c}_low": dd["low"], f"delta_{c}_high": dd["high"]})
        refs = [evidence.ece_reference(p, n_boot=max(200, n_boot // 4), seed=seed, level=level)
                for p in (probs if kind == "single" else probs[None])]
        row.update(ece_reference=float(np.mean([r["mean"] for r in refs])),
                   ece_reference_low=float(np.mean([r["low"] for r in refs])),
                   ece_reference_high=float(np.mean([r["high"] for r in refs])))
        rows.append(row)
    return pd.DataFrame(rows)


def ensemble_vs_best_single(preds: dict[str, dict], labels: np.ndarray, groups: np.ndarray, n_boot: int = 2000,
                            seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """For each metric, the deep ensemble of all members against the best single-model method by that metric
    (as single models, mean over members): the paired difference ensemble - best with its interval."""
    from . import evidence

    labels, groups = np.asarray(labels), np.asarray(groups)
    ens = ensembles.ensemble_probs(preds["MAP"]["probs"])
    rows = []
    for c in INTERVAL_METRICS:
        est = {k: np.mean([getattr(metrics, c)(q, labels) for q in p["probs"]]) for k, p in preds.items()}
        best = (min if LOWER_IS_BETTER[c] else max)(est, key=est.get)
        d = evidence.paired_member_delta(c, ens, np.asarray(preds[best]["probs"]), labels, groups,
                                         n_boot=n_boot, seed=seed, level=level)
        rows.append(dict(metric=c, best_single=best, best_single_value=est[best], ensemble=float(
            getattr(metrics, c)(ens, labels)), delta=d["delta"], low=d["low"], high=d["high"],
            excludes_zero=bool(d["low"] > 0 or d["high"] < 0)))
    return pd.DataFrame(rows)


def verdict(delta: float, low: float, high: float, lower_is_better: bool) -> str:
    """'better', 'worse' or 'no difference shown', from a paired difference (method - reference) and its
    interval: only an interval that excludes zero says anything."""
    if low <= 0 <= high:
        return "no difference shown"
    return "better" if (delta < 0) == lower_is_better else "worse"


def format_interval_table(df: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: 'estimate [low, high]' per metric and 'delta [low, high]' against the MAP network;
    accuracy and ECE in %, NLL and Brier as they are."""
    from . import evidence

    out = df[["method"]].copy()
    for c in INTERVAL_METRICS:
        scale, digits = (100, 2) if c in ("accuracy", "ece") else (1, 3)
        unit = " (%)" if scale == 100 else ""
        out[c + unit] = [evidence.fmt_interval(dict(estimate=r[c], low=r[f"{c}_low"], high=r[f"{c}_high"]),
                                               scale, digits) for _, r in df.iterrows()]
        out[f"Δ {c} vs MAP" + unit] = ["–" if pd.isna(r.get(f"delta_{c}")) else evidence.fmt_delta(
            dict(delta=r[f"delta_{c}"], low=r[f"delta_{c}_low"], high=r[f"delta_{c}_high"]), scale, digits)
            for _, r in df.iterrows()]
    out["ECE if calibrated (%)"] = [evidence.fmt_interval(dict(estimate=r.ece_reference, low=r.ece_reference_low,
                                                              high=r.ece_reference_high), 100, 2)
                                    for _, r in df.iterrows()]
    return out


def verdicts(tab: pd.DataFrame) -> pd.DataFrame:
    """method x metric: 'better', 'worse' or 'no difference shown' against the MAP network, read off the paired
    intervals of `interval_table` (the MAP row itself is left out)."""
    rows = {}
    for _, r in tab[tab.method != "MAP"].iterrows():
        rows[r.method] = {c: verdict(r[f"delta_{c}"], r[f"delta_{c}_low"], r[f"delta_{c}_high"], LOWER_IS_BETTER[c])
                          for c in INTERVAL_METRICS}
    return pd.DataFrame(rows).T.rename_axis("method")
