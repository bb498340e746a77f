"""A radiograph phantom written in MURA v1.1's exact layout, with ground-truth masks.

MURA cannot be shipped, so this module generates a stand-in that looks and
behaves like it::

    python -m utils.phantom --out data/phantom --seed 0 --train-patients 1100 --valid-patients 260

writes `OUT/MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyK_{positive,negative}/imageJ.png`,
the four CSV files MURA ships, a `masks/` sidecar tree MURA lacks and `phantom.json`.

Anatomy. One upper limb (shoulder girdle, humerus, elbow, forearm, wrist, hand)
is modelled in a single anatomical frame in millimetres (y runs distally); each
of MURA's seven study types is a field of view onto it, so neighbouring types
overlap in what they show as in MURA (a hand film shows the wrist, an elbow film
the humeral shaft). Bones are tapered capsules and ellipsoids with a cortical
shell over a medullary cavity, plates (the scapula) are thin slabs; soft tissue,
lungs and casts are further solids.

Physics. Each solid contributes its chord length t_i (mm) along the beam, and the
detector sees I = I0 * heel(x, y) * exp(-sum_i mu_i t_i) photons per pixel, with
Poisson noise (signal dependent), exposure variation, a heel-effect gradient and
detector blur. The image shown is the log-attenuation, windowed like a
processed radiograph: bone bright, air dark.

Nuisances, all independent of the class: in-plane rotation (mostly small,
sometimes large), zoom, field-of-view position, left/right mirroring,
projection (AP, lateral, oblique), collimation borders, lead L/R markers,
burned-in text, image sizes and aspect ratios, some files saved as RGB.

Abnormal studies (about 40 %, MURA's share per type): fractures (a cortical
break with a little displacement or angulation) and orthopaedic hardware
(plates and screws, nails, K-wires, a shoulder prosthesis); casts on some
abnormal and a few normal studies, so MURA's known shortcut exists here.
Masks per image: `masks/<split>/.../imageJ_bones.png` (255 on the bones that
define the body part) and `imageJ_lesion.png` (bit flags: 1 fracture,
2 hardware, 4 cast; `utils.data.LESION_BITS`).

Every random choice flows from `--seed` through one `numpy.random.SeedSequence`
per study, so the output does not depend on the number of worker processes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .data import LESION_CAST, LESION_FRACTURE, LESION_HARDWARE

GENERATOR_VERSION = "1.0"

PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")

# MURA v1.1 train studies per type (Rajpurkar et al. 2018, table 1): normal, abnormal.
MURA_STUDIES = {
    "ELBOW": (1094, 660), "FINGER": (1280, 655), "FOREARM": (590, 287), "HAND": (1497, 521),
    "HUMERUS": (321, 271), "SHOULDER": (1364, 1457), "WRIST": (2134, 1326),
}
STUDY_SHARE = {p: sum(v) for p, v in MURA_STUDIES.items()}
ABNORMAL_RATE = {p: v[1] / sum(v) for p, v in MURA_STUDIES.items()}
VIEWS_P = (0.12, 0.36, 0.37, 0.15)  # 1..4 views per study

# linear attenuation coefficients, 1/mm (relative values are what matter)
MU = {"soft": 0.020, "marrow": 0.028, "cortex": 0.085, "metal": 0.60, "cast": 0.040, "air": -0.016}


# --------------------------------------------------------------------------- geometry


@dataclass
class Prim:
    """One solid. shape 'capsule': geom (x0, y0, x1, y1, r0, r1) in mm, a tapered
    capsule (a cylinder with rounded ends, radius r0 at the first end, r1 at the
    second); 'ellipse': (cx, cy, a, b, angle) an ellipsoid with semi-axes a, b in
    the image plane and `depth` along the beam; 'poly': ((x, y), ...) a slab of
    thickness `depth`. material: bone (cortical shell of relative thickness
    `cortex` over marrow), soft, metal, cast (a shell), air (negative, the lungs),
    or mask (drawn only into masks)."""

    name: str
    shape: str
    geom: tuple
    material: str = "bone"
    depth: float = 0.0
    cortex: float = 0.3
    tags: tuple = ()
    group: str = ""  # solids of one group (a chain of segments) combine by maximum, not sum


def _cap(name, p0, p1, r0, r1=None, material="bone", cortex=0.3, tags=()):
    return Prim(name, "capsule", (*p0, *p1, r0, r0 if r1 is None else r1), material, 0.0, cortex, tags)


def _ell(name, c, a, b, angle=0.0, depth=None, material="bone", cortex=0.25, tags=()):
    return Prim(name, "ellipse", (*c, a, b, angle), material, depth if depth else min(a, b), cortex, tags)


def _rot(p, c, ang):
    """Rotate point p about c by ang radians."""
    ca, sa = math.cos(ang), math.sin(ang)
    dx, dy = p[0] - c[0], p[1] - c[1]
    return (c[0] + ca * dx - sa * dy, c[1] + sa * dx + ca * dy)


@dataclass
class Anatomy:
    """A patient's build; fixed across the patient's studies."""

    size: float = 1.0  # overall scale
    bone: float = 1.0  # bone radius scale
    soft: float = 1.0  # soft-tissue radius scale
    spread: float = 1.0  # finger spread


def build_limb(an: Anatomy, flex_deg: float = 0.0, abduct_deg: float = 0.0) -> list[Prim]:
    """All solids of one upper limb in the anatomical frame (mm, y distal).

    `flex_deg` bends the elbow (forearm and hand rotate about the elbow joint),
    `abduct_deg` swings the humerus and everything distal about the humeral head.
    """
    b, st = an.bone, an.soft
    P: list[Prim] = []
    # ---- chest wall, lung and ribs (visible on shoulder films)
    P.append(_ell("torso", (-170, 140), 175, 300, 0, depth=110, material="soft"))
    P.append(_ell("lung", (-175, 150), 115, 210, 0.1, depth=75, material="air"))
    for i in range(7):
        y0 = -55 + 34 * i
        pts = [(-300 + 25 * k, y0 - 0.0022 * (-300 + 25 * k + 60) ** 2 + 45) for k in range(11)]
        for k in range(len(pts) - 1):
            P.append(replace(_cap(f"rib{i}_{k}", pts[k], pts[k + 1], 5.0 * b, cortex=0.45), group=f"rib{i}"))
    # ---- shoulder girdle
    P.append(Prim("scapula", "poly", ((-32, -22), (-38, 30), (-92, 160), (-150, 15), (-142, -42), (-62, -40)),
                  "bone", 5.0))
    P.append(_ell("glenoid", (-31, 0), 8 * b, 21 * b, 0.05, depth=12))
    P.append(_cap("acromion", (-50, -48), (-2, -42), 7 * b, 6 * b))
    P.append(_cap("coracoid", (-52, -30), (-24, -18), 5.5 * b, 4.5 * b))
    clav = [(-6, -52), (-45, -62), (-95, -58), (-150, -72)]
    for k in range(3):
        P.append(replace(_cap(f"clavicle{k}", clav[k], clav[k + 1], 7.5 * b, 7 * b, cortex=0.35),
                         group="clavicle"))
    P.append(_cap("soft_shoulder", (-40, -30), (10, 60), 62 * st, 50 * st, material="soft"))

    # ---- arm (everything distal rotates about the humeral head by abduct_deg)
    arm: list[Prim] = []
    arm.append(_ell("humerus_head", (2, 0), 24 * b, 25 * b, 0, depth=22, cortex=0.12))
    arm.append(_ell("humerus_tuberosity", (20, -6), 9 * b, 13 * b, 0, depth=10, cortex=0.15))
    arm.append(_cap("humerus_neck", (6, 14), (3, 62), 16 * b, 12 * b))
    arm.append(_cap("humerus_shaft", (3, 62), (0, 282), 11.5 * b, 11 * b, cortex=0.35))
    arm.append(_ell("humerus_condyles", (0, 298), 30 * b, 11 * b, 0, depth=12))
    arm.append(_ell("epicondyle_med", (31 * b, 292), 7 * b, 7 * b, 0, depth=6))
    arm.append(_ell("epicondyle_lat", (-29 * b, 294), 6 * b, 6 * b, 0, depth=6))
    arm.append(_ell("trochlea", (9, 306), 11 * b, 8 * b, 0, depth=10))
    arm.append(_ell("capitellum", (-11, 305), 10 * b, 8 * b, 0, depth=9))
    arm.append(_ell("olecranon_fossa", (0, 288), 9, 7, 0, depth=6, material="air"))
    arm.append(_cap("soft_arm", (0, 20), (0, 300), 42 * st, 38 * st, material="soft"))

    # ---- forearm and hand (rotate about the elbow by flex_deg)
    E = (0.0, 312.0)
    fa: list[Prim] = []
    fa.append(_ell("olecranon", (9, 300), 10 * b, 17 * b, 0, depth=10))
    fa.append(_ell("radius_head", (-12, 321), 11 * b, 5 * b, 0, depth=10))
    fa.append(_cap("radius_neck", (-12, 326), (-14, 362), 6 * b, 6.5 * b))
    fa.append(_cap("radius_shaft", (-14, 362), (-21, 552), 6.5 * b, 8.5 * b, cortex=0.35))
    fa.append(_ell("radius_distal", (-17, 561), 17 * b, 9 * b, 0.05, depth=9))
    fa.append(_cap("radius_styloid", (-26, 562), (-33, 576), 5 * b, 3 * b))
    fa.append(_cap("ulna_prox", (9, 315), (10, 362), 9 * b, 7.5 * b))
    fa.append(_cap("ulna_shaft", (10, 362), (15, 552), 7.5 * b, 5.5 * b, cortex=0.35))
    fa.append(_ell("ulna_head", (15, 561), 8 * b, 7 * b, 0, depth=6))
    fa.append(_cap("soft_forearm", (0, 318), (0, 570), 36 * st, 27 * st, material="soft"))
    # carpals: proximal and distal rows
    carpals = {
        "scaphoid": ((-19, 581), 10, 6, -0.5), "lunate": ((-4, 583), 7, 6, 0), "triquetrum": ((9, 584), 6, 5, 0.3),
        "pisiform": ((15, 589), 4, 4, 0), "trapezium": ((-23, 597), 7, 6, 0.4), "trapezoid": ((-12, 598), 5, 6, 0),
        "capitate": ((-1, 597), 6, 9, 0), "hamate": ((11, 596), 7, 7.5, 0),
    }
    for nm, (c, a_, b_, ang) in carpals.items():
        fa.append(_ell(f"carpal_{nm}", c, a_ * b, b_ * b, ang, depth=min(a_, b_) * 0.8 * b, cortex=0.2))
    # metacarpals and phalanges; finger 1 = thumb, 2..5 index..little
    bases = {1: (-25, 604), 2: (-14, 607), 3: (-3, 608), 4: (7, 607), 5: (16, 605)}
    mc_len = {1: 44, 2: 66, 3: 63, 4: 56, 5: 52}
    ang0 = {1: -38, 2: -7, 3: -1, 4: 5, 5: 11}
    ph_len = {1: (31, 0, 23), 2: (40, 24, 17), 3: (44, 28, 18), 4: (41, 26, 18), 5: (34, 19, 16)}
    fa.append(_ell("soft_palm", (-1, 640), 36 * st, 42, 0, depth=30, material="soft"))
    for f in range(1, 6):
        ang = math.radians(ang0[f] * an.spread)
        d = (math.sin(ang), math.cos(ang))
        p0 = bases[f]
        p1 = (p0[0] + d[0] * mc_len[f], p0[1] + d[1] * mc_len[f])
        r = (5.8 if f == 1 else 5.2 - 0.2 * f) * b
        fa.append(_cap(f"mc{f}", p0, p1, r, r * 0.85, cortex=0.35))
        fa.append(_ell(f"mchead{f}", (p1[0] + d[0] * 2, p1[1] + d[1] * 2), r * 1.15, r * 1.0,
                       ang, depth=r * 0.9))
        p = (p1[0] + d[0] * 6.5, p1[1] + d[1] * 6.5)
        ends = []
        for k, (lab, L) in enumerate(zip(("pp", "mp", "dp"), ph_len[f])):
            if L == 0:
                continue
            q = (p[0] + d[0] * L, p[1] + d[1] * L)
            rr = r * (0.85 - 0.13 * k)
            fa.append(_cap(f"{lab}{f}", p, q, rr, rr * (0.7 if lab == "dp" else 0.85), cortex=0.35))
            ends.append(q)
            p = (q[0] + d[0] * 2.8, q[1] + d[1] * 2.8)
        fa.append(_cap(f"soft_finger{f}", p0 if f == 1 else p1, ends[-1], 9.5 * st, 8 * st, material="soft"))

    fl = math.radians(flex_deg)
    for pr in fa:
        arm.append(_transform_prim(pr, lambda p: _rot(p, E, fl), 1.0, fl))
    ab = math.radians(abduct_deg)
    for pr in arm:
        P.append(_transform_prim(pr, lambda p: _rot(p, (2, 0), -ab), 1.0, -ab))
    return P


def build_leg(an: Anatomy, flex_deg: float = 0.0, abduct_deg: float = 0.0) -> list[Prim]:
    """A lower limb (knee and foot films; not a MURA study type): femur, patella, tibia, fibula, ankle, foot."""
    b, st = an.bone, an.soft
    P = [_cap("soft_thigh", (0, 0), (0, 420), 70 * st, 55 * st, material="soft"),
         _cap("femur_shaft", (0, 0), (0, 380), 14 * b, 13 * b, cortex=0.35),
         _ell("femur_condyles", (0, 405), 42 * b, 20 * b, 0, depth=22),
         _ell("patella", (0, 385), 21 * b, 25 * b, 0, depth=10),
         _ell("tibia_plateau", (-2, 440), 40 * b, 11 * b, 0, depth=20)]
    K = (0.0, 425.0)
    low = [_cap("soft_leg", (0, 430), (0, 800), 50 * st, 30 * st, material="soft"),
           _cap("tibia_shaft", (-4, 448), (-6, 790), 14 * b, 10 * b, cortex=0.35),
           _ell("tibia_head", (-2, 452), 30 * b, 14 * b, 0, depth=16),
           _cap("fibula", (33, 455), (30, 800), 6 * b, 5 * b, cortex=0.35),
           _ell("fibula_head", (33, 452), 9 * b, 8 * b, 0, depth=7),
           _ell("talus", (0, 820), 22 * b, 14 * b, 0, depth=14),
           _ell("calcaneus", (0, 838), 24 * b, 18 * b, 0, depth=16)]
    tarsals = {"navicular": ((-8, 852), 14, 7), "cuboid": ((16, 856), 10, 9), "cuneiform1": ((-16, 868), 7, 9),
               "cuneiform2": ((-4, 869), 6, 8), "cuneiform3": ((7, 869), 6, 8)}
    for nm, (c, a_, b_) in tarsals.items():
        low.append(_ell(f"tarsal_{nm}", c, a_ * b, b_ * b, 0, depth=min(a_, b_) * 0.9 * b, cortex=0.2))
    low.append(_ell("soft_foot", (0, 900), 45 * st, 70, 0, depth=30, material="soft"))
    for t, x0 in enumerate((-18, -7, 3, 13, 22), 1):
        ang = math.radians((x0 / 22) * 8)
        d = (math.sin(ang), math.cos(ang))
        p0 = (x0, 878)
        L = 70 if t > 1 else 62
        p1 = (p0[0] + d[0] * L, p0[1] + d[1] * L)
        r = (7.5 if t == 1 else 4.8) * b
        low.append(_cap(f"metatarsal{t}", p0, p1, r, r * 0.8, cortex=0.35))
        q = (p1[0] + d[0] * 5, p1[1] + d[1] * 5)
        for k in range(2 if t == 1 else 3):
            L2 = 22 if k == 0 else 10
            q2 = (q[0] + d[0] * L2, q[1] + d[1] * L2)
            low.append(_cap(f"toe{t}_{k}", q, q2, r * (0.8 - 0.12 * k), r * (0.7 - 0.12 * k), cortex=0.35))
            q = (q2[0] + d[0] * 2.5, q2[1] + d[1] * 2.5)
    fl = math.radians(flex_deg)
    return P + [_transform_prim(pr, lambda p: _rot(p, K, fl), 1.0, fl) for pr in low]


def build_chest(an: Anatomy, flex_deg: float = 0.0, abduct_deg: float = 0.0) -> list[Prim]:
    """A chest film (not a MURA study type): spine, both rib cages, lungs, heart, clavicles."""
    b, st = an.bone, an.soft
    P = [_ell("torso", (0, 40), 190 * st, 260, 0, depth=110, material="soft"),
         _ell("lung_r", (-85, 20), 75, 150, 0.05, depth=70, material="air"),
         _ell("lung_l", (85, 20), 70, 145, -0.05, depth=70, material="air"),
         _ell("heart", (25, 90), 70, 60, 0.3, depth=50, material="soft")]
    for i in range(14):
        P.append(_ell(f"vertebra{i}", (0, -160 + 25 * i), 16 * b, 10 * b, 0, depth=14))
    for side in (-1, 1):
        for i in range(9):
            y0 = -120 + 30 * i
            pts = [(side * (12 + 16 * k), y0 + 0.0045 * (16 * k) ** 2 - 0.012 * (16 * k) ** 1.5 * 0)
                   for k in range(11)]
            for k in range(len(pts) - 1):
                P.append(replace(_cap(f"rib{side}_{i}_{k}", pts[k], pts[k + 1], 5.0 * b, cortex=0.45),
                                 group=f"rib{side}_{i}"))
        clav = [(side * 18, -150), (side * 70, -160), (side * 130, -150)]
        for k in range(2):
            P.append(replace(_cap(f"clavicle{side}_{k}", clav[k], clav[k + 1], 7 * b, cortex=0.35),
                             group=f"clavicle{side}"))
    return P


def _transform_prim(pr: Prim, f, scale: float, dangle: float) -> Prim:
    """Map a solid's points through f; lengths scale by `scale`, ellipse axes rotate by dangle."""
    g = pr.geom
    if pr.shape == "capsule":
        p0, p1 = f(g[0:2]), f(g[2:4])
        return replace(pr, geom=(*p0, *p1, g[4] * scale, g[5] * scale))
    if pr.shape == "ellipse":
        c = f(g[0:2])
        return replace(pr, geom=(*c, g[2] * scale, g[3] * scale, g[4] + dangle), depth=pr.depth)
    return replace(pr, geom=tuple(f(p) for p in g))


