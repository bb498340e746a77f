"""Figures of the explanation chapter (notebook 05): maps overlaid on test images, each member's prediction and
CAM on rotated images, the randomisation check and the images whose explanations disagree most. Each function
returns a matplotlib figure; the maps come from `explain`, the scores from `explain.scores`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils.chapters.plots import MAP_SCALE, map_colorbar, overlay_grid
from utils.chapters.robustness import rotate
from utils.data.images import PIXEL_MEAN, PIXEL_STD
from utils.explain.methods import aggregate, member_maps, normalize


def images(x: torch.Tensor) -> np.ndarray:
    """The first channel of a standardised batch (B x C x H x W) back on the image scale (B x H x W)."""
    return (x[:, 0] * PIXEL_STD + PIXEL_MEAN).numpy()


def overlay(x: torch.Tensor, titles, maps_by_col: dict, title: str, cbar_label: str = f"map value, {MAP_SCALE}"):
    """Each image of `x` followed by the maps of every column (each B x H x W) overlaid (`plots.overlay_grid`:
    one colour scale and bar, `cbar_label`)."""
    return overlay_grid(images(x), titles, maps_by_col, title, cbar_label=cbar_label)


def member_cams(x: torch.Tensor, titles, member: torch.Tensor, mean: torch.Tensor):
    """Each member's CAM (`member`: M x B x H x W) and their mean, one column each (figure 05-1)."""
    cols = {**{f"member {m}": member[m] for m in range(len(member))}, "ensemble mean": mean}
    return overlay(x, titles, cols, "CAM of the ensemble's predicted class for each member, and their mean",
                   f"CAM, {MAP_SCALE}")


def aggregated_cams(x: torch.Tensor, titles, aggregates: dict, title: str,
                    kinds=("mean", "intersection", "union", "std")):
    """Mean, intersection, union and std (`explain.aggregate`) of each of `aggregates` ({name: aggregate}),
    one column each, named "<name> <kind>" (figure 05-2)."""
    cols = {f"{name} {k}": agg[k] for name, agg in aggregates.items() for k in kinds}
    return overlay(x, titles, cols, title, f"aggregate map, {MAP_SCALE}")


def rotated_members(models, x: torch.Tensor, y, classes, angle: float = 45.0):
    """The images rotated by `angle` degrees (bilinear, as the training augmentation): per row the rotated
    image with its true class, each member's CAM of the ensemble's predicted class titled with the member's
    own prediction and confidence, and the ensemble's predictive distribution as bars (figure 05-4). The CAMs
    share one colour scale (each min-max normalised to [0, 1]), with one colour bar below."""

    xr = rotate(x, angle)
    show = images(xr)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(xr), 1) for m in models])  # M x B x C
    probs_ens = probs.mean(0)
    maps = member_maps(models, xr, probs_ens.argmax(1))
    n, m = len(x), len(models)
    fig, axes = plt.subplots(n, m + 2, figsize=(1.9 * (m + 2), 2.05 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(show[i], cmap="gray")
        axes[i, 0].set_title(f"true: {classes[y[i]]}", fontsize=8)
        for j in range(m):
            p = probs[j, i]
            axes[i, j + 1].imshow(show[i], cmap="gray")
            shown = axes[i, j + 1].imshow(normalize(maps[j, i]).numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[i, j + 1].set_title(f"m{j}: {classes[p.argmax()]} {p.max():.0%}", fontsize=7)
        pe = probs_ens[i]
        axes[i, -1].bar(range(len(classes)), pe.numpy(), color="tab:blue")
        axes[i, -1].set_title(f"ensemble: {classes[pe.argmax()]} {pe.max():.0%}", fontsize=7)
        axes[i, -1].set_xticks(range(len(classes)), [c[:3] for c in classes], fontsize=6, rotation=90)
        axes[i, -1].set_ylim(0, 1)
    for ax in axes[:, :-1].ravel():
        ax.axis("off")
    fig.suptitle(f"Rotated by {angle:g} degrees: each member's prediction and CAM (of the ensemble's class)", y=1.0)
    map_colorbar(fig, shown, f"CAM, {MAP_SCALE}")
    return fig


def stage_names(stages) -> dict[str, str]:
    """Readable names of `explain.scores.randomisation_stages`' code names: `fc` is the head, and the blocks
    `features.<i>` are numbered from the image up, "block 1 (first conv)" to "block n (last conv)"; any other
    name is kept."""
    stages = list(dict.fromkeys(stages))
    blocks = sorted((int(s.split(".")[1]), s) for s in stages
                    if s.startswith("features.") and s.split(".")[1].isdigit())
    names = {s: s for s in stages} | ({"fc": "head (fc)"} if "fc" in stages else {})
    for rank, (_, s) in enumerate(blocks, 1):
        where = " (last conv)" if rank == len(blocks) else " (first conv)" if rank == 1 else ""
        names[s] = f"block {rank}{where}"
    return names


def randomisation(summary, floor: float | None = None):
    """Similarity (|Spearman rho| and SSIM, mean over seeds, bars: sd over seeds) of the randomised network's
    maps to the trained one's per stage (named by `stage_names`), cascading (left) and independent (right),
    from `explain.scores.randomisation_summary` (figure 05-5). `floor`: the |Spearman rho| of the trained
    CAM with maps blind to the network (`explanations.randomisation_floor`), drawn dashed where given."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    names = stage_names(summary["stage"])
    for ax, mode in zip(axes, ("cascading", "independent")):
        g = summary[summary["mode"] == mode]
        for col, label in (("spearman_abs", "|Spearman ρ|"), ("ssim", "SSIM")):
            ax.errorbar(range(len(g)), g[col], yerr=g[col + "_sd_seeds"], fmt="o-", capsize=3, label=label)
        ax.set_xticks(range(len(g)), [names[s] for s in g["stage"]], rotation=30, ha="right", fontsize=8)
        ax.axhline(1, color="0.5", lw=0.8, ls=":")
        ax.axhline(0, color="0.5", lw=0.8)
        if floor is not None:
            ax.axhline(floor, color="tab:red", lw=1, ls="--",
                       label=f"floor: maps blind to the network (|Spearman ρ| {floor:.2f})")
        how = " (head first, then down)" if mode == "cascading" else " (one layer at a time)"
        ax.set(ylim=(-1.02, 1.05), title=f"{mode} randomisation{how}", xlabel="randomised stage")
    axes[0].set_ylabel("similarity to the trained\nnetwork's CAM")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def uncertain_explanations(models, dataset, y, probs, spread, classes, n: int = 6):
    """The `n` test images of `dataset` with the largest explanation `spread` (per image), one row each: the
    image titled with the true class, the ensemble's prediction (argmax of `probs`, N x C), whether it was right
    and the spread, then each member's CAM of the ensemble's predicted class, their mean and their per-pixel
    standard deviation (one colour scale and bar; figure 05-6)."""
    spread, pred, y = np.asarray(spread), np.asarray(probs).argmax(1), np.asarray(y)
    top = np.argsort(-spread)[:n]
    x = torch.stack([dataset[int(i)][0] for i in top])
    target = torch.as_tensor(pred[top])
    member = member_maps(models, x, target)
    agg = aggregate(member)
    cols = {**{f"member {m}": member[m] for m in range(len(member))}, "mean": agg["mean"], "std over members": agg["std"]}
    titles = [f"{classes[y[i]].lower()} → {classes[pred[i]].lower()} ({'right' if pred[i] == y[i] else 'WRONG'}), "
              f"spread {spread[i]:.2f}" for i in top]
    return overlay(x, titles, cols, f"The {n} test images whose members' CAMs disagree most")
