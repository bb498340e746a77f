"""Combinations over members: the mean of the members' predictives (deep ensemble of MAP members, mixture of
Laplace approximations); their samples are the members' predictives, M x N x C."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from utils.posteriors.base import Posterior, Predictions

# --------------------------------------------------------------------------- combinators


@dataclass
class Combination:
    """The mean of M members' predictives under one single-model method (`of`): the deep ensemble of MAP
    members, the mixture of Laplace approximations. Its samples are the members' predictives."""

    of: str
    posteriors: list[Posterior] = field(default_factory=list)
    stochastic: ClassVar[bool] = True
    label: str = ""

    def predict(self, subset: str = "test") -> Predictions:
        """Every member's saved predictions on `subset`, as one record (`Predictions`, `combination=True`)."""
        runs = [p.predict(subset) for p in self.posteriors]
        return Predictions(self.label or self.of, np.stack([r["probs"] for r in runs]), combination=True,
                           member_samples=[r.get("samples") for r in runs],
                           info=[{k: v for k, v in r.items() if k not in ("probs", "samples")} for r in runs])

    # the verbs of `Posterior`, on a list of inputs: one per member (its features or images, `inputs_of`)
    def probs(self, xs) -> np.ndarray:
        """N x C: the mean of the members' predictives."""
        return self.sample_probs(xs).mean(0)

    def sample_probs(self, xs, n: int | None = None, seed: int = 0) -> np.ndarray:
        """M x N x C: the members' predictives (the combination's samples; `n` and `seed` are not used)."""
        return np.stack([p.probs(x) for p, x in zip(self.posteriors, xs)])

    def head_samples(self, n: int | None = None, seed: int = 0) -> None:
        """None: a combination has no distribution over one head; its samples are its members (their CAMs are
        what `explain.scores.explanation_spread` takes for it)."""
        return None

    def probs_and_samples(self, xs, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        s = self.sample_probs(xs)
        return s.mean(0), s
