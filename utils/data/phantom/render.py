"""Rendering a study: the solids projected through the material's attenuation (Beer-Lambert), trabecular
texture, soft tissue, exposure and display window, collimation, markers and text, and the masks."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import cv2
import numpy as np

from utils.data.phantom.anatomy import (
    BUILDERS,
    FOV,
    KEY_BONES,
    LESION_TAGS,
    MU,
    Prim,
    Study,
    build_limb,
    finger_fov_centre,
    rotate_point,
)
from utils.data.phantom.findings import apply_lesions

# --------------------------------------------------------------------------- rendering


def _chord_capsule(X, Y, g):
    """Chord length (same units as the grid) through a tapered capsule at each grid point."""
    x0, y0, x1, y1, r0, r1 = g
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy + 1e-12
    t = np.clip(((X - x0) * dx + (Y - y0) * dy) / L2, 0.0, 1.0)
    d2 = (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2
    r = r0 + t * (r1 - r0)
    return r, d2, t


def _render(prims: list[Prim], M: np.ndarray, off: np.ndarray, s: float, H: int, W: int,
            key: tuple, trab: np.ndarray | None = None):
    """Attenuation (sum mu*t), key-bone mask and lesion flags on an H x W grid.

    M (2x2) and off map the anatomical frame (mm) to grid pixels; s is px per mm. `trab` (H x W, mean 0) is the
    view's trabecular texture (_trabecular_texture): the marrow term of bone is multiplied by 1 + trab, fully
    in ellipsoids (epiphyses, carpals, heads) and at a capsule's ends, a third of it mid-shaft (diaphyses
    hold fatty marrow in a tube of cortex, few trabeculae).
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
            if pr.material == "bone":  # a thin plate of bone (the scapula), its edges softened
                poly_layer += m * (MU["cortex"] * 0.55 * pr.depth)
            elif pr.material != "mask":  # a slab of uniform thickness `depth` (an implant's plate)
                A += m * np.float32(MU[pr.material] * pr.depth)
            if pr.name.startswith(key):
                keym |= m > 0
            for tag, bit in LESION_TAGS.items():
                if tag in pr.tags:
                    lesion |= m * np.uint8(bit)
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
            r, d2, tcap = _chord_capsule(X, Y, (*p0, *p1, r0, r1))
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
            marrow = MU["marrow"] * inner
            if trab is not None and pr.cortex < 1.0:
                tt = trab[i0:i1, j0:j1]
                if pr.shape == "capsule":  # 1 within ~one radius of an end, 1/3 mid-shaft
                    Lc = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
                    wgt = np.clip(1.3 - np.minimum(tcap, 1 - tcap) * Lc / (3 * max(r0, r1, 1e-3)), 0.33, 1.0)
                    tt = tt * wgt
                marrow = marrow * (1 + tt)
            val = MU["cortex"] * (outer - inner) + marrow
        elif mat == "cast":  # generator 2.0's cast
            tex = 1 + 0.25 * np.sin(X * 0.9) * np.sin(Y * 0.9)
            val = MU["cast"] * (outer - inner) * tex
        elif mat == "plaster":  # set plaster of Paris: a homogeneous shell
            val = MU["plaster"] * (outer - inner)
        elif mat == "fibreglass":  # knitted glass-fibre tape: a diagonal mesh, ~2.5 mm pitch (ASSUMED)
            per = 2.5 * s  # px
            amp = 0.3 * float(np.clip((per - 2.0) / 2.0, 0.0, 1.0))  # a mesh finer than the grid averages out
            k = 2 * math.pi / max(per, 1e-3) / math.sqrt(2)
            tex = 1 + amp * np.sin(k * (X + Y)) * np.sin(k * (X - Y))
            val = MU["fibreglass"] * (outer - inner) * tex
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
        for tag, bit in LESION_TAGS.items():
            if tag in pr.tags:
                lesion[i0:i1, j0:j1] |= inside * np.uint8(bit)
    for gl in groups.values():
        A += gl
    if poly_layer.any():
        poly_layer = cv2.GaussianBlur(poly_layer, (0, 0), 1.2 * s)
        A += poly_layer * (1 + 0.5 * trab) if trab is not None else poly_layer
    return A, keym, lesion


def _side_stream(rng: np.random.Generator) -> np.random.Generator:
    """A stream for the draws generator 3.0 added to a view (trabecular texture, display inversion, wash-out),
    seeded by the view's render stream's state as the view starts: read, not drawn from, so the render
    stream's draws are generator 2.0's; each view (and both renders of a counterfactual pair) gets its own,
    equal for equal states."""
    st = rng.bit_generator.state
    if isinstance(st.get("state"), dict):
        words = [int(v) for v in st["state"].values() if isinstance(v, int)]
    else:
        words = [int.from_bytes(json.dumps(st, sort_keys=True, default=str).encode()[:256], "little")]
    return np.random.default_rng(np.random.SeedSequence(words, spawn_key=(4,)))


TRABECULAR = dict(scale_mm=0.6, min_px=0.7, amplitude=0.35)


