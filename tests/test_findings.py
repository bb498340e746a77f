"""The README's findings are written from the committed results and checked against them."""
from __future__ import annotations

import json

import pytest

from utils import findings
from utils.config import ROOT


def test_verdicts_follow_the_interval_and_call_a_bound_at_rounding_borderline():
    assert findings.verdict("nll", -0.02, -0.03, -0.01) == "better"
    assert findings.verdict("nll", 0.02, 0.01, 0.03) == "worse"
    assert findings.verdict("accuracy", 0.01, 0.002, 0.02) == "better"
    assert findings.verdict("ece", 0.01, -0.001, 0.02) == "no difference shown"
    assert findings.verdict("nll", 0.001, 0.0004, 0.002) == "worse (borderline)"  # 0.0004 prints as 0.000
    assert findings.verdict("accuracy", -0.01, -0.02, -0.00004) == "worse (borderline)"  # -0.004 points -> -0.00


def _row(method, kind="single", members=1, **d):
    base = dict(method=method, kind=kind, members=members, fitted_on=5, accuracy=0.9, accuracy_low=0.88,
                accuracy_high=0.92, nll=0.3, nll_low=0.25, nll_high=0.35, ece=0.03, ece_low=0.02, ece_high=0.04,
                ece_reference=0.02, ece_reference_low=0.01, ece_reference_high=0.03)
    for m in ("nll", "ece", "accuracy"):
        base |= {f"delta_{m}": None, f"delta_{m}_low": None, f"delta_{m}_high": None}
    return base | d


def test_the_block_holds_the_results_numbers(tmp_path):
    res = tmp_path / "report" / "results"
    res.mkdir(parents=True)
    cal = dict(test_images=100, test_studies=40, table=[
        _row("MAP"), _row("deep ensemble", "combination", 5, delta_nll=-0.0213, delta_nll_low=-0.034,
                          delta_nll_high=-0.011, delta_ece=0.012, delta_ece_low=-0.0017, delta_ece_high=0.0244,
                          delta_accuracy=0.0087, delta_accuracy_low=-0.0002, delta_accuracy_high=0.019)])
    (res / "calibration.json").write_text(json.dumps(cal))
    fit = dict(train_acc=0.612, train_nll=0.6, train_acc_last=0.63, val_acc=0.66, best_epoch=10, epochs=12,
               fits=False)
    (res / "map.json").write_text(json.dumps(dict(fit=fit, augment="full", test=dict(accuracy=0.59))))
    text = findings.block(tmp_path)
    assert text.startswith(findings.START) and text.endswith(findings.END)
    assert "| deep ensemble | 5 members together | -0.021 [-0.034, -0.011] better | +1.20 [-0.17, +2.44] no difference shown" \
           in text
    assert "61.2% of its own training images" in text and "does not fit its training set" in text
    assert "normal / abnormal: the run's training record" in text  # no abnormality report under tmp_path


def test_rewrite_replaces_only_the_block_and_needs_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{findings.START}\nold\n{findings.END}\n\nafter\n")
    assert findings.rewrite(readme, f"{findings.START}\nnew\n{findings.END}") == \
           f"# T\n\n{findings.START}\nnew\n{findings.END}\n\nafter\n"
    readme.write_text("# T\n")
    with pytest.raises(ValueError, match="no findings markers"):
        findings.rewrite(readme, "x")


def test_the_readme_says_what_the_committed_results_say():
    """Fails when a report is rebuilt without `python -m utils.findings`, or the README's block is edited by hand."""
    readme = ROOT / "README.md"
    assert findings.rewrite(readme, findings.block()) == readme.read_text(), \
        "README.md's findings differ from report/**/results: run `python -m utils.findings`"
