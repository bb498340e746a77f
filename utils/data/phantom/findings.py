"""What an abnormal study shows and how it is built: the mix of findings per body part (fractures, hardware,
casts, degenerative change), their sizes from the sources in the package docstring, and their solids."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import numpy as np

from utils.data.phantom.anatomy import (
    ALLOY_MIX,
    CASTABLE,
    FRACTURE_SITES,
    Prim,
    cap_solid,
    ellipsoid_solid,
    rotate_point,
    transform_prim,
)

# ---- what an abnormal study shows (see the module docstring for the sources and what is assumed)
# One presentation per abnormal study, shares per study type:
#   fracture      an acute fracture, not fixed (some in a cast: CAST_RATE)
#   fixed         a fracture with its fixation hardware (reduced: little residual displacement)
#   hardware      hardware after healing, or an arthroplasty; no fracture line
#   degenerative  degenerative joint change alone (narrowing, sclerosis, osteophytes)
ABNORMAL_MIX = {
    "SHOULDER": dict(fracture=0.25, fixed=0.10, hardware=0.25, degenerative=0.40),
    "HUMERUS": dict(fracture=0.45, fixed=0.30, hardware=0.20, degenerative=0.05),
    "ELBOW": dict(fracture=0.40, fixed=0.20, hardware=0.15, degenerative=0.25),
    "FOREARM": dict(fracture=0.45, fixed=0.30, hardware=0.20, degenerative=0.05),
    "WRIST": dict(fracture=0.45, fixed=0.20, hardware=0.10, degenerative=0.25),
    "HAND": dict(fracture=0.40, fixed=0.10, hardware=0.10, degenerative=0.40),
    "FINGER": dict(fracture=0.50, fixed=0.10, hardware=0.05, degenerative=0.35),
}
# acute fractures: non- or minimally displaced ("simple"), displaced, comminuted
FRACTURE_PATTERN = {
    "SHOULDER": dict(simple=0.70, displaced=0.20, comminuted=0.10),  # Neer: ~75-80 % one-part
    "WRIST": dict(simple=0.35, displaced=0.45, comminuted=0.20),  # Brogren 2007: ~2/3 displaced
    "default": dict(simple=0.45, displaced=0.40, comminuted=0.15),
}
# fixation (presentation "fixed") and retained implants (presentation "hardware") per study type
HARDWARE_MIX = {
    "SHOULDER": (dict(plate=0.60, nail=0.15, screws=0.10, arthroplasty=0.15),
                 dict(arthroplasty=0.70, plate=0.20, screws=0.10)),
    "HUMERUS": (dict(plate=0.50, nail=0.50), dict(plate=0.40, nail=0.40, arthroplasty=0.20)),
    "ELBOW": (dict(plate=0.30, tension_band=0.25, kwires=0.25, screws=0.10, radial_head=0.10),
              dict(plate=0.30, tension_band=0.20, radial_head=0.30, screws=0.20)),
    "FOREARM": (dict(plate=0.80, nail=0.20), dict(plate=0.80, nail=0.20)),
    "WRIST": (dict(plate=0.55, kwires=0.35, screws=0.10), dict(plate=0.70, screws=0.30)),
    "HAND": (dict(kwires=0.50, plate=0.30, screws=0.20), dict(plate=0.50, screws=0.30, kwires=0.20)),
    "FINGER": (dict(kwires=0.70, screws=0.20, plate=0.10), dict(screws=0.50, plate=0.30, kwires=0.20)),
}
# a cast (or splint) on ... (casts only on CASTABLE types); normal studies: NORMAL_CAST_RATE
CAST_RATE = dict(fracture=0.50, fixed_kwires=0.60, fixed=0.30, hardware=0.0, degenerative=0.0)
NORMAL_CAST_RATE = 0.04
# cast material (module docstring, "Casts"): share of plaster of Paris (ASSUMED), shell thickness in mm
PLASTER_SHARE = 0.5
CAST_SHELL_MM = {"plaster": (5.0, 10.0), "fibreglass": (3.0, 5.0)}

# ---- implant sizes, mm (ranges drawn uniformly; sources in the module docstring)
PLATES = {  # width, thickness, hole spacing, holes, screw diameter, screw head diameter
    "large": dict(width=(12.0, 13.5), thick=(3.3, 4.5), pitch=(16.0, 16.0), holes=(8, 12), screw=4.5, head=8.0),
    "small": dict(width=(10.0, 11.0), thick=(2.8, 3.3), pitch=(12.0, 13.0), holes=(6, 10), screw=3.5, head=6.0),
    "radius": dict(width=(10.0, 11.0), thick=(2.0, 2.5), pitch=(8.0, 9.0), holes=(4, 6), screw=2.4, head=4.5,
                   flare=(22.0, 28.0)),  # volar distal radius plate: a shaft and a head 22-28 mm wide
    "mini": dict(width=(5.0, 7.0), thick=(1.0, 1.5), pitch=(5.5, 7.0), holes=(4, 6), screw=2.0, head=3.5),
}
PLATE_SIZE = {"SHOULDER": "small", "HUMERUS": "large", "ELBOW": "small", "FOREARM": "small", "WRIST": "radius",
              "HAND": "mini", "FINGER": "mini"}
NAIL_MM = {"SHOULDER": (7.0, 9.0), "HUMERUS": (7.0, 9.0), "FOREARM": (2.0, 3.0)}  # humeral nails; elastic nails
LOCKING_SCREW_MM = 4.5
KWIRE_MM = {"FINGER": (1.1, 1.25), "HAND": (1.1, 1.6), "default": (1.6, 2.0)}  # 0.045 in, 0.062 in, 2.0 mm
CERCLAGE_MM = (1.0, 1.25)
LAG_SCREW_MM = {"SHOULDER": 4.0, "HUMERUS": 4.5, "ELBOW": 3.5, "FOREARM": 3.5, "WRIST": 3.0, "HAND": 2.0,
                "FINGER": 1.5}
SHOULDER_HEAD_MM = (40.0, 56.0)  # anatomic humeral head, diameter
GLENOSPHERE_MM = (36.0, 42.0)  # reverse shoulder, diameter
RADIAL_HEAD_MM = dict(diameter=(20.0, 26.0), height=(10.0, 12.0), stem=(4.5, 7.0), stem_length=(25.0, 35.0))
# ---- fracture geometry, mm and degrees ("shift" is a multiple of the bone's radius: 2.0 = one shaft width)
FRACTURE_GEOM = {
    "simple": dict(gap=(0.8, 2.0), shift=(0.0, 0.35), angle=(0.0, 9.0)),
    "displaced": dict(gap=(-8.0, 3.0), shift=(0.4, 2.0), angle=(5.0, 25.0)),
    "comminuted": dict(gap=(-3.0, 3.0), shift=(0.2, 1.5), angle=(3.0, 20.0), zone=(1.0, 3.0), fragments=(2, 4)),
    "reduced": dict(gap=(0.5, 1.5), shift=(0.0, 0.2), angle=(0.0, 4.0)),
}
# ---- degenerative joint change: the joints of each study type, (proximal solid, distal solid, weight);
# "{f}" is the study's finger
DJD_JOINTS = {
    "SHOULDER": (("humerus_head", "glenoid", 0.7), ("clavicle0", "acromion", 0.3)),
    "HUMERUS": (("humerus_head", "glenoid", 0.6), ("trochlea", "olecranon", 0.2), ("capitellum", "radius_head", 0.2)),
    "ELBOW": (("trochlea", "olecranon", 0.5), ("capitellum", "radius_head", 0.5)),
    "FOREARM": (("capitellum", "radius_head", 0.4), ("radius_distal", "carpal_scaphoid", 0.3),
                ("radius_distal", "carpal_lunate", 0.3)),
    "WRIST": (("carpal_trapezium", "mc1", 0.40), ("radius_distal", "carpal_scaphoid", 0.20),
              ("radius_distal", "carpal_lunate", 0.15), ("carpal_scaphoid", "carpal_trapezium", 0.25)),
    "HAND": (("carpal_trapezium", "mc1", 0.20), ("mp2", "dp2", 0.14), ("mp3", "dp3", 0.12), ("mp4", "dp4", 0.06),
             ("mp5", "dp5", 0.06), ("pp2", "mp2", 0.10), ("pp3", "mp3", 0.10), ("pp4", "mp4", 0.05),
             ("pp5", "mp5", 0.05), ("mchead2", "pp2", 0.06), ("mchead3", "pp3", 0.06)),
    "FINGER": (("mp{f}", "dp{f}", 0.6), ("pp{f}", "mp{f}", 0.3), ("mchead{f}", "pp{f}", 0.1)),
}
DJD_JOINTS_PER_STUDY = {"SHOULDER": (1, 2), "HAND": (1, 4), "FINGER": (1, 2), "default": (1, 2)}
DJD_GRADE = (0.45, 0.30, 0.25)  # Samilson-Prieto grade I, II, III
DJD_OSTEOPHYTE_MM = ((1.0, 3.0), (3.0, 7.0), (7.0, 10.0))  # per grade, at a large joint (scaled by size below)
DJD_NARROWING = ((0.2, 0.4), (0.4, 0.7), (0.7, 0.95))  # share of the joint space lost, per grade
DJD_SCLEROSIS_MM = ((1.0, 2.0), (2.0, 3.0), (3.0, 4.0))  # band of dense subchondral bone, per grade


# --------------------------------------------------------------------------- drawing the abnormality


def _pick(rng: np.random.Generator, table: dict) -> str:
    keys = list(table)
    p = np.array([table[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _uni(rng: np.random.Generator, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _fracture_spec(rng: np.random.Generator, pattern: str, comminution: bool = False) -> dict:
    """A fracture's geometry: `pattern` one of FRACTURE_GEOM; `comminution` adds the fragments of a reduced
    comminuted fracture (smaller offsets) to a 'reduced' one."""
    g = FRACTURE_GEOM[pattern]
    fr = dict(pattern=pattern, gap=_uni(rng, g["gap"]), shift=_sign(rng) * _uni(rng, g["shift"]),
              angle=_sign(rng) * _uni(rng, g["angle"]))
    if pattern == "comminuted" or comminution:
        c = FRACTURE_GEOM["comminuted"]
        fr["zone"] = _uni(rng, c["zone"]) * (0.6 if comminution else 1.0)  # comminution zone, in bone radii
        n = int(rng.integers(c["fragments"][0], c["fragments"][1] + 1))
        off = (0.1, 0.5) if comminution else (0.3, 1.3)
        fr["fragments"] = [dict(pos=_uni(rng, (0.1, 0.9)), length=_uni(rng, (0.5, 1.0)),
                                radius=_uni(rng, (0.35, 0.6)), offset=_sign(rng) * _uni(rng, off),
                                angle=_sign(rng) * _uni(rng, (0.0, 35.0))) for _ in range(n)]
    return fr


def hardware_spec(rng: np.random.Generator, part: str, kind: str, site: tuple) -> tuple[dict, tuple]:
    """An implant of `kind` at real sizes (PLATES, NAIL_MM, ...); returns (spec, site), the site moved where
    the implant has its own (olecranon, radial head, proximal humerus)."""
    hw: dict = dict(type=kind, face=bool(rng.random() < 0.5))  # face: seen en face (else in profile)
    if kind == "plate":
        size = PLATE_SIZE[part]
        P = PLATES[size]
        holes = int(rng.integers(P["holes"][0], P["holes"][1] + 1))
        hw.update(size=size, width=_uni(rng, P["width"]), thick=_uni(rng, P["thick"]), pitch=_uni(rng, P["pitch"]),
                  holes=holes, screw=P["screw"], head=P["head"], side=_sign(rng), offset=_uni(rng, (-0.4, 0.4)),
                  filled=[bool(x) for x in rng.random(holes) < 0.8])
        if "flare" in P:
            hw["flare"] = _uni(rng, P["flare"])
    elif kind == "nail":
        hw["d"] = _uni(rng, NAIL_MM[part])
        if part in ("SHOULDER", "HUMERUS"):  # antegrade humeral nail from the top of the head, locked
            end = _uni(rng, (0.75, 0.9))
            hw.update(path=["humerus_neck", "humerus_shaft"], start=-0.06, end=end,
                      locks=[0.0, 0.12, end - 0.1, end - 0.04])
        else:  # elastic (flexible) nail along the whole bone, no locking
            hw.update(path=[site[0]], start=0.03, end=0.97, locks=[])
    elif kind == "kwires":
        n = int(rng.integers(1, 3)) if part == "FINGER" else int(rng.integers(2, 4))
        hw.update(d=_uni(rng, KWIRE_MM.get(part, KWIRE_MM["default"])),
                  wires=[dict(at=_uni(rng, (-0.8, 0.8)), angle=_sign(rng) * _uni(rng, (25.0, 50.0)),
                              extra=_uni(rng, (3.0, 15.0))) for _ in range(n)])
    elif kind == "screws":
        if part == "WRIST" and rng.random() < 0.5:  # a headless compression screw along the scaphoid
            hw.update(scaphoid=True, d=3.0, length=_uni(rng, (20.0, 26.0)))
        else:
            n = int(rng.integers(1, 4))
            hw.update(d=LAG_SCREW_MM[part], screws=[dict(at=_uni(rng, (-1.2, 1.2)),
                                                         angle=_sign(rng) * _uni(rng, (55.0, 90.0)))
                                                    for _ in range(n)])
    elif kind == "tension_band":  # olecranon: two parallel K-wires and a figure-of-eight wire
        site = ("ulna_prox", _uni(rng, (0.05, 0.3)))
        hw.update(kwire=_uni(rng, KWIRE_MM["default"]), wire=_uni(rng, CERCLAGE_MM), length=_uni(rng, (50.0, 70.0)),
                  spread=_uni(rng, (2.5, 4.0)), hole=40.0)
    elif kind == "radial_head":
        site = ("radius_neck", _uni(rng, (0.1, 0.4)))
        R = RADIAL_HEAD_MM
        hw.update(diameter=_uni(rng, R["diameter"]), height=_uni(rng, R["height"]), stem=_uni(rng, R["stem"]),
                  stem_length=_uni(rng, R["stem_length"]))
    elif kind == "arthroplasty":
        site = ("humerus_neck", _uni(rng, (0.3, 0.7)))
        hw.update(reverse=bool(rng.random() < 0.4), head=_uni(rng, SHOULDER_HEAD_MM),
                  glenosphere=_uni(rng, GLENOSPHERE_MM), stem=_uni(rng, (100.0, 130.0)), stem_d=_uni(rng, (10.0, 14.0)))
    else:
        raise ValueError(f"unknown hardware {kind!r}")
    return hw, site


def draw_alloy(spec: dict, rng: np.random.Generator) -> None:
    """Give the study's implant its alloy (ALLOY_MIX), in place; a spec without hardware is left as it is."""
    hw = spec.get("hardware")
    if hw:
        hw["alloy"] = "titanium" if hw.get("scaphoid") else _pick(rng, ALLOY_MIX[hw["type"]])


