"""Counterfactual renders of the phantom (utils.phantom.render_study, utils.counterfactual): faithful
re-rendering, locality of the removed object, and the measures on dummy models with known answers."""
from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from utils import data
from utils.chapters import counterfactual as cf
from utils.data import phantom, sources
from utils.evaluation import evidence
from utils.explain import scores as explanation_scores
from utils.models.networks import XrayNet


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tiny phantom (1 train + 8 valid patients, 160 px, 24 images) whose test split holds a normal study
    with a cast, abnormal studies with casts, hardware (a humeral nail), fractures (one comminuted) and
    degenerative change, and studies with no finding."""
    root = phantom.generate(tmp_path_factory.mktemp("cf"), 1, 8, seed=540, max_side=160, workers=1,
                            progress=False)
    studies, _, _ = phantom.load_plan(root)
    valid = [s for s in studies if s.split == "valid"]
    assert any("cast" in s.lesion and s.label == 0 for s in valid)
    assert any("hardware" in s.lesion for s in valid) and any(not s.lesion for s in valid)
    assert any("degenerative" in s.lesion for s in valid)
    return root


@pytest.fixture(scope="module")
def cast_pairs(tree):
    return cf.pairs(tree, kinds=("cast", "hardware"))


def _study_with(studies, has=(), lacks=()):
    return next(i for i, s in enumerate(studies) if s.split == "valid" and all(k in s.lesion for k in has)
                and not any(k in s.lesion for k in lacks))


def test_rerender_is_byte_identical_to_the_written_files(tree):
    studies, seed, max_side = phantom.load_plan(tree)
    assert (seed, max_side) == (540, 160)
    n = 0
    for i, st in enumerate(studies):
        for v, view in enumerate(phantom.render_study(st, i, seed, max_side), 1):
            for arr, path in ((phantom.as_written(view), tree / st.folder / f"image{v}.png"),
                              (view.bones, tree / "masks" / st.folder / f"image{v}_bones.png"),
                              (view.lesion, tree / "masks" / st.folder / f"image{v}_lesion.png")):
                ok, buf = cv2.imencode(".png", arr)
                assert ok and buf.tobytes() == path.read_bytes(), path
            n += 1
    assert n == json.loads((tree / "phantom.json").read_text())["n_images"]


def test_load_plan_refuses_trees_it_cannot_reproduce(tree, tmp_path):
    bad = tmp_path / "MURA-v1.1"
    bad.mkdir()
    with pytest.raises(FileNotFoundError, match="utils.data.phantom"):
        phantom.load_plan(bad)
    meta = json.loads((tree / "phantom.json").read_text())
    meta["studies"][3]["lesion"] = {"site": ["radius_shaft", 0.5], "cast": 0.7}
    (bad / "phantom.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differ from the stored"):
        phantom.load_plan(bad)
    assert len(phantom.load_plan(tree.parent)[0]) == meta["n_studies"]  # the parent folder works too


def test_no_random_draw_depends_on_the_lesion_spec(tree):
    studies, seed, max_side = phantom.load_plan(tree)
    i = _study_with(studies, has=("cast", "fracture"))
    a = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
    b = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
    for _ in range(studies[i].n_views):
        phantom.render_view(studies[i], a, max_side)
        phantom.render_view(studies[i], b, max_side, lesion={})  # no finding at all, window re-derived
        assert a.bit_generator.state == b.bit_generator.state


def test_counterfactual_changes_pixels_only_around_the_removed_object(cast_pairs):
    kinds = {p.kind for p in cast_pairs}
    assert kinds == {"cast", "hardware"} and any(p.kind == "cast" and p.label == 0 for p in cast_pairs)
    for p in cast_pairs:
        for o, c, m, loc in zip(p.original, p.counterfactual, p.mask, p.locality):
            if not m.any():
                continue
            diff = np.abs(o.astype(int) - c.astype(int))
            assert diff[m].mean() > 3, (p.study, p.kind)  # the object really is gone
            near = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5) <= cf.NEAR_PX
            assert loc["local_share"] > 0.97, (p.study, p.kind, loc)  # changed pixels: near it or off-field
            assert loc["max_abs_elsewhere"] <= 3  # in the exposed field, away from it: a few grey levels at most
            if loc["outside_field"] == 0:
                assert diff[~near].max(initial=0) <= 3
    changed = sum(loc["changed"] for p in cast_pairs for loc in p.locality)
    local = sum(loc["near"] + loc["outside_field"] for p in cast_pairs for loc in p.locality)
    assert local / changed > 0.99


def test_degenerative_change_is_removed_locally(tree):
    """The new kind: without it the joint's sclerosis, narrowing and osteophytes are gone (the film darker
    there: bone removed), nothing else changes beyond a few pixels of blur, and its mask bit is clear."""
    pairs = cf.pairs(tree, kinds=("degenerative",))
    assert pairs and {p.kind for p in pairs} == {"degenerative"} and all(p.label == 1 for p in pairs)
    seen = 0
    for p in pairs:
        for o, c, m, loc in zip(p.original, p.counterfactual, p.mask, p.locality):
            if m.sum() < 4:
                continue
            seen += 1
            assert (o.astype(int) - c.astype(int))[m].mean() >= 0
            assert loc["local_share"] > 0.97 and loc["max_abs_elsewhere"] <= 3, (p.study, loc)
    assert seen
    assert list(cf.BITS)[:3] == ["fracture", "hardware", "cast"] and cf.BITS["degenerative"] == 8
    assert cf.KINDS[:3] == ("cast", "hardware", "fracture") and "degenerative" in cf.KINDS


def test_re_derived_window_changes_the_whole_picture(tree, cast_pairs):
    """Why the counterfactual keeps the original's display window: metal and casts move the percentiles."""
    auto = cf.pairs(tree, kinds=("hardware",), window="auto")
    kept = [p for p in cast_pairs if p.kind == "hardware"]
    share = lambda ps: np.mean([loc["local_share"] for p in ps for loc in p.locality])  # noqa: E731
    assert share(auto) < 0.8 and share(kept) > 0.99


