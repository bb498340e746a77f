"""Laplace on features against the whole network and a closed form; predictives; baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from utils.chapters import laplace
from utils.evaluation import metrics
from utils.models.networks import build_model
from utils.posteriors import bayes


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


# --------------------------------------------------------------------------- the prior search: bracketed or not


def _map_labels(model, phi):
    """Validation labels that agree with the MAP network everywhere: any posterior variance only lowers the
    confidence of right answers, so the validation NLL keeps falling as delta grows."""
    return metrics.softmax(phi @ model.fc.weight.detach().double().numpy().T
                           + model.fc.bias.detach().double().numpy()).argmax(1)


def test_gridsearch_that_runs_off_the_upper_edge_says_so_and_warns(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "kron")
    with pytest.warns(bayes.PriorNotBracketedWarning, match=r"kron Hessian.*gridsearch.*collapses onto the MAP"):
        bayes.optimize_prior(fit, "gridsearch", val=(phi, _map_labels(model, phi)))
    lo, hi = fit.log["searched"]
    assert fit.log["bracketed"] is False and fit.log["edge"] == "upper"
    assert "collapses onto the MAP" in fit.log["reason"]
    assert fit.prior_precision == pytest.approx(hi) and lo < 1 < 1e6 < hi  # it widened before giving up
    assert float(fit.la.prior_precision) == pytest.approx(fit.prior_precision)
    np.testing.assert_allclose(bayes.predict(fit, phi), bayes.softmax_t(phi @ model.fc.weight.detach().numpy().T
                                                                        + model.fc.bias.detach().numpy()), atol=1e-5)


def test_marglik_that_runs_off_the_upper_edge_says_so_and_warns(tiny):
    """A head at zero: the scatter term vanishes and the Occam factor keeps growing with delta."""
    model, _, y, phi = tiny
    head = bayes.head_of(model)
    with torch.no_grad():
        head[0].weight.zero_()
        head[0].bias.zero_()
    fit = bayes.fit_laplace(head, phi, y.numpy(), "diag")
    with pytest.warns(bayes.PriorNotBracketedWarning, match=r"diag Hessian.*marglik.*collapses onto the MAP"):
        bayes.optimize_prior(fit, "marglik")
    assert fit.log["bracketed"] is False and fit.log["edge"] == "upper"
    assert fit.prior_precision == pytest.approx(fit.log["searched"][1]) and fit.prior_precision > 1e6


@pytest.fixture(scope="module")
def overfit():
    """A linear head trained to near-zero training loss on 80 noisy 20-dimensional features of 3 classes: on
    400 validation features from the same classes it is overconfident, and some posterior variance helps."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 0.6, (3, 20))

    def draw(n):
        y = rng.integers(0, 3, n)
        return (means[y] + rng.normal(0, 1, (n, 20))).astype(np.float32), y

    (phi, y), val = draw(80), draw(400)
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(20, 3))
    opt = torch.optim.LBFGS(head.parameters(), max_iter=500)
    x, t = torch.as_tensor(phi), torch.as_tensor(y)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), t, reduction="sum") + 5e-3 * sum(
            (p ** 2).sum() for p in head.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval(), phi, y, val


@pytest.mark.parametrize("structure", bayes.STRUCTURES)
@pytest.mark.parametrize("method", ["marglik", "gridsearch"])
def test_prior_searches_record_a_bracketed_optimum_and_do_not_warn(overfit, method, structure, recwarn):
    head, phi, y, val = overfit
    fit = bayes.fit_laplace(head, phi, y, structure)
    bayes.optimize_prior(fit, method, val=val)
    assert not [w for w in recwarn if issubclass(w.category, bayes.PriorNotBracketedWarning)]
    lo, hi = fit.log["searched"]
    assert fit.log["bracketed"] is True and fit.log["edge"] is None and lo < fit.prior_precision < hi
    assert fit.prior_method == method
    curve = fit.log["marglik" if method == "marglik" else "grid"]
    assert min(curve) == pytest.approx(lo) and max(curve) == pytest.approx(hi)


# --------------------------------------------------------------------------- no trial prior stays on the fit


def test_log_marglik_leaves_the_fits_prior_and_predictions_as_they_were(tiny):
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "kron", prior_precision=2.0)
    before = bayes.predict(fit, phi)
    lml = bayes.log_marglik(fit, [0.01, 1.0, 100.0])
    assert np.isfinite(lml).all() and len(set(lml.round(6))) == 3
    assert float(fit.la.prior_precision) == 2.0 and fit.prior_precision == 2.0
    np.testing.assert_array_equal(bayes.predict(fit, phi), before)
    assert bayes.log_marglik(fit, [2.0])[0] == pytest.approx(float(fit.la.log_marginal_likelihood()))
    value, _ = bayes.maximise_marglik(fit)  # the private search, too, leaves the fit as it was
    assert value != 2.0 and float(fit.la.prior_precision) == 2.0