def _djd_spec(rng: np.random.Generator, part: str, finger: int) -> dict:
    """Degenerative change at one or more of the part's joints; one grade per study (DJD_GRADE)."""
    joints = [(a.format(f=finger), b.format(f=finger), w) for a, b, w in DJD_JOINTS[part]]
    lo, hi = DJD_JOINTS_PER_STUDY.get(part, DJD_JOINTS_PER_STUDY["default"])
    k = min(int(rng.integers(lo, hi + 1)), len(joints))
    w = np.array([j[2] for j in joints], float)
    chosen = sorted(int(i) for i in rng.choice(len(joints), size=k, replace=False, p=w / w.sum()))
    grade = int(rng.choice(3, p=DJD_GRADE)) + 1
    out = []
    for i in chosen:
        out.append(dict(a=joints[i][0], b=joints[i][1], narrowing=_uni(rng, DJD_NARROWING[grade - 1]),
                        sclerosis=_uni(rng, DJD_SCLEROSIS_MM[grade - 1]),
                        osteophytes=[dict(on=int(rng.integers(2)), side=_sign(rng), pos=_uni(rng, (0.7, 0.95)),
                                          length=_uni(rng, DJD_OSTEOPHYTE_MM[grade - 1]))
                                     for _ in range(int(rng.integers(1, grade + 2)))]))
    return dict(grade=grade, joints=out)


