"""A radiograph phantom written in MURA v1.1's exact layout, with ground-truth masks.

MURA cannot be shipped, so this module generates a stand-in that looks and
behaves like it::

    python -m utils.data.phantom --out data/phantom --seed 0 --train-patients 1100 --valid-patients 260

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
renders (spawn key (1, study)), and one per study and kind for a finding *added* to a normal study by the
counterfactual test (`added_finding`, spawn key (8, study, 0 cast / 1 hardware), never used by the tree); so the output does not depend on the number of worker processes, the plan
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

from .anatomy import (
    GENERATOR_VERSION, LESION_TAGS, PARTS, MURA_STUDIES, STUDY_SHARE, ABNORMAL_RATE, VIEWS_P, MU, METALS,
    ALLOY_MIX, Prim, cap_solid, ellipsoid_solid, rotate_point, Anatomy, build_limb, build_leg, build_chest,
    transform_prim, FOV, OOD_PARTS, BUILDERS, KEY_BONES, FRACTURE_SITES, CASTABLE, Study, finger_fov_centre,
)
from .findings import (
    ABNORMAL_MIX, FRACTURE_PATTERN, HARDWARE_MIX, CAST_RATE, NORMAL_CAST_RATE, PLASTER_SHARE, CAST_SHELL_MM,
    PLATES, PLATE_SIZE, NAIL_MM, LOCKING_SCREW_MM, KWIRE_MM, CERCLAGE_MM, LAG_SCREW_MM, SHOULDER_HEAD_MM,
    GLENOSPHERE_MM, RADIAL_HEAD_MM, FRACTURE_GEOM, DJD_JOINTS, DJD_JOINTS_PER_STUDY, DJD_GRADE,
    DJD_OSTEOPHYTE_MM, DJD_NARROWING, DJD_SCLEROSIS_MM, draw_alloy, lesion_spec, CARRIED, apply_lesions,
)
from .render import (
    TRABECULAR, INVERTED_RATE, WASHED_OUT_RATE, WASHED_OUT, render_view, RenderedView, render_study, as_written,
)
from .build import (
    plan_ood_studies, OVERCALL, subtle, plan_studies, VISIBILITY_KINDS, pair_cnr, finding_visibility, load_plan,
    settings_dict, generate, ensure, main, added_finding,
)
