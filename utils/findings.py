"""The README's findings, written from the committed results, so that its numbers cannot drift from the report.

    python -m utils.findings            # rewrite the README's two generated parts and figures/summary_forest.png
    python -m utils.findings --check    # exit 1 if either part or the figure differs from the results (tests do this)

Every number in the generated parts is read from `report/results/*.json` (the body-part task),
`report/abnormality/results/*.json` (MURA's normal/abnormal task), `report/recipe/*.json` (controlled training
runs, the learnability ladder) and `report/evidence/null_simulation.md` (the interval rule's measured error
rates); nothing is typed by hand. The README holds two generated parts:

- the *summary* (`SUMMARY_START` ... `SUMMARY_END`, `summary`): the research questions with their answers in plain
  words, a verdict table, the forest plot of every method against the MAP network (`forest_figure`, written to
  `figures/summary_forest.png`), the interval rule's error rates, the learnability ladder, links to the rendered
  notebooks and a glossary. Its answer sentences are templates whose verdict words are chosen from the intervals.
- the *details* (`START` ... `END`, `block`; `utils.site` puts the same block on the report's index page): the full
  tables of differences, whether the members fit, the controlled runs, MURA's per-study score and what the run
  does not settle, inside <details>.

Paired differences are the method minus the MAP network (member 0's where the method is fitted on member 0, as
the calibration chapter pairs them), with their 95 % study-bootstrap interval (`utils.evidence`). A difference is
called better or worse only where its interval excludes zero, and *borderline* where that interval ends within
rounding of zero at the printed precision (a rebuild on another host can move such a verdict); otherwise "no
difference shown", which is the absence of evidence, not evidence of no difference. A difference whose estimate
and both ends round to zero is *negligible* and printed in a finer unit (e.g. "× 10⁻⁴ nats"); one that is zero in
every replicate (temperature scaling's accuracy) is no verdict and is not counted as one.

What the generated text may say is bounded by the results: the ECE it leads with is the debiased ECE where the
results carry it (the plug-in ECE's intervals undercover and, between calibrated predictors, give false verdicts:
`null_simulation_line`); Q1's one word is computed from the verdicts (`_q1_headline`), without the all-weights
Laplace, whose sampled networks classify at chance (`all_weights_note`); a task whose networks are near-constant
predictors (`near_constant`) is named so in both answers, and its error-flag comparisons are marked as testing no
usable classifier; a claim with no interval in the results (the controlled runs, the direction of miscalibration
that the validation temperatures suggest) is stated as such or not made.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from pathlib import Path

from .config import ROOT

START, END = "<!-- findings:start (python -m utils.findings) -->", "<!-- findings:end -->"
SUMMARY_START, SUMMARY_END = "<!-- summary:start (python -m utils.findings) -->", "<!-- summary:end -->"
FOREST = Path("figures") / "summary_forest.png"  # beside the notebooks' figures; relative to the repository
FOREST_VERSION = "2"  # part of the figure's digest: bump when the drawing changes, so --check asks for a redraw
GLOSSARY_HEADING = "### Glossary"
DETAILS_HEADING = "## Details"

LOWER_IS_BETTER = {"nll": True, "ece": True, "ece_debiased": True, "accuracy": False, "auroc": False,
                   "pointing": False}
SCALE = {"nll": (1.0, 3, " nats"), "ece": (100.0, 2, " points"), "ece_debiased": (100.0, 2, " points"),
         "accuracy": (100.0, 2, " points"), "auroc": (1.0, 3, ""), "pointing": (100.0, 1, " points")}
NAME = {"nll": "NLL", "ece": "ECE", "ece_debiased": "debiased ECE", "accuracy": "accuracy", "auroc": "AUROC",
        "pointing": "pointing share"}
FOREST_METRICS = ("nll", "ece_debiased", "ece", "accuracy")  # "ece" only where a row lacks the debiased ECE
TASKS = (("", "body part", "Body part (7 classes)"), ("abnormality", "normal / abnormal",
                                                      "Normal / abnormal (MURA's task, per image)"))

PLAIN = {  # the methods' registry labels (utils.posteriors) in plain words
    "MAP": "MAP network",
    "temperature scaling": "temperature scaling",
    "MC dropout": "MC dropout",
    "Laplace, diag": "last-layer Laplace, diagonal",
    "Laplace, kron": "last-layer Laplace, K-FAC",
    "Laplace, full": "last-layer Laplace, full covariance",
    "Laplace, kron, layer-wise prior": "last-layer Laplace, K-FAC, a prior per layer",
    "Laplace, kron, all weights": "Laplace over all weights, K-FAC (member 0)",
    "deep ensemble": "deep ensemble",
    "mixture of Laplace, kron": "mixture of the members' K-FAC Laplaces",
}

GLOSSARY = {  # every abbreviation and coined term the README uses, one line each
    "MAP": "maximum a posteriori: the single network trained with weight decay (a Gaussian prior), the baseline "
           "every method is compared with; the report trains several (members) from different seeds.",
    "NLL": "negative log-likelihood of the true class, averaged over test images (nats): lower is better; it "
           "punishes confident mistakes.",
    "ECE": "expected calibration error: the gap between confidence and accuracy, averaged over 15 confidence bins "
           "(in points of %); the plug-in estimate is biased upwards on finite data, the *debiased ECE* "
           "(Kumar et al. 2019) corrects that.",
    "MURA": "Stanford's public set of upper-limb radiographs (v1.1), each study labelled normal or abnormal; "
            "*MURA-valid* is its public validation split, used as the test set.",
    "AUROC / ROC": "area under the receiver operating characteristic curve: the chance that a score ranks a random "
                   "positive (an error, an abnormal study, an unfamiliar image) above a random negative; 0.5 is "
                   "chance.",
    "kappa": "Cohen's kappa: agreement of the normal/abnormal call with the label beyond chance; MURA's score.",
    "AURC": "area under the risk-coverage curve: the error rate averaged over all shares of cases the model keeps "
            "when it refers its least confident ones (lower is better).",
    "AUGRC": "area under the generalised risk-coverage curve: like AURC, counting errors among all cases, not only "
             "the kept ones.",
    "LAC": "least ambiguous classifier: the conformal prediction set of every class whose probability clears a "
           "threshold.",
    "APS": "adaptive prediction sets: conformal sets that add classes in order of probability until their mass "
           "clears a threshold.",
    "RAPS": "regularised APS: APS with a penalty on large sets.",
    "Laplace": "Laplace approximation: a Gaussian posterior over weights centred on the MAP network, its spread "
               "from the loss's curvature; *last-layer* when only the final layer is treated (`laplace-torch`).",
    "K-FAC": "Kronecker-factored curvature: a block-wise approximation of the Laplace posterior's covariance.",
    "MC dropout": "Monte Carlo dropout: dropout left on at test time, the predictions averaged over passes.",
    "temperature scaling": "one number T fitted on the validation split that divides the logits (T < 1 sharpens, "
                           "T > 1 softens).",
    "τ": "tau: the factor the all-weights Laplace's spread is multiplied by after the fact (a tempered, not the "
         "Bayesian, posterior at τ < 1).",
    "deep ensemble": "the members' predictions averaged.",
    "CAM": "class activation map: where in the image the last convolutional features vote for a class.",
    "Grad-CAM": "gradient-weighted CAM: a CAM whose channel weights are the class score's gradients.",
    "explanation spread": "how much the CAMs of posterior samples or members disagree on an image.",
    "pointing": "how often a map's peak lies on the bones that define the class (the phantom's masks).",
    "class-mask prior": "a map that knows only where the class's defining bones usually lie (averaged over "
                        "training masks), the baseline an explanation must beat.",
    "study": "MURA's unit: the images of one patient's examination; intervals resample studies, not images.",
    "CNN": "convolutional neural network; *ResNet-18* is an 18-layer residual CNN (the gpu profile's).",
    "DTU": "Technical University of Denmark (course 02460, where the two first reports were written).",
    "AP": "anteroposterior: a radiograph taken front to back.",
    "CPU / GPU": "the processor / a graphics card used for training.",
    "VM": "virtual machine (where the timings were measured).",
    "NIST": "the US National Institute of Standards and Technology, whose X-ray attenuation tables the phantom's "
            "implants use.",
    "CI": "continuous integration: the tests a code host runs on every change (`.ci/run`).",
    "CSV / PNG / RGB / CUDA / MB": "comma-separated values / an image file format / colour images / NVIDIA's GPU "
                                   "platform / megabytes.",
    "phantom": "the synthetic stand-in for MURA that the repository generates (*The data*); not patients.",
}


# --------------------------------------------------------------------------- small formatting helpers

def _load(folder: Path, name: str) -> dict | None:
    f = folder / "results" / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _ci(v, lo, hi, digits: int = 3, factor: float = 1.0, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(factor * v)} [{fmt.format(factor * lo)}, {fmt.format(factor * hi)}]"


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _degenerate(d: float, lo: float, hi: float) -> bool:
    """A difference that is exactly zero in every replicate (temperature scaling's accuracy: T never changes the
    argmax): not a verdict."""
    return d == lo == hi == 0


def _negligible(metric: str, d: float, lo: float, hi: float) -> bool:
    """The difference and both ends of its interval round to zero at the printed precision (and are not all zero)."""
    factor, digits, _ = SCALE[metric]
    return not _degenerate(d, lo, hi) and all(round(abs(factor * x), digits) == 0 for x in (d, lo, hi))


def _fine_exponent(metric: str, d: float, lo: float, hi: float) -> int | None:
    """The power of ten to print a difference in where the printed precision would show its estimate as zero and its
    interval in fewer than ten units of the last digit (e.g. -4 for -0.00006 nats); None where it prints well."""
    import math

    factor, digits, _ = SCALE[metric]
    top = max(abs(factor * x) for x in (d, lo, hi))
    if top == 0 or round(abs(factor * d), digits) != 0 or round(top, digits) >= 10 ** (1 - digits):
        return None
    return math.floor(math.log10(top))


def _num(metric: str, d: float, lo: float, hi: float, sign: bool = True, unit: bool = True) -> str:
    """A difference with its interval and unit, as the README prints it, e.g. '-0.023 [-0.041, -0.006] nats'; one
    that would print as zeros is printed in a finer unit, e.g. '-0.6 [-1.2, -0.1] × 10⁻⁴ nats' (signs kept)."""
    factor, digits, u = SCALE[metric]
    e = _fine_exponent(metric, d, lo, hi)
    if e is None:
        return _ci(d, lo, hi, digits, factor, sign) + (u if unit else "")
    return (_ci(d, lo, hi, 1, factor * 10 ** -e, sign) + f" × 10{str(e).translate(SUPERSCRIPT)}"
            + (u if unit else ""))


def verdict(metric: str, delta: float, lo: float, hi: float) -> str:
    """'better', 'worse' or 'no difference shown', with ' (borderline)' where the interval's end nearest zero
    rounds to zero at the printed precision."""
    if lo <= 0 <= hi:
        return "no difference shown"
    factor, digits, _ = SCALE[metric]
    near = min(abs(lo), abs(hi)) * factor
    good = (hi < 0) == LOWER_IS_BETTER[metric]
    return ("better" if good else "worse") + (" (borderline)" if round(near, digits) == 0 else "")


def _qualifier(metric: str, d: float, lo: float, hi: float) -> str:
    """'borderline', 'negligible', 'borderline; negligible' or '' for a difference shown."""
    v = verdict(metric, d, lo, hi)
    if v.startswith("no difference"):
        return ""
    return "; ".join(q for q, on in (("borderline", "borderline" in v), ("negligible", _negligible(metric, d, lo, hi)))
                     if on)


def label(metric: str, d: float, lo: float, hi: float) -> str:
    """The verdict as the tables print it: 'better (borderline; negligible)', 'no difference shown', or 'unchanged
    in every replicate (not a verdict)' for a difference that is zero by construction."""
    if _degenerate(d, lo, hi):
        return "unchanged in every replicate (not a verdict)"
    q = _qualifier(metric, d, lo, hi)
    return verdict(metric, d, lo, hi).split(" (")[0] + (f" ({q})" if q else "")


