"""The learnability ladder in the README (report/recipe/cpu-learnability.json, written by
`python -m utils.models.learnability`): a headline of each group's AUROC range, the rung-by-rung answer and table
(collapsed), and what the ladder says of why the abnormality members underfit (the caveats)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from utils.chapters.abnormality import reference_table
from utils.config import get_profile
from utils.evaluation.evidence import fmt_delta, fmt_estimate
from utils.findings.words import details_block
from utils.models.learnability import RUNGS, scaling_name, scaling_top


FITS = 0.85
"""A network fits its training set when it classifies at least this share of its training images (issue 21's
target for the members)."""


def _rung_how(auroc: float, ci=None) -> str:
    """A rung's AUROC in words, graded on the printed value; "not above chance" where its interval reaches 0.5."""
    if ci and _finite(ci[0]) and ci[0] <= 0.5:
        return "not above chance"
    a = round(auroc, 2)
    return "finds" if a >= 0.9 else "only weakly" if a >= 0.7 else "barely"


def _span(values: list[float], fmt: str = "{:.2f}", sep: str = "-") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}{sep}{fmt.format(hi)}"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x


def _change(r: dict) -> str:
    """What a rung changes: its name after its group's ("no augmentation, 30 epochs"), or the whole name."""
    return r["rung"].split(", ", 1)[1] if ", " in r["rung"] else r["rung"]


def _scored(rows: list[dict], key: str) -> list[dict]:
    """The rows with a finite `key` (a rung whose held-out set lacks a class has no AUROC)."""
    return [r for r in rows if _finite(r.get(key))]


def _ci(r: dict, key: str):
    ci = r.get(f"{key}_ci")
    return ci if ci and all(_finite(v) for v in ci) else None


def _rung_score(r: dict, key: str) -> str:
    """A rung's AUROC (`key`) with its interval where it has one: '0.64 [0.58, 0.70]'."""
    return fmt_estimate(r[key], r.get(f"{key}_ci"))


def _variant(r: dict, base: dict, key: str) -> str:
    """One variant rung beside its group's first: its score, what it changes, and its training accuracy where it
    fits (>= FITS) and the first does not."""
    s = f"{r[key]:.2f} with {_change(r)}" + (" (own test set)" if r["held_out_images"] != base["held_out_images"]
                                              else "")
    if r["train_acc"] >= FITS > base["train_acc"]:
        s += f", fitting {100 * r['train_acc']:.1f} %"
    return s


def _task_key(task: list[dict]) -> str:
    return "study_auroc" if task and all(_finite(r.get("study_auroc")) for r in task) else "held_out_auroc"


def learnability_answer(rows: list[dict]) -> str:
    """The ladder in one plain line, from its rows: planted objects (the smallest found), real objects alone (the
    first such rung, with its accuracy against the majority share, then each variant), the task (study AUROC where
    measured, then each variant). A variant names its training accuracy where it fits (>= FITS) and the group's
    first rung does not; rungs without an AUROC are left out."""
    planted = _scored([r for r in rows if r["rung"].startswith("planted")], "held_out_auroc")
    objects = _scored([r for r in rows if r["rung"].startswith("objects")], "held_out_auroc")
    task = [r for r in rows if r["rung"].startswith("the task")]
    key = _task_key(task)
    task = _scored(task, key)
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
        base, rest = objects[0], objects[1:]
        how = _rung_how(base["held_out_auroc"], _ci(base, "held_out_auroc"))
        s = ("real objects alone " + ("" if how == "finds" else how + " ")
             + f"(AUROC {base['held_out_auroc']:.2f}; accuracy {100 * base['held_out_acc']:.1f} %, majority share "
             f"{100 * base['majority']:.1f} %")
        s += "".join(f"; {_variant(r, base, 'held_out_auroc')}" for r in rest if ", " in r["rung"])
        parts.append(s + ")")
    if task:
        what = "study AUROC" if key == "study_auroc" else "AUROC"
        base, rest = task[0], task[1:]
        s = f"the task (all parts, the profile's phantom) {_rung_how(base[key], _ci(base, key))} ({what} {base[key]:.2f}"
        s += "".join(f"; {_variant(r, base, key)}" for r in rest if ", " in r["rung"])
        parts.append(s + ")")
    return "; ".join(parts)


