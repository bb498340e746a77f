"""The contract every registered posterior keeps, the combinators, and the layer-wise prior."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import posteriors
from utils.evaluation import metrics
from utils.posteriors import bayes, store


def FakeMember(folder, index: int = 0, classes: int = 3, seed: int = 0):
    """A member without training (`posteriors.ArrayMember.random`): a small random network made confident, on
    random 16 px images."""
    return posteriors.ArrayMember.random(folder, index=index, classes=classes, seed=seed)


SINGLE = posteriors.labels(single=True)
COMBOS = posteriors.labels(single=False)


@pytest.fixture
def member(tmp_path):
    return FakeMember(tmp_path)


def test_the_registry_holds_every_method_once_under_a_stable_label():
    assert SINGLE[:3] == ["MAP", "temperature scaling", "MC dropout"]
    assert {"Laplace, diag", "Laplace, kron", "Laplace, full", "Laplace, kron, layer-wise prior"} <= set(SINGLE)
    assert COMBOS == ["deep ensemble", "mixture of Laplace, kron"]
    for label in SINGLE:
        assert posteriors.REGISTRY[label].make.label == label
    assert "MC dropout" not in posteriors.labels(dropout=False)
    with pytest.raises(KeyError, match="registered: MAP"):
        posteriors.make("SWAG", None)


@pytest.mark.parametrize("label", SINGLE)
def test_every_posterior_gives_probabilities_of_the_right_shape(member, label):
    post = posteriors.make(label, member)
    pred = post.predict("test")
    n = len(member.features("test")[0])
    assert pred["probs"].shape == (n, 3)
    np.testing.assert_allclose(pred["probs"].sum(1), 1, atol=1e-5)
    assert (pred["probs"] >= 0).all()
    p = post.probs(post.inputs_of("val"))
    assert p.shape == (40, 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    if post.stochastic:
        s = post.sample_probs(post.inputs_of("val"), 7, seed=1)
        assert s.shape == (7, 40, 3)
        np.testing.assert_allclose(s.sum(-1), 1, atol=1e-6)
        assert pred["samples"].shape == (post.n_samples, n, 3)
    else:
        assert "samples" not in pred
        with pytest.raises(NotImplementedError, match="deterministic"):
            post.sample_probs(post.inputs_of("val"), 3)


@pytest.mark.parametrize("label", SINGLE)
def test_the_same_seed_gives_the_same_numbers(tmp_path, label):
    a = posteriors.make(label, FakeMember(tmp_path / "a")).predict("test")
    b = posteriors.make(label, FakeMember(tmp_path / "b")).predict("test")
    np.testing.assert_array_equal(a["probs"], b["probs"])
    if "samples" in a:
        np.testing.assert_array_equal(a["samples"], b["samples"])
    m = FakeMember(tmp_path / "c")
    post = posteriors.make(label, m)
    if post.stochastic:
        phi = post.inputs_of("val")
        np.testing.assert_array_equal(post.sample_probs(phi, 5, seed=3), post.sample_probs(phi, 5, seed=3))
        assert not np.array_equal(post.sample_probs(phi, 5, seed=3), post.sample_probs(phi, 5, seed=4))


@pytest.mark.parametrize("label", SINGLE)
def test_the_mean_of_the_samples_approximates_the_predictive(member, label):
    post = posteriors.make(label, member)
    if not post.stochastic:
        pytest.skip("deterministic")
    phi = post.inputs_of("test")
    n = 200 if post.inputs == "images" else 4000
    mean = post.sample_probs(phi, n, seed=0).mean(0)
    tv = 0.5 * np.abs(mean - post.probs(phi)).sum(1)
    if isinstance(post, posteriors.MCDropout):  # its predictive *is* the sample mean: only sampling noise
        assert tv.mean() < 0.02
    elif isinstance(post, posteriors.LaplaceAllWeights):  # a mean of 32 draws against one of 200: MC noise
        assert tv.mean() < 0.1, tv.mean()
    else:  # Laplace: the probit approximation against Monte Carlo over the same Gaussian logits
        assert tv.mean() < 0.05, tv.mean()


@pytest.mark.parametrize("label", SINGLE)
def test_saved_predictions_are_reloaded_without_refitting(tmp_path, label):
    first = posteriors.make(label, FakeMember(tmp_path)).predict("test")
    again = posteriors.make(label, FakeMember(tmp_path))
    hit = again.predict("test")
    assert not again.fitted  # read from artifacts/predictions, not recomputed
    np.testing.assert_array_equal(first["probs"], hit["probs"])
    assert {k: v for k, v in first.items() if k not in ("probs", "samples")} == \
           {k: v for k, v in hit.items() if k not in ("probs", "samples")}


@pytest.mark.parametrize("label", ["MAP", "Laplace, kron"])
def test_saved_predictions_of_another_checkpoint_are_recomputed(tmp_path, label):
    """A member retrained under the same run name has new weights: its predictions must not be the old file's."""
    old = FakeMember(tmp_path)
    old.checkpoint = "aaaa"
    posteriors.make(label, old).predict("test")
    same = FakeMember(tmp_path)
    same.checkpoint = "aaaa"
    post = posteriors.make(label, same)
    post.predict("test")
    assert not post.fitted
    new = FakeMember(tmp_path, seed=5)
    new.checkpoint = "bbbb"
    post = posteriors.make(label, new)
    hit = post.predict("test")
    assert post.fitted and hit["checkpoint"] == "bbbb"
    np.testing.assert_allclose(hit["probs"], post.probs(post.inputs_of("test")), atol=1e-5)


