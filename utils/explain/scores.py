"""Scores of explanations: how well maps (from `explain`) point at the anatomy, how faithful they are, how
they compare with baselines, whether they pass the randomisation check and how much they spread over samples.

Baselines (B x H x W maps, scored beside the explanations): a uniform random map, a centred Gaussian
(`centre_prior`), the training set's mean bone mask of the explained class (`class_mask_prior`,
`mean_class_masks`), the image's own intensity (`intensity_map`) and its Sobel edges (`edge_map`).

Scores: against masks (pointing game, relevance mass, IoU of the top-k % region), without masks (deletion
and insertion curves and their AUC), per image (`score_test_set`, long form) and summarised (`summarise`,
`interval_table`); and the randomisation sanity check of Adebayo et al. (2018), cascading and independent,
over several seeds (`randomisation_check`, `randomisation_passes`), which any explainer callable can be put
through.

Spread over samples (`spread_scores`, `explanation_spread`): per image, the mean over pixels of the std over
samples, and the relative spread (that over the mean |mean map|), for ensemble members, Laplace head samples
and MC-dropout head samples (`posteriors.mc_dropout_heads`).

Notebook 05's own steps: its example images (`example_images`), the Laplace identity checked on them
(`laplace_identity`), the randomisation check's floor (`randomisation_floor`), the displayed score tables
(`shown_tables`), how well explanation spread flags each predictor's errors (`flagging_inputs`,
`flagging_tables`) and the chapter's Reading (`reading`, with `versus_baseline` and `flag_line`).

As in `explain`, maps explain the *predicted* class by default (`target="predicted"`); `target="true"`
explains the true class and is labelled as such.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

from utils.data.images import PIXEL_MEAN, PIXEL_STD, make_loader, masks_for
from utils.evaluation import evidence
from utils.explain.methods import (
    BLACK,
    MeanProbs,
    as_explainer,
    cam_samples,
    explained_classes,
    forward_members,
    maps_by_method,
    normalize,
    upsample,
)

# --------------------------------------------------------------------------- scores against masks


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 where the map's maximum falls inside the mask (per image; maps and masks B x H x W)."""
    flat = maps.flatten(1)
    idx = flat.argmax(1)
    return masks.flatten(1).gather(1, idx[:, None]).squeeze(1).float()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the (positive) relevance that falls inside the mask, per image."""
    pos = maps.clamp_min(0).flatten(1)
    return (pos * masks.flatten(1).float()).sum(1) / pos.sum(1).clamp_min(1e-12)


def topk_iou(maps: torch.Tensor, masks: torch.Tensor, share: float = 0.1) -> torch.Tensor:
    """IoU between the top `share` of pixels by relevance and the mask, per image."""
    flat = maps.flatten(1)
    k = max(1, int(round(share * flat.shape[1])))
    top = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True)
    m = masks.flatten(1).bool()
    return (top & m).sum(1).float() / (top | m).sum(1).clamp_min(1).float()


# --------------------------------------------------------------------------- baselines


def random_map(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Uniform random maps (B x H x W) from a generator seeded with `seed`: the floor of every score."""
    return torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed))


def centre_prior(b: int, h: int, w: int, sigma_frac: float = 1 / 6) -> torch.Tensor:
    """A centred Gaussian, exp(-(dy^2 / sy^2 + dx^2 / sx^2) / 2) with sy = h * sigma_frac and sx = w * sigma_frac,
    the same for every image (B x H x W): radiographs are framed on the anatomy, so "the middle" is the
    baseline a map must beat."""
    yy = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / (h * sigma_frac)
    xx = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / (w * sigma_frac)
    return torch.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2) / 2).expand(b, h, w).clone()


