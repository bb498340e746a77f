"""The run object end to end on a tiny tree: members, every registered posterior's predictions, reloading a run,
the batch predictor, and the seam (a newly registered posterior reaches the tables without other edits)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import config, posteriors
from utils.chapters import calibration, explanations, robustness
from utils.chapters import laplace as laplace_chapter
from utils.explain import scores
from utils.run import Run


def _profile():
    return config.get_profile("smoke", image_size=32, batch_size=16, epochs=1, members=2)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def run(smoke_tree, out):
    torch.set_num_threads(1)
    r = Run(_profile(), smoke_tree, out)
    r.predictions()  # trains both members, fits and saves every registered posterior
    return r


def test_a_run_owns_its_data_members_and_paths(run, out):
    assert run.source["source"] == "mura" and run.paths.out_root == out
    assert len(run.members) == 2 and run.classes == list(config.BODY_PARTS)
    assert len(run.y) == len(run.groups) == len(run.test)
    assert run.member(1) is run.members[1]
    assert run.n_boot == 400  # smoke


def test_predictions_hold_every_registered_posterior(run):
    preds = run.predictions()
    assert list(preds) == run.labels() == posteriors.labels()  # the smoke profile has dropout
    n, c = len(run.y), len(run.classes)
    for label, p in preds.items():  # one record shape for every label
        assert isinstance(p, posteriors.Predictions) and p.label == label and p.probs.shape == (n, c)
        assert p.combination == posteriors.REGISTRY[label].combination
        if p.combination:
            assert p.members.shape == p.samples.shape == (2, n, c) and p.scored.shape == (1, n, c)
            singles = preds[posteriors.REGISTRY[label].of].members
            np.testing.assert_allclose(p.probs, singles.mean(0))
        else:
            m = posteriors.REGISTRY[label].members or 2  # the costly ones are fitted on fewer members
            assert p.members.shape == p.scored.shape == (m, n, c) and len(p.info) == m
            np.testing.assert_array_equal(p.probs, p.members[0])
    assert preds["Laplace, kron, all weights"].n_members == 1  # member 0 only


def test_a_new_run_on_the_same_outputs_reloads_without_refitting(run, smoke_tree, out):
    again = Run(_profile(), smoke_tree, out)
    preds, before = again.predictions(), run.predictions()
    for label in preds:
        np.testing.assert_array_equal(preds[label].members, before[label].members)
    fitted = [p.fitted for key, p in again.posteriors.built.items() if isinstance(p, posteriors.Posterior)]
    assert fitted and not any(fitted)


def test_the_batch_predictor_agrees_with_the_saved_predictions(run):
    x = robustness.images(run.cache, run.test.rows)
    labels = run.labels(robustness=True)
    batch = run.predictor(labels).batched(x, batch=50)
    saved = run.predictions(labels)
    for label in labels:
        np.testing.assert_allclose(batch[label].probs, saved[label].probs, atol=2e-6)
    assert batch["deep ensemble"].samples.shape == (2, len(x), len(run.classes))
    assert batch["Laplace, kron"].samples.shape == (100, len(x), len(run.classes))


class Sharpened(posteriors.MAP):
    """A posterior the repository does not register: the MAP logits doubled, and a head jittered by 10 %."""

    key = "sharpened"

    def probs(self, phi):
        return torch.softmax(2 * self._logits(phi), 1).double().numpy()

    def _predict(self, subset):
        return self.probs(self.member.features(subset)[0]), None, {}

    def head_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        W = 2 * self.head.weight.detach()
        return W * (1 + 0.1 * torch.randn((n, *W.shape), generator=g))


def test_a_newly_registered_posterior_reaches_the_tables_without_other_edits(run, monkeypatch):
    """The seam: one class and one `register(...)` line, and the new method is in every table and figure."""
    new = "sharpened MAP"
    monkeypatch.setitem(posteriors.REGISTRY, new, None)  # taken out again after the test
    posteriors.register(new, Sharpened, robustness=True, spread=True)
    for flags in (dict(), dict(single=True), dict(robustness=True), dict(conformal=True), dict(spread=True)):
        assert new in run.labels(**flags), flags
    preds = run.predictions()
    assert isinstance(preds[new], posteriors.Predictions) and preds[new].n_members == run.profile.members
    tab = calibration.interval_table(preds, run.y, run.groups, n_boot=50)  # notebook 04's table
    assert new in set(tab.method) and new in calibration.verdicts(tab).index
    assert new in calibration.shown_probs(preds)  # notebook 04's figures
    tune = run.predictions(run.labels(conformal=True), subset="val")  # notebook 04's conformal sets: RAPS tuned
    cal = run.predictions(run.labels(conformal=True), subset="cal")  # on val, calibrated on cal
    conf = calibration.conformal_table(tune, cal, {k: preds[k] for k in tune}, run.datasets.val.targets,
                                       run.datasets.cal.targets, run.y, run.groups, n_boot=20)
    assert new in set(conf.method)
    x = robustness.images(run.cache, run.test.rows[:20])  # notebook 06's sweeps
    assert new in run.predictor().batched(x)
    fits = laplace_chapter.fit_table(preds, run.y)  # notebook 02's fit table
    assert new in set(fits.method)
    heads = explanations.spread_heads(run, 4, seed=0)  # notebook 05's error flagging
    spread = scores.explanation_spread(run.models, heads, run.test)
    assert (spread[scores.spread_column(new)] > 0).all()
    flags = explanations.flagging_tables(explanations.flagging_inputs({k: preds[k] for k in heads}, spread), run.y,
                                         run.groups, n_boot=20)
    assert new in set(flags.predictor)