# --------------------------------------------------------------------------- study types (views)

# field of view per study type: centre in the anatomical frame, long side in mm
FOV = {
    "SHOULDER": ((-22, 12), 230), "HUMERUS": ((0, 160), 390), "ELBOW": ((0, 306), 180),
    "FOREARM": ((-2, 445), 330), "WRIST": ((-3, 585), 135), "HAND": ((-4, 662), 225),
    "FINGER": (None, 95),
}
# study types outside MURA (unfamiliar inputs, never in training): field of view and anatomy
OOD_PARTS = ("KNEE", "FOOT", "CHEST")
FOV.update({"KNEE": ((0, 425), 210), "FOOT": ((0, 880), 200), "CHEST": ((0, 20), 420)})
BUILDERS = {"KNEE": build_leg, "FOOT": build_leg, "CHEST": build_chest}
KEY_BONES = {  # the bones that identify each study type (prefixes of solid names)
    "SHOULDER": ("humerus_head", "humerus_tuberosity", "glenoid", "scapula", "acromion", "coracoid", "clavicle"),
    "HUMERUS": ("humerus_shaft", "humerus_neck"),
    "ELBOW": ("humerus_condyles", "epicondyle", "trochlea", "capitellum", "olecranon", "radius_head",
              "radius_neck", "ulna_prox"),
    "FOREARM": ("radius_shaft", "ulna_shaft"),
    "WRIST": ("radius_distal", "radius_styloid", "ulna_head", "carpal_"),
    "HAND": ("mc", "pp", "mp", "dp"),
    "FINGER": (),  # the chosen finger's phalanges, filled in per study
    "KNEE": ("femur_condyles", "patella", "tibia_plateau", "tibia_head", "fibula_head"),
    "FOOT": ("metatarsal", "toe", "tarsal_", "talus", "calcaneus"),
    "CHEST": ("vertebra", "rib", "clavicle"),
}
# where fractures happen: (solid, range of the position t along it)
FRACTURE_SITES = {
    "SHOULDER": (("humerus_neck", 0.3, 0.7), ("clavicle1", 0.2, 0.8)),
    "HUMERUS": (("humerus_shaft", 0.2, 0.8),),
    "ELBOW": (("radius_neck", 0.3, 0.7), ("ulna_prox", 0.3, 0.7), ("humerus_shaft", 0.86, 0.94)),
    "FOREARM": (("radius_shaft", 0.2, 0.8), ("ulna_shaft", 0.2, 0.8)),
    "WRIST": (("radius_shaft", 0.9, 0.97), ("ulna_shaft", 0.92, 0.97)),
    "HAND": (("mc2", 0.3, 0.8), ("mc3", 0.3, 0.8), ("mc4", 0.3, 0.8), ("mc5", 0.4, 0.85)),
    "FINGER": (("pp", 0.3, 0.7), ("mp", 0.3, 0.7)),
}
HARDWARE = {
    "SHOULDER": ("prosthesis", "plate"), "HUMERUS": ("plate", "nail"), "ELBOW": ("plate", "kwire"),
    "FOREARM": ("plate", "nail"), "WRIST": ("plate", "kwire"), "HAND": ("plate", "kwire"), "FINGER": ("kwire",),
}
CASTABLE = ("FINGER", "HAND", "WRIST", "FOREARM", "ELBOW")


