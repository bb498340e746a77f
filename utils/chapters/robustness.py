"""Robustness (notebook 06): rotations, corruptions, unfamiliar body parts, referral.

Every method predicts from the same batch through a predictor (`run.BatchPredictor`, from `Run.predictor()`:
the posteriors registered with robustness=True, member 0's for single-model methods and all members' for a
combination), which returns probabilities, and per-sample probabilities where the method has samples (for the
mutual information). The chapter's figures (`*_figure`), small tables and its Reading (`reading`) are here too.

`conformal_under_shift` asks what becomes of split-conformal prediction sets (`utils.evaluation.conformal`) when the test
images are rotated or corrupted: the threshold is calibrated once on the clean calibration (cal) split and kept, as a
deployed model would keep it, so the exchangeability the coverage guarantee rests on no longer holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torchvision.transforms.v2 import functional as TF

from utils import explain
from utils.data.images import PIXEL_MEAN, PIXEL_STD, standardize, to_input
from utils.evaluation import conformal, evidence, metrics
from utils.posteriors import Predictions

if TYPE_CHECKING:
    from utils.run import BatchPredictor

CORRUPTIONS = {  # kind -> parameter per severity 1, 2, 3
    "noise": (0.05, 0.12, 0.25),  # Gaussian noise std on [0, 1] images
    "blur": (0.8, 1.6, 3.2),  # Gaussian blur sigma in px at 64 px (scaled with the image size)
    "contrast inversion": (0.35, 0.7, 1.0),  # blend towards the inverted image
    "low exposure": (0.5, 0.3, 0.15),  # intensity scale
    "heavy crop": (0.7, 0.5, 0.3),  # side of the central crop kept, zoomed back to full size
    "blank": (0.0, 0.5, 1.0),  # a uniform image of this grey level
}


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate standardised images (B x C x H x W) by `angle` degrees counter-clockwise (as displayed) about the
    centre, with the training augmentation's resampling (data.BatchAugment): one affine_grid and a bilinear
    grid_sample, black (explain.BLACK on the standardised scale) outside the frame, blended bilinearly at its
    border. Angles that are multiples of 360 return `x` itself.

    torchvision's rotate(..., BILINEAR, fill=...) is not used: it multiplies the border pixels by the
    in-frame weight twice (mask * (sampled - fill) + fill with an already weighted sample)."""
    if angle % 360 == 0:
        return x
    h, w = x.shape[-2:]
    a = np.deg2rad(float(angle))
    c, s = float(np.cos(a)), float(np.sin(a))
    # output -> input sampling in affine_grid's [-1, 1] coordinates, a true rotation in pixels for any aspect
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    black = explain.BLACK
    return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black


