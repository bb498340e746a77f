"""The README's findings are written from the committed results and checked against them."""
from __future__ import annotations

import json

import pytest

from utils import findings
from utils.config import ROOT
from utils.findings.details import conformal_caveat


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
    """Fails when a report is rebuilt without `python -m utils.findings`, or the README's findings are edited by
    hand; the summary figure carries the digest of the numbers it shows."""
    readme = ROOT / "README.md"
    assert findings.readme_text(readme) == readme.read_text(), \
        "README.md's findings differ from report/**/results: run `python -m utils.findings`"
    rows = findings.summary_forest_rows(ROOT)
    if rows:
        assert findings.forest_is_current(rows, ROOT / findings.FOREST), \
            f"{findings.FOREST} is missing or shows other numbers: run `python -m utils.findings`"
        assert f"]({findings.FOREST.as_posix()})" in readme.read_text()


# --------------------------------------------------------------------------- the summary, its figure, its length

def _d(delta, low, high, metric):
    return {f"delta_{metric}": delta, f"delta_{metric}_low": low, f"delta_{metric}_high": high}


def _calibration(ensemble_nll=(-0.02, -0.03, -0.01), all_weights_ece=(0.40, 0.37, 0.42)):
    small = _d(0.001, -0.001, 0.002, "nll") | _d(0.002, -0.001, 0.004, "ece") | _d(0.0, -0.002, 0.002, "accuracy")
    return dict(test_images=100, test_studies=40, table=[
        _row("MAP"),
        _row("Laplace, kron") | small | _d(0.003, 0.002, 0.004, "nll"),
        _row("Laplace, kron, all weights", fitted_on=1) | small | _d(*all_weights_ece, "ece"),
        _row("deep ensemble", "ensemble", 5) | small | _d(*ensemble_nll, "nll")],
        ensemble_vs_best_single=[dict(metric="ece", best_single="temperature scaling", delta=0.02, low=0.003,
                                      high=0.04, best_single_value=0.02, ensemble=0.04, excludes_zero=True)])


def test_the_forest_plot_draws_every_method_metric_and_task_with_a_zero_line():
    import matplotlib.pyplot as plt

    rows = findings.forest_rows({"body part": _calibration(), "normal / abnormal": _calibration((-0.01, -0.02, 0.01))})
    assert len(rows) == 2 * 3 * 3  # tasks x methods (MAP left out) x metrics
    fig = findings.forest_figure(rows)
    try:
        axes = [ax for ax in fig.axes if ax.get_title("left")]
        titles = {ax.get_title("left") for ax in axes}
        assert len(axes) == 6 and titles >= {"body part: NLL", "normal / abnormal: accuracy"}
        points = sum(len(c.get_offsets()) for ax in axes for c in ax.collections if c.get_gid() == "forest-point")
        assert points == len(rows)
        for ax in axes:  # the zero line, and a symmetric axis around it
            assert any(list(ln.get_xdata()) == [0, 0] for ln in ax.lines)
            lo, hi = ax.get_xlim()
            assert lo == pytest.approx(-hi)
        ece = next(ax for ax in axes if ax.get_title("left") == "body part: ECE")
        assert ece.get_xlim()[1] < 40  # the all-weights Laplace's +40 points is drawn off scale, its value printed
        assert any("off scale" in t.get_text() and "+40.0" in t.get_text() for t in ece.texts)
        verdicts = {(r["method"], r["metric"], r["task"]): r["verdict"] for r in rows}
        assert verdicts[("deep ensemble", "nll", "body part")] == "better"
        assert verdicts[("deep ensemble", "nll", "normal / abnormal")] == "no difference shown"
        assert verdicts[("Laplace, kron", "nll", "body part")] == "worse"
    finally:
        plt.close(fig)


def test_the_forest_plot_marks_borderline_verdicts_hollow_and_flags_a_method_under_its_name():
    import matplotlib.pyplot as plt

    cal = _calibration((-0.02, -0.03, -0.00004))  # the upper end rounds to -0.000: borderline
    rows = findings.forest_rows({"body part": cal}, {"body part": {"Laplace, kron, all weights": "prior-dominated"}})
    assert [r["borderline"] for r in rows if r["method"] == "deep ensemble" and r["metric"] == "nll"] == [True]
    fig = findings.forest_figure(rows)
    try:
        ax = next(ax for ax in fig.axes if ax.get_title("left") == "body part: NLL")
        hollow = [c for c in ax.collections if c.get_gid() == "forest-point"
                  and len(c.get_facecolors()) and tuple(c.get_facecolors()[0][:3]) == (1.0, 1.0, 1.0)]
        assert sum(len(c.get_offsets()) for c in hollow) == 1
        assert any("prior-dominated" in t.get_text() for t in ax.get_yticklabels())
        assert any("borderline" in t.get_text() for t in fig.legends[0].get_texts())
    finally:
        plt.close(fig)


