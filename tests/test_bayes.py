"""Laplace on features against the whole network and a closed form; predictives; baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from utils import bayes, metrics
from utils.models import build_model


@pytest.fixture(scope="module")
def tiny():
    """A small untrained network on random 16 px images, 3 classes, with its features."""
    torch.manual_seed(0)
    model = build_model("small", 3, dropout=0.2).eval()
    with torch.no_grad():
        model.fc.weight.mul_(20)  # confident enough that the posterior differs from the prior
    x = torch.randn(60, 1, 16, 16)
    y = torch.randint(0, 3, (60,))
    with torch.no_grad():
        phi = model.embed(x).numpy()
    return model, x, y, phi


@pytest.mark.parametrize("structure", bayes.STRUCTURES)
def test_laplace_on_features_equals_last_layer_laplace_of_the_network(tiny, structure):
    from laplace import Laplace

    model, x, y, phi = tiny
    whole = Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure=structure,
                    prior_precision=2.0)
    whole.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    feat = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), structure, prior_precision=2.0, batch_size=16)
    P_whole, P_feat = whole.posterior_precision, feat.la.posterior_precision
    if structure == "kron":
        P_whole, P_feat = P_whole.to_matrix(), P_feat.to_matrix()
    torch.testing.assert_close(P_feat, P_whole, rtol=1e-4, atol=1e-5)
    ref = whole(x, pred_type="glm", link_approx="probit").numpy()
    np.testing.assert_allclose(bayes.predict(feat, phi, "probit_raw"), ref, rtol=1e-4, atol=1e-6)
    assert float(whole.log_marginal_likelihood()) == pytest.approx(float(feat.la.log_marginal_likelihood()),
                                                                    rel=1e-5)


def _closed_form(phi, y, W, b, delta):
    """GGN of a softmax linear head, posterior precision and Laplace log marginal likelihood, by hand."""
    n, k = phi.shape
    c = W.shape[0]
    logits = phi @ W.T + b
    p = metrics.softmax(logits)
    P = delta * np.eye(c * k + c)
    for i in range(n):
        J = np.hstack([np.kron(np.eye(c), phi[i][None]), np.eye(c)])  # d logits / d (vec W row-major, b)
        Lam = np.diag(p[i]) - np.outer(p[i], p[i])
        P += J.T @ Lam @ J
    theta = np.concatenate([W.ravel(), b])
    loglik = np.log(p[np.arange(n), y]).sum()
    _, logdet = np.linalg.slogdet(P)
    lml = loglik - 0.5 * (logdet - (c * k + c) * math.log(delta)) - 0.5 * delta * theta @ theta
    return P, lml


def test_full_laplace_matches_the_closed_form(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "full", prior_precision=3.0)
    P, lml = _closed_form(phi.astype(np.float64), y.numpy(), model.fc.weight.detach().double().numpy(),
                          model.fc.bias.detach().double().numpy(), 3.0)
    np.testing.assert_allclose(fit.la.posterior_precision.double().numpy(), P, rtol=1e-4, atol=1e-4)
    assert float(fit.la.log_marginal_likelihood()) == pytest.approx(lml, rel=1e-4)


def test_softmax_null_space_has_only_prior_curvature(tiny):
    """Adding one vector to every class's weights (and one number to every bias) is invisible to the data."""
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "full", prior_precision=0.5)
    c, k = model.fc.weight.shape
    v = np.concatenate([np.tile(np.r_[np.ones(k), 0.0][:k], c), np.ones(c)])  # same shift on every class
    v /= np.linalg.norm(v)
    P = fit.la.posterior_precision.double().numpy()
    assert v @ P @ v == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("structure", ["kron", "full"])
def test_projected_probit_agrees_with_mc_and_the_raw_probit_does_not(tiny, structure):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), structure, prior_precision=0.05)
    mc = bayes.predict(fit, phi, "mc", n_samples=20000)
    proj = bayes.predict(fit, phi, "probit")
    raw = bayes.predict(fit, phi, "probit_raw")
    assert np.abs(proj - mc).max() < 0.08
    assert np.abs(raw - mc).mean() > 3 * np.abs(proj - mc).mean()
    assert (raw.max(1) < proj.max(1) - 1e-6).mean() > 0.9  # the raw probit is underconfident


def test_mc_is_unchanged_by_the_projection(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "full", prior_precision=0.05)
    f_mu, f_var = bayes.logit_moments(fit, phi)
    a = bayes.mc_samples(f_mu, f_var, 4000, seed=1).mean(0)
    b = bayes.mc_samples(f_mu, bayes.center_covariance(f_var), 4000, seed=1).mean(0)
    assert (a - b).abs().max() < 0.03


def test_gridsearch_widens_past_an_edge_optimum(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "kron")
    nll_at = {}
    for p in (1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4, 1e5):
        fit.la.prior_precision = p
        nll_at[p] = metrics.nll(bayes.predict(fit, phi, "probit"), y.numpy())
    best = min(nll_at, key=nll_at.get)
    lo = best * 1e3  # a grid that starts above the optimum: the search must walk down past its edge
    bayes.optimize_prior(fit, "gridsearch", val=(phi, y.numpy()), grid=[lo, lo * 10, lo * 100])
    assert fit.prior_precision < lo


def test_marglik_optimum_is_a_maximum_of_the_curve(tiny):
    model, _, y, phi = tiny
    fit = bayes.optimize_prior(bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "kron"), "marglik")
    p = fit.prior_precision
    lml = bayes.log_marglik(fit, [p / 2, p, p * 2])
    assert lml[1] >= lml[0] - 1e-3 and lml[1] >= lml[2] - 1e-3


def test_temperature_scaling_lowers_nll_and_keeps_the_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(0, 1, (400, 5))
    logits[np.arange(400), y] += 1.5
    logits *= 4  # overconfident
    t = bayes.fit_temperature(logits, y)
    assert t > 1
    before, after = metrics.softmax(logits), bayes.softmax_t(logits, t)
    assert metrics.nll(after, y) < metrics.nll(before, y)
    assert (after.argmax(1) == before.argmax(1)).all()
    grid = [metrics.nll(bayes.softmax_t(logits, s), y) for s in (t * 0.95, t, t * 1.05)]
    assert grid[1] <= min(grid[0], grid[2])  # a minimum


def test_mc_dropout_samples(tiny):
    model, _, _, phi = tiny
    s = bayes.mc_dropout(model, phi, n_samples=50, seed=3)
    assert s.shape == (50, len(phi), 3)
    torch.testing.assert_close(s.sum(-1), torch.ones(50, len(phi), dtype=s.dtype))
    torch.testing.assert_close(s, bayes.mc_dropout(model, phi, n_samples=50, seed=3))
    assert s.std(0).mean() > 0
    with pytest.raises(ValueError, match="no dropout"):
        bayes.mc_dropout(build_model("small", 3, dropout=0.0), phi)


def test_head_samples_centre_on_the_map(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "kron", prior_precision=1.0)
    W, b = bayes.head_samples(fit, 4000, seed=0)
    assert W.shape == (4000, 3, model.fc.in_features) and b.shape == (4000, 3)
    torch.testing.assert_close(W.mean(0), model.fc.weight.detach(), atol=0.1, rtol=0)
