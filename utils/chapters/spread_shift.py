"""Notebook 06 (issue 23): does explanation spread flag unfamiliar body parts and shifted images beyond the
ensemble's predictive entropy and mutual information, and is it associated with errors once the entropy is
known?

**Scores, per image, from one forward pass per member** (`member_scores`): the members' feature maps give both
their probabilities (the ensemble's predictive is their mean: its entropy, and the mutual information of the
members' predictives) and their CAMs, each an einsum of the feature maps with the member's head weights
(`explain.methods.cam_samples`, centred over classes). The *explanation spread* is notebook 05's for the
deep ensemble (`explain.scores.explanation_spread` with the members as the source, `heads={label: None}`):
the CAMs of every member of the class the ensemble predicts, upsampled to the image, and per image the mean
over pixels of their standard deviation over members, divided by the mean over pixels of |mean CAM|
(`explain.scores.spread_scores`'s "relative", through `map_spread`; its unnormalised mean std is kept
as `spread_std`). The tests check that `member_scores` and `explanation_spread` agree.

**Telling unfamiliar or shifted images from the clean test images** (`detection_table`): the AUROC of each score
(higher = more unfamiliar), with a study-bootstrap interval, and the paired differences spread − entropy and
spread − mutual information on the same resamples (the numbers of `evidence.flag_auroc` and
`evidence.paired_auroc_delta`, as notebook 05 flags errors with them). The unfamiliar body parts are other
studies, resampled together with the test studies, as `robustness.ood_intervals` does; a shifted copy of test
images (`shifted_inputs`: the rotation and the noise of notebook 06's mixed test set, on `SHIFTED_IMAGES` test
images drawn at random, to keep the section cheap) belongs to the same studies, so a resampled study brings its
clean and its shifted images together.

**Partial association with errors, given the entropy** (`partial_association`): a logistic regression of
"the ensemble is wrong" on the standardised entropy and the standardised spread of the clean test images,
unpenalised, fitted by Newton's method at once for the full data and every study-bootstrap replicate (its
weights, `evidence.study_weights`). The spread's coefficient is the change in the log-odds of an error per
standard deviation of spread *at a fixed entropy*. Chosen over the AUROC of the spread within entropy strata:
with a few dozen errors, strata leave a handful per stratum, the bins are an arbitrary choice and the spread
still varies with the entropy inside each; the regression uses every error, gives a direction and a size, and
its interval comes from refitting in each replicate. Why condition at all: for a network with global average
pooling the spatial mean of a CAM is the explained class's centred logit less its bias (up to the upsampling's
border), and the mean over pixels of the std over members is at least the std over members of the spatial means
(the triangle inequality), so the (unnormalised) spread of the CAMs is tied to the spread of the members'
logits, which the entropy of their mean and the mutual information see.

The chapter's words (`reading`) call a difference only where its interval excludes zero, and otherwise say
"no difference shown", with the interval: the absence of evidence, not evidence that spread does not help.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from utils.chapters.robustness import corrupt, rotate
from utils.evaluation import evidence, metrics
from utils.evaluation.evidence import fmt_delta, fmt_interval
from utils.explain.methods import cam_samples, forward_members, predicted_classes, upsample
from utils.explain.scores import deletion_sample, spread_scores

SCORES = ("explanation spread", "entropy", "mutual information")
SPREAD, ENTROPY, MI = SCORES
SHIFTS = (("rotation", 45), ("noise", 2))
"""The shifted copies of the test images (`shifted_inputs`): those of notebook 06's mixed test set
(`robustness.mixed_test_set`): a rotation by 45 degrees and Gaussian noise at severity 2."""
SHIFTED_IMAGES = 400
"""How many test images (drawn at random, seeded: `explain.scores.deletion_sample`) `section` shifts, each
compared with its own clean original: each shift costs one forward pass of every member over them."""


# --------------------------------------------------------------------------- scores per image


def map_spread(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(relative spread, mean std) per image of M x B x H x W maps: `explain.scores.spread_scores`."""
    s = spread_scores(maps)
    return s["relative"], s["std"]