def cast_spec(rng: np.random.Generator) -> dict:
    """A cast: its length (0.5-1: 75-110 mm proximal of the site), material and shell thickness (mm). Drawn last
    in the study's findings stream, so the draws before it are generator 2.0's."""
    length = float(rng.uniform(0.5, 1.0))
    material = "plaster" if rng.random() < PLASTER_SHARE else "fibreglass"
    return dict(length=length, material=material, shell=_uni(rng, CAST_SHELL_MM[material]))


def lesion_spec(rng: np.random.Generator, part: str, abnormal: bool, finger: int) -> dict:
    """Draw the study's findings (`rng`: the study's own stream, see plan_studies).

    Normal studies: a cast on NORMAL_CAST_RATE of the castable types, nothing else. Abnormal ones: one
    presentation from ABNORMAL_MIX (an acute fracture of a FRACTURE_PATTERN, a fixed fracture, retained
    hardware or an arthroplasty, or degenerative change), implants from HARDWARE_MIX, maybe a cast
    (CAST_RATE). Keys: site (solid, t), fracture, hardware, cast, degenerative; removing a key removes
    that finding only (utils.counterfactual)."""
    def site_of(opts):
        name, lo, hi = opts[int(rng.integers(len(opts)))]
        return (f"{name}{finger}" if part == "FINGER" else name, float(rng.uniform(lo, hi)))

    spec: dict = {}
    if not abnormal:
        if part in CASTABLE and rng.random() < NORMAL_CAST_RATE:
            spec["site"] = site_of(FRACTURE_SITES[part][:1])
            spec["cast"] = cast_spec(rng)
        return spec
    pres = _pick(rng, ABNORMAL_MIX[part])
    if pres == "degenerative":
        spec["degenerative"] = _djd_spec(rng, part, finger)
        return spec
    spec["site"] = site_of(FRACTURE_SITES[part])
    rate = CAST_RATE[pres]
    if pres == "fracture":
        spec["fracture"] = _fracture_spec(rng, _pick(rng, FRACTURE_PATTERN.get(part, FRACTURE_PATTERN["default"])))
    else:
        kind = _pick(rng, HARDWARE_MIX[part][0 if pres == "fixed" else 1])
        spec["hardware"], spec["site"] = hardware_spec(rng, part, kind, spec["site"])
        if pres == "fixed":
            spec["fracture"] = _fracture_spec(rng, "reduced", comminution=bool(rng.random() < 0.3))
            rate = CAST_RATE["fixed_kwires" if kind == "kwires" else "fixed"]
    if part in CASTABLE and rng.random() < rate:
        spec["cast"] = cast_spec(rng)
    return spec


