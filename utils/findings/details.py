"""The README's details block (the full tables behind the summary, the caveats) and the command that rewrites
both generated parts of the README (`main`; `--check` for the tests)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from utils.config import ROOT
from utils.findings.answers import summary
from utils.findings.ladder import budget_line, learnability_reason, learnability_rows, scaling_line, trade_line
from utils.findings.forest import all_weights_note, forest_is_current, summary_forest_rows, write_forest
from utils.findings.words import (
    DETAILS_HEADING,
    END,
    FOREST,
    GLOSSARY_HEADING,
    NAME,
    START,
    SUMMARY_END,
    SUMMARY_START,
    ci_text,
    details_block,
    ece_metric,
    effect_text,
    label,
    load_json,
    num_text,
    row_delta,
    verdict,
)

# --------------------------------------------------------------------------- the details block

def delta_table(calibration: dict, note: dict[str, str] | None = None) -> list[str]:
    """Markdown rows: each method against the MAP network on NLL, the debiased ECE (where the results carry it),
    the plug-in ECE (points) and accuracy (points). A single-model method's row is the mean over the members it is
    fitted on (`fitted_on`), paired with the same members' MAP networks, its interval resampling members and
    studies; a combination's row is its predictive over all members against the same members' MAP networks as
    single models (`calibration.interval_table` pairs them so). `note` flags the all-weights Laplaces' rows
    ({label: flag}, `forest.all_weights_note`)."""
    metrics = [m for m in ("nll", "ece_debiased", "ece", "accuracy")
               if m != "ece_debiased" or any(row_delta(r, m) for r in calibration["table"])]
    head = {"nll": "ΔNLL (nats)", "ece_debiased": "Δdebiased ECE (points)", "ece": "ΔECE, plug-in (points)",
            "accuracy": "Δaccuracy (points)"}
    rows = ["| method | network(s) | " + " | ".join(head[m] for m in metrics) + " |",
            "|---|---|" + "---|" * len(metrics)]
    for r in calibration["table"]:
        if r["method"] == "MAP" or r.get("delta_nll") is None:
            continue
        cells = []
        for m in metrics:
            d = row_delta(r, m)
            cells.append(f"{num_text(m, *d, unit=False)} {label(m, *d)}" if d else "-")
        n = int(r.get("fitted_on") or 1)
        who = (f"{int(r['members'])} members together" if r["kind"] != "single"
               else "member 0" if n == 1 else f"mean of {n} members")
        if n == 1 and r["kind"] == "single":
            who += " (against member 0's MAP network)"
        flag = (note or {}).get(r["method"])
        name = r["method"] + (f": {flag}" if flag else "")
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




def conformal_caveat(cal: dict | None) -> str:
    """How the conformal coverages are read: against the beta-binomial band where notebook 04's results carry it
    (`conformal_settings`), else against the line at 1 - α."""
    st = (cal or {}).get("conformal_settings")
    if not st:
        return ("- Conformal coverage is read against the line at 1 - α in notebooks 04 and 06, not against the range "
                "the calibration set's size implies; read \"below target\" there as not shown.")
    return (f"- Notebook 04 reads conformal coverage against the band the guarantee implies for the cal split's "
            f"{st['cal_images']} images (a beta-binomial range), which treats images as exchangeable one by one; "
            f"they come from {st['cal_studies']} studies whose views are not, so the band is too narrow by the design "
            "effect. Notebook 06 reads coverage under shift against the same kind of band, where nothing is promised.")


def caveats(root: Path, cal: dict | None, amp: dict | None, ens: dict | None, expl: dict | None) -> list[str]:
    """What the run does not settle, with its numbers from the results."""
    out = []
    fit = (amp or {}).get("fit")
    if fit and not fit.get("fits", True):
        rows = learnability_rows(root)
        why = " ".join(filter(None, (learnability_reason(rows), scaling_line(root))))
        out.append(f"- On MURA's task member 0 fits {fit['train_acc']:.1%} of its own training images, so that "
                   "task's calibration and explanation comparisons describe underfitted networks."
                   + (f" {why}" if why else ""))
        budget = " ".join(filter(None, (budget_line(rows), trade_line(root))))
        if budget:
            out.append(f"- What longer training gives all parts, and what it costs. {budget}")
    recs = [root / "report" / "recipe" / f"cpu-{t}.json" for t in ("bodypart", "abnormality")]
    recs = [json.loads(f.read_text()) for f in recs if f.is_file()]
    if recs:
        if any("generator_version" not in d for d in recs):
            said = "do not all record the phantom generator they ran on"
        else:
            gens = sorted({d["generator_version"] or "real data" for d in recs})
            said = "ran on " + ", ".join(g if g == "real data" else f"phantom generator {g}" for g in gens)
        out.append(f"- The controlled runs are one run per setting, without intervals, and {said}: they are "
                   "not paired with this report's numbers.")
    temps = (cal or {}).get("temperatures")
    if temps:
        side = ("below 1 for every member: temperature scaling sharpens, so on validation the MAP networks look "
                "underconfident" if max(temps) < 1 else
                "above 1 for every member: temperature scaling softens, so on validation the MAP networks look "
                "overconfident" if min(temps) > 1 else "on both sides of 1")
        s = (f"- The body-part temperatures fitted on the validation split are {min(temps):.2f} to "
             f"{max(temps):.2f}, {side}")
        ts = next((r for r in (cal or {}).get("table", []) if r["method"] == "temperature scaling"), None)
        ece = ece_metric((cal or {}).get("table", []))
        shown = [(m, row_delta(ts, m)) for m in ("nll", ece) if row_delta(ts, m)]
        if shown and (max(temps) < 1 or min(temps) > 1):
            if all(verdict(m, *d).startswith("no difference") for m, d in shown):
                s += ("; on the test split temperature scaling shows no change ("
                      + ", ".join(f"{NAME[m]} {num_text(m, *d)}" for m, d in shown) + "), so the test split does not "
                      "show the direction")
            else:
                s += "; on the test split temperature scaling " + " and ".join(effect_text(m, *d) for m, d in shown)
        out.append(s + ".")
    aw = (expl or {}).get("all_weights", {})
    shift = next((r for r in aw.get("shift", []) if r.get("set") == "all-weights Laplace"), None)
    sweep = sorted(aw.get("scale_sweep", []), key=lambda r: r["tau"])
    if shift and shift.get("samples_right") is not None:
        s = (f"- The all-weights Laplace is prior-dominated: its sampled networks classify "
             f"{ci_text(shift['samples_right'], shift['samples_right_low'], shift['samples_right_high'], 1, 100)} % of "
             "the images right, so its CAM shift describes networks unlike the MAP network")
        if sweep:
            t = sweep[0]
            s += (f"; with its spread scaled by τ = {t['tau']:g} (tempered, not Bayesian) its samples agree with the "
                  f"MAP network on {ci_text(t['samples_agree'], t['samples_agree_low'], t['samples_agree_high'], 1, 100)} %"
                  " of the images")
        out.append(s + ".")
    nar, nshift = aw.get("narrowed"), next((r for r in aw.get("shift", [])
                                           if r.get("set") == "all-weights Laplace, narrowed prior"), None)
    if nar and nshift:
        missed = [t["target"].split(" (")[0] for t in nar.get("targets", []) if not t.get("met")]
        out.append(
            f"- The same posterior with its prior raised {nar['prior']['narrowing']:.3g}-fold on the val split (a "
            "narrowed posterior, not the evidence's) draws networks right on "
            f"{ci_text(nshift['samples_right'], nshift['samples_right_low'], nshift['samples_right_high'], 1, 100)} % "
            "and agreeing with the MAP class on "
            f"{ci_text(nshift['samples_agree'], nshift['samples_agree_low'], nshift['samples_agree_high'], 1, 100)} % "
            "of the explained images (body part); "
            + (f"it misses {len(missed)} of {len(nar.get('targets', []))} targets ({'; '.join(missed)}), so whether a "
               "posterior over the convolutions that classifies moves the CAM stays open." if missed else
               "it meets every target (notebook 05 reads its CAM shift)."))
    out.append(conformal_caveat(cal))
    out.append("- Where the phantom and real radiographs differ, nothing here transfers.")
    return ["**What this run does not settle.**", "", *out, ""]


def block(root: Path = ROOT) -> str:
    """The details block (Markdown, between the findings markers) from the committed results under `root`/report."""
    root = Path(root)
    body, ab = root / "report", root / "report" / "abnormality"
    cal, mp, ens, expl = (load_json(body, n) for n in ("calibration", "map", "ensembles", "explanations"))
    acal, amp, abn, aexpl = (load_json(ab, n) for n in ("calibration", "map", "abnormality", "explanations"))
    out = [START, ""]
    for name, c, x in (("Body part (7 classes)", cal, expl), ("Normal / abnormal (MURA's task, per image)", acal, aexpl)):
        if not c:
            continue
        mapr = next(r for r in c["table"] if r["method"] == "MAP")
        line = (f"The MAP networks (mean of {int(mapr.get('fitted_on') or 1)} members): "
                f"accuracy {ci_text(mapr['accuracy'], mapr['accuracy_low'], mapr['accuracy_high'], 1, 100)} %, NLL "
                f"{ci_text(mapr['nll'], mapr['nll_low'], mapr['nll_high'])}, ECE "
                f"{ci_text(mapr['ece'], mapr['ece_low'], mapr['ece_high'], 2, 100)} % against "
                f"{ci_text(mapr['ece_reference'], mapr['ece_reference_low'], mapr['ece_reference_high'], 2, 100)} % for a "
                "perfectly calibrated predictor with the same confidences on these images")
        if mapr.get("ece_debiased") is not None and mapr.get("ece_debiased_low") is not None:
            line += (f"; debiased ECE "
                     f"{ci_text(mapr['ece_debiased'], mapr['ece_debiased_low'], mapr['ece_debiased_high'], 2, 100)} %")
        out += details_block(f"{name}: each method against the MAP network, the full table ({c['test_images']} test "
                        f"images, {c['test_studies']} studies; 95 % intervals, paired bootstrap over studies)",
                        [line + ".", "", *delta_table(c, all_weights_note(c, x))])
    out += details_block("Do the members fit what they are trained on?",
                    [fit_line("body part", mp), fit_line("normal / abnormal", amp)])
    for task, title in (("bodypart", "body part"), ("abnormality", "normal / abnormal")):
        rec = body / "recipe" / f"cpu-{task}.json"
        if rec.is_file():
            doc = json.loads(rec.read_text())
            gen = f"phantom {doc['generator_version']}, " if doc.get("generator_version") else ""
            out += details_block(f"Controlled runs, {title} (cpu profile, {gen}member 0's seed, one setting changed at a "
                            f"time, one run each, no intervals; `python -m utils.models.recipe --task {task}`; accuracies in %, eval mode, no "
                            "augmentation; seconds measured while other jobs shared the two cores, so they are not "
                            "timings)", [recipe_markdown(doc["rows"])])
    if abn:
        t = {(r["method"], r["body_part"]): r for r in abn["table"]}
        e, b = t.get(("deep ensemble", "all")), t.get(("body-part prevalence (baseline)", "all"))
        if e:
            s = (f"The deep ensemble's study AUROC is "
                 f"{ci_text(e['study AUROC'], e['AUROC low'], e['AUROC high'], 2)} and Cohen's kappa "
                 f"{ci_text(e['study kappa'], e['kappa low'], e['kappa high'], 2)}")
            s += (f"; a predictor that knows only the body part: AUROC "
                  f"{ci_text(b['study AUROC'], b['AUROC low'], b['AUROC high'], 2)}, kappa "
                  f"{ci_text(b['study kappa'], b['kappa low'], b['kappa high'], 2)}" if b else "")
            free = {r["method"]: r for r in abn.get("shortcut_free", []) if r["studies scored"] != "all"}
            if "deep ensemble" in free:
                f = free["deep ensemble"]
                s += (f". Without the abnormal studies that show hardware or a cast ({f['studies']} studies left, "
                      f"{f['abnormal studies']} abnormal): AUROC {ci_text(f['study AUROC'], f['AUROC low'], f['AUROC high'], 2)}, "
                      f"kappa {ci_text(f['study kappa'], f['kappa low'], f['kappa high'], 2)}")
                if "body-part prevalence (baseline)" in free:
                    g = free["body-part prevalence (baseline)"]
                    s += (f", against the body-part baseline's AUROC "
                          f"{ci_text(g['study AUROC'], g['AUROC low'], g['AUROC high'], 2)} on the same studies (no paired "
                          "interval for the change: dropping studies changes the case mix)")
            s += (". Kappa scores the call at MURA's threshold (a study's mean p(abnormal) above 0.5), AUROC the ranking: "
                  "a network that calls almost every study normal has a kappa near zero whatever it ranks.")
            scratch = next((r for r in abn.get("reference", []) if r.get("metric") == "kappa"
                            and "scratch" in str(r.get("pretraining")) and r.get("overall") is not None), None)
            if scratch:
                s += (f" A published {scratch['model']} trained from scratch reaches kappa {scratch['overall']:.3f} on "
                      f"{scratch['split']} ({scratch['status']}; notebook 07 places these).")
            out += details_block("MURA's score, per study (normal / abnormal)", [s])
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
