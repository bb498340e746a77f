"""The README's summary block: the two research questions answered in plain words from the results JSON,
the verdict table, the learnability ladder, the links to every rendered notebook and the glossary."""

from __future__ import annotations

import json
import re
from pathlib import Path

from utils.config import ROOT
from utils.findings.forest import summary_forest_rows, verdict_count
from utils.findings.ladder import learnability_part
from utils.findings.words import (
    FOREST,
    GLOSSARY,
    GLOSSARY_HEADING,
    NAME,
    SCALE,
    SUMMARY_END,
    SUMMARY_START,
    TASKS,
    ci_text,
    ece_metric,
    effect_text,
    flag_rows,
    is_all_weights,
    is_bayesian,
    is_degenerate,
    is_last_layer_laplace,
    is_negligible,
    label,
    load_results,
    md_link,
    num_text,
    paren_text,
    plain_words,
    row_delta,
    table_row,
    verdict,
)

# --------------------------------------------------------------------------- the summary



def _q1_metrics(cal: dict | None) -> tuple[str, ...]:
    return ("nll", ece_metric((cal or {}).get("table", [])), "accuracy")


def _shown(cal: dict | None) -> tuple[int, int]:
    """(differences shown, differences made): every method but the all-weights Laplace against the MAP network on
    NLL, the headline ECE and accuracy, leaving out the differences that are zero in every replicate."""
    ds = [row_delta(r, m) for r in (cal or {}).get("table", []) if not is_all_weights(r["method"])
          for m in _q1_metrics(cal)]
    v = [verdict(m, *d) for m, d in zip(_q1_metrics(cal) * len(ds), ds) if d and not is_degenerate(*d)]
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
    return ci_text(r["study kappa"], r["kappa low"], r["kappa high"])


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
    return f"{word} {paren_text(metric, d, lo, hi)}"


def _q1_sentence(short: str, res: dict) -> str | None:
    cal = res["calibration"]
    if not cal:
        return None
    rows = {r["method"]: r for r in cal["table"]}
    ece = ece_metric(cal["table"])
    flat = near_constant(res)
    fit = (res["map"] or {}).get("fit")
    lead = _flat_clause(short, flat) + " There" if flat else f"On {short}"
    underfit = (f"; the networks there fit only {fit['train_acc']:.0%} of their own training images"
                if fit and not fit.get("fits", True) and not flat else "")
    shown, made = _shown(cal)
    ens = rows.get("deep ensemble")
    if made and not shown:
        key = f"; ensemble NLL {num_text('nll', *row_delta(ens, 'nll'))}" if row_delta(ens, "nll") else ""
        return f"{lead} no method differs from the MAP network ({shown} of {made} differences shown{key}){underfit}."
    parts = []
    if row_delta(ens, "nll") and row_delta(ens, ece):
        e = effect_text(ece, *row_delta(ens, ece))
        plug = row_delta(ens, "ece")
        if ece != "ece" and plug and verdict("ece", *plug).split(" (")[0] != verdict(ece, *row_delta(ens, ece)).split(" (")[0]:
            e = e[:-1] + f"; plug-in {num_text('ece', *plug, unit=False)}, {label('ece', *plug)})"
        s = f"the deep ensemble {effect_text('nll', *row_delta(ens, 'nll'))} and {e}".replace(") and shows no", ") and no")
        vs = {r["metric"]: r for r in cal.get("ensemble_vs_best_single", [])}
        items = [(m, vs[m]) for m in ("nll", ece) if m in vs]
        if items and (any(x["best_single"] == "temperature scaling" for _, x in items)
                      or any(not verdict(m, x["delta"], x["low"], x["high"]).startswith("no") for m, x in items)):
            by: dict[str, list] = {}
            for m, x in items:
                by.setdefault(x["best_single"], []).append((m, x))
            for other, ms in by.items():
                s += (f"; against {plain_words(other)} its " +
                      " and its ".join(f"{NAME[m]} {'is ' if i == 0 else ''}{_cmp(m, x['delta'], x['low'], x['high'])}"
                                       for i, (m, x) in enumerate(ms)))
        parts.append(s)
    lap = [m for m in rows if is_last_layer_laplace(m) and row_delta(rows[m], "nll")]
    if lap:
        key = "Laplace, kron" if "Laplace, kron" in lap else lap[0]
        v = verdict("nll", *row_delta(rows[key], "nll")).split(" (")[0]
        same = sum(verdict("nll", *row_delta(rows[m], "nll")).split(" (")[0] == v for m in lap)
        gain = any(verdict(x, *row_delta(rows[m], x)).startswith("better") for m in lap for x in ("nll", ece)
                   if row_delta(rows[m], x))
        if same == len(lap):
            t = (f"{'last-layer Laplace shows no gain: every variant' if not gain else 'every last-layer Laplace'} "
                 f"{effect_text('nll', *row_delta(rows[key], 'nll'), who='K-FAC')}")
        else:
            t = (f"{'last-layer Laplace shows no gain: ' if not gain else ''}the K-FAC last-layer Laplace "
                 f"{effect_text('nll', *row_delta(rows[key], 'nll'))}, as do {same - 1} of the other {len(lap) - 1} "
                 "last-layer variants")
        parts.append(t)
    if not parts:
        return None
    return f"{lead} " + "; ".join(parts) + underfit + "."


