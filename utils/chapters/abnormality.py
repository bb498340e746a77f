"""MURA's own task (notebook 07): normal against abnormal, scored per study as MURA scores it.

A study's probability of abnormality is the mean of its images' (Rajpurkar et al., 2018: "the arithmetic mean
of the abnormality probabilities output by the network for each image"; abnormal where it exceeds 0.5). The
chapter reports, for every registered posterior, the study-level AUROC and Cohen's kappa (MURA's headline
metric) overall and per body part with 95 % bootstrap intervals over studies (`study_table`); the published
figures beside them (`REFERENCE`, with their split, status and source: none is on this phantom, and MURA's own
are on a hidden test set); where the CAM of the abnormal class peaks on the phantom's lesion masks
(`cam_peaks`); and what resolution the task needs (`resolution_sweep`: one member on one body part per image
size, with its training cost).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from utils import data, explain
from utils.chapters.plots import overlay
from utils.config import Profile
from utils.data.images import PIXEL_MEAN, PIXEL_STD
from utils.evaluation import evidence, metrics
from utils.models import learnability
from utils.run import Run

# --------------------------------------------------------------------------- study-level scores


def abnormality_table(runs: dict[str, np.ndarray], labels, study_ids, n_boot: int = 2000, seed: int = 0
                      ) -> pd.DataFrame:
    """MURA's scores of each method's image probabilities (N x 2): the study's probability is the mean over its
    images; study AUROC and Cohen's kappa (MURA's metric) with 95 % bootstrap intervals over studies, and image
    AUROC, accuracy, NLL and ECE as point values."""
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


def study_table(runs: dict[str, np.ndarray], labels, study_ids, body_parts, n_boot: int = 2000, seed: int = 0,
                min_studies: int = 10) -> pd.DataFrame:
    """`abnormality_table` overall (body part "all") and per body part, with each subset's studies and share of
    abnormal studies. A part with fewer than `min_studies` test studies, or without both labels, gets no scores
    (an AUROC needs both classes; a handful of studies gives no interval worth printing); the whole test split
    is scored whenever it holds both labels."""
    labels, study_ids, body_parts = np.asarray(labels), np.asarray(study_ids), np.asarray(body_parts)
    out = []
    for part in ["all", *sorted(set(body_parts))]:
        sel = np.ones(len(labels), bool) if part == "all" else body_parts == part
        _, sy, _ = metrics.study_level(np.c_[1 - labels[sel], labels[sel]], labels[sel], study_ids[sel])
        info = dict(body_part=part, studies=len(sy), abnormal=float(np.mean(sy)))
        if len(set(sy)) < 2 or (part != "all" and len(sy) < min_studies):
            out.append(pd.DataFrame([dict(info, method=m) for m in runs]))
            continue
        t = abnormality_table({m: p[sel] for m, p in runs.items()}, labels[sel], study_ids[sel], n_boot, seed)
        out.append(t.assign(**info))
    cols = ["method", "body_part", "studies", "abnormal"]
    t = pd.concat(out, ignore_index=True)
    return t[cols + [c for c in t.columns if c not in cols]]


OBJECTS, without_object_positives = data.OBJECTS, data.without_object_positives  # the shortcut-free selection


def shortcut_free_table(runs: dict[str, np.ndarray], labels, study_ids, lesion, n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """`abnormality_table` on every test study and on those left by `without_object_positives`, side by side
    (column `studies scored`: 'all' or 'positives without hardware or cast'), with each subset's study counts."""
    labels, study_ids = np.asarray(labels), np.asarray(study_ids)
    keep = without_object_positives(labels, study_ids, lesion)
    out = []
    for name, sel in (("all", np.ones(len(labels), bool)), ("positives without hardware or cast", keep)):
        t = abnormality_table({m: p[sel] for m, p in runs.items()}, labels[sel], study_ids[sel], n_boot, seed)
        _, sy, _ = metrics.study_level(np.c_[1 - labels[sel], labels[sel]], labels[sel], study_ids[sel])
        out.append(t.assign(**{"studies scored": name, "studies": len(sy), "abnormal studies": int(sy.sum())}))
    t = pd.concat(out, ignore_index=True)
    cols = ["method", "studies scored", "studies", "abnormal studies", "study AUROC", "AUROC low", "AUROC high",
            "study kappa", "kappa low", "kappa high"]
    return t[cols]


