"""Notebook 02 (the Laplace approximation): the fit table of every single-model method, the validation NLL over
the prior precision, the probit against Monte Carlo, and the cost of each Hessian structure."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from utils import data
from utils.config import get_device
from utils.evaluation import metrics
from utils.evaluation.evidence import fmt_signed
from utils.posteriors import Predictions
from utils.posteriors.bayes import (
    LaplaceFit,
    fit_laplace,
    head_of,
    logit_moments,
    mc_samples,
    optimize_prior,
    predict,
    probit,
)
from utils.posteriors.store import embed


def val_nll_curve(fit: LaplaceFit, val: tuple, prior_precisions, how: str = "probit") -> np.ndarray:
    """Validation NLL of the predictive at each prior precision; the fit's prior is restored afterwards."""
    phi, y = val
    before = fit.la.prior_precision.detach().clone()
    try:
        out = []
        for p in prior_precisions:
            fit.la.prior_precision = float(p)
            out.append(metrics.nll(predict(fit, phi, how), y))
        return np.array(out)
    finally:
        fit.la.prior_precision = before


def probit_vs_mc(fit: LaplaceFit, phi: np.ndarray, y: np.ndarray, n_samples: int = 2000, seed: int = 0
                 ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The probit approximation with and without the null-space projection against Monte Carlo over the same
    linearised logits: per predictive, its scores and the mean total-variation distance to Monte Carlo (rows),
    and each predictive's confidences (for the scatter plot)."""
    f_mu, f_var = logit_moments(fit, phi)
    mc = mc_samples(f_mu, f_var, n_samples, seed=seed).mean(0).numpy()
    rows, conf = [], {}
    for name, pr in ((f"MC, {n_samples} samples", mc), ("probit, as laplace-torch", probit(f_mu, f_var, project=False)),
                     ("probit, null space projected", probit(f_mu, f_var, project=True))):
        conf[name] = pr.max(1)
        rows.append(dict(structure=fit.structure, predictive=name, tv_distance_to_mc=np.abs(pr - mc).sum(1).mean() / 2,
                         **metrics.summary(pr, y)))
    return rows, conf


def compare_fit_cost(model, meta: dict, train_ds, structure: str = "kron", device=None) -> dict:
    """Seconds to fit a member's last-layer Laplace and optimise its prior by the marginal likelihood,
    on cached features and on the whole network (laplace-torch's last-layer Laplace over the images),
    in one run; with the features' one-off extraction and the agreement of the two posteriors.

    `ratio` is network / features excluding the one-off feature extraction (which every structure and prior
    search shares), `ratio_with_extraction` includes it: network / (extraction + fit + prior)."""
    from laplace import Laplace

    device = torch.device(device or get_device())
    model = model.to(device).eval()
    start = meta.get("prior_precision") or 1.0

    t = time.perf_counter()
    phi = embed(model, train_ds, device)
    extract_s = time.perf_counter() - t
    feat = optimize_prior(fit_laplace(head_of(model).to("cpu"), phi, train_ds.targets.astype(np.int64), structure,
                                      start), "marglik")

    loader = data.make_loader(train_ds, 512)
    t = time.perf_counter()
    whole = Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure=structure,
                    prior_precision=float(start))
    whole.fit(loader)
    whole_fit_s = time.perf_counter() - t
    t = time.perf_counter()
    whole_fit = optimize_prior(LaplaceFit(whole, structure, float(start)), "marglik")
    whole_prior_s = time.perf_counter() - t
    network = whole_fit_s + whole_prior_s
    return dict(structure=structure, features_extract_s=extract_s, features_fit_s=feat.fit_s,
                features_prior_s=feat.prior_s, network_fit_s=whole_fit_s, network_prior_s=whole_prior_s,
                ratio=network / (feat.fit_s + feat.prior_s),
                ratio_with_extraction=network / (extract_s + feat.fit_s + feat.prior_s),
                prior_features=feat.prior_precision, prior_network=whole_fit.prior_precision)


def fit_table(preds: dict[str, Predictions], labels) -> pd.DataFrame:
    """One row per single-model method and member of `Run.predictions`: the test scores and what the fit recorded
    (prior precision, fit / prior-search / predict seconds, where the method has them)."""

    rows = []
    for label, p in preds.items():
        if p.combination:
            continue
        for m, (probs, info) in enumerate(zip(p.members, p.info)):
            rows.append(dict(member=m, method=label, **{k: info.get(k) for k in
                                                        ("prior_precision", "prior_precision_bias", "marglik_gain",
                                                         "parameters", "posterior_mb", "fit_s", "prior_s",
                                                         "predict_s")},
                             **metrics.summary(probs, labels)))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the Reading


