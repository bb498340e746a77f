"""Last-layer Laplace approximations (laplace-torch, GGN): diag, kron and full Hessians with one prior precision by
the marginal likelihood, and kron with a layer-wise prior; predictive by the projected probit, samples of the
linearised logits by Monte Carlo (`bayes`)."""

from __future__ import annotations

import time
import warnings
from typing import ClassVar

import numpy as np
import torch

from utils.posteriors import bayes
from utils.posteriors.base import Posterior, PosteriorNotComputable, fit_info


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
