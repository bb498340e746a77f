"""Notebook 05 (explanations): the example images, the checks (the Laplace identity, the randomisation floor),
the flagging tables (does explanation spread flag errors?), and the Reading."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch

from utils.chapters.explore import sample_rows
from utils.evaluation import evidence, metrics
from utils.evaluation.evidence import fmt_delta, fmt_interval, fmt_signed
from utils.explain.methods import CAM, forward_members, laplace_cams, predicted_classes
from utils.explain.scores import centre_prior, intensity_map, map_similarity, randomisation_summary, spread_column
from utils.posteriors.registry import REGISTRY

# --------------------------------------------------------------------------- notebook 05: examples and checks


def example_images(dataset, n: int = 5, seed: int = 0, task: str = "bodypart"
                   ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(positions, images B x C x H x W, targets) of `n` test images of different body parts, drawn with `seed`
    (`explore.sample_rows`): the examples every figure of notebook 05 shows. Normal images on the body-part
    task (the class is the part, not a finding); abnormal ones on the abnormality task, whose maps are only
    worth showing where there is a finding to point at."""
    label = 1 if task == "abnormality" else 0
    pick = sample_rows(dataset.index.assign(subset="test"), per_cell=1, seed=seed)
    pick = pick[pick.label == label].groupby("body_part").head(1).head(n)
    rows = [int(np.flatnonzero(dataset.index.rel_path == r)[0]) for r in pick.rel_path]
    return rows, torch.stack([dataset[i][0] for i in rows]), torch.as_tensor(dataset.targets[rows])


def laplace_identity(model, x: torch.Tensor, W: torch.Tensor, target) -> dict[str, float]:
    """The identity of a last-layer posterior's CAMs, checked on images x: the mean CAM over head samples W
    (S x C x K) equals the CAM of the samples' mean head (`mean_cam_minus_cam_of_mean_head`, rounding only),
    which differs from the MAP CAM by sampling noise (`cam_of_mean_head_minus_map_cam`); both are the largest
    absolute difference over pixels and images relative to the MAP CAM's largest |value|.
    `per_pixel_spread_over_map`: the mean per-pixel std over the samples over the mean |MAP CAM|."""
    w_map = model.fc.weight.detach()
    samples = laplace_cams(model, x, W, target)
    of_mean_head = laplace_cams(model, x, W.mean(0)[None], target)[0]
    of_map = laplace_cams(model, x, w_map[None], target)[0]
    scale = of_map.abs().amax()
    return dict(mean_cam_minus_cam_of_mean_head=float((samples.mean(0) - of_mean_head).abs().amax() / scale),
                cam_of_mean_head_minus_map_cam=float((of_mean_head - of_map).abs().amax() / scale),
                per_pixel_spread_over_map=float(samples.std(0).mean() / of_map.abs().mean()), images=len(x))


def identity_line(identity: dict, n_samples: int) -> str:
    """The `laplace_identity` check in one sentence."""
    return ("largest difference, relative to the MAP CAM's largest value: mean CAM over samples vs CAM of the mean "
            f"head {identity['mean_cam_minus_cam_of_mean_head']:.1e} (an identity: rounding only); CAM of the mean "
            f"head vs MAP CAM {identity['cam_of_mean_head_minus_map_cam']:.3f} ({n_samples} samples: sampling "
            "noise); mean per-pixel spread over the Laplace samples / mean |MAP CAM|, on these "
            f"{identity.get('images', 'example')} example images: {identity['per_pixel_spread_over_map']:.2f} (over "
            "the whole test split: the Reading)")


def randomisation_floor(model, x: torch.Tensor) -> dict[str, float]:
    """How similar (mean |Spearman rho| over images, `map_similarity`) the trained model's CAMs of its predicted
    classes already are to maps that know nothing of the network, the centre prior and the image's intensity:
    the floor below which the randomisation check's curve cannot be read as "the map forgot the weights"."""
    cam = CAM(model)(x, predicted_classes(forward_members([model], x)[1])[0])
    return {name: float(np.mean(map_similarity(cam, m)["spearman_abs"]))
            for name, m in (("centre prior", centre_prior(len(x), *x.shape[-2:])),
                            ("image intensity", intensity_map(x)))}


