"""The controlled training runs: each variant changes one setting of the profile, rows merge by variant."""
from __future__ import annotations

import json

import pytest
import torch

from utils import config, data
from utils.models import recipe


def test_each_variant_changes_one_setting_of_the_profile():
    p = config.get_profile("cpu", task="abnormality")
    base = recipe.variant_profile(p, recipe.VARIANTS["baseline"])
    assert base == p
    for name, change in recipe.VARIANTS.items():
        v = recipe.variant_profile(p, change)
        differ = [f for f in ("augment", "dropout", "lr", "weight_decay", "epochs", "arch", "image_size",
                              "batch_size", "optimizer") if getattr(v, f) != getattr(p, f)]
        # one setting, or an optimiser with its own learning rate
        assert differ == [] if name == "baseline" else (len(differ) == 1 or differ == ["lr", "optimizer"]), name
    assert recipe.variant_profile(p, recipe.VARIANTS["epochs x2.5"]).epochs == round(p.epochs * 2.5)
    assert recipe.variant_profile(p, recipe.VARIANTS["no resampling"]).augment == "lossless"


def test_rows_of_a_later_run_join_the_file_in_the_variants_order(tmp_path):
    f = tmp_path / "cpu-abnormality.json"
    p = config.get_profile("cpu", task="abnormality")
    row = dict(variant="", epochs=12, best_epoch=10, train_acc=0.6, train_acc_last=0.6, train_nll=0.6, val_acc=0.6,
               val_nll=0.6, test_acc=0.6, test_nll=0.6, seconds=1.0)
    recipe.save(f, p, dict(row, variant="no dropout"))
    recipe.save(f, p, dict(row, variant="baseline"))
    rows = recipe.save(f, p, dict(row, variant="no dropout", train_acc=0.7))
    assert [r["variant"] for r in rows] == ["baseline", "no dropout"] and rows[1]["train_acc"] == 0.7
    assert json.loads(f.read_text())["rows"] == rows
    assert "| no dropout | 12 | 10 | 70.0 |" in f.with_suffix(".md").read_text()


def test_a_table_never_mixes_rows_of_two_phantom_generators(tmp_path):
    """Rows of another generator (or of a file that does not say which) are dropped, not joined: the old file
    kept generator 3.0's rows beside 3.1's without saying so."""
    f = tmp_path / "cpu-abnormality.json"
    p = config.get_profile("cpu", task="abnormality")
    row = dict(variant="baseline", epochs=12, best_epoch=10, train_acc=0.6, train_acc_last=0.6, train_nll=0.6,
               val_acc=0.6, val_nll=0.6, test_acc=0.6, test_nll=0.6, seconds=1.0)
    f.write_text(json.dumps(dict(profile="cpu", task="abnormality", rows=[dict(row, variant="no dropout")])))
    rows = recipe.save(f, p, row, generator="3.1")
    assert [r["variant"] for r in rows] == ["baseline"]
    rows = recipe.save(f, p, dict(row, variant="no dropout"), generator="3.1")
    assert [r["variant"] for r in rows] == ["baseline", "no dropout"]
    assert json.loads(f.read_text())["generator_version"] == "3.1"
    assert [r["variant"] for r in recipe.save(f, p, row, generator="3.2")] == ["baseline"]


def test_the_lossless_augmentation_only_mirrors_and_scales_intensities():
    x = data.standardize(torch.rand(6, 1, 16, 16))
    y = data.augmentation("lossless")(x, torch.Generator().manual_seed(0))
    for a, b in zip(x, y):  # each image, mirrored or not, keeps its pixels' order up to an increasing intensity map
        flat = a.flatten()
        same = torch.corrcoef(torch.stack([flat, b.flatten()]))[0, 1]
        mirrored = torch.corrcoef(torch.stack([a.flip(-1).flatten(), b.flatten()]))[0, 1]
        assert max(same, mirrored) > 0.95
    assert data.augmentation("none")(x) is x
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        data.augmentation("rotate")