PREVALENCE = "body-part prevalence (baseline)"


def prevalence_baseline(index: pd.DataFrame, test_index: pd.DataFrame) -> np.ndarray:
    """A predictor that sees only the body part: each test image gets its part's share of abnormal images in the
    training split (N x 2). It ranks studies by how often their part is abnormal, which is all a network that
    learned nothing else would know; its study AUROC is the floor the networks must beat."""
    train = index[index.subset == "train"]
    rate = train.groupby("body_part").label.mean()
    p = test_index.body_part.map(rate).fillna(train.label.mean()).to_numpy(float)
    return np.c_[1 - p, p]


def called_abnormal(probs: np.ndarray, labels, study_ids) -> tuple[int, int]:
    """(studies called abnormal at MURA's threshold, p(abnormal) of the study > 0.5; all studies)."""
    sp, _, _ = metrics.study_level(probs, labels, study_ids)
    return int((sp[:, 1] > 0.5).sum()), len(sp)


def per_part(table: pd.DataFrame, score: str = "study AUROC") -> pd.DataFrame:
    """`study_table` as method x body part, each cell 'estimate [low, high]' ('-' where the part is not scored);
    the header row of each part gives its test studies."""
    lo, hi = ("AUROC low", "AUROC high") if "AUROC" in score else ("kappa low", "kappa high")
    t = table.assign(cell=[("-" if pd.isna(r.get(score)) else f"{r[score]:.2f} [{r[lo]:.2f}, {r[hi]:.2f}]")
                           for _, r in table.iterrows()],
                     part=[f"{p.lower()} ({n})" for p, n in zip(table.body_part, table.studies)])
    return t.pivot_table(index="method", columns="part", values="cell", aggfunc="first", sort=False)


def abnormality_note(parts, labels, groups) -> str:
    """One line: the abnormality task's body parts, test images, studies and share abnormal."""
    return (f"abnormality task on {', '.join(parts) if parts else 'all seven body parts'}: {len(labels)} test "
            f"images, {pd.Series(np.asarray(groups)).nunique()} studies, {np.mean(labels):.0%} abnormal")


# --------------------------------------------------------------------------- published figures

_MURA = "Rajpurkar, Irvin et al., MURA (arXiv:1712.06957 v4, 2018)"
_BOARD = "MURA leaderboard, stanfordmlgroup.github.io/competitions/mura (results-v1.1.json)"
_AUEB = ("Antonopoulos & Ndoja, x-ray-abnormality-detection (MSc project, AUEB, 2022; "
         "github.com/ilias-ant/x-ray-abnormality-detection, README)")
