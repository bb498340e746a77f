"""Explanations of single networks, posterior samples and ensembles; their aggregation and their scores.

Methods (each a small subclass of `Explainer` overriding `raw`, as in pytorch-grad-cam):

- `CAM`: class activation map of the global-average-pooled linear head, sum_k w_ck A_k(i, j). Its spatial
  mean is exactly the logit minus the bias (tests check it). `cam_samples` computes it for S head samples
  at once (one forward pass, one einsum), e.g. draws of the last-layer Laplace posterior.
- `GradCAM` for any convolutional layer: ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of d logit / d A_k.
  At the last convolution of a pooled linear head it equals ReLU(CAM) / (h w).
- `Gradient`, `SmoothGrad`, `IntegratedGradients`: input attributions through captum.
  `gradient_samples` gives input gradients for S head samples with one forward pass (torch.func.vjp
  vmapped over the samples).

Softmax heads are unchanged by adding one vector to every class's weights, and Laplace samples vary a lot in
that direction (the prior alone sets it). CAMs therefore explain the class *against the others* by default
(`center=True`: w_c - mean_c' w_c', the map of f_c - mean f), before any min or max over samples; without it
the aggregates show the prior, not the data.

Aggregation over samples or members (`aggregate`): mean, intersection (pixel-wise min), union (pixel-wise
max), standard deviation and coefficient of variation; normalise after aggregating, not before.

Scores: against masks (pointing game, relevance mass, IoU of the top-k % region), without masks (deletion
and insertion curves and their AUC), and the randomisation sanity check.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import PIXEL_MEAN, PIXEL_STD

BLACK = -PIXEL_MEAN / PIXEL_STD  # a black pixel on the network's input scale


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of (..., h, w) maps to `size` (H, W)."""
    lead = maps.shape[:-2]
    out = F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]).float(), size=size, mode="bilinear",
                        align_corners=False)
    return out.reshape(*lead, *size)


def center_weights(W: torch.Tensor) -> torch.Tensor:
    """w_c - mean over classes, on the class axis (-2) of (..., C, K) weights."""
    return W - W.mean(-2, keepdim=True)


def cam_samples(fmap: torch.Tensor, W: torch.Tensor, target: torch.Tensor, center: bool = True) -> torch.Tensor:
    """CAMs for S head samples at once: fmap B x K x h x w, W S x C x K (or C x K), target B -> S x B x h x w."""
    W = W.unsqueeze(0) if W.ndim == 2 else W
    if center:
        W = center_weights(W)
    w = W[:, target]  # S x B x K
    return torch.einsum("sbk,bkij->sbij", w, fmap)


def normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each map (over its last two axes) to [0, 1]."""
    lo = maps.amin((-2, -1), keepdim=True)
    hi = maps.amax((-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


def aggregate(maps: torch.Tensor, dim: int = 0) -> dict[str, torch.Tensor]:
    """Mean, intersection (min), union (max), standard deviation and coefficient of variation over `dim`."""
    mean = maps.mean(dim)
    std = maps.std(dim) if maps.shape[dim] > 1 else torch.zeros_like(mean)
    floor = 1e-3 * mean.abs().amax((-2, -1), keepdim=True).clamp_min(1e-12)  # keeps cv finite where mean ~ 0
    return dict(mean=mean, intersection=maps.amin(dim), union=maps.amax(dim), std=std,
                cv=std / (mean.abs() + floor))


# --------------------------------------------------------------------------- single-model explainers


class Explainer:
    """Base: `explain(model, x, target)` -> B x H x W maps at the input's resolution."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    def raw(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target) -> torch.Tensor:
        target = torch.as_tensor(target, device=x.device).long().expand(len(x))
        m = self.raw(x, target)
        return upsample(m, x.shape[-2:]) if m.shape[-2:] != x.shape[-2:] else m


class CAM(Explainer):
    """Class activation map of the pooled linear head (centred over classes unless center=False)."""

    def __init__(self, model, center: bool = True):
        super().__init__(model)
        self.center = center

    def raw(self, x, target):
        with torch.no_grad():
            return cam_samples(self.model.features(x), self.model.fc.weight, target, self.center)[0]


class GradCAM(Explainer):
    """Grad-CAM at `layer` (default: the model's last feature module)."""

    def __init__(self, model, layer: torch.nn.Module | None = None):
        super().__init__(model)
        self.layer = layer if layer is not None else model.features

    def raw(self, x, target):
        store = {}
        h = self.layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            x = x.detach().requires_grad_(True)
            logits = self.model(x)
            a = store["a"]
            g = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)[0]
        finally:
            h.remove()
        alpha = g.mean((-2, -1), keepdim=True)
        return torch.relu((alpha * a).sum(1)).detach()


class _Captum(Explainer):
    def make(self):
        raise NotImplementedError

    def raw(self, x, target):
        attr = self.make().attribute(x.detach().requires_grad_(True), target=target, **self.kwargs)
        return attr.detach().abs().sum(1)  # magnitude, summed over the (single) channel


