"""Bayesian treatments of trained MAP members, and the baselines beside them.

Last-layer Laplace (laplace-torch). Only the head `fc` is treated
probabilistically: theta = (W, b) ~ N(theta_MAP, P^-1) with
P = sum_n GGN_n + delta I. The head's input phi(x) does not depend on theta,
so the approximation is fitted on the penultimate features, computed once per
split (`member_features`): the Laplace of `nn.Linear` on phi is the last-layer
Laplace of the whole network (tests/test_bayes.py checks the posterior precision
and the predictive), at a fraction of the cost (`python -m utils.bench laplace`).

GLM predictive. The logits are linearised in theta: f ~ N(f_MAP(x), Sigma(x)),
Sigma(x) = J(x) P^-1 J(x)^T, and p(y|x) = E[softmax(f)], by Monte Carlo or by the
probit approximation softmax(f_MAP / sqrt(1 + pi/8 diag Sigma)).

The softmax null space. Adding one vector v to every class's weights (and one
number to every bias) shifts all logits by the same amount and leaves softmax
unchanged, so the likelihood has no curvature in that direction and the posterior
keeps the prior's variance 1/delta there. Sigma(x) then carries a large variance
common to all logits, which MC averages out (softmax ignores it) but the probit
approximation, which only sees the diagonal, turns into heavy underconfidence.
`probit(..., project=True)` removes it: Sigma -> C Sigma C with C = I - 11^T/K,
the covariance of the logits centred over classes, which gives the same softmax; their mean is centred too,
f_MAP -> C f_MAP, so that the projected probit, like E[softmax(f)], ignores a constant added to every logit.
laplace-torch 0.3's `functional_variance` returns the full N x C x C Sigma(x) for every structure; for
`diag` it is J diag(s) J^T, itself diagonal for a linear head (each logit has its own weights), and the
diagonal posterior has no such common variance to remove: projecting it is harmless, and the projected
probit agrees with Monte Carlo over the posterior's weights for diag, kron and full alike (tests/test_bayes.py).

Prior precision delta. `optimize_prior` maximises the marginal likelihood or minimises the validation NLL over
a log grid that it widens while the optimum sits on an edge. Either can still end on an edge: `fit.log` records
`bracketed`, the `searched` range, the `edge` and a `reason`, and an unbracketed search warns
(PriorNotBracketedWarning). On the upper edge the posterior collapses onto the MAP. Trial values never stay on
the fit: `log_marglik` and the searches leave `fit.la.prior_precision` as it was, or at the chosen value.

Baselines: temperature scaling (one temperature fitted on the validation NLL),
MC dropout (the dropout before the head, sampled on the cached features), deep
ensembles (the mean of member probabilities), and a mixture of Laplace
approximations (one per member, averaged).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from utils.evaluation import metrics

STRUCTURES = ("diag", "kron", "full")
LAPLACE_VERSION = 4  # in the names of every Laplace posterior's saved predictions (last layer, layer-wise prior,


def head_of(model) -> nn.Sequential:
    """A copy of the model's head as a one-layer network on the features (the model Laplace is fitted to)."""
    head = nn.Sequential(nn.Linear(model.fc.in_features, model.fc.out_features))
    head[0].load_state_dict(model.fc.state_dict())
    return head.eval()


# --------------------------------------------------------------------------- Laplace


@dataclass
class LaplaceFit:
    """A fitted last-layer Laplace approximation and what it cost."""

    la: object
    structure: str
    prior_precision: float
    fit_s: float = 0.0
    prior_s: float = 0.0
    prior_method: str = ""
    log: dict = field(default_factory=dict)


