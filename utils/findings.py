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
difference shown", which is the absence of evidence, not evidence of no difference.
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
FOREST_VERSION = "1"  # part of the figure's digest: bump when the drawing changes, so --check asks for a redraw
GLOSSARY_HEADING = "### Glossary"
DETAILS_HEADING = "## Details"

LOWER_IS_BETTER = {"nll": True, "ece": True, "ece_debiased": True, "accuracy": False, "auroc": False,
                   "pointing": False}
SCALE = {"nll": (1.0, 3, " nats"), "ece": (100.0, 2, " points"), "ece_debiased": (100.0, 2, " points"),
         "accuracy": (100.0, 2, " points"), "auroc": (1.0, 3, ""), "pointing": (100.0, 1, " points")}
NAME = {"nll": "NLL", "ece": "ECE", "ece_debiased": "debiased ECE", "accuracy": "accuracy", "auroc": "AUROC",
        "pointing": "pointing share"}
FOREST_METRICS = ("nll", "ece", "accuracy")
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


def _num(metric: str, d: float, lo: float, hi: float, sign: bool = True) -> str:
    """A difference with its interval and unit, as the README prints it, e.g. '-0.023 [-0.041, -0.006] nats'."""
    factor, digits, unit = SCALE[metric]
    return _ci(d, lo, hi, digits, factor, sign) + unit


def verdict(metric: str, delta: float, lo: float, hi: float) -> str:
    """'better', 'worse' or 'no difference shown', with ' (borderline)' where the interval's end nearest zero
    rounds to zero at the printed precision."""
    if lo <= 0 <= hi:
        return "no difference shown"
    factor, digits, _ = SCALE[metric]
    near = min(abs(lo), abs(hi)) * factor
    good = (hi < 0) == LOWER_IS_BETTER[metric]
    return ("better" if good else "worse") + (" (borderline)" if round(near, digits) == 0 else "")


def _effect(metric: str, d: float, lo: float, hi: float) -> str:
    """What a method does to a score, in words chosen from the interval: 'lowers the NLL (-0.023 [...] nats)',
    'shows no ECE change (...)'."""
    v = verdict(metric, d, lo, hi)
    if v.startswith("no difference"):
        return f"shows no {NAME[metric]} change ({_num(metric, d, lo, hi)})"
    verb = "lowers" if hi < 0 else "raises"
    return f"{verb} the {NAME[metric]}{' (borderline)' if 'borderline' in v else ''} ({_num(metric, d, lo, hi)})"


def _than(metric: str, d: float, lo: float, hi: float, other: str) -> str:
    """'is higher than <other>'s (...)' / 'is not shown to differ from <other>'s (...)'."""
    v = verdict(metric, d, lo, hi)
    if v.startswith("no difference"):
        return f"is not shown to differ from {other}'s ({_num(metric, d, lo, hi)})"
    return (f"is {'lower' if hi < 0 else 'higher'} than {other}'s{' (borderline)' if 'borderline' in v else ''} "
            f"({_num(metric, d, lo, hi)})")


def _delta(row: dict, metric: str) -> tuple[float, float, float] | None:
    keys = (f"delta_{metric}", f"delta_{metric}_low", f"delta_{metric}_high")
    if not row or any(row.get(k) is None for k in keys):
        return None
    return tuple(float(row[k]) for k in keys)


def _plain(method: str) -> str:
    return PLAIN.get(method, method)


def _is_last_layer_laplace(method: str) -> bool:
    return method.startswith("Laplace") and "all weights" not in method


def _bayesian(method: str) -> bool:
    return method.startswith("Laplace") or method in ("deep ensemble", "mixture of Laplace, kron")


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