@dataclass
class Study:
    """Everything fixed within one study (all its views show the same patient state)."""

    split: str
    part: str
    patient: int
    study: int
    label: int
    n_views: int
    anatomy: Anatomy
    mirror: bool
    finger: int = 3
    lesion: dict = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return (f"{self.split}/XR_{self.part}/patient{self.patient:05d}/"
                f"study{self.study}_{'positive' if self.label else 'negative'}")


def _finger_fov_centre(prims: list[Prim], f: int):
    pp = next(p for p in prims if p.name == f"pp{f}").geom
    return (pp[2], pp[3])  # distal end of the proximal phalanx


def _lesion_spec(rng: np.random.Generator, part: str, abnormal: bool, finger: int) -> dict:
    """Draw the study's abnormality: fracture and/or hardware, and maybe a cast."""
    spec: dict = {}
    if abnormal:
        kind = rng.choice(["fracture", "fracture+hardware", "hardware"], p=[0.6, 0.25, 0.15])
        site, lo, hi = FRACTURE_SITES[part][rng.integers(len(FRACTURE_SITES[part]))]
        if part == "FINGER":
            site = f"{site}{finger}"
        spec["site"] = (site, float(rng.uniform(lo, hi)))
        if "fracture" in kind:
            spec["fracture"] = dict(gap=float(rng.uniform(0.8, 2.0)), shift=float(rng.uniform(-0.35, 0.35)),
                                    angle=float(rng.uniform(-9, 9)))
        if "hardware" in kind:
            spec["hardware"] = str(rng.choice(HARDWARE[part]))
        if part in CASTABLE and "fracture" in kind and rng.random() < 0.3:
            spec["cast"] = float(rng.uniform(0.5, 1.0))
    elif part in CASTABLE and rng.random() < 0.04:
        site, lo, hi = FRACTURE_SITES[part][0]
        spec["site"] = (f"{site}{finger}" if part == "FINGER" else site, float(rng.uniform(lo, hi)))
        spec["cast"] = float(rng.uniform(0.5, 1.0))
    return spec