@pytest.mark.parametrize("method", ["marglik", "gridsearch"])
def test_prior_searches_end_at_the_chosen_value(overfit, method):
    head, phi, y, val = overfit
    fit = bayes.optimize_prior(bayes.fit_laplace(head, phi, y, "full", prior_precision=50.0), method, val=val)
    assert fit.prior_precision != 50.0
    assert float(fit.la.prior_precision) == pytest.approx(fit.prior_precision, rel=1e-6)
    fresh = bayes.fit_laplace(head, phi, y, "full", prior_precision=fit.prior_precision)
    np.testing.assert_allclose(bayes.predict(fit, val[0]), bayes.predict(fresh, val[0]), atol=1e-6)


def test_gridsearch_counts_a_trial_prior_it_cannot_evaluate_as_infinite(tiny):
    """Widening down, a full posterior at a tiny delta defeats a float32 Cholesky: that trial is skipped."""
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), "full")
    bayes.optimize_prior(fit, "gridsearch", val=(phi, y.numpy()), grid=[1e-6, 1e-5, 1e-4, 1e-3])
    assert fit.log["failed"] and all(fit.log["grid"][p] == math.inf for p in fit.log["failed"])
    assert fit.prior_precision not in fit.log["failed"]


# --------------------------------------------------------------------------- the projection, every structure


@pytest.mark.parametrize("structure", bayes.STRUCTURES)
def test_projected_probit_agrees_with_weight_space_mc_for_every_structure(tiny, structure):
    """laplace-torch 0.3's functional_variance is N x C x C for every structure (for diag, J diag(s) J^T, which
    is diagonal for a linear head: each logit has its own weights). The centring acts on that full matrix,
    and the projected probit agrees with Monte Carlo over the head's weights drawn from the same posterior."""
    model, _, y, phi = tiny
    fit = bayes.fit_laplace(bayes.head_of(model), phi, y.numpy(), structure, prior_precision=0.05)
    x = phi[:20]
    f_mu, f_var = bayes.logit_moments(fit, x)
    assert f_var.shape == (20, 3, 3)
    if structure == "diag":
        J, _ = bayes.head_jacobians(fit.la.model, torch.as_tensor(x))
        by_hand = torch.einsum("ncp,p,nkp->nck", J, fit.la.posterior_variance, J)
        torch.testing.assert_close(f_var, by_hand)
        torch.testing.assert_close(f_var, torch.diag_embed(f_var.diagonal(dim1=-2, dim2=-1)))
    centred = bayes.center_covariance(f_var.double())
    one = torch.ones(3, dtype=torch.float64)
    assert (one @ centred @ one).abs().max() < 1e-9 * f_var.diagonal(dim1=-2, dim2=-1).abs().max()
    torch.testing.assert_close(centred.sum(-1), torch.zeros(20, 3, dtype=torch.float64), atol=1e-6, rtol=0)

    W, b = bayes.head_samples(fit, 20000, seed=0)  # the weights, drawn by laplace-torch from the posterior
    mc = torch.softmax(torch.einsum("nk,sck->snc", torch.as_tensor(x), W) + b[:, None], -1).mean(0).double().numpy()
    proj = bayes.probit(f_mu, f_var, project=True)
    tv = 0.5 * np.abs(proj - mc).sum(1)
    assert tv.max() < 0.02, tv.max()
    tv_fs = 0.5 * np.abs(bayes.mc_samples(f_mu, f_var, 20000, seed=1).mean(0).numpy() - mc).sum(1)
    assert tv_fs.max() < 0.02  # MC of the linearised logits is MC of the weights (the head is linear)


