"""The data layer on small trees built here: image modes, tasks, cache, datasets, degenerate data.
(Indexing a tree, the validation carve and resolving a run's source: tests/test_sources.py.)"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from utils import config, data
from utils.config import BODY_PARTS
from utils.data import sources

from .conftest import make_mura_tree

# --------------------------------------------------------------------------- image modes


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "I;16"])
def test_read_image_converts_every_mode_to_8bit_gray(tmp_path, mode):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    p = tmp_path / "x.png"
    if mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(p)
    elif mode == "P":
        Image.fromarray(gray).convert("P").save(p)
    else:
        Image.fromarray(gray).convert(mode).save(p)
    out = data.read_image(p)
    assert out.dtype == np.uint8 and out.shape == (20, 30)
    tol = 0 if mode in ("L", "LA", "I;16") else 1  # RGB -> L rounds; a gray palette is exact
    assert np.abs(out.astype(int) - gray).max() <= tol


def test_read_image_rgb_uses_luminance(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200  # pure green
    Image.fromarray(rgb).save(tmp_path / "g.png")
    assert data.read_image(tmp_path / "g.png")[0, 0] == round(200 * 587 / 1000)


def test_truncated_and_garbage_files_raise_with_a_reason(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    for p in (trunc, junk):
        with pytest.raises(data.ImageReadError):
            data.read_image(p)


def test_letterbox_keeps_aspect_and_centres():
    img = np.full((40, 100), 200, np.uint8)
    out = data.letterbox(img, 50)
    assert out.shape == (50, 50)
    rows = np.flatnonzero(out[:, 25] > 0)
    assert (rows.min(), rows.max()) == (15, 34)  # 20 rows of content, centred
    assert (out[:, 0] > 0).sum() == 20 and out[0].max() == 0


# --------------------------------------------------------------------------- tasks


def test_tasks_targets_and_part_restriction(mura_tree):
    idx = sources.load_index(mura_tree)
    bp, classes = data.task_targets(idx, "bodypart")
    assert classes == list(BODY_PARTS)  # all seven, also where the tree lacks some (FOREARM, HUMERUS here)
    assert (np.array(classes)[bp.target] == bp.body_part).all()
    ab, classes = data.task_targets(idx, "abnormality", parts=["xr_hand", "ELBOW"])
    assert classes == ["normal", "abnormal"]
    assert set(ab.body_part) == {"HAND", "ELBOW"}
    assert (ab.target == ab.study.str.endswith("_positive")).all()
    with pytest.raises(ValueError, match="unknown body part.*KNEE"):
        data.task_targets(idx, "bodypart", parts=["KNEE"])
    with pytest.raises(ValueError, match="unknown task"):
        data.task_targets(idx, "fracture")


# --------------------------------------------------------------------------- cache


def _cache(idx, tmp_path, size=32):
    return data.build_cache(sources.carve_validation(idx, 0.3), size, tmp_path / "cache", workers=1, progress=False)


def test_cache_holds_the_letterboxed_images(mura_tree, tmp_path):
    idx = sources.load_index(mura_tree)
    c = _cache(idx, tmp_path)
    imgs = c.images
    assert isinstance(imgs, np.memmap) and imgs.shape == (len(idx), 32, 32)
    for _, r in c.index.sample(4, random_state=0).iterrows():
        np.testing.assert_array_equal(imgs[r.row], data.letterbox(data.read_image(r.path), 32))
    assert {"height", "width", "mean"} <= set(c.index.columns)


def test_cache_is_reused_and_rebuilt_on_change(mura_tree, tmp_path):
    idx = sources.load_index(mura_tree)
    c1 = _cache(idx, tmp_path)
    stamp = os.stat(c1.array_path).st_mtime_ns
    c2 = _cache(idx, tmp_path)
    assert c2.key == c1.key and os.stat(c2.array_path).st_mtime_ns == stamp  # reused, not rewritten
    assert _cache(idx, tmp_path, size=24).key != c1.key  # preprocessing settings are in the key
    # an image rewritten in place changes size/mtime -> new key, and the new pixels are cached
    target = idx.path.iloc[0]
    Image.fromarray(np.full((50, 50), 99, np.uint8)).save(target)
    os.utime(target, ns=(stamp + 10**9, stamp + 10**9))
    c3 = _cache(idx, tmp_path)
    assert c3.key != c1.key
    assert c3.images[0].max() == 99
    assert _cache(idx.iloc[1:], tmp_path).key != c3.key  # a different index


def test_unreadable_images_are_listed_excluded_and_warned(mura_tree, tmp_path):
    idx = sources.load_index(mura_tree)
    bad = idx.path.iloc[3]
    with open(bad, "r+b") as f:
        f.truncate(50)
    with pytest.warns(UserWarning, match=r"1 of \d+ image\(s\) could not be read.*unreadable.csv"):
        c = _cache(idx, tmp_path)
    assert bad not in set(c.index.path) and len(c.index) == len(idx) - 1
    assert c.unreadable.path.tolist() == [bad] and c.unreadable.reason.iloc[0]
    listed = pd.read_csv(tmp_path / "cache" / f"{c.key}_unreadable.csv")
    assert listed.path.tolist() == [bad]


def test_cache_built_in_parallel_equals_serial(small_phantom, tmp_path):
    idx = sources.carve_validation(sources.load_index(small_phantom), 0.3)
    serial = data.build_cache(idx, 24, tmp_path / "a", workers=1, progress=False)
    para = data.build_cache(idx, 24, tmp_path / "b", workers=2, progress=False)
    np.testing.assert_array_equal(serial.images, para.images)


# --------------------------------------------------------------------------- datasets


def test_dataset_reads_standardised_tensors_batched_and_single_alike(small_phantom, tmp_path):
    idx = sources.carve_validation(sources.load_index(small_phantom), 0.3)
    c = data.build_cache(idx, 24, tmp_path / "c", workers=1, progress=False)
    ds = data.CachedImages(c, "train")
    x, y = ds[3]
    assert x.shape == (1, 24, 24) and x.dtype == torch.float32
    expect = (torch.from_numpy(np.array(c.images[ds.rows[3]])).float() / 255 - data.PIXEL_MEAN) / data.PIXEL_STD
    torch.testing.assert_close(x[0], expect)
    assert y == ds.targets[3]
    batch = ds.__getitems__([5, 0, 3])
    for (xb, yb), i in zip(batch, [5, 0, 3]):
        torch.testing.assert_close(xb, ds[i][0])
        assert yb == ds[i][1]
    assert isinstance(ds.images, np.memmap)  # never a copy of the whole array
    xs, ys = next(iter(data.make_loader(ds, batch_size=4)))
    assert xs.shape == (4, 1, 24, 24) and ys.tolist() == ds.targets[:4].tolist()


def test_png_dataset_matches_cached_dataset(small_phantom, tmp_path):
    idx = sources.carve_validation(sources.load_index(small_phantom), 0.3)
    c = data.build_cache(idx, 24, tmp_path / "c", workers=1, progress=False)
    a, b = data.CachedImages(c, "test"), data.PngImages(c, "test")
    for i in range(0, len(a), 5):
        torch.testing.assert_close(a[i][0], b[i][0])


def test_shuffled_loader_and_augmentation_are_deterministic_under_a_seed(small_phantom, tmp_path):
    idx = sources.carve_validation(sources.load_index(small_phantom), 0.3)
    c = data.build_cache(idx, 24, tmp_path / "c", workers=1, progress=False)
    ds = data.CachedImages(c, "train")
    aug = data.BatchAugment()

    def first_batch():
        x, y = next(iter(data.make_loader(ds, 8, shuffle=True, seed=5)))
        return aug(x, torch.Generator().manual_seed(1)), y

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    torch.testing.assert_close(x1, x2)
    assert y1.tolist() == y2.tolist()
    x3 = aug(next(iter(data.make_loader(ds, 8, shuffle=True, seed=5)))[0], torch.Generator().manual_seed(2))
    assert not torch.allclose(x1, x3)


def test_batch_augment_without_randomness_is_the_identity_or_a_flip():
    x = data.standardize(torch.rand(6, 1, 20, 28))
    out = data.BatchAugment(degrees=0, translate=0, scale=(1, 1), jitter=0, flip=False)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    out = data.BatchAugment(degrees=0, translate=0, scale=(1, 1), jitter=0, flip=True)(
        x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)]
    kept = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_batch_augment_rotates_by_the_drawn_angle():
    """Draws pinned to +1 with degrees=90: a bright top row becomes an edge column, nothing else changes."""
    x = torch.zeros(1, 1, 16, 16)
    x[..., 0, :] = 1.0
    aug = data.BatchAugment(degrees=90, translate=0, scale=(1, 1), jitter=0, flip=False)
    out = aug(data.standardize(x), u=torch.ones(1, 7)) * data.PIXEL_STD + data.PIXEL_MEAN
    torch.testing.assert_close(out[0, 0], torch.rot90(x[0, 0], 1), atol=1e-5, rtol=0)  # counter-clockwise


def test_dataset_without_subset_column_says_what_to_do(mura_tree, tmp_path):
    idx = sources.load_index(mura_tree)
    c = data.build_cache(idx, 16, tmp_path / "c", workers=1, progress=False)
    with pytest.raises(ValueError, match="carve_validation"):
        data.CachedImages(c, "train")


# --------------------------------------------------------------------------- degenerate data


def _spec(train: dict, valid: dict | None = None, views: int = 3, studies: int = 1, abnormal=(0, 1)):
    """A SPEC for make_mura_tree: {part: patients} per split, `views` images per study, labels alternating
    over `abnormal`; patient numbers are unique across the tree."""
    spec, pid = [], 0
    for split, parts in (("train", train), ("valid", valid or {})):
        for part, n in parts.items():
            for _ in range(n):
                pid += 1
                for st in range(1, studies + 1):
                    spec.append((split, part, pid, st, abnormal[(pid + st) % len(abnormal)], views))
    return spec


def _carved(tmp_path, train, valid=None, **kw):
    return sources.carve_validation(sources.load_index(make_mura_tree(tmp_path, _spec(train, valid, **kw))), 0.15, 0)


def test_min_train_images_is_ten():
    assert data.MIN_TRAIN_IMAGES == 10 and issubclass(data.DegenerateData, data.DataError)
    assert issubclass(data.DegenerateData, ValueError)


def test_a_tree_of_one_body_part_is_refused_on_the_body_part_task(tmp_path):
    idx = _carved(tmp_path, {"HAND": 14}, {"HAND": 3})
    msg = (r"body-part task needs two or more body parts, but the data hold one body part only: HAND "
           r"\(\d+ train, \d+ val, \d+ cal, 9 test images\).*What to do: run the abnormality task \(`make report "
           r"TASK=abnormality`, or task=\"abnormality\" in the profile.*or add studies of other body parts")
    with pytest.raises(data.DegenerateData, match=msg):
        data.check_task_data(idx, "bodypart")
    counts = data.check_task_data(idx, "abnormality")  # the same tree is fine for normal/abnormal
    assert list(counts.index) == ["normal", "abnormal"] and list(counts.columns) == ["train", "val", "cal", "test"]
    assert counts.values.sum() == len(idx) and (counts.train >= data.MIN_TRAIN_IMAGES).all()


def test_restricting_the_body_part_task_to_one_part_is_refused(tmp_path):
    idx = _carved(tmp_path, {"HAND": 8, "WRIST": 8}, {"HAND": 2, "WRIST": 2})
    with pytest.raises(data.DegenerateData, match=r"parts=\['WRIST'\] leaves one class: WRIST.*What to do: name two or "
                                                  r"more parts, or run the abnormality task.* on WRIST$"):
        data.check_task_data(idx, "bodypart", parts=["xr_wrist"])
    data.check_task_data(idx, "bodypart", parts=["HAND", "WRIST"])  # two parts with enough images


def test_a_class_with_too_few_training_images_is_refused_with_the_counts(tmp_path):
    # two training images of WRIST (the report once ran to 8 % test accuracy on such a tree)
    spec = _spec({"HAND": 8, "ELBOW": 8}, {"HAND": 2, "ELBOW": 2, "WRIST": 1}) + [("train", "WRIST", 99, 1, 0, 2)]
    idx = sources.carve_validation(sources.load_index(make_mura_tree(tmp_path, spec)), 0.15, 0)
    with pytest.raises(data.DegenerateData) as e:
        data.check_task_data(idx, "bodypart", parts=["HAND", "ELBOW", "WRIST"])
    msg = str(e.value)
    assert msg.startswith("too few training images for the body-part task on parts ['ELBOW', 'HAND', 'WRIST']: "
                          "WRIST 2 (each class needs at least 10")
    counts = data.class_counts(idx, "bodypart", ["HAND", "ELBOW", "WRIST"])
    assert "images per class, train/val/cal/test: " + "; ".join(
        f"{c} {r.train}/{r.val}/{r.cal}/{r.test}" for c, r in counts.iterrows()) in msg
    assert "WRIST 2/0/0/3" in msg and "add studies of WRIST to the train split, or leave them out (parts=" in msg
    # all seven classes (the default): the five parts the tree lacks are listed with their zero counts
    with pytest.raises(data.DegenerateData, match=r"body-part task: FINGER 0, FOREARM 0, HUMERUS 0, SHOULDER 0, "
                                                  r"WRIST 2 .*ELBOW \d+/\d+/\d+/6; FINGER 0/0/0/0"):
        data.check_task_data(idx, "bodypart")


def test_a_task_class_with_too_few_training_images_is_refused_on_the_abnormality_task(tmp_path):
    idx = _carved(tmp_path, {"HAND": 8, "ELBOW": 8}, {"HAND": 2, "ELBOW": 2}, abnormal=(0,))
    with pytest.raises(data.DegenerateData, match=r"too few training images for the abnormality task: abnormal 0 "
                                                  r"\(.*normal \d+/\d+/\d+/12; abnormal 0/0/0/0\. What to do: add "
                                                  r"abnormal studies"):
        data.check_task_data(idx, "abnormality")
    idx = _carved(tmp_path / "b", {"HAND": 12, "ELBOW": 1}, {"HAND": 2, "ELBOW": 1})
    data.check_task_data(idx, "abnormality")
    with pytest.raises(data.DegenerateData, match=r"abnormality task on parts \['ELBOW'\]: .*widen the parts"):
        data.check_task_data(idx, "abnormality", parts=["ELBOW"])


def test_a_split_left_empty_is_refused_with_the_counts(tmp_path):
    # one training patient: the carve by patient cannot leave patients in both train and val
    one = sources.load_index(make_mura_tree(tmp_path / "a", _spec({"HAND": 1}, {"HAND": 1}, studies=4)))
    with pytest.raises(data.DegenerateData, match=r"carved from MURA's train split by patient \(15% of the "
                                                  r"patients, 50% of those for calibration\), but train holds 12 "
                                                  r"image\(s\) of 1 patient\(s\)"):
        sources.carve_validation(one, 0.15, 0)
    # no MURA valid split: no test set
    tree = make_mura_tree(tmp_path / "b", _spec({"HAND": 8, "WRIST": 8}), csv=False)  # no valid/ folder
    idx = sources.carve_validation(sources.load_index(tree), 0.15, 0)
    with pytest.raises(data.DegenerateData, match=r"the test split is empty for the body-part task: images "
                                                  r"\(patients\) per split: train \d+ \(\d+\), val \d+ \(\d+\), "
                                                  r"cal \d+ \(\d+\), test 0 \(0\); images per class, "
                                                  r"train/val/cal/test: ELBOW 0/0/0/0; FINGER 0/0/0/0; FOREARM "
                                                  r"0/0/0/0; HAND 18/\d+/\d+/0; .*What to do: the test "
                                                  r"set is MURA's valid split: add it"):
        data.check_task_data(idx, "bodypart")
    # a part whose patients all went to train: its val split is empty
    idx = _carved(tmp_path / "c", {"HAND": 12, "WRIST": 12, "ELBOW": 2}, {"ELBOW": 2}, studies=3)
    assert (~idx[idx.body_part == "ELBOW"].subset.isin(["val", "cal"])).all()
    with pytest.raises(data.DegenerateData, match=r"the val and cal splits are empty for the abnormality task on "
                                                  r"parts \['ELBOW'\]: .*val 0 \(0\), cal 0 \(0\).*calibration "
                                                  r"splits are carved by patient from train: add patients to the "
                                                  r"train split; or widen"):
        data.check_task_data(idx, "abnormality", parts=["ELBOW"])


def test_prepare_refuses_degenerate_data_before_building_the_cache(tmp_path):
    from utils.config import get_paths, get_profile

    root = make_mura_tree(tmp_path / "dl", _spec({"SHOULDER": 14}, {"SHOULDER": 3}))
    paths = get_paths(tmp_path / "out")
    with pytest.raises(data.DegenerateData, match="one body part only: SHOULDER"):
        data.prepare(config.get_profile("smoke"), str(root), paths, progress=False)
    assert not list(paths.cache.glob("*.npy"))  # nothing cached
    _, index, cache = data.prepare(get_profile("smoke", task="abnormality"), str(root), paths, progress=False)
    assert len(cache.index) == len(index)  # the abnormality task runs on the same tree
    with pytest.raises(data.DegenerateData, match=r"no images for the abnormality task on parts \['ELBOW'\]: "
                                                  r"the data hold SHOULDER 51 image\(s\)"):
        data.prepare(get_profile("smoke", task="abnormality"), str(root), paths, progress=False, parts=["ELBOW"])


def test_the_profiles_phantoms_pass_the_checks():
    """The smoke and cpu phantoms, planned (not rendered) and carved as their profiles do, hold at least
    MIN_TRAIN_IMAGES training images of every body part and of normal and abnormal."""
    from utils.config import get_profile
    from utils.data import phantom

    for name in ("smoke", "cpu"):
        p = get_profile(name)
        ph = p.phantom
        rows = [dict(split=st.split, body_part=st.part, patient=f"patient{st.patient:05d}", label=st.label)
                for st in phantom.plan_studies(ph.train_patients, ph.valid_patients, ph.seed)
                for _ in range(st.n_views)]
        idx = sources.carve_validation(pd.DataFrame(rows), p.val_fraction, p.seed, p.cal_fraction)
        for task in data.TASKS:
            counts = data.check_task_data(idx, task)
            assert (counts.train >= data.MIN_TRAIN_IMAGES).all() and (counts.test > 0).all(), (name, task)
            # every class in val and cal too, except the smoke profile's body parts (its 10 held-out patients
            # cannot cover seven parts twice); its abnormality task has both labels in every split
            if name == "cpu" or task == "abnormality":
                assert (counts > 0).all().all(), (name, task)
            assert (counts.sum() > 0).all(), (name, task)