def mean_class_masks(masks_bones, targets, n_classes: int) -> torch.Tensor:
    """The mean bone mask of each class (C x H x W, in [0, 1]): the share of that class's images (pass the
    TRAINING set's masks and targets) with bone at each pixel. A class without images gets zeros."""
    m = torch.tensor(np.asarray(masks_bones), dtype=torch.float32)  # copies: cache arrays are read-only
    t = torch.tensor(np.asarray(targets), dtype=torch.long)
    sums = torch.zeros(n_classes, *m.shape[1:]).index_add_(0, t, m)
    counts = torch.bincount(t, minlength=n_classes).clamp_min(1).float()
    return sums / counts[:, None, None]


def region_masks(masks, task: str = "bodypart"):
    """The region an image's explanation is scored against, as (region bool B x H x W, lesion flags): for the
    body-part task the bones that define the part (the masks as `data.masks_for` reads them); for the abnormality
    task the findings (lesion mask != 0: fracture, hardware, cast, degenerative change). None stays None (MURA).
    Images whose region is empty (a normal study, a finding outside the field of view) get no mask scores."""
    if masks is None or task == "bodypart":
        return masks
    return masks[1] != 0, masks[1]


def dataset_class_masks(dataset, task: str = "bodypart") -> torch.Tensor | None:
    """`mean_class_masks` of a `data.CachedImages` (its images' letterboxed `region_masks` at its size, its
    targets and classes); None where the data have no masks (MURA). Pass the training split."""
    masks = region_masks(masks_for(dataset.index.path, dataset.size), task)
    return None if masks is None else mean_class_masks(masks[0], dataset.targets, len(dataset.classes))


def class_mask_prior(mean_masks: torch.Tensor, target, size=None) -> torch.Tensor:
    """The mean training bone mask of each image's `target` class (B x H x W; `mean_masks` C x H x W), upsampled
    to `size` (H, W) if given and different: where that class's bones usually are, without looking at the
    image. Give it the class the compared maps explain (so it knows no more than they do)."""
    target = torch.as_tensor(target).long().reshape(-1)
    maps = mean_masks[target].float()
    return upsample(maps, tuple(size)) if size is not None and tuple(maps.shape[-2:]) != tuple(size) else maps


def intensity_map(x: torch.Tensor) -> torch.Tensor:
    """The image's own intensity in [0, 1] (B x H x W): x (B x C x H x W, standardised with
    data.PIXEL_MEAN / PIXEL_STD) de-standardised, averaged over channels. Bones are bright."""
    return (x.detach() * PIXEL_STD + PIXEL_MEAN).mean(1)


_SOBEL = torch.tensor([1.0, 0.0, -1.0])[:, None] * torch.tensor([0.25, 0.5, 0.25])[None, :]  # d/dy, smoothed in x


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the image's intensity (B x H x W): sqrt((g_y^2 + g_x^2) / 2) with the
    kernels [1, 0, -1] x [1/4, 1/2, 1/4] and edge-replicating borders. A torch convolution, equal (tests
    check it) to skimage.filters.sobel applied to each `intensity_map`."""
    img = intensity_map(x)[:, None]
    pad = F.pad(img, (1, 1, 1, 1), mode="replicate")
    k = torch.stack([_SOBEL, _SOBEL.T])[:, None].to(img)  # 2 x 1 x 3 x 3
    g = F.conv2d(pad, k)
    return (g.pow(2).sum(1) / 2).sqrt()


BASELINES = ("random (reference)", "centre prior", "class-mask prior", "image intensity", "image edges (Sobel)")


def baseline_maps(x: torch.Tensor, target=None, mean_masks: torch.Tensor | None = None, seed: int = 0
                  ) -> dict[str, torch.Tensor]:
    """The baselines of `BASELINES` for a batch (B x H x W each): random (seeded), centre prior, class-mask
    prior (only with `mean_masks` and `target`), intensity and Sobel edges."""
    b, h, w = len(x), *x.shape[-2:]
    out = {"random (reference)": random_map(b, h, w, seed), "centre prior": centre_prior(b, h, w)}
    if mean_masks is not None and target is not None:
        out["class-mask prior"] = class_mask_prior(mean_masks, torch.as_tensor(target).long().expand(b), (h, w))
    out["image intensity"] = intensity_map(x)
    out["image edges (Sobel)"] = edge_map(x)
    return out


# --------------------------------------------------------------------------- scores without masks


@torch.no_grad()
def _class_prob(model, x: torch.Tensor, target: torch.Tensor, batch: int) -> torch.Tensor:
    p = torch.cat([torch.softmax(model(x[i:i + batch]), 1) for i in range(0, len(x), batch)])
    return p.gather(1, target[:, None]).squeeze(1)


@torch.no_grad()
def curve_ends(model, x: torch.Tensor, target, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability of `target` on the intact images, on black images): the two ends of every deletion and
    insertion curve, whatever the map; compute them once to score several maps of the same images."""
    model = model.eval()
    target = torch.as_tensor(target).long().expand(len(x))
    return _class_prob(model, x, target, batch), _class_prob(model, torch.full_like(x, BLACK), target, batch)