def learnability_headline(rows: list[dict]) -> str:
    """The ladder in a few words: planted objects' range of AUROCs; for real objects and the task, the group's first
    rung with its interval, then the range over its rungs and how many test sets they use, and how many intervals
    reach chance (0.5); for the task, the one-part rung at MURA's size of that part (study AUROC and kappa, on its own
    test set) where measured."""
    task = [r for r in rows if r["rung"].startswith("the task")]
    key = _task_key(task)
    mura = _mura_size_rung(rows) if key == "study_auroc" else None
    planted = _scored([r for r in rows if r["rung"].startswith("planted")], "held_out_auroc")
    groups = [("hardware/casts alone", _scored([r for r in rows if r["rung"].startswith("objects")],
                                                  "held_out_auroc"), "held_out_auroc", "AUROC"),
              ("the task", _scored(task, key), key, "study AUROC" if key == "study_auroc" else "AUROC")]
    parts = [f"planted objects, AUROC {_span([r['held_out_auroc'] for r in planted])}"] if planted else []
    for name, rs, k, what in groups:
        if not rs:
            continue
        s = f"{name}, {what} {_rung_score(rs[0], k)}"
        if len(rs) > 1:
            sets = len({r["held_out_images"] for r in rs})
            s += f" ({_span([r[k] for r in rs])} over {len(rs)} rungs" + (f", {sets} test sets" if sets > 1 else "")
            chance = sum(_rung_how(r[k], _ci(r, k)) == "not above chance" for r in rs)
            s += (f"; {chance} interval{'s reach' if chance > 1 else ' reaches'} 0.5" if chance else "")
            if mura is not None and name == "the task":
                s += (f"; {_one_part(mura).lower()} alone at MURA's training size, own test set: "
                      f"{_rung_score(mura, 'study_auroc')}, kappa {_rung_score(mura, 'study_kappa')}")
            s += ")"
        parts.append(s)
    return "; ".join(parts)


def learnability_reason(rows: list[dict]) -> str | None:
    """What the ladder says of why the abnormality members underfit: the task rung that fits its training images
    best (>= FITS; at its last epoch, no epoch selection) beside the task's first rung (same test images, no paired
    interval), the task rungs scored on other test sets, the share of held-out abnormal images with hardware the
    objects rungs call abnormal, and the one-part rung at MURA's size beside the published figure (`mura_size_line`);
    None where no task rung fits."""
    task = [r for r in rows if r["rung"].startswith("the task")]
    key = _task_key(task)
    task = _scored(task, key)
    fits = [r for r in task if r["train_acc"] >= FITS]
    if not task or not fits:
        return None
    best, base = max(fits, key=lambda r: r["train_acc"]), task[0]
    what = "study AUROC" if key == "study_auroc" else "AUROC"
    def epochs_only(r):  # a task rung that changes nothing but the epochs (RUNGS)
        d = RUNGS.get(r["rung"])
        return d is not None and set(d) <= {"kind", "patients", "epochs"} and d.get("patients", 1) == 1

    same = sorted((r for r in task if epochs_only(r) and _finite(r.get("epochs"))), key=lambda r: r["epochs"])
    fit = [r["train_acc"] for r in same]
    if len({r["epochs"] for r in same}) > 1 and all(a < b for a, b in zip(fit, fit[1:])):
        recipe = (f"with augmentation `{base.get('augment', '')}` kept, the fit rises with the epochs ("
                  + ", ".join(f"{100 * r['train_acc']:.1f} % at {r['epochs']}" for r in same)
                  + "; one seed each, last epoch), so the members' epochs hold their fit back; what augmentation and "
                  "the epoch kept add one seed does not separate")
    else:
        recipe = ("which part of the recipe holds the members back (augmentation, epochs, the epoch kept) one seed "
                  "does not separate")
    s = (f"The learnability ladder (one run of one seed per rung) bounds the causes: the network can memorise its "
         f"training images ({100 * best['train_acc']:.1f} % at the last epoch when trained with {_change(best)}, no "
         "epoch selection; the member's figure is at its epoch of lowest validation NLL), so capacity does not cap "
         f"the fit; {recipe}. What it memorises generalises weakly ({what} {_rung_score(best, key)}")
    if best is not base and best["held_out_images"] == base["held_out_images"]:
        s += (f", against {_rung_score(base, key)} for the {base.get('epochs', '')}-epoch rung with augmentation "
              f"`{base.get('augment', '')}` on the same test images: no paired interval, the difference not tested")
    s += ")"
    mura = _mura_size_rung(rows)  # said on its own, by mura_size_line
    other = [r for r in task if r["held_out_images"] != base["held_out_images"] and r is not mura]
    if other:
        s += ("; on their own test sets, " + ", ".join(
            f"{_change(r)} {_rung_score(r, key)} ({r['held_out_images']} images"
            + (f", {r['held_out_studies']} studies" if r.get("held_out_studies") else "") + ")" for r in other))
    found = [r for r in rows if r["rung"].startswith("objects") and _finite(r.get("found_hardware"))]
    if found:
        top = max(found, key=lambda r: r["found_hardware"])
        s += (f"; of the held-out abnormal images that show hardware, the objects rungs call "
              f"{_span([100 * r['found_hardware'] for r in found], '{:.0f}')} % abnormal at p > 0.5"
              + (" (the highest on its own test set)" if top["held_out_images"] != found[0]["held_out_images"]
                 else ""))
    mura = mura_size_line(rows)
    return s + "." + (f" {mura}" if mura else "")


