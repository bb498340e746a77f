"""Run profiles, paths and the device: the one place a run is configured.

A profile is a frozen dataclass of plain values (nanoGPT style). Notebooks and
command-line tools receive the profile *name* and optional overrides, and call
`get_profile(name, **overrides)`::

    smoke  tiny phantom, tiny images: every notebook together in under 3 min (tests)
    cpu    the default: the embedded phantom, the whole report in ~10 min on 2 CPU cores
    gpu    real MURA (or a large phantom) on one GPU, 224 px images

Paths: every product of a run lives under one output root (the repository by
default): `data/` (generated phantoms), `artifacts/` (caches, checkpoints,
predictions; ignored by git), `report/` (executed notebooks, `results/*.json`)
and `figures/`. Tests point the output root at a temporary folder.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""

BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
"""MURA's seven study types, in MURA's (alphabetical) order; the body-part class indices."""


@dataclass(frozen=True)
class PhantomSpec:
    """Size of a generated phantom data set (see `utils.data.phantom`)."""

    train_patients: int
    valid_patients: int
    seed: int = 0
    max_side: int = 512  # long side of the written PNGs, as MURA's
    ood_patients: int = 100  # knees, feet and chests for notebook 06 (never trained on)


@dataclass(frozen=True)
class Profile:
    name: str
    # data
    phantom: PhantomSpec
    image_size: int  # images are letterboxed to image_size x image_size in the cache
    val_fraction: float = 0.15  # share of train *patients* held out (the val and cal splits)
    cal_fraction: float = 0.5  # share of the held-out patients in the cal split (conformal calibration only)
    seed: int = 0
    task: str = "bodypart"  # "bodypart" (7 classes) or "abnormality" (binary)
    # data loading
    batch_size: int = 64
    num_workers: int = 0  # DataLoader workers; 0 reads in the main process (fast from the cache)
    # training (utils.train; notebooks 01 and 03)
    arch: str = "small"
    augment: str = "full"  # training augmentation: full | lossless (mirror, brightness, contrast) | none
    dropout: float = 0.1  # before the head; lets notebook 04 compare MC dropout
    optimizer: str = "sgd"  # sgd (Nesterov momentum) or adam: weight decay coupled to the gradient = a Gaussian
    lr: float = 0.05  # prior of precision N * weight_decay; adamw (decoupled) implies no fixed prior
    weight_decay: float = 5e-4
    warmup_epochs: int = 1  # linear warm-up, then cosine decay to zero, stepped per batch
    epochs: int = 10
    patience: int = 100  # early stopping on validation NLL; the best-NLL checkpoint is kept regardless
    members: int = 3  # deep-ensemble size M (members differ only in their seed)
    # How much evidence each chapter gathers. Every setting that differs between the profiles is a field here, so
    # that no notebook or module asks which profile it runs (tests/test_config.py checks it). The defaults are the
    # cpu and gpu values; the smoke profile shrinks them so that the whole report runs in the tests.
    n_boot: int = 2000  # study-bootstrap replicates of every interval (`Run.n_boot`; every notebook)
    cue_probe_epochs: int = 8  # epochs of each trivial-cue probe (notebook 00, `explore.cue_table`)
    laplace_head_samples: int = 100  # draws of member 0's last-layer Laplace head explained per image (notebook 05)
    deletion_images: int = 120  # test images (seeded draw) scored by deletion curves (notebook 05)
    all_weights_samples: int = 16  # networks drawn from the all-weights Laplace per image (notebook 05)
    all_weights_images: int = 256  # test images (seeded draw) the all-weights explanations are computed on (05)
    scale_sweep_images: int = 64  # of those, the images the posterior-scale (tau) sweep runs on (notebook 05)
    rotation_step: int = 15  # degrees between the angles of the rotation sweep, -180 to 180 (notebook 06)
    counterfactual_studies: int = 30  # phantom studies re-rendered without their findings (notebook 07)
    # image sizes of notebook 07's resolution sweep (one fresh member per size); empty: the profile's image_size
    resolution_sizes: tuple[int, ...] = ()
    run_tag: str = ""  # names a variant of the profile (e.g. "96px"): its artifacts go beside the profile's own

    def replace(self, **overrides) -> "Profile":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown profile setting(s) {unknown}; known settings: {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        # 64 + 16 patients, seed 276 (phantom generator 2.0, whose plan no longer depends on the findings): every
        # body part has >= 10 training images after the validation carve (data.MIN_TRAIN_IMAGES) and appears in
        # val and test, and the abnormality task, on all parts and on HAND,WRIST, has both labels in every split;
        # most seeds of so few patients miss a part (MURA's shares are uneven). Chosen by scanning seeds 0-299.
        phantom=PhantomSpec(train_patients=64, valid_patients=16, seed=276, ood_patients=12),
        image_size=48,
        batch_size=32,
        epochs=2,
        members=2,
        n_boot=400,
        cue_probe_epochs=1,
        laplace_head_samples=20,
        deletion_images=40,
        all_weights_samples=8,
        all_weights_images=40,
        scale_sweep_images=20,
        rotation_step=90,
        counterfactual_studies=6,
        resolution_sizes=(32, 48),
    ),
    "cpu": Profile(
        name="cpu",
        phantom=PhantomSpec(train_patients=1100, valid_patients=260, ood_patients=120),
        image_size=64,
        batch_size=64,
        # report/recipe/ (phantom 3.1): at 12 epochs the body-part member 0 fits 93.0 % of its training images with
        # its validation NLL still falling (0.327); 30 epochs reach 98.5 % and 0.143 but took 87 s of training against
        # 36 s (one run each, shared cores: indicative), and a 20-epoch body-part report took 761 s (phantom 3.0), over its 10-minute
        # budget; the abnormality member keeps epoch 7 of 12 at 59.8 % (its training set's normal share is 59.4 %) and
        # fits 65.9 % at 30. Both tasks keep 12 epochs: what the budget pays for, not what fits best. On the wrist alone
        # (report/recipe/cpu-scaling.md, paired, one seed a row) the cpu phantom's wrist images give a network that calls
        # every study normal at 12 epochs (120 steps) and a study AUROC of 0.83 at 1,860 steps: there the smaller shares
        # are short mainly of steps. All parts (report/recipe/cpu-learnability.md: one network each, one seed, its last
        # epoch, on the report's test studies; no paired interval, differences not tested) give study AUROC 0.57 at 12
        # epochs, 0.66 at 40 and 0.74 [0.69, 0.80] at 160 (0.64 [0.57, 0.71] shortcut-free; 7,200 steps, fitting
        # 84.95 %, 468-522 s over three runs on shared cores): five members that long would take 39-44 min of training
        # alone against the report's 10 minutes per task (report/recipe/cpu-trade.md: the same cost spent on fewer,
        # longer-trained members). Whether the gpu profile's recipe reaches a higher study AUROC is not measured.
        epochs=12,
        members=5,
        rotation_step=30,  # 30 degrees (13 angles) keeps the cpu report near its 10-minute budget
        resolution_sizes=(64, 96),  # 128 px costs ~60 s more (train 44 s, cache ~20 s): over the budget
    ),
    "gpu": Profile(
        name="gpu",
        # used only when no MURA path is given: a large phantom of MURA's size order
        phantom=PhantomSpec(train_patients=6000, valid_patients=800, ood_patients=300),
        image_size=224,
        batch_size=128,
        num_workers=8,
        arch="resnet18",
        epochs=30,
        members=15,
        resolution_sizes=(128, 224, 320),
    ),
}


def get_profile(name: str = "cpu", **overrides) -> Profile:
    """The profile called `name`, with any settings overridden."""
    if isinstance(name, Profile):
        return name.replace(**overrides) if overrides else name
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)} "
            "(pass one of them, e.g. `make report PROFILE=cpu`)"
        )
    profile = PROFILES[name]
    return profile.replace(**overrides) if overrides else profile


def require_profile(profile) -> Profile:
    """`profile` itself, checked: below `run.Run` every function takes the `Profile` the run resolved once (with
    its overrides), never a name to look up again (`get_profile` is for the entry points: Run, the commands)."""
    if not isinstance(profile, Profile):
        raise TypeError(f"expected a config.Profile, got {profile!r}: resolve a name once with "
                        "config.get_profile(name) and pass the Profile on")
    return profile


@dataclass(frozen=True)
class Paths:
    """Where a run reads and writes; everything hangs off `out_root`."""

    out_root: Path = ROOT
    variant: str = ""  # the report's variant: "" for the body-part task on every part, else `report_variant`

    @property
    def data(self) -> Path:
        return self.out_root / "data"

    @property
    def artifacts(self) -> Path:
        return self.out_root / "artifacts"

    @property
    def cache(self) -> Path:
        return self.artifacts / "cache"

    @property
    def report(self) -> Path:
        """report/, or report/<variant>/ for another task or a subset of parts (the reports coexist)."""
        return self.out_root / "report" / self.variant if self.variant else self.out_root / "report"

    @property
    def results(self) -> Path:
        return self.report / "results"

    @property
    def figures(self) -> Path:
        return self.out_root / "figures" / self.variant if self.variant else self.out_root / "figures"

    def phantom_root(self, profile: Profile) -> Path:
        """Where the phantom of `profile` is generated (the parent of its MURA-v1.1 folder)."""
        return self.data / f"phantom-{profile.name}"

    def ood_root(self, profile: Profile) -> Path:
        """Where the profile's unfamiliar-parts phantom (knees, feet, chests) is generated."""
        return self.data / f"phantom-{profile.name}-unfamiliar"

    def make(self) -> "Paths":
        for p in (self.data, self.artifacts, self.report, self.results, self.figures):
            p.mkdir(parents=True, exist_ok=True)
        return self