@torch.no_grad()
def member_scores(models, x: torch.Tensor, batch: int = 256) -> pd.DataFrame:
    """Per image of `x` (standardised, N x 1 x H x W), from one forward pass of each member: the explanation
    spread of the members' CAMs of the ensemble's predicted class (relative, and `spread_std`, the mean std),
    the ensemble's predictive entropy and the mutual information of its members, and the ensemble's predicted
    class (`predicted`)."""
    cols: dict[str, list] = {}
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        fmaps, probs = forward_members(models, xb.contiguous(memory_format=torch.channels_last))
        te = predicted_classes(probs)[1]
        maps = upsample(torch.stack([cam_samples(f, m.fc.weight.detach(), te)[0] for m, f in zip(models, fmaps)]),
                        xb.shape[-2:])  # M x B x H x W, as explanation_spread's (one interpolation call)
        relative, std = map_spread(maps)
        p = probs.double().numpy()
        for k, v in ((SPREAD, relative), ("spread_std", std), (ENTROPY, metrics.entropy(p.mean(0))),
                     (MI, metrics.mutual_information(p)), ("predicted", te.numpy())):
            cols.setdefault(k, []).append(v)
    return pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})


def shifted_inputs(x: torch.Tensor, shifts=SHIFTS, seed: int = 0) -> dict[str, torch.Tensor]:
    """{name: shifted copy of x}: ("rotation", degrees) through `robustness.rotate`, (corruption, severity)
    through `robustness.corrupt` (seeded)."""
    out = {}
    for kind, level in shifts:
        if kind == "rotation":
            out[f"rotated {level:g}°"] = rotate(x, level)
        else:
            out[f"{kind}, severity {level}"] = corrupt(x, kind, level, seed)
    return out


# --------------------------------------------------------------------------- telling them apart