def _one_part(r: dict) -> str | None:
    """The body part a rung trains and scores on alone (its definition in `learnability.RUNGS`), else None."""
    parts = RUNGS.get(r["rung"], {}).get("parts") or ()
    return parts[0] if len(parts) == 1 else None


def _mura_size_rung(rows: list[dict]) -> dict | None:
    """The one-part task rung named for MURA's size of its part, with a study AUROC and kappa; else None."""
    return next((r for r in rows if "MURA's" in r["rung"] and r["rung"].endswith(" size") and _one_part(r)
                 and _finite(r.get("study_kappa")) and _finite(r.get("study_auroc"))), None)


def mura_size_line(rows: list[dict]) -> str | None:
    """The one-part task rung trained on about as many images of its part as MURA's training split holds (its name
    says "MURA's ... size"), with its study AUROC and kappa, beside the published kappa of a small CNN trained from
    scratch on real MURA for that part and the range of the other published rows for it (`abnormality.reference_table`);
    None without such a rung or figure. Networks, inputs, training and test sets differ and the published figures
    carry no interval, so the line says where the figure falls and draws no verdict."""
    r = _mura_size_rung(rows)
    if r is None:
        return None
    part = _one_part(r)
    col = part.lower()
    ref = reference_table()
    ref = ref[(ref.metric == "kappa") & ref[col].notna()]
    scratch = ref[ref.pretraining == "none (from scratch)"]
    if scratch.empty:
        return None
    v = float(scratch[col].iloc[0])
    others = ref[ref.pretraining != "none (from scratch)"][col].astype(float).tolist()
    return (f"At about MURA's {col} training size ({r['train_images']:,} images, its own "
            f"{r.get('held_out_studies', '?')} test studies) the phantom's {col} alone gives study AUROC "
            f"{_rung_score(r, 'study_auroc')} and kappa {_rung_score(r, 'study_kappa')}. On real MURA, a small CNN "
            f"trained from scratch on all seven parts (not peer-reviewed) reports {col} kappa {v:.2f} on MURA-valid"
            + (f"; pretrained networks report {_span(others)} (notebook 07, table 07-2, with their splits)"
                          if others else "")
            + ". Not a test: other networks, inputs, training and test sets, and the published figures carry no "
            "interval." + (f" The rung took {r['seconds']:.0f} s (shared cores, indicative) for {r.get('epochs', '?')} "
                           "epochs; the paired curve below trains smaller shares for as many optimiser steps."
                           if _finite(r.get("seconds")) else ""))


CALLS_ALIKE = 0.02
"""A network that calls at most this share of the test studies abnormal (or at least 1 minus it) calls almost every
study alike: its kappa is near 0 whatever its ranking (AUROC) shows."""


def _alike(r: dict) -> str:
    c = r.get("study_called")
    if not _finite(c) or CALLS_ALIKE < c < 1 - CALLS_ALIKE:
        return ""
    return f" (calls {'every' if c in (0, 1) else 'almost every'} study {'normal' if c < 0.5 else 'abnormal'})"


