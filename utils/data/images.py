"""MURA v1.1 data layer: tasks, preprocessing cache, datasets and the phantom's masks.

    src, index, cache = prepare(profile, data_root)  # a source (utils.sources), the checks, the cache
    check_task_data(index, "bodypart")        # refuses data no model can be trained or scored on
    cache  = build_cache(index, size=96, cache_dir=paths.cache)
    ds     = CachedImages(cache, subset="train", task="bodypart")

Where the images come from (a MURA-v1.1 tree, the user's or the generated phantom), its index and the
patient-level validation carve are `utils.sources`'s; everything here works on the index it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from utils.config import BODY_PARTS, parse_parts

TASKS = ("bodypart", "abnormality")
ABNORMALITY_CLASSES = ("normal", "abnormal")
CACHE_VERSION = 1
# inputs are standardised with fixed constants so every consumer sees the same tensors
PIXEL_MEAN, PIXEL_STD = 0.45, 0.25

SUBSETS = ("train", "val", "cal", "test")  # cal: conformal calibration only (sources.carve_validation)

MIN_TRAIN_IMAGES = 10
"""Fewest training images a class may have before a run is refused (`check_task_data`).

A floor that catches broken or partial trees, not a recipe for a good model. MURA's studies hold 1-4 views
(about 2.5 on average), so 10 images are about four studies, typically of three or four patients. Below that
a class rests on one or two patients: the network can memorise them instead of learning the class, the
validation carve (by patient) takes all of them or none, and the class's test scores are noise (a tree with
2 training images of one part once ran the whole report to 8 % test accuracy without a warning). MURA v1.1
has at least 1,272 training images per study type (HUMERUS); after the validation carve the smoke phantom
has at least 11 per class and the cpu phantom 117 (tests/test_data.py checks both).
"""
MURA_REL_PATH = re.compile(
    r"(?P<split>train|valid)/XR_(?P<part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study(?P<study_no>\d+)_(?P<verdict>positive|negative))/image(?P<image>\d+)\.png$"
)
"""A MURA image's path below the MURA-v1.1 folder: split, part, patient, study, verdict, image."""



class DataError(ValueError):
    """A problem with the user's data, with a message that says what to do."""


class DegenerateData(DataError):
    """Data that index fine but cannot train or score the task: one body part on the body-part task, a
    class with fewer than MIN_TRAIN_IMAGES training images, or an empty train / val / test split."""


# --------------------------------------------------------------------------- tasks


