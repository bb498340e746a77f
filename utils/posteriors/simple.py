"""The single-model methods without a Laplace fit: the MAP network, temperature scaling, and MC dropout on the
cached features (with the dropout masks folded into the head for the explanation chapter, `mc_dropout_heads`)."""

from __future__ import annotations

import time

import numpy as np
import torch

from utils.posteriors import bayes
from utils.posteriors.base import Posterior


class MAP(Posterior):
    """The trained network itself: softmax(W phi + b)."""

    key = "map"

    def probs(self, phi) -> np.ndarray:
        return torch.softmax(self._logits(phi), 1).double().numpy()

    def _predict(self, subset):
        return bayes.softmax_t(self.member.logits(subset)), None, {}

    def head_samples(self, n: int = 1, seed: int = 0) -> torch.Tensor:
        """The MAP head n times (a point mass): n x C x K."""
        return self.head.weight.detach().expand(n, *self.head.weight.shape).clone()


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

    def probs(self, phi) -> np.ndarray:
        """The mean of `n_samples` dropout masks (member m's masks use seed m)."""
        return self.sample_probs(phi, self.n_samples, self.member.index).mean(0)

    def _predict(self, subset):
        t = time.perf_counter()
        s = self.sample_probs(self.member.features(subset)[0], self.n_samples, seed=self.member.index)
        return s.mean(0), s, dict(predict_s=time.perf_counter() - t)

    def head_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """Dropout masks folded into the head: W_s = W diag(m_s) / (1 - p), S x C x K (`posteriors.mc_dropout_heads`)."""

        return mc_dropout_heads(self.head.weight.detach(), self.rate, n, seed=seed)


def mc_dropout_heads(W: torch.Tensor, p: float, n: int, seed: int = 0) -> torch.Tensor:
    """MC-dropout samples of a linear head (n x C x K) for dropout with rate p on the pooled features:
    W_s = W * m_s / (1 - p), m_s in {0, 1}^K Bernoulli(1 - p), shared by the classes, from a generator seeded
    with `seed`. `cam_samples(fmap, W_s, ...)` then gives CAM_s = sum_k w_ck m_sk A_k / (1 - p), whose spatial
    mean is the dropout network's logit minus the bias. The same n masks serve every image of a call (common
    random numbers: each image's spread is still that of n independent dropout draws)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout rate p must be in [0, 1), got {p}")
    W = W.detach()
    g = torch.Generator().manual_seed(seed)
    m = torch.bernoulli(torch.full((n, 1, W.shape[-1]), 1 - p), generator=g).to(W)
    return W.unsqueeze(0) * m / (1 - p)