def scaling_line(root: Path) -> str | None:
    """The paired data-scaling curve (report/recipe/cpu-scaling.json, `python -m utils.models.learnability
    --scaling`) in one paragraph: each row's training images, epochs and steps, study AUROC and kappa on the one test
    set, and each row's paired difference from the largest size at the profile's epochs; None where it has not been
    run."""
    f = root / "report" / "recipe" / "cpu-scaling.json"
    if not f.is_file():
        return None
    res = json.loads(f.read_text())
    rows = res["rows"]
    top = scaling_top(rows)
    parts = res["parts"] if isinstance(res["parts"], str) else ", ".join(p.lower() for p in res["parts"])

    def how(r):
        steps = f", {r['epochs']} epochs, {r['steps']:,} steps" if r.get("steps") else ""
        return (f"{scaling_name(r, top)} ({r['train_images']:,} images{steps}): AUROC "
                f"{fmt_estimate(r['study_auroc'], r['study_auroc_ci'])}, kappa "
                f"{fmt_estimate(r['study_kappa'], r['study_kappa_ci'])}{_alike(r)}")

    deltas = "; ".join(f"{scaling_name(r, top)}, AUROC {fmt_estimate(r['minus_top_auroc'][0], r['minus_top_auroc'][1:])}"
                       f" and kappa {fmt_estimate(r['minus_top_kappa'][0], r['minus_top_kappa'][1:])}"
                       for r in rows if r.get("minus_top_auroc"))
    return (f"Paired, on one test set ({res['test_studies']} {parts} studies of the {top['patients']}x phantom's "
            f"test split), networks trained on the {parts} studies of nested shares of that phantom's training "
            f"patients (1x: the cpu phantom's patients, image for image, less those this tree's validation carve "
            f"takes; {top['patients']}x is the rung at MURA's size, the same network) give study "
            f"{'; '.join(how(r) for r in rows)}"
            + (f". Minus {top['patients']}x: {deltas}" if deltas else "")
            + " (95 % intervals over the same resampled test studies; one seed per row, so they do not cover the "
            f"training run).{_steps_reading(rows, top)} The part is held fixed; whether other parts behave alike is "
            "not measured.")


def _steps_reading(rows: list[dict], top: dict) -> str:
    """A bounded reading where the rows give it: every smaller share at the profile's epochs worse than the largest
    (both differences' intervals below 0) and none at the largest's steps shown different from it (both intervals
    holding 0): how much of the largest gap the steps close, and the largest image effect the intervals leave
    open; else nothing."""
    def below(r, m):
        return r[f"minus_top_{m}"][2] < 0

    def holds(r, m):
        return r[f"minus_top_{m}"][1] <= 0 <= r[f"minus_top_{m}"][2]

    short = [r for r in rows if r.get("minus_top_auroc") and r.get("epochs") == top.get("epochs")]
    long = [r for r in rows if r.get("minus_top_auroc") and r.get("epochs") != top.get("epochs")]
    if not (short and long and all(below(r, m) for r in short for m in ("auroc", "kappa"))
            and all(holds(r, m) for r in long for m in ("auroc", "kappa"))):
        return ""
    gap = max(-r["minus_top_auroc"][0] for r in short)
    left = max(abs(r["minus_top_auroc"][0]) for r in long)
    open_ = max(-r["minus_top_auroc"][1] for r in long)
    return (f" With {top['patients']}x's steps the smaller shares come within {left:.2f} AUROC of it, against up to "
            f"{gap:.2f} at the profile's {top['epochs']} epochs: on this part and test set the steps account for most "
            f"of that gap, while an image effect of up to {open_:.2f} AUROC is not excluded (one seed per row); whether "
            f"{top['patients']}x itself gains from more steps is not measured.")


ORDER_MIN_STUDIES = 10
"""A part's study AUROC enters the order of the parts (`budget_line`) only with at least this many normal and this
many abnormal studies: with fewer, a percentile bootstrap of the AUROC is unreliable (at perfect separation it
collapses to [1.00, 1.00])."""

REPORT_BUDGET_S = 600
"""What `make report` may take for one task on the cpu profile, 2 cores, cold (the README's budget)."""


