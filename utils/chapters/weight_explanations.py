"""Notebook 05's last section: does a posterior over the convolutional weights change what the network looks at?

For every test image, the CAM of member 0's predicted class (or the task's scored class) under three sets of
samples, each against member 0's MAP CAM of the same class:

- **last-layer Laplace**: S head samples of member 0's kron Laplace on the MAP feature maps; its mean map *is*
  the CAM of the mean head (`explain`, "An identity, not a finding"), so its shift from the MAP CAM is
  sampling noise only: the control;
- **all-weights Laplace**: S networks drawn from member 0's K-FAC Laplace over all weights
  (`posteriors.LaplaceAllWeights`, `explain.sampled.sample_cams`), whose feature maps move with the weights;
  also its Grad-CAM at the block before the last convolution (`explain.sampled.sample_gradcams`) against the
  MAP network's Grad-CAM there;
- **other ensemble members**: the CAMs of the same class by members 1 to M - 1 (different modes; member 0,
  whose map is the reference, is left out so that it does not pull their mean towards itself).

Per image and set (`per_image`): Spearman's rho between the mean map and the MAP map (`map_similarity`); the
relative spread of the samples' maps (`spread_scores`); where the test image has masks, the pointing game and
relevance mass of the mean map and of the MAP map (their difference is the shift in what the map points at);
and, for the all-weights posterior, the share of its sampled networks that classify the image correctly.
`shift_table` gives their means with study-bootstrap intervals. `scale_sweep` repeats the all-weights numbers
for networks drawn from the posterior narrowed by tau (theta_MAP + tau (theta_s - theta_MAP), tau <= 1) on a
seeded sample of images, to show how the map shift and the sampled networks' accuracy move together; it
reports every tau it was given (no tau is chosen).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from utils.data.images import make_loader
from utils.evaluation.evidence import mean_intervals
from utils.explain import sampled
from utils.explain.methods import cam_samples, explained_classes, forward_members, upsample
from utils.explain.scores import map_similarity, pointing_game, relevance_mass, spread_scores
from utils.posteriors import all_weights as wl
from utils.posteriors.all_weights import glm_probit

SETS = ("last-layer Laplace", "all-weights Laplace", "all-weights Laplace, Grad-CAM", "other ensemble members",
        "all-weights Laplace, narrowed prior")
NLL_GAP, ACCURACY_GAP, AGREEMENT = 0.02, 0.02, 0.90
"""The targets a posterior over the convolutional weights must meet on the test split before its CAMs are read as
those of networks that classify (issue 23): its linearised predictive's NLL within NLL_GAP of the MAP network's
and its ECE inside the interval a perfectly calibrated predictor with its probabilities would show
(`evidence.ece_reference`); its sampled networks right on at least the MAP network's accuracy minus ACCURACY_GAP
(87 % on the body-part task's 88.6 %) and agreeing with the MAP class on at least AGREEMENT of the images."""


def _scores(name, maps, ref, masks, extra=None) -> dict:
    mean = maps.mean(0)
    out = dict(set=name, rho=map_similarity(mean, ref)["spearman"], spread=spread_scores(maps)["relative"])
    if masks is not None:
        empty = ~masks.flatten(1).any(1).numpy()  # no region to point at: no mask scores for the image

        def score(f, m):
            return np.where(empty, np.nan, f(m, masks).numpy())

        out.update(pointing=score(pointing_game, mean), pointing_map=score(pointing_game, ref),
                   mass=score(relevance_mass, mean), mass_map=score(relevance_mass, ref))
    out.update(extra or {})
    return out


def per_image(models, post, W: torch.Tensor, dataset, masks=None, n_samples: int = 16, seed: int = 0,
              target="predicted", rows=None, batch: int = 128, narrowed=None) -> pd.DataFrame:
    """One pass over `dataset` (see the module docstring): a long frame with one row per image and set, columns
    i, set, rho, spread, [pointing, pointing_map, mass, mass_map,] samples_right and samples_agree (all-weights
    rows: the share of sampled networks right, and predicting member 0's MAP class), y, target.
    `post`: member 0's all-weights posterior; `narrowed`: optionally a second one (`posteriors.
    LaplaceAllWeightsNarrowed`), whose CAMs and networks are scored too (no Grad-CAM); `W`: S' x C x K head
    samples of member 0's last-layer Laplace;
    `masks`: `explanation_scores.region_masks(...)` of the dataset (region first, in the dataset's order), or
    None (MURA); images with an empty region get no pointing or mass. `rows`: positions of the images to use
    (default all); the frame's `i` is the position in `dataset`."""
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows)
    region = None if masks is None else torch.as_tensor(np.asarray(masks[0])[rows]).bool()
    thetas = post.parameter_samples(n_samples, seed)
    net, mean = post.model, post.mean
    dev = mean.device
    thetas_n = None if narrowed is None else narrowed.parameter_samples(n_samples, seed)
    frames, start = [], 0
    for xb, yb in make_loader(torch.utils.data.Subset(dataset, rows.tolist()), batch):
        size, idx = xb.shape[-2:], rows[start:start + len(xb)]
        fmaps, probs = forward_members(models, xb)
        t0, _ = explained_classes(target, probs, yb)
        mb = None if region is None else region[start:start + len(xb)]
        with torch.no_grad():
            ref = upsample(cam_samples(fmaps[0], models[0].fc.weight.detach(), t0)[0], size)
            last = upsample(cam_samples(fmaps[0], W, t0), size)
            ens = torch.stack([upsample(cam_samples(f, m.fc.weight.detach(), t0)[0], size)
                               for m, f in zip(models[1:], fmaps[1:])])
        map_class = probs[0].argmax(1)

        def classified(model, th):
            with torch.no_grad():
                cls = wl.network_logits(model, th, xb.to(dev)).argmax(-1).cpu()
            return dict(samples_right=(cls == yb).float().mean(0).numpy(),
                        samples_agree=(cls == map_class).float().mean(0).numpy())

        right = classified(net, thetas)
        xd, td = xb.to(dev), t0.to(dev)
        allw = sampled.sample_cams(net, thetas, xd, td).cpu()
        gc_ref = sampled.sample_gradcams(net, mean[None], xd, td)[0].cpu()
        gc = sampled.sample_gradcams(net, thetas, xd, td).cpu()
        sets = [_scores(SETS[0], last, ref, mb), _scores(SETS[1], allw, ref, mb, right),
                _scores(SETS[2], gc, gc_ref, mb, right), _scores(SETS[3], ens, ref, mb)]
        if narrowed is not None:
            maps_n = sampled.sample_cams(narrowed.model, thetas_n, xd, td).cpu()
            sets.append(_scores(SETS[4], maps_n, ref, mb, classified(narrowed.model, thetas_n)))
        for row in sets:
            frames.append(pd.DataFrame(dict(i=idx, y=yb.numpy(), target=t0.numpy(), **row)))
        start += len(xb)
    return pd.concat(frames, ignore_index=True)


