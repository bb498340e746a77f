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

Posteriors tried over the convolutional weights (issue 23; body-part member 0 of the cpu run, 824 test images,
before the cal split, measured with one-off scripts on this 2-core machine, not in the report):

- the marginal likelihood's scalar prior (delta 19.5, this class): linearised predictive NLL 0.881 against the
  MAP's 0.358, ECE 42 %; 16 sampled networks right on 16.8 % of the images (chance 14 %);
- a layer-wise prior (laplace-torch's `optimize_prior_precision(prior_structure="layerwise")`, one delta per
  parameter tensor, 300 Adam steps from the scalar optimum: deltas 4.2 to 70.6): NLL 0.872, ECE 42 %, networks right
  on 15.7 %: one delta per layer does not stop the prior dominating;
- a subnetwork Laplace (laplace-torch's `SubnetLaplace`, full GGN over the 2,000 largest-magnitude weights): the fit
  was killed for memory at 23 GB (laplace-torch computes Jacobians over every weight and then selects), at batch
  sizes 64 and 16;
- the scalar prior raised by hand (the fitted curvature, delta fixed): at 100, 300, 1e3, 3e3 and 1e4 the networks
  agree with the MAP class on 18, 25, 61, 85 and 93 % of the test images while the predictive's ECE falls from
  30 % to 5.2 % (MAP: 3.3 %): the networks classify only once the posterior is narrow, and its predictive is then
  still less calibrated than the (underconfident, T < 1) MAP network. `LaplaceAllWeightsNarrowed` makes that
  choice on the val split, and notebook 05 checks it against the targets.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from utils.posteriors import bayes
from utils.posteriors.base import Posterior, fit_info


def glm_probit(f0: torch.Tensor, f: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """The projected probit predictive (`bayes.probit`) of logits f0 (N x C) whose covariance is `scale` times that
    of the draws f (S x N x C) about f0, estimated from the draws (their mean is known: f0)."""
    d = (f - f0).double()
    return bayes.probit(f0.double(), scale * torch.einsum("sni,snj->nij", d, d) / len(d), project=True)


class LaplaceAllWeights(Posterior):
    """K-FAC Laplace over all the network's weights (`fit`: every convolution and the head; the
    BatchNorm parameters stay at the MAP), its scalar prior precision maximising the marginal likelihood
    (`bayes.optimize_prior`, the same search as the last layer's). The predictive is the GLM one: `n_samples`
    linearised logits f(x) + J(x)(theta_s - theta_MAP) are drawn (member m's saved samples use seed m), their
    covariance about f(x) estimates J P^-1 J^T, and the projected probit approximation (`bayes.probit`) turns it
    into probabilities, as for the last layer; the draws' softmax are its samples. (The plain Monte Carlo mean of
    32 draws was tried first: with logit variances near 30 it is noisy enough to cost accuracy; laplace-torch's
    own probit on Jacobians agrees with this one.) Its samples of the *network* (`parameter_samples`) are what notebook 05
    explains. It takes images (`inputs = "images"`), and costs a pass over the training images to fit and one
    Jacobian-vector product per sample and image to predict, so the registry fits it on member 0 only
    (`register(..., members=1)`)."""

    structure: ClassVar[str] = "kron"  # laplace-torch's Hessian structure over all weights
    prior: ClassVar[str] = "marglik"  # how the prior precision is set (`bayes.optimize_prior`; it needs no features)
    inputs = "images"
    stochastic = True
    n_samples = 32
    batch_size = 256  # images per linearised pass: no effect on the numbers

    @property
    def key(self) -> str:
        return f"la_{self.structure}-allweights_{self.prior}"

    def key_settings(self) -> list[str]:
        """The number of draws (the covariance the probit uses is estimated from them) and the version of the
        Laplace code's saved numbers (`bayes.LAPLACE_VERSION`: the probit, the prior search)."""
        return [*super().key_settings(), f"v{bayes.LAPLACE_VERSION}"]

    def _fit(self):
        start = self.member.meta.get("prior_precision") or 1.0
        source = getattr(self.member, "checkpoint", None)  # a retrained member: a new curvature
        saved = (Path(self.member.predictions_dir) / f"la_{self.structure}-allweights_curvature__m{self.member.index:02d}"
                 f"__v{bayes.LAPLACE_VERSION}.pt") if source else None
        self.la_fit = fit_shared(self.member.model, self.member.loader("train"), start, self.member.device,
                                 structure=self.structure, saved=saved, source=source)
        bayes.optimize_prior(self.la_fit, "marglik")
        extra = self._choose_prior()
        self.info = dict(fit_info(self.la_fit, self.prior), version=bayes.LAPLACE_VERSION, n_samples=self.n_samples,
                         **extra)

    def _choose_prior(self) -> dict:
        """After the marginal likelihood's scalar prior: a subclass's own choice (what it records); here none."""
        return {}

    @property
    def model(self) -> torch.nn.Module:
        """The fitted copy of the network (on the member's device, BatchNorm frozen)."""
        self.fit()
        return self.la_fit.la.model

    @property
    def mean(self) -> torch.Tensor:
        """theta_MAP of the covered parameters (flat, laplace-torch's order)."""
        self.fit()
        return self.la_fit.la.mean.detach()

    def parameter_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """n draws of the covered weights from the posterior, n x P (`parameter_samples`)."""

        self.fit()
        return parameter_samples(self.la_fit, n, seed)

    def draws(self, x, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x; theta_MAP) N x C, n linearised-logit draws S x N x C) for the images x (N x 1 x S x S)."""

        thetas = self.parameter_samples(n, seed)
        x = torch.as_tensor(x)
        f0, f = [], []
        for i in range(0, len(x), self.batch_size):
            a, b = linearised_logits(self.model, self.mean, thetas,
                                                    x[i:i + self.batch_size].to(self.member.device))
            f0.append(a.cpu())
            f.append(b.cpu())
        return torch.cat(f0), torch.cat(f, 1)

    def probs_and_samples(self, x, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The projected probit predictive (`bayes.probit`, as the last-layer Laplace) with the logits' covariance
        J P^-1 J^T estimated from the n draws about their known mean f(x; theta_MAP), and the draws' softmax."""
        f0, f = self.draws(x, n, seed)
        return glm_probit(f0, f), f.double().softmax(-1).numpy()

    def sample_probs(self, x, n: int, seed: int = 0) -> np.ndarray:
        """S x N x C: the softmax of n linearised-logit draws for every image of x."""
        return self.probs_and_samples(x, n, seed)[1]

    def probs(self, x) -> np.ndarray:
        """The GLM predictive from `n_samples` draws (member m's draws use seed m)."""
        return self.probs_and_samples(x, self.n_samples, self.member.index)[0]

    def _predict(self, subset):
        t = time.perf_counter()
        probs, s = self.probs_and_samples(self.member.images(subset), self.n_samples, seed=self.member.index)
        return probs, s, dict(predict_s=time.perf_counter() - t)


class LaplaceAllWeightsNarrowed(LaplaceAllWeights):
    """The same K-FAC Laplace over all weights (the same curvature: `fit_shared`), its scalar prior precision
    raised from the marginal likelihood's until the networks it draws still classify: the smallest delta on the
    grid delta_ML * 10^(k / STEPS_PER_DECADE), k = 0 ... DECADES * STEPS_PER_DECADE, at which `VAL_SAMPLES` sampled
    networks agree with the MAP network's class on at least `AGREE` of the *validation* images (mean over networks
    and images; a bisection over the grid, agreement rising with delta). The test split plays no part.

    What it is, named plainly: not the evidence's posterior (the marginal likelihood chooses delta_ML, whose
    networks classify at chance: the prior-dominated failure of sampling a network, not a linearisation, under a
    broad posterior) but a narrowed one, the broadest on the grid whose networks still do the task on validation
    images: a prior chosen by a predictive constraint. Prior precision and tempering are not the same operation
    (P = H + delta I against P / T), but where the prior dominates H, raising delta by a factor c scales the
    covariance by about 1/c, as a temperature T = 1/c would; the report calls it narrowed, not Bayes-optimal.
    Its linearised (GLM) predictive takes 8 draws: the probit reads only the variances of the centred logits,
    which are small here, so kappa = (1 + pi/8 var)^-1/2 is near 1 and barely depends on the draws' noise (a
    variance of 0.1 estimated within +-50 % moves kappa by under 2 %)."""

    AGREE, STEPS_PER_DECADE, DECADES, VAL_SAMPLES = 0.90, 2, 5, 16
    prior = f"val-agree{AGREE:g}-S{VAL_SAMPLES}-grid{STEPS_PER_DECADE}x{DECADES}"
    n_samples = 8

    def _choose_prior(self) -> dict:
        t = time.perf_counter()
        la, ml = self.la_fit.la, float(self.la_fit.prior_precision)
        grid = ml * 10.0 ** (np.arange(self.DECADES * self.STEPS_PER_DECADE + 1) / self.STEPS_PER_DECADE)
        x, net = self.member.images("val").to(self.member.device), la.model  # (`self.model` would fit again)
        with torch.no_grad():
            map_class = net(x).argmax(-1)
        curve: dict[float, float] = {}

        def agreement(k: int) -> float:
            if k not in curve:
                la.prior_precision = float(grid[k])
                thetas = parameter_samples(self.la_fit, self.VAL_SAMPLES, seed=self.member.index)
                cls = network_logits(net, thetas, x).argmax(-1)
                curve[k] = float((cls == map_class).float().mean())
            return curve[k]

        lo, hi = 0, len(grid) - 1
        if agreement(lo) >= self.AGREE:
            hi = lo
        elif agreement(hi) < self.AGREE:
            lo = hi  # even the grid's narrowest posterior: recorded as not bracketed
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if agreement(mid) >= self.AGREE else (mid, hi)
        chosen = hi
        bracketed = agreement(chosen) >= self.AGREE
        la.prior_precision = float(grid[chosen])
        self.la_fit.prior_precision, self.la_fit.prior_method = float(grid[chosen]), self.prior
        self.la_fit.prior_s += time.perf_counter() - t
        self.la_fit.log.update(
            bracketed=bracketed, searched=(float(grid[0]), float(grid[-1])), edge=None if bracketed else "upper",
            reason=(f"the smallest delta on the grid delta_ML x 10^(k/{self.STEPS_PER_DECADE}) whose "
                    f"{self.VAL_SAMPLES} sampled networks agree with the MAP class on >= {self.AGREE:.0%} of the "
                    f"validation images: {grid[chosen]:.3g} = {grid[chosen] / ml:.3g} x delta_ML"
                    + ("" if bracketed else " (no delta on the grid reached it: the grid's largest)")))
        return dict(marglik_prior=ml, narrowing=float(grid[chosen] / ml),
                    val_agreement={f"{grid[k]:.6g}": v for k, v in sorted(curve.items())})


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


_FITTED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def fit_shared(model: torch.nn.Module, loader, prior_precision: float = 1.0, device=None, structure: str = "kron",
               saved: Path | None = None, source: str | None = None) -> bayes.LaplaceFit:
    """`fit`, computed once per network, structure and starting prior in this process, and a copy returned each
    time: posteriors that differ only in how they set the prior share the curvature (a pass over the training
    images) and never each other's prior. With `saved` (a file) and `source` (the checkpoint's sha256), the fitted
    curvature is also kept on disk (laplace-torch's `state_dict`) and loaded by a later process while the file
    records the same checkpoint and starting prior: notebooks 02 and 05 fit it once between them."""
    fits = _FITTED.setdefault(model, {})
    key = (structure, float(prior_precision), str(device))
    if key not in fits:
        kept = torch.load(saved, map_location="cpu", weights_only=False) if saved and saved.is_file() else None
        if kept and kept.get("checkpoint") == source and kept.get("key") == list(key[:2]):
            from laplace import Laplace

            la = Laplace(frozen_copy(model, device), "classification", subset_of_weights="all",
                         hessian_structure=structure, prior_precision=float(prior_precision))
            la.load_state_dict(kept["state"])
            fits[key] = bayes.LaplaceFit(la, f"{structure}, all weights", float(prior_precision), fit_s=kept["fit_s"])
        else:
            fits[key] = fit(model, loader, prior_precision, device, structure)
            if saved and source:
                saved.parent.mkdir(parents=True, exist_ok=True)
                torch.save(dict(checkpoint=source, key=list(key[:2]), fit_s=fits[key].fit_s,
                                state=fits[key].la.state_dict()), saved)
    return copy.deepcopy(fits[key])


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
