"""The calibration comparison (notebook 04): one table of every registered posterior's test scores, the ensemble
against the best single-model method, the curated figures and the chapter's reading.

Predictions come from `Run.predictions()`, one `posteriors.Predictions` record per label: the tables score
`scored` (every member of a single-model method, or the combination's mean), the figures show `probs` (member 0,
or the combination). Everything here iterates over the dict it is given, so a newly registered method or
combination appears without edits; the registry's `figures` flag says which the figures show.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from utils import posteriors
from utils.evaluation import conformal, evidence, metrics
from utils.evaluation.evidence import fmt_interval

Preds = dict[str, posteriors.Predictions]


def figure_labels(preds: Preds) -> list[str]:
    """The methods the reliability, selective and class-wise figures show, in the order of `preds`: those
    registered with `figures=True` (and any method not registered), single-model methods first, then the
    combinations."""
    shown = [lab for lab in preds if lab not in posteriors.REGISTRY or posteriors.REGISTRY[lab].figures]
    return [lab for lab in shown if not preds[lab].combination] + [lab for lab in shown if preds[lab].combination]


def shown_probs(preds: Preds) -> dict[str, np.ndarray]:
    """{label: N x C} for the figures (`figure_labels`): what each record shows (`Predictions.probs`: member 0
    of a single-model method, the combination's own predictive)."""
    return {lab: preds[lab].probs for lab in figure_labels(preds)}


def tv_from_map(preds: Preds) -> dict[str, float]:
    """Mean total-variation distance per image, 0.5 * sum_c |p_c - p_MAP,c|, of every single-model method from
    the MAP network's predictive (member by member, on the members the method was fitted on, then averaged)."""
    base = preds["MAP"].members
    return {k: float(0.5 * np.abs(p.members - base[:p.n_members]).sum(-1).mean())
            for k, p in preds.items() if k != "MAP" and not p.combination}


def prior_methods(preds: Preds) -> list[str]:
    """Single-model methods with a fitted prior precision (the Laplace approximations)."""
    return [k for k, p in preds.items() if not p.combination and any("prior_precision" in i for i in p.info)]


def priors_summary(preds: Preds) -> dict[str, list]:
    """{method: sorted distinct (prior, prior precision rounded to 3 decimals, bracketed)} over its members."""
    return {k: sorted({(i.get("prior"), round(i.get("prior_precision", 0), 3), i.get("bracketed"))
                       for i in preds[k].info}) for k in prior_methods(preds)}


def aurc(show: dict[str, np.ndarray], labels) -> dict[str, float]:
    """Area under the risk-coverage curve of each shown predictive (`metrics.selective`)."""
    return {k: float(metrics.selective(p, labels)["aurc"]) for k, p in show.items()}


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

INTERVAL_METRICS = ("accuracy", "nll", "brier", "ece", "ece_debiased")
"""The scores of notebook 04's table. "ece" is the plug-in ECE (15 bins), biased upwards by an amount that differs
between methods; "ece_debiased" is Kumar et al.'s debiased estimator (`evidence`), whose intervals hold their
nominal coverage in `python -m utils.evaluation.simulation` where the plug-in ECE's do not (87 % at 95 %)."""
LOWER_IS_BETTER = {"accuracy": False, "nll": True, "brier": True, "ece": True, "ece_debiased": True}
LABELS = {"ece_debiased": "debiased ECE"}


def interval_table(preds: Preds, labels: np.ndarray, groups: np.ndarray, n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every method's scores with 95 % intervals, and its difference from the MAP network with a paired one.

    Single-model methods (M x N x C probabilities, one set per member): the estimate is the mean over
    members; the interval resamples members *and* test studies (`evidence.member_interval`), so it holds
    both the member-to-member spread and the test-set noise. Combinations (`Predictions.combination`: the deep ensemble,
    the mixture of Laplace approximations, any other registered one; N x C) are one predictor each: studies are
    resampled; a combination of fewer than two members is left out. Every delta is paired (the same resampled
    studies, and the same members, on both sides): `delta_<metric>` is method - MAP as single models, with
    `delta_<metric>_low/high`; a difference is evidence only where its interval excludes zero.
    `ece_reference*` is the ECE a perfectly calibrated predictor with the same confidences shows on this many
    images (labels drawn from the predicted probabilities): the floor an ECE cannot be told apart from. One row
    per method, in the order of `preds`; `kind` is "single" or "ensemble", `members` 1 or the combination's size;
    `fitted_on` the number of members a single-model method's estimate averages (fewer than the run's for the
    costly ones the registry limits, e.g. member 0 only: its interval then holds the test-set noise alone).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    rows = []
    base = preds["MAP"].members
    for label, p in preds.items():
        combo = p.combination
        probs = p.probs if combo else p.members
        members = p.n_members if combo else 1
        if combo and members < 2:
            continue
        row = dict(method=label, kind="ensemble" if combo else "single", members=members,
                   fitted_on=None if combo else len(probs))
        for c in INTERVAL_METRICS:
            d = (evidence.interval(c, probs, labels, groups, **kw) if combo
                 else evidence.member_interval(c, probs, labels, groups, **kw))
            row.update({c: d["estimate"], f"{c}_low": d["low"], f"{c}_high": d["high"]})
            if label != "MAP":
                ref = base if combo else base[:len(probs)]  # a method fitted on fewer members: the same ones
                dd = evidence.paired_member_delta(c, probs, ref, labels, groups, **kw)
                row.update({f"delta_{c}": dd["delta"], f"delta_{c}_low": dd["low"], f"delta_{c}_high": dd["high"]})
        refs = [evidence.ece_reference(q, n_boot=max(200, n_boot // 4), seed=seed, level=level)
                for q in (probs[None] if combo else probs)]
        row.update(ece_reference=float(np.mean([r["mean"] for r in refs])),
                   ece_reference_low=float(np.mean([r["low"] for r in refs])),
                   ece_reference_high=float(np.mean([r["high"] for r in refs])))
        rows.append(row)
    return pd.DataFrame(rows)


def _score(metric: str, probs, labels) -> float:
    """One score of `probs` on every image (`evidence.weighted_metric` with unit weights: the same definitions as
    the intervals)."""
    return float(evidence.weighted_metric(metric, probs, labels, np.ones((1, len(labels))))[0])


def ensemble_vs_best_single(preds: Preds, labels: np.ndarray, groups: np.ndarray, n_boot: int = 2000,
                            seed: int = 0, level: float = 0.95, ensemble: str = "deep ensemble") -> pd.DataFrame:
    """For each metric, the combination `ensemble` (the deep ensemble of all members) against the best
    single-model method by that metric (as single models, mean over members): the paired difference
    ensemble - best with its interval. Only methods fitted on every member compete (a member-0-only method's
    one value would be picked against means of M by chance as often as not)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    ens = preds[ensemble].probs
    single = {k: p for k, p in preds.items() if not p.combination}
    full = max(p.n_members for p in single.values())  # methods fitted on every member: means of the same size
    single = {k: p for k, p in single.items() if p.n_members == full}
    rows = []
    for c in INTERVAL_METRICS:
        est = {k: np.mean([_score(c, q, labels) for q in p.members]) for k, p in single.items()}
        best = (min if LOWER_IS_BETTER[c] else max)(est, key=est.get)
        d = evidence.paired_member_delta(c, ens, single[best].members, labels, groups,
                                         n_boot=n_boot, seed=seed, level=level)
        rows.append(dict(metric=c, best_single=best, best_single_value=est[best], ensemble=_score(c, ens, labels), delta=d["delta"], low=d["low"], high=d["high"],
            excludes_zero=bool(d["low"] > 0 or d["high"] < 0)))
    out = pd.DataFrame(rows)
    out.attrs["ensemble"] = ensemble
    return out


def verdict(delta: float, low: float, high: float, lower_is_better: bool) -> str:
    """'better', 'worse' or 'no difference shown', from a paired difference (method - reference) and its
    interval: only an interval that excludes zero says anything."""
    if low <= 0 <= high:
        return "no difference shown"
    return "better" if (delta < 0) == lower_is_better else "worse"


def format_interval_table(df: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: 'estimate [low, high]' per metric and 'delta [low, high]' against the MAP network;
    accuracy and ECE in %, NLL and Brier as they are."""
    out = df[["method"]].copy()
    for c in INTERVAL_METRICS:
        scale, digits = (100, 2) if c in ("accuracy", "ece", "ece_debiased") else (1, 3)
        unit = " (%)" if scale == 100 else ""
        name = LABELS.get(c, c)
        out[name + unit] = [evidence.fmt_interval(dict(estimate=r[c], low=r[f"{c}_low"], high=r[f"{c}_high"]),
                                               scale, digits) for _, r in df.iterrows()]
        out[f"Δ {name} vs MAP" + unit] = ["–" if pd.isna(r.get(f"delta_{c}")) else evidence.fmt_delta(
            dict(delta=r[f"delta_{c}"], low=r[f"delta_{c}_low"], high=r[f"delta_{c}_high"]), scale, digits)
            for _, r in df.iterrows()]
    out["ECE if calibrated (%)"] = [evidence.fmt_interval(dict(estimate=r.ece_reference, low=r.ece_reference_low,
                                                              high=r.ece_reference_high), 100, 2)
                                    for _, r in df.iterrows()]
    return out


def verdicts(tab: pd.DataFrame) -> pd.DataFrame:
    """method x metric: 'better', 'worse' or 'no difference shown' against the MAP network, read off the paired
    intervals of `interval_table` (the MAP row itself is left out); ' (borderline)' where the interval's end
    nearest zero rounds to zero at the table's precision (`format_interval_table`), so a rebuild may move it."""
    rows = {}
    for _, r in tab[tab.method != "MAP"].iterrows():
        rows[r.method] = {}
        for c in INTERVAL_METRICS:
            lo, hi = r[f"delta_{c}_low"], r[f"delta_{c}_high"]
            v = verdict(r[f"delta_{c}"], lo, hi, LOWER_IS_BETTER[c])
            scale, digits = (100, 2) if c in ("accuracy", "ece", "ece_debiased") else (1, 3)
            if v != "no difference shown" and round(min(abs(lo), abs(hi)) * scale, digits) == 0:
                v += " (borderline)"
            rows[r.method][c] = v
    return pd.DataFrame(rows).T.rename_axis("method")


# --------------------------------------------------------------------------- the figures (notebook 04)


def plot_reliability_grid(show: dict[str, np.ndarray], labels, ncols: int = 4, n_bins: int = 15):
    """Reliability diagram over its confidence histogram (log scale) for each shown predictive (`shown_probs`),
    `ncols` per row; the legend in the first panel. Returns the figure."""
    n = len(show)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = plt.figure(figsize=(3.1 * ncols, 6.2 * nrows))
    gs = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1.3] * nrows)
    for j, (name, pr) in enumerate(show.items()):
        r, c = divmod(j, ncols)
        plot_reliability(fig.add_subplot(gs[2 * r, c]), pr, labels, name, n_bins=n_bins,
                         hist_ax=fig.add_subplot(gs[2 * r + 1, c]), legend=j == 0)
    fig.suptitle("single-model methods: member 0; combinations: all members", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    return fig


def plot_selective(show: dict[str, np.ndarray], labels, min_coverage: float = 0.1):
    """Accuracy on the kept images against coverage, the least confident referred first, one curve per shown
    predictive with its AURC in the legend (beside the axes), from `min_coverage` (below it a handful of images
    make the accuracy jump) to 100 %; the y-axis spans the curves' values there. Returns the figure."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    lo, hi = np.inf, -np.inf
    styles = ("-", "--", "-.", ":")
    for k, (name, pr) in enumerate(show.items()):
        s = metrics.selective(pr, labels)
        cov, acc = 100 * np.asarray(s["coverage"]), 100 * np.asarray(s["accuracy"])
        ax.plot(cov, acc, color=plt.get_cmap("tab10")(k % 10), ls=styles[(k // 10 + k) % len(styles)],
                label=f"{name} (AURC {s['aurc']:.4f})")
        keep = cov >= 100 * min_coverage
        lo, hi = min(lo, acc[keep].min()), max(hi, acc[keep].max())
    pad = max(0.5, 0.05 * (hi - lo))
    ax.set(xlabel="coverage: share of test images the model keeps (%)", ylabel="accuracy on kept images (%)",
           title="Accuracy against coverage, least confident referred first", xlim=(100 * min_coverage, 100),
           ylim=(lo - pad, min(100 + pad, hi + pad)))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def classwise_ece_table(show: dict[str, np.ndarray], labels, classes) -> pd.DataFrame:
    """Class (lower case) x method: the ECE (%) of each class's one-vs-rest probability (`metrics.classwise_ece`)."""
    return pd.DataFrame({name: 100 * metrics.classwise_ece(pr, labels) for name, pr in show.items()},
                        index=[c.lower() for c in classes])


def plot_classwise_ece(show: dict[str, np.ndarray], labels, classes):
    """Grouped bars of `classwise_ece_table`. Returns the figure."""
    fig, ax = plt.subplots(figsize=(11, 3.8))
    classwise_ece_table(show, labels, classes).plot.bar(ax=ax, width=0.85, rot=0)
    ax.set(ylabel="class-wise ECE (%)", title="Calibration error of each class's one-vs-rest probability")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return fig


# --------------------------------------------------------------------------- the reading (notebook 04)

EFFECT = {"better": "improves", "worse": "worsens", "no difference shown": "does not measurably change"}


def _and(items) -> str:
    items = list(items)
    return "none" if not items else items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _names(labels) -> str:
    """Method labels (which hold commas themselves) in italics, comma-separated; 'none' for none."""
    return ", ".join(f"*{lab}*" for lab in labels) or "none"


def _iv(r, c: str, scale: float = 100, d: int = 1) -> str:
    return f"{r[c] * scale:.{d}f} [{r[c + '_low'] * scale:.{d}f}, {r[c + '_high'] * scale:.{d}f}]"


def _iv_delta(r, c: str, scale: float = 1) -> str:
    return f"{scale * r[f'delta_{c}']:+.3f} [{scale * r[f'delta_{c}_low']:+.3f}, {scale * r[f'delta_{c}_high']:+.3f}]"


def span_text(values, fmt: str = ".3g") -> str:
    """'3.53 to 3.72', or the one value where every member's rounds the same ('19.5', not '19.5 to 19.5')."""
    lo, hi = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return lo if lo == hi else f"{lo} to {hi}"


def prior_words(label: str, info: list[dict]) -> str:
    """'kron δ = 3.53 to 3.72, bracketed for every member' (δ_W and δ_b where the prior is layer-wise)."""
    short = label.removeprefix("Laplace, ")
    deltas = [float(i.get("prior_precision", np.nan)) for i in info]
    bias = [float(i["prior_precision_bias"]) for i in info if "prior_precision_bias" in i]
    unbracketed = sum(not bool(i.get("bracketed", True)) for i in info)
    words = f"{short} δ = {span_text(deltas)}"
    if bias:
        words = f"{short} δ_W = {span_text(deltas)}, δ_b = {span_text(bias)}"
    if any(str(i.get("prior", "")).startswith("val-agree") for i in info):  # LaplaceAllWeightsNarrowed
        words += " (chosen on the val split by its networks' agreement with the MAP class, not by the evidence)"
    who = "every member" if len(info) > 1 else "member 0, its only one"
    return words + (f", not bracketed for {unbracketed} member(s)" if unbracketed else f", bracketed for {who}")


def reading(tab: pd.DataFrame, vs_best: pd.DataFrame, verdict: pd.DataFrame, tv: dict[str, float], temps,
            preds: dict[str, dict], source: str, n_images: int, n_studies: int, members: int) -> str:
    """The chapter's reading (Markdown) from its tables: `interval_table`, `ensemble_vs_best_single`, `verdicts`,
    `tv_from_map`, the fitted temperatures and the predictions' fit info (`prior_methods`)."""
    t = tab.set_index("method")
    m, ts = t.loc["MAP"], t.loc["temperature scaling"]
    vb = vs_best.set_index("metric")
    ens = vs_best.attrs.get("ensemble", "deep ensemble")

    def listing(metric, kind):
        return _names(verdict.index[verdict[metric].str.startswith(kind)])

    calibrated = ("lies within what chance alone gives: on this test set it cannot be told apart from a calibrated one"
                  if m.ece <= m.ece_reference_high else "has its point estimate above that range (the two intervals may still overlap: a sign of "
                  "miscalibration, not a paired test)")
    direction = ("below 1, point to *underconfidence* there" if max(temps) < 1
                 else "above 1, point to overconfidence there" if min(temps) > 1 else "straddle 1")
    v_nll, v_ece = verdict.loc["temperature scaling", "nll"], verdict.loc["temperature scaling", "ece"]
    ts_effect = ("so the direction is not shown there" if v_nll == v_ece == "no difference shown"
                 else f"so on the test set it {EFFECT[v_nll]} the NLL and {EFFECT[v_ece]} the ECE")
    laplace = [k for k in prior_methods(preds) if k in tv]
    layerwise = (" (one per parameter tensor, δ_W for the weights and δ_b for the bias, where the prior is "
                 "layer-wise)" if any("prior_precision_bias" in i for k in prior_methods(preds)
                                      for i in preds[k].info) else "")
    moves = "move little" if laplace and max(tv[k] for k in laplace) <= tv["temperature scaling"] else "move"

    def vs(c, scale, d):
        return (f"{scale * vb.loc[c, 'delta']:+.{d}f} [{scale * vb.loc[c, 'low']:+.{d}f}, "
                f"{scale * vb.loc[c, 'high']:+.{d}f}]")

    return f"""
**Reading** (data: {source}, {n_images} test images in {n_studies} studies, {members}
members; 95 % intervals from the study bootstrap).

- The MAP network's ECE is {_iv(m, 'ece')} % at {_iv(m, 'accuracy')} % accuracy; a perfectly calibrated predictor
  with the same confidences would show {_iv(m, 'ece_reference')} % on these images, so the MAP network's ECE
  {calibrated}.
  Its temperatures fitted on the validation split, {min(temps):.2f} to {max(temps):.2f}, {direction};
  on the test set temperature scaling changes the NLL by {_iv_delta(ts, 'nll')} and the ECE by
  {_iv_delta(ts, 'ece', 100)} points, {ts_effect}.
- Compared with the ECE a calibrated predictor with the same confidences would show, the methods whose ECE lies
  more than 0.5 points above that range are: {_names(k for k, r in t.iterrows() if r.ece > r.ece_reference_high + 0.005)};
  at its upper edge (within 0.5 points; a point estimate against an interval, not a test):
  {_names(k for k, r in t.iterrows() if r.ece_reference_high < r.ece <= r.ece_reference_high + 0.005)}.
- Against the MAP network, paired: **NLL** better for {listing('nll', 'better')}; worse for
  {listing('nll', 'worse')}; no difference shown for {listing('nll', 'no difference shown')}.
  **ECE** better for {listing('ece', 'better')}; worse for {listing('ece', 'worse')}; no difference shown for
  {listing('ece', 'no difference shown')}. **Accuracy** better for {listing('accuracy', 'better')}; worse for
  {listing('accuracy', 'worse')}.
- The {ens} of all {members} members against the best single-model method on each score (ensemble − best,
  paired): accuracy {vs('accuracy', 100, 2)} points (best single: *{vb.loc['accuracy', 'best_single']}*),
  NLL {vs('nll', 1, 3)} (*{vb.loc['nll', 'best_single']}*), ECE {vs('ece', 100, 2)} points
  (*{vb.loc['ece', 'best_single']}*). The best single method is picked on this test split, which favours it,
  and the interval does not include that choice.
- The last-layer Laplace predictives {moves} from the MAP network's: the mean total-variation distance per
  image is {_and(f"{tv[k]:.3f} ({k.removeprefix('Laplace, ')})" for k in laplace)}, against
  {tv['temperature scaling']:.3f} for temperature scaling.
- The Laplace rows use, for each member, the prior precision that maximises its marginal likelihood{layerwise},
  except where said:
  {"; ".join(prior_words(k, preds[k].info) for k in prior_methods(preds))}. Notebook 02 shows the search and
  what a grid search on the validation NLL would pick instead.
- Differences between single-model ECEs whose paired interval includes zero are not evidence of a ranking. Where
  the treatments differ more is away from the training distribution: notebook 06 rotates, corrupts and replaces
  the test images.
"""


# --------------------------------------------------------------------------- conformal prediction sets


def _per_bin(values, keys=None) -> dict:
    v = np.asarray(values)
    out = {(k.item() if isinstance(k, np.generic) else k): 0 for k in (keys if keys is not None else [])}
    for k, c in zip(*np.unique(v, return_counts=True)):
        out[k.item() if isinstance(k, np.generic) else k] = int(c)
    return out


def conformal_table(tune: Preds, cal: Preds, test: Preds, y_tune, y_cal, y_test, groups, by=None, class_names=None,
                    alphas=(0.1, 0.05), scores=conformal.SCORES, n_boot: int = 2000, seed: int = 0, *,
                    mondrian=None, bins=None, groups_tune=None, groups_cal=None, one_per_study: bool = False
                    ) -> pd.DataFrame:
    """Split-conformal prediction sets over each method's probabilities (`utils.evaluation.conformal`, thresholds from
    crepes), for every method, score function, alpha and kind of set, read against the band the guarantee implies.

    Three splits, three jobs: `tune` (the val split, which also picks checkpoints, temperatures and priors) chooses
    RAPS's k_reg and lam (`conformal.tune_raps`, per method and alpha); `cal` (the cal split, patient-disjoint, used
    for nothing else) calibrates the thresholds; `test` is scored. Each is {label: Predictions} as `Run.predictions`
    gives them (their `probs`: member 0's for a single-model method); y_* their labels, `groups` the test study ids
    (the bootstrap's unit), `groups_tune` the tuning split's (RAPS's halves by study).

    Kinds of set (column `mondrian`): "none" (marginal), and the Mondrian ones in `mondrian` (default: "class" and
    every key of `bins`): "class" (label-conditional: label y's threshold from the calibration images labelled y)
    and a key of `bins` = {name: (cal bins, test bins)}, an attribute of each image known at test time (e.g. the
    body part on the abnormality task; rows "<name>=<level>" are added to `by` where it lacks them).

    `one_per_study`: calibrate on one image per calibration study (`groups_cal`) and score one image per test study
    (seeded), where the band's exchangeability holds; otherwise every image, and the band is too narrow by the
    design effect (`conformal.coverage_table`). Returns `coverage_table`'s rows (overall with a study-bootstrap
    interval, per class and per level of `by` as point values) with method, score, alpha, mondrian, calibration
    ("all images" / "one image per study"), qhat (the threshold of the row's bin, NaN where the row is no bin),
    k_reg and lam (RAPS's tuned values)."""
    y_tune, y_cal, y_test = (np.asarray(v).astype(int) for v in (y_tune, y_cal, y_test))
    by = {} if by is None else dict(by) if isinstance(by, dict) else {"by": np.asarray(by)}
    bins = dict(bins or {})
    cal_idx, test_idx = np.arange(len(y_cal)), np.arange(len(y_test))
    if one_per_study:
        if groups_cal is None or groups is None:
            raise ValueError("one_per_study needs the study ids of the calibration (groups_cal) and test images")
        cal_idx, test_idx = conformal.one_per_study(groups_cal, seed), conformal.one_per_study(groups, seed)
    y_cal, y_test = y_cal[cal_idx], y_test[test_idx]
    g_test = None if groups is None else np.asarray(groups)[test_idx]
    bins = {k: (np.asarray(bc)[cal_idx], np.asarray(bt)[test_idx]) for k, (bc, bt) in bins.items()}
    by = {k: np.asarray(v)[test_idx] for k, v in by.items()}
    for k, (_, bt) in bins.items():
        by.setdefault(k, bt)
    kinds = ("class", *bins) if mondrian is None else tuple(mondrian)
    n_classes = next(iter(test.values())).probs.shape[1] if test else 0
    names = list(class_names) if class_names is not None else list(range(n_classes))
    rows = []
    for label in test:
        pu, pc, pt = tune[label].probs, cal[label].probs[cal_idx], test[label].probs[test_idx]
        raps = {a: conformal.tune_raps(pu, y_tune, a, seed, groups=groups_tune) for a in alphas if "raps" in scores}
        for score in scores:
            for alpha in alphas:
                params = dict(lam=raps[alpha]["lam"], k_reg=raps[alpha]["k_reg"]) if score == "raps" else {}
                for kind in ("none", *kinds):
                    how = dict(mondrian=None if kind == "none" else "class" if kind == "class" else "bins")
                    if kind in bins:
                        how.update(bins_cal=bins[kind][0], bins_test=bins[kind][1])
                    sets, qhat = conformal.split_conformal(pc, y_cal, pt, alpha, score, seed, **how, **params)
                    n_cal = (len(y_cal) if kind == "none" else _per_bin(y_cal, range(n_classes)) if kind == "class"
                             else _per_bin(bins[kind][0]))
                    t = conformal.coverage_table(sets, y_test, g_test, by or None, class_names, n_boot, seed,
                                                 intervals="overall", alpha=alpha, n_cal=n_cal, mondrian=how["mondrian"],
                                                 bins=how.get("bins_test"))
                    if kind == "none":
                        t["qhat"] = np.where(t.subset == "all", qhat, np.nan)
                    else:
                        key = {f"class={n}": j for j, n in enumerate(names)} if kind == "class" else \
                            {f"{kind}={v}": v for v in qhat}
                        t["qhat"] = [qhat.get(key[s], np.inf) if s in key else np.nan for s in t.subset]
                    rows.append(t.assign(method=label, score=score, alpha=alpha, mondrian=kind,
                                         calibration="one image per study" if one_per_study else "all images",
                                         k_reg=params.get("k_reg", np.nan), lam=params.get("lam", np.nan)))
    t = pd.concat(rows, ignore_index=True)
    first = ["method", "score", "alpha", "mondrian", "subset"]
    return t[first + [c for c in t.columns if c not in first]]


def _band_words(r) -> str:
    """'inside the band the guarantee implies' / 'below it' / 'above it', from a coverage_table row."""
    if pd.isna(r.in_band):
        return "-"
    return "inside" if r.in_band else "below" if r.coverage < r.band_low else "above"


def conformal_summary(conf: pd.DataFrame, mondrian: str = "none") -> pd.DataFrame:
    """`conformal_table` read at a glance for one kind of set (`mondrian`): per method, score (RAPS with its tuned
    k_reg and lam) and alpha, the overall coverage with its study-bootstrap interval, the band the guarantee implies
    and whether the coverage lies inside it, the mean set size, the lowest per-class and per-part coverage, and how
    many bins' own coverages (Mondrian sets) fall outside their bands."""
    rows = []
    conf = conf[conf.mondrian == mondrian] if "mondrian" in conf else conf
    for (m, s, a), g in conf.groupby(["method", "score", "alpha"], sort=False):
        r = g[g.subset == "all"].iloc[0]
        cls, other = g[g.subset.str.startswith("class=")], g[~g.subset.str.startswith("class=") & (g.subset != "all")]
        binned = g[(g.subset != "all") & g.in_band.notna()]
        name = s.upper() + (f" (k_reg {int(r.k_reg)}, λ {r.lam:g})" if s == "raps" and pd.notna(r.get("k_reg"))
                            else "")
        rows.append({"method": m, "score": name, "alpha": f"{a:g}", "target coverage": f"{1 - a:g}",
                     "coverage": fmt_interval(dict(estimate=r.coverage, low=r.coverage_low, high=r.coverage_high), 1, 3),
                     "band (95 %)": f"{r.band_low:.3f}-{r.band_high:.3f}" if pd.notna(r.band_low) else "-",
                     "in band": _band_words(r),
                     "mean set size": fmt_interval(dict(estimate=r["size"], low=r.size_low, high=r.size_high), 1, 2),
                     "lowest class coverage": f"{cls.coverage.min():.3f} ({cls.loc[cls.coverage.idxmin(), 'subset'][6:]})"
                     if len(cls) else "-",
                     "lowest part coverage": f"{other.coverage.min():.3f} ({other.loc[other.coverage.idxmin(), 'subset'].split('=')[-1]})"
                     if len(other) else "-",
                     "bins outside their band": f"{int((~binned.in_band.astype(bool)).sum())} of {len(binned)}"
                     if len(binned) else "-"})
    return pd.DataFrame(rows)


def _outside(rows: pd.DataFrame) -> str:
    return _and(f"*{r.method}* {r.score.upper()} {r.coverage:.3f} ({_band_words(r)})" for r in rows.itertuples())


def conformal_reading(conf: pd.DataFrame, cal_images: int, cal_studies: int, one: pd.DataFrame | None = None) -> str:
    """What Table 04-2 shows about coverage (Markdown), read against the band the guarantee implies (the central
    95 % of the beta-binomial count, `conformal.coverage_band`), never against the line at 1 - alpha: how many
    overall coverages lie inside it per alpha and which lie outside, per class under marginal and Mondrian sets,
    the study grouping that makes the band too narrow, `one` (the one-image-per-study table) where given, and the
    RAPS parameters tuned on the val split."""
    lines = []
    for kind, g in conf[conf.subset == "all"].groupby("mondrian", sort=False):
        what = {"none": "Marginal sets", "class": "Label-conditional sets (Mondrian by class)"}.get(
            kind, f"Sets Mondrian by {kind}")
        parts = []
        for a, ga in g.groupby("alpha", sort=False):
            out = ga[ga.in_band.eq(False)]  # None where a row has no band
            band = f"{ga.band_low.min():.3f}-{ga.band_high.max():.3f}"
            words = " overall coverages lie inside the band the guarantee implies" if not parts else ""
            parts.append(f"at alpha = {a:g}, {int(ga.in_band.eq(True).sum())} of {len(ga)}{words} ({band})" +
                         (f"; outside it: {_outside(out)}" if len(out) else ""))
        binned = conf[(conf.mondrian == kind) & (conf.subset != "all") & conf.in_band.notna()]
        binned = binned.drop_duplicates(["method", "score", "alpha", "n", "coverage", "n_cal"])  # a part = a class
        if len(binned):
            full = binned.n_cal < np.ceil(1 / binned.alpha) - 1  # too few calibration images: every set is full
            bad = binned[binned.in_band.eq(False)]
            parts.append(f"{len(binned) - len(bad)} of {len(binned)} coverages of a single bin (one class or part, "
                         "each with its own threshold) lie inside that bin's own band, from its calibration images"
                         + (f"; {int(full.sum())} of them trivially (the bin has fewer calibration images than "
                            "1/alpha - 1, so its threshold is infinite and every set holds every label)"
                            if full.any() else ""))
            low = bad[bad.coverage < bad.band_low]
            for (sc, a, sub), gb in low.groupby(["score", "alpha", "subset"], sort=False):
                n_meth = conf[(conf.mondrian == kind) & (conf.subset == sub) & (conf.score == sc)
                              & (conf.alpha == a)].method.nunique()
                parts.append(f"below its band: {sub.split('=', 1)[1]} with {sc.upper()} at alpha = {a:g} for "
                             f"{gb.method.nunique()} of {n_meth} methods ({span_text(gb.coverage, '.2f')} against "
                             f"{gb.band_low.min():.3f}, from {int(gb.n_cal.iloc[0])} calibration images)")
        sizes = g.groupby("alpha", sort=False)["size"].mean()
        parts.append("mean set size (labels per test image, averaged over methods and scores) "
                     + ", ".join(f"{v:.2f} at alpha = {a:g}" for a, v in sizes.items()))
        lines.append(f"- **{what}**: " + "; ".join(parts) + ".")
    marg = conf[(conf.mondrian == "none") & conf.subset.str.startswith("class=")]
    if len(marg):
        r = marg.loc[marg.coverage.idxmin()]
        lines.append(f"- Marginal sets promise nothing per class: their lowest class coverage is {r.coverage:.3f} "
                     f"(*{r.method}*, {r.score.upper()}, alpha = {r.alpha:g}, {r.subset[6:]}).")
    lines.append(f"- The band assumes images exchangeable one by one. The cal split's {cal_images} images come from "
                 f"{cal_studies} studies (MURA's studies hold 1-4 views of one body part), which are not, so the band "
                 "is too narrow by the design effect: a coverage just outside it is weak evidence. Below the band "
                 "would count against the guarantee; above it, the sets cover more than they must (ties in LAC's "
                 "scores do that too).")
    if one is not None and len(one):
        o = one[(one.subset == "all") & (one.mondrian == "none")]
        lines.append(f"- Calibrated on one image per study ({int(o.n_cal.iloc[0])} images) and scored on one image per "
                     f"test study ({int(o.n.iloc[0])}), where views of one study no longer break exchangeability "
                     "(a patient's several studies still can): "
                     f"{int(o.in_band.eq(True).sum())} of {len(o)} overall coverages lie inside the band "
                     f"({o.band_low.min():.3f}-{o.band_high.max():.3f}, wide at this size: a weak check, which "
                     "finds no violation rather than confirming coverage)"
                     + (f"; outside it: {_outside(o[o.in_band.eq(False)])}." if o.in_band.eq(False).any() else "."))
    raps = conf[(conf.score == "raps") & (conf.subset == "all") & (conf.mondrian == "none")]
    if len(raps):
        k = raps.groupby("alpha", sort=False).agg(k=("k_reg", lambda v: span_text(v, "g")),
                                                  lam=("lam", lambda v: span_text(v, "g")))
        n_classes = conf.subset.str.startswith("class=").groupby([conf.method, conf.score, conf.alpha,
                                                                    conf.mondrian]).sum().max()
        flat = " (k_reg at the number of classes penalises no rank: RAPS's sets are APS's)" \
            if n_classes and (raps.k_reg >= n_classes).all() else ""
        lines.append("- RAPS's k_reg and λ were tuned on the val split, apart from the cal split that calibrates: "
                     + "; ".join(f"at alpha = {a:g} k_reg = {r.k}, λ = {r.lam} over the methods"
                                 for a, r in k.iterrows()) + flat + ".")
    return "\n".join(lines) + "\n"


def conformal_results(conf: pd.DataFrame, cal_images: int, cal_studies: int, n_boot: int,
                      one: pd.DataFrame | None = None) -> dict:
    """The results JSON's conformal entries: the rows of `conformal_table` ("conformal"), where they were calibrated
    ("conformal_calibration": the cal split), the settings (splits, band, tuned RAPS parameters per method and
    alpha) and, where given, the one-image-per-study rows."""
    raps = conf[(conf.score == "raps") & (conf.subset == "all") & (conf.mondrian == "none")]
    out = dict(conformal=conf.to_dict(orient="records"), conformal_calibration="cal split", conformal_settings=dict(
        tuning="val split: RAPS k_reg (top-k accuracy reaches 1 - alpha) and lambda (smallest mean set size)",
        calibration="cal split (patient-disjoint; conformal calibration only)", test="test split (MURA's valid)",
        cal_images=int(cal_images), cal_studies=int(cal_studies), thresholds="crepes 0.9.1, non-smoothed p-values",
        mondrian=[k for k in conf.mondrian.unique()],
        band=("central 95 % of BetaBinomial(n_test, k, n_cal + 1 - k), k = ceil((n_cal + 1)(1 - alpha)), per bin for "
              "Mondrian rows; assumes exchangeable images: views of one study are not, so it is too narrow by the "
              "design effect"),
        raps=[dict(method=r.method, alpha=float(r.alpha), k_reg=int(r.k_reg), lam=float(r.lam)) for r in raps.itertuples()],
        bootstrap=dict(resamples=n_boot, unit="test study", level=0.95)))
    if one is not None:
        out["conformal_one_per_study"] = one.to_dict(orient="records")
    return out


def selective_scores(show: dict[str, np.ndarray], labels) -> pd.DataFrame:
    """Per shown predictive: AURC, AUGRC (Traub et al., 2024), the 15-bin ECE, the adaptive (equal-mass) ECE and
    the mean class-wise ECE, as point values on the test split."""
    return pd.DataFrame([{"method": k, "AURC": metrics.aurc(p, labels), "AUGRC": metrics.augrc(p, labels),
                          "ECE (15 bins)": metrics.ece(p, labels), "adaptive ECE": metrics.adaptive_ece(p, labels),
                          "class-wise ECE": float(np.mean(metrics.classwise_ece(p, labels)))}
                         for k, p in show.items()])