def test_removing_a_finding_the_study_lacks_changes_nothing(tree):
    studies, seed, max_side = phantom.load_plan(tree)
    for i in (_study_with(studies, lacks=("site",)), _study_with(studies, has=("hardware",), lacks=("cast",))):
        orig = phantom.render_study(studies[i], i, seed, max_side)
        for windows in (None, [v.meta["window"] for v in orig]):
            cf_views = phantom.render_study(studies[i], i, seed, max_side, lesion=cf.without(studies[i].lesion, "cast"),
                                            windows=windows)
            for o, c in zip(orig, cf_views):
                assert np.array_equal(o.image, c.image) and np.array_equal(o.lesion, c.lesion)


def test_finger_counterfactual_keeps_the_field_of_view():
    """A fracture of the proximal phalanx shortens the solid the finger film is centred on: the counterfactual
    must centre where the original did, or the whole picture moves."""
    st = phantom.Study("valid", "FINGER", 1, 1, 1, 2, phantom.Anatomy(), False, 3,
                       lesion={"site": ("pp3", 0.5), "fracture": dict(gap=1.5, shift=0.3, angle=8.0)})
    spec = cf.without(st.lesion, "fracture")
    orig = phantom.render_study(st, 0, 0, 160)
    win = [v.meta["window"] for v in orig]
    kept = phantom.render_study(st, 0, 0, 160, lesion=spec, windows=win)
    moved = phantom.render_study(replace(st, lesion=spec), 0, 0, 160, windows=win)
    for o, k, m in zip(orig, kept, moved):
        assert 3 * (o.image != k.image).sum() < (o.image != m.image).sum()
        # the middle and distal phalanges ride on the angled distal fragment (phantom 2.0), so some of the
        # finger's bones move in both; the whole field moving changes more of them still
        assert 1.5 * ((o.bones > 0) != (k.bones > 0)).sum() < ((o.bones > 0) != (m.bones > 0)).sum()


def test_select_is_seeded_capped_and_independent_of_the_kinds_order(tree):
    studies, _, _ = phantom.load_plan(tree)
    full = cf.select(studies)
    assert all(all(k in studies[i].lesion and studies[i].split == "valid" for i in full[k]) for k in full)
    one = cf.select(studies, max_studies=1, seed=5)
    assert one == cf.select(studies, max_studies=1, seed=5)
    assert all(len(v) == min(1, len(full[k])) and set(v) <= set(full[k]) for k, v in one.items())
    assert cf.select(studies, kinds=("fracture", "cast"), max_studies=1, seed=5)["cast"] == one["cast"]