def _paren(metric: str, d: float, lo: float, hi: float, who: str = "") -> str:
    """'(K-FAC: borderline; negligible: -0.6 [...] × 10⁻⁴ nats)': whose number, the qualifier, the number."""
    q = _qualifier(metric, d, lo, hi)
    return f"({who + ': ' if who else ''}{q + ': ' if q else ''}{_num(metric, d, lo, hi)})"


def _effect(metric: str, d: float, lo: float, hi: float, who: str = "") -> str:
    """What a method does to a score, in words chosen from the interval: 'lowers the NLL (-0.023 [...] nats)',
    'shows no ECE change (...)'."""
    v = verdict(metric, d, lo, hi)
    if v.startswith("no difference"):
        return f"shows no {NAME[metric]} change {_paren(metric, d, lo, hi, who)}"
    return f"{'lowers' if hi < 0 else 'raises'} the {NAME[metric]} {_paren(metric, d, lo, hi, who)}"


def _delta(row: dict, metric: str) -> tuple[float, float, float] | None:
    keys = (f"delta_{metric}", f"delta_{metric}_low", f"delta_{metric}_high")
    if not row or any(row.get(k) is None for k in keys):
        return None
    return tuple(float(row[k]) for k in keys)


def _ece_metric(row_or_rows) -> str:
    """The headline ECE: the debiased ECE where the results carry its difference, else the plug-in ECE."""
    rows = row_or_rows if isinstance(row_or_rows, list) else [row_or_rows]
    return "ece_debiased" if any(_delta(r, "ece_debiased") for r in rows if r) else "ece"


def _plain(method: str) -> str:
    return PLAIN.get(method, method)


def _is_all_weights(method: str) -> bool:
    return "all weights" in method


def _is_last_layer_laplace(method: str) -> bool:
    return method.startswith("Laplace") and not _is_all_weights(method)


def _bayesian(method: str) -> bool:
    """The Bayesian methods Q1's verdict is made from: the all-weights Laplace is left out (prior-dominated: its
    samples classify at chance), shown in the plot and the tables with that flag."""
    return ((method.startswith("Laplace") or method in ("deep ensemble", "mixture of Laplace, kron"))
            and not _is_all_weights(method))


def _link(folder: str, stem: str, root: Path, text: str | None = None) -> str:
    """A link to a rendered notebook (its executed .ipynb, which code hosts render), or its name where the run
    has not written it."""
    rel = f"report/{folder + '/' if folder else ''}{stem}.ipynb"
    return f"[{text or stem[:2]}]({rel})" if (root / rel).is_file() else f"{text or stem[:2]} (not built)"


def _flag_rows(expl: dict | None, predictor: str) -> dict[str, dict]:
    return {r["score"]: r for r in (expl or {}).get("error_flagging", []) if r.get("predictor") == predictor}


def _table_row(expl: dict | None, method: str, metric: str) -> dict | None:
    return next((r for r in (expl or {}).get("table", []) if r.get("method") == method and r.get("metric") == metric
                 and r.get("delta") is not None), None)


# --------------------------------------------------------------------------- the forest plot

def _classes(cal: dict | None) -> int | None:
    """The number of classes, from the per-class rows of the calibration chapter's conformal table."""
    names = {r["subset"] for r in (cal or {}).get("conformal", []) if str(r.get("subset", "")).startswith("class=")}
    return len(names) or None


def all_weights_note(cal: dict | None, expl: dict | None) -> str | None:
    """The all-weights Laplace's flag, from how often its sampled networks classify right: 'prior-dominated
    (samples at chance)' where that interval holds 1 / classes."""
    aw = (expl or {}).get("all_weights", {})
    s = next((r for r in aw.get("shift", []) if r.get("set") == "all-weights Laplace"
              and r.get("samples_right_low") is not None), None)
    k = _classes(cal)
    if not s or not k:
        return None
    if s["samples_right_low"] <= 1 / k <= s["samples_right_high"]:
        return "prior-dominated (samples at chance)"
    return f"samples right {_ci(s['samples_right'], s['samples_right_low'], s['samples_right_high'], 0, 100)} %"