def floor_line(floor: dict) -> str:
    return ("|Spearman ρ| of the trained CAM with the centre prior: {centre prior:.2f}, with the image's intensity: "
            "{image intensity:.2f}".format(**floor))


def scores_caption(task: str, deletion_images: int) -> str:
    """Table 05-1's caption for the run's task: which class the maps explain and what the masks are."""
    if task == "bodypart":
        target = "Every map explains its predictor's predicted class."
        masks = ("the bone masks that define the image's body part (phantom only): **pointing** is the share of "
                 "images whose map peaks on those bones; **mass** the share of positive relevance on them; **iou** "
                 "the overlap of the top 10 % of pixels with them")
        prior = "the mean bone mask of the predicted class over the training split: where that class's bones usually are"
        content = "Bones are bright and central in these films, so content and centre are strong baselines for mask scores."
    else:
        target = ("Every map explains the abnormal class, whatever the prediction: where is the evidence for "
                  "abnormality?")
        masks = ("the masks of what makes an abnormal image abnormal (fracture, hardware, cast, degenerative change; "
                 "phantom only), on the abnormal test images that have one: **pointing** is the share of those "
                 "images whose map peaks on the finding; **mass** the share of positive relevance on it; **iou** the "
                 "overlap of the top 10 % of pixels with it")
        prior = "the mean finding mask of the abnormal training images: where findings usually are"
        content = ("Hardware and casts are bright, so the image's intensity is a strong baseline for mask scores on "
                   "this task.")
    return (f"**Table 05-1.** Scores of each explanation over the test split, with 95 % intervals (bootstrap over "
            "test studies), and below, each map's difference from the strongest baseline of that score, paired over "
            "the same images and resamples (a map beats every baseline only where that interval excludes zero: above "
            f"it for all scores but `deletion_auc`, below it there). {target} Against {masks}. Without masks: "
            "**deletion_auc** (lower is better) and **insertion_auc** (higher is better) follow the explained class's "
            "probability as the most relevant pixels are blacked out, or revealed on a black image, over "
            f"{deletion_images} test images drawn at random (seeded); ensemble maps are scored with the ensemble's "
            "predictive, the others and the baselines with member 0, so no paired difference is given for the "
            "ensemble maps' deletion and insertion. **Baselines**, maps that know nothing of the network: a uniform "
            f"random map; a *centre prior* (a centred Gaussian, σ = a sixth of the image); a *class-mask prior* ({prior}); "
            f"and the image's own content, its *intensity* and its *edges* (Sobel). {content}")


def shown_tables(table):
    """The two displayed pivots of an `interval_table` (method x metric): each score with its interval, and its
    paired difference from the reference ('–' where there is none)."""

    shown = table.assign(
        score=[fmt_interval(dict(estimate=r["mean"], low=r.low, high=r.high), 1, 3) for _, r in table.iterrows()],
        vs_best_baseline=["–" if pd.isna(r.get("delta")) else fmt_delta(
            dict(delta=r.delta, low=r.delta_low, high=r.delta_high), 1, 3) for _, r in table.iterrows()])
    return tuple(shown.pivot_table(index="method", columns="metric", values=v, aggfunc="first", sort=False)
                 for v in ("score", "vs_best_baseline"))


# --------------------------------------------------------------------------- notebook 05: flagging errors


COMBINED = "spread + entropy (CV logistic)"


def spread_heads(run, n: int, seed: int = 0) -> dict:
    """The sources of `explain.scores.explanation_spread` for every method registered with `spread=True` that
    the run has: a combination's members (None), or `n` draws of member 0's head from the method's
    `head_samples(n, seed)` (Laplace, MC dropout)."""
    return {label: run.posterior(label).head_samples(n, seed=seed) for label in run.labels(spread=True)}


def flagging_inputs(predictions: dict, spread) -> dict[str, tuple]:
    """{label: (probs N x C, samples S x N x C, explanation spread N)} from `Run.predictions(labels)` and an
    `explanation_spread` frame with a column for each label: what each record shows (a combination's mean and
    its members' predictives; member 0's predictive and samples for a single-model method, whose spread is of
    member 0's head samples)."""
    return {label: (p.probs, p.samples, spread[spread_column(label)].to_numpy()) for label, p in predictions.items()}