def _trabecular_texture(srng: np.random.Generator, H: int, W: int, s: float) -> np.ndarray:
    """Band-limited noise (a difference of Gaussians of white noise, unit SD times TRABECULAR["amplitude"]) on
    the H x W render grid at s px/mm: trabecular spacing is 0.5-1 mm in adults (Tb.Sp, histomorphometry), so
    the pass band sits at ~0.6 mm, but not below TRABECULAR["min_px"] render pixels (~1.4 px of the film), as
    the coarser trabecular pattern is what a 512 px film shows (ASSUMED)."""
    s1 = max(TRABECULAR["min_px"], TRABECULAR["scale_mm"] * s)
    n = srng.standard_normal((H, W)).astype(np.float32)
    band = cv2.GaussianBlur(n, (0, 0), s1) - cv2.GaussianBlur(n, (0, 0), 2.5 * s1)
    return band * np.float32(TRABECULAR["amplitude"] / max(float(band.std()), 1e-6))


# display variation (module docstring, "Exposure and display"): shares ASSUMED
INVERTED_RATE = 0.03
WASHED_OUT_RATE = 0.08
WASHED_OUT = dict(black=(0.15, 0.35), white=(0.70, 0.92))


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
    srng = _side_stream(rng)  # generator 3.0's draws; the render stream below is drawn from as in 2.0
    # ---- projection and pose of this view
    proj = rng.choice(["AP", "LAT", "OBL"], p=[0.45, 0.35, 0.2])
    fx = {"AP": 1.0, "LAT": rng.uniform(0.35, 0.6), "OBL": rng.uniform(0.6, 0.85)}[proj]
    flex = rng.uniform(0, 15) if proj == "AP" else rng.uniform(35, 100)
    flex = flex if part in ("ELBOW", "FOREARM") else rng.uniform(0, 20)
    abduct = rng.uniform(-5, 35)
    limb = BUILDERS.get(part, build_limb)(study.anatomy, flex, abduct)
    prims = apply_lesions(limb, study.lesion if lesion is None else lesion)
    # ---- field of view
    centre, fov = FOV[part]
    if part == "FINGER":
        centre = finger_fov_centre(prims if lesion is None else apply_lesions(limb, study.lesion), study.finger)
    else:  # follow the elbow flexion and the abduction of the arm
        if part in ("ELBOW", "FOREARM", "WRIST", "HAND"):
            centre = rotate_point(centre, (0, 312), math.radians(flex))
        if part == "FOOT":
            centre = rotate_point(centre, (0, 425), math.radians(flex))
        if part in ("ELBOW", "FOREARM", "WRIST", "HAND", "HUMERUS"):
            centre = rotate_point(centre, (2, 0), -math.radians(abduct))
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
    trab = _trabecular_texture(srng, h2, w2, s)
    A, keym, lesion = _render(prims, M, off, s, h2, w2, key, trab)
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
    # the window comes from the anatomy, not the implants (generator 3.1): digital radiography finds its "values
    # of interest" by histogram analysis of the exposed anatomy (AAPM Report 116, 2009), and metal, far beyond
    # them, is shown saturated white, without darkening the bone; generator 3.0 took metal into the percentiles
    # (the implant's mask widened by 2 px: the attenuation was upsampled bilinearly, the mask by nearest neighbour)
    implant = cv2.dilate((lesion & LESION_TAGS["hardware"]).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    sample = D[field_mask & ~implant][:: 7]
    if sample.size == 0:  # a field filled by an implant (never drawn so; kept well-defined)
        sample = D[field_mask][:: 7]
    lo, hi = np.percentile(sample, [rng.uniform(0.2, 3), rng.uniform(99.0, 99.9)])
    if window is not None:  # float64 scalars as np.percentile gives, so the arithmetic keeps its dtypes
        lo, hi = np.asarray(window, np.float64)
    img = np.clip((D - lo) / max(hi - lo, 1e-3), 0, 1) ** rng.uniform(0.7, 1.4)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.5, 1.3))
    washed = bool(srng.random() < WASHED_OUT_RATE)
    if washed:  # a washed-out film: raised black level, compressed contrast
        black = srng.uniform(*WASHED_OUT["black"])
        img = black + img * (srng.uniform(*WASHED_OUT["white"]) - black)
    if colli and rng.random() < 0.35:  # some systems blank the collimated area black
        img[~field_mask] = rng.uniform(0, 0.08)
    inverted = bool(srng.random() < INVERTED_RATE)
    if inverted:  # displayed inverted: bone dark, air (and any blanked border) bright
        img = 1 - img
    img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
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
                marker=bool(marker), flexion=float(flex), window=(float(lo), float(hi)), field=field_mask,
                inverted=inverted, washed_out=washed, px_per_mm=float(s * W / w2))  # px of the film per mm of anatomy
    return img, keym, lesion, meta


# --------------------------------------------------------------------------- re-rendering (counterfactuals)


class RenderedView(NamedTuple):
    """One view as `render_study` gives it: the gray image (uint8 H x W; the file holds it as three equal
    channels where `meta["rgb"]`), the bones mask (0/255), the lesion flags (bits 1 fracture, 2 hardware,
    4 cast, 8 degenerative: utils.data.LESION_BITS) and render_view's metadata (projection, rotation, ...,
    window, rgb)."""

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
