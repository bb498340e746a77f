"""Robustness (notebook 06): rotations, corruptions, unfamiliar body parts, and where abnormality CAMs point.

Every method predicts from the same batch through `Predictors`, which holds the trained members, member 0's
temperature and last-layer Laplace, and returns probabilities (and per-sample probabilities where the method
has samples, for the mutual information).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as TF

from . import bayes, explain, metrics
from .data import PIXEL_MEAN, PIXEL_STD, standardize

CORRUPTIONS = {  # kind -> parameter per severity 1, 2, 3
    "noise": (0.05, 0.12, 0.25),  # Gaussian noise std on [0, 1] images
    "blur": (0.8, 1.6, 3.2),  # Gaussian blur sigma in px at 64 px (scaled with the image size)
    "contrast inversion": (0.35, 0.7, 1.0),  # blend towards the inverted image
    "low exposure": (0.5, 0.3, 0.15),  # intensity scale
    "heavy crop": (0.7, 0.5, 0.3),  # side of the central crop kept, zoomed back to full size
    "blank": (0.0, 0.5, 1.0),  # a uniform image of this grey level
}


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate standardised images (B x C x H x W) by `angle` degrees counter-clockwise (as displayed) about the
    centre, with the training augmentation's resampling (data.BatchAugment): one affine_grid and a bilinear
    grid_sample, black (explain.BLACK on the standardised scale) outside the frame, blended bilinearly at its
    border. Angles that are multiples of 360 return `x` itself.

    torchvision's rotate(..., BILINEAR, fill=...) is not used: it multiplies the border pixels by the
    in-frame weight twice (mask * (sampled - fill) + fill with an already weighted sample)."""
    import torch.nn.functional as F

    if angle % 360 == 0:
        return x
    h, w = x.shape[-2:]
    a = np.deg2rad(float(angle))
    c, s = float(np.cos(a)), float(np.sin(a))
    # output -> input sampling in affine_grid's [-1, 1] coordinates, a true rotation in pixels for any aspect
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    black = explain.BLACK
    return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black


def corrupt(x: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """A corruption of standardised images at severity 1..3 (see CORRUPTIONS)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity}")
    v = CORRUPTIONS[kind][severity - 1]
    x01 = x * PIXEL_STD + PIXEL_MEAN
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        y = x01 + v * torch.randn(x01.shape, generator=g)
    elif kind == "blur":
        s = v * x.shape[-1] / 64
        k = 2 * int(3 * s) + 1
        y = TF.gaussian_blur(x01, [k, k], [s, s])
    elif kind == "contrast inversion":
        y = (1 - v) * x01 + v * (1 - x01)
    elif kind == "low exposure":
        y = x01 * v
    elif kind == "heavy crop":
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * v)), max(1, round(w * v))
        y = TF.resize(TF.center_crop(x01, [ch, cw]), [h, w], antialias=True)
    else:  # blank
        y = torch.full_like(x01, v)
    return standardize(y.clamp(0, 1))


class Predictors:
    """MAP, temperature scaling and last-layer Laplace (kron) of member 0, and the deep ensemble, on any batch."""

    def __init__(self, models, temperature: float, laplace: bayes.LaplaceFit, n_samples: int = 100, seed: int = 0):
        self.models = [m.eval().to(memory_format=torch.channels_last) for m in models]
        self.temperature, self.laplace, self.n_samples, self.seed = temperature, laplace, n_samples, seed

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, dict]:
        x = x.contiguous(memory_format=torch.channels_last)
        m0 = self.models[0]
        phi = m0.embed(x)
        logits = m0.fc(phi)
        member = torch.stack([torch.softmax(logits, 1)] + [torch.softmax(m(x), 1) for m in self.models[1:]])
        f_mu, f_var = bayes.logit_moments(self.laplace, phi.numpy())
        la_samples = bayes.mc_samples(f_mu, f_var, self.n_samples, self.seed)
        return {
            "MAP": dict(probs=member[0].double().numpy()),
            "temperature scaling": dict(probs=torch.softmax(logits.double() / self.temperature, 1).numpy()),
            "Laplace, kron": dict(probs=bayes.probit(f_mu, f_var, project=True), samples=la_samples.numpy()),
            f"deep ensemble (k={len(self.models)})": dict(probs=member.mean(0).double().numpy(),
                                                          samples=member.double().numpy()),
        }

    def batched(self, xs: torch.Tensor, batch: int = 256) -> dict[str, dict]:
        parts = [self(xs[i:i + batch]) for i in range(0, len(xs), batch)]
        out = {}
        for name in parts[0]:
            out[name] = {k: np.concatenate([p[name][k] for p in parts], axis=1 if k == "samples" else 0)
                         for k in parts[0][name]}
        return out


def uncertainty(pred: dict) -> dict[str, np.ndarray]:
    """Predictive entropy, and mutual information where the method has samples."""
    out = dict(entropy=metrics.entropy(pred["probs"]))
    if "samples" in pred:
        out["mutual information"] = metrics.mutual_information(pred["samples"])
    return out


def scores(pred: dict, labels: np.ndarray) -> dict:
    s = metrics.summary(pred["probs"], labels)
    s["entropy"] = float(metrics.entropy(pred["probs"]).mean())
    return s


def ood_auroc(score_in: np.ndarray, score_out: np.ndarray) -> float:
    """AUROC of telling unfamiliar inputs (positives) from the test set by a score (higher = more unfamiliar)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(score_in)), np.ones(len(score_out))]
    return float(roc_auc_score(y, np.r_[score_in, score_out]))


