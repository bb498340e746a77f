"""The phantom's anatomy: materials, the limb's solids and their poses, the study types and what a study is
(the module docstring of `utils.data.phantom` says where every number comes from)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from utils.data.images import LESION_BITS

GENERATOR_VERSION = "3.1"
LESION_TAGS = dict(LESION_BITS)  # a solid tagged with a finding sets its bit in the lesion mask

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
# (cortex 0.085/mm is cortical bone at ~50 keV: NIST mu/rho 0.42 cm2/g x 1.92 g/cm3 = 0.081; soft tissue ~ water
# 0.023). Casts (module docstring, "Casts"): set plaster of Paris 0.050, fibreglass 0.035; "cast" is generator 2.0's.
MU = {"soft": 0.020, "marrow": 0.028, "cortex": 0.085, "metal": 0.60, "cast": 0.040, "air": -0.016,
      "plaster": 0.050, "fibreglass": 0.035, "steel": 1.55, "titanium": 0.53, "cocr": 1.75}
# Implant alloys (generator 3.1), mu = mu/rho x density at ~50 keV, the energy of the other entries, mu/rho from
# NIST's XCOM / Hubbell-Seltzer tables (Fe 1.96, Ti 1.21, Co ~2.1 cm2/g, rounded): 316L stainless steel (8.0 g/cm3)
# 1.55/mm, Ti-6Al-4V (4.43) 0.53/mm, cobalt-chromium (8.3) 1.75/mm. Generator 3.0 drew every implant at "metal"
# (0.60/mm, titanium), so a 3 mm steel plate transmitted 16 % of the beam instead of < 1 %: through bone, it
# came out about as bright as two overlapping bones, where on a film a steel implant is the whitest thing there.
METALS = ("metal", "steel", "titanium", "cocr")  # the materials of implants ("metal": generator 3.0's single one)
ALLOY_MIX = {
    "plate": dict(steel=0.5, titanium=0.5), "screws": dict(steel=0.5, titanium=0.5),
    "nail": dict(steel=0.3, titanium=0.7), "kwires": dict(steel=1.0), "tension_band": dict(steel=1.0),
    "radial_head": dict(cocr=1.0), "arthroplasty": dict(cocr=1.0),
}
"""The alloy of each kind of implant (a study's implants share one): K-wires and cerclage wire are stainless steel
(AO Surgery Reference); heads of shoulder and radial head prostheses cobalt-chromium (stems, often titanium, are
drawn in the head's alloy); plates, screws and nails either (ASSUMED shares: no published split was found;
titanium dominates locking plates and nails in recent series, steel older ones). A scaphoid headless screw is
titanium. Drawn from the study's own stream, spawn key (7, study), so no earlier draw moves."""


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


def cap_solid(name, p0, p1, r0, r1=None, material="bone", cortex=0.3, tags=()):
    return Prim(name, "capsule", (*p0, *p1, r0, r0 if r1 is None else r1), material, 0.0, cortex, tags)


def ellipsoid_solid(name, c, a, b, angle=0.0, depth=None, material="bone", cortex=0.25, tags=()):
    return Prim(name, "ellipse", (*c, a, b, angle), material, depth if depth else min(a, b), cortex, tags)


def rotate_point(p, c, ang):
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
    P.append(ellipsoid_solid("torso", (-170, 140), 175, 300, 0, depth=110, material="soft"))
    P.append(ellipsoid_solid("lung", (-175, 150), 115, 210, 0.1, depth=75, material="air"))
    for i in range(7):
        y0 = -55 + 34 * i
        pts = [(-300 + 25 * k, y0 - 0.0022 * (-300 + 25 * k + 60) ** 2 + 45) for k in range(11)]
        for k in range(len(pts) - 1):
            P.append(replace(cap_solid(f"rib{i}_{k}", pts[k], pts[k + 1], 5.0 * b, cortex=0.45), group=f"rib{i}"))
    # ---- shoulder girdle
    P.append(Prim("scapula", "poly", ((-32, -22), (-38, 30), (-92, 160), (-150, 15), (-142, -42), (-62, -40)),
                  "bone", 5.0))
    P.append(ellipsoid_solid("glenoid", (-31, 0), 8 * b, 21 * b, 0.05, depth=12))
    P.append(cap_solid("acromion", (-50, -48), (-2, -42), 7 * b, 6 * b))
    P.append(cap_solid("coracoid", (-52, -30), (-24, -18), 5.5 * b, 4.5 * b))
    clav = [(-6, -52), (-45, -62), (-95, -58), (-150, -72)]
    for k in range(3):
        P.append(replace(cap_solid(f"clavicle{k}", clav[k], clav[k + 1], 7.5 * b, 7 * b, cortex=0.35),
                         group="clavicle"))
    P.append(cap_solid("soft_shoulder", (-40, -30), (10, 60), 62 * st, 50 * st, material="soft"))

    # ---- arm (everything distal rotates about the humeral head by abduct_deg)
    arm: list[Prim] = []
    arm.append(ellipsoid_solid("humerus_head", (2, 0), 24 * b, 25 * b, 0, depth=22, cortex=0.12))
    arm.append(ellipsoid_solid("humerus_tuberosity", (20, -6), 9 * b, 13 * b, 0, depth=10, cortex=0.15))
    arm.append(cap_solid("humerus_neck", (6, 14), (3, 62), 16 * b, 12 * b))
    arm.append(cap_solid("humerus_shaft", (3, 62), (0, 282), 11.5 * b, 11 * b, cortex=0.35))
    arm.append(ellipsoid_solid("humerus_condyles", (0, 298), 30 * b, 11 * b, 0, depth=12))
    arm.append(ellipsoid_solid("epicondyle_med", (31 * b, 292), 7 * b, 7 * b, 0, depth=6))
    arm.append(ellipsoid_solid("epicondyle_lat", (-29 * b, 294), 6 * b, 6 * b, 0, depth=6))
    arm.append(ellipsoid_solid("trochlea", (9, 306), 11 * b, 8 * b, 0, depth=10))
    arm.append(ellipsoid_solid("capitellum", (-11, 305), 10 * b, 8 * b, 0, depth=9))
    arm.append(ellipsoid_solid("olecranon_fossa", (0, 288), 9, 7, 0, depth=6, material="air"))
    arm.append(cap_solid("soft_arm", (0, 20), (0, 300), 42 * st, 38 * st, material="soft"))

    # ---- forearm and hand (rotate about the elbow by flex_deg)
    E = (0.0, 312.0)
    fa: list[Prim] = []
    fa.append(ellipsoid_solid("olecranon", (9, 300), 10 * b, 17 * b, 0, depth=10))
    fa.append(ellipsoid_solid("radius_head", (-12, 321), 11 * b, 5 * b, 0, depth=10))
    fa.append(cap_solid("radius_neck", (-12, 326), (-14, 362), 6 * b, 6.5 * b))
    fa.append(cap_solid("radius_shaft", (-14, 362), (-21, 552), 6.5 * b, 8.5 * b, cortex=0.35))
    fa.append(ellipsoid_solid("radius_distal", (-17, 561), 17 * b, 9 * b, 0.05, depth=9))
    fa.append(cap_solid("radius_styloid", (-26, 562), (-33, 576), 5 * b, 3 * b))
    fa.append(cap_solid("ulna_prox", (9, 315), (10, 362), 9 * b, 7.5 * b))
    fa.append(cap_solid("ulna_shaft", (10, 362), (15, 552), 7.5 * b, 5.5 * b, cortex=0.35))
    fa.append(ellipsoid_solid("ulna_head", (15, 561), 8 * b, 7 * b, 0, depth=6))
    fa.append(cap_solid("soft_forearm", (0, 318), (0, 570), 36 * st, 27 * st, material="soft"))
    # carpals: proximal and distal rows
    carpals = {
        "scaphoid": ((-19, 581), 10, 6, -0.5), "lunate": ((-4, 583), 7, 6, 0), "triquetrum": ((9, 584), 6, 5, 0.3),
        "pisiform": ((15, 589), 4, 4, 0), "trapezium": ((-23, 597), 7, 6, 0.4), "trapezoid": ((-12, 598), 5, 6, 0),
        "capitate": ((-1, 597), 6, 9, 0), "hamate": ((11, 596), 7, 7.5, 0),
    }
    for nm, (c, a_, b_, ang) in carpals.items():
        fa.append(ellipsoid_solid(f"carpal_{nm}", c, a_ * b, b_ * b, ang, depth=min(a_, b_) * 0.8 * b, cortex=0.2))
    # metacarpals and phalanges; finger 1 = thumb, 2..5 index..little
    bases = {1: (-25, 604), 2: (-14, 607), 3: (-3, 608), 4: (7, 607), 5: (16, 605)}
    mc_len = {1: 44, 2: 66, 3: 63, 4: 56, 5: 52}
    ang0 = {1: -38, 2: -7, 3: -1, 4: 5, 5: 11}
    ph_len = {1: (31, 0, 23), 2: (40, 24, 17), 3: (44, 28, 18), 4: (41, 26, 18), 5: (34, 19, 16)}
    fa.append(ellipsoid_solid("soft_palm", (-1, 640), 36 * st, 42, 0, depth=30, material="soft"))
    for f in range(1, 6):
        ang = math.radians(ang0[f] * an.spread)
        d = (math.sin(ang), math.cos(ang))
        p0 = bases[f]
        p1 = (p0[0] + d[0] * mc_len[f], p0[1] + d[1] * mc_len[f])
        r = (5.8 if f == 1 else 5.2 - 0.2 * f) * b
        fa.append(cap_solid(f"mc{f}", p0, p1, r, r * 0.85, cortex=0.35))
        fa.append(ellipsoid_solid(f"mchead{f}", (p1[0] + d[0] * 2, p1[1] + d[1] * 2), r * 1.15, r * 1.0,
                       ang, depth=r * 0.9))
        p = (p1[0] + d[0] * 6.5, p1[1] + d[1] * 6.5)
        ends = []
        for k, (lab, L) in enumerate(zip(("pp", "mp", "dp"), ph_len[f])):
            if L == 0:
                continue
            q = (p[0] + d[0] * L, p[1] + d[1] * L)
            rr = r * (0.85 - 0.13 * k)
            fa.append(cap_solid(f"{lab}{f}", p, q, rr, rr * (0.7 if lab == "dp" else 0.85), cortex=0.35))
            ends.append(q)
            p = (q[0] + d[0] * 2.8, q[1] + d[1] * 2.8)
        fa.append(cap_solid(f"soft_finger{f}", p0 if f == 1 else p1, ends[-1], 9.5 * st, 8 * st, material="soft"))

    fl = math.radians(flex_deg)
    for pr in fa:
        arm.append(transform_prim(pr, lambda p: rotate_point(p, E, fl), 1.0, fl))
    ab = math.radians(abduct_deg)
    for pr in arm:
        P.append(transform_prim(pr, lambda p: rotate_point(p, (2, 0), -ab), 1.0, -ab))
    return P


def build_leg(an: Anatomy, flex_deg: float = 0.0, abduct_deg: float = 0.0) -> list[Prim]:
    """A lower limb (knee and foot films; not a MURA study type): femur, patella, tibia, fibula, ankle, foot."""
    b, st = an.bone, an.soft
    P = [cap_solid("soft_thigh", (0, 0), (0, 420), 70 * st, 55 * st, material="soft"),
         cap_solid("femur_shaft", (0, 0), (0, 380), 14 * b, 13 * b, cortex=0.35),
         ellipsoid_solid("femur_condyles", (0, 405), 42 * b, 20 * b, 0, depth=22),
         ellipsoid_solid("patella", (0, 385), 21 * b, 25 * b, 0, depth=10),
         ellipsoid_solid("tibia_plateau", (-2, 440), 40 * b, 11 * b, 0, depth=20)]
    K = (0.0, 425.0)
    low = [cap_solid("soft_leg", (0, 430), (0, 800), 50 * st, 30 * st, material="soft"),
           cap_solid("tibia_shaft", (-4, 448), (-6, 790), 14 * b, 10 * b, cortex=0.35),
           ellipsoid_solid("tibia_head", (-2, 452), 30 * b, 14 * b, 0, depth=16),
           cap_solid("fibula", (33, 455), (30, 800), 6 * b, 5 * b, cortex=0.35),
           ellipsoid_solid("fibula_head", (33, 452), 9 * b, 8 * b, 0, depth=7),
           ellipsoid_solid("talus", (0, 820), 22 * b, 14 * b, 0, depth=14),
           ellipsoid_solid("calcaneus", (0, 838), 24 * b, 18 * b, 0, depth=16)]
    tarsals = {"navicular": ((-8, 852), 14, 7), "cuboid": ((16, 856), 10, 9), "cuneiform1": ((-16, 868), 7, 9),
               "cuneiform2": ((-4, 869), 6, 8), "cuneiform3": ((7, 869), 6, 8)}
    for nm, (c, a_, b_) in tarsals.items():
        low.append(ellipsoid_solid(f"tarsal_{nm}", c, a_ * b, b_ * b, 0, depth=min(a_, b_) * 0.9 * b, cortex=0.2))
    low.append(ellipsoid_solid("soft_foot", (0, 900), 45 * st, 70, 0, depth=30, material="soft"))
    for t, x0 in enumerate((-18, -7, 3, 13, 22), 1):
        ang = math.radians((x0 / 22) * 8)
        d = (math.sin(ang), math.cos(ang))
        p0 = (x0, 878)
        L = 70 if t > 1 else 62
        p1 = (p0[0] + d[0] * L, p0[1] + d[1] * L)
        r = (7.5 if t == 1 else 4.8) * b
        low.append(cap_solid(f"metatarsal{t}", p0, p1, r, r * 0.8, cortex=0.35))
        q = (p1[0] + d[0] * 5, p1[1] + d[1] * 5)
        for k in range(2 if t == 1 else 3):
            L2 = 22 if k == 0 else 10
            q2 = (q[0] + d[0] * L2, q[1] + d[1] * L2)
            low.append(cap_solid(f"toe{t}_{k}", q, q2, r * (0.8 - 0.12 * k), r * (0.7 - 0.12 * k), cortex=0.35))
            q = (q2[0] + d[0] * 2.5, q2[1] + d[1] * 2.5)
    fl = math.radians(flex_deg)
    return P + [transform_prim(pr, lambda p: rotate_point(p, K, fl), 1.0, fl) for pr in low]


def build_chest(an: Anatomy, flex_deg: float = 0.0, abduct_deg: float = 0.0) -> list[Prim]:
    """A chest film (not a MURA study type): spine, both rib cages, lungs, heart, clavicles."""
    b, st = an.bone, an.soft
    P = [ellipsoid_solid("torso", (0, 40), 190 * st, 260, 0, depth=110, material="soft"),
         ellipsoid_solid("lung_r", (-85, 20), 75, 150, 0.05, depth=70, material="air"),
         ellipsoid_solid("lung_l", (85, 20), 70, 145, -0.05, depth=70, material="air"),
         ellipsoid_solid("heart", (25, 90), 70, 60, 0.3, depth=50, material="soft")]
    for i in range(14):
        P.append(ellipsoid_solid(f"vertebra{i}", (0, -160 + 25 * i), 16 * b, 10 * b, 0, depth=14))
    for side in (-1, 1):
        for i in range(9):
            y0 = -120 + 30 * i
            pts = [(side * (12 + 16 * k), y0 + 0.0045 * (16 * k) ** 2 - 0.012 * (16 * k) ** 1.5 * 0)
                   for k in range(11)]
            for k in range(len(pts) - 1):
                P.append(replace(cap_solid(f"rib{side}_{i}_{k}", pts[k], pts[k + 1], 5.0 * b, cortex=0.45),
                                 group=f"rib{side}_{i}"))
        clav = [(side * 18, -150), (side * 70, -160), (side * 130, -150)]
        for k in range(2):
            P.append(replace(cap_solid(f"clavicle{side}_{k}", clav[k], clav[k + 1], 7 * b, cortex=0.35),
                             group=f"clavicle{side}"))
    return P


def transform_prim(pr: Prim, f, scale: float, dangle: float) -> Prim:
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
    true_label: int | None = None  # the finding's truth; `label` (the folder's, the CSV's) is the report's

    @property
    def folder(self) -> str:
        return (f"{self.split}/XR_{self.part}/patient{self.patient:05d}/"
                f"study{self.study}_{'positive' if self.label else 'negative'}")


def finger_fov_centre(prims: list[Prim], f: int):
    pp = next(p for p in prims if p.name == f"pp{f}").geom
    return (pp[2], pp[3])  # distal end of the proximal phalanx
