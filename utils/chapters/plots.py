"""Shared plotting and result-writing helpers for the notebooks."""

from __future__ import annotations

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from utils import data


def image_grid(images, titles=None, ncols: int = 4, size: float = 2.4, cmap: str = "gray"):
    """A grid of images (2D arrays shown in `cmap`, or RGB) with optional titles; returns the figure."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles or [""] * n):
        ax.imshow(img, cmap=cmap if np.ndim(img) == 2 else None)
        ax.set_title(t, fontsize=8)
    fig.tight_layout()
    return fig


MAP_SCALE = "each map min-max normalised to [0, 1]"


def map_colorbar(fig, mappable, label: str, space_in: float = 0.8):
    """Lay `fig` out (tight) above a strip `space_in` inches high and put one horizontal colour bar of
    `mappable`, labelled `label`, in that strip: the one colour scale of a grid of maps; returns the bar."""
    b = min(0.35, space_in / fig.get_figheight())
    fig.tight_layout(rect=(0, b, 1, 1))
    h = min(0.12 / fig.get_figheight(), 0.25 * b)
    cax = fig.add_axes((0.3, 0.6 * b, 0.4, h))
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def overlay_grid(images, titles, maps_by_col: dict, title: str, size: float = 1.6,
                 cbar_label: str = f"map value, {MAP_SCALE}"):
    """Rows of images (2D, in [0, 1]), each followed by the maps of every column overlaid (each map min-max
    normalised to [0, 1] on its own, jet colours), all on one colour scale, 0 to 1, with one colour bar
    (`cbar_label`) below; returns the figure."""
    cols = list(maps_by_col)
    n = len(images)
    fig, axes = plt.subplots(n, len(cols) + 1, figsize=(size * (len(cols) + 1), (size + 0.05) * n), squeeze=False)
    shown = None
    for i in range(n):
        axes[i, 0].imshow(images[i], cmap="gray")
        axes[i, 0].set_title(titles[i], fontsize=8)
        for j, c in enumerate(cols):
            m = np.asarray(maps_by_col[c][i], float)
            axes[i, j + 1].imshow(images[i], cmap="gray")
            shown = axes[i, j + 1].imshow((m - m.min()) / (m.max() - m.min() + 1e-12), cmap="jet", alpha=0.45,
                                          vmin=0, vmax=1)
            if i == 0:
                axes[i, j + 1].set_title(c, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, y=1.0)
    if shown is not None:
        map_colorbar(fig, shown, cbar_label)
    else:
        fig.tight_layout()
    return fig


def plot_prior_search(ax_lml, ax_nll, grid, lml, val_nll, marglik_delta: float, training_delta: float | None = None,
                      grid_delta: float | None = None, grid_bracketed: bool = True, title: str = "",
                      min_span: float = 0.01, min_rel_span: float = 1e-3):
    """The prior-precision search of one fit, readable: top, how far the log marginal likelihood lies below
    its maximum over the grid (nats, never negative: an axis from 0, linear below 1 nat and logarithmic above,
    so the optimum itself (0), the flat top and the collapse at large δ all show); bottom, the
    validation NLL of the predictive, on a linear axis without an offset that spans at least `min_span` nats
    and `min_rel_span` of its level, so a negligible change does not fill the panel. Both against δ (> 0) on
    a log axis, with the marginal-likelihood optimum (red, dashed), the grid search's choice (green,
    dash-dot; 'edge' when the search did not bracket an optimum) and the prior the training implied (grey,
    dotted)."""
    grid, lml, val_nll = (np.asarray(a, float) for a in (grid, lml, val_nll))
    pos = grid > 0  # a precision: only positive values have a place on the log axis
    below = lml.max() - lml
    ax_lml.plot(grid[pos], below[pos], "-", color="tab:blue")
    ax_nll.plot(grid[pos], val_nll[pos], "-", color="tab:green")
    for ax in (ax_lml, ax_nll):
        ax.axvline(marglik_delta, color="tab:red", ls="--", label=f"marginal likelihood: δ = {marglik_delta:.3g}")
        if grid_delta is not None:
            ax.axvline(grid_delta, color="tab:green", ls="-.",
                       label=f"grid search on val. NLL: δ = {grid_delta:.3g}" + ("" if grid_bracketed else " (edge)"))
        if training_delta:
            ax.axvline(training_delta, color="0.5", ls=":", label=f"training prior Nλ = {training_delta:.3g}")
        ax.set_xscale("log")
    # Linear below 1 nat, so the maximum itself (0) shows; the axis starts at 0, as the quantity does (left to
    # itself, a symmetric-log axis pads below 0 with decades of impossible negative values).
    ax_lml.set_yscale("symlog", linthresh=1.0)
    peak = float(np.nanmax(below[pos], initial=0.0))
    ax_lml.set_ylim(0, 3 * peak if peak > 1 else 1.5)  # set, not left to autoscaling, which cut the collapse off
    ax_lml.set(ylabel="nats below the maximum\nof the log marginal likelihood\n(linear below 1, log above)", title=title)
    ax_nll.ticklabel_format(axis="y", useOffset=False, style="plain")
    v = val_nll[pos][np.isfinite(val_nll[pos])]
    if len(v):
        lo, hi = float(v.min()), float(v.max())
        span = max(min_span, min_rel_span * abs((lo + hi) / 2))
        if hi - lo < span:  # pad a negligible change to `span`, centred, so it looks as small as it is
            mid = (lo + hi) / 2
            ax_nll.set_ylim(mid - span / 2, mid + span / 2)
    ax_nll.set(xlabel="prior precision δ", ylabel="validation NLL (nats)")
    ax_lml.legend(fontsize=7, loc="upper left")


# --------------------------------------------------------------------------- notebook 01


def member_card(model, meta: dict) -> dict:
    """One trained member described: architecture, sizes, optimiser, implied prior, epochs, time."""
    return {
        "architecture": meta["arch"], "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
        "last-layer parameters": sum(p.numel() for p in model.fc.parameters()),
        "image size (px)": meta["image_size"], "training images N": meta["n_train"],
        "optimizer": f"{meta['optimizer']}, lr {meta['lr']}, weight decay λ = {meta['weight_decay']}",
        "implied prior precision Nλ": meta["prior_precision"],
        "epochs run / best (val NLL)": f"{meta['epochs_run']} / {meta['best_epoch']}",
        "training time (s)": round(meta["train_seconds"], 1), "device": meta["device"],
    }


def learning_curves(h, best_epoch: int):
    """Loss and accuracy per epoch: training (augmented, running mean over the epoch; and as it is, in eval mode,
    at the epoch's end) and validation, with the kept checkpoint."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    clean = "train_eval_nll" in h  # histories written before the clean training figures lack them
    axes[0].plot(h.epoch, h.train_loss, "o-", label="train (augmented, running)", alpha=0.5 if clean else 1)
    if clean:
        axes[0].plot(h.epoch, h.train_eval_nll, "o-", label="train (as it is, end of epoch)")
    axes[0].plot(h.epoch, h.val_nll, "o-", label="validation")
    axes[0].axvline(best_epoch, color="0.6", ls=":", label="kept checkpoint")
    axes[0].set(xlabel="epoch", ylabel="NLL (nats per image)", title="Loss")
    axes[1].plot(h.epoch, 100 * h.train_acc, "o-", label="train (augmented, running)", alpha=0.5 if clean else 1)
    if clean:
        axes[1].plot(h.epoch, 100 * h.train_eval_acc, "o-", label="train (as it is, end of epoch)")
    axes[1].plot(h.epoch, 100 * h.val_acc, "o-", label="validation")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def confusion(y, pred, classes):
    """Confusion matrix with counts, coloured by the share of the true class."""
    k = len(classes)
    cm = confusion_matrix(y, pred, labels=range(k))
    fig, ax = plt.subplots(figsize=(6, 5))
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):  # white on cells darker than mid-grey (luminance of the cell's colour), else black
            lum = float(np.dot(im.cmap(im.norm(share[i, j]))[:3], (0.2126, 0.7152, 0.0722)))
            ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8, color="white" if lum < 0.5 else "black")
    ax.set_xticks(range(k), [c.lower() for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), [c.lower() for c in classes])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix, test split (colour: share of the true class)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def confident_mistakes(probs, y, index, classes, n: int = 8, ncols: int = 4):
    """The n most confident wrong predictions, with the phantom's masks outlined where it has them."""
    conf, pred = probs.max(1), probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong])][:n]
    rows = index.iloc[worst]
    return image_grid([overlay(data.read_image(p), data.read_masks(p)) for p in rows.path],
                      [f"true {classes[y[i]].lower()}, said {classes[pred[i]].lower()} ({conf[i]:.0%})"
                       for i in worst], ncols=ncols)