def test_the_figure_records_the_numbers_it_shows(tmp_path):
    rows = findings.forest_rows({"body part": _calibration()})
    f = findings.write_forest(rows, tmp_path / "forest.png")
    assert findings.forest_is_current(rows, f)
    changed = findings.forest_rows({"body part": _calibration((-0.02, -0.03, -0.005))})
    assert not findings.forest_is_current(changed, f) and not findings.forest_is_current(rows, tmp_path / "none.png")


def test_the_answers_choose_their_words_from_the_intervals(tmp_path):
    res = tmp_path / "report" / "results"
    res.mkdir(parents=True)
    (res / "calibration.json").write_text(json.dumps(_calibration()))
    text = findings.summary(tmp_path)
    assert text.startswith(findings.SUMMARY_START) and text.endswith(findings.SUMMARY_END)
    assert "*Mixed.*" in text  # better on NLL, worse than temperature scaling on ECE
    assert "the deep ensemble lowers the NLL (-0.020 [-0.030, -0.010] nats) and no ECE change (+0.20 [-0.10, +0.40] " \
           "points)" in text
    assert "against temperature scaling its ECE is higher (+2.00 [+0.30, +4.00] points)" in text
    assert "last-layer Laplace shows no gain: every variant raises the NLL (K-FAC: +0.003 [+0.002, +0.004] nats)" in text
    assert "| Q1 | ensemble - MAP, NLL (nats) | better, -0.020 [-0.030, -0.010] | - |" in text
    assert "not yet measured" in text  # no learnability ladder under tmp_path
    assert "04 (not built)" in text  # no rendered notebook to link
    assert "](figures/summary_forest.png)" in text  # links relative to the repository, or to a page elsewhere:
    assert "](../figures/summary_forest.png)" in findings.summary(tmp_path, base="../")
    (res / "calibration.json").write_text(json.dumps(_calibration((-0.01, -0.02, 0.01), (0.001, -0.001, 0.002))
                                                     | dict(table=[_row("MAP"), _row("deep ensemble", "ensemble", 5)
                                                                   | _d(-0.01, -0.02, 0.01, "nll")
                                                                   | _d(0.0, -0.01, 0.01, "ece")
                                                                   | _d(0.0, -0.01, 0.01, "accuracy")])))
    text = findings.summary(tmp_path)
    assert "*No gain shown.*" in text
    assert "On body part no method differs from the MAP network (0 of 3 differences shown" in text


def test_the_learnability_ladder_is_a_table_once_measured(tmp_path):
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    row = dict(rung="planted 1x6 px", augment="full", train_images=100, held_out_images=25, majority=0.6,
               train_acc=0.8, held_out_acc=0.75, held_out_auroc=0.81, epochs=12, seconds=30.0)
    (rec / "cpu-learnability.json").write_text(json.dumps(dict(rows=[row])))
    text = "\n".join(findings.learnability_part(tmp_path))
    assert "(1 rung, one seed each, not every rung with an interval, unpaired): planted objects, AUROC 0.81." in text
    assert "| held-out majority share |" in text
    assert "unpaired" in text
    assert "| planted 1x6 px | full | 12 | 100 / 25 | 60.0 % | 80.0 % | 75.0 % | 0.81 | - | - | - | - |" in text  # no study AUROC
    assert "The learner only weakly planted objects (AUROC 0.81)." in text  # the long answer, inside the details


def _rung(name, auroc, acc=0.8, majority=0.6, study=None, train=0.8, hw=None, n=25, ci=None, study_ci=None):
    return dict(rung=name, augment="full", epochs=12, train_images=100, held_out_images=n, majority=majority,
                train_acc=train, held_out_acc=acc, held_out_auroc=auroc, study_auroc=study, found_hardware=hw,
                held_out_auroc_ci=ci, study_auroc_ci=study_ci)