def fit_laplace(head: nn.Module, phi: np.ndarray, y: np.ndarray, structure: str = "kron",
                prior_precision: float = 1.0, batch_size: int = 512) -> LaplaceFit:
    """Fit the Laplace approximation of a linear head on features (GGN, laplace-torch's default backend)."""
    from laplace import Laplace

    if structure not in STRUCTURES:
        raise ValueError(f"unknown Hessian structure {structure!r}; known: {', '.join(STRUCTURES)}")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(phi), torch.as_tensor(y)),
                                         batch_size=batch_size)
    t = time.perf_counter()
    la = Laplace(head, "classification", subset_of_weights="all", hessian_structure=structure,
                 prior_precision=float(prior_precision))
    la.fit(loader)
    return LaplaceFit(la, structure, float(prior_precision), fit_s=time.perf_counter() - t)


def posterior_megabytes(la) -> float:
    """What a fitted laplace-torch posterior holds, in MB: the eigendecompositions of its Kronecker factors
    (kron), or P x P (full) or P (diag) numbers of its dtype, counted without computing the covariance (a
    full posterior's Cholesky may fail: `posteriors.PosteriorNotComputable`)."""
    from laplace.baselaplace import DiagLaplace, FullLaplace, KronLaplace

    if isinstance(la, KronLaplace):
        dec = la.posterior_precision
        return sum(t.numel() * t.element_size() for group in (*dec.eigenvectors, *dec.eigenvalues)
                   for t in group) / 2**20
    size = torch.empty((), dtype=la._dtype).element_size()
    if isinstance(la, FullLaplace):
        return la.n_params ** 2 * size / 2**20
    if isinstance(la, DiagLaplace):
        return la.n_params * size / 2**20
    raise TypeError(f"no size known for {type(la).__name__}")


class PriorNotBracketedWarning(UserWarning):
    """A prior-precision search ended on an edge of the range it searched: no optimum was bracketed."""


def log_marglik(fit: LaplaceFit, prior_precisions) -> np.ndarray:
    """Laplace log marginal likelihood at each prior precision (the posterior is refitted analytically).

    laplace-torch's `log_marginal_likelihood(prior_precision=p)` sets the fit's prior to p; the fit's
    prior is restored afterwards, so this has no side effect on `fit`."""
    la = fit.la
    before = la.prior_precision.detach().clone()
    try:
        return np.array([float(la.log_marginal_likelihood(prior_precision=torch.tensor(float(p))))
                         for p in prior_precisions])
    finally:
        la.prior_precision = before


def _edge(tried: dict, atol: float, rtol: float = 1e-6) -> tuple[float, str | None]:
    """Where a search of `tried` (key -> loss to minimise, keys ordered along the searched axis) stands: None
    if an optimum is bracketed (the losses at both ends of the searched range exceed the best by more than
    atol + rtol |best|), else 'lower' or 'upper', the end the loss is still falling towards or is flat at.
    Returns (key, edge): the best key, or on an unbracketed search the end key itself (its loss lies within
    the tolerance of the best, so it is as good, and it says how far the search went)."""
    keys = sorted(tried)
    best = min(tried, key=tried.get)
    if not math.isfinite(tried[best]):
        raise ValueError("the prior-precision search could not evaluate any of the values it tried")
    tol = atol + rtol * max(1.0, abs(tried[best]))
    lo_flat, hi_flat = tried[keys[0]] - tried[best] <= tol, tried[keys[-1]] - tried[best] <= tol
    if not lo_flat and not hi_flat:
        return best, None
    if lo_flat and hi_flat:  # flat at both ends: the side the minimum is on, upper on a tie
        edge = "lower" if best == keys[0] else "upper"
    else:
        edge = "lower" if lo_flat else "upper"
    return (keys[0] if edge == "lower" else keys[-1]), edge


_EDGE_MEANING = {
    "upper": "the posterior collapses onto the MAP (its predictive is the MAP network's)",
    "lower": "the prior barely constrains the posterior (its variance is set by the data's curvature alone)",
}