def test_pairs_hold_the_files_pixels_and_prepare_matches_the_cache(tree, cast_pairs, tmp_path):
    index = sources.load_index(tree)
    cache = data.build_cache(index, 32, tmp_path, workers=1, progress=False)
    by_path = dict(zip(cache.index.rel_path, cache.index.row))
    p = next(p for p in cast_pairs if len(p.original) > 1)
    files = [tree / p.study / f"image{v}.png" for v in range(1, len(p.original) + 1)]
    for o, f in zip(p.original, files):
        assert np.array_equal(o, data.read_image(f))
    rows = [by_path[f"MURA-v1.1/{p.study}/image{v}.png"] for v in range(1, len(files) + 1)]
    want = data.standardize(data.to_input(np.asarray(cache.images[rows])))
    assert torch.equal(cf.prepare(p.original, 32), want)
    small = cf.pairs(tree, kinds=("cast",), size=32)  # letterboxed up front: the same input
    q = next(s for s in small if s.study == p.study)
    assert torch.equal(cf.prepare(q.original, 32), want)
    assert torch.equal(cf.prepare_masks(p.mask, 32), torch.from_numpy(np.stack(q.mask)))
    with pytest.raises(ValueError, match="letterboxed to 32"):
        cf.measure([_brightness_model(1.0)], small, 48)


def _brightness_model(k: float, features: nn.Module | None = None) -> XrayNet:
    """A binary 'network' whose abnormal logit is k times the mean (standardised) brightness of its feature
    map (default: the image itself), normal logit 0; its CAM is k/2 times that map."""
    m = XrayNet(features or nn.Identity(), 1, 2)
    with torch.no_grad():
        m.fc.weight.copy_(torch.tensor([[0.0], [k]]))
        m.fc.bias.zero_()
    return m.eval()


class _Ones(nn.Module):
    def forward(self, x):
        return torch.ones_like(x)


def test_measure_gives_the_expected_sign_of_the_shift(cast_pairs):
    casts = [p for p in cast_pairs if p.kind == "cast"]
    brighter = _brightness_model(4.0)  # a cast attenuates, so it brightens the film: p(abnormal) drops without it
    df = cf.measure([brighter, _brightness_model(2.0)], casts, 32)
    assert len(df) == sum(len(p.original) for p in casts)
    assert (df.shift_m0 > 0).all() and (df.shift_ens > 0).all()
    with torch.no_grad():
        x = cf.prepare([o for p in casts for o in p.original], 32)
        assert np.allclose(df.p_orig_m0, torch.softmax(brighter(x), 1)[:, 1].numpy(), atol=1e-6)
    assert (cf.measure([_brightness_model(-4.0)], casts, 32).shift_m0 < 0).all()
    st = cf.study_shift(df)
    assert len(st) == len(casts) and (st.shift_m0 > 0).all()
    one = st.iloc[0]
    views = df[df.study == one.study]
    assert one.views == len(views) and np.isclose(one.shift_m0, views.p_orig_m0.mean() - views.p_cf_m0.mean())
    # the CAM of this model is the brightness: the bright cast holds more of it than an area-matched region
    assert (df.mass_m0 > df.baseline_mass_m0).mean() > 0.5
    assert (df.mass_m0 > df.mass_cf_m0).all()  # and less once the cast is gone
    summary = cf.summarize(df, n_boot=200)
    assert set(summary.label) == {0, 1} and (summary["study shift lo"] > 0).all()


def test_area_matched_baseline_is_the_area_fraction_for_a_uniform_map(cast_pairs):
    df = cf.measure([_brightness_model(1.0, _Ones())], cast_pairs, 32)  # a constant CAM
    ok = df.mask_px > 0
    assert ok.any() and np.allclose(df.baseline_mass_m0[ok], df.area_fraction[ok])
    assert np.allclose(df.mass_m0[ok], df.area_fraction[ok])
    assert df.mass_m0[~ok].isna().all()
    # and in expectation for random (i.i.d.) maps; the translated masks keep their area inside the picture
    masks = cf.prepare_masks([m for p in cast_pairs for m in p.mask], 32)
    pics = np.stack([cf.picture_mask(o.shape, 32) for p in cast_pairs for o in p.original])
    shifted = cf.shifted_masks(masks, pics, n_shifts=8, seed=0)
    assert torch.equal(shifted.flatten(2).sum(2), masks.flatten(1).sum(1).expand(8, -1))
    fits = [b for b in range(len(masks)) if masks[b].any() and (masks[b] & ~torch.from_numpy(pics[b])).sum() == 0]
    assert all((shifted[:, b] & ~torch.from_numpy(pics[b])).sum() == 0 for b in fits)
    maps = torch.rand((50,) + masks.shape, generator=torch.Generator().manual_seed(0))
    mass = torch.stack([explanation_scores.relevance_mass(maps[r], shifted[r % 8]) for r in range(50)]).mean(0)
    area = masks.flatten(1).float().mean(1)
    assert torch.allclose(mass, area, atol=0.01)


