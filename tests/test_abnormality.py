"""MURA's task scored per study: tables overall and per part, CAM peaks on the lesion masks, the reference
table, the resolution sweep's bookkeeping, the chapter's reading."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from utils import config
from utils.chapters import abnormality
from utils.evaluation import metrics
from utils.models import train


def test_where_abnormal_cams_point_by_hand():
    lesion = np.zeros((3, 4, 4), np.uint8)
    lesion[0, 0, 0], lesion[0, 3, 3] = 1, 2  # fracture and hardware
    lesion[1, 1, 1] = 1  # fracture alone
    lesion[2, 2, 2] = 4  # a cast, no fracture
    maps = torch.zeros(3, 4, 4)
    maps[0, 3, 3] = 1  # peaks on the hardware
    maps[1, 1, 1] = 1  # on the fracture
    maps[2, 0, 0] = 1  # elsewhere
    df = abnormality.where_abnormal_cams_point(maps, lesion).set_index("images")
    assert df.loc["fracture with another finding", "peak on hardware"] == 1.0
    assert df.loc["fracture alone", "peak on fracture"] == 1.0
    assert df.loc["other findings, no fracture in view", "peak elsewhere"] == 1.0


def test_abnormality_table_scores_studies_as_mura_does():
    rng = np.random.default_rng(1)
    study = np.repeat(np.arange(60), 2)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    pr = metrics.softmax(rng.normal(0, 1, (120, 2)) + 1.2 * np.eye(2)[y])
    row = abnormality.abnormality_table({"m": pr}, y, study, n_boot=300).iloc[0]
    sp, sy, _ = metrics.study_level(pr, y, study)
    assert row["study AUROC"] == pytest.approx(metrics.binary_auroc(sp, sy))
    assert row["study kappa"] == pytest.approx(metrics.cohen_kappa(sp, sy))
    assert row["AUROC low"] <= row["study AUROC"] <= row["AUROC high"]
    assert row["kappa low"] <= row["study kappa"] <= row["kappa high"]


def test_cam_peaks_label_each_explanation():
    lesion = np.zeros((1, 4, 4), np.uint8)
    lesion[0, 0, 0], lesion[0, 3, 3] = 1, 4  # a fracture and a cast
    a, b = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    a[0, 0, 0], b[0, 3, 3] = 1, 1
    df = abnormality.cam_peaks({"A": a, "B": b}, lesion).set_index("explanation")
    assert df.loc["A", "peak on fracture"] == 1.0 and df.loc["B", "peak on cast"] == 1.0



def test_abnormality_note_names_the_parts():
    assert abnormality.abnormality_note(None, np.array([0, 1, 1, 1]), [5, 5, 6, 7]) == (
        "abnormality task on all seven body parts: 4 test images, 3 studies, 75% abnormal")
    assert abnormality.abnormality_note(["WRIST", "HAND"], np.array([0, 1]), [1, 2]).startswith(
        "abnormality task on WRIST, HAND: 2 test images")


def _studies(n_studies=80, seed=0):
    rng = np.random.default_rng(seed)
    study = np.repeat(np.arange(n_studies), 2)
    y = np.repeat(rng.integers(0, 2, n_studies), 2)
    part = np.repeat(np.where(np.arange(n_studies) < n_studies - 6, "WRIST", "HAND"), 2)  # 6 hand studies
    pr = metrics.softmax(rng.normal(0, 1, (2 * n_studies, 2)) + 1.5 * np.eye(2)[y])
    return pr, y, study, part


def test_study_table_scores_every_part_with_enough_studies_and_the_whole():
    pr, y, study, part = _studies()
    t = abnormality.study_table({"m": pr, "n": pr[:, ::-1]}, y, study, part, n_boot=200).set_index(
        ["method", "body_part"])
    whole = abnormality.abnormality_table({"m": pr}, y, study, n_boot=200).iloc[0]
    assert t.loc[("m", "all"), "study AUROC"] == pytest.approx(whole["study AUROC"])
    wrist = y[part == "WRIST"]
    sp, sy, _ = metrics.study_level(pr[part == "WRIST"], wrist, study[part == "WRIST"])
    assert t.loc[("m", "WRIST"), "study AUROC"] == pytest.approx(metrics.binary_auroc(sp, sy))
    assert t.loc[("m", "WRIST"), "studies"] == 74 and t.loc[("m", "HAND"), "studies"] == 6
    assert pd.isna(t.loc[("m", "HAND"), "study AUROC"])  # 6 studies: not scored
    assert t.loc[("n", "all"), "study AUROC"] == pytest.approx(1 - t.loc[("m", "all"), "study AUROC"])
    cells = abnormality.per_part(t.reset_index())
    assert cells.loc["m", "hand (6)"] == "-" and cells.loc["m", "wrist (74)"].startswith(
        f"{t.loc[('m', 'WRIST'), 'study AUROC']:.2f} [")


def test_the_reference_table_cites_every_row():
    ref = abnormality.reference_table()
    assert ref.source.str.len().min() > 20 and ref.status.notna().all()
    mura = ref[(ref.metric == "AUROC") & ref.model.str.startswith("DenseNet-169, ensemble")]
    assert mura.overall.tolist() == [0.929] and "hidden" in mura.split.iloc[0]
    kappa = ref[(ref.metric == "kappa") & ref.model.str.startswith("DenseNet-169, ensemble")].iloc[0]
    assert kappa.overall == 0.705 and kappa.wrist == 0.931 and kappa.finger == 0.389
    assert {"ImageNet", "none (from scratch)"} <= set(ref.pretraining)


def test_a_sweep_size_gets_its_own_artifacts_and_the_profiles_keep_theirs():
    p = config.get_profile("cpu", task="abnormality")
    assert train.run_name(p, ["WRIST"]) == "cpu/abnormality-WRIST/small"
    assert train.run_name(abnormality.sweep_profile(p, 128), ["WRIST"]) == "cpu/abnormality-WRIST/small-128px"
    assert abnormality.sweep_profile(p, 64) == p  # the profile's own size: its own members
    with pytest.raises(TypeError, match="get_profile"):  # below Run, a Profile, never a name to look up again
        train.load_member("cpu", 0, None)
    assert train.run_name(config.get_profile("cpu")) == "cpu/bodypart/small"


def test_the_sweep_trains_on_the_part_with_most_test_studies_that_can_be_trained_alone():
    rows = []
    for part, n_train_abn, n_test in (("HAND", 4, 9), ("WRIST", 12, 6), ("ELBOW", 12, 3)):
        for k in range(12):  # normal training images
            rows.append(dict(body_part=part, study_id=f"{part}n{k}", subset="train", label=0))
        for k in range(n_train_abn):
            rows.append(dict(body_part=part, study_id=f"{part}a{k}", subset="train", label=1))
        for k in range(n_test):
            rows.append(dict(body_part=part, study_id=f"{part}t{k}", subset="test", label=k % 2))
            rows.append(dict(body_part=part, study_id=f"{part}v{k}", subset="val", label=k % 2))
            rows.append(dict(body_part=part, study_id=f"{part}c{k}", subset="cal", label=k % 2))
    idx = pd.DataFrame(rows)
    assert abnormality.sweep_parts(idx) == ["WRIST"]  # HAND has more test studies but 4 abnormal training images
    assert abnormality.sweep_parts(idx, ["ELBOW", "HAND"]) == ["ELBOW"]
    assert abnormality.sweep_parts(idx, ["HAND"]) == ["HAND"]  # none trainable alone: the report's parts
    assert abnormality.sweep_parts(idx[idx.body_part == "HAND"]) is None


def test_reading_states_the_ensembles_numbers_and_the_sweep():
    pr, y, study, part = _studies()
    runs = {"MAP": pr, "deep ensemble": pr}
    idx = pd.DataFrame(dict(body_part=part, label=y, subset="train"))
    runs[abnormality.PREVALENCE] = abnormality.prevalence_baseline(idx, idx)
    t = abnormality.study_table(runs, y, study, part, n_boot=200)
    sweep = pd.DataFrame(dict(image_size=[64, 128], part=["WRIST"] * 2, test_studies=[74, 74], study_auroc=[0.8, 0.85],
                              auroc_low=[0.7, 0.75], auroc_high=[0.9, 0.93], train_s=[10.0, 40.0]))
    cf = pd.DataFrame([{"kind": "cast", "studies": 8, "label": 0, "study shift": 0.02, "study shift lo": -0.006,
                        "study shift hi": 0.057, "mass": 0.3, "baseline mass": 0.31, "mass - baseline": -0.01,
                        "mass - baseline lo": -0.02, "mass - baseline hi": 0.0, "area fraction": 0.015},
                       {"kind": "hardware", "studies": 30, "label": 1, "study shift": 0.0076, "study shift lo": 0.004,
                        "study shift hi": 0.0127, "mass": 0.3, "baseline mass": 0.31, "mass - baseline": -0.007,
                        "mass - baseline lo": -0.012, "mass - baseline hi": -0.002, "area fraction": 0.01}])
    text = abnormality.reading("phantom", t, sweep, cf, 3, 64, 8, called=(22, 80))
    a = t[(t.method == "deep ensemble") & (t.body_part == "all")].iloc[0]
    assert f"{a['study AUROC']:.2f} [{a['AUROC low']:.2f}, {a['AUROC high']:.2f}]" in text
    assert "64 px 0.80 [0.70, 0.90] (10 s); 128 px 0.85 [0.75, 0.93] (40 s)" in text
    assert "not comparable" in text and "calls 22 of 80 test\n  studies abnormal" in text
    assert "A predictor that knows only the body part" in text and "no paired comparison between the methods is made here" in text
    assert "cast from 8 normal studies changes p(abnormal) by (not shown) 0.0200 [-0.0060, 0.0570]" in text
    assert "hardware from 30 abnormal studies lowers p(abnormal) by 0.0076" in text
    assert "no finding is shown to receive more CAM mass than the same area elsewhere; less on: hardware" in text
    assert "hand" not in text.split("Per body part:")[1].split(".")[0]
    base = abnormality.prevalence_baseline(idx, idx)
    wrist = y[part == "WRIST"].mean()
    np.testing.assert_allclose(base[part == "WRIST", 1], wrist) and np.testing.assert_allclose(base.sum(1), 1)
    assert abnormality.called_abnormal(np.c_[1 - (y > 0), (y > 0)].astype(float), y, study) == (int(y[::2].sum()), 80)


def test_the_shortcut_free_set_drops_exactly_the_positive_studies_that_show_an_object():
    # six studies of two images: 0 normal, 1 normal with a cast, 2 abnormal with a fracture only, 3 abnormal with
    # hardware in its second view only, 4 abnormal with a cast, 5 abnormal with degenerative change only
    study = np.repeat(np.arange(6), 2)
    y = np.repeat([0, 0, 1, 1, 1, 1], 2)
    lesion = np.zeros((12, 4, 4), np.uint8)
    lesion[2:4, 1, 2] = 4  # a cast on a normal study is kept: only positives are dropped
    lesion[4:6, 1, 1] = 1
    lesion[7, 0, 0] = 2 | 1
    lesion[8:10, 2, 2] = 4
    lesion[10:12, 3, 3] = 8
    keep = abnormality.without_object_positives(y, study, lesion)
    assert list(keep) == [True] * 6 + [False] * 4 + [True] * 2
    rng = np.random.default_rng(0)
    pr = metrics.softmax(rng.normal(0, 1, (12, 2)) + 2 * np.eye(2)[y])
    free = abnormality.shortcut_free_table({"m": pr}, y, study, lesion, n_boot=100).set_index("studies scored")
    assert free.loc["all", "studies"] == 6 and free.loc["positives without hardware or cast", "studies"] == 4
    assert free.loc["positives without hardware or cast", "abnormal studies"] == 2
    sub = abnormality.abnormality_table({"m": pr[keep]}, y[keep], study[keep], n_boot=100).iloc[0]
    assert free.loc["positives without hardware or cast", "study AUROC"] == pytest.approx(sub["study AUROC"])


def test_reading_states_the_shortcut_free_score_beside_the_whole():
    pr, y, study, part = _studies()
    runs = {"deep ensemble": pr}
    t = abnormality.study_table(runs, y, study, part, n_boot=200)
    lesion = np.zeros((len(y), 2, 2), np.uint8)
    first_abnormal = np.unique(study[y == 1])[:3]
    lesion[np.isin(study, first_abnormal), 0, 0] = 2  # three positive studies show hardware
    free = abnormality.shortcut_free_table(runs, y, study, lesion, n_boot=200)
    text = abnormality.reading("phantom", t, None, pd.DataFrame(), 3, 64, 8, free=free)
    f = free[free["studies scored"] != "all"].iloc[0]
    n = len(np.unique(study))
    assert f"({n - 3} studies left, {int(f['abnormal studies'])}\n  abnormal, of {n})" in text
    assert f"{f['study AUROC']:.2f} [{f['AUROC low']:.2f}, {f['AUROC high']:.2f}]" in text
    assert "what the objects contribute is not measured" in text and "gap is what" not in text


def test_reading_names_the_scores_on_which_the_body_part_baseline_is_ahead():
    def row(method, acc, nll, ece, kappa):
        return {"method": method, "body_part": "all", "study AUROC": 0.57, "AUROC low": 0.5, "AUROC high": 0.63,
                "study kappa": kappa, "kappa low": min(kappa, 0.0), "kappa high": kappa + 0.1, "studies": 332,
                "abnormal": 0.42, "image accuracy": acc, "NLL": nll, "ECE": ece}

    t = pd.DataFrame([row("deep ensemble", 0.568, 0.699, 0.102, 0.0), row(abnormality.PREVALENCE, 0.609, 0.676,
                                                                         0.053, 0.14)])
    text = abnormality.reading("phantom", t, None, pd.DataFrame(), 5, 64, 8)
    assert ("the same baseline is ahead of the ensemble (point values, no paired test): image accuracy 60.9% against "
            "56.8%; NLL 0.676 against 0.699; ECE 5.3% against 10.2%; study kappa 0.14 against 0.00") in text
    t.loc[1, ["image accuracy", "NLL", "ECE", "study kappa"]] = [0.5, 0.8, 0.2, -0.1]  # behind on every score
    assert "is ahead of the ensemble" not in abnormality.reading("phantom", t, None, pd.DataFrame(), 5, 64, 8)


def test_data_scaling_lists_the_ladders_task_rungs_with_their_intervals(tmp_path):
    import json

    assert abnormality.data_scaling(tmp_path) is None  # not measured: no table
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    task = dict(rung="the task, wrist only", train_images=743, held_out_studies=98, train_acc=0.631, epochs=12,
                study_auroc=0.49, study_auroc_ci=[0.37, 0.61], study_kappa=0.0, study_kappa_ci=[0.0, 0.0], study_called=0.0,
                seconds=9.4)
    rows = [dict(rung="planted 1x6 px", train_images=10, train_acc=0.8, study_auroc=None), task,
            dict(task, rung="the task, 4x the patients, 3 epochs", study_auroc=None)]  # no study AUROC: left out
    (rec / "cpu-learnability.json").write_text(json.dumps(dict(rows=rows)))
    t = abnormality.data_scaling(tmp_path)
    assert t.to_dict(orient="records") == [{
        "rung": "the task, wrist only", "training images": 743, "epochs": 12, "test studies": 98,
        "training accuracy": 63.1, "study AUROC": "0.49 [0.37, 0.61]", "study kappa": "0.00 [0.00, 0.00]",
        "study AUROC, shortcut-free": "-", "studies called abnormal": 0.0, "training seconds": 9}]
    rows[1].update(free_study_auroc=0.47, free_study_auroc_ci=[0.33, 0.6])
    (rec / "cpu-learnability.json").write_text(json.dumps(dict(rows=rows)))
    assert abnormality.data_scaling(tmp_path)["study AUROC, shortcut-free"].tolist() == ["0.47 [0.33, 0.60]"]
    assert abnormality.data_scaling(tmp_path, "gpu") is None  # another profile's ladder is not this one's


def test_paired_scaling_reads_the_curve_and_marks_the_largest_size(tmp_path):
    import json

    assert abnormality.paired_scaling(tmp_path) is None
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    row = dict(patients=1, train_images=743, train_acc=0.631, study_auroc=0.49, study_auroc_ci=[0.37, 0.61],
               study_kappa=0.0, study_kappa_ci=[0.0, 0.0], study_called=0.0, seconds=9.4,
               minus_top_auroc=[-0.38, -0.5, -0.25], minus_top_kappa=[-0.56, -0.64, -0.47])
    top = dict(row, patients=13, train_images=9921, study_auroc=0.87, study_auroc_ci=[0.83, 0.90])
    del top["minus_top_auroc"], top["minus_top_kappa"]
    (rec / "cpu-scaling.json").write_text(json.dumps(dict(rows=[row, top])))
    t = abnormality.paired_scaling(tmp_path)
    assert t["training patients"].tolist() == ["1x", "13x"]
    assert t["AUROC minus the largest"].tolist() == ["-0.38 [-0.50, -0.25]", "-"]
    assert t["kappa minus the largest"].iloc[0] == "-0.56 [-0.64, -0.47]"


def test_members_trade_reads_the_trade_and_pairs_each_split_with_the_first(tmp_path):
    import json

    assert abnormality.members_trade(tmp_path) is None
    rec = tmp_path / "report" / "recipe"
    rec.mkdir(parents=True)
    row = dict(members=5, epochs=12, train_acc=0.616, study_auroc=0.57, study_auroc_ci=[0.51, 0.63], study_kappa=0.0,
               study_kappa_ci=[0.0, 0.0], study_called=0.0, seconds=210.4)
    two = dict(row, members=2, epochs=30, minus_first_auroc=[0.07, 0.02, 0.12], minus_first_kappa=[0.2, 0.1, 0.3])
    (rec / "cpu-trade.json").write_text(json.dumps(dict(test_studies=332, rows=[row, two])))
    t = abnormality.members_trade(tmp_path)
    assert t["members x epochs"].tolist() == ["5 x 12", "2 x 30"]
    assert t["AUROC minus the first"].tolist() == ["-", "0.070 [0.020, 0.120]"] and t["seconds"].tolist() == [210, 210]