def rotation_sweep(predictors: Predictors, x: torch.Tensor, labels: np.ndarray, angles) -> pd.DataFrame:
    """Accuracy, ECE, NLL, Brier and mean entropy of each method for the test images rotated by each angle."""
    rows = []
    for a in angles:
        for name, pred in predictors.batched(rotate(x, a)).items():
            rows.append(dict(angle=a, method=name, **scores(pred, labels)))
    return pd.DataFrame(rows)


def explanation_stability(models, x: torch.Tensor, labels, angles) -> pd.DataFrame:
    """Pearson correlation between the CAM of an image and the CAM of the rotated image rotated back (inside
    the disc both cover), for member 0 and for the ensemble's mean CAM; mean and standard error over images."""
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = (yy ** 2 + xx ** 2) <= (min(h, w) / 2) ** 2
    target = torch.as_tensor(np.array(labels))
    base = {"MAP CAM (member 0)": explain.CAM(models[0])(x, target),
            "ensemble mean CAM": explain.member_maps(models, x, target).mean(0)}
    rows = []
    for a in angles:
        xr = rotate(x, a)
        rot = {"MAP CAM (member 0)": explain.CAM(models[0])(xr, target),
               "ensemble mean CAM": explain.member_maps(models, xr, target).mean(0)}
        for name, m in rot.items():
            back = rotate(m[:, None], -a)[:, 0] if a % 360 else m
            u, v = base[name][:, disc], back[:, disc]
            u, v = u - u.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
            r = ((u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)).clamp_min(1e-12)).numpy()
            rows.append(dict(angle=a, method=name, correlation=r.mean(), se=r.std(ddof=1) / np.sqrt(len(r))))
    return pd.DataFrame(rows)


def where_abnormal_cams_point(maps: torch.Tensor, lesion: np.ndarray) -> pd.DataFrame:
    """For abnormal images whose lesion mask holds a fracture and hardware or a cast: the share whose map
    peaks on the fracture, on hardware, on a cast, or elsewhere."""
    from .phantom import LESION_CAST, LESION_FRACTURE, LESION_HARDWARE

    les = torch.as_tensor(lesion)
    peak = maps.flatten(1).argmax(1)
    at = les.flatten(1).gather(1, peak[:, None]).squeeze(1).numpy()
    has = {k: ((les.flatten(1) & f) != 0).any(1).numpy() for k, f in (("fracture", LESION_FRACTURE),
                                                               ("hardware", LESION_HARDWARE), ("cast", LESION_CAST))}
    rows = []
    for group, sel in (("fracture with hardware or cast", has["fracture"] & (has["hardware"] | has["cast"])),
                       ("fracture alone", has["fracture"] & ~has["hardware"] & ~has["cast"]),
                       ("hardware or cast, no fracture in view", ~has["fracture"] & (has["hardware"] | has["cast"]))):
        if sel.sum() == 0:
            continue
        a = at[sel]
        rows.append({"images": group, "n": int(sel.sum()),
                     "peak on fracture": float(((a & LESION_FRACTURE) > 0).mean()),
                     "peak on hardware": float(((a & LESION_HARDWARE) > 0).mean()),
                     "peak on cast": float(((a & LESION_CAST) > 0).mean()),
                     "peak elsewhere": float((a == 0).mean())})
    return pd.DataFrame(rows)


def images(cache, rows=None) -> torch.Tensor:
    """Standardised images (N x 1 x S x S) straight from a cache (any index, e.g. the unfamiliar-parts tree)."""
    from .data import to_input

    rows = cache.index.row.to_numpy() if rows is None else np.asarray(rows)
    return standardize(to_input(np.asarray(cache.images[np.sort(rows)])[np.argsort(np.argsort(rows))]))


def ood_table(pred_in: dict, pred_out: dict) -> pd.DataFrame:
    """Per method: AUROC of telling `pred_out`'s inputs from `pred_in`'s by entropy and by mutual information."""
    rows = []
    for name in pred_in:
        u_in, u_out = uncertainty(pred_in[name]), uncertainty(pred_out[name])
        rows.append({"method": name, **{f"AUROC by {k}": ood_auroc(u_in[k], u_out[k]) for k in u_in}})
    return pd.DataFrame(rows)


