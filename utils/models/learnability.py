"""Can the learner find what the images show? A ladder of ever easier tasks for the abnormality recipe.

    python -m utils.models.learnability --profile cpu        # writes report/recipe/<profile>-learnability.{json,md}

When a member does not learn MURA's normal/abnormal task, `utils.recipe` says which training setting does not
help; this module asks the step before: how conspicuous must a finding be for the profile's learner (network,
recipe, image size, number of training images) to find it? Every rung trains one network with member 0's seed
and the profile's recipe (only what the rung names changes: augmentation, epochs, training patients, body parts),
scores it in eval mode, and records training accuracy (all its training images), held-out accuracy and AUROC with
its 95 % study-bootstrap interval (the profile's n_boot; a rung is one run of one seed, so the interval covers the
held-out sample, not the training run), and the majority share:

- `planted`: the *normal* training images of the task, with an object planted in a random 40 % of them (a
  white bar of `w x l` px at the network's input size, at a random place and orientation; `plant_bars`); the
  label says whether it was planted. Held out: a fixed 20 % of the same images. This measures the learner alone:
  no anatomy, no physics, an object of known size and contrast on radiograph backgrounds.
- `objects` (phantom only; needs its masks): the normal training images against the abnormal ones whose view
  shows hardware or a cast (lesion bits 2 and 4), i.e. MURA's shortcut alone. Held out: the test split, filtered
  the same way (no rung selects anything on it: every rung keeps its last epoch). `found_hardware` /
  `found_cast_only`: the share of the held-out images showing hardware (a cast and no hardware) that the network
  calls abnormal.
- `task`: MURA's normal/abnormal task itself, trained on the training split and scored on the test split (image
  accuracy and AUROC; `study_auroc` averages each study's images; on a phantom also `free_study_auroc`, the same on
  the studies left when the abnormal ones showing hardware or a cast are dropped, `shortcut_free`), on the
  profile's phantom and on one with
  `patients` times as many training patients (phantom only: generated once under data/, its own validation
  carve and test split; MURA has ~12x the cpu phantom's training images). Trained like every rung (last epoch),
  so the row can differ a little from `utils.recipe`'s baseline, which keeps the epoch of lowest validation NLL.
  With `noise` (phantom only): the training labels are those a report with MURA's reader noise would give
  (`phantom.plan_studies(..., label_noise=noise)`: subtle findings missed, a few normal studies over-called; the
  phantom's docstring, "Label noise": q = 0.7 reproduces the radiologists' kappa of ~0.75 against the gold standard
  in MURA's paper), the images and the test labels (the truth) unchanged: what MURA's label noise costs this
  learner, beside the noise-free row. With `parts`: one body part trained and scored, as in the published
  one-part runs on real MURA.

Why the ladder has the rungs it has: a member that fits 60 % of its training images may lack capacity, be held back
by its recipe, or see too few examples. The 30-epoch rungs without augmentation ask the first (can it fit at
all?); the 4x rungs and the one-part rungs ask the last (does more data per part help, at the same recipe?); "4x
the patients, 3 epochs" spends the compute of the task's 12 epochs on 4x the images (not the same schedule: the
one warm-up epoch is a third of it, against a twelfth at 12 epochs).

The bars are planted in the cached (letterboxed) images, so their size is what the network sees. Models are not
saved; a rung costs a few tens of seconds on the cpu profile.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from utils import data
from utils.config import ROOT, get_device, get_paths, get_profile
from utils.data import phantom, sources
from utils.evaluation import evidence
from utils.models import train
from utils.models.networks import build_model
from utils.models.recipe import generator_of, markdown, previous_rows

PLANT_SHARE = 0.4
HELD_OUT = 0.2

RUNGS: dict[str, dict] = {
    "planted 1x6 px": dict(kind="planted", w=1, length=6),
    "planted 2x10 px": dict(kind="planted", w=2, length=10),
    "planted 2x10 px, no resampling": dict(kind="planted", w=2, length=10, augment="lossless"),
    "planted 2x10 px, no augmentation": dict(kind="planted", w=2, length=10, augment="none"),
    "planted 3x16 px": dict(kind="planted", w=3, length=16),
    "objects (hardware or cast) vs normal": dict(kind="objects"),
    "objects, no augmentation": dict(kind="objects", augment="none"),
    "objects, no augmentation, 30 epochs": dict(kind="objects", augment="none", epochs=30),
    "objects, no augmentation, 4x the patients": dict(kind="objects", augment="none", patients=4),
    "the task": dict(kind="task", patients=1),
    "the task, 4x the patients": dict(kind="task", patients=4),
    "the task, training labels with MURA's reader noise": dict(kind="task", patients=1, noise=0.7),
    "the task, no augmentation, 30 epochs": dict(kind="task", patients=1, augment="none", epochs=30),
    "the task, 4x the patients, 3 epochs": dict(kind="task", patients=4, epochs=3),
    "the task, 40 epochs": dict(kind="task", patients=1, epochs=40),
    "the task, 160 epochs": dict(kind="task", patients=1, epochs=160),
    "the task, wrist only": dict(kind="task", patients=1, parts=("WRIST",)),
    "the task, wrist only, 4x the patients": dict(kind="task", patients=4, parts=("WRIST",)),
    "the task, wrist only, MURA's wrist size": dict(kind="task", patients=13, valid_patients=4, parts=("WRIST",)),
}
"""Name -> rung. `w`, `length`: the planted bar in px at the profile's image size; `augment`: overrides the
profile's augmentation (`data.AUGMENTATIONS`); `epochs`: the profile's epochs (the 30-epoch rungs ask whether the
learner can fit its training set at all; "4x the patients, 3 epochs" costs what the task's 12 epochs on 1x cost;
"40 epochs" gives all parts, with augmentation, about the optimiser steps (1,800) after which the wrist alone is
learned in the paired scaling curve); "160 epochs" (7,200 steps in all) gives the wrist, about a quarter of the
training images, about the 1,860 steps' worth of its images that the wrist alone needed in that curve, to measure
what the all-parts task reaches with them and what they cost (`seconds`) against the report's budget;
`patients`: the training patients' factor (objects and task rungs); `parts`: the body parts trained and scored (task
rungs; all by default): one part, as the published one-part MURA runs the issue quotes (the wrist has 9,752 of
MURA's training images; the cpu phantom 743, its 4x phantom 2,965); `valid_patients`: the validation patients'
factor (its test split holds the held-out studies). "MURA's wrist size" trains on about as many wrist images as
MURA's training split holds (13x the patients: 9,921 images after the validation and calibration carve, which task
rungs leave unused) and scores on 372 wrist test studies (4x the validation patients; MURA's valid split holds 237):
what the phantom's wrist gives this learner with MURA's
amount of data rather than the cpu budget's, to be placed beside figures measured on real wrist radiographs (the
README sets it beside a published from-scratch wrist kappa, `abnormality.reference_table`)."""


def plant_bars(images: np.ndarray, w: int, length: int, share: float = PLANT_SHARE, seed: int = 0,
               value: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """A copy of `images` (uint8, N x S x S) with a `value` bar of w x length px planted in a random `share` of
    them, horizontal or vertical, at least 4 px from the border; returns (images, planted 0/1 labels)."""
    images = np.array(images, np.uint8, copy=True)
    n, s = images.shape[0], images.shape[-1]
    if length + 8 > s or w < 1:
        raise ValueError(f"a {w} x {length} px bar does not fit a {s} px image with a 4 px margin")
    rng = np.random.default_rng(seed)
    planted = (rng.random(n) < share).astype(np.int64)
    for i in np.nonzero(planted)[0]:
        r0, c0 = (int(v) for v in rng.integers(4, s - 4 - length + 1, 2))
        if rng.random() < 0.5:
            images[i, r0:r0 + w, c0:c0 + length] = value
        else:
            images[i, r0:r0 + length, c0:c0 + w] = value
    return images, planted


def _fit_arrays(profile, x_tr: torch.Tensor, y_tr: torch.Tensor, seed: int, device) -> nn.Module:
    """One network trained with the profile's recipe (no checkpoints, no early stopping: the last epoch)."""
    torch.manual_seed(seed)
    model = build_model(profile.arch, 2, profile.dropout).to(device)
    augment = data.augmentation(profile.augment)
    opt = train.make_optimizer(model, profile)
    bs = profile.batch_size
    steps = max(1, len(x_tr) // bs)
    total, warm = profile.epochs * steps, profile.warmup_epochs * steps
    for epoch in range(profile.epochs):
        model.train()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            for g in opt.param_groups:
                g["lr"] = train.lr_at(epoch * steps + i, total, warm, profile.lr)
            x = augment(x_tr[idx].to(device), gen)
            loss = nn.functional.cross_entropy(model(x), y_tr[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _scores(model: nn.Module, x: torch.Tensor, y: np.ndarray, device, groups=None, study_level: bool = False,
            n_boot: int = 2000, parts=None) -> dict:
    """Accuracy and AUROC of the abnormal probability `p`; with `groups` (the images' study ids) the AUROC's 95 %
    study-bootstrap interval (`auroc_ci`), and with `study_level` also the study AUROC of the mean probability of
    each study's images with its interval (`study_auroc`, `study_auroc_ci`; each study resampled as a whole) and the
    study kappa of that mean at 0.5 (`study_kappa`, `study_kappa_ci`: MURA's metric) and the share of studies it
    calls abnormal (`study_called`: 0 or 1 for a network that calls every study alike, whose kappa is 0 in every
    replicate); with `parts` (the images' body parts) also `study_auroc_by_part` (`by_part`)."""
    with torch.no_grad():
        p = torch.cat([model(x[i:i + 256].to(device)).softmax(1)[:, 1].cpu() for i in range(0, len(x), 256)]).numpy()
    two = len(set(y)) == 2
    out = dict(acc=float(((p > 0.5) == y).mean()), auroc=float(roc_auc_score(y, p)) if two else None, p=p)
    if groups is not None and two:
        ci = evidence.interval("auroc", p.astype(np.float64), y, groups, n_boot)
        out["auroc_ci"] = [ci["low"], ci["high"]]
    if groups is not None and study_level:
        st = _study_scores(p, y, groups, n_boot)
        study = st.pop("study")
        out.update(st)
        if parts is not None and st["study_auroc"] is not None:
            part = pd.Series(np.asarray(parts), index=groups).groupby(level=0).first().loc[study.index]
            out["study_auroc_by_part"] = by_part(study.p.to_numpy(), study.y.to_numpy(), part.to_numpy(), n_boot)
    return out


def _study_scores(p: np.ndarray, y: np.ndarray, groups, n_boot: int) -> dict:
    """Study AUROC of the mean probability of each study's images and study kappa of that mean at 0.5, each with its
    95 % study-bootstrap interval, and the share of studies called abnormal; `study`: the studies' (p, y). The
    AUROC None (and nothing else) where the studies hold one label."""
    st = pd.DataFrame(dict(g=groups, p=p, y=y)).groupby("g").agg(p=("p", "mean"), y=("y", "first"))
    if st.y.nunique() != 2:
        return dict(study_auroc=None, study=st)
    ci = evidence.interval("auroc", st.p.to_numpy(np.float64), st.y.to_numpy(), None, n_boot)
    pk = np.stack([1 - st.p.to_numpy(np.float64), st.p.to_numpy(np.float64)], 1)
    ka = evidence.interval("kappa", pk, st.y.to_numpy(), None, n_boot)
    return dict(study_auroc=float(roc_auc_score(st.y, st.p)), study_auroc_ci=[ci["low"], ci["high"]],
                study_kappa=ka["estimate"], study_kappa_ci=[ka["low"], ka["high"]],
                study_called=float((st.p > 0.5).mean()), study=st)


def by_part(p: np.ndarray, y: np.ndarray, part: np.ndarray, n_boot: int) -> dict:
    """Study AUROC of each body part: part -> dict(auroc, ci, studies, abnormal); auroc and ci None where the part's
    studies hold one label only. The intervals of parts with few studies are wide: read them, not the estimates."""
    out = {}
    for name in sorted(set(part)):
        k = part == name
        two = len(set(y[k])) == 2
        ci = evidence.interval("auroc", p[k].astype(np.float64), y[k], None, n_boot) if two else None
        out[str(name)] = dict(auroc=float(roc_auc_score(y[k], p[k])) if two else None,
                              ci=[ci["low"], ci["high"]] if ci else None, studies=int(k.sum()), abnormal=int(y[k].sum()))
    return out


def noisy_labels(profile, index: pd.DataFrame, noise: float) -> np.ndarray:
    """The report labels (0/1) of `index`'s images under the phantom's label-noise model at rate `noise`, from the
    profile's phantom plan (the same studies, findings and images as the noise-free tree the index reads)."""
    ph = profile.phantom
    plan = phantom.plan_studies(ph.train_patients, ph.valid_patients, ph.seed, label_noise=noise)
    label = {st.folder.rsplit("_", 1)[0]: st.label for st in plan}
    keys = (index.split + "/XR_" + index.body_part + "/" + index.patient + "/" + index.study.str.rsplit("_", n=1).str[0])
    missing = sorted(set(keys) - set(label))
    if missing:
        raise data.DataError(f"{len(missing)} studies (e.g. {missing[0]}) are not in the profile's phantom plan: the "
                             "label-noise rung needs the profile's own phantom")
    return keys.map(label).to_numpy().astype(np.int64)


def run_rung(profile, name: str, rung: dict, cache: data.ImageCache, device=None) -> dict:
    """Train and score one rung (RUNGS) on the profile's abnormality data in `cache`."""
    device = device or get_device()
    profile = profile.replace(task="abnormality", **{k: rung[k] for k in ("augment", "epochs") if k in rung})
    parts = list(rung["parts"]) if rung.get("parts") else None
    if rung.get("patients", 1) != 1 or rung.get("valid_patients", 1) != 1:
        cache = _scaled_cache(profile, rung.get("patients", 1), rung.get("valid_patients", 1), parts)
    tr, va, _, te = train.datasets(profile, cache, parts)
    seed = train.member_seed(profile, 0)
    if rung["kind"] == "planted":
        normal = np.asarray(tr.rows)[np.asarray(tr.targets) == 0]
        imgs, y = plant_bars(cache.images[np.sort(normal)], rung["w"], rung["length"], seed=seed)
        order = np.random.default_rng(seed).permutation(len(y))
        cut = int(round(len(y) * (1 - HELD_OUT)))
        fit_i, held_i = order[:cut], order[cut:]
        x_all = data.standardize(data.to_input(imgs))
        x_tr, y_tr, x_ho, y_ho = x_all[fit_i], y[fit_i], x_all[held_i], y[held_i]
        study_of = cache.index.set_index("row").loc[np.sort(normal), "study_id"].to_numpy()[held_i]
    elif rung["kind"] == "objects":
        def pick(ds):
            masks = data.masks_for(ds.index.path.tolist(), cache.size)
            if masks is None:
                raise data.DataError("the `objects` rung needs the phantom's lesion masks; this tree has none")
            bits = np.bitwise_or.reduce(masks[1].reshape(len(ds), -1), axis=1)
            t = np.asarray(ds.targets)
            keep = (t == 0) | ((t == 1) & ((bits & (data.LESION_HARDWARE | data.LESION_CAST)) > 0))
            return (data.standardize(data.to_input(cache.images[np.asarray(ds.rows)[keep]])), t[keep], bits[keep],
                    ds.index.study_id.to_numpy()[keep])
        x_tr, y_tr, _, _ = pick(tr)
        x_ho, y_ho, ho_bits, study_of = pick(te)
    elif rung["kind"] == "task":
        x_tr, y_tr = data.standardize(data.to_input(cache.images[np.asarray(tr.rows)])), np.asarray(tr.targets)
        if rung.get("noise"):
            y_tr = noisy_labels(profile, tr.index, rung["noise"])
        x_ho, y_ho = data.standardize(data.to_input(cache.images[np.asarray(te.rows)])), np.asarray(te.targets)
        study_of = te.index.study_id.to_numpy()
    else:
        raise ValueError(f"unknown rung kind {rung['kind']!r}")
    t0 = time.perf_counter()
    model = _fit_arrays(profile, x_tr, torch.as_tensor(y_tr), seed, device)
    seconds = time.perf_counter() - t0
    fit = _scores(model, x_tr, np.asarray(y_tr), device)
    held = _scores(model, x_ho, np.asarray(y_ho), device, groups=study_of, study_level=rung["kind"] == "task",
                   n_boot=profile.n_boot, parts=te.index.body_part.to_numpy() if rung["kind"] == "task" else None)
    out = dict(rung=name, augment=profile.augment, train_images=len(y_tr), held_out_images=len(y_ho),
               majority=float(max(np.mean(y_ho), 1 - np.mean(y_ho))), train_acc=fit["acc"], held_out_acc=held["acc"],
               held_out_auroc=held["auroc"], held_out_auroc_ci=held.get("auroc_ci"),
               study_auroc=held.get("study_auroc"), study_auroc_ci=held.get("study_auroc_ci"),
               study_kappa=held.get("study_kappa"), study_kappa_ci=held.get("study_kappa_ci"),
               study_called=held.get("study_called"), study_auroc_by_part=held.get("study_auroc_by_part"),
               held_out_studies=int(pd.unique(study_of).size), epochs=profile.epochs, seconds=seconds)
    if rung["kind"] == "task":  # the shortcut-free score (phantom only: it needs the lesion masks)
        out.update(shortcut_free(held["p"], np.asarray(y_ho), study_of, te.index.path.tolist(), cache.size,
                                 profile.n_boot))
    if rung["kind"] == "objects":  # which objects of the abnormal held-out images the calls find (p > 0.5)
        ab = np.asarray(y_ho) == 1  # a normal study's cast is no find: calling it abnormal is an error
        out.update(found_hardware=found_share(held["p"][ab], ho_bits[ab], data.LESION_HARDWARE),
                   found_cast_only=found_share(held["p"][ab], ho_bits[ab], data.LESION_CAST,
                                               without=data.LESION_HARDWARE))
    return out


def shortcut_free(p: np.ndarray, y: np.ndarray, study_of: np.ndarray, paths: list[str], size: int,
                  n_boot: int) -> dict:
    """The task rung's study AUROC and kappa (from its held-out probabilities `p`, not computed again) on the held-out
    studies left when every abnormal study that shows hardware or a cast is dropped (`data.without_object_positives`,
    the report's shortcut-free score, table 07-1b):
    `free_study_auroc`, `free_study_kappa` (with `_ci`), `free_studies`, `free_abnormal`; and the study AUROC of the
    dropped ones against the same normal studies (`objects_study_auroc`, `_ci`, `objects_abnormal`). An AUROC is the
    share of (abnormal, normal) pairs ranked right, so the all-studies AUROC is exactly the mean of the two weighted by
    their abnormal studies: how much of it the objects carry. Nothing where the tree has no lesion masks (real
    MURA)."""
    masks = data.masks_for(paths, size)
    if masks is None:
        return {}
    keep = data.without_object_positives(y, study_of, masks[1])
    sc = _study_scores(p[keep], y[keep], study_of[keep], n_boot)
    st = sc.pop("study")
    objects = (y == 0) | ~keep  # every normal study and the abnormal ones that show hardware or a cast
    so = _study_scores(p[objects], y[objects], study_of[objects], n_boot)
    return dict(free_study_auroc=sc.get("study_auroc"), free_study_auroc_ci=sc.get("study_auroc_ci"),
                free_study_kappa=sc.get("study_kappa"), free_study_kappa_ci=sc.get("study_kappa_ci"),
                free_studies=int(len(st)), free_abnormal=int(st.y.sum()),
                objects_study_auroc=so.get("study_auroc"), objects_study_auroc_ci=so.get("study_auroc_ci"),
                objects_abnormal=int(pd.unique(study_of[~keep]).size))


def found_share(p: np.ndarray, bits: np.ndarray, flag: int, without: int = 0) -> float | None:
    """Share of the images whose lesion bits carry `flag` (and none of `without`) called abnormal (p > 0.5);
    None where there are none."""
    sel = ((bits & flag) > 0) & ((bits & without) == 0)
    return float((np.asarray(p)[sel] > 0.5).mean()) if sel.any() else None


def _scaled_cache(profile, factor: int, valid_factor: int = 1, parts=None) -> data.ImageCache:
    """The cache of a phantom like the profile's with `factor` times its training patients and `valid_factor` times
    its validation patients (generated once, under data/); with `parts`, of those body parts' images only (the
    validation carve is made on the whole tree first, so a part's splits are those of the whole)."""
    paths = get_paths(task="abnormality")
    ph = profile.phantom
    name = f"phantom-{profile.name}-x{factor}" + (f"-v{valid_factor}" if valid_factor != 1 else "")
    root = phantom.ensure(paths.data / name, ph.train_patients * factor, ph.valid_patients * valid_factor, ph.seed,
                          ph.max_side, progress=False)
    index = sources.carve_validation(sources.load_index(root), profile.val_fraction, profile.seed,
                                     profile.cal_fraction)
    if parts:
        index = index[index.body_part.isin(list(parts))].reset_index(drop=True)
    return data.build_cache(index, profile.image_size, paths.cache, progress=False)


SCALING = dict(parts=("WRIST",), patients=(1, 4, 13), valid_patients=4)
"""The paired data-scaling curve (`scaling_curve`): the body parts, the training patients' factors, the validation
factor of the phantom whose test split scores every network (that of "the task, wrist only, MURA's wrist size")."""


def scaling_curve(profile, device=None, parts=SCALING["parts"], factors=SCALING["patients"],
                  valid_factor: int = SCALING["valid_patients"], equal_steps: bool = True) -> dict:
    """The task on `parts` (None: all), one network per training size, all scored on the same test studies, paired.

    The phantom's plan draws patients in order from one stream, so the first `f` x train_patients patients of the
    largest phantom are the phantom of factor `f`, image for image: the networks train on nested prefixes of one
    training split (its patients numbered from 1), less the patients that the largest tree's validation and
    calibration carve takes (left unused, as in every task rung; so 1x holds a few fewer images than the cpu
    phantom's own training split), and are scored on that tree's test split. Each row: training images, training
    accuracy, study AUROC and kappa with 95 % study-bootstrap intervals and the share of studies called abnormal;
    each smaller size also its paired difference from the largest (`evidence.paired_delta`, the same resampled
    studies for both), which the unpaired rungs of the ladder cannot give. At the profile's epochs a larger size also
    takes proportionally more optimiser steps; with `equal_steps` each smaller size is trained once more for as many
    steps as the largest (its epochs scaled up; the schedule's shape kept: one warm-up epoch, cosine decay), so that
    images and steps are told apart. Intervals cover the test studies (one seed per row), not the training run."""
    device = device or get_device()
    profile = profile.replace(task="abnormality")
    parts = list(parts) if parts else None
    cache = _scaled_cache(profile, max(factors), valid_factor, parts)
    tr, _, _, te = train.datasets(profile, cache, parts)
    patient = tr.index.patient.str.removeprefix("patient").astype(int).to_numpy()
    x_te = data.standardize(data.to_input(cache.images[np.asarray(te.rows)]))
    y_te, study_of = np.asarray(te.targets), te.index.study_id.to_numpy()
    seed = train.member_seed(profile, 0)
    factors = sorted(factors)
    keep = {f: patient <= f * profile.phantom.train_patients for f in factors}
    steps = {f: max(1, int(keep[f].sum()) // profile.batch_size) for f in factors}
    runs = [(f, profile.epochs) for f in factors]
    if equal_steps:  # the smaller sizes again, with as many optimiser steps as the largest takes in its epochs
        runs += [(f, int(round(profile.epochs * steps[factors[-1]] / steps[f]))) for f in factors[:-1]]
    rows, study_p = [], []
    for f, epochs in runs:
        x_tr = data.standardize(data.to_input(cache.images[np.asarray(tr.rows)[keep[f]]]))
        y_tr = torch.as_tensor(np.asarray(tr.targets)[keep[f]])
        t0 = time.perf_counter()
        model = _fit_arrays(profile.replace(epochs=epochs), x_tr, y_tr, seed, device)
        seconds = time.perf_counter() - t0
        fit = _scores(model, x_tr, y_tr.numpy(), device)
        held = _scores(model, x_te, y_te, device, groups=study_of, study_level=True, n_boot=profile.n_boot)
        study_p.append(pd.DataFrame(dict(g=study_of, p=held["p"], y=y_te)).groupby("g").agg(p=("p", "mean"),
                                                                                             y=("y", "first")))
        rows.append(dict(patients=f, epochs=epochs, steps=epochs * steps[f], train_images=int(keep[f].sum()),
                         train_acc=fit["acc"], study_auroc=held["study_auroc"], study_auroc_ci=held["study_auroc_ci"],
                         study_kappa=held["study_kappa"], study_kappa_ci=held["study_kappa_ci"],
                         study_called=held["study_called"], seconds=seconds))
    top = study_p[len(factors) - 1]  # the largest size at the profile's epochs
    for r, st in zip(rows, study_p):
        if st is not top:
            r.update({f"minus_top_{m}": d for m, d in _paired(st, top, profile.n_boot).items()})
    return dict(parts=parts or "all", valid_patients=valid_factor, test_images=int(len(y_te)),
                test_studies=int(len(top)), test_abnormal_studies=float(top.y.mean()), rows=rows)


TRADE = ((5, 12), (3, 20), (2, 30))
"""Members x epochs of `ensemble_trade`: the cpu report's deep ensemble (5 x 12) and two of the same member-epochs
(the training cost the report's budget holds) spent on fewer, longer-trained members."""


def ensemble_trade(profile, cache: data.ImageCache, device=None, splits=TRADE) -> dict:
    """The task on all parts: for each (members, epochs) of `splits`, a deep ensemble of that many networks (member
    seeds 0, 1, ..., the profile's recipe, each at its last epoch: the report keeps each member's epoch of lowest
    validation NLL) scored on the test studies by its mean probability. Each row: members, epochs, the members' mean
    training accuracy, study AUROC and kappa with 95 % study-bootstrap intervals, the share of studies called
    abnormal, the seconds of training; each row after the first also its paired difference from the first
    (`evidence.paired_delta`, the same resampled studies). What a report of the same training cost would gain by
    fewer, longer-trained members; intervals cover the test studies, not the training runs."""
    device = device or get_device()
    profile = profile.replace(task="abnormality")
    tr, _, _, te = train.datasets(profile, cache, None)
    x_tr, y_tr = data.standardize(data.to_input(cache.images[np.asarray(tr.rows)])), np.asarray(tr.targets)
    x_te, y_te = data.standardize(data.to_input(cache.images[np.asarray(te.rows)])), np.asarray(te.targets)
    study_of = te.index.study_id.to_numpy()
    rows, study_p = [], []
    for members, epochs in splits:
        pe, ps, accs, t0 = profile.replace(epochs=epochs), [], [], time.perf_counter()
        for k in range(members):
            model = _fit_arrays(pe, x_tr, torch.as_tensor(y_tr), train.member_seed(pe, k), device)
            accs.append(_scores(model, x_tr, y_tr, device)["acc"])
            ps.append(_scores(model, x_te, y_te, device)["p"])
        seconds = time.perf_counter() - t0
        held = _study_scores(np.mean(ps, 0), y_te, study_of, profile.n_boot)
        study_p.append(held.pop("study"))
        rows.append(dict(members=members, epochs=epochs, train_acc=float(np.mean(accs)), seconds=seconds, **held))
    first = study_p[0]
    for r, st in zip(rows[1:], study_p[1:]):
        r.update({f"minus_first_{m}": d for m, d in _paired(st, first, profile.n_boot).items()})
    return dict(test_studies=int(len(first)), rows=rows)


def trade_table(res: dict) -> pd.DataFrame:
    """`ensemble_trade` as a table, intervals as 'estimate [low, high]', the paired differences from the first split
    to three decimals (a bound of -0.002 must not print as 0.00)."""
    def delta(r, m):
        d = r.get(f"minus_first_{m}")
        return "-" if d is None else evidence.fmt_estimate(d[0], d[1:], digits=3)

    return pd.DataFrame([{
        "members x epochs": f"{r['members']} x {r['epochs']}", "members' training accuracy": round(100 * r["train_acc"], 1),
        "study AUROC": evidence.fmt_estimate(r["study_auroc"], r["study_auroc_ci"]),
        "study kappa": evidence.fmt_estimate(r["study_kappa"], r["study_kappa_ci"]),
        "studies called abnormal": round(100 * r["study_called"], 1),
        "AUROC minus the first": delta(r, "auroc"), "kappa minus the first": delta(r, "kappa"),
        "seconds": round(r["seconds"])} for r in res["rows"]])


def _paired(st: pd.DataFrame, ref: pd.DataFrame, n_boot: int) -> dict:
    """Study AUROC and kappa of the studies' mean probabilities `st` minus those of `ref` (the same studies, in the
    same order), each [delta, low, high] with its paired 95 % interval (`evidence.paired_delta`)."""
    out = {}
    for metric in ("auroc", "kappa"):
        a, b = st.p.to_numpy(np.float64), ref.p.to_numpy(np.float64)
        if metric == "kappa":
            a, b = np.stack([1 - a, a], 1), np.stack([1 - b, b], 1)
        d = evidence.paired_delta(metric, a, b, st.y.to_numpy(), None, n_boot)
        out[metric] = [d["delta"], d["low"], d["high"]]
    return out


def scaling_top(rows: list[dict]) -> dict:
    """The scaling curve's reference row: the largest size at the profile's epochs (the one without differences)."""
    return next(r for r in rows if "minus_top_auroc" not in r)


def scaling_name(r: dict, top: dict) -> str:
    """A scaling row's name: its share ('4x'), and "with 13x's steps" where it was trained for the reference's steps."""
    same = r.get("epochs") in (None, top.get("epochs"))
    return f"{r['patients']}x" + ("" if same else f" with {top['patients']}x's steps")


def scaling_table(res: dict) -> pd.DataFrame:
    """The scaling curve as a table: one row per training size, intervals as 'estimate [low, high]', and each smaller
    size's paired difference from the largest ('-' for the largest itself)."""
    def delta(r, m):
        d = r.get(f"minus_top_{m}")
        return "-" if d is None else evidence.fmt_estimate(d[0], d[1:], digits=2)

    top = scaling_top(res["rows"])
    return pd.DataFrame([{
        "training patients": scaling_name(r, top), "training images": r["train_images"],
        "epochs": r.get("epochs", "-"), "optimiser steps": r.get("steps", "-"),
        "training accuracy": round(100 * r["train_acc"], 1),
        "study AUROC": evidence.fmt_estimate(r["study_auroc"], r["study_auroc_ci"]),
        "study kappa": evidence.fmt_estimate(r["study_kappa"], r["study_kappa_ci"]),
        "studies called abnormal": round(100 * r["study_called"], 1),
        "AUROC minus the largest": delta(r, "auroc"), "kappa minus the largest": delta(r, "kappa"),
        "seconds": round(r["seconds"])} for r in res["rows"]])


def table(rows: list[dict]):
    df = pd.DataFrame(rows).reindex(columns=[
        "rung", "augment", "epochs", "train_images", "held_out_images", "majority", "train_acc", "held_out_acc",
        "held_out_auroc", "study_auroc", "study_kappa", "free_study_auroc", "objects_study_auroc", "study_called",
        "found_hardware", "found_cast_only", "seconds"])
    for c in ("majority", "train_acc", "held_out_acc", "study_called", "found_hardware", "found_cast_only"):
        df[c] = (100 * df[c]).round(1)
    for c in ("held_out_auroc", "study_auroc", "study_kappa", "free_study_auroc", "objects_study_auroc"):
        df[c] = [evidence.fmt_estimate(r.get(c), r.get(f"{c}_ci")) for r in rows]
    df["seconds"] = df["seconds"].round(0).astype(int)
    return df.astype(object).where(df.notna(), "-")  # a rung without a study AUROC shows '-', not nan


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.models.learnability", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data", default="")
    ap.add_argument("--rungs", nargs="*", default=list(RUNGS), help=f"of: {', '.join(RUNGS)}")
    ap.add_argument("--scaling", action="store_true",
                    help="instead of the rungs, the paired data-scaling curve (scaling_curve; phantom only): "
                         "report/recipe/<profile>-scaling.{json,md}")
    ap.add_argument("--trade", action="store_true",
                    help="instead of the rungs, the members-for-epochs trade at the report's training cost "
                         "(ensemble_trade): report/recipe/<profile>-trade.{json,md}")
    a = ap.parse_args(argv)
    if a.trade:
        profile = get_profile(a.profile, task="abnormality")
        _, _, cache = data.prepare(profile, a.data, get_paths(task="abnormality"), progress=False)
        res = dict(profile=profile.name, task="abnormality", generator_version=generator_of(a.data),
                   **ensemble_trade(profile, cache))
        out = ROOT / "report" / "recipe" / f"{profile.name}-trade.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(markdown(trade_table(res)))
        print(markdown(trade_table(res)))
        return
    if a.scaling:
        if a.data:
            raise SystemExit("the scaling curve runs on the profile's phantom (nested prefixes of one plan), not on --data")
        profile = get_profile(a.profile, task="abnormality")
        res = dict(profile=profile.name, task="abnormality", generator_version=generator_of(""),
                   **scaling_curve(profile))
        out = ROOT / "report" / "recipe" / f"{profile.name}-scaling.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(markdown(scaling_table(res)))
        print(markdown(scaling_table(res)))
        return
    unknown = sorted(set(a.rungs) - set(RUNGS))
    if unknown:
        raise SystemExit(f"unknown rung(s) {unknown}; known: {', '.join(RUNGS)}")
    profile = get_profile(a.profile, task="abnormality")
    _, _, cache = data.prepare(profile, a.data, get_paths(task="abnormality"), progress=False)
    out = ROOT / "report" / "recipe"
    out.mkdir(parents=True, exist_ok=True)
    f = out / f"{profile.name}-learnability.json"
    generator = generator_of(a.data)
    old = previous_rows(f, generator)
    rows = {r["rung"]: dict(dict(study_auroc=None), **r) for r in old}
    for name in a.rungs:
        r = run_rung(profile, name, RUNGS[name], cache)
        rows[name] = r
        print(f"{name:40s} train {100 * r['train_acc']:5.1f} %, held out {100 * r['held_out_acc']:5.1f} % "
              f"(majority {100 * r['majority']:.1f} %), AUROC {r['held_out_auroc']:.3f}, {r['seconds']:.0f} s",
              flush=True)
        ordered = [rows[k] for k in RUNGS if k in rows]
        f.write_text(json.dumps(dict(profile=profile.name, task="abnormality", generator_version=generator,
                                     rows=ordered), indent=1))
        f.with_suffix(".md").write_text(markdown(table(ordered)))


if __name__ == "__main__":
    main()