# --------------------------------------------------------------------------- building the findings


def _unit(v):
    L = math.hypot(v[0], v[1]) or 1.0
    return (v[0] / L, v[1] / L)


def _add(p, *terms):
    """p + sum of (vector, scale) terms."""
    x, y = p
    for v, s in terms:
        x, y = x + v[0] * s, y + v[1] * s
    return (x, y)


def _frame(pr: Prim, t: float):
    """(point at t, unit axis u, normal n, radius there, length) of a capsule."""
    x0, y0, x1, y1, r0, r1 = pr.geom
    L = math.hypot(x1 - x0, y1 - y0)
    u = ((x1 - x0) / L, (y1 - y0) / L)
    return (x0 + t * (x1 - x0), y0 + t * (y1 - y0)), u, (-u[1], u[0]), r0 + t * (r1 - r0), L


def _fracture_solids(pr: Prim, t: float, fr: dict) -> tuple[Prim, list[Prim], object]:
    """The broken capsule `pr` at t: (proximal piece, [distal piece, fragments, mask], motion). The distal
    piece is translated by `shift` bone radii across the axis and by the overlap (negative gap: overriding)
    along it, then angled by `angle` degrees about its proximal end; a comminution zone of `zone` radii holds
    the fragments. `motion(point)` is that rigid motion, for the solids the distal fragment carries."""
    x0, y0, x1, y1, r0, r1 = pr.geom
    F, u, n, r, L = _frame(pr, t)
    lim = 0.8 * min(t, 1 - t) * L
    g = float(np.clip(fr.get("gap", 1.0), -lim, lim * 0.5))
    zh = min(fr.get("zone", 0.0) * r / 2, lim * 0.6)
    sh, ang = fr.get("shift", 0.0) * r, math.radians(fr.get("angle", 0.0))
    a_end = _add(F, (u, -(zh + max(g, 0) / 2)))
    T = _add((0.0, 0.0), (n, sh), (u, -max(-g, 0)))
    b_start = _add(F, (u, zh + max(g, 0) / 2), (T, 1.0))
    b_end = rotate_point((x1 + T[0], y1 + T[1]), b_start, ang)
    out = [replace(pr, name=pr.name + "_distal", geom=(*b_start, *b_end, r, r1))]
    for k, f in enumerate(fr.get("fragments", ())):
        c = _add(F, (u, (f["pos"] - 0.5) * 2 * zh), (n, f["offset"] * r))
        d = rotate_point(u, (0.0, 0.0), math.radians(f["angle"]))
        half = max(0.6, f["length"] * zh / max(len(fr["fragments"]), 1))
        out.append(replace(pr, name=f"{pr.name}_fragment{k}", geom=(*_add(c, (d, -half)), *_add(c, (d, half)),
                                                                    f["radius"] * r, f["radius"] * r * 0.8),
                           tags=("fracture",)))
    reach = zh + abs(g) / 2 + r * 0.6
    out.append(cap_solid("lesion_fracture", _add(F, (u, -reach)), _add(F, (u, reach)), r * 1.35 + abs(sh),
                    material="mask", tags=("fracture",)))
    def motion(q, T=T, b_start=b_start, ang=ang):
        return rotate_point((q[0] + T[0], q[1] + T[1]), b_start, ang)

    return replace(pr, geom=(x0, y0, *a_end, r0, r)), out, (motion, ang)


