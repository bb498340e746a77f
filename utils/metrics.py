"""Metrics on arrays of predictive probabilities (N x C) and integer labels (N).

All take probabilities, not logits, so every method (MAP, temperature scaling,
Laplace, ensembles) is scored by the same code. Natural logarithms throughout.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def _check(probs, labels):
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise ValueError(f"expected probs N x C and labels N, got {probs.shape} and {labels.shape}")
    return probs, labels.astype(int)


def softmax(logits, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def accuracy(probs, labels) -> float:
    probs, labels = _check(probs, labels)
    return float((probs.argmax(1) == labels).mean())


def macro_f1(probs, labels, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 scores over all classes (scikit-learn's definition)."""
    from sklearn.metrics import f1_score

    probs, labels = _check(probs, labels)
    c = num_classes or probs.shape[1]
    return float(f1_score(labels, probs.argmax(1), average="macro", labels=np.arange(c), zero_division=0))


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the true class."""
    probs, labels = _check(probs, labels)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, None)).mean())


def brier(probs, labels) -> float:
    """Mean over samples of the squared error summed over classes (0 best, 2 worst)."""
    probs, labels = _check(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def ece(probs, labels, n_bins: int = 15) -> float:
    """Top-label expected calibration error with `n_bins` equal-width confidence bins.

    sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|, the confidence being the
    largest probability; bins are right-closed, (k/n, (k+1)/n], as in torchmetrics.
    """
    probs, labels = _check(probs, labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.abs(np.bincount(b, correct, n_bins) - np.bincount(b, conf, n_bins))
    return float(gap.sum() / len(labels))


def summary(probs, labels) -> dict:
    """accuracy, macro-F1, NLL, Brier and ECE (15 bins) of one set of predictions."""
    return dict(accuracy=accuracy(probs, labels), macro_f1=macro_f1(probs, labels), nll=nll(probs, labels),
                brier=brier(probs, labels), ece=ece(probs, labels))