def test_the_map_posterior_is_the_networks_softmax(member):
    phi = member.features("test")[0]
    with torch.no_grad():
        want = torch.softmax(member.model(torch.as_tensor(member._x["test"])), 1).double().numpy()
    np.testing.assert_allclose(posteriors.make("MAP", member).probs(phi), want, atol=1e-6)
    np.testing.assert_allclose(posteriors.make("MAP", member).predict("test")["probs"], want, atol=1e-6)


def test_temperature_minimises_the_validation_nll(member):
    post = posteriors.make("temperature scaling", member).fit()
    z, y = member.logits("val"), member.features("val")[1]
    best = metrics.nll(bayes.softmax_t(z, post.temperature), y)
    for t in (0.9, 1.1):
        assert best <= metrics.nll(bayes.softmax_t(z, post.temperature * t), y)


def test_head_samples_follow_the_method(member):
    W_map = member.model.fc.weight.detach()
    assert torch.equal(posteriors.make("MAP", member).head_samples(1)[0], W_map)
    lap = posteriors.make("Laplace, kron", member)
    W = lap.head_samples(500, seed=0)
    assert W.shape == (500, *W_map.shape)
    assert torch.allclose(W.mean(0), W_map, atol=4 * W.std(0).max().item() / 500 ** 0.5)
    drop = posteriors.make("MC dropout", member).head_samples(200, seed=0)
    zero = (drop == 0).all(1).float().mean()  # a dropped feature zeroes a column of W for every class
    assert abs(zero.item() - 0.3) < 0.03


@pytest.mark.parametrize("label", COMBOS)
def test_a_combination_is_the_mean_of_its_members(tmp_path, label):
    members = [FakeMember(tmp_path, index=m, seed=m) for m in range(3)]
    combo = posteriors.combine(label, members)
    pred = combo.predict("test")
    singles = np.stack([posteriors.make(combo.of, m).predict("test")["probs"] for m in members])
    np.testing.assert_allclose(pred.probs, singles.mean(0))
    np.testing.assert_array_equal(pred.samples, singles)
    assert pred.combination and pred.label == label and pred.n_members == 3
    phis = [m.features("val")[0] for m in members]
    np.testing.assert_allclose(combo.probs(phis), np.mean([posteriors.make(combo.of, m).probs(p)
                                                            for m, p in zip(members, phis)], 0), atol=1e-12)
    with pytest.raises(ValueError, match="combines members"):
        posteriors.make(label, members[0])


