"""Posteriors: every predictive this study compares, behind one interface.

A trained member is a network f(x) = W phi(x) + b with penultimate features phi(x). Every single-model method
but the last of the table treats only the head theta = (W, b), so each one is a small class bound to one member
that works on the member's features (cached per split by `bayes.member_features`) or its logits; the last
reaches every weight of the network and works on images:

=====================================  ==========================================================================
label                                  predictive p(y | x)
=====================================  ==========================================================================
MAP                                    softmax(W phi + b) at the trained weights
temperature scaling                    softmax((W phi + b) / T), T > 0 minimising the validation NLL
MC dropout                             (1/S) sum_s softmax(W (m_s * phi) / (1 - p) + b), m_s ~ Bernoulli(1 - p)
Laplace, <diag|kron|full>              E_{f ~ N(f_MAP, J P^-1 J^T)}[softmax(f)], P = GGN + delta I (last layer,
                                       laplace-torch), delta by the marginal likelihood; probit approximation
                                       with the softmax null space projected out (`bayes.probit`), Monte Carlo
                                       samples of the linearised logits for `sample_probs`
Laplace, kron, layer-wise prior        the same with one prior precision per parameter tensor: K-FAC blocks
                                       for W and for b, P_W = GGN_W + delta_W I, P_b = GGN_b + delta_b I, both
                                       maximising the marginal likelihood (`prior_structure="layerwise"`)
Laplace, kron, all weights             K-FAC Laplace over every convolutional and linear weight (`weight_laplace`),
                                       delta by the marginal likelihood; GLM predictive: projected probit with
                                       the logits' covariance estimated from draws of the linearised logits
                                       f(x) + J(x)(theta_s - theta_MAP), one Jacobian-vector product per draw;
                                       it takes images, not cached features (`inputs`)
=====================================  ==========================================================================

Combinators average the predictives of all M members: the **deep ensemble** (of MAP members),
p = (1/M) sum_m p_m, and the **mixture of Laplace** approximations (of each member's kron Laplace), the same
mean over members' Laplace predictives. Their samples are the members' predictives (M x N x C), from which
the mutual information is computed.

The verbs, the same for every class (`Posterior`):

- ``fit()``: fit on the member (idempotent; `predict` fits only when its saved predictions are missing);
- ``predict(subset)``: dict(probs N x C, samples S x N x C where the method has them, and what the fit found)
  on the member's cached split, computed once and saved under ``artifacts/predictions/`` (`bayes.save_predictions`);
- ``probs(phi)``: predictive probabilities on features of any batch (rotated, corrupted, unfamiliar images);
- ``sample_probs(phi, n, seed)``: S x N x C draws of the predictive, where the method is stochastic;
- ``head_samples(n, seed)``: S draws of the head's weights (S x C x K) for the explanation chapter, where the
  method has a distribution over them (Laplace, MC dropout).

`REGISTRY` maps each stable label to its class; every table, figure and results JSON uses these labels.
Adding a method is one class and one `register(...)` line (tests/test_posteriors.py holds every registered
posterior to the same contract).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol

import numpy as np
import torch

from . import bayes


class MemberLike(Protocol):
    """What a posterior needs of a trained member (`run.Member` provides it)."""

    index: int  # the member's number (seeds its samples)

    @property
    def model(self) -> torch.nn.Module: ...  # the network, on the CPU, in eval mode

    @property
    def meta(self) -> dict: ...  # its checkpoint's metadata (prior_precision = N * weight decay, ...)

    def features(self, subset: str) -> tuple[np.ndarray, np.ndarray]: ...  # (phi, y) of a split

    def logits(self, subset: str) -> np.ndarray: ...  # the network's logits on a split

    def images(self, subset: str) -> torch.Tensor: ...  # a split's images (N x 1 x S x S), for image posteriors

    def loader(self, subset: str): ...  # a DataLoader of a split's (image, label) batches

    @property
    def device(self) -> torch.device: ...  # where image posteriors fit and predict

    @property
    def predictions_dir(self): ...  # where saved predictions go


class Posterior:
    """A predictive over one member's head. Subclasses set `key` (the saved predictions' file stem), implement
    `_fit` and `probs`, and, where the method is stochastic, `sample_probs` and `head_samples`.

    The saved predictions' name (`file_name`) holds every setting that changes the saved numbers: the method
    and its settings in `key`, the split, the member (which seeds the samples), the number of saved samples of a
    stochastic method, and what `key_settings` adds (a Laplace posterior's version, `bayes.LAPLACE_VERSION`). A
    subclass with a new setting puts it in `key` or `key_settings`, so that a file saved under other settings is
    never reused (tests/test_posteriors.py changes each and checks the name moves)."""

    label: ClassVar[str] = ""
    key: ClassVar[str] = ""  # the saved predictions' file stem: the method and its settings
    stochastic: ClassVar[bool] = False  # has samples of its predictive (mutual information is defined)
    inputs: ClassVar[str] = "features"  # what probs / sample_probs take: "features" (phi, N x K) or "images"
    n_samples: int = 100  # samples saved by `predict`

    def __init__(self, member: MemberLike):
        self.member = member
        self._fitted = False
        self.info: dict = {}

    # the verbs ------------------------------------------------------------------------------------------
    def fit(self) -> "Posterior":
        if not self._fitted:
            self._fit()
            self._fitted = True
        return self

    def _fit(self) -> None:
        pass

    def probs(self, phi) -> np.ndarray:
        raise NotImplementedError

    def sample_probs(self, phi, n: int, seed: int = 0) -> np.ndarray:
        raise NotImplementedError(f"{self.label} is deterministic: it has no samples of its predictive")

    def probs_and_samples(self, phi, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A stochastic method's predictive and its samples on one batch: by default the samples' mean."""
        s = self.sample_probs(phi, n, seed)
        return s.mean(0), s

    def head_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        raise NotImplementedError(f"{self.label} has no distribution over the head's weights")

    def predict(self, subset: str = "test") -> dict:
        """Predictions on the member's `subset`, computed once and saved (see the module docstring)."""
        folder, name = self.member.predictions_dir, self.file_name(subset)
        source = getattr(self.member, "checkpoint", None)  # the weights they come from (a retrained member: new)
        hit = bayes.load_predictions(folder, name)
        if hit is not None and hit.get("checkpoint") == source:
            return hit
        self.fit()
        probs, samples, extra = self._predict(subset)
        bayes.save_predictions(folder, name, probs, samples, **{**self.info, **extra, "checkpoint": source})
        return bayes.load_predictions(folder, name)

    def file_name(self, subset: str) -> str:
        """The saved predictions' file stem: `key`, the split, the member and `key_settings()`, joined by '__'."""
        return "__".join([self.key, subset, f"m{self.member.index:02d}", *self.key_settings()])

    def key_settings(self) -> list[str]:
        """What else changes the saved numbers, for the file name: the number of saved samples (`n_samples`)
        where the method has samples (MC dropout's probabilities are their mean too)."""
        return [f"s{self.n_samples}"] if self.stochastic else []

    def _predict(self, subset: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
        phi = self.member.features(subset)[0]
        t = time.perf_counter()
        probs = self.probs(phi)
        return probs, None, dict(predict_s=time.perf_counter() - t)

    def inputs_of(self, subset: str):
        """What `probs` takes, for the member's split `subset`: its features or its images (`inputs`)."""
        return self.member.features(subset)[0] if self.inputs == "features" else self.member.images(subset)

    # helpers ----------------------------------------------------------------------------------------------
    @property
    def head(self) -> torch.nn.Linear:
        return self.member.model.fc

    def _logits(self, phi) -> torch.Tensor:
        with torch.inference_mode():
            return self.head(torch.as_tensor(phi))


def fit_info(f: bayes.LaplaceFit, prior: str) -> dict:
    """What a Laplace fit records in its saved predictions: the prior search, the seconds, the posterior's size."""
    return dict(prior=prior, prior_method=f.prior_method, prior_precision=f.prior_precision,
                bracketed=f.log.get("bracketed"), searched=list(f.log.get("searched", ())),
                prior_reason=f.log.get("reason", ""), fit_s=f.fit_s, prior_s=f.prior_s, structure=f.structure,
                parameters=int(f.la.n_params), posterior_mb=bayes.posterior_megabytes(f.la))


class PosteriorNotComputable(RuntimeError):
    """A Laplace posterior whose precision is not positive definite in float32 at the chosen prior precision."""

    def __init__(self, post: "Laplace", err: Exception):
        f = post.la_fit
        super().__init__(
            f"{post.label or type(post).__name__} of member {post.member.index}: the posterior precision is not "
            f"positive definite in float32 at prior precision {f.prior_precision:.3g} ({f.log.get('reason', '')}); "
            f"laplace-torch: {err}. This happens when the network's curvature is degenerate (e.g. a network "
            "trained for an epoch or two, whose prior search runs to its lower edge). What to do: train the "
            "members longer, or leave this Hessian structure out (diag and kron stay computable).")


class MAP(Posterior):
    """The trained network itself: softmax(W phi + b)."""

    key = "map"

    def probs(self, phi) -> np.ndarray:
        return torch.softmax(self._logits(phi), 1).double().numpy()

    def _predict(self, subset):
        return bayes.softmax_t(self.member.logits(subset)), None, {}

    def head_samples(self, n: int = 1, seed: int = 0) -> torch.Tensor:
        """The MAP head, once (a point mass): 1 x C x K."""
        return self.head.weight.detach()[None]


class Temperature(Posterior):
    """softmax(logits / T) with one T > 0 fitted on the validation NLL (Guo et al., 2017)."""

    key = "temperature"

    def _fit(self):
        t = time.perf_counter()
        val_logits, y = self.member.logits("val"), self.member.features("val")[1]
        self.temperature = bayes.fit_temperature(val_logits, y)
        self.info = dict(temperature=self.temperature, fit_s=time.perf_counter() - t)

    def probs(self, phi) -> np.ndarray:
        self.fit()
        return torch.softmax(self._logits(phi).double() / self.temperature, 1).numpy()

    def _predict(self, subset):
        return bayes.softmax_t(self.member.logits(subset), self.temperature), None, {}


class MCDropout(Posterior):
    """Dropout before the head kept on at test time (Gal & Ghahramani, 2016), sampled on the cached features;
    the samples of member m use seed m."""

    key = "mc_dropout"
    stochastic = True

    @property
    def rate(self) -> float:
        d = self.member.model.dropout
        return float(d.p) if isinstance(d, torch.nn.Dropout) else 0.0

    def sample_probs(self, phi, n: int, seed: int = 0) -> np.ndarray:
        return bayes.mc_dropout(self.member.model, np.asarray(phi), n, seed=seed).numpy()

    def probs(self, phi, n: int | None = None, seed: int | None = None) -> np.ndarray:
        return self.sample_probs(phi, n or self.n_samples, self.member.index if seed is None else seed).mean(0)

    def _predict(self, subset):
        t = time.perf_counter()
        s = self.sample_probs(self.member.features(subset)[0], self.n_samples, seed=self.member.index)
        return s.mean(0), s, dict(predict_s=time.perf_counter() - t)

    def head_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """Dropout masks folded into the head: W_s = W diag(m_s) / (1 - p), S x C x K (`explain.mc_dropout_heads`)."""
        from .explain import mc_dropout_heads

        return mc_dropout_heads(self.head.weight.detach(), self.rate, n, seed=seed)


class Laplace(Posterior):
    """Last-layer Laplace approximation with a `structure` Hessian (laplace-torch, GGN), its scalar prior
    precision delta maximising the marginal likelihood (`bayes.optimize_prior`: a log grid from 1e-4 to 1e6,
    widened while the optimum sits on an edge, then Brent's method);
    predictive by the projected probit approximation (`bayes.probit`), samples of the linearised logits by Monte
    Carlo (`bayes.mc_samples`; member m's saved samples use seed m)."""

    structure: ClassVar[str] = "kron"
    prior: ClassVar[str] = "marglik"  # how the prior precision is set (`bayes.optimize_prior`'s method)
    stochastic = True

    @property
    def key(self) -> str:
        return f"la_{self.structure}_{self.prior}"

    def key_settings(self) -> list[str]:
        """The saved samples' number and the version of the Laplace code's saved numbers (`bayes.LAPLACE_VERSION`)."""
        return [*super().key_settings(), f"v{bayes.LAPLACE_VERSION}"]

    def _start(self) -> float:
        return self.member.meta.get("prior_precision") or 1.0

    def refit(self, prior: str | None = None, warn: bool = True) -> bayes.LaplaceFit:
        """A new fit on the member's training features with its prior set by `prior` ('marglik', or 'gridsearch'
        on the validation NLL; default: this class's); the fit starts at N * weight decay, which the
        searches do not depend on. Leaves this posterior as
        it is (notebook 02 compares the two searches). `warn=False`: a search that ends on an edge of its range
        does not warn (PriorNotBracketedWarning); its `log` says so (`bracketed`, `edge`, `reason`)."""
        feats = {s: self.member.features(s) for s in ("train", "val")}
        fit = bayes.fit_laplace(bayes.head_of(self.member.model), *feats["train"], self.structure,
                                prior_precision=self._start())
        return bayes.optimize_prior(fit, prior or self.prior, val=feats["val"], warn=warn)

    def _fit(self):
        self.la_fit = self.refit()
        self._record()

    def _record(self):
        self.info = dict(fit_info(self.la_fit, self.prior), version=bayes.LAPLACE_VERSION)

    def moments(self, phi) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (N x C) and covariance (N x C x C) of the linearised logits."""
        self.fit()
        try:
            return bayes.logit_moments(self.la_fit, np.asarray(phi))
        except torch.linalg.LinAlgError as e:
            raise PosteriorNotComputable(self, e) from e

    def probs(self, phi) -> np.ndarray:
        return bayes.probit(*self.moments(phi), project=True)

    def sample_probs(self, phi, n: int, seed: int = 0) -> np.ndarray:
        return bayes.mc_samples(*self.moments(phi), n, seed=seed).numpy()

    def probs_and_samples(self, phi, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The projected probit predictive and Monte Carlo samples, from one computation of the logits' moments."""
        f_mu, f_var = self.moments(phi)
        return bayes.probit(f_mu, f_var, project=True), bayes.mc_samples(f_mu, f_var, n, seed=seed).numpy()

    def _predict(self, subset):
        phi = self.member.features(subset)[0]
        t = time.perf_counter()
        f_mu, f_var = self.moments(phi)
        probs = bayes.probit(f_mu, f_var, project=True)
        predict_s = time.perf_counter() - t
        return probs, bayes.mc_samples(f_mu, f_var, self.n_samples, seed=self.member.index).numpy(), dict(
            predict_s=predict_s)

    def head_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """Draws of W from the posterior (S x C x K; `bayes.head_samples`)."""
        self.fit()
        return bayes.head_samples(self.la_fit, n, seed=seed)[0]


class LaplaceDiag(Laplace):
    structure = "diag"


class LaplaceKron(Laplace):
    structure = "kron"


class LaplaceFull(Laplace):
    structure = "full"


class LaplaceKronLayerwise(LaplaceKron):
    """Kron (K-FAC) last-layer Laplace with one prior precision per parameter tensor, delta_W for the head's weights
    and delta_b for its bias (laplace-torch treats W and b as separate Kronecker blocks, with no W-b covariance),
    both maximising the marginal likelihood: laplace-torch's `optimize_prior_precision(prior_structure=
    "layerwise")`, Adam on log delta for `STEPS` steps, started from the scalar optimum.

    Why two: the marginal likelihood balances each block's data fit (its curvature) against its scatter
    ||theta_MAP||^2 under the prior; the head's biases are few and small at the MAP, so their evidence-optimal
    delta_b is far larger than the weights' (tens of times on the phantom), which one shared delta cannot express.
    Caveat: the MAP was trained with one weight decay for W and b (delta = N lambda for both); a post-hoc
    posterior centred on that mode with another prior for b is the usual post-hoc approximation, stretched further.

    Whether the search ended at an optimum is checked, not assumed: `bracketed` is true when the gradient of
    the log marginal likelihood in log delta is below `GRAD_TOL` (nats) for both precisions at the end, and
    `marglik_gain` records how far the two precisions raise the log marginal likelihood over the scalar delta."""

    STEPS, LR, GRAD_TOL = 200, 0.1, 0.05
    prior = f"marglik-layerwise{STEPS}-lr{LR:g}"  # the optimiser's settings are in the saved predictions' name

    def _fit(self):
        fit = self.refit("marglik")  # the scalar optimum: the starting point
        la, scalar = fit.la, float(fit.prior_precision)
        lml_scalar = float(la.log_marginal_likelihood(prior_precision=torch.tensor(scalar)))
        t = time.perf_counter()
        with warnings.catch_warnings():  # laplace-torch 0.3 warns about `link_approx` on every classification
            warnings.filterwarnings("ignore", message="By default `link_approx`")  # call; marglik does not use it
            la.optimize_prior_precision(pred_type="glm", method="marglik", init_prior_prec=torch.full((2,), scalar),
                                        prior_structure="layerwise", n_steps=self.STEPS, lr=self.LR)
        deltas = la.prior_precision.detach().clone()
        log_d = deltas.log().requires_grad_(True)
        lml = la.log_marginal_likelihood(prior_precision=log_d.exp())
        grad = torch.autograd.grad(lml, log_d)[0].abs().max().item()
        la.prior_precision = deltas  # log_marginal_likelihood(prior_precision=...) sets it: back to the optimum
        fit.prior_s += time.perf_counter() - t
        fit.prior_method, fit.prior_precision = self.prior, float(deltas[0])
        bracketed = grad < self.GRAD_TOL
        fit.log.update(bracketed=bracketed, searched=(float(deltas.min()), float(deltas.max())), edge=None,
                       reason=(f"Adam on log delta ({self.STEPS} steps) from the scalar optimum {scalar:.3g}: "
                               f"|d log evidence / d log delta| = {grad:.1e} at the end "
                               f"({'an optimum' if bracketed else 'not converged'})"))
        self.la_fit = fit
        self._record()
        self.info.update(prior_precision=float(deltas[0]), prior_precision_bias=float(deltas[1]), scalar_prior=scalar,
                         marglik_gain=float(lml.detach()) - lml_scalar, marglik_grad=grad)


def glm_probit(f0: torch.Tensor, f: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """The projected probit predictive (`bayes.probit`) of logits f0 (N x C) whose covariance is `scale` times that
    of the draws f (S x N x C) about f0, estimated from the draws (their mean is known: f0)."""
    d = (f - f0).double()
    return bayes.probit(f0.double(), scale * torch.einsum("sni,snj->nij", d, d) / len(d), project=True)


class LaplaceAllWeights(Posterior):
    """K-FAC Laplace over all the network's weights (`weight_laplace.fit`: every convolution and the head; the
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
        from . import weight_laplace

        start = self.member.meta.get("prior_precision") or 1.0
        self.la_fit = weight_laplace.fit(self.member.model, self.member.loader("train"), start, self.member.device,
                                         structure=self.structure)
        bayes.optimize_prior(self.la_fit, self.prior)
        self.info = dict(fit_info(self.la_fit, self.prior), version=bayes.LAPLACE_VERSION, n_samples=self.n_samples)

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
        """n draws of the covered weights from the posterior, n x P (`weight_laplace.parameter_samples`)."""
        from . import weight_laplace

        self.fit()
        return weight_laplace.parameter_samples(self.la_fit, n, seed)

    def draws(self, x, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x; theta_MAP) N x C, n linearised-logit draws S x N x C) for the images x (N x 1 x S x S)."""
        from . import weight_laplace

        thetas = self.parameter_samples(n, seed)
        x = torch.as_tensor(x)
        f0, f = [], []
        for i in range(0, len(x), self.batch_size):
            a, b = weight_laplace.linearised_logits(self.model, self.mean, thetas,
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

    def probs(self, x, n: int | None = None, seed: int | None = None) -> np.ndarray:
        return self.probs_and_samples(x, n or self.n_samples, self.member.index if seed is None else seed)[0]

    def _predict(self, subset):
        t = time.perf_counter()
        probs, s = self.probs_and_samples(self.member.images(subset), self.n_samples, seed=self.member.index)
        return probs, s, dict(predict_s=time.perf_counter() - t)


# --------------------------------------------------------------------------- combinators


@dataclass
class Combination:
    """The mean of M members' predictives under one single-model method (`of`): the deep ensemble of MAP
    members, the mixture of Laplace approximations. Its samples are the members' predictives."""

    of: str
    posteriors: list[Posterior] = field(default_factory=list)
    stochastic: ClassVar[bool] = True

    def predict(self, subset: str = "test") -> dict:
        runs = [p.predict(subset) for p in self.posteriors]
        member = np.stack([r["probs"] for r in runs])
        return dict(probs=member.mean(0), samples=member, members=len(runs))

    def probs(self, phis) -> np.ndarray:
        return np.mean([p.probs(phi) for p, phi in zip(self.posteriors, phis)], 0)

    def sample_probs(self, phis) -> np.ndarray:
        return np.stack([p.probs(phi) for p, phi in zip(self.posteriors, phis)])


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Entry:
    """A registered method: its class (or, for a combination, the label it averages) and where it is shown.

    `robustness`: in notebook 06's sweeps (member 0, or all members for a combination); every entry is in
    notebook 04's calibration table. `conformal`: in notebook 04's conformal sets (which need its predictions on
    the validation split too). `members`: how many members (from member 0) a single-model method is fitted on,
    for the costly ones; None: all."""

    label: str
    make: Callable[[MemberLike], Posterior] | None = None
    of: str | None = None
    robustness: bool = False
    needs_dropout: bool = False
    members: int | None = None
    conformal: bool = True

    @property
    def combination(self) -> bool:
        return self.of is not None


REGISTRY: dict[str, Entry] = {}


def register(label: str, cls: type[Posterior] | None = None, *, of: str | None = None, robustness: bool = False,
             needs_dropout: bool = False, members: int | None = None, conformal: bool = True) -> None:
    if (cls is None) == (of is None):
        raise ValueError("register a class, or the label of the single-model method a combination averages")
    if cls is not None:
        cls = type(cls.__name__, (cls,), dict(label=label, __doc__=cls.__doc__, __module__=cls.__module__))
    REGISTRY[label] = Entry(label, cls, of, robustness, needs_dropout, members, conformal)


register("MAP", MAP, robustness=True)
register("temperature scaling", Temperature, robustness=True)
register("MC dropout", MCDropout, needs_dropout=True)
register("Laplace, diag", LaplaceDiag)
register("Laplace, kron", LaplaceKron, robustness=True)
register("Laplace, full", LaplaceFull)
register("Laplace, kron, layer-wise prior", LaplaceKronLayerwise, robustness=True)
# not in the conformal sets: its linearised predictive is far too broad (notebook 02) and its validation-split
# predictions cost ~25 s of each report
register("Laplace, kron, all weights", LaplaceAllWeights, members=1, conformal=False)
register("deep ensemble", of="MAP", robustness=True)
register("mixture of Laplace, kron", of="Laplace, kron")


def labels(single: bool | None = None, robustness: bool | None = None, dropout: bool = True,
           conformal: bool | None = None) -> list[str]:
    """Registered labels in registration order, optionally only single-model ones or combinations, only those
    shown in the robustness chapter (or the conformal sets), and without those that need dropout
    (`dropout=False`)."""
    out = []
    for e in REGISTRY.values():
        if single is not None and e.combination == single:
            continue
        if robustness is not None and e.robustness != robustness:
            continue
        if conformal is not None and e.conformal != conformal:
            continue
        if e.needs_dropout and not dropout:
            continue
        out.append(e.label)
    return out


def make(label: str, member: MemberLike) -> Posterior:
    """The single-model posterior `label` bound to `member` (not yet fitted)."""
    if label not in REGISTRY:
        raise KeyError(f"unknown posterior {label!r}; registered: {', '.join(REGISTRY)}")
    e = REGISTRY[label]
    if e.combination:
        raise ValueError(f"{label!r} combines members: build it with `combine(label, members)`")
    return e.make(member)


def combine(label: str, members: list[MemberLike]) -> Combination:
    """The combination `label` over `members`."""
    e = REGISTRY[label]
    if not e.combination:
        raise ValueError(f"{label!r} is a single-model method: build it with `make(label, member)`")
    return Combination(e.of, [make(e.of, m) for m in members])


def fit_table(preds: dict[str, dict], labels) -> "pd.DataFrame":
    """One row per single-model method and member of `Run.predictions`: the test scores and what the fit recorded
    (prior precision, fit / prior-search / predict seconds, where the method has them)."""
    import pandas as pd

    from . import metrics

    rows = []
    for label, p in preds.items():
        if REGISTRY[label].combination:
            continue
        for m, (probs, info) in enumerate(zip(p["probs"], p["info"])):
            rows.append(dict(member=m, method=label, **{k: info.get(k) for k in
                                                        ("prior_precision", "prior_precision_bias", "marglik_gain",
                                                         "parameters", "posterior_mb", "fit_s", "prior_s",
                                                         "predict_s")},
                             **metrics.summary(probs, labels)))
    return pd.DataFrame(rows)
