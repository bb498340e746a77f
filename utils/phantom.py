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
shell over a medullary cavity, plates (the scapula) are thin slabs; soft tissue
(an envelope of soft solids around every bone: arm, forearm, palm, fingers, shoulder, chest wall), lungs and
casts are further solids. Cancellous bone is not uniform: the marrow term is modulated by a band-limited
random texture (TRABECULAR: a difference of Gaussians of white noise at ~0.6 mm, trabecular separation in adults
being 0.5-1 mm, but not finer than ~1.4 px of the film; amplitude +-35 % of the marrow attenuation, ASSUMED),
fully in the ellipsoids (epiphyses, carpals, heads, condyles) and at the ends of the tubular bones, a third
of it mid-shaft (diaphyses hold fatty marrow, few trabeculae); the cortex stays brighter than the medulla.

Physics. Each solid contributes its chord length t_i (mm) along the beam, and the
detector sees I = I0 * heel(x, y) * exp(-sum_i mu_i t_i) photons per pixel, with
Poisson noise (signal dependent), exposure variation, a heel-effect gradient and
detector blur. The image shown is the log-attenuation, windowed like a
processed radiograph: bone bright, air dark.

Nuisances, all independent of the class: in-plane rotation (mostly small,
sometimes large), zoom, field-of-view position, left/right mirroring,
projection (AP, lateral, oblique), collimation borders, lead L/R markers,
burned-in text, image sizes and aspect ratios, some files saved as RGB, and
(generator 3.0) films displayed inverted (bone dark on a bright background,
INVERTED_RATE 3 %) or washed out (black level raised to 15-35 %, white lowered
to 70-92 %: WASHED_OUT_RATE 8 %). MURA holds both kinds; no published share was
found, so both rates are ASSUMED.