LADDER = [_rung("planted 2x10 px", 0.97), _rung("planted 1x6 px", 0.92),
          _rung("objects vs normal", 0.6969, 0.835, 0.818, hw=0.14, ci=[0.64, 0.75]),
          _rung("objects, no augmentation", 0.79, 0.859, 0.818, train=0.90, hw=0.42),
          _rung("objects, no augmentation, 30 epochs", 0.84, 0.87, 0.818, train=0.996, hw=0.54),
          _rung("the task", 0.563, study=0.5701, train=0.616, study_ci=[0.51, 0.63]),
          _rung("the task, no augmentation, 30 epochs", 0.615, study=0.643, train=0.967, study_ci=[0.58, 0.70])]


def test_the_learnability_answer_says_in_plain_words_what_each_group_of_rungs_shows():
    rows = LADDER
    # graded on the printed value: 0.6969 prints 0.70 and reads "only weakly", not "barely"
    assert findings.learnability_answer(rows[:4] + rows[5:6]) == (
        "the learner finds planted objects of 1x6 px and more (AUROC 0.92-0.97); real objects alone only weakly "
        "(AUROC 0.70; accuracy 83.5 %, majority share 81.8 %; 0.79 with no augmentation, fitting 90.0 %); the task (all parts, "
        "the profile's phantom) barely (study AUROC 0.57)")
    # a variant that fits (>= 85 %) where the group's first rung does not says so
    assert findings.learnability_answer(rows).endswith(
        "the task (all parts, the profile's phantom) barely (study AUROC 0.57; 0.64 with no augmentation, 30 epochs, fitting 96.7 %)")
    other = rows + [_rung("the task, wrist only", 0.52, study=0.49, n=235)]
    assert findings.learnability_answer(other).endswith("; 0.49 with wrist only (own test set))")
    nan = [_rung("the task", 0.563, study=0.5701), _rung("the task, 4x the patients", 0.61, study=float("nan"))]
    assert findings.learnability_answer(nan).endswith("the task (all parts, the profile's phantom) barely (AUROC 0.56; 0.61 with 4x the patients)")
    chance = [_rung("the task", 0.52, study=0.49, study_ci=[0.37, 0.61])]
    assert findings.learnability_answer(chance) == "the task (all parts, the profile's phantom) not above chance (study AUROC 0.49)"
    # a rung without an AUROC (one class held out) is left out, not a crash
    assert findings.learnability_answer([_rung("planted 1x6 px", None), _rung("planted 2x10 px", 0.9)]) == (
        "the learner finds planted objects of 2x10 px and more (AUROC 0.90)")


def test_the_learnability_headline_leads_with_each_groups_first_rung_then_its_range_and_test_sets():
    assert findings.learnability_headline(LADDER) == (
        "planted objects, AUROC 0.92-0.97; hardware/casts alone, AUROC 0.70 [0.64, 0.75] (0.70-0.84 over 3 "
        "rungs); the task, study AUROC 0.57 [0.51, 0.63] (0.57-0.64 over 2 rungs)")
    rows = LADDER + [_rung("the task, wrist only", 0.52, study=0.49, study_ci=[0.37, 0.61], n=235)]
    assert findings.learnability_headline(rows).endswith(
        "the task, study AUROC 0.57 [0.51, 0.63] (0.49-0.64 over 3 rungs, 2 test sets; 1 interval reaches 0.5)")


def test_the_learnability_reason_quotes_the_rung_that_fits_and_words_its_comparison_with_care():
    why = findings.learnability_reason(LADDER)
    assert ("the network can memorise its training images (96.7 % at the last epoch when trained with no "
            "augmentation, 30 epochs, no epoch selection;") in why
    assert "so capacity does not cap the fit; which part of the recipe holds the members back" in why
    longer = LADDER + [dict(_rung("the task, 40 epochs", 0.63, study=0.66, train=0.67, study_ci=[0.60, 0.72]), epochs=40)]
    assert ("so capacity does not cap the fit; with augmentation `full` kept, the fit rises with the epochs (61.6 % at "
            "12, 67.0 % at 40; one seed each, last epoch), so the members' epochs hold their fit back; what "
            "augmentation and the epoch kept add one seed does not separate.") in findings.learnability_reason(longer)
    assert ("study AUROC 0.64 [0.58, 0.70], against 0.57 [0.51, 0.63] for the 12-epoch rung with augmentation "
            "`full` on the same test images: no paired interval, the difference not tested") in why
    assert "of the held-out abnormal images that show hardware, the objects rungs call 14-54 % abnormal at p > 0.5" in why
    assert "own test sets" not in why
    more = LADDER + [dict(_rung("the task, wrist only, 4x the patients", 0.73, study=0.76, train=0.69, n=158,
                                study_ci=[0.65, 0.86]), held_out_studies=64)]
    assert "; on their own test sets, wrist only, 4x the patients 0.76 [0.65, 0.86] (158 images, 64 studies)" in (
        findings.learnability_reason(more))
    assert findings.learnability_reason(LADDER[:6]) is None  # no task rung fits: no measured reason to give
    # the task's first rung fitting best: no comparison with itself, and no IndexError on a name without ", "
    fit_first = [_rung("the task", 0.6, study=0.6, train=0.9)]
    assert findings.learnability_reason(fit_first).endswith("generalises weakly (study AUROC 0.60).")


