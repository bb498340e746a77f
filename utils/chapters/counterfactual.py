"""Counterfactual shortcut test: the same test study rendered with and without one finding.

MURA can only show that abnormality CAMs *coincide* with casts; how often they peak on a cast says little,
since an area-matched random region or a centre blob scores as high. The phantom can do what MURA cannot:
render a study again with one key of its lesion spec removed ("cast", "hardware", "fracture" or "degenerative":
`KINDS`, the lesion-mask bits of `utils.data.LESION_BITS`), every random draw the same (`phantom.render_study`),
and ask what the object *causes*:

- the shift of p(abnormal) when the object is removed (per image, and per study as MURA scores studies: the
  mean over its views), for member 0 and for the ensemble;
- the share of the CAM's positive relevance on the object (in the original image), beside what a uniform
  map would put there (the object's area fraction) and an area-matched random baseline (the same mask shape
  translated at random inside the picture), and the pointing hit beside its baseline.

Casts also occur on normal studies: a normal study with a cast is the cleanest probe of the shortcut (any
p(abnormal) the cast adds is the shortcut itself).

What holds about the pixels (`pairs` records it per view in `locality`). No random draw depends on the lesion
spec, and the field of view stays where the study's own anatomy put it, so the attenuation changes only where
the removed solids were; the photon noise is the same draw scaled by the local intensity, so it changes only
there too. Two things spread the change: bilinear upsampling of the half-resolution render and the detector
blur (sigma <= 1.3 px), a few pixels; and the display window, which each image takes from its own
percentiles. Metal and casts move those percentiles, so with the window re-derived (`window="auto"`) removing
hardware or a cast changes much of the picture (global contrast; 40 % and 72 % of all pixels with generator
1.0). `window="original"` (the default) keeps each view's window. Then, on the cpu profile's phantom test set
(generator 2.0: 34 studies with a cast, 38 with hardware, 77 with a fracture, 41 with degenerative change;
485 view pairs at 512 px), of the pixels that change, 99.998 % (casts; no view below 99.98 %), 99.80 %
(hardware; no view below 92.8 %) and 99.996 % (degenerative change; no view below 99.86 %) lie within
NEAR_PX = 4 px of the object's mask or outside the exposed field (where the masks are zero; a cast reaching
under the collimator still attenuates there); elsewhere no pixel changes by more than 1 (casts, degenerative
change) or 2 (hardware) grey levels. Fractures are not local by construction: the distal fragment is
displaced, overridden and angled and carries what lies beyond it (the hand with a distal radius fragment,
the limb below a humeral fracture: `phantom.CARRIED`), so only 20 % of the changed pixels lie near the
fracture mask and the rest along the limb beyond it (up to 242 grey levels).
"""

from __future__ import annotations

import copy
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
import torch

from utils import data, explain
from utils.data import phantom
from utils.evaluation import evidence
from utils.explain import scores as explanation_scores

BITS = dict(data.LESION_BITS)  # fracture, hardware, cast, degenerative: the order seeds the counterfactual draws
KINDS = ("cast", "hardware", "fracture", "degenerative")  # the shortcut first, then the findings by how local they are
NEAR_PX = 4  # a changed pixel within this distance (full resolution) of the removed mask counts as local


def without(spec: dict, kind: str) -> dict:
    """The lesion spec with one finding removed (the rest, and the site, unchanged)."""
    if kind not in BITS:
        raise ValueError(f"unknown finding {kind!r}; known: {', '.join(BITS)}")
    return {k: v for k, v in spec.items() if k != kind}


@dataclass
class Pair:
    """One test study rendered as written and without one finding; lists hold one entry per view, at the
    written resolution (or letterboxed to `size` when `pairs(size=...)`)."""

    study: str  # folder, e.g. "valid/XR_WRIST/patient01201/study1_positive"
    index: int  # position in the generator's plan
    part: str
    label: int  # the study's label (1 abnormal)
    kind: str  # the finding removed
    spec: dict  # the study's full lesion spec
    size: int | None = None  # the images' letterboxed size, None: as written
    original: list = field(default_factory=list)  # uint8 images, the files' pixels
    counterfactual: list = field(default_factory=list)  # uint8 images without the finding
    mask: list = field(default_factory=list)  # bool: the removed object in the original (its lesion bit)
    bones: list = field(default_factory=list)  # bool: the bones that define the body part
    shape: list = field(default_factory=list)  # (H, W) as written
    locality: list = field(default_factory=list)  # per view: changed, near, outside_field, local_share