def corruption_sweep(predictors: Predictors, x: torch.Tensor, labels: np.ndarray, seed: int = 0,
                     clean: dict | None = None) -> pd.DataFrame:
    """Scores of each method under each corruption and severity, with the AUROC of telling the corrupted
    images from the clean ones by entropy and by mutual information."""
    clean = clean or predictors.batched(x)
    rows = []
    for kind in CORRUPTIONS:
        for sev in (1, 2, 3):
            pred = predictors.batched(corrupt(x, kind, sev, seed))
            aur = ood_table(clean, pred).set_index("method")
            for name, p in pred.items():
                rows.append(dict(corruption=kind, severity=sev, method=name, **scores(p, labels),
                                 **aur.loc[name].to_dict()))
    return pd.DataFrame(rows)


def ood_intervals(pred_in: dict, pred_out: dict, groups_in, groups_out, n_boot: int = 2000, seed: int = 0
                  ) -> pd.DataFrame:
    """`ood_table` with 95 % intervals: per method and score (entropy; mutual information where the method
    has samples), the AUROC of telling `pred_out`'s inputs from `pred_in`'s, resampling the studies of both
    sets (`evidence.flag_auroc`), and the paired difference from the MAP network's entropy."""
    from . import evidence

    groups = np.concatenate([np.asarray(groups_in, dtype=object).astype(str),
                             "unfamiliar/" + np.asarray(groups_out, dtype=object).astype(str)])
    is_out = np.r_[np.zeros(len(groups_in)), np.ones(len(groups_out))].astype(int)
    base = np.r_[uncertainty(pred_in["MAP"])["entropy"], uncertainty(pred_out["MAP"])["entropy"]]
    rows = []
    for name in pred_in:
        u_in, u_out = uncertainty(pred_in[name]), uncertainty(pred_out[name])
        for k in u_in:
            score = np.r_[u_in[k], u_out[k]]
            d = evidence.flag_auroc(score, is_out, groups, n_boot, seed)
            dd = evidence.paired_auroc_delta(score, base, is_out, groups, n_boot, seed)
            rows.append(dict(method=name, score=k, auroc=d["estimate"], low=d["low"], high=d["high"],
                             delta_vs_map_entropy=dd["delta"], delta_low=dd["low"], delta_high=dd["high"]))
    return pd.DataFrame(rows)


def abnormality_table(runs: dict[str, np.ndarray], labels, study_ids, n_boot: int = 2000, seed: int = 0
                      ) -> pd.DataFrame:
    """MURA's scores of each method's image probabilities (N x 2): the study's probability is the mean over its
    images; study AUROC and Cohen's kappa (MURA's metric) with 95 % bootstrap intervals over studies, and image
    AUROC, accuracy, NLL and ECE as point values."""
    from . import evidence

    rows = []
    for name, pr in runs.items():
        sp, sy, sid = metrics.study_level(pr, labels, study_ids)
        auc = evidence.interval("auroc", sp, sy, sid, n_boot, seed)
        kap = evidence.interval("kappa", sp, sy, sid, n_boot, seed)
        rows.append({"method": name, "study AUROC": auc["estimate"], "AUROC low": auc["low"], "AUROC high": auc["high"],
                     "study kappa": kap["estimate"], "kappa low": kap["low"], "kappa high": kap["high"],
                     "image AUROC": metrics.binary_auroc(pr, labels), "image accuracy": metrics.accuracy(pr, labels),
                     "NLL": metrics.nll(pr, labels), "ECE": metrics.ece(pr, labels)})
    return pd.DataFrame(rows)


def paired_vs(pred: dict, labels, groups, reference: str = "MAP", n_boot: int = 2000, seed: int = 0,
              metrics_=("accuracy", "nll", "ece")) -> pd.DataFrame:
    """Each method's scores on one (e.g. rotated) test set with 95 % study-bootstrap intervals, and its paired
    difference from `reference` (the same resampled studies on both sides)."""
    from . import evidence

    rows = []
    for name, p in pred.items():
        row = dict(method=name)
        for c in metrics_:
            d = evidence.interval(c, p["probs"], labels, groups, n_boot, seed)
            row.update({c: d["estimate"], f"{c}_low": d["low"], f"{c}_high": d["high"]})
            if name != reference:
                dd = evidence.paired_delta(c, p["probs"], pred[reference]["probs"], labels, groups, n_boot, seed)
                row.update({f"delta_{c}": dd["delta"], f"delta_{c}_low": dd["low"], f"delta_{c}_high": dd["high"]})
        rows.append(row)
    return pd.DataFrame(rows)