def test_near_zero_differences_keep_their_sign_and_are_printed_in_a_finer_unit():
    assert findings.num_text("nll", -6.2e-05, -0.00012, -8e-06) == "-0.6 [-1.2, -0.1] × 10⁻⁴ nats"
    assert findings.label("nll", -6.2e-05, -0.00012, -8e-06) == "better (borderline; negligible)"
    assert findings.num_text("nll", -0.000328, -0.000658, -3.9e-05) == "-3.3 [-6.6, -0.4] × 10⁻⁴ nats"
    assert findings.label("nll", -0.000328, -0.000658, -3.9e-05) == "better (borderline)"  # -0.001 at print
    assert findings.num_text("auroc", -0.000288, -0.018724, 0.018243) == "-0.000 [-0.019, +0.018]"
    assert findings.num_text("nll", 0.003, 0.002, 0.004) == "+0.003 [+0.002, +0.004] nats"
    assert findings.label("accuracy", 0.0, 0.0, 0.0) == "unchanged in every replicate (not a verdict)"
    rows = findings.forest_rows({"t": dict(table=[_row("MAP"), _row("temperature scaling") | _d(-0.01, -0.02, 0.001, "nll")
                                                  | _d(0.0, 0.0, 0.0, "accuracy")])})
    assert len(rows) == 2 and findings.verdict_count(rows) == 1


def _res(cal=None, **kw):
    return dict(calibration=cal, map=None, explanations=None, abnormality=None, data=None) | kw


def test_the_q1_headline_says_yes_only_when_better_on_nll_and_ece_and_worse_on_nothing():
    def cal(nll, ece, method="deep ensemble", extra=()):
        return dict(table=[_row("MAP"), _row(method, "ensemble", 5) | _d(*nll, "nll") | _d(*ece, "ece_debiased")
                           | _d(*ece, "ece"), *extra])

    better, worse, none = (-0.02, -0.03, -0.01), (0.02, 0.01, 0.03), (0.0, -0.01, 0.01)
    assert findings.q1_headline({"a": _res(cal(better, better))}) == "Yes"
    assert findings.q1_headline({"a": _res(cal(better, worse))}) == "Mixed"
    assert findings.q1_headline({"a": _res(cal(better, none))}) == "In part"
    assert findings.q1_headline({"a": _res(cal(none, none))}) == "No gain shown"
    assert findings.q1_headline({"a": _res(cal(better, better)), "b": _res(cal(none, worse))}) == "Mixed"
    # the all-weights Laplace (prior-dominated) does not make a verdict
    aw = _row("Laplace, kron, all weights", fitted_on=1) | _d(*better, "nll") | _d(*better, "ece_debiased")
    assert findings.q1_headline({"a": _res(cal(none, none, extra=[aw]))}) == "No gain shown"
    assert findings.q1_headline({"a": _res(cal((-6e-05, -0.00012, -8e-06), none))}) == "No gain shown"  # negligible
    # the debiased ECE is the headline: a plug-in gain alone is not one
    c = cal(better, none)
    c["table"][1] |= _d(*better, "ece")
    assert findings.q1_headline({"a": _res(c)}) == "In part"