def select(studies: list, split: str = "valid", kinds=KINDS, max_studies: int | None = None, seed: int = 0
           ) -> dict[str, list[int]]:
    """Plan indices of the `split` studies whose lesion spec holds each kind; where there are more than
    `max_studies`, a seeded random subset of that many (per kind, drawn independently of the other kinds and
    of the order of `kinds`), in plan order."""
    out = {}
    for kind in kinds:
        idx = [i for i, st in enumerate(studies) if st.split == split and kind in st.lesion]
        if max_studies is not None and len(idx) > max_studies:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(list(BITS).index(kind),)))
            idx = sorted(rng.choice(idx, max_studies, replace=False).tolist())
        out[kind] = idx
    return out


def _locality(orig: phantom.RenderedView, cf: phantom.RenderedView, mask: np.ndarray) -> dict:
    changed = orig.image != cf.image
    n = int(changed.sum())
    outside = ~orig.meta["field"]
    if mask.any():
        near = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) <= NEAR_PX
    else:
        near = np.zeros_like(mask)
    n_near = int((changed & near).sum())
    n_out = int((changed & ~near & outside).sum())
    return dict(changed=n, near=n_near, outside_field=n_out,
                local_share=(n_near + n_out) / n if n else 1.0,
                max_abs_elsewhere=int(np.abs(orig.image.astype(int) - cf.image)[~near & ~outside].max(initial=0)))


def _study_pairs(args) -> list[Pair]:
    study, index, seed, max_side, kinds, window, size = args
    orig = phantom.render_study(study, index, seed, max_side)
    windows = [v.meta["window"] for v in orig] if window == "original" else None
    fit = (lambda a, nearest=False: a) if size is None else (
        lambda a, nearest=False: data.letterbox(a.astype(np.uint8), size, nearest=nearest))
    out = []
    for kind in kinds:
        cf = phantom.render_study(study, index, seed, max_side, lesion=without(study.lesion, kind), windows=windows)
        p = Pair(study.folder, index, study.part, study.label, kind, study.lesion, size)
        for o, c in zip(orig, cf):
            m = (o.lesion & BITS[kind]) > 0
            p.original.append(fit(o.image))
            p.counterfactual.append(fit(c.image))
            p.mask.append(fit(m, True) > 0)
            p.bones.append(fit(o.bones > 0, True) > 0)
            p.shape.append(o.image.shape)
            p.locality.append(_locality(o, c, m))
        out.append(p)
    return out


