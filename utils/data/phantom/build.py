"""Planning and writing a phantom: the studies of each split and their labels (with the report-label noise),
writing MURA's folders and CSVs in parallel, re-reading a written plan, and how visible each finding is
after resizing (`finding_visibility`, the table in the package docstring)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from utils.data.images import LESION_BITS, letterbox
from utils.data.phantom.anatomy import (
    ABNORMAL_RATE,
    CASTABLE,
    FRACTURE_SITES,
    GENERATOR_VERSION,
    LESION_TAGS,
    OOD_PARTS,
    PARTS,
    STUDY_SHARE,
    VIEWS_P,
    Anatomy,
    Study,
)
from utils.data.phantom.findings import HARDWARE_MIX, cast_spec, draw_alloy, hardware_spec, lesion_spec
from utils.data.phantom.render import render_study, render_view

# --------------------------------------------------------------------------- planning and writing


def plan_ood_studies(patients: int, seed: int, parts=OOD_PARTS) -> list[Study]:
    """Normal studies of body parts outside MURA's seven, all in a `valid` split (they are test inputs only)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    studies = []
    for pid in range(1, patients + 1):
        an = Anatomy(size=float(rng.uniform(0.88, 1.12)), bone=float(rng.uniform(0.88, 1.12)),
                     soft=float(rng.uniform(0.8, 1.35)), spread=1.0)
        part = parts[int(rng.integers(len(parts)))]
        studies.append(Study("valid", part, pid, 1, 0, int(rng.choice([1, 2, 3, 4], p=VIEWS_P)), an,
                             bool(rng.random() < 0.5), true_label=0))
    return studies


# label noise (module docstring, "Label noise"): a normal study is over-called at OVERCALL times the rate at
# which a subtle finding is missed (ASSUMED)
OVERCALL = 0.1


def subtle(spec: dict) -> bool:
    """A finding a report misses (LABEL NOISE): a non- or minimally displaced fracture with neither hardware nor
    a cast to draw the eye, or grade I degenerative change."""
    if "degenerative" in spec:
        return spec["degenerative"].get("grade") == 1
    fr = spec.get("fracture")
    return bool(fr) and fr.get("pattern") == "simple" and "hardware" not in spec and "cast" not in spec


def _report_label(label: int, spec: dict, u: float, label_noise: float) -> int:
    """The report's label for a study whose truth is `label`: a subtle finding is missed where u < label_noise,
    a normal study over-called where u < OVERCALL * label_noise; other findings are always reported."""
    if label:
        return 0 if subtle(spec) and u < label_noise else 1
    return 1 if u < OVERCALL * label_noise else 0


