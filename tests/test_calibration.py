from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from utils.chapters import calibration
from utils.evaluation import metrics
from utils.posteriors import Predictions


def _member_probs(rng, y, s, m, c):
    return metrics.softmax(rng.normal(0, s, (m, len(y), c)) + 2 * np.eye(c)[y])


def _preds(seed=0, n=240, c=4, m=3):
    """Predictions as `Run.predictions()` gives them: one `Predictions` record per label, single-model methods
    with M members and per-member info, combinations over the members of the method they average."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    preds = {}
    for label, info in (("MAP", {}), ("temperature scaling", {"temperature": 0.8}),
                        ("Laplace, kron", {"prior": "marglik", "prior_precision": 3.5, "bracketed": True}),
                        ("Laplace, kron, layer-wise prior", {"prior": "marglik-layerwise", "prior_precision": 4.0,
                                                             "prior_precision_bias": 0.2, "bracketed": True})):
        preds[label] = Predictions(label, _member_probs(rng, y, 1.0, m, c), info=[dict(info) for _ in range(m)])
    for label, of in (("deep ensemble", "MAP"), ("mixture of Laplace, kron", "Laplace, kron")):
        preds[label] = Predictions(label, preds[of].members, combination=True)
    return preds, y, np.repeat(np.arange(n // 3), 3)


def test_interval_table_estimates_deltas_and_reference():
    preds, y, groups = _preds()
    tab = calibration.interval_table(preds, y, groups, n_boot=300).set_index("method")
    assert list(tab.index) == list(preds)  # every entry, in the given order, under its own label
    mp = preds["MAP"].members
    for c in ("accuracy", "nll", "ece"):
        assert tab.loc["MAP", c] == pytest.approx(np.mean([getattr(metrics, c)(q, y) for q in mp]))
        assert tab.loc["MAP", f"{c}_low"] <= tab.loc["MAP", c] <= tab.loc["MAP", f"{c}_high"]
    ens = tab.loc["deep ensemble"]
    assert (ens.kind, ens.members) == ("ensemble", 3) and tab.loc["MAP", "members"] == 1
    assert ens.nll == pytest.approx(metrics.nll(mp.mean(0), y))
    mix = preds["Laplace, kron"].members.mean(0)
    assert tab.loc["mixture of Laplace, kron", "nll"] == pytest.approx(metrics.nll(mix, y))
    # the ensemble's delta is against the MAP members as single models, paired
    assert ens.delta_nll == pytest.approx(metrics.nll(mp.mean(0), y) - tab.loc["MAP", "nll"])
    assert np.isnan(tab.loc["MAP"].get("delta_nll", np.nan))
    # a perfectly calibrated predictor's expected ECE is positive on a finite test set
    assert 0 < tab.loc["MAP", "ece_reference_low"] < tab.loc["MAP", "ece_reference"] < tab.loc["MAP", "ece_reference_high"]
    shown = calibration.format_interval_table(tab.reset_index())
    assert shown.loc[0, "Δ nll vs MAP"] == "–" and "[" in shown.loc[1, "Δ nll vs MAP"]


def test_interval_table_takes_combinations_from_the_predictions():
    preds, y, groups = _preds()
    # a combination not built in: appears as its own row
    preds["my combination"] = Predictions("my combination", preds["temperature scaling"].members, combination=True)
    # a "combination" of one member is no ensemble: left out
    preds["mixture of Laplace, kron"] = Predictions("mixture", preds["Laplace, kron"].members[:1], combination=True)
    tab = calibration.interval_table(preds, y, groups, n_boot=100).set_index("method")
    assert tab.loc["my combination", "kind"] == "ensemble"
    assert tab.loc["my combination", "nll"] == pytest.approx(metrics.nll(preds["my combination"].probs, y))
    assert "mixture of Laplace, kron" not in tab.index


def test_ensemble_is_compared_with_the_best_single_model_method_only():
    preds, y, groups = _preds()
    # a combination better than everything must not count as the best *single* model
    preds["mixture of Laplace, kron"] = Predictions("mixture", np.stack([np.eye(4)[y] * 0.97 + 0.01] * 3),
                                                    combination=True)
    vb = calibration.ensemble_vs_best_single(preds, y, groups, n_boot=100).set_index("metric")
    single = ["MAP", "temperature scaling", "Laplace, kron", "Laplace, kron, layer-wise prior"]
    assert set(vb.best_single) <= set(single)
    nll = {k: np.mean([metrics.nll(q, y) for q in preds[k].members]) for k in single}
    assert vb.loc["nll", "best_single"] == min(nll, key=nll.get)
    assert vb.loc["nll", "ensemble"] == pytest.approx(metrics.nll(preds["deep ensemble"].probs, y))
    assert vb.loc["nll", "delta"] == pytest.approx(vb.loc["nll", "ensemble"] - nll[vb.loc["nll", "best_single"]])


def test_verdict_needs_an_interval_that_excludes_zero():
    assert calibration.verdict(-0.01, -0.02, 0.001, lower_is_better=True) == "no difference shown"
    assert calibration.verdict(-0.01, -0.02, -0.001, lower_is_better=True) == "better"
    assert calibration.verdict(0.01, 0.001, 0.02, lower_is_better=False) == "better"
    assert calibration.verdict(0.01, 0.001, 0.02, lower_is_better=True) == "worse"
    preds, y, groups = _preds()
    preds["Laplace, kron"] = Predictions("Laplace, kron", preds["MAP"].members.copy())  # the same: no difference
    v = calibration.verdicts(calibration.interval_table(preds, y, groups, n_boot=200))
    assert (v.loc["Laplace, kron"] == "no difference shown").all()
    assert "MAP" not in v.index and "deep ensemble" in v.index


def test_figure_rule_tv_and_priors():
    preds, y, _ = _preds()
    preds["MC dropout"] = Predictions("MC dropout", preds["MAP"].members, info=[{}] * 3)
    preds["Laplace, diag"] = Predictions("Laplace, diag", preds["MAP"].members, info=[
        {"prior": "marglik", "prior_precision": 11.0, "bracketed": False}] * 3)
    preds["unregistered"] = Predictions("unregistered", preds["MAP"].members)
    # every method registered with figures=True, and any not registered: single-model methods, then combinations
    assert calibration.figure_labels(preds) == ["MAP", "temperature scaling", "Laplace, kron",
                                                "Laplace, kron, layer-wise prior", "MC dropout", "Laplace, diag",
                                                "unregistered", "deep ensemble", "mixture of Laplace, kron"]
    del preds["unregistered"]
    show = calibration.shown_probs(preds)
    assert all(p.shape == (len(y), 4) for p in show.values())
    np.testing.assert_array_equal(show["MAP"], preds["MAP"].members[0])
    np.testing.assert_array_equal(show["deep ensemble"], preds["deep ensemble"].members.mean(0))
    tv = calibration.tv_from_map(preds)
    assert set(tv) == {"temperature scaling", "Laplace, kron", "Laplace, kron, layer-wise prior", "MC dropout",
                       "Laplace, diag"}  # single-model methods only
    assert tv["MC dropout"] == 0 and 0 < tv["Laplace, kron"] < 1
    pri = calibration.priors_summary(preds)
    assert list(pri) == ["Laplace, kron", "Laplace, kron, layer-wise prior", "Laplace, diag"]
    assert pri["Laplace, kron"] == [("marglik", 3.5, True)] and pri["Laplace, diag"] == [("marglik", 11.0, False)]
    assert set(calibration.aurc(show, y)) == set(show)
    ce = calibration.classwise_ece_table(show, y, ["A", "B", "C", "D"])
    assert list(ce.index) == ["a", "b", "c", "d"] and list(ce.columns) == list(show)
    assert ce.loc["a", "MAP"] == pytest.approx(100 * metrics.classwise_ece(show["MAP"], y)[0])
    for fig in (calibration.plot_reliability_grid(show, y), calibration.plot_selective(show, y),
                calibration.plot_classwise_ece(show, y, ["A", "B", "C", "D"])):
        assert fig.axes
    assert len([a for a in calibration.plot_reliability_grid(show, y).axes if a.get_title()]) == len(show)


def _reading(preds, y, groups, tab=None, verdict=None):
    tab = calibration.interval_table(preds, y, groups, n_boot=100) if tab is None else tab
    vs_best = calibration.ensemble_vs_best_single(preds, y, groups, n_boot=100)
    verdict = calibration.verdicts(tab) if verdict is None else verdict
    text = calibration.reading(tab, vs_best, verdict, calibration.tv_from_map(preds), [0.74, 0.82], preds,
                               "phantom", len(y), 80, 3)
    return text, tab, vs_best


def test_reading_states_the_numbers_and_chooses_the_words():
    preds, y, groups = _preds()
    text, tab, vs_best = _reading(preds, y, groups)
    m = tab.set_index("method").loc["MAP"]
    assert f"{100 * m.ece:.1f} [{100 * m.ece_low:.1f}, {100 * m.ece_high:.1f}] %" in text
    assert "(data: phantom, 240 test images in 80 studies, 3\nmembers" in text
    assert "0.74 to 0.82, below 1, point to *underconfidence*" in text
    vb = vs_best.set_index("metric")
    assert f"NLL {vb.loc['nll', 'delta']:+.3f} [{vb.loc['nll', 'low']:+.3f}, {vb.loc['nll', 'high']:+.3f}]" in text
    assert f"(best single: *{vb.loc['accuracy', 'best_single']}*)" in text
    tv = calibration.tv_from_map(preds)
    assert f"{tv['Laplace, kron']:.3f} (kron) and {tv['Laplace, kron, layer-wise prior']:.3f} (kron, layer-wise prior)" in text
    assert "kron δ = 3.5, bracketed for every member" in text  # one value where every member rounds the same
    assert "kron, layer-wise prior δ_W = 4, δ_b = 0.2" in text
    # the words follow the paired intervals: hand-made verdicts and temperature-scaling deltas
    t = tab.copy()
    ts = t.method == "temperature scaling"
    t.loc[ts, ["delta_nll", "delta_nll_low", "delta_nll_high"]] = [-0.01, -0.02, 0.005]  # includes zero
    t.loc[ts, ["delta_ece", "delta_ece_low", "delta_ece_high"]] = [0.001, -0.002, 0.004]
    verdict = calibration.verdicts(t)
    text, _, _ = _reading(preds, y, groups, t, verdict)
    assert "changes the NLL by -0.010 [-0.020, +0.005] and the ECE by\n  +0.100 [-0.200, +0.400] points, " \
           "so the direction is not shown there" in text
    assert "no difference shown for" in text and "*temperature scaling*" in text
    t.loc[ts, ["delta_nll", "delta_nll_low", "delta_nll_high"]] = [-0.01, -0.02, -0.005]  # excludes zero: better
    t.loc[ts, ["delta_ece", "delta_ece_low", "delta_ece_high"]] = [0.01, 0.002, 0.04]  # excludes zero: worse
    verdict = calibration.verdicts(t)
    assert verdict.loc["temperature scaling", "nll"] == "better" and verdict.loc["temperature scaling", "ece"] == "worse"
    text, _, _ = _reading(preds, y, groups, t, verdict)
    assert "so on the test set it improves the NLL and worsens the ECE" in text
    assert "**NLL** better for *temperature scaling*" in text or "*temperature scaling*" in \
        text.split("**NLL** better for")[1].split(";")[0]
    assert "worse for *temperature scaling*" in text.split("**ECE**")[1]
    # none to list: 'none'
    empty = pd.DataFrame({c: ["no difference shown"] for c in calibration.INTERVAL_METRICS},
                         index=pd.Index(["temperature scaling"], name="method"))
    text, _, _ = _reading(preds, y, groups, t, empty)
    assert "**ECE** better for none; worse for none" in text


def _three_splits(rng, n=(600, 600, 600), c=3):
    """Tune, cal and test predictions of two methods on exchangeable images (labels drawn from the predictive)."""
    p = metrics.softmax(rng.normal(0, 2, (sum(n), c)))
    y = (np.cumsum(p, 1) < rng.uniform(size=(sum(n), 1))).sum(1).clip(max=c - 1)
    cuts = np.cumsum(n)[:-1]
    out = []
    for ps in np.split(p, cuts):
        out.append({"m": Predictions("m", ps[None]), "ens": Predictions("ens", ps[None], combination=True)})
    return (*out, *np.split(y, cuts))


def test_conformal_table_covers_exchangeable_data_and_summarises_it():
    rng = np.random.default_rng(0)
    tune, cal, test, y_tune, y_cal, y_test = _three_splits(rng)
    part = np.where(np.arange(600) % 2, "HAND", "WRIST")
    conf = calibration.conformal_table(tune, cal, test, y_tune, y_cal, y_test, np.arange(600), by={"part": part},
                                       class_names=["a", "b", "c"], n_boot=200)
    whole = conf[conf.subset == "all"]
    assert len(whole) == 2 * 3 * 2 * 2  # methods x scores (LAC, APS, RAPS) x alphas x (marginal, by class)
    assert list(whole.score.unique()) == ["lac", "aps", "raps"] and list(whole.mondrian.unique()) == ["none", "class"]
    assert (conf.calibration == "all images").all()
    for _, r in whole.iterrows():
        assert r.coverage_low <= r.coverage <= r.coverage_high and r.n_cal == 600
        assert r.band_low < 1 - r.alpha < r.band_high and r.in_band  # exchangeable: inside the band here
    # RAPS with the parameters tuned on the tuning split, the same for both kinds of set
    raps = whole[whole.score == "raps"]
    for alpha, g in raps.groupby("alpha"):
        t = calibration.conformal.tune_raps(tune["m"].probs, y_tune, alpha, 0)
        assert (g.k_reg == t["k_reg"]).all() and (g.lam == t["lam"]).all()
    assert whole[whole.score != "raps"].k_reg.isna().all()
    # the class rows of label-conditional sets carry their own threshold and band; under marginal sets neither
    cls = conf[(conf.mondrian == "class") & conf.subset.str.startswith("class=")]
    assert cls.qhat.notna().all() and cls.in_band.notna().all()
    assert conf[(conf.mondrian == "none") & (conf.subset != "all")][["qhat", "band_low"]].isna().all().all()
    q = calibration.conformal.calibrate(cal["m"].probs, y_cal, 0.1, "lac", 0, mondrian="class")
    got = cls[(cls.method == "m") & (cls.score == "lac") & (cls.alpha == 0.1)].qhat.tolist()
    assert got == [q[0], q[1], q[2]]
    s = calibration.conformal_summary(conf)
    assert list(s.columns[:4]) == ["method", "score", "alpha", "target coverage"] and len(s) == 12
    assert (s["in band"] == "inside").all() and s["band (95 %)"].str.match(r"0\.\d{3}-0\.\d{3}").all()
    assert s["lowest part coverage"].str.contains(r"\((?:HAND|WRIST)\)").all() and (s["bins outside their band"] == "-").all()
    assert s.score.str.startswith("RAPS (k_reg").sum() == 4
    s = calibration.conformal_summary(conf, "class")
    assert len(s) == 12 and (s["bins outside their band"].str.endswith("of 3")).all()
    sel = calibration.selective_scores({"m": test["m"].probs}, y_test).iloc[0]
    assert sel["ECE (15 bins)"] == pytest.approx(metrics.ece(test["m"].probs, y_test)) and sel["AUGRC"] > 0


def test_conformal_by_an_attribute_one_image_per_study_reading_and_results():
    rng = np.random.default_rng(1)
    tune, cal, test, y_tune, y_cal, y_test = _three_splits(rng, (300, 450, 600))
    part_cal, part_test = np.repeat(["ELBOW", "HAND", "WRIST"], 150), np.tile(["ELBOW", "HAND", "WRIST"], 200)
    studies_cal, studies_test = np.arange(450) // 3, np.arange(600) // 2
    conf = calibration.conformal_table(tune, cal, test, y_tune, y_cal, y_test, studies_test, n_boot=100,
                                       bins={"part": (part_cal, part_test)}, alphas=(0.1,), scores=("lac", "raps"))
    assert list(conf.mondrian.unique()) == ["none", "class", "part"]
    rows = conf[(conf.mondrian == "part") & conf.subset.str.startswith("part=")]
    assert len(rows) == 2 * 2 * 3 and (rows.n_cal == 150).all() and rows.in_band.notna().all()
    q = calibration.conformal.calibrate(cal["m"].probs, y_cal, 0.1, mondrian="bins", bins=part_cal)
    got = rows[(rows.method == "m") & (rows.score == "lac")].set_index("subset").qhat
    assert got.to_dict() == {f"part={k}": v for k, v in q.items()}
    one = calibration.conformal_table(tune, cal, test, y_tune, y_cal, y_test, studies_test, n_boot=100,
                                      groups_cal=studies_cal, one_per_study=True, mondrian=(), alphas=(0.1,))
    o = one[one.subset == "all"]
    assert (o.n_cal == 150).all() and (o.n == 300).all() and (o.calibration == "one image per study").all()
    with pytest.raises(ValueError, match="one_per_study"):
        calibration.conformal_table(tune, cal, test, y_tune, y_cal, y_test, studies_test, one_per_study=True)
    text = " ".join(calibration.conformal_reading(conf, 450, 150, one).split())
    assert "inside the band the guarantee implies" in text and "1 - alpha" not in text
    assert "450 images come from 150 studies" in text and "design effect" in text
    assert "one image per study (150 images)" in text and "tuned on the val split" in text
    assert "**Sets Mondrian by part**" in text and "**Label-conditional sets (Mondrian by class)**" in text
    assert ("RAPS's sets are APS's" in text) == (conf[conf.score == "raps"].k_reg >= 3).all()
    # a coverage outside its band is named, with its side
    bad = conf.copy()
    i = bad.index[(bad.subset == "all") & (bad.mondrian == "none")][0]
    bad.loc[i, ["coverage", "in_band"]] = [0.5, False]
    assert f"outside it: *{bad.loc[i, 'method']}* LAC 0.500 (below)" in " ".join(
        calibration.conformal_reading(bad, 450, 150).split())
    res = calibration.conformal_results(conf, 450, 150, 100, one)
    assert res["conformal_calibration"] == "cal split" and len(res["conformal"]) == len(conf)
    st = res["conformal_settings"]
    assert st["cal_images"] == 450 and "BetaBinomial" in st["band"] and "val split" in st["tuning"]
    assert {(r["method"], r["alpha"]) for r in st["raps"]} == {("m", 0.1), ("ens", 0.1)}
    assert len(res["conformal_one_per_study"]) == len(one)


def test_spans_conformal_alphas_and_selective_axes_are_written_for_a_reader():
    assert calibration.span_text([19.51, 19.49]) == "19.5" and calibration.span_text([3.53, 3.72]) == "3.53 to 3.72"
    preds, y, groups = _preds()
    show = calibration.shown_probs(preds)
    fig = calibration.plot_selective(show, y)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    for line in ax.get_lines():
        x, v = line.get_data()
        inside = np.asarray(x) >= ax.get_xlim()[0]
        assert lo <= np.min(np.asarray(v)[inside]) and np.max(np.asarray(v)[inside]) <= hi
    assert ax.get_xlim() == (10.0, 100.0) and hi - lo < 100  # spans the data, not 0-100
    tune = {"m": Predictions("m", show["MAP"][None, :60])}
    cal = {"m": Predictions("m", show["MAP"][None, 60:120])}
    test = {"m": Predictions("m", show["MAP"][None, 120:])}
    conf = calibration.conformal_table(tune, cal, test, y[:60], y[60:120], y[120:], groups[120:], n_boot=50)
    summary = calibration.conformal_summary(conf)
    assert set(summary.alpha) == {"0.05", "0.1"} and set(summary["target coverage"]) == {"0.95", "0.9"}


def test_selective_curves_are_told_apart_by_colour_or_line_style():
    preds, y, _ = _preds()
    for k in range(6):
        preds[f"extra {k}"] = Predictions(f"extra {k}", preds["MAP"].members)
    fig = calibration.plot_selective(calibration.shown_probs(preds), y)
    looks = [(line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines()]
    assert len(looks) == len(set(looks)) >= 11
