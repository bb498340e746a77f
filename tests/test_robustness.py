"""Rotations, corruptions, unfamiliar inputs, abnormality CAM peaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import bayes, data, phantom, robustness
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