def forest_rows(results: dict[str, dict]) -> list[dict]:
    """One row per task, method and metric: the paired difference against the MAP network, scaled as printed
    (nats; points of %), with its interval and verdict. `results` maps a task's name to its calibration.json."""
    rows = []
    for task, cal in results.items():
        for r in (cal or {}).get("table", []):
            if r["method"] == "MAP":
                continue
            for m in FOREST_METRICS:
                d = _delta(r, m)
                if d is None:
                    continue
                factor = SCALE[m][0]
                rows.append(dict(task=task, method=r["method"], metric=m, delta=round(factor * d[0], 6),
                                 low=round(factor * d[1], 6), high=round(factor * d[2], 6),
                                 verdict=verdict(m, *d).split(" (")[0]))
    return rows


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
    a point per method with its 95 % interval as a bar, the zero line, points coloured by verdict; a method far
    off the others' scale is drawn at the panel's edge as an arrow with its value printed. Returns the figure."""
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
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            pts = {r["method"]: r for r in rows if r["task"] == task and r["metric"] == m}
            ms = [k for k in methods if k in pts]
            ext = [max(abs(pts[k]["low"]), abs(pts[k]["high"]), abs(pts[k]["delta"])) for k in ms]
            lim, off = _panel_limit(ext)
            ax.axvline(0, color="0.15", lw=1.0, zorder=1.8)
            inside = [(n, k) for n, k in enumerate(ms) if n not in off]
            for n, k in enumerate(ms):
                r, y = pts[k], methods.index(k)
                ax.hlines(y, max(r["low"], -lim), min(r["high"], lim), color=colour[r["verdict"]], lw=2.2, zorder=2)
            ax.scatter([pts[k]["delta"] for _, k in inside], [methods.index(k) for _, k in inside], s=30, zorder=3,
                       c=[colour[pts[k]["verdict"]] for _, k in inside], gid="forest-point")
            for n in sorted(off):
                k = ms[n]
                r, y = pts[k], methods.index(k)
                right = r["delta"] > 0
                ax.scatter([0.95 * lim if right else -0.95 * lim], [y], marker=">" if right else "<", s=60, zorder=3,
                           c=[colour[r["verdict"]]], gid="forest-point", clip_on=False)
                factor, digits, _ = SCALE[m]
                ax.annotate(f"{_ci(r['delta'], r['low'], r['high'], digits if factor == 1 else 1, 1, True)}, off scale",
                            (0.9 * lim if right else -0.9 * lim, y), ha="right" if right else "left", va="center",
                            fontsize=7.5, xytext=(0, 9), textcoords="offset points", color=colour[r["verdict"]])
            ax.set_xlim(-lim, lim)
            ax.set_ylim(len(methods) - 0.5, -0.5)
            ax.set_yticks(range(len(methods)))
            ax.set_yticklabels([_plain(k) for k in methods] if j == 0 else [])
            ax.grid(axis="x", color="0.9", lw=0.6)
            better = "left" if LOWER_IS_BETTER[m] else "right"
            ax.set_title(f"{task}: {NAME[m]}", fontsize=10, loc="left")
            ax.set_xlabel(f"method - MAP network ({SCALE[m][2].strip() or 'difference'}; {better} is better)",
                          fontsize=8.5)
            ax.tick_params(labelsize=8)
    handles = [Line2D([0], [0], color=c, marker="o", lw=2.2, label=v) for v, c in colour.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9,
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


def _shown(cal: dict | None) -> tuple[int, int]:
    """(differences shown, differences made): every method against the MAP network on NLL, ECE and accuracy."""
    v = [verdict(m, *_delta(r, m)) for r in (cal or {}).get("table", []) for m in FOREST_METRICS if _delta(r, m)]
    return sum(not x.startswith("no difference") for x in v), len(v)


def _q1_sentence(short: str, res: dict) -> str | None:
    cal = res["calibration"]
    if not cal:
        return None
    rows = {r["method"]: r for r in cal["table"]}
    fit = (res["map"] or {}).get("fit")
    underfit = (f"; the networks there fit only {fit['train_acc']:.0%} of their own training images"
                if fit and not fit.get("fits", True) else "")
    shown, made = _shown(cal)
    ens = rows.get("deep ensemble")
    if made and not shown:
        key = f"; ensemble NLL {_num('nll', *_delta(ens, 'nll'))}" if _delta(ens, "nll") else ""
        return (f"On {short} no method differs from the MAP network ({shown} of {made} differences shown{key})"
                f"{underfit}.")
    parts = []
    if _delta(ens, "nll") and _delta(ens, "ece"):
        s = f"the deep ensemble {_effect('nll', *_delta(ens, 'nll'))} and {_effect('ece', *_delta(ens, 'ece'))}"
        vs = {r["metric"]: r for r in cal.get("ensemble_vs_best_single", [])}.get("ece")
        if vs:
            s += f"; its ECE {_than('ece', vs['delta'], vs['low'], vs['high'], _plain(vs['best_single']))}"
        parts.append(s)
    lap = [m for m in rows if _is_last_layer_laplace(m) and _delta(rows[m], "nll")]
    if lap:
        key = "Laplace, kron" if "Laplace, kron" in lap else lap[0]
        v = verdict("nll", *_delta(rows[key], "nll")).split(" (")[0]
        same = sum(verdict("nll", *_delta(rows[m], "nll")).split(" (")[0] == v for m in lap)
        eff = _effect("nll", *_delta(rows[key], "nll"))
        parts.append(f"every last-layer Laplace {eff.split(' (')[0]} (K-FAC: {eff.split(' (', 1)[1]}"
                     if same == len(lap) else f"the K-FAC last-layer Laplace {eff}, as do {same - 1} of the "
                                              f"other {len(lap) - 1} last-layer variants")
    if not parts:
        return None
    return f"On {short} " + "; ".join(parts) + underfit + "."


def _q1_headline(results: dict) -> str:
    """'Yes', 'In part' or 'No improvement shown', from the verdicts of the Bayesian methods against the MAP."""
    improved = set()
    for res in results.values():
        for r in (res["calibration"] or {}).get("table", []):
            for m in ("nll", "ece"):
                d = _delta(r, m)
                if d and _bayesian(r["method"]) and verdict(m, *d).startswith("better"):
                    improved.add((r["method"], m))
    if not improved:
        return "No improvement shown"
    both = {k for k, _ in improved if (k, "nll") in improved and (k, "ece") in improved}
    return "Yes" if both else "In part"


def _q2_sentence(short: str, res: dict, first: bool) -> str | None:
    ex = res["explanations"]
    flags = _flag_rows(ex, "deep ensemble")
    spread, combined = flags.get("explanation spread"), flags.get("spread + entropy (CV logistic)")
    if not spread or spread.get("delta") is None:
        return None
    d = (spread["delta"], spread["delta_low"], spread["delta_high"])
    v = verdict("auroc", *d)
    how = ("no differently from" if v.startswith("no difference") else
           "less well than" if v.startswith("worse") else "better than")
    s = (f"On {short} the ensemble's {'explanation ' if first else ''}spread flags errors {how} its entropy "
         f"(AUROC {_num('auroc', *d)})")
    if combined and combined.get("delta") is not None:
        c = (combined["delta"], combined["delta_low"], combined["delta_high"])
        cv = verdict("auroc", *c)
        s += (f" and adds nothing shown to it ({_num('auroc', *c)})" if cv.startswith("no difference") else
              f" and, added to it, {'lowers' if cv.startswith('worse') else 'raises'} the AUROC ({_num('auroc', *c)})")
    point = _table_row(ex, "ensemble CAM, mean", "pointing")
    if first and point and point.get("reference") == "class-mask prior":
        p = (point["delta"], point["delta_low"], point["delta_high"])
        pv = verdict("pointing", *p)
        how = ("no differently from" if pv.startswith("no difference") else
               "less often than" if pv.startswith("worse") else "more often than")
        s += (f"; its mean CAM finds the class's bones {how} a map of where they usually lie "
              f"({_num('pointing', *p)})")
    return s + "."


def _q2_headline(results: dict) -> str:
    verdicts = []
    for res in results.values():
        c = _flag_rows(res["explanations"], "deep ensemble").get("spread + entropy (CV logistic)")
        if c and c.get("delta") is not None:
            verdicts.append(verdict("auroc", c["delta"], c["delta_low"], c["delta_high"]))
    if not verdicts:
        return "Not measured"
    return "Yes" if any(v.startswith("better") for v in verdicts) else "No gain shown"


def _cell(metric: str, d) -> str:
    if not d:
        return "-"
    factor, digits, _ = SCALE[metric]
    return f"{verdict(metric, *d)}, {_ci(*d, digits, factor, True)}"


def verdict_rows(results: dict, root: Path) -> list[str]:
    """The verdict table: one line a finding, its verdict and key number with interval on each task, and the
    notebook that shows it."""
    names = [s for _, s, _ in TASKS]
    head = ["| | finding | " + " | ".join(names) + " | notebook |", "|---|---|" + "---|" * len(names) + "---|"]
    cals = {s: results[s]["calibration"] or {} for s in names}
    exps = {s: results[s]["explanations"] for s in names}

    def links(stem):
        return " · ".join(_link(f, stem, root, stem[:2]) for f, _, _ in TASKS)

    def row(q, what, metric, get, stem):
        cells = [_cell(metric, get(s)) for s in names]
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

    out = [row("Q1", "ensemble - MAP, NLL (nats)", "nll", vs_map("deep ensemble", "nll"), "04_calibration"),
           row("Q1", "ensemble - MAP, ECE (points)", "ece", vs_map("deep ensemble", "ece"), "04_calibration"),
           row("Q1", "ensemble - best single-model method, ECE", "ece", vs_best("ece"), "04_calibration"),
           row("Q1", "Laplace (K-FAC) - MAP, NLL", "nll", vs_map("Laplace, kron", "nll"), "04_calibration"),
           row("Q2", "error flag, AUROC: spread - entropy", "auroc", flag("explanation spread"), "05_explanations"),
           row("Q2", "error flag, AUROC: spread + entropy - entropy", "auroc", flag("spread + entropy (CV logistic)"),
               "05_explanations"),
           row("Q2", "mean CAM - class-mask prior, pointing (points)", "pointing", pointing, "05_explanations")]
    out = [r for r in out if r]
    return head + out if out else ["No results to make a verdict from: build the report (`make report`)."]


def null_simulation_line(root: Path) -> str:
    """The interval rule and its measured error rates, read from report/evidence/null_simulation.md's tables."""
    rule = ("**How far to trust a verdict.** A verdict needs the 95 % study-bootstrap interval (for a difference: "
            "the hull of the re-centred and percentile intervals) to exclude zero.")
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
    link = "[null simulation](report/evidence/null_simulation.md)"
    if not nll or ece is None or deb is None:
        return rule + f" Its error rates: a {link}."
    nll_s = f"{nll[0]:.1f} %" if nll[0] == nll[-1] else f"{nll[0]:.1f}-{nll[-1]:.1f} %"
    return (rule + f" A {link} measured {nll_s} false NLL verdicts (target 5 %); ECE intervals cover {ece} % "
            f"(plug-in) and {deb} % (debiased; target 95 %).")