# --------------------------------------------------------------------------- objects added to normal studies


@pytest.fixture(scope="module")
def added(tree):
    return cf.added_pairs(tree)


def test_added_objects_go_on_every_normal_study_where_they_can(tree, added):
    studies, seed, _ = phantom.load_plan(tree)
    normal = [i for i, s in enumerate(studies) if s.split == "valid" and s.label == 0]
    chosen = cf.select_added(studies)
    assert chosen["hardware"] == normal  # hardware goes on every type
    assert chosen["cast"] == [i for i in normal
                              if studies[i].part in phantom.CASTABLE and "cast" not in studies[i].lesion]
    assert len(chosen["cast"]) >= 3 and any("cast" in studies[i].lesion for i in chosen["hardware"])
    assert [(p.kind, p.index) for p in added] == [(k, i) for k in cf.ADDED for i in chosen[k]]
    assert all(p.added and p.label == 0 for p in added)
    for p in added:
        st = studies[p.index]
        assert p.spec == phantom.build.added_finding(st, p.index, seed, p.kind)
        assert {k: v for k, v in p.spec.items() if k not in (p.kind, "site")} == \
            {k: v for k, v in st.lesion.items() if k != "site"}  # nothing else added or dropped
        if "cast" in st.lesion:  # hardware beside a normal study's cast: at the cast's site, the cast unchanged
            assert p.spec["site"] == tuple(st.lesion["site"]) and p.spec["cast"] == st.lesion["cast"]
            assert p.spec["hardware"]["type"] in phantom.build.STAYS_AT_SITE
    with pytest.raises(ValueError, match="only cast, hardware"):
        cf.select_added(studies, kinds=("fracture",))
    i = chosen["cast"][0]
    assert phantom.build.added_finding(replace(studies[i], lesion={"cast": {}}), i, seed, "cast") is None
    assert phantom.build.added_finding(replace(studies[i], part="SHOULDER"), i, seed, "cast") is None


def test_added_object_changes_pixels_only_around_it(added):
    for p in added:
        for o, c, m, loc in zip(p.original, p.counterfactual, p.mask, p.locality):
            if m.sum() < 4:
                continue
            diff = o.astype(int) - c.astype(int)
            assert diff[m].mean() > 3, (p.study, p.kind)  # the object is there: it brightens the film
            near = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5) <= cf.NEAR_PX
            assert loc["local_share"] > (0.97 if p.kind == "cast" else 0.85), (p.study, p.kind, loc)
            assert loc["max_abs_elsewhere"] <= 3, (p.study, p.kind, loc)
            if loc["outside_field"] == 0:
                assert np.abs(diff[~near]).max(initial=0) <= 3
    changed = sum(loc["changed"] for p in added for loc in p.locality)
    local = sum(loc["near"] + loc["outside_field"] for p in added for loc in p.locality)
    assert local / changed > 0.98


def test_added_pairs_without_the_object_are_the_stored_images(tree, added, tmp_path):
    """The study as written is rendered once, for its display windows, and is the file's pixels byte for byte."""
    studies, seed, max_side = phantom.load_plan(tree)
    for p in added:
        assert len(p.counterfactual) == studies[p.index].n_views
        for v, (c, view) in enumerate(zip(p.counterfactual, phantom.render_study(studies[p.index], p.index, seed,
                                                                                  max_side)), 1):
            assert np.array_equal(c, data.read_image(tree / p.study / f"image{v}.png"))
            ok, buf = cv2.imencode(".png", phantom.as_written(view))
            assert ok and buf.tobytes() == (tree / p.study / f"image{v}.png").read_bytes()
    small = cf.added_pairs(tree, kinds=("cast",), size=32)
    index = sources.load_index(tree)
    cache = data.build_cache(index, 32, tmp_path, workers=1, progress=False)
    by_path = dict(zip(cache.index.rel_path, cache.index.row))
    for q in small:
        rows = [by_path[f"MURA-v1.1/{q.study}/image{v}.png"] for v in range(1, len(q.counterfactual) + 1)]
        assert np.array_equal(np.stack(q.counterfactual), np.asarray(cache.images[rows]))