def top_confusions(y, pred, classes, n: int = 3) -> list[tuple[str, str, int, float]]:
    """The `n` most frequent (true, predicted) confusions off the diagonal: (true, predicted, count, share of
    the true class's test images)."""
    k = len(classes)
    cm = confusion_matrix(y, pred, labels=range(k))
    off = [(cm[i, j], i, j) for i in range(k) for j in range(k) if i != j and cm[i, j] > 0]
    return [(classes[i].lower(), classes[j].lower(), int(c), c / max(cm[i].sum(), 1))
            for c, i, j in sorted(off, reverse=True)[:n]]


def confusion_caption(y, pred, classes) -> str:
    """Figure 01-2's caption, from the matrix it shows."""
    top = top_confusions(y, pred, classes)
    said = "; ".join(f"{t} said {p}: {c} ({s:.0%} of {t})" if s >= 0.01 else f"{t} said {p}: {c} ({s:.1%} of {t})"
                     for t, p, c, s in top) or "none"
    return ("**Figure 01-2.** Confusion matrix of the MAP network (member 0) on the test split: counts in the "
            f"cells, colour the share of each true class. The most frequent confusions: {said}.")


def mistakes_caption(probs, y, classes, n: int = 8) -> str:
    """Figure 01-3's caption, from the images it shows (`confident_mistakes`)."""
    conf, pred = probs.max(1), probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong])][:n]
    pairs = pd.Series([f"true {classes[y[i]].lower()}, said {classes[pred[i]].lower()}" for i in worst])
    counts = "; ".join(f"{k} ({v})" for k, v in pairs.value_counts().items())
    return (f"**Figure 01-3.** The {len(worst)} most confidently misclassified test images, with the true class, "
            f"the predicted class and the predicted probability (phantom masks outlined as in notebook 00): "
            f"{counts}; confidence {conf[worst].min():.0%} to {conf[worst].max():.0%}.")


