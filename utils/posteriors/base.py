"""Posteriors: every predictive this study compares, behind one interface.

A trained member is a network f(x) = W phi(x) + b with penultimate features phi(x). Every single-model method
but the last of the table treats only the head theta = (W, b), so each one is a small class bound to one member
that works on the member's features (cached per split by `store.member_features`) or its logits; the last
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
Laplace, kron, all weights             K-FAC Laplace over every convolutional and linear weight (`all_weights`),
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
  on the member's cached split, computed once and saved under ``artifacts/predictions/`` (`store.save_predictions`);
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
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Protocol

import numpy as np
import torch

from utils.posteriors import bayes, store


@dataclass
class Predictions:
    """One method's predictions on one split, in the same shape for every label (`Run.predictions`,
    `BatchPredictor`).

    `members` (M x N x C) holds each member's predictive: for a single-model method those of the members it was
    fitted on (M = 1 for a method fitted on member 0 only, and in `BatchPredictor`), for a combination those of
    the members it averages. `member_samples` lists each member's samples of its predictive (S x N x C, None for
    a deterministic method); `info` what each member's fit recorded. `combination` says which of the two it is.

    What the report uses, without asking which kind a method is:
    `probs` (N x C): what every figure shows and every Reading quotes: member 0's predictive, or the
    combination's mean over members; `samples` (S x N x C or None): the draws behind `probs` (member 0's samples,
    or the combination's member predictives), from which the mutual information is computed; `scored`
    (M x N x C): the predictives whose metric, averaged, is the table's estimate (every member of a single-model
    method, `evidence.member_interval`; the combination's mean, once)."""

    label: str
    members: np.ndarray
    combination: bool = False
    member_samples: list = field(default_factory=list)
    info: list = field(default_factory=list)

    def __post_init__(self):
        self.members = np.asarray(self.members)
        if self.members.ndim != 3:
            raise ValueError(f"{self.label}: members must be M x N x C, not shape {self.members.shape}")

    @cached_property
    def probs(self) -> np.ndarray:
        return self.members.mean(0) if self.combination else self.members[0]

    @property
    def samples(self) -> np.ndarray | None:
        if self.combination:
            return self.members
        return self.member_samples[0] if self.member_samples else None

    @property
    def scored(self) -> np.ndarray:
        return self.probs[None] if self.combination else self.members

    @property
    def n_members(self) -> int:
        return len(self.members)


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

    @property
    def fitted(self) -> bool:
        """Whether this posterior has been fitted (a `predict` that finds its saved predictions does not fit)."""
        return self._fitted

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
        hit = store.load_predictions(folder, name)
        if hit is not None and hit.get("checkpoint") == source:
            return hit
        self.fit()
        probs, samples, extra = self._predict(subset)
        store.save_predictions(folder, name, probs, samples, **{**self.info, **extra, "checkpoint": source})
        return store.load_predictions(folder, name)

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

    def __init__(self, post: "Posterior", err: Exception):
        f = post.la_fit
        super().__init__(
            f"{post.label or type(post).__name__} of member {post.member.index}: the posterior precision is not "
            f"positive definite in float32 at prior precision {f.prior_precision:.3g} ({f.log.get('reason', '')}); "
            f"laplace-torch: {err}. This happens when the network's curvature is degenerate (e.g. a network "
            "trained for an epoch or two, whose prior search runs to its lower edge). What to do: train the "
            "members longer, or leave this Hessian structure out (diag and kron stay computable).")
