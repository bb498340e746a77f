"""The README's findings, written from the committed results, so that its numbers cannot drift from the report.

    python -m utils.findings            # rewrite the block between the README's findings markers
    python -m utils.findings --check    # exit 1 if the README's block differs from the results (tests do this)

Every number in the block is read from `report/results/*.json` (the body-part task) and
`report/abnormality/results/*.json` (MURA's normal/abnormal task); nothing is typed by hand. Paired differences
are the method minus the MAP network (member 0's where the method is fitted on member 0, as the calibration
chapter pairs them), with their 95 % study-bootstrap interval (`utils.evidence`). A difference is called better
or worse only where its interval excludes zero, and *borderline* where that interval ends within rounding of zero
at the printed precision (a rebuild on another host can move such a verdict).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ROOT

START, END = "<!-- findings:start (python -m utils.findings) -->", "<!-- findings:end -->"
LOWER_IS_BETTER = {"nll": True, "ece": True, "accuracy": False}
SCALE = {"nll": (1.0, 3, ""), "ece": (100.0, 2, ""), "accuracy": (100.0, 2, "")}  # factor, digits, unit


def _load(folder: Path, name: str) -> dict | None:
    f = folder / "results" / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _ci(v, lo, hi, digits: int = 3, factor: float = 1.0, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(factor * v)} [{fmt.format(factor * lo)}, {fmt.format(factor * hi)}]"


def verdict(metric: str, delta: float, lo: float, hi: float) -> str:
    """'better', 'worse' or 'no difference shown', with ' (borderline)' where the interval's end nearest zero
    rounds to zero at the printed precision."""
    if lo <= 0 <= hi:
        return "no difference shown"
    factor, digits, _ = SCALE[metric]
    near = min(abs(lo), abs(hi)) * factor
    good = (hi < 0) == LOWER_IS_BETTER[metric]
    return ("better" if good else "worse") + (" (borderline)" if round(near, digits) == 0 else "")


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


def block(root: Path = ROOT) -> str:
    """The findings block (Markdown, between the markers) from the committed results under `root`/report."""
    body, ab = root / "report", root / "report" / "abnormality"
    cal, mp = _load(body, "calibration"), _load(body, "map")
    acal, amp, abn = _load(ab, "calibration"), _load(ab, "map"), _load(ab, "abnormality")
    out = [START, ""]
    out.append("**Do the members fit what they are trained on?**")
    out.append("")
    out += [fit_line("body part", mp), fit_line("normal / abnormal", amp), ""]
    for task, title in (("bodypart", "body part"), ("abnormality", "normal / abnormal")):
        rec = body / "recipe" / f"cpu-{task}.json"
        if rec.is_file():
            rows = json.loads(rec.read_text())["rows"]
            out.append(f"<details><summary>Controlled runs, {title} (cpu profile, phantom 3.0, member 0's seed, one "
                       f"setting changed at a time; `python -m utils.recipe --task {task}`; accuracies in %, eval "
                       "mode, no augmentation; seconds measured while other jobs shared the two cores, so they are "
                       "not timings)</summary>")
            out += ["", recipe_markdown(rows), "</details>", ""]
    for name, c in (("Body part (7 classes)", cal), ("Normal / abnormal (MURA's task, per image)", acal)):
        if not c:
            continue
        mapr = next(r for r in c["table"] if r["method"] == "MAP")
        out.append(f"**{name}: each method against the MAP network** ({c['test_images']} test images, "
                   f"{c['test_studies']} studies; 95 % intervals, paired bootstrap over studies). The MAP networks "
                   f"(mean of {int(mapr.get('fitted_on') or 1)} members): "
                   f"accuracy {_ci(mapr['accuracy'], mapr['accuracy_low'], mapr['accuracy_high'], 1, 100)} %, NLL "
                   f"{_ci(mapr['nll'], mapr['nll_low'], mapr['nll_high'])}, ECE "
                   f"{_ci(mapr['ece'], mapr['ece_low'], mapr['ece_high'], 2, 100)} % against "
                   f"{_ci(mapr['ece_reference'], mapr['ece_reference_low'], mapr['ece_reference_high'], 2, 100)} % for a "
                   "perfectly calibrated predictor with the same confidences on these images.")
        out.append("")
        out += delta_table(c)
        out.append("")
    if abn:
        t = {(r["method"], r["body_part"]): r for r in abn["table"]}
        e, b = t.get(("deep ensemble", "all")), t.get(("body-part prevalence (baseline)", "all"))
        if e:
            s = (f"**MURA's score (per study).** The deep ensemble's study AUROC is "
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
                  "a network that calls almost every study normal has a kappa near zero whatever it ranks. A published "
                  "from-scratch CNN on MURA-valid reaches kappa 0.386 (not peer-reviewed; notebook 07 places these).")
            out += [s, ""]
    out.append(END)
    return "\n".join(out)


def rewrite(readme: Path, text: str) -> str:
    """`readme`'s text with the block between the markers replaced by `text`."""
    old = readme.read_text()
    if START not in old or END not in old:
        raise ValueError(f"{readme} has no findings markers ({START!r} ... {END!r}): add them where the block goes")
    head, rest = old.split(START, 1)
    return head + text + rest.split(END, 1)[1]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.findings", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's block differs from the results")
    a = ap.parse_args(argv)
    readme = ROOT / "README.md"
    new = rewrite(readme, block())
    if a.check:
        if new != readme.read_text():
            sys.exit("README.md's findings differ from report/**/results: run `python -m utils.findings`")
        print("README.md's findings match the results")
        return
    readme.write_text(new)
    print(f"rewrote the findings block of {readme}")


if __name__ == "__main__":
    main()