PARTS_ORDER = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
# (model, pretraining, input px, split, metric, overall, {part: value}, status, source)
_REFERENCE_ROWS = [
    ("DenseNet-169, ensemble of 5", "ImageNet", 320, "MURA test (hidden, 207 studies; 3-radiologist majority)",
     "AUROC", 0.929, {}, "verified (abstract)", _MURA),
    ("DenseNet-169, ensemble of 5", "ImageNet", 320, "MURA test (hidden, 207 studies)", "kappa", 0.705,
     dict(ELBOW=0.710, FINGER=0.389, FOREARM=0.737, HAND=0.851, HUMERUS=0.600, SHOULDER=0.729, WRIST=0.931),
     "overall verified (leaderboard); per type from the paper's table as transcribed by a third party",
     _MURA + "; " + _BOARD),
    ("best of 3 radiologists", "-", None, "MURA test (hidden, 207 studies)", "kappa", 0.778, {},
     "verified (leaderboard)", _BOARD),
    ("ResNet-50, frozen backbone", "ImageNet", 224, "MURA-valid (1,199 studies)", "kappa", 0.618,
     dict(ELBOW=0.63, FINGER=0.60, FOREARM=0.66, HAND=0.47, HUMERUS=0.75, SHOULDER=0.47, WRIST=0.72),
     "not peer-reviewed", _AUEB),
    ("DenseNet-169", "ImageNet", None, "MURA-valid (1,199 studies)", "kappa", 0.629,
     dict(ELBOW=0.72, FINGER=0.59, FOREARM=0.65, HAND=0.43, HUMERUS=0.72, SHOULDER=0.54, WRIST=0.71),
     "not peer-reviewed", _AUEB),
    ("small CNN", "none (from scratch)", None, "MURA-valid (1,199 studies)", "kappa", 0.386,
     dict(ELBOW=0.50, FINGER=0.37, FOREARM=0.44, HAND=0.18, HUMERUS=0.44, SHOULDER=0.17, WRIST=0.51),
     "not peer-reviewed", _AUEB),
]


def reference_table() -> pd.DataFrame:
    """Published study-level figures for MURA's task, one row per model and metric, per-type columns where the
    source gives them. None of them is on this phantom, and the MURA paper's are on its hidden test set (labels
    by a majority of three radiologists), not on MURA-valid: they place the phantom's numbers, they are not a
    target a phantom could meet or miss."""
    rows = []
    for model, pre, px, split, metric, overall, per, status, source in _REFERENCE_ROWS:
        rows.append({"model": model, "pretraining": pre, "input px": px, "split": split, "metric": metric,
                     "overall": overall, **{p.lower(): per.get(p) for p in PARTS_ORDER}, "status": status,
                     "source": source})
    return pd.DataFrame(rows)


def data_scaling(root, profile_name: str = "cpu") -> pd.DataFrame | None:
    """The task rungs of the learnability ladder (report/recipe/<profile>-learnability.json, written by `python -m
    utils.models.learnability` on the profile's phantom, not by the report): how study AUROC and kappa move with the
    training images of one part or of all, each rung one network of member 0's seed at its last epoch, scored on its
    own phantom's test split. Columns: rung, training images, epochs, test studies, training accuracy, study AUROC and
    kappa as 'estimate [low, high]', the study AUROC on the studies left when the abnormal ones showing hardware or a
    cast are dropped (the shortcut-free score of table 07-1b; '-' where the ladder did not measure it), the share of
    test studies called abnormal (near 0 or 100 %: a network that calls almost every study alike, whose kappa is then
    near 0) and the seconds its training took (one run on shared cores of the machine that ran the ladder: an
    indication of what a longer recipe would cost the report). None where the file is absent or holds no task rung
    with a study AUROC."""
    f = Path(root) / "report" / "recipe" / f"{profile_name}-learnability.json"
    if not f.is_file():
        return None
    rows = [r for r in json.loads(f.read_text()).get("rows", [])
            if r["rung"].startswith("the task") and r.get("study_auroc") is not None]
    if not rows:
        return None
    return pd.DataFrame([{
        "rung": r["rung"], "training images": r["train_images"], "epochs": r.get("epochs"),
        "test studies": r.get("held_out_studies"), "training accuracy": round(100 * r["train_acc"], 1),
        "study AUROC": evidence.fmt_estimate(r["study_auroc"], r.get("study_auroc_ci")),
        "study kappa": evidence.fmt_estimate(r.get("study_kappa"), r.get("study_kappa_ci")),
        "study AUROC, shortcut-free": evidence.fmt_estimate(r.get("free_study_auroc"), r.get("free_study_auroc_ci")),
        "studies called abnormal": None if r.get("study_called") is None else round(100 * r["study_called"], 1),
        "training seconds": None if r.get("seconds") is None else round(r["seconds"])}
        for r in rows])