def _flat_task(tmp_path):
    """A normal/abnormal task whose networks call (almost) nothing abnormal."""
    ab = tmp_path / "report" / "abnormality" / "results"
    ab.mkdir(parents=True)
    cal = _calibration((-0.003, -0.012, 0.004))
    (ab / "calibration.json").write_text(json.dumps(cal))
    row = {"body_part": "all", "studies": 332, "study AUROC": 0.568, "AUROC low": 0.503, "AUROC high": 0.63,
           "image AUROC": 0.574}
    table = [row | dict(method="deep ensemble", **{"study kappa": 0.0, "kappa low": 0.0, "kappa high": 0.0}),
             row | dict(method="body-part prevalence (baseline)",
                        **{"study kappa": 0.144056, "kappa low": 0.043225, "kappa high": 0.239066})]
    (ab / "abnormality.json").write_text(json.dumps(dict(table=table)))
    fit = dict(train_acc=0.5977, train_acc_last=0.57, train_nll=0.67, val_acc=0.66, best_epoch=7, epochs=12, fits=False)
    per_class = {"abnormal": dict(precision=1 / 3, recall=1 / 355, **{"test images": 355}),
                 "normal": dict(precision=0.5688, recall=0.9957, **{"test images": 469})}
    (ab / "map.json").write_text(json.dumps(dict(fit=fit, per_class=per_class, test=dict(accuracy=0.568))))
    flags = [dict(predictor="deep ensemble", score="entropy", auroc=0.571367, errors=354, delta=None),
             dict(predictor="deep ensemble", score="explanation spread", auroc=0.571, errors=354, delta=-0.000288,
                  delta_low=-0.018724, delta_high=0.018243),
             dict(predictor="deep ensemble", score="spread + entropy (CV logistic)", auroc=0.56, errors=354,
                  delta=-0.010067, delta_low=-0.029022, delta_high=0.008041)]
    (ab / "explanations.json").write_text(json.dumps(dict(error_flagging=flags)))


def test_near_constant_predictors_are_named_as_such_in_both_answers_and_the_verdict_table(tmp_path):
    _flat_task(tmp_path)
    text = findings.summary(tmp_path)
    q1 = text.split("**Q1.", 1)[1].split("**Q2.", 1)[0]
    q2 = text.split("**Q2.", 1)[1].split("### Verdicts", 1)[0]
    assert ("On normal / abnormal the networks are near-constant predictors: the ensemble's study kappa is "
            "0.000 [0.000, 0.000], against 0.144 [0.043, 0.239] for a body-part-only predictor; member 0 fits 59.8 % "
            "of its training images and calls 3 of 824 test images abnormal (56.8 % right; all normal: 56.9 %)") in q1
    assert "fit only" not in q1  # the near-constant clause replaces the underfitting one
    assert "near-constant predictors" in q2 and "errs on 354 images and 355 are abnormal" in q2
    assert "no usable classifier" in q2 and "*Not testable.*" in q2  # the only task has no usable classifier
    table = text.split("### Verdicts", 1)[1].split("###", 1)[0]
    assert "| normal / abnormal † |" in table and "no usable classifier†" in table
    assert "† Near-constant predictors (study kappa 0.000, Q1)" in table


def test_the_block_makes_no_claim_the_results_do_not_show():
    text = findings.block(ROOT)
    assert "changed its test accuracy" not in text  # the controlled runs have no interval and another generator
    assert "(the MAP networks are underconfident)" not in text
    cal = findings.load_json(ROOT / "report", "calibration")
    if cal and cal.get("temperatures") and max(cal["temperatures"]) < 1:
        assert "fitted on the validation split" in text and "look underconfident" in text


def test_the_interval_rule_quotes_the_null_simulation():
    line = findings.null_simulation_line(ROOT)
    if (ROOT / "report" / "evidence" / "null_simulation.md").is_file():
        assert "false NLL verdicts" in line and "(debiased; target 95 %)" in line
        assert "between two calibrated predictors" in line and "false plug-in ECE verdicts" in line


def test_the_findings_part_is_read_in_two_minutes():
    """From the first heading after the opening commands down to the details, without the glossary: under 700
    words (the aim is 600), counting the generated text as a reader sees it."""
    part = findings.findings_part((ROOT / "README.md").read_text())
    assert part.startswith("Findings") and findings.GLOSSARY_HEADING not in part
    assert findings.word_count(part) < 700, f"the findings part has {findings.word_count(part)} words"


def test_the_glossary_explains_every_abbreviation_in_the_readme():
    import re

    text = (ROOT / "README.md").read_text()
    glossary = text.split(findings.GLOSSARY_HEADING, 1)[1].split(findings.SUMMARY_END, 1)[0]
    prose = re.sub(r"```.*?```", " ", text.replace(glossary, " "), flags=re.S)
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", " ", prose)
    abbreviations = set(re.findall(r"(?<![\w/.-])[A-Z][A-Za-z]*[A-Z][A-Za-z0-9]*(?:-[A-Z0-9]+)?(?![\w/])", prose))
    missing = {a for a in abbreviations if a not in glossary and a.rstrip("s") not in glossary}
    assert not missing, f"abbreviations without a glossary line: {sorted(missing)}"
    rest = text.replace(glossary, " ")
    for term in findings.GLOSSARY:  # and no line explains a term the README does not use (code blocks included)
        assert any(re.search(rf"(?<!\w){re.escape(t.strip())}", rest) for t in term.split("/")), term