@torch.no_grad()
def deletion_insertion(model, x: torch.Tensor, maps: torch.Tensor, target, steps: int = 16,
                       batch: int = 512, ends: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> dict[str, np.ndarray]:
    """Probability of `target` as the most relevant pixels are removed (deletion: set to black) or revealed
    on a black image (insertion), over `steps` + 1 equal fractions; curves B x (steps + 1) and their AUCs
    (trapezoid over the fraction). A faithful map gives a low deletion and a high insertion AUC.
    Ties in a map are broken by pixel order (stable sort). `ends`: `curve_ends(model, x, target)`, reused."""
    model = model.eval()
    b, _, h, w = x.shape
    target = torch.as_tensor(target).long().expand(b)
    full, black = ends if ends is not None else curve_ends(model, x, target, batch)
    order = maps.reshape(b, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand(b, -1)).reshape(b, 1, h, w)
    fracs = torch.linspace(0, 1, steps + 1)
    curves = {}
    for kind in ("deletion", "insertion"):
        probs = [full if kind == "deletion" else black]
        for f in fracs[1:-1]:
            shown = rank < int(round(float(f) * h * w))  # the top fraction f of pixels
            keep = ~shown if kind == "deletion" else shown
            probs.append(_class_prob(model, torch.where(keep, x, torch.full_like(x, BLACK)), target, batch))
        probs.append(black if kind == "deletion" else full)
        curves[kind] = torch.stack(probs, 1).numpy()
    f = fracs.numpy()
    return dict(fractions=f, deletion=curves["deletion"], insertion=curves["insertion"],
                deletion_auc=np.trapezoid(curves["deletion"], f, axis=1),
                insertion_auc=np.trapezoid(curves["insertion"], f, axis=1))


# --------------------------------------------------------------------------- randomisation sanity check


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, between maps a and b (B x H x W): Spearman's rho over pixels (`spearman`; average ranks for
    ties, as scipy.stats.spearmanr, vectorised), its absolute value (`spearman_abs`: the sign of a map after
    re-initialising a network is arbitrary, so rho = -1 is as similar as rho = 1) and the SSIM of the min-max
    normalised maps (`ssim`, skimage.metrics.structural_similarity, data_range=1). rho is 0 where exactly one
    of the two maps is constant (it ranks nothing) and NaN where both are."""
    a = normalize(a.detach().float()).cpu().numpy().astype(np.float64)
    b = normalize(b.detach().float()).cpu().numpy().astype(np.float64)
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    va, vb = (ra ** 2).sum(1), (rb ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / np.sqrt(va * vb)
    const_a, const_b = va == 0, vb == 0
    rho = np.where(const_a & const_b, np.nan, np.where(const_a | const_b, 0.0, rho))
    win = min(7, *a.shape[-2:])
    win -= 1 - win % 2  # odd
    ssim = np.array([structural_similarity(p, q, data_range=1.0, win_size=win) for p, q in zip(a, b)])
    return dict(spearman=rho, spearman_abs=np.abs(rho), ssim=ssim)


def randomisation_stages(model) -> list[tuple[str, list[torch.nn.Module]]]:
    """The layers a randomisation check re-initialises, top down: the head `fc`, then the blocks of
    `model.features` from the last to the first. A block is a child of `features` with parameters, with a
    batch norm joined to the layer before it (conv + BN; a ResNet stage is one block); it is named after its
    first module (e.g. `features.12`)."""
    blocks: list[tuple[str, list[torch.nn.Module]]] = []
    for name, mod in model.features.named_children():
        if not any(True for _ in mod.parameters()):
            continue
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and blocks:
            blocks[-1][1].append(mod)
        else:
            blocks.append((f"features.{name}", [mod]))
    return [("fc", [model.fc])] + blocks[::-1]


def _reinit(modules, seed: int) -> None:
    """Re-initialise every submodule with `reset_parameters` (PyTorch's default initialisation; batch norms
    back to identity with fresh running statistics), drawing from a torch RNG seeded with `seed` inside
    `fork_rng`, so the caller's global RNG is left untouched."""
    devices = sorted({q.device.index or 0 for mod in modules for q in mod.parameters() if q.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for mod in modules:
            for sub in mod.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()


def randomisation_check(model, x: torch.Tensor, target=None, explainer="CAM", n_seeds: int = 5, seed: int = 0,
                        modes=("cascading", "independent")):
    """Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    `explainer`: a callable `explain(model, x, target) -> B x H x W` (or a `METHODS` name; default the CAM),
    so baselines can be put through it too. `target`: the classes to explain, kept fixed while the weights
    change; default the *original* model's predicted classes (no labels needed).

    Stages (`randomisation_stages`): the head `fc`, then the feature blocks from the top down.
    *cascading*: stage j re-initialises stages 0..j cumulatively (the last stage: every weight random);
    *independent*: stage j re-initialises stage j alone, all others trained. For each of `n_seeds` seeds
    (re-initialisation s of stage j draws from torch seed `seed + 1000 s + j`, so the first stage is the
    same network in both modes) the maps of the randomised network are compared with the original's
    (`map_similarity`: |Spearman rho|, SSIM of min-max normalised maps, and the signed rho for information).

    Returns a pandas DataFrame, one row per (mode, stage, seed): mode, step (0 = fc), stage, seed, and per
    metric its mean over the images and standard error over the images (`<metric>_se`), and n (images).
    An explanation that depends on what the network learned must lose its similarity as the weights go
    (`randomisation_passes`); one that ignores the weights (the image's intensity) keeps |rho| = SSIM = 1.
    """

    explain = as_explainer(explainer)
    model = model.eval()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    target = torch.as_tensor(target).long().expand(len(x))
    base = explain(model, x, target).detach()
    stages = randomisation_stages(model)
    rows = []
    for s in range(n_seeds):
        for mode in modes:
            if mode not in ("cascading", "independent"):
                raise ValueError(f"unknown randomisation mode {mode!r}: use 'cascading' or 'independent'")
            m = copy.deepcopy(model)
            for j, (name, _) in enumerate(stages):
                if mode == "independent" and j > 0:
                    m = copy.deepcopy(model)
                _reinit(randomisation_stages(m)[j][1], seed + 1000 * s + j)
                sim = map_similarity(base, explain(m.eval(), x, target))
                row = dict(mode=mode, step=j, stage=name, seed=s)
                for k in ("spearman_abs", "ssim", "spearman"):
                    v = sim[k][np.isfinite(sim[k])]
                    row[k] = float(v.mean()) if len(v) else float("nan")
                    row[k + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
                row["n"] = int(np.isfinite(sim["spearman_abs"]).sum())
                rows.append(row)
    return pd.DataFrame(rows)


def randomisation_summary(df):
    """Per (mode, step, stage) of a `randomisation_check` frame: each metric's mean over seeds, `<metric>_se`
    the mean over seeds of its standard error over images, and `<metric>_sd_seeds` its standard deviation
    over seeds (how much the re-initialisation itself matters)."""
    g = df.groupby(["mode", "step", "stage"], sort=False)
    out = g[["spearman_abs", "ssim", "spearman"]].mean()
    for k in ("spearman_abs", "ssim", "spearman"):
        out[k + "_se"] = g[k + "_se"].mean()
        out[k + "_sd_seeds"] = g[k].std(ddof=1)
    return out.reset_index()


def randomisation_passes(df, threshold: float = 0.5, mode: str = "cascading", stage: str | None = None,
                         metrics=("spearman_abs", "ssim")) -> bool:
    """Whether an explanation passes the randomisation check of a `randomisation_check` frame: at `stage`
    (default: the last one of `mode`, for cascading the fully random network) the mean over seeds and images
    of every metric in `metrics` is below `threshold`. Uses |rho|, so a sign-flipped copy of the original
    map (rho = -1) does NOT pass. Adebayo et al. give no threshold; 0.5 is a convention, read the curve. Its
    floor is not 0: maps of two unrelated random networks of one image still share the image's layout."""
    d = df[df["mode"] == mode]
    if d.empty:
        raise ValueError(f"the frame has no rows of mode {mode!r}")
    d = d[d.step == d.step.max()] if stage is None else d[d.stage == stage]
    if d.empty:
        raise ValueError(f"the frame has no stage {stage!r} in mode {mode!r}")
    vals = [d[k].mean() for k in metrics]
    return bool(all(np.isfinite(v) and v < threshold for v in vals))


# --------------------------------------------------------------------------- spread over samples


def spread_scores(maps: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, how much S maps of it (S x B x H x W: ensemble members, head samples, dropout samples)
    disagree: `std`, the mean over pixels of the standard deviation over samples (unbiased, as `aggregate`),
    and `relative`, that divided by the mean over pixels of |mean map| (scale-free; 0 for identical maps)."""
    maps = maps.float()
    if maps.shape[0] < 2:
        z = np.zeros(maps.shape[1])
        return dict(relative=z, std=z.copy())
    std = maps.std(0).mean((-2, -1))
    mag = maps.mean(0).abs().mean((-2, -1))
    return dict(relative=(std / mag.clamp_min(1e-12)).numpy(), std=std.numpy())


# --------------------------------------------------------------------------- the test set, batched


def score_maps(maps: dict[str, torch.Tensor], bones: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """Per-image pointing game, relevance mass and top-10 % IoU of each map against the bone masks."""
    return {name: dict(pointing=pointing_game(m, bones).numpy(), mass=relevance_mass(m, bones).numpy(),
                       iou=topk_iou(m, bones).numpy()) for name, m in maps.items()}


METRICS = ("pointing", "mass", "iou", "deletion_auc", "insertion_auc")


def deletion_sample(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of `n` of `n_total` images drawn without replacement (seeded): the images deletion and
    insertion curves, and other costly checks, are computed on."""
    n = min(int(n), n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def score_test_set(models, W: torch.Tensor, dataset, masks=None, n_deletion: int = 120, steps: int = 10,
                   batch: int = 128, seed: int = 0, target: str = "predicted", mean_masks: torch.Tensor | None = None):
    """Per-image scores of every explanation of `method_maps` and every baseline of `baseline_maps`.

    Returns a long-form pandas DataFrame, one row per (image, method, metric): `i` (the image's position in
    `dataset`, i.e. the row of `dataset.index`, whose `study` column gives the clusters of a study bootstrap),
    `method`, `metric`, `value`, and `target` ("predicted" or "true"). `summarise` turns it into the table of
    means and standard errors. Metrics: against `masks` = (bones, lesion) where given (phantom only):
    pointing, mass, iou over every image whose region (`region_masks`: bones, or findings) is not empty; without masks: deletion_auc and insertion_auc over `n_deletion`
    images drawn at random (seeded by `seed`; `deletion_sample`), not the first ones: a MURA index is sorted by
    body part, so the first images would all be elbows.

    `target="predicted"` (default, what a deployed model has): member 0's maps, the Laplace maps (head samples
    W, S x C x K, of member 0) and the baselines explain member 0's predicted class and are deleted with
    member 0; the ensemble's maps explain the ensemble's predicted class (argmax of the mean probability) and
    are deleted with the ensemble's predictive (`MeanProbs`). The bone masks are the image's own bones,
    whatever the class explained. `target="true"` explains the true class everywhere and appends
    " [true class]" to every method name.

    Baselines: random (seeded by `seed` and the batch), centre prior, image intensity, Sobel edges, and with
    `mean_masks` (C x H x W, `dataset_class_masks(train split)`) the training set's mean bone mask of the
    class member 0's maps explain (so it is given no more than they are). Spread maps (std over samples) are
    not explanations of a class and are not scored: see `explanation_spread`.
    """

    ens_model = MeanProbs(models)
    parts: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    chosen = np.zeros(len(dataset), bool)
    chosen[deletion_sample(len(dataset), n_deletion, seed)] = True
    start = 0
    for xb, yb in make_loader(dataset, batch):
        fmaps, probs = forward_members(models, xb)
        t0, te = explained_classes(target, probs, yb)
        maps = {k: v for k, v in maps_by_method(models, W, xb, fmaps, t0, te).items() if "spread" not in k}
        maps.update(baseline_maps(xb, t0, mean_masks, seed=seed + start))
        idx = np.arange(start, start + len(xb))
        if masks is not None:
            region = torch.as_tensor(np.asarray(masks[0][start:start + len(xb)]))
            has = region.flatten(1).any(1).numpy()  # an empty region (no finding in view) is not scored
            if has.any():
                for name, d in score_maps({k: v[has] for k, v in maps.items()}, region[has]).items():
                    parts += [(name, k, idx[has], v) for k, v in d.items()]
        k = torch.as_tensor(np.flatnonzero(chosen[start:start + len(xb)]))
        if len(k):
            ends = {"member 0": curve_ends(models[0], xb[k], t0[k]), "ensemble": curve_ends(ens_model, xb[k], te[k])}
            for name, m in maps.items():
                ens = name.startswith("ensemble")
                r = deletion_insertion(ens_model if ens else models[0], xb[k], m[k], (te if ens else t0)[k],
                                       steps=steps, ends=ends["ensemble" if ens else "member 0"])
                parts += [(name, key, idx[k.numpy()], r[key]) for key in ("deletion_auc", "insertion_auc")]
        start += len(xb)
    suffix = " [true class]" if target == "true" else ""  # a fixed class (abnormality task) keeps the names
    if not parts:
        return pd.DataFrame(columns=["i", "method", "metric", "value", "target"])
    return pd.DataFrame({
        "i": np.concatenate([p[2] for p in parts]),
        "method": np.concatenate([np.full(len(p[2]), p[0] + suffix, dtype=object) for p in parts]),
        "metric": np.concatenate([np.full(len(p[2]), p[1], dtype=object) for p in parts]),
        "value": np.concatenate([np.asarray(p[3], dtype=np.float64) for p in parts]),
        "target": target,
    })


def summarise(per_image):
    """Table of a long per-image frame (`score_test_set`): one row per method (in order of appearance), and
    per metric its mean over images and standard error (`<metric>_se`, std / sqrt(n), images treated as
    independent; a study bootstrap over `i` is the better interval)."""
    rows = []
    for method, d in per_image.groupby("method", sort=False):
        row = dict(method=method)
        present = list(d.metric.unique())
        for k in [m for m in METRICS if m in present] + [m for m in present if m not in METRICS]:
            v = d.value[d.metric == k].to_numpy()
            row[k] = v.mean()
            row[k + "_se"] = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def strongest_baselines(per_image, baselines=BASELINES) -> dict[str, str]:
    """Per metric, the baseline map with the best mean score (the lowest for `deletion_auc`)."""
    means = per_image[per_image.method.isin(baselines)].groupby(["metric", "method"]).value.mean()
    return {m: (means[m].idxmin() if m == "deletion_auc" else means[m].idxmax()) for m in means.index.levels[0]
            if m in means.index.get_level_values(0)}


def interval_table(per_image, groups, reference="centre prior", n_boot: int = 2000, seed: int = 0):
    """Table of a long per-image frame (`score_test_set`) with 95 % intervals: per method and metric the mean
    over images with its study-bootstrap interval (`groups[i]`: the study of image `i`), and the paired
    difference from the `reference` map on the same images and resamples (`delta`, `delta_low`,
    `delta_high`). One row per (method, metric); a map beats the reference only where the interval of its
    difference excludes zero on the right side (higher is better for every score but `deletion_auc`).
    `reference` is one method's name, or {metric: method}, e.g. `strongest_baselines(per_image)`. Ensemble maps'
    deletion and insertion curves are taken under the ensemble's predictive and the baselines' under member
    0's, so those differences would not be paired: they are left out."""

    groups = np.asarray(groups)
    wide = per_image.pivot_table(index="i", columns=["method", "metric"], values="value", sort=False)
    rows = []
    for method, metric in wide.columns:
        v = wide[(method, metric)]
        g = groups[v.index.to_numpy()]
        d = evidence.mean_interval(v.to_numpy(), g, n_boot, seed)
        row = dict(method=method, metric=metric, mean=d["estimate"], low=d["low"], high=d["high"])
        ref = reference.get(metric) if isinstance(reference, dict) else reference
        curve = metric in ("deletion_auc", "insertion_auc")
        if curve and method.startswith("ensemble") and not str(ref).startswith("ensemble"):
            ref = None  # its curve was taken under the ensemble's predictive, the reference's under member 0's
        if ref is not None and method != ref and (ref, metric) in wide.columns:
            dd = evidence.paired_mean_delta(v.to_numpy(), wide[(ref, metric)].to_numpy(), g, n_boot, seed)
            row.update(reference=ref, delta=dd["delta"], delta_low=dd["low"], delta_high=dd["high"])
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def spread_column(label: str, kind: str = "spread") -> str:
    """The column of `explanation_spread` holding `label`'s relative spread (`kind="spread"`) or mean std ("std")."""
    return f"{kind}: {label}"


def explanation_spread(models, heads: dict, dataset, batch: int = 128, target: str = "predicted"):
    """Per test image, how much its CAMs disagree under each source of samples in `heads`, in one pass over
    `dataset`. `heads`: {label: S x C x K samples of member 0's head (a Laplace posterior's, MC dropout's masks
    folded into the head: the posterior's `head_samples`), explaining member 0's predicted class; or None: the
    CAMs of the members themselves, explaining the ensemble's predicted class}.

    Returns a pandas DataFrame, one row per image: i, `spread_column(label)` (relative spread, `spread_scores`)
    and `spread_column(label, "std")` (mean std) per label, class_ensemble and class_member0 (the classes
    explained), p_max_ensemble and p_max_member0 (the confidence, the baseline any spread must beat at flagging
    errors), y (the true class: for evaluation only, never used by the maps unless `target="true"`) and target."""
    cols: dict[str, list] = {}
    start = 0
    for xb, yb in make_loader(dataset, batch):
        size = xb.shape[-2:]
        fmaps, probs = forward_members(models, xb)
        t0, te = explained_classes(target, probs, yb)
        out = dict(i=np.arange(start, start + len(xb)))
        for label, W in heads.items():
            if W is None:
                maps = torch.stack([upsample(cam_samples(f, m.fc.weight.detach(), te)[0], size)
                                    for m, f in zip(models, fmaps)])
            else:
                maps = upsample(cam_samples(fmaps[0], W, t0), size)
            sc = spread_scores(maps)
            out[spread_column(label)], out[spread_column(label, "std")] = sc["relative"], sc["std"]
        pe = probs.mean(0)
        out.update(class_ensemble=te.numpy(), class_member0=t0.numpy(), p_max_ensemble=pe.amax(1).numpy(),
                   p_max_member0=probs[0].amax(1).numpy(), y=torch.as_tensor(yb).numpy())
        for k, v in out.items():
            cols.setdefault(k, []).append(v)
        start += len(xb)
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    frame["target"] = target
    return frame