def flagging_tables(predictors: dict, y, groups, n_boot: int = 2000, seed: int = 0):
    """How well each score flags each predictor's errors (`evidence.flagging_table`, paired against the
    predictive entropy): 1 - max p, entropy, mutual information, explanation spread, and spread and entropy
    combined by a cross-validated logistic regression (`COMBINED`). `predictors`: {label: (probs N x C,
    samples S x N x C or None, spread N)}; the mutual information only where the predictor has samples. One row
    per (predictor, score), with the predictor's number of errors."""

    tabs = []
    for name, (probs, samples, spread) in predictors.items():
        wrong = probs.argmax(1) != np.asarray(y)
        scores = {"1 - max p": 1 - probs.max(1), "entropy": metrics.entropy(probs)}
        if samples is not None:
            scores["mutual information"] = metrics.mutual_information(samples)
        scores["explanation spread"] = np.asarray(spread)
        t = evidence.flagging_table(scores, wrong, groups, reference="entropy",
                                    combine={COMBINED: ["explanation spread", "entropy"]}, n_boot=n_boot, seed=seed)
        tabs.append(t.assign(predictor=name, errors=int(wrong.sum())))
    return pd.concat(tabs, ignore_index=True)


# --------------------------------------------------------------------------- notebook 05: the reading


def versus_baseline(table, method: str, metric: str) -> str:
    """'0.812 [0.790, 0.833], better than the centre prior (+0.101 [...])' for one row of an `interval_table`:
    better / worse where the paired interval excludes zero on that side (lower is better for `deletion_auc`),
    'no difference shown from' where it includes zero; just the mean where there is no paired difference."""
    r = table.set_index(["method", "metric"]).loc[(method, metric)]
    if pd.isna(r.get("delta")):
        return f"{r['mean']:.2f}"
    lower = metric == "deletion_auc"
    better = r.delta_high < 0 if lower else r.delta_low > 0
    worse = r.delta_low > 0 if lower else r.delta_high < 0
    word = "better than" if better else "worse than" if worse else "no difference shown from"
    return (f"{r['mean']:.3f} [{r.low:.3f}, {r.high:.3f}], {word} the {r.reference} "
            f"({r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}])")


def flag_line(flags, predictor: str, members: int | None = None) -> str:
    """One predictor's error flagging in a sentence (`flagging_tables`): the spread's AUROC against the entropy's
    and the combined score's gain over the entropy. A combination is said to have `members` members, a
    single-model method to be member 0."""
    fl = flags.set_index(["predictor", "score"])
    s, c, e = (fl.loc[(predictor, k)] for k in ("explanation spread", COMBINED, "entropy"))
    word = "worse than" if s.delta_high < 0 else "better than" if s.delta_low > 0 else "not shown to differ from"
    entry = REGISTRY.get(predictor)
    who = f"{members} members" if entry is not None and entry.combination and members else "member 0"
    return (f"{predictor} ({who}, {int(s.errors)} errors): spread {s.auroc:.3f} [{s.low:.3f}, {s.high:.3f}], {word} "
            f"the entropy's {e.auroc:.3f} [{e.low:.3f}, {e.high:.3f}] (paired {s.delta:+.4f} [{s.delta_low:+.4f}, "
            f"{s.delta_high:+.4f}]); spread and entropy combined − entropy {c.delta:+.4f} [{c.delta_low:+.4f}, "
            f"{c.delta_high:+.4f}]")