def budget_line(rows: list[dict], profile: str = "cpu") -> str | None:
    """The longest-trained task rung on all parts of the profile's phantom (the test images of the task's first
    rung), set against what the profile's report trains: its study AUROC and kappa, its fit, its steps and seconds
    beside the report's budget and its members' epochs, and its study AUROC per body part (`study_auroc_by_part`);
    None where no such rung has more epochs than the profile's members."""
    p = get_profile(profile)
    task = [r for r in rows if r["rung"].startswith("the task") and _finite(r.get("study_auroc"))]
    if not task:
        return None
    base = task[0]
    longer = [r for r in task if r["held_out_images"] == base["held_out_images"] and r.get("augment") == p.augment
              and not RUNGS.get(r["rung"], {}).get("parts") and (r.get("epochs") or 0) > p.epochs
              and _finite(r.get("seconds"))]
    if not longer:
        return None
    r = max(longer, key=lambda r: r["epochs"])
    steps = r["epochs"] * (r["train_images"] // p.batch_size)
    s = (f"Trained for {r['epochs']} epochs ({steps:,} optimiser steps, all parts, augmentation `{r['augment']}`), one "
         f"network reaches, at its last epoch (no epoch selection), study AUROC {_rung_score(r, 'study_auroc')} and "
         f"kappa {_rung_score(r, 'study_kappa')} on the report's {r.get('held_out_studies', '?')} test studies"
         f"{_alike(r)} and fits {_fit_pct(r['train_acc'])} % of its training images; its training took "
         f"{r['seconds']:.0f} s (one run, shared cores: indicative), against the {p.name} report's budget of "
         f"{REPORT_BUDGET_S} s per task for everything, which trains {p.members} members of {p.epochs} epochs; "
         f"{p.members} members this long would take about {p.members * r['seconds'] / 60:.0f} min of training alone.")
    if _finite(r.get("free_study_auroc")) and _finite(r.get("objects_study_auroc")):
        def at(x):
            return (f"{_rung_score(x, 'free_study_auroc')} and {_rung_score(x, 'objects_study_auroc')}")

        s += (f" Against the same {r['free_studies'] - r['free_abnormal']} normal studies it ranks the "
              f"{r['free_abnormal']} abnormal studies that show no hardware or cast (the report's shortcut-free "
              f"score; kappa {_rung_score(r, 'free_study_kappa')} on them and the normal ones) and the "
              f"{r['objects_abnormal']} that show one at study AUROC {at(r)} respectively"
              + (f" (at {base['epochs']} epochs: {at(base)}; one seed each)" if base is not r
                 and _finite(base.get("free_study_auroc")) and _finite(base.get("objects_study_auroc")) else "")
              + "; the all-studies AUROC is exactly their mean weighted by those abnormal studies.")
    by = r.get("study_auroc_by_part") or {}
    scored = {k: v for k, v in sorted(by.items()) if _finite(v.get("auroc"))}
    small = [k for k, v in scored.items() if min(v["abnormal"], v["studies"] - v["abnormal"]) < ORDER_MIN_STUDIES]
    if scored:
        def one(k, v):
            counts = f"{v['studies']} studies, {v['abnormal']} abnormal"
            if k in small:
                return f"{k.lower()} {v['auroc']:.2f} ({counts}; no interval: too few studies of a label)"
            return f"{k.lower()} {fmt_estimate(v['auroc'], v['ci'])} ({counts})"

        ci = {k: v["ci"] for k, v in scored.items() if v.get("ci") and k not in small}
        apart = [f"{a.lower()} above {b.lower()}" for a in ci for b in ci if ci[a][0] > ci[b][1]]
        s += (" Its study AUROC per part (alphabetical): " + ", ".join(one(k, v) for k, v in scored.items()) + ". "
              + (f"Parts with fewer than {ORDER_MIN_STUDIES} normal or abnormal studies are not compared; among the "
                 "others " if small else "Among the parts ")
              + ("every two intervals overlap, so no order of the parts is shown (the pairwise differences are not "
                 "tested, and overlap does not show the parts alike)." if not apart else
                 "the intervals lie apart only for " + ", ".join(apart) + " (the pairwise differences are not "
                 "tested)."))
    return s


def trade_line(root: Path) -> str | None:
    """The members-for-epochs trade at the report's training cost (report/recipe/cpu-trade.json, `python -m
    utils.models.learnability --trade`) in one sentence: each split's ensemble study AUROC and kappa, and each later
    split's paired difference from the first (the report's split); None where it has not been run."""
    f = root / "report" / "recipe" / "cpu-trade.json"
    if not f.is_file():
        return None
    res = json.loads(f.read_text())
    rows = res["rows"]

    def name(r):
        return f"{r['members']} x {r['epochs']}"

    def pair(r, m):
        d = r[f"minus_first_{m}"]
        return fmt_delta(dict(delta=d[0], low=d[1], high=d[2]), digits=3)

    first = rows[0]
    return (f"Spending the members' training cost ({first['members'] * first['epochs']} member-epochs, the report's "
            f"{name(first)}) on fewer, longer-trained members "
            f"(members at their last epoch, not at the report's epoch of lowest validation NLL, so the {name(first)} "
            f"row is not the report's ensemble; scored on the report's {res['test_studies']} test studies): "
            + "; ".join(f"{name(r)}, study AUROC {fmt_estimate(r['study_auroc'], r['study_auroc_ci'])} and kappa "
                        f"{fmt_estimate(r['study_kappa'], r['study_kappa_ci'])}{_alike(r)}, calling "
                        f"{100 * r['study_called']:.0f} % of the studies abnormal, members fitting "
                        f"{100 * r['train_acc']:.1f} %" for r in rows)
            + ". Against " + name(first) + ", paired: "
            + "; ".join(f"{name(r)}, AUROC {pair(r, 'auroc')} and kappa {pair(r, 'kappa')}" for r in rows[1:])
            + " (one seed set per row; the intervals cover the test studies, not the training runs).")


def _fit_pct(acc: float) -> str:
    """A training accuracy in % with one decimal, or two where one would round it up to FITS (84.95 % is not 85.0 %)."""
    one = f"{100 * acc:.1f}"
    return f"{100 * acc:.2f}" if acc < FITS <= float(one) / 100 else one


def learnability_rows(root: Path) -> list[dict]:
    """The ladder's rows (report/recipe/cpu-learnability.json); none where it has not been run."""
    f = root / "report" / "recipe" / "cpu-learnability.json"
    return json.loads(f.read_text()).get("rows", []) if f.is_file() else []


def learnability_part(root: Path) -> list[str]:
    """The abnormality learnability ladder (report/recipe/cpu-learnability.json): a plain answer, the table
    collapsed; "not yet measured" where the file is absent."""
    head = "**Can the learner see an abnormality?** [`utils.models.learnability`](utils/models/learnability.py)'s ladder"
    rows = learnability_rows(root)
    if not rows:
        return [head + ": not yet measured."]
    line = (head + f" ({len(rows)} rung{'s' if len(rows) > 1 else ''}, one seed each, "
            + ("" if all(r.get("held_out_auroc_ci") for r in rows) else "not every rung with an interval, ")
            + "unpaired): " + learnability_headline(rows) + ".")

    def cell(x, fmt):
        return fmt.format(x) if _finite(x) else "-"

    table = ["| rung | augmentation | epochs | training / held-out images | held-out majority share | training accuracy | "
             "held-out accuracy | held-out AUROC | study AUROC | study kappa | study AUROC, shortcut-free | "
             "studies called abnormal | held-out hardware found |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hw = r.get("found_hardware")
        table.append(f"| {r['rung']} | {r.get('augment', '')} | {r.get('epochs', '-')} | {r['train_images']} / "
                     f"{r['held_out_images']} | {100 * r['majority']:.1f} % | {100 * r['train_acc']:.1f} % | "
                     f"{100 * r['held_out_acc']:.1f} % | {fmt_estimate(r['held_out_auroc'], r.get('held_out_auroc_ci'))} | "
                     f"{fmt_estimate(r.get('study_auroc'), r.get('study_auroc_ci'))} | "
                     f"{fmt_estimate(r.get('study_kappa'), r.get('study_kappa_ci'))} | "
                     f"{fmt_estimate(r.get('free_study_auroc'), r.get('free_study_auroc_ci'))} | "
                     f"{cell(100 * r['study_called'] if _finite(r.get('study_called')) else None, '{:.0f} %')} | "
                     f"{cell(100 * hw if _finite(hw) else None, '{:.0f} %')} |")
    answer = learnability_answer(rows)
    lead = [answer[:1].upper() + answer[1:] + ".", ""] if answer else []
    return [line, "", *details_block("Rung by rung", [*lead, *table])[:-1]]