class Gradient(_Captum):
    """|d logit_c / d x| (captum's Saliency)."""

    kwargs: dict = {}

    def make(self):
        from captum.attr import Saliency

        return Saliency(self.model)


class SmoothGrad(_Captum):
    """Mean input gradient over noisy copies (captum's NoiseTunnel over Saliency)."""

    def __init__(self, model, n: int = 16, stdev: float = 0.15, seed: int = 0):
        super().__init__(model)
        self.kwargs = dict(nt_type="smoothgrad", nt_samples=n, stdevs=stdev)
        self.seed = seed

    def make(self):
        from captum.attr import NoiseTunnel, Saliency

        torch.manual_seed(self.seed)
        return NoiseTunnel(Saliency(self.model))


class IntegratedGradients(_Captum):
    """Integrated gradients from a black image (captum)."""

    def __init__(self, model, steps: int = 32):
        super().__init__(model)
        self.kwargs = dict(baselines=BLACK, n_steps=steps)

    def make(self):
        from captum.attr import IntegratedGradients as IG

        return IG(self.model)


METHODS = {"CAM": CAM, "Grad-CAM": GradCAM, "gradient": Gradient, "SmoothGrad": SmoothGrad,
           "integrated gradients": IntegratedGradients}


# --------------------------------------------------------------------------- posterior samples and ensembles


def laplace_cams(model, x: torch.Tensor, W: torch.Tensor, target, center: bool = True) -> torch.Tensor:
    """Upsampled CAMs (S x B x H x W) of S sampled heads W (S x C x K): one forward pass."""
    target = torch.as_tensor(target).long().expand(len(x))
    with torch.no_grad():
        fmap = model.eval().features(x)
    return upsample(cam_samples(fmap, W, target, center), x.shape[-2:])


def laplace_cams_loop(model, x, W, target, center: bool = True) -> torch.Tensor:
    """The same, one forward pass per sample (the naive way; for the benchmark and the tests)."""
    out = []
    for w in W:
        m = model.eval()
        with torch.no_grad():
            fmap = m.features(x)
        out.append(upsample(cam_samples(fmap, w, torch.as_tensor(target).long().expand(len(x)), center)[0],
                            x.shape[-2:]))
    return torch.stack(out)


def gradient_samples(model, x: torch.Tensor, W: torch.Tensor, target, center: bool = True) -> torch.Tensor:
    """|d (w_s,c . phi(x)) / d x| for S sampled heads, S x B x H x W, from one forward pass (vjp vmapped over
    the samples). The bias does not depend on x, so only W matters."""
    target = torch.as_tensor(target).long().expand(len(x))
    W = center_weights(W) if center else W
    model = model.eval()
    _, vjp = torch.func.vjp(model.embed, x.detach())
    cot = W[:, target]  # S x B x K
    grads = torch.vmap(lambda v: vjp(v)[0])(cot)  # S x B x 1 x H x W
    return grads.abs().sum(2).detach()


def member_maps(models, x: torch.Tensor, target, method: str = "CAM") -> torch.Tensor:
    """One map per ensemble member: M x B x H x W."""
    return torch.stack([METHODS[method](m)(x, target) for m in models])


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


# --------------------------------------------------------------------------- scores without masks


@torch.no_grad()
def deletion_insertion(model, x: torch.Tensor, maps: torch.Tensor, target, steps: int = 16,
                       batch: int = 512) -> dict[str, np.ndarray]:
    """Probability of `target` as the most relevant pixels are removed (deletion: set to black) or revealed
    on a black image (insertion), over `steps` + 1 equal fractions; curves B x (steps + 1) and their AUCs
    (trapezoid over the fraction). A faithful map gives a low deletion and a high insertion AUC."""
    model = model.eval()
    b, _, h, w = x.shape
    target = torch.as_tensor(target).long().expand(b)
    order = maps.reshape(b, -1).argsort(1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand(b, -1)).reshape(b, 1, h, w)
    fracs = torch.linspace(0, 1, steps + 1)
    curves = {}
    for kind in ("deletion", "insertion"):
        probs = []
        for f in fracs:
            shown = rank < int(round(float(f) * h * w))  # the top fraction f of pixels
            keep = ~shown if kind == "deletion" else shown
            xi = torch.where(keep, x, torch.full_like(x, BLACK))
            p = torch.cat([torch.softmax(model(xi[i:i + batch]), 1) for i in range(0, b, batch)])
            probs.append(p.gather(1, target[:, None]).squeeze(1))
        curves[kind] = torch.stack(probs, 1).numpy()
    f = fracs.numpy()
    return dict(fractions=f, deletion=curves["deletion"], insertion=curves["insertion"],
                deletion_auc=np.trapezoid(curves["deletion"], f, axis=1),
                insertion_auc=np.trapezoid(curves["insertion"], f, axis=1))


