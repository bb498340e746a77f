"""Metrics on arrays of predictive probabilities (N x C) and integer labels (N).

All take probabilities, not logits, so every method (MAP, temperature scaling,
Laplace, ensembles) is scored by the same code. Natural logarithms throughout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, f1_score, precision_recall_fscore_support, roc_auc_score

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

    sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|, the confidence being the largest
    probability (float64); bins are right-closed, B_k = (k/n, (k+1)/n] with edges the float64
    numbers k/n (the first bin also holds 0): Guo et al. (2017)'s definition.

    torchmetrics 1.9 (`multiclass_calibration_error(..., norm="l1")`) gives the same value up to
    float32 rounding (about 1e-7) except where a confidence sits exactly on an edge: it casts
    confidences to float32 and bins them left-closed, [k/n, (k+1)/n), against float32
    `torch.linspace(0, 1, n + 1)` edges (torch.bucketize(right=True) - 1), which for n = 15 differ from
    float32(k/15) at k = 3, 6, 7, 8, 9, 10, so an exact k/15 lands in bin k or k - 1 by rounding; and a
    confidence of exactly 1 gets a bin of its own, an (n+1)-th. Here k/n is always in bin k - 1 and 1
    in the last bin. tests/test_metrics.py checks both.
    """
    probs, labels = _check(probs, labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    b = bin_index(conf, n_bins)
    gap = np.abs(np.bincount(b, correct, n_bins) - np.bincount(b, conf, n_bins))
    return float(gap.sum() / len(labels))


def bin_index(conf, n_bins):
    """Bin k of right-closed bins (k/n, (k+1)/n] (0 in bin 0), compared with the float64 edges k/n exactly."""
    edges = np.arange(n_bins + 1) / n_bins
    return np.clip(np.searchsorted(edges, np.asarray(conf, np.float64), side="left") - 1, 0, n_bins - 1)


def reliability(probs, labels, n_bins: int = 15) -> dict:
    """Reliability-diagram data of the top label: per bin the count, accuracy and mean confidence
    (NaN in empty bins), with the bin edges."""
    probs, labels = _check(probs, labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    b = bin_index(conf, n_bins)
    n = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        acc = np.bincount(b, correct, n_bins) / n
        mean_conf = np.bincount(b, conf, n_bins) / n
    return dict(edges=np.arange(n_bins + 1) / n_bins, count=n, accuracy=acc, confidence=mean_conf)


def mce(probs, labels, n_bins: int = 15) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
    r = reliability(probs, labels, n_bins)
    ok = r["count"] > 0
    return float(np.abs(r["accuracy"][ok] - r["confidence"][ok]).max())


def classwise_ece(probs, labels, n_bins: int = 15) -> np.ndarray:
    """Per class c, the ECE of the one-vs-rest probabilities p_c against the indicator y == c
    (all N images, equal-width bins of p_c)."""
    probs, labels = _check(probs, labels)
    out = []
    for c in range(probs.shape[1]):
        p, hit = probs[:, c], (labels == c).astype(np.float64)
        b = bin_index(p, n_bins)
        out.append(np.abs(np.bincount(b, hit, n_bins) - np.bincount(b, p, n_bins)).sum() / len(labels))
    return np.array(out)


def entropy(probs) -> np.ndarray:
    """Predictive entropy H[p] per image (nats)."""
    p = np.clip(np.asarray(probs, np.float64), EPS, 1)
    return -(p * np.log(p)).sum(-1)


def mutual_information(samples) -> np.ndarray:
    """Epistemic part of the predictive entropy from per-sample probabilities (S x N x C):
    H[mean_s p_s] - mean_s H[p_s] (the information the label carries about the parameters)."""
    s = np.asarray(samples, np.float64)
    return entropy(s.mean(0)) - entropy(s).mean(0)


def selective(probs, labels, score=None) -> dict:
    """Accuracy against coverage when the least certain images are referred first (by `score`,
    higher = less certain; default 1 - confidence), and the area under the risk-coverage curve (AURC)."""
    probs, labels = _check(probs, labels)
    score = 1 - probs.max(1) if score is None else np.asarray(score)
    order = np.argsort(score, kind="stable")  # most certain first
    correct = (probs.argmax(1) == labels)[order].astype(np.float64)
    kept = np.arange(1, len(labels) + 1)
    acc = np.cumsum(correct) / kept
    return dict(coverage=kept / len(labels), accuracy=acc, aurc=float(np.mean(1 - acc)))


def binary_auroc(probs, labels) -> float:
    """AUROC of the positive class (column 1) for a binary task."""
    probs, labels = _check(probs, labels)
    return float(roc_auc_score(labels, probs[:, 1]))


def cohen_kappa(probs, labels) -> float:
    """Cohen's kappa of the predicted class against the label (MURA's metric)."""
    probs, labels = _check(probs, labels)
    return float(cohen_kappa_score(labels, probs.argmax(1)))


def study_level(probs, labels, study_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate image predictions per study as MURA scores them: the mean of the study's image
    probabilities. Returns (study probabilities, study labels, study ids), ids in first-seen order."""
    probs, labels = _check(probs, labels)
    df = pd.DataFrame(probs).assign(_y=labels, _s=np.asarray(study_ids))
    g = df.groupby("_s", sort=False)
    if (g._y.nunique() > 1).any():
        raise ValueError("images of one study carry different labels")
    agg = g.mean()
    # a study whose images all carry the same probabilities gets exactly them: a float mean of equal values can
    # differ in the last bit, which would rank tied studies (e.g. a per-part constant) by their number of views
    cols = [c for c in agg.columns if c != "_y"]
    same = (g[cols].max() == g[cols].min()).all(axis=1)
    agg.loc[same, cols] = g[cols].first().loc[same]
    return agg.drop(columns="_y").to_numpy(), agg._y.to_numpy().astype(int), agg.index.to_numpy()


def summary(probs, labels) -> dict:
    """accuracy, macro-F1, NLL, Brier and ECE (15 bins) of one set of predictions."""
    return dict(accuracy=accuracy(probs, labels), macro_f1=macro_f1(probs, labels), nll=nll(probs, labels),
                brier=brier(probs, labels), ece=ece(probs, labels))


def per_class(labels, pred, classes):
    """Precision, recall, F1 and support per class (scikit-learn), one row per class (lower-case names)."""
    prec, rec, f1, support = precision_recall_fscore_support(labels, pred, labels=range(len(classes)),
                                                            zero_division=0)
    return pd.DataFrame({"precision": prec, "recall": rec, "F1": f1, "test images": support},
                        index=[c.lower() for c in classes])


def adaptive_ece(probs, labels, n_bins: int = 15) -> float:
    """Top-label ECE with equal-mass (adaptive) bins: the images sorted by confidence (the largest
    probability; ties in a stable order) are split into `n_bins` consecutive groups whose sizes differ
    by at most one (`numpy.array_split`), and sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|.
    Nixon et al. (2019)'s adaptive calibration error; with N a multiple of n_bins and the confidences
    spread so that every equal-width bin of `ece` holds N / n_bins images, it equals `ece`."""
    probs, labels = _check(probs, labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    gap = sum(abs(correct[b].sum() - conf[b].sum()) for b in np.array_split(order, n_bins) if len(b))
    return float(gap / len(labels))


def aurc(probs, labels, score=None) -> float:
    """Area under the risk-coverage curve, `selective(...)["aurc"]`: the mean over coverages i/N of the
    error rate among the i most certain images (higher `score` = less certain; default 1 - confidence)."""
    return selective(probs, labels, score)["aurc"]


def generalized_risk_coverage(probs, labels, score=None) -> dict:
    """Generalized risk-coverage curve (Traub et al. 2024): at each acceptance threshold, the coverage
    (share of images accepted) and the generalized risk P(accepted and wrong) = errors accepted / N.

    Images are accepted most certain first (higher `score` = less certain; default 1 - confidence); images
    with the same score are accepted together, so the curve has one point per distinct score, preceded by
    (0, 0). Returns dict(coverage, risk) as arrays starting at 0."""
    probs, labels = _check(probs, labels)
    # -confidence rather than 1 - confidence: the same order, without merging distinct confidences by rounding
    score = -probs.max(1) if score is None else np.asarray(score, np.float64)
    order = np.argsort(score, kind="stable")
    s = score[order]
    wrong = (probs.argmax(1) != labels)[order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]  # last image of each block of tied scores
    n = len(labels)
    cov = np.r_[0.0, (np.arange(1, n + 1) / n)[last]]
    risk = np.r_[0.0, (np.cumsum(wrong) / n)[last]]
    return dict(coverage=cov, risk=risk)


def augrc(probs, labels, score=None) -> float:
    """Area under the generalized risk-coverage curve (AUGRC, Traub et al. 2024): the trapezoidal integral
    over coverage of P(accepted and wrong) (`generalized_risk_coverage`, tied scores accepted together).
    Equals (1 - AUROC) * acc * (1 - acc) + (1 - acc)^2 / 2 exactly, with AUROC that of the certainty
    separating correct from wrong predictions (ties counted 1/2) and acc the accuracy. Lower is better:
    (1 - acc)^2 / 2 for a perfect ranking, (1 - acc) / 2 for a random one (AUROC 1/2)."""
    c = generalized_risk_coverage(probs, labels, score)
    cov, risk = c["coverage"], c["risk"]
    return float(np.sum(np.diff(cov) * (risk[1:] + risk[:-1]) / 2))
