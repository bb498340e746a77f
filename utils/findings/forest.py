"""The summary figure: every method's paired difference against the MAP network on NLL, debiased ECE and
accuracy, both tasks, as a forest plot (`figures/summary_forest.png`, with a digest of the numbers it shows)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from utils.config import ROOT
from utils.findings.words import (
    FOREST_METRICS,
    FOREST_VERSION,
    LOWER_IS_BETTER,
    NAME,
    SCALE,
    TASKS,
    ci_text,
    is_degenerate,
    load_results,
    plain_words,
    row_delta,
    verdict,
)
from utils.outputs import DPI

# --------------------------------------------------------------------------- the forest plot

def _classes(cal: dict | None) -> int | None:
    """The number of classes, from the per-class rows of the calibration chapter's conformal table."""
    names = {r["subset"] for r in (cal or {}).get("conformal", []) if str(r.get("subset", "")).startswith("class=")}
    return len(names) or None


ALL_WEIGHTS_SETS = {"Laplace, kron, all weights": "all-weights Laplace",
                    "Laplace, kron, all weights, narrowed prior": "all-weights Laplace, narrowed prior"}
"""Each all-weights posterior's label and its set of sampled networks in notebook 05's shift table."""


def all_weights_note(cal: dict | None, expl: dict | None) -> dict[str, str]:
    """Each all-weights Laplace's flag, from how often its sampled networks classify right: 'prior-dominated
    (samples at chance)' where that interval holds 1 / classes and they mostly disagree with the MAP network (on a
    task the MAP network itself barely learns, chance accuracy alone says nothing), else the share right with its
    interval and their agreement with the MAP class."""
    aw = (expl or {}).get("all_weights", {})
    k = _classes(cal)
    out = {}
    for label, name in ALL_WEIGHTS_SETS.items():
        s = next((r for r in aw.get("shift", []) if r.get("set") == name and r.get("samples_right_low") is not None),
                 None)
        if not s or not k:
            continue
        agree = s.get("samples_agree")
        if s["samples_right_low"] <= 1 / k <= s["samples_right_high"] and (agree is None or agree < 0.5):
            out[label] = "prior-dominated (samples at chance)"  # at chance and unlike the MAP network
        elif agree is not None:
            out[label] = (f"samples right "
                          f"{ci_text(s['samples_right'], s['samples_right_low'], s['samples_right_high'], 0, 100)} %, "
                          f"agreeing with the MAP class on {100 * agree:.0f} %")
        else:
            out[label] = (f"samples right "
                          f"{ci_text(s['samples_right'], s['samples_right_low'], s['samples_right_high'], 0, 100)} %")
    return out


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
                d = row_delta(r, m)
                if d is None or (m == "ece" and row_delta(r, "ece_debiased")):
                    continue
                factor = SCALE[m][0]
                row = dict(task=task, method=r["method"], metric=m, delta=round(factor * d[0], 6),
                           low=round(factor * d[1], 6), high=round(factor * d[2], 6),
                           verdict=verdict(m, *d).split(" (")[0], borderline="borderline" in verdict(m, *d),
                           degenerate=is_degenerate(*d))
                note = ((notes or {}).get(task) or {}).get(r["method"])
                if note:
                    row["note"] = note
                rows.append(row)
    return rows


def summary_forest_rows(root: Path = ROOT) -> list[dict]:
    """The forest plot's rows from the results under `root`, flags included (what the README's figure shows)."""
    results = load_results(Path(root))
    notes = {}
    for _, s, _ in TASKS:
        n = all_weights_note(results[s]["calibration"], results[s]["explanations"])
        if n:
            notes[s] = n
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
                ax.annotate(f"{ci_text(r['delta'], r['low'], r['high'], digits if factor == 1 else 1, 1, True)}, off scale",
                            (0.9 * lim if right else -0.9 * lim, y), ha="right" if right else "left", va="center",
                            fontsize=7.5, xytext=(0, 9), textcoords="offset points", color=c)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(len(methods) - 0.5, -0.5)
            ax.set_yticks(range(len(methods)))
            ax.set_yticklabels([plain_words(k) + (f"\n{notes[k]}" if k in notes else "") for k in methods]
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
    if not path.is_file():
        return False
    with Image.open(path) as im:
        return im.info.get("findings-digest") == forest_digest(rows)