def detection_rows(clean: pd.DataFrame, other: pd.DataFrame, groups_clean, groups_other, same_studies: bool,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """AUROC of telling `other`'s images (positives) from `clean`'s by each of `SCORES`, with study-bootstrap
    intervals, and each score's paired difference from the entropy (`delta_vs_entropy*`) and from the mutual
    information (`delta_vs_mi*`), on the same resamples. `same_studies`: `other` is a shifted copy of the same
    studies (their study ids are kept, so a study is resampled with both its copies); otherwise its studies are
    distinct ones, resampled beside the clean studies (as `robustness.ood_intervals`).

    The numbers are those of `evidence.flag_auroc` and `evidence.paired_auroc_delta` (the tests check it), from
    one weight matrix and one set of replicate AUROCs per score instead of one per call."""
    g_clean = np.asarray(groups_clean, dtype=object).astype(str)
    g_other = np.asarray(groups_other, dtype=object).astype(str)
    groups = np.concatenate([g_clean, g_other if same_studies else np.char.add("other/", g_other)])
    is_other = np.r_[np.zeros(len(clean)), np.ones(len(other))].astype(int)
    W = evidence.study_weights(evidence.group_codes(groups)[0], n_boot, seed)
    one = np.ones((1, len(groups)))
    est, reps = {}, {}
    for k in SCORES:
        s = np.r_[clean[k].to_numpy(float), other[k].to_numpy(float)]
        est[k] = float(evidence.weighted_metric("auroc", s, is_other, one)[0])
        reps[k] = evidence.weighted_metric("auroc", s, is_other, W)
    rows = []
    for k in SCORES:
        d = evidence.interval_summary(est[k], reps[k], level, bounds=evidence.BOUNDS["auroc"])
        row = dict(score=k, auroc=d["estimate"], low=d["low"], high=d["high"])
        for ref, key in ((ENTROPY, "delta_vs_entropy"), (MI, "delta_vs_mi")):
            if ref != k:
                dd = evidence.delta_summary(est[k] - est[ref], reps[k] - reps[ref], level)
                row.update({key: dd["delta"], f"{key}_low": dd["low"], f"{key}_high": dd["high"]})
        rows.append(row)
    return pd.DataFrame(rows).assign(n_clean=len(clean), n_other=len(other))


def detection_table(conditions: dict, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`detection_rows` for each condition, {name: (clean frame, other frame, clean groups, other groups,
    same_studies)}: one row per (condition, score)."""
    return pd.concat([detection_rows(*args, n_boot=n_boot, seed=seed).assign(condition=name)
                      for name, args in conditions.items()], ignore_index=True
                     )[["condition", "score", "auroc", "low", "high", "delta_vs_entropy", "delta_vs_entropy_low",
                        "delta_vs_entropy_high", "delta_vs_mi", "delta_vs_mi_low", "delta_vs_mi_high", "n_clean",
                        "n_other"]]


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: each score's AUROC [interval], and spread − entropy, spread − MI [intervals]."""
    rows = []
    for cond, g in table.groupby("condition", sort=False):
        t = g.set_index("score")
        row = {"condition": cond, "images (clean / other)": f"{t.n_clean.iloc[0]} / {t.n_other.iloc[0]}"}
        row.update({f"AUROC by {k}": fmt_interval(dict(estimate=t.auroc[k], low=t.low[k], high=t.high[k]), 1, 3)
                    for k in SCORES})
        s = t.loc[SPREAD]
        row["spread − entropy"] = fmt_delta(dict(delta=s.delta_vs_entropy, low=s.delta_vs_entropy_low,
                                                 high=s.delta_vs_entropy_high), 1, 3)
        row["spread − MI"] = fmt_delta(dict(delta=s.delta_vs_mi, low=s.delta_vs_mi_low, high=s.delta_vs_mi_high),
                                       1, 3)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- partial association with errors


def logistic_fits(X, y, W, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Unpenalised logistic regression of y (N) on [1, X] (N x F) under each row of the weights W (B x N), by
    Newton's method on all rows at once: B x (1 + F) coefficients (intercept first). A row that does not
    converge (separation, too few errors under its weights) is NaN."""
    A = np.column_stack([np.ones(len(y)), np.asarray(X, np.float64).reshape(len(y), -1)])
    y, W = np.asarray(y, np.float64), np.atleast_2d(np.asarray(W, np.float64))
    k = A.shape[1]
    outer = (A[:, :, None] * A[:, None, :]).reshape(len(y), k * k)
    beta = np.zeros((len(W), k))
    done, failed = np.zeros(len(W), bool), np.zeros(len(W), bool)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(np.where(failed[:, None], 0.0, beta) @ A.T, -30, 30)))
        grad = (W * (y - p)) @ A
        H = ((W * p * (1 - p)) @ outer).reshape(-1, k, k) + 1e-12 * np.eye(k)
        step = np.linalg.solve(H, grad[..., None])[..., 0]
        step[done | failed] = 0
        beta += step
        failed |= ~np.isfinite(beta).all(1) | (np.abs(beta).max(1) > 50)  # diverging: no finite MLE
        done |= (np.abs(step).max(1) < tol) & ~failed
        if (done | failed).all():
            break
    beta[~done | failed | (np.abs(beta).max(1) > 25)] = np.nan
    return beta


def standardised(v) -> np.ndarray:
    """(v - mean) / sd over the full data (sd with ddof 0; a constant gives zeros)."""
    v = np.asarray(v, np.float64)
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def partial_association(wrong, entropy, spread, groups, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """The spread's association with errors given the entropy: the coefficients of a logistic regression of
    `wrong` on the standardised entropy and spread (log-odds per standard deviation of the full data), each
    with its study-bootstrap interval (the regression refitted under each replicate's weights; `DELTA_RULE`,
    as for any effect whose verdict is whether it excludes zero). Returns dict(spread=..., entropy=..., each
    dict(delta, low, high, se, n_boot, excludes_zero)), errors and n."""
    wrong = np.asarray(wrong).astype(int)
    X = np.column_stack([standardised(entropy), standardised(spread)])
    est = logistic_fits(X, wrong, np.ones((1, len(wrong))))[0]
    reps = logistic_fits(X, wrong, evidence.study_weights(evidence.group_codes(groups, len(wrong))[0], n_boot, seed))
    out = {name: evidence.delta_summary(float(est[j]), reps[:, j], level) for j, name in ((1, ENTROPY), (2, SPREAD))}
    return dict(out, errors=int(wrong.sum()), n=len(wrong))


# --------------------------------------------------------------------------- the section, its results and Reading


def correlations(clean: pd.DataFrame) -> dict:
    """Spearman correlation of the spread with the entropy and with the mutual information on the clean images."""
    return {k: float(spearmanr(clean[SPREAD], clean[k]).statistic) for k in (ENTROPY, MI)}


def section(models, x: torch.Tensor, y, groups, x_ood: torch.Tensor, groups_ood, n_boot: int = 2000,
            seed: int = 0, shifts=SHIFTS, n_shifted: int = SHIFTED_IMAGES) -> dict:
    """Notebook 06's section, from the members, the clean test images (labels y, study ids groups) and the
    unfamiliar images (their study ids): `member_scores` of the clean and unfamiliar images and of `n_shifted`
    test images drawn at random under each shift (one forward pass per member each), their `detection_table`
    (`table`: the unfamiliar images against every clean test image, each shifted image against its own clean
    original), the `partial_association` of the spread with the ensemble's errors on every clean test image
    given the entropy, and the spread's `correlations`."""
    groups = np.asarray(groups)
    clean = member_scores(models, x)
    sub = deletion_sample(len(x), n_shifted, seed)
    conditions = {"unfamiliar body parts": (clean, member_scores(models, x_ood), groups, groups_ood, False)}
    conditions.update({name: (clean.iloc[sub].reset_index(drop=True), member_scores(models, xs), groups[sub],
                              groups[sub], True) for name, xs in shifted_inputs(x[sub], shifts, seed).items()})
    wrong = clean.predicted.to_numpy() != np.asarray(y)
    return dict(table=detection_table(conditions, n_boot, seed),
                partial_association=partial_association(wrong, clean[ENTROPY], clean[SPREAD], groups, n_boot, seed),
                correlations=correlations(clean))


def results(sec: dict) -> dict:
    """What notebook 06 writes under `spread_shift`: `section`'s table as records, its partial association
    and correlations."""
    return dict(detection=sec["table"].to_dict(orient="records"), partial_association=sec["partial_association"],
                correlations=sec["correlations"])


def compare(d: dict, above: str, below: str) -> str:
    """'above' / 'below' where the interval of a difference excludes zero on that side, else 'no difference shown'."""
    return above if d["low"] > 0 else below if d["high"] < 0 else "no difference shown"


def condition_line(table: pd.DataFrame, condition: str) -> str:
    """One condition in a sentence: the three AUROCs, and the spread's paired differences with their words."""
    t = table[table.condition == condition].set_index("score")
    s = t.loc[SPREAD]

    def auc(k):
        return fmt_interval(dict(estimate=t.auroc[k], low=t.low[k], high=t.high[k]), 1, 3)

    def vs(name, key):
        d = dict(delta=s[key], low=s[f"{key}_low"], high=s[f"{key}_high"])
        word = compare(d, f"the spread tells them apart better than the {name}",
                       f"the spread tells them apart less well than the {name}")
        return f"spread − {name} {fmt_delta(d, 1, 3)} ({word})"

    return (f"**{condition}** ({int(s.n_other)} images against {int(s.n_clean)} clean): AUROC by spread {auc(SPREAD)}, "
            f"by entropy {auc(ENTROPY)}, by mutual information {auc(MI)}; paired, {vs('entropy', 'delta_vs_entropy')}; "
            f"{vs('mutual information', 'delta_vs_mi')}.")


def reading(sec: dict, members: int) -> str:
    """The section's Reading (Markdown) from `section`'s table, partial association and correlations."""
    table, assoc, mutual = sec["table"], sec["partial_association"], sec.get("correlations")
    b, h = assoc[SPREAD], assoc[ENTROPY]
    word = compare(b, "at the same entropy, images with more spread are more often wrong",
                   "at the same entropy, images with more spread are less often wrong")
    if word == "no difference shown":
        word = ("no association shown given the entropy: these data neither show that the spread adds to the "
                "entropy nor rule it out")
    corr = ("" if not mutual else f" On the clean images the spread's rank correlation with the entropy is "
            f"{mutual[ENTROPY]:.2f} and with the mutual information {mutual[MI]:.2f}.")
    lines = "\n".join(f"- {condition_line(table, c)}" for c in dict.fromkeys(table.condition))
    return f"""
**Reading** (the deep ensemble of {members} members: the spread of its members' CAMs of its predicted class,
its predictive entropy and its members' mutual information; 95 % intervals from the study bootstrap,
differences paired; a difference is called only where its interval excludes zero; {2 * len(set(table.condition))}
comparisons, not corrected for multiplicity, so one interval just clear of zero is weak evidence).

{lines}
- Errors on the clean test images ({assoc['errors']} of {assoc['n']}), logistic regression on the standardised
  entropy and spread: spread {fmt_delta(b, 1, 2)} in log-odds per standard deviation ({word});
  entropy {fmt_delta(h, 1, 2)}.{corr}
"""
