import numpy as np
import pytest

from utils.models import learnability


def test_plant_bars_plants_exactly_one_bar_of_the_asked_size_in_the_labelled_images():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 200, (300, 48, 48), dtype=np.uint8)  # nothing at 255 before planting
    out, planted = learnability.plant_bars(imgs, 2, 10, share=0.4, seed=3)
    assert out.shape == imgs.shape and out is not imgs and (imgs < 255).all()
    changed = (out != imgs).reshape(len(imgs), -1).any(1)
    assert np.array_equal(changed, planted.astype(bool))
    assert 0.3 < planted.mean() < 0.5
    for i in np.nonzero(planted)[0]:
        ys, xs = np.nonzero(out[i] == 255)
        assert len(ys) == 20  # 2 x 10
        h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert sorted((h, w)) == [2, 10]
        assert ys.min() >= 4 and xs.min() >= 4 and ys.max() <= 43 and xs.max() <= 43
    again, planted2 = learnability.plant_bars(imgs, 2, 10, share=0.4, seed=3)
    assert np.array_equal(again, out) and np.array_equal(planted2, planted)


def test_plant_bars_refuses_a_bar_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        learnability.plant_bars(np.zeros((2, 16, 16), np.uint8), 2, 10)


@pytest.fixture(scope="module")
def smoke_cache(smoke_tree, tmp_path_factory):
    from utils import config, data
    from utils.data import sources

    profile = config.get_profile("smoke", task="abnormality")
    idx = sources.carve_validation(sources.load_index(smoke_tree), profile.val_fraction, profile.seed,
                                   profile.cal_fraction)
    return profile, data.build_cache(idx, profile.image_size, tmp_path_factory.mktemp("cache"), workers=1,
                                     progress=False)


def test_the_rungs_run_end_to_end_on_the_smoke_data(smoke_cache):
    """A planted bar and the objects rung train, score and report consistent counts (2 epochs: not a skill test)."""
    profile, cache = smoke_cache
    normal_train = int((cache.index.query("subset == 'train'").label == 0).sum())
    r = learnability.run_rung(profile, "bar", dict(kind="planted", w=2, length=10), cache, device="cpu")
    assert r["train_images"] + r["held_out_images"] == normal_train
    assert 0 <= r["train_acc"] <= 1 and 0.5 <= r["majority"] <= 1
    o = learnability.run_rung(profile, "objects", learnability.RUNGS["objects, no augmentation"], cache,
                              device="cpu")
    assert o["augment"] == "none" and o["train_images"] < len(cache.index.query("subset == 'train'"))
    t = learnability.run_rung(profile, "task", learnability.RUNGS["the task"], cache, device="cpu")
    assert t["train_images"] == len(cache.index.query("subset == 'train'"))
    assert t["held_out_images"] == len(cache.index.query("subset == 'test'")) and 0 <= t["study_auroc"] <= 1
    assert -1 <= t["study_kappa"] <= 1 and t["study_kappa_ci"][0] <= t["study_kappa"] <= t["study_kappa_ci"][1]
    assert 0 <= t["study_called"] <= 1
    # the shortcut-free score (the phantom has lesion masks): the studies left by the report's selection
    from utils import data

    te = cache.index.query("subset == 'test'")
    keep = data.without_object_positives(te.label.to_numpy(), te.study_id.to_numpy(),
                                         data.masks_for(te.path.tolist(), cache.size)[1])
    assert t["free_studies"] == te.study_id[keep].nunique() <= t["held_out_studies"]
    assert t["free_abnormal"] == te[keep].groupby("study_id").label.first().sum()
    if t["free_study_auroc"] is not None:
        lo, hi = t["free_study_auroc_ci"]
        assert lo <= t["free_study_auroc"] <= hi
    n_ab = te.groupby("study_id").label.first().sum()
    assert t["objects_abnormal"] + t["free_abnormal"] == n_ab
    assert t["free_study_auroc"] is not None and t["objects_study_auroc"] is not None  # the smoke test split has both
    # an AUROC averages over (abnormal, normal) pairs: the two subsets' AUROCs against the same normal studies make up
    # the all-studies AUROC exactly, weighted by their abnormal studies (ties count a half in each)
    mix = (t["free_abnormal"] * t["free_study_auroc"] + t["objects_abnormal"] * t["objects_study_auroc"]) / n_ab
    assert t["study_auroc"] == pytest.approx(mix, abs=1e-9)
    # every AUROC carries its 95 % study-bootstrap interval around it
    for row, key in ((r, "held_out_auroc"), (o, "held_out_auroc"), (t, "held_out_auroc"), (t, "study_auroc")):
        lo, hi = row[f"{key}_ci"]
        assert lo <= row[key] <= hi and hi - lo > 0, (row["rung"], key)
    assert learnability.evidence.fmt_estimate(t["study_auroc"], t["study_auroc_ci"]).startswith(
        f"{t['study_auroc']:.2f} [")