def q1_headline(results: dict) -> str:
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
                d = row_delta(r, m)
                if not d or not is_bayesian(r["method"]) or is_degenerate(*d) or is_negligible(m, *d):
                    continue
                v = verdict(m, *d)
                (better if v.startswith("better") else worse if v.startswith("worse") else set()).add(
                    (short, r["method"], m))
        for x in cal.get("ensemble_vs_best_single", []):
            if x["metric"] in ms and not is_negligible(x["metric"], x["delta"], x["low"], x["high"]):
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
    flags = flag_rows(ex, "deep ensemble")
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
         f"(AUROC {num_text('auroc', *d)})")
    if combined and combined.get("delta") is not None:
        c = (combined["delta"], combined["delta_low"], combined["delta_high"])
        cv = verdict("auroc", *c)
        s += (f" and adds nothing shown to it ({num_text('auroc', *c)})" if cv.startswith("no difference") else
              f" and, added to it, {'lowers' if cv.startswith('worse') else 'raises'} the AUROC {paren_text('auroc', *c)}")
    point = table_row(ex, "ensemble CAM, mean", "pointing")
    if first and point and point.get("reference") == "class-mask prior":
        p = (point["delta"], point["delta_low"], point["delta_high"])
        pv = verdict("pointing", *p)
        how = ("no differently from" if pv.startswith("no difference") else
               "less often than" if pv.startswith("worse") else "more often than")
        s += (f"; its mean CAM finds the class's bones {how} a map of where they usually lie "
              f"{paren_text('pointing', *p)}")
    return s + "."


def q2_headline(results: dict) -> str:
    """From the tasks with a usable classifier (not near-constant predictors)."""
    verdicts = []
    for res in results.values():
        c = flag_rows(res["explanations"], "deep ensemble").get("spread + entropy (CV logistic)")
        if c and c.get("delta") is not None and not near_constant(res):
            verdicts.append(verdict("auroc", c["delta"], c["delta_low"], c["delta_high"]))
    if not verdicts:
        return "Not testable" if any(near_constant(r) for r in results.values()) else "Not measured"
    return "Yes" if any(v.startswith("better") for v in verdicts) else "No gain shown"


def _cell(metric: str, d) -> str:
    if not d:
        return "-"
    return f"{label(metric, *d)}, {num_text(metric, *d, unit=False)}"


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
    ece = ece_metric([r for s in names for r in cals[s].get("table", [])])

    def links(stem):
        return "·".join(md_link(f, stem, root, stem[:2]) for f, _, _ in TASKS)

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
        return lambda s: row_delta(next((r for r in cals[s].get("table", []) if r["method"] == method), None), m)

    def vs_best(m):
        def get(s):
            r = {x["metric"]: x for x in cals[s].get("ensemble_vs_best_single", [])}.get(m)
            return (r["delta"], r["low"], r["high"]) if r else None
        return get

    def flag(score):
        def get(s):
            r = flag_rows(exps[s], "deep ensemble").get(score)
            return (r["delta"], r["delta_low"], r["delta_high"]) if r and r.get("delta") is not None else None
        return get

    def pointing(s):
        r = table_row(exps[s], "ensemble CAM, mean", "pointing")
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
        return rule + " Its error rates have not been measured (`python -m utils.evaluation.simulation`)."
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
    results = load_results(root)
    out = [SUMMARY_START, ""]
    cal = results["body part"]["calibration"] or results["normal / abnormal"]["calibration"]
    scope = f" ({cal['test_images']} test images, {cal['test_studies']} studies a task)" if cal else ""
    out += [f"Written from the run's results{scope} by `python -m utils.findings`, checked by a test. Data: a "
            "synthetic phantom of MURA, not patients.", ""]
    out += ["### The two questions, answered", ""]
    q1 = [s for s in (_q1_sentence(short, results[short]) for _, short, _ in TASKS) if s]
    out.append("**Q1. Does a Bayesian treatment (Laplace, deep ensemble) calibrate better than the MAP network and "
               "temperature scaling?** "
               + (f"*{q1_headline(results)}.* " + " ".join(q1) if q1 else "*Not measured yet.*"))
    out.append("")
    q2 = [s for s in (_q2_sentence(short, results[short], i == 0) for i, (_, short, _) in enumerate(TASKS)) if s]
    out.append("**Q2. Do the CAMs of posterior samples show where the model is uncertain?** "
               + (f"*{q2_headline(results)}.* " + " ".join(q2) + " A last-layer Laplace's mean CAM is the MAP "
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
            "Browsable: `report/index.html`, `report/abnormality/index.html`.", ""]
    out += notebook_links(root)
    out += [""] + glossary_lines() + ["", SUMMARY_END]
    text = "\n".join(out)
    return re.sub(r"\]\(((?:report|figures|utils)/)", rf"]({base}\1", text) if base else text