def learnability_part(root: Path) -> list[str]:
    """The abnormality learnability ladder (report/recipe/cpu-learnability.json): a line with its range, the table
    collapsed; "not yet measured" where the file is absent."""
    f = root / "report" / "recipe" / "cpu-learnability.json"
    head = "**Can the learner see an abnormality?** [`utils.learnability`](utils/learnability.py)'s ladder"
    rows = json.loads(f.read_text()).get("rows", []) if f.is_file() else []
    if not rows:
        return [head + ": not yet measured."]
    lo, hi = min(rows, key=lambda r: r["held_out_auroc"]), max(rows, key=lambda r: r["held_out_auroc"])
    line = (head + f": {len(rows)} rung{'s' if len(rows) > 1 else ''}, held-out AUROC "
            + (f"{lo['held_out_auroc']:.2f} ({lo['rung']})" if lo is hi else
               f"{lo['held_out_auroc']:.2f} ({lo['rung']}) to {hi['held_out_auroc']:.2f} ({hi['rung']})") + ".")
    table = ["| rung | augmentation | training / held-out images | majority share | training accuracy | "
             "held-out accuracy | held-out AUROC |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['rung']} | {r.get('augment', '')} | {r['train_images']} / {r['held_out_images']} | "
                     f"{100 * r['majority']:.1f} % | {100 * r['train_acc']:.1f} % | {100 * r['held_out_acc']:.1f} % | "
                     f"{r['held_out_auroc']:.2f} |")
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
    out += [f"Generated from the run's results{scope} by `python -m utils.findings`; a test fails when they "
            "differ. Data: a synthetic phantom of MURA, not patients.", ""]
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
    rows = forest_rows({s: results[s]["calibration"] for _, s, _ in TASKS if results[s]["calibration"]})
    if rows:
        out += [f"![Forest plot: each method's paired difference from the MAP network on NLL, ECE and accuracy, "
                f"both tasks]({FOREST.as_posix()})", "",
                "Method minus MAP network, 95 % paired intervals; green better, red worse, grey no difference "
                "shown; an arrow marks a value off the scale.", ""]
        out.append(null_simulation_line(root) + f" {len(rows)} verdicts here, uncorrected for multiplicity: about "
                   f"{0.05 * len(rows):.0f} false ones by chance.")
    else:
        out += ["No calibration results yet: `make report`.", "", null_simulation_line(root)]
    out += [""] + learnability_part(root)
    out += ["", "### The rendered report", "",
            "Executed notebooks (a code host renders `.ipynb`); browsable copies with contents and figures: "
            "`report/index.html`, `report/abnormality/index.html` (open from a clone).", ""]
    out += notebook_links(root)
    out += [""] + glossary_lines() + ["", SUMMARY_END]
    text = "\n".join(out)
    return re.sub(r"\]\(((?:report|figures|utils)/)", rf"]({base}\1", text) if base else text