def test_the_conformal_caveat_reads_coverage_against_the_band_once_the_results_carry_it():
    assert "against the line at 1 - α in notebooks 04 and 06" in conformal_caveat({})
    text = conformal_caveat({"conformal_settings": {"cal_images": 519, "cal_studies": 201}})
    assert "band the guarantee implies for the cal split's 519 images" in text and "201 studies" in text
    assert "design effect" in text and "notebooks 04 and 06" not in text


def test_the_mura_size_rung_is_placed_beside_the_published_from_scratch_kappa_of_its_part():
    from utils.chapters.abnormality import reference_table
    from utils.models.learnability import RUNGS

    name = next(k for k in RUNGS if "MURA's" in k and k.endswith(" size"))
    assert RUNGS[name]["parts"] == ("WRIST",)
    ref = reference_table()
    v = float(ref[(ref.pretraining == "none (from scratch)") & (ref.metric == "kappa")].wrist.iloc[0])

    def row(kappa, ci):
        return dict(_rung(name, 0.8, study=0.81, train=0.7, n=600, study_ci=[0.76, 0.85]), train_images=9500,
                    held_out_studies=230, study_kappa=kappa, study_kappa_ci=ci, seconds=30.2)

    line = findings.mura_size_line(LADDER + [row(0.40, [0.30, v - 0.01])])
    assert line.startswith("At about MURA's wrist training size (9,500 images, its own 230 test studies) the phantom's "
                           "wrist alone gives study AUROC 0.81 [0.76, 0.85] and kappa 0.40 [0.30, ")
    others = ref[(ref.metric == "kappa") & (ref.pretraining != "none (from scratch)")].wrist.dropna()
    assert (f"reports wrist kappa {v:.2f} on MURA-valid; pretrained networks report "
            f"{others.min():.2f}-{others.max():.2f} (notebook 07, table 07-2, with their splits). Not a test:") in line
    assert not any(w in line for w in ("inside", "outside", "holds", "lies above"))  # no verdict on a point value
    assert findings.mura_size_line(LADDER) is None  # no such rung
    assert findings.mura_size_line([row(None, None)]) is None  # a rung without a kappa (an older file)
    why = findings.learnability_reason(LADDER + [row(0.40, [0.30, 0.45])])
    assert "carry no interval. The rung took 30 s (shared cores, indicative) for 12 epochs;" in why
    assert why.count("0.81 [0.76, 0.85]") == 1  # said once, not also among the rungs on their own test sets