def randomisation_check(model, x: torch.Tensor, target, method: str = "CAM", seed: int = 0) -> list[dict]:
    """Cascading randomisation (Adebayo et al. 2018): re-initialise the head, then the feature blocks from the
    last backwards, and give the Spearman rank correlation of each explanation with the original's."""
    import copy

    from scipy.stats import spearmanr

    torch.manual_seed(seed)
    base = METHODS[method](model)(x, target).flatten(1).numpy()
    m = copy.deepcopy(model).eval()
    stages = [("head", m.fc)] + [(f"features[{i}:]", mod) for i, mod in reversed(list(enumerate(m.features)))
                                 if any(p.requires_grad for p in mod.parameters(recurse=False))]
    out = []
    for name, mod in stages:
        for sub in mod.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        maps = METHODS[method](m)(x, target).flatten(1).numpy()
        rho = [spearmanr(a, b).statistic for a, b in zip(base, maps)]
        out.append(dict(randomised=name, spearman=float(np.nanmean(rho)),
                        spearman_se=float(np.nanstd(rho, ddof=1) / np.sqrt(np.isfinite(rho).sum()))))
    return out


# --------------------------------------------------------------------------- the test set, batched


class MeanProbs(torch.nn.Module):
    """An ensemble as one module: log of the members' mean probability (softmax of it is that mean)."""

    def __init__(self, models):
        super().__init__()
        self.members = torch.nn.ModuleList(models)

    def forward(self, x):
        return torch.stack([torch.softmax(m(x), -1) for m in self.members]).mean(0).clamp_min(1e-12).log()


def method_maps(models, W: torch.Tensor, x: torch.Tensor, target) -> dict[str, torch.Tensor]:
    """The maps notebook 05 scores, for a batch (B x H x W each): member 0's CAM and input gradient, and the
    mean / intersection / union of Laplace CAMs (S samples of member 0's head) and of the members' CAMs."""
    maps = {"MAP CAM (member 0)": CAM(models[0])(x, target), "MAP gradient (member 0)": Gradient(models[0])(x, target)}
    for label, stack in (("Laplace CAM", laplace_cams(models[0], x, W, target)),
                         ("ensemble CAM", member_maps(models, x, target))):
        agg = aggregate(stack)
        for k in ("mean", "intersection", "union"):
            maps[f"{label}, {k}"] = agg[k]
        maps[f"{label}, spread (std)"] = agg["std"]
    return maps


def score_maps(maps: dict[str, torch.Tensor], bones: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """Per-image pointing game, relevance mass and top-10 % IoU of each map against the bone masks."""
    return {name: dict(pointing=pointing_game(m, bones).numpy(), mass=relevance_mass(m, bones).numpy(),
                       iou=topk_iou(m, bones).numpy()) for name, m in maps.items()}


def score_test_set(models, W: torch.Tensor, dataset, masks=None, n_deletion: int = 120, steps: int = 10,
                   batch: int = 128, seed: int = 0):
    """Table 05-1: for every map of `method_maps` (and a random reference), the mean and standard error over
    the test images of the mask scores (pointing, mass, iou; where `masks` = (bones, lesion) are given) and of
    the deletion/insertion AUCs over the first `n_deletion` images (ensemble maps scored with the ensemble's
    predictive, the others with member 0). Maps explain the true class."""
    import pandas as pd

    from .data import make_loader

    ens_model = MeanProbs(models)
    scores: dict[str, dict[str, list]] = {}
    start = 0
    for xb, yb in make_loader(dataset, batch):
        maps = method_maps(models, W, xb, yb)
        maps["random (reference)"] = torch.rand(len(xb), *xb.shape[-2:],
                                                generator=torch.Generator().manual_seed(seed + start))
        if masks is not None:
            bones = torch.as_tensor(masks[0][start:start + len(xb)])
            for name, d in score_maps(maps, bones).items():
                for k, v in d.items():
                    scores.setdefault(name, {}).setdefault(k, []).append(v)
        if start < n_deletion:
            k = min(len(xb), n_deletion - start)
            for name, m in maps.items():
                if "spread" in name:
                    continue
                r = deletion_insertion(ens_model if name.startswith("ensemble") else models[0], xb[:k], m[:k],
                                       yb[:k], steps=steps)
                for key in ("deletion_auc", "insertion_auc"):
                    scores.setdefault(name, {}).setdefault(key, []).append(r[key])
        start += len(xb)
    rows = []
    for name, d in scores.items():
        if "deletion_auc" not in d:  # the spread maps: not explanations of the class themselves
            continue
        row = dict(method=name)
        for k, v in d.items():
            v = np.concatenate(v)
            row[k], row[k + "_se"] = v.mean(), v.std(ddof=1) / np.sqrt(len(v))
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def member_spread(models, dataset, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per test image: the relative spread of the members' CAMs of the true class (mean std over mean
    magnitude) and the ensemble's probabilities (N x C)."""
    from .data import make_loader

    spread, probs = [], []
    for xb, yb in make_loader(dataset, batch):
        st = aggregate(member_maps(models, xb, yb))
        spread.append((st["std"].mean((-2, -1)) / st["mean"].abs().mean((-2, -1)).clamp_min(1e-9)).numpy())
        probs.append(torch.stack([torch.softmax(m(xb), 1) for m in models]).mean(0).numpy())
    return np.concatenate(spread), np.concatenate(probs)