def plan_studies(train_patients: int, valid_patients: int, seed: int, label_noise: float = 0.0) -> list[Study]:
    """Patients, their studies and labels; class shares and abnormal rates follow MURA.

    `label_noise` > 0 makes `label` the report's (see _report_label; one uniform per study from its own stream,
    spawn key (5, study), so the plan, the findings and the renders stay those of label_noise = 0); the truth is
    in `true_label`."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    parts = list(PARTS)
    share = np.array([STUDY_SHARE[p] for p in parts], float)
    share /= share.sum()
    studies: list[Study] = []
    for split, n, first in (("train", train_patients, 1), ("valid", valid_patients, train_patients + 1)):
        for pid in range(first, first + n):
            an = Anatomy(size=float(rng.uniform(0.88, 1.12)), bone=float(rng.uniform(0.88, 1.12)),
                         soft=float(rng.uniform(0.8, 1.35)), spread=float(rng.uniform(0.6, 1.5)))
            mirror = bool(rng.random() < 0.5)
            n_studies = int(rng.choice([1, 2, 3], p=[0.8, 0.15, 0.05]))
            part = parts[rng.choice(len(parts), p=share)]
            count: dict[str, int] = {}
            for _ in range(n_studies):
                if rng.random() > 0.7:
                    part = parts[rng.choice(len(parts), p=share)]
                count[part] = count.get(part, 0) + 1
                label = int(rng.random() < ABNORMAL_RATE[part])
                finger = int(rng.integers(2, 6))
                st = Study(split, part, pid, count[part], label, int(rng.choice([1, 2, 3, 4], p=VIEWS_P)),
                           an, mirror, finger)
                # the findings come from the study's own stream, so the plan above does not depend on them
                lrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, len(studies))))
                st.lesion = lesion_spec(lrng, part, bool(label), finger)
                draw_alloy(st.lesion, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, len(studies)))))
                st.true_label = label
                if label_noise > 0:
                    nrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5, len(studies))))
                    st.label = _report_label(label, st.lesion, float(nrng.random()), label_noise)
                studies.append(st)
    return studies


def _write_study(args) -> list[tuple[str, int]]:
    """Render and write every view of one study; returns (relative image path, label) rows."""
    root, study, index, seed, max_side = args
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    sdir = root / study.folder
    mdir = root / "masks" / study.folder
    sdir.mkdir(parents=True, exist_ok=True)
    mdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(1, study.n_views + 1):
        img, bones, lesion, _ = render_view(study, rng, max_side)
        if rng.random() < 0.08:  # some MURA files are stored as RGB
            img = np.repeat(img[..., None], 3, axis=2)
        cv2.imwrite(str(sdir / f"image{v}.png"), img)
        cv2.imwrite(str(mdir / f"image{v}_bones.png"), bones)
        cv2.imwrite(str(mdir / f"image{v}_lesion.png"), lesion)
        rows.append((f"MURA-v1.1/{study.folder}/image{v}.png", study.label))
    return rows


# --------------------------------------------------------------------------- objects added (counterfactuals)

ADDED_STREAM = 8  # spawn key (8, study, 0 for a cast / 1 for hardware) of the objects `added_finding` draws
STAYS_AT_SITE = ("plate", "nail", "kwires", "screws")  # implants drawn at the given site (the others move it)


def added_finding(study: Study, index: int, seed: int, kind: str) -> dict | None:
    """Study number `index`'s lesion spec with a cast or hardware added, for the counterfactual test that adds an
    object to a study rendered without it (utils.chapters.counterfactual); None where it cannot go (a cast on a
    type outside CASTABLE, or the study has one already).

    A cast goes where a normal study's does (the type's first fracture site; `cast_spec`: length, material and
    shell as generated). Hardware is the type's retained-hardware mix (HARDWARE_MIX[part][1]: a plate or the
    type's usual implant, an arthroplasty at the shoulder) at a site of FRACTURE_SITES, with its alloy
    (`draw_alloy`); where the study already has a site (a normal study's cast) it goes there, drawn from the
    mix's implants that keep the site (STAYS_AT_SITE), so the cast stays where it was. Every draw comes from
    the object's own stream, SeedSequence(seed, spawn_key=(ADDED_STREAM, index, 0 or 1)), so no draw of the
    plan, the findings or the renders moves."""
    if kind not in ("cast", "hardware"):
        raise ValueError(f"only a cast or hardware can be added, not {kind!r}")
    spec = dict(study.lesion)
    if kind in spec or (kind == "cast" and study.part not in CASTABLE):
        return None
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ADDED_STREAM, index, int(kind == "hardware"))))
    opts = FRACTURE_SITES[study.part][:1] if kind == "cast" else FRACTURE_SITES[study.part]
    name, lo, hi = opts[int(rng.integers(len(opts)))]
    site = (f"{name}{study.finger}" if study.part == "FINGER" else name, float(rng.uniform(lo, hi)))
    site = tuple(spec.get("site", site))
    if kind == "cast":
        return {**spec, "site": site, "cast": cast_spec(rng)}
    mix = {k: w for k, w in HARDWARE_MIX[study.part][1].items() if "site" not in spec or k in STAYS_AT_SITE}
    keys = list(mix)
    w = np.array([mix[k] for k in keys], float)
    hw, site = hardware_spec(rng, study.part, keys[int(rng.choice(len(keys), p=w / w.sum()))], site)
    out = {**spec, "site": site, "hardware": hw}
    draw_alloy(out, rng)
    return out


# --------------------------------------------------------------------------- how visible the findings are


def _hw(*types):
    return lambda s: s.get("hardware", {}).get("type") in types


VISIBILITY_KINDS = {  # name: (which studies, the finding removed)
    "fracture, non/minimally displaced": (lambda s: s.get("fracture", {}).get("pattern") == "simple"
                                          and "hardware" not in s, "fracture"),
    "fracture, displaced": (lambda s: s.get("fracture", {}).get("pattern") == "displaced", "fracture"),
    "fracture, comminuted": (lambda s: s.get("fracture", {}).get("pattern") == "comminuted", "fracture"),
    "hardware: plate": (_hw("plate"), "hardware"),
    "hardware: nail": (_hw("nail"), "hardware"),
    "hardware: screws": (_hw("screws"), "hardware"),
    "hardware: K-wires, tension band": (_hw("kwires", "tension_band"), "hardware"),
    "hardware: arthroplasty, radial head": (_hw("arthroplasty", "radial_head"), "hardware"),
    "cast: plaster": (lambda s: isinstance(s.get("cast"), dict) and s["cast"]["material"] == "plaster", "cast"),
    "cast: fibreglass": (lambda s: isinstance(s.get("cast"), dict) and s["cast"]["material"] == "fibreglass",
                         "cast"),
    **{f"degenerative, grade {'I' * g}": ((lambda g: lambda s: s.get("degenerative", {}).get("grade") == g)(g),
                                         "degenerative") for g in (1, 2, 3)},
}
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _noise_sd(img: np.ndarray, region: np.ndarray) -> float:
    """The noise SD of `img` over `region` (bool), robustly from the high-pass residual (Immerkaer 1996, "Fast
    noise variance estimation": the 3x3 kernel's response has SD 6 sigma; median absolute value, so edges weigh
    little); clipped pixels (0, 255) are left out, and the floor is uint8 quantisation (1/sqrt 12)."""
    r = np.abs(cv2.filter2D(img.astype(np.float32), -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    ok = cv2.erode((region & (img > 2) & (img < 253)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if ok.sum() < 20:
        return 1 / math.sqrt(12)
    return max(1.4826 * float(np.median(r[ok])) / 6.0, 1 / math.sqrt(12))


def pair_cnr(orig: np.ndarray, cf: np.ndarray, mask: np.ndarray, size: int) -> dict:
    """Contrast-to-noise of a finding at `size` px: both images letterboxed as the cache does
    (utils.data.letterbox), the mask's footprint there (every pixel it covers, area resampling); contrast is the
    mean absolute difference with/without over the footprint, noise the original's noise SD (_noise_sd) over
    the rest of the picture."""
    o, c = letterbox(orig, size), letterbox(cf, size)
    m = letterbox(mask.astype(np.uint8) * 255, size) > 0
    pic = letterbox(np.full(orig.shape, 255, np.uint8), size) > 127
    contrast = float(np.abs(o.astype(np.float32) - c.astype(np.float32))[m].mean()) if m.any() else 0.0
    noise = _noise_sd(o, pic & ~(cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0))
    return dict(contrast=contrast, noise=noise, cnr=contrast / noise, area_px=int(m.sum()))


def finding_visibility(sizes=(64, 96, 128, 224), n_per_kind: int = 3, seed: int = 0, max_side: int = 512,
                       near_px: int = 8):
    """How visible each kind of finding (VISIBILITY_KINDS) is at each input size: `n_per_kind` studies of the
    kind (drawn, seeded, from a plan of 1500 training patients with `seed`) rendered at `max_side` with and
    without the finding (render_study, the original windows kept), every view whose lesion mask holds it.

    One row per kind and size (medians over views): its physical size (extent_mm: the long side of the mask's
    minimum-area rectangle; width_mm its short side; area_mm2; mm of anatomy, MURA's films at 512 px hold
    ~0.25-0.8 mm per px), its size in px after letterboxing to `size` (extent_px, width_px, area_px: the
    footprint), the contrast (mean |with - without| in grey levels over the footprint), the noise SD and
    their ratio cnr (pair_cnr); far_max_diff is the largest |difference| at full resolution in the exposed
    field more than `near_px` px from the mask (0: removing the finding changes nothing away from it; fractures
    move the distal fragment, so theirs is not 0)."""
    studies = plan_studies(1500, 0, seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6,)))
    rows = []
    for name, (want, kind) in VISIBILITY_KINDS.items():
        cand = [i for i, st in enumerate(studies) if want(st.lesion)]
        pick = sorted(int(k) for k in rng.choice(len(cand), size=min(n_per_kind, len(cand)), replace=False))
        views = []
        for k in pick:
            i = cand[k]
            st = studies[i]
            orig = render_study(st, i, seed, max_side)
            cfs = render_study(st, i, seed, max_side, lesion={k2: v for k2, v in st.lesion.items() if k2 != kind},
                               windows=[v.meta["window"] for v in orig])
            for o, c in zip(orig, cfs):
                m = (o.lesion & LESION_TAGS[kind]) > 0
                if m.sum() < 4:
                    continue
                ppm = o.meta["px_per_mm"]
                (_, _), (w, h), _ = cv2.minAreaRect(np.argwhere(m)[:, ::-1].astype(np.float32))
                far = (cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5) > near_px) & o.meta["field"]
                diff = np.abs(o.image.astype(np.int16) - c.image.astype(np.int16))
                v = dict(extent_mm=max(w, h) / ppm, width_mm=min(w, h) / ppm, area_mm2=m.sum() / ppm ** 2,
                         far_max_diff=int(diff[far].max(initial=0)), long=max(o.image.shape), px=max(w, h),
                         wpx=min(w, h))
                for size in sizes:
                    v[size] = pair_cnr(o.image, c.image, m, size)
                views.append(v)
        for size in sizes:
            med = lambda f: float(np.median([f(v) for v in views])) if views else float("nan")  # noqa: E731
            rows.append(dict(kind=name, finding=kind, size=size, views=len(views),
                             extent_mm=med(lambda v: v["extent_mm"]), width_mm=med(lambda v: v["width_mm"]),
                             area_mm2=med(lambda v: v["area_mm2"]),
                             extent_px=med(lambda v: v["px"] * size / v["long"]),
                             width_px=med(lambda v: v["wpx"] * size / v["long"]),
                             area_px=med(lambda v: v[size]["area_px"]), contrast=med(lambda v: v[size]["contrast"]),
                             noise=med(lambda v: v[size]["noise"]), cnr=med(lambda v: v[size]["cnr"]),
                             far_max_diff=int(max((v["far_max_diff"] for v in views), default=0))))
    return pd.DataFrame(rows)


def load_plan(mura_root: str | os.PathLike) -> tuple[list[Study], int, int]:
    """(studies, seed, max_side) of a generated phantom tree: the Study objects in generation order (a
    study's position in the list is the `index` its random stream is spawned from), re-planned from the
    settings in phantom.json (planning is seeded) and checked against the studies stored there."""
    root = Path(mura_root)
    if not (root / "phantom.json").is_file() and (root / "MURA-v1.1" / "phantom.json").is_file():
        root = root / "MURA-v1.1"
    path = root / "phantom.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: counterfactual renders need a tree written by "
                                "utils.data.phantom (a real MURA tree has no generator plan)")
    meta = json.loads(path.read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root} was written by phantom generator {meta.get('generator_version')}, this is "
                         f"{GENERATOR_VERSION}: regenerate it (python -m utils.data.phantom) to re-render its studies")
    seed, max_side = int(meta["seed"]), int(meta["max_side"])
    if list(meta.get("parts", PARTS)) == list(OOD_PARTS):
        studies = plan_ood_studies(meta["valid_patients"], seed)
    else:
        studies = plan_studies(meta["train_patients"], meta["valid_patients"], seed, meta.get("label_noise", 0.0))
    stored = meta.get("studies")
    if stored is not None:
        mine = json.loads(json.dumps([_record(st) for st in studies]))
        if mine != stored:
            bad = next((i for i, (a, b) in enumerate(zip(mine, stored)) if a != b), min(len(mine), len(stored)))
            raise ValueError(f"{path}: the re-planned studies differ from the stored ones (first at study {bad}); "
                             "the tree was not written by this generator with these settings")
    return studies, seed, max_side


def _record(st: Study) -> dict:
    """What phantom.json stores of a study (load_plan checks a re-plan against it)."""
    return dict(folder=st.folder, anatomy=asdict(st.anatomy), mirror=st.mirror, finger=st.finger, lesion=st.lesion,
                true_label=st.label if st.true_label is None else st.true_label)


def settings_dict(train_patients: int, valid_patients: int, seed: int, max_side: int = 512, ood: bool = False,
                  label_noise: float = 0.0) -> dict:
    """The settings that define a tree (`ensure` compares them); label_noise only where non-zero, so settings
    written without it read as label_noise = 0."""
    out = dict(generator_version=GENERATOR_VERSION, train_patients=train_patients,
               valid_patients=valid_patients, seed=seed, max_side=max_side,
               parts=list(OOD_PARTS) if ood else list(PARTS))
    if label_noise and not ood:
        out["label_noise"] = float(label_noise)
    return out


def generate(out: str | os.PathLike, train_patients: int = 1100, valid_patients: int = 260, seed: int = 0,
             max_side: int = 512, workers: int | None = None, progress: bool = True, ood: bool = False,
             label_noise: float = 0.0) -> Path:
    """Write a phantom MURA-v1.1 tree under `out`; returns the MURA-v1.1 folder.

    `label_noise` (default 0: labels are the truth): the folders and CSVs carry the report's label, missing
    subtle findings and over-calling a few normal studies (plan_studies); `true_labels.csv` (study folder as in
    the labeled-studies CSV, report label, true label) and phantom.json's studies hold the truth.

    The tree is written into a temporary folder and renamed into place when
    complete, so an interrupted run never leaves a half tree that looks whole.
    """
    out = Path(out)
    final = out / "MURA-v1.1"
    tmp = out / "MURA-v1.1.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    studies = (plan_ood_studies(valid_patients, seed) if ood
               else plan_studies(train_patients, valid_patients, seed, label_noise))
    workers = workers or os.cpu_count() or 1
    jobs = [(tmp, st, i, seed, max_side) for i, st in enumerate(studies)]
    t0 = time.time()
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(tqdm(ex.map(_write_study, jobs, chunksize=8), total=len(jobs),
                                desc="phantom studies", disable=not progress))
    else:
        results = [_write_study(j) for j in tqdm(jobs, desc="phantom studies", disable=not progress)]
    for split in ("train", "valid"):
        img_rows = [r for st, rows in zip(studies, results) if st.split == split for r in rows]
        if not img_rows:  # e.g. the unfamiliar-parts tree has no train split
            continue
        with open(tmp / f"{split}_image_paths.csv", "w") as f:
            f.writelines(f"{p}\n" for p, _ in img_rows)
        with open(tmp / f"{split}_labeled_studies.csv", "w") as f:
            f.writelines(f"MURA-v1.1/{st.folder}/,{st.label}\n" for st in studies if st.split == split)
    with open(tmp / "true_labels.csv", "w") as f:
        f.write("study,label,true_label\n")
        f.writelines(f"MURA-v1.1/{st.folder}/,{st.label},{_record(st)['true_label']}\n" for st in studies)
    meta = settings_dict(train_patients, valid_patients, seed, max_side, ood, label_noise)
    meta.update(n_studies=len(studies), n_images=sum(len(r) for r in results),
                seconds=round(time.time() - t0, 1), lesion_flags=dict(LESION_BITS),
                studies=[_record(st) for st in studies])
    (tmp / "phantom.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def ensure(out: str | os.PathLike, train_patients: int, valid_patients: int, seed: int = 0,
           max_side: int = 512, ood: bool = False, label_noise: float = 0.0, **kw) -> Path:
    """The phantom under `out`, generated only if missing or made with other settings.

    `ood=True`: `valid_patients` normal studies of knees, feet and chests (not MURA study types), for testing
    how the models meet unfamiliar inputs; `train_patients` is ignored."""
    final = Path(out) / "MURA-v1.1"
    train_patients = 0 if ood else train_patients
    want = settings_dict(train_patients, valid_patients, seed, max_side, ood, label_noise)
    want["label_noise"] = want.get("label_noise", 0.0)
    meta_path = final / "phantom.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k, 0.0 if k == "label_noise" else None) == v for k, v in want.items()):
            return final
    return generate(out, train_patients, valid_patients, seed, max_side, ood=ood, label_noise=label_noise, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.data.phantom", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write MURA-v1.1/ into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-patients", type=int, default=1100)
    ap.add_argument("--valid-patients", type=int, default=260)
    ap.add_argument("--max-side", type=int, default=512, help="long side of the images in px")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--ood", action="store_true", help="knees, feet and chests (not MURA types), valid split only")
    ap.add_argument("--label-noise", type=float, default=0.0,
                    help="report-like label noise (0: none; ~0.6 gives Cohen's kappa ~0.75 against the truth)")
    a = ap.parse_args(argv)
    t0 = time.time()
    root = generate(a.out, 0 if a.ood else a.train_patients, a.valid_patients, a.seed, a.max_side, a.workers,
                    ood=a.ood, label_noise=a.label_noise)
    meta = json.loads((root / "phantom.json").read_text())
    print(f"wrote {meta['n_images']} images in {meta['n_studies']} studies to {root} "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
