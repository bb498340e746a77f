"""MAP training: determinism, resume, checkpoint checks, reuse of trained members."""
from __future__ import annotations

import pickle

import pytest
import torch

from utils import config, train


def _profile(**kw):
    return config.get_profile("smoke", **(dict(image_size=32, batch_size=16, epochs=3, members=2) | kw))


def _state(paths, profile, member=0):
    return torch.load(train.member_dir(paths, profile, member) / "best.pt", weights_only=True)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(small_cache, tmp_path):
    p = _profile()
    pa, pb = config.get_paths(tmp_path / "a"), config.get_paths(tmp_path / "b")
    train.train_member(p, 0, small_cache, pa, torch.device("cpu"), progress=False)
    train.train_member(p, 0, small_cache, pb, torch.device("cpu"), progress=False)
    assert _same(_state(pa, p), _state(pb, p))
    train.train_member(p, 1, small_cache, pa, torch.device("cpu"), progress=False)
    assert not _same(_state(pa, p, 0), _state(pa, p, 1))  # members differ by their seed


def test_resume_after_interruption_gives_the_same_weights(small_cache, tmp_path):
    p = _profile()
    whole = config.get_paths(tmp_path / "whole")
    train.train_member(p, 0, small_cache, whole, torch.device("cpu"), progress=False)

    cut = config.get_paths(tmp_path / "cut")

    def stop_after_first(epoch, history):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_member(p, 0, small_cache, cut, torch.device("cpu"), progress=False,
                           on_epoch_end=stop_after_first)
    d = train.member_dir(cut, p, 0)
    assert (d / "last.pt").is_file() and not (d / "best.pt").exists()
    epochs_seen = []
    meta = train.train_member(p, 0, small_cache, cut, torch.device("cpu"), progress=False,
                              on_epoch_end=lambda e, h: epochs_seen.append(e))
    assert epochs_seen == [2, 3] and meta["epochs_run"] == 3  # resumed, not restarted
    assert _same(_state(whole, p), _state(cut, p))
    assert not (d / "last.pt").exists()


def test_trained_members_are_reused_not_retrained(small_cache, tmp_path, monkeypatch):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    first = train.train_member(p, 0, small_cache, paths, torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a trained member was retrained"))
    again = train.train_member(p, 0, small_cache, paths, torch.device("cpu"), progress=False)
    assert again == first


def test_a_mismatched_checkpoint_is_refused_with_its_message(small_cache, tmp_path):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    train.train_member(p, 0, small_cache, paths, torch.device("cpu"), progress=False)
    best = train.member_dir(paths, p, 0) / "best.pt"
    model, meta = train.load_member(p, 0, small_cache, paths)
    assert meta["arch"] == "small" and meta["prior_precision"] == pytest.approx(meta["n_train"] * p.weight_decay)
    with pytest.raises(train.CheckpointMismatch, match=r"does not match this run \(.*epochs: checkpoint 1, now 5"):
        train.train_member(p.replace(epochs=5), 0, small_cache, paths, progress=False)
    # other data: same profile, but the training rows change (a different validation carve)
    other = small_cache.index.assign(subset=small_cache.index.subset.replace({"val": "train"}))
    cache2 = type(small_cache)(small_cache.key, small_cache.size, small_cache.array_path, other,
                               small_cache.unreadable)
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


def test_member_logits_are_cached_and_match_the_model(small_cache, tmp_path):
    p = _profile(epochs=1)
    paths = config.get_paths(tmp_path)
    train.train_member(p, 0, small_cache, paths, torch.device("cpu"), progress=False)
    a = train.member_logits(p, 0, small_cache, "test", paths, torch.device("cpu"))
    assert (train.member_dir(paths, p, 0) / "logits_test.npy").is_file()
    model, _ = train.load_member(p, 0, small_cache, paths)
    _, _, te = train.datasets(p, small_cache)
    x = torch.stack([te[i][0] for i in range(len(te))])
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(a), model(x), atol=1e-4, rtol=1e-4)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [train.lr_at(s, 100, 10, 1.0) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0.0)