def _record_search(fit: LaplaceFit, method: str, value: float, edge: str | None, searched: tuple[float, float],
                   trend: str, warn: bool = True) -> None:
    """Write whether the prior search bracketed its optimum into `fit.log`, and warn when it did not (and `warn`)."""
    lo, hi = float(searched[0]), float(searched[1])
    if edge is None:
        reason = f"the optimum lies inside the searched range [{lo:.3g}, {hi:.3g}]"
    else:
        reason = (f"{trend} {'as delta grows' if edge == 'upper' else 'as delta shrinks'} up to the {edge} edge of "
                  f"the searched range [{lo:.3g}, {hi:.3g}]: {_EDGE_MEANING[edge]}")
    fit.log.update(bracketed=edge is None, searched=(lo, hi), edge=edge, reason=reason)
    if edge is not None and warn:
        warnings.warn(f"Laplace ({fit.structure} Hessian) prior precision by {method} is not bracketed: it ended at "
                      f"delta = {value:.3g} on the {edge} edge of the searched range [{lo:.3g}, {hi:.3g}], where "
                      f"{_EDGE_MEANING[edge]}.", PriorNotBracketedWarning, stacklevel=3)


def optimize_prior(fit: LaplaceFit, method: str = "marglik", val: tuple | None = None,
                   grid=None, predictive: str = "probit", max_widen: int = 4, warn: bool = True) -> LaplaceFit:
    """Set the prior precision: by the marginal likelihood (maximised over the scalar) or by a grid
    search on the validation NLL of the corrected predictive, widening the grid while the optimum
    lies on its edge (or the loss is flat towards it).

    The fit ends at the chosen value (`fit.prior_precision` and `fit.la.prior_precision`), and `fit.log`
    says how it was found: `bracketed` (bool), `searched` (lo, hi), `edge` (None, 'lower' or 'upper'),
    `reason`, and the curve (`grid`: delta -> validation NLL, or `marglik`: delta -> log marginal
    likelihood; a grid search also lists under `failed` the trial values whose predictive could not be
    computed, e.g. a float32 Cholesky at a tiny delta, counted as an infinite NLL). A search that ends on an
    edge warns (PriorNotBracketedWarning), unless `warn` is false: a caller that expects an unbracketed search
    (notebook 02's grid search) reads `fit.log["bracketed"]` and `fit.log["reason"]` and says it in words."""
    t = time.perf_counter()
    for k in ("bracketed", "searched", "edge", "reason", "grid", "marglik", "failed"):  # a previous search's
        fit.log.pop(k, None)
    if method == "marglik":
        value, info = maximise_marglik(fit)
        fit.prior_precision = value
        fit.la.prior_precision = value
        fit.log["marglik"] = info["marglik"]
        _record_search(fit, method, value, info["edge"], info["searched"],
                       "the log marginal likelihood still increases", warn)
    elif method == "gridsearch":
        if val is None:
            raise ValueError("gridsearch needs the validation features: val=(phi, y)")
        grid = np.logspace(-2, 4, 13) if grid is None else np.sort(np.asarray(grid, float).ravel())
        if len(grid) < 2 or grid[0] <= 0:
            raise ValueError(f"gridsearch needs at least two positive prior precisions, got {grid}")
        step = (grid[-1] / grid[0]) ** (1 / (len(grid) - 1))
        phi, y = val
        tried: dict[float, float] = {}
        before = fit.la.prior_precision.detach().clone()
        try:
            for k in range(max_widen + 1):
                for p in grid:
                    p = float(p)
                    if p not in tried:
                        fit.la.prior_precision = p
                        try:
                            tried[p] = metrics.nll(predict(fit, phi, predictive), y)
                        except torch.linalg.LinAlgError:  # e.g. a float32 Cholesky of a full posterior at tiny delta
                            tried[p] = math.inf
                            fit.log.setdefault("failed", []).append(p)
                best, edge = _edge(tried, atol=1e-6)  # mean NLL, nats per image
                if edge is None or k == max_widen:
                    break
                grid = (min(tried) / step ** np.arange(4, 0, -1) if edge == "lower"
                        else max(tried) * step ** np.arange(1, 5))
        except BaseException:
            fit.la.prior_precision = before
            raise
        fit.la.prior_precision = best
        fit.prior_precision = float(best)
        fit.log["grid"] = dict(sorted(tried.items()))
        _record_search(fit, method, best, edge, (min(tried), max(tried)), "the validation NLL still decreases", warn)
    else:
        raise ValueError(f"unknown prior optimisation {method!r}; known: marglik, gridsearch")
    fit.prior_s, fit.prior_method = time.perf_counter() - t, method
    return fit