def _apply_lesions(prims: list[Prim], spec: dict) -> list[Prim]:
    """Modify the limb for the study's fracture, hardware and cast (in the anatomical frame)."""
    if not spec:
        return prims
    name, t = spec["site"]
    i = next(k for k, p in enumerate(prims) if p.name == name)
    x0, y0, x1, y1, r0, r1 = prims[i].geom
    L = math.hypot(x1 - x0, y1 - y0)
    u = ((x1 - x0) / L, (y1 - y0) / L)
    n = (-u[1], u[0])
    F = (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
    r = r0 + t * (r1 - r0)
    out = list(prims)
    extra: list[Prim] = []
    if "fracture" in spec:
        fr = spec["fracture"]
        g, sh, ang = fr["gap"], fr["shift"] * r, math.radians(fr["angle"])
        a_end = (F[0] - u[0] * g / 2, F[1] - u[1] * g / 2)
        b_start = (F[0] + u[0] * g / 2 + n[0] * sh, F[1] + u[1] * g / 2 + n[1] * sh)
        b_end = _rot((x1 + n[0] * sh, y1 + n[1] * sh), b_start, ang)
        out[i] = replace(prims[i], geom=(x0, y0, *a_end, r0, r))
        extra.append(replace(prims[i], name=name + "_distal", geom=(*b_start, *b_end, r, r1)))
        extra.append(_cap("lesion_fracture", (F[0] - u[0] * r * 0.6, F[1] - u[1] * r * 0.6),
                          (F[0] + u[0] * r * 0.6, F[1] + u[1] * r * 0.6), r * 1.35, material="mask",
                          tags=("fracture",)))
    hw = spec.get("hardware")
    if hw == "plate":
        half = min(0.42 * L, 18 + 6 * r)
        side = r + 1.8
        a = (F[0] - u[0] * half + n[0] * side, F[1] - u[1] * half + n[1] * side)
        c = (F[0] + u[0] * half + n[0] * side, F[1] + u[1] * half + n[1] * side)
        w = 0.9 + 0.12 * r
        extra.append(_cap("plate", a, c, w, material="metal", tags=("hardware",)))
        n_screws = max(2, int(2 * half / (4 + r)))
        for k in range(n_screws):
            s = -half + (k + 0.5) * 2 * half / n_screws
            if abs(s) < r * 0.8:
                continue
            m = (F[0] + u[0] * s, F[1] + u[1] * s)
            extra.append(_cap(f"screw{k}", (m[0] + n[0] * (side + 1.5), m[1] + n[1] * (side + 1.5)),
                              (m[0] - n[0] * (r + 2), m[1] - n[1] * (r + 2)), 1.6, 1.2, material="metal",
                              tags=("hardware",)))
    elif hw == "nail":
        extra.append(_cap("nail", (x0 + u[0] * 0.08 * L, y0 + u[1] * 0.08 * L), (x1 - u[0] * 0.08 * L,
                          y1 - u[1] * 0.08 * L), 0.38 * r, material="metal", tags=("hardware",)))
    elif hw == "kwire":
        for k, s in enumerate((-1, 1)):
            a = (F[0] - u[0] * 3 * r + n[0] * s * r * 1.4, F[1] - u[1] * 3 * r + n[1] * s * r * 1.4)
            c = (F[0] + u[0] * 3 * r - n[0] * s * r * 1.4, F[1] + u[1] * 3 * r - n[1] * s * r * 1.4)
            extra.append(_cap(f"kwire{k}", a, c, 0.8, material="metal", tags=("hardware",)))
    elif hw == "prosthesis":
        head = next(k for k, p in enumerate(out) if p.name == "humerus_head")
        cx, cy = out[head].geom[0:2]
        extra.append(_ell("prosthesis_head", (cx + 1, cy + 1), 23, 23, 0, depth=16, material="metal",
                          cortex=0.0, tags=("hardware",)))
        extra.append(_cap("prosthesis_stem", (cx + 2, cy + 15), (x1 * 0.3 + x0 * 0.7, y0 + 0.6 * (y1 - y0)
                          if name == "humerus_shaft" else cy + 130), 6.5, 3.5, material="metal",
                          tags=("hardware",)))
    if "cast" in spec:
        half = 40 + 70 * spec["cast"]
        extra.append(_cap("cast", (F[0] - u[0] * half, F[1] - u[1] * half),
                          (F[0] + u[0] * half * 0.7, F[1] + u[1] * half * 0.7), r + 26, r + 22,
                          material="cast", cortex=0.25, tags=("cast",)))
    return out + extra


# --------------------------------------------------------------------------- rendering


def _chord_capsule(X, Y, g):
    """Chord length (same units as the grid) through a tapered capsule at each grid point."""
    x0, y0, x1, y1, r0, r1 = g
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy + 1e-12
    t = np.clip(((X - x0) * dx + (Y - y0) * dy) / L2, 0.0, 1.0)
    d2 = (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2
    r = r0 + t * (r1 - r0)
    return r, d2


def _render(prims: list[Prim], M: np.ndarray, off: np.ndarray, s: float, H: int, W: int,
            key: tuple):
    """Attenuation (sum mu*t), key-bone mask and lesion flags on an H x W grid.

    M (2x2) and off map the anatomical frame (mm) to grid pixels; s is px per mm.
    """
    A = np.zeros((H, W), np.float32)
    keym = np.zeros((H, W), bool)
    lesion = np.zeros((H, W), np.uint8)
    poly_layer = np.zeros((H, W), np.float32)
    groups: dict[str, np.ndarray] = {}
    for pr in prims:
        g = pr.geom
        if pr.shape == "poly":
            pts = (np.asarray(g) @ M.T + off).astype(np.float32)
            if (pts[:, 0].max() < 0 or pts[:, 1].max() < 0 or pts[:, 0].min() > W or pts[:, 1].min() > H):
                continue
            m = np.zeros((H, W), np.uint8)
            cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_AA, shift=4)
            poly_layer += m * (MU["cortex"] * 0.55 * pr.depth)
            if pr.name.startswith(key):
                keym |= m > 0
            continue
        if pr.shape == "capsule":
            p0 = M @ g[0:2] + off
            p1 = M @ g[2:4] + off
            r0, r1 = g[4] * s, g[5] * s
            R = max(r0, r1)
            xlo, xhi = min(p0[0], p1[0]) - R, max(p0[0], p1[0]) + R
            ylo, yhi = min(p0[1], p1[1]) - R, max(p0[1], p1[1]) + R
        else:
            c = M @ g[0:2] + off
            a, b = g[2] * s, g[3] * s
            R = max(a, b)
            xlo, xhi, ylo, yhi = c[0] - R, c[0] + R, c[1] - R, c[1] + R
        i0, i1 = max(int(ylo), 0), min(int(math.ceil(yhi)) + 1, H)
        j0, j1 = max(int(xlo), 0), min(int(math.ceil(xhi)) + 1, W)
        if i0 >= i1 or j0 >= j1:
            continue
        Y, X = np.mgrid[i0:i1, j0:j1].astype(np.float32)
        if pr.shape == "capsule":
            r, d2 = _chord_capsule(X, Y, (*p0, *p1, r0, r1))
            outer = 2 * np.sqrt(np.maximum(r * r - d2, 0)) / s  # mm
            ri = r * (1 - pr.cortex)
            inner = 2 * np.sqrt(np.maximum(ri * ri - d2, 0)) / s
        else:
            ang = g[4] + math.atan2(M[1, 0], M[0, 0])
            ca, sa = math.cos(ang), math.sin(ang)
            u = (X - c[0]) * ca + (Y - c[1]) * sa
            v = -(X - c[0]) * sa + (Y - c[1]) * ca
            q = (u / a) ** 2 + (v / b) ** 2
            outer = 2 * pr.depth * np.sqrt(np.maximum(1 - q, 0))
            k = 1 - pr.cortex
            inner = 2 * pr.depth * k * np.sqrt(np.maximum(1 - q / (k * k), 0)) if k > 0 else 0 * q
        inside = outer > 0
        if not inside.any():
            continue
        mat = pr.material
        if mat == "bone":
            val = MU["cortex"] * (outer - inner) + MU["marrow"] * inner
        elif mat == "cast":
            # plaster shell with a woven mesh texture
            tex = 1 + 0.25 * np.sin(X * 0.9) * np.sin(Y * 0.9)
            val = MU["cast"] * (outer - inner) * tex
        elif mat == "mask":
            val = None
        else:
            val = MU[mat] * outer
        if val is not None and pr.group:
            gl = groups.setdefault(pr.group, np.zeros((H, W), np.float32))
            np.maximum(gl[i0:i1, j0:j1], val, out=gl[i0:i1, j0:j1])
        elif val is not None:
            A[i0:i1, j0:j1] += val
        if pr.name.startswith(key):
            keym[i0:i1, j0:j1] |= inside
        if "fracture" in pr.tags:
            lesion[i0:i1, j0:j1] |= inside * np.uint8(LESION_FRACTURE)
        if "hardware" in pr.tags:
            lesion[i0:i1, j0:j1] |= inside * np.uint8(LESION_HARDWARE)
        if "cast" in pr.tags:
            lesion[i0:i1, j0:j1] |= inside * np.uint8(LESION_CAST)
    for gl in groups.values():
        A += gl
    if poly_layer.any():
        A += cv2.GaussianBlur(poly_layer, (0, 0), 1.2 * s)
    return A, keym, lesion


def render_view(study: Study, rng: np.random.Generator, max_side: int = 512, *, lesion: dict | None = None,
                window: tuple[float, float] | None = None):
    """One radiograph of the study: (uint8 image H x W, bones mask, lesion flags, view metadata).

    For counterfactuals (`render_study`): `lesion` replaces the study's lesion spec for the solids drawn, while
    the field of view is still placed on the study's own anatomy (a finger film centres on the proximal
    phalanx, which a fracture shortens), so both renders are pixel-aligned; `window` = (lo, hi) fixes the
    display window instead of taking it from the image's percentiles (the draws for those percentiles are
    made all the same). Neither changes how many numbers are drawn from `rng`. `meta["window"]` is the window
    used, `meta["field"]` the exposed field (bool H x W; the masks are zero outside it).
    """
    part = study.part
    # ---- projection and pose of this view
    proj = rng.choice(["AP", "LAT", "OBL"], p=[0.45, 0.35, 0.2])
    fx = {"AP": 1.0, "LAT": rng.uniform(0.35, 0.6), "OBL": rng.uniform(0.6, 0.85)}[proj]
    flex = rng.uniform(0, 15) if proj == "AP" else rng.uniform(35, 100)
    flex = flex if part in ("ELBOW", "FOREARM") else rng.uniform(0, 20)
    abduct = rng.uniform(-5, 35)
    limb = BUILDERS.get(part, build_limb)(study.anatomy, flex, abduct)
    prims = _apply_lesions(limb, study.lesion if lesion is None else lesion)
    # ---- field of view
    centre, fov = FOV[part]
    if part == "FINGER":
        centre = _finger_fov_centre(prims if lesion is None else _apply_lesions(limb, study.lesion), study.finger)
    else:  # follow the elbow flexion and the abduction of the arm
        if part in ("ELBOW", "FOREARM", "WRIST", "HAND"):
            centre = _rot(centre, (0, 312), math.radians(flex))
        if part == "FOOT":
            centre = _rot(centre, (0, 425), math.radians(flex))
        if part in ("ELBOW", "FOREARM", "WRIST", "HAND", "HUMERUS"):
            centre = _rot(centre, (2, 0), -math.radians(abduct))
    fov = fov * rng.uniform(0.8, 1.25)
    centre = np.asarray(centre, float) + rng.normal(0, 0.09 * fov, 2)
    # ---- image size: MURA's long side is mostly 512 px; aspect varies, mostly portrait
    Ls = max_side if rng.random() < 0.85 else int(rng.uniform(0.62, 1.0) * max_side)
    Ss = int(Ls * rng.uniform(0.6, 1.0))
    H, W = (Ls, Ss) if rng.random() < 0.75 else (Ss, Ls)
    # ---- mapping anatomy (mm) -> half-resolution render grid
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    s = (Ls / 2) / fov * study.anatomy.size  # px per (anatomical) mm on the render grid
    big_rot = rng.random() < 0.18
    theta = rng.uniform(-180, 180) if big_rot else rng.normal(0, 10)
    th = math.radians(theta)
    Rm = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    Fm = np.diag([(-1.0 if study.mirror else 1.0) * fx, 1.0])
    M = s * Rm @ Fm
    off = np.array([w2 / 2, h2 / 2]) - M @ centre
    key = KEY_BONES[part] if part != "FINGER" else tuple(f"{k}{study.finger}" for k in ("pp", "mp", "dp"))
    A, keym, lesion = _render(prims, M, off, s, h2, w2, key)
    # ---- up to full resolution
    A = cv2.resize(A, (W, H), interpolation=cv2.INTER_LINEAR)
    keym = cv2.resize(keym.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
    lesion = cv2.resize(lesion, (W, H), interpolation=cv2.INTER_NEAREST)
    # ---- acquisition: collimation, lead marker, heel effect, exposure, noise
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    field_mask = np.ones((H, W), bool)
    colli = rng.random() < 0.55
    if colli:
        mx, my = rng.uniform(0, 0.16, 2) * np.array([W, H])
        mx2, my2 = rng.uniform(0, 0.16, 2) * np.array([W, H])
        tilt = math.radians(rng.normal(0, 4))
        u = (xx - W / 2) * math.cos(tilt) + (yy - H / 2) * math.sin(tilt)
        v = -(xx - W / 2) * math.sin(tilt) + (yy - H / 2) * math.cos(tilt)
        field_mask = (u > -W / 2 + mx) & (u < W / 2 - mx2) & (v > -H / 2 + my) & (v < H / 2 - my2)
    marker = rng.random() < 0.8
    if marker:
        letter = "R" if (rng.random() < 0.5) else "L"
        fs = rng.uniform(1.0, 1.8) * Ls / 512
        (tw, tht), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_SIMPLEX, fs, 3)
        org = (int(rng.uniform(0.05, 0.95) * (W - tw)), int(rng.uniform(0.05, 0.95) * (H - tht) + tht))
        mk = np.zeros((H, W), np.uint8)
        cv2.putText(mk, letter, org, cv2.FONT_HERSHEY_SIMPLEX, fs, 1, max(2, int(3 * fs)), cv2.LINE_AA)
        A += mk.astype(np.float32) * 4.0
    heel = 1 + rng.uniform(-0.18, 0.18) * ((yy / H - 0.5) if rng.random() < 0.5 else (xx / W - 0.5))
    n0 = rng.uniform(300, 4000)  # photons per pixel: exposure (and so noise) varies
    A_tot = np.where(field_mask, A, A + 8.0)
    I = n0 * heel * np.exp(-A_tot)
    I = I + np.sqrt(I) * rng.standard_normal((H, W)).astype(np.float32)
    D = -np.log(np.maximum(I, 0.5) / n0)
    # ---- processing: window, gamma, detector blur, burned-in text
    sample = D[field_mask][:: 7]
    lo, hi = np.percentile(sample, [rng.uniform(0.2, 3), rng.uniform(99.0, 99.9)])
    if window is not None:  # float64 scalars as np.percentile gives, so the arithmetic keeps its dtypes
        lo, hi = np.asarray(window, np.float64)
    img = np.clip((D - lo) / max(hi - lo, 1e-3), 0, 1) ** rng.uniform(0.7, 1.4)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.5, 1.3))
    if colli and rng.random() < 0.35:  # some systems blank the collimated area black
        img[~field_mask] = rng.uniform(0, 0.08)
    img = (img * 255).round().astype(np.uint8)
    if rng.random() < 0.5:
        txt = str(rng.choice(["AP", "LAT", "OBL", "PA", "ER", "IR", "STANDING", "SUPINE"]))
        if rng.random() < 0.5:
            txt += f" {rng.integers(1, 99):02d}"
        fs = rng.uniform(0.5, 0.9) * Ls / 512
        corner = rng.integers(4)
        x = 8 if corner % 2 == 0 else W - 8 - cv2.getTextSize(txt, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)[0][0]
        y = 22 if corner < 2 else H - 10
        cv2.putText(img, txt, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, fs, int(rng.integers(200, 256)), 1,
                    cv2.LINE_AA)
    keym = keym * field_mask.astype(np.uint8) * 255
    lesion = lesion * field_mask.astype(np.uint8)
    meta = dict(projection=str(proj), rotation=float(theta), fov_mm=float(fov), collimated=bool(colli),
                marker=bool(marker), flexion=float(flex), window=(float(lo), float(hi)), field=field_mask)
    return img, keym, lesion, meta


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
                             bool(rng.random() < 0.5)))
    return studies