def test_noisy_labels_follow_the_phantoms_noise_model_on_its_own_studies(smoke_cache):
    """The label-noise rung's training labels: at q = 0 the tree's own labels; at q = 1 every subtle finding
    missed and no other abnormal study, and a normal study over-called at rate OVERCALL (the plan's own draws)."""
    from utils.data import phantom

    profile, cache = smoke_cache
    idx = cache.index
    assert np.array_equal(learnability.noisy_labels(profile, idx, 0.0), idx.label.to_numpy())
    y = learnability.noisy_labels(profile, idx, 1.0)
    ph = profile.phantom
    plan = {st.folder: st for st in phantom.plan_studies(ph.train_patients, ph.valid_patients, ph.seed)}
    st = [plan[f"{r.split}/XR_{r.body_part}/{r.patient}/{r.study}"] for r in idx.itertuples()]
    truth = idx.label.to_numpy()
    missed = np.array([s.label == 1 and phantom.subtle(s.lesion) for s in st])
    assert missed.any() and (y[missed] == 0).all()  # every subtle finding missed at q = 1
    assert (y[(truth == 1) & ~missed] == 1).all()  # other findings always reported
    flipped = (truth == 0) & (y == 1)
    assert 0 < flipped.sum() < (truth == 0).sum() * 3 * phantom.OVERCALL  # a few normal studies over-called


def test_study_kappa_is_cohens_kappa_of_the_study_mean_at_one_half():
    """Against scikit-learn's cohen_kappa_score on the studies' mean probabilities (an independent implementation)."""
    import pandas as pd
    import torch
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    n = 240
    groups = rng.integers(0, 80, n)
    y = (groups % 3 == 0).astype(int)  # a study's images share its label
    z = torch.as_tensor(rng.normal(y * 0.8, 1.0), dtype=torch.float32)
    model = lambda x: torch.stack([torch.zeros_like(x[:, 0]), x[:, 0]], 1)  # noqa: E731  logit = the feature
    out = learnability._scores(model, z[:, None], y, "cpu", groups=groups, study_level=True, n_boot=200)
    p = torch.sigmoid(z).numpy()
    st = pd.DataFrame(dict(g=groups, p=p, y=y)).groupby("g").agg(p=("p", "mean"), y=("y", "first"))
    assert out["study_kappa"] == pytest.approx(cohen_kappa_score(st.y, (st.p > 0.5).astype(int)), abs=1e-9)
    lo, hi = out["study_kappa_ci"]
    assert lo <= out["study_kappa"] <= hi
    assert out["study_called"] == pytest.approx((st.p > 0.5).mean())


def test_study_auroc_by_part_is_each_parts_study_auroc_and_none_where_a_part_has_one_label():
    """Against scikit-learn's roc_auc_score on each part's studies (their mean probabilities); a part whose studies
    are all normal gets no AUROC and no interval; the counts are the part's studies and abnormal studies."""
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    n = 300
    groups = rng.integers(0, 90, n)
    part = np.where(groups < 40, "WRIST", np.where(groups < 80, "HAND", "FINGER"))  # a study's images share its part
    y = ((groups % 3 == 0) & (part != "FINGER")).astype(int)  # FINGER: normal studies only
    z = torch.as_tensor(rng.normal(y * np.where(part == "WRIST", 1.5, 0.3), 1.0), dtype=torch.float32)
    model = lambda x: torch.stack([torch.zeros_like(x[:, 0]), x[:, 0]], 1)  # noqa: E731
    out = learnability._scores(model, z[:, None], y, "cpu", groups=groups, study_level=True, n_boot=200, parts=part)
    st = pd.DataFrame(dict(g=groups, p=torch.sigmoid(z).numpy(), y=y, part=part)).groupby("g").agg(
        p=("p", "mean"), y=("y", "first"), part=("part", "first"))
    by = out["study_auroc_by_part"]
    assert set(by) == {"FINGER", "HAND", "WRIST"}
    for name in ("HAND", "WRIST"):
        s = st[st.part == name]
        assert by[name]["auroc"] == pytest.approx(roc_auc_score(s.y, s.p), abs=1e-12)
        assert by[name]["studies"] == len(s) and by[name]["abnormal"] == int(s.y.sum())
        lo, hi = by[name]["ci"]
        assert lo <= by[name]["auroc"] <= hi
    assert by["WRIST"]["auroc"] > by["HAND"]["auroc"]  # the stronger signal drawn for the wrist shows
    assert by["FINGER"]["auroc"] is None and by["FINGER"]["ci"] is None and by["FINGER"]["abnormal"] == 0
    assert "study_auroc_by_part" not in learnability._scores(model, z[:, None], y, "cpu", groups=groups,
                                                             study_level=True, n_boot=50)