def test_added_pairs_are_seeded_and_move_no_other_draw(tree, added):
    studies, seed, max_side = phantom.load_plan(tree)
    again = cf.added_pairs(tree, kinds=("hardware", "cast"), workers=2)
    assert sorted((p.kind, p.index) for p in again) == sorted((p.kind, p.index) for p in added)
    by = {(p.kind, p.index): p for p in again}
    for p in added:
        q = by[(p.kind, p.index)]
        assert q.spec == p.spec and all(np.array_equal(a, b) for a, b in zip(p.original + p.mask, q.original + q.mask))
    i = next(p.index for p in added if p.kind == "cast")
    st = studies[i]
    other = [phantom.build.added_finding(st, i, seed + 1, k) for k in cf.ADDED]
    assert other != [phantom.build.added_finding(st, i, seed, k) for k in cf.ADDED]  # the seed matters
    # the render stream is consumed as without the object, so every other draw of the view is the same
    a = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
    b = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
    for _ in range(st.n_views):
        phantom.render_view(st, a, max_side)
        phantom.render_view(st, b, max_side, lesion=phantom.build.added_finding(st, i, seed, "cast"))
        assert a.bit_generator.state == b.bit_generator.state
    assert phantom.load_plan(tree)[0] == studies  # the plan (and every finding) is unchanged


