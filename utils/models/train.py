"""MAP training of ensemble members, with atomic checkpoints that resume.

    python -m utils.models.train --profile cpu --member 0          # one member (a separate process per member
    python -m utils.models.train --profile gpu --member 3 --data /path/to/MURA-v1.1   # scales to a cluster)
    python -m utils.models.train --profile cpu --all               # every member of the profile's ensemble

Objective. Each member minimises the mean cross-entropy over the N training
images plus (wd / 2) ||theta||^2 (weight decay coupled to the gradient, as
SGD's and Adam's `weight_decay` are): the MAP estimate under a Gaussian prior
theta ~ N(0, 1 / (N * wd) I). The prior precision N * wd is recorded with the
checkpoint, and later notebooks start the Laplace prior from it. (AdamW's
decoupled decay implies no fixed prior and is offered only as an option.)

Schedule and selection: linear warm-up then cosine decay, stepped per batch;
the checkpoint with the lowest validation NLL is kept (with optional early
stopping). Every epoch re-seeds the shuffling, augmentation and dropout from
(seed, epoch), so a run resumed from its last epoch ends with the same weights
as one never interrupted.

Files, per member: `artifacts/models/<profile>/<task>/<arch>/memberNN/`
`best.pt` (finished: state dict + metadata), `last.pt` (while training),
`history.json`. Checkpoints hold tensors and plain values only and are read
with `torch.load(..., weights_only=True)`: opening one never runs code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from utils import data
from utils.config import DeviceUnavailable, Paths, Profile, get_device, get_paths, get_profile, require_profile
from utils.models.networks import build_model

CKPT_VERSION = 1


class CheckpointMismatch(ValueError):
    """A checkpoint made for other data, another architecture or other settings."""


# --------------------------------------------------------------------------- bookkeeping


def member_seed(profile: Profile, member: int) -> int:
    return profile.seed * 1000 + member


def run_name(profile: Profile, parts=None) -> str:
    """`<profile>/<task>[-<PARTS>]/<arch>[-<run_tag>]`: the profile's `run_tag` names a variant whose artifacts must
    not mix with the profile's own (e.g. "96px" in the resolution sweep), so the profiles' own keep their paths."""
    task = profile.task + ("-" + "+".join(sorted(p.upper() for p in parts)) if parts else "")
    return f"{profile.name}/{task}/{profile.arch}" + (f"-{profile.run_tag}" if profile.run_tag else "")


def member_dir(paths: Paths, profile: Profile, member: int, parts=None) -> Path:
    return paths.artifacts / "models" / run_name(profile, parts) / f"member{member:02d}"


def data_fingerprint(*datasets: data.CachedImages) -> str:
    """Hash of what a model is trained and selected on: images (by path, and the cache's key, which hashes each
    file's size and mtime, so a regenerated phantom is new data), subsets, targets, size."""
    h = hashlib.sha256()
    for ds in datasets:
        h.update(f"{ds.size}|{','.join(ds.classes)}|{Path(ds.array_path).stem}\n".encode())
        for rel, sub, t in zip(ds.index.rel_path, ds.index.subset, ds.targets):
            h.update(f"{rel}|{sub}|{t}\n".encode())
    return h.hexdigest()[:16]


def expected_meta(profile: Profile, member: int, train_ds, val_ds) -> dict:
    """What a checkpoint of this member must match."""
    return dict(version=CKPT_VERSION, profile=profile.name, task=profile.task, arch=profile.arch,
                num_classes=len(train_ds.classes), classes=list(train_ds.classes), dropout=profile.dropout,
                seed=member_seed(profile, member), member=member, image_size=train_ds.size,
                data_fingerprint=data_fingerprint(train_ds, val_ds), optimizer=profile.optimizer, lr=profile.lr,
                weight_decay=profile.weight_decay, epochs=profile.epochs, augment=profile.augment,
                n_train=len(train_ds),
                prior_precision=(len(train_ds) * profile.weight_decay if profile.optimizer != "adamw" else None))


def check_meta(meta: dict, expected: dict, path) -> None:
    keys = ("version", "task", "arch", "num_classes", "classes", "dropout", "seed", "image_size",
            "data_fingerprint", "optimizer", "lr", "weight_decay", "epochs", "augment")
    before = dict(augment="full")  # what checkpoints written before a setting existed were trained with
    diff = {k: (meta.get(k, before.get(k)), expected[k]) for k in keys if meta.get(k, before.get(k)) != expected[k]}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointMismatch(
            f"checkpoint {path} does not match this run ({detail}); delete its folder to retrain "
            "(or pass --force / force=True), or point out_root elsewhere")


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, expected: dict | None = None, device="cpu"):
    """(model, meta) from a finished checkpoint; refused with a clear message if it does not match `expected`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train it with `python -m utils.models.train`")
    ck = torch.load(path, map_location=device, weights_only=True)
    meta = ck["meta"]
    if expected is not None:
        check_meta(meta, expected, path)
    model = build_model(meta["arch"], meta["num_classes"], meta["dropout"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, profile: Profile) -> torch.optim.Optimizer:
    p, wd = model.parameters(), profile.weight_decay
    if profile.optimizer == "sgd":
        return torch.optim.SGD(p, lr=profile.lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if profile.optimizer == "adam":
        return torch.optim.Adam(p, lr=profile.lr, weight_decay=wd)
    if profile.optimizer == "adamw":
        return torch.optim.AdamW(p, lr=profile.lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {profile.optimizer!r}; known: sgd, adam, adamw")


def use_amp(device) -> bool:
    """Whether training runs under bf16 autocast: on CUDA only. One switch, so a test can take the branch on the
    CPU (torch autocasts to bf16 there too)."""
    return torch.device(device).type == "cuda"


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def predict_logits(model: nn.Module, ds, device, batch_size: int = 256) -> np.ndarray:
    """Logits (N x C) of a dataset, in order, in eval mode, in full precision (never under training's bf16
    autocast: MAP and temperature scaling read these logits, Laplace and MC dropout the float32 features of the
    same network, `store.member_features`, and the two must agree)."""
    model.eval()
    out = []
    for x, _ in data.make_loader(ds, batch_size):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


CLEAN_TRAIN_IMAGES = 256
"""Training images (a fixed, seeded draw) on which each epoch's clean training figures are measured: an eval pass
over all of them cost a third of a cpu-profile epoch; the member's final figure uses every image
(`fit_summary` reads `train_acc` from the checkpoint where it is recorded)."""


def evaluate(model, ds, device, rows=None) -> dict:
    """NLL and accuracy of `model` on `ds` (or on its images at positions `rows`), in eval mode."""
    targets = np.asarray(ds.targets)
    if rows is not None:
        ds, targets = torch.utils.data.Subset(ds, rows), targets[rows]
    logits = torch.from_numpy(predict_logits(model, ds, device))
    y = torch.as_tensor(targets).long()
    return dict(nll=float(nn.functional.cross_entropy(logits, y)), acc=float((logits.argmax(1) == y).float().mean()))


def fit(model: nn.Module, train_ds, val_ds, profile: Profile, seed: int, ckpt_dir: Path, meta: dict, device,
        progress: bool = True, on_epoch_end=None, augment=None) -> dict:
    """Train `model` (resuming from ckpt_dir/last.pt if present); writes best.pt and returns its metadata.
    `augment`: the batch augmentation (default: the profile's, `data.augmentation(profile.augment)`)."""
    amp = use_amp(device)
    model.to(device).to(memory_format=torch.channels_last)  # faster on CPU (oneDNN) and GPU alike
    augment = data.augmentation(profile.augment) if augment is None else augment
    opt = make_optimizer(model, profile)
    bs = profile.batch_size
    steps = math.ceil(len(train_ds) / bs)
    total, warm = profile.epochs * steps, profile.warmup_epochs * steps
    start, history, best_nll, best_state, seconds = 0, [], math.inf, None, 0.0
    last = ckpt_dir / "last.pt"
    if last.is_file():
        ck = torch.load(last, map_location=device, weights_only=True)
        check_meta(ck["meta"], meta, last)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start, history, seconds = ck["epoch"], ck["history"], ck["seconds"]
        best_nll, best_state = ck["best_nll"], ck["best_state"]
    since_best = len(history) - 1 - int(np.argmin([h["val_nll"] for h in history])) if history else 0
    n = len(train_ds)
    clean_rows = np.sort(np.random.default_rng(seed).permutation(n)[:CLEAN_TRAIN_IMAGES]) if n > CLEAN_TRAIN_IMAGES \
        else None
    for epoch in range(start, profile.epochs):
        if since_best >= profile.patience:
            break
        t0 = time.perf_counter()
        torch.manual_seed(seed * 100_003 + epoch)  # dropout of this epoch
        aug_gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loader = data.make_loader(train_ds, bs, shuffle=True, seed=seed * 100_003 + epoch,
                                  num_workers=profile.num_workers, drop_last=len(train_ds) > bs)
        model.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        bar = tqdm(loader, desc=f"member seed {seed} epoch {epoch + 1}/{profile.epochs}", leave=False,
                   disable=not progress)
        for i, (x, y) in enumerate(bar):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps + i, total, warm, profile.lr)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = augment(x, aug_gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item() * len(y)
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
        val = evaluate(model, val_ds, device)
        clean = evaluate(model, train_ds, device, clean_rows)  # training images as they are, eval mode
        seconds += time.perf_counter() - t0
        history.append(dict(epoch=epoch + 1, train_loss=tot_loss / tot_n, train_acc=tot_correct / tot_n,
                            train_eval_nll=clean["nll"], train_eval_acc=clean["acc"],
                            val_nll=val["nll"], val_acc=val["acc"], lr=opt.param_groups[0]["lr"],
                            seconds=time.perf_counter() - t0))
        if val["nll"] < best_nll:
            best_nll, since_best = val["nll"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        save_atomic(dict(meta=meta, state_dict=model.state_dict(), optimizer=opt.state_dict(), epoch=epoch + 1,
                         history=history, seconds=seconds, best_nll=best_nll, best_state=best_state), last)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)
    best_epoch = int(np.argmin([h["val_nll"] for h in history])) + 1
    model.load_state_dict(best_state)
    fitted = evaluate(model, train_ds, device)  # the kept weights on every training image
    final = dict(meta, finished=True, best_epoch=best_epoch, best_val_nll=best_nll, train_seconds=seconds,
                 epochs_run=len(history), device=str(device), train_acc=fitted["acc"], train_nll=fitted["nll"])
    save_atomic(dict(meta=final, state_dict=best_state, history=history), ckpt_dir / "best.pt")
    (ckpt_dir / "history.json").write_text(json.dumps(history, indent=1))
    for stale in ckpt_dir.glob("logits_*.npy"):  # its own caches; others check best.pt themselves
        stale.unlink()
    last.unlink(missing_ok=True)
    return final


class Splits(NamedTuple):
    """The task's datasets: train, val (checkpoints, temperatures, prior searches, RAPS), cal (conformal
    calibration only) and test."""

    train: data.CachedImages
    val: data.CachedImages
    cal: data.CachedImages
    test: data.CachedImages


def datasets(profile: Profile, cache: data.ImageCache, parts=None) -> Splits:
    """The (train, val, cal, test) datasets of the profile's task (training augments whole batches:
    data.BatchAugment).

    Refuses (data.DegenerateData) a cache that cannot train or score the task on `parts`: one body part on
    the body-part task, a class with fewer than data.MIN_TRAIN_IMAGES training images, an empty split.
    """
    data.check_task_data(cache.index, profile.task, parts)
    return Splits(*(data.CachedImages(cache, s, task=profile.task, parts=parts) for s in data.SUBSETS))


def train_member(profile, member: int, cache: data.ImageCache, paths: Paths | None = None, device=None,
                 parts=None, force: bool = False, progress: bool = True, on_epoch_end=None) -> dict:
    """Train member `member` of the profile's ensemble, or reuse it if already trained; returns its metadata."""
    profile, paths, device = require_profile(profile), paths or get_paths(task=profile.task, parts=parts), device or get_device()
    tr, va = datasets(profile, cache, parts)[:2]
    meta = expected_meta(profile, member, tr, va)
    d = member_dir(paths, profile, member, parts)
    best = d / "best.pt"
    if force:
        for f in ("best.pt", "last.pt"):
            (d / f).unlink(missing_ok=True)
    if best.is_file():
        ck = torch.load(best, map_location="cpu", weights_only=True)
        check_meta(ck["meta"], meta, best)
        return ck["meta"]
    seed = member_seed(profile, member)
    torch.manual_seed(seed)
    model = build_model(profile.arch, len(tr.classes), profile.dropout)
    return fit(model, tr, va, profile, seed, d, meta, device, progress, on_epoch_end)


def load_member(profile, member: int, cache: data.ImageCache, paths: Paths | None = None, device="cpu",
                parts=None):
    """(model, meta) of a trained member, checked against the data and settings of this run."""
    profile, paths = require_profile(profile), paths or get_paths(task=profile.task, parts=parts)
    tr, va = datasets(profile, cache, parts)[:2]
    return load_checkpoint(member_dir(paths, profile, member, parts) / "best.pt",
                           expected_meta(profile, member, tr, va), device)


def member_logits(profile, member: int, cache: data.ImageCache, subset: str, paths: Paths | None = None,
                  device=None, parts=None) -> np.ndarray:
    """Logits of a trained member on a subset (train without augmentation, val, cal, test), cached beside it."""
    profile, paths, device = require_profile(profile), paths or get_paths(task=profile.task, parts=parts), device or get_device()
    f = member_dir(paths, profile, member, parts) / f"logits_{subset}.npy"
    model, meta = load_member(profile, member, cache, paths, device, parts)
    if f.is_file():
        return np.load(f)
    ds = data.CachedImages(cache, subset, task=profile.task, parts=parts)
    logits = predict_logits(model, ds, torch.device(device))
    np.save(f, logits)
    return logits




def history(profile, member: int, paths: Paths | None = None, parts=None):
    """Per-epoch history of a trained member as a DataFrame."""
    profile, paths = require_profile(profile), paths or get_paths(task=profile.task, parts=parts)
    return pd.read_json(member_dir(paths, profile, member, parts) / "history.json")


FIT_TARGET = 0.85
"""Training accuracy (eval mode, no augmentation) a member should reach at its kept epoch; below it the run, not
the method, is what the numbers describe (issue 21's target for the abnormality task, on noise-free labels)."""


def fit_summary(history, best_epoch: int, meta: dict | None = None) -> dict:
    """What a member fits (`history`: its per-epoch records, a list or a DataFrame; `meta`: its checkpoint's
    metadata): training accuracy and NLL in eval mode without augmentation at the kept epoch (on every training
    image where `meta` records it, else on the history's fixed draw of CLEAN_TRAIN_IMAGES) and at the last epoch
    (the draw), validation accuracy at the kept epoch, and whether it reaches `FIT_TARGET`."""
    h = pd.DataFrame(history)
    kept, last = h.iloc[best_epoch - 1], h.iloc[-1]
    meta = meta or {}
    acc = float(meta.get("train_acc", kept.train_eval_acc))  # every training image where the checkpoint has it
    return dict(train_acc=acc, train_nll=float(meta.get("train_nll", kept.train_eval_nll)),
                train_acc_last=float(last.train_eval_acc), val_acc=float(kept.val_acc), best_epoch=int(best_epoch),
                epochs=len(h), fits=bool(acc >= FIT_TARGET))


def fit_sentence(fit: dict) -> str:
    """One sentence (Markdown) on whether the member fits its training set, from `fit_summary`."""
    s = (f"Member 0 classifies {fit['train_acc']:.1%} of its own training images right at the kept epoch "
         f"({fit['best_epoch']} of {fit['epochs']}; {fit['train_acc_last']:.1%} at the last), measured in eval mode "
         f"without augmentation, and {fit['val_acc']:.1%} of the validation images.")
    if not fit["fits"]:
        s += (f" That is below {FIT_TARGET:.0%}: the member does not fit its training set, which is a defect of this "
              "run (data or recipe), not a finding about the methods that follow (see `python -m utils.models.recipe`).")
    return s


def ensemble_logits(profile, cache: data.ImageCache, subset: str, paths: Paths | None = None, device=None,
                    parts=None, members=None) -> np.ndarray:
    """Logits of every member (M x N x C) on a subset; members must be trained."""
    profile = require_profile(profile)
    members = range(profile.members) if members is None else members
    return np.stack([member_logits(profile, m, cache, subset, paths, device, parts) for m in members])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.models.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--member", type=int, nargs="+", help="member index (or indices) to train")
    who.add_argument("--all", action="store_true", help="every member of the profile's ensemble")
    ap.add_argument("--data", default="", help="MURA-v1.1 folder; empty: the profile's phantom")
    ap.add_argument("--out-root", default="")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    ap.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    a = ap.parse_args(argv)
    try:
        profile, paths = get_profile(a.profile), get_paths(a.out_root).make()
        device = get_device(a.device)
        members = range(profile.members) if a.all else a.member
        for m in members:
            if not 0 <= m < profile.members:
                sys.exit(f"member {m} is outside the profile's ensemble 0..{profile.members - 1}")
        _, _, cache = data.prepare(profile, a.data, paths)
    except (ValueError, DeviceUnavailable) as e:  # unknown profile or device, the user's data (data.DataError)
        sys.exit(f"error: {e}")
    for m in members:
        meta = train_member(profile, m, cache, paths, device, force=a.force)
        print(f"member {m}: best epoch {meta['best_epoch']}/{meta['epochs_run']}, val NLL "
              f"{meta['best_val_nll']:.4f}, {meta['train_seconds']:.0f} s -> {member_dir(paths, profile, m)}")


if __name__ == "__main__":
    main()