def forest_rows(results: dict[str, dict], notes: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """One row per task, method and metric: the paired difference against the MAP network, scaled as printed
    (nats; points of %), with its interval, verdict and whether that verdict is borderline. The ECE is the debiased
    ECE where a row carries it, else the plug-in ECE. `results` maps a task's name to its calibration.json;
    `notes` a task's name to {method: flag} (`all_weights_note`), printed under the method's name."""
    rows = []
    for task, cal in results.items():
        for r in (cal or {}).get("table", []):
            if r["method"] == "MAP":
                continue
            for m in FOREST_METRICS:
                d = _delta(r, m)
                if d is None or (m == "ece" and _delta(r, "ece_debiased")):
                    continue
                factor = SCALE[m][0]
                row = dict(task=task, method=r["method"], metric=m, delta=round(factor * d[0], 6),
                           low=round(factor * d[1], 6), high=round(factor * d[2], 6),
                           verdict=verdict(m, *d).split(" (")[0], borderline="borderline" in verdict(m, *d),
                           degenerate=_degenerate(*d))
                note = ((notes or {}).get(task) or {}).get(r["method"])
                if note:
                    row["note"] = note
                rows.append(row)
    return rows


def summary_forest_rows(root: Path = ROOT) -> list[dict]:
    """The forest plot's rows from the results under `root`, flags included (what the README's figure shows)."""
    results = _results(Path(root))
    notes = {}
    for _, s, _ in TASKS:
        n = all_weights_note(results[s]["calibration"], results[s]["explanations"])
        if n:
            notes[s] = {m: n for m in PLAIN if _is_all_weights(m)}
    return forest_rows({s: results[s]["calibration"] for _, s, _ in TASKS if results[s]["calibration"]}, notes)


def verdict_count(rows: list[dict]) -> int:
    """The verdicts the forest plot makes: its rows, less the differences that are zero in every replicate."""
    return sum(not r.get("degenerate") for r in rows)


def forest_digest(rows: list[dict]) -> str:
    return hashlib.sha256((FOREST_VERSION + json.dumps(rows, sort_keys=True)).encode()).hexdigest()


def _panel_limit(extents: list[float]) -> tuple[float, set[int]]:
    """The half-width of a panel's x axis and the points left off-scale: the largest extent is left off while it
    is more than 5 times the next (one method far off would squash the others to a dot)."""
    order = sorted(range(len(extents)), key=lambda i: -extents[i])
    off: set[int] = set()
    while len(order) - len(off) > 1 and extents[order[len(off)]] > 5 * extents[order[len(off) + 1]]:
        off.add(order[len(off)])
    rest = [e for i, e in enumerate(extents) if i not in off]
    lim = 1.12 * max(rest) if rest and max(rest) > 0 else 1.0
    return lim, off


def forest_figure(rows: list[dict]):
    """Every method's paired difference against the MAP network: one panel per metric (columns) and task (rows),
    a point per method with its 95 % interval as a bar, the zero line, points coloured by verdict and hollow (with a
    lighter bar) where the verdict is borderline; a method far off the others' scale is drawn at the panel's edge
    as an arrow with its value printed; a method's flag (`note`) is printed under its name. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    metrics = [m for m in FOREST_METRICS if any(r["metric"] == m for r in rows)]
    colour = {"better": "#1a7f37", "worse": "#cf222e", "no difference shown": "#57606a"}
    n_methods = max([len({r["method"] for r in rows if r["task"] == t}) for t in tasks] or [1])
    fig, axes = plt.subplots(max(len(tasks), 1), max(len(metrics), 1), squeeze=False,
                             figsize=(4.1 * max(len(metrics), 1) + 2.4, 0.5 + (0.34 * n_methods + 0.9) * len(tasks)))
    for i, task in enumerate(tasks):
        methods = list(dict.fromkeys(r["method"] for r in rows if r["task"] == task))
        notes = {r["method"]: r["note"] for r in rows if r["task"] == task and r.get("note")}
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            pts = {r["method"]: r for r in rows if r["task"] == task and r["metric"] == m}
            ms = [k for k in methods if k in pts]
            ext = [max(abs(pts[k]["low"]), abs(pts[k]["high"]), abs(pts[k]["delta"])) for k in ms]
            lim, off = _panel_limit(ext)
            ax.axvline(0, color="0.15", lw=1.0, zorder=1.8)
            for n, k in enumerate(ms):
                r, y = pts[k], methods.index(k)
                ax.hlines(y, max(r["low"], -lim), min(r["high"], lim), color=colour[r["verdict"]], lw=2.2, zorder=2,
                          alpha=0.45 if r.get("borderline") else 1.0)
            for hollow in (False, True):
                inside = [k for n, k in enumerate(ms) if n not in off and bool(pts[k].get("borderline")) == hollow]
                if not inside:
                    continue
                cs = [colour[pts[k]["verdict"]] for k in inside]
                ax.scatter([pts[k]["delta"] for k in inside], [methods.index(k) for k in inside], s=34 if hollow else 30,
                           zorder=3, facecolors="white" if hollow else cs, edgecolors=cs, linewidths=1.4,
                           gid="forest-point")
            for n in sorted(off):
                k = ms[n]
                r, y = pts[k], methods.index(k)
                right = r["delta"] > 0
                c = colour[r["verdict"]]
                ax.scatter([0.95 * lim if right else -0.95 * lim], [y], marker=">" if right else "<", s=60, zorder=3,
                           facecolors="white" if r.get("borderline") else c, edgecolors=c, gid="forest-point",
                           clip_on=False)
                factor, digits, _ = SCALE[m]
                ax.annotate(f"{_ci(r['delta'], r['low'], r['high'], digits if factor == 1 else 1, 1, True)}, off scale",
                            (0.9 * lim if right else -0.9 * lim, y), ha="right" if right else "left", va="center",
                            fontsize=7.5, xytext=(0, 9), textcoords="offset points", color=c)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(len(methods) - 0.5, -0.5)
            ax.set_yticks(range(len(methods)))
            ax.set_yticklabels([_plain(k) + (f"\n{notes[k]}" if k in notes else "") for k in methods]
                               if j == 0 else [])
            ax.grid(axis="x", color="0.9", lw=0.6)
            better = "left" if LOWER_IS_BETTER[m] else "right"
            ax.set_title(f"{task}: {NAME[m]}", fontsize=10, loc="left")
            ax.set_xlabel(f"method - MAP network ({SCALE[m][2].strip() or 'difference'}; {better} is better)",
                          fontsize=8.5)
            ax.tick_params(labelsize=8)
    handles = [Line2D([0], [0], color=c, marker="o", lw=2.2, label=v) for v, c in colour.items()]
    handles.append(Line2D([0], [0], color="#57606a", alpha=0.6, marker="o", markerfacecolor="white", lw=2.2,
                          label="borderline (an end within rounding of 0)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9,
               title="verdict (95 % paired study-bootstrap interval against zero)", title_fontsize=9,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def write_forest(rows: list[dict], path: Path) -> Path:
    """Draw the forest plot and save it as a palette PNG (as `utils.plots.savefig` does) that carries the digest
    of the numbers it shows, so that `--check` can tell a stale figure without drawing it again."""
    import matplotlib.pyplot as plt
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .plots import DPI

    fig = forest_figure(rows)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    info = PngInfo()
    info.add_text("findings-digest", forest_digest(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True, pnginfo=info)
    return path


def forest_is_current(rows: list[dict], path: Path) -> bool:
    from PIL import Image

    if not path.is_file():
        return False
    with Image.open(path) as im:
        return im.info.get("findings-digest") == forest_digest(rows)


# --------------------------------------------------------------------------- the summary

def _results(root: Path) -> dict:
    out = {}
    for folder, short, _ in TASKS:
        base = root / "report" / folder if folder else root / "report"
        out[short] = {n: _load(base, n) for n in ("calibration", "map", "explanations", "abnormality", "data")}
    return out


def _q1_metrics(cal: dict | None) -> tuple[str, ...]:
    return ("nll", _ece_metric((cal or {}).get("table", [])), "accuracy")


def _shown(cal: dict | None) -> tuple[int, int]:
    """(differences shown, differences made): every method but the all-weights Laplace against the MAP network on
    NLL, the headline ECE and accuracy, leaving out the differences that are zero in every replicate."""
    ds = [_delta(r, m) for r in (cal or {}).get("table", []) if not _is_all_weights(r["method"])
          for m in _q1_metrics(cal)]
    v = [verdict(m, *d) for m, d in zip(_q1_metrics(cal) * len(ds), ds) if d and not _degenerate(*d)]
    return sum(not x.startswith("no difference") for x in v), len(v)


def near_constant(res: dict) -> dict | None:
    """Where a task's networks are near-constant predictors (the deep ensemble's study kappa is at most zero at its
    interval's upper end, or member 0 recalls under 5 % of a class), the numbers that show it: the ensemble's and
    the body-part baseline's rows of abnormality.json, member 0's fit, its calls of the rarer class, the majority
    share; None elsewhere."""
    t = {(r["method"], r.get("body_part")): r for r in (res.get("abnormality") or {}).get("table", [])}
    e, b = t.get(("deep ensemble", "all")), t.get(("body-part prevalence (baseline)", "all"))
    mp = res.get("map") or {}
    pc = {c: v for c, v in (mp.get("per_class") or {}).items() if v.get("recall") is not None}
    flat_kappa = e is not None and e.get("kappa high") is not None and e["kappa high"] <= 0
    if not (flat_kappa or (pc and min(v["recall"] for v in pc.values()) < 0.05)):
        return None
    out = dict(ens=e, base=b, fit=mp.get("fit"), test_acc=(mp.get("test") or {}).get("accuracy"))
    n = {c: v.get("test images") for c, v in pc.items()}
    if pc and all(n.values()):
        rare = min(pc, key=lambda c: pc[c]["recall"])
        tp = round(pc[rare]["recall"] * n[rare])
        prec = pc[rare].get("precision")
        out |= dict(total=sum(n.values()), rare=rare, n_rare=n[rare], majority=max(n, key=n.get),
                    majority_share=max(n.values()) / sum(n.values()),
                    called=round(tp / prec) if tp and prec else None)
    return out


def _kappa(r: dict) -> str:
    return _ci(r["study kappa"], r["kappa low"], r["kappa high"])


def _flat_clause(short: str, f: dict) -> str:
    """'On <task> the networks are near-constant predictors: ...', with the numbers that show it."""
    e, b = f.get("ens"), f.get("base")
    called = next((e[k] for k in ("studies called abnormal", "called abnormal") if e and e.get(k) is not None), None)
    s = f"On {short} the networks are near-constant predictors"
    if e and called is not None:
        s += f": the ensemble calls {called:.0f} of {e['studies']} studies abnormal (kappa {_kappa(e)}"
        s += f", against {_kappa(b)} for a body-part-only predictor)" if b else ")"
    elif e:
        s += f": the ensemble's study kappa is {_kappa(e)}"
        s += f", against {_kappa(b)} for a body-part-only predictor" if b else ""
    fit = f.get("fit")
    if fit:
        s += f"; member 0 fits {100 * fit['train_acc']:.1f} % of its training images"
        if f.get("called") is not None:
            s += f" and calls {f['called']} of {f['total']} test images {f['rare']}"
        if f.get("test_acc") is not None and f.get("majority_share") is not None:
            s += (f" ({100 * f['test_acc']:.1f} % right; all {f['majority']}: "
                  f"{100 * f['majority_share']:.1f} %)")
    return s + "."


def _cmp(metric: str, d: float, lo: float, hi: float) -> str:
    """'lower (...)', 'higher (...)' or 'not shown to differ (...)'."""
    v = verdict(metric, d, lo, hi)
    word = "not shown to differ" if v.startswith("no difference") else "lower" if hi < 0 else "higher"
    return f"{word} {_paren(metric, d, lo, hi)}"


def _q1_sentence(short: str, res: dict) -> str | None:
    cal = res["calibration"]
    if not cal:
        return None
    rows = {r["method"]: r for r in cal["table"]}
    ece = _ece_metric(cal["table"])
    flat = near_constant(res)
    fit = (res["map"] or {}).get("fit")
    lead = _flat_clause(short, flat) + " There" if flat else f"On {short}"
    underfit = (f"; the networks there fit only {fit['train_acc']:.0%} of their own training images"
                if fit and not fit.get("fits", True) and not flat else "")
    shown, made = _shown(cal)
    ens = rows.get("deep ensemble")
    if made and not shown:
        key = f"; ensemble NLL {_num('nll', *_delta(ens, 'nll'))}" if _delta(ens, "nll") else ""
        return f"{lead} no method differs from the MAP network ({shown} of {made} differences shown{key}){underfit}."
    parts = []
    if _delta(ens, "nll") and _delta(ens, ece):
        e = _effect(ece, *_delta(ens, ece))
        plug = _delta(ens, "ece")
        if ece != "ece" and plug and verdict("ece", *plug).split(" (")[0] != verdict(ece, *_delta(ens, ece)).split(" (")[0]:
            e = e[:-1] + f"; plug-in {_num('ece', *plug, unit=False)}, {label('ece', *plug)})"
        s = f"the deep ensemble {_effect('nll', *_delta(ens, 'nll'))} and {e}".replace(") and shows no", ") and no")
        vs = {r["metric"]: r for r in cal.get("ensemble_vs_best_single", [])}
        items = [(m, vs[m]) for m in ("nll", ece) if m in vs]
        if items and (any(x["best_single"] == "temperature scaling" for _, x in items)
                      or any(not verdict(m, x["delta"], x["low"], x["high"]).startswith("no") for m, x in items)):
            by: dict[str, list] = {}
            for m, x in items:
                by.setdefault(x["best_single"], []).append((m, x))
            for other, ms in by.items():
                s += (f"; against {_plain(other)} its " +
                      " and its ".join(f"{NAME[m]} {'is ' if i == 0 else ''}{_cmp(m, x['delta'], x['low'], x['high'])}"
                                       for i, (m, x) in enumerate(ms)))
        parts.append(s)
    lap = [m for m in rows if _is_last_layer_laplace(m) and _delta(rows[m], "nll")]
    if lap:
        key = "Laplace, kron" if "Laplace, kron" in lap else lap[0]
        v = verdict("nll", *_delta(rows[key], "nll")).split(" (")[0]
        same = sum(verdict("nll", *_delta(rows[m], "nll")).split(" (")[0] == v for m in lap)
        gain = any(verdict(x, *_delta(rows[m], x)).startswith("better") for m in lap for x in ("nll", ece)
                   if _delta(rows[m], x))
        if same == len(lap):
            t = (f"{'last-layer Laplace shows no gain: every variant' if not gain else 'every last-layer Laplace'} "
                 f"{_effect('nll', *_delta(rows[key], 'nll'), who='K-FAC')}")
        else:
            t = (f"{'last-layer Laplace shows no gain: ' if not gain else ''}the K-FAC last-layer Laplace "
                 f"{_effect('nll', *_delta(rows[key], 'nll'))}, as do {same - 1} of the other {len(lap) - 1} "
                 "last-layer variants")
        parts.append(t)
    if not parts:
        return None
    return f"{lead} " + "; ".join(parts) + underfit + "."


def _q1_headline(results: dict) -> str:
    """'Yes' only where a Bayesian method (the all-weights Laplace left out) is better on both NLL and the headline
    ECE and none is worse on anything; 'Mixed' where some are better and some worse (the ensemble against the best
    single-model method included); 'In part' where some are better and none worse; else 'No gain shown'. Negligible
    differences (all three numbers zero at the printed precision) count neither way."""
    better, worse = set(), set()
    for short, res in results.items():
        cal = res["calibration"] or {}
        ms = _q1_metrics(cal)
        for r in cal.get("table", []):
            for m in ms:
                d = _delta(r, m)
                if not d or not _bayesian(r["method"]) or _degenerate(*d) or _negligible(m, *d):
                    continue
                v = verdict(m, *d)
                (better if v.startswith("better") else worse if v.startswith("worse") else set()).add(
                    (short, r["method"], m))
        for x in cal.get("ensemble_vs_best_single", []):
            if x["metric"] in ms and not _negligible(x["metric"], x["delta"], x["low"], x["high"]):
                v = verdict(x["metric"], x["delta"], x["low"], x["high"])
                (better if v.startswith("better") else worse if v.startswith("worse") else set()).add(
                    (short, "deep ensemble vs " + x["best_single"], x["metric"]))
    if not better:
        return "No gain shown"
    both = any((t, k, "nll") in better and any((t, k, m) in better for m in ("ece", "ece_debiased"))
               for t, k, _ in better)
    return "Yes" if both and not worse else "Mixed" if worse else "In part"


def _q2_sentence(short: str, res: dict, first: bool) -> str | None:
    ex = res["explanations"]
    flags = _flag_rows(ex, "deep ensemble")
    spread, combined = flags.get("explanation spread"), flags.get("spread + entropy (CV logistic)")
    if not spread or spread.get("delta") is None:
        return None
    d = (spread["delta"], spread["delta_low"], spread["delta_high"])
    flat = near_constant(res)
    if flat:
        ent = flags.get("entropy")
        e = flat.get("ens") or {}
        s = f"On {short} (near-constant predictors, Q1)"
        if ent and ent.get("errors") is not None and flat.get("n_rare"):
            s += (f" the ensemble errs on {ent['errors']} images and {flat['n_rare']} are {flat['rare']}, so an error "
                  f"flag ranks {flat['rare']} images (entropy's error AUROC {ent['auroc']:.3f}"
                  + (f"; p({flat['rare']})'s AUROC {e['image AUROC']:.3f}" if e.get("image AUROC") is not None else "")
                  + "):")
        return s + " no usable classifier to test."
    v = verdict("auroc", *d)
    how = ("no differently from" if v.startswith("no difference") else
           "less well than" if v.startswith("worse") else "better than")
    s = (f"On {short} the ensemble's {'explanation ' if first else ''}spread flags errors {how} its entropy "
         f"(AUROC {_num('auroc', *d)})")
    if combined and combined.get("delta") is not None:
        c = (combined["delta"], combined["delta_low"], combined["delta_high"])
        cv = verdict("auroc", *c)
        s += (f" and adds nothing shown to it ({_num('auroc', *c)})" if cv.startswith("no difference") else
              f" and, added to it, {'lowers' if cv.startswith('worse') else 'raises'} the AUROC {_paren('auroc', *c)}")
    point = _table_row(ex, "ensemble CAM, mean", "pointing")
    if first and point and point.get("reference") == "class-mask prior":
        p = (point["delta"], point["delta_low"], point["delta_high"])
        pv = verdict("pointing", *p)
        how = ("no differently from" if pv.startswith("no difference") else
               "less often than" if pv.startswith("worse") else "more often than")
        s += (f"; its mean CAM finds the class's bones {how} a map of where they usually lie "
              f"{_paren('pointing', *p)}")
    return s + "."


def _q2_headline(results: dict) -> str:
    """From the tasks with a usable classifier (not near-constant predictors)."""
    verdicts = []
    for res in results.values():
        c = _flag_rows(res["explanations"], "deep ensemble").get("spread + entropy (CV logistic)")
        if c and c.get("delta") is not None and not near_constant(res):
            verdicts.append(verdict("auroc", c["delta"], c["delta_low"], c["delta_high"]))
    if not verdicts:
        return "Not testable" if any(near_constant(r) for r in results.values()) else "Not measured"
    return "Yes" if any(v.startswith("better") for v in verdicts) else "No gain shown"


def _cell(metric: str, d) -> str:
    if not d:
        return "-"
    return f"{label(metric, *d)}, {_num(metric, *d, unit=False)}"


def verdict_rows(results: dict, root: Path) -> list[str]:
    """The verdict table: one line a finding, its verdict and key number with interval on each task, and the
    notebook that shows it; a task whose networks are near-constant predictors is marked †, with a note under the
    table, and its error-flag cells say that they test no usable classifier."""
    names = [s for _, s, _ in TASKS]
    flat = {s: near_constant(results[s]) for s in names}
    head = ["| | finding | " + " | ".join(s + (" †" if flat[s] else "") for s in names) + " | notebook |",
            "|---|---|" + "---|" * len(names) + "---|"]
    cals = {s: results[s]["calibration"] or {} for s in names}
    exps = {s: results[s]["explanations"] for s in names}
    ece = _ece_metric([r for s in names for r in cals[s].get("table", [])])

    def links(stem):
        return "·".join(_link(f, stem, root, stem[:2]) for f, _, _ in TASKS)

    def row(q, what, metric, get, stem, usable=False):
        cells = []
        for s in names:
            got = get(s)
            d = got
            c = _cell(metric, d)
            cells.append("no usable classifier†" if usable and flat[s] and d else c)
        if all(c == "-" for c in cells):
            return None
        return f"| {q} | {what} | " + " | ".join(cells) + f" | {links(stem)} |"

    def vs_map(method, m):
        return lambda s: _delta(next((r for r in cals[s].get("table", []) if r["method"] == method), None), m)

    def vs_best(m):
        def get(s):
            r = {x["metric"]: x for x in cals[s].get("ensemble_vs_best_single", [])}.get(m)
            return (r["delta"], r["low"], r["high"]) if r else None
        return get

    def flag(score):
        def get(s):
            r = _flag_rows(exps[s], "deep ensemble").get(score)
            return (r["delta"], r["delta_low"], r["delta_high"]) if r and r.get("delta") is not None else None
        return get

    def pointing(s):
        r = _table_row(exps[s], "ensemble CAM, mean", "pointing")
        ok = r and r.get("reference") == "class-mask prior" and s == names[0]
        return (r["delta"], r["delta_low"], r["delta_high"]) if ok else None

    unit = SCALE[ece][2].strip()
    out = [row("Q1", "ensemble - MAP, NLL (nats)", "nll", vs_map("deep ensemble", "nll"), "04_calibration"),
           row("Q1", f"ensemble - MAP, {NAME[ece]} ({unit})", ece, vs_map("deep ensemble", ece), "04_calibration"),
           row("Q1", f"ensemble - best single-model method, {NAME[ece]}", ece, vs_best(ece), "04_calibration"),
           row("Q1", "Laplace (K-FAC) - MAP, NLL", "nll", vs_map("Laplace, kron", "nll"), "04_calibration"),
           row("Q2", "error flag, AUROC: spread - entropy", "auroc", flag("explanation spread"), "05_explanations",
               True),
           row("Q2", "error flag, AUROC: spread + entropy - entropy", "auroc", flag("spread + entropy (CV logistic)"),
               "05_explanations", True),
           row("Q2", "mean CAM - class-mask prior, pointing (points)", "pointing", pointing, "05_explanations")]
    out = [r for r in out if r]
    if not out:
        return ["No results to make a verdict from: build the report (`make report`)."]
    notes = []
    for s in names:
        f = flat[s]
        if f and f.get("ens"):
            notes.append(f"† Near-constant predictors (study kappa {f['ens']['study kappa']:.3f}, Q1): errors ≈ "
                         f"{f.get('rare', 'rarer class')} images, so error flags test no usable classifier.")
    return head + out + ([""] + notes if notes else [])


def null_simulation_line(root: Path) -> str:
    """The interval rule and its measured error rates, read from report/evidence/null_simulation.md's tables."""
    rule = "**How far to trust a verdict.** A verdict needs the 95 % study-bootstrap interval to exclude zero."
    f = root / "report" / "evidence" / "null_simulation.md"
    if not f.is_file():
        return rule + " Its error rates have not been measured (`python -m utils.evidence --null-sim`)."
    text = f.read_text()

    def table(after: str) -> list[dict]:
        part = text.split(after, 1)[1] if after in text else ""
        lines = [ln for ln in part.split("\n\n", 2)[1].splitlines() if ln.startswith("|")] if "\n\n" in part else []
        if len(lines) < 3:
            return []
        cols = [c.strip() for c in lines[0].strip("|").split("|")]
        return [dict(zip(cols, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]

    def in_use(rows: list[dict]) -> str | None:
        return next((c for c in (rows[0] if rows else {}) if "(in use)" in c), None)

    false, cover = table("False verdicts (%) of `paired_delta`"), table("Coverage (%) of `interval`")
    fc, cc = in_use(false), in_use(cover)
    nll = sorted(float(r[fc]) for r in false if fc and r.get("metric") == "NLL")
    ece = next((r[cc] for r in cover if cc and r.get("metric") == "ECE"), None)
    deb = next((r[cc] for r in cover if cc and r.get("metric") == "debiased ECE"), None)
    cal = {r.get("metric"): r[fc] for r in false if fc and r.get("design") == "calibrated"}
    link = "[null simulation](report/evidence/null_simulation.md)"
    if not nll or ece is None or deb is None:
        return rule + f" Its error rates: a {link}."
    nll_s = f"{nll[0]:.1f} %" if nll[0] == nll[-1] else f"{nll[0]:.1f}-{nll[-1]:.1f} %"
    s = rule + f" A {link} measured {nll_s} false NLL verdicts (target 5 %)"
    if "ECE" in cal and "debiased ECE" in cal:
        s += f"; between two calibrated predictors, {cal['ECE']} % false plug-in ECE verdicts, {cal['debiased ECE']} % debiased"
    return s + f"; ECE intervals cover {ece} % (plug-in), {deb} % (debiased; target 95 %)."


def _rung_how(auroc: float) -> str:
    return "finds" if auroc >= 0.9 else "only weakly" if auroc >= 0.7 else "barely"


def _span(values: list[float], fmt: str = "{:.2f}", sep: str = "-") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}{sep}{fmt.format(hi)}"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x


def learnability_answer(rows: list[dict]) -> str:
    """The ladder in one plain line, from its rows: planted objects (the smallest found), real objects alone (with
    their accuracy against the majority share), the task (study AUROC where measured)."""
    planted = [r for r in rows if r["rung"].startswith("planted")]
    objects = [r for r in rows if r["rung"].startswith("objects")]
    task = [r for r in rows if r["rung"].startswith("the task")]
    parts = []
    if planted:
        a = [r["held_out_auroc"] for r in planted]
        sizes = [m for m in (re.match(r"planted (\d+)x(\d+) px", r["rung"]) for r in planted) if m]
        small = min(sizes, key=lambda m: int(m.group(1)) * int(m.group(2))) if sizes else None
        small = f"{small.group(1)}x{small.group(2)} px" if small else None
        how = _rung_how(min(a))
        parts.append(f"the learner {how} planted objects" + (f" of {small} and more" if small and how == "finds"
                                                             else "") + f" (AUROC {_span(a)})")
    if objects:
        a = [r["held_out_auroc"] for r in objects]
        how = _rung_how(min(a))
        parts.append("real objects alone " + ("" if how == "finds" else how + " ")
                     + f"(AUROC {_span(a)}; accuracy {_span([100 * r['held_out_acc'] for r in objects], '{:.1f}')} %, "
                     f"majority share {_span([100 * r['majority'] for r in objects], '{:.1f}')} %)")
    if task:
        key = "study_auroc" if all(_finite(r.get("study_auroc")) for r in task) else "held_out_auroc"
        what = "study AUROC" if key == "study_auroc" else "AUROC"
        base, rest = task[0], task[1:]
        s = f"the task {_rung_how(base[key])} ({what} {base[key]:.2f}"
        s += "".join(f"; {r[key]:.2f} with {r['rung'].split(', ', 1)[1]}" for r in rest if ", " in r["rung"])
        parts.append(s + ")")
    return "; ".join(parts)


def learnability_part(root: Path) -> list[str]:
    """The abnormality learnability ladder (report/recipe/cpu-learnability.json): a plain answer, the table
    collapsed; "not yet measured" where the file is absent."""
    f = root / "report" / "recipe" / "cpu-learnability.json"
    head = "**Can the learner see an abnormality?** [`utils.learnability`](utils/learnability.py)'s ladder"
    rows = json.loads(f.read_text()).get("rows", []) if f.is_file() else []
    if not rows:
        return [head + ": not yet measured."]
    answer = learnability_answer(rows)
    line = (head + f" ({len(rows)} rung{'s' if len(rows) > 1 else ''}): " + answer
            + ". No intervals, different held-out sets: not paired comparisons.")

    def cell(x, fmt):
        return fmt.format(x) if _finite(x) else "-"

    table = ["| rung | augmentation | training / held-out images | majority share | training accuracy | "
             "held-out accuracy | held-out AUROC | study AUROC |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['rung']} | {r.get('augment', '')} | {r['train_images']} / {r['held_out_images']} | "
                     f"{100 * r['majority']:.1f} % | {100 * r['train_acc']:.1f} % | {100 * r['held_out_acc']:.1f} % | "
                     f"{cell(r['held_out_auroc'], '{:.2f}')} | {cell(r.get('study_auroc'), '{:.2f}')} |")
    return [line, "", *_details("Rung by rung", table)[:-1]]


def notebook_links(root: Path) -> list[str]:
    """A table of the rendered notebooks of both tasks, each linked to its executed .ipynb."""
    found = {}
    for folder, short, _ in TASKS:
        base = root / "report" / folder if folder else root / "report"
        for nb in sorted(base.glob("[0-9][0-9]_*.ipynb")):
            found.setdefault(nb.stem[:2], {})[short] = nb
    if not found:
        return ["No rendered notebooks yet: `make report`."]
    lines = ["| notebook | " + " | ".join(s for _, s, _ in TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for num in sorted(found):
        any_nb = next(iter(found[num].values()))
        title = re.split(r"[,:]", _title(any_nb) or any_nb.stem)[0]
        cells = [f"[.ipynb]({found[num][short].relative_to(root).as_posix()})" if short in found[num] else "-"
                 for _, short, _ in TASKS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _title(nb: Path) -> str | None:
    """A notebook's first-level heading, e.g. '04 · Calibration'."""
    try:
        cells = json.loads(nb.read_text()).get("cells", [])
    except (OSError, ValueError):
        return None
    for c in cells:
        if c.get("cell_type") == "markdown":
            for line in "".join(c.get("source", [])).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def glossary_lines() -> list[str]:
    return [GLOSSARY_HEADING, ""] + [f"- **{k}**: {v}" for k, v in GLOSSARY.items()]


def summary(root: Path = ROOT, base: str = "") -> str:
    """The README's findings summary (Markdown, between the summary markers), from the results under `root`. Its
    links are relative to the repository; `base` is put before each (e.g. "../" for a page in report/)."""
    root = Path(root)
    results = _results(root)
    out = [SUMMARY_START, ""]
    cal = results["body part"]["calibration"] or results["normal / abnormal"]["calibration"]
    scope = f" ({cal['test_images']} test images, {cal['test_studies']} studies a task)" if cal else ""
    out += [f"Written from the run's results{scope} by `python -m utils.findings`, checked by a test. Data: a "
            "synthetic phantom of MURA, not patients.", ""]
    out += ["### The two questions, answered", ""]
    q1 = [s for s in (_q1_sentence(short, results[short]) for _, short, _ in TASKS) if s]
    out.append("**Q1. Does a Bayesian treatment (Laplace, deep ensemble) calibrate better than the MAP network and "
               "temperature scaling?** "
               + (f"*{_q1_headline(results)}.* " + " ".join(q1) if q1 else "*Not measured yet.*"))
    out.append("")
    q2 = [s for s in (_q2_sentence(short, results[short], i == 0) for i, (_, short, _) in enumerate(TASKS)) if s]
    out.append("**Q2. Do the CAMs of posterior samples show where the model is uncertain?** "
               + (f"*{_q2_headline(results)}.* " + " ".join(q2) + " A last-layer Laplace's mean CAM is the MAP "
                  "network's CAM by construction."
                  if q2 else "*Not measured yet.*"))
    out += ["", "### Verdicts", ""]
    out += verdict_rows(results, root)
    out += ["", "### Every method against the MAP network", ""]
    rows = summary_forest_rows(root)
    if rows:
        ece = "debiased ECE" if any(r["metric"] == "ece_debiased" for r in rows) else "ECE"
        flagged = any(r.get("note") for r in rows)
        out += [f"![Forest plot: each method's paired difference from the MAP network on NLL, {ece} and accuracy, "
                f"both tasks]({FOREST.as_posix()})", "",
                "Method minus MAP network, 95 % paired intervals; green better, red worse, grey no difference "
                "shown, hollow borderline; arrows: off scale"
                + ("; the flagged all-weights Laplace is left out of Q1's answer" if flagged else "") + ".", ""]
        n = verdict_count(rows)
        out.append(null_simulation_line(root) + f" {n} verdicts here (not counting [0, 0] intervals), uncorrected "
                   f"for multiplicity: ≈{0.05 * n:.0f} false ones expected if no difference were real.")
    else:
        out += ["No calibration results yet: `make report`.", "", null_simulation_line(root)]
    out += [""] + learnability_part(root)
    out += ["", "### The rendered report", "",
            "Browsable copies: `report/index.html`, `report/abnormality/index.html` (open from a clone).", ""]
    out += notebook_links(root)
    out += [""] + glossary_lines() + ["", SUMMARY_END]
    text = "\n".join(out)
    return re.sub(r"\]\(((?:report|figures|utils)/)", rf"]({base}\1", text) if base else text


# --------------------------------------------------------------------------- the details block

def delta_table(calibration: dict, note: str | None = None) -> list[str]:
    """Markdown rows: each method against the MAP network on NLL, the debiased ECE (where the results carry it),
    the plug-in ECE (points) and accuracy (points). A single-model method's row is the mean over the members it is
    fitted on (`fitted_on`), paired with the same members' MAP networks, its interval resampling members and
    studies; a combination's row is its predictive over all members against the same members' MAP networks as
    single models (`calibration.interval_table` pairs them so). `note` flags the all-weights Laplace's row."""
    metrics = [m for m in ("nll", "ece_debiased", "ece", "accuracy")
               if m != "ece_debiased" or any(_delta(r, m) for r in calibration["table"])]
    head = {"nll": "ΔNLL (nats)", "ece_debiased": "Δdebiased ECE (points)", "ece": "ΔECE, plug-in (points)",
            "accuracy": "Δaccuracy (points)"}
    rows = ["| method | network(s) | " + " | ".join(head[m] for m in metrics) + " |",
            "|---|---|" + "---|" * len(metrics)]
    for r in calibration["table"]:
        if r["method"] == "MAP" or r.get("delta_nll") is None:
            continue
        cells = []
        for m in metrics:
            d = _delta(r, m)
            cells.append(f"{_num(m, *d, unit=False)} {label(m, *d)}" if d else "-")
        n = int(r.get("fitted_on") or 1)
        who = (f"{int(r['members'])} members together" if r["kind"] != "single"
               else "member 0" if n == 1 else f"mean of {n} members")
        if n == 1 and r["kind"] == "single":
            who += " (against member 0's MAP network)"
        name = r["method"] + (f": {note}" if note and _is_all_weights(r["method"]) else "")
        rows.append(f"| {name} | {who} | " + " | ".join(cells) + " |")
    return rows


def fit_line(task: str, m: dict | None) -> str:
    if not m or "fit" not in m:
        return f"- {task}: the run's training record predates the clean training figures (rebuild the report)."
    f = m["fit"]
    s = (f"- {task}: member 0 classifies {f['train_acc']:.1%} of its own training images right at the epoch kept "
         f"({f['best_epoch']} of {f['epochs']}, augmentation `{m.get('augment', 'full')}`; eval mode, no augmentation), "
         f"and {m['test']['accuracy']:.1%} of the test images.")
    return s + ("" if f["fits"] else " **Below 85 %: the member does not fit its training set; read the "
                                       "methods' comparison on this task as one of an underfitted network.**")


def recipe_markdown(rows: list[dict]) -> str:
    """The controlled runs as a Markdown table (accuracies in %, measured in eval mode without augmentation)."""
    head = ("| variant | epochs | epoch kept | train acc. (kept) | train acc. (last) | val. NLL | test acc. | "
            "seconds |\n|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['variant']} | {r['epochs']} | {r['best_epoch']} | {100 * r['train_acc']:.1f} | "
             f"{100 * r['train_acc_last']:.1f} | {r['val_nll']:.3f} | {100 * r['test_acc']:.1f} | {r['seconds']:.0f} |"
             for r in rows]
    return "\n".join([head, *lines])


def _details(summary_line: str, body: list[str]) -> list[str]:
    return [f"<details><summary>{summary_line}</summary>", "", *body, "", "</details>", ""]


def caveats(root: Path, cal: dict | None, amp: dict | None, ens: dict | None, expl: dict | None) -> list[str]:
    """What the run does not settle, with its numbers from the results."""
    out = []
    fit = (amp or {}).get("fit")
    if fit and not fit.get("fits", True):
        out.append(f"- On MURA's task member 0 fits {fit['train_acc']:.1%} of its own training images, so that "
                   "task's calibration and explanation comparisons describe underfitted networks.")
    if any((root / "report" / "recipe" / f"cpu-{t}.json").is_file() for t in ("bodypart", "abnormality")):
        out.append("- The controlled runs are one run per setting, without intervals, and do not record the phantom "
                   "generator they ran on: they are not compared with this report's numbers.")
    temps = (cal or {}).get("temperatures")
    if temps:
        side = ("below 1 for every member: temperature scaling sharpens, so on validation the MAP networks look "
                "underconfident" if max(temps) < 1 else
                "above 1 for every member: temperature scaling softens, so on validation the MAP networks look "
                "overconfident" if min(temps) > 1 else "on both sides of 1")
        s = (f"- The body-part temperatures fitted on the validation split are {min(temps):.2f} to "
             f"{max(temps):.2f}, {side}")
        ts = next((r for r in (cal or {}).get("table", []) if r["method"] == "temperature scaling"), None)
        ece = _ece_metric((cal or {}).get("table", []))
        shown = [(m, _delta(ts, m)) for m in ("nll", ece) if _delta(ts, m)]
        if shown and (max(temps) < 1 or min(temps) > 1):
            if all(verdict(m, *d).startswith("no difference") for m, d in shown):
                s += ("; on the test split temperature scaling shows no change ("
                      + ", ".join(f"{NAME[m]} {_num(m, *d)}" for m, d in shown) + "), so the test split does not "
                      "show the direction")
            else:
                s += "; on the test split temperature scaling " + " and ".join(_effect(m, *d) for m, d in shown)
        out.append(s + ".")
    aw = (expl or {}).get("all_weights", {})
    shift = next((r for r in aw.get("shift", []) if r.get("set") == "all-weights Laplace"), None)
    sweep = sorted(aw.get("scale_sweep", []), key=lambda r: r["tau"])
    if shift and shift.get("samples_right") is not None:
        s = (f"- The all-weights Laplace is prior-dominated: its sampled networks classify "
             f"{_ci(shift['samples_right'], shift['samples_right_low'], shift['samples_right_high'], 1, 100)} % of "
             "the images right, so its CAM shift describes networks unlike the MAP network")
        if sweep:
            t = sweep[0]
            s += (f"; with its spread scaled by τ = {t['tau']:g} (tempered, not Bayesian) its samples agree with the "
                  f"MAP network on {_ci(t['samples_agree'], t['samples_agree_low'], t['samples_agree_high'], 1, 100)} %"
                  " of the images")
        out.append(s + ".")
    out.append("- Conformal coverage is read against the line at 1 - α in notebooks 04 and 06, not against the range "
               "the calibration set's size implies; read \"below target\" there as not shown.")
    out.append("- Where the phantom and real radiographs differ, nothing here transfers.")
    return ["**What this run does not settle.**", "", *out, ""]


def block(root: Path = ROOT) -> str:
    """The details block (Markdown, between the findings markers) from the committed results under `root`/report."""
    root = Path(root)
    body, ab = root / "report", root / "report" / "abnormality"
    cal, mp, ens, expl = (_load(body, n) for n in ("calibration", "map", "ensembles", "explanations"))
    acal, amp, abn, aexpl = (_load(ab, n) for n in ("calibration", "map", "abnormality", "explanations"))
    out = [START, ""]
    for name, c, x in (("Body part (7 classes)", cal, expl), ("Normal / abnormal (MURA's task, per image)", acal, aexpl)):
        if not c:
            continue
        mapr = next(r for r in c["table"] if r["method"] == "MAP")
        line = (f"The MAP networks (mean of {int(mapr.get('fitted_on') or 1)} members): "
                f"accuracy {_ci(mapr['accuracy'], mapr['accuracy_low'], mapr['accuracy_high'], 1, 100)} %, NLL "
                f"{_ci(mapr['nll'], mapr['nll_low'], mapr['nll_high'])}, ECE "
                f"{_ci(mapr['ece'], mapr['ece_low'], mapr['ece_high'], 2, 100)} % against "
                f"{_ci(mapr['ece_reference'], mapr['ece_reference_low'], mapr['ece_reference_high'], 2, 100)} % for a "
                "perfectly calibrated predictor with the same confidences on these images")
        if mapr.get("ece_debiased") is not None and mapr.get("ece_debiased_low") is not None:
            line += (f"; debiased ECE "
                     f"{_ci(mapr['ece_debiased'], mapr['ece_debiased_low'], mapr['ece_debiased_high'], 2, 100)} %")
        out += _details(f"{name}: each method against the MAP network, the full table ({c['test_images']} test "
                        f"images, {c['test_studies']} studies; 95 % intervals, paired bootstrap over studies)",
                        [line + ".", "", *delta_table(c, all_weights_note(c, x))])
    out += _details("Do the members fit what they are trained on?",
                    [fit_line("body part", mp), fit_line("normal / abnormal", amp)])
    for task, title in (("bodypart", "body part"), ("abnormality", "normal / abnormal")):
        rec = body / "recipe" / f"cpu-{task}.json"
        if rec.is_file():
            doc = json.loads(rec.read_text())
            gen = f"phantom {doc['generator_version']}, " if doc.get("generator_version") else ""
            out += _details(f"Controlled runs, {title} (cpu profile, {gen}member 0's seed, one setting changed at a "
                            f"time, one run each, no intervals; `python -m utils.recipe --task {task}`; accuracies in %, eval mode, no "
                            "augmentation; seconds measured while other jobs shared the two cores, so they are not "
                            "timings)", [recipe_markdown(doc["rows"])])
    if abn:
        t = {(r["method"], r["body_part"]): r for r in abn["table"]}
        e, b = t.get(("deep ensemble", "all")), t.get(("body-part prevalence (baseline)", "all"))
        if e:
            s = (f"The deep ensemble's study AUROC is "
                 f"{_ci(e['study AUROC'], e['AUROC low'], e['AUROC high'], 2)} and Cohen's kappa "
                 f"{_ci(e['study kappa'], e['kappa low'], e['kappa high'], 2)}")
            s += (f"; a predictor that knows only the body part: AUROC "
                  f"{_ci(b['study AUROC'], b['AUROC low'], b['AUROC high'], 2)}, kappa "
                  f"{_ci(b['study kappa'], b['kappa low'], b['kappa high'], 2)}" if b else "")
            free = {r["method"]: r for r in abn.get("shortcut_free", []) if r["studies scored"] != "all"}
            if "deep ensemble" in free:
                f = free["deep ensemble"]
                s += (f". Without the abnormal studies that show hardware or a cast ({f['studies']} studies left, "
                      f"{f['abnormal studies']} abnormal): AUROC {_ci(f['study AUROC'], f['AUROC low'], f['AUROC high'], 2)}, "
                      f"kappa {_ci(f['study kappa'], f['kappa low'], f['kappa high'], 2)}")
                if "body-part prevalence (baseline)" in free:
                    g = free["body-part prevalence (baseline)"]
                    s += (f", against the body-part baseline's AUROC "
                          f"{_ci(g['study AUROC'], g['AUROC low'], g['AUROC high'], 2)} on the same studies (no paired "
                          "interval for the change: dropping studies changes the case mix)")
            s += (". Kappa scores the call at MURA's threshold (a study's mean p(abnormal) above 0.5), AUROC the ranking: "
                  "a network that calls almost every study normal has a kappa near zero whatever it ranks.")
            scratch = next((r for r in abn.get("reference", []) if r.get("metric") == "kappa"
                            and "scratch" in str(r.get("pretraining")) and r.get("overall") is not None), None)
            if scratch:
                s += (f" A published {scratch['model']} trained from scratch reaches kappa {scratch['overall']:.3f} on "
                      f"{scratch['split']} ({scratch['status']}; notebook 07 places these).")
            out += _details("MURA's score, per study (normal / abnormal)", [s])
    out += caveats(root, cal, amp, ens, expl)
    out.append(END)
    return "\n".join(out)


# --------------------------------------------------------------------------- the README

def rewrite(readme: Path, text: str, start: str = START, end: str = END) -> str:
    """`readme`'s text with the part between the markers `start` and `end` replaced by `text`."""
    old = readme.read_text() if isinstance(readme, Path) else readme
    if start not in old or end not in old:
        raise ValueError(f"{readme if isinstance(readme, Path) else 'README.md'} has no findings markers "
                         f"({start!r} ... {end!r}): add them where the block goes")
    head, rest = old.split(start, 1)
    return head + text + rest.split(end, 1)[1]


def readme_text(readme: Path, root: Path = ROOT) -> str:
    """The README as `python -m utils.findings` writes it: both generated parts replaced."""
    text = rewrite(readme, summary(root), SUMMARY_START, SUMMARY_END)
    return rewrite(text, block(root))


def findings_part(text: str) -> str:
    """The README's findings part as a reader meets it: from the first heading after the opening commands down to
    the details heading, without the glossary."""
    body = text.split("\n## ", 1)[1] if "\n## " in text else text
    body = body.split("\n" + DETAILS_HEADING, 1)[0]
    if GLOSSARY_HEADING in body:
        head, rest = body.split(GLOSSARY_HEADING, 1)
        nxt = re.search(r"\n#{1,3} ", rest)
        body = head + (rest[nxt.start():] if nxt else "")
    return body


def word_count(markdown: str) -> int:
    """Words a reader reads: without HTML comments and tags, link and image targets, table rules and the content of
    collapsed <details> (their summary line counts)."""
    t = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    t = re.sub(r"<details>\s*<summary>(.*?)</summary>.*?</details>", r"\1", t, flags=re.S)  # collapsed: not read
    t = re.sub(r"!\[([^\]]*)\]\([^)]*\)", " ", t)  # an image: its alt text is not read
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"<[^>]+>", " ", t)
    t = re.sub(r"^\|?[-|: ]+\|?$", " ", t, flags=re.M)
    return len(re.findall(r"[^\s|*#`]+", t.replace("|", " ")))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.findings", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if README.md's generated parts or the summary figure differ from the results")
    a = ap.parse_args(argv)
    readme = ROOT / "README.md"
    new = readme_text(readme)
    rows = summary_forest_rows(ROOT)
    if a.check:
        problems = []
        if new != readme.read_text():
            problems.append("README.md's findings differ from report/**/results")
        if rows and not forest_is_current(rows, ROOT / FOREST):
            problems.append(f"{FOREST} is missing or shows other numbers")
        if problems:
            sys.exit("; ".join(problems) + ": run `python -m utils.findings`")
        print("README.md's findings and the summary figure match the results")
        return
    readme.write_text(new)
    if rows:
        write_forest(rows, ROOT / FOREST)
    print(f"rewrote the findings of {readme}" + (f" and {FOREST}" if rows else "")
          + f"; findings part: {word_count(findings_part(new))} words")


if __name__ == "__main__":
    main()