def test_a_one_part_scaled_cache_keeps_the_whole_trees_validation_carve(smoke_tree, tmp_path, monkeypatch):
    """The one-part phantom's splits are those of the whole tree (carved first, then filtered), and it holds that
    part's images only; the phantom asked for has the scaled patient counts."""
    from utils import config
    from utils.data import sources

    asked = {}

    def fake_ensure(out, train_patients, valid_patients, *a, **kw):
        asked.update(out=out, train=train_patients, valid=valid_patients)
        return smoke_tree

    monkeypatch.setattr(learnability.phantom, "ensure", fake_ensure)
    monkeypatch.setattr(learnability, "get_paths", lambda **kw: config.get_paths(tmp_path, **kw))
    profile = config.get_profile("smoke", task="abnormality")
    part = sources.load_index(smoke_tree).body_part.iloc[0]
    cache = learnability._scaled_cache(profile, 3, 2, [part])
    ph = profile.phantom
    assert (asked["train"], asked["valid"]) == (3 * ph.train_patients, 2 * ph.valid_patients)
    assert str(asked["out"]).endswith(f"phantom-{profile.name}-x3-v2")
    whole = sources.carve_validation(sources.load_index(smoke_tree), profile.val_fraction, profile.seed,
                                     profile.cal_fraction)
    mine = whole[whole.body_part == part].set_index("path").subset
    assert set(cache.index.body_part) == {part} and len(cache.index) == len(mine)
    assert (cache.index.set_index("path").subset.loc[mine.index] == mine).all()


def test_the_scaling_curve_trains_on_nested_prefixes_and_pairs_each_size_with_the_largest(smoke_cache, monkeypatch):
    """Training sets grow with the factor and each is a prefix (by patient number) of the next; every network is
    scored on the same test studies; a smaller size's paired difference is exactly its estimate minus the largest's,
    inside its own interval."""
    from utils.config import PhantomSpec

    profile, cache = smoke_cache  # all parts: no single part of the smoke data has 10 images of each class
    test = cache.index.query("subset == 'test'")
    monkeypatch.setattr(learnability, "_scaled_cache", lambda *a, **kw: cache)
    half = profile.replace(phantom=PhantomSpec(train_patients=profile.phantom.train_patients // 2,
                                               valid_patients=profile.phantom.valid_patients,
                                               seed=profile.phantom.seed))
    res = learnability.scaling_curve(half, device="cpu", parts=None, factors=(1, 2))
    small, top, same_steps = res["rows"]
    assert small["patients"] == 1 and top["patients"] == 2 and same_steps["patients"] == 1
    assert small["epochs"] == top["epochs"] == half.epochs < same_steps["epochs"]  # images and steps told apart
    steps_per_epoch = same_steps["train_images"] // half.batch_size
    assert abs(same_steps["steps"] - top["steps"]) <= steps_per_epoch / 2 + 1 and same_steps["steps"] > small["steps"]
    assert same_steps["train_images"] == small["train_images"]
    n_train = len(cache.index.query("subset == 'train'"))
    assert 0 < small["train_images"] < top["train_images"] == n_train
    assert res["test_studies"] == test.study_id.nunique() and res["parts"] == "all"
    assert "minus_top_auroc" not in top
    for row in (small, same_steps):
        for m in ("auroc", "kappa"):
            d, lo, hi = row[f"minus_top_{m}"]
            assert d == pytest.approx(row[f"study_{m}"] - top[f"study_{m}"], abs=1e-9) and lo <= d <= hi
    t = learnability.scaling_table(res)
    assert t["AUROC minus the largest"].tolist()[1] == "-" and t["training patients"].tolist() == ["1x", "2x", "1x with 2x's steps"]


def test_the_ensemble_trade_scores_each_split_and_pairs_it_with_the_first(smoke_cache):
    """A one-member split is the task rung's network (same seed, recipe and epochs: the same study AUROC to the
    last digit); a split repeated is paired with itself at exactly zero; members average their probabilities."""
    profile, cache = smoke_cache
    res = learnability.ensemble_trade(profile, cache, device="cpu", splits=((1, 2), (1, 2), (2, 1)))
    one, again, two = res["rows"]
    t = learnability.run_rung(profile.replace(epochs=2), "task", dict(kind="task", patients=1), cache, device="cpu")
    assert one["study_auroc"] == t["study_auroc"] and one["train_acc"] == t["train_acc"]
    assert again["minus_first_auroc"] == [0.0, 0.0, 0.0] and again["minus_first_kappa"] == [0.0, 0.0, 0.0]
    assert "minus_first_auroc" not in one and (two["members"], two["epochs"]) == (2, 1)
    lo, hi = two["minus_first_auroc"][1:]
    assert lo <= two["minus_first_auroc"][0] <= hi
    assert res["test_studies"] == cache.index.query("subset == 'test'").study_id.nunique()
    table = learnability.trade_table(res)
    assert table["members x epochs"].tolist() == ["1 x 2", "1 x 2", "2 x 1"] and table["AUROC minus the first"][0] == "-"
