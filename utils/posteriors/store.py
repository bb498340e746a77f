"""What the posteriors keep on disk: each member's penultimate features per split (recomputed when its checkpoint
changes) and the saved predictions (`save_predictions` / `load_predictions`, one .npz per method, split and
member; see `base.Posterior.file_name` for what the name holds)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from utils import data
from utils.config import Paths, get_device, get_paths, require_profile
from utils.models.train import datasets, load_member, member_dir

# all weights); 2: they record the prior search (bracketed, ...); 3: and what the posterior holds (parameters,
# posterior_mb); 4: the projected probit centres the mean logits over classes too (shift-invariant)


# --------------------------------------------------------------------------- features


@torch.no_grad()
def embed(model, ds, device, batch_size: int = 256) -> np.ndarray:
    """Penultimate features phi(x) (N x K) of a dataset, in eval mode."""
    model.eval()
    out = [model.embed(x.to(device)).float().cpu() for x, _ in data.make_loader(ds, batch_size)]
    return torch.cat(out).numpy()


def checkpoint_sha256(path) -> str:
    """sha256 of a checkpoint file's bytes: which weights features were computed from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _features_source(sidecar) -> str | None:
    """The checkpoint hash a `features_<subset>.json` sidecar records, or None (missing or unreadable)."""
    try:
        return json.loads(sidecar.read_text())["checkpoint_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def member_features(profile, member: int, cache: data.ImageCache, paths: Paths | None = None, device=None,
                    parts=None) -> dict:
    """{subset: (phi, y)} for train/val/test of a trained member, cached beside its checkpoint.

    Each `features_<subset>.npy` has a sidecar `features_<subset>.json` recording the sha256 of the `best.pt`
    it was computed from. Features whose checkpoint has since changed (retrained, replaced), or without a
    sidecar, are recomputed from the checkpoint there now; training need not know this cache exists.
    """
    profile, paths, device = require_profile(profile), paths or get_paths(task=profile.task, parts=parts), device or get_device()
    d = member_dir(paths, profile, member, parts)
    ckpt = d / "best.pt"
    source = checkpoint_sha256(ckpt) if ckpt.is_file() else None  # None: load_member says what is missing
    model = None
    out = {}
    for subset, ds in datasets(profile, cache, parts)._asdict().items():
        f, sidecar = d / f"features_{subset}.npy", d / f"features_{subset}.json"
        if source is None or not f.is_file() or _features_source(sidecar) != source:
            if model is None:
                model, _ = load_member(profile, member, cache, paths, device, parts)
            sidecar.unlink(missing_ok=True)  # never a sidecar vouching for features being rewritten
            np.save(f, embed(model, ds, torch.device(device)))
            sidecar.write_text(json.dumps(dict(checkpoint_sha256=source)))
        out[subset] = (np.load(f), ds.targets.astype(np.int64))
    return out


# --------------------------------------------------------------------------- saved predictions


def save_predictions(folder, name: str, probs: np.ndarray, samples=None, **info) -> None:
    """`<folder>/<name>.npz`: probabilities (N x C, float32), optional per-sample probabilities
    (S x N x C, float16) and scalar information (times, prior precision, temperature)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(probs=np.asarray(probs, np.float32))
    if samples is not None:
        arrays["samples"] = np.asarray(samples, np.float16)
    np.savez_compressed(folder / f"{name}.npz", info=np.array(json.dumps(info)), **arrays)


def load_predictions(folder, name: str) -> dict | None:
    f = folder / f"{name}.npz"
    if not f.is_file():
        return None
    z = np.load(f)
    out = dict(probs=z["probs"].astype(np.float64), **json.loads(str(z["info"])))
    if "samples" in z:
        out["samples"] = z["samples"]
    return out