Implants and the display window (generator 3.1). Each implant is drawn in its alloy (ALLOY_MIX: 316L steel
1.55/mm, Ti-6Al-4V 0.53/mm, cobalt-chromium 1.75/mm at ~50 keV, from NIST's mass attenuation tables; 3.0 drew all
at titanium's 0.60/mm, so a 3 mm steel plate let 16 % of the beam through instead of < 1 %), and the display
window's percentiles are taken over the exposed anatomy without the implants (DR processing's "values of
interest", AAPM Report 116), so metal is shown white beside grey bone instead of setting the window itself and
darkening the bone. Neither change draws a random number from the render stream (the alloy comes from the
study's own stream, spawn key (7, study)).

Abnormal studies (about 40 %, MURA's share per type) show what MURA's show (its paper lists fractures,
hardware, degenerative joint disease, lesions and subluxations). Each draws one presentation
(ABNORMAL_MIX), with shares per type; weighted by MURA's abnormal studies per type they come to:

    presentation                             share   of which
    acute fracture, not fixed                 39 %   non/minimally displaced 18, displaced 15, comminuted 6
    fracture with its fixation                16 %   residual displacement small; 30 % keep comminution fragments
    retained hardware or an arthroplasty      15 %   fracture healed
    degenerative joint change                 30 %   grade I/II/III 45/30/25 %
    hardware in all (fixation or retained)    31 %   plates 14, shoulder arthroplasty 6, K-wires 4, screws 4,
                                                     nails 2, olecranon tension band 1, radial head prosthesis 1
    cast or splint (castable types only)      19 %   and 4 % of the normal studies of those types

Per type (ABNORMAL_MIX: fracture / fixed / hardware / degenerative): SHOULDER 25/10/25/40 (arthroplasty
and osteoarthritis dominate), HUMERUS 45/30/20/5, ELBOW 40/20/15/25, FOREARM 45/30/20/5, WRIST 45/20/10/25,
HAND 40/10/10/40, FINGER 50/10/5/35. Sources, and what is assumed:

- The kinds: Rajpurkar et al. 2018 (MURA, arXiv 1712.06957): abnormal studies include fractures,
  hardware, degenerative joint diseases, lesions and subluxations; its example figures show a humeral
  fracture, degenerative change of the distal phalanges and plates and screws on the radius and ulna.
  Lesions (tumours, cysts) and subluxations are not modelled; their share went to the other kinds.
- The share carrying hardware or a cast: Pure-MURA (github.com/huangyjhust/Pure-MURA) reports that about
  50 % of MURA's positive studies show "fracture indicators" (plates, marks, plaster). Here hardware or a
  cast is on ~46 % of abnormal studies (markers drawn by hand are not modelled).
- No published breakdown of MURA's abnormal studies by kind was found (MURA-Objects,
  github.com/wangxin1216/MURA-Objects, boxes "abnormal objects, fractures and dislocations" on a subset
  without counts). The per-type shares above are therefore ASSUMED, set from what each type is imaged for
  (shoulder: arthroplasty, osteoarthritis; forearm/humerus: shaft fractures and their plates or nails;
  hand/finger: osteoarthritis of the DIP/PIP/CMC1 joints and phalangeal fractures).
- Fracture displacement: Neer's classification (1970; radiopaedia, AO): about 75-80 % of proximal
  humeral fractures are one-part (displacement < 1 cm, angulation < 45 deg), so SHOULDER fractures are
  70 % minimally displaced; distal radius: Brogren et al. 2007 (BMC Musculoskelet Disord, PMC1904215):
  almost two thirds displaced, so WRIST 45 % displaced + 20 % comminuted (complete articular fractures were
  64 % in an Italian series, J Orthop Traumatol 2022). Other types: 45/40/15 % (assumed). Displacement is
  described as translation in % of the bone's width and angulation in degrees (radiopaedia "fracture
  displacement"): displaced fractures translate 20-100 % of the shaft width, angulate 5-25 deg and override
  up to 8 mm; comminuted ones hold 2-4 fragments in a zone 1-3 radii long (FRACTURE_GEOM). The distal
  fragment carries what lies beyond it (CARRIED): the limb below a humeral fracture, the carpus and hand
  with a distal radius fragment (the tilted, shortened wrist of a Colles fracture), the distal bones of a
  ray with a metacarpal or phalanx; an isolated radial or ulnar shaft fracture moves its own bone only.
- Implants, real sizes (PLATES, NAIL_MM, ...): 3.5 mm small-fragment plates 10-11 mm wide, 2.8-3.3 mm thick,
  holes every 12-13 mm with 3.5 mm cortex screws (Wheeless: 3.5 reconstruction plate 10 x 2.8 mm, 12 mm
  spacing; 3.5 mm cortex screw, 2.4 mm core; the 3.5 LCP, quoted as 11 x 3.3 mm, not confirmed in a
  catalogue here), 6-10 holes (a multicentre
  3.5 LC-DCP series used 6-10 hole plates); large-fragment (humeral shaft) 12-13.5 mm wide, 16 mm spacing,
  4.5 mm screws (Wheeless 4.5 reconstruction plate 12 mm wide, 16 mm spacing; thickness 3.3-4.5 assumed);
  superior clavicle plates 3.5 mm, 6-8 holes (AO). Volar distal radius plates (2.4 mm system, head 22-28 mm
  wide, 2.0-2.5 mm thick) and hand mini-plates (5-7 x 1.0-1.5 mm, 1.5-2.0 mm screws): ASSUMED from
  manufacturers' ranges, no source found. Humeral nails 7-9 mm (AO Surgery Reference example: 7.5 mm) with
  4.5 mm locking screws (assumed); forearm elastic nails 2-3 mm (assumed). K-wires 1.6-2.0 mm at wrist and
  elbow (AO: 1.6 mm; 0.062 in), 1.1-1.25 mm in fingers (0.045 in). Olecranon tension band: two parallel
  K-wires and a 1.0-1.25 mm figure-of-eight wire through a hole 40 mm distal to the fracture (AO: 1.2 mm /
  18 gauge, hole ~40 mm distal). Shoulder arthroplasty: anatomic heads 40-56 mm (the native head; a 56 mm
  head is quoted on Matsen's shoulderarthritis.blogspot.com), reverse glenospheres 36-42 mm (assumed),
  stems 100-130 mm, 10-14 mm tapering (assumed). Radial head prostheses 20-26 mm diameter (native
  22-23 mm, implants in 2 mm steps: Ten Berg et al. 2016; Kang et al. 2015), 10-12 mm high (native
  10.6 mm), stems 4.5-7 x 25-35 mm (assumed). Scaphoid headless screws 3.0 x 20-26 mm (assumed). Plates
  are seen en face or in profile (a 3D pose the 2D renderer cannot turn between views).
- Degenerative change (DJD_*): at the type's joints (glenohumeral and acromioclavicular; ulnohumeral and
  radiocapitellar; radiocarpal, scaphotrapezial and first carpometacarpal; MCP, PIP and DIP, weighted
  towards DIP, PIP and CMC1 as hand osteoarthritis is: AGES-Reykjavik, BMC Musculoskelet Disord 2012;
  Arthritis Res Ther 2011, doi 10.1186/ar3509). Grades follow Samilson-Prieto (osteophytes < 3, 3-7,
  > 7 mm; grade I predominant, II and III about equal: Arch Orthop Trauma Surg 2022); joint space lost
  20-95 % (glenohumeral 4.3 mm in the young to 1.5 mm in advanced osteoarthritis: Kircher et al.
  2010/2014); subchondral sclerosis bands 1-4 mm (assumed). Sizes scale
  with the joint (a finger's DIP gets ~1/3 of a shoulder's osteophyte). The phantom's joints carry no
  cartilage gap (bone ends abut), so narrowing is drawn as bone filling the joint line's lucent margins.
- Cast material (generator 3.0): plaster of Paris or fibreglass, 50/50 (PLASTER_SHARE, ASSUMED: no
  published share found; fibreglass dominates in some countries, plaster back-slabs in others). Attenuation
  from composition at ~50 keV (the energy at which MU's bone and soft tissue sit): set plaster is calcium
  sulphate dihydrate, mu/rho ~0.48 cm2/g (mass-weighted from NIST XCOM elemental values: Ca 23 %, S 19 %,
  O 56 %, H 2 %), against 0.42 for cortical bone. Gypsum crystal (2.32 g/cm3) would give 0.11/mm, but a set
  cast is porous (it is mixed with ~0.6-0.8 parts water): at a bulk density of ~1.0-1.2 g/cm3 (ASSUMED, dry
  cast) 0.05-0.06/mm, MU["plaster"] = 0.050/mm, 0.6 x cortex per mm. The exposure rules radiographers use
  agree: plaster +5-10 kVp (small to large casts), fibreglass +3-4 kVp (Bontrager's cast conversion table,
  as commonly quoted; not checked against the book here); by the 15 % rule that is x1.8-2.3 vs x1.3-1.4 in
  exposure, i.e. mu*t of ~0.6-0.8 through two plaster walls of 5-10 mm (0.04-0.06/mm) and ~0.3 through two
  fibreglass walls of 3-5 mm (~0.035/mm). Fibreglass (E-glass knit in polyurethane resin, an open mesh):
  MU["fibreglass"] = 0.035/mm, 1.75 x soft tissue, with a diagonal mesh texture of 2.5 mm pitch (ASSUMED).
  Shell thickness (CAST_SHELL_MM): plaster 5-10 mm, fibreglass 3-5 mm (usual application: plaster 6-8 layers,
  fibreglass 3-4 layers; ASSUMED ranges). Padding under the cast is not modelled. Seen tangentially, a
  plaster shell is brighter than bone, as on real films. (Generator 2.0 drew every cast at 0.040/mm.)
- Casts: CAST_RATE (50 % of acute fractures of castable types, 60 % after K-wiring, 30 % after other
  fixation) and 4 % of normal studies, so MURA's known shortcut exists here (assumed rates, set so that
  hardware or cast is on ~46 % of abnormal studies, near Pure-MURA's 50 %).

Masks per image: `masks/<split>/.../imageJ_bones.png` (255 on the bones that define the body part) and
`imageJ_lesion.png` (bit flags: 1 fracture, 2 hardware, 4 cast, 8 degenerative; `utils.data.LESION_BITS`).

Every random choice flows from `--seed` through `numpy.random.SeedSequence`s: one for the plan (patients,
types, labels, views), one per study for its findings (spawn key (3, study)) and one per study for its
renders (spawn key (1, study)); so the output does not depend on the number of worker processes, the plan
does not depend on the lesion generator, and no render draw depends on the findings (nuisances stay
independent of the class). Generator 3.0 (cast materials, trabecular texture, inverted and washed-out
films, label noise) keeps 2.0's draws: the cast's material and thickness are drawn last in the study's
findings stream, and the texture and display coins come from a side stream seeded by the render stream's
state as each view starts (_side_stream), so the render stream is consumed as in 2.0 and both renders of a
counterfactual pair share texture and display. Generator 2.0 (the mix above) replaced 1.0 (1-2 mm fracture
gaps and thin hardware only); `ensure` regenerates trees written by another version.

Label noise (`label_noise`, `--label-noise`, default 0: labels are the truth). MURA's labels come from the
clinical report of one radiologist; in MURA's test set radiologists agreed with the gold standard (three
radiologists' majority) at Cohen's kappa 0.73-0.78 (Rajpurkar et al. 2018, table 2). Missed fractures are
the commonest diagnostic error in emergency departments (Guly 2001, Emerg Med J, 79.7 % of diagnostic
errors), and the missed ones are the subtle ones; so with label_noise = q, a subtle finding (`subtle`: a non-
or minimally displaced fracture without hardware or cast, or grade I degenerative change) is reported normal
with probability q, and a normal study is over-called with probability OVERCALL * q (OVERCALL = 0.1,
ASSUMED); other findings are always reported. One uniform per study, from its own stream (spawn key (5,
study)), so the plan, findings and images are those of q = 0. Subtle findings are 26.5 % of abnormal studies,
so on a plan of 6000 patients (seed 0) kappa(noisy, true) is 0.90 at q = 0.3, 0.83 at 0.5, 0.80 at 0.6, 0.78
at 0.65, 0.76 at 0.7, 0.75 at 0.75, 0.73 at 0.8 and 0.66 at 1.0: q ~ 0.7-0.75 reproduces MURA's
kappa ~0.75 (about 19-20 % of abnormal studies labelled normal, 6-7 % of normal ones abnormal). The folders and
CSVs carry the noisy label; `true_labels.csv` (study, label, true_label) and phantom.json's studies the truth.

How visible the findings are (`finding_visibility`, generator 3.1, seed 0, 3 studies per kind, rendered at 512 px,
medians over views; extent and width in mm of anatomy, the long and short side of the lesion mask's
minimum-area rectangle; px after letterboxing to the input size; CNR = mean |with - without| over the
mask's footprint / the film's noise SD from its high-pass residual, both after letterboxing):

    kind                                 views extent width   width px at 64/96/128/224    CNR at 64/96/128/224
    fracture, non/minimally displaced        6     47  36.6   11.6/17.5/23.3/40.7          9.8/11/11/13
    fracture, displaced                      7     25  19.9   7.7/11.5/15.3/26.8           6.5/8.6/12/14
    fracture, comminuted                     6     28  15.6   8.4/12.6/16.8/29.3           4.6/4.5/4.7/6.2
    hardware: plate                          9     53  23.2   9.5/14.2/19.0/33.2           62/85/110/150
    hardware: nail                           7    127  27.7   6.5/9.8/13.1/22.9            32/36/43/51
    hardware: screws                         5     20   4.5   1.4/2.1/2.8/4.8              25/35/51/76
    hardware: K-wires, tension band          9     39   1.8   1.6/2.4/3.2/5.6              34/40/47/73
    hardware: arthroplasty, radial head      8    131  50.2   15.9/23.9/31.8/55.7          10/11/13/18
    cast: plaster                            8    170  63.1   19.2/28.7/38.3/67.0          64/106/122/189
    cast: fibreglass                         8    161  64.9   21.7/32.6/43.5/76.1          34/34/35/47
    degenerative, grade I                    6     41  15.0   5.6/8.5/11.3/19.8            5.8/7.6/9.9/10
    degenerative, grade II                   9     36  20.6   7.1/10.7/14.2/24.9           1.3/1.5/1.9/2.4
    degenerative, grade III                  8     58  28.5   10.4/15.5/20.7/36.3          9.9/13/14/21
At 64 px every kind keeps a median CNR above 1 against the pixel noise: implants and casts by tens (a
K-wire or screw is only ~1.5 px wide there, but metal is bright), fractures by 4-10, mostly through the
displaced or angled bone the mask holds (a fracture line of 1-2 mm is under one pixel at 64 px), and
degenerative change least (grade II ~1.3, n small). CNR measures contrast against pixel noise, not against
the anatomy's own structure, so it is an upper bound on what a reader or a network sees.
"""
from __future__ import annotations

import argparse
import dataclasses
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

from .data import LESION_BITS

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
CASTABLE = ("FINGER", "HAND", "WRIST", "FOREARM", "ELBOW")

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


def _finger_fov_centre(prims: list[Prim], f: int):
    pp = next(p for p in prims if p.name == f"pp{f}").geom
    return (pp[2], pp[3])  # distal end of the proximal phalanx


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


def _hardware_spec(rng: np.random.Generator, part: str, kind: str, site: tuple) -> tuple[dict, tuple]:
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


def _draw_alloy(spec: dict, rng: np.random.Generator) -> None:
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


def _cast_spec(rng: np.random.Generator) -> dict:
    """A cast: its length (0.5-1: 75-110 mm proximal of the site), material and shell thickness (mm). Drawn last
    in the study's findings stream, so the draws before it are generator 2.0's."""
    length = float(rng.uniform(0.5, 1.0))
    material = "plaster" if rng.random() < PLASTER_SHARE else "fibreglass"
    return dict(length=length, material=material, shell=_uni(rng, CAST_SHELL_MM[material]))


def _lesion_spec(rng: np.random.Generator, part: str, abnormal: bool, finger: int) -> dict:
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
            spec["cast"] = _cast_spec(rng)
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
        spec["hardware"], spec["site"] = _hardware_spec(rng, part, kind, spec["site"])
        if pres == "fixed":
            spec["fracture"] = _fracture_spec(rng, "reduced", comminution=bool(rng.random() < 0.3))
            rate = CAST_RATE["fixed_kwires" if kind == "kwires" else "fixed"]
    if part in CASTABLE and rng.random() < rate:
        spec["cast"] = _cast_spec(rng)
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
    b_end = _rot((x1 + T[0], y1 + T[1]), b_start, ang)
    out = [replace(pr, name=pr.name + "_distal", geom=(*b_start, *b_end, r, r1))]
    for k, f in enumerate(fr.get("fragments", ())):
        c = _add(F, (u, (f["pos"] - 0.5) * 2 * zh), (n, f["offset"] * r))
        d = _rot(u, (0.0, 0.0), math.radians(f["angle"]))
        half = max(0.6, f["length"] * zh / max(len(fr["fragments"]), 1))
        out.append(replace(pr, name=f"{pr.name}_fragment{k}", geom=(*_add(c, (d, -half)), *_add(c, (d, half)),
                                                                    f["radius"] * r, f["radius"] * r * 0.8),
                           tags=("fracture",)))
    reach = zh + abs(g) / 2 + r * 0.6
    out.append(_cap("lesion_fracture", _add(F, (u, -reach)), _add(F, (u, reach)), r * 1.35 + abs(sh),
                    material="mask", tags=("fracture",)))
    def motion(q, T=T, b_start=b_start, ang=ang):
        return _rot((q[0] + T[0], q[1] + T[1]), b_start, ang)

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
    pr = _cap(name, p, q, d / 2, (d if d2 is None else d2) / 2, material="metal", tags=("hardware",))
    return replace(pr, group=group) if group else pr


def _metal_dot(name, c, d, length):
    """A screw seen end-on: a disc of diameter d with `length` mm of metal along the beam."""
    return _ell(name, c, d / 2, d / 2, 0.0, depth=length / 2, material="metal", cortex=0.0, tags=("hardware",))


def _hardware_solids(prims: list[Prim], hw, site, F, u, n, r, L) -> list[Prim]:
    """The implant `hw` (from _hardware_spec) at the site's frame (point F, axis u, normal n, radius r,
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
            d = _rot(u, (0.0, 0.0), a)
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
                d = _rot(u, (0.0, 0.0), a)
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
        out.append(_ell("radial_head_prosthesis", rh[0:2], D / 2, Hh / 2, rh[4], depth=D / 2, material="metal",
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
            out.append(_ell("glenosphere", _add(cg, (to_g, -6)), G / 2, G / 2, 0.0, depth=0.3 * G, material="metal",
                            cortex=0.0, tags=("hardware",)))
            out.append(_ell("humeral_cup", _add(c, (to_g, 0.45 * hh[2])), G / 2 + 2, G / 2 + 2, 0.0, depth=4.0,
                            material="metal", cortex=0.0, tags=("hardware",)))
        else:
            D = hw.get("head", 46.0)
            out.append(_ell("prosthesis_head", _add(c, (to_g, 1.0)), D / 2, D / 2, 0.0, depth=0.35 * D,
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


def _apply_lesions(prims: list[Prim], spec: dict) -> list[Prim]:
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
                    out[k] = _transform_prim(p, motion, 1.0, ang)
        if spec.get("hardware"):
            alloy = spec["hardware"].get("alloy", "metal")  # generator 3.0's specs carry none
            extra += [dataclasses.replace(p, material=alloy) if p.material == "metal" else p
                      for p in _hardware_solids(prims, spec["hardware"], name, F, u, n, r, L)]
        if "cast" in spec:
            c = spec["cast"] if isinstance(spec["cast"], dict) else dict(length=spec["cast"])  # 2.0: a float
            half = 40 + 70 * c["length"]
            mat = c.get("material", "cast")
            shell = c["shell"] / (r + 24) if "shell" in c else 0.25  # relative to the shell's mean outer radius
            extra.append(_cap("cast", (F[0] - u[0] * half, F[1] - u[1] * half),
                              (F[0] + u[0] * half * 0.7, F[1] + u[1] * half * 0.7), r + 26, r + 22,
                              material=mat, cortex=shell, tags=("cast",)))
    if spec.get("degenerative"):
        extra += _djd_solids(prims, spec["degenerative"])
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
                st.lesion = _lesion_spec(lrng, part, bool(label), finger)
                _draw_alloy(st.lesion, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, len(studies)))))
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
    from .data import letterbox

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
    import pandas as pd

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
                                "utils.phantom (a real MURA tree has no generator plan)")
    meta = json.loads(path.read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root} was written by phantom generator {meta.get('generator_version')}, this is "
                         f"{GENERATOR_VERSION}: regenerate it (python -m utils.phantom) to re-render its studies")
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
    from tqdm import tqdm

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
    ap = argparse.ArgumentParser(prog="python -m utils.phantom", description=__doc__.split("\n\n")[0])
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