def head_jacobians(head: nn.Module, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobians of a linear head's logits w.r.t. (vec W row-major, b), N x C x (CK + C), and the logits.

    For f = W phi + b they are exact and free: J = [I_C kron phi^T, I_C] (what laplace-torch's
    backends compute by autodiff, in the same parameter order)."""
    lin = head[0]
    c = lin.out_features
    eye = torch.eye(c, dtype=phi.dtype)
    jw = torch.einsum("ij,nk->nijk", eye, phi).reshape(len(phi), c, -1)
    return torch.cat([jw, eye.expand(len(phi), c, c)], -1), lin(phi)


def maximise_marglik(fit: LaplaceFit, lo: float = 1e-4, hi: float = 1e6, max_widen: int = 3
                      ) -> tuple[float, dict]:
    """The scalar prior precision maximising laplace-torch's Laplace log marginal likelihood: a log grid
    brackets the maximum (widened while it sits on an edge), Brent's method refines it between the best
    grid point's neighbours. Returns (delta, info) with info = dict(edge, searched, marglik); `edge` is None
    when the maximum was bracketed. Leaves the fit's prior as it was."""
    la = fit.la
    tried: dict[float, float] = {}  # log delta -> -log marginal likelihood

    def neg(log_p):
        log_p = float(log_p)
        if log_p not in tried:
            v = -float(la.log_marginal_likelihood(prior_precision=torch.tensor(math.exp(log_p))))
            tried[log_p] = v if math.isfinite(v) else math.inf
        return tried[log_p]

    before = la.prior_precision.detach().clone()
    try:
        grid = np.linspace(math.log(lo), math.log(hi), 25)
        step = grid[1] - grid[0]
        for k in range(max_widen + 1):
            for g in grid:
                neg(g)
            best, edge = _edge(tried, atol=1e-2)  # nats: laplace-torch's float32 log det is noisy at large delta
            if edge is None or k == max_widen:
                break
            grid = (min(tried) - step * np.arange(20, 0, -1) if edge == "lower"
                    else max(tried) + step * np.arange(1, 21))
        keys = sorted(tried)
        value = best
        if edge is None:
            i = keys.index(best)
            res = minimize_scalar(neg, bounds=(keys[i - 1], keys[i + 1]), method="bounded", options=dict(xatol=1e-4))
            if res.fun <= tried[best]:
                value = float(res.x)
    finally:
        la.prior_precision = before
    info = dict(edge=edge, searched=(math.exp(keys[0]), math.exp(keys[-1])),
                marglik={math.exp(g): -tried[g] for g in keys})  # the grid, without Brent's points
    return float(math.exp(value)), info


def logit_moments(fit: LaplaceFit, phi: np.ndarray, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (N x C) and covariance (N x C x C) of the linearised logits under the posterior."""
    la = fit.la
    mus, vars_ = [], []
    with torch.no_grad():
        for i in range(0, len(phi), batch_size):
            Js, f = head_jacobians(la.model, torch.as_tensor(phi[i:i + batch_size]))
            mus.append(f)
            vars_.append(la.functional_variance(Js))
    return torch.cat(mus), torch.cat(vars_)


def center_covariance(f_var: torch.Tensor) -> torch.Tensor:
    """C Sigma C with C = I - 11^T/K: the covariance of logits centred over classes (Sigma: ... x K x K, the
    full covariance, as laplace-torch's functional_variance returns for every Hessian structure)."""
    k = f_var.shape[-1]
    c = torch.eye(k, dtype=f_var.dtype) - 1.0 / k
    return c @ f_var @ c


def probit(f_mu: torch.Tensor, f_var: torch.Tensor, project: bool = True) -> np.ndarray:
    """Probit approximation of E[softmax(f)], f ~ N(f_mu, f_var): softmax(kappa * m), kappa = (1 + pi/8 diag V)^-1/2.

    `project=True` applies it to the logits centred over classes, g = C f (C = I - 11^T/K), whose softmax is f's:
    m = C f_mu and V = C f_var C. Both are centred, so the result is invariant to a constant added to every logit
    (as E[softmax(f)] is); scaling the uncentred mean by kappa would not be (softmax(kappa * (f_mu + c)) moves
    with c whenever kappa differs between classes).

    `project=False` is laplace-torch 0.3's probit, left as it is: m = f_mu, V = f_var (tests/test_bayes.py checks
    it equals laplace-torch's predictive). It is the unprojected reference (`predict(..., "probit_raw")`,
    `probit_vs_mc`), so it is not shift-invariant either; centring its mean alone would make it so, but would
    leave it neither laplace-torch's probit nor the projected one."""
    if project:
        m, v = f_mu - f_mu.mean(-1, keepdim=True), center_covariance(f_var)
    else:
        m, v = f_mu, f_var
    kappa = 1 / torch.sqrt(1 + math.pi / 8 * v.diagonal(dim1=-2, dim2=-1))
    return torch.softmax(kappa * m, -1).double().numpy()


def mc_samples(f_mu: torch.Tensor, f_var: torch.Tensor, n_samples: int = 1000, seed: int = 0) -> torch.Tensor:
    """Softmax of n_samples draws of the linearised logits: S x N x C."""
    g = torch.Generator().manual_seed(seed)
    # a symmetric square root: the covariance may be singular (exactly so along the null space once centred)
    evals, evecs = torch.linalg.eigh(f_var.double())
    root = evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)
    eps = torch.randn(n_samples, *f_mu.shape, generator=g, dtype=torch.float64)
    f = f_mu.double() + torch.einsum("nij,snj->sni", root, eps)
    return torch.softmax(f, -1)


def predict(fit: LaplaceFit, phi: np.ndarray, how: str = "probit", n_samples: int = 1000, seed: int = 0
            ) -> np.ndarray:
    """GLM predictive probabilities (N x C): 'probit' (projected), 'probit_raw' (laplace-torch's, no
    projection) or 'mc'."""
    f_mu, f_var = logit_moments(fit, phi)
    if how == "probit":
        return probit(f_mu, f_var, project=True)
    if how == "probit_raw":
        return probit(f_mu, f_var, project=False)
    if how == "mc":
        return mc_samples(f_mu, f_var, n_samples, seed).mean(0).numpy()
    raise ValueError(f"unknown predictive {how!r}; known: probit, probit_raw, mc")


def head_samples(fit: LaplaceFit, n_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws of the head (W: S x C x K, b: S x C) from the posterior, for explanations per sample."""
    g = torch.Generator().manual_seed(seed)
    theta = fit.la.sample(n_samples, generator=g).detach()
    c, k = fit.la.model[0].weight.shape
    return theta[:, : c * k].reshape(n_samples, c, k), theta[:, c * k:]


# --------------------------------------------------------------------------- baselines


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (fitted on validation logits)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    t = torch.as_tensor(np.array(y))

    def loss(log_t):
        return float(nn.functional.cross_entropy(z / math.exp(log_t), t))

    res = minimize_scalar(loss, bounds=(-4, 4), method="bounded", options=dict(xatol=1e-6))
    return float(math.exp(res.x))


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, -1).numpy()


def mc_dropout(model, phi: np.ndarray, n_samples: int = 100, seed: int = 0) -> np.ndarray:
    """Samples of the predictive with the head's dropout active (S x N x C), on cached features."""
    p = model.dropout.p if isinstance(model.dropout, nn.Dropout) else 0.0
    if p == 0:
        raise ValueError("the model has no dropout before its head: MC dropout needs Profile.dropout > 0")
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(phi)
    keep = (torch.rand(n_samples, *x.shape, generator=g) >= p).to(x.dtype) / (1 - p)
    with torch.no_grad():
        return torch.softmax(model.fc(keep * x), -1).double()