def members_trade(root, profile_name: str = "cpu") -> pd.DataFrame | None:
    """The members-for-epochs trade at the report's training cost (report/recipe/<profile>-trade.json, `python -m
    utils.models.learnability --trade`, not run by the report): deep ensembles of fewer, longer-trained members on
    all parts, scored on the report's test studies, each paired with the first split (the report's members x epochs,
    but every member at its last epoch, not at the report's epoch of lowest validation NLL; `learnability.trade_table`);
    None where the file is absent."""
    f = Path(root) / "report" / "recipe" / f"{profile_name}-trade.json"
    return learnability.trade_table(json.loads(f.read_text())) if f.is_file() else None


def paired_scaling(root, profile_name: str = "cpu") -> pd.DataFrame | None:
    """The paired data-scaling curve (report/recipe/<profile>-scaling.json, `python -m utils.models.learnability
    --scaling`, not run by the report): one network per training size on nested prefixes of one phantom's patients,
    all scored on the same test studies, with each size's paired difference from the largest
    (`learnability.scaling_table`); None where the file is absent."""
    f = Path(root) / "report" / "recipe" / f"{profile_name}-scaling.json"
    return learnability.scaling_table(json.loads(f.read_text())) if f.is_file() else None


# --------------------------------------------------------------------------- where abnormality CAMs point


def where_abnormal_cams_point(maps: torch.Tensor, lesion: np.ndarray) -> pd.DataFrame:
    """For abnormal images, grouped by the findings in view: the share whose map peaks on each finding (the lesion
    mask's bit flags, `data.LESION_BITS`; flags may overlap, so shares may add to more than one) or elsewhere."""
    les = torch.as_tensor(lesion)
    peak = maps.flatten(1).argmax(1)
    at = les.flatten(1).gather(1, peak[:, None]).squeeze(1).numpy()
    bits = dict(data.LESION_BITS)
    has = {k: ((les.flatten(1) & f) != 0).any(1).numpy() for k, f in bits.items()}
    other = np.zeros(len(at), bool)
    for k in bits:
        if k != "fracture":
            other |= has[k]
    groups = (("fracture with another finding", has["fracture"] & other),
              ("fracture alone", has["fracture"] & ~other),
              ("other findings, no fracture in view", ~has["fracture"] & other))
    rows = []
    for group, sel in groups:
        if sel.sum() == 0:
            continue
        a = at[sel]
        rows.append({"images": group, "n": int(sel.sum()),
                     **{f"peak on {k}": float(((a & f) > 0).mean()) for k, f in bits.items()},
                     "peak elsewhere": float((a == 0).mean())})
    return pd.DataFrame(rows)