def pairs(mura_root, split: str = "valid", kinds=KINDS, max_studies: int | None = None, seed: int = 0,
          window: str = "original", size: int | None = None, workers: int = 1) -> list[Pair]:
    """Original and counterfactual renders of the `split` studies of a phantom tree that hold each finding
    kind (normal studies with a cast included), one `Pair` per (study, kind), in plan order within a kind.

    max_studies: at most this many studies per kind (`select`: seeded by `seed`). window: "original" keeps
    each view's display window in the counterfactual (pixels away from the object keep their values, to a
    few grey levels), "auto" re-derives it from the counterfactual's own percentiles, as the generator does. size: store the images letterboxed to size x size (as the
    cache does; masks by nearest neighbour) instead of at the written resolution, which needs ~50x less
    memory. workers: processes rendering studies in parallel (each study's originals are rendered once).
    """
    if window not in ("original", "auto"):
        raise ValueError(f"window must be 'original' or 'auto', got {window!r}")
    studies, gen_seed, max_side = phantom.load_plan(mura_root)
    chosen = select(studies, split, kinds, max_studies, seed)
    per_study: dict[int, list[str]] = {}
    for kind in kinds:
        for i in chosen[kind]:
            per_study.setdefault(i, []).append(kind)
    jobs = [(studies[i], i, gen_seed, max_side, tuple(ks), window, size) for i, ks in sorted(per_study.items())]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as ex:
            done = list(ex.map(_study_pairs, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        done = [_study_pairs(j) for j in jobs]
    flat = [p for ps in done for p in ps]
    return [p for kind in kinds for p in flat if p.kind == kind]


def prepare(images, size: int) -> torch.Tensor:
    """uint8 images (any sizes) -> the network's input, B x 1 x size x size, exactly as the training cache
    and dataset make it (utils.data: letterbox, to_input, standardize)."""
    return data.standardize(data.to_input(np.stack([data.letterbox(np.asarray(im), size) for im in images])))


def prepare_masks(masks, size: int) -> torch.Tensor:
    """Boolean masks -> B x size x size, letterboxed by nearest neighbour as the images are."""
    return torch.from_numpy(np.stack([data.letterbox(np.asarray(m).astype(np.uint8), size, nearest=True) > 0
                                      for m in masks]))


def picture_mask(shape, size: int) -> np.ndarray:
    """Where the picture lies in its letterboxed square (without the black padding)."""
    return data.letterbox(np.ones(shape, np.uint8), size, nearest=True) > 0


def random_offsets(masks: torch.Tensor, pictures: np.ndarray, n_shifts: int = 16, seed: int = 0) -> np.ndarray:
    """The area-matched random baseline's translations: for each mask (B x S x S), `n_shifts` integer offsets
    (dy, dx) drawn uniformly from those that keep the whole mask inside its picture (`pictures`, B x S x S:
    the letterboxed image without its padding; along an axis where the mask is longer than the picture,
    inside the square). K x B x 2; zero for an empty mask. Seeded."""
    rng = np.random.default_rng(seed)
    B, S, _ = masks.shape
    out = np.zeros((n_shifts, B, 2), np.int64)
    for b in range(B):
        ys, xs = torch.nonzero(masks[b], as_tuple=True)
        if len(ys) == 0:
            continue
        py, px = np.nonzero(pictures[b])
        for j, (a, q) in enumerate(((ys, py), (xs, px))):
            a0, a1 = int(a.min()), int(a.max())
            q0, q1 = (int(q.min()), int(q.max())) if q.max() - q.min() >= a1 - a0 else (0, S - 1)
            out[:, b, j] = rng.integers(q0 - a0, q1 - a1 + 1, n_shifts)
    return out


def translate(masks: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Each mask (B x S x S) moved by its offset (B x 2); the offsets of `random_offsets` never push a
    pixel out of the square, so the region keeps its shape and area."""
    return torch.stack([torch.roll(m, (int(dy), int(dx)), (0, 1)) for m, (dy, dx) in zip(masks, offsets)])


def shifted_masks(masks: torch.Tensor, pictures: np.ndarray, n_shifts: int = 16, seed: int = 0) -> torch.Tensor:
    """All the baseline's regions at once, K x B x S x S (`random_offsets`, `translate`). For a uniform map
    the mass on each equals the mask's area fraction exactly."""
    return torch.stack([translate(masks, o) for o in random_offsets(masks, pictures, n_shifts, seed)])


@torch.no_grad()
def _scores(models, x: torch.Tensor, target_class: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """p(target) (M x B) and CAMs of the target class (M x B x S x S) of every member: one forward pass of the
    features per batch, shared by explain.CAM and the head (XrayNet: logits = fc(pool(features)) in eval), on
    a channels-last copy of each member (faster convolutions on CPU; the caller's models are left as they are)."""
    probs, maps = [], []
    x = x.contiguous(memory_format=torch.channels_last)
    for m in models:
        m = copy.deepcopy(m).eval().to(memory_format=torch.channels_last)
        pm, cm = [], []
        for i in range(0, len(x), batch):
            xb, store = x[i:i + batch], {}
            hook = m.features.register_forward_hook(lambda mod, inp, out: store.__setitem__("fmap", out))
            try:
                cm.append(explain.CAM(m)(xb, target_class))
            finally:
                hook.remove()
            logits = m.fc(m.pool(store["fmap"])) if hasattr(m, "pool") and "fmap" in store else m(xb)
            pm.append(torch.softmax(logits, 1)[:, target_class])
        probs.append(torch.cat(pm))
        maps.append(torch.cat(cm))
    return torch.stack(probs), torch.stack(maps)


def measure(models, records: list[Pair], size: int, target_class: int = 1, n_shifts: int = 16, seed: int = 0,
            batch: int = 256) -> pd.DataFrame:
    """One row per image pair (view) of `records`: the abnormality members' p(abnormal) on the original and
    the counterfactual and the shift p_orig - p_cf (what the object adds; positive: the object raises
    p(abnormal)), for member 0 (`_m0`) and the ensemble mean (`_ens`, mean of the members' probabilities);
    and, for member 0's CAM and the members' mean CAM of `target_class`:

    - mass: share of the CAM's positive relevance on the removed object's mask (original image);
    - mass_cf: the same on the counterfactual image (same mask, object gone);
    - baseline_mass: mean mass on `n_shifts` random translations of the mask (`random_offsets`, seeded);
    - pointing / baseline_pointing: whether the CAM's maximum lies in the mask / share of translations hit;

    with area_fraction = mask pixels / size^2 (what a uniform map puts on the mask) and mask_px. Rows whose
    mask vanishes at `size` (e.g. a K-wire) have NaN scores. Also the locality of the pixel change at full
    resolution (local_share: see the module docstring)."""
    rows, origs, cfs, masks, pics = [], [], [], [], []
    for p in records:
        if p.size is not None and p.size != size:
            raise ValueError(f"the pairs were letterboxed to {p.size} px, measure was asked for {size}: "
                             f"call pairs(size={size}) or pairs(size=None)")
        for v, (o, c, m) in enumerate(zip(p.original, p.counterfactual, p.mask)):
            rows.append(dict(study=p.study, part=p.part, label=p.label, kind=p.kind, view=v + 1,
                             local_share=p.locality[v]["local_share"] if p.locality else np.nan))
            origs.append(o)
            cfs.append(c)
            masks.append(m)
            pics.append(picture_mask(p.shape[v] if p.shape else o.shape, size))
    df = pd.DataFrame(rows)
    if not rows:
        return df
    x0, x1 = prepare(origs, size), prepare(cfs, size)
    mk = prepare_masks(masks, size)
    offsets = random_offsets(mk, np.stack(pics), n_shifts, seed)
    p0, cam0 = _scores(models, x0, target_class, batch)
    p1, cam1 = _scores(models, x1, target_class, batch)
    area = mk.flatten(1).sum(1)
    empty = (area == 0).numpy()
    df["mask_px"] = area.numpy()
    df["area_fraction"] = (area.double() / (size * size)).numpy()
    for suf, po, pc, mo, mc in (("m0", p0[0], p1[0], cam0[0], cam1[0]),
                                ("ens", p0.mean(0), p1.mean(0), cam0.mean(0), cam1.mean(0))):
        df[f"p_orig_{suf}"] = po.double().numpy()
        df[f"p_cf_{suf}"] = pc.double().numpy()
        df[f"shift_{suf}"] = df[f"p_orig_{suf}"] - df[f"p_cf_{suf}"]
        base_mass, base_hit = torch.zeros(len(mk), dtype=torch.float64), torch.zeros(len(mk), dtype=torch.float64)
        for o in offsets:  # one translation at a time: memory B x S x S
            region = translate(mk, o)
            base_mass += explanation_scores.relevance_mass(mo, region).double() / len(offsets)
            base_hit += explanation_scores.pointing_game(mo, region).double() / len(offsets)
        scores = {"mass": explanation_scores.relevance_mass(mo, mk),
                  "mass_cf": explanation_scores.relevance_mass(mc, mk),
                  "baseline_mass": base_mass, "pointing": explanation_scores.pointing_game(mo, mk),
                  "baseline_pointing": base_hit}
        for k, val in scores.items():
            a = val.double().numpy().copy()
            a[empty] = np.nan
            df[f"{k}_{suf}"] = a
    return df


def study_shift(df: pd.DataFrame) -> pd.DataFrame:
    """Per (study, kind): MURA's study score (mean p(abnormal) over the views) on the originals and the
    counterfactuals, and the shift (orig - cf), for member 0 and the ensemble."""
    cols = [c for c in df.columns if c.startswith(("p_orig_", "p_cf_"))]
    g = df.groupby(["study", "part", "label", "kind"], sort=False)
    out = g[cols].mean().join(g.size().rename("views")).reset_index()
    for suf in ("m0", "ens"):
        out[f"shift_{suf}"] = out[f"p_orig_{suf}"] - out[f"p_cf_{suf}"]
    return out


def summarize(df: pd.DataFrame, model: str = "ens", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per kind and study label: studies, the mean study-level shift of p(abnormal), the mean CAM mass on the
    object against its area-matched baseline (and their paired difference), the mean area fraction, and the
    pointing hit rate against its baseline; intervals: 95 % cluster bootstrap over studies
    (`evidence.mean_interval`, images without a mask at this size left out)."""
    st = study_shift(df)
    rows = []
    for (kind, label), d in df.groupby(["kind", "label"], sort=False):
        s = st[(st.kind == kind) & (st.label == label)]
        row = dict(kind=kind, label=label, studies=len(s), images=len(d))
        for name, vals, grp in (
                ("study shift", s[f"shift_{model}"].to_numpy(), s.study.to_numpy()),
                ("mass", d[f"mass_{model}"].to_numpy(), d.study.to_numpy()),
                ("baseline mass", d[f"baseline_mass_{model}"].to_numpy(), d.study.to_numpy()),
                ("mass - baseline", (d[f"mass_{model}"] - d[f"baseline_mass_{model}"]).to_numpy(),
                 d.study.to_numpy()),
                ("mass on cf", d[f"mass_cf_{model}"].to_numpy(), d.study.to_numpy()),
                ("pointing", d[f"pointing_{model}"].to_numpy(), d.study.to_numpy()),
                ("baseline pointing", d[f"baseline_pointing_{model}"].to_numpy(), d.study.to_numpy())):
            d_ = evidence.mean_interval(np.asarray(vals, float), grp, n_boot, seed)
            row[name], row[f"{name} lo"], row[f"{name} hi"] = d_["estimate"], d_["low"], d_["high"]
        row["area fraction"] = float(d.area_fraction[d.mask_px > 0].mean()) if (d.mask_px > 0).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