def _gaussian_logits(n: int, c: int, var: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n logit means (spread 3, so that softmax is far from uniform) and full, correlated covariances whose
    diagonal averages `var` (float64)."""
    g = torch.Generator().manual_seed(seed)
    f_mu = 3 * torch.randn(n, c, generator=g, dtype=torch.float64)
    a = torch.randn(n, c, c, generator=g, dtype=torch.float64)
    return f_mu, var * a @ a.transpose(-1, -2) / c


def test_projected_probit_is_invariant_to_a_constant_added_to_every_logit():
    """softmax(f + c) = softmax(f), so E[softmax(f)] under N(f_mu + c, V) is E[softmax(f)] under N(f_mu, V); the
    projected probit must be too. Before it centred the mean it computed softmax(kappa * (f_mu + c)), which with
    kappa differing between classes moved with c (a TV distance of ~0.5 at c = 20 here)."""
    f_mu, f_var = _gaussian_logits(50, 4, var=2.0)
    ref = bayes.probit(f_mu, f_var)
    for c in (20.0, -7.5, 1e3):
        np.testing.assert_allclose(bayes.probit(f_mu + c, f_var), ref, rtol=0, atol=1e-9)
    per_row = f_mu + torch.linspace(-30, 30, 50, dtype=torch.float64)[:, None]  # a constant per image, too
    np.testing.assert_allclose(bayes.probit(per_row, f_var), ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bayes.probit(f_mu, torch.zeros_like(f_var)), torch.softmax(f_mu, -1).numpy(),
                               rtol=0, atol=1e-12)  # no variance: the softmax itself
    # the raw probit stays laplace-torch's (tested against it above), uncentred: a shift moves it
    assert np.abs(bayes.probit(f_mu + 20, f_var, project=False) - bayes.probit(f_mu, f_var, project=False)).max() > 0.1


@pytest.mark.parametrize("var", [0.5, 1.0])
def test_projected_probit_stays_close_to_monte_carlo_over_the_gaussian_logits(var):
    """The projected probit against the Monte Carlo mean of softmax over 10,000 draws of N(f_mu, f_var), 200
    images of 4 classes with correlated covariances of moderate size (diagonal ~0.5 and ~1), the means shifted by 20
    (which the old, uncentred probit turned into a mean TV distance of 0.15 and 0.25).

    Tolerance: Monte Carlo error of 10,000 draws is < 0.005 per class (sd <= 0.5 / 100), ~0.01 in TV. The probit
    approximation's own error dominates: it matches the logistic to a probit class by class and ignores the
    covariances between logits; measured here it is 0.021 (var 0.5) and 0.037 (var 1) in mean TV, up to 0.10 and
    0.15 for single images. Bounds: mean TV < 0.05 and < 0.06, every image < 0.2; and the MAP's softmax, which
    ignores the variance (mean TV 0.031 and 0.054), is further from Monte Carlo than the probit."""
    f_mu, f_var = _gaussian_logits(200, 4, var, seed=3)
    mc = bayes.mc_samples(f_mu, f_var, 10000, seed=1).mean(0).numpy()
    proj = bayes.probit(f_mu + 20, f_var)
    tv = 0.5 * np.abs(proj - mc).sum(1)
    assert tv.mean() < (0.05 if var < 1 else 0.06), tv.mean()
    assert tv.max() < 0.2, tv.max()
    tv_map = 0.5 * np.abs(torch.softmax(f_mu, -1).numpy() - mc).sum(1)
    assert tv.mean() < tv_map.mean(), (tv.mean(), tv_map.mean())


# --------------------------------------------------------------------------- saved predictions, fit cost


def test_compare_fit_cost_reports_the_ratio_with_and_without_the_feature_extraction(tiny):
    model, x, y, _ = tiny

    class Images(torch.utils.data.TensorDataset):
        targets = y.numpy()

    r = laplace.compare_fit_cost(model, dict(prior_precision=1.0), Images(x, y), "kron", "cpu")
    network = r["network_fit_s"] + r["network_prior_s"]
    features = r["features_fit_s"] + r["features_prior_s"]
    assert r["ratio"] == pytest.approx(network / features)
    assert r["ratio_with_extraction"] == pytest.approx(network / (features + r["features_extract_s"]))
    assert r["ratio_with_extraction"] <= r["ratio"]
    assert r["prior_features"] == pytest.approx(r["prior_network"], rel=1e-2)


def test_bench_laplace_prints_both_ratios(monkeypatch, capsys):
    import argparse

    from utils import bench

    def cost(model, meta, train_ds, structure, device):
        return dict(structure=structure, features_extract_s=3.0, features_fit_s=0.5, features_prior_s=0.5,
                    network_fit_s=30.0, network_prior_s=10.0, ratio=40.0, ratio_with_extraction=10.0,
                    prior_features=1.0, prior_network=1.0)

    class FakeRun:
        def __init__(self, *a, **k):
            self.members = [argparse.Namespace(model=None, meta={})]
            self.datasets = (None, None, None)
            self.device = "cpu"

    monkeypatch.setattr(bench, "Run", FakeRun)
    monkeypatch.setattr(bench.laplace, "compare_fit_cost", cost)
    out = bench.bench_laplace(bench.get_profile("smoke"), argparse.Namespace(out_root=""), argparse.Namespace(data=""))
    assert out["kron"]["ratio_with_extraction"] == 10.0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("kron")]
    assert "40.0x" in lines[0] and "10.0x" in lines[0]


def test_notebook_02_reading_states_its_tables_numbers():
    import pandas as pd

    from utils.chapters import laplace as laplace_chapter

    fits = pd.DataFrame([dict(method=m, member=k, accuracy=a, nll=n, ece=e) for m, vals in (
        ("MAP", [(0.88, 0.30, 0.03), (0.90, 0.28, 0.035)]), ("Laplace, kron", [(0.88, 0.29, 0.02), (0.90, 0.27, 0.025)]),
        ("Laplace, kron, all weights", [(0.86, 0.84, 0.42)]),
        ("Laplace, kron, all weights, narrowed prior", [(0.88, 0.305, 0.04)])) for k, (a, n, e) in enumerate(vals)])
    prior = pd.DataFrame([dict(structure="kron", marglik_delta=17.6, marglik_bracketed=True, gridsearch_delta=1e12,
                               gridsearch_bracketed=False, gridsearch_range=(0.01, 1e12)),
                          dict(structure="diag", marglik_delta=13.0, marglik_bracketed=True, gridsearch_delta=1e-10,
                               gridsearch_bracketed=False, gridsearch_range=(1e-10, 1e4))])
    pm = pd.DataFrame([dict(structure="kron", predictive=p, tv_distance_to_mc=t) for p, t in (
        ("MC, 2000 samples", 0.0), ("probit, as laplace-torch", 0.022), ("probit, null space projected", 0.0031))])
    cost = pd.DataFrame([dict(structure="kron", ratio=33.4, ratio_with_extraction=2.3, prior_features=4.3167,
                              prior_network=4.3167)])
    text = laplace_chapter.reading(fits, prior, pm, cost, "phantom")
    assert "kron: NLL -0.010, ECE -1.0 points, accuracy 0.0 points" in text  # means over the two members; no -0.0
    assert "(NLL 0.290, ECE 3.2 %, accuracy 89.0 %)" in text
    # each all-weights posterior by its label, against member 0's own MAP network (0.300, 3.0 %), not the mean
    assert ("*Laplace, kron, all weights* (member 0): NLL 0.840 and ECE 42.0 % against the same member's MAP "
            "network's 0.300 and 3.0 %: its linearised predictive is far broader") in text
    assert ("*Laplace, kron, all weights, narrowed prior* (member 0): NLL 0.305 and ECE 4.0 % against the same "
            "member's MAP network's 0.300 and 3.0 %: within 0.02 nats and 2 ECE points") in text
    assert "kron 17.6, diag 13; every marginal-likelihood search bracketed" in text
    assert "For kron the grid search on the validation NLL ran off its upper edge" in text
    assert "For diag the grid search on the validation NLL ran off its lower edge (δ = 1e-10): a broader" in text
    assert "kron: 0.0031 projected, 0.0220 without" in text and "33x faster" in text
