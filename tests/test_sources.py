"""Where images come from (utils.sources), on small trees built here: indexing a MURA-v1.1 tree and its
errors, the patient-level validation carve, and resolving a run's source."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from utils import data
from utils.config import get_profile
from utils.data import sources

from .conftest import SPEC, make_mura_tree

# --------------------------------------------------------------------------- index


def test_index_from_csv_has_one_row_per_image_with_parsed_fields(mura_tree):
    idx = sources.load_index(mura_tree)
    assert len(idx) == sum(s[-1] for s in SPEC)
    assert list(idx.columns) == list(sources.INDEX_COLUMNS)
    row = idx[(idx.patient == "patient00003") & (idx.study == "study2_positive")].iloc[0]
    assert (row.split, row.body_part, row.label, row.image) == ("train", "HAND", 1, 1)
    assert row.study_id == "train/HAND/patient00003/study2_positive"
    assert os.path.isfile(row.path) and os.path.isabs(row.path)
    assert set(idx.split) == {"train", "valid"}


def test_csv_and_folder_walk_agree(tmp_path):
    with_csv = sources.load_index(make_mura_tree(tmp_path / "a", csv=True))
    walked = sources.load_index(make_mura_tree(tmp_path / "b", csv=False))
    cols = ["rel_path", "split", "body_part", "patient", "study", "study_id", "label", "image"]
    pd.testing.assert_frame_equal(with_csv[cols], walked[cols])


def test_root_may_be_the_mura_folder_or_its_parent(mura_tree):
    a = sources.load_index(mura_tree)
    b = sources.load_index(mura_tree.parent)
    assert a.path.tolist() == b.path.tolist()


def test_missing_root_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(data.DataError, match=r"does-not-exist.*does not exist.*phantom"):
        sources.load_index(tmp_path / "does-not-exist")


def test_folder_without_mura_tree_is_refused(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(data.DataError, match="no MURA-v1.1 tree"):
        sources.load_index(tmp_path)


def test_tree_without_images_is_refused(tmp_path):
    (tmp_path / "MURA-v1.1" / "train" / "XR_HAND").mkdir(parents=True)
    with pytest.raises(data.DataError, match="no images found"):
        sources.load_index(tmp_path)


def test_csv_rows_pointing_at_missing_files_are_refused(mura_tree):
    victim = next((mura_tree / "train" / "XR_WRIST").rglob("image2.png"))
    victim.unlink()
    with pytest.raises(data.DataError, match=r"1 of \d+ image\(s\) listed in .*train_image_paths.csv are missing"):
        sources.load_index(mura_tree)


def test_study_label_disagreement_is_refused(mura_tree):
    csv = mura_tree / "train_labeled_studies.csv"
    lines = csv.read_text().splitlines()
    lines[0] = lines[0].rsplit(",", 1)[0] + ",0"  # study1_positive labelled normal
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match="disagrees with the study folder names"):
        sources.load_index(mura_tree)


def test_study_missing_from_labeled_studies_is_refused(mura_tree):
    csv = mura_tree / "valid_labeled_studies.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    with pytest.raises(data.DataError, match="not in .*valid_labeled_studies.csv"):
        sources.load_index(mura_tree)


def test_path_outside_mura_layout_is_refused(mura_tree):
    csv = mura_tree / "train_image_paths.csv"
    csv.write_text(csv.read_text() + "MURA-v1.1/train/elbow/img.png\n")
    with pytest.raises(data.DataError, match="do not follow MURA's layout"):
        sources.load_index(mura_tree)


def test_walk_reports_files_it_does_not_index(tmp_path):
    root = make_mura_tree(tmp_path, csv=False)
    (root / "train" / "XR_ELBOW" / "notes.txt").write_text("x")
    with pytest.warns(UserWarning, match="not PNG images"):
        sources.load_index(root)


# --------------------------------------------------------------------------- validation split


def test_validation_split_is_by_patient_and_deterministic(small_phantom):
    idx = sources.load_index(small_phantom)
    a = sources.carve_validation(idx, 0.3, seed=1)
    b = sources.carve_validation(idx, 0.3, seed=1)
    c = sources.carve_validation(idx, 0.3, seed=2)
    assert a.subset.tolist() == b.subset.tolist()
    assert a.subset.tolist() != c.subset.tolist()
    per_patient = a.groupby("patient").subset.nunique()
    assert per_patient.max() == 1
    assert set(a.subset[a.split == "valid"]) == {"test"}
    assert set(a.subset[a.split == "train"]) == {"train", "val", "cal"}
    # the held-out patients do not depend on how many of them calibrate; cal takes about cal_fraction of them
    for f in (0.3, 0.7):
        d = sources.carve_validation(idx, 0.3, seed=1, cal_fraction=f)
        assert d.subset.isin(["val", "cal"]).tolist() == a.subset.isin(["val", "cal"]).tolist()
        held = d[d.subset.isin(["val", "cal"])].groupby("patient").subset.first()
        assert abs((held == "cal").mean() - f) <= 1 / len(held) + 1e-9
    with pytest.raises(ValueError, match="cal_fraction"):
        sources.carve_validation(idx, 0.3, seed=1, cal_fraction=1.0)


# --------------------------------------------------------------------------- resolve


def test_resolve_data_prefers_the_users_mura_tree(mura_tree, tmp_path):
    from utils.config import get_paths

    src = sources.resolve_data(get_profile("smoke"), str(mura_tree.parent), get_paths(tmp_path))
    assert src == dict(source="mura", root=mura_tree.resolve())
    assert not (tmp_path / "data").exists()  # no phantom generated
