"""Laplace over all the network's weights, and explanations of its samples.

A last-layer posterior cannot change what the network looks at: its samples share the MAP's feature maps, so
their mean CAM *is* the MAP CAM (`explain`, "An identity, not a finding"). This module reaches the
convolutional weights:

- `fit`: laplace-torch's Kronecker-factored (K-FAC) Laplace over every convolutional and linear weight and
  bias (GGN, laplace-torch's default curvlinops backend), its scalar prior precision then set by the marginal
  likelihood (`bayes.optimize_prior`, as for the last layer). The BatchNorm scales and shifts stay at their
  trained values (the K-FAC backends have no factors for them; a few hundred of ~245,000 parameters in the
  small network), and BatchNorm uses its running statistics (eval mode), so the network is a fixed function
  of the sampled weights.
- The predictive is the GLM (linearised network) one, which laplace-torch recommends over sampling networks:
  f_s(x) = f(x; theta_MAP) + J(x) (theta_s - theta_MAP), theta_s ~ N(theta_MAP, P^-1), whose covariance
  J P^-1 J^T enters the probit approximation (`posteriors.LaplaceAllWeights`). laplace-torch computes that
  covariance from the Jacobians J (N x C x P), which cost C backward passes with per-example weight gradients
  for every image (about 50 ms an image on two CPU cores here, and N x C x P floats of memory); the same
  linearised draws come from one Jacobian-vector product each (`torch.func.jvp`, a forward pass with
  tangents: `linearised_logits`), and their covariance estimates it. tests/test_weight_laplace.py checks the
  two agree.
- Explanations of posterior samples: CAM and Grad-CAM of the *network* at S sampled weight vectors, computed
  by one vectorised call (`torch.func.functional_call` under `torch.vmap` over the stacked samples:
  `sample_cams`, `sample_gradcams`), or one pass per sample (`vectorised=False`); the benchmark
  `python -m utils.bench explain` prints their ratio, and the default follows it (`vectorise_by_default`).
  Under the linearisation the mean map over samples equals the MAP map to first order (the map is linear in theta - theta_MAP there); a shift of the mean map
  comes from the network's curvature in its weights, which only network samples show.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from . import bayes
from .explain import center_weights, upsample


def posterior_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters the posterior covers: every parameter outside BatchNorm layers."""
    bn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] not in bn]


@dataclass
class Flat:
    """The map between a flat parameter vector (laplace-torch's order: `named_parameters` of those covered)
    and a dict of named tensors; leading (sample) dimensions are kept."""

    names: list[str]
    shapes: list[torch.Size]

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Flat":
        params = dict(model.named_parameters())
        names = posterior_parameters(model)
        return cls(names, [params[n].shape for n in names])

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for n, s in zip(self.names, self.shapes):
            k = s.numel()
            out[n] = v[..., i:i + k].reshape(*v.shape[:-1], *s)
            i += k
        return out


def frozen_copy(model: torch.nn.Module, device=None) -> torch.nn.Module:
    """A copy in eval mode whose BatchNorm parameters do not require gradients (laplace-torch then leaves them
    out of the posterior)."""
    m = copy.deepcopy(model).eval()
    if device is not None:
        m = m.to(device)
    keep = set(posterior_parameters(m))
    for n, p in m.named_parameters():
        p.requires_grad_(n in keep)
    return m


def fit(model: torch.nn.Module, loader, prior_precision: float = 1.0, device=None, structure: str = "kron"
        ) -> bayes.LaplaceFit:
    """K-FAC (`structure="kron"`; or laplace-torch's "diag") Laplace over all weights of `model` (copied) on
    `loader`'s (image, label) batches; the prior is `prior_precision` until `bayes.optimize_prior` sets it."""
    from laplace import Laplace

    if structure not in ("kron", "diag"):  # a full P x P precision over every weight does not fit in memory
        raise ValueError(f"Hessian structure {structure!r} over all weights: known kron, diag")
    net = frozen_copy(model, device)
    t = time.perf_counter()
    la = Laplace(net, "classification", subset_of_weights="all", hessian_structure=structure,
                 prior_precision=float(prior_precision))
    la.fit(loader, progress_bar=False)
    return bayes.LaplaceFit(la, f"{structure}, all weights", float(prior_precision), fit_s=time.perf_counter() - t)


def parameter_samples(fit: bayes.LaplaceFit, n: int, seed: int = 0) -> torch.Tensor:
    """n draws of the covered parameters from the posterior: n x P (laplace-torch's `sample`)."""
    g = torch.Generator(device=fit.la._device).manual_seed(seed)
    return fit.la.sample(n, generator=g).detach()


# --------------------------------------------------------------------------- the network at sampled weights


def _call(model, flat: Flat, v: torch.Tensor, *args, fn=None):
    """`model` (or `fn(model, *args)`) with the covered parameters set to the flat vector v."""
    params = flat.unflatten(v)
    if fn is None:
        return torch.func.functional_call(model, params, args)
    return torch.func.functional_call(_Bound(model, fn), {f"m.{k}": p for k, p in params.items()}, args)


