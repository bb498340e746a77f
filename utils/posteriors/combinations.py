"""Combinations over members: the mean of the members' predictives (deep ensemble of MAP members, mixture of
Laplace approximations); their samples are the members' predictives, M x N x C."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from utils.posteriors.base import Posterior

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