TASKS = ("bodypart", "abnormality")


def parse_parts(parts) -> list[str] | None:
    """Body parts from "HAND,WRIST", ["hand", "wrist"] or "" / None (every part): sorted, upper case, checked."""
    if parts is None or parts == "":
        return None
    items = [p.strip().upper() for p in (parts.split(",") if isinstance(parts, str) else parts) if str(p).strip()]
    items = [p[3:] if p.startswith("XR_") else p for p in items]
    unknown = sorted(set(items) - set(BODY_PARTS))
    if unknown:
        raise ValueError(f"unknown body part(s) {unknown}; MURA's are {', '.join(BODY_PARTS)} "
                         "(e.g. `make report TASK=abnormality PARTS=HAND,WRIST`)")
    return sorted(set(items)) or None


def report_variant(task: str = "bodypart", parts=None) -> str:
    """Where a run's report goes under report/ and figures/: '' for the body-part task on every part (the main
    report), else e.g. 'abnormality' or 'abnormality-HAND+WRIST', so reports of different tasks coexist."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)} (e.g. `make report TASK=abnormality`)")
    parts = parse_parts(parts)
    if task == "bodypart" and not parts:
        return ""
    return task + ("-" + "+".join(parts) if parts else "")


def get_paths(out_root: str | os.PathLike | None = None, task: str = "bodypart", parts=None) -> Paths:
    """Paths under `out_root` ('' or None: the repository), for the report of `task` on `parts`."""
    return Paths(Path(out_root).resolve() if out_root else ROOT, report_variant(task, parts))


def display_path(p: str | os.PathLike) -> str:
    """`p` relative to the repository where it lies inside it (so reports do not record a machine's paths)."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


class DeviceUnavailable(RuntimeError):
    """A device was asked for (argument or XRAY_DEVICE) that this machine does not have."""


def get_device(force: str | None = None):
    """The torch device: CUDA when present, else CPU.

    `force` (or the environment variable XRAY_DEVICE) may be "cpu", "cuda" or
    "cuda:N"; asking for CUDA on a machine without it is an error (DeviceUnavailable).
    """
    choice = force or os.environ.get("XRAY_DEVICE") or ""
    if not choice:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device {choice!r} was asked for but CUDA is not available on this machine; "
            "use device='cpu' (or unset XRAY_DEVICE) to run on the CPU"
        )
    try:
        return torch.device(choice)
    except RuntimeError as e:
        raise ValueError(f"unknown device {choice!r}: use 'cpu', 'cuda' or 'cuda:N'") from e


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
