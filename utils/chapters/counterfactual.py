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
p(abnormal) the cast adds is the shortcut itself). But only ~4 % of the normal studies of castable types carry
one (8 in the cpu profile's test split), too few to tell "no shift" from "no power". So the test also runs the
other way (`added_pairs`): every truly normal test study of a type that takes a cast is rendered with a cast
added, and every one with hardware added (`phantom.added_finding`: its own seeded stream), against the
study as written (the file's pixels); hundreds of pairs. The shifts are read in logit units
(`logit_summary`: logit p(abnormal) with the object minus without, per image and per study) beside the scale
they must be read on, the distance between the classes' mean logits on the clean test set (`class_separation`),
and the half-width of the shift's interval, the smallest shift the test could have shown (`logit_reading`).

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
fracture mask and the rest along the limb beyond it (up to 242 grey levels). Objects added to the normal test
studies of the same phantom (341 pairs, 830 views): of the changed pixels 99.995 % (casts; no view below 99.89 %,
nothing elsewhere above 3 grey levels) and 99.60 % (hardware; no view below 92.9 %) lie near the object or off the
field; hardware changes a few pixels more at 5-6 px from its mask, and beside the field's edge where the implant runs
on under the collimator (its mask is zero there), by up to 49 grey levels.
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
ADDED = ("cast", "hardware")  # what `added_pairs` adds to normal studies
LOGIT_CLIP = 1e-15  # p(abnormal) is clipped to [c, 1 - c] before its logit: |logit| <= 34.5


def without(spec: dict, kind: str) -> dict:
    """The lesion spec with one finding removed (the rest, and the site, unchanged)."""
    if kind not in BITS:
        raise ValueError(f"unknown finding {kind!r}; known: {', '.join(BITS)}")
    return {k: v for k, v in spec.items() if k != kind}


@dataclass
class Pair:
    """One test study rendered with and without one finding; lists hold one entry per view, at the written
    resolution (or letterboxed to `size` when `pairs(size=...)`). A removal pair (`pairs`) holds the study as
    written in `original` and the render without its finding in `counterfactual`; an added pair (`added_pairs`,
    `added` True) the render with the added object in `original` and the study as written in `counterfactual`.
    Either way `original` has the object and `counterfactual` has not, so `measure`'s shift is what it adds."""

    study: str  # folder, e.g. "valid/XR_WRIST/patient01201/study1_positive"
    index: int  # position in the generator's plan
    part: str
    label: int  # the study's label (1 abnormal)
    kind: str  # the finding removed (or added)
    spec: dict  # the lesion spec of the render with the object: the study's own (removal), or with it added
    size: int | None = None  # the images' letterboxed size, None: as written
    added: bool = False  # True: the object was added to a study that lacks it
    original: list = field(default_factory=list)  # uint8 images with the object
    counterfactual: list = field(default_factory=list)  # uint8 images without it
    mask: list = field(default_factory=list)  # bool: the object in `original` (its lesion bit)
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


def _fill(p: Pair, with_object: list, without_object: list) -> Pair:
    """Store the views of a pair (letterboxed to p.size where set), the object's mask and the locality."""
    fit = (lambda a, nearest=False: a) if p.size is None else (
        lambda a, nearest=False: data.letterbox(a.astype(np.uint8), p.size, nearest=nearest))
    for o, c in zip(with_object, without_object):
        m = (o.lesion & BITS[p.kind]) > 0
        p.original.append(fit(o.image))
        p.counterfactual.append(fit(c.image))
        p.mask.append(fit(m, True) > 0)
        p.bones.append(fit(o.bones > 0, True) > 0)
        p.shape.append(o.image.shape)
        p.locality.append(_locality(o, c, m))
    return p


def _study_pairs(args) -> list[Pair]:
    study, index, seed, max_side, kinds, window, size = args
    orig = phantom.render_study(study, index, seed, max_side)
    windows = [v.meta["window"] for v in orig] if window == "original" else None
    return [_fill(Pair(study.folder, index, study.part, study.label, kind, study.lesion, size), orig,
                  phantom.render_study(study, index, seed, max_side, lesion=without(study.lesion, kind),
                                       windows=windows))
            for kind in kinds]


def _added_pairs(args) -> list[Pair]:
    """The study as written (rendered once: its pixels are the files', byte for byte, and its display windows
    are kept) and, per kind, the render with that object added."""
    study, index, seed, max_side, kinds, size = args
    plain = phantom.render_study(study, index, seed, max_side)
    windows = [v.meta["window"] for v in plain]
    out = []
    for kind in kinds:
        spec = phantom.added_finding(study, index, seed, kind)
        views = phantom.render_study(study, index, seed, max_side, lesion=spec, windows=windows)
        out.append(_fill(Pair(study.folder, index, study.part, study.label, kind, spec, size, added=True),
                         views, plain))
    return out


def _run(fn, jobs: list, workers: int) -> list[Pair]:
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as ex:
            done = list(ex.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        done = [fn(j) for j in jobs]
    return [p for ps in done for p in ps]


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
    flat = _run(_study_pairs, jobs, workers)
    return [p for kind in kinds for p in flat if p.kind == kind]


def select_added(studies: list, split: str = "valid", kinds=ADDED) -> dict[str, list[int]]:
    """Plan indices of the `split` studies that are normal (by their label and, with label noise, by the truth)
    and where each object can go (`phantom.added_finding`: a cast on a castable type that has none,
    hardware on every type), all of them, in plan order."""
    for kind in kinds:
        if kind not in ADDED:
            raise ValueError(f"only {', '.join(ADDED)} can be added, not {kind!r}")
    normal = [i for i, st in enumerate(studies) if st.split == split and st.label == 0 and not st.true_label]
    return {kind: [i for i in normal if kind not in studies[i].lesion
                   and (kind != "cast" or studies[i].part in phantom.CASTABLE)] for kind in kinds}


def added_pairs(mura_root, split: str = "valid", kinds=ADDED, size: int | None = None, workers: int = 1,
                parts=None) -> list[Pair]:
    """Every normal `split` study of a phantom tree where the object can go (`select_added`; no cap), rendered
    with a cast or hardware added (`phantom.added_finding`, each view's display window kept) and as written,
    one `Pair` per (study, kind) with `added` True, in plan order within a kind. Each study is rendered once
    as written and once per kind. parts: only studies of these body parts (None: all). size, workers: as in
    `pairs`."""
    studies, gen_seed, max_side = phantom.load_plan(mura_root)
    chosen = select_added(studies, split, kinds)
    per_study: dict[int, list[str]] = {}
    for kind in kinds:
        for i in chosen[kind]:
            if parts is None or studies[i].part in parts:
                per_study.setdefault(i, []).append(kind)
    jobs = [(studies[i], i, gen_seed, max_side, tuple(ks), size) for i, ks in sorted(per_study.items())]
    flat = _run(_added_pairs, jobs, workers)
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
def _scores(models, x: torch.Tensor, target_class: int, batch: int, cams: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """p(target) (M x B, float64) and CAMs of the target class (M x B x S x S; None without `cams`) of every
    member: one forward pass of the features per batch, shared by explain.CAM and the head (XrayNet: logits =
    fc(pool(features)) in eval), on a channels-last copy of each member (faster convolutions on CPU; the
    caller's models are left as they are)."""
    probs, maps = [], []
    x = x.contiguous(memory_format=torch.channels_last)
    for m in models:
        m = copy.deepcopy(m).eval().to(memory_format=torch.channels_last)
        pm, cm = [], []
        for i in range(0, len(x), batch):
            xb, store = x[i:i + batch], {}
            if cams:
                hook = m.features.register_forward_hook(lambda mod, inp, out: store.__setitem__("fmap", out))
                try:
                    cm.append(explain.CAM(m)(xb, target_class))
                finally:
                    hook.remove()
            logits = m.fc(m.pool(store["fmap"])) if hasattr(m, "pool") and "fmap" in store else m(xb)
            pm.append(torch.softmax(logits.double(), 1)[:, target_class])
        probs.append(torch.cat(pm))
        maps.append(torch.cat(cm) if cams else None)
    return torch.stack(probs), (torch.stack(maps) if cams else None)


def measure(models, records: list[Pair], size: int, target_class: int = 1, n_shifts: int = 16, seed: int = 0,
            batch: int = 256, cams: bool = True) -> pd.DataFrame:
    """One row per image pair (view) of `records`: the abnormality members' p(abnormal) on the original and
    the counterfactual and the shift p_orig - p_cf (what the object adds; positive: the object raises
    p(abnormal)), for member 0 (`_m0`) and the ensemble mean (`_ens`, mean of the members' probabilities);
    and, for member 0's CAM and the members' mean CAM of `target_class`:

    - mass: share of the CAM's positive relevance on the removed object's mask (original image);
    - mass_cf: the same on the counterfactual image (same mask, object gone);
    - baseline_mass: mean mass on `n_shifts` random translations of the mask (`random_offsets`, seeded);
    - pointing / baseline_pointing: whether the CAM's maximum lies in the mask / share of translations hit;

    with area_fraction = mask pixels / size^2 (what a uniform map puts on the mask) and mask_px; and the same
    shift in logit units, logit_shift = logit(p_orig) - logit(p_cf) (`logit`; the ensemble's logit is that of
    its mean probability), with logit_orig and logit_cf. Rows whose
    mask vanishes at `size` (e.g. a K-wire) have NaN scores. Also the locality of the pixel change at full
    resolution (local_share: see the module docstring). cams=False: the probabilities and shifts only (no CAM
    columns; what `logit_summary` needs, at the cost of the forward passes alone). Images without the object that
    several pairs share (an added pair's study as written, one per kind) are scored once."""
    rows, origs, cfs, masks, pics = [], [], [], [], []
    shared: dict = {}  # (study, view) of an added pair's image as written -> its position in `cfs`
    cf_of = []  # per row: its image without the object, a position in `cfs`
    for p in records:
        if p.size is not None and p.size != size:
            raise ValueError(f"the pairs were letterboxed to {p.size} px, measure was asked for {size}: "
                             f"call pairs(size={size}) or pairs(size=None)")
        for v, (o, c, m) in enumerate(zip(p.original, p.counterfactual, p.mask)):
            rows.append(dict(study=p.study, part=p.part, label=p.label, kind=p.kind, view=v + 1,
                             local_share=p.locality[v]["local_share"] if p.locality else np.nan))
            origs.append(o)
            key = (p.study, v) if p.added else len(rows)
            if key not in shared:
                shared[key] = len(cfs)
                cfs.append(c)
            cf_of.append(shared[key])
            masks.append(m)
            pics.append(picture_mask(p.shape[v] if p.shape else o.shape, size))
    df = pd.DataFrame(rows)
    if not rows:
        return df
    x0, x1 = prepare(origs, size), prepare(cfs, size)
    mk = prepare_masks(masks, size)
    p0, cam0 = _scores(models, x0, target_class, batch, cams)
    p1, cam1 = _scores(models, x1, target_class, batch, cams)
    idx = torch.as_tensor(cf_of)
    p1, cam1 = p1[:, idx], (cam1[:, idx] if cams else None)
    area = mk.flatten(1).sum(1)
    empty = (area == 0).numpy()
    df["mask_px"] = area.numpy()
    df["area_fraction"] = (area.double() / (size * size)).numpy()
    for suf, po, pc in (("m0", p0[0], p1[0]), ("ens", p0.mean(0), p1.mean(0))):
        df[f"p_orig_{suf}"] = po.double().numpy()
        df[f"p_cf_{suf}"] = pc.double().numpy()
        df[f"shift_{suf}"] = df[f"p_orig_{suf}"] - df[f"p_cf_{suf}"]
        df[f"logit_orig_{suf}"], df[f"logit_cf_{suf}"] = logit(df[f"p_orig_{suf}"]), logit(df[f"p_cf_{suf}"])
        df[f"logit_shift_{suf}"] = df[f"logit_orig_{suf}"] - df[f"logit_cf_{suf}"]
    if not cams:
        return df
    offsets = random_offsets(mk, np.stack(pics), n_shifts, seed)
    for suf, mo, mc in (("m0", cam0[0], cam1[0]), ("ens", cam0.mean(0), cam1.mean(0))):
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


def logit(p) -> np.ndarray:
    """log(p / (1 - p)) in float64, p clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP]."""
    p = np.clip(np.asarray(p, np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def study_shift(df: pd.DataFrame) -> pd.DataFrame:
    """Per (study, kind): MURA's study score (mean p(abnormal) over the views) on the originals and the
    counterfactuals, and the shift (orig - cf), for member 0 and the ensemble; and the study's logit (the
    logit of its score) with and without the object and its shift, logit_shift = logit_orig - logit_cf."""
    cols = [c for c in df.columns if c.startswith(("p_orig_", "p_cf_"))]
    g = df.groupby(["study", "part", "label", "kind"], sort=False)
    out = g[cols].mean().join(g.size().rename("views")).reset_index()
    for suf in ("m0", "ens"):
        out[f"shift_{suf}"] = out[f"p_orig_{suf}"] - out[f"p_cf_{suf}"]
        out[f"logit_orig_{suf}"], out[f"logit_cf_{suf}"] = logit(out[f"p_orig_{suf}"]), logit(out[f"p_cf_{suf}"])
        out[f"logit_shift_{suf}"] = out[f"logit_orig_{suf}"] - out[f"logit_cf_{suf}"]
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


# --------------------------------------------------------------------------- shifts in logit units, with power


def softmax_probs(member_logits, target_class: int = 1) -> np.ndarray:
    """p(target) per member and image (M x N, float64) from each member's logits (M arrays of N x C), e.g. the
    members' stored logits on the clean test set (`Run.member(m).logits("test")`, the network's forward pass on
    the cached images, which `prepare` reproduces) for `class_separation`."""
    return np.stack([torch.softmax(torch.as_tensor(np.asarray(z)).double(), 1)[:, target_class].numpy()
                     for z in member_logits])


def class_separation(member_probs, labels, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                     ) -> pd.DataFrame:
    """The scale a logit shift is read on: on the clean test set, the mean logit of the abnormal studies minus
    the mean logit of the normal ones, for member 0 (`m0`) and the ensemble (`ens`: the logit of the members'
    mean probability), per study (`study`: the logit of the study's score, the mean p over its views) and per
    image (`image`). `member_probs`: M x N p(abnormal) per image (`softmax_probs`); labels, groups: per image.
    Intervals: study bootstrap over all test studies (`evidence.study_weights`: one set of replicates for every
    row, abnormal and normal studies drawn together), `evidence.INTERVAL_RULE`. One row per (model, level)."""
    P = np.atleast_2d(np.asarray(member_probs, np.float64))
    labels, groups = np.asarray(labels).astype(int), np.asarray(groups)
    rows = []
    for model, p in (("m0", P[0]), ("ens", P.mean(0))):
        st = pd.DataFrame(dict(p=p, y=labels, g=groups)).groupby("g", sort=True).agg(p=("p", "mean"), y=("y", "first"))
        for level_name, v, y, g in (("study", logit(st.p), st.y.to_numpy(), st.index.to_numpy()),
                                    ("image", logit(p), labels, groups)):
            W = evidence.study_weights(g, n_boot, seed)  # the same draws at both levels: codes of the same ids
            a = (y == 1).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps = (W @ (v * a)) / (W @ a) - (W @ (v * (1 - a))) / (W @ (1 - a))
            est = float(v[y == 1].mean() - v[y == 0].mean()) if a.any() and (1 - a).any() else np.nan
            d = evidence.interval_summary(est, reps, level)
            rows.append(dict(model=model, level=level_name, abnormal=int(st.y.sum()), normal=int((st.y == 0).sum()),
                             separation=d["estimate"], low=d["low"], high=d["high"]))
    return pd.DataFrame(rows)


def logit_summary(df: pd.DataFrame, separation: pd.DataFrame | None = None, test: str = "added",
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per kind, study label and model (m0, ens) of a `measure` table: pairs (studies, images), the mean
    study-level logit shift (`study shift`: logit of the study's score with the object minus without; positive:
    the object pushes towards abnormal) and the mean image-level one (`image shift`), each with its 95 % study-
    bootstrap interval (`evidence.mean_interval`) and `resolution` (half the interval's width: the smallest
    shift the test could tell from zero), beside `separation` (`class_separation`'s row of that model and
    level) and the shift and the resolution as shares of it. `test`: a label for the table (added, removed)."""
    st = study_shift(df)
    sep = {} if separation is None else {(r.model, r.level): r for r in separation.itertuples()}
    rows = []
    for (kind, label), d in df.groupby(["kind", "label"], sort=False):
        s = st[(st.kind == kind) & (st.label == label)]
        for model in ("m0", "ens"):
            row = dict(test=test, kind=kind, label=int(label), model=model, studies=len(s), images=len(d))
            for level, vals, grp in (("study", s[f"logit_shift_{model}"], s.study), ("image", d[f"logit_shift_{model}"],
                                                                                      d.study)):
                iv = evidence.mean_interval(vals.to_numpy(), grp.to_numpy(), n_boot, seed)
                r = sep.get((model, level))
                scale = r.separation if r is not None else np.nan
                pre = "" if level == "study" else "image "
                row.update({f"{level} shift": iv["estimate"], f"{level} shift lo": iv["low"],
                            f"{level} shift hi": iv["high"], f"{pre}resolution": (iv["high"] - iv["low"]) / 2,
                            f"{pre}separation": scale,
                            f"{pre}separation lo": r.low if r is not None else np.nan,
                            f"{pre}separation hi": r.high if r is not None else np.nan,
                            f"{pre}shift / separation": iv["estimate"] / scale,
                            f"{pre}resolution / separation": (iv["high"] - iv["low"]) / 2 / scale})
            rows.append(row)
    return pd.DataFrame(rows)


LOGIT_COLUMNS = ["test", "kind", "label", "model", "studies", "images", "study shift", "study shift lo",
                 "study shift hi", "resolution", "separation", "separation lo", "separation hi", "shift / separation",
                 "image shift", "image shift lo", "image shift hi", "image resolution"]


def logit_shown(table: pd.DataFrame) -> pd.DataFrame:
    """`logit_summary` rows for display: the study and image shifts as 'estimate [low, high]' with their resolutions
    (the class separation, the same for every row of a model, is stated by `logit_reading`)."""
    def ci(r, c):
        return f"{r[c]:+.3f} [{r[c + ' lo']:+.3f}, {r[c + ' hi']:+.3f}]"

    out = table[["test", "kind", "label", "model", "studies", "images"]].copy()
    out["study shift [95 %]"] = [ci(r, "study shift") for _, r in table.iterrows()]
    out["resolution"] = table["resolution"].map("{:.3f}".format)
    out["image shift [95 %]"] = [ci(r, "image shift") for _, r in table.iterrows()]
    out["image resolution"] = table["image resolution"].map("{:.3f}".format)
    return out


def _words(r) -> str:
    """One row of `logit_summary` in words: what the object does to the study logit, a null with its resolution
    or a shift with its interval (the class separation, the scale, is stated once by `logit_reading`)."""
    name = "degenerative change" if r["kind"] == "degenerative" else r["kind"]
    n, k = int(r["studies"]), int(r["images"])
    who = (f"{n} {'abnormal' if r['label'] else 'normal'} stud{'y' if n == 1 else 'ies'} "
           f"({k} image{'' if k == 1 else 's'})")
    head = {"added": f"{'a cast' if name == 'cast' else name}, added to {who}",
            "removed": f"the {name}, removed from {who}"}.get(r["test"], f"{name} ({r['test']}), {who}")
    lo, hi, est, res = r["study shift lo"], r["study shift hi"], r["study shift"], r["resolution"]
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{head}: study logit shift {est:+.3f}, too few studies for an interval"
    if lo <= 0 <= hi:
        return (f"{head}: no shift shown, resolution ±{res:.3f} logits (a shift of that size would be detected about "
                f"half the time); study logit shift {est:+.3f} [{lo:+.3f}, {hi:+.3f}]: shifts outside that interval are "
                "ruled out, smaller ones are not")
    way = "higher" if lo > 0 else "lower"
    return f"{head}: the study logit with it is {way} than without by {est:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def logit_reading(table: pd.DataFrame, model: str = "ens") -> str:
    """A Markdown bullet for the `logit_summary` rows of `model` (ens: the ensemble; m0: member 0), one sub-bullet
    per test and kind: a null worded as "no shift shown, resolution ±X logits" (X: half the 95 % interval's
    width), a shift with its interval, in logits, and either beside the class separation (the abnormal test
    studies' mean logit minus the normal ones', on the clean test set)."""
    t = table[table.model == model] if "model" in table else table
    if t.empty:
        return ""
    who = {"ens": "the ensemble", "m0": "member 0"}.get(model, model)
    r = t.iloc[0]
    sep = (f"; the scale: on the clean test set the abnormal studies' mean logit lies {r['separation']:+.3f} "
           f"[{r['separation lo']:+.3f}, {r['separation hi']:+.3f}] from the normal ones' (cast-bearing positives "
           "included; no ratio is given, its denominator's interval reaches near zero)"
           if np.isfinite(r["separation"]) else "")
    lines = [f"  - {_words(r)}" for _, r in t.iterrows()]
    return (f"- What each object does to {who}'s study logit (logit of the study's p(abnormal), with the object "
            f"minus without; 95 % intervals over studies{sep}):\n" + "\n".join(lines) + "\n")
