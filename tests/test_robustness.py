"""Rotations, corruptions, unfamiliar inputs, abnormality CAM peaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from utils import bayes, data, explain, metrics, phantom, robustness
from utils.models import build_model


@pytest.fixture(scope="module")
def predictors():
    torch.manual_seed(0)
    models = [build_model("small", 3).eval() for _ in range(3)]
    phi = torch.randn(40, 128).numpy()
    fit = bayes.fit_laplace(bayes.head_of(models[0]), phi, np.random.default_rng(0).integers(0, 3, 40), "kron")
    return robustness.Predictors(models, 1.3, fit, n_samples=20)


def test_rotation_by_zero_is_the_identity_on_every_prediction(predictors):
    x = torch.randn(5, 1, 32, 32)
    assert robustness.rotate(x, 0) is x and robustness.rotate(x, 360) is x
    a, b = predictors(x), predictors(robustness.rotate(x, 0))
    for name in a:
        np.testing.assert_array_equal(a[name]["probs"], b[name]["probs"])
    assert set(a) == {"MAP", "temperature scaling", "Laplace, kron", "deep ensemble (k=3)"}


def test_rotation_is_counter_clockwise_and_invertible_inside():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 0, 4] = 1.0  # top centre
    r = robustness.rotate(x, 90)
    assert r[0, 0, 4, 0] > 0.9  # moved to the left centre
    torch.testing.assert_close(robustness.rotate(r, -90)[..., 2:7, 2:7], x[..., 2:7, 2:7], atol=1e-5, rtol=0)


def test_ood_auroc_of_the_true_label_is_one_and_of_a_constant_one_half():
    assert robustness.ood_auroc(np.zeros(10), np.ones(7)) == 1.0
    assert robustness.ood_auroc(np.full(10, 0.3), np.full(7, 0.3)) == 0.5


def test_temperature_and_ensemble_predictions(predictors):
    x = torch.randn(4, 1, 32, 32)
    p = predictors(x)
    with torch.no_grad():
        logits = predictors.models[0](x)
        member = torch.stack([torch.softmax(m(x), 1) for m in predictors.models])
    np.testing.assert_allclose(p["temperature scaling"]["probs"], torch.softmax(logits / 1.3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(p["deep ensemble (k=3)"]["probs"], member.mean(0).numpy(), atol=1e-6)
    assert p["Laplace, kron"]["samples"].shape == (20, 4, 3)
    u = robustness.uncertainty(p["deep ensemble (k=3)"])
    assert (u["mutual information"] >= -1e-9).all() and (u["entropy"] >= u["mutual information"] - 1e-9).all()


def test_corruptions():
    x = data.standardize(torch.rand(3, 1, 32, 32))
    x01 = x * data.PIXEL_STD + data.PIXEL_MEAN
    inv = robustness.corrupt(x, "contrast inversion", 3) * data.PIXEL_STD + data.PIXEL_MEAN
    torch.testing.assert_close(inv, 1 - x01, atol=1e-5, rtol=0)
    blank = robustness.corrupt(x, "blank", 2) * data.PIXEL_STD + data.PIXEL_MEAN
    torch.testing.assert_close(blank, torch.full_like(x, 0.5), atol=1e-6, rtol=0)
    dark = [float(robustness.corrupt(x, "low exposure", s).mean()) for s in (1, 2, 3)]
    assert dark[0] > dark[1] > dark[2]
    for kind in robustness.CORRUPTIONS:
        assert robustness.corrupt(x, kind, 1).shape == x.shape
    with pytest.raises(ValueError, match="unknown corruption"):
        robustness.corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        robustness.corrupt(x, "noise", 4)


def test_unfamiliar_parts_keep_the_layout_and_never_enter_the_training_index(tmp_path, small_phantom):
    root = phantom.ensure(tmp_path, 0, 6, seed=1, max_side=96, ood=True, workers=1, progress=False)
    with pytest.raises(data.DataError, match="unknown study type"):
        data.load_index(root)  # the default loader refuses them
    idx = data.load_index(root, extra_parts=phantom.OOD_PARTS)
    assert set(idx.body_part) <= set(phantom.OOD_PARTS) and set(idx.split) == {"valid"}
    assert (idx.label == 0).all() and idx.study.str.endswith("_negative").all()
    assert set(data.load_index(small_phantom).body_part) <= set(phantom.PARTS)


def test_abnormality_labels_match_the_study_folders(small_phantom):
    idx, classes = data.task_targets(data.load_index(small_phantom), "abnormality")
    assert classes == ["normal", "abnormal"]
    assert (idx.target == idx.study.str.endswith("_positive")).all() and idx.target.nunique() == 2


def test_where_abnormal_cams_point_by_hand():
    lesion = np.zeros((3, 4, 4), np.uint8)
    lesion[0, 0, 0], lesion[0, 3, 3] = 1, 2  # fracture and hardware
    lesion[1, 1, 1] = 1  # fracture alone
    lesion[2, 2, 2] = 4  # a cast, no fracture
    maps = torch.zeros(3, 4, 4)
    maps[0, 3, 3] = 1  # peaks on the hardware
    maps[1, 1, 1] = 1  # on the fracture
    maps[2, 0, 0] = 1  # elsewhere
    df = robustness.where_abnormal_cams_point(maps, lesion).set_index("images")
    assert df.loc["fracture with hardware or cast", "peak on hardware"] == 1.0
    assert df.loc["fracture alone", "peak on fracture"] == 1.0
    assert df.loc["hardware or cast, no fracture in view", "peak elsewhere"] == 1.0


def test_rotation_resamples_as_the_training_augmentation():
    """Bilinear, black outside the frame: the same image as data.BatchAugment with only its rotation drawn."""
    x = data.standardize(torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(0)))
    for angle in (10.0, -30.0, 45.0):
        aug = data.BatchAugment(degrees=abs(angle), translate=0.0, scale=(1.0, 1.0), jitter=0.0, flip=False)
        u = torch.zeros(3, 7)
        u[:, 0] = float(np.sign(angle))
        torch.testing.assert_close(robustness.rotate(x, angle), aug(x, u=u), atol=1e-5, rtol=0)
    r = robustness.rotate(x, 45)
    torch.testing.assert_close(r[..., 0, 0], torch.full((3, 1), explain.BLACK), atol=1e-6, rtol=0)  # a corner
    assert not np.isin(r[..., 6:18, 6:18].numpy(), x.numpy()).all()  # interpolated values, not copied pixels


def test_bilinear_rotation_is_closer_to_the_rotated_smooth_image_than_nearest():
    h = 48
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(h) - (h - 1) / 2, indexing="ij")

    def image(xc, yc):  # a smooth pattern, in pixel coordinates about the centre
        return torch.sin(xc / 4.0) * torch.cos(yc / 5.0) + 0.3 * torch.sin((xc + yc) / 7.0)

    a = np.deg2rad(12.0)
    # counter-clockwise as displayed (y down): the output at (x, y) shows the input at R(a) (x, y) in these axes
    truth = image(np.cos(a) * xx - np.sin(a) * yy, np.sin(a) * xx + np.cos(a) * yy)
    inside = (xx ** 2 + yy ** 2) <= (h / 2 - 3) ** 2
    x = image(xx, yy)[None, None]
    bilinear = robustness.rotate(x, 12.0)[0, 0]
    nearest = TF.rotate(x, 12.0, interpolation=TF.InterpolationMode.NEAREST, fill=explain.BLACK)[0, 0]
    err_b, err_n = (bilinear - truth)[inside].abs().mean(), (nearest - truth)[inside].abs().mean()
    assert err_b < 0.5 * err_n, (err_b, err_n)
    assert robustness.rotate(x, 0) is x


def test_ood_intervals_agree_with_the_point_auroc_and_pair_against_map_entropy():
    rng = np.random.default_rng(0)
    p_in = metrics.softmax(rng.normal(0, 3, (120, 4)))
    p_out = metrics.softmax(rng.normal(0, 1, (60, 4)))
    pin = {"MAP": dict(probs=p_in), "other": dict(probs=p_in, samples=np.stack([p_in, p_in]))}
    pout = {"MAP": dict(probs=p_out), "other": dict(probs=p_out, samples=np.stack([p_out, p_out]))}
    g_in, g_out = np.repeat(np.arange(40), 3), np.repeat(np.arange(30), 2)  # the same ids in both: kept apart
    tab = robustness.ood_intervals(pin, pout, g_in, g_out, n_boot=300).set_index(["method", "score"])
    want = robustness.ood_auroc(metrics.entropy(p_in), metrics.entropy(p_out))
    assert tab.loc[("MAP", "entropy"), "auroc"] == pytest.approx(want)
    assert tab.loc[("MAP", "entropy"), "low"] <= want <= tab.loc[("MAP", "entropy"), "high"]
    same = tab.loc[("other", "entropy")]  # identical scores: a paired difference of exactly zero
    assert same.delta_vs_map_entropy == 0 and same.delta_low == 0 and same.delta_high == 0
    assert ("other", "mutual information") in tab.index


def test_abnormality_table_scores_studies_as_mura_does():
    rng = np.random.default_rng(1)
    study = np.repeat(np.arange(60), 2)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    pr = metrics.softmax(rng.normal(0, 1, (120, 2)) + 1.2 * np.eye(2)[y])
    row = robustness.abnormality_table({"m": pr}, y, study, n_boot=300).iloc[0]
    sp, sy, _ = metrics.study_level(pr, y, study)
    assert row["study AUROC"] == pytest.approx(metrics.binary_auroc(sp, sy))
    assert row["study kappa"] == pytest.approx(metrics.cohen_kappa(sp, sy))
    assert row["AUROC low"] <= row["study AUROC"] <= row["AUROC high"]
    assert row["kappa low"] <= row["study kappa"] <= row["kappa high"]


def test_paired_vs_reference_is_zero_against_itself_and_matches_the_metric():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    a = metrics.softmax(rng.normal(0, 2, (90, 3)))
    pred = {"MAP": dict(probs=a), "copy": dict(probs=a.copy()), "other": dict(probs=metrics.softmax(rng.normal(0, 1, (90, 3))))}
    tab = robustness.paired_vs(pred, y, np.repeat(np.arange(30), 3), n_boot=200).set_index("method")
    assert tab.loc["MAP", "ece"] == pytest.approx(metrics.ece(a, y))
    assert tab.loc["copy", "delta_nll"] == 0 and tab.loc["copy", "delta_nll_low"] == 0
    assert tab.loc["other", "delta_nll"] == pytest.approx(metrics.nll(pred["other"]["probs"], y) - metrics.nll(a, y))


def test_ood_table_is_the_point_auroc_by_each_score():
    rng = np.random.default_rng(3)
    p_in, p_out = metrics.softmax(rng.normal(0, 3, (50, 3))), metrics.softmax(rng.normal(0, 1, (40, 3)))
    tab = robustness.ood_table({"MAP": dict(probs=p_in)}, {"MAP": dict(probs=p_out)}).set_index("method")
    assert tab.loc["MAP", "AUROC by entropy"] == pytest.approx(
        robustness.ood_auroc(metrics.entropy(p_in), metrics.entropy(p_out)))