def _polyline(prims: list[Prim], names, s0: float, s1: float):
    """Segments of the chain of capsules `names` from arc fraction s0 to s1 (0..1 over the chain's total
    length; below 0 extends before its first point): [(p, q, r_p, r_q)]."""
    segs = [next(p for p in prims if p.name == nm).geom for nm in names]
    lens = [math.hypot(g[2] - g[0], g[3] - g[1]) for g in segs]
    total = sum(lens)
    a, b = s0 * total, s1 * total
    out, acc = [], 0.0
    for k, (g, Lk) in enumerate(zip(segs, lens)):
        lo, hi = acc, acc + Lk
        acc = hi
        s, e = max(a, lo) if k else a, min(b, hi) if k < len(segs) - 1 else b
        if e <= s:
            continue
        u = ((g[2] - g[0]) / Lk, (g[3] - g[1]) / Lk)
        p = _add(g[0:2], (u, s - lo))
        q = _add(g[0:2], (u, e - lo))
        rp = g[4] + (g[5] - g[4]) * min(max((s - lo) / Lk, 0), 1)
        rq = g[4] + (g[5] - g[4]) * min(max((e - lo) / Lk, 0), 1)
        out.append((p, q, rp, rq))
    return out


def _metal_cap(name, p, q, d, d2=None, group=""):
    pr = cap_solid(name, p, q, d / 2, (d if d2 is None else d2) / 2, material="metal", tags=("hardware",))
    return replace(pr, group=group) if group else pr


def _metal_dot(name, c, d, length):
    """A screw seen end-on: a disc of diameter d with `length` mm of metal along the beam."""
    return ellipsoid_solid(name, c, d / 2, d / 2, 0.0, depth=length / 2, material="metal", cortex=0.0, tags=("hardware",))