def _intervals(frame: pd.DataFrame, cols: list[str], groups, n_boot: int, seed: int) -> dict:
    V = frame[cols].to_numpy(np.float64)
    return dict(zip(cols, mean_intervals(V, np.asarray(groups)[frame.i.to_numpy()], n_boot, seed)))


def shift_table(per: pd.DataFrame, groups, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per set, the mean over images with study-bootstrap intervals of: rho (mean map vs MAP map), the relative
    spread, the pointing and mass of the mean map minus the MAP map's (paired per image), and the share of
    sampled networks right (all-weights rows)."""
    rows = []
    for name, f in per.groupby("set", sort=False):
        f = f.assign(**({"d_pointing": f.pointing - f.pointing_map, "d_mass": f.mass - f.mass_map}
                        if "pointing" in f else {}))
        cols = [c for c in ("rho", "spread", "d_pointing", "d_mass", "samples_right", "samples_agree")
                if c in f and f[c].notna().any()]
        ci = _intervals(f, cols, groups, n_boot, seed)
        row = dict(set=name, images=len(f))
        for c in cols:
            row.update({c: ci[c]["estimate"], f"{c}_low": ci[c]["low"], f"{c}_high": ci[c]["high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def scale_sweep(post, model0, dataset, rows, taus=(1.0, 0.5, 0.2, 0.1), n_samples: int = 16, seed: int = 0,
                target="predicted", groups=None, n_boot: int = 2000, n_draws: int = 32) -> pd.DataFrame:
    """The all-weights numbers for networks theta_MAP + tau (theta_s - theta_MAP) (the posterior with its
    covariance scaled by tau^2, chosen after the fact: a tempered posterior, not the Laplace one) on the images
    at positions `rows` of `dataset`: per tau, the share of sampled networks right and the share that agree
    with the MAP network's class, rho of the mean CAM with the MAP CAM, the relative spread, and the GLM
    predictive's accuracy and NLL per image at covariance tau^2 J P^-1 J^T (the linearised draws scale exactly;
    the probit over `n_draws` draws' covariance, as `posteriors.LaplaceAllWeights`); means with study-bootstrap
    intervals (`groups`: the dataset's study ids)."""
    items = [dataset[int(i)] for i in rows]
    x, y = torch.stack([a for a, _ in items]), torch.as_tensor([int(b) for _, b in items])
    _, probs = forward_members([model0], x)
    t0, _ = explained_classes(target, probs, y)
    map_class = probs[0].argmax(1)
    with torch.no_grad():
        ref = upsample(cam_samples(model0.features(x), model0.fc.weight.detach(), t0)[0], x.shape[-2:])
    thetas, mean = post.parameter_samples(n_samples, seed), post.mean
    dev = mean.device
    f0, f = post.draws(x, n_draws, seed)
    out = []
    for tau in taus:
        th = mean + tau * (thetas - mean)
        with torch.no_grad():
            cls = wl.network_logits(post.model, th, x.to(dev)).argmax(-1).cpu()
        maps = sampled.sample_cams(post.model, th, x.to(dev), t0.to(dev)).cpu()
        cols = dict(i=np.asarray(rows), samples_right=(cls == y).float().mean(0).numpy(),
                    samples_agree=(cls == map_class).float().mean(0).numpy(),
                    rho=map_similarity(maps.mean(0), ref)["spearman"], spread=spread_scores(maps)["relative"])
        p = glm_probit(f0, f, tau ** 2)
        cols.update(glm_right=(p.argmax(1) == y.numpy()).astype(float),
                    glm_nll=-np.log(np.clip(p[np.arange(len(y)), y.numpy()], 1e-12, None)))
        frame = pd.DataFrame(cols)
        g = np.asarray(groups) if groups is not None else np.arange(len(dataset))
        ci = _intervals(frame, [c for c in frame.columns if c != "i"], g, n_boot, seed)
        row = dict(tau=tau, images=len(frame))
        for c, d in ci.items():
            row.update({c: d["estimate"], f"{c}_low": d["low"], f"{c}_high": d["high"]})
        out.append(row)
    return pd.DataFrame(out)


def _ci(t, c, digits=2, pct=False) -> str:
    k = 100 if pct else 1
    unit = " %" if pct else ""
    return f"{t[c] * k:.{digits}f} [{t[c + '_low'] * k:.{digits}f}, {t[c + '_high'] * k:.{digits}f}]{unit}"


def reading(table: pd.DataFrame, sweep: pd.DataFrame, cost: pd.DataFrame, flags, calib_row: dict,
            map_row: dict, n_samples: int) -> str:
    """The section's Reading, every number from the tables it is given (no claim beyond them)."""
    t = table.set_index("set")
    agree1 = float(sweep.set_index("tau").samples_agree.get(1.0, np.nan)) if "samples_agree" in sweep else np.nan
    aw, ll, ens, gc = (t.loc[s] for s in ("all-weights Laplace", "last-layer Laplace", "other ensemble members",
                                          "all-weights Laplace, Grad-CAM"))
    lines = [
        f"**How far the mean CAM of {n_samples} networks drawn from the all-weights posterior is from the MAP CAM** "
        f"(Spearman ρ, {int(aw['images'])} test images): {_ci(aw, 'rho', 3)} (Grad-CAM one block lower: "
        f"{_ci(gc, 'rho', 3)}), against {_ci(ll, 'rho', 3)} for the last-layer Laplace (the MAP CAM up to sampling "
        f"noise, by identity) and {_ci(ens, 'rho', 3)} for the mean CAM of the other ensemble members."]
    if "d_pointing" in t:
        lines.append(
            f"What the mean map points at, minus the MAP map (paired per image): pointing {_ci(aw, 'd_pointing', 3)}, "
            f"relevance mass {_ci(aw, 'd_mass', 3)} for the all-weights posterior; {_ci(ens, 'd_pointing', 3)} and "
            f"{_ci(ens, 'd_mass', 3)} for the other members.")
    lines.append(
        f"A network drawn from the all-weights posterior classifies {_ci(aw, 'samples_right', 1, pct=True)} of "
        f"these images correctly (the MAP network: {map_row['accuracy'] * 100:.1f} % of the whole test split). "
        "Under this posterior (member 0, one scalar prior, BatchNorm statistics kept at the MAP's), the maps above "
        + ("are those of networks that often do not classify the images as the MAP network does (at τ = 1 below, "
           f"{agree1:.0%} agree with its class, below the {AGREEMENT:.0%} the targets ask; on two classes even "
           "networks guessing at random would agree on about half); whether a posterior whose networks still classify would move the map is not settled by them."
           if not agree1 >= AGREEMENT else
           f"are those of networks that agree with the MAP network's class on {agree1:.0%} of the sweep's images "
           "(τ = 1 below), so they still classify much as the MAP network does."))
    s = sweep.set_index("tau")
    glm = "glm_nll" in s
    lines.append(
        f"Scaling the posterior's spread by τ after the fact (networks θ_MAP + τ (θ_s − θ_MAP), a tempered "
        f"posterior, not the Laplace one; {int(s.images.iloc[0])} of the images, drawn at random): " + "; ".join(
            f"τ = {tau:g}: {r.samples_right * 100:.0f} % right, {r.samples_agree * 100:.0f} % agree with the MAP "
            f"network, ρ {r.rho:.2f} [{r.rho_low:.2f}, {r.rho_high:.2f}]"
            + (f", GLM predictive NLL {r.glm_nll:.3f}" if glm else "") for tau, r in s.iterrows()) +
        ". The map's similarity to the MAP's and the networks' agreement with the MAP rise together as τ falls; "
        "that is co-variation over four values of τ, not a separation of the two.")
    lines.append(
        f"Relative spread of the samples' maps: all weights {_ci(aw, 'spread')}, last layer {_ci(ll, 'spread')}, "
        f"other members {_ci(ens, 'spread')}.")
    if flags is not None:
        fl = flags.set_index("score")
        sp, en, mp = fl.loc["explanation spread"], fl.loc["entropy"], fl.loc["1 - max p"]
        lines.append(
            f"Flagging the all-weights predictive's {int(sp.errors)} errors on these images (AUROC): the spread of the "
            f"network samples' maps {sp.auroc:.3f} [{sp.low:.3f}, {sp.high:.3f}], the GLM predictive's entropy "
            f"{en.auroc:.3f} [{en.low:.3f}, {en.high:.3f}] (paired difference {sp.delta:+.3f} [{sp.delta_low:+.3f}, "
            f"{sp.delta_high:+.3f}]) and its 1 − max p {mp.auroc:.3f} [{mp.low:.3f}, {mp.high:.3f}].")
    lines.append(
        f"**Its predictive** (GLM, linearised networks; member 0, whole test split): accuracy "
        f"{calib_row['accuracy']:.1%}, NLL {calib_row['nll']:.3f}, ECE {calib_row['ece']:.1%}, against the MAP "
        f"network's {map_row['accuracy']:.1%}, {map_row['nll']:.3f}, {map_row['ece']:.1%} (notebook 04 gives "
        "intervals).")
    c = cost.set_index("method")
    a, l_ = c.loc["Laplace, kron, all weights"], c.loc["Laplace, kron"]
    lines.append(
        f"**Cost** (member 0, this machine): fit {a.fit_s:.1f} s against {l_.fit_s:.2f} s for the last-layer kron "
        f"Laplace on cached features (their one-off extraction is in notebook 02's cost table); prediction of the test split {a.predict_s:.1f} s against "
        f"{l_.predict_s:.2f} s; {int(a.parameters):,} parameters against {int(l_.parameters):,}, a posterior of "
        f"{a.posterior_mb:.1f} MB against {l_.posterior_mb:.2f} MB.")
    return "\n\n".join(lines)


def paired_rho(per: pd.DataFrame, a: str, b: str, groups, n_boot: int = 2000, seed: int = 0) -> dict:
    """rho(set a) - rho(set b) per image (the same images), its mean with a study-bootstrap interval."""
    r = per.pivot_table(index="i", columns="set", values="rho")[[a, b]].dropna()
    frame = pd.DataFrame(dict(i=r.index.to_numpy(), d_rho=(r[a] - r[b]).to_numpy()))
    return _intervals(frame, ["d_rho"], groups, n_boot, seed)["d_rho"]


def targets(shift: pd.DataFrame, glm_row: dict, map_row: dict, ece_ref: dict, map_right: float) -> pd.DataFrame:
    """The narrowed posterior against the targets (NLL_GAP, ACCURACY_GAP, AGREEMENT; module constants), each read
    on its point value as the issue states them: one row per target with the value, the bound and whether it is
    met. `shift`: `shift_table` (its sampled networks on the explained images); `glm_row`, `map_row`:
    `metrics.summary` of its linearised predictive and of member 0's MAP network on the whole test split;
    `ece_ref`: `evidence.ece_reference` of the predictive's probabilities; `map_right`: member 0's MAP accuracy on
    the same explained images as the sampled networks (so the accuracy target compares like with like)."""
    t = shift.set_index("set").loc[SETS[4]]
    floor = map_right - ACCURACY_GAP
    rows = [
        dict(target="linearised predictive: NLL within 0.02 of the MAP network's (whole test split)",
             value=glm_row["nll"], bound=map_row["nll"] + NLL_GAP, met=glm_row["nll"] <= map_row["nll"] + NLL_GAP),
        dict(target="linearised predictive: ECE inside a calibrated predictor's interval (whole test split)",
             value=glm_row["ece"], bound=ece_ref["high"], met=ece_ref["low"] <= glm_row["ece"] <= ece_ref["high"]),
        dict(target=f"sampled networks right, >= the MAP network's {map_right:.1%} - {ACCURACY_GAP:.0%} (explained "
                    "images)", value=t.samples_right, bound=floor, met=t.samples_right >= floor),
        dict(target=f"sampled networks agree with the MAP class, >= {AGREEMENT:.0%} (explained images)",
             value=t.samples_agree, bound=AGREEMENT, met=t.samples_agree >= AGREEMENT),
    ]
    return pd.DataFrame(rows)


def narrowed_reading(shift: pd.DataFrame, gate: pd.DataFrame, info: dict, glm_row: dict, map_row: dict,
                     ece_ref: dict, d_rho: dict) -> str:
    """Whether a posterior over the convolutional weights whose networks still classify moves the CAM as far as
    another ensemble member does, read only where it meets every target (`targets`); every number from its
    arguments. `info`: the narrowed posterior's fit record (`marglik_prior`, `prior_precision`, `narrowing`)."""
    t = shift.set_index("set")
    aw, nar, ens = t.loc[SETS[1]], t.loc[SETS[4]], t.loc[SETS[3]]
    lines = [
        f"**A posterior over all weights whose networks still classify.** The marginal likelihood's prior precision "
        f"(δ = {info['marglik_prior']:.3g}) draws networks right on {_ci(aw, 'samples_right', 1, pct=True)} of the "
        f"images. Raising δ until the sampled networks agree with the MAP class on ≥ 90 % of the *validation* "
        f"images gives δ = {info['prior_precision']:.3g}, {info['narrowing']:.3g} times the evidence's: a narrowed "
        "posterior chosen by a predictive constraint, not by the marginal likelihood (where the prior dominates, "
        "raising δ c-fold shrinks the covariance about as a temperature 1/c would). On the test split its "
        f"linearised predictive has NLL {glm_row['nll']:.3f} (MAP {map_row['nll']:.3f}) and ECE "
        f"{glm_row['ece']:.1%} (a calibrated predictor with its probabilities: {ece_ref['low']:.1%} to "
        f"{ece_ref['high']:.1%}); its networks are right on {_ci(nar, 'samples_right', 1, pct=True)} and agree "
        f"with the MAP class on {_ci(nar, 'samples_agree', 1, pct=True)} of the explained images."]
    failed = gate[~gate.met.astype(bool)]
    if len(failed):
        top = max(info.get("val_agreement", {}).items(), key=lambda kv: float(kv[0]), default=None)
        lines.append(
            "Read on their point values, it misses " + "; ".join(f"{r.target} ({r.value:.3f} against {r.bound:.3f})"
                                                               for r in failed.itertuples())
            + ". So neither all-weights posterior scored here (the evidence's δ and this narrowed one) both classifies "
              "like the MAP network and is calibrated. A larger δ draws networks still closer to the MAP network"
            + (f" (at δ = {float(top[0]):.3g} they agree with it on {top[1]:.1%} of the validation images)" if top
               else "") + ", which meets such targets by ceasing to differ from it; the layer-wise prior and a "
              "subnetwork Laplace tried outside the report did no better (the module docstring of "
              "`utils/posteriors/all_weights.py`). Its CAM numbers (ρ "
            f"{_ci(nar, 'rho', 3)} with the MAP CAM) are shown, not read as an answer.")
        return "\n\n".join(lines)
    if d_rho["low"] > 0:
        how = "stays **closer** to the MAP CAM than the other members' mean CAM does"
    elif d_rho["high"] < 0:
        how = "moves **further** from the MAP CAM than the other members' mean CAM does"
    else:
        how = "moves no differently from the other members' mean CAM (no difference shown)"
    lines.append(f"It meets every target, so its maps answer the question: its mean CAM (ρ {_ci(nar, 'rho', 3)} "
                 f"with the MAP CAM) {how}, ρ {_ci(ens, 'rho', 3)}; paired difference per image "
                 f"{d_rho['estimate']:+.3f} [{d_rho['low']:+.3f}, {d_rho['high']:+.3f}].")
    return "\n\n".join(lines)


def shown(table: pd.DataFrame, index: str = "set") -> pd.DataFrame:
    """A `shift_table` or `scale_sweep` for display: 'estimate [low, high]' per column with an interval; '-' where
    a row has no such number (e.g. `samples_right`, defined for the all-weights rows only)."""
    cols = [c for c in table.columns if f"{c}_low" in table.columns]
    out = table[[index, "images"]].copy()
    for c in cols:
        out[c] = ["-" if pd.isna(r[c]) else f"{r[c]:.3f} [{r[c + '_low']:.3f}, {r[c + '_high']:.3f}]"
                  for _, r in table.iterrows()]
    return out.set_index(index)