def test_the_layer_wise_prior_maximises_the_marginal_likelihood_over_both_precisions(member):
    post = posteriors.make("Laplace, kron, layer-wise prior", member).fit()
    la = post.la_fit.la
    deltas = la.prior_precision.detach().clone()
    assert deltas.shape == (2,)  # one for W, one for b

    def lml(d):
        return float(la.log_marginal_likelihood(prior_precision=torch.as_tensor(d, dtype=torch.float32)))

    best = lml(deltas)
    scalar = posteriors.make("Laplace, kron", FakeMember(member.predictions_dir)).fit().la_fit.prior_precision
    assert best >= lml(torch.full((2,), scalar)) - 1e-3  # at least as good as the shared delta
    for i in range(2):
        for f in (0.7, 1.4):
            d = deltas.clone()
            d[i] *= f
            assert lml(d) <= best + 1e-3
    info = post.predict("test")
    assert info["prior_precision"] == pytest.approx(float(deltas[0]))
    assert info["prior_precision_bias"] == pytest.approx(float(deltas[1]))
    assert info["bracketed"] is True and info["marglik_grad"] < post.GRAD_TOL  # checked, not copied from the scalar
    assert info["marglik_gain"] == pytest.approx(best - lml(torch.full((2,), info["scalar_prior"])), abs=1e-3)
    assert info["marglik_gain"] >= -1e-3 and "Adam on log delta" in info["prior_reason"]


def test_laplace_records_its_prior_search_and_ignores_an_older_versions_file(member):
    stale = np.full((50, 3), 1 / 3)
    store.save_predictions(member.predictions_dir, "la_kron_marglik__test__m00", stale, prior_precision=1.0)
    r = posteriors.make("Laplace, kron", member).predict("test")
    assert r["prior"] == "marglik" and r["prior_method"] == "marglik" and r["bracketed"] is True
    assert r["searched"][0] < r["prior_precision"] < r["searched"][1] and r["prior_reason"]
    assert r["version"] == bayes.LAPLACE_VERSION and not np.allclose(r["probs"], stale)
    assert (member.predictions_dir / f"la_kron_marglik__test__m00__s100__v{bayes.LAPLACE_VERSION}.npz").is_file()
    old = store.load_predictions(member.predictions_dir, "la_kron_marglik__test__m00")  # old files still load
    assert old["prior_precision"] == 1.0 and "bracketed" not in old


# --------------------------------------------------------------------------- the saved predictions' names


def _variant(post: posteriors.Posterior, **settings) -> posteriors.Posterior:
    """The same posterior (same member) with some class settings changed, as a subclass would set them."""
    return type(type(post).__name__, (type(post),), settings)(post.member)


def test_every_registered_posterior_saves_under_its_own_name(member):
    names = [posteriors.make(label, member).file_name("test") for label in SINGLE]
    assert len(set(names)) == len(names), names
    assert posteriors.make("MAP", member).file_name("val") != names[0]
    assert posteriors.make("MAP", FakeMember(member.predictions_dir, index=1)).file_name("test") != names[0]


@pytest.mark.parametrize("label", SINGLE)
def test_every_setting_that_changes_the_saved_numbers_is_in_the_name(member, label, monkeypatch):
    """A stochastic method's number of saved samples, and a Laplace posterior's prior method, Hessian structure and
    version (`bayes.LAPLACE_VERSION`) each change the saved numbers, so each must move the file name: a saved file
    is reused only under the settings it was computed with."""
    post = posteriors.make(label, member)
    name = post.file_name("test")
    if post.stochastic:
        assert _variant(post, n_samples=post.n_samples + 1).file_name("test") != name
    if label.startswith("Laplace"):
        other = "gridsearch" if post.prior != "gridsearch" else "marglik"
        assert _variant(post, prior=other).file_name("test") != name
        assert _variant(post, structure="diag" if post.structure != "diag" else "kron").file_name("test") != name
        monkeypatch.setattr(bayes, "LAPLACE_VERSION", bayes.LAPLACE_VERSION + 1)
        assert post.file_name("test") != name
    else:  # MAP, temperature scaling, MC dropout: none of the Laplace code's settings
        monkeypatch.setattr(bayes, "LAPLACE_VERSION", bayes.LAPLACE_VERSION + 1)
        assert post.file_name("test") == name