def _hardware_solids(prims: list[Prim], hw, site, F, u, n, r, L) -> list[Prim]:
    """The implant `hw` (from hardware_spec) at the site's frame (point F, axis u, normal n, radius r,
    length L of the site's capsule)."""
    if isinstance(hw, str):  # generator 1.0 wrote the kind alone
        hw = dict(type={"kwire": "kwires", "prosthesis": "arthroplasty"}.get(hw, hw))
    kind, face = hw["type"], hw.get("face", False)
    out: list[Prim] = []
    if kind == "plate":
        P = PLATES[hw.get("size", "small")]
        W, th = hw.get("width", P["width"][1]), hw.get("thick", P["thick"][1])
        pitch, holes = hw.get("pitch", P["pitch"][0]), hw.get("holes", P["holes"][0])
        half = min(holes * pitch / 2, 0.48 * L + 4)
        C = _add(F, (u, -(half - 12))) if "flare" in hw else F  # a distal radius plate ends just past the fracture
        side = hw.get("side", 1.0)
        o, w_img, depth = (hw.get("offset", 0.0) * r, W, th) if face else (side * (r + th / 2), th, W)

        def slab(name, s0, s1, width, dep):
            pts = (_add(C, (u, s0), (n, o - width / 2)), _add(C, (u, s1), (n, o - width / 2)),
                   _add(C, (u, s1), (n, o + width / 2)), _add(C, (u, s0), (n, o + width / 2)))
            return Prim(name, "poly", pts, "metal", dep, 0.0, ("hardware",))

        out.append(slab("plate", -half, half, w_img, depth))
        screw_len = 2 * r + th + 2
        pos = [-half + pitch * (k + 0.5) for k in range(int(2 * half // pitch))]
        if "flare" in hw:
            fl = hw["flare"]
            out.append(slab("plate_head", half - 12, half, fl if face else th, th if face else fl))
            heads = [(half - 6, (k - 1) * fl / 3) for k in range(3)]
        else:
            heads = []
        filled = hw.get("filled") or [True] * len(pos)
        spots = [(s, 0.0) for k, s in enumerate(pos) if filled[k % len(filled)]] + heads
        for k, (s, across) in enumerate(spots):
            at = _add(C, (u, s))
            if abs((at[0] - F[0]) * u[0] + (at[1] - F[1]) * u[1]) < 0.8 * r:
                continue  # no screw in the fracture
            if face:
                out.append(_metal_dot(f"screw{k}", _add(at, (n, o + across)), hw.get("head", P["head"]), screw_len))
            else:
                out.append(_metal_cap(f"screw{k}", _add(at, (n, o + side * th / 2)), _add(at, (n, -side * (r + 2))),
                                      hw.get("screw", P["screw"])))
    elif kind == "nail":
        d = hw.get("d", 0.76 * r)
        for k, (p, q, _, _) in enumerate(_polyline(prims, hw.get("path", [site]), hw.get("start", 0.08),
                                                   hw.get("end", 0.92))):
            out.append(_metal_cap(f"nail{k}", p, q, d, group="nail"))
        for k, s in enumerate(hw.get("locks", ())):
            seg = _polyline(prims, hw["path"], s, s + 0.001)
            if not seg:
                continue
            p, q, rp, _ = seg[0]
            uu = _unit((q[0] - p[0], q[1] - p[1]))
            nn = (-uu[1], uu[0])
            if face:
                out.append(_metal_dot(f"lock{k}", p, LOCKING_SCREW_MM, 2 * rp + 4))
            else:
                out.append(_metal_cap(f"lock{k}", _add(p, (nn, -(rp + 3))), _add(p, (nn, rp + 3)), LOCKING_SCREW_MM))
    elif kind in ("kwires", "kwire"):
        for k, w in enumerate(hw.get("wires") or [dict(at=-0.5, angle=40.0, extra=5.0), dict(at=0.5, angle=-40.0,
                                                                                              extra=5.0)]):
            P0 = _add(F, (u, w["at"] * r))
            a = math.radians(w["angle"])
            d = rotate_point(u, (0.0, 0.0), a)
            half = r / max(abs(math.sin(a)), 0.3) + w["extra"]
            out.append(_metal_cap(f"kwire{k}", _add(P0, (d, -half)), _add(P0, (d, half)), hw.get("d", 1.6)))
    elif kind == "screws":
        if hw.get("scaphoid"):
            g = next(p for p in prims if p.name == "carpal_scaphoid").geom
            d = (math.cos(g[4]), math.sin(g[4]))
            out.append(_metal_cap("scaphoid_screw", _add(g[0:2], (d, -hw["length"] / 2)),
                                  _add(g[0:2], (d, hw["length"] / 2)), hw["d"]))
        else:
            for k, s in enumerate(hw["screws"]):
                P0 = _add(F, (u, s["at"] * r))
                a = math.radians(s["angle"])
                d = rotate_point(u, (0.0, 0.0), a)
                half = r / max(abs(math.sin(a)), 0.3) + 1.5
                out.append(_metal_cap(f"lag{k}", _add(P0, (d, -half)), _add(P0, (d, half)), hw["d"]))
    elif kind == "tension_band":
        ol = next(p for p in prims if p.name == "olecranon").geom
        tip = _add(ol[0:2], (u, -0.9 * ol[3]))
        sp, H = hw["spread"], _add(F, (u, hw["hole"]))
        for k, s in enumerate((-1, 1)):
            out.append(_metal_cap(f"tb_kwire{k}", _add(tip, (n, s * sp), (u, -3)),
                                  _add(tip, (n, s * sp), (u, hw["length"])), hw["kwire"]))
            out.append(_metal_cap(f"tb_wire{k}", _add(tip, (n, s * sp * 1.6), (u, 2)), _add(H, (n, -s * (r + 1))),
                                  hw["wire"]))
        out.append(_metal_cap("tb_hole", _add(H, (n, -(r + 1))), _add(H, (n, r + 1)), hw["wire"]))
    elif kind == "radial_head":
        rh = next(p for p in prims if p.name == "radius_head").geom
        neck = next(p for p in prims if p.name == "radius_neck").geom
        ur = _unit((neck[2] - neck[0], neck[3] - neck[1]))
        D, Hh = hw["diameter"], hw["height"]
        out.append(ellipsoid_solid("radial_head_prosthesis", rh[0:2], D / 2, Hh / 2, rh[4], depth=D / 2, material="metal",
                        cortex=0.0, tags=("hardware",)))
        out.append(_metal_cap("radial_head_stem", _add(rh[0:2], (ur, Hh / 2)),
                              _add(rh[0:2], (ur, Hh / 2 + hw["stem_length"])), hw["stem"], hw["stem"] * 0.8))
    elif kind in ("arthroplasty", "prosthesis"):
        hh = next(p for p in prims if p.name == "humerus_head").geom
        gl = next(p for p in prims if p.name == "glenoid").geom
        c, cg = hh[0:2], gl[0:2]
        to_g = _unit((cg[0] - c[0], cg[1] - c[1]))
        stem_d, stem_len = hw.get("stem_d", 12.0), hw.get("stem", 110.0)
        neck = next(p for p in prims if p.name == "humerus_neck").geom
        shaft = next(p for p in prims if p.name == "humerus_shaft").geom
        total = math.hypot(neck[2] - neck[0], neck[3] - neck[1]) + math.hypot(shaft[2] - shaft[0], shaft[3] - shaft[1])
        segs = _polyline(prims, ["humerus_neck", "humerus_shaft"], 0.0, min(stem_len / total, 0.95))
        for k, (p, q, _, _) in enumerate(segs):
            f0 = k / max(len(segs), 1)
            out.append(_metal_cap(f"stem{k}", p, q, stem_d * (1 - 0.4 * f0), stem_d * (1 - 0.4 * (k + 1) / len(segs)),
                                  group="stem"))
        if hw.get("reverse"):
            G = hw["glenosphere"]
            out.append(ellipsoid_solid("glenosphere", _add(cg, (to_g, -6)), G / 2, G / 2, 0.0, depth=0.3 * G, material="metal",
                            cortex=0.0, tags=("hardware",)))
            out.append(ellipsoid_solid("humeral_cup", _add(c, (to_g, 0.45 * hh[2])), G / 2 + 2, G / 2 + 2, 0.0, depth=4.0,
                            material="metal", cortex=0.0, tags=("hardware",)))
        else:
            D = hw.get("head", 46.0)
            out.append(ellipsoid_solid("prosthesis_head", _add(c, (to_g, 1.0)), D / 2, D / 2, 0.0, depth=0.35 * D,
                            material="metal", cortex=0.0, tags=("hardware",)))
    else:
        raise ValueError(f"unknown hardware {kind!r}")
    return out


def _joint(prims: list[Prim], a: str, b: str):
    """The joint between solids a and b: (joint point J, axis d from a to b, normal m, surface points sA, sB,
    half-width w)."""
    A = next(p for p in prims if p.name == a)
    B = next(p for p in prims if p.name == b)

    def mid(pr):
        g = pr.geom
        return g[0:2] if pr.shape == "ellipse" else ((g[0] + g[2]) / 2, (g[1] + g[3]) / 2)

    def ref(pr, other):
        g = pr.geom
        if pr.shape == "ellipse":
            return g[0:2], lambda v: 1 / math.sqrt(((v[0] * math.cos(g[4]) + v[1] * math.sin(g[4])) / g[2]) ** 2
                                                    + ((-v[0] * math.sin(g[4]) + v[1] * math.cos(g[4])) / g[3]) ** 2)
        e0 = math.hypot(g[0] - other[0], g[1] - other[1]) <= math.hypot(g[2] - other[0], g[3] - other[1])
        return ((g[0], g[1]), lambda v: g[4]) if e0 else ((g[2], g[3]), lambda v: g[5])

    cA, rhoA = ref(A, mid(B))
    cB, rhoB = ref(B, mid(A))
    d = _unit((cB[0] - cA[0], cB[1] - cA[1]))
    m = (-d[1], d[0])
    sA, sB = _add(cA, (d, rhoA(d))), _add(cB, (d, -rhoB(d)))
    J = ((sA[0] + sB[0]) / 2, (sA[1] + sB[1]) / 2)
    return J, d, m, sA, sB, min(rhoA(m), rhoB(m))


def _djd_solids(prims: list[Prim], djd: dict) -> list[Prim]:
    """Degenerative change at each joint of `djd` (from _djd_spec): subchondral sclerosis (a band of solid
    cortical bone under both articular surfaces), narrowing (bone filling the joint line: the phantom's
    joints carry no cartilage, so lost joint space is drawn as the line's lucent margins filling in) and
    osteophytes (spurs from the articular margins). Sizes are for a large joint and scale with the joint's
    half-width w (w / 10 mm, at most 1)."""
    out: list[Prim] = []
    for j, jt in enumerate(djd.get("joints", ())):
        J, d, m, sA, sB, w = _joint(prims, jt["a"], jt["b"])
        k = min(1.0, w / 10.0)
        ang = math.atan2(d[1], d[0])
        t = max(0.5, jt["sclerosis"] * max(k, 0.4))
        tag = ("degenerative",)
        for s, (sp, sgn) in enumerate(((sA, -1), (sB, 1))):
            out.append(Prim(f"sclerosis{j}_{s}", "ellipse", (*_add(sp, (d, sgn * (t / 2 + 0.3))), t / 2, 0.8 * w, ang),
                            "bone", 0.7 * w, 1.0, tag))
        h = 0.3 + jt["narrowing"] * 1.5 * k
        out.append(Prim(f"narrowing{j}", "ellipse", (*J, h, 0.95 * w, ang), "bone", 0.6 * w, 1.0, tag))
        reach = 0.0
        for o, ost in enumerate(jt["osteophytes"]):
            Lo = ost["length"] * max(k, 0.3)
            reach = max(reach, Lo)
            base_s, toward = (sA, 1.0) if ost["on"] == 0 else (sB, -1.0)
            base = _add(base_s, (d, -toward * 1.0), (m, ost["side"] * w * ost["pos"]))
            dirn = _unit(_add((0.0, 0.0), (m, ost["side"] * 0.8), (d, toward * 0.6)))
            rb = max(0.6, 0.35 * Lo)
            out.append(Prim(f"osteophyte{j}_{o}", "capsule", (*base, *_add(base, (dirn, Lo)), rb, 0.3 * rb), "bone",
                            0.0, 0.6, tag))
        gap = abs((sB[0] - sA[0]) * d[0] + (sB[1] - sA[1]) * d[1])
        out.append(Prim(f"lesion_degenerative{j}", "ellipse", (*J, gap / 2 + t + 1.5, 1.15 * w + 0.5 * reach, ang),
                        "mask", 1.0, 0.0, tag))
    return out


_HAND = ("carpal_", "mc", "pp", "mp", "dp", "soft_palm", "soft_finger")
_BELOW_ELBOW = ("humerus_condyles", "epicondyle", "trochlea", "capitellum", "olecranon", "radius_", "ulna_",
                "soft_forearm") + _HAND
CARRIED = {  # the solids a broken bone's distal fragment carries with it (prefixes of solid names)
    "humerus_neck": ("humerus_shaft",) + _BELOW_ELBOW,  # surgical neck: the shaft and the limb below
    "humerus_shaft": _BELOW_ELBOW,
    "clavicle1": ("clavicle2",),
    "ulna_shaft": ("ulna_head",),
}


def _carried(name: str, t: float) -> tuple:
    """Prefixes of the solids that move with the distal fragment of `name` broken at t: the limb below a
    humeral fracture, the carpus and hand with a distal radius fragment (t >= 0.85: the dorsally tilted,
    shortened wrist of a Colles fracture), the more distal bones of a ray with a metacarpal or phalanx;
    none where the other forearm bone or the joint holds the limb (radial neck, olecranon, radial shaft)."""
    if name == "radius_shaft":
        return ("radius_distal", "radius_styloid") + (_HAND if t >= 0.85 else ())
    f = name[-1:]
    if name[:-1] == "mc":
        return (f"mchead{f}", f"pp{f}", f"mp{f}", f"dp{f}")
    if name[:-1] == "pp":
        return (f"mp{f}", f"dp{f}")
    if name[:-1] == "mp":
        return (f"dp{f}",)
    return CARRIED.get(name, ())


def apply_lesions(prims: list[Prim], spec: dict) -> list[Prim]:
    """Modify the limb for the study's findings (in the anatomical frame): the fracture, hardware and cast at
    spec["site"], degenerative change at its joints. Deterministic: every random choice is in the spec."""
    if not spec:
        return prims
    out = list(prims)
    extra: list[Prim] = []
    if "site" in spec:
        name, t = spec["site"]
        i = next(k for k, p in enumerate(prims) if p.name == name)
        F, u, n, r, L = _frame(prims[i], t)
        if "fracture" in spec:
            out[i], pieces, (motion, ang) = _fracture_solids(prims[i], t, spec["fracture"])
            extra += pieces
            carried = _carried(name, t)
            for k, p in enumerate(out):
                if k != i and p.name.startswith(carried) and not p.name.startswith(name):
                    out[k] = transform_prim(p, motion, 1.0, ang)
        if spec.get("hardware"):
            alloy = spec["hardware"].get("alloy", "metal")  # generator 3.0's specs carry none
            extra += [dataclasses.replace(p, material=alloy) if p.material == "metal" else p
                      for p in _hardware_solids(prims, spec["hardware"], name, F, u, n, r, L)]
        if "cast" in spec:
            c = spec["cast"] if isinstance(spec["cast"], dict) else dict(length=spec["cast"])  # 2.0: a float
            half = 40 + 70 * c["length"]
            mat = c.get("material", "cast")
            shell = c["shell"] / (r + 24) if "shell" in c else 0.25  # relative to the shell's mean outer radius
            extra.append(cap_solid("cast", (F[0] - u[0] * half, F[1] - u[1] * half),
                              (F[0] + u[0] * half * 0.7, F[1] + u[1] * half * 0.7), r + 26, r + 22,
                              material=mat, cortex=shell, tags=("cast",)))
    if spec.get("degenerative"):
        extra += _djd_solids(prims, spec["degenerative"])
    return out + extra