def _edge_words(structure: str, r) -> str:
    """Which edge of its range the grid search on the validation NLL ran off, and what that means."""
    lo = r.gridsearch_range[0] if isinstance(r.get("gridsearch_range"), (list, tuple)) else None
    if lo is not None and r.gridsearch_delta <= lo * 1.0001:
        return (f" For {structure} the grid search on the validation NLL ran off its lower edge (δ = "
                f"{r.gridsearch_delta:.3g}): a broader Laplace predictive scores better on validation images than "
                "any δ it tried.")
    return (f" For {structure} the grid search on the validation NLL ran off its upper edge (δ = "
            f"{r.gridsearch_delta:.3g}): on validation images the MAP network's own probabilities score better "
            "than any Laplace predictive.")


def reading(fits: pd.DataFrame, prior_search: pd.DataFrame, probit_mc: pd.DataFrame, cost: pd.DataFrame,
            source: str) -> str:
    """Notebook 02's Reading from its tables: each last-layer Laplace against the MAP members (means over the
    members it was fitted on, no intervals: notebook 04 tests the differences), where each prior search ended,
    the probit against Monte Carlo, and what the fit costs."""
    mean = fits.groupby("method", sort=False)[["accuracy", "nll", "ece"]].mean()
    n = fits.groupby("method", sort=False).size()
    base = mean.loc["MAP"]
    lines = [f"**Reading** (data: {source}; test split; means over the members each method was fitted on; "
             "differences here are descriptive, notebook 04 gives them intervals)."]
    laplaces = [m for m in mean.index if m.startswith("Laplace") and "all weights" not in m]
    parts = [f"{m.removeprefix('Laplace, ')}: NLL {fmt_signed(mean.loc[m, 'nll'] - base.nll, 3)}, ECE "
             f"{fmt_signed(100 * (mean.loc[m, 'ece'] - base.ece), 1)} points, accuracy "
             f"{fmt_signed(100 * (mean.loc[m, 'accuracy'] - base.accuracy), 1)} points" for m in laplaces]
    if parts:
        lines.append(f"- Against the MAP members (NLL {base.nll:.3f}, ECE {100 * base.ece:.1f} %, accuracy "
                     f"{100 * base.accuracy:.1f} %), the last-layer Laplace predictives change " + "; ".join(parts)
                     + ".")
    for m in mean.index:
        if "all weights" in m:  # fitted on some members only: against those members' MAP networks
            own = fits[(fits.method == "MAP") & fits.member.isin(fits[fits.method == m].member)]
            b = own[["nll", "ece"]].mean()
            broad = mean.loc[m, "nll"] > b.nll + 0.02 and mean.loc[m, "ece"] > b.ece + 0.02
            close = mean.loc[m, "nll"] <= b.nll + 0.02 and mean.loc[m, "ece"] <= b.ece + 0.02
            who = "member 0" if int(n[m]) == 1 else f"{int(n[m])} members"
            lines.append(f"- *{m}* ({who}): NLL {mean.loc[m, 'nll']:.3f} and ECE {100 * mean.loc[m, 'ece']:.1f} % "
                         f"against the same member's MAP network's {b.nll:.3f} and {100 * b.ece:.1f} %" + (
                             ": its linearised predictive is far broader than the data support" if broad else
                             ": within 0.02 nats and 2 ECE points of the MAP network's" if close else
                             ": more than 0.02 nats or 2 ECE points from the MAP network's") +
                         " (notebook 05 reads its sampled networks).")
    ps = prior_search.set_index("structure")
    ml = [f"{s} {r.marglik_delta:.3g}" for s, r in ps.iterrows()]
    unbr = [s for s, r in ps.iterrows() if not r.marglik_bracketed]
    gs_edge = [s for s, r in ps.iterrows() if not r.gridsearch_bracketed]
    lines.append("- The marginal likelihood's prior precision δ of member 0 (Figure 02-1): " + ", ".join(ml) + (
        "; every marginal-likelihood search bracketed an optimum." if not unbr else
        f"; the marginal-likelihood search did not bracket an optimum for {', '.join(unbr)}.")
        + "".join(_edge_words(s, ps.loc[s]) for s in gs_edge)
        + ("" if gs_edge else " The grid search on the validation NLL bracketed an optimum too."))
    pm = probit_mc.set_index(["structure", "predictive"]).tv_distance_to_mc
    proj = [f"{s}: {pm[(s, 'probit, null space projected')]:.4f} projected, {pm[(s, 'probit, as laplace-torch')]:.4f} "
            "without" for s in dict.fromkeys(probit_mc.structure)]
    lines.append("- Mean total-variation distance of the probit predictive to Monte Carlo (2,000 samples): "
                 + "; ".join(proj) + ".")
    c = cost.iloc[0]
    lines.append(f"- Fitting the {c.structure} posterior and its prior on cached features is {c.ratio:.0f}x "
                 f"faster than laplace-torch's last-layer Laplace over the images ({c.ratio_with_extraction:.1f}x "
                 "when the features' one-off extraction is charged to this one fit); both reach the same prior "
                 f"precision ({c.prior_features:.3g} and {c.prior_network:.3g}).")
    return "\n".join(lines)