def reading(source: str, table, flags, identity: dict, laplace_spread: dict, randomisation, floor: dict,
            members: int, task: str = "bodypart") -> str:
    """The chapter's Reading (Markdown) from its results: the scores against the strongest baselines
    (`interval_table`), the Laplace identity (`laplace_identity`) and spread (`evidence.mean_interval` of the
    per-image Laplace spread), the randomisation check (`randomisation_check` frame, and its
    `randomisation_floor`) and the error flagging (`flagging_tables`, one line per predictor)."""
    rs = randomisation_summary(randomisation)
    last = rs[rs["mode"] == "cascading"].iloc[-1]
    head_rho = randomisation[(randomisation["mode"] == "cascading") & (randomisation.step == 0)].spearman.to_numpy()
    head_signs = ("negative for every seed" if (head_rho < 0).all() else "positive for every seed"
                  if (head_rho > 0).all() else
                  f"its sign varies over seeds, {head_rho.min():+.2f} to {head_rho.max():+.2f}")
    indep = rs[rs["mode"] == "independent"]
    n_images, n_seeds = int(randomisation["n"].max()), randomisation.seed.nunique()
    vs = partial(versus_baseline, table)
    top = max(floor.values())
    head_only = rs.spearman_abs.iloc[0]
    layout = ("Re-initialising the head alone leaves the map more similar to the trained one than maps blind to the "
              "network are: its layout comes mostly from the features rather than the class weights" if head_only > top
              else "Re-initialising the head alone already brings the map to or below the similarity of maps blind "
              "to the network: the map depends on the class weights")
    layout += ("; with every layer re-initialised, part of the layout survives (above that floor)."
               if last.spearman_abs > top else "; with every layer re-initialised it is at or below that floor.")
    mask_lines = ""
    if ((table.method == "MAP CAM (member 0)") & (table.metric == "pointing")).any():
        what, where = (("the bone masks", "the bones: it may look where bones usually are") if task == "bodypart"
                       else ("the findings' masks (abnormal images)", "the findings: it may look where findings "
                             "usually are"))
        mask_lines = f"""
- Against {what}, the MAP CAM's pointing game is {vs('MAP CAM (member 0)', 'pointing')}, and its
  relevance mass {vs('MAP CAM (member 0)', 'mass')}. The ensemble's mean CAM: pointing
  {vs('ensemble CAM, mean', 'pointing')}, mass {vs('ensemble CAM, mean', 'mass')}. A map that is not
  better than its strongest baseline does not show that the network looks at {where}, or at whatever
  is bright."""
    flag_lines = "\n".join(f"  - {flag_line(flags, p, members)}" for p in dict.fromkeys(flags.predictor))
    return f"""
**Reading** (data: {source}; every map explains {"the predicted class" if task == "bodypart" else "the abnormal class"}; 95 % intervals over test studies).
{mask_lines}
- Deletion (lower is better): MAP CAM {vs('MAP CAM (member 0)', 'deletion_auc')};
  insertion: {vs('MAP CAM (member 0)', 'insertion_auc')}.
- The Laplace mean CAM is the MAP CAM by linearity (checked above:
  {identity['mean_cam_minus_cam_of_mean_head']:.0e} apart from the CAM of the samples' mean head), so its scores
  repeat the MAP's up to sampling noise; the posterior shows in the per-pixel spread: over the test set, the
  samples' mean per-pixel standard deviation is
  {laplace_spread['estimate']:.2f} [{laplace_spread['low']:.2f}, {laplace_spread['high']:.2f}] of the mean map's magnitude.
- Randomisation ({n_images} test images drawn at random, {n_seeds} seeds): re-initialising the head alone leaves
  |ρ| = {rs.spearman_abs.iloc[0]:.2f} (signed ρ {fmt_signed(rs.spearman.iloc[0])} on average, {head_signs}) and SSIM
  {fmt_signed(rs.ssim.iloc[0])}; with every layer re-initialised |ρ| = {last.spearman_abs:.2f}
  (seed-to-seed sd {last.spearman_abs_sd_seeds:.2f}) and SSIM = {fmt_signed(last.ssim)}; re-initialising one feature layer
  alone leaves |ρ| between {indep.spearman_abs.iloc[1:].min():.2f} and {indep.spearman_abs.iloc[1:].max():.2f}. For
  scale, the trained CAM's |ρ| with a centred Gaussian is {floor['centre prior']:.2f} and with the image's intensity
  {floor['image intensity']:.2f}. {layout} Adebayo et al. give no pass mark, so read the curve.
- Flagging errors (AUROC; differences paired against the entropy of the same predictor; the single-model
  methods are member 0's):
{flag_lines}

  Explanation spread would add information about errors beyond the entropy only where the interval of
  "combined − entropy" lay above zero; the previous report's AUROC of 0.95 explained the *true* class, which a
  deployed model does not have, and is not re-run here.
"""


def scored_class(task: str, classes) -> str | int:
    """What the scored maps explain: the predicted class (what a deployed model has) on the body-part task; on
    the abnormality task the abnormal class, whatever the prediction, since its maps are scored against the
    findings (a network that calls most studies normal would otherwise be scored on maps of the normal class,
    which for two classes are the abnormal class's maps negated)."""
    return list(classes).index("abnormal") if task == "abnormality" else "predicted"