def test_all_weights_posteriors_differing_only_in_their_prior_method_save_apart(member):
    marglik = posteriors.make("Laplace, kron, all weights", member)
    other = _variant(marglik, prior="gridsearch")
    assert marglik.file_name("test") != other.file_name("test")
    assert "marglik" in marglik.file_name("test") and "gridsearch" in other.file_name("test")
    assert f"v{bayes.LAPLACE_VERSION}" in marglik.file_name("test").split("__")


def test_the_all_weights_posterior_does_not_reuse_a_file_of_another_version(member, monkeypatch):
    """Predictions saved by older code (another `bayes.LAPLACE_VERSION`, or the old name that held no version or
    prior method) are left alone: the posterior fits and predicts again and saves under its own version."""
    post = posteriors.make("Laplace, kron, all weights", member)
    stale = np.full((50, 3), 1 / 3)
    store.save_predictions(member.predictions_dir, "la_kron_allweights__test__m00__s32__probit", stale)  # old name
    with monkeypatch.context() as m:
        m.setattr(bayes, "LAPLACE_VERSION", bayes.LAPLACE_VERSION - 1)
        old = post.file_name("test")
        store.save_predictions(member.predictions_dir, old, stale, version=bayes.LAPLACE_VERSION)
    assert post.file_name("test") != old
    r = post.predict("test")
    assert post.fitted and r["version"] == bayes.LAPLACE_VERSION and r["prior"] == "marglik"
    assert not np.allclose(r["probs"], stale)
    assert (member.predictions_dir / f"{post.file_name('test')}.npz").is_file()
    again = posteriors.make("Laplace, kron, all weights", FakeMember(member.predictions_dir))
    np.testing.assert_array_equal(again.predict("test")["probs"], r["probs"])  # its own version is reused
    assert not again.fitted


def test_refit_with_a_grid_search_leaves_the_posterior_as_it_was(member):
    post = posteriors.make("Laplace, kron", member).fit()
    delta = post.la_fit.prior_precision
    with pytest.warns(bayes.PriorNotBracketedWarning):  # this random network's validation NLL keeps falling
        gs = post.refit("gridsearch")
    assert gs.prior_method == "gridsearch" and "grid" in gs.log
    assert post.la_fit.prior_precision == delta and float(post.la_fit.la.prior_precision) == pytest.approx(delta)


def test_a_precision_that_is_not_positive_definite_gives_one_clear_error(member):
    """Constructed, not left to rounding: a full-Hessian Laplace whose Hessian is replaced by -10^3 I has a
    precision with every eigenvalue negative, on any machine; predicting then says what happened and what to do
    (the computable case is the contract tests above)."""
    post = posteriors.make("Laplace, full", member)
    la = post.fit().la_fit.la
    la.H = -1e3 * torch.eye(la.n_params, dtype=la.H.dtype)
    la._posterior_scale = None  # laplace-torch caches the scale; a new H must be factorised again
    assert torch.linalg.eigvalsh(la.posterior_precision).max() < 0
    with pytest.raises(posteriors.PosteriorNotComputable, match=r"Laplace, full of member 0: .*What to do"):
        post.probs(member.features("test")[0])


def test_the_conformal_sets_leave_out_only_the_all_weights_laplace():
    conformal = posteriors.labels(conformal=True)
    assert "Laplace, kron, all weights" not in conformal
    all_weights = ["Laplace, kron, all weights", "Laplace, kron, all weights, narrowed prior"]
    assert set(posteriors.labels()) - set(conformal) == set(all_weights)
    assert posteriors.labels(conformal=False) == all_weights