def plan_studies(train_patients: int, valid_patients: int, seed: int) -> list[Study]:
    """Patients, their studies and labels; class shares and abnormal rates follow MURA."""
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
                st.lesion = _lesion_spec(rng, part, bool(label), finger)
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


# --------------------------------------------------------------------------- re-rendering (counterfactuals)


class RenderedView(NamedTuple):
    """One view as `render_study` gives it: the gray image (uint8 H x W; the file holds it as three equal
    channels where `meta["rgb"]`), the bones mask (0/255), the lesion flags (bits 1 fracture, 2 hardware,
    4 cast) and render_view's metadata (projection, rotation, ..., window, rgb)."""

    image: np.ndarray
    bones: np.ndarray
    lesion: np.ndarray
    meta: dict


def render_study(study: Study, index: int, seed: int, max_side: int = 512, lesion: dict | None = None,
                 windows: list | None = None) -> list[RenderedView]:
    """Every view of study number `index` (its position in the plan) as `generate(seed=seed, max_side=...)`
    wrote it: the same random stream (SeedSequence(seed, spawn_key=(1, index))), consumed in the same order
    (each view, then the RGB coin), so without `lesion` the images are the files' pixels, byte for byte.

    `lesion` renders the same study with another lesion spec (e.g. without its cast): every random draw is
    the same (no draw depends on the spec) and the field of view stays on the study's own anatomy, so only
    the solids that differ change the attenuation. The display window, though, is taken from each image's
    own percentiles, and metal or a cast moves them; pass the original views' windows
    (`[v.meta["window"] for v in original]`) to keep it, so that pixels away from the removed object keep
    their values (see utils.counterfactual)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    if windows is not None and len(windows) != study.n_views:
        raise ValueError(f"windows: {len(windows)} given for a study of {study.n_views} view(s)")
    views = []
    for v in range(study.n_views):
        img, bones, les, meta = render_view(study, rng, max_side, lesion=lesion,
                                            window=None if windows is None else windows[v])
        meta["rgb"] = bool(rng.random() < 0.08)  # the coin _write_study flips after each view
        views.append(RenderedView(img, bones, les, meta))
    return views


def as_written(view: RenderedView) -> np.ndarray:
    """The array `generate` passed to cv2.imwrite for this view (H x W, or H x W x 3 where stored as RGB)."""
    return np.repeat(view.image[..., None], 3, axis=2) if view.meta.get("rgb") else view.image


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
                                "utils.phantom (a real MURA tree has no generator plan)")
    meta = json.loads(path.read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root} was written by phantom generator {meta.get('generator_version')}, this is "
                         f"{GENERATOR_VERSION}: regenerate it (python -m utils.phantom) to re-render its studies")
    seed, max_side = int(meta["seed"]), int(meta["max_side"])
    if list(meta.get("parts", PARTS)) == list(OOD_PARTS):
        studies = plan_ood_studies(meta["valid_patients"], seed)
    else:
        studies = plan_studies(meta["train_patients"], meta["valid_patients"], seed)
    stored = meta.get("studies")
    if stored is not None:
        mine = json.loads(json.dumps([dict(folder=st.folder, anatomy=asdict(st.anatomy), mirror=st.mirror,
                                           finger=st.finger, lesion=st.lesion) for st in studies]))
        if mine != stored:
            bad = next((i for i, (a, b) in enumerate(zip(mine, stored)) if a != b), min(len(mine), len(stored)))
            raise ValueError(f"{path}: the re-planned studies differ from the stored ones (first at study {bad}); "
                             "the tree was not written by this generator with these settings")
    return studies, seed, max_side


def settings_dict(train_patients: int, valid_patients: int, seed: int, max_side: int = 512, ood: bool = False
                  ) -> dict:
    return dict(generator_version=GENERATOR_VERSION, train_patients=train_patients,
                valid_patients=valid_patients, seed=seed, max_side=max_side,
                parts=list(OOD_PARTS) if ood else list(PARTS))


def generate(out: str | os.PathLike, train_patients: int = 1100, valid_patients: int = 260, seed: int = 0,
             max_side: int = 512, workers: int | None = None, progress: bool = True, ood: bool = False) -> Path:
    """Write a phantom MURA-v1.1 tree under `out`; returns the MURA-v1.1 folder.

    The tree is written into a temporary folder and renamed into place when
    complete, so an interrupted run never leaves a half tree that looks whole.
    """
    from tqdm import tqdm

    out = Path(out)
    final = out / "MURA-v1.1"
    tmp = out / "MURA-v1.1.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    studies = plan_ood_studies(valid_patients, seed) if ood else plan_studies(train_patients, valid_patients, seed)
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
    meta = settings_dict(train_patients, valid_patients, seed, max_side, ood)
    meta.update(n_studies=len(studies), n_images=sum(len(r) for r in results),
                seconds=round(time.time() - t0, 1), lesion_flags=dict(fracture=LESION_FRACTURE,
                hardware=LESION_HARDWARE, cast=LESION_CAST),
                studies=[dict(folder=st.folder, anatomy=asdict(st.anatomy), mirror=st.mirror,
                              finger=st.finger, lesion=st.lesion) for st in studies])
    (tmp / "phantom.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def ensure(out: str | os.PathLike, train_patients: int, valid_patients: int, seed: int = 0,
           max_side: int = 512, ood: bool = False, **kw) -> Path:
    """The phantom under `out`, generated only if missing or made with other settings.

    `ood=True`: `valid_patients` normal studies of knees, feet and chests (not MURA study types), for testing
    how the models meet unfamiliar inputs; `train_patients` is ignored."""
    final = Path(out) / "MURA-v1.1"
    train_patients = 0 if ood else train_patients
    want = settings_dict(train_patients, valid_patients, seed, max_side, ood)
    meta_path = final / "phantom.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            return final
    return generate(out, train_patients, valid_patients, seed, max_side, ood=ood, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.phantom", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write MURA-v1.1/ into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-patients", type=int, default=1100)
    ap.add_argument("--valid-patients", type=int, default=260)
    ap.add_argument("--max-side", type=int, default=512, help="long side of the images in px")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--ood", action="store_true", help="knees, feet and chests (not MURA types), valid split only")
    a = ap.parse_args(argv)
    t0 = time.time()
    root = generate(a.out, 0 if a.ood else a.train_patients, a.valid_patients, a.seed, a.max_side, a.workers,
                    ood=a.ood)
    meta = json.loads((root / "phantom.json").read_text())
    print(f"wrote {meta['n_images']} images in {meta['n_studies']} studies to {root} "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
