"""MAP training: determinism, resume, checkpoint checks, reuse of trained members."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from utils import config, data
from utils.data import sources
from utils.models import train
from utils.posteriors import store


@pytest.fixture(scope="module")
def cache(smoke_tree, tmp_path_factory):
    """A phantom cache every class of which has at least data.MIN_TRAIN_IMAGES training images: conftest's
    `smoke_tree` carved as the smoke profile does, cached at 32 px. (conftest's `small_cache`, 12 patients,
    lacks ELBOW and HUMERUS in train: training on it is refused.)"""
    p = config.get_profile("smoke")
    idx = sources.carve_validation(sources.load_index(smoke_tree), p.val_fraction, p.seed)
    return data.build_cache(idx, 32, tmp_path_factory.mktemp("cache"), workers=1, progress=False)


def _profile(**kw):
    return config.get_profile("smoke", **(dict(image_size=32, batch_size=16, epochs=3, members=2) | kw))


def _state(paths, profile, member=0):
    return torch.load(train.member_dir(paths, profile, member) / "best.pt", weights_only=True)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(cache, tmp_path):
    p = _profile()
    pa, pb = config.get_paths(tmp_path / "a"), config.get_paths(tmp_path / "b")
    train.train_member(p, 0, cache, pa, torch.device("cpu"), progress=False)
    train.train_member(p, 0, cache, pb, torch.device("cpu"), progress=False)
    assert _same(_state(pa, p), _state(pb, p))
    train.train_member(p, 1, cache, pa, torch.device("cpu"), progress=False)
    assert not _same(_state(pa, p, 0), _state(pa, p, 1))  # members differ by their seed


def test_resume_after_interruption_gives_the_same_weights(cache, tmp_path):
    p = _profile()
    whole = config.get_paths(tmp_path / "whole")
    train.train_member(p, 0, cache, whole, torch.device("cpu"), progress=False)

    cut = config.get_paths(tmp_path / "cut")

    def stop_after_first(epoch, history):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_member(p, 0, cache, cut, torch.device("cpu"), progress=False,
                           on_epoch_end=stop_after_first)
    d = train.member_dir(cut, p, 0)
    assert (d / "last.pt").is_file() and not (d / "best.pt").exists()
    epochs_seen = []
    meta = train.train_member(p, 0, cache, cut, torch.device("cpu"), progress=False,
                              on_epoch_end=lambda e, h: epochs_seen.append(e))
    assert epochs_seen == [2, 3] and meta["epochs_run"] == 3  # resumed, not restarted
    assert _same(_state(whole, p), _state(cut, p))
    assert not (d / "last.pt").exists()


def test_trained_members_are_reused_not_retrained(cache, tmp_path, monkeypatch):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    first = train.train_member(p, 0, cache, paths, torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a trained member was retrained"))
    again = train.train_member(p, 0, cache, paths, torch.device("cpu"), progress=False)
    assert again == first


def test_a_mismatched_checkpoint_is_refused_with_its_message(cache, tmp_path):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    train.train_member(p, 0, cache, paths, torch.device("cpu"), progress=False)
    best = train.member_dir(paths, p, 0) / "best.pt"
    model, meta = train.load_member(p, 0, cache, paths)
    assert meta["arch"] == "small" and meta["prior_precision"] == pytest.approx(meta["n_train"] * p.weight_decay)
    with pytest.raises(train.CheckpointMismatch, match=r"does not match this run \(.*epochs: checkpoint 1, now 5"):
        train.train_member(p.replace(epochs=5), 0, cache, paths, progress=False)
    # other data: same profile, but the training rows change (a different validation carve)
    moved = cache.index.patient == cache.index.patient[cache.index.subset == "val"].iloc[0]
    other = cache.index.assign(subset=cache.index.subset.mask(moved, "train"))
    cache2 = type(cache)(cache.key, cache.size, cache.array_path, other, cache.unreadable)
    with pytest.raises(train.CheckpointMismatch, match="data_fingerprint"):
        train.load_checkpoint(best, train.expected_meta(p, 0, *train.datasets(p, cache2)[:2]))


def test_checkpoints_open_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"meta": Payload(), "state_dict": {}}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        train.load_checkpoint(path)


def test_member_logits_are_cached_and_match_the_model(cache, tmp_path):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    train.train_member(p, 0, cache, paths, torch.device("cpu"), progress=False)
    a = train.member_logits(p, 0, cache, "test", paths, torch.device("cpu"))
    assert (train.member_dir(paths, p, 0) / "logits_test.npy").is_file()
    model, _ = train.load_member(p, 0, cache, paths)
    te = train.datasets(p, cache).test
    x = torch.stack([te[i][0] for i in range(len(te))])
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(a), model(x), atol=1e-4, rtol=1e-4)


def test_member_features_are_recomputed_when_the_checkpoint_is_replaced(cache, tmp_path, monkeypatch):
    """store.member_features tells its cached features are stale from best.pt itself (train.fit leaves them
    alone): a replaced checkpoint gives the new model's features, an unchanged one reuses the files."""

    p = _profile(epochs=1)
    paths, cpu = config.get_paths(tmp_path), torch.device("cpu")
    train.train_member(p, 0, cache, paths, cpu, progress=False)
    d = train.member_dir(paths, p, 0)
    te = train.datasets(p, cache).test
    first = store.member_features(p, 0, cache, paths, cpu)
    model, _ = train.load_member(p, 0, cache, paths)
    np.testing.assert_array_equal(np.load(d / "features_test.npy"), store.embed(model, te, cpu))  # bitwise
    np.testing.assert_array_equal(first["test"][0], store.embed(model, te, cpu))

    loads = []
    real_load = store.load_member
    monkeypatch.setattr(store, "load_member", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    again = store.member_features(p, 0, cache, paths, cpu)
    assert not loads  # same checkpoint: the cached files, not a recomputation
    assert all(np.array_equal(again[s][0], first[s][0]) for s in first)

    ck = torch.load(d / "best.pt", weights_only=True)  # another checkpoint, same metadata: different weights
    ck["state_dict"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    train.save_atomic(ck, d / "best.pt")
    replaced = store.member_features(p, 0, cache, paths, cpu)
    assert len(loads) == 1
    model, _ = train.load_member(p, 0, cache, paths)
    for s, ds in train.datasets(p, cache)._asdict().items():
        np.testing.assert_array_equal(replaced[s][0], store.embed(model, ds, cpu))
        assert not np.array_equal(replaced[s][0], first[s][0])

    train.train_member(p, 0, cache, paths, cpu, force=True, progress=False)  # retrained in place
    assert (d / "features_test.npy").is_file()  # training leaves the feature cache alone ...
    retrained = store.member_features(p, 0, cache, paths, cpu)
    assert len(loads) == 2  # ... and member_features notices the new checkpoint
    model, _ = train.load_member(p, 0, cache, paths)
    np.testing.assert_array_equal(retrained["test"][0], store.embed(model, te, cpu))


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [train.lr_at(s, 100, 10, 1.0) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0.0)


# --------------------------------------------------------------------------- degenerate data


def test_training_on_too_few_images_is_refused_before_any_training(small_cache, tmp_path, monkeypatch):
    """conftest's 12-patient phantom: several body parts and the abnormal class have too few training images."""
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained on degenerate data"))
    paths = config.get_paths(tmp_path)
    counts = data.class_counts(small_cache.index, "bodypart").train
    few = ", ".join(f"{c} {n}" for c, n in counts.items() if n < data.MIN_TRAIN_IMAGES)
    assert few  # the fixture is degenerate by construction
    with pytest.raises(data.DegenerateData, match=rf"too few training images for the body-part task: {few} "):
        train.train_member(_profile(), 0, small_cache, paths, torch.device("cpu"), progress=False)
    ab = data.class_counts(small_cache.index, "abnormality")
    assert ab.train.min() < data.MIN_TRAIN_IMAGES
    with pytest.raises(data.DegenerateData, match=r"too few training images for the abnormality task"):
        train.train_member(_profile(task="abnormality"), 0, small_cache, paths, torch.device("cpu"),
                           progress=False)
    assert not (tmp_path / "artifacts" / "models").exists()


def test_the_abnormality_task_on_too_small_parts_is_refused(cache):
    """notebook 06 trains the abnormality task on chosen parts: HUMERUS alone is too small in this phantom."""
    pa = _profile(task="abnormality")
    tr = train.datasets(pa, cache).train  # all seven parts: fine
    assert min(np.bincount(tr.targets)) >= data.MIN_TRAIN_IMAGES
    with pytest.raises(data.DegenerateData, match=r"(too few training images|the val split is empty) for the "
                                                  r"abnormality task on parts \['HUMERUS'\]: .*widen the parts"):
        train.datasets(pa, cache, parts=["HUMERUS"])
    with pytest.raises(data.DegenerateData, match=r"parts=\['HAND'\] leaves one class"):
        train.datasets(_profile(), cache, parts=["HAND"])


def test_the_command_line_refuses_a_one_part_tree_before_caching(tmp_path):
    from .conftest import make_mura_tree

    spec = [("train", "HAND", p, 1, p % 2, 3) for p in range(1, 15)] + [("valid", "HAND", 20, 1, 1, 2)]
    root = make_mura_tree(tmp_path / "dl", spec)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        train.main(["--profile", "smoke", "--member", "0", "--data", str(root), "--out-root", str(out)])
    assert str(e.value.code).startswith("error: the body-part task needs two or more body parts, but the data "
                                        "hold one body part only: HAND")
    assert 'task="abnormality"' in str(e.value.code)
    assert not list((out / "artifacts").rglob("*.npy"))  # nothing cached, nothing trained


def test_the_command_line_refuses_cuda_where_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(data, "prepare", lambda *a, **k: pytest.fail("prepared data before checking the device"))
    with pytest.raises(SystemExit) as e:
        train.main(["--profile", "smoke", "--member", "0", "--device", "cuda", "--out-root", str(tmp_path)])
    assert "error: device 'cuda' was asked for but CUDA is not available" in str(e.value.code)


def test_a_regenerated_tree_at_the_same_paths_is_new_data():
    """The fingerprint holds the cache's key (each file's size and mtime): a phantom regenerated by a new generator
    version under the same paths must not pass a checkpoint trained on the old images."""
    from types import SimpleNamespace

    import pandas as pd

    idx = pd.DataFrame(dict(rel_path=["a.png", "b.png"], subset=["train", "val"]))
    old = SimpleNamespace(size=64, classes=["n", "a"], index=idx, targets=[0, 1], array_path="cache/0123abcd.npy")
    new = SimpleNamespace(**{**vars(old), "array_path": "cache/4567ef01.npy"})
    assert train.data_fingerprint(old) == train.data_fingerprint(SimpleNamespace(**vars(old)))
    assert train.data_fingerprint(old) != train.data_fingerprint(new)


def test_a_member_below_the_fit_target_is_called_a_defect_of_the_run():
    h = [dict(epoch=e, train_eval_acc=a, train_eval_nll=1 - a, val_acc=a - 0.05) for e, a in
         enumerate((0.5, 0.62, 0.61), 1)]
    fit = train.fit_summary(h, best_epoch=2)
    assert (fit["train_acc"], fit["train_acc_last"], fit["epochs"], fit["fits"]) == (0.62, 0.61, 3, False)
    assert "62.0%" in train.fit_sentence(fit) and "defect of this run" in train.fit_sentence(fit)
    h[1]["train_eval_acc"] = train.FIT_TARGET
    assert train.fit_summary(h, 2)["fits"] and "defect" not in train.fit_sentence(train.fit_summary(h, 2))