def task_targets(index: pd.DataFrame, task: str = "bodypart", parts=None) -> tuple[pd.DataFrame, list[str]]:
    """Rows of `index` for the task (restricted to `parts` if given), with an integer `target`.

    bodypart: one class per study type, all seven (or `parts`) in MURA's order, whether or not the
    rows hold every one, so class indices agree across splits; abnormality: 0 normal, 1 abnormal.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    parts = parse_parts(parts)
    if parts:
        index = index[index.body_part.isin(parts)]
    out = index.copy()
    if task == "bodypart":
        classes = [p for p in BODY_PARTS if not parts or p in parts]
        out["target"] = out.body_part.map({p: i for i, p in enumerate(classes)}).astype(int)
    else:
        classes = list(ABNORMALITY_CLASSES)
        out["target"] = out.label.astype(int)
    return out, classes


def class_counts(index: pd.DataFrame, task: str = "bodypart", parts=None) -> pd.DataFrame:
    """Images per class (rows, in class order) and subset (columns train / val / cal / test) of a carved index."""
    if "subset" not in index:
        raise ValueError("the index has no `subset` column: call carve_validation(index) first")
    rows, classes = task_targets(index, task, parts)
    counts = pd.crosstab(rows.target, rows.subset) if len(rows) else pd.DataFrame()
    counts = counts.reindex(index=range(len(classes)), columns=list(SUBSETS), fill_value=0).fillna(0).astype(int)
    counts.index = pd.Index(classes, name="class")
    counts.columns.name = "images"
    return counts


def _counts_line(counts: pd.DataFrame) -> str:
    return "; ".join(f"{c} {r.train}/{r.val}/{r.cal}/{r.test}" for c, r in counts.iterrows())


def check_task_data(index: pd.DataFrame, task: str = "bodypart", parts=None,
                    min_train: int = MIN_TRAIN_IMAGES) -> pd.DataFrame:
    """Refuse (DegenerateData) a carved index that cannot train or score `task`; returns `class_counts`.

    Three refusals, each with the counts and what to do: a single body part on the body-part task (one
    class: "100 % accuracy" that means nothing); a train, val or test split without images of the task;
    a class with fewer than `min_train` training images (MIN_TRAIN_IMAGES). Called where a run's index is
    prepared (`prepare`) and where its datasets are made (`utils.train.datasets`), so it fires before any
    cache is built or any member trained.
    """
    counts = class_counts(index, task, parts)
    rows = task_targets(index, task, parts)[0]
    parts = parse_parts(parts)
    scope = f" on parts {parts}" if parts else ""
    name = "body-part" if task == "bodypart" else task
    abnormality = ('the abnormality task (`make report TASK=abnormality`, or task="abnormality" in the profile: '
                   'config.get_profile(name, task="abnormality"))')
    if task == "bodypart":
        present = sorted(set(rows.body_part))
        if len(counts) == 1 or len(present) == 1:
            part = present[0] if present else counts.index[0]
            r = counts.loc[part]
            if len(counts) == 1:
                where, fix = (f"parts={list(counts.index)} leaves one class",
                              f"name two or more parts, or run {abnormality} on {part}")
            else:
                where, fix = (f"the data{scope} hold one body part only",
                              f"run {abnormality} on these images instead, or add studies of other body parts "
                              "(train/XR_<PART>/... and valid/XR_<PART>/...) to the tree")
            raise DegenerateData(
                f"the body-part task needs two or more body parts, but {where}: {part} ({r.train} train, "
                f"{r.val} val, {r.cal} cal, {r.test} test images), so every prediction would be {part} and its accuracy "
                f"meaningless. What to do: {fix}")
    total = counts.sum(axis=0)
    if total.sum() == 0:
        held = index.body_part.value_counts().sort_index()
        raise DegenerateData(
            f"no images for the {name} task{scope}: the data hold "
            + ", ".join(f"{p} {n}" for p, n in held.items())
            + " image(s). What to do: choose parts the tree holds (or parts=None for all)")
    empty = [s for s in SUBSETS if total[s] == 0]
    if empty:
        patients = {s: rows.patient[rows.subset == s].nunique() for s in SUBSETS}
        fix = {"train": "add studies to MURA's train split (train/XR_<PART>/patientNNNNN/...)",
               "val": "the validation and calibration splits are carved by patient from train: add patients to "
                      "the train split",
               "test": "the test set is MURA's valid split: add it (valid/XR_<PART>/patientNNNNN/...; MURA ships "
                       "one)"}
        raise DegenerateData(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty for the {name} task"
            f"{scope}: images (patients) per split: "
            + ", ".join(f"{s} {total[s]} ({patients[s]})" for s in SUBSETS)
            + f"; images per class, train/val/cal/test: {_counts_line(counts)}. What to do: "
            + "; ".join(dict.fromkeys(fix["val" if s == "cal" else s] for s in empty))
            + ("" if not parts else "; or widen the parts"))
    few = counts.index[counts.train < min_train].tolist()
    if few:
        if task == "bodypart":
            ok = [c for c in counts.index if c not in few]
            leave_out = (f", or leave them out (parts={ok})" if len(ok) > 1 else
                         f", or run {abnormality} on {ok[0]}" if ok else "")
            fix = f"add studies of {', '.join(few)} to the train split{leave_out}"
        else:
            fix = (f"add {' and '.join(few)} studies to the train split"
                   + (", or widen the parts (parts=None: all seven)" if parts else ""))
        raise DegenerateData(
            f"too few training images for the {name} task{scope}: "
            + ", ".join(f"{c} {counts.train[c]}" for c in few)
            + f" (each class needs at least {min_train}: fewer cannot be learned, selected or scored); "
            f"images per class, train/val/cal/test: {_counts_line(counts)}. What to do: {fix}")
    return counts


# --------------------------------------------------------------------------- images


class ImageReadError(Exception):
    pass


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as 8-bit grayscale (H x W uint8).

    RGB/RGBA, palette and gray+alpha PNGs are converted to luminance; 16-bit
    images are scaled to 8 bits by their maximum. Raises ImageReadError with
    the reason for unreadable or truncated files.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = a.max()
                a = a * (255.0 / top) if top > 255 else a
                return np.clip(np.round(a), 0, 255).astype(np.uint8)
            if mode != "L":
                im = im.convert("RGBA" if mode == "P" and "transparency" in im.info else mode)
                im = im.convert("L")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{type(e).__name__}: {e}") from e


def letterbox(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize keeping the aspect ratio so the long side is `size`, pad with black to size x size.
    `nearest` resamples by nearest neighbour (for masks), otherwise area (down) or bilinear (up)."""
    h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.zeros((size, size), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def image_stats(img: np.ndarray) -> dict:
    """Cheap per-image statistics (trivial cues for notebook 00): size, intensity, brightest spot."""
    h, w = img.shape
    thr = np.percentile(img[::4, ::4], 99.5)
    ys, xs = np.nonzero(img >= max(thr, 1))
    return dict(height=h, width=w, mean=float(img.mean()), std=float(img.std()),
                bright_x=float(xs.mean() / w) if len(xs) else 0.5,
                bright_y=float(ys.mean() / h) if len(ys) else 0.5)


def _load_one(args):
    path, size = args
    try:
        img = read_image(path)
    except ImageReadError as e:
        return None, str(e), None
    return letterbox(img, size), "", image_stats(img)


# --------------------------------------------------------------------------- cache


@dataclass
class ImageCache:
    """Letterboxed uint8 images of an index, memory-mapped from `artifacts/cache/<key>.npy`.

    `index` holds the readable images (column `row` is the row in the array),
    `unreadable` the others with the reason; `images` is a read-only memmap.
    """

    key: str
    size: int
    array_path: Path
    index: pd.DataFrame
    unreadable: pd.DataFrame

    @property
    def images(self) -> np.memmap:
        return np.load(self.array_path, mmap_mode="r")


def cache_key(index: pd.DataFrame, size: int) -> str:
    """Hash of the preprocessing settings and each file's path, size and mtime."""
    h = hashlib.sha256(json.dumps(dict(v=CACHE_VERSION, size=size, interp="area", pad=0)).encode())
    for p in index.path:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build_cache(index: pd.DataFrame, size: int, cache_dir: str | os.PathLike, workers: int | None = None,
                progress: bool = True) -> ImageCache:
    """The cache of `index` at `size` px, built once (in parallel, with a progress bar) and reused.

    The key covers the index, each file's size and mtime and the preprocessing
    settings, so any change rebuilds. Unreadable images are listed with their
    reason in `<key>_unreadable.csv`, excluded, and counted in a warning.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index = index.reset_index(drop=True)
    key = cache_key(index, size)
    arr, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    stats_path, bad_path = cache_dir / f"{key}_stats.csv", cache_dir / f"{key}_unreadable.csv"
    if not (meta_path.is_file() and arr.is_file()):
        tmp = cache_dir / f"{key}.partial.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(index), size, size))
        ok = np.zeros(len(index), bool)
        reasons = [""] * len(index)
        stats = [None] * len(index)
        jobs = [(p, size) for p in index.path]
        workers = workers or os.cpu_count() or 1
        it = (ProcessPoolExecutor(workers).map(_load_one, jobs, chunksize=64) if workers > 1 and len(jobs) > 256
              else map(_load_one, jobs))
        for i, (img, reason, st) in enumerate(tqdm(it, total=len(jobs), desc=f"cache {size}px",
                                                    disable=not progress)):
            if img is None:
                reasons[i] = reason
            else:
                out[i], ok[i], stats[i] = img, True, st
        out.flush()
        del out
        empty = dict(height=0, width=0, mean=np.nan, std=np.nan, bright_x=np.nan, bright_y=np.nan)
        pd.DataFrame([s or empty for s in stats]).assign(ok=ok).to_csv(stats_path, index=False)
        pd.DataFrame({"path": index.path[~ok], "reason": np.array(reasons, object)[~ok]}).to_csv(bad_path,
                                                                                              index=False)
        os.replace(tmp, arr)
        meta_path.write_text(json.dumps(dict(key=key, size=size, n=len(index), n_ok=int(ok.sum()),
                                             version=CACHE_VERSION)))
    stats = pd.read_csv(stats_path)
    good = index.assign(row=np.arange(len(index)), **{c: stats[c] for c in stats.columns if c != "ok"})
    good = good[stats.ok.to_numpy()].reset_index(drop=True)
    bad = pd.read_csv(bad_path, dtype=str, keep_default_na=False)
    if len(bad):
        warnings.warn(f"{len(bad)} of {len(index)} image(s) could not be read and are excluded; "
                      f"the list with reasons is {bad_path}")
    return ImageCache(key, size, arr, good, bad)


# --------------------------------------------------------------------------- datasets


def to_input(u8) -> torch.Tensor:
    """uint8 images (... x H x W) -> float tensors (... x 1 x H x W) in [0, 1]."""
    return torch.from_numpy(np.asarray(u8).astype(np.float32)).div_(255.0).unsqueeze(-3)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the network's input scale (fixed constants, so every consumer agrees)."""
    return (x - PIXEL_MEAN) / PIXEL_STD


class CachedImages(torch.utils.data.Dataset):
    """(image, target) pairs read from the memory-mapped cache.

    Images are 1 x S x S float tensors: an optional per-image `transform` acts on
    [0, 1] images, then they are standardised with PIXEL_MEAN/PIXEL_STD. (Training
    augments whole batches on the device instead: `BatchAugment`.)
    The array is opened lazily in each process, never read whole into memory.
    """

    def __init__(self, cache: ImageCache, subset: str | None = None, task: str = "bodypart", parts=None,
                 transform=None, index: pd.DataFrame | None = None):
        idx = cache.index if index is None else index
        if subset is not None:
            if "subset" not in idx:
                raise ValueError("the index has no `subset` column: call carve_validation(index) first")
            idx = idx[idx.subset == subset]
        idx, self.classes = task_targets(idx, task, parts)
        self.index = idx.reset_index(drop=True)
        # copies: pandas (copy-on-write) hands out read-only views, and torch warns on tensors made from them
        self.rows = self.index.row.to_numpy(copy=True)
        self.targets = self.index.target.to_numpy(copy=True)
        self.array_path = cache.array_path
        self.size = cache.size
        self.transform = transform
        self._images = None

    @property
    def images(self) -> np.memmap:
        if self._images is None:
            self._images = np.load(self.array_path, mmap_mode="r")
        return self._images

    def __len__(self):
        return len(self.rows)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(self.transform(x) if self.transform is not None else x)

    def __getitem__(self, i):
        return self._finish(to_input(self.images[self.rows[i]])), int(self.targets[i])

    def __getitems__(self, idxs):
        """A whole batch in one read of the memmap (rows sorted for locality)."""
        rows = self.rows[idxs]
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows),) + self.images.shape[1:], np.uint8)
        block[order] = self.images[rows[order]]
        xs = to_input(block)
        return [(self._finish(xs[k]), int(self.targets[i])) for k, i in enumerate(idxs)]

    def __getstate__(self):  # worker processes open their own memmap
        d = self.__dict__.copy()
        d["_images"] = None
        return d