# --------------------------------------------------------------------------- the details block

def delta_table(calibration: dict) -> list[str]:
    """Markdown rows: each method against the MAP network on NLL, ECE (points) and accuracy (points). A single-model
    method's row is the mean over the members it is fitted on (`fitted_on`), paired with the same members' MAP
    networks, its interval resampling members and studies; a combination's row is its predictive over all members
    against the same members' MAP networks as single models (`calibration.interval_table` pairs them so)."""
    rows = ["| method | network(s) | ΔNLL (nats) | ΔECE (points) | Δaccuracy (points) |", "|---|---|---|---|---|"]
    for r in calibration["table"]:
        if r["method"] == "MAP" or r.get("delta_nll") is None:
            continue
        cells = []
        for m in ("nll", "ece", "accuracy"):
            factor, digits, _ = SCALE[m]
            d, lo, hi = r[f"delta_{m}"], r[f"delta_{m}_low"], r[f"delta_{m}_high"]
            cells.append(f"{_ci(d, lo, hi, digits, factor, sign=True)} {verdict(m, d, lo, hi)}")
        n = int(r.get("fitted_on") or 1)
        who = (f"{int(r['members'])} members together" if r["kind"] != "single"
               else "member 0" if n == 1 else f"mean of {n} members")
        if n == 1 and r["kind"] == "single":
            who += " (against member 0's MAP network)"
        rows.append(f"| {r['method']} | {who} | " + " | ".join(cells) + " |")
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
    rec = root / "report" / "recipe" / "cpu-bodypart.json"
    if rec.is_file():
        rows = json.loads(rec.read_text()).get("rows", [])
        base = next((r for r in rows if r["variant"] == "baseline"), None)
        longer = max((r for r in rows if r["epochs"] > (base or {}).get("epochs", 1e9)), key=lambda r: r["epochs"],
                     default=None)
        gain = (ens or {}).get("full_minus_one_member", {}).get("accuracy")
        if base and longer:
            d = 100 * (longer["test_acc"] - base["test_acc"])
            s = (f"- On the body part, training member 0 for {longer['epochs']} instead of {base['epochs']} epochs "
                 f"changed its test accuracy by {d:+.1f} points in the controlled runs")
            if gain:
                g = 100 * gain["delta"]
                s += (f", against the full ensemble's {_ci(gain['delta'], gain['low'], gain['high'], 1, 100, True)}"
                      " points over one member")
                if d > g > 0:
                    s += ": the ensemble's gains may belong to undertrained members"
            out.append(s + " (the controlled runs do not record the phantom generator they ran on).")
    temps = (cal or {}).get("temperatures")
    if temps:
        side = ("below 1 for every member (the MAP networks are underconfident)" if max(temps) < 1 else
                "above 1 for every member (the MAP networks are overconfident)" if min(temps) > 1 else
                "on both sides of 1")
        out.append(f"- The body-part temperatures fitted on the validation split are {min(temps):.2f} to "
                   f"{max(temps):.2f}, {side}.")
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
    acal, amp, abn = _load(ab, "calibration"), _load(ab, "map"), _load(ab, "abnormality")
    out = [START, ""]
    for name, c in (("Body part (7 classes)", cal), ("Normal / abnormal (MURA's task, per image)", acal)):
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
                        [line + ".", "", *delta_table(c)])
    out += _details("Do the members fit what they are trained on?",
                    [fit_line("body part", mp), fit_line("normal / abnormal", amp)])
    for task, title in (("bodypart", "body part"), ("abnormality", "normal / abnormal")):
        rec = body / "recipe" / f"cpu-{task}.json"
        if rec.is_file():
            doc = json.loads(rec.read_text())
            gen = f"phantom {doc['generator_version']}, " if doc.get("generator_version") else ""
            out += _details(f"Controlled runs, {title} (cpu profile, {gen}member 0's seed, one setting changed at a "
                            f"time; `python -m utils.recipe --task {task}`; accuracies in %, eval mode, no "
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
    results = _results(ROOT)
    rows = forest_rows({s: results[s]["calibration"] for _, s, _ in TASKS if results[s]["calibration"]})
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
