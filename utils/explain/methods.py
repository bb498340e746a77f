"""Explainers: maps of single networks, posterior samples and ensembles, and their aggregation.

Methods (each a small subclass of `Explainer` overriding `raw`, as in pytorch-grad-cam):

- `CAM`: class activation map of the global-average-pooled linear head, sum_k w_ck A_k(i, j). Its spatial
  mean is exactly the logit minus the bias (tests check it). `cam_samples` computes it for S head samples
  at once (one forward pass, one einsum), e.g. draws of the last-layer Laplace posterior.
- `GradCAM` for any convolutional layer: ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of d logit / d A_k.
  At the last convolution of a pooled linear head alpha_k = w_ck / (h w), so Grad-CAM *before its ReLU*
  (`relu=False`) is exactly CAM / (h w), and with it ReLU(CAM) / (h w).
- `Gradient`, `SmoothGrad`, `IntegratedGradients`: input attributions through captum.
  `gradient_samples` gives input gradients for S head samples with one forward pass (torch.func.vjp
  vmapped over the samples).

Softmax heads are unchanged by adding one vector to every class's weights, and Laplace samples vary a lot in
that direction (the prior alone sets it). CAMs therefore explain the class *against the others* by default
(`center=True`: w_c - mean_c' w_c', the map of f_c - mean f), before any min or max over samples; without it
the aggregates show the prior, not the data.

**An identity, not a finding.** The CAM is linear in the head's weights W. For any distribution over the
linear head only (last-layer Laplace, MC dropout on the pooled features, a Gaussian around W_MAP), the mean
CAM over S samples W_1..W_S is *exactly* the CAM of the mean weights: mean_s CAM(W_s) = CAM(mean_s W_s), for
every finite S; as the sample mean tends to W_MAP (Laplace, whose mean is W_MAP; dropout, with the 1/(1-p)
scaling) it tends to the MAP CAM, and antithetic draws W_MAP +- E give the MAP CAM exactly. The same holds
for last-layer Grad-CAM before its ReLU. So "the Laplace mean CAM looks like the MAP CAM" says nothing about
the posterior; what a head posterior does change is the per-pixel spread (std, and the min / max aggregates),
which `explain.scores.spread_scores` measures. Ensembles differ in their features too, so their mean is
not an identity.

**No labels.** A deployed model does not know the true class, so everything here explains the *predicted*
class by default: a map explains the class its own predictor predicts (member 0's argmax for member 0's maps
and for Laplace / dropout head samples of member 0; the argmax of the members' mean probabilities for
ensemble maps; `predicted_classes`). `target="true"` keeps the true class for questions that need it, and is
labelled as such.

MC-dropout head samples (`mc_dropout_heads`: W * m_s / (1 - p) with Bernoulli masks m_s on the features)
sit beside the Laplace head samples.

Aggregation over samples or members (`aggregate`): mean, intersection (pixel-wise min), union (pixel-wise
max), standard deviation and coefficient of variation; normalise after aggregating, not before.

Scoring the maps (against masks, deletion / insertion, baselines, randomisation check, spread over samples)
is in `explain.scores`, which imports from here (never the other way round).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients as IG
from captum.attr import NoiseTunnel, Saliency

from utils.data.images import PIXEL_MEAN, PIXEL_STD

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
    """Grad-CAM at `layer` (default: the model's last feature module); `relu=False` gives the map before
    Grad-CAM's ReLU (at the last convolution of a pooled linear head: exactly the uncentred CAM / (h w))."""

    def __init__(self, model, layer: torch.nn.Module | None = None, relu: bool = True):
        super().__init__(model)
        self.layer = layer if layer is not None else model.features
        self.relu = relu

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
        m = (alpha * a).sum(1).detach()
        return torch.relu(m) if self.relu else m


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
        return Saliency(self.model)


class SmoothGrad(_Captum):
    """Mean input gradient over noisy copies (captum's NoiseTunnel over Saliency)."""

    def __init__(self, model, n: int = 16, stdev: float = 0.15, seed: int = 0):
        super().__init__(model)
        self.kwargs = dict(nt_type="smoothgrad", nt_samples=n, stdevs=stdev)
        self.seed = seed

    def make(self):
        torch.manual_seed(self.seed)
        return NoiseTunnel(Saliency(self.model))


class IntegratedGradients(_Captum):
    """Integrated gradients from a black image (captum)."""

    def __init__(self, model, steps: int = 32):
        super().__init__(model)
        self.kwargs = dict(baselines=BLACK, n_steps=steps)

    def make(self):
        return IG(self.model)


METHODS = {"CAM": CAM, "Grad-CAM": GradCAM, "gradient": Gradient, "SmoothGrad": SmoothGrad,
           "integrated gradients": IntegratedGradients}

def as_explainer(explainer):
    """An explainer callable `explain(model, x, target) -> B x H x W` from a callable or a `METHODS` name."""
    if callable(explainer):
        return explainer
    if explainer not in METHODS:
        raise ValueError(f"unknown explanation method {explainer!r}; known: {', '.join(METHODS)} or a callable "
                         f"explain(model, x, target)")
    return lambda m, x, t: METHODS[explainer](m)(x, t)


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


def dropout_rate(model) -> float:
    """The rate of the model's dropout before its head (0 without one)."""
    d = getattr(model, "dropout", None)
    return float(d.p) if isinstance(d, torch.nn.Dropout) else 0.0


# --------------------------------------------------------------------------- the test set, batched


class MeanProbs(torch.nn.Module):
    """An ensemble as one module: log of the members' mean probability (softmax of it is that mean)."""

    def __init__(self, models):
        super().__init__()
        self.members = torch.nn.ModuleList(models)

    def forward(self, x):
        return torch.stack([torch.softmax(m(x), -1) for m in self.members]).mean(0).clamp_min(1e-12).log()


@torch.no_grad()
def forward_members(models, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(each member's feature maps B x K x h x w, the members' probabilities M x B x C): one forward each."""
    fmaps, probs = [], []
    for m in models:
        m.eval()
        f = m.features(x)
        fmaps.append(f)
        probs.append(torch.softmax(m.fc(m.pool(f)), 1))
    return fmaps, torch.stack(probs)


def predicted_classes(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(member 0's predicted class, the ensemble's: argmax of the mean probability) from M x B x C."""
    return probs[0].argmax(1), probs.mean(0).argmax(1)


def explained_classes(target, probs: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(class member 0's maps explain, class ensemble maps explain) for target 'predicted', 'true', or a class
    index (every map explains that class, e.g. the abnormal class of the abnormality task: where is the evidence
    for abnormality, whatever the prediction)."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        k = torch.full((len(probs[0]) if probs.dim() == 3 else len(probs),), int(target), dtype=torch.long)
        return k, k
    if target == "predicted":
        return predicted_classes(probs)
    if target == "true":
        y = torch.as_tensor(y).long()
        return y, y
    raise ValueError(f"target must be 'predicted' (what a deployed model has), 'true' or a class index, got {target!r}")


def maps_by_method(models, W, x, fmaps, target, target_ensemble) -> dict[str, torch.Tensor]:
    size = x.shape[-2:]
    t0 = torch.as_tensor(target).long().expand(len(x))
    te = t0 if target_ensemble is None else torch.as_tensor(target_ensemble).long().expand(len(x))
    maps = {"MAP CAM (member 0)": upsample(cam_samples(fmaps[0], models[0].fc.weight.detach(), t0)[0], size),
            "MAP gradient (member 0)": Gradient(models[0])(x, t0)}
    members = torch.stack([upsample(cam_samples(f, m.fc.weight.detach(), te)[0], size)
                           for m, f in zip(models, fmaps)])
    for label, stack in (("Laplace CAM", upsample(cam_samples(fmaps[0], W, t0), size)), ("ensemble CAM", members)):
        agg = aggregate(stack)
        for k in ("mean", "intersection", "union"):
            maps[f"{label}, {k}"] = agg[k]
        maps[f"{label}, spread (std)"] = agg["std"]
    return maps


def method_maps(models, W: torch.Tensor, x: torch.Tensor, target, target_ensemble=None) -> dict[str, torch.Tensor]:
    """The maps notebook 05 scores, for a batch (B x H x W each): member 0's CAM and input gradient, and the
    mean / intersection / union / std of Laplace CAMs (S samples W of member 0's head) and of the members'
    CAMs. Member 0's and the Laplace maps explain `target`, the ensemble's `target_ensemble` (default the
    same): give them each predictor's predicted class (`predicted_classes`)."""
    fmaps, _ = forward_members(models, x)
    return maps_by_method(models, W, x, fmaps, target, target_ensemble)