def abnormal_cams(models, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """CAMs of the abnormal class: member 0's and the ensemble's mean."""
    target = torch.ones(len(x), dtype=torch.long)
    return {"MAP CAM (member 0)": explain.CAM(models[0])(x, target),
            "ensemble mean CAM": explain.member_maps(models, x, target).mean(0)}


def cam_peaks(maps: dict[str, torch.Tensor], lesion: np.ndarray) -> pd.DataFrame:
    """`where_abnormal_cams_point` for each explanation, with an `explanation` column."""
    return pd.concat([where_abnormal_cams_point(m, lesion).assign(explanation=name) for name, m in maps.items()])


def cam_resolution(model, image_size: int) -> int:
    """The side of a network's last feature map (the CAM's grid) at `image_size` px."""
    with torch.no_grad():
        return int(model.features(torch.zeros(1, 1, image_size, image_size)).shape[-1])


CF_COLUMNS = ["kind", "label", "studies", "images", "study shift", "study shift lo", "study shift hi", "mass",
              "baseline mass", "mass - baseline", "mass - baseline lo", "mass - baseline hi", "area fraction"]


def abnormality_cam_figure(x: torch.Tensor, masks, cam: torch.Tensor, n: int = 6):
    """Up to `n` abnormal images with a fracture and another finding, their lesions outlined and `cam` (the
    ensemble mean CAM) overlaid; None when there is no such image."""

    lesion = masks[1]
    frac = data.LESION_BITS["fracture"]
    others = sum(f for k, f in data.LESION_BITS.items() if k != "fracture")
    show = np.flatnonzero(((lesion & frac) != 0).any((1, 2)) & ((lesion & others) != 0).any((1, 2)))[:n]
    if not len(show):
        return None
    fig, axes = plt.subplots(1, len(show), figsize=(2.4 * len(show), 2.7), squeeze=False)
    for ax, i in zip(axes[0], show):
        img = (x[i, 0] * PIXEL_STD + PIXEL_MEAN).numpy()
        ax.imshow(overlay((255 * img).astype(np.uint8), (np.zeros_like(masks[0][i]), lesion[i])))
        ax.imshow(explain.normalize(cam[i]).numpy(), cmap="jet", alpha=0.35)
        ax.axis("off")
    fig.suptitle("Abnormal test images with a fracture and another finding (outlined): ensemble mean CAM of the "
                 "abnormal class", fontsize=9)
    return fig


# --------------------------------------------------------------------------- resolution

def sweep_parts(index: pd.DataFrame, parts=None) -> list[str] | None:
    """The body part(s) the sweep trains on: of the report's parts (`parts`, None: all), the one with the most test
    studies (most evidence per trained member) among those the abnormality task can train on alone
    (`data.check_task_data`); where none can, the report's parts together."""
    t = index[index.body_part.isin(parts)] if parts else index
    t = t[t.subset == "test"] if "subset" in t else t
    for part in t.groupby("body_part").study_id.nunique().sort_values(ascending=False, kind="stable").index:
        try:
            data.check_task_data(index, "abnormality", [part])
            return [str(part)]
        except data.DegenerateData:
            continue
    return list(parts) if parts else None


def sweep_profile(profile: Profile, size: int) -> Profile:
    """The profile at image size `size`, tagged "<size>px" where that differs from its own, so that a sweep
    member's artifacts go beside the profile's and the profile's own size reuses its members."""
    size = int(size)
    return profile.replace(image_size=size, run_tag="" if size == profile.image_size else f"{size}px")


def resolution_sweep(profile: Profile, data_root: str, out_root: str, parts, sizes=None, n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Study AUROC and kappa of one MAP member on `parts` (`sweep_parts`; None: all) at each image size, with the
    training seconds (a fresh member per size: artifacts under `<profile>/abnormality[-<PARTS>]/<arch>-<size>px`)
    and the seconds to build that size's cache. Sizes default to the profile's `resolution_sizes` (or, where it
    names none, its `image_size`)."""
    name = "+".join(parts) if parts else "all parts"
    rows = []
    for size in sizes or profile.resolution_sizes or (profile.image_size,):
        t = time.perf_counter()
        run = Run(sweep_profile(profile, size), data_root, out_root, task="abnormality", parts=parts,
                  members=1)
        run.cache
        cache_s = time.perf_counter() - t
        meta = run.train([0])[0]
        probs = run.predictions(["MAP"])["MAP"].probs
        sp, sy, sid = metrics.study_level(probs, run.y, run.groups)
        auc = evidence.interval("auroc", sp, sy, sid, n_boot, seed)
        kap = evidence.interval("kappa", sp, sy, sid, n_boot, seed)
        rows.append(dict(image_size=int(size), part=name, train_images=meta["n_train"], test_studies=len(sy),
                         study_auroc=auc["estimate"], auroc_low=auc["low"], auroc_high=auc["high"],
                         study_kappa=kap["estimate"], kappa_low=kap["low"], kappa_high=kap["high"],
                         train_s=meta["train_seconds"], epochs=meta["epochs_run"], cache_s=cache_s,
                         cam_grid=cam_resolution(run.member(0).model, int(size))))
    return pd.DataFrame(rows)


def plot_resolution(sweep: pd.DataFrame):
    """Study AUROC (with its interval) and training seconds against image size."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    err = [sweep.study_auroc - sweep.auroc_low, sweep.auroc_high - sweep.study_auroc]
    axes[0].errorbar(sweep.image_size, sweep.study_auroc, yerr=err, fmt="o-", capsize=3)
    axes[0].set(xlabel="image size (px)", ylabel="study AUROC", ylim=(0.4, 1.0),
                title=f"Abnormality, {sweep.part.iloc[0].lower()}, one member")
    axes[1].plot(sweep.image_size, sweep.train_s, "o-")
    axes[1].set(xlabel="image size (px)", ylabel="training seconds (one member)", title="Training cost")
    for ax in axes:
        ax.set_xticks(sweep.image_size)
    return fig


# --------------------------------------------------------------------------- the Reading


def _ci(v, lo, hi, digits: int = 2) -> str:
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def reading(source: str, table: pd.DataFrame, sweep: pd.DataFrame | None, cf_table: pd.DataFrame, members: int,
            image_size: int, grid: int, called: tuple[int, int] | None = None, free: pd.DataFrame | None = None,
            ensemble: str = "deep ensemble") -> str:
    """The chapter's Reading (Markdown) from `study_table` (with the `PREVALENCE` row where computed),
    `resolution_sweep` (or None), `counterfactual.summarize` (may be empty), `called` (the ensemble's studies
    called abnormal, of all, `called_abnormal`) and `free` (`shortcut_free_table`; None or empty on real MURA)."""
    t = table[table.method == ensemble].set_index("body_part")
    a = t.loc["all"]
    parts = [f"{p.lower()} {_ci(r['study AUROC'], r['AUROC low'], r['AUROC high'])}"
             for p, r in t.drop(index="all").iterrows() if pd.notna(r.get("study AUROC"))]
    whole = table[(table.body_part == "all") & (table.method != PREVALENCE)]
    kappa_words = ("its interval includes zero: no agreement beyond chance is shown" if a["kappa low"] <= 0 <= a["kappa high"]
                   else "agreement beyond chance")
    lines = [f"""
**Reading** (data: {source}; study level, as MURA scores it; 95 % intervals over test studies).

- The deep ensemble of {members} members reaches a study AUROC of {_ci(a['study AUROC'], a['AUROC low'], a['AUROC high'])}
  and Cohen's kappa {_ci(a['study kappa'], a['kappa low'], a['kappa high'])} ({kappa_words}) at {image_size} px
  ({int(a['studies'])} test studies, {a['abnormal']:.0%} abnormal). Per body part: {'; '.join(parts) or 'too few studies per part to score'}.
  The registered methods' overall AUROCs lie between {whole['study AUROC'].min():.3f} and {whole['study AUROC'].max():.3f},
  (no paired comparison between the methods is made here; notebook 04's paired differences are that test)."""]
    if called is not None:
        lines.append(f"""- At MURA's threshold (a study's mean p(abnormal) above 0.5) the ensemble calls {called[0]} of {called[1]} test
  studies abnormal.""")
    if PREVALENCE in set(table.method):
        b = table[(table.method == PREVALENCE) & (table.body_part == "all")].iloc[0]
        lines.append(f"""- A predictor that knows only the body part (its training share of abnormal images) reaches a study AUROC of
  {_ci(b['study AUROC'], b['AUROC low'], b['AUROC high'])}: the networks' AUROC is to be read against it (the table gives
  no paired difference, so how much of theirs is the part alone is not measured here).""")
        scores = [("image accuracy", "{:.1%}", True), ("NLL", "{:.3f}", False), ("ECE", "{:.1%}", False),
                  ("study kappa", "{:.2f}", True)]
        ahead = [f"{k} {f.format(b[k])} against {f.format(a[k])}" for k, f, up in scores
                 if pd.notna(b.get(k)) and pd.notna(a.get(k)) and (b[k] > a[k] if up else b[k] < a[k])]
        if ahead:
            lines.append(f"""- On other scores the same baseline is ahead of the ensemble (point values, no paired test): {'; '.join(ahead)}.""")
    if free is not None and len(free):
        e = free[free.method == ensemble].set_index("studies scored")
        f = e.loc["positives without hardware or cast"]
        lines.append(f"""- Without the positives that show hardware or a cast ({int(f['studies'])} studies left, {int(f['abnormal studies'])}
  abnormal, of {int(e.loc['all', 'studies'])}), the ensemble's study AUROC is {_ci(f['study AUROC'], f['AUROC low'], f['AUROC high'])} and
  its kappa {_ci(f['study kappa'], f['kappa low'], f['kappa high'])} (all studies: {_ci(a['study AUROC'], a['AUROC low'], a['AUROC high'])}
  and {_ci(a['study kappa'], a['kappa low'], a['kappa high'])}; table 07-1b).""" + (
            "" if PREVALENCE not in set(free.method) else (lambda b: f""" On the same studies the body-part baseline, which
  sees no object, reaches {_ci(b['study AUROC'], b['AUROC low'], b['AUROC high'])}: dropping studies changes the case mix by itself.""")(
                free[(free.method == PREVALENCE) & (free["studies scored"] != "all")].iloc[0])) + """ No paired
  interval is computed for the difference between the two sets, so what the objects contribute is not measured
  here; the counterfactual test below asks it directly.""")
    if source == "phantom":
        lines.append("""- The published figures (table 07-2) are on real radiographs, most on MURA's hidden test set: they place
  these numbers, they are not comparable with them.""")
    if sweep is not None and len(sweep):
        pts = "; ".join(f"{int(r.image_size)} px {_ci(r.study_auroc, r.auroc_low, r.auroc_high)} "
                        f"({r.train_s:.0f} s)" for r in sweep.itertuples())
        lines.append(f"""- Resolution (one member per size on {sweep.part.iloc[0].lower()}, {int(sweep.test_studies.iloc[0])} test studies; seeds
  differ between sizes): study AUROC and training seconds per size: {pts}. Where the intervals overlap, the sweep does not
  show that a larger image helps.""")

    def shift(r):
        lo, hi = r["study shift lo"], r["study shift hi"]
        word = "lowers p(abnormal) by" if lo > 0 else "raises p(abnormal) by" if hi < 0 else "changes p(abnormal) by (not shown)"
        return f"{word} {r['study shift']:.4f} [{lo:.4f}, {hi:.4f}]"

    cf = [f"  - removing the {r['kind']} from {r['studies']} {'abnormal' if r['label'] else 'normal'} studies {shift(r)}; "
          f"CAM mass on it minus the same area elsewhere {r['mass - baseline']:+.3f} [{r['mass - baseline lo']:+.3f}, "
          f"{r['mass - baseline hi']:+.3f}] (the object covers {r['area fraction']:.1%} of the image)"
          for _, r in cf_table.iterrows()]
    if cf:
        more = cf_table[cf_table["mass - baseline lo"] > 0]
        less = cf_table[cf_table["mass - baseline hi"] < 0]
        mass_words = (f"more mass than the same area elsewhere on: {', '.join(sorted(set(more.kind)))}" if len(more)
                      else "no finding is shown to receive more CAM mass than the same area elsewhere")
        if len(less):
            mass_words += f"; less on: {', '.join(sorted(set(less.kind)))}"
        lines.append("- What the ensemble uses, measured by removing one finding from the same study (table 07-4):\n"
                     + "\n".join(cf) + f"""

  Explanations: {mass_words}. A CAM cell covers 1/{grid ** 2} of the image ({grid} x {grid} cells at {image_size} px);
  objects smaller than a cell cannot be resolved by the mass test.""")
    return "\n".join(lines) + "\n"