def corrupt(x: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """A corruption of standardised images at severity 1..3 (see CORRUPTIONS)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity}")
    v = CORRUPTIONS[kind][severity - 1]
    x01 = x * PIXEL_STD + PIXEL_MEAN
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        y = x01 + v * torch.randn(x01.shape, generator=g)
    elif kind == "blur":
        s = v * x.shape[-1] / 64
        k = 2 * int(3 * s) + 1
        y = TF.gaussian_blur(x01, [k, k], [s, s])
    elif kind == "contrast inversion":
        y = (1 - v) * x01 + v * (1 - x01)
    elif kind == "low exposure":
        y = x01 * v
    elif kind == "heavy crop":
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * v)), max(1, round(w * v))
        y = TF.resize(TF.center_crop(x01, [ch, cw]), [h, w], antialias=True)
    else:  # blank
        y = torch.full_like(x01, v)
    return standardize(y.clamp(0, 1))


def uncertainty(pred: Predictions) -> dict[str, np.ndarray]:
    """Predictive entropy, and mutual information where the method has samples."""
    out = dict(entropy=metrics.entropy(pred.probs))
    if pred.samples is not None:
        out["mutual information"] = metrics.mutual_information(pred.samples)
    return out


def scores(pred: Predictions, labels: np.ndarray) -> dict:
    s = metrics.summary(pred.probs, labels)
    s["entropy"] = float(metrics.entropy(pred.probs).mean())
    return s


def ood_auroc(score_in: np.ndarray, score_out: np.ndarray) -> float:
    """AUROC of telling unfamiliar inputs (positives) from the test set by a score (higher = more unfamiliar)."""
    y = np.r_[np.zeros(len(score_in)), np.ones(len(score_out))]
    return float(roc_auc_score(y, np.r_[score_in, score_out]))


def _keep_probs(keep: dict | None, key, preds: dict[str, Predictions]):
    if keep is not None:  # without the samples: the conformal sets need the predictive alone
        keep[key] = {name: Predictions(name, p.members, p.combination) for name, p in preds.items()}


def rotation_sweep(predictor: "BatchPredictor", x: torch.Tensor, labels: np.ndarray, angles,
                   keep: dict | None = None) -> pd.DataFrame:
    """Accuracy, ECE, NLL, Brier and mean entropy of each method for the test images rotated by each angle.
    `keep`: a dict to fill with each angle's predictions, {("rotation", angle): {method: Predictions}} (the
    conditions of `conformal_under_shift`), so that later analyses do not predict again."""
    rows = []
    for a in angles:
        preds = predictor.batched(rotate(x, a))
        _keep_probs(keep, ("rotation", a), preds)
        for name, pred in preds.items():
            rows.append(dict(angle=a, method=name, **scores(pred, labels)))
    return pd.DataFrame(rows)


def explanation_stability(models, x: torch.Tensor, labels, angles) -> pd.DataFrame:
    """Pearson correlation between the CAM of an image and the CAM of the rotated image rotated back (inside
    the disc both cover), for member 0 and for the ensemble's mean CAM; mean and standard error over images."""
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = (yy ** 2 + xx ** 2) <= (min(h, w) / 2) ** 2
    target = torch.as_tensor(np.array(labels))
    base = {"MAP CAM (member 0)": explain.CAM(models[0])(x, target),
            "ensemble mean CAM": explain.member_maps(models, x, target).mean(0)}
    rows = []
    for a in angles:
        xr = rotate(x, a)
        rot = {"MAP CAM (member 0)": explain.CAM(models[0])(xr, target),
               "ensemble mean CAM": explain.member_maps(models, xr, target).mean(0)}
        for name, m in rot.items():
            back = rotate(m[:, None], -a)[:, 0] if a % 360 else m
            u, v = base[name][:, disc], back[:, disc]
            u, v = u - u.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
            r = ((u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)).clamp_min(1e-12)).numpy()
            rows.append(dict(angle=a, method=name, correlation=r.mean(), se=r.std(ddof=1) / np.sqrt(len(r))))
    return pd.DataFrame(rows)


def images(cache, rows=None) -> torch.Tensor:
    """Standardised images (N x 1 x S x S) straight from a cache (any index, e.g. the unfamiliar-parts tree)."""
    rows = cache.index.row.to_numpy() if rows is None else np.asarray(rows)
    return standardize(to_input(np.asarray(cache.images[np.sort(rows)])[np.argsort(np.argsort(rows))]))


def ood_table(pred_in: dict, pred_out: dict) -> pd.DataFrame:
    """Per method: AUROC of telling `pred_out`'s inputs from `pred_in`'s by entropy and by mutual information."""
    rows = []
    for name in pred_in:
        u_in, u_out = uncertainty(pred_in[name]), uncertainty(pred_out[name])
        rows.append({"method": name, **{f"AUROC by {k}": ood_auroc(u_in[k], u_out[k]) for k in u_in}})
    return pd.DataFrame(rows)


