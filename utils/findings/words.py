"""The findings' vocabulary: the README's markers, the metrics' names and scales, the methods in plain
words, the glossary, and how a paired difference becomes a verdict."""
from __future__ import annotations

import json
import math
from pathlib import Path

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
    "Laplace, kron, all weights, narrowed prior": "Laplace over all weights, K-FAC, prior raised until its networks "
                                                  "classify (member 0)",
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

def load_json(folder: Path, name: str) -> dict | None:
    f = folder / "results" / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def ci_text(v, lo, hi, digits: int = 3, factor: float = 1.0, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(factor * v)} [{fmt.format(factor * lo)}, {fmt.format(factor * hi)}]"


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def is_degenerate(d: float, lo: float, hi: float) -> bool:
    """A difference that is exactly zero in every replicate (temperature scaling's accuracy: T never changes the
    argmax): not a verdict."""
    return d == lo == hi == 0


def is_negligible(metric: str, d: float, lo: float, hi: float) -> bool:
    """The difference and both ends of its interval round to zero at the printed precision (and are not all zero)."""
    factor, digits, _ = SCALE[metric]
    return not is_degenerate(d, lo, hi) and all(round(abs(factor * x), digits) == 0 for x in (d, lo, hi))


def _fine_exponent(metric: str, d: float, lo: float, hi: float) -> int | None:
    """The power of ten to print a difference in where the printed precision would show its estimate as zero and its
    interval in fewer than ten units of the last digit (e.g. -4 for -0.00006 nats); None where it prints well."""
    factor, digits, _ = SCALE[metric]
    top = max(abs(factor * x) for x in (d, lo, hi))
    if top == 0 or round(abs(factor * d), digits) != 0 or round(top, digits) >= 10 ** (1 - digits):
        return None
    return math.floor(math.log10(top))


def num_text(metric: str, d: float, lo: float, hi: float, sign: bool = True, unit: bool = True) -> str:
    """A difference with its interval and unit, as the README prints it, e.g. '-0.023 [-0.041, -0.006] nats'; one
    that would print as zeros is printed in a finer unit, e.g. '-0.6 [-1.2, -0.1] × 10⁻⁴ nats' (signs kept)."""
    factor, digits, u = SCALE[metric]
    e = _fine_exponent(metric, d, lo, hi)
    if e is None:
        return ci_text(d, lo, hi, digits, factor, sign) + (u if unit else "")
    return (ci_text(d, lo, hi, 1, factor * 10 ** -e, sign) + f" × 10{str(e).translate(SUPERSCRIPT)}"
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
    return "; ".join(q for q, on in (("borderline", "borderline" in v), ("negligible", is_negligible(metric, d, lo, hi)))
                     if on)


def label(metric: str, d: float, lo: float, hi: float) -> str:
    """The verdict as the tables print it: 'better (borderline; negligible)', 'no difference shown', or 'unchanged
    in every replicate (not a verdict)' for a difference that is zero by construction."""
    if is_degenerate(d, lo, hi):
        return "unchanged in every replicate (not a verdict)"
    q = _qualifier(metric, d, lo, hi)
    return verdict(metric, d, lo, hi).split(" (")[0] + (f" ({q})" if q else "")


def paren_text(metric: str, d: float, lo: float, hi: float, who: str = "") -> str:
    """'(K-FAC: borderline; negligible: -0.6 [...] × 10⁻⁴ nats)': whose number, the qualifier, the number."""
    q = _qualifier(metric, d, lo, hi)
    return f"({who + ': ' if who else ''}{q + ': ' if q else ''}{num_text(metric, d, lo, hi)})"


def effect_text(metric: str, d: float, lo: float, hi: float, who: str = "") -> str:
    """What a method does to a score, in words chosen from the interval: 'lowers the NLL (-0.023 [...] nats)',
    'shows no ECE change (...)'."""
    v = verdict(metric, d, lo, hi)
    if v.startswith("no difference"):
        return f"shows no {NAME[metric]} change {paren_text(metric, d, lo, hi, who)}"
    return f"{'lowers' if hi < 0 else 'raises'} the {NAME[metric]} {paren_text(metric, d, lo, hi, who)}"


def row_delta(row: dict, metric: str) -> tuple[float, float, float] | None:
    keys = (f"delta_{metric}", f"delta_{metric}_low", f"delta_{metric}_high")
    if not row or any(row.get(k) is None for k in keys):
        return None
    return tuple(float(row[k]) for k in keys)


def ece_metric(row_or_rows) -> str:
    """The headline ECE: the debiased ECE where the results carry its difference, else the plug-in ECE."""
    rows = row_or_rows if isinstance(row_or_rows, list) else [row_or_rows]
    return "ece_debiased" if any(row_delta(r, "ece_debiased") for r in rows if r) else "ece"


def plain_words(method: str) -> str:
    return PLAIN.get(method, method)


def is_all_weights(method: str) -> bool:
    return "all weights" in method


def is_last_layer_laplace(method: str) -> bool:
    return method.startswith("Laplace") and not is_all_weights(method)


def is_bayesian(method: str) -> bool:
    """The Bayesian methods Q1's verdict is made from: the all-weights Laplace is left out (prior-dominated: its
    samples classify at chance), shown in the plot and the tables with that flag."""
    return ((method.startswith("Laplace") or method in ("deep ensemble", "mixture of Laplace, kron"))
            and not is_all_weights(method))


def md_link(folder: str, stem: str, root: Path, text: str | None = None) -> str:
    """A link to a rendered notebook (its executed .ipynb, which code hosts render), or its name where the run
    has not written it."""
    rel = f"report/{folder + '/' if folder else ''}{stem}.ipynb"
    return f"[{text or stem[:2]}]({rel})" if (root / rel).is_file() else f"{text or stem[:2]} (not built)"


def flag_rows(expl: dict | None, predictor: str) -> dict[str, dict]:
    return {r["score"]: r for r in (expl or {}).get("error_flagging", []) if r.get("predictor") == predictor}


def table_row(expl: dict | None, method: str, metric: str) -> dict | None:
    return next((r for r in (expl or {}).get("table", []) if r.get("method") == method and r.get("metric") == metric
                 and r.get("delta") is not None), None)


def load_results(root: Path) -> dict:
    out = {}
    for folder, short, _ in TASKS:
        base = root / "report" / folder if folder else root / "report"
        out[short] = {n: load_json(base, n) for n in ("calibration", "map", "explanations", "abnormality", "data")}
    return out


def details_block(summary_line: str, body: list[str]) -> list[str]:
    return [f"<details><summary>{summary_line}</summary>", "", *body, "", "</details>", ""]