def _synthetic(shifts: dict, views=(2, 1, 3, 2, 1, 2), seed=0):
    """A `measure`-shaped table: per kind, six normal studies with 1-3 views, p_cf drawn, p_orig = p_cf moved by
    the kind's logit shift (per image), member 0 and ensemble alike."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind, shift in shifts.items():
        for s, n in enumerate(views):
            for v in range(n):
                z = rng.normal(-1.0, 1.0)
                d = shift + rng.normal(0, 0.3) if shift else (0.2 if (s + v) % 2 else -0.2)
                for_ = dict(study=f"{kind}{s}", part="WRIST", label=0, kind=kind, view=v + 1)
                for suf in ("m0", "ens"):
                    for_[f"p_cf_{suf}"] = 1 / (1 + np.exp(-z))
                    for_[f"p_orig_{suf}"] = 1 / (1 + np.exp(-(z + d)))
                rows.append(for_)
    df = pd.DataFrame(rows)
    for suf in ("m0", "ens"):
        df[f"logit_shift_{suf}"] = cf.logit(df[f"p_orig_{suf}"]) - cf.logit(df[f"p_cf_{suf}"])
    return df


def test_logit_shift_summary_is_the_hand_computation():
    df = _synthetic({"cast": 1.0, "hardware": 0.0})
    # the clean test set: 3 abnormal and 3 normal studies, member 0 and a second member
    p = np.array([[0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.3, 0.05, 0.1], [0.8, 0.9, 0.6, 0.7, 0.3, 0.2, 0.2, 0.1, 0.05]])
    groups = np.array(["a", "a", "b", "c", "d", "d", "e", "f", "f"])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    sep = cf.class_separation(p, labels, groups, n_boot=500, seed=1)
    lg = lambda q: np.log(q / (1 - q))  # noqa: E731
    for model, q in (("m0", p[0]), ("ens", p.mean(0))):
        study = pd.Series(q).groupby(groups).mean()
        want = lg(study[["a", "b", "c"]]).mean() - lg(study[["d", "e", "f"]]).mean()
        r = sep[(sep.model == model) & (sep.level == "study")].iloc[0]
        assert np.isclose(r.separation, want) and r.low < want < r.high and (r.abnormal, r.normal) == (3, 3)
        r = sep[(sep.model == model) & (sep.level == "image")].iloc[0]
        assert np.isclose(r.separation, lg(q[labels == 1]).mean() - lg(q[labels == 0]).mean())
    flat = cf.class_separation(np.where(labels == 1, 0.8, 0.2)[None], labels, groups, n_boot=200)
    assert np.allclose(flat[["separation", "low", "high"]].to_numpy(), 2 * lg(0.8))  # every replicate the same

    table = cf.logit_summary(df, sep, "added", n_boot=500, seed=2)
    assert len(table) == 4 and set(table.model) == {"m0", "ens"} and (table.test == "added").all()
    for kind in ("cast", "hardware"):
        d = df[df.kind == kind]
        g = d.groupby("study", sort=False)
        study_shift = lg(g.p_orig_ens.mean()) - lg(g.p_cf_ens.mean())  # logit of the study score, with - without
        iv = evidence.mean_interval(study_shift.to_numpy(), study_shift.index.to_numpy(), 500, 2)
        r = table[(table.kind == kind) & (table.model == "ens")].iloc[0]
        assert (r.studies, r.images) == (6, len(d))
        assert np.isclose(r["study shift"], study_shift.mean()) and np.isclose(r["study shift lo"], iv["low"])
        assert np.isclose(r["resolution"], (iv["high"] - iv["low"]) / 2)
        assert np.isclose(r["image shift"], (lg(d.p_orig_ens) - lg(d.p_cf_ens)).mean())
        s = sep[(sep.model == "ens") & (sep.level == "study")].iloc[0]
        assert np.isclose(r["separation"], s.separation)
        assert np.isclose(r["shift / separation"], r["study shift"] / s.separation)
    words = cf.logit_reading(table)
    shown = cf.logit_shown(table)  # the displayed table: shifts with their intervals as text, narrow enough
    r0 = table.iloc[0]
    assert shown["study shift [95 %]"].iloc[0] == (f"{r0['study shift']:+.3f} [{r0['study shift lo']:+.3f}, "
                                                   f"{r0['study shift hi']:+.3f}]")
    assert len(shown.columns) == 10 and "separation" not in shown.columns
    null = table[(table.kind == "hardware") & (table.model == "ens")].iloc[0]
    assert null["study shift lo"] < 0 < null["study shift hi"]
    assert (f"hardware, added to 6 normal studies (11 images): no shift shown, resolution ±{null.resolution:.3f} "
            "logits") in words
    cast = table[(table.kind == "cast") & (table.model == "ens")].iloc[0]
    assert cast["study shift lo"] > 0
    assert (f"a cast, added to 6 normal studies ({cast.images} images): the study logit with it is higher than "
            f"without by {cast['study shift']:+.3f}") in words
    assert "x the class separation" not in words and "no ratio is given" in words
    assert "member 0" in cf.logit_reading(table, "m0") and cf.logit_reading(table.iloc[:0]) == ""
    assert cf.logit_reading(pd.DataFrame()) == ""  # real MURA: no table
    one = cf.logit_summary(df[df.study == "cast0"], sep, "removed", n_boot=100)
    assert "the cast, removed from 1 normal study (2 images): study logit shift" in cf.logit_reading(one)
    assert "too few studies for an interval" in cf.logit_reading(one)
    assert cf.logit_summary(df, None).separation.isna().all()


def test_measure_without_cams_scores_each_shared_image_once(added):
    models = [_brightness_model(4.0), _brightness_model(2.0)]
    full = cf.measure(models, added, 32)
    light = cf.measure(models, added, 32, cams=False)
    cols = [c for c in full.columns if c.startswith(("p_", "shift_", "logit_"))]
    pd.testing.assert_frame_equal(full[cols], light[cols])
    assert "mass_m0" not in light and len(light) == sum(len(p.original) for p in added)
    assert (light[light.kind == "cast"].logit_shift_m0 > 0).all()  # a cast brightens the film: more "abnormal"
    for p in added:  # each row's image as written scored as itself, though shared by the cast and hardware pairs
        rows = light[(light.study == p.study) & (light.kind == p.kind)]
        with torch.no_grad():
            want = torch.softmax(models[0](cf.prepare(p.counterfactual, 32)).double(), 1)[:, 1].numpy()
        assert np.allclose(rows.p_cf_m0, want, atol=1e-6)
    both = light[light.kind == "cast"].merge(light[light.kind == "hardware"], on=["study", "view"])
    assert len(both) and np.array_equal(both.p_cf_ens_x, both.p_cf_ens_y)
    with torch.no_grad():
        x = cf.prepare([o for p in added for o in p.original], 32)
        probs = cf.softmax_probs([m(x).numpy() for m in models])
    assert probs.shape == (2, len(light)) and np.allclose(probs[0], light.p_orig_m0, atol=1e-6)
    assert np.allclose(probs.mean(0), light.p_orig_ens, atol=1e-6)