class PngImages(CachedImages):
    """The same pairs, decoded from the PNG files on every access (the naive way; for benchmarks)."""

    def __getitem__(self, i):
        img = letterbox(read_image(self.index.path.iat[i]), self.size)
        return self._finish(to_input(img)), int(self.targets[i])

    def __getitems__(self, idxs):
        return [self[i] for i in idxs]


class BatchAugment(torch.nn.Module):
    """Random flip, rotation, shift, scale, brightness and contrast, drawn per image and applied to a
    whole standardised batch (B x 1 x H x W) at once, on the batch's device, with one affine_grid and
    grid_sample. Draws come from a CPU `generator`, so a seed gives the same augmentation on any device.

    Replaces per-image torchvision transforms in training: on the 2-core CPU they cost 1.1 s of a 4.6 s
    epoch (cpu profile); this costs a few milliseconds per batch.
    """

    def __init__(self, degrees: float = 15.0, translate: float = 0.06, scale=(0.9, 1.1), jitter: float = 0.2,
                 flip: bool = True):
        super().__init__()
        self.degrees, self.translate, self.scale, self.jitter, self.flip = degrees, translate, scale, jitter, flip

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, u: torch.Tensor | None = None
                ) -> torch.Tensor:
        """`u` (B x 7, in [-1, 1]) pins the draws: rotation (positive: counter-clockwise as displayed, as in
        torchvision), scale, flip, shift x, shift y, brightness, contrast."""
        if u is None:
            u = torch.rand(len(x), 7, generator=generator) * 2 - 1
        u = u.to(x.device, x.dtype)
        ang = torch.deg2rad(u[:, 0] * self.degrees)
        s = self.scale[0] + (u[:, 1] + 1) / 2 * (self.scale[1] - self.scale[0])
        fl = torch.where(u[:, 2] < 0, -1.0, 1.0) if self.flip else torch.ones_like(s)
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s  # output -> input sampling: rotate, then shrink
        theta = torch.stack([torch.stack([cos * fl, -sin, u[:, 3] * 2 * self.translate], 1),
                             torch.stack([sin * fl, cos, u[:, 4] * 2 * self.translate], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        black = -PIXEL_MEAN / PIXEL_STD
        y = F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x01 = (y + black) * PIXEL_STD + PIXEL_MEAN
        bright = (1 + self.jitter * u[:, 5]).view(-1, 1, 1, 1)
        contrast = (1 + self.jitter * u[:, 6]).view(-1, 1, 1, 1)
        x01 = (x01 * bright).clamp(0, 1)
        m = x01.mean(dim=(-3, -2, -1), keepdim=True)
        return standardize(((x01 - m) * contrast + m).clamp(0, 1))


AUGMENTATIONS = {
    "full": {},
    "lossless": dict(degrees=0.0, translate=0.0, scale=(1.0, 1.0)),
    "none": None,
}
"""A profile's `augment` setting -> `BatchAugment` settings: "full" rotates, scales, shifts, mirrors and jitters
brightness and contrast; "lossless" only mirrors and jitters (no resampling, which blurs structures of a pixel
or two at 64 px); "none" trains on the images as they are."""


def augmentation(name: str):
    """The training augmentation called `name` (`AUGMENTATIONS`): a `BatchAugment`, or the identity."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")
    kw = AUGMENTATIONS[name]
    return (lambda x, generator=None: x) if kw is None else BatchAugment(**kw)


def make_loader(dataset, batch_size: int = 64, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False):
    """A DataLoader whose shuffling and worker RNGs derive from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers else None,
    )


def seed_worker(worker_id: int):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# --------------------------------------------------------------------------- phantom masks


LESION_BITS = {"fracture": 1, "hardware": 2, "cast": 4, "degenerative": 8}
"""What each bit of a lesion mask (`imageJ_lesion.png`, uint8) marks: part of the mask file format that
`utils.data.phantom` writes and `read_masks` reads. The bits are OR-ed: a pixel may carry several. Bit 8
(degenerative joint change: sclerosis, narrowing, osteophytes) came with phantom generator 2.0; new kinds
take the next bit, so existing bits keep their meaning."""
LESION_FRACTURE, LESION_HARDWARE, LESION_CAST = LESION_BITS["fracture"], LESION_BITS["hardware"], LESION_BITS["cast"]
LESION_DEGENERATIVE = LESION_BITS["degenerative"]


OBJECTS = ("hardware", "cast")
"""The findings MURA's shortcut is made of (Pure-MURA: about half of MURA's positive studies show a plate, a cast or
another obvious object)."""


def without_object_positives(labels, study_ids, lesion) -> np.ndarray:
    """Which test images to keep for a shortcut-free score (Pure-MURA's point: about half of MURA's positive
    studies show a plate, a cast or another obvious object): every normal study, and the abnormal studies none of
    whose images shows hardware or a cast in the lesion masks (`lesion`: N x H x W bit flags, one per test image;
    `LESION_BITS`). Boolean, one per test image."""
    labels, study_ids = np.asarray(labels), np.asarray(study_ids)
    bits = sum(LESION_BITS[k] for k in OBJECTS)
    shows = ((np.asarray(lesion).reshape(len(labels), -1) & bits) != 0).any(1)
    with_object = set(study_ids[shows & (labels == 1)])
    return ~np.isin(study_ids, list(with_object))


def mask_paths(image_path: str | os.PathLike) -> tuple[Path, Path] | None:
    """The phantom's (bones, lesion) mask files of an image, or None where the tree has no masks (MURA)."""
    p = Path(image_path)
    m = MURA_REL_PATH.search(p.as_posix())
    if m is None:
        return None
    mura = Path(p.as_posix()[: m.start()].rstrip("/"))
    base = mura / "masks" / m.group(0)
    bones, lesion = base.with_name(f"{base.stem}_bones.png"), base.with_name(f"{base.stem}_lesion.png")
    return (bones, lesion) if bones.is_file() else None


def read_masks(image_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(bones: bool H x W, lesion: uint8 bit flags H x W) at the image's resolution, or None (MURA)."""
    mp = mask_paths(image_path)
    if mp is None:
        return None
    return cv2.imread(str(mp[0]), cv2.IMREAD_GRAYSCALE) > 0, cv2.imread(str(mp[1]), cv2.IMREAD_GRAYSCALE)


def masks_for(paths, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Letterboxed (bones bool B x S x S, lesion flags uint8 B x S x S) of images, or None without masks."""
    bones, lesions = [], []
    for p in paths:
        m = read_masks(p)
        if m is None:
            return None
        bones.append(letterbox(m[0].astype(np.uint8), size, nearest=True) > 0)
        lesions.append(letterbox(m[1], size, nearest=True))
    return np.stack(bones), np.stack(lesions)