class _Bound(torch.nn.Module):
    """`fn(model, *args)` as a module, so that `functional_call` can swap the model's parameters under it."""

    def __init__(self, model, fn):
        super().__init__()
        self.m, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.m, *args)


def vectorise_by_default(device) -> bool:
    """Whether the sample maps are vmapped when the caller does not say: on CUDA yes; on the CPU no, where
    `python -m utils.bench explain` measures the vmapped call 2.5 x slower than one pass per sample (torch runs
    a convolution with batched weights as one grouped convolution, slower than S plain ones on 2 cores)."""
    return torch.device(device).type == "cuda"


def over_samples(model, thetas: torch.Tensor, *args, fn=None, vectorised: bool | None = None) -> torch.Tensor:
    """Stack over the S rows of `thetas` (S x P) of the model (or `fn(model, *args)`) at those weights: one
    call vmapped over the samples, or one pass per sample (default: `vectorise_by_default`)."""
    model = model.eval()
    flat = Flat.of(model)
    if vectorised is None:
        vectorised = vectorise_by_default(thetas.device)
    if vectorised:
        return torch.vmap(lambda v: _call(model, flat, v, *args, fn=fn))(thetas)
    return torch.stack([_call(model, flat, v, *args, fn=fn) for v in thetas])


@torch.no_grad()
def network_logits(model, thetas: torch.Tensor, x: torch.Tensor, vectorised: bool | None = None) -> torch.Tensor:
    """Logits of the network at each sampled weight vector: S x B x C."""
    return over_samples(model, thetas, x, vectorised=vectorised)


@torch.no_grad()
def linearised_logits(model, mean: torch.Tensor, thetas: torch.Tensor, x: torch.Tensor, vectorised: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x; theta_MAP), the linearised logits f + J (theta_s - theta_MAP) for every sample: S x B x C), one
    Jacobian-vector product per sample (vmapped over the samples, or one after another)."""
    model = model.eval()
    flat = Flat.of(model)

    def jvp(v):
        return torch.func.jvp(lambda p: _call(model, flat, p, x), (mean,), (v - mean,))

    if vectorised:
        f0 = _call(model, flat, mean, x)
        jv = torch.vmap(lambda v: jvp(v)[1])(thetas)
        return f0, f0 + jv
    outs = []
    for v in thetas:
        f0, jv = jvp(v)
        outs.append(jv)
    return f0, f0 + torch.stack(outs)


# --------------------------------------------------------------------------- explanations per sample


def _cam(model, x, target, center):
    fmap = model.features(x)
    W = center_weights(model.fc.weight) if center else model.fc.weight
    return torch.einsum("bk,bkij->bij", W[target], fmap)


def sample_cams(model, thetas: torch.Tensor, x: torch.Tensor, target, center: bool = True,
                vectorised: bool | None = None) -> torch.Tensor:
    """CAMs (centred over classes, as `explain.CAM`) of the network at each of S sampled weight vectors,
    upsampled to the input: S x B x H x W."""
    target = torch.as_tensor(target, device=x.device).long().expand(len(x))
    with torch.no_grad():
        maps = over_samples(model, thetas, x, target, fn=lambda m, x, t: _cam(m, x, t, center),
                            vectorised=vectorised)
    return upsample(maps, x.shape[-2:])


def _gradcam(model, x, target, split, relu):
    """Grad-CAM at the output of model.features[:split] (functional: no hooks, so it runs under vmap)."""
    lower, upper = model.features[:split], model.features[split:]
    a = lower(x)

    def top(a):
        return model.fc(model.pool(upper(a))).gather(1, target[:, None]).sum()

    g = torch.func.grad(top)(a)
    m = (g.mean((-2, -1), keepdim=True) * a).sum(1)
    return torch.relu(m) if relu else m


def gradcam_split(model) -> int:
    """The default Grad-CAM layer for sampled networks: the output of the block before the last convolution
    (at the last convolution of a pooled linear head Grad-CAM is the CAM / (h w) for every sample)."""
    convs = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)]
    if len(convs) < 2:
        raise ValueError("the network has fewer than two convolutions in `features`: no layer before the last")
    return convs[-1]


def sample_gradcams(model, thetas: torch.Tensor, x: torch.Tensor, target, split: int | None = None,
                    relu: bool = True, vectorised: bool | None = None) -> torch.Tensor:
    """Grad-CAM of the network at each of S sampled weight vectors at the output of `model.features[:split]`
    (default `gradcam_split`), upsampled: S x B x H x W."""
    split = gradcam_split(model) if split is None else split
    target = torch.as_tensor(target, device=x.device).long().expand(len(x))
    maps = over_samples(model, thetas, x.detach(), target, fn=lambda m, x, t: _gradcam(m, x, t, split, relu),
                        vectorised=vectorised)
    return upsample(maps.detach(), x.shape[-2:])