def test_the_budget_line_sets_the_longest_all_parts_rung_against_what_the_cpu_report_trains():
    from utils.config import get_profile

    p = get_profile("cpu")
    long = dict(_rung("the task, 160 epochs", 0.72, study=0.745, train=0.85, n=25, study_ci=[0.69, 0.80]),
                epochs=160, train_images=2911, held_out_studies=332, study_kappa=0.35, study_kappa_ci=[0.25, 0.45],
                study_called=0.3, seconds=513.0,
                study_auroc_by_part=dict(WRIST=dict(auroc=0.80, ci=[0.70, 0.88], studies=98, abnormal=36),
                                         HAND=dict(auroc=0.56, ci=[0.38, 0.72], studies=39, abnormal=12),
                                         FOREARM=dict(auroc=None, ci=None, studies=19, abnormal=0)))
    line = findings.budget_line(LADDER + [long])
    steps = 160 * (2911 // p.batch_size)
    assert line.startswith(f"Trained for 160 epochs ({steps:,} optimiser steps, all parts, augmentation `full`), one "
                           "network reaches, at its last epoch (no epoch selection), study AUROC 0.74 [0.69, 0.80] and "
                           "kappa 0.35 [0.25, 0.45] on the report's 332 test studies and fits 85.0 % of its training "
                           "images; its training took 513 s")
    assert "fits 84.95 % of" in findings.budget_line([LADDER[5], dict(long, train_acc=0.8495)])
    assert (f"against the cpu report's budget of {findings.REPORT_BUDGET_S} s per task for everything, which trains "
            f"{p.members} members of {p.epochs} epochs; {p.members} members this long would take about "
            f"{p.members * 513 / 60:.0f} min of training alone.") in line
    assert "shortcut-free" not in line  # not measured on this row
    free = dict(long, free_study_auroc=0.66, free_study_auroc_ci=[0.58, 0.73], free_study_kappa=0.2,
                free_study_kappa_ci=[0.1, 0.3], free_studies=270, free_abnormal=80, objects_study_auroc=0.9,
                objects_study_auroc_ci=[0.85, 0.94], objects_abnormal=60)
    assert ("of training alone. Against the same 190 normal studies it ranks the 80 abnormal studies that show no "
            "hardware or cast (the report's shortcut-free score; kappa 0.20 [0.10, 0.30] on them and the normal ones) "
            "and the 60 that show one at study AUROC 0.66 [0.58, 0.73] and 0.90 [0.85, 0.94] respectively; the all-studies AUROC is "
            "exactly their mean weighted by those abnormal studies. Its study AUROC per part"
            ) in findings.budget_line([LADDER[5], free])
    base = dict(LADDER[5], free_study_auroc=0.57, free_study_auroc_ci=[0.49, 0.65], objects_study_auroc=0.57,
                objects_study_auroc_ci=[0.49, 0.66])
    assert ("0.66 [0.58, 0.73] and 0.90 [0.85, 0.94] respectively (at 12 epochs: 0.57 [0.49, 0.65] and 0.57 [0.49, 0.66]; one seed "
            "each); the all-studies") in findings.budget_line([base, free])
    # parts in alphabetical order (not by estimate), a part with one label left out; overlap gives no order
    assert ("per part (alphabetical): hand 0.56 [0.38, 0.72] (39 studies, 12 abnormal), wrist 0.80 [0.70, 0.88] "
            "(98 studies, 36 abnormal). Among the parts every two intervals overlap, so no order of the parts is "
            "shown (the pairwise differences are not tested, and overlap does not show the parts alike).") in line
    assert "forearm" not in line
    apart = dict(long, study_auroc_by_part=dict(long["study_auroc_by_part"], HAND=dict(auroc=0.5, ci=[0.4, 0.6],
                                                                                        studies=39, abnormal=12)))
    assert findings.budget_line([LADDER[5], apart]).endswith(
        "the intervals lie apart only for wrist above hand (the pairwise differences are not tested).")
    # a part with fewer than ORDER_MIN_STUDIES studies of a label gets no interval and is never compared
    few = dict(long, study_auroc_by_part=dict(long["study_auroc_by_part"], HUMERUS=dict(auroc=1.0, ci=[1.0, 1.0],
                                                                                         studies=13, abnormal=7)))
    line = findings.budget_line([LADDER[5], few])
    assert ("humerus 1.00 (13 studies, 7 abnormal; no interval: too few studies of a label), wrist" in line
            and "[1.00, 1.00]" not in line and "humerus above" not in line)
    assert line.endswith(f"Parts with fewer than {findings.ORDER_MIN_STUDIES} normal or abnormal studies are not "
                         "compared; among the others every two intervals overlap, so no order of the parts is shown "
                         "(the pairwise differences are not tested, and overlap does not show the parts alike).")
    # not for a rung on another test set, one body part, or no more epochs than the members train
    assert findings.budget_line(LADDER) is None
    assert findings.budget_line([LADDER[5], dict(long, held_out_images=900)]) is None
    assert findings.budget_line([LADDER[5], dict(long, epochs=p.epochs)]) is None
    assert findings.budget_line([LADDER[5], dict(long, rung="the task, wrist only")]) is None


def test_the_trade_line_gives_each_split_and_its_paired_difference_from_the_reports(tmp_path):
    assert findings.trade_line(tmp_path) is None  # not run: nothing said
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    row = dict(members=5, epochs=12, train_acc=0.616, study_auroc=0.57, study_auroc_ci=[0.51, 0.63], study_kappa=0.0,
               study_kappa_ci=[0.0, 0.0], study_called=0.0, seconds=210.0)
    two = dict(row, members=2, epochs=30, train_acc=0.65, study_auroc=0.64, study_auroc_ci=[0.58, 0.70],
               study_kappa=0.2, study_kappa_ci=[0.1, 0.3], study_called=0.2, minus_first_auroc=[0.07, 0.02, 0.12],
               minus_first_kappa=[0.2, 0.1, 0.3])
    (rec / "cpu-trade.json").write_text(json.dumps(dict(test_studies=332, rows=[row, two])))
    assert findings.trade_line(tmp_path) == (
        "Spending the members' training cost (60 member-epochs, the report's 5 x 12) on fewer, longer-trained members "
        "(members at their last epoch, not at the report's epoch of lowest validation NLL, so the 5 x 12 row is not the "
        "report's ensemble; scored on the report's 332 test studies): 5 x 12, study AUROC 0.57 [0.51, 0.63] and kappa "
        "0.00 [0.00, 0.00] (calls every study normal), calling 0 % of the studies abnormal, members fitting 61.6 %; "
        "2 x 30, study AUROC 0.64 [0.58, 0.70] and kappa 0.20 [0.10, 0.30], calling 20 % of the studies abnormal, "
        "members fitting 65.0 %. Against 5 x 12, paired: 2 x 30, AUROC +0.070 [+0.020, +0.120] and kappa +0.200 "
        "[+0.100, +0.300] (one seed set per row; the intervals cover the test studies, not the training runs).")


def test_the_learnability_headline_names_the_rung_at_muras_size_within_the_tasks_range():
    from utils.models.learnability import RUNGS

    name = next(k for k in RUNGS if "MURA's" in k and k.endswith(" size"))
    r = dict(_rung(name, 0.8, study=0.87, n=900, study_ci=[0.83, 0.90]), study_kappa=0.56, study_kappa_ci=[0.47, 0.64])
    assert findings.learnability_headline(LADDER + [r]).endswith(
        "; the task, study AUROC 0.57 [0.51, 0.63] (0.57-0.87 over 3 rungs, 2 test sets; wrist alone at MURA's "
        "training size, own test set: 0.87 [0.83, 0.90], kappa 0.56 [0.47, 0.64])")
    assert "MURA's" not in findings.learnability_headline(LADDER)


def test_the_scaling_line_gives_every_size_and_the_paired_differences_from_the_largest(tmp_path):
    assert findings.scaling_line(tmp_path) is None
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    small = dict(patients=1, epochs=12, steps=120, train_images=689, study_auroc=0.55, study_auroc_ci=[0.49, 0.61],
                 study_kappa=0.0, study_kappa_ci=[0.0, 0.0], study_called=0.0,
                 minus_top_auroc=[-0.32, -0.38, -0.25], minus_top_kappa=[-0.56, -0.65, -0.47])
    top = dict(patients=13, epochs=12, steps=1860, train_images=9921, study_auroc=0.87, study_auroc_ci=[0.83, 0.9],
               study_kappa=0.56, study_kappa_ci=[0.47, 0.64], study_called=0.288)
    same = dict(small, epochs=186, steps=1860, study_auroc=0.6, study_called=0.01)
    (rec / "cpu-scaling.json").write_text(json.dumps(dict(parts=["WRIST"], test_studies=372, rows=[small, top, same])))
    line = findings.scaling_line(tmp_path)
    assert line.startswith("Paired, on one test set (372 wrist studies of the 13x phantom's test split)")
    assert ("give study 1x (689 images, 12 epochs, 120 steps): AUROC 0.55 [0.49, 0.61], kappa 0.00 [0.00, 0.00] "
            "(calls every study normal); 13x (9,921 images, 12 epochs, 1,860 steps): AUROC 0.87 [0.83, 0.90], kappa "
            "0.56 [0.47, 0.64]; 1x with 13x's steps (689 images, 186 epochs, 1,860 steps): AUROC 0.60") in line
    assert "(calls almost every study normal)" in line  # 1 % of the studies: flagged too
    assert ("Minus 13x: 1x, AUROC -0.32 [-0.38, -0.25] and kappa -0.56 [-0.65, -0.47]; 1x with 13x's steps, AUROC "
            "-0.32") in line
    assert "one seed per row, so they do not cover the training run" in line
    assert "account for most of that gap" not in line  # 1x with 13x's steps still shown worse here: no reading
    same.update(minus_top_auroc=[-0.04, -0.08, 0.003], minus_top_kappa=[-0.01, -0.1, 0.09])
    (rec / "cpu-scaling.json").write_text(json.dumps(dict(parts=["WRIST"], test_studies=372, rows=[small, top, same])))
    assert ("With 13x's steps the smaller shares come within 0.04 AUROC of it, against up to 0.32 at the profile's 12 "
            "epochs: on this part and test set the steps account for most of that gap, while an image effect of up to "
            "0.08 AUROC is not excluded (one seed per row); whether 13x itself gains from more steps is not "
            "measured.") in findings.scaling_line(tmp_path)