# --------------------------------------------------------------------------- notebook 02


def probit_vs_mc(conf: dict[str, dict[str, np.ndarray]]):
    """Confidence of each probit predictive against Monte Carlo's, one panel per Hessian structure
    (conf: structure -> predictive name -> confidences, as `chapters.laplace.probit_vs_mc` returns them)."""
    fig, axes = plt.subplots(1, len(conf), figsize=(5 * len(conf), 4.2), squeeze=False)
    for ax, (s, c) in zip(axes[0], conf.items()):
        mc = next(v for k, v in c.items() if k.startswith("MC"))
        for name, v in c.items():
            if not name.startswith("MC"):
                ax.scatter(mc, v, s=6, alpha=0.5, label=name)
        ax.plot([0, 1], [0, 1], color="0.4", lw=0.8)
        ax.set(xlabel="confidence, Monte Carlo", ylabel="confidence, probit", title=f"{s} Hessian, member 0",
               xlim=(0, 1.02), ylim=(0, 1.02))
        ax.legend(fontsize=8)
    return fig


def overlay(img: np.ndarray, masks) -> np.ndarray:
    """RGB rendering of a radiograph with the phantom's masks outlined: bones green, fracture red, hardware
    yellow, cast blue, degenerative change purple."""
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if masks is None:
        return rgb
    bones, lesion = masks
    lw = max(1, img.shape[0] // 200)
    for m, colour in ((bones, (60, 220, 60)), (lesion & 8, (200, 80, 255)), (lesion & 4, (80, 160, 255)),
                      (lesion & 2, (255, 200, 0)), (lesion & 1, (255, 50, 50))):
        cs, _ = cv2.findContours(np.asarray(m > 0, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, cs, -1, colour, lw)
    return rgb