def corruption_sweep(predictor: "BatchPredictor", x: torch.Tensor, labels: np.ndarray, seed: int = 0,
                     clean: dict | None = None, keep: dict | None = None) -> pd.DataFrame:
    """Scores of each method under each corruption and severity, with the AUROC of telling the corrupted
    images from the clean ones by entropy and by mutual information. `keep`: a dict to fill with the
    probabilities, {(corruption, severity): {method: dict(probs)}} (as `rotation_sweep`)."""
    clean = clean or predictor.batched(x)
    rows = []
    for kind in CORRUPTIONS:
        for sev in (1, 2, 3):
            pred = predictor.batched(corrupt(x, kind, sev, seed))
            _keep_probs(keep, (kind, sev), pred)
            aur = ood_table(clean, pred).set_index("method")
            for name, p in pred.items():
                rows.append(dict(corruption=kind, severity=sev, method=name, **scores(p, labels),
                                 **aur.loc[name].to_dict()))
    return pd.DataFrame(rows)


def ood_intervals(pred_in: dict, pred_out: dict, groups_in, groups_out, n_boot: int = 2000, seed: int = 0
                  ) -> pd.DataFrame:
    """`ood_table` with 95 % intervals: per method and score (entropy; mutual information where the method
    has samples), the AUROC of telling `pred_out`'s inputs from `pred_in`'s, resampling the studies of both
    sets (`evidence.flag_auroc`), and the paired difference from the MAP network's entropy."""
    groups = np.concatenate([np.asarray(groups_in, dtype=object).astype(str),
                             "unfamiliar/" + np.asarray(groups_out, dtype=object).astype(str)])
    is_out = np.r_[np.zeros(len(groups_in)), np.ones(len(groups_out))].astype(int)
    base = np.r_[uncertainty(pred_in["MAP"])["entropy"], uncertainty(pred_out["MAP"])["entropy"]]
    rows = []
    for name in pred_in:
        u_in, u_out = uncertainty(pred_in[name]), uncertainty(pred_out[name])
        for k in u_in:
            score = np.r_[u_in[k], u_out[k]]
            d = evidence.flag_auroc(score, is_out, groups, n_boot, seed)
            dd = evidence.paired_auroc_delta(score, base, is_out, groups, n_boot, seed)
            rows.append(dict(method=name, score=k, auroc=d["estimate"], low=d["low"], high=d["high"],
                             delta_vs_map_entropy=dd["delta"], delta_low=dd["low"], delta_high=dd["high"]))
    return pd.DataFrame(rows)


def paired_vs(pred: dict[str, Predictions], labels, groups, reference: str = "MAP", n_boot: int = 2000, seed: int = 0,
              metrics_=("accuracy", "nll", "ece")) -> pd.DataFrame:
    """Each method's scores on one (e.g. rotated) test set with 95 % study-bootstrap intervals, and its paired
    difference from `reference` (the same resampled studies on both sides)."""
    rows = []
    for name, p in pred.items():
        row = dict(method=name)
        for c in metrics_:
            d = evidence.interval(c, p.probs, labels, groups, n_boot, seed)
            row.update({c: d["estimate"], f"{c}_low": d["low"], f"{c}_high": d["high"]})
            if name != reference:
                dd = evidence.paired_delta(c, p.probs, pred[reference].probs, labels, groups, n_boot, seed)
                row.update({f"delta_{c}": dd["delta"], f"delta_{c}_low": dd["low"], f"delta_{c}_high": dd["high"]})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- conformal sets under shift


def conformal_under_shift(val: dict[str, Predictions], y_val, shifted: dict[tuple, dict[str, Predictions]], y_test, groups,
                          alpha: float = 0.1, scores=("lac", "raps"), n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> pd.DataFrame:
    """Coverage and mean size of split-conformal sets calibrated once on clean images and applied to shifted ones.

    Parameters
    ----------
    val : {method: Predictions} on the calibration split, as `Run.predictions(labels, subset="cal")` gives them
        (their `probs`: member 0's for a single-model method, the member `BatchPredictor` predicts with).
    y_val : (n,) their labels.
    shifted : {(shift, level): {method: Predictions}} on the test images, one entry per condition, e.g.
        ("clean", 0), ("rotation", 90), ("noise", 3) (`rotation_sweep` / `corruption_sweep` fill it via `keep`).
    y_test, groups : (N,) test labels and study ids (the bootstrap resamples studies).
    alpha, scores : miscoverage level and score functions of `utils.evaluation.conformal` (RAPS with its fixed k_reg, lam).
    n_boot, seed, level : the study bootstrap of `conformal.coverage_table` (one set of replicates for every
        condition, `evidence.mean_intervals`); `seed` also seeds the APS / RAPS randomisation.

    Returns
    -------
    DataFrame, one row per method, score and condition (in `shifted`'s order): method, score, alpha, shift, level,
    qhat (the clean calibration threshold, the same for every condition of a method and score), n, coverage,
    coverage_low, coverage_high, band_low, band_high (`conformal.coverage_band`: the coverage exchangeable test
    images would show, given n calibration images), size, size_low, size_high, empty. A clean condition's row is
    `coverage_table`'s overall row; under shift the guarantee no longer applies.
    """
    y_val, y_test = np.asarray(y_val).astype(int), np.asarray(y_test).astype(int)
    n = len(y_test)
    conditions = list(shifted)
    methods = list(shifted[conditions[0]]) if conditions else []
    rows, hits, sizes = [], [], []
    for name in methods:
        pv = val[name].probs
        for score in scores:
            qhat = conformal.calibrate(pv, y_val, alpha, score, seed)  # once, on clean calibration images
            for shift, lev in conditions:
                sets = conformal.predict_sets(shifted[(shift, lev)][name].probs, qhat, score, seed)
                if sets.shape[0] != n:
                    raise ValueError(f"{shift} {lev}: {sets.shape[0]} images, expected {n} test labels")
                hits.append(sets[np.arange(n), y_test])
                sizes.append(sets.sum(1))
                rows.append(dict(method=name, score=score, alpha=alpha, shift=shift, level=lev, qhat=qhat, n=n,
                                 empty=float((sizes[-1] == 0).mean())))
    if not rows:
        return pd.DataFrame(columns=["method", "score", "alpha", "shift", "level", "qhat", "n", "coverage",
                                     "coverage_low", "coverage_high", "size", "size_low", "size_high", "empty"])
    ci = evidence.mean_intervals(np.column_stack(hits + sizes), groups, n_boot, seed, level)
    k = len(rows)
    for i, r in enumerate(rows):
        cov, sz = ci[i], ci[k + i]
        r.update(coverage=cov["estimate"], coverage_low=cov["low"], coverage_high=cov["high"], size=sz["estimate"],
                 size_low=sz["low"], size_high=sz["high"])
    t = pd.DataFrame(rows)
    t["band_low"], t["band_high"] = conformal.coverage_band(len(y_val), n, alpha)
    return t[["method", "score", "alpha", "shift", "level", "qhat", "n", "coverage", "coverage_low", "coverage_high",
              "band_low", "band_high", "size", "size_low", "size_high", "empty"]]


def conformal_shift_results(tab: pd.DataFrame, n_boot: int) -> dict:
    """The results JSON's "conformal_under_shift": the settings and one record per method, score and condition
    (coverage and mean set size with their intervals, the share of empty sets, the kept threshold)."""
    return dict(alpha=float(tab.alpha.iloc[0]), scores=list(tab.score.unique()),
                raps=dict(k_reg=conformal.RAPS_K_REG, lam=conformal.RAPS_LAMBDA),
                calibration="clean cal split, once per method and score; kept for every condition",
                conditions="clean; rotation by each swept angle; each corruption at severity 1-3",
                bootstrap=dict(resamples=n_boot, unit="test study", level=0.95),
                rows=tab.drop(columns=["alpha", "n"]).to_dict(orient="records"))


def _worst_corruption(g: pd.DataFrame) -> pd.Series | None:
    c = g[~g["shift"].isin(["clean", "rotation"])]
    return c.loc[c.coverage.idxmin()] if len(c) else None


def _largest_rotation(g: pd.DataFrame) -> pd.Series | None:
    r = g[g["shift"] == "rotation"]
    if not len(r):
        return None
    top = r.level.abs().max()
    return r[r.level.abs() == top].sort_values("level", ascending=False).iloc[0]


def conformal_shift_table(tab: pd.DataFrame) -> pd.DataFrame:
    """`conformal_under_shift` at a glance: per method and score, coverage [95 % interval] and mean set size on
    the clean test images, rotated by 90 degrees (where swept), rotated by the largest angle, and under the
    corruption and severity with the lowest coverage."""
    rows = []
    for (m, s), g in tab.groupby(["method", "score"], sort=False):
        cells = {}
        picks = [("clean", g[g["shift"] == "clean"].iloc[0] if (g["shift"] == "clean").any() else None)]
        r90 = g[(g["shift"] == "rotation") & (g.level == 90)]
        if len(r90):
            picks.append(("rotated 90°", r90.iloc[0]))
        big = _largest_rotation(g)
        if big is not None and big.level != 90:
            picks.append((f"rotated {big.level:g}°", big))
        worst = _worst_corruption(g)
        if worst is not None:
            picks.append(("worst corruption", worst))
        for label, r in picks:
            if r is None:
                continue
            cells[f"{label}: coverage"] = _ci(r.coverage, r.coverage_low, r.coverage_high, pct=False, digits=3)
            cells[f"{label}: set size"] = f"{r['size']:.2f}"
        if worst is not None:
            cells["worst corruption"] = f"{worst['shift']}, severity {worst.level}"
        rows.append({"method": m, "score": s.upper(), "target": f"{1 - g.alpha.iloc[0]:.2f}", **cells})
    return pd.DataFrame(rows)


def conformal_shift_reading(tab: pd.DataFrame) -> str:
    """What Figure and Table of `conformal_under_shift` show, in numbers (Markdown): per score, each method's
    coverage on the clean test images, at the largest rotation and under its worst corruption, and how many
    shifted conditions lie below the band exchangeable images would give (`conformal.coverage_band`)."""
    alpha = float(tab.alpha.iloc[0])
    lo, hi = (float(tab[c].iloc[0]) for c in ("band_low", "band_high"))
    lines = [f"Conformal sets at alpha = {alpha:g}, threshold calibrated once on the clean cal split (RAPS at its "
             "fixed k_reg and λ here, not notebook 04's tuned ones, so its RAPS numbers differ from 04's); "
             f"exchangeable test images would cover between {lo:.3f} and {hi:.3f} (the beta-binomial band; too "
             "narrow by the design effect of studies' views); per method, coverage [95 % study-bootstrap interval] "
             "and, in brackets, mean set size (an empty set never covers)."]
    for s, gs in tab.groupby("score", sort=False):
        clean, rot, cor = [], [], []
        for m, g in gs.groupby("method", sort=False):
            c = g[g["shift"] == "clean"]
            if len(c):
                c = c.iloc[0]
                clean.append(f"{m} {_ci(c.coverage, c.coverage_low, c.coverage_high, False, 3)} ({c['size']:.2f})")
            r = _largest_rotation(g)
            if r is not None:
                rot.append(f"{m} {_ci(r.coverage, r.coverage_low, r.coverage_high, False, 3)} ({r['size']:.2f})")
            w = _worst_corruption(g)
            if w is not None:
                cor.append(f"{m} {_ci(w.coverage, w.coverage_low, w.coverage_high, False, 3)} ({w['size']:.2f}; "
                           f"{100 * w['empty']:.0f} % empty; {w['shift']}, severity {w.level})")
        shifted = gs[gs["shift"] != "clean"]
        shifted = shifted[~((shifted["shift"] == "rotation") & (shifted.level % 360 == 0))]
        below = int((shifted.coverage < lo).sum())
        text = f"- **{s.upper()}**: clean test images: {'; '.join(clean)}."
        if rot:
            big = _largest_rotation(gs).level
            text += f" Rotated by {big:g} degrees: {'; '.join(rot)}."
        if cor:
            text += f" Worst corruption: {'; '.join(cor)}."
        text += f" In {below} of {len(shifted)} shifted method-condition pairs coverage lies below the band."
        lines.append(text)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the notebook's small tables


def unfamiliar_note(ood_index: pd.DataFrame, n_images: int) -> str:
    """One line: how many unfamiliar images, per body part."""
    counts = ", ".join(f"{k.lower()} {v}" for k, v in ood_index.body_part.value_counts().items())
    return f"unfamiliar parts: {n_images} images ({counts})"


def predicted_classes(pred: dict[str, Predictions], classes) -> pd.DataFrame:
    """Share of images per predicted class (rows), per method (columns)."""
    names = dict(enumerate(classes))
    return pd.DataFrame({name: pd.Series(p.probs.argmax(1)).map(names).value_counts(normalize=True)
                         for name, p in pred.items()}).fillna(0)


def mixed_test_set(x: torch.Tensor, labels: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """The referral chapter's test set: the clean images, the same rotated by 45 degrees, and the same with
    moderate noise (severity 2)."""
    return (torch.cat([x, rotate(x, 45), corrupt(x, "noise", 2, seed)]),
            np.concatenate([labels, labels, labels]))


def referral_curves(pred: dict[str, Predictions], labels) -> dict[str, dict]:
    """Per method: accuracy on the kept images when the highest-entropy images are referred first
    (`metrics.selective`)."""
    return {name: metrics.selective(p.probs, labels, score=metrics.entropy(p.probs)) for name, p in pred.items()}


def referral_table(curves: dict[str, dict]) -> dict[str, dict]:
    """Per method: accuracy on all images, on the 80 % kept after referring a fifth, and the AURC."""
    out = {}
    for name, s in curves.items():
        k = int(0.8 * len(s["accuracy"]))
        out[name] = dict(all=s["accuracy"][-1], keep80=s["accuracy"][k - 1], aurc=s["aurc"])
    return out


# --------------------------------------------------------------------------- figures


def _limits_from_data(ax, low, high=None, margin: float = 0.06) -> None:
    """Set the y-limits of `ax` to hold every finite value of `low` and `high` (all curves and error bars
    drawn there), with `margin` of their range (or of their level, where all are equal) either side."""
    v = np.concatenate([np.ravel(np.asarray(a, float)) for a in (low, high) if a is not None])
    v = v[np.isfinite(v)]
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    pad = margin * ((hi - lo) or max(abs(hi), 1.0))
    ax.set_ylim(lo - pad, hi + pad)


def _legend_below(fig, ax, ncol: int = 5) -> None:
    """One legend for the figure (the entries of `ax`), below the panels, where it covers no curve."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8, frameon=False)
    rows = 1 + (len(labels) - 1) // ncol
    fig.tight_layout(rect=(0, min(0.4, (0.1 + 0.22 * rows) / fig.get_figheight()), 1, 1))


def rotation_figure(sweep: pd.DataFrame):
    """Figure 06-1: accuracy, ECE, NLL and mean entropy of each method against the rotation angle (the
    legend below the panels)."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9))
    for ax, (c, label) in zip(axes, [("accuracy", "accuracy (%)"), ("ece", "ECE (%)"), ("nll", "NLL (nats)"),
                                      ("entropy", "mean predictive entropy (nats)")]):
        for name, g in sweep.groupby("method", sort=False):
            ax.plot(g.angle, g[c] * (100 if c in ("accuracy", "ece") else 1), "o-", ms=3, label=name)
        ax.set(xlabel="rotation (degrees)", ylabel=label, title=label.split(" (")[0] + " against rotation")
        ax.set_xticks(range(-180, 181, 90))
    _legend_below(fig, axes[0])
    return fig


def stability_figure(stab: pd.DataFrame):
    """Figure 06-2: correlation of each explanation with the unrotated one against the angle."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, g in stab.groupby("method", sort=False):
        ax.errorbar(g.angle, g.correlation, yerr=g.se, fmt="o-", ms=3, capsize=2, label=name)
    ax.set(xlabel="rotation (degrees)", ylabel="correlation with the unrotated CAM",
           title="Do explanations rotate with the image?")
    _limits_from_data(ax, stab.correlation - stab.se.fillna(0), stab.correlation + stab.se.fillna(0))
    ax.set_xticks(range(-180, 181, 90))
    ax.legend(fontsize=8)
    return fig


def corruption_figure(corr: pd.DataFrame):
    """Figure 06-3: accuracy (top) and the AUROC against clean images by entropy (bottom) per corruption, each
    row's y-axis spanning every curve of it (the legend below the panels)."""
    n = corr.corruption.nunique()
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6.0), sharey="row", squeeze=False)
    for j, (kind, g) in enumerate(corr.groupby("corruption", sort=False)):
        for name, gm in g.groupby("method", sort=False):
            axes[0, j].plot(gm.severity, 100 * gm.accuracy, "o-", ms=3, label=name)
            axes[1, j].plot(gm.severity, gm["AUROC by entropy"], "o-", ms=3, label=name)
        axes[0, j].set(title=kind, xticks=[1, 2, 3])
        axes[1, j].set(xlabel="severity", xticks=[1, 2, 3])
    _limits_from_data(axes[0, 0], 100 * corr.accuracy)  # the rows share y: these set every panel of the row
    _limits_from_data(axes[1, 0], corr["AUROC by entropy"])
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[1, 0].set_ylabel("AUROC vs clean,\nby entropy")
    _legend_below(fig, axes[0, 0])
    return fig


def conformal_shift_figure(tab: pd.DataFrame):
    """Figure 06-5: coverage (top, 95 % intervals) and mean set size (bottom) of the conformal sets calibrated on
    clean calibration (cal) images, against the rotation angle and each corruption's severity (0: clean), per method
    (colour) and score (line style), with the target 1 - alpha."""
    alpha = float(tab.alpha.iloc[0])
    rot = tab[tab["shift"] == "rotation"]
    clean = tab[tab["shift"] == "clean"]
    kinds = [k for k in tab["shift"].unique() if k not in ("clean", "rotation")]
    panels = (["rotation"] if len(rot) else []) + kinds
    ratios = [2.4 if p == "rotation" else 1 for p in panels]
    fig, axes = plt.subplots(2, len(panels), figsize=(2.3 * sum(ratios) + 1, 5.6), sharex="col", sharey="row",
                             squeeze=False, gridspec_kw=dict(width_ratios=ratios))
    methods, scores_ = list(tab.method.unique()), list(tab.score.unique())
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    styles = dict(zip(scores_, ["-", "--", ":", "-."]))
    for j, panel in enumerate(panels):
        g = rot if panel == "rotation" else pd.concat([clean, tab[tab["shift"] == panel]])
        step = (np.diff(np.unique(g.level)).min() if g.level.nunique() > 1 else 1) * 0.6
        for i, ((m, s), gm) in enumerate(g.groupby(["method", "score"], sort=False)):
            xs = gm.level.to_numpy(float) + step * ((i + 0.5) / (len(methods) * len(scores_)) - 0.5)
            err = np.vstack([gm.coverage - gm.coverage_low, gm.coverage_high - gm.coverage]).clip(min=0)
            kw = dict(color=colours[m], ls=styles[s], marker="o", ms=2.5, lw=1)
            axes[0, j].errorbar(xs, gm.coverage, yerr=err, capsize=1.5, elinewidth=0.8, **kw,
                                label=f"{m}, {s.upper()}")
            axes[1, j].plot(xs, gm["size"], **kw)
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
        axes[0, j].axhline(1 - alpha, color="k", lw=1, ls=":")
        if panel == "rotation":
            axes[0, j].set_title("rotation")
            axes[1, j].set_xlabel("rotation (degrees)")
            axes[1, j].set_xticks(range(-180, 181, 90))
        else:
            axes[0, j].set_title(panel)
            axes[1, j].set(xlabel="severity (0: clean)", xticks=[0, 1, 2, 3])
    axes[0, 0].set_ylabel(f"coverage (target {1 - alpha:.2f})")
    axes[1, 0].set_ylabel("mean set size")
    axes[0, 0].set_ylim(-0.02, 1.02)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 * (1 + (len(labels) - 1) // 5), 1, 1))
    return fig


def referral_figure(curves: dict[str, dict]):
    """Figure 06-4: accuracy on the kept images against the share kept, referring by entropy."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in curves.items():
        ax.plot(100 * s["coverage"], 100 * s["accuracy"], label=f"{name} (AURC {s['aurc']:.3f})")
    ax.set(xlabel="share of images kept, the rest referred by entropy (%)", ylabel="accuracy on kept images (%)",
           title="Referring the most uncertain images")
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- the Reading


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """'better' or 'worse' where a paired difference's interval excludes zero, else 'no difference shown'."""
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "no difference shown"


def _ci(v, lo, hi, pct: bool = True, digits: int = 2) -> str:
    f = (lambda t: f"{100 * t:.1f}") if pct else (lambda t: f"{t:.{digits}f}")
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def reading(source: str, at90: pd.DataFrame, ood_ci: pd.DataFrame, ensemble: str = "deep ensemble",
            laplace: str = "Laplace, kron", layerwise: str = "Laplace, kron, layer-wise prior") -> str:
    """The chapter's Reading (Markdown) from its tables: `at90` (`paired_vs` at 90 degrees, against "MAP") and
    `ood_ci` (`ood_intervals`). The layer-wise-prior Laplace is mentioned where the tables hold it."""
    r90, oc = at90.set_index("method"), ood_ci.set_index(["method", "score"])

    def d90(name, c, pct=True):
        r = r90.loc[name]
        better = verdict(r[f"delta_{c}_low"], r[f"delta_{c}_high"], higher_is_better=c == "accuracy")
        unit = "points" if pct else "nats"
        return f"{_ci(r[f'delta_{c}'], r[f'delta_{c}_low'], r[f'delta_{c}_high'], pct, digits=3)} {unit} ({better})"

    def ood_delta(name, score):
        r = oc.loc[(name, score)]
        return (f"{r.delta_vs_map_entropy:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}] "
                f"({verdict(r.delta_low, r.delta_high)})")

    m, ood_map = r90.loc["MAP"], oc.loc[("MAP", "entropy")]
    lw_rot = (f" With the layer-wise prior, the Laplace predictive's ECE differs by {d90(layerwise, 'ece')} and "
              f"its NLL by {d90(layerwise, 'nll', False)}." if layerwise in r90.index else "")
    lw_ood = (f"; with the layer-wise prior, its entropy {ood_delta(layerwise, 'entropy')}, its mutual information "
              f"{ood_delta(layerwise, 'mutual information')}" if (layerwise, "mutual information") in oc.index else "")
    return f"""
**Reading** (data: {source}; 95 % intervals from the study bootstrap, differences paired; better, worse: the
interval of the difference excludes zero).

- At one angle, 90 degrees, member 0's MAP network classifies the rotated test images with accuracy
  {_ci(m['accuracy'], m['accuracy_low'], m['accuracy_high'])} % and ECE {_ci(m['ece'], m['ece_low'], m['ece_high'])} %
  (intervals over test studies; member 0 only).
  Against it, paired: the ensemble's accuracy differs by {d90(ensemble, 'accuracy')}, its ECE by
  {d90(ensemble, 'ece')} and its NLL by {d90(ensemble, 'nll', False)}; temperature scaling's ECE by
  {d90('temperature scaling', 'ece')}; the Laplace predictive's ECE by {d90(laplace, 'ece')} and its NLL by
  {d90(laplace, 'nll', False)}.{lw_rot} Figure 06-1 shows the other angles without intervals.
- Unfamiliar body parts are told from test images with AUROC {_ci(ood_map.auroc, ood_map.low, ood_map.high, False)}
  by the MAP network's entropy. Paired against it: the ensemble's entropy {ood_delta(ensemble, 'entropy')}, its
  mutual information {ood_delta(ensemble, 'mutual information')}; the Laplace predictive's entropy
  {ood_delta(laplace, 'entropy')}, its mutual information {ood_delta(laplace, 'mutual information')}{lw_ood};
  temperature scaling {ood_delta('temperature scaling', 'entropy')}.
"""
